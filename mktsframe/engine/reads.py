"""The engine's read path: queries and ``info`` over the catalog, year files and tick partitions.

A mixin of :class:`~mktsframe.engine.Engine` (its own module so the engine's write path, recovery
and catalog stay readable). Readers hold the engine's apply lock only while they copy, so they
never see half a write; files they open are pinned until the copy is done (see
:mod:`~mktsframe.engine.open_files`). Times are int64 nanoseconds since the epoch, UTC; year
files are addressed in bar-start seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mktsframe.engine import year_io
from mktsframe.engine.catalog import Bucket, check_limit, query_columns
from mktsframe.engine.year_file import YearFile
from mktsframe.keys import parse_key
from mktsframe.records import Batch, BucketInfo

__all__ = ["EngineReads", "bar_range"]

NS = 1_000_000_000
_I64_MAX = np.iinfo(np.int64).max


def bar_range(start: int | None, end: int | None, tf: int) -> tuple[int | None, int | None]:
    """Inclusive ns bounds → inclusive bar-start seconds (a bound inside a bar selects that bar)."""
    s = None if start is None else (int(start) // NS) // tf * tf
    e = None if end is None or int(end) >= _I64_MAX else (int(end) // NS) // tf * tf
    return s, e


class EngineReads:
    """Queries of an :class:`~mktsframe.engine.Engine` (mixed into it; uses its catalog, apply
    lock and open-file set)."""

    def query(
        self,
        key: str,
        *,
        start: int | None = None,
        end: int | None = None,
        columns: Sequence[str] | None = None,
        limit: int | None = None,
        limit_from_start: bool = False,
    ) -> dict[str, Batch]:
        check_limit(limit)
        buckets = self._resolve(key)
        return {b.key.item_key: self._query_bucket(b, start, end, columns, limit, limit_from_start) for b in buckets}

    def _query_bucket(
        self,
        b: Bucket,
        start: int | None,
        end: int | None,
        columns: Sequence[str] | None,
        limit: int | None,
        from_start: bool,
    ) -> Batch:
        names = query_columns(b.key.item_key, b.names, columns)
        if b.ticks is not None:
            with self._apply_lock:
                self._still_there(b)
                ns, cols = b.ticks.query(start, end, names, limit, from_start)
            return Batch(ns, cols, True)
        s, e = bar_range(start, end, b.timeframe)
        years = b.year_range(s, e) if limit != 0 else []
        if limit is not None and not from_start:
            years = years[::-1]
        pinned: list[YearFile] = []
        with self._apply_lock:
            try:
                return self._copy_years(b, years, s, e, names, limit, from_start, pinned)
            finally:
                for yf in pinned:
                    self.open_files.unpin(yf)
                self.open_files.trim()

    def _copy_years(
        self,
        b: Bucket,
        years: list[int],
        s: int | None,
        e: int | None,
        names: list[str],
        limit: int | None,
        from_start: bool,
        pinned: list[YearFile],
    ) -> Batch:
        """The rows of ``b`` in bar-start seconds ``[s, e]`` from ``years``; call under the apply lock.
        Files it opens are added to ``pinned`` (and pinned) so that none is closed before the copy.
        A year file that is not open while the set of open files is full is read by position
        (:mod:`.year_io`) instead of being opened in place of another."""
        self._still_there(b)
        # Plan: which slots of which year files, honouring the limit, before copying anything;
        # a year read by position is a piece already copied: (None, ns, columns, None).
        plan: list[tuple[Any, Any, Any, Any]] = []
        remaining = limit
        tf = b.timeframe
        for year in years:
            yf = b.open_year(year)
            if yf is None and self.open_files.full:
                s0, s1 = year_io.year_slots(year, tf, s, e)
                piece = year_io.read_slots(b.dir / f"{year}.bin", s0, s1, names, remaining, from_start)
                rows = 0 if piece is None else piece[0].shape[0]
                if rows:
                    plan.append((None, *piece, None))  # type: ignore[misc]
            else:
                yf = yf if yf is not None else b.year_file(year)
                if yf is None:
                    continue
                if len(years) > 1:  # opening the next year may not close this one
                    pinned.append(yf)
                    self.open_files.pin(yf)
                s0 = 0 if s is None else max(0, yf.slot_of(s))
                s1 = yf.nslots if e is None else min(yf.nslots, yf.slot_of(e) + 1)
                if s1 <= s0:
                    continue
                if remaining is not None:
                    if from_start:
                        s1 = min(s1, yf.first_slots(remaining, s0))
                    else:
                        s0 = max(s0, yf.last_slots(remaining, s1))
                s0, s1, idx = yf.select(s0, s1)
                rows = (s1 - s0) if idx is None else idx.size
                if rows:
                    plan.append((yf, s0, s1, idx))
            if remaining is not None:
                remaining -= rows
                if remaining <= 0:
                    break
        if limit is not None and not from_start:
            plan.reverse()
        if len(plan) == 1 and plan[0][0] is None:  # one piece read by position: it is the result
            return Batch(plan[0][1], plan[0][2])
        # Copy: one pass from the mappings (and pieces) into preallocated result arrays.
        sizes = [p[1].shape[0] if p[0] is None else (p[2] - p[1]) if p[3] is None else p[3].size for p in plan]
        total = sum(sizes)
        out_ns = np.empty(total, np.int64)
        cols = {n: np.empty(total, b.dtypes[n]) for n in names}
        pos = 0
        for (yf, s0, s1, idx), n in zip(plan, sizes, strict=True):
            if yf is None:
                out_ns[pos : pos + n] = s0
                for k, v in cols.items():
                    v[pos : pos + n] = s1[k]
            else:
                yf.copy_into(s0, s1, idx, out_ns[pos : pos + n], {k: v[pos : pos + n] for k, v in cols.items()})
            pos += n
        return Batch(out_ns, cols)

    def info(self, key: str) -> BucketInfo:
        b = self._require(parse_key(key))
        rows = 0
        first = last = None
        disk = 0
        years = b.years()
        with self._apply_lock:
            self._still_there(b)
            if b.ticks is not None:  # exact nanoseconds already
                rows, first, last, disk, years = b.ticks.summary()
            for year in years if b.ticks is None else ():
                yf = b.year_file(year)
                if yf is None:
                    continue
                rows += yf.count()
                disk += yf.disk_usage()
                bounds = yf.bounds()
                if bounds is not None:
                    first = bounds[0] * NS if first is None else first
                    last = bounds[1] * NS
        return BucketInfo(
            key=b.key.item_key,
            timeframe=b.key.timeframe.name,
            timeframe_seconds=b.timeframe,
            record_type=b.record_type,
            columns=b.schema,
            years=tuple(years),
            rows=rows,
            first=first,
            last=last,
            disk_bytes=disk,
        )
