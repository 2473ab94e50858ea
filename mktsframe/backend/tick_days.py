"""Reading a published tick bucket: its day objects (:mod:`.tick_objects`), by byte range.

Part of :class:`~mktsframe.backend.objstore.ObjectStoreBackend` (its own module so that reader
stays about bars). Heads are fetched together, once per object (objects never change); a day the
query covers whole is one ranged ``GET`` per column, a day it cuts is its times first (binary
search for the rows), then one ranged ``GET`` per column for those rows. Times are int64
nanoseconds since the epoch, UTC, exact, in arrival order where equal, as the local engine keeps them.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from mktsframe.backend.base import Batch, BucketInfo
from mktsframe.backend.tick_objects import HEAD_BYTES, TickDayHead, parse_head
from mktsframe.dtypes import dtype_of
from mktsframe.engine.tick_file import DAY_NS, day_name
from mktsframe.keys import TimeBucketKey

if TYPE_CHECKING:
    from mktsframe.backend.objstore import ObjectStoreBackend

__all__ = ["TickDays", "bucket_info"]


class TickDays:
    """The tick buckets of one :class:`ObjectStoreBackend` (which owns the snapshot and the fetching)."""

    def __init__(self, store: ObjectStoreBackend) -> None:
        self._store = store
        self._heads: dict[str, TickDayHead] = {}
        self._lock = threading.Lock()

    def _path(self, key: str, day: int) -> str:
        return f"{key}/{day_name(day)}.tick"

    def _load_heads(self, paths: list[str]) -> list[TickDayHead]:
        """The heads of ``paths``' objects, the uncached ones fetched in one batch."""
        store = self._store
        entries = [store._entry(p) for p in paths]
        missing = list({e.object: e for e in entries if e.object not in self._heads}.values())
        if missing:
            raw = store._cat_ranges([e.object for e in missing], [(0, min(HEAD_BYTES, e.size)) for e in missing])
            for e, head in zip(missing, raw, strict=True):
                parsed = parse_head(f"{store.url}/{e.object}", head,
                                    lambda off, n, o=e.object: store._cat_ranges([o], [(off, n)])[0])  # fmt: skip
                with self._lock:
                    self._heads[e.object] = parsed
        return [self._heads[e.object] for e in entries]

    def query(
        self,
        key: str,
        meta: dict[str, Any],
        days: list[int],
        start: int | None,
        end: int | None,
        names: list[str],
        limit: int | None,
        from_start: bool,
    ) -> Batch:
        """The ticks of ``key`` in ``[start, end]`` (ns, inclusive), columns ``names``, as the local
        engine returns them (``limit``: the first or last so many)."""
        store = self._store
        dtypes = {n: dtype_of(t) for n, t in meta["schema"]}
        chosen = [d for d in days if (start is None or (d + 1) * DAY_NS > start) and (end is None or d * DAY_NS <= end)]
        if limit == 0:
            chosen = []
        paths = [self._path(key, d) for d in chosen]
        heads = self._load_heads(paths)
        # Rows of each day in range: whole days need no times to know; cut days search their times.
        cut = [i for i, h in enumerate(heads)
               if h.rows and ((start is not None and h.first < start) or (end is not None and h.last > end))]  # type: ignore[operator]  # fmt: skip
        times = store._cat_ranges([store._entry(paths[i]).object for i in cut],
                                  [(heads[i].data, heads[i].rows * 8) for i in cut])  # fmt: skip
        spans: list[tuple[int, int]] = [(0, h.rows) for h in heads]
        for i, raw in zip(cut, times, strict=True):
            ns = np.frombuffer(raw, "<i8")
            lo = 0 if start is None else int(np.searchsorted(ns, start, "left"))
            hi = ns.shape[0] if end is None else int(np.searchsorted(ns, end, "right"))
            spans[i] = (lo, max(lo, hi))
        if limit is not None:  # the first (or last) ``limit`` rows over the days, in order
            left = limit
            order = range(len(spans)) if from_start else range(len(spans) - 1, -1, -1)
            for i in order:
                lo, hi = spans[i]
                take = min(hi - lo, max(left, 0))
                spans[i] = (lo, lo + take) if from_start else (hi - take, hi)
                left -= take
        want = [(i, lo, hi) for i, (lo, hi) in enumerate(spans) if hi > lo]
        objects, ranges = [], []
        for i, lo, hi in want:
            obj, h = store._entry(paths[i]).object, heads[i]
            objects.append(obj)
            ranges.append((h.data + lo * 8, (hi - lo) * 8))
            for n in names:
                pos, dt = h.offset(n)
                objects.append(obj)
                ranges.append((pos + lo * dt.itemsize, (hi - lo) * dt.itemsize))
        got = iter(store._cat_ranges(objects, ranges))
        index, cols = [], {n: [] for n in names}  # type: dict[str, list[np.ndarray]]
        for _, _, _ in want:
            index.append(np.frombuffer(next(got), "<i8"))
            for n in names:
                cols[n].append(np.frombuffer(next(got), dtypes[n]))
        if not want:
            return Batch(np.empty(0, np.int64), {n: np.empty(0, dtypes[n]) for n in names}, True)
        return Batch(np.concatenate(index).astype(np.int64, copy=False),
                     {n: np.concatenate(c) for n, c in cols.items()}, True)  # fmt: skip

    def info(self, k: TimeBucketKey, meta: dict[str, Any], days: list[int]) -> BucketInfo:
        """Rows, extent and years of tick bucket ``k``, from its days' heads alone."""
        paths = [self._path(k.item_key, d) for d in days]
        heads = self._load_heads(paths)
        full = [(d, h) for d, h in zip(days, heads, strict=True) if h.rows]
        years = sorted({int(np.datetime64(d, "D").astype("M8[Y]").astype(np.int64)) + 1970 for d, _ in full})
        first, last = (full[0][1].first, full[-1][1].last) if full else (None, None)
        size = sum(self._store.snapshot.files[p].size for p in paths)
        return bucket_info(k, meta, years, sum(h.rows for _, h in full), first, last, size)


def bucket_info(
    k: TimeBucketKey, meta: dict[str, Any], years: list[int], rows: int, first: int | None, last: int | None,
    size: int,
) -> BucketInfo:
    """A published bucket's :class:`BucketInfo` (``first``/``last`` in ns, ``size`` in bytes published)."""
    return BucketInfo(key=k.item_key, timeframe=k.timeframe.name, timeframe_seconds=k.timeframe.seconds,
                      record_type=meta["record_type"], columns=meta["schema"], years=tuple(years), rows=rows,
                      first=first, last=last, disk_bytes=size)  # fmt: skip
