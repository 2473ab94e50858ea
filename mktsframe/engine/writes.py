"""The engine's write path: checking, normalising, logging and applying writes, deletes and destroys.

A mixin of :class:`~mktsframe.engine.Engine` (its own module so the lifecycle, catalog, reads and
recovery stay readable). One writer at a time holds the engine's write lock: a write is checked
and normalised, appended to the write-ahead log, ``fdatasync``'d (unless ``background_sync``),
then applied to the year files under the apply lock and announced to commit listeners. Many
buckets in one call (:meth:`EngineWrites.write_many`) are one log record and one sync, all or
nothing; concurrent small writes are grouped the same way (:mod:`.many`). Large writes into
empty slots skip the log (:meth:`EngineWrites._write_direct`). Times: index arrays in int64
nanoseconds since the epoch, UTC; fixed buckets are stored in bar-start seconds.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from mktsframe.changes import CommitEvent
from mktsframe.dtypes import coerce_column, validate_schema, wire_type
from mktsframe.engine import year_io
from mktsframe.engine.catalog import Bucket, write_bucket_meta
from mktsframe.engine.cross_section import CrossSectionFiles
from mktsframe.engine.durable import sync_filesystem
from mktsframe.engine.many import (
    GROUP_MAX_ROWS,
    Item,
    PendingWrite,
    cross_section_arrays,
    encode_record,
)
from mktsframe.engine.reads import bar_range, uniform_keys
from mktsframe.engine.tick_file import sort_ticks
from mktsframe.engine.year_file import YearFile, slot_runs, year_bounds, year_of
from mktsframe.errors import BucketExistsError, MktsError, SchemaMismatchError
from mktsframe.keys import TimeBucketKey, parse_key
from mktsframe.records import Batch, Stacked
from mktsframe.stacking import code_dtype, unstack

__all__ = ["DIRECT_MIN_BYTES", "EngineWrites", "run_start", "year_spans"]

log = logging.getLogger("mktsframe.engine")
NS = 1_000_000_000
_I8 = np.dtype(np.int64)

#: Writes of at least this many bytes of values take the direct path (:meth:`Engine._write_direct`).
DIRECT_MIN_BYTES = 4 << 20
#: Writes of at least this many consecutive bars are logged as ``write_run`` records (no times).
_RUN_MIN_ROWS = 16
#: Durable appends of at least this many bars stage their values while the log is written (Engine._stage_append).
_STAGE_MIN_ROWS = 256
#: Up to this many rows, a write's bar times are computed with Python ints (numpy's per-call cost dominates).
_SMALL_ROWS = 32


class EngineWrites:
    """Writes of an :class:`~mktsframe.engine.Engine` (mixed into it; uses its catalog, locks,
    write-ahead log and commit listeners)."""

    def create(self, key: str, columns: Sequence[tuple[str, str]], *, variable_length: bool = False) -> None:
        """Create an empty bucket (a tick bucket if ``variable_length``); idempotent for the same schema."""
        k = parse_key(key)
        schema = _validate_schema(columns, variable_length)
        record_type = "variable" if variable_length else "fixed"
        with self._write_lock, self.faults.guard():
            self._require_writable()
            existing = self._bucket(k)
            if existing is not None:
                if existing.schema != schema or existing.record_type != record_type:
                    raise BucketExistsError(
                        f"bucket {k.item_key!r} exists ({existing.record_type}) with columns "
                        f"{list(existing.schema)}, not ({record_type}) {list(schema)}"
                    )
                return
            self._log_create(k, schema, record_type)

    def _log_create(self, k: TimeBucketKey, schema: tuple[tuple[str, str], ...], record_type: str) -> None:
        meta: dict[str, Any] = {"op": "create", "key": k.item_key, "columns": [list(c) for c in schema]}
        if record_type != "fixed":
            meta["record_type"] = record_type
        self._log(meta)
        self._announce("create", k.item_key)

    def write(self, key: str, batch: Batch, *, variable_length: bool = False) -> None:
        """Store ``batch`` (index in ns UTC).

        Fixed buckets: a bar at an existing timestamp is replaced. Tick buckets (created with
        ``variable_length=True``; the flag is ignored for existing buckets): rows are added at their
        exact nanosecond, after any rows already stored at the same time.

        Group commit: a write that finds another one holding the log queues itself, and the next
        thread to take the write lock commits every queued write of up to ``GROUP_MAX_ROWS`` rows
        as one record with one sync (:mod:`.many`). Each still succeeds or fails on its own, and
        none returns before its own rows are durable.
        """
        queue = self._queue
        w = PendingWrite(key, batch, variable_length, rows=len(batch) if isinstance(batch, Batch) else 0)
        # Lock free, or held by this thread (the server's writes_without_waiting): commit here with
        # whatever is queued (queued behind a head waiting for this thread's lock, it waited forever).
        # Else wait until another thread has committed this write, or the lock is free to lead: a
        # done writer waiting for the lock would sit behind the next group's sync (50 writers, 5 ms
        # syncs: 321 writes/s).
        if self._write_lock.acquire(blocking=False):
            group = queue.take()
            alone = not group  # uncontended: no grouping
            group.append(w)
        else:
            queue.put(w)
            if not queue.wait_to_lead(w, self._write_lock):
                group = None  # committed by another thread
            else:
                group, alone = ([] if w.done else queue.take()), False
        if group is not None:
            try:
                if alone:
                    self._write_one(key, batch, variable_length)
                elif group:
                    self._commit_queued(group)
            finally:
                self._write_lock.release()
                queue.wake(group)
        if w.error is not None:
            raise w.error

    def write_many(
        self, items: Mapping[str, Batch] | Sequence[tuple[str, Batch]], *, variable_length: bool = False
    ) -> None:
        """Store rows in many buckets at once: one log record and one sync, all or nothing.

        Every item is checked (key, schema, types) before anything is logged, so a bad item fails
        the call with nothing written; a crash leaves all of it or none of it. Each bucket behaves
        as with :meth:`write` (created if missing, with ``variable_length`` as its kind). A key may
        appear once (after aliases are resolved).
        """
        pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
        self._require_writable()
        with self._write_lock:
            self._require_writable()
            plan = None if variable_length else self._cross_section_of_items(pairs)
            if plan is not None:  # a universe's minute as {key: 1-row batch}: no per-bucket work
                with self.faults.guard():
                    self._commit_cross_section(*plan)
                return
            self._commit_items(self._prepare_many([(k, b, variable_length) for k, b in pairs]))

    def _cross_section_of_items(
        self, pairs: list[tuple[str, Batch]]
    ) -> tuple[list[Bucket], CrossSectionFiles, np.ndarray, np.ndarray, list[np.ndarray]] | None:
        """:meth:`write_many`'s items planned as the cross-section :meth:`write_stacked` stores
        (:meth:`_cross_section_plan`) when each is one row with the same columns, else ``None``.
        Anything the plan refuses or finds wrong (a lossy value, an unknown column) also gives
        ``None``: the per-item path then stores it or names the item at fault."""
        if len(pairs) < 2:
            return None
        first = pairs[0][1]
        if not isinstance(first, Batch):
            return None
        names = list(first.columns)
        for _, b in pairs:
            if not isinstance(b, Batch) or len(b.index) != 1 or list(b.columns) != names:
                return None
        try:
            index = np.concatenate([np.asarray(b.index) for _, b in pairs])
            columns = {n: np.concatenate([np.asarray(b.columns[n]) for _, b in pairs]) for n in names}
            which = np.arange(len(pairs), dtype=code_dtype(len(pairs)))
            return self._cross_section_plan(Stacked(tuple(k for k, _ in pairs), index, columns, which))
        except (MktsError, ValueError, TypeError):
            return None

    def write_stacked(self, stacked: Stacked, *, variable_length: bool = False) -> None:
        """Store the rows of a :class:`Stacked` (several buckets' rows in one set of arrays, in any
        order) as one :meth:`write_many`: one log record, one sync, all or nothing.

        A cross-section (one row for each key, to existing fixed buckets of one schema and
        timeframe, each into the year file it was last written in) skips the per-bucket work: the
        columns are checked and converted once, logged as they are, and each bucket gets one row
        store. That is a live feed's minute for a whole universe. Anything else goes through
        :func:`~mktsframe.stacking.unstack` and :meth:`write_many`, with the same result.
        """
        self._require_writable()
        with self._write_lock:
            self._require_writable()
            plan = None if variable_length or stacked.variable_length else self._cross_section_plan(stacked)
            if plan is None:
                entries = [(k, b, variable_length) for k, b in unstack(stacked).items()]
                self._commit_items(self._prepare_many(entries))
                return
            with self.faults.guard():
                self._commit_cross_section(*plan)

    def _cross_section_plan(
        self, stacked: Stacked
    ) -> tuple[list[Bucket], CrossSectionFiles, np.ndarray, np.ndarray, list[np.ndarray]] | None:
        """``(buckets, their year files, slots, bar-start seconds, columns)`` in key order when
        ``stacked`` is a cross-section :meth:`write_stacked` can store row by row, else ``None``.
        Errors in the columns (a lossy conversion) raise here, before anything is logged. The year
        files are kept for the next cross-section of the same buckets (a feed's next minute), which
        then checks them in a few array operations instead of a loop over every bucket."""
        keys, which, index = stacked.keys, stacked.which, np.asarray(stacked.index)
        nb = len(keys)
        if which is None or nb < 2 or index.shape != (nb,) or index.dtype != _I8:
            return None
        positions = np.arange(nb)
        order = None if np.array_equal(which, positions) else np.argsort(which)
        if order is not None and not np.array_equal(which[order], positions):
            return None  # a key with several rows (or none)
        buckets = self._fixed_buckets(keys)
        if buckets is None:
            return None
        first = buckets[0]
        if list(stacked.columns) != first.names:
            return None  # other columns (or another order): the general path conforms or explains
        tf = first.timeframe
        secs = index // (tf * NS) * tf
        arrays = [coerce_column(n, np.asarray(stacked.columns[n]), t) for n, t in first.schema]
        if order is not None:
            secs, arrays = secs[order], [a[order] for a in arrays]
        last = self._last_cross_section
        if last is not None and last.buckets is buckets:
            slots = last.slots(secs, tf)
            if slots is not None:
                return buckets, last, slots, secs, arrays
        closed = self.open_files.closed  # before looking: a file closed from now on is noticed
        files: list[YearFile] = []
        for b, t in zip(buckets, secs.tolist(), strict=True):
            yf = b.last_written  # open (a closed file is no longer anyone's last written)
            if yf is None or not yf.year_start <= t < yf.year_end:
                return None
            files.append(yf)
        planned = CrossSectionFiles(buckets, files, self.open_files, closed)
        slots = planned.slots(secs, tf)
        if slots is None:
            return None  # blocks to reserve: the general path does that
        self._last_cross_section = planned
        return buckets, planned, slots, secs, arrays

    def _fixed_buckets(self, keys: tuple[str, ...]) -> list[Bucket] | None:
        """The bucket of each key if all exist and are distinct fixed buckets of one timeframe and
        schema, else ``None`` (an invalid or missing key, a tick bucket, mixed schemas, or one bucket
        named twice through an alias: the general path creates or explains). The last answer is
        kept while no bucket is dropped: a feed writes the same 5,000 keys every minute, and
        looking them up and checking them costs ~8 ms."""
        hit = self._fixed_hit
        if hit is not None and hit[1] == self._bucket_drops and hit[0] == keys:
            return hit[2]
        drops = self._bucket_drops
        buckets: list[Bucket] = []
        for key in keys:
            try:
                b = self._bucket(parse_key(key))
            except ValueError:
                return None  # the general path says which key is wrong
            if b is None:
                return None
            buckets.append(b)
        if len({id(b) for b in buckets}) != len(buckets) or uniform_keys(buckets) is None:
            return None
        self._fixed_hit = (keys, drops, buckets)
        return buckets

    def _commit_cross_section(
        self, buckets: list[Bucket], planned: CrossSectionFiles, slots: np.ndarray, secs: np.ndarray,
        arrays: list[np.ndarray],
    ) -> None:
        """Log, sync and apply what :meth:`_cross_section_plan` planned; call holding the write lock.
        The record is the one :meth:`write_many` would log (replay and replication read it alike)."""
        seq = None
        if not self.wal_bypass:
            wal = self._wal
            assert wal is not None
            record = cross_section_arrays(secs, arrays)
            seq = wal.append_packed(planned.log_meta(wal, record), record)
            self._log_replays_over_rows = True
            if not self.background_sync:
                wal.sync()
        files = planned.files
        with self._apply_lock, self.faults.applying():
            planned.touched = self.open_files.touch_all(files, unless=planned.touched, ids=planned.file_ids)
            if planned.store_rows(slots, arrays, self._checkpoints_begun):
                self._prefault.wrote(planned, slots, [a.dtype.itemsize for a in arrays], time.monotonic())
            else:
                self._last_cross_section = None  # a file was closed since: look again next time
                rows: Sequence[Any]
                if files[0].rows is not None:  # columns of one item size (OHLCV): each bar is one raw row
                    rows = np.stack([a.view(f"V{a.dtype.itemsize}") for a in arrays], axis=1)
                else:
                    rows = list(zip(*(a.tolist() for a in arrays), strict=True))
                for j, (b, yf, slot, row) in enumerate(zip(buckets, files, slots.tolist(), rows, strict=True)):
                    if b.last_written is yf:  # still open: a reader may have opened others since the plan
                        yf.write_row(slot, row)
                    else:
                        self._apply_write(b, secs[j : j + 1], [a[j : j + 1] for a in arrays])
        self._mark_applied(seq)
        if not self.commits:  # nobody listens: the sequence numbers only, and one checkpoint check
            self._announce_unheard(len(buckets))
            return
        for j, b in enumerate(buckets):
            stored = Batch(secs[j : j + 1] * NS, {n: a[j : j + 1] for n, a in zip(b.names, arrays, strict=True)})
            self._announce("write", b.item_key, batch=stored)

    def _commit_queued(self, group: list[PendingWrite]) -> None:
        """Commit queued writes in arrival order: runs of small writes to distinct keys as one
        ``write_many`` each (each write alone if the run is refused, to give each its own error),
        larger ones alone. Marks every write done. Call holding the write lock."""
        run: list[PendingWrite] = []
        keys: set[str] = set()

        def flush() -> None:
            if len(run) == 1:
                self._commit_alone(run[0])
            elif run:
                try:
                    items = self._prepare_many([(w.key, w.batch, w.variable_length) for w in run])
                except Exception:  # someone's write is refused: find whose, one by one
                    for w in run:
                        self._commit_alone(w)
                else:
                    try:
                        self._commit_items(items)
                    except BaseException as exc:
                        for w in run:
                            w.error = exc
                    for w in run:
                        w.done = True
            run.clear()
            keys.clear()

        try:
            for w in group:
                try:
                    canonical = parse_key(w.key).item_key
                except ValueError:
                    canonical = None
                if canonical is None or w.rows > GROUP_MAX_ROWS or canonical in keys:
                    flush()
                if canonical is None or w.rows > GROUP_MAX_ROWS:
                    self._commit_alone(w)
                    continue
                run.append(w)
                keys.add(canonical)
            flush()
        finally:  # never let a queued write look acknowledged when this thread failed before reaching it
            for w in group:
                if not w.done:
                    w.error = MktsError(f"write to {w.key!r} was not committed: the committing thread failed")
                    w.done = True

    def _commit_alone(self, w: PendingWrite) -> None:
        try:
            self._write_one(w.key, w.batch, w.variable_length)
        except BaseException as exc:
            w.error = exc
        w.done = True

    def _prepare_many(self, entries: list[tuple[str, Batch, bool]]) -> list[Item]:
        """Check and normalise every ``(key, batch, variable_length)``; raises before anything is logged."""
        items: list[Item] = []
        seen: set[TimeBucketKey] = set()
        for key, batch, variable_length in entries:
            k = parse_key(key)
            if k in seen:
                raise ValueError(f"key {k.item_key!r} appears more than once in one write_many")
            seen.add(k)
            item = self._prepare_item(k, batch, variable_length)
            if item is not None:
                items.append(item)
        return items

    def _prepare_item(self, k: TimeBucketKey, batch: Batch, variable_length: bool) -> Item | None:
        """What :meth:`_write_one` checks and converts, for one bucket of a multi-bucket write;
        ``None`` if there is nothing to write."""
        if not isinstance(batch, Batch):
            raise TypeError(f"{k.item_key}: expected a Batch, got {type(batch).__name__}")
        index = np.asarray(batch.index)
        if index.dtype != _I8 or index.ndim != 1:
            raise SchemaMismatchError(f"{k.item_key}: batch index must be a 1-d int64 array of nanoseconds")
        n = index.shape[0]
        bucket = self._bucket(k)
        arrays = _usual_columns(bucket, batch.columns, n) if bucket is not None else None
        create = None
        if arrays is None:
            cols = _checked_columns(batch.columns, n)
            if bucket is None:
                if n == 0:
                    return None
                schema = _validate_schema([(name, wire_type(v.dtype)) for name, v in cols.items()], variable_length)
                create = (schema, "variable" if variable_length else "fixed")
                arrays = [coerce_column(name, cols[name], t) for name, t in schema]
            else:
                arrays = _conform(bucket, cols)
        if n == 0:
            return None
        ticks = bucket.ticks is not None if bucket is not None else variable_length
        if ticks:
            times, arrays = sort_ticks(index, arrays)
        else:
            times, arrays = _normalise(index, arrays, k.timeframe.seconds)
        return Item(k, ticks, times, arrays, k.timeframe.seconds, create)

    def _commit_items(self, items: list[Item]) -> None:
        """Log ``items`` as one record, sync once (unless ``background_sync``), apply, then announce."""
        if not items:
            return
        with self.faults.guard():
            self._commit_prepared(items)

    def _commit_prepared(self, items: list[Item]) -> None:
        """:meth:`_commit_items` inside :meth:`_faults`."""
        known = self._create_files(items)
        seq = None
        if not self.wal_bypass:
            wal = self._wal
            assert wal is not None
            meta, arrays = encode_record(items)
            seq = wal.append(meta, arrays)
            self._log_replays_over_rows = True
            if not self.background_sync:
                wal.sync()
        buckets = []
        with self._apply_lock, self.faults.applying():
            for it, b in zip(items, known, strict=True):
                if b is None:
                    if it.create is not None and self._bucket(it.key) is None:  # not made by _create_files: replayed
                        write_bucket_meta(self.root.joinpath(*it.key.parts), it.key, *it.create)
                        self._created()
                    b = self._require(it.key)
                if b.ticks is not None:
                    self._ticks_changing()
                    b.ticks.write(it.times, it.arrays, seq=seq)
                else:
                    self._apply_write(b, it.times, it.arrays)
                buckets.append(b)
        self._mark_applied(seq)
        # Announced once all is applied: an announcement may checkpoint, which covers the whole record.
        for it, b in zip(items, buckets, strict=True):
            if it.create is not None:
                self._announce("create", b.item_key)
            stored = None
            if self.commits:
                ns = it.times if it.ticks else it.times * NS
                stored = Batch(ns, dict(zip(b.names, it.arrays, strict=True)), it.ticks)
            self._announce("write", b.item_key, batch=stored)

    def _create_files(self, items: list[Item]) -> list[Bucket | None]:
        """Create the buckets and year files that ``items`` need, then make them durable with one
        ``syncfs`` (a bucket created alone costs six ``fsync`` calls; a universe of new symbols, or
        every symbol's first bar of a new year, would pay thousands). Done before the record is
        logged: a crash in between leaves empty buckets or year files, never rows. Returns each
        item's bucket (looked up once: the write lock keeps them from being destroyed meanwhile)."""
        created = False
        buckets: list[Bucket | None] = []
        with self._apply_lock:
            for it in items:
                b = self._bucket(it.key)
                if b is None and it.create is not None:
                    write_bucket_meta(self.root.joinpath(*it.key.parts), it.key, *it.create, durable=False)
                    self._created()
                    b, created = self._require(it.key), True
                buckets.append(b)
                if b is None or b.ticks is not None:
                    continue
                yf = b.last_written  # the common append: into the year file written last
                if yf is not None and yf.year_start <= int(it.times[0]) and int(it.times[-1]) < yf.year_end:
                    continue
                known = b.years()
                for year, _, _ in year_spans(it.times):
                    if year not in known and b.year_file(year, create=True, durable=False) is not None:
                        created = True
        if created:
            sync_filesystem(self.root)
        with self._apply_lock:
            for b, it in zip(buckets, items, strict=True):
                if b is not None:
                    self._reserve(b, it.times)
        return buckets

    def _reserve(self, b: Bucket, times: np.ndarray) -> None:
        """Give the rows of a write to ``b`` (``times``: bar-start seconds, or tick nanoseconds; sorted)
        disk blocks before it is logged (:mod:`.space`): a full disk then refuses it with
        :class:`NoSpaceError` and nothing logged, instead of ``SIGBUS`` when it is applied (or
        replayed). Year files it needs are created now. Call under the apply lock."""
        if b.ticks is not None:
            b.ticks.reserve(times)
            return
        tf = b.timeframe
        yf = b.last_written
        if yf is not None:  # the common append: inside the year file written last, reserved already
            first, last = int(times[0]) - yf.year_start, int(times[-1]) - yf.year_start
            if first >= 0 and last < yf.year_end - yf.year_start and yf.reserved(first // tf, last // tf + 1):
                return
        for year, a, z in year_spans(times):
            y0 = year_bounds(year)[0]
            runs = slot_runs((times[a:z] - y0) // tf)
            yf = b.open_year(year)
            if yf is None and self.open_files.full and year in b.years():
                year_io.reserve_slots(b.dir / f"{year}.bin", runs)  # written by position: opens nothing
                continue
            yf = yf if yf is not None else b.year_file(year, create=True)
            assert yf is not None
            for s0, s1 in runs:
                yf.reserve(s0, s1)

    def _write_one(self, key: str, batch: Batch, variable_length: bool) -> None:
        """One write on its own (:meth:`write` without group commit): checked and normalised as an
        item of :meth:`write_many`, then logged with the single-bucket optimisations (direct
        writes, staging, ``write_run`` records)."""
        k = parse_key(key)
        self._require_writable()
        with self._write_lock, self.faults.guard():
            self._require_writable()
            item = self._prepare_item(k, batch, variable_length)
            if item is None:
                return
            if item.create is not None:
                self._log_create(k, *item.create)
            bucket = self._require(k)
            arrays = item.arrays
            if item.ticks:
                with self._apply_lock:
                    self._reserve(bucket, item.times)
                self._log({"op": "write", "key": k.item_key}, [item.times, *arrays])
                stored = Batch(item.times, dict(zip(bucket.names, arrays, strict=True)), True) if self.commits else None
                self._announce("write", k.item_key, batch=stored)
                return
            secs = item.times
            n = secs.shape[0]
            b, item_key = bucket, bucket.item_key
            if not self._write_direct(bucket, secs, arrays):
                with self._apply_lock:
                    self._reserve(bucket, secs)
                apply = lambda: self._apply_fixed(b, secs, arrays)  # noqa: E731
                stage = self._stage_append(b, secs, arrays)
                if n >= _RUN_MIN_ROWS and arrays and int(secs[-1]) - int(secs[0]) == (secs.shape[0] - 1) * b.timeframe:
                    # consecutive bars: log the first bar's time instead of every row's (8 bytes a row less to sync)
                    self._log({"op": "write_run", "key": item_key, "start": int(secs[0])}, arrays, apply, stage)
                else:
                    self._log({"op": "write", "key": item_key}, [secs, *arrays], apply, stage)
            stored = Batch(secs * NS, dict(zip(bucket.names, arrays, strict=True))) if self.commits else None
            self._announce("write", item_key, batch=stored)

    def delete(self, key: str, *, start: int | None = None, end: int | None = None) -> int:
        """Remove rows in ``[start, end]`` (ns, inclusive at bar granularity; exact for tick
        buckets); returns the count."""
        k = parse_key(key)
        with self._write_lock, self.faults.guard():
            self._require_writable()
            b = self._require(k)
            if b.ticks is not None:
                meta = {"op": "delete", "key": k.item_key, "start_ns": _int_or_none(start), "end_ns": _int_or_none(end)}
            else:
                s, e = bar_range(start, end, b.timeframe)
                meta = {"op": "delete", "key": k.item_key, "start": s, "end": e}
            removed = int(self._log(meta) or 0)
            self._announce("delete", k.item_key, start=start, end=end)
            return removed

    def destroy(self, key: str) -> None:
        k = parse_key(key)
        with self._write_lock, self.faults.guard():
            self._require_writable()
            self._require(k)
            self._log({"op": "destroy", "key": k.item_key})
            self._announce("destroy", k.item_key)

    def _write_direct(self, b: Bucket, secs: np.ndarray, arrays: list[np.ndarray]) -> bool:
        """A large write into empty slots, stored once: in the year files, not in the log too.

        Returns ``False`` (nothing done: log it as usual) unless the write is durable (not
        ``background_sync`` nor ``wal_bypass``), at least ``DIRECT_MIN_BYTES``, covers consecutive
        bars and every year's range is empty and outside the watermarks (appends, back-fills).
        Then, under the write lock (format and crash reasoning: ``docs/format.md``):

        0. if a kept log segment holds a write, delete or destroy, checkpoint and rotate first, so
           that replay can never re-apply an older record over rows that live only in year files;
        1. log a ``direct`` record naming the slot ranges (no data) and ``fdatasync`` the log;
        2. ``pwrite`` the rows into the year files and ``fdatasync`` them (invisible to readers:
           outside the watermarks);
        3. move the watermarks over them, all years at once under the apply lock;
        4. log a ``commit`` record naming the ``direct`` one and ``fdatasync``: the write is done.

        Replay clears the ranges of a ``direct`` record without its ``commit`` (interrupted, never
        acknowledged, maybe torn; the slots held nothing before) and re-publishes those of a
        committed one. Cost: the rows cross the page cache and the disk once, plus two small
        synced records (the log path writes them twice and syncs both copies' worth of bytes).
        """
        if self.background_sync or self.wal_bypass or secs.shape[0] * b.row_bytes < DIRECT_MIN_BYTES:
            return False
        tf = b.timeframe
        if (int(secs[-1]) - int(secs[0])) // tf + 1 != secs.size:  # sorted and unique: so consecutive
            return False
        plan: list[tuple[YearFile, int, int, int]] = []  # year file, first slot, rows from, rows to
        with self._apply_lock:
            for year, a, z in year_spans(secs):
                yf = b.year_file(year, create=True)
                assert yf is not None
                self.open_files.pin(yf)  # used outside the apply lock below: readers may not close it
                plan.append((yf, (int(secs[a]) - yf.year_start) // tf, a, z))
            empty = all(yf.unpublished(s0, s0 + z - a) for yf, s0, a, z in plan)
        try:
            if empty:
                self._store_direct(b, plan, arrays)
            return empty
        finally:
            for yf, *_ in plan:
                self.open_files.unpin(yf)

    def _store_direct(self, b: Bucket, plan: list[tuple[YearFile, int, int, int]], arrays: list[np.ndarray]) -> None:
        """Steps 0–4 of :meth:`_write_direct` for a ``plan`` of pinned year files whose ranges are unpublished."""
        wal = self._wal
        assert wal is not None
        if self._log_replays_over_rows:
            self._checkpoint(rotate=True)
        ranges = [[yf.year, s0, s0 + z - a] for yf, s0, a, z in plan]
        seq = wal.append({"op": "direct", "key": b.key.item_key, "ranges": ranges})
        wal.sync()
        try:
            for yf, s0, a, z in plan:
                yf.store_durable(s0, {name: arr[a:z] for name, arr in zip(b.names, arrays, strict=True)})
        except BaseException:
            with self._apply_lock:  # never leave torn bytes where a later write could widen over them
                for yf, s0, a, z in plan:
                    yf.clear(s0, s0 + z - a)
            self._log_replays_over_rows = True  # the uncommitted record must go before the next direct write
            raise
        with self._apply_lock:
            for yf, s0, a, z in plan:
                yf.publish(s0, s0 + z - a)
            b.last_written = plan[-1][0]
        self._mark_applied(wal.append({"op": "commit", "key": b.key.item_key, "direct": seq}))
        wal.sync()

    def _announce(self, op: Any, key: str, **detail: Any) -> None:
        """Tell commit listeners (cheap when there are none); the caller holds the write lock."""
        seq = self.commits.next_seq()
        if self.commits.hears(op):
            self.commits.emit(CommitEvent(op, key, seq, **detail))
        self._checkpoint_large_log()

    def _announce_unheard(self, changes: int) -> None:
        """:meth:`_announce` of ``changes`` changes at once, when no listener is registered."""
        self.commits.skip(changes)
        self._checkpoint_large_log()

    def _checkpoint_large_log(self) -> None:
        """Checkpoint a large log; only after the listeners were told: a change they may not have
        heard of (a crash before this call) is then always after the checkpoint, so replay reports it."""
        wal = self._wal
        if wal is not None and wal.bytes_since_checkpoint > self._wal_max_bytes:
            self._checkpoint(rotate=True)

    def _stage_append(self, b: Bucket, secs: np.ndarray, arrays: list[np.ndarray]) -> Callable[[], None] | None:
        """What a durable write can do while its log record is on the way to the disk: an append of
        at least ``_STAGE_MIN_ROWS`` bars past the last-written year file's data stages its values
        there (:meth:`YearFile.stage_run`, invisible until applied). ``None`` when there is nothing to
        gain (``background_sync``, small writes: the extra system call would cost more)."""
        yf = b.last_written
        if self.background_sync or secs.shape[0] < _STAGE_MIN_ROWS or yf is None:
            return None
        run = run_start(yf, secs)
        return None if run is None else lambda: self._stage_run(yf, run, arrays)

    def _stage_run(self, yf: YearFile, run: int, arrays: list[np.ndarray]) -> None:
        """:meth:`YearFile.stage_run` outside the apply lock: only if ``yf`` is still open, pinned meanwhile."""
        if self.open_files.pin(yf):
            try:
                yf.stage_run(run, arrays)
            finally:
                self.open_files.unpin(yf)

    def _log(
        self,
        meta: dict[str, Any],
        arrays: Sequence[np.ndarray] = (),
        apply: Callable[[], Any] | None = None,
        stage: Callable[[], None] | None = None,
    ) -> Any:
        """Log one operation, make it durable (unless ``background_sync``), then apply it.

        ``apply`` applies it directly when the caller already resolved what :meth:`_apply` would
        look up again from ``meta`` (a fixed-bucket write: its bucket); it must not need the ``seq``.
        ``stage`` is work that changes nothing a reader or a replay can see: it runs after the
        record's disk write has been started and before waiting for it (``fdatasync``), so the two overlap.
        """
        wal = self._wal
        assert wal is not None
        if self.wal_bypass:
            return apply() if apply is not None else self._apply(meta, list(arrays))
        seq = wal.append(meta, arrays)
        if meta["op"] != "create":
            self._log_replays_over_rows = True
        if not self.background_sync:
            if stage is not None:
                wal.start_sync()
                stage()
            wal.sync()
        # A create that fails (a full disk) leaves nothing to diverge: replay makes the empty bucket.
        with self.faults.applying() if meta["op"] != "create" else contextlib.nullcontext():
            out = apply() if apply is not None else self._apply(meta, list(arrays), seq=seq)
        self._mark_applied(seq)
        return out


def run_start(yf: YearFile, secs: np.ndarray) -> int | None:
    """The first slot of ``secs`` (sorted, unique bar starts) if they are a contiguous run of bars
    inside ``yf``'s year, else ``None``."""
    first, last = int(secs[0]), int(secs[-1])
    if yf.year_start <= first and last < yf.year_end and last - first == (secs.shape[0] - 1) * yf.timeframe:
        return (first - yf.year_start) // yf.timeframe
    return None


def _int_or_none(v: int | None) -> int | None:
    return None if v is None else int(v)


def year_spans(secs: np.ndarray) -> list[tuple[int, int, int]]:
    """``(year, a, z)``: rows ``secs[a:z]`` fall in ``year`` (``secs`` sorted epoch seconds)."""
    y_first, y_last = year_of(int(secs[0])), year_of(int(secs[-1]))
    if y_first == y_last:
        return [(y_first, 0, secs.size)]
    # cut at each 1 January (a per-row datetime64[Y] cast cost 40 ms per 1M rows)
    cuts = np.searchsorted(secs, [year_bounds(y)[0] for y in range(y_first + 1, y_last + 1)]).tolist()
    edges = [0, *cuts, secs.size]
    return [(y_first + i, edges[i], edges[i + 1]) for i in range(len(edges) - 1) if edges[i + 1] > edges[i]]


def _validate_schema(columns: Sequence[tuple[str, str]], variable_length: bool) -> tuple[tuple[str, str], ...]:
    """:func:`validate_schema`; a tick bucket's time is its index, so ``Nanoseconds`` is reserved there."""
    schema = validate_schema(columns)
    if variable_length and any(n == "Nanoseconds" for n, _ in schema):
        raise SchemaMismatchError(
            "'Nanoseconds' is not a column of a tick bucket: the index holds each tick's exact nanosecond "
            "(over the wire, MarketStore's Nanoseconds column is folded into it)"
        )
    return schema


def _usual_columns(bucket: Bucket, columns: Mapping[str, Any], n: int) -> list[np.ndarray] | None:
    """The columns as a list if they are exactly the bucket's (same names in the same order, numpy
    arrays of its dtypes, ``n`` rows each: what :func:`frame_to_batch` makes of a frame that was
    written before), else ``None``. One pass instead of :func:`_checked_columns` + :func:`_conform`,
    which a 1-row append would pay ~6 µs for."""
    if len(columns) != len(bucket.names) or list(columns) != bucket.names:
        return None
    arrays = list(columns.values())
    for a, t in zip(arrays, bucket.dtype_list, strict=True):
        if type(a) is not np.ndarray or a.dtype != t or a.shape != (n,):
            return None
    return arrays


def _checked_columns(columns: Mapping[str, Any], n: int) -> dict[str, np.ndarray]:
    """Every column as a 1-d array of ``n`` rows, or a :class:`SchemaMismatchError` naming the one that is not."""
    cols = {name: np.asarray(v) for name, v in columns.items()}
    for name, v in cols.items():
        if v.ndim != 1 or v.shape[0] != n:
            raise SchemaMismatchError(f"column {name!r} has {v.shape[0] if v.ndim else 0} rows, index has {n}")
    return cols


def _conform(bucket: Bucket, cols: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Columns in bucket order and dtype, or a :class:`SchemaMismatchError` naming the difference."""
    if len(cols) == len(bucket.dtype_list):  # same names, order and types: nothing to convert
        arrays = list(cols.values())
        if list(cols) == bucket.names and all(a.dtype == t for a, t in zip(arrays, bucket.dtype_list, strict=True)):
            return arrays
    if set(cols) != set(bucket.names):
        missing = [n for n in bucket.names if n not in cols]
        extra = [n for n in cols if n not in bucket.names]
        raise SchemaMismatchError(
            f"columns do not match bucket {bucket.key.item_key!r}: it has {bucket.names}"
            + (f"; missing {missing}" if missing else "")
            + (f"; unexpected {extra}" if extra else "")
        )
    return [coerce_column(name, cols[name], t) for name, t in bucket.schema]


def _normalise(index: np.ndarray, arrays: list[np.ndarray], tf: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Bar-start seconds, sorted, one row per bar (the last written wins)."""
    if index.shape[0] <= _SMALL_ROWS:  # Python ints: two ufunc calls cost ~6 µs, a 1-row append's largest step
        step = tf * NS
        bars = [v // step * tf for v in index.tolist()]
        secs = np.array(bars, np.int64)
        if len(bars) == 1 or all(a < b for a, b in itertools.pairwise(bars)):
            return secs, arrays
    else:
        secs = index // NS if tf == 1 else index // (tf * NS) * tf  # one division, not two
        if (secs[1:] > secs[:-1]).all():
            return secs, arrays
    order = np.argsort(secs, kind="stable")
    secs = secs[order]
    keep = np.empty(secs.size, bool)
    keep[-1] = True
    np.not_equal(secs[1:], secs[:-1], out=keep[:-1])
    idx = order[keep]
    return secs[keep], [a[idx] for a in arrays]
