"""``/ws``: MarketStore's push stream, compatible with pymarketstore's ``StreamConn``.

Protocol (binary msgpack frames; see :mod:`mktsframe.streaming.messages` for the payloads):

* The client sends ``{"streams": ["BTC/*/*", "*/1Min/OHLCV"]}``. A valid message *replaces* the
  connection's patterns and is echoed back byte for byte; an invalid pattern gets
  ``{"error": "<stream> is an invalid stream"}`` and the old set stays; an empty list leaves the
  set unchanged (and is echoed); undecodable messages are logged and ignored. Whether buckets
  exist is not checked.
* Every committed write to a matching bucket is pushed as one ``{"key", "data"}`` message per
  stored row, immediately (MarketStore pushes only the last row, and holds bars longer than
  1Min until they close; mktsframe streams every write by default, no trigger needed).
* mktsframe extensions in the subscribe message (see :mod:`mktsframe.streaming.ws_client`):
  ``mkts_since`` replays from storage first, ``mkts_notices`` adds delete/destroy notices,
  ``mkts_max_rows``/``mkts_policy`` set this connection's queue (never above the server's bound).
* Bounds: at most ``max_streams`` patterns per connection and :data:`MAX_PENDING_REPLAYS` replays
  waiting at once; a message over either gets an ``{"error": ...}`` and changes nothing.

Each connection has a bounded :class:`~mktsframe.streaming.feed.Feed` drained by its own sender
task, so a slow reader only ever fills its own queue (policy ``drop_oldest`` by default;
``disconnect`` closes with code 1008). The app's :class:`~mktsframe.streaming.hub.CommitHub` hands
each commit to the connection's :class:`_Outlet`, which writes the rows straight to the socket
(:mod:`mktsframe.server.ws_push`) while nothing is queued there, and queues them otherwise. On
shutdown uvicorn closes every socket (code 1012) within ``stop_grace_period``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import msgpack
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from mktsframe.errors import InvalidKeyError
from mktsframe.server.ws_push import DirectTransport, FrameCache, binary_frames, direct_transport
from mktsframe.streaming.feed import DEFAULT_MAX_ROWS, Feed
from mktsframe.streaming.hub import CommitHub, Subscriber
from mktsframe.streaming.messages import Chunk, Notice
from mktsframe.streaming.patterns import StreamPatterns
from mktsframe.streaming.resume import snapshot_since
from mktsframe.streaming.ws_client import CLOSE_SLOW_CONSUMER

__all__ = ["serve_stream"]

log = logging.getLogger("mktsframe.server.ws")

#: ``mkts_since`` replays one connection may have waiting (each reads storage): more are refused.
MAX_PENDING_REPLAYS = 4
#: Patterns per connection when the app sets no ``max_streams``.
DEFAULT_MAX_STREAMS = 1000


@dataclass(eq=False)
class _CatchUp:
    """A queued request to replay storage (processed by the sender, in order with the echo)."""

    patterns: StreamPatterns
    since: int
    seq: int = 0
    key: str | None = None

    def __len__(self) -> int:
        return 0


class _Outlet:
    """Where the hub puts this connection's commits (on the event loop): straight to the socket
    while that cannot overtake or bypass anything, else into the bounded feed for the sender."""

    def __init__(self, feed: Feed, direct: DirectTransport | None, frames: FrameCache | None) -> None:
        self.feed = feed
        self.direct = direct
        self.frames = frames
        self.sending = False
        """The sender holds items it took from the feed and has not sent yet."""
        self.skip: tuple[int, StreamPatterns] | None = None
        """After a ``since`` replay: commits up to this seq, to these patterns, were replayed."""
        self.replays = 0
        """``mkts_since`` replays queued and not finished."""
        self.max_streams = DEFAULT_MAX_STREAMS

    def put(self, item: Chunk | Notice | _CatchUp) -> None:
        self.feed.put(item)

    def put_many(self, items: list[Chunk | Notice]) -> None:
        """One delivery pass's items: straight to the socket while the connection is idle and takes
        them, else queued (where the overflow policy applies). Up to ``max_rows`` rows go in one
        write; a larger pass goes item by item, so that flow control stops it after at most one
        commit beyond the socket's buffers (the transport's buffer is not bounded by itself)."""
        direct, frames, feed = self.direct, self.frames, self.feed
        if (direct is None or frames is None or self.sending or not feed.idle()
                or (self.skip is not None and any(map(self.replayed, items)))):
            feed.put_many(items)
            return
        if frames.rows(items) <= feed.max_rows:
            if not direct.try_write(frames.of(items)):
                feed.put_many(items)
            return
        for i, item in enumerate(items):
            if not direct.try_write(binary_frames(item.frames())):
                feed.put_many(items[i:])
                return

    def close(self) -> None:
        self.feed.close()

    def replayed(self, item: Chunk | Notice) -> bool:
        skip = self.skip
        return skip is not None and 0 < item.seq <= skip[0] and skip[1].matches(item.key)


async def serve_stream(scope: Scope, receive: Receive, send: Send, state: Any) -> None:
    """The ASGI handler of ``/ws``; ``state`` is the app's (``hub``, ``frames``). Called with the
    server's own ``send`` (not a middleware's wrapper), so rows can be written directly."""
    websocket = WebSocket(scope, receive, send)
    hub: CommitHub | None = getattr(state, "hub", None)
    await websocket.accept()
    if hub is None:  # a backend without a local engine (nothing to hear)
        await websocket.close(1011, "this server has no local engine to stream")
        return
    feed = Feed(DEFAULT_MAX_ROWS)
    outlet = _Outlet(feed, direct_transport(send), getattr(state, "frames", None))
    outlet.max_streams = getattr(state, "max_streams", DEFAULT_MAX_STREAMS) or DEFAULT_MAX_STREAMS
    subscriber = hub.subscribe(StreamPatterns(), outlet)
    sender = asyncio.create_task(_send(websocket, outlet, hub))
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            raw = message.get("bytes")
            if raw is None:
                raw = (message.get("text") or "").encode()
            _handle_subscribe(raw, hub, subscriber, outlet)
    except WebSocketDisconnect:
        pass
    finally:
        hub.unsubscribe(subscriber)
        feed.close()
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender


def _handle_subscribe(raw: bytes, hub: CommitHub, subscriber: Subscriber, outlet: _Outlet) -> None:
    """Apply one subscribe message; the echo, errors and replays are queued in order with the rows."""
    feed = outlet.feed
    try:
        request: Any = msgpack.unpackb(raw, raw=False)
    except Exception as exc:
        log.info("ignoring an undecodable /ws message (%s)", exc)
        return
    if not isinstance(request, dict) or not isinstance(request.get("streams"), list):
        log.info("ignoring a /ws message without a 'streams' list")
        return
    if len(request["streams"]) > outlet.max_streams:
        outlet.put(Notice({"error": f"too many streams in one subscription ({len(request['streams'])}; "
                                    f"max_streams is {outlet.max_streams}): use wildcards such as */1Min/*"}))
        return
    since = request.get("mkts_since")
    replay = isinstance(since, int) and not isinstance(since, bool)
    if replay and outlet.replays >= MAX_PENDING_REPLAYS:
        outlet.put(Notice({"error": f"too many replays waiting ({MAX_PENDING_REPLAYS}): wait for caught_up"}))
        return
    try:
        patterns = StreamPatterns(request["streams"])
    except InvalidKeyError as exc:
        outlet.put(Notice({"error": str(exc)}))
        return
    hub.update(subscriber, patterns if patterns else subscriber.patterns, notices=bool(request.get("mkts_notices")))
    max_rows = request.get("mkts_max_rows")
    if isinstance(max_rows, int) and max_rows >= 1:
        feed.max_rows = min(max_rows, DEFAULT_MAX_ROWS)
    if request.get("mkts_policy") in ("drop_oldest", "disconnect"):
        feed.policy = request["mkts_policy"]
    outlet.put(Notice(request, raw=raw))
    if replay:
        outlet.replays += 1
        outlet.put(_CatchUp(subscriber.patterns, since))


async def _send(websocket: WebSocket, outlet: _Outlet, hub: CommitHub) -> None:
    feed = outlet.feed
    try:
        while True:
            items, dropped = feed.take()
            outlet.sending = bool(items or dropped)
            if dropped:
                await websocket.send_bytes(msgpack.packb({"notice": "dropped", "dropped": dropped}))
            for item in items:
                if isinstance(item, _CatchUp):
                    try:
                        outlet.skip = await _replay(websocket, hub, item)
                    finally:
                        outlet.replays -= 1
                    continue
                if outlet.replayed(item):
                    continue
                for frame in item.frames():
                    await websocket.send_bytes(frame)
            if items or dropped:
                continue
            if feed.closed:
                if feed.overflowed:
                    await websocket.close(CLOSE_SLOW_CONSUMER, f"more than {feed.max_rows} rows behind")
                return
            await feed.wait_async()
            # Let whatever became ready with this commit run before the sends: above all the writer's
            # /rpc handler, whose worker thread finished just after handing us the commit. Its
            # acknowledgement then leaves before the N subscribers' frames, not after them.
            await asyncio.sleep(0)
    except (WebSocketDisconnect, RuntimeError, OSError):  # the peer went away mid-send
        return


async def _replay(websocket: WebSocket, hub: CommitHub, req: _CatchUp) -> tuple[int, StreamPatterns]:
    variable = hub.kinds.variable
    snap = await anyio.to_thread.run_sync(snapshot_since, hub.source, req.patterns, req.since, variable)
    for key, batch in snap.batches.items():
        for frame in Chunk(snap.seq, key, batch, variable(key)).frames():
            await websocket.send_bytes(frame)
    await websocket.send_bytes(msgpack.packb({"notice": "caught_up", "rows": snap.rows, "seq": snap.seq}))
    return snap.seq, req.patterns
