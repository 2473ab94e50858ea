"""One client WebSocket connection on a plain blocking socket: what a ``/ws`` subscription reads.

Why not ``websockets``' threaded client: it reads the socket in a thread of its own and hands
every message to the reading thread through a condition variable, a thread switch per message.
A subscriber receiving one frame per committed row spent most of its CPU on those switches
(100 subscriptions in four processes used twice the server's CPU). Here the thread that calls
:meth:`WsSocket.messages` reads the socket itself, and each ``recv`` yields every frame that
arrived with it.

``websockets``' sans-I/O protocol does the opening handshake and builds every frame we send
(masked, as a client must: the subscribe message, pongs, the close). Incoming frames are
decoded here (RFC 6455 §5.2): a server's frames are unmasked and, without extensions, a 2-10 byte
header and the payload, a few microseconds per frame in Python where the general parser takes
several times that; with a thousand frames a second per subscription that is most of a
subscriber's CPU. Pings are answered, fragmented messages reassembled, a close frame answered
and reported; a masked or reserved-bit frame is a protocol error (close 1002).

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
from websockets.exceptions import ConnectionClosed, InvalidHandshake, ProtocolError
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

__all__ = ["WsSocket"]

#: Bytes asked of the kernel per ``recv``: room for a few thousand pushed rows at once.
RECV_BYTES = 1 << 18

_CONT, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class WsSocket:
    """An open WebSocket to ``url`` (``ws://`` or ``wss://``); raises :class:`OSError`,
    :class:`TimeoutError` or ``websockets``' :class:`InvalidHandshake` if it cannot be opened."""

    def __init__(self, url: str, timeout: float, *, headers: dict[str, str] | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        uri = parse_uri(url)
        self._protocol = ClientProtocol(uri, max_size=None)  # no extensions: no compression
        self._send_lock = threading.Lock()
        self._buffer = bytearray()
        self._parts: list[bytes] = []
        self._messages: collections.deque[bytes] = collections.deque()
        self._close_rcvd: Close | None = None
        self._ended = False
        self._reading = False
        self._closing = False
        sock = socket.create_connection((uri.host, uri.port), timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if uri.secure:
                sock = (ssl_context or ssl.create_default_context()).wrap_socket(sock, server_hostname=uri.host)
            self._sock = sock
            request = self._protocol.connect()
            for name, value in (headers or {}).items():
                request.headers[name] = value
            self._protocol.send_request(request)
            self._flush()
            self._handshake()
        except BaseException:
            sock.close()
            raise
        sock.settimeout(None)

    def _handshake(self) -> None:
        while self._protocol.state is State.CONNECTING:
            data = self._sock.recv(RECV_BYTES)
            if not data:
                raise InvalidHandshake("the server closed the connection during the handshake")
            self._protocol.receive_data(data)
            for event in self._protocol.events_received():
                if isinstance(event, Response) and self._protocol.handshake_exc is not None:
                    raise self._protocol.handshake_exc
                if isinstance(event, Frame):  # (a server sends nothing before our subscribe)
                    self._frame(event.opcode.value, event.fin, bytes(event.data))

    # -- sending ----------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        with self._send_lock:
            self._protocol.send_binary(data)
            self._flush()

    def _flush(self) -> None:
        """Send what the protocol has queued; the caller holds the lock or is the only user yet."""
        out = b"".join(self._protocol.data_to_send())
        if out:
            self._sock.sendall(out)

    def _send_frame(self, frame: Frame) -> None:
        with self._send_lock, contextlib.suppress(OSError):
            if not self._closing:
                self._protocol.send_frame(frame)
                self._flush()

    # -- receiving --------------------------------------------------------------------------------
    def _decode(self) -> None:
        """Move every complete frame out of the buffer: data messages to ``_messages``, control
        frames answered; a close or a protocol error ends the stream."""
        buf = self._buffer
        size = len(buf)
        i = 0
        while not self._ended and size - i >= 2:
            b0, b1 = buf[i], buf[i + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                head = 4
                if size - i < head:
                    break
                length = int.from_bytes(buf[i + 2 : i + 4], "big")
            elif length == 127:
                head = 10
                if size - i < head:
                    break
                length = int.from_bytes(buf[i + 2 : i + 10], "big")
            end = i + head + length
            if end > size:
                break
            payload = bytes(buf[i + head : end])
            i = end
            if b0 == 0x82 and not b1 & 0x80 and not self._parts:  # a whole binary message: the usual
                self._messages.append(payload)
            elif b1 & 0x80 or b0 & 0x70:
                self._fail(1002, "masked or reserved-bit frame from the server")
            else:
                self._frame(b0 & 0x0F, bool(b0 & 0x80), payload)
        del buf[:i]

    def _frame(self, opcode: int, fin: bool, payload: bytes) -> None:
        if opcode in (_BINARY, _TEXT, _CONT):
            if not fin or self._parts:
                self._parts.append(payload)
                if not fin:
                    return
                payload = b"".join(self._parts)
                self._parts = []
            self._messages.append(payload)
        elif opcode == _PING:
            self._send_frame(Frame(Opcode.PONG, payload))
        elif opcode == _CLOSE:
            try:
                self._close_rcvd = Close.parse(payload)
            except (ProtocolError, UnicodeDecodeError):
                self._close_rcvd = Close(1002, "")
            with self._send_lock, contextlib.suppress(OSError):
                if self._protocol.state is State.OPEN and not self._closing:
                    self._protocol.send_close(self._close_rcvd.code if self._close_rcvd.code != 1005 else None)
                    self._flush()
            self._ended = True
        elif opcode != _PONG:
            self._fail(1002, f"unknown opcode {opcode}")

    def _fail(self, code: int, reason: str) -> None:
        with self._send_lock, contextlib.suppress(OSError):
            if self._protocol.state is State.OPEN and not self._closing:
                self._protocol.send_close(code, reason)
                self._flush()
        self._ended = True

    def messages(self, timeout: float | None = None) -> Iterator[bytes]:
        """Each data message as it arrives (text as UTF-8 bytes), until the connection closes;
        then raises :class:`ConnectionClosed` (:attr:`close_received`: the server's close frame,
        if any). ``timeout`` bounds each wait for data (:class:`TimeoutError`)."""
        for queued in self._arrivals(timeout):
            yield queued.popleft()

    def batches(self, timeout: float | None = None) -> Iterator[list[bytes]]:
        """As :meth:`messages`, but the messages that arrived together (one ``recv``) come as one
        list: a reader thread then takes one step per read, not one per message."""
        for queued in self._arrivals(timeout):
            batch = list(queued)
            queued.clear()
            yield batch

    def _arrivals(self, timeout: float | None) -> Iterator[collections.deque[bytes]]:
        """The queue of complete messages, yielded whenever it holds any (the caller takes from
        it), the socket read whenever it is empty; raises as :meth:`messages` says."""
        with self._send_lock:
            if self._closing:  # close() came first and closed the socket
                raise ConnectionClosed(self._close_rcvd, None)
            self._reading = True
            self._sock.settimeout(timeout)
        queued = self._messages
        try:
            while True:
                if queued:
                    yield queued
                    continue
                if self._ended:
                    raise ConnectionClosed(self._close_rcvd, None)
                try:
                    data = self._sock.recv(RECV_BYTES)
                except TimeoutError:
                    raise
                except (OSError, ValueError):  # shut down by close(), or reset by the peer
                    data = b""
                if not data:
                    self._ended = True
                    continue
                self._buffer += data
                self._decode()
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
        return self._close_rcvd

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
