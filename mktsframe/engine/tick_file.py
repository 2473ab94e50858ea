"""Tick (variable-length) buckets: any number of records per interval, each at its exact nanosecond.

A tick bucket keeps one *partition file* per UTC day that holds ticks,
``root/SYMBOL/TIMEFRAME/ATTRGROUP/YYYYMMDD.tick``. Inside, rows are sorted by time, and rows with the
same timestamp stay in arrival order; times are stored as int64 **nanoseconds since the epoch, UTC**,
so they come back exactly (MarketStore packed them into 32-bit fractions of the interval and lost
precision, its issue #197). The bucket's timeframe is only a label here: it does not round anything.

Like a year file, a partition is laid out by column (a time region, then one region per column, each
``capacity`` rows, page aligned, sparse until written) so an hour of ticks is one binary search and one
slice per column. The exact layout is in ``docs/format.md``.

Crash safety, with the write-ahead log doing the durable part:

* **Appends** (ticks at or after the partition's last one, the common case) write the rows past the
  committed row count, then publish them by writing the *inactive* one of two checksummed commit slots
  (row count and the WAL sequence number of the last record applied). A kill before that leaves the
  rows invisible; a torn slot fails its checksum and the previous slot still holds. Readers never see
  half an append.
* **Late or out-of-order ticks** are merged in place from the first row after their time, then
  published the same way; checkpointed rows about to be overwritten are first saved (``fsync``'d)
  to an *undo file*, so a kill mid-merge only tears rows that recovery puts back or re-applies.
* **Deletes** move the rows after the range down, in place, the same way; a range rewritten by
  delete + write therefore reuses its space (MarketStore appended rewritten interval blobs at the
  end of the file and never reclaimed the old ones).
* **Growth past the capacity** is a copy of the partition into a file twice as large, ``fsync``'d
  and renamed over the old one.
* **Replay never duplicates**: each partition records the sequence number of the last WAL record it
  holds, and replay skips records already there. A slot also keeps the *durable* state (as of the
  last checkpoint, after ``msync``); when recovery first opens a partition it restores that state
  (with the undo file's rows), so the records after it are re-applied exactly once even if the machine lost pages.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import crc32c
import numpy as np

from mktsframe.dtypes import Schema, dtype_of
from mktsframe.engine import durable as disk
from mktsframe.engine.durable import fsync_dir, write_atomic
from mktsframe.engine.listing import NumberedFiles
from mktsframe.engine.mapping import FileMap, map_file
from mktsframe.engine.open_files import OpenFiles
from mktsframe.engine.space import no_space, reserve
from mktsframe.errors import CorruptFileError, NoSpaceError

__all__ = ["DAY_NS", "TickPartition", "TickStore", "sort_ticks"]

log = logging.getLogger("mktsframe.engine.ticks")

MAGIC = b"MKTSTICK"
FORMAT_VERSION = 1
PAGE = 4096
DAY_NS = 86_400 * 1_000_000_000
SUFFIX = ".tick"
#: magic, version, header_size, meta_len, meta_crc32 (zlib)
_HEAD = struct.Struct("<8sIIII")
#: gen, nrows, seq, durable_nrows, durable_seq, then a CRC-32C of those 40 bytes
_SLOT = struct.Struct("<QqQqQ")
_SLOT_SIZE = 48
_SLOT_OFFSETS = (64, 112)
_META_OFFSET = 160
UNDO_SUFFIX = ".undo"
UNDO_MAGIC = b"MKTSUNDO"
#: magic, durable_nrows, durable_seq, first saved row, rows saved; then the rows by column, CRC-32C
_UNDO = struct.Struct("<8sQQQQ")
MIN_CAPACITY = 1024
#: A reservation also covers this many rows past its end if the disk has room (see TickPartition.reserve).
_RESERVE_AHEAD = 4096


def _round_up(n: int, to: int = PAGE) -> int:
    return (n + to - 1) // to * to


def _capacity_for(rows: int) -> int:
    return max(MIN_CAPACITY, 1 << max(0, int(rows - 1).bit_length()))


def sort_ticks(ns: np.ndarray, arrays: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Rows ordered by time; rows with equal timestamps keep their order (a stable sort)."""
    if ns.size > 1 and not (ns[1:] >= ns[:-1]).all():
        order = np.argsort(ns, kind="stable")
        return ns[order], [a[order] for a in arrays]
    return ns, arrays


def day_name(day: int) -> str:
    """``YYYYMMDD`` of a day number (days since 1970-01-01, UTC)."""
    return str(np.datetime64(day, "D")).replace("-", "")


def _day_of_name(name: str) -> int | None:
    """The day number of a partition file name ``YYYYMMDD.tick``; ``None`` for other names."""
    stem = name[: -len(SUFFIX)]
    if not name.endswith(SUFFIX) or len(stem) != 8 or not stem.isdigit():
        return None
    try:
        return int(np.datetime64(f"{stem[:4]}-{stem[4:6]}-{stem[6:]}", "D").astype(np.int64))
    except ValueError:
        return None


@dataclass(slots=True)
class _State:
    gen: int
    nrows: int
    seq: int
    durable_nrows: int
    durable_seq: int


class TickPartition:
    """One day of one tick bucket, memory-mapped. Not thread-safe: the engine serialises access."""

    def __init__(self, path: Path, meta: dict[str, Any], state: _State, mm: FileMap, writable: bool) -> None:
        self.path = path
        self.meta = meta
        self.day: int = meta["day"]
        self.capacity: int = meta["capacity"]
        self.schema: Schema = tuple((c["name"], c["type"]) for c in meta["columns"])
        self.state = state
        self.writable = writable
        self.dirty = False
        self._undo: list[np.ndarray] | None = None  # durable rows saved before an in-place overwrite
        self._undo_lo: int | None = None  # ... from this row to durable_nrows
        self._mm = mm
        self.ns = np.ndarray((self.capacity,), np.int64, buffer=mm.buffer, offset=meta["ns_offset"])
        self.columns: dict[str, np.ndarray] = {
            c["name"]: np.ndarray((self.capacity,), dtype_of(c["type"]), buffer=mm.buffer, offset=c["offset"])
            for c in meta["columns"]
        }
        self.reserved_to = state.nrows  # rows below this have disk blocks (see reserve)

    # -- creation and opening -------------------------------------------------------------------
    @staticmethod
    def _meta(key: str, day: int, schema: Schema, capacity: int) -> tuple[dict[str, Any], int, int]:
        meta: dict[str, Any] = {
            "format": "mktsframe-tick",
            "version": FORMAT_VERSION,
            "key": key,
            "record_type": "variable",
            "day": day,
            "day_start_ns": day * DAY_NS,
            "capacity": capacity,
            "columns": [{"name": n, "type": t} for n, t in schema],
        }
        header_size = _round_up(_META_OFFSET + len(json.dumps(meta).encode()) + 64 * (len(schema) + 2))
        pos = header_size
        meta["ns_offset"] = pos
        pos += _round_up(capacity * 8)
        for col, (_, t) in zip(meta["columns"], schema, strict=True):
            col["offset"] = pos
            pos += _round_up(capacity * dtype_of(t).itemsize)
        meta["file_size"] = pos
        return meta, header_size, pos

    @classmethod
    def write_new(
        cls,
        path: Path,
        key: str,
        day: int,
        schema: Schema,
        ns: np.ndarray,
        columns: list[np.ndarray],
        seq: int,
        *,
        from_log: bool = False,
    ) -> TickPartition:
        """Write a whole partition to a temporary file, ``fsync`` it and rename it into place.

        Used when a partition outgrows its capacity: the old file stays intact until the new one is
        complete and durable (it holds rows from before the last checkpoint, which the log can no
        longer restore). ``from_log``: every row comes from log records after the checkpoint (a new
        partition), so only the empty file is made durable; the rows follow through the page cache
        with a durable state of zero rows, and recovery re-applies them from the log if need be.
        """
        n = int(ns.size)
        meta, header_size, size = cls._meta(key, day, schema, _capacity_for(n))
        blob = json.dumps(meta, separators=(",", ":")).encode()
        header = bytearray(header_size)
        _HEAD.pack_into(header, 0, MAGIC, FORMAT_VERSION, header_size, len(blob), zlib.crc32(blob))
        state = _State(1, 0, 0, 0, 0) if from_log else _State(1, n, seq, n, seq)
        _pack_slot(header, _SLOT_OFFSETS[1], state)
        header[_META_OFFSET : _META_OFFSET + len(blob)] = blob
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        rows: list[tuple[int, np.ndarray]] = []
        if n:
            rows.append((meta["ns_offset"], ns))
            rows += [(col["offset"], arr) for col, arr in zip(meta["columns"], columns, strict=True)]
        try:
            os.ftruncate(fd, size)
            _pwrite_all(fd, [(0, np.frombuffer(bytes(header), np.uint8)), *([] if from_log else rows)])
            disk.fsync(fd, f"fsync({tmp})")
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)
        path.with_suffix(UNDO_SUFFIX).unlink(missing_ok=True)  # it restored the replaced file
        if from_log:  # pwrite fills fresh pages faster than faults through the mapping
            fd = os.open(path, os.O_WRONLY)
            try:
                _pwrite_all(fd, rows)
            finally:
                os.close(fd)
        p = cls.open(path, writable=True)
        p.reserved_to = n  # written by pwrite above: they have their blocks
        if from_log:
            p._commit(_State(0, n, seq, 0, 0))
        return p

    @classmethod
    def open(cls, path: Path, *, writable: bool) -> TickPartition:
        """Open and validate a partition file (header checksum, commit slots, size)."""
        fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        try:
            head = os.pread(fd, PAGE, 0)
            if len(head) < _META_OFFSET or head[:8] != MAGIC:
                raise CorruptFileError(f"{path}: not a mktsframe tick file (bad magic number)")
            _, version, header_size, meta_len, crc = _HEAD.unpack_from(head)
            if version != FORMAT_VERSION:
                raise CorruptFileError(f"{path}: unsupported tick format version {version}")
            if not (_META_OFFSET + meta_len <= header_size <= (1 << 20)):
                raise CorruptFileError(f"{path}: corrupt header (header size {header_size}, metadata {meta_len})")
            blob = os.pread(fd, meta_len, _META_OFFSET)
            if len(blob) != meta_len or zlib.crc32(blob) != crc:
                raise CorruptFileError(f"{path}: header checksum mismatch; the file is corrupt and will not be served")
            meta = json.loads(blob)
            size = os.fstat(fd).st_size
            if size < meta["file_size"]:
                raise CorruptFileError(f"{path}: truncated ({size} bytes, header says {meta['file_size']})")
            state = _read_slots(head, path)
            if not (0 <= state.nrows <= meta["capacity"] and 0 <= state.durable_nrows <= meta["capacity"]):
                raise CorruptFileError(f"{path}: commit slot holds an impossible row count {state.nrows}")
            mm = map_file(fd, meta["file_size"], writable=writable)
        finally:
            os.close(fd)  # the map holds no descriptor (see mktsframe.engine.mapping)
        return cls(path, meta, state, mm, writable)

    #: Set by the owning store when the log is synced in the background: a partition is then only
    #: made durable by a checkpoint (which syncs the log first), so it stays open while dirty.
    hold_while_dirty = False

    def evicted(self) -> None:
        """Closed to make room in the engine's open-file set; the owning :class:`TickStore` replaces this."""
        self.close()

    def close(self) -> None:
        self.ns = None  # type: ignore[assignment]
        self.columns = {}
        self._mm.close()  # unmapped now, or by the GC once a view still referenced goes

    # -- state ----------------------------------------------------------------------------------
    @property
    def nrows(self) -> int:
        return self.state.nrows

    @property
    def seq(self) -> int:
        """Sequence number of the last WAL record whose effects this partition holds (0: none)."""
        return self.state.seq

    def _commit(self, state: _State) -> None:
        """Publish ``state`` in the inactive slot: one small store, checksummed, so a kill either
        leaves the previous slot in force or the new one complete."""
        state.gen = self.state.gen + 1
        _pack_slot(self._mm.buffer, _SLOT_OFFSETS[state.gen % 2], state)
        self.state = state
        self.dirty = True

    @property
    def undo_path(self) -> Path:
        """``YYYYMMDD.undo``: durable rows overwritten in place since the last checkpoint."""
        return self.path.with_suffix(UNDO_SUFFIX)

    def roll_back_to_durable(self) -> bool:
        """Restore the state of the last checkpoint: put back durable rows that late ticks
        overwrote (from the undo file) and forget rows published since (recovery re-applies them)."""
        s = self.state
        undo = _read_undo(self.undo_path, self.schema)
        if undo is not None and undo[:2] == (s.durable_nrows, s.durable_seq):
            lo, arrays = undo[2], undo[3]
            self.ns[lo : s.durable_nrows] = arrays[0]
            for (name, _), arr in zip(self.schema, arrays[1:], strict=True):
                self.columns[name][lo : s.durable_nrows] = arr
            self._undo, self._undo_lo = [a.copy() for a in arrays], lo  # still the durable rows
            self.dirty = True
        elif s.nrows == s.durable_nrows and s.seq == s.durable_seq:
            return False
        self._commit(_State(0, s.durable_nrows, s.durable_seq, s.durable_nrows, s.durable_seq))
        return True

    def _save_undo(self, lo: int) -> None:
        """Before rows ``lo…`` are overwritten in place, make sure the durable ones among them are
        saved (``fsync``'d) so recovery can put them back; each row is saved once per checkpoint."""
        d = self.state.durable_nrows
        hi = d if self._undo_lo is None else self._undo_lo
        if lo >= hi:
            return
        saved = [self.ns[lo:hi].copy(), *(self.columns[n][lo:hi].copy() for n, _ in self.schema)]
        if self._undo is not None:
            saved = [np.concatenate([a, b]) for a, b in zip(saved, self._undo, strict=True)]
        head = _UNDO.pack(UNDO_MAGIC, d, self.state.durable_seq, lo, d - lo)
        body = b"".join(memoryview(np.ascontiguousarray(a)).cast("B") for a in saved)
        write_atomic(self.undo_path, head + body + struct.pack("<I", crc32c.crc32c(body, value=crc32c.crc32c(head))))
        self._undo, self._undo_lo = saved, lo

    def checkpoint(self) -> None:
        """``msync`` the rows, then record the published state as durable (and ``msync`` that)."""
        if not self.dirty:
            return
        disk.msync(self._mm, what=f"msync({self.path})")
        s = self.state
        if s.durable_nrows != s.nrows or s.durable_seq != s.seq:
            self._commit(_State(0, s.nrows, s.seq, s.nrows, s.seq))
            disk.msync(self._mm, 0, PAGE, what=f"msync({self.path})")
        self.dirty = False
        self.undo_path.unlink(missing_ok=True)  # stale once the state it restores is superseded
        self._undo = self._undo_lo = None

    # -- rows -----------------------------------------------------------------------------------
    def reserve(self, lo: int, hi: int) -> None:
        """Give rows ``[lo, hi)`` disk blocks in every region before they are stored through the
        mapping (see :mod:`.space`; raises :class:`~mktsframe.errors.NoSpaceError`). Rows below the
        highest reserved or stored so far have blocks already: appends reserve only the new rows."""
        lo = max(lo, self.reserved_to)
        if hi <= lo:
            return
        ahead = min(self.capacity, hi + max(_RESERVE_AHEAD, hi - lo))  # appends: one call per this many rows
        fd = os.open(self.path, os.O_RDWR)
        try:
            try:
                reserve(fd, self._row_ranges(lo, ahead), self.path)
                hi = ahead
            except NoSpaceError:
                reserve(fd, self._row_ranges(lo, hi), self.path)
        finally:
            os.close(fd)
        self.reserved_to = hi

    def _row_ranges(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """``(offset, nbytes)`` of rows ``[lo, hi)`` in the time region and in each column."""
        cols = self.meta["columns"]
        sizes = [(self.meta["ns_offset"], 8), *((c["offset"], dtype_of(c["type"]).itemsize) for c in cols)]
        return [(off + lo * size, (hi - lo) * size) for off, size in sizes]

    def store_tail(self, lo: int, ns: np.ndarray, columns: list[np.ndarray], seq: int | None) -> None:
        """Replace rows ``[lo, nrows)`` with the given rows (as many or more, or fewer for a delete)
        and publish them (caller checks the capacity). ``lo == nrows`` is a plain append; durable
        rows about to be overwritten are saved to the undo file first."""
        k = int(ns.size)
        self.reserve(lo, lo + k)
        self._save_undo(lo)
        self.ns[lo : lo + k] = ns
        for (name, _), arr in zip(self.schema, columns, strict=True):
            self.columns[name][lo : lo + k] = arr
        s = self.state
        self._commit(_State(0, lo + k, s.seq if seq is None else seq, s.durable_nrows, s.durable_seq))
        if seq is not None and seq <= s.durable_seq:
            # The log's numbering went backwards (its checkpoint file was lost): replay would skip this
            # record as already applied, so make the partition durable at this number now.
            log.warning(
                "%s: WAL sequence %d is not above the partition's %d; checkpointing it", self.path, seq, s.durable_seq
            )
            self.checkpoint()

    def tail_start(self, first_ns: int, k: int) -> int | None:
        """Where rows from ``first_ns`` on are merged in place (the first stored row after it), or
        ``None`` when the capacity does not suffice (then the partition is copied). Appends, the
        common case, start at ``nrows``."""
        n = self.state.nrows
        if n + k > self.capacity:
            return None
        if n == 0 or first_ns >= int(self.ns[n - 1]):
            return n
        return int(np.searchsorted(self.ns[:n], first_ns, side="right"))

    def rows(self, lo: int, hi: int, names: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Copies of rows ``[lo, hi)``: the time column and the columns named."""
        return self.ns[lo:hi].copy(), {n: self.columns[n][lo:hi].copy() for n in names}

    def search(self, start: int | None, end: int | None) -> tuple[int, int]:
        """Row range ``[lo, hi)`` with ``start <= t <= end`` (ns, both inclusive; ``None``: open)."""
        n = self.state.nrows
        ns = self.ns[:n]
        lo = 0 if start is None else int(np.searchsorted(ns, start, side="left"))
        hi = n if end is None else int(np.searchsorted(ns, end, side="right"))
        return lo, max(lo, hi)

    def disk_usage(self) -> int:
        return os.stat(self.path).st_blocks * 512


def _pwrite_all(fd: int, parts: list[tuple[int, np.ndarray]]) -> None:
    for off, arr in parts:
        buf = memoryview(np.ascontiguousarray(arr)).cast("B")
        done = 0
        while done < len(buf):
            done += os.pwrite(fd, buf[done:], off + done)


def _read_undo(path: Path, schema: Schema) -> tuple[int, int, int, list[np.ndarray]] | None:
    """``(durable_nrows, durable_seq, first row, [ns, *columns])`` of an intact undo file, else ``None``."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    if len(raw) < _UNDO.size + 4:
        return None
    magic, d, dseq, lo, n = _UNDO.unpack_from(raw)
    body = memoryview(raw)[_UNDO.size : -4]
    (crc,) = struct.unpack_from("<I", raw, len(raw) - 4)
    dtypes = [np.dtype(np.int64), *(dtype_of(t) for _, t in schema)]
    if magic != UNDO_MAGIC or crc32c.crc32c(body, value=crc32c.crc32c(raw[: _UNDO.size])) != crc:
        return None
    if n != d - lo or len(body) != n * sum(dt.itemsize for dt in dtypes):
        return None
    arrays, pos = [], 0
    for dt in dtypes:
        arrays.append(np.frombuffer(body, dt, n, pos))
        pos += n * dt.itemsize
    return d, dseq, lo, arrays


def _pack_slot(buf: Any, offset: int, s: _State) -> None:
    body = _SLOT.pack(s.gen, s.nrows, s.seq, s.durable_nrows, s.durable_seq)
    buf[offset : offset + _SLOT_SIZE] = body + struct.pack("<II", crc32c.crc32c(body), 0)


def _read_slots(head: bytes, path: Path) -> _State:
    best: _State | None = None
    for off in _SLOT_OFFSETS:
        body = head[off : off + _SLOT.size]
        (crc,) = struct.unpack_from("<I", head, off + _SLOT.size)
        if crc32c.crc32c(body) != crc:
            continue
        s = _State(*_SLOT.unpack(body))
        if s.gen and (best is None or s.gen > best.gen):
            best = s
    if best is None:
        raise CorruptFileError(f"{path}: no valid commit slot; the file is corrupt and will not be served")
    return best


class TickStore:
    """The partitions of one tick bucket: writes, deletes and reads by nanosecond range.

    The writer process keeps partitions open, within the engine's bounded set of open files
    (:class:`~mktsframe.engine.open_files.OpenFiles`: a partition closed to make room is checkpointed
    first, so its durable state never lags what the log has forgotten); a read-only process opens
    them per query (a writer in another process replaces a partition by renaming, which an open
    mapping would not see).
    """

    def __init__(
        self,
        directory: Path,
        key: str,
        schema: Schema,
        writable: bool,
        files: OpenFiles | None = None,
        *,
        hold_while_dirty: bool = False,
    ) -> None:
        self.dir = directory
        self.key = key
        self.schema = schema
        self.names = [n for n, _ in schema]
        self.writable = writable
        self.files = files if files is not None else OpenFiles()
        self._hold_while_dirty = hold_while_dirty
        self._open: dict[int, TickPartition] = {}
        self._days = NumberedFiles(directory, _day_of_name, owner=writable)
        if writable:  # temporary files of a rewrite that a crash interrupted
            for tmp in directory.glob(f".*{SUFFIX}.*.tmp"):
                tmp.unlink(missing_ok=True)

    # -- catalog --------------------------------------------------------------------------------
    def days(self) -> list[int]:
        """Days (since 1970-01-01 UTC) that have a partition file, ascending."""
        return self._days.get()

    def _path(self, day: int) -> Path:
        return self.dir / f"{day_name(day)}{SUFFIX}"

    def _partition(self, day: int, *, recovering: bool = False) -> TickPartition | None:
        p = self._open.get(day)
        if p is not None:
            self.files.touch(p)
            return p
        path = self._path(day)
        if self.writable:
            self.files.reserve()
        try:
            p = TickPartition.open(path, writable=self.writable)
        except FileNotFoundError:
            return None
        if p.schema != self.schema:
            p.close()
            raise CorruptFileError(f"{path}: header schema disagrees with the bucket's")
        if self.writable:
            if recovering:
                p.roll_back_to_durable()
            self._keep(day, p)
        return p

    def _keep(self, day: int, p: TickPartition) -> None:
        self._open[day] = p
        p.hold_while_dirty = self._hold_while_dirty
        p.evicted = functools.partial(self._evict_day, day)  # type: ignore[method-assign]
        self.files.add(p)

    def _evict_day(self, day: int) -> None:
        """Called by :class:`OpenFiles` (under the apply lock) when day ``day``'s partition is closed to make room."""
        p = self._open.pop(day, None)
        if p is not None:
            p.checkpoint()  # durable now (the log is synced: see hold_while_dirty), as the log may drop its records
            p.close()

    def _release(self, p: TickPartition) -> None:
        if not self.writable:
            p.close()

    def _replace(
        self, day: int, ns: np.ndarray, columns: list[np.ndarray], seq: int, *, from_log: bool = False
    ) -> None:
        old = self._open.pop(day, None)
        path = self._path(day)
        if ns.size == 0:
            path.unlink(missing_ok=True)
            path.with_suffix(UNDO_SUFFIX).unlink(missing_ok=True)
            fsync_dir(self.dir)
            p = None
        else:
            self.files.reserve()
            p = TickPartition.write_new(path, self.key, day, self.schema, ns, columns, seq, from_log=from_log)
        if old is not None:
            self.files.discard(old)
            old.close()
        if p is not None:
            self._keep(day, p)
        self._days.invalidate()

    # -- writing --------------------------------------------------------------------------------
    def write(self, ns: np.ndarray, columns: list[np.ndarray], *, seq: int | None, replay: bool = False) -> None:
        """Add ticks (``ns`` sorted, stable); rows at equal times go after the ones stored.

        ``seq`` is the WAL record's sequence number; during ``replay`` a partition that already holds
        it (or a later record) is left alone, which is what makes replay exact.
        """
        if ns.size == 0:
            return
        first_day, last_day = int(ns[0]) // DAY_NS, int(ns[-1]) // DAY_NS
        if first_day == last_day:
            groups = [(first_day, 0, ns.size)]
        else:
            cuts = np.searchsorted(ns, np.arange(first_day + 1, last_day + 1, dtype=np.int64) * DAY_NS).tolist()
            edges = [0, *cuts, ns.size]
            groups = [(first_day + i, edges[i], edges[i + 1]) for i in range(len(edges) - 1) if edges[i + 1] > edges[i]]
        for day, a, z in groups:
            part_ns = ns[a:z]
            part_cols = [c[a:z] for c in columns]
            p = self._partition(day, recovering=replay)
            if p is not None and replay and seq is not None and seq <= p.seq:
                continue  # already applied before the crash
            new_seq = seq if seq is not None else (p.seq if p is not None else 0)
            if p is None:
                self._replace(day, part_ns, part_cols, new_seq, from_log=seq is not None)
            elif (lo := p.tail_start(int(part_ns[0]), part_ns.size)) is not None:  # append, or late ticks
                if lo < p.nrows:  # into rows published since the last checkpoint
                    part_ns, part_cols = _merge(p, part_ns, part_cols, self.names, lo)
                p.store_tail(lo, part_ns, part_cols, seq)
            else:
                self._replace(day, *_merge(p, part_ns, part_cols, self.names), new_seq)

    def reserve(self, ns: np.ndarray) -> None:
        """Before a write of ticks ``ns`` (sorted) is logged: reserve the rows it will append to
        existing partitions that have room (:meth:`TickPartition.reserve`), so a full disk refuses it
        with nothing logged. A day that needs a new or larger partition file (written by ``pwrite``
        after the record is logged) is checked against the file system's free space instead: a
        refusal then too comes before logging, unless another process takes the space meanwhile."""
        first_day, last_day = int(ns[0]) // DAY_NS, int(ns[-1]) // DAY_NS
        p = self._open.get(first_day) if first_day == last_day else None
        if p is not None and p.nrows + ns.size <= min(p.capacity, p.reserved_to):
            return  # the common append: into rows reserved already
        edges = np.searchsorted(ns, np.arange(first_day, last_day + 2, dtype=np.int64) * DAY_NS).tolist()
        row_bytes = 8 + sum(dtype_of(t).itemsize for _, t in self.schema)
        copied = 0  # bytes of new or larger partition files this write will need
        for day in range(first_day, last_day + 1) if last_day - first_day < 366 else ():
            k = edges[day - first_day + 1] - edges[day - first_day]
            p = self._partition(day) if k else None
            if p is not None and p.nrows + k <= p.capacity:
                p.reserve(p.nrows, p.nrows + k)
            elif k:
                copied += ((p.nrows if p is not None else 0) + k) * row_bytes + (len(self.schema) + 3) * PAGE
        if copied:
            st = os.statvfs(self.dir)
            if st.f_bavail * st.f_frsize < copied:
                raise no_space(self.dir, f"a tick partition file of ~{copied} bytes is needed")

    def delete(self, start: int | None, end: int | None, *, seq: int | None, replay: bool = False) -> int:
        """Remove ticks with ``start <= t <= end`` (ns, inclusive); returns how many."""
        removed = 0
        for day in self._days_between(start, end):
            p = self._partition(day, recovering=replay)
            if p is None:
                continue
            if replay and seq is not None and seq <= p.seq:
                continue
            lo, hi = p.search(start, end)
            if hi <= lo:
                continue
            n = p.nrows
            removed += hi - lo
            if hi - lo == n:  # the day is empty now
                self._replace(day, np.empty(0, np.int64), [], seq if seq is not None else p.seq)
            else:  # in place: the rows after the range move down (saved to the undo file first)
                p.store_tail(lo, p.ns[hi:n].copy(), [p.columns[name][hi:n].copy() for name in self.names], seq)
        return removed

    def checkpoint(self) -> None:
        for p in self._open.values():
            p.checkpoint()

    def close(self) -> None:
        for p in self._open.values():
            self.files.discard(p)
            p.close()
        self._open.clear()

    # -- reading --------------------------------------------------------------------------------
    def _days_between(self, start: int | None, end: int | None) -> list[int]:
        days = self.days()
        if start is not None:
            days = [d for d in days if d >= start // DAY_NS]
        if end is not None:
            days = [d for d in days if d <= end // DAY_NS]
        return days

    def query(
        self,
        start: int | None,
        end: int | None,
        names: list[str],
        limit: int | None,
        from_start: bool,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Ticks with ``start <= t <= end`` (ns, inclusive), ascending; ``limit`` keeps the first or
        last N of them."""
        days = self._days_between(start, end) if limit != 0 else []
        if limit is not None and not from_start:
            days = days[::-1]
        pieces: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
        remaining = limit
        for day in days:
            p = self._partition(day)
            if p is None:
                continue
            try:
                lo, hi = p.search(start, end)
                if remaining is not None:
                    if from_start:
                        hi = min(hi, lo + remaining)
                    else:
                        lo = max(lo, hi - remaining)
                if hi > lo:
                    pieces.append(p.rows(lo, hi, names))
            finally:
                self._release(p)
            if remaining is not None:
                remaining -= hi - lo
                if remaining <= 0:
                    break
        if limit is not None and not from_start:
            pieces.reverse()
        if len(pieces) == 1:
            return pieces[0]
        dtypes = dict(self.schema)
        ns = np.concatenate([x[0] for x in pieces]) if pieces else np.empty(0, np.int64)
        cols = {
            n: np.concatenate([x[1][n] for x in pieces]) if pieces else np.empty(0, dtype_of(dtypes[n])) for n in names
        }
        return ns, cols

    def summary(self) -> tuple[int, int | None, int | None, int, list[int]]:
        """``(rows, first ns, last ns, bytes on disk, years)`` over every partition."""
        rows, first, last, disk = 0, None, None, 0
        years: set[int] = set()
        for day in self.days():
            p = self._partition(day)
            if p is None:
                continue
            try:
                n = p.nrows
                if n:
                    rows += n
                    first = int(p.ns[0]) if first is None else first
                    last = int(p.ns[n - 1])
                    years.add(int(np.datetime64(day, "D").astype("M8[Y]").astype(np.int64)) + 1970)
                disk += p.disk_usage()
            finally:
                self._release(p)
        return rows, first, last, disk, sorted(years)


def _merge(
    p: TickPartition, ns: np.ndarray, columns: list[np.ndarray], names: list[str], lo: int = 0
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The partition's rows from ``lo`` on with ``ns``/``columns`` merged in by time; at equal times
    the stored rows (which arrived earlier) come first, each side keeping its own order."""
    n, k = p.nrows - lo, ns.size
    old_ns = p.ns[lo : p.nrows]
    pos = np.searchsorted(old_ns, ns, side="right") + np.arange(k)
    is_new = np.zeros(n + k, bool)
    is_new[pos] = True
    out_ns = np.empty(n + k, np.int64)
    out_ns[is_new] = ns
    out_ns[~is_new] = old_ns
    out_cols = []
    for name, new in zip(names, columns, strict=True):
        old = p.columns[name][lo : p.nrows]
        col = np.empty(n + k, old.dtype)
        col[is_new] = new
        col[~is_new] = old
        out_cols.append(col)
    return out_ns, out_cols
