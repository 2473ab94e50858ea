"""Fan-out of an engine's commits to subscribers, each with its own bounded :class:`Feed`.

One engine listener serves every subscriber. It runs on the writer's thread under the write
lock, so it does as little as possible there: with ``loop`` given (the server) it only hands the
event to that event loop (one ``call_soon_threadsafe`` per commit, whatever the number of
subscribers) and the fan-out happens on the loop; without (in-process subscriptions) it fans out
inline, which is a pattern check and a deque append per subscriber. Either way nobody waits for
a subscriber: a full feed applies its overflow policy instead.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from dataclasses import dataclass

from mktsframe.backend.bucket_kinds import BucketKinds
from mktsframe.engine import Engine
from mktsframe.engine.commits import CommitEvent
from mktsframe.streaming.feed import Sink
from mktsframe.streaming.messages import Chunk, Notice
from mktsframe.streaming.patterns import StreamPatterns

__all__ = ["CommitHub", "Subscriber", "hub_for"]


@dataclass(eq=False)
class Subscriber:
    """One subscriber's patterns (replaceable at any time) and feed (a :class:`Feed` or another sink)."""

    patterns: StreamPatterns
    feed: Sink
    notices: bool = False
    """Also receive delete/destroy notices (mktsframe clients; never pymarketstore's)."""


class CommitHub:
    """Delivers each commit of ``engine`` to the feeds of the subscribers whose patterns match."""

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.engine = engine
        self.loop = loop
        self.kinds = BucketKinds(lambda key: engine.query(key, limit=0))
        self._subscribers: tuple[Subscriber, ...] = ()
        self._lock = threading.Lock()
        self._detach: object = None

    def __len__(self) -> int:
        return len(self._subscribers)

    def subscribe(self, patterns: StreamPatterns, feed: Sink, *, notices: bool = False) -> Subscriber:
        sub = Subscriber(patterns, feed, notices)
        with self._lock:
            self._subscribers = (*self._subscribers, sub)
            if self._detach is None:
                self._detach = self.engine.commits.add(self._listen)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Remove ``sub``; the engine listener goes when the last one does (writes then skip all work)."""
        with self._lock:
            self._subscribers = tuple(s for s in self._subscribers if s is not sub)
            if not self._subscribers and self._detach is not None:
                self._detach()  # type: ignore[operator]
                self._detach = None

    def close(self) -> None:
        with self._lock:
            subs, self._subscribers = self._subscribers, ()
            if self._detach is not None:
                self._detach()  # type: ignore[operator]
                self._detach = None
        for s in subs:
            s.feed.close()

    def _listen(self, event: CommitEvent) -> None:  # the writer's thread, write lock held
        loop = self.loop
        if loop is None:
            self.fan_out(event)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self.fan_out, event)

    def fan_out(self, event: CommitEvent) -> None:
        key = event.key
        if event.op in ("create", "destroy"):
            self.kinds.forget(key)
        subs = [s for s in self._subscribers if s.patterns.matches(key)]
        if not subs:
            return
        if event.op == "write":
            if event.batch is None or not len(event.batch):
                return
            item: Chunk | Notice = Chunk(event.seq, key, event.batch, self.kinds.variable(key))
        elif event.op == "delete":
            item = Notice({"notice": "deleted", "bucket": key, "start": event.start, "end": event.end}, None,
                          event.seq, key)
        elif event.op == "destroy":
            item = Notice({"notice": "destroyed", "bucket": key}, None, event.seq, key)
        else:
            return
        for s in subs:
            if isinstance(item, Chunk) or s.notices:
                s.feed.put(item)


_hubs: weakref.WeakKeyDictionary[Engine, CommitHub] = weakref.WeakKeyDictionary()
_hubs_lock = threading.Lock()


def hub_for(engine: Engine) -> CommitHub:
    """The in-process hub of ``engine`` (fan-out on the writer's thread), made on first use."""
    with _hubs_lock:
        hub = _hubs.get(engine)
        if hub is None:
            hub = _hubs[engine] = CommitHub(engine)
        return hub
