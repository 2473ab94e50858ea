"""Year files read and written by position (``pread``/``pwrite``), without mapping them.

When a universe holds more year files than the engine may keep open (``max_open_files``: 128 under
``ulimit -n 256``), opening a file into the set means closing another: ``open``, header checks,
``mmap``, a view per column, and later ``munmap`` and ``close`` — ~0.4 ms a file, so a one-bar
cross-section of 5,000 symbols took seconds. A read of a few slots needs none of that: the slot
arithmetic gives the byte offsets, and ``preadv`` copies straight from the page cache into the
result arrays (the floor any reader pays). So the engine reads and appends *by position* those
year files that are not open while the set is full, and keeps mapping the ones it holds.

The checksummed header of each file is decoded once and cached (keyed by path, checked against
the header's own CRC on every use, so a file re-created under the same path is decoded again);
the watermarks, which change with every write, are read each time. The bytes read and written are
the ones the mapping would touch, in the same order (values, then presence, then watermarks), so
readers in other processes see the same publication order, and the engine's apply lock serialises
this with its own mapped access.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mktsframe.dtypes import dtype_of
from mktsframe.engine.space import reserve
from mktsframe.engine.year_file import (
    _FIXED,
    _WATERMARK_OFFSET,
    _Layout,
    parse_header,
    slot_ranges,
    year_bounds,
)
from mktsframe.errors import CorruptFileError

__all__ = ["cache_header", "header_of", "read_slots", "reserve_slots", "slots_from", "write_run", "year_slots"]

NS = 1_000_000_000
#: Headers kept decoded (a few hundred bytes each); emptied when full so it stays bounded.
_HEADERS_MAX = 1 << 16
_WATERMARKS = np.dtype("<i8")


@dataclass(frozen=True, slots=True)
class _Header:
    crc: int
    layout: _Layout
    year_start: int
    timeframe: int
    dtypes: dict[str, np.dtype[Any]]
    offsets: dict[str, int]


_headers: dict[str, _Header] = {}
_headers_lock = threading.Lock()
#: ``fetch([(offset, nbytes), ...])`` → the bytes of each range, in order (preads, or ranged GETs).
Fetch = Callable[[list[tuple[int, int]]], list[bytes | bytearray | memoryview]]


def header_of(
    key: str, head: bytes, read: Callable[[int, int], bytes], size: Callable[[], int]
) -> tuple[_Header, int, int]:
    """The decoded header of the year file whose first bytes are ``head`` (cached under ``key``,
    checked against its CRC) and its watermarks ``(lo, hi)`` (implausible ones: the whole year).
    ``read``/``size`` reach the rest of the file if the header is not cached (see :func:`parse_header`)."""
    if len(head) < _FIXED.size:
        raise CorruptFileError(f"{key}: not a mktsframe year file (short header)")
    _, _, _, _, crc, _, lo, hi = _FIXED.unpack_from(head)
    h = _headers.get(key)
    if h is None or h.crc != crc:
        meta, layout = parse_header(key, head, read, size)
        h = cache_header(key, crc, meta, layout)
    if not 0 <= lo <= hi <= h.layout.nslots:
        lo, hi = 0, h.layout.nslots  # an unchecksummed hint gone wrong: the presence bytes decide
    return h, lo, hi


def cache_header(key: str, crc: int, meta: dict[str, Any], layout: _Layout) -> _Header:
    """Decode and cache (under ``key``) a year file's header from its checked metadata."""
    h = _Header(
        crc,
        layout,
        meta["year_start"],
        meta["timeframe_seconds"],
        {c["name"]: dtype_of(c["type"]) for c in meta["columns"]},
        {c["name"]: c["offset"] for c in meta["columns"]},
    )
    with _headers_lock:
        if len(_headers) >= _HEADERS_MAX:
            _headers.clear()
        _headers[key] = h
    return h


def _open(path: Path, fd: int) -> tuple[_Header, int, int]:
    """The header of ``fd`` (cached) and its watermarks ``(lo, hi)``."""
    head = os.pread(fd, _FIXED.size, 0)
    return header_of(str(path), head, lambda offset, n: os.pread(fd, n, offset), lambda: os.fstat(fd).st_size)


@contextlib.contextmanager
def _opened(path: Path, flags: int) -> Iterator[tuple[int, _Header, int, int] | None]:
    """``(fd, header, lo, hi)`` of the year file at ``path`` for the block (closed after), or
    ``None`` if there is no such file."""
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        yield None
        return
    try:
        yield (fd, *_open(path, fd))
    finally:
        os.close(fd)


def _pread_into(fd: int, buf: np.ndarray, offset: int, path: Path) -> None:
    view = memoryview(buf).cast("B")
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], offset + done)
        if n <= 0:
            raise CorruptFileError(f"{path}: truncated at byte {offset + done}")
        done += n


def read_slots(
    path: Path, s0: int, s1: int, names: list[str], limit: int | None, from_start: bool
) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """The present rows of slots ``[s0, s1)`` of the year file at ``path``: bar starts in ns (UTC)
    and the ``names`` columns, at most ``limit`` of them (the first, or the last). ``None`` if the
    file does not exist. Call under the engine's apply lock."""
    with _opened(path, os.O_RDONLY) as found:
        if found is None:
            return None
        fd, h, lo, hi = found

        def fetch(ranges: list[tuple[int, int]]) -> list[bytes | bytearray | memoryview]:
            out = []
            for offset, n in ranges:
                buf = np.empty(n, np.uint8)
                _pread_into(fd, buf, offset, path)
                out.append(memoryview(buf))
            return out

        return slots_from(h, lo, hi, s0, s1, names, limit, from_start, fetch)


def slots_from(
    h: _Header,
    lo: int,
    hi: int,
    s0: int,
    s1: int,
    names: list[str],
    limit: int | None,
    from_start: bool,
    fetch: Fetch,
    *,
    one_trip: bool = False,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The present rows of slots ``[s0, s1)`` of a year file with header ``h`` (see :func:`read_slots`),
    read through ``fetch``. Local files read the presence bytes first and then only the span of
    columns that holds rows. ``one_trip`` (object stores, where a round trip costs more than the
    bytes): presence and every column of ``[s0, s1)`` in one batch of ranges, unless ``limit``
    needs the presence first to know how little to read."""
    s0, s1 = max(s0, lo, 0), min(s1, hi, h.layout.nslots)
    if s1 <= s0 or limit == 0:
        return _empty(h, names)
    presence_range = (h.layout.presence_offset + s0, s1 - s0)
    if one_trip and limit is None:
        got = fetch([presence_range] + [(h.offsets[n] + s0 * h.dtypes[n].itemsize, (s1 - s0) * h.dtypes[n].itemsize)
                                         for n in names])  # fmt: skip
        idx = np.flatnonzero(np.frombuffer(got[0], np.uint8))
        dense = idx.size == s1 - s0
        cols = {n: _as(b, h.dtypes[n], s1 - s0) for n, b in zip(names, got[1:], strict=True)}
        cols = cols if dense else {n: c[idx] for n, c in cols.items()}
        return _times(h, idx + s0), cols
    (presence,) = fetch([presence_range])
    idx = np.flatnonzero(np.frombuffer(presence, np.uint8))
    if limit is not None and idx.size > limit:
        idx = idx[:limit] if from_start else idx[idx.size - limit :]
    if idx.size == 0:
        return _empty(h, names)
    a, z = s0 + int(idx[0]), s0 + int(idx[-1]) + 1  # read only the span that holds the rows
    dense = idx.size == z - a
    got = fetch([(h.offsets[n] + a * h.dtypes[n].itemsize, (z - a) * h.dtypes[n].itemsize) for n in names])
    cols = {}
    for name, raw in zip(names, got, strict=True):
        buf = _as(raw, h.dtypes[name], z - a)
        cols[name] = buf if dense else buf[idx - (a - s0)]
    return _times(h, idx + s0), cols


def year_slots(year: int, timeframe: int, s: int | None, e: int | None) -> tuple[int, int]:
    """Slots ``[s0, s1)`` of ``year``'s file that hold bars starting in ``[s, e]`` (seconds, UTC,
    inclusive; ``None`` unbounded) for a bucket of ``timeframe`` seconds."""
    y0, y1 = year_bounds(year)
    s0 = 0 if s is None else max(0, (s - y0) // timeframe)
    s1 = (y1 - y0) // timeframe if e is None else min((y1 - y0) // timeframe, (e - y0) // timeframe + 1)
    return s0, s1


def _as(raw: bytes | bytearray | memoryview, dt: np.dtype[Any], n: int) -> np.ndarray:
    arr = np.frombuffer(raw, dt)
    if arr.shape[0] != n:
        raise CorruptFileError(f"short read: {arr.shape[0]} of {n} values")
    return arr


def _times(h: _Header, slots: np.ndarray) -> np.ndarray:
    return slots.astype(np.int64) * (h.timeframe * NS) + h.year_start * NS


def _empty(h: _Header, names: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    return np.empty(0, np.int64), {n: np.empty(0, h.dtypes[n]) for n in names}


def write_run(path: Path, secs: np.ndarray, names: list[str], values: list[np.ndarray]) -> bool:
    """Store consecutive bars (``secs``: bar-start seconds, one timeframe apart, in this file's year)
    with ``pwrite``: each column's values, then the presence bytes, then the widened watermarks.
    ``False`` (nothing written) if the file does not exist or the rows are not one run inside it.
    Not durable: the caller hands the path to the next checkpoint. Call under the apply lock."""
    with _opened(path, os.O_RDWR) as found:
        if found is None:
            return False
        fd, h, lo, hi = found
        n = secs.shape[0]
        first = (int(secs[0]) - h.year_start) // h.timeframe
        consecutive = int(secs[-1]) - int(secs[0]) == (n - 1) * h.timeframe
        if not consecutive or first < 0 or first + n > h.layout.nslots or list(h.dtypes) != names:
            return False
        for name, v in zip(names, values, strict=True):
            dt = h.dtypes[name]
            _pwrite_all(fd, np.ascontiguousarray(v, dt), h.offsets[name] + first * dt.itemsize)
        _pwrite_all(fd, np.ones(n, np.uint8), h.layout.presence_offset + first)
        new = (first, first + n) if lo == hi else (min(lo, first), max(hi, first + n))
        if new != (lo, hi):
            _pwrite_all(fd, np.array(new, _WATERMARKS), _WATERMARK_OFFSET)
        return True


def reserve_slots(path: Path, runs: list[tuple[int, int]]) -> None:
    """Give the slot spans ``runs`` (``[s0, s1)``) of the year file at ``path`` disk blocks, as
    :meth:`YearFile.reserve <mktsframe.engine.year_file.YearFile.reserve>` does for an open one
    (raises :class:`~mktsframe.errors.NoSpaceError`). Nothing if there is no such file."""
    with _opened(path, os.O_RDWR) as found:
        if found is None:
            return
        fd, h, _, _ = found
        columns = [(h.offsets[name], dt.itemsize) for name, dt in h.dtypes.items()]
        for s0, s1 in runs:
            reserve(fd, slot_ranges(h.layout.presence_offset, columns, max(0, s0), min(s1, h.layout.nslots)), path)


def _pwrite_all(fd: int, arr: np.ndarray, offset: int) -> None:
    view = memoryview(arr).cast("B")
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)
