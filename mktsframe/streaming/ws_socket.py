"""One client WebSocket connection on a plain blocking socket, driven by ``websockets``' sans-I/O
protocol (handshake, framing, ping/pong, the closing handshake): what a ``/ws`` subscription reads.

Why not ``websockets``' threaded client: it reads the socket in a thread of its own and hands
every message to the reading thread through a condition variable, a thread switch per message.
A subscriber receiving one frame per committed row spends most of its CPU on those switches
(100 subscriptions in four processes used twice the server's CPU). Here the thread that calls
:meth:`WsSocket.messages` reads the socket itself, and each ``recv`` decodes every frame that
arrived with it.

:meth:`close` may be called from any thread: it sends the close frame and shuts the socket down,
so a reader blocked in ``recv`` returns at once.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

__all__ = ["WsSocket"]

#: Bytes asked of the kernel per ``recv``: room for a few thousand pushed rows at once.
RECV_BYTES = 1 << 18


class WsSocket:
    """An open WebSocket to ``url`` (``ws://`` or ``wss://``); raises :class:`OSError`,
    :class:`TimeoutError` or ``websockets``' :class:`InvalidHandshake` if it cannot be opened."""

    def __init__(self, url: str, timeout: float) -> None:
        uri = parse_uri(url)
        self._protocol = ClientProtocol(uri, max_size=None)  # no extensions: no compression
        self._send_lock = threading.Lock()
        self._pending: collections.deque[Frame] = collections.deque()
        self._parts: list[bytes] = []
        self._eof = False
        self._reading = False
        self._closing = False
        sock = socket.create_connection((uri.host, uri.port), timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if uri.secure:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=uri.host)
            self._sock = sock
            self._protocol.send_request(self._protocol.connect())
            self._flush()
            self._handshake()
        except BaseException:
            sock.close()
            raise
        sock.settimeout(None)

    def _handshake(self) -> None:
        while True:
            self._receive()
            for event in self._protocol.events_received():
                if isinstance(event, Response):
                    if self._protocol.handshake_exc is not None:
                        raise self._protocol.handshake_exc
                    continue
                self._pending.append(event)  # frames that came with the response
            if self._protocol.state is State.OPEN:
                return
            if self._eof or self._protocol.state is State.CLOSED:
                raise InvalidHandshake("the server closed the connection during the handshake")

    # -- sending ----------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        with self._send_lock:
            self._protocol.send_binary(data)
            self._flush()

    def _flush(self) -> None:
        """Send what the protocol has queued (frames, pongs, the close reply); caller holds the lock
        or is the only thread using the socket yet."""
        out = b"".join(self._protocol.data_to_send())
        if out:
            self._sock.sendall(out)

    # -- receiving --------------------------------------------------------------------------------
    def _receive(self) -> None:
        """Feed one ``recv`` to the protocol (end of stream, a reset or a local shutdown: EOF)."""
        try:
            data = self._sock.recv(RECV_BYTES)
        except TimeoutError:
            raise
        except (OSError, ValueError):
            data = b""
        if data:
            self._protocol.receive_data(data)
        elif not self._eof:
            self._eof = True
            self._protocol.receive_eof()

    def messages(self, timeout: float | None = None) -> Iterator[bytes]:
        """Each data message as it arrives (text as UTF-8 bytes), until the connection closes;
        then raises :class:`ConnectionClosed` (``exc.rcvd``: the server's close frame, if any).
        ``timeout`` bounds each wait for data (:class:`TimeoutError`)."""
        self._sock.settimeout(timeout)
        self._reading = True
        pending = self._pending
        try:
            while True:
                while pending:
                    frame = pending.popleft()
                    if frame.opcode in (Opcode.BINARY, Opcode.TEXT, Opcode.CONT):
                        self._parts.append(frame.data)
                        if frame.fin:
                            data = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
                            self._parts = []
                            yield bytes(data)
                if self._eof or self._protocol.state is State.CLOSED:
                    raise self._protocol.close_exc
                self._receive()
                pending.extend(e for e in self._protocol.events_received() if isinstance(e, Frame))
                with self._send_lock, contextlib.suppress(OSError):
                    if not self._closing:
                        self._flush()  # pongs and the reply to a close
        finally:
            with self._send_lock:
                self._reading = False
                if self._closing:
                    self._sock.close()
                else:
                    with contextlib.suppress(OSError):
                        self._sock.settimeout(None)

    def recv(self, timeout: float) -> bytes:
        """The next data message (waiting at most ``timeout`` seconds for each read)."""
        return next(self.messages(timeout))

    @property
    def close_received(self) -> Close | None:
        return self._protocol.close_rcvd

    # -- closing ----------------------------------------------------------------------------------
    def close(self) -> None:
        """Send a normal close frame (if still open) and shut the socket down, which wakes a
        reader blocked in ``recv``; the socket is closed by that reader as it leaves (so no
        thread ever reads a closed descriptor), or here when nobody reads. Idempotent."""
        with self._send_lock:
            if self._closing:
                return
            self._closing = True
            if self._protocol.state is State.OPEN:
                self._protocol.send_close(1000)
                with contextlib.suppress(OSError):
                    self._flush()
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            if not self._reading:
                self._sock.close()
