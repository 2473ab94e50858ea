"""Fan-out of an engine's commits to subscribers, each with its own bounded :class:`Feed`.

One engine listener serves every subscriber. It runs on the writer's thread under the write
lock, so it does as little as possible there. Without ``loop`` (in-process subscriptions) it fans
out inline, which is a pattern check and a deque append per subscriber. With ``loop`` (the
server) it only hands the event to that event loop (one ``call_soon_threadsafe`` per commit,
whatever the number of subscribers), where delivery happens in *passes*:

* a pass takes every commit that arrived since the previous pass and gives each subscriber, in
  turn, all the items it hears in one ``put_many`` (for a ``/ws`` connection, one socket write),
  so the per-subscriber cost is paid once per pass, not once per commit;
* subscribers are grouped by what they hear (their streams and whether they take notices): a
  pass matches its items once per group and skips a group that hears none of them without
  touching its members, and every member of a group gets the very same list (encoded once);
* a commit that finds no pass under way or due starts one on the loop's next turn (a lone write
  reaches its subscribers with no added delay; one made on the loop itself, the server's inline
  writes, is acknowledged first, so the pass runs while the writer reads its reply and sends the
  next request rather than in front of them);
* a pass serves ``FAN_OUT_SLICE`` subscribers per turn of the loop, so the writers' requests and
  acknowledgements are never queued behind a whole fan-out;
* passes spend a credit of event-loop time that grows by a *share* of each second, up to
  ``FAN_OUT_BURST``; a pass starts only while the credit is positive, and the commits arriving
  while it is paid back go out together in the next pass. The share is ``FAN_OUT_SHARE`` while
  commits come now and then: they are pushed at once, even to many subscribers. While they come
  back to back (a moving average of at least ``FAN_OUT_BUSY_RATE`` a second), the writers are
  bound by this loop, every millisecond a pass takes is one they lose, and the share drops to
  ``FAN_OUT_SHARE_BUSY``: rows then reach subscribers in batches, fewer and larger. The debt is
  capped so that no pass waits more than ``max_wait`` (the server's ``stream_max_wait``, default
  ``FAN_OUT_MAX_WAIT``): the operator's choice between fresher rows and faster writers.

Either way nobody waits for a subscriber: a full feed applies its overflow policy instead.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from dataclasses import dataclass

from mktsframe.backend.bucket_kinds import BucketKinds
from mktsframe.changes import ChangeFeed, CommitEvent
from mktsframe.streaming.feed import Sink
from mktsframe.streaming.messages import Chunk, Notice
from mktsframe.streaming.patterns import StreamPatterns

__all__ = ["CommitHub", "Subscriber", "hub_for"]

#: Subscribers a delivery pass serves per turn of the server's event loop.
FAN_OUT_SLICE = 16
#: Largest share of the server's event-loop time that delivery passes take while commits come
#: now and then (see the module docstring).
FAN_OUT_SHARE = 0.2
#: ... and while commits come back to back: the writers are then bound by the loop.
FAN_OUT_SHARE_BUSY = 0.03
#: Commits per second (moving average over about the last 16 gaps) from which they count as back to back.
FAN_OUT_BUSY_RATE = 500.0
#: Event-loop seconds that passes may take at once after a quiet spell (the credit's ceiling).
FAN_OUT_BURST = 0.005
#: Default longest wait for the next pass (seconds; the credit's floor is the share times it): a
#: pass made long by encoding many rows, work no batching saves, must not hold later rows long.
FAN_OUT_MAX_WAIT = 0.15


@dataclass(eq=False)
class Subscriber:
    """One subscriber's patterns and feed (a :class:`Feed` or another sink). Change its patterns
    or ``notices`` with :meth:`CommitHub.update`, which regroups it."""

    patterns: StreamPatterns
    feed: Sink
    notices: bool = False
    """Also receive delete/destroy notices (mktsframe clients; never pymarketstore's)."""


class CommitHub:
    """Delivers each commit of ``source`` (the engine, or any change feed) to the feeds of the
    subscribers whose patterns match."""

    def __init__(
        self, source: ChangeFeed, loop: asyncio.AbstractEventLoop | None = None, *, max_wait: float = FAN_OUT_MAX_WAIT
    ) -> None:
        if not max_wait >= 0:
            raise ValueError(f"max_wait must be a number of seconds >= 0, got {max_wait!r}")
        self.source = source
        self.loop = loop
        self.max_wait = float(max_wait)
        """Longest wait of a pass behind earlier ones, seconds (0: passes never wait)."""
        self.kinds = BucketKinds(lambda key: source.query(key, limit=0))
        self._subscribers: tuple[Subscriber, ...] = ()
        self._groups: tuple[_Group, ...] = ()
        self._group_of: dict[tuple[tuple[str, ...], bool], _Group] = {}  # by what they hear
        self._lock = threading.Lock()
        self._detach: object = None
        # Server (loop) mode: commits waiting for the next delivery pass, the pass under way, pacing.
        self._backlog: list[CommitEvent] = []
        self._pass: _Pass | None = None
        self._loop_thread: int | None = None  # the loop's thread, once a commit has reached it
        self._scheduled = False
        self._credit = FAN_OUT_BURST  # event-loop seconds the next passes may take...
        self._credit_at = 0.0  # ... as of this time.monotonic()
        self._gap = 1.0  # moving average of the seconds between commits reaching the loop
        self._arrived_at = 0.0

    def __len__(self) -> int:
        return len(self._subscribers)

    def subscribe(self, patterns: StreamPatterns, feed: Sink, *, notices: bool = False) -> Subscriber:
        sub = Subscriber(patterns, feed, notices)
        with self._lock:
            self._subscribers = (*self._subscribers, sub)
            self._join(sub)
            if self._detach is None:
                self._detach = self.source.listen(self._listen)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Remove ``sub``; the engine listener goes when the last one does (writes then skip all work)."""
        with self._lock:
            if sub in self._subscribers:  # (by identity, in C: thousands leave in linear time)
                remaining = list(self._subscribers)
                remaining.remove(sub)
                self._subscribers = tuple(remaining)
                self._leave(sub)
            if not self._subscribers and self._detach is not None:
                self._detach()  # type: ignore[operator]
                self._detach = None

    def update(self, sub: Subscriber, patterns: StreamPatterns, *, notices: bool) -> None:
        """Give ``sub`` new patterns and notice wish (a ``/ws`` client's new subscribe message)."""
        with self._lock:
            member = sub in self._subscribers
            if member:
                self._leave(sub)
            sub.patterns, sub.notices = patterns, notices
            if member:
                self._join(sub)

    # Groups change only here, under the lock: the one group touched is rebuilt (in C, in time
    # proportional to its size) and the tuple of groups re-made, so thousands of subscribers join
    # and leave in about linear time.
    def _join(self, sub: Subscriber) -> None:
        sig = (sub.patterns.streams, sub.notices)
        group = self._group_of.get(sig)
        self._publish(sig, (*group.subscribers, sub) if group is not None else (sub,))

    def _leave(self, sub: Subscriber) -> None:
        sig = (sub.patterns.streams, sub.notices)
        group = self._group_of.get(sig)
        if group is None or sub not in group.subscribers:  # its patterns were changed behind the hub's back
            found = next((g for g, grp in self._group_of.items() if sub in grp.subscribers), None)
            if found is None:
                return
            sig, group = found, self._group_of[found]
        members = list(group.subscribers)
        members.remove(sub)  # subscribers compare by identity
        self._publish(sig, tuple(members))

    def _publish(self, sig: tuple[tuple[str, ...], bool], members: tuple[Subscriber, ...]) -> None:
        """Make ``members`` group ``sig`` and replace the tuple that the writers' and the loop's
        threads read (never changed in place)."""
        if members:
            self._group_of[sig] = _Group(members[0].patterns, members[0].notices, members)
        else:
            del self._group_of[sig]
        self._groups = tuple(self._group_of.values())

    def close(self) -> None:
        self._backlog.clear()
        self._pass = None
        with self._lock:
            subs, self._subscribers = self._subscribers, ()
            self._group_of = {}
            self._groups = ()
            if self._detach is not None:
                self._detach()  # type: ignore[operator]
                self._detach = None
        for s in subs:
            s.feed.close()

    def _listen(self, event: CommitEvent) -> None:  # the writer's thread, write lock held
        loop = self.loop
        if loop is None:
            self.fan_out(event)
        elif threading.get_ident() == self._loop_thread:  # a write made on the loop itself
            self._arrived(event)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._arrived, event)

    def fan_out(self, event: CommitEvent) -> None:
        """Put ``event`` into every matching subscriber's feed now (in-process subscriptions)."""
        item = self._item(event)
        if item is None:
            return
        for g in self._groups:
            if g.hears(item):
                for s in g.subscribers:
                    s.feed.put(item)

    def _item(self, event: CommitEvent) -> Chunk | Notice | None:
        """What ``event`` delivers (``None``: nothing)."""
        key = event.key
        if event.op in ("create", "destroy"):
            self.kinds.forget(key)
        if event.op == "write":
            if event.batch is None or not len(event.batch):
                return None
            return Chunk(event.seq, key, event.batch, self.kinds.variable(key))
        if event.op == "delete":
            return Notice({"notice": "deleted", "bucket": key, "start": event.start, "end": event.end}, None,
                          event.seq, key)
        if event.op == "destroy":
            return Notice({"notice": "destroyed", "bucket": key}, None, event.seq, key)
        return None

    # -- delivery passes on the event loop (the server) ----------------------------------------
    def _arrived(self, event: CommitEvent) -> None:
        self._loop_thread = threading.get_ident()
        now = time.monotonic()
        self._gap += (now - self._arrived_at - self._gap) / 16
        self._arrived_at = now
        self._backlog.append(event)
        if not self._scheduled:
            self._scheduled = True
            self._schedule_pass()

    def _share(self) -> float:
        """The share of the loop that passes may take now (see the module docstring)."""
        return FAN_OUT_SHARE_BUSY if self._gap * FAN_OUT_BUSY_RATE < 1 else FAN_OUT_SHARE

    def _refill(self, now: float) -> float:
        """The credit as of ``now``: it grows by :meth:`_share` per second, up to ``FAN_OUT_BURST``."""
        self._credit = min(FAN_OUT_BURST, self._credit + (now - self._credit_at) * self._share())
        self._credit_at = now
        return self._credit

    def _schedule_pass(self) -> None:
        assert self.loop is not None
        credit = self._refill(time.monotonic())
        if credit > 0:  # at once, on the loop's next turn: after what the caller is doing (an inline
            self.loop.call_soon(self._begin_pass)  # write's acknowledgement), before anything else
        else:  # in debt after passes that used up the credit: wait until it is paid back
            self.loop.call_later(min(-credit / self._share(), self.max_wait), self._begin_pass)

    def _begin_pass(self) -> None:
        events, self._backlog = self._backlog, []
        items = [item for item in map(self._item, events) if item is not None]
        targets: list[tuple[Subscriber, list[Chunk | Notice]]] = []
        if items:
            for g in self._groups:
                heard = [it for it in items if g.hears(it)]
                if heard:
                    targets.extend((s, heard) for s in g.subscribers)
        self._pass = _Pass(targets)
        self._continue_pass()

    def _continue_pass(self) -> None:
        """Deliver the pass to its next ``FAN_OUT_SLICE`` subscribers; the rest waits for the loop's
        next turn so that whatever became ready meanwhile (the writer's acknowledgement, the next
        request) is not held up behind the whole fan-out."""
        p = self._pass
        if p is None:  # closed meanwhile
            return
        start = time.monotonic()
        end = min(len(p.targets), p.position + FAN_OUT_SLICE)
        for s, items in p.targets[p.position : end]:
            s.feed.put_many(items)
        now = time.monotonic()
        p.busy += now - start
        p.position = end
        assert self.loop is not None
        if end < len(p.targets):
            self.loop.call_soon(self._continue_pass)
            return
        self._pass = None
        self._refill(now)
        self._credit = max(self._credit - p.busy, -self._share() * self.max_wait)
        if self._backlog:
            self._schedule_pass()
        else:
            self._scheduled = False


@dataclass(frozen=True, eq=False)
class _Group:
    """Subscribers that hear the same things: the same streams, the same wish for notices."""

    patterns: StreamPatterns
    notices: bool
    subscribers: tuple[Subscriber, ...]

    def hears(self, item: Chunk | Notice) -> bool:
        return ((self.notices or isinstance(item, Chunk)) and item.key is not None
                and self.patterns.matches(item.key))


@dataclass(eq=False)
class _Pass:
    """One delivery pass: every commit that arrived since the last one, to each subscriber that
    hears any of it, in turn, with the list of what it hears (one list per group)."""

    targets: list[tuple[Subscriber, list[Chunk | Notice]]]
    position: int = 0
    busy: float = 0.0
    """Seconds of event-loop time the pass has taken so far."""


_hubs: weakref.WeakKeyDictionary[ChangeFeed, CommitHub] = weakref.WeakKeyDictionary()
_hubs_lock = threading.Lock()


def hub_for(source: ChangeFeed) -> CommitHub:
    """The in-process hub of ``source`` (fan-out on the writer's thread), made on first use."""
    with _hubs_lock:
        hub = _hubs.get(source)
        if hub is None:
            hub = _hubs[source] = CommitHub(source)
        return hub
