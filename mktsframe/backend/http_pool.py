"""A small thread-safe pool of HTTP/1.1 keep-alive connections: what :class:`HTTPBackend` posts with.

Why not a general HTTP client: a 1-row write is a few hundred bytes each way, and on a small
machine a general client's per-request work (URL and header objects, cookie handling, a request
and a response model, headers and body sent as two TCP segments) costs more CPU than the server's
whole durable write (~1 ms against ~0.3 ms on a 2-core 2.5 GHz VM). Here a request is one
``sendmsg`` of the prebuilt header block and the body (no copy of a large body; ``TCP_NODELAY``,
so it leaves at once), and the reply is read with the standard library's
:class:`http.client.HTTPResponse` (``Content-Length`` or chunked, as MarketStore's Go server may
send). ``https://`` URLs are wrapped with the default TLS context. Proxy environment variables are
not consulted: the server is addressed directly.

Timeouts apply to each socket operation (connect, send, every read), not to the whole call, so
a large reply that keeps streaming is not cut off while a dead server is.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
from urllib.parse import urlparse

__all__ = ["ConnectionPool"]

#: Idle connections kept per pool (more concurrent callers than this open extra ones, closed after use).
MAX_IDLE = 8


class ConnectionPool:
    """``POST`` to one URL over reused connections; callable from any number of threads."""

    def __init__(self, url: str, headers: dict[str, str], timeout: float) -> None:
        parts = urlparse(url)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if self.tls else 80)
        self.timeout = timeout
        host_header = parts.netloc.rsplit("@", 1)[-1]
        lines = [f"POST {parts.path or '/'} HTTP/1.1", f"Host: {host_header}",
                 *(f"{k}: {v}" for k, v in headers.items())]
        self._head = "\r\n".join(lines).encode("latin-1") + b"\r\nContent-Length: "
        self._idle: list[socket.socket] = []
        self._lock = threading.Lock()
        self._tls_context = ssl.create_default_context() if self.tls else None

    def post(self, body: bytes) -> tuple[int, bytes]:
        """``(status, reply body)``; raises :class:`TimeoutError` or :class:`OSError` (including
        :class:`http.client.HTTPException`-derived errors re-raised as ``OSError``)."""
        request = self._head + str(len(body)).encode() + b"\r\n\r\n"
        sock, reused = self._take()
        try:
            try:
                self._send(sock, request, body)
            except OSError:
                if not reused:
                    raise
                # The server closed this idle connection just as we reused it: nothing of the
                # request was processed (it never arrived whole), so a fresh connection is safe.
                sock.close()
                sock = self._connect()
                self._send(sock, request, body)
            resp = http.client.HTTPResponse(sock, method="POST")
            try:
                resp.begin()
                data = resp.read()
            except http.client.HTTPException as exc:
                raise OSError(f"bad HTTP reply: {exc!r}") from None
            finally:
                resp.close()  # drops the response's file object, not the socket
        except BaseException:
            sock.close()
            raise
        if resp.will_close:
            sock.close()
        else:
            self._give_back(sock)
        return resp.status, data

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for s in idle:
            s.close()

    # -- connections ------------------------------------------------------------------------------
    def _take(self) -> tuple[socket.socket, bool]:
        while True:
            with self._lock:
                sock = self._idle.pop() if self._idle else None
            if sock is None:
                return self._connect(), False
            if _still_open(sock):
                return sock, True
            sock.close()

    def _give_back(self, sock: socket.socket) -> None:
        with self._lock:
            if len(self._idle) < MAX_IDLE:
                self._idle.append(sock)
                return
        sock.close()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls_context is not None:
                sock = self._tls_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        return sock

    @staticmethod
    def _send(sock: socket.socket, request: bytes, body: bytes) -> None:
        if isinstance(sock, ssl.SSLSocket):  # no sendmsg on TLS sockets
            sock.sendall(request)
            sock.sendall(body)
            return
        sent = sock.sendmsg([request, body])
        total = len(request) + len(body)
        if sent < total:  # a large body: the rest goes out as the socket takes it
            rest = memoryview(request + body)[sent:] if sent < len(request) else memoryview(body)[sent - len(request):]
            sock.sendall(rest)


def _still_open(sock: socket.socket) -> bool:
    """An idle keep-alive connection is usable when nothing is readable on it (readable = the
    server closed it, or sent something unexpected)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    try:
        return not poller.poll(0)
    except OSError:
        return False
