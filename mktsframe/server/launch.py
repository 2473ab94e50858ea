"""Start ``python -m mktsframe.server`` in a child process from Python (a notebook, a script).

The child's output goes to a temporary file, not to ``/dev/null``: when the server cannot start
(a missing ``uvicorn`` because the ``server`` extra is not installed, a bad config, a port in
use) the error raised here quotes the end of that output, at once when the child exits rather
than after a long wait.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx

__all__ = ["ServerProcess", "ServerStartError", "stop_process", "wait_until_serving"]

#: Characters of the child's output quoted in an error (its end).
OUTPUT_TAIL = 4000


class ServerStartError(RuntimeError):
    """The server did not answer ``/heartbeat``; the message quotes why, from its output."""


def wait_until_serving(
    proc: subprocess.Popen[bytes], url: str, output: Callable[[], str], *, timeout: float, name: str = "the server"
) -> None:
    """Poll ``url`` until it answers 200 (or 401: a server with ``auth`` is serving too); raise
    :class:`ServerStartError` quoting ``output()`` when ``proc`` exits first (noticed at once) or
    ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        code = proc.poll()
        if code is not None:
            text = output()
            hint = _hint(text)
            raise ServerStartError(f"{name} exited with code {code} before serving {url}{hint}:\n{text}")
        try:
            if httpx.get(url, timeout=1.0).status_code in (200, 401):
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise ServerStartError(f"{name} did not answer on {url} within {timeout:g} s:\n{output()}")
        time.sleep(0.05)


def _hint(output: str) -> str:
    """What to do about a missing module the server needs (its ``server`` extra)."""
    m = re.search(r"No module named '([\w.]+)'", output)
    if m is None:
        return ""
    return f" (missing {m.group(1)!r}: pip install 'mktsframe[server]', or '.[notebooks]' for the notebooks)"


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
    """Send ``sig``, wait ``timeout`` seconds, then SIGKILL; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host or "127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """A server on ``host:port`` serving ``root``, started now and stopped by :meth:`stop` (or ``with``).

    Parameters
    ----------
    root : path
        The data root served.
    host : str
        Loopback by default; ``""`` is loopback too unless ``auth`` (or ``allow_anonymous``) is
        configured, then every interface (see :mod:`mktsframe.server.exposure`).
    port : int
        ``0`` picks a free port.
    args : sequence of str
        More ``python -m mktsframe.server`` flags (``["--config", "mkts.yml"]``).
    env : mapping, optional
        The child's environment (default: this process's).
    timeout : float
        Seconds to wait for ``/heartbeat`` before giving up.
    grpc : bool
        Also serve the gRPC API, on a free port (:attr:`grpc_address`); off by default.

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
        grpc: bool = False,
    ) -> None:
        port = port or _free_port(host)
        self.url = f"http://{host or '127.0.0.1'}:{port}"
        grpc_port = _free_port(host) if grpc else 0
        #: ``host:port`` of the gRPC API (``pymarketstore.Client(address, grpc=True)``), or ``None`` when off.
        self.grpc_address = f"{host or '127.0.0.1'}:{grpc_port}" if grpc else None
        args = ["--grpc-port", str(grpc_port), *args]  # never the default 5995: several servers may run at once
        self._output = tempfile.TemporaryFile()  # noqa: SIM115 (kept open for the child's lifetime)
        cmd = [sys.executable, "-m", "mktsframe.server", "--root", str(Path(root)), "--host", host, "--port", str(port)]
        self.proc = subprocess.Popen(
            [*cmd, *args], stdout=self._output, stderr=subprocess.STDOUT, env=None if env is None else dict(env)
        )
        try:
            wait_until_serving(self.proc, f"{self.url}/heartbeat", self.output, timeout=timeout)
        except BaseException:
            self.stop()
            raise

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
        code = stop_process(self.proc, signal.SIGTERM, timeout)
        self._output.close()
        return code

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
