"""In-process subscriptions to a local engine (what ``LocalBackend.subscribe`` returns).

Only changes made through this process's engine are heard (another process writing the same
root is not): the events come straight from the engine's commit listeners.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from mktsframe.changes import ChangeFeed
from mktsframe.streaming.feed import DEFAULT_MAX_ROWS, Feed, OverflowPolicy
from mktsframe.streaming.hub import hub_for
from mktsframe.streaming.messages import Message
from mktsframe.streaming.patterns import StreamPatterns, stream_list
from mktsframe.streaming.resume import snapshot_since
from mktsframe.streaming.subscription import Prelude, Subscription
from mktsframe.times import TimeLike, to_ns

__all__ = ["subscribe_local"]


def subscribe_local(
    source: ChangeFeed,
    pattern: str | Iterable[str],
    *,
    since: TimeLike = None,
    callback: Callable[[Message], Any] | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    policy: OverflowPolicy = "drop_oldest",
) -> Subscription:
    """Subscribe to the commits of ``source`` (the local engine); listening starts before this returns."""
    streams = stream_list(pattern)
    patterns = StreamPatterns(streams)
    since_ns = to_ns(since, name="since")
    hub = hub_for(source)
    feed = Feed(max_rows, policy)
    subscriber = hub.subscribe(patterns, feed, notices=True)
    prelude = None
    if since_ns is not None:
        variable = hub.kinds.variable
        prelude = Prelude(lambda: snapshot_since(source, patterns, since_ns, variable), patterns, variable)
    sub = Subscription(feed, streams=streams, prelude=prelude, on_close=lambda: hub.unsubscribe(subscriber))
    if callback is not None:
        sub.start_callback(callback)
    return sub
