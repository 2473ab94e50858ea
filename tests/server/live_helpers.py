"""Running the real server as a subprocess on a free loopback port (used by conftest and tests)."""

from __future__ import annotations

import functools
import resource
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

__all__ = ["ServerProcess", "free_port", "start_server"]

STARTUP_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """A running ``python -m mktsframe.server``."""

    root: Path
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def rpc(self) -> str:
        return f"{self.url}/rpc"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Stop the process and return its exit code (SIGKILL after ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)


def _limit_files(n: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


def start_server(
    workdir: Path, *, root: Path | None = None, config: dict[str, Any] | None = None, nofile: int | None = None
) -> ServerProcess:
    """Start a server (retrying on a port race) and wait until ``/heartbeat`` answers; ``nofile``
    sets its open-file limit, soft and hard (as ``ulimit -n`` in a shell does)."""
    workdir.mkdir(parents=True, exist_ok=True)
    root = root or workdir / "data"
    for attempt in range(5):
        port = free_port()
        cmd = [sys.executable, "-m", "mktsframe.server", "--root", str(root), "--port", str(port)]
        cmd += ["--host", "127.0.0.1"]
        if config is not None:
            cfg_path = workdir / "mkts.yml"
            cfg_path.write_text(yaml.safe_dump(config))
            cmd += ["--config", str(cfg_path)]
        log = workdir / f"server-{port}.log"
        with log.open("wb") as out:
            limit = None if nofile is None else functools.partial(_limit_files, nofile)
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=workdir, preexec_fn=limit)
        server = ServerProcess(root, port, proc, log)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                r = httpx.get(f"{server.url}/heartbeat", timeout=2.0)
                if r.status_code in (200, 503):
                    return server
            except httpx.TransportError:
                time.sleep(0.05)
        server.stop(signal.SIGKILL)
        text = server.output()
        if "address already in use" not in text.lower() or attempt == 4:
            raise RuntimeError(f"server did not start (rc={proc.returncode}):\n{text}")
    raise AssertionError("unreachable")
