"""Pushing committed rows to ``/ws`` connections without a task switch or an ASGI message per frame.

Why: with 100 subscribers every committed row becomes 100 WebSocket frames. Sent the ASGI way,
each frame wakes that connection's sender task and goes through starlette's and uvicorn's
``send`` (a frame built per connection), several times the cost of the ``send`` system call
itself, all on the event loop that also serves the writers. Server → client frames are not
masked, so one frame's bytes are the same for every connection: :class:`FrameCache` builds them
once per delivery pass of the hub (:mod:`mktsframe.streaming.hub`, which also paces those passes)
and each connection gets them in a single ``transport.write``.

This is only done while it cannot change what a connection receives: the connection is open,
its transport is not paused by flow control, and its own queue and sender are idle (nothing
queued may be overtaken). Otherwise rows go through the connection's bounded :class:`Feed` and
sender as before, which is also where a slow subscriber's overflow policy applies.

Direct writes need uvicorn's ``websockets-sansio`` protocol object (the ASGI ``send`` callable is
its bound method); with any other server implementation :func:`direct_transport` returns
``None`` and every frame takes the ASGI path.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["DirectTransport", "FrameCache", "binary_frames", "direct_transport"]

#: uvicorn's protocol class whose state and transport :class:`DirectTransport` reads.
_PROTOCOL = ("uvicorn.protocols.websockets.websockets_sansio_impl", "WebSocketsSansIOProtocol")


def binary_frames(payloads: Sequence[bytes]) -> bytes:
    """Each payload as one unmasked, final binary WebSocket frame (RFC 6455 §5.2), concatenated."""
    out = bytearray()
    for p in payloads:
        n = len(p)
        if n < 126:
            out += struct.pack("!BB", 0x82, n)
        elif n < 1 << 16:
            out += struct.pack("!BBH", 0x82, 126, n)
        else:
            out += struct.pack("!BBQ", 0x82, 127, n)
        out += p
    return bytes(out)


class DirectTransport:
    """The transport under one accepted uvicorn WebSocket, and whether bytes may be written to it."""

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol

    def writable(self) -> bool:
        """Open, handshake done, no close sent or received, and not paused by flow control."""
        p = self._protocol
        return (p.handshake_complete and not p.close_sent and not p.disconnected and p.writable.is_set()
                and not p.transport.is_closing())

    def try_write(self, data: bytes) -> bool:
        """Write ``data`` if :meth:`writable`; whether it was written."""
        if self.writable():
            self._protocol.transport.write(data)
            return True
        return False


def direct_transport(send: Callable[..., Any]) -> DirectTransport | None:
    """The direct writer for the connection whose ASGI ``send`` this is, or ``None`` if the
    server is not uvicorn's ``websockets-sansio`` implementation."""
    protocol = getattr(send, "__self__", None)
    cls = type(protocol)
    if (cls.__module__, cls.__name__) != _PROTOCOL:
        return None
    return DirectTransport(protocol)


class FrameCache:
    """A list of items (``Chunk``/``Notice``) as WebSocket frames and its number of rows, each
    worked out once for every connection that is handed the same list (the hub shares one list
    per distinct set of streams in a delivery pass). The list is held, so its identity cannot be
    reused by another while it is the one remembered."""

    def __init__(self) -> None:
        self._items: list[Any] | None = None
        self._rows = 0
        self._data: bytes | None = None

    def _hold(self, items: list[Any]) -> None:
        if self._items is not items:
            self._items, self._rows, self._data = items, sum(map(len, items)), None

    def rows(self, items: list[Any]) -> int:
        """Rows in ``items`` (notices count none)."""
        self._hold(items)
        return self._rows

    def of(self, items: list[Any]) -> bytes:
        """``items`` as binary frames, one per message, concatenated."""
        self._hold(items)
        if self._data is None:
            self._data = binary_frames([frame for item in items for frame in item.frames()])
        return self._data
