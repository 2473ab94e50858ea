"""The local storage engine: the catalog, year files and write-ahead log of one data root.

Write path (one writer lock): validate and normalise → append to the WAL → ``fdatasync``
(unless ``background_sync``) → apply to the memory-mapped year files under the apply lock.
Large durable writes into empty slots are stored once instead, in the year files, between two small
WAL records; replay rolls back one left without its commit (:meth:`Engine._write_direct`).
Readers take the apply lock only while they copy, so they never see half a write and never wait
longer than one apply. Checkpoints ``msync`` the dirty year files and then record the last
applied sequence number; WAL segments older than the checkpoint are deleted every
``wal_rotate_interval`` checkpoints.

One process writes a root at a time (``root/.mkts/lock``, ``flock``); other processes open it
read-only and read the year files directly.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mktsframe.changes import CommitEvent, Listener
from mktsframe.dtypes import coerce_column, validate_schema, wire_type
from mktsframe.engine import year_io
from mktsframe.engine.catalog import (
    Bucket,
    iter_bucket_keys,
    read_bucket_meta,
    write_bucket_meta,
)
from mktsframe.engine.commits import CommitListeners
from mktsframe.engine.durable import fsync_dir, sync_filesystem, sync_path
from mktsframe.engine.faults import Faults
from mktsframe.engine.generation import DestroyGeneration
from mktsframe.engine.log_cursor import LogCursor
from mktsframe.engine.many import GROUP_MAX_ROWS, Item, PendingWrite, WriteQueue, encode_record
from mktsframe.engine.open_files import OpenFiles
from mktsframe.engine.reads import EngineReads, bar_range
from mktsframe.engine.recovery import EngineRecovery
from mktsframe.engine.tick_file import sort_ticks
from mktsframe.engine.wal import ReplayReport, WriteAheadLog
from mktsframe.engine.year_file import YearFile, slot_runs, year_bounds, year_of
from mktsframe.errors import (
    BucketExistsError,
    BucketNotFoundError,
    LockedError,
    MktsError,
    NoSpaceError,
    ReadOnlyError,
    SchemaMismatchError,
)
from mktsframe.keys import TimeBucketKey, parse_key, parse_key_pattern
from mktsframe.records import Batch

__all__ = ["Engine"]

log = logging.getLogger("mktsframe.engine")

NS = 1_000_000_000
#: Patterns whose matching keys are remembered (until the catalog changes).
_MATCHED_MAX = 256
#: Writes of at least this many bytes of values take the direct path (:meth:`Engine._write_direct`).
DIRECT_MIN_BYTES = 4 << 20
_I8 = np.dtype(np.int64)
#: Writes of at least this many consecutive bars are logged as ``write_run`` records (no times).
_RUN_MIN_ROWS = 16
#: Durable appends of at least this many bars stage their values while the log is written (Engine._stage_append).
_STAGE_MIN_ROWS = 256
#: Up to this many rows, a write's bar times are computed with Python ints (numpy's per-call cost dominates).
_SMALL_ROWS = 32
#: A checkpoint fdatasync's up to this many year files closed dirty one by one; more, one syncfs.
_SYNC_EACH_MAX = 16
#: A log sync faster than this (seconds) lets :meth:`Engine.writes_without_waiting` say yes.
FAST_SYNC_SECONDS = 0.002


class Engine(EngineReads, EngineRecovery):
    """Storage for one data root. Thread-safe; use :func:`mktsframe.connect` to get one.

    Parameters
    ----------
    root : path
        Data directory (created if missing).
    read_only : bool or None
        ``None`` takes the write lock if it is free and falls back to read-only if another
        process holds it; ``False`` raises :class:`LockedError` instead; ``True`` never writes.
    background_sync : bool
        ``False`` (default): every write is ``fdatasync``'d before it returns, so an acknowledged
        write survives power loss. ``True``: the log is synced every ``sync_interval`` seconds
        instead (MarketStore's default) — far faster small writes, but up to that interval of
        acknowledged writes can be lost if the *machine* fails (a killed process loses nothing).
    checkpoint_interval : float
        Seconds between checkpoints (MarketStore: 300).
    wal_rotate_interval : int
        Delete checkpointed WAL segments every N checkpoints (MarketStore's key, default 5).
    wal_max_bytes : int
        Also checkpoint and rotate once this many log bytes accumulate, bounding replay time.
    wal_bypass : bool
        Skip the log entirely (MarketStore's key, for one-off bulk loads): writes go straight to
        the year files, which are ``msync``'d only at checkpoints and close. A crash can lose or
        tear anything written since the last checkpoint. Never use it for live data.
    max_open_files : int or None
        Most year files and tick partitions kept mapped (a map holds no descriptor, see
        :mod:`~mktsframe.engine.mapping`); the least recently used is closed to open another.
        ``None``: sized from the process's limits
        (:func:`~mktsframe.engine.open_files.default_capacity`), or ``MKTS_MAX_OPEN_FILES``.
    log_retention_bytes : int
        Checkpointed log kept for :meth:`changes_since` readers (replicas catching up), newest
        segments first; 0 (default) deletes log segments once checkpointed.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        read_only: bool | None = None,
        background_sync: bool = False,
        sync_interval: float = 0.5,
        checkpoint_interval: float = 300.0,
        wal_rotate_interval: int = 5,
        wal_max_bytes: int = 256 << 20,
        wal_bypass: bool = False,
        max_open_files: int | None = None,
        log_retention_bytes: int = 0,
    ) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True, mode=0o770)
        self._meta_dir = self.root / ".mkts"
        self._buckets: dict[TimeBucketKey, Bucket] = {}
        #: Moves whenever a cached :class:`Bucket` is dropped (destroy, close, another process's
        #: destroy): a list of buckets resolved before is stale, and a reader must re-check them.
        self._bucket_drops = 0
        self.open_files = OpenFiles(max_open_files)
        """The bounded set of open year files and tick partitions (see :mod:`.open_files`)."""
        # Year files closed to make room before their changes were msync'd: the next checkpoint syncs them.
        self._closed_dirty: set[Path] = set()
        self._write_lock = threading.RLock()
        self._queue = WriteQueue()  # writes waiting for group commit (see write)
        self._apply_lock = threading.RLock()
        self._lock_fd: int | None = None
        self._closed = False
        self.background_sync = background_sync
        self._sync_interval = sync_interval
        self._checkpoint_interval = checkpoint_interval
        self._rotate_every = max(1, int(wal_rotate_interval))
        self._wal_max_bytes = wal_max_bytes
        self.wal_bypass = wal_bypass
        self._checkpoints = 0
        # Whether some kept WAL segment holds a write, delete or destroy (which, replayed, could change
        # rows a direct write stored only in the year files): see _write_direct.
        self._log_replays_over_rows = True
        self._last_checkpoint = time.monotonic()
        self.recovery = ReplayReport()
        self.faults = Faults(self.root)
        """Poisoned by a failed sync (writes refused until reopened): see :mod:`.faults`."""
        self.read_only_reason: str | None = None
        """Why a root opened for writing fell back to read-only (its log could not be replayed), or ``None``."""
        self.commits = CommitListeners()
        """Listeners told of every acknowledged change, in commit order (see :mod:`.commits`)."""
        self.read_only = not self._acquire_lock(read_only)
        if not self.read_only or self._meta_dir.is_dir():
            self._generation: DestroyGeneration | None = DestroyGeneration(self._meta_dir, writable=not self.read_only)
        else:
            self._generation = None  # a read-only root no writer has opened yet: nothing to follow
        self._seen_generation = self._generation.value() if self._generation is not None else None
        self._catalog_cache: tuple[tuple[int, int], list[TimeBucketKey]] | None = None
        # pattern -> (the catalog list it was matched against, the matching keys)
        self._matched: dict[str, tuple[list[TimeBucketKey], int, list[Bucket]]] = {}
        self._wal: WriteAheadLog | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        if not self.read_only:
            self._wal = WriteAheadLog(self._meta_dir / "wal")
            self._wal.retain_bytes = max(0, int(log_retention_bytes))
            try:
                self._recover()
            except NoSpaceError as exc:
                self._fall_back_read_only(f"{self.root}: its write-ahead log could not be replayed: {exc}")
                return
            self._thread = threading.Thread(target=self._background, name="mktsframe-wal", daemon=True)
            self._thread.start()

    # -- lifecycle ------------------------------------------------------------------------------
    def _acquire_lock(self, read_only: bool | None) -> bool:
        if read_only:
            return False
        self._meta_dir.mkdir(exist_ok=True, mode=0o770)
        fd = os.open(self._meta_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if read_only is False:
                raise LockedError(
                    f"{self.root} is open for writing by another process (pid {holder}); "
                    "open it read-only or stop that process"
                ) from None
            log.info("%s is locked by pid %s: opened read-only", self.root, holder)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd
        return True

    def _fall_back_read_only(self, why: str) -> None:
        """Open read-only after all (keeping the log and checkpoint as they are, for the next writer):
        reads serve what the year files hold; writes are refused with ``why``."""
        log.error("%s; opened read-only", why)
        self.recovery.problems.append(why)
        self.read_only_reason = why
        with self._apply_lock:
            for b in self._buckets.values():
                b.close()
            self._buckets.clear()
            self._bucket_drops += 1
        assert self._wal is not None
        self._wal.close()
        self._wal = None
        if self._generation is not None:
            self._generation.close()
        self._generation = DestroyGeneration(self._meta_dir, writable=False)
        self.read_only = True
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def close(self) -> None:
        """Checkpoint, delete the log and release the write lock. Idempotent."""
        if self._closed:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._write_lock, self._apply_lock:
            if self._wal is not None and self.faults.poisoned is None:  # poisoned: the log must stay for replay
                self._checkpoint(rotate=True)
            if self._wal is not None:
                self._wal.close()
                for seg in self._wal.segments() if self.faults.poisoned is None else ():
                    if int(seg.stem) > self._wal.checkpoint_seq:
                        seg.unlink()  # empty segment opened by the last rotation
            for b in self._buckets.values():
                b.close()
            self._buckets.clear()
            self._bucket_drops += 1
            if self._generation is not None:
                self._generation.close()
            self._closed = True
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _background(self) -> None:
        interval = self._sync_interval if self.background_sync else min(1.0, self._checkpoint_interval)
        while not self._stop.wait(interval):
            with self._write_lock:
                if self._closed or self._wal is None or self.faults.poisoned is not None:
                    return
                try:
                    with self.faults.guard():
                        if self.background_sync:
                            self._wal.sync()
                        due = time.monotonic() - self._last_checkpoint >= self._checkpoint_interval
                        if due and (self._wal.bytes_since_checkpoint or self.wal_bypass):
                            self._checkpoint()
                except MktsError as exc:  # poisoned (a failed sync) or out of space: the next write reports it
                    log.error("background checkpoint failed: %s", exc)

    def sync(self) -> None:
        """Make every write so far durable (useful with ``background_sync``)."""
        with self._write_lock, self.faults.guard():
            self.faults.check()
            if self._wal is not None:
                self._wal.sync()

    @contextlib.contextmanager
    def writes_without_waiting(self) -> Iterator[bool]:
        """Whether a small write to an existing bucket may run now without waiting on anything.

        Yields ``True`` holding the write lock (a write inside takes it again at once) when no
        other change is under way, no checkpoint either, and the log's last sync took less than
        ``FAST_SYNC_SECONDS`` (or writes do not sync at all, with ``background_sync``); otherwise
        yields ``False`` at once, holding nothing. For callers that must never stall, such as the
        server's event loop: a write there costs at most a fast sync, while a slow disk or a long
        write elsewhere sends it to a worker thread.
        """
        if not self._write_lock.acquire(blocking=False):
            yield False
            return
        try:
            wal = self._wal
            # With background_sync a write does not wait for the disk at all.
            fast = self.background_sync or (wal is not None and wal.last_sync_seconds < FAST_SYNC_SECONDS)
            yield wal is not None and not self._closed and fast
        finally:
            self._write_lock.release()

    def listen(self, listener: Listener, before_checkpoint: Callable[[], None] | None = None) -> Callable[[], None]:
        """Hear every acknowledged change (the :class:`~mktsframe.changes.ChangeFeed` protocol;
        see :mod:`mktsframe.engine.commits` for the rules a listener follows)."""
        return self.commits.add(listener, before_checkpoint)

    @property
    def last_seq(self) -> int:
        """The ``seq`` of this engine's latest change (0 before any; counts from 0 in each process)."""
        return self.commits.last_seq

    @property
    def log_position(self) -> int:
        """The WAL sequence number of the last durable record (durable positions, unlike ``last_seq``)."""
        return self._wal.synced_seq if self._wal is not None else 0

    def changes_since(self, position: int) -> LogCursor:
        """The logged changes after WAL sequence ``position`` (:class:`~mktsframe.changes.ChangeFeed`;
        see :mod:`.log_cursor`). Only the writing process has a log, and ``wal_bypass`` logs nothing."""
        wal = self._wal
        if wal is None or self.wal_bypass:
            raise MktsError(f"{self.root}: no write-ahead log to read (read-only, or wal_bypass)")

        def rows(key: str, start: int, end: int) -> Batch:
            return self.query(key, start=start, end=end)[key]

        return LogCursor(wal.dir, position, lambda: wal.synced_seq, rows)

    @contextlib.contextmanager
    def commit_barrier(self) -> Iterator[int]:
        """Hold off every change while the block runs; yields the ``seq`` of the last commit so far.

        Streaming uses it to cut a snapshot exactly between two commits (see
        :mod:`mktsframe.streaming.resume`). Writers wait meanwhile, so keep the block short.
        """
        with self._write_lock:
            yield self.commits.last_seq

    def checkpoint(self) -> None:
        """Flush year files to disk and advance the checkpoint (normally automatic)."""
        with self._write_lock, self.faults.guard():
            self._require_writable()
            self._checkpoint(rotate=True)

    def _checkpoint(self, rotate: bool = False) -> None:
        wal = self._wal
        assert wal is not None
        wal.sync()
        with self._apply_lock:
            dirty = [yf for b in self._buckets.values() for yf in b.open_years() if yf.dirty]
            for b in self._buckets.values():
                if b.ticks is not None:
                    b.ticks.checkpoint()
            closed_dirty, self._closed_dirty = self._closed_dirty, set()
            # Each msync of a shared map is an fdatasync of its file: a write_many to 5,000 buckets
            # made the next checkpoint 5,000 syncs (~5 s). With many files changed, open or closed
            # since, one syncfs instead (it writes a shared map's dirty pages like any in the cache).
            one_sync = len(dirty) + len(closed_dirty) > _SYNC_EACH_MAX
            if not one_sync:
                for yf in dirty:
                    yf.flush()
        # Outside the apply lock, so readers go on; writers wait (the caller holds the write lock).
        # A file a reader evicts meanwhile is handed to the next checkpoint as well: harmless.
        if one_sync:
            sync_filesystem(self.root)
            for yf in dirty:
                yf.dirty = False
        else:
            for path in closed_dirty:
                sync_path(path)
        self.commits.before_checkpoint()  # listeners' own records durable before replay forgets
        wal.write_checkpoint(wal.written_seq)
        self._checkpoints += 1
        self._last_checkpoint = time.monotonic()
        if rotate or self._checkpoints % self._rotate_every == 0:
            wal.start_segment()
            wal.drop_checkpointed()
            self._log_replays_over_rows = False

    # -- catalog --------------------------------------------------------------------------------
    def _bucket(self, key: TimeBucketKey) -> Bucket | None:
        if self.read_only:
            self._follow_destroys()
        b = self._buckets.get(key)
        if b is not None:
            return b
        # Under the apply lock: a reader must not cache a bucket that a destroy is removing.
        with self._apply_lock:
            b = self._buckets.get(key)
            if b is not None:
                return b
            directory = self.root.joinpath(*key.parts)
            meta = read_bucket_meta(directory)
            if meta is None:
                return None
            b = Bucket(
                key,
                directory,
                meta,
                writable=not self.read_only,
                files=self.open_files,
                on_dirty_close=self._closed_dirty.add,
                hold_ticks_while_dirty=self.background_sync or self.wal_bypass,
            )
            self._buckets[key] = b
            return b

    def _follow_destroys(self) -> None:
        """Read-only engines: forget cached buckets once the writer process has destroyed any.

        A destroyed key may have been re-created since with other data or another schema, so
        nothing cached from before may be served (see :mod:`.generation`). Buckets are dropped,
        not closed: a thread of this process may still be copying out of their mappings.
        """
        gen = self._generation
        if gen is None:
            if self._meta_dir.is_dir():  # the writer has started since this engine opened
                self._generation = DestroyGeneration(self._meta_dir, writable=False)
                self._seen_generation = None
                with self._apply_lock:
                    self._buckets.clear()
                    self._bucket_drops += 1
            return None  # no writer has ever opened this root (a copy): nothing is being destroyed
        value = gen.value()
        # ``None`` twice running: no writer has made the counter yet (a copied root whose ``.mkts/``
        # holds no ``generation``), so nothing is being destroyed and the cache stays valid; a writer
        # creates it before its first destroy, and the change from ``None`` clears the cache once.
        if value != self._seen_generation:
            with self._apply_lock:
                self._buckets.clear()
                self._bucket_drops += 1
                self._seen_generation = value

    def _require(self, key: TimeBucketKey) -> Bucket:
        b = self._bucket(key)
        if b is None:
            raise BucketNotFoundError(f"no bucket {key.item_key!r} (no files returned from query parse)")
        return b

    def _still_there(self, b: Bucket) -> None:
        """Raise if ``b`` was destroyed (and maybe re-created) since it was resolved; call under the apply lock."""
        if self._buckets.get(b.key) is not b:
            raise BucketNotFoundError(f"no bucket {b.key.item_key!r} (no files returned from query parse)")

    def _require_writable(self) -> None:
        if self._closed:
            raise MktsError(f"{self.root}: connection is closed")
        if self.read_only:
            raise ReadOnlyError(self.read_only_reason or f"{self.root} is open read-only; writes are refused")
        self.faults.check()

    def list_keys(self) -> list[str]:
        return sorted(k.item_key for k in self._catalog())

    def list_symbols(self) -> list[str]:
        return sorted({k.symbol for k in self._catalog()})

    def _catalog(self) -> list[TimeBucketKey]:
        """Every bucket's key, sorted by parts: a directory walk (10,000 buckets: ~20,000 system
        calls) cached until the catalog stamp (destroys and creations, :mod:`.generation`) moves."""
        gen = self._generation
        stamp = gen.catalog_stamp() if gen is not None else None
        cached = self._catalog_cache
        if stamp is not None and cached is not None and cached[0] == stamp:
            return cached[1]
        keys = sorted(iter_bucket_keys(self.root), key=lambda k: k.parts)
        self._catalog_cache = (stamp, keys) if stamp is not None else None
        return keys

    def _created(self) -> None:
        """A bucket was created (under the apply lock): listings must be made again."""
        if self._generation is not None and not self.read_only:
            self._generation.bump_created()

    def _resolve(self, key: str) -> list[Bucket]:
        pattern = parse_key_pattern(key)
        named = pattern.expand()
        if named is None:
            catalog = self._catalog()
            if self.read_only:
                self._follow_destroys()
            hit = self._matched.get(key)
            if hit is not None and hit[0] is catalog and hit[1] == self._bucket_drops:
                return hit[2]
            # matching 10,000 keys costs ~50 ms, and looking their buckets up ~10 ms: once per pattern
            # while the catalog stands and no bucket was dropped
            drops = self._bucket_drops
            matched = [k for k in catalog if pattern.matches(k)]
            buckets = [b for b in (self._bucket(k) for k in matched) if b is not None]
            if not buckets:
                raise BucketNotFoundError(f"no bucket matches {key!r} (no files returned from query parse)")
            if len(self._matched) >= _MATCHED_MAX:
                self._matched.clear()
            self._matched[key] = (catalog, drops, buckets)
            return buckets
        return [self._require(k) for k in named]

    # -- writes ---------------------------------------------------------------------------------
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
        if not self._queue.pending and self._write_lock.acquire(blocking=False):
            try:  # uncontended: no queue, no grouping
                self._write_one(key, batch, variable_length)
            finally:
                self._write_lock.release()
            return
        w = PendingWrite(key, batch, variable_length, rows=len(batch) if isinstance(batch, Batch) else 0)
        self._queue.put(w)
        with self._write_lock:
            if not w.done:
                self._commit_queued(self._queue.take())
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
            self._commit_items(self._prepare_many([(k, b, variable_length) for k, b in pairs]))

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
                    b.ticks.write(it.times, it.arrays, seq=seq)
                else:
                    self._apply_write(b, it.times, it.arrays)
                buckets.append(b)
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
                for year, _, _ in _year_spans(it.times):
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
        for year, a, z in _year_spans(times):
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
            for year, a, z in _year_spans(secs):
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
        wal.append({"op": "commit", "key": b.key.item_key, "direct": seq})
        wal.sync()

    def _announce(self, op: Any, key: str, **detail: Any) -> None:
        """Tell commit listeners (cheap when there are none); the caller holds the write lock."""
        seq = self.commits.next_seq()
        if self.commits:
            self.commits.emit(CommitEvent(op, key, seq, **detail))
        # Checkpoint a large log only now, after the listeners: a change they may not have heard
        # of (a crash before this line) is then always after the checkpoint, so replay reports it.
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
        run = _run_start(yf, secs)
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
            return apply() if apply is not None else self._apply(meta, list(arrays), seq=seq)

    # -- applying (live and replay) -------------------------------------------------------------
    def _apply(
        self, meta: dict[str, Any], arrays: list[np.ndarray], seq: int | None = None, replay: bool = False
    ) -> Any:
        """Apply one logged operation. ``seq`` is its WAL sequence number (``None`` with
        ``wal_bypass``): tick buckets record it, so a ``replay`` never applies a record twice."""
        op = meta["op"]
        k = parse_key(meta["key"])
        with self._apply_lock:
            if op == "create":
                if self._bucket(k) is None:
                    schema = tuple((str(n), str(t)) for n, t in meta["columns"])
                    write_bucket_meta(self.root.joinpath(*k.parts), k, schema, meta.get("record_type", "fixed"))
                    self._created()
                return None
            if op == "destroy":
                self._apply_destroy(k)
                return None
            b = self._bucket(k)
            if b is None:
                raise BucketNotFoundError(f"no bucket {k.item_key!r}")
            if b.ticks is not None:  # a tick bucket: its own storage (tick_file.py)
                if op == "write":
                    return b.ticks.write(arrays[0], arrays[1:], seq=seq, replay=replay)
                if op == "delete":
                    return b.ticks.delete(meta.get("start_ns"), meta.get("end_ns"), seq=seq, replay=replay)
            elif op == "write":
                self._apply_write(b, arrays[0], arrays[1:])
                return None
            elif op == "delete":
                return self._apply_delete(b, meta["start"], meta["end"])
        raise MktsError(f"unknown WAL operation {op!r}")

    def _apply_fixed(self, b: Bucket, secs: np.ndarray, arrays: list[np.ndarray]) -> None:
        """Apply a live write to a fixed bucket that the caller resolved under the write lock (so
        no destroy can have intervened): what :meth:`_apply` does for it, without the lookups."""
        with self._apply_lock:
            self._apply_write(b, secs, arrays)

    def _replay_direct(
        self, k: TimeBucketKey, ranges: list[list[int]], seq: int, committed: bool
    ) -> tuple[str, str, int | None, int | None] | None:
        """Replay of a ``direct`` record (see :meth:`_write_direct`). Committed: its rows are durable in
        the year files; widen the watermarks over them again (their update may not have reached the
        disk) and report the change. Not committed: it was never acknowledged and may be torn, so
        clear its slots. A missing bucket or year file: nothing of it was written."""
        b = self._bucket(k)
        spans = []
        with self._apply_lock:
            for year, s0, s1 in ranges if b is not None else ():
                yf = b.year_file(int(year))  # type: ignore[union-attr]
                if yf is None:
                    continue
                if committed:
                    yf.publish(int(s0), int(s1))
                else:
                    yf.clear(int(s0), int(s1))
                spans.append((yf.year_start + int(s0) * yf.timeframe, yf.year_start + (int(s1) - 1) * yf.timeframe))
        if not committed:
            msg = f"WAL record {seq}: unacknowledged direct write to {k.item_key} {ranges} rolled back"
            log.warning(msg)
            self.recovery.rolled_back.append(msg)
            return None
        if not spans:
            return None
        return "write", k.item_key, min(s for s, _ in spans) * NS, max(e for _, e in spans) * NS

    def _apply_write(self, b: Bucket, secs: np.ndarray, arrays: list[np.ndarray]) -> None:
        yf = b.last_written
        if yf is not None:  # appends land in the same year file again: no calendar maths
            self.open_files.touch(yf)
            run = _run_start(yf, secs)
            if run is not None:
                yf.write_run(run, secs.shape[0], arrays)
                return
            if yf.year_start <= int(secs[0]) and int(secs[-1]) < yf.year_end:
                yf.write((secs - yf.year_start) // b.timeframe, dict(zip(b.names, arrays, strict=True)))
                return
        for year, a, z in _year_spans(secs):
            if (
                b.open_year(year) is None
                and self.open_files.full
                and year in b.years()
                and year_io.write_run(b.dir / f"{year}.bin", secs[a:z], b.names, [arr[a:z] for arr in arrays])
            ):  # appended by position: no file closed to make room for this one
                self._closed_dirty.add(b.dir / f"{year}.bin")
                continue
            yf = b.year_file(year, create=True)
            assert yf is not None
            slots = (secs[a:z] - yf.year_start) // b.timeframe
            yf.write(slots, {name: arr[a:z] for name, arr in zip(b.names, arrays, strict=True)})
            b.last_written = yf

    def _apply_delete(self, b: Bucket, start: int | None, end: int | None) -> int:
        removed = 0
        for year in b.year_range(start, end):
            yf = b.year_file(year)
            if yf is None:
                continue
            s0 = 0 if start is None else max(0, yf.slot_of(start))
            s1 = yf.nslots if end is None else min(yf.nslots, yf.slot_of(end) + 1)
            removed += yf.delete(s0, s1)
        return removed

    def _apply_destroy(self, k: TimeBucketKey) -> None:
        b = self._buckets.pop(k, None)
        self._bucket_drops += 1
        if b is not None:
            b.close()
        directory = self.root.joinpath(*k.parts)
        target = None
        if directory.exists():
            trash = self._meta_dir / "trash"
            trash.mkdir(exist_ok=True)
            target = trash / uuid.uuid4().hex
            os.replace(directory, target)  # atomic: the bucket is gone or intact, never half-deleted
            assert self._generation is not None
            self._generation.bump()  # read-only processes drop what they cached of it
        # Also when replaying a destroy that a crash interrupted after the move: no empty parents left.
        for parent in (directory.parent, directory.parent.parent):
            try:
                parent.rmdir()  # only if now empty
            except FileNotFoundError:
                continue
            except OSError:
                break
        fsync_dir(self.root)
        if target is not None:
            shutil.rmtree(target, ignore_errors=True)


def _run_start(yf: YearFile, secs: np.ndarray) -> int | None:
    """The first slot of ``secs`` (sorted, unique bar starts) if they are a contiguous run of bars
    inside ``yf``'s year, else ``None``."""
    first, last = int(secs[0]), int(secs[-1])
    if yf.year_start <= first and last < yf.year_end and last - first == (secs.shape[0] - 1) * yf.timeframe:
        return (first - yf.year_start) // yf.timeframe
    return None


def _int_or_none(v: int | None) -> int | None:
    return None if v is None else int(v)


def _year_spans(secs: np.ndarray) -> list[tuple[int, int, int]]:
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
