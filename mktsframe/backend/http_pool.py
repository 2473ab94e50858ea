"""A small thread-safe pool of HTTP/1.1 keep-alive connections: what :class:`HTTPBackend` posts with.

Why the standard library's :mod:`http.client` and not httpx here: a 1-row write is a few hundred
bytes each way, and on a small machine httpx's per-request work (URL, header and cookie objects,
a request and a response model, its transport layers) costs more client CPU than the server's
whole durable write. Measured on the 2-core 2.5 GHz VM against a live server, one small RPC:
httpx ≈ 1.2 ms of client CPU (2.0 ms wall), :class:`http.client.HTTPConnection` ≈ 0.29 ms
(0.74 ms wall). ``http.client`` connects (``TCP_NODELAY``; ``https://`` with the default TLS
context) and reads the replies (``Content-Length`` or chunked: MarketStore's Go server may send
either). The request itself is written here: its head is the same for every call but the
``Content-Length``, so it is built once, and a small body leaves in the same ``send``.
``HTTPConnection.request`` rebuilt it every time: ~35 µs a call, ~250 µs on a CPU just woken
from idle, against ~3 and ~105 µs, and that time is on the path of every write's latency.
Proxy environment variables are not consulted: the server is addressed directly.

Timeouts apply to each socket operation (connect, send, every read), not to the whole call, so
a large reply that keeps streaming is not cut off while a dead server is.
"""

from __future__ import annotations

import functools
import http.client
import select
import ssl
import threading
from typing import Any
from urllib.parse import urlparse

__all__ = ["ConnectionPool"]

#: Idle connections kept per pool (more concurrent callers than this open extra ones, closed after use).
MAX_IDLE = 8
#: Bodies up to this many bytes go out in the same ``send`` as the request head.
SMALL_BODY = 64 << 10


class ConnectionPool:
    """``POST`` to one URL over reused connections; callable from any number of threads."""

    def __init__(self, url: str, headers: dict[str, str], timeout: float,
                 context: ssl.SSLContext | None = None) -> None:
        """``context`` verifies an ``https://`` server (default: Python's default, the system CAs)."""
        parts = urlparse(url)
        self._factory: Any = (functools.partial(http.client.HTTPSConnection, context=context)
                              if parts.scheme == "https" else http.client.HTTPConnection)
        self._host = parts.hostname or "localhost"
        self._port = parts.port
        self._path = parts.path or "/"
        host = f"[{self._host}]" if ":" in self._host else self._host  # an IPv6 literal in brackets
        netloc = host if self._port is None else f"{host}:{self._port}"
        lines = [f"POST {self._path} HTTP/1.1", f"Host: {netloc}", "Accept-Encoding: identity",
                 *(f"{k}: {v}" for k, v in headers.items())]
        self._head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
        self.timeout = timeout
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def post(self, body: bytes) -> tuple[int, bytes]:
        """``(status, reply body)``; raises :class:`TimeoutError` or :class:`OSError` (HTTP protocol
        errors are re-raised as ``OSError``)."""
        conn, reused = self._take()
        resp: http.client.HTTPResponse | None = None
        try:
            try:
                self._send(conn, body)
            except OSError:
                if not reused:
                    raise
                # The server closed this idle connection just as we reused it: the request never
                # arrived whole, so nothing was processed and a fresh connection is safe.
                conn.close()
                conn = self._connect()
                self._send(conn, body)
            try:
                resp = http.client.HTTPResponse(conn.sock, method="POST")
                resp.begin()
                data = resp.read()
            except http.client.HTTPException as exc:
                raise OSError(f"bad HTTP reply: {exc!r}") from None
        except BaseException:
            if resp is not None:  # its file holds the socket open past conn.close() (a ResourceWarning at GC)
                resp.close()
            conn.close()
            raise
        if resp.will_close:
            conn.close()
        else:
            self._give_back(conn)
        return resp.status, data

    def _send(self, conn: http.client.HTTPConnection, body: bytes) -> None:
        head = self._head + b"%d\r\n\r\n" % len(body)
        sock = conn.sock
        if len(body) <= SMALL_BODY:
            sock.sendall(head + body)  # one segment
        else:  # not copied: TCP_NODELAY sends the head at once anyway
            sock.sendall(head)
            sock.sendall(body)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _take(self) -> tuple[http.client.HTTPConnection, bool]:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connect(), False
            if _still_open(conn):
                return conn, True
            conn.close()

    def _give_back(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < MAX_IDLE:
                self._idle.append(conn)
                return
        conn.close()

    def _connect(self) -> http.client.HTTPConnection:
        conn = self._factory(self._host, self._port, timeout=self.timeout)
        conn.connect()  # now, so that connection errors are told apart from a reused socket's
        return conn


def _still_open(conn: http.client.HTTPConnection) -> bool:
    """An idle keep-alive connection is usable when nothing is readable on it (readable = the
    server closed it, or sent something unexpected)."""
    if conn.sock is None:
        return False
    poller = select.poll()
    poller.register(conn.sock, select.POLLIN)
    try:
        return not poller.poll(0)
    except OSError:
        return False
