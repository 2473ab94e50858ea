"""Running the real server as a subprocess on a free loopback port (used by conftest and tests)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import resource
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pymarketstore as pymkts
import yaml

__all__ = ["TRANSPORTS", "ServerProcess", "asgi_lifespan", "free_port", "mkts_client", "replies", "start_server"]

#: The two APIs every pymarketstore test runs over (``pymarketstore.Client(..., grpc=...)``).
TRANSPORTS = ("http", "grpc")

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
    grpc_port: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def rpc(self) -> str:
        return f"{self.url}/rpc"

    @property
    def grpc(self) -> str:
        """``host:port`` of the gRPC API (pymarketstore's ``Client(server.grpc, grpc=True)``)."""
        return f"127.0.0.1:{self.grpc_port}"

    def endpoint(self, transport: str) -> str:
        """What ``pymarketstore.Client`` is given for ``transport`` (``"http"`` or ``"grpc"``)."""
        return self.grpc if transport == "grpc" else self.rpc

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


@contextlib.asynccontextmanager
async def asgi_lifespan(app: Any) -> AsyncIterator[None]:
    """Run ``app``'s ASGI lifespan as uvicorn does: started on entry, shut down on exit (in-process tests)."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                   inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    assert (await outbox.get())["type"] == "lifespan.startup.complete"
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        assert (await outbox.get())["type"] == "lifespan.shutdown.complete"
        await task


def mkts_client(server: ServerProcess, transport: str) -> pymkts.Client:
    """The unmodified pymarketstore client of ``server`` over ``transport`` (``"http"`` or ``"grpc"``)."""
    return pymkts.Client(server.endpoint(transport), grpc=transport == "grpc")


def replies(reply: Any) -> list[dict[str, str]] | None:
    """The per-request responses of a pymarketstore ``write``/``create``/``destroy`` reply, either
    transport: the msgpack map ``{"responses": [...] | None}`` or gRPC's ``MultiServerResponse``
    (``None`` when there are none, as MarketStore's Write answers on success)."""
    if isinstance(reply, dict):
        return reply["responses"]
    out = [{"error": r.error, "version": r.version} for r in reply.responses]
    return out or None


def _limit_files(n: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


def start_server(
    workdir: Path, *, root: Path | None = None, config: dict[str, Any] | None = None, nofile: int | None = None,
    tls_ca: str | None = None,
) -> ServerProcess:
    """Start a server (retrying on a port race) and wait until ``/heartbeat`` answers; ``nofile``
    sets its open-file limit, soft and hard (as ``ulimit -n`` in a shell does). ``tls_ca``: the
    server serves https (its config has the TLS files) and this CA file verifies it. A 401 (a
    server with ``auth``) counts as answering."""
    workdir.mkdir(parents=True, exist_ok=True)
    root = root or workdir / "data"
    for attempt in range(5):
        port, grpc_port = free_port(), free_port()
        cmd = [sys.executable, "-m", "mktsframe.server", "--root", str(root), "--port", str(port)]
        cmd += ["--host", "127.0.0.1", "--grpc-port", str(grpc_port)]
        if config is not None:
            cfg_path = workdir / "mkts.yml"
            cfg_path.write_text(yaml.safe_dump(config))
            cmd += ["--config", str(cfg_path)]
        log = workdir / f"server-{port}.log"
        with log.open("wb") as out:
            limit = None if nofile is None else functools.partial(_limit_files, nofile)
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=workdir, preexec_fn=limit)
        server = ServerProcess(root, port, proc, log, grpc_port, scheme="https" if tls_ca else "http")
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=tls_ca) if tls_ca else True
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                r = httpx.get(f"{server.url}/heartbeat", timeout=2.0, verify=verify)
                if r.status_code in (200, 401, 503):
                    return server
            except httpx.TransportError:
                time.sleep(0.05)
        server.stop(signal.SIGKILL)
        text = server.output()
        if "address already in use" not in text.lower() or attempt == 4:
            raise RuntimeError(f"server did not start (rc={proc.returncode}):\n{text}")
    raise AssertionError("unreachable")
