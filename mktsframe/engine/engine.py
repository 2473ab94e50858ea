"""The local storage engine: the catalog, year files and write-ahead log of one data root.

Write path (one writer lock): validate and normalise → append to the WAL → ``fdatasync``
(unless ``background_sync``) → apply to the memory-mapped year files under the apply lock.
Large durable writes into empty slots are stored once instead, in the year files, between two small
WAL records; replay rolls back one left without its commit (:meth:`Engine._write_direct`). The write
path is in :mod:`.writes`, the read path in :mod:`.reads`, log replay at open in :mod:`.recovery`
(mixins of :class:`Engine`); this module holds the lifecycle, checkpoints, the catalog and applying.
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
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mktsframe.changes import Listener
from mktsframe.engine import year_io
from mktsframe.engine.applied import AppliedMark
from mktsframe.engine.catalog import (
    Bucket,
    iter_bucket_keys,
    read_bucket_meta,
    write_bucket_meta,
)
from mktsframe.engine.commits import CommitListeners
from mktsframe.engine.cross_section import CrossSectionFiles
from mktsframe.engine.durable import fsync_dir, sync_filesystem, sync_path
from mktsframe.engine.faults import Faults
from mktsframe.engine.generation import DestroyGeneration
from mktsframe.engine.log_cursor import LogCursor
from mktsframe.engine.many import WriteQueue
from mktsframe.engine.open_files import OpenFiles
from mktsframe.engine.prefault import NextBarPrefault
from mktsframe.engine.reads import EngineReads
from mktsframe.engine.recovery import EngineRecovery
from mktsframe.engine.wal import ReplayReport, WriteAheadLog
from mktsframe.engine.writes import EngineWrites, run_start, year_spans
from mktsframe.errors import (
    BucketNotFoundError,
    LockedError,
    MktsError,
    NoSpaceError,
    ReadOnlyError,
)
from mktsframe.keys import TimeBucketKey, parse_key, parse_key_pattern
from mktsframe.records import Batch

__all__ = ["Engine"]

log = logging.getLogger("mktsframe.engine")

NS = 1_000_000_000
#: Patterns whose matching keys are remembered (until the catalog changes).
_MATCHED_MAX = 256
#: A checkpoint fdatasync's up to this many year files closed dirty one by one; more, one syncfs.
_SYNC_EACH_MAX = 16
#: A log sync faster than this (seconds) lets :meth:`Engine.writes_without_waiting` say yes.
FAST_SYNC_SECONDS = 0.002


class Engine(EngineWrites, EngineReads, EngineRecovery):
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
        #: ``(keys, drops, buckets)``: the last key list a cross-section write looked up (EngineWrites._fixed_buckets).
        self._fixed_hit: tuple[tuple[str, ...], int, list[Bucket]] | None = None
        self._last_cross_section: CrossSectionFiles | None = None
        #: Faults in the next minute's pages of a feed's cross-section writes before it arrives.
        self._prefault = NextBarPrefault()
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
        #: Checkpoints begun (counted before any file's ``dirty`` mark is cleared, so that even a
        #: checkpoint that fails half way is noticed): what a cross-section write compares to know
        #: that the files it marked dirty are still all marked.
        self._checkpoints_begun = 0
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
        #: How far this writer's records are applied (see :mod:`.applied`); ``None`` when read-only.
        self._applied: AppliedMark | None = None
        #: Records adopted from the page cache at open (not replayed): until the next checkpoint
        #: syncs the whole file system, the dirty files they left are unknown here.
        self._adopted_unsynced = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        if not self.read_only:
            self._wal = WriteAheadLog(self._meta_dir / "wal")
            self._wal.retain_bytes = max(0, int(log_retention_bytes))
            self._applied = AppliedMark(self._wal.dir)
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
        assert self._applied is not None
        self._wal.close()
        self._wal = None
        self._applied.close()
        self._applied = None
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
            if self._applied is not None:
                self._applied.close()
                self._applied = None
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
            if self._prefault.due(time.monotonic()):  # holding neither lock: it takes the apply lock in chunks
                self._prefault.populate(self._apply_lock)

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

    def listen(
        self, listener: Listener, before_checkpoint: Callable[[], None] | None = None, *, catalog_only: bool = False
    ) -> Callable[[], None]:
        """Hear every acknowledged change (the :class:`~mktsframe.changes.ChangeFeed` protocol;
        see :mod:`mktsframe.engine.commits` for the rules a listener follows), or with
        ``catalog_only`` only creates and destroys (writes then build no event for it)."""
        return self.commits.add(listener, before_checkpoint, catalog_only=catalog_only)

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
        self._checkpoints_begun += 1
        self._prefault.cleaned()
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
            one_sync = len(dirty) + len(closed_dirty) > _SYNC_EACH_MAX or self._adopted_unsynced
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
        self._adopted_unsynced = False
        if self._applied is not None:
            self._applied.checkpointed()
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

    # -- applying (live and replay) -------------------------------------------------------------
    def _mark_applied(self, seq: int | None) -> None:
        """Record ``seq`` (and every record before it) as applied: a restart on this boot after a
        process crash need not replay it (:mod:`.applied`). Not after a failed apply: that poisons."""
        if self._applied is not None and seq is not None and self.faults.poisoned is None:
            self._applied.applied(seq)

    def _ticks_changing(self) -> None:
        if self._applied is not None:
            self._applied.ticks_changing()

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
                self._ticks_changing()
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
        with self._apply_lock:
            for yf, s0, s1 in self._direct_ranges(b, ranges):
                if committed:
                    yf.publish(s0, s1)
                else:
                    yf.clear(s0, s1)
        if not committed:
            msg = f"WAL record {seq}: unacknowledged direct write to {k.item_key} {ranges} rolled back"
            log.warning(msg)
            self.recovery.rolled_back.append(msg)
            return None
        return self._direct_change(k.item_key, ranges)

    def _direct_ranges(self, b: Bucket | None, ranges: list[list[int]]) -> list[tuple[Any, int, int]]:
        """``(year file, first slot, end slot)`` of a direct record's ``ranges`` whose year file exists."""
        out = []
        for year, s0, s1 in ranges if b is not None else ():
            yf = b.year_file(int(year))  # type: ignore[union-attr]
            if yf is not None:
                out.append((yf, int(s0), int(s1)))
        return out

    def _direct_change(self, key: str, ranges: list[list[int]]) -> tuple[str, str, int | None, int | None] | None:
        """The ``ReplayReport.changes`` entry of a committed direct write (``None``: nothing of it stored)."""
        spans = [
            (yf.year_start + s0 * yf.timeframe, yf.year_start + (s1 - 1) * yf.timeframe)
            for yf, s0, s1 in self._direct_ranges(self._bucket(parse_key(key)), ranges)
        ]
        if not spans:
            return None
        return "write", key, min(s for s, _ in spans) * NS, max(e for _, e in spans) * NS

    def _apply_write(self, b: Bucket, secs: np.ndarray, arrays: list[np.ndarray]) -> None:
        yf = b.last_written
        if yf is not None:  # appends land in the same year file again: no calendar maths
            self.open_files.touch(yf)
            run = run_start(yf, secs)
            if run is not None:
                yf.write_run(run, secs.shape[0], arrays)
                return
            if yf.year_start <= int(secs[0]) and int(secs[-1]) < yf.year_end:
                yf.write((secs - yf.year_start) // b.timeframe, dict(zip(b.names, arrays, strict=True)))
                return
        for year, a, z in year_spans(secs):
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

