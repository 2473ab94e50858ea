"""The engine's read path: queries and ``info`` over the catalog, year files and tick partitions.

A mixin of :class:`~mktsframe.engine.Engine` (its own module so the engine's write path, recovery
and catalog stay readable). Readers hold the engine's apply lock only while they copy, so they
never see half a write; files they open are pinned until the copy is done (see
:mod:`~mktsframe.engine.open_files`). Times are int64 nanoseconds since the epoch, UTC; year
files are addressed in bar-start seconds.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mktsframe.engine import kernels, year_io
from mktsframe.engine.catalog import Bucket, check_limit, query_columns
from mktsframe.engine.year_file import YearFile, year_bounds, year_of
from mktsframe.keys import parse_key
from mktsframe.records import Batch, BucketInfo, Stacked
from mktsframe.stacking import code_dtype, stack, unstack

__all__ = ["EngineReads", "bar_range", "uniform_keys"]

NS = 1_000_000_000
_I64_MAX = np.iinfo(np.int64).max


def bar_range(start: int | None, end: int | None, tf: int) -> tuple[int | None, int | None]:
    """Inclusive ns bounds → inclusive bar-start seconds (a bound inside a bar selects that bar)."""
    s = None if start is None else (int(start) // NS) // tf * tf
    e = None if end is None or int(end) >= _I64_MAX else (int(end) // NS) // tf * tf
    return s, e


#: A grid read writes each bucket's slice into a strided column: cache-unfriendly, so it runs at
#: about half a plain copy's speed. Above this many values, two threads fill halves of the buckets
#: (numpy releases the GIL while it copies; the caller holds the apply lock meanwhile, so no file
#: is closed under them). One pool for the process: threads do not grow with readers.
_PARALLEL_VALUES = 1 << 22
_pool: tuple[int, concurrent.futures.ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()


def _idle_core() -> bool:
    """Whether a second thread would find a core to run on: the tasks runnable right now (this one
    included, ``procs_running`` in ``/proc/stat``) leave at least one of the machine's cores free.
    On a busy machine the second thread only competes (a 7 M-row grid took 438 ms in two threads
    against 325 ms in one, load average 3 on 2 cores; 162 against 228 ms when idle). The 1-minute
    load average, used where ``/proc/stat`` is missing, lags: just after other work it kept a day
    of 5,000 symbols in one thread on an idle machine (146 ms against 85 ms in two)."""
    cores = os.cpu_count() or 1
    if cores < 2:
        return False
    running = _tasks_running()
    if running is not None:
        return running < cores
    return os.getloadavg()[0] <= cores - 1


def _tasks_running() -> int | None:
    """Runnable tasks on the machine now (Linux: ``procs_running`` of ``/proc/stat``), else ``None``."""
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"procs_running "):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _in_parallel(fill: Callable[[list[Any]], None], plan: list[Any], values: int) -> None:
    """``fill(plan)``, split in two halves run at once when ``values`` is large and a core is idle."""
    global _pool
    if values < _PARALLEL_VALUES or len(plan) < 2 or not _idle_core():
        fill(plan)
        return
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():  # a forked child has the pool but not its thread
            _pool = (os.getpid(), concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mkts-grid"))
        pool = _pool[1]
    half = len(plan) // 2
    other = pool.submit(fill, plan[half:])
    fill(plan[:half])
    other.result()


#: What :func:`_grid_compiled` answers when a file's watermarks need the numpy path.
_NUMPY = object()


def _file_arrays(found: list[tuple[int, YearFile]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(addresses, layout rows, bucket positions)`` of ``found``'s files, for the kernels."""
    bases, lids = kernels.addresses([yf for _, yf in found])
    return bases, lids, np.fromiter((j for j, _ in found), np.int64, len(found))


def _grid_piece(
    y0: int, tf: int, lo: int, grids: dict[str, np.ndarray], mask: np.ndarray | None
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Filled ``(rows, buckets)`` grids starting at slot ``lo`` → ``(index, columns, which)``
    time-major; ``mask``: which cells hold a bar (``None``: all)."""
    rows, nb = next(iter(grids.values())).shape
    times = (y0 + (lo + np.arange(rows, dtype=np.int64)) * tf) * NS
    which = np.arange(nb, dtype=code_dtype(nb))
    if mask is None:
        return np.repeat(times, nb), {n: g.reshape(-1) for n, g in grids.items()}, np.tile(which, rows)
    return (
        np.repeat(times, mask.sum(axis=1)),
        {n: g[mask] for n, g in grids.items()},
        np.broadcast_to(which, (rows, nb))[mask],
    )


def _grid_compiled(
    found: list[tuple[int, YearFile]], nb: int, g0: int, g1: int, names: list[str], dtypes: list[np.dtype],
    y0: int, tf: int,
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray] | object | None:
    """:meth:`EngineReads._grid_year`'s plan and fill in the compiled kernels: the same answer
    (``None`` when too sparse for a grid), or :data:`_NUMPY` when a file needs the numpy path."""
    bases, lids, pos = _file_arrays(found)
    planned = kernels.grid_plan(bases, lids, g0, g1)
    if planned is None:
        return _NUMPY
    c0, c1, count = planned
    live = np.flatnonzero(count)
    present = int(count[live].sum())
    if not present:
        empty = {n: np.empty(0, dt) for n, dt in zip(names, dtypes, strict=True)}
        return np.empty(0, np.int64), empty, np.empty(0, code_dtype(nb))
    lo, hi = int(c0[live].min()), int(c1[live].max())
    rows = hi - lo
    if 2 * present < rows * nb:
        return None
    cols = [found[0][1].names.index(n) for n in names]
    grids = {n: np.empty((rows, nb), dt) for n, dt in zip(names, dtypes, strict=True)}
    mask = None if present == rows * nb else np.zeros((rows, nb), np.bool_)

    def fill(entries: np.ndarray) -> None:
        for g, c in zip(grids.values(), cols, strict=True):
            kernels.grid_fill(g, bases, lids, c, pos, c0, c1, lo, entries)
        if mask is not None:
            kernels.grid_fill(mask, bases, lids, None, pos, c0, c1, lo, entries)

    _in_parallel(fill, live, rows * nb * len(cols))
    return _grid_piece(y0, tf, lo, grids, mask)


def _cross_section(
    found: list[tuple[int, YearFile]], nb: int, slot: int, names: list[str], dtypes: list[np.dtype], t_ns: int
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """One bar (``slot``, at ``t_ns``) of each of ``nb`` buckets (``found``: ``(position, year
    file)``, ascending): ``(index, columns, which)``, buckets without that bar left out.

    The whole universe at one time is what a live strategy asks every minute: the compiled kernel
    reads it where it applies (:mod:`~mktsframe.engine.kernels`), else :func:`_cross_section_numpy`."""
    got = None
    if kernels.use(len(found)):
        cols = [np.empty(nb, dt) for dt in dtypes]
        have = kernels.cross_section(*_file_arrays(found), [found[0][1].names.index(n) for n in names], slot, cols)
        got = None if have is None else (cols, have)
    cols, have = got if got is not None else _cross_section_numpy(found, nb, slot, names, dtypes)
    which = np.arange(nb, dtype=code_dtype(nb))
    if not have.all():
        cols, which = [c[have] for c in cols], which[have]
    return np.full(which.shape[0], t_ns, np.int64), dict(zip(names, cols, strict=True)), which


def _cross_section_numpy(
    found: list[tuple[int, YearFile]], nb: int, slot: int, names: list[str], dtypes: list[np.dtype]
) -> tuple[list[np.ndarray], np.ndarray]:
    """:func:`_cross_section`'s columns (one entry per bucket) and which buckets have the bar, in
    the leanest Python loop there is, with no plan and no mask grid: one copy of the bar's row per
    bucket where the columns share an item size (:attr:`YearFile.rows`, ~1 µs a bucket), else a
    scalar read and store per column and bucket (~0.5 µs each; a 1-element slice costs ~1 µs)."""
    have = np.zeros(nb, np.bool_)
    first = found[0][1] if found else None
    rows_everywhere = first is not None and all(yf.rows is not None for _, yf in found)
    picks = [first.names.index(n) for n in names] if rows_everywhere else None  # type: ignore[union-attr]
    if picks is not None:  # one row copy per bucket, split into columns once at the end
        grid = np.empty((nb, len(picks)), first.rows.dtype)  # type: ignore[union-attr]
        every = picks == list(range(len(first.names)))  # type: ignore[union-attr]
        for j, yf in found:
            lo, hi = yf.extent()
            if lo <= slot < hi and yf.presence[slot]:
                grid[j] = yf.rows[slot] if every else yf.rows[slot, picks]
                have[j] = True
        return [np.ascontiguousarray(grid[:, k]).view(dt) for k, dt in enumerate(dtypes)], have
    cols = [np.empty(nb, dt) for dt in dtypes]
    targets = list(zip(names, cols, strict=True))
    for j, yf in found:
        lo, hi = yf.extent()
        if lo <= slot < hi and yf.presence[slot]:
            src = yf.columns
            for n, out in targets:
                out[j] = src[n][slot]
            have[j] = True
    return cols, have


#: The last bucket list :func:`uniform_keys` answered for, and its answer: a pattern's list is
#: cached by the engine (the same object while the catalog stands), and checking 5,000 buckets
#: costs ~1 ms of a ~15 ms cross-section.
_last_uniform: tuple[list[Any], tuple[str, ...] | None] | None = None


def uniform_keys(buckets: list[Bucket]) -> tuple[str, ...] | None:
    """The keys of ``buckets`` if all are fixed buckets of one timeframe and schema (what a grid
    read needs), else ``None``. A bucket's kind, timeframe and schema never change."""
    global _last_uniform
    hit = _last_uniform
    if hit is not None and hit[0] is buckets:
        return hit[1]
    first = buckets[0]
    tf, schema = first.timeframe, first.schema
    uniform = not any(b.ticks is not None or b.timeframe != tf or b.schema != schema for b in buckets)
    keys = tuple(b.item_key for b in buckets) if uniform else None
    _last_uniform = (buckets, keys)
    return keys


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
        read = self._read_many(key, start, end, columns, limit, limit_from_start)
        return unstack(read) if isinstance(read, Stacked) else read  # a grid is handed out per bucket

    def query_stacked(
        self,
        key: str,
        *,
        start: int | None = None,
        end: int | None = None,
        columns: Sequence[str] | None = None,
        limit: int | None = None,
        limit_from_start: bool = False,
    ) -> Stacked:
        """:meth:`query` as one :class:`~mktsframe.records.Stacked` (time-major, then the order named).

        Fixed buckets of one timeframe and schema read over a bounded range (a universe's
        cross-section or day) go straight from the year files into the time-major result: each
        bucket's column slice is written once, strided, into a ``(bars, buckets)`` grid, and bars a
        bucket lacks are dropped with one mask at the end. The whole read is one snapshot (under the
        apply lock: writers wait for it, ~20 ms per million rows). Anything else (ticks, mixed
        timeframes or schemas, a limit below the bars in the range, an open-ended or sparse range, an
        open-file set too small to hold every file at once) is read bucket by bucket and joined by
        :func:`~mktsframe.stacking.stack`.
        """
        read = self._read_many(key, start, end, columns, limit, limit_from_start)
        return read if isinstance(read, Stacked) else stack(read)

    def query_grid(
        self,
        key: str,
        *,
        start: int,
        end: int,
        columns: Sequence[str] | None = None,
        limit: int | None = None,
        max_rows: int | None = None,
    ) -> Stacked | None:
        """The rows of the buckets ``key`` names in ``[start, end]`` (ns, UTC) as one time-major
        :class:`~mktsframe.records.Stacked`, read straight from the year files, or ``None`` where
        :meth:`query_stacked`'s grid read does not apply (one bucket, ticks, mixed timeframes or
        schemas, a limit below the bars in the range, sparse bars, too many files) or could exceed
        ``max_rows`` rows (buckets × bars in the range): then :meth:`query` is the way.

        A server answers a universe read with it: one set of arrays to encode, no :class:`Batch`
        per bucket, and a bound on what a request from the network can make it allocate."""
        check_limit(limit)
        drops = self._bucket_drops
        buckets = self._resolve(key)
        if max_rows is not None and buckets:
            s, e = bar_range(int(start), int(end), buckets[0].timeframe)
            if s is not None and e is not None and len(buckets) * ((e - s) // buckets[0].timeframe + 1) > max_rows:
                return None
        return self._grid_query(buckets, drops, start, end, columns, limit)

    def _read_many(
        self,
        key: str,
        start: int | None,
        end: int | None,
        columns: Sequence[str] | None,
        limit: int | None,
        from_start: bool,
    ) -> Stacked | dict[str, Batch]:
        """The buckets ``key`` names as one grid where :meth:`_grid_query` applies, else bucket by bucket."""
        check_limit(limit)
        drops = self._bucket_drops
        buckets = self._resolve(key)
        grid = self._grid_query(buckets, drops, start, end, columns, limit)
        if grid is not None:
            return grid
        return {b.item_key: self._query_bucket(b, start, end, columns, limit, from_start) for b in buckets}

    def _grid_query(
        self,
        buckets: list[Bucket],
        drops: int,
        start: int | None,
        end: int | None,
        columns: Sequence[str] | None,
        limit: int | None,
    ) -> Stacked | None:
        """The grid read of :meth:`query_stacked`, or ``None`` where it does not apply. ``drops``:
        the engine's bucket-drop count before ``buckets`` were resolved (if it has not moved, none
        of them can have been destroyed, and checking 5,000 of them one by one is skipped). A
        ``limit`` of at least the bars in the range changes nothing, so it does not stand in the way
        (the server bounds every read that way)."""
        if len(buckets) < 2 or start is None or end is None:
            return None
        first = buckets[0]
        tf = first.timeframe
        keys = uniform_keys(buckets)
        if keys is None:
            return None
        s, e = bar_range(int(start), int(end), tf)
        if s is None or e is None or e < s or (limit is not None and limit < (e - s) // tf + 1):
            return None
        names = query_columns(first.key.item_key, first.names, columns)
        years = range(year_of(s), year_of(e) + 1)
        if len(buckets) * len(years) > self.open_files.capacity:
            return None  # the per-bucket path reads what does not fit by position instead
        pieces: list[tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]] = []
        with self._apply_lock:
            if self._bucket_drops != drops:
                for b in buckets:
                    self._still_there(b)
            for year in years:
                piece = self._grid_year(buckets, year, s, e, names)
                if piece is None:
                    return None
                if piece[0].shape[0]:
                    pieces.append(piece)
        if not pieces:
            empty = {n: np.empty(0, first.dtypes[n]) for n in names}
            return Stacked(keys, np.empty(0, np.int64), empty, np.empty(0, code_dtype(len(keys))))
        if len(pieces) == 1:
            return Stacked(keys, *pieces[0])
        return Stacked(
            keys,
            np.concatenate([p[0] for p in pieces]),
            {n: np.concatenate([p[1][n] for p in pieces]) for n in names},
            np.concatenate([p[2] for p in pieces]),
        )

    def _grid_year(
        self, buckets: list[Bucket], year: int, s: int, e: int, names: list[str]
    ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray] | None:
        """Year ``year``'s part of a grid read: ``(index, columns, which)`` time-major, or ``None``
        if its bars are too sparse for a grid (then the caller reads bucket by bucket). Under the
        apply lock."""
        tf = buckets[0].timeframe
        y0, y1 = year_bounds(year)
        g0 = (max(s, y0) - y0) // tf
        g1 = (min(e, y1 - 1) - y0) // tf + 1
        found = self._year_files(buckets, year)
        dtypes = [buckets[0].dtypes[n] for n in names]
        if g1 - g0 == 1:
            return _cross_section(found, len(buckets), g0, names, dtypes, (y0 + g0 * tf) * NS)
        if kernels.use(len(found)):
            piece = _grid_compiled(found, len(buckets), g0, g1, names, dtypes, y0, tf)
            if piece is not _NUMPY:
                return piece  # type: ignore[return-value]
        # Plan: the slots each bucket holds in [g0, g1); present counts decide the grid's extent,
        # whether it is dense enough, and whether any bucket needs masking.
        plan: list[tuple[int, YearFile, int, int, int]] = []
        lo, hi, present = g1, g0, 0
        for j, yf in found:
            c0, c1 = yf.extent()
            c0, c1 = max(g0, c0), min(g1, c1)
            if c1 <= c0:
                continue
            n = int(np.count_nonzero(yf.presence[c0:c1]))
            if n:
                plan.append((j, yf, c0, c1, n))
                lo, hi, present = min(lo, c0), max(hi, c1), present + n
        nb, rows = len(buckets), max(0, hi - lo)
        codes = code_dtype(nb)
        if not present:
            return np.empty(0, np.int64), {n: np.empty(0, buckets[0].dtypes[n]) for n in names}, np.empty(0, codes)
        if 2 * present < rows * nb:
            return None
        grids = {n: np.empty((rows, nb), buckets[0].dtypes[n]) for n in names}
        full = present == rows * nb
        mask = None if full else np.zeros((rows, nb), np.bool_)
        targets = list(grids.items())

        def fill(part: list[tuple[int, YearFile, int, int, int]]) -> None:
            # One grid at a time: interleaving the grids (every column of a bucket, then the next
            # bucket) spreads the strided writes over five times the pages, 1.5x slower measured.
            for n, g in targets:
                for j, yf, c0, c1, _ in part:
                    g[c0 - lo : c1 - lo, j] = yf.columns[n][c0:c1]
            if mask is not None:
                for j, yf, c0, c1, n_present in part:
                    mask[c0 - lo : c1 - lo, j] = yf.presence[c0:c1] if n_present != c1 - c0 else True

        _in_parallel(fill, plan, rows * nb * len(targets))
        return _grid_piece(y0, tf, lo, grids, mask)

    def _year_files(self, buckets: list[Bucket], year: int) -> list[tuple[int, YearFile]]:
        """``(position, year file)`` of each bucket that has a file for ``year``, ascending; under the
        apply lock. Files already open are marked most recently used first, in one go, so that
        opening the others (the caller checked that all fit) closes files of other buckets, never
        one of these."""
        found: list[tuple[int, YearFile]] = []
        missing: list[tuple[int, Bucket]] = []
        for j, b in enumerate(buckets):
            yf = b._years.get(year)
            if yf is not None:
                found.append((j, yf))
            elif year in b.years():
                missing.append((j, b))
        self.open_files.touch_all(yf for _, yf in found)
        for j, b in missing:
            yf = b.year_file(year)
            if yf is not None:
                found.append((j, yf))
        if missing:
            found.sort(key=lambda p: p[0])
        return found

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
