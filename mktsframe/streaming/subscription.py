"""The subscriber's end: :class:`Subscription`, what ``backend.subscribe(...)`` returns.

Use it as an async iterator (``async for msg in db.subscribe("BTC/1Min/*")``), as a blocking
iterator in a plain script (``for msg in sub``), or give ``callback=`` to ``subscribe`` and a
background thread calls ``callback(msg)`` for each message. Messages are dicts, the same on every
backend (see :mod:`mktsframe.streaming.messages`): rows ``{"key", "data"}`` and notices
``{"notice", ...}``. ``close()`` ends the iteration and the callback thread.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgpack

from mktsframe.streaming.feed import Feed, SlowConsumerError
from mktsframe.streaming.messages import Chunk, Message
from mktsframe.streaming.patterns import StreamPatterns
from mktsframe.streaming.resume import Snapshot

__all__ = ["Prelude", "Received", "Subscription", "call_back"]

log = logging.getLogger("mktsframe.streaming")


@dataclass(eq=False)
class Received:
    """A message that arrived already decoded (from a ``/ws`` connection)."""

    message: Message
    seq: int = 0
    key: str | None = None

    def __len__(self) -> int:
        return 1 if "data" in self.message else 0

    def tail(self, n: int) -> Received:
        return self

    def messages(self) -> list[Message]:
        return [self.message]

    def frames(self) -> list[bytes]:
        return [msgpack.packb(self.message, use_bin_type=True)]


@dataclass(frozen=True)
class Prelude:
    """A storage snapshot to deliver before the live feed (a local ``since`` subscription)."""

    read: Callable[[], Snapshot]
    patterns: StreamPatterns
    variable: Callable[[str], bool]


class Subscription:
    """Messages of one subscription, in order; see the module docstring."""

    def __init__(
        self,
        feed: Feed,
        *,
        streams: tuple[str, ...],
        prelude: Prelude | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.streams = streams
        self._feed = feed
        self._prelude = prelude
        self._on_close = on_close
        self._pending: collections.deque[Message] = collections.deque()
        self._skip: tuple[int, StreamPatterns] | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Subscription {list(self.streams)!r} {state}>"

    @property
    def closed(self) -> bool:
        return self._closed

    # -- pulling ----------------------------------------------------------------------------------
    def _apply_snapshot(self, snap: Snapshot) -> None:
        assert self._prelude is not None
        for key, batch in snap.batches.items():
            self._pending.extend(Chunk(snap.seq, key, batch, self._prelude.variable(key)).messages())
        self._pending.append({"notice": "caught_up", "rows": snap.rows, "seq": snap.seq})
        self._skip = (snap.seq, self._prelude.patterns)
        self._prelude = None

    def _fill(self) -> None:
        """Move whatever the feed holds into ``_pending`` (never blocks)."""
        items, dropped = self._feed.take()
        if dropped:
            self._pending.append({"notice": "dropped", "dropped": dropped})
        skip = self._skip
        for item in items:
            if skip is not None and 0 < item.seq <= skip[0] and item.key is not None and skip[1].matches(item.key):
                continue
            self._pending.extend(item.messages())

    def _next_ready(self) -> Message | None:
        if not self._pending and not self._closed:
            self._fill()
        if self._pending:
            return self._pending.popleft()
        if self._error is not None:
            raise self._error
        if self._feed.overflowed:
            raise SlowConsumerError(f"subscription {list(self.streams)} fell more than "
                                    f"{self._feed.max_rows} rows behind and was disconnected")
        return None

    def _finished(self) -> bool:
        return self._closed or (self._feed.closed and not self._pending and not len(self._feed))

    def get(self, timeout: float | None = None) -> Message | None:
        """The next message, waiting up to ``timeout`` seconds (``None`` on timeout or when closed)."""
        if self._prelude is not None:
            self._apply_snapshot(self._prelude.read())
        while True:
            msg = self._next_ready()
            if msg is not None or self._finished():
                return msg
            if not self._feed.wait(timeout):
                return self._next_ready()

    def __iter__(self) -> Iterator[Message]:
        while True:
            msg = self.get()
            if msg is None:
                return
            yield msg

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        if self._prelude is not None:
            self._apply_snapshot(await asyncio.to_thread(self._prelude.read))
        while True:
            msg = self._next_ready()
            if msg is not None:
                return msg
            if self._finished():
                raise StopAsyncIteration
            await self._feed.wait_async()

    # -- callback form ----------------------------------------------------------------------------
    def start_callback(self, callback: Callable[[Message], Any]) -> Subscription:
        """Call ``callback(msg)`` for every message on a daemon thread (errors are logged, not fatal)."""
        if self._thread is not None:
            raise RuntimeError("this subscription already has a callback")

        def run() -> None:
            try:
                for msg in self:
                    call_back(callback, msg)
            except Exception as exc:  # e.g. a dropped connection: hand it to close()/the owner
                log.warning("subscription %s ended: %s", list(self.streams), exc)

        self._thread = threading.Thread(target=run, name=f"mkts-subscription {self.streams[0]}", daemon=True)
        self._thread.start()
        return self

    def join_on_close(self, thread: threading.Thread) -> None:
        """Have :meth:`close` wait for ``thread``, which delivers this subscription's messages
        (a ``/ws`` reader that calls the callback itself)."""
        if self._thread is not None:
            raise RuntimeError("this subscription already has a delivering thread")
        self._thread = thread

    def fail(self, exc: BaseException) -> None:
        """End the subscription with ``exc`` (raised to the consumer after pending messages)."""
        self._error = exc
        self._feed.close()

    # -- closing ----------------------------------------------------------------------------------
    def close(self, timeout: float = 5.0) -> None:
        """Stop receiving; pending messages are discarded. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._pending.clear()
        self._feed.close()
        if self._on_close is not None:
            self._on_close()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def call_back(callback: Callable[[Message], Any], msg: Message) -> None:
    """``callback(msg)``; an exception is logged and never ends the subscription."""
    try:
        callback(msg)
    except Exception:
        log.exception("subscription callback %r failed", callback)
