"""The write-ahead log: every change is appended here and made durable before it is applied.

Layout under ``root/.mkts/wal/``: segment files named by the sequence number of their first
record (``00000000000000000001.wal``) and a ``checkpoint`` file holding the highest sequence
number whose effects are durable in the year files.

Each record is one frame::

    magic b"MKW1" | u32 meta_len | u32 data_len | u64 seq | u32 crc32c | meta | data

``meta`` is a msgpack map describing the operation; ``data`` is the raw bytes of its arrays
(large ones written with ``pwritev``, never copied into the frame). The CRC-32C covers the header
fields, ``meta`` and ``data``, so a torn or corrupted record is detected and never replayed; replay
then resynchronises on the next valid frame, so one bad record does not cost the ones after it
(MarketStore either refused to start, #165, or moved the whole log aside).

Segments are preallocated (``posix_fallocate``, ``PREALLOCATE`` bytes at a time) and records are
written in place at the end of the log, so the file's size does not change with every record:
``fdatasync`` of an append that grows the file also commits the size to the file-system journal,
which on ext4 made a durable 1-row write ~35 % slower. The unused rest of a segment reads as
zeros; replay ends cleanly at an all-zero tail, and bytes that are neither a valid frame nor part
of that zero tail are reported as torn or corrupt, exactly as before.

Records at or below the checkpoint are never applied again, and every operation the engine logs
is idempotent (fixed-slot writes, range deletes, destroys), so a crash during replay is harmless.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import crc32c
import msgpack
import numpy as np

from mktsframe.engine.durable import fdatasync, fsync_dir, start_writeback, write_atomic

__all__ = ["Damage", "Record", "ReplayReport", "WriteAheadLog", "scan_segment"]

log = logging.getLogger("mktsframe.wal")

MAGIC = b"MKW1"
_HEAD = struct.Struct("<4sIIQI")  # magic, meta_len, data_len, seq, crc
_HEAD_NO_CRC = struct.Struct("<4sIIQ")
_CRC = struct.Struct("<I")
_CKPT = struct.Struct("<8sQI")  # magic, seq, crc
_CKPT_MAGIC = b"MKCKPT01"
#: Upper bounds that a frame header must respect; anything larger is treated as corruption.
MAX_META = 1 << 20
MAX_DATA = 1 << 34
#: Bytes added to a segment's allocation whenever the next record does not fit in it.
PREALLOCATE = 4 << 20
#: Records with up to this many bytes of array data are assembled into one buffer and written with one ``pwrite``.
_JOIN_MAX = 4096
#: Entries kept by each of the log's small caches of packed metadata.
_CACHE_MAX = 4096
_V = TypeVar("_V")


@dataclass
class Record:
    """One replayed operation: ``meta`` as logged and the arrays it carried (copies)."""

    seq: int
    meta: dict[str, Any]
    data: memoryview

    def arrays(self) -> list[np.ndarray]:
        """Decode the arrays listed in ``meta["arrays"]`` as ``[(dtype, count), ...]``."""
        out = []
        pos = 0
        for dtype, count in self.meta.get("arrays", ()):
            dt = np.dtype(dtype)
            out.append(np.frombuffer(self.data, dt, count, pos).copy())
            pos += dt.itemsize * count
        return out


@dataclass
class ReplayReport:
    """What startup recovery found; also logged as warnings."""

    records: int = 0
    skipped_bytes: int = 0
    problems: list[str] = field(default_factory=list)
    #: Records after the checkpoint that the crashed writer had already applied on this boot, taken
    #: from the page cache instead of replayed (``records`` is then 0; see :mod:`.applied`).
    applied_before: int = 0
    #: Direct writes that were interrupted before being acknowledged, and cleared (not a problem).
    rolled_back: list[str] = field(default_factory=list)
    _changes: list[tuple[str, str, int | None, int | None]] = field(default_factory=list, repr=False)
    _deferred: Callable[[], list[tuple[str, str, int | None, int | None]]] | None = field(default=None, repr=False)

    @property
    def changes(self) -> list[tuple[str, str, int | None, int | None]]:
        """``(op, key, start_ns, end_ns)`` of every replayed (or adopted) record, in log order (times
        inclusive, UTC; ``None`` = unbounded or not a time-ranged op). These changes were
        acknowledged before the crash but commit listeners may never have heard of them (see
        ``LocalBackend.replayed_changes``)."""
        if self._deferred is not None:
            work, self._deferred = self._deferred, None
            self._changes.extend(work())
        return self._changes

    def defer_changes(self, work: Callable[[], list[tuple[str, str, int | None, int | None]]]) -> None:
        """Work out :attr:`changes` only when first asked (adopted records were not decoded)."""
        self._deferred = work


def _pwrite_all(fd: int, buf: memoryview, offset: int) -> None:
    while len(buf):
        n = os.pwrite(fd, buf, offset)
        buf, offset = buf[n:], offset + n


def _cached(cache: dict[tuple[Any, ...], _V], key: tuple[Any, ...], make: Callable[[], _V]) -> _V:
    """``cache[key]``, made by ``make()`` on a miss; emptied at ``_CACHE_MAX`` entries so it stays bounded."""
    value = cache.get(key)
    if value is None:
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        value = cache[key] = make()
    return value


def _crc(head: bytes, parts: Sequence[bytes | memoryview]) -> int:
    value = crc32c.crc32c(head)
    for p in parts:
        value = crc32c.crc32c(p, value=value)
    return value


@dataclass(frozen=True, slots=True)
class Damage:
    """A stretch of a segment that holds no intact frame: ``length`` bytes, up to the next intact
    frame, or (``torn``) to the segment's last byte that is not preallocated zero."""

    length: int
    torn: bool


_Frame = tuple[int, dict[str, Any], memoryview, int]  # seq, metadata, payload, frame length


def scan_segment(data: bytes) -> Iterator[tuple[int, _Frame | None, Damage]]:
    """``(offset, frame, damage)`` for each intact frame of a segment's bytes (``damage`` unused)
    and each damaged stretch (``frame`` is ``None``), in order; stops at the all-zero tail.

    A damaged stretch ends at the next offset where a frame's checksum holds (the scan resumes
    there), so corruption in the middle costs only the records it hit. Replay and
    ``mktsframe check`` read segments through this one function."""
    view = memoryview(data)
    pos, size = 0, len(data)
    while pos < size:
        frame = WriteAheadLog._frame_at(view, pos)
        if frame is not None:
            yield pos, frame, _NO_DAMAGE
            pos += frame[3]
            continue
        tail = np.frombuffer(data, np.uint8, offset=pos)
        if not tail.any():
            return  # the preallocated, never-written rest of the segment
        nxt = data.find(MAGIC, pos + 1)
        while nxt != -1 and WriteAheadLog._frame_at(view, nxt) is None:
            nxt = data.find(MAGIC, nxt + 1)
        if nxt == -1:  # a torn tail ends at its last byte that is not preallocated zero
            yield pos, None, Damage(int(np.flatnonzero(tail)[-1]) + 1, True)
            return
        yield pos, None, Damage(nxt - pos, False)
        pos = nxt


_NO_DAMAGE = Damage(0, False)


class WriteAheadLog:
    """Append-only, checksummed, segment-rotated log of operations.

    Not thread-safe: the engine calls it under its write lock.
    """

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = None
        self._segment: Path | None = None
        self._pos = 0  # where the next frame goes in the open segment
        self._allocated = 0  # bytes of the open segment that are allocated (its size)
        self._packed_meta: dict[tuple[Any, ...], bytes] = {}
        self._array_lists: dict[tuple[Any, ...], list[tuple[str, int]]] = {}
        self.next_seq = 1
        self.written_seq = 0
        self.synced_seq = 0
        self.last_sync_seconds = 0.0
        """How long the latest :meth:`sync` waited for the disk."""
        self.bytes_since_checkpoint = 0
        self.checkpoint_seq = self._read_checkpoint()
        self.retain_bytes = 0
        """Bytes of checkpointed segments :meth:`drop_checkpointed` keeps (the newest ones) so that
        replicas can catch up from the log (``replication: {log_retention_mb}``); 0 keeps none."""

    # -- checkpoint file ------------------------------------------------------------------------
    def _read_checkpoint(self) -> int:
        path = self.dir / "checkpoint"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return 0
        if len(raw) == _CKPT.size:
            magic, seq, crc = _CKPT.unpack(raw)
            if magic == _CKPT_MAGIC and crc32c.crc32c(raw[:16]) == crc:
                return int(seq)
        log.warning("%s is corrupt; replaying the whole log (replay is idempotent)", path)
        return 0

    def write_checkpoint(self, seq: int) -> None:
        """Record durably that every record ``<= seq`` is in the year files."""
        body = _CKPT_MAGIC + struct.pack("<Q", seq)
        write_atomic(self.dir / "checkpoint", body + struct.pack("<I", crc32c.crc32c(body)))
        self.checkpoint_seq = seq
        self.bytes_since_checkpoint = 0

    # -- segments -------------------------------------------------------------------------------
    def segments(self) -> list[Path]:
        return sorted(p for p in self.dir.glob("*.wal") if p.stem.isdigit())

    def start_segment(self) -> None:
        """Close the current segment and start a new one at ``next_seq``.

        A file of that name can only be left from a run that logged no valid record into it
        (replay sets ``next_seq`` past every record it sees), so it is truncated. Space is
        allocated by the first append, so a segment that stays empty costs nothing.
        """
        self.close()
        self._segment = self.dir / f"{self.next_seq:020d}.wal"
        self._fd = os.open(self._segment, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self._pos = self._allocated = 0
        fsync_dir(self.dir)

    def drop_checkpointed(self) -> None:
        """Delete segments whose every record is at or below the checkpoint, except the newest of
        them up to :attr:`retain_bytes` in all (kept for replication catch-up, never replayed)."""
        segs = self.segments()
        done = []
        for seg, nxt in zip(segs, [*segs[1:], None], strict=False):
            if seg == self._segment:
                continue
            last = int(nxt.stem) - 1 if nxt is not None else self.written_seq
            if last <= self.checkpoint_seq:
                done.append(seg)
        kept = 0
        for seg in reversed(done):  # newest first: keep a contiguous tail of the log
            try:
                kept += seg.stat().st_size
            except FileNotFoundError:
                continue
            if kept > self.retain_bytes:
                kept = self.retain_bytes + 1  # once one is dropped, every older one goes too
                seg.unlink(missing_ok=True)
        fsync_dir(self.dir)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # -- appending ------------------------------------------------------------------------------
    def append(self, meta: dict[str, Any], arrays: Sequence[np.ndarray] = ()) -> int:
        """Append one record (not yet durable: call :meth:`sync`). Returns its sequence number."""
        return self.append_packed(self.pack_meta(meta, arrays), arrays)

    def append_packed(self, packed: bytes, arrays: Sequence[np.ndarray] = ()) -> int:
        """:meth:`append` of a record whose metadata :meth:`pack_meta` packed (for ``arrays`` of
        these dtypes and sizes): a writer that logs the same metadata every time packs it once."""
        fd = self._fd
        if fd is None:
            raise RuntimeError("write-ahead log is not open for writing")
        data_len = sum([a.nbytes for a in arrays])
        small = data_len <= _JOIN_MAX
        if not small:  # tobytes() below copies in C order whatever the strides; memoryview needs contiguity
            arrays = [np.ascontiguousarray(a) for a in arrays]
        seq = self.next_seq
        head = _HEAD_NO_CRC.pack(MAGIC, len(packed), data_len, seq)
        total = _HEAD.size + len(packed) + data_len
        pos = self._pos
        if pos + total > self._allocated:
            self._preallocate(pos + total)
        if small:  # one buffer, one checksum call, one system call
            body = b"".join([packed, *[a.tobytes() for a in arrays]])
            frame = b"".join((head, _CRC.pack(crc32c.crc32c(body, value=crc32c.crc32c(head))), body))
            written = os.pwrite(fd, frame, pos)
            if written < total:  # short write (rare): finish the rest
                _pwrite_all(fd, memoryview(frame)[written:], pos + written)
        else:
            parts: list[bytes | memoryview] = [packed, *(memoryview(a).cast("B") for a in arrays)]
            frame_parts = [head + _CRC.pack(_crc(head, parts)), *parts]
            written = os.pwritev(fd, frame_parts, pos)
            if written < total:
                _pwrite_all(fd, memoryview(b"".join(frame_parts))[written:], pos + written)
        self._pos = pos + total
        self.next_seq = seq + 1
        self.written_seq = seq
        self.bytes_since_checkpoint += total
        return seq

    def pack_meta(self, meta: dict[str, Any], arrays: Sequence[np.ndarray]) -> bytes:
        """``meta`` plus the ``arrays`` list (``[(dtype.str, count), ...]``), msgpack'd.

        Both are cached by the arrays' dtypes and counts (``dtype.str`` alone costs ~0.7 µs an
        array), and the common ``{op, key}`` metas whole: a 1-row append logs the same bytes every
        time, and packing them cost ~10 µs of a ~60 µs append.
        """
        shape = (*[a.dtype for a in arrays], *[a.size for a in arrays])
        listed = _cached(self._array_lists, shape, lambda: [(a.dtype.str, a.size) for a in arrays])
        if len(meta) != 2 or "op" not in meta or "key" not in meta:  # e.g. a write_run's start: packed each time
            return msgpack.packb({**meta, "arrays": listed}, use_bin_type=True)  # type: ignore[no-any-return]
        return _cached(
            self._packed_meta,
            (meta["op"], meta["key"], *shape),
            lambda: msgpack.packb({**meta, "arrays": listed}, use_bin_type=True),
        )

    def _preallocate(self, needed: int) -> None:
        """Grow the open segment's allocation past ``needed`` bytes (zero-filled, ``PREALLOCATE`` steps)."""
        assert self._fd is not None
        size = max(needed, self._allocated) + PREALLOCATE
        try:
            try:
                os.posix_fallocate(self._fd, self._allocated, size - self._allocated)
            except OSError as exc:
                if exc.errno != errno.ENOSPC or needed <= self._allocated:
                    raise
                size = needed  # a nearly full disk: room for this record may still be there
                os.posix_fallocate(self._fd, self._allocated, size - self._allocated)
        except OSError as exc:  # no preallocation on this file system: plain growth still works
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            return
        self._allocated = size

    def start_sync(self) -> None:
        """Start writing the records appended since the last :meth:`sync` to the disk without
        waiting, so work done before :meth:`sync` overlaps the disk write (not durable yet)."""
        if self._fd is not None and self.synced_seq < self.written_seq:
            start_writeback(self._fd)

    def sync(self) -> None:
        """Make every appended record durable (``fdatasync``); its duration is kept in
        :attr:`last_sync_seconds`."""
        if self._fd is not None and self.synced_seq < self.written_seq:
            target = self.written_seq
            start = time.perf_counter()
            fdatasync(self._fd, f"fdatasync of the write-ahead log {self._segment}")
            self.last_sync_seconds = time.perf_counter() - start
            self.synced_seq = target

    # -- replay ---------------------------------------------------------------------------------
    def replay(self, report: ReplayReport) -> Iterator[Record]:
        """Yield every intact record after the checkpoint, in sequence order.

        Torn or corrupt frames are skipped and described in ``report``; the scan resumes at the
        next frame whose checksum holds. Sets ``next_seq`` past the highest sequence seen.
        """
        last = self.checkpoint_seq
        highest = self.checkpoint_seq
        segs = self.segments()
        for seg, nxt in zip(segs, [*segs[1:], None], strict=False):
            if nxt is not None and int(nxt.stem) - 1 <= last:
                continue  # wholly checkpointed (kept for replication): nothing to replay in it
            for pos, frame, damaged in scan_segment(seg.read_bytes()):
                if frame is None:
                    what = "torn tail" if damaged.torn else "corrupt record(s)"
                    msg = f"WAL {seg.name}: {what} of {damaged.length} bytes at offset {pos} failed its checksum"
                    msg += "; skipped"
                    log.warning(msg)
                    report.problems.append(msg)
                    report.skipped_bytes += damaged.length
                    continue
                seq, meta, payload, _ = frame
                highest = max(highest, seq)
                if seq <= last:
                    continue
                last = seq
                report.records += 1
                yield Record(seq, meta, payload)
        self.next_seq = highest + 1
        self.written_seq = self.synced_seq = highest

    @staticmethod
    def _frame_at(view: memoryview, pos: int) -> _Frame | None:
        if len(view) - pos < _HEAD.size:
            return None
        magic, meta_len, data_len, seq, crc = _HEAD.unpack_from(view, pos)
        if magic != MAGIC or meta_len > MAX_META or data_len > MAX_DATA:
            return None
        end = pos + _HEAD.size + meta_len + data_len
        if end > len(view):
            return None
        head = bytes(view[pos : pos + _HEAD.size - 4])
        meta_view = view[pos + _HEAD.size : pos + _HEAD.size + meta_len]
        payload = view[pos + _HEAD.size + meta_len : end]
        if _crc(head, (meta_view, payload)) != crc:
            return None
        try:
            meta = msgpack.unpackb(meta_view, raw=False)
        except (ValueError, msgpack.UnpackException):
            return None
        if not isinstance(meta, dict):
            return None
        return seq, meta, payload, end - pos
