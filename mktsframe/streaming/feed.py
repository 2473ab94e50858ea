"""A bounded, never-blocking queue between the writer side and one subscriber.

Why: a subscriber that reads slowly must never slow the writer or other subscribers. So the
producer (the engine's writer thread, the server's event loop, or a client's socket thread) only
appends and never waits; the queue holds at most ``max_rows`` pending rows, and on overflow the
``policy`` decides:

* ``"drop_oldest"`` (default): the oldest pending rows are discarded and the subscriber next
  receives ``{"notice": "dropped", "dropped": n}`` before the rows that survived, so it knows it
  has a gap (and can resubscribe with ``since``).
* ``"disconnect"``: the queue is emptied and closed with :attr:`overflowed` set; the server closes
  the WebSocket with code 1008, a local subscription raises :class:`SlowConsumerError`.

Notices (control messages) are never dropped and do not count as rows. The consumer may wait in
a thread (:meth:`wait`) or in asyncio (:meth:`wait_async`); a producer wakes it at most once per
wait, so a busy consumer costs the producer nothing but an append.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from typing import Any, Literal, Protocol

from mktsframe.errors import MktsError

__all__ = ["DEFAULT_MAX_ROWS", "Feed", "OverflowPolicy", "Sink", "SlowConsumerError"]

OverflowPolicy = Literal["drop_oldest", "disconnect"]
#: Pending rows a subscriber may fall behind by before the overflow policy applies.
DEFAULT_MAX_ROWS = 100_000


class SlowConsumerError(MktsError):
    """A ``policy="disconnect"`` subscription fell more than ``max_rows`` behind and was closed."""


class Item(Protocol):
    def __len__(self) -> int: ...
    def tail(self, n: int) -> Any: ...


class Sink(Protocol):
    """What a producer hands items to: a :class:`Feed`, or something that decides per item
    (the server's ``/ws`` connection outlet)."""

    def put(self, item: Any) -> None: ...
    def put_many(self, items: list[Any]) -> None: ...
    def close(self) -> None: ...


class Feed:
    """Pending items (each ``len(item)`` rows) for one subscriber; all methods are thread-safe."""

    def __init__(self, max_rows: int = DEFAULT_MAX_ROWS, policy: OverflowPolicy = "drop_oldest") -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        if policy not in ("drop_oldest", "disconnect"):
            raise ValueError(f"policy must be 'drop_oldest' or 'disconnect', got {policy!r}")
        self.max_rows = int(max_rows)
        self.policy: OverflowPolicy = policy
        self._items: collections.deque[Any] = collections.deque()
        self._rows = 0
        self._dropped = 0
        self._closed = False
        self.overflowed = False
        self._cond = threading.Condition(threading.Lock())
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None], int] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        """Pending rows."""
        return self._rows

    def put(self, item: Any) -> None:
        """Append ``item`` (never blocks; applies the overflow policy)."""
        with self._cond:
            if self._closed:
                return
            self._items.append(item)
            self._rows += len(item)
            if self._rows > self.max_rows:
                if self.policy == "disconnect":
                    self.overflowed = True
                    self._closed = True
                    self._items.clear()
                    self._rows = 0
                else:
                    self._drop_oldest()
            self._wake()

    def _drop_oldest(self) -> None:
        excess = self._rows - self.max_rows
        kept: collections.deque[Any] = collections.deque()
        while excess > 0 and self._items:
            item = self._items.popleft()
            n = len(item)
            if n == 0:  # a notice: keep it, in order
                kept.append(item)
            elif n <= excess:
                excess -= n
                self._rows -= n
                self._dropped += n
            else:
                self._items.appendleft(item.tail(n - excess))
                self._rows -= excess
                self._dropped += excess
                excess = 0
        self._items.extendleft(reversed(kept))

    def put_many(self, items: list[Any]) -> None:
        """:meth:`put` each of ``items``, in order."""
        for item in items:
            self.put(item)

    def take(self) -> tuple[list[Any], int]:
        """Everything pending and how many rows were dropped since the last take (never blocks)."""
        with self._cond:
            items = list(self._items)
            self._items.clear()
            self._rows = 0
            dropped, self._dropped = self._dropped, 0
            return items, dropped

    def close(self) -> None:
        """Stop accepting items and wake the consumer (pending items can still be taken)."""
        with self._cond:
            self._closed = True
            self._wake()

    def idle(self) -> bool:
        """Nothing pending (no item, no drop to report) and still open."""
        return not self._items and not self._dropped and not self._closed

    def _ready(self) -> bool:
        return bool(self._items) or bool(self._dropped) or self._closed

    def _wake(self) -> None:  # holds the lock
        self._cond.notify_all()
        w = self._waiter
        if w is None:
            return
        self._waiter = None
        loop, fut, thread = w
        if thread == threading.get_ident():
            if not fut.done():
                fut.set_result(None)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(_resolve, fut)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until something is pending or the feed is closed; ``False`` on timeout."""
        with self._cond:
            return self._cond.wait_for(self._ready, timeout)

    async def wait_async(self) -> None:
        """Await until something is pending or the feed is closed (one awaiting consumer)."""
        loop = asyncio.get_running_loop()
        with self._cond:
            if self._ready():
                return
            fut: asyncio.Future[None] = loop.create_future()
            self._waiter = (loop, fut, threading.get_ident())
        try:
            await fut
        finally:
            with self._cond:
                if self._waiter is not None and self._waiter[1] is fut:
                    self._waiter = None


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
