"""Start ``python -m mktsframe.server`` in a child process from Python (a notebook, a script).

The child's output goes to a temporary file, not to ``/dev/null``: when the server cannot start
(a missing ``uvicorn`` because the ``server`` extra is not installed, a bad config, a port in
use) the error raised here quotes the end of that output, at once when the child exits rather
than after a long wait.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx

__all__ = ["ServerProcess", "ServerStartError"]

#: Characters of the child's output quoted in an error (its end).
OUTPUT_TAIL = 4000


class ServerStartError(RuntimeError):
    """The server did not answer ``/heartbeat``; the message quotes why, from its output."""


class ServerProcess:
    """A server on ``host:port`` serving ``root``, started now and stopped by :meth:`stop` (or ``with``).

    Parameters
    ----------
    root : path
        The data root served.
    host : str
        Loopback by default; ``""`` would listen on every interface.
    port : int
        ``0`` picks a free port.
    args : sequence of str
        More ``python -m mktsframe.server`` flags (``["--config", "mkts.yml"]``).
    env : mapping, optional
        The child's environment (default: this process's).
    timeout : float
        Seconds to wait for ``/heartbeat`` before giving up.

    Raises
    ------
    ServerStartError
        The child exited or did not answer within ``timeout``; the message ends with its output.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        if port == 0:
            with socket.socket() as s:
                s.bind((host, 0))
                port = int(s.getsockname()[1])
        self.url = f"http://{host or '127.0.0.1'}:{port}"
        self._output = tempfile.TemporaryFile()  # noqa: SIM115 (kept open for the child's lifetime)
        cmd = [sys.executable, "-m", "mktsframe.server", "--root", str(Path(root)), "--host", host, "--port", str(port)]
        self.proc = subprocess.Popen(
            [*cmd, *args], stdout=self._output, stderr=subprocess.STDOUT, env=None if env is None else dict(env)
        )
        try:
            self._wait(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                why = f"the server exited with code {code} before serving {self.url}"
                raise ServerStartError(f"{why}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/heartbeat", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                why = f"the server did not answer on {self.url} within {timeout:g} s"
                raise ServerStartError(f"{why}:\n{self.output()}")
            time.sleep(0.05)

    def output(self) -> str:
        """The end of what the server printed (its log and, when it failed, the traceback)."""
        if self._output.closed:
            return ""
        self._output.flush()
        size = self._output.seek(0, os.SEEK_END)
        self._output.seek(max(size - OUTPUT_TAIL, 0))
        return self._output.read().decode(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout`` seconds); returns its exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._output.close()
        return int(self.proc.returncode)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
