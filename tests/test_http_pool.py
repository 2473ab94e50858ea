"""The HTTP backend's keep-alive pool against a real (stdlib) HTTP server on a loopback port."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mktsframe.backend.http_pool import ConnectionPool


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    mode = "keep"  # keep | drop (close without saying so) | chunked | slow | garbage (no HTTP reply)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.peers.append(self.client_address[1])  # type: ignore[attr-defined]
        if self.mode == "slow":
            time.sleep(1.0)
        if self.mode == "garbage":
            self.wfile.write(b"HTTP/1.1 not-a-status\r\n\r\n")
            self.close_connection = True
            return
        self.send_response(200)
        if self.mode == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (body[:3], body[3:]):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        self.close_connection = self.mode == "drop"

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.peers = []  # type: ignore[attr-defined]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()
    _Handler.mode = "keep"


def _pool(srv: ThreadingHTTPServer, timeout: float = 5) -> ConnectionPool:
    return ConnectionPool(f"http://127.0.0.1:{srv.server_address[1]}/rpc", {"Content-Type": "x/y"}, timeout)


def test_connections_are_reused_and_replaced_when_the_server_drops_them(server) -> None:
    pool = _pool(server)
    assert [pool.post(b"hello %d" % i) for i in range(3)] == [(200, b"hello %d" % i) for i in range(3)]
    assert len(set(server.peers)) == 1  # one keep-alive connection
    _Handler.mode = "drop"  # closes after each reply, without a Connection: close header
    for i in range(3):
        assert pool.post(b"again %d" % i) == (200, b"again %d" % i)
        time.sleep(0.05)
    first, *rest = server.peers
    assert rest[:3] == [first] * 3  # the first dropped reply still came on the kept connection
    assert len(set(rest[3:])) == 2  # then a new connection each time
    assert first not in rest[3:]
    pool.close()


def test_chunked_replies_timeouts_and_refused_connections(server) -> None:
    _Handler.mode = "chunked"
    pool = _pool(server, timeout=0.3)
    assert pool.post(b"chunked body") == (200, b"chunked body")
    _Handler.mode = "slow"
    with pytest.raises(TimeoutError):
        pool.post(b"x")
    pool.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(ConnectionRefusedError):
            ConnectionPool(f"http://127.0.0.1:{port}/rpc", {}, 1).post(b"x")


def test_threads_share_the_pool(server) -> None:
    pool = _pool(server)
    out: list[tuple[int, bytes]] = []
    threads = [threading.Thread(target=lambda i=i: out.append(pool.post(b"t%d" % i))) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(out) == sorted((200, b"t%d" % i) for i in range(16))
    pool.close()


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_failed_reply_closes_its_socket_at_once(server) -> None:
    """A reply that cannot be parsed fails the call and closes the socket then, even while the
    error (whose traceback holds the half-read response) is still referenced: not when the GC
    finds the response later (a ResourceWarning in some other test)."""
    _Handler.mode = "garbage"
    pool = _pool(server)
    before = _open_descriptors()
    with pytest.raises(OSError, match="bad HTTP reply") as failed:
        pool.post(b"x")
    deadline = time.monotonic() + 2
    while _open_descriptors() > before and time.monotonic() < deadline:
        time.sleep(0.01)  # the server's end of the connection closes on its own thread
    assert _open_descriptors() == before, failed.value
    pool.close()
