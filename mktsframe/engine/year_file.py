"""One year of one fixed-timeframe bucket: ``root/SYMBOL/TIMEFRAME/ATTRGROUP/YEAR.bin``.

The file is memory-mapped and laid out *by column*: a presence byte per slot, then one region
per column holding ``nslots`` values. Slot ``i`` is the bar starting at
``year_start + i * timeframe`` (seconds, UTC), so locating a timestamp is O(1) arithmetic and a
range read is one contiguous slice per column — copies at memory speed, and a column projection
touches only the pages of the columns asked for. The file is created at full size with
``ftruncate`` (sparse: an empty year costs no disk). The exact layout is in ``docs/format.md``.

Durability is the write-ahead log's job (``wal.py``): year files are written through the page
cache and made durable at checkpoints, and every change since the last checkpoint is replayed
from the log after a crash, so a torn year-file write is always repaired before it is served.
Large writes into empty slots skip the log (``Engine._write_direct``): :meth:`YearFile.store_durable`
syncs them here, outside the watermarks, and a crash before they are published and committed
is rolled back with :meth:`YearFile.clear`.
The header is checksummed and a bad one raises :class:`~mktsframe.errors.CorruptFileError`.
"""

from __future__ import annotations

import calendar
import functools
import itertools
import json
import os
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mktsframe.dtypes import Schema, dtype_of
from mktsframe.engine import durable as disk
from mktsframe.engine.durable import fsync_dir, pwrite_durable
from mktsframe.engine.kernels import MARKS_OFFSET, layout_id
from mktsframe.engine.mapping import FileMap, map_file
from mktsframe.engine.space import reserve, zero_nonzero
from mktsframe.errors import CorruptFileError, NoSpaceError

__all__ = ["FORMAT_VERSION", "YearFile", "year_bounds", "year_of"]

MAGIC = b"MKTSYEAR"
FORMAT_VERSION = 1
PAGE = 4096
# magic, version, header_size, meta_len, meta_crc32, reserved, lo, hi watermarks (slot numbers)
_FIXED = struct.Struct("<8sIIIIqqq")
_WATERMARK_OFFSET = MARKS_OFFSET
_META_OFFSET = 64
_MAX_HEADER = 1 << 20
#: Contiguous writes of at least this many rows go through pwrite() rather than the mapping.
_PWRITE_MIN_ROWS = 65536
#: A reservation also covers this many slots past its end (if the disk has room), so that a run of
#: small appends allocates once per this many bars, not once per write.
_RESERVE_AHEAD = 4096
#: Slots of a scattered write further apart than this are reserved as separate runs.
_RESERVE_GAP = 4096


def _round_up(n: int, to: int = PAGE) -> int:
    return (n + to - 1) // to * to


@functools.lru_cache(maxsize=4096)  # called per year per query: calendar.timegm is ~2 µs
def year_bounds(year: int) -> tuple[int, int]:
    """Epoch seconds of 1 January 00:00 UTC of ``year`` and of the following year."""
    return calendar.timegm((year, 1, 1, 0, 0, 0)), calendar.timegm((year + 1, 1, 1, 0, 0, 0))


#: ``(start, end, year)`` of the year :func:`year_of` answered last: a write of one bar to each of
#: 5,000 symbols asks it 10,000 times about the same year (a datetime64 cast is ~3 µs).
_last_year: tuple[int, int, int] = (0, 0, 0)


def year_of(epoch_s: int) -> int:
    """The UTC calendar year of ``epoch_s`` (seconds since the epoch)."""
    global _last_year
    start, end, year = _last_year
    if start <= epoch_s < end:
        return year
    year = int(np.datetime64(epoch_s, "s").astype("M8[Y]").astype(np.int64)) + 1970
    _last_year = (*year_bounds(year), year)
    return year


@dataclass(frozen=True, slots=True)
class _Layout:
    header_size: int
    nslots: int
    presence_offset: int
    column_offsets: tuple[int, ...]
    file_size: int


def _layout(meta_len: int, nslots: int, schema: Schema) -> _Layout:
    header_size = _round_up(_META_OFFSET + meta_len)
    pos = header_size
    presence = pos
    pos += _round_up(nslots)
    offsets = []
    for _, t in schema:
        offsets.append(pos)
        pos += _round_up(nslots * dtype_of(t).itemsize)
    return _Layout(header_size, nslots, presence, tuple(offsets), pos)


def layout_of(meta: dict[str, Any], header_size: int) -> _Layout:
    """The layout a year file's metadata describes."""
    return _Layout(
        header_size,
        meta["nslots"],
        meta["presence_offset"],
        tuple(c["offset"] for c in meta["columns"]),
        meta["file_size"],
    )


def read_header(fd: int, path: Path, head: bytes) -> tuple[dict[str, Any], _Layout]:
    """Validate and decode the header of the open year file ``fd`` whose first ``_FIXED.size`` bytes
    are ``head``: its metadata (checksummed) and layout. Raises :class:`CorruptFileError`."""
    return parse_header(path, head, lambda offset, n: os.pread(fd, n, offset), lambda: os.fstat(fd).st_size)


def parse_header(
    path: object, head: bytes, read: Callable[[int, int], bytes], size: Callable[[], int]
) -> tuple[dict[str, Any], _Layout]:
    """:func:`read_header` over any byte source: ``read(offset, n)`` and the file's ``size()`` (a
    local descriptor, or ranged reads of an object in a store). ``path`` only names the file in errors."""
    if len(head) < _FIXED.size or head[:8] != MAGIC:
        raise CorruptFileError(f"{path}: not a mktsframe year file (bad magic number)")
    _, version, header_size, meta_len, crc, _, _, _ = _FIXED.unpack_from(head)
    if version != FORMAT_VERSION:
        raise CorruptFileError(f"{path}: unsupported format version {version} (this build reads {FORMAT_VERSION})")
    if not (_META_OFFSET + meta_len <= header_size <= _MAX_HEADER):
        raise CorruptFileError(f"{path}: corrupt header (header size {header_size}, metadata {meta_len} bytes)")
    blob = bytes(head[_META_OFFSET : _META_OFFSET + meta_len])
    if len(blob) < meta_len:
        blob = read(_META_OFFSET, meta_len)
    if len(blob) != meta_len or zlib.crc32(blob) != crc:
        raise CorruptFileError(f"{path}: header checksum mismatch; the file is corrupt and will not be served")
    meta = json.loads(blob)
    layout = layout_of(meta, header_size)
    actual = size()
    if actual < layout.file_size:
        raise CorruptFileError(f"{path}: truncated ({actual} bytes, header says {layout.file_size})")
    return meta, layout


def slot_ranges(presence_offset: int, columns: list[tuple[int, int]], s0: int, s1: int) -> list[tuple[int, int]]:
    """``(offset, nbytes)`` of slots ``[s0, s1)`` in the presence region and in each column
    (``columns``: ``(offset, itemsize)``): the bytes a write of those slots stores."""
    n = s1 - s0
    return [(presence_offset + s0, n), *((off + s0 * size, n * size) for off, size in columns)]


def slot_runs(slots: np.ndarray) -> list[tuple[int, int]]:
    """``[s0, s1)`` spans covering the sorted ``slots``, split where they are far apart (a scattered
    write reserves the pages it stores to, not the whole stretch between its first and last slot)."""
    first, last = int(slots[0]), int(slots[-1])
    if last - first < 2 * slots.size + _RESERVE_GAP:
        return [(first, last + 1)]
    cuts = np.flatnonzero(np.diff(slots) > _RESERVE_GAP)
    starts, ends = slots[np.r_[0, cuts + 1]], slots[np.r_[cuts, slots.size - 1]]
    return [(int(a), int(z) + 1) for a, z in zip(starts, ends, strict=True)]


def _row_view(mm: FileMap, layout: _Layout, dtypes: list[np.dtype]) -> np.ndarray | None:
    """See :attr:`YearFile.rows`."""
    offsets = layout.column_offsets
    if not dtypes or len({dt.itemsize for dt in dtypes}) != 1:
        return None
    size = dtypes[0].itemsize
    step = offsets[1] - offsets[0] if len(offsets) > 1 else size
    if any(b - a != step for a, b in itertools.pairwise(offsets)):
        return None
    return np.ndarray((layout.nslots, len(offsets)), f"V{size}", buffer=mm.buffer, offset=offsets[0],
                      strides=(size, step))  # fmt: skip


class YearFile:
    """A memory-mapped year file. Slots are 0-based: slot 0 is 1 January 00:00 UTC.

    Not thread-safe by itself: the engine serialises writers and holds its apply lock while
    readers copy, so a reader never sees half of a write.
    """

    def __init__(self, path: Path, meta: dict[str, Any], layout: _Layout, mm: FileMap, writable: bool) -> None:
        self.path = path
        self.meta = meta
        self.year: int = meta["year"]
        self.timeframe: int = meta["timeframe_seconds"]
        self.year_start: int = meta["year_start"]
        self.year_end: int = self.year_start + meta["nslots"] * meta["timeframe_seconds"]
        self.nslots = layout.nslots
        self.schema: Schema = tuple((c["name"], c["type"]) for c in meta["columns"])
        self.names: list[str] = [n for n, _ in self.schema]
        self.writable = writable
        self._mm = mm
        self._layout = layout
        self.presence = np.ndarray((layout.nslots,), np.uint8, buffer=mm.buffer, offset=layout.presence_offset)
        self.columns: dict[str, np.ndarray] = {
            name: np.ndarray((layout.nslots,), dtype_of(t), buffer=mm.buffer, offset=off)
            for (name, t), off in zip(self.schema, layout.column_offsets, strict=True)
        }
        self._marks = np.ndarray((2,), np.int64, buffer=mm.buffer, offset=_WATERMARK_OFFSET)
        self.address: int = self.presence.__array_interface__["data"][0] - layout.presence_offset
        """Where the map starts in memory, and the row of :func:`~mktsframe.engine.kernels.layout_table`
        describing it: what the compiled universe reads address the file by."""
        self.layout_id = layout_id(layout.nslots, layout.presence_offset, layout.column_offsets)
        self.rows = _row_view(mm, layout, [dtype_of(t) for _, t in self.schema])
        """Every column of a slot at once, ``(nslots, ncolumns)`` of raw ``V<itemsize>`` values, when
        the columns share an item size (OHLCV: all 8 bytes): the regions are then equally spaced, so
        one strided view reads a row as one 40-byte copy instead of five scalar reads. ``None``
        otherwise."""
        # Watermarks live in the shared mapping, so a reader in another process sees the writer's
        # appends. They are an unchecksummed hint: if implausible, scan once and pin the result.
        self._pinned: tuple[int, int] | None = None
        lo, hi = int(self._marks[0]), int(self._marks[1])
        if not 0 <= lo <= hi <= self.nslots:
            bounds = self._scan_bounds(0, self.nslots)
            if writable:
                self._marks[:] = bounds
            else:
                self._pinned = bounds
            lo, hi = bounds
        # The writer's own copy of its watermarks (the engine holding a root writable is its only
        # writer): reading the shared page costs a cache and TLB miss per file, ~1 µs, which a
        # cross-section of 5,000 buckets paid 5 ms for. Readers of a root another process writes
        # keep reading the mapping, to see its appends.
        self._own: tuple[int, int] | None = (lo, hi) if writable else None
        self.dirty = False
        # Slots whose pages have disk blocks for certain (reserved by this object): see reserve().
        self._reserved = (0, 0)

    # -- creation and opening -------------------------------------------------------------------
    @classmethod
    def create(
        cls, path: Path, key: str, timeframe: int, year: int, schema: Schema, *, durable: bool = True
    ) -> YearFile:
        """Create the file atomically (temp file + rename) at full sparse size and open it
        (``durable=False``: without ``fsync``, for many files made durable at once by the caller)."""
        start, end = year_bounds(year)
        nslots = (end - start) // timeframe
        meta: dict[str, Any] = {
            "format": "mktsframe-year",
            "version": FORMAT_VERSION,
            "key": key,
            "record_type": "fixed",
            "timeframe_seconds": timeframe,
            "year": year,
            "year_start": start,
            "nslots": nslots,
            "columns": [{"name": n, "type": t} for n, t in schema],
        }
        # Offsets depend on the header size, which depends on the metadata: iterate to a fixpoint.
        layout = _layout(len(json.dumps(meta).encode()) + 256, nslots, schema)
        meta["presence_offset"] = layout.presence_offset
        for col, off in zip(meta["columns"], layout.column_offsets, strict=True):
            col["offset"] = off
        meta["file_size"] = layout.file_size
        blob = json.dumps(meta, separators=(",", ":")).encode()
        if _META_OFFSET + len(blob) > layout.header_size:
            raise AssertionError("header layout overflow")  # pragma: no cover - 256 bytes of slack
        header = bytearray(layout.header_size)
        _FIXED.pack_into(header, 0, MAGIC, FORMAT_VERSION, layout.header_size, len(blob), zlib.crc32(blob), 0, 0, 0)
        header[_META_OFFSET : _META_OFFSET + len(blob)] = blob
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, header)
            os.ftruncate(fd, layout.file_size)
            if durable:
                disk.fsync(fd, f"fsync({tmp})")
        except BaseException:
            tmp.unlink(missing_ok=True)  # e.g. a full disk: leave nothing behind
            raise
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
        return cls.open(path, writable=True)

    @classmethod
    def open(cls, path: Path, *, writable: bool) -> YearFile:
        """Open and validate an existing year file."""
        fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        try:
            meta, layout = read_header(fd, path, os.pread(fd, _FIXED.size, 0))
            mm = map_file(fd, layout.file_size, writable=writable)
        finally:
            os.close(fd)  # the map holds no descriptor (see mktsframe.engine.mapping)
        mm.advise_random()
        return cls(path, meta, layout, mm, writable)

    #: Year files may be closed dirty: the engine ``fdatasync``'s their path at the next checkpoint.
    hold_while_dirty = False

    def evicted(self) -> None:
        """Close the file to make room in the engine's open-file set; its owner replaces this
        (:meth:`Bucket._evict_year <mktsframe.engine.catalog.Bucket._evict_year>`) to forget it too."""
        self.close()

    def close(self) -> None:
        """Unmap the file; views handed out earlier must have been copied (they always are)."""
        self.presence = self._marks = self.rows = None  # type: ignore[assignment]
        self.columns = {}
        self._mm.close()  # unmapped now, or by the GC once a view still referenced goes

    @property
    def lo(self) -> int:
        """No present slot is below this one."""
        return self.extent()[0]

    @property
    def hi(self) -> int:
        """No present slot is at or above this one."""
        return self.extent()[1]

    def extent(self) -> tuple[int, int]:
        """``(lo, hi)`` at once (one read of the shared watermarks; a universe read asks thousands of files)."""
        if self._own is not None:
            return self._own
        if self._pinned is not None:
            return self._pinned
        lo, hi = self._marks.tolist()
        return lo, hi

    def _set_bounds(self, lo: int, hi: int) -> None:
        self._marks[0], self._marks[1] = lo, hi
        if self._own is not None:
            self._own = (lo, hi)

    # -- slot arithmetic ------------------------------------------------------------------------
    def slot_of(self, epoch_s: int) -> int:
        return (epoch_s - self.year_start) // self.timeframe

    def _scan_bounds(self, lo: int, hi: int) -> tuple[int, int]:
        nz = np.flatnonzero(self.presence[lo:hi])
        if nz.size == 0:
            return 0, 0
        return lo + int(nz[0]), lo + int(nz[-1]) + 1

    # -- reading --------------------------------------------------------------------------------
    def select(self, s0: int, s1: int) -> tuple[int, int, np.ndarray | None]:
        """Clip ``[s0, s1)`` to the data and find its present slots.

        Returns ``(s0, s1, idx)`` where ``idx`` holds the offsets of present slots relative to
        ``s0``, or is ``None`` when every slot in the range is present (the common case for bars,
        which lets :meth:`copy_into` use straight slices).
        """
        s0, s1 = max(s0, self.lo), min(s1, self.hi)
        if s1 <= s0:
            return s0, s0, None
        pres = self.presence[s0:s1]
        if np.count_nonzero(pres) == s1 - s0:
            return s0, s1, None
        return s0, s1, np.flatnonzero(pres)

    def copy_into(
        self, s0: int, s1: int, idx: np.ndarray | None, out_ns: np.ndarray, outs: dict[str, np.ndarray]
    ) -> None:
        """Copy the rows chosen by :meth:`select` into the given output slices.

        ``out_ns`` receives bar starts in nanoseconds since the epoch (UTC); ``outs`` maps column
        names to output slices of the same length. One copy, straight from the mapping.
        """
        step = self.timeframe * 1_000_000_000
        first = (self.year_start + s0 * self.timeframe) * 1_000_000_000
        if idx is None:
            out_ns[:] = np.arange(first, first + (s1 - s0) * step, step, dtype=np.int64)
            for name, out in outs.items():
                np.copyto(out, self.columns[name][s0:s1])
        else:
            np.multiply(idx, step, out=out_ns)
            out_ns += first
            for name, out in outs.items():
                np.take(self.columns[name][s0:s1], idx, out=out)

    def last_slots(self, n: int, s1: int) -> int:
        """The slot ``s0`` such that ``[s0, s1)`` holds the last ``n`` present rows (or all of them)."""
        s1 = min(s1, self.hi)
        lo = self.lo
        need = n
        chunk = max(2 * n, 4096)
        pos = s1
        while pos > lo:
            start = max(lo, pos - chunk)
            cnt = int(np.count_nonzero(self.presence[start:pos]))
            if cnt >= need:
                idx = np.flatnonzero(self.presence[start:pos])
                return start + int(idx[cnt - need])
            need -= cnt
            pos = start
            chunk *= 4
        return lo

    def first_slots(self, n: int, s0: int) -> int:
        """The slot ``s1`` such that ``[s0, s1)`` holds the first ``n`` present rows (or all)."""
        s0 = max(s0, self.lo)
        need = n
        chunk = max(2 * n, 4096)
        pos = s0
        while pos < self.hi:
            stop = min(self.hi, pos + chunk)
            cnt = int(np.count_nonzero(self.presence[pos:stop]))
            if cnt >= need:
                idx = np.flatnonzero(self.presence[pos:stop])
                return pos + int(idx[need - 1]) + 1
            need -= cnt
            pos = stop
            chunk *= 4
        return self.hi

    def count(self) -> int:
        """Number of present rows."""
        return int(np.count_nonzero(self.presence[self.lo : self.hi]))

    def bounds(self) -> tuple[int, int] | None:
        """Epoch seconds of the first and last present bar, or ``None`` if the year is empty."""
        lo, hi = self._scan_bounds(self.lo, self.hi)
        if hi == 0:
            return None
        return self.year_start + lo * self.timeframe, self.year_start + (hi - 1) * self.timeframe

    # -- writing --------------------------------------------------------------------------------
    def reserve(self, s0: int, s1: int) -> None:
        """Give slots ``[s0, s1)`` disk blocks (``posix_fallocate`` of their pages in every region),
        so that storing to them through the mapping cannot fault on a full disk (``SIGBUS``).
        Raises :class:`NoSpaceError`. Remembered: reserving slots reserved before costs no system
        call; ``_RESERVE_AHEAD`` slots past the end are taken along when the disk has room."""
        r0, r1 = self._reserved
        if r0 <= s0 and s1 <= r1:
            return
        ahead = min(self.nslots, s1 + max(_RESERVE_AHEAD, s1 - s0))
        offsets = self._layout.column_offsets
        columns = [(off, dtype_of(t).itemsize) for (_, t), off in zip(self.schema, offsets, strict=True)]
        fd = os.open(self.path, os.O_RDWR)
        try:
            try:
                reserve(fd, slot_ranges(self._layout.presence_offset, columns, s0, ahead), self.path)
                s1 = ahead
            except NoSpaceError:
                reserve(fd, slot_ranges(self._layout.presence_offset, columns, s0, s1), self.path)
        finally:
            os.close(fd)
        self._reserved = (min(r0, s0), max(r1, s1)) if r0 < r1 and s0 <= r1 and r0 <= s1 else (s0, s1)

    def reserved(self, s0: int, s1: int) -> bool:
        """Whether slots ``[s0, s1)`` lie in the span :meth:`reserve` last covered."""
        return self._reserved[0] <= s0 and s1 <= self._reserved[1]

    def write(self, slots: np.ndarray, values: dict[str, np.ndarray]) -> None:
        """Store rows at ``slots`` (sorted, unique, int64), replacing what was there.

        ``values`` holds every column of the schema, already of the bucket's dtype. Their pages are
        reserved first (:meth:`reserve`): a full disk raises :class:`NoSpaceError`, storing nothing.
        """
        n = slots.size
        if n == 0:
            return
        first, last = int(slots[0]), int(slots[-1])
        if first < 0 or last >= self.nslots:
            raise ValueError(f"{self.path}: slot out of range")
        for a, z in slot_runs(slots):
            self.reserve(a, z)
        if last - first + 1 == n and n >= _PWRITE_MIN_ROWS:
            self._pwrite(first, values)
        elif last - first + 1 == n:  # contiguous: slice assignment
            sl = slice(first, last + 1)
            for name, col in self.columns.items():
                col[sl] = values[name]
            self.presence[sl] = 1
        else:
            for name, col in self.columns.items():
                col[slots] = values[name]
            self.presence[slots] = 1
        self._widen_bounds(first, last + 1)
        self.dirty = True

    def write_run(self, first: int, n: int, values: list[np.ndarray]) -> None:
        """Store ``n`` rows at the contiguous slots ``first, first+1, ...`` (the common append).

        ``values`` holds every column in schema order, already of the bucket's dtype. Cheaper than
        :meth:`write` for small appends (~3 µs for a row): no slot array and no dict.
        """
        stop = first + n
        if first < 0 or stop > self.nslots:
            raise ValueError(f"{self.path}: slot out of range")
        r0, r1 = self._reserved
        if not (r0 <= first and stop <= r1):
            self.reserve(first, stop)
        if n >= _PWRITE_MIN_ROWS:
            self._pwrite(first, dict(zip(self.columns, values, strict=True)))
        elif n == 1:
            self.write_row(first, [v[0] for v in values])
            return
        else:
            sl = slice(first, stop)
            for col, v in zip(self.columns.values(), values, strict=True):
                col[sl] = v
            self.presence[sl] = 1
        self._widen_bounds(first, stop)
        self.dirty = True

    def write_row(self, slot: int, values: Sequence[Any] | np.ndarray) -> None:
        """Store one row at ``slot``, whose blocks are reserved already (:meth:`reserved`).

        ``values``: one scalar per column, in schema order, or, where :attr:`rows` exists, the row's
        raw values as it holds them (one store instead of one per column). Scalar stores cost a
        third of 1-element slice assignments; a write of one bar to each of 5,000 buckets makes
        5,000 of these.
        """
        if isinstance(values, np.ndarray):
            self.rows[slot] = values
        else:
            for col, v in zip(self.columns.values(), values, strict=True):
                col[slot] = v
        self.presence[slot] = 1
        self._widen_bounds(slot, slot + 1)
        self.dirty = True

    @property
    def reserved_span(self) -> tuple[int, int]:
        """The slots :meth:`reserve` last covered, ``[from, to)``: they have disk blocks."""
        return self._reserved

    def stage_run(self, first: int, values: list[np.ndarray]) -> None:
        """Copy a run's values (schema order) into slots ``first, first+1, ...`` if they lie outside
        the watermarks, without marking them present; otherwise do nothing.

        Readers never look outside the watermarks and a crash leaves those slots absent (presence
        0), so this may run before the write is durable: the engine does it while the log's
        ``fdatasync`` is in flight, taking the page faults of fresh pages (~30 µs per 1,000 bars)
        off the write's critical path. :meth:`write_run` then stores the same values again (the
        pages are resident by then) and publishes them.
        """
        stop = first + values[0].shape[0] if values else first
        lo, hi = self.lo, self.hi
        if not (0 <= first < stop <= self.nslots and (lo == hi or first >= hi or stop <= lo)):
            return
        if self.presence[first:stop].any():  # belt and braces: a row is never touched before its write is durable
            return
        if not self.reserved(first, stop):  # the engine reserves before logging; never fault on a full disk
            return
        for col, v in zip(self.columns.values(), values, strict=True):
            col[first:stop] = v

    def _widen_bounds(self, first: int, stop: int) -> None:
        """Move the watermarks out to cover slots ``[first, stop)`` that now hold rows."""
        lo, hi = self.extent()
        if lo == hi:
            self._set_bounds(first, stop)
        elif first < lo or stop > hi:
            self._set_bounds(min(lo, first), max(hi, stop))

    def _pwrite(self, first: int, values: dict[str, np.ndarray]) -> None:
        """Bulk load of contiguous slots via ``pwrite``: filling fresh pages through the mapping costs a
        page fault per 4 KiB (35 ms for 1M bars), write() fills the same page cache (MAP_SHARED sees it) in
        half that."""
        fd = os.open(self.path, os.O_WRONLY)
        try:
            for off, buf in self._regions(first, values):
                done = 0
                while done < len(buf):
                    done += os.pwrite(fd, buf[done:], off + done)
        finally:
            os.close(fd)

    def _regions(self, first: int, values: dict[str, np.ndarray]) -> list[tuple[int, memoryview]]:
        """File offsets and bytes of contiguous rows from slot ``first``: each column, then presence."""
        n = next(iter(values.values())).shape[0] if values else 0
        parts = []
        for (name, col), off in zip(self.columns.items(), self._layout.column_offsets, strict=True):
            arr = np.ascontiguousarray(values[name], dtype=col.dtype)
            parts.append((off + first * col.dtype.itemsize, memoryview(arr).cast("B")))
        parts.append((self._layout.presence_offset + first, memoryview(np.ones(n, np.uint8))))
        return parts

    # -- direct writes (see Engine._write_direct and docs/format.md) -----------------------------
    def unpublished(self, s0: int, s1: int) -> bool:
        """Whether slots ``[s0, s1)`` are empty *and* outside the watermarks, so readers ignore them.

        Such a range can be written without the apply lock and published afterwards by
        :meth:`publish`, and cleared after a crash without touching any acknowledged row.
        """
        lo, hi = self.lo, self.hi
        outside = lo == hi or s0 >= hi or s1 <= lo
        return 0 <= s0 < s1 <= self.nslots and outside and not self.presence[s0:s1].any()

    def store_durable(self, first: int, values: dict[str, np.ndarray]) -> None:
        """Write contiguous rows from slot ``first`` with ``pwrite`` and ``fdatasync`` them.

        Values go before presence bytes, but nothing becomes visible until :meth:`publish` moves
        the watermarks over the rows: call it only on an :meth:`unpublished` range.
        """
        fd = os.open(self.path, os.O_WRONLY)
        try:
            pwrite_durable(fd, self._regions(first, values))
        finally:
            os.close(fd)

    def publish(self, s0: int, s1: int) -> None:
        """Widen the watermarks over ``[s0, s1)`` after :meth:`store_durable` (under the apply lock)."""
        lo, hi = self.lo, self.hi
        if lo == hi:
            self._set_bounds(s0, s1)
        else:
            self._set_bounds(min(lo, s0), max(hi, s1))
        self.dirty = True

    def clear(self, s0: int, s1: int) -> None:
        """Zero slots ``[s0, s1)`` whatever the watermarks say (rolling back an interrupted direct
        write, whose bytes may lie beyond them), then recompute the watermarks."""
        self._zero(s0, s1)
        lo, hi = self.lo, self.hi
        self._set_bounds(*self._scan_bounds(min(lo, s0), max(hi, s1)) if lo != hi else (0, 0))
        self.dirty = True

    def _zero(self, s0: int, s1: int) -> None:
        """Clear slots ``[s0, s1)``; stores only to bytes that hold data, so a full disk never matters."""
        zero_nonzero(self.presence[s0:s1])
        for col in self.columns.values():
            zero_nonzero(col[s0:s1])

    def delete(self, s0: int, s1: int) -> int:
        """Remove the rows in slots ``[s0, s1)``; returns how many were present."""
        s0, s1 = max(s0, self.lo), min(s1, self.hi)
        if s1 <= s0:
            return 0
        removed = int(np.count_nonzero(self.presence[s0:s1]))
        self._zero(s0, s1)
        self._set_bounds(*self._scan_bounds(self.lo, self.hi))
        self.dirty = True
        return removed

    def flush(self) -> None:
        """Make every change durable (``msync``); called by checkpoints."""
        if self.dirty:
            disk.msync(self._mm, what=f"msync({self.path})")
            self.dirty = False

    def disk_usage(self) -> int:
        """Bytes actually allocated on disk (sparse regions cost nothing)."""
        return os.stat(self.path).st_blocks * 512


def rows_written(files: Sequence[YearFile]) -> None:
    """Rows were stored into these files' maps by the compiled kernels, which keep the watermarks
    in the maps (:func:`~mktsframe.engine.kernels.write_rows`): drop each writer's own copy of
    them (:meth:`YearFile.extent` then reads the map, which is current; universe reads read it there
    in any case) and mark the files for the next checkpoint, as :meth:`YearFile.write_row` does.
    One loop here rather than a method call per file: a universe has thousands."""
    for yf in files:
        yf._own = None
        yf.dirty = True
