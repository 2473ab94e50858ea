"""Resuming a subscription from storage: ``since`` without a gap or a duplicate.

The guarantee. For a subscription to patterns ``P`` with ``since = t`` (ns UTC), the subscriber
receives, in this order:

1. a **snapshot**: every row stored, at one instant between two commits (the *cut*, commit
   ``seq = c``), in a bucket matching ``P`` with a timestamp ``>= t`` (for fixed buckets: every
   bar whose interval contains or follows ``t``), bucket by bucket in key order, each in time order;
2. ``{"notice": "caught_up", "rows": n, "seq": c}``;
3. every commit with ``seq > c`` touching a matching bucket, live, in commit order.

So each change is seen exactly once: in the snapshot if it committed before the cut, live if
after. ``since`` filters by *row timestamp*, not by when a row was written: the snapshot holds
the current value of each row (an overwritten bar is sent once, with its latest value; a deleted
row is simply absent, with no notice), and a row written while you were away with a timestamp
before ``t`` is not replayed. To continue after a disconnect, pass the ``Epoch`` of the last row
you processed (inclusive: that bar is sent again with its latest value, which is what you want
for a bar that was still forming).

How, without stopping writers for the whole read: (1) while holding the commit barrier for an
instant, register a listener that records every commit and note ``s1``; (2) query storage with
no lock (slow, concurrent with writes); (3) take the barrier again: ``c`` = the last commit, and
the listener has recorded every commit in ``(s1, c]``; for each one touching a matching bucket,
re-read the affected time span of that bucket *under the barrier* and splice it into the
snapshot. Rows untouched in ``(s1, c]`` had the same value throughout, so the unlocked read got
them right; touched spans are re-read exactly at the cut. Writers wait only for the re-read of
what was written during the query. The live feed was attached before ``s1``, so it holds every
commit after ``c``; the consumer skips queued commits with ``seq <= c``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mktsframe.backend.base import Batch
from mktsframe.changes import ChangeFeed, CommitEvent
from mktsframe.errors import BucketNotFoundError
from mktsframe.keys import parse_key
from mktsframe.streaming.patterns import StreamPatterns

__all__ = ["Snapshot", "snapshot_since"]


@dataclass(frozen=True)
class Snapshot:
    """Rows at the cut (``seq``), by bucket key in key order."""

    seq: int
    batches: dict[str, Batch]

    @property
    def rows(self) -> int:
        return sum(len(b) for b in self.batches.values())


def snapshot_since(
    source: ChangeFeed,
    patterns: StreamPatterns,
    since: int,
    variable: Callable[[str], bool],
) -> Snapshot:
    """The rows at or after ``since`` (ns UTC) in buckets matching ``patterns``, cut between commits.

    ``variable(key)`` tells tick buckets from bar buckets (for splicing re-read spans).
    """
    window: list[CommitEvent] = []
    with source.commit_barrier():
        remove = source.listen(window.append)
    try:
        found = _read(source, patterns, since)
        with source.commit_barrier() as cut:
            remove()
            touched: dict[str, _Span | None] = {}
            for e in window:
                if patterns.matches(e.key):
                    span = _span(e)
                    touched[e.key] = _widen(touched[e.key], span) if e.key in touched else span
            for key, span in touched.items():
                _splice(source, found, key, since, span, variable(key))
    finally:
        remove()
    return Snapshot(cut, {k: found[k] for k in sorted(found)})


def _read(source: ChangeFeed, patterns: StreamPatterns, since: int) -> dict[str, Batch]:
    out: dict[str, Batch] = {}
    for stream in patterns.streams:
        try:
            out.update(source.query(stream, start=since))
        except BucketNotFoundError:
            continue
    return out


_Span = tuple[int, int]


def _span(e: CommitEvent) -> _Span | None:
    """Time span a commit changed (ns, inclusive); ``None`` = the whole bucket."""
    if e.op == "write" and e.batch is not None and len(e.batch):
        return int(e.batch.index.min()), int(e.batch.index.max())
    if e.op == "delete" and e.start is not None and e.end is not None:
        return e.start, e.end
    return None


def _widen(prev: _Span | None, span: _Span | None) -> _Span | None:
    if prev is None or span is None:
        return None
    return min(prev[0], span[0]), max(prev[1], span[1])


def _splice(source: ChangeFeed, found: dict[str, Batch], key: str, since: int, span: _Span | None,
            variable: bool) -> None:
    """Replace ``found[key]`` within ``span`` by what storage holds now (under the barrier)."""
    lo = since if span is None else max(since, span[0] if span[0] is not None else since)
    hi = None if span is None else span[1]
    try:
        fresh = source.query(key, start=lo, end=hi)[key]
    except BucketNotFoundError:
        found.pop(key, None)
        return
    old = found.get(key)
    if old is None or span is None:
        found[key] = fresh
        return
    if not variable:  # a bound inside a bar selects that bar: bars are addressed by their start
        tf = parse_key(key).timeframe.nanoseconds
        lo = lo // tf * tf
    keep_before = old.index < lo
    keep_after = old.index > hi if hi is not None else np.zeros(len(old), dtype=bool)
    found[key] = Batch(
        np.concatenate([old.index[keep_before], fresh.index, old.index[keep_after]]),
        {c: np.concatenate([v[keep_before], fresh.columns[c], v[keep_after]]) for c, v in old.columns.items()},
    )
