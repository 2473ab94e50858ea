"""Pushing committed rows to ``/ws`` connections without a task switch or an ASGI message per frame.

Why: with 100 subscribers every committed row becomes 100 WebSocket frames. Sent the ASGI way,
each frame wakes that connection's sender task and goes through starlette's and uvicorn's
``send`` (a frame built per connection), several times the cost of the ``send`` system call
itself, all on the event loop that also serves the writers. Server → client frames are not
masked, so one frame's bytes are the same for every connection: :class:`PushBatcher` builds them
once per commit and writes each connection's share with a single ``transport.write``.

Those sends are most of the server's work under many subscribers (a loopback ``send`` costs
~20 µs here, so 100 connections take ~2 ms a commit), so the batcher paces itself: after a flush
that took ``t``, the next one waits until ``FLUSH_GAP * t`` has passed, and the commits that
arrive meanwhile go out together, one ``transport.write`` per connection for all of them. The
fan-out thus never takes more than ``1 / (1 + FLUSH_GAP)`` of the event loop that also serves
the writers, and the delay it adds is zero for a lone commit and at most ``FLUSH_GAP * t``
under a sustained stream (with one subscriber, ``t`` is tens of microseconds).

This is only done while it cannot change what a connection receives: the connection is open,
its transport is not paused by flow control, and its own queue and sender are idle (nothing
queued may be overtaken). Otherwise rows go through the connection's bounded :class:`Feed` and
sender as before, which is also where a slow subscriber's overflow policy applies.

Direct writes need uvicorn's ``websockets-sansio`` protocol object (the ASGI ``send`` callable is
its bound method); with any other server implementation :func:`direct_transport` returns
``None`` and every frame takes the ASGI path.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["DirectTransport", "PushBatcher", "binary_frames", "direct_transport"]

#: After a flush that took ``t`` seconds, the next waits ``FLUSH_GAP * t`` (see the module docstring).
FLUSH_GAP = 2.0

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

    def write(self, data: bytes) -> None:
        p = self._protocol
        if not (p.close_sent or p.disconnected or p.transport.is_closing()):
            p.transport.write(data)


def direct_transport(send: Callable[..., Any]) -> DirectTransport | None:
    """The direct writer for the connection whose ASGI ``send`` this is, or ``None`` if the
    server is not uvicorn's ``websockets-sansio`` implementation."""
    protocol = getattr(send, "__self__", None)
    cls = type(protocol)
    if (cls.__module__, cls.__name__) != _PROTOCOL:
        return None
    return DirectTransport(protocol)


class PushBatcher:
    """Collects the frames for each connection and writes them in one ``transport.write`` per
    connection per flush, flushes paced as the module docstring says. Event-loop thread only."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queued: dict[DirectTransport, list[bytes]] = {}
        self._last: tuple[object, bytes] | None = None
        self._next_flush = 0.0  # time.monotonic() before which no flush starts

    def push(self, target: DirectTransport, item: Any) -> None:
        """Queue ``item``'s frames (``item.frames()``, encoded once per item) for ``target``."""
        last = self._last
        if last is not None and last[0] is item:
            data = last[1]
        else:
            data = binary_frames(item.frames())
            self._last = (item, data)
        if not self._queued:
            wait = self._next_flush - time.monotonic()
            if wait > 0:
                self._loop.call_later(wait, self._flush)
            else:
                # After the callbacks already queued, among them the writer's /rpc reply whose
                # worker finished just after handing us the commit: the acknowledgement leaves first.
                self._loop.call_soon(self._flush)
        self._queued.setdefault(target, []).append(data)

    def flush(self, target: DirectTransport) -> None:
        """Write what is queued for ``target`` now (before something sent another way)."""
        parts = self._queued.pop(target, None)
        if parts:
            target.write(b"".join(parts))

    def _flush(self) -> None:
        start = time.monotonic()
        queued, self._queued = self._queued, {}
        self._last = None
        for target, parts in queued.items():
            target.write(parts[0] if len(parts) == 1 else b"".join(parts))
        end = time.monotonic()
        self._next_flush = end + FLUSH_GAP * (end - start)
