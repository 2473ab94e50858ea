"""The safe default bind and the bounds on one request's work, on real server processes."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import numpy as np
import pymarketstore as pymkts
import pytest
import websocket
import yaml
from live_helpers import free_port, replies

import mktsframe
from mktsframe.config import Config, ConfigError
from mktsframe.errors import MktsError
from mktsframe.server.exposure import bind_host
from mktsframe.server.launch import ServerProcess

pytestmark = pytest.mark.server

LIMITS = {"max_reply_rows": 1000, "idle_timeout": 1, "max_streams": 3}


def lan_address() -> str | None:
    """This machine's address on its default route (not loopback), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent: this only picks the route
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def reachable(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=2):
        return True
    return False


def write_config(path: Path, **settings: object) -> str:
    path.write_text(yaml.safe_dump(settings))
    return str(path)


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server started with no address (``--host ""``, no auth) and small bounds."""
    work = tmp_path_factory.mktemp("bounded")
    server = ServerProcess(work / "data", host="", args=["--config", write_config(work / "mkts.yml", **LIMITS)])
    yield server
    server.stop()


def test_bind_host_policy() -> None:
    assert bind_host(Config()) == "127.0.0.1"
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert bind_host(Config(listen_host=host)) == host
    for host in ("0.0.0.0", "10.1.2.3", "db.example", "::"):
        with pytest.raises(ConfigError, match="auth: true"):
            bind_host(Config(listen_host=host))
        assert bind_host(Config(listen_host=host, auth=True)) == host
        assert bind_host(Config(listen_host=host, allow_anonymous=True)) == host
    assert bind_host(Config(auth=True)) == "0.0.0.0"


def test_default_listens_on_loopback_only(bounded: ServerProcess) -> None:
    port = int(bounded.url.rsplit(":", 1)[1])
    assert f"http://127.0.0.1:{port}/rpc (auth off)" in bounded.output()
    ip = lan_address()
    if ip is not None:  # a machine with a network: the port must not be open there
        assert not reachable(ip, port)


def test_public_address_without_auth_refused(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "mktsframe.server", "--root", str(tmp_path / "data"), "--port", str(free_port()),
           "--grpc-port", "0", "--host", "0.0.0.0"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "refusing to listen on 0.0.0.0 without authentication" in out.stderr
    assert "auth: true" in out.stderr
    assert "mktsframe token add" in out.stderr


def test_allow_anonymous_serves_everywhere_with_a_warning(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "mkts.yml", allow_anonymous=True)
    server = ServerProcess(tmp_path / "data", host="0.0.0.0", args=["--config", cfg])
    try:
        port = int(server.url.rsplit(":", 1)[1])
        assert "WITHOUT authentication" in server.output()
        ip = lan_address()
        if ip is not None:
            assert reachable(ip, port)
    finally:
        server.stop()


# -- rows per reply -------------------------------------------------------------------------------------
def bars(n: int) -> np.ndarray:
    a = np.zeros(n, dtype=[("Epoch", "i8"), ("Close", "f4")])
    a["Epoch"] = 1_700_000_040 + 60 * np.arange(n)
    return a


def test_max_reply_rows(bounded: ServerProcess) -> None:
    client = pymkts.Client(f"{bounded.url}/rpc")
    for key, n in (("BIG/1Min/C", 1500), ("HALF1/1Min/C", 600), ("HALF2/1Min/C", 600)):
        assert replies(client.write(bars(n), key)) is None
    with pytest.raises(Exception, match=r"more than max_reply_rows \(1,000\) rows: ask for fewer with a limit"):
        client.query(pymkts.Params("BIG", "1Min", "C"))
    assert len(client.query(pymkts.Params("BIG", "1Min", "C", limit=1000)).first().df()) == 1000
    assert len(client.query(pymkts.Params("HALF1", "1Min", "C")).first().df()) == 600
    with pytest.raises(Exception, match="max_reply_rows"):  # 600 + 600: the bound is for the whole reply
        client.query(pymkts.Params(["HALF1", "HALF2"], "1Min", "C"))
    with pytest.raises(Exception, match="max_reply_rows"):  # a wildcard too
        client.query(pymkts.Params("*", "1Min", "C", limit=999))
    with pytest.raises(Exception, match="max_reply_rows"):  # and what SQL reads
        client.sql("SELECT count(*) FROM `BIG/1Min/C`")
    with mktsframe.connect(bounded.url) as be:
        with pytest.raises(MktsError, match="max_reply_rows"):
            be.query("BIG/1Min/C")
        assert len(be.query("BIG/1Min/C", start="2023-11-14 22:40", limit=1000)["BIG/1Min/C"].index) == 1000


# -- idle connections -------------------------------------------------------------------------------------
def closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closed ``sock`` within ``seconds``, and what it sent before."""
    sock.settimeout(seconds)
    got = b""
    try:
        while chunk := sock.recv(4096):
            got += chunk
    except TimeoutError:
        return False, got
    except ConnectionResetError:
        pass
    return True, got


def test_idle_connections_are_closed(bounded: ServerProcess) -> None:
    host, port = "127.0.0.1", int(bounded.url.rsplit(":", 1)[1])
    t0 = time.monotonic()
    silent = socket.create_connection((host, port))
    partial_head = socket.create_connection((host, port))
    partial_head.sendall(b"POST /rpc HTTP/1.1\r\nHost: x\r\n")
    partial_body = socket.create_connection((host, port))
    partial_body.sendall(b"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-msgpack\r\n"
                         b"Content-Length: 100\r\n\r\n0123456789")  # fmt: skip
    for sock in (silent, partial_head, partial_body):
        with sock:
            closed, got = closed_within(sock, 10)
            assert closed, "the server kept an idle connection open"
    assert time.monotonic() - t0 < 8
    assert got.startswith(b"HTTP/1.1 408")
    assert b"idle_timeout" in got
    client = pymkts.Client(f"{bounded.url}/rpc")  # keep-alive clients reconnect after the server closed theirs
    client.list_symbols()
    time.sleep(1.5)
    client.list_symbols()


# -- /ws ------------------------------------------------------------------------------------------------
def test_streams_per_connection_capped(bounded: ServerProcess) -> None:
    ws = websocket.create_connection(bounded.url.replace("http", "ws") + "/ws", timeout=10)
    try:
        ws.send_binary(msgpack.packb({"streams": [f"S{i}/1Min/C" for i in range(4)]}))
        assert "max_streams is 3" in msgpack.unpackb(ws.recv())["error"]
        ok = {"streams": ["S1/1Min/C", "S2/1Min/C", "*/1Min/C"]}
        ws.send_binary(msgpack.packb(ok))
        assert msgpack.unpackb(ws.recv()) == ok
        # Over the 1 MiB message bound: the server closes the connection as soon as it reads the
        # frame's length, so the client sees the close while still sending (a reset or a broken
        # pipe, under load), as its next message, or as an error on its next receive.
        closed = (websocket.WebSocketConnectionClosedException, ConnectionResetError, BrokenPipeError)
        try:
            reply = _send_then_receive(ws, msgpack.packb({"streams": ["x" * (2 << 20)]}))
        except closed:
            reply = b""
        assert not reply  # no answer, only the close (websocket-client returns the close frame's empty data)
        with pytest.raises(closed):
            ws.recv()  # and the connection is gone
    finally:
        ws.close()
        ws.shutdown()  # close() returns early once the client saw the connection drop, leaving the socket open


def _send_then_receive(ws: websocket.WebSocket, payload: bytes) -> bytes:
    ws.send_binary(payload)
    return ws.recv()
