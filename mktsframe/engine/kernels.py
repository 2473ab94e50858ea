"""Compiled loops over many year files at once: a universe read's cross-section and grid fill.

Why: a read across 5,000 buckets spends about 2 µs of Python per bucket on a cross-section
(11 ms of a 15 ms read), and numpy fills a ``(bars, buckets)`` grid from 25,000 column slices with
strided writes at about a quarter of memory speed. numba (the ``fast`` extra) compiles these loops
to machine code; without it, or with ``MKTS_NO_NUMBA=1`` in the environment, the engine's numpy
paths give the same results (tests compare the two).

The kernels read the mapped year files through raw addresses: :attr:`YearFile.address` plus the
offsets of its layout (:func:`layout_id`, one row of :func:`layout_table` per distinct layout).
That is safe only while no year file in the read can be unmapped: the engine calls them under its
apply lock, the only place a year file is closed (:class:`~mktsframe.engine.open_files.OpenFiles`
evicts under it), and keeps the :class:`YearFile` objects referenced meanwhile.

Watermarks are read from each file's mapping (bytes 32–47: lowest present slot, one past the
highest). They equal what :meth:`YearFile.extent` answers unless a read-only file's marks were
implausible at open (then the file pinned a scanned extent): a kernel that meets implausible marks
reports it and the caller takes the numpy path.
"""

from __future__ import annotations

import mmap
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "MIN_FILES",
    "addresses",
    "available",
    "cross_section",
    "grid_fill",
    "grid_plan",
    "layout_id",
    "layout_table",
    "populate_rows",
    "populate_supported",
    "use",
    "write_rows",
]

#: Reads and writes over at least this many year files take the kernels when numba is installed;
#: smaller ones stay in numpy and Python (which never import numba).
MIN_FILES = 64
#: Where a year file's watermarks live (``year_file._WATERMARK_OFFSET``): two int64 slot numbers.
MARKS_OFFSET = 32

_layouts: dict[tuple[int, ...], int] = {}
_table = np.zeros((0, 0), np.int64)
_layout_lock = threading.Lock()


def layout_id(nslots: int, presence_offset: int, column_offsets: tuple[int, ...]) -> int:
    """A small integer naming this layout: a row of :func:`layout_table` holding ``nslots``, the
    presence offset, then the column offsets (bytes from the start of the file). Files of one
    schema and header size share a row, so a universe read passes one row number per file."""
    key = (nslots, presence_offset, *column_offsets)
    found = _layouts.get(key)
    if found is not None:
        return found
    global _table
    with _layout_lock:
        if key in _layouts:
            return _layouts[key]
        width = max(_table.shape[1], len(key))
        table = np.full((_table.shape[0] + 1, width), -1, np.int64)
        table[: _table.shape[0], : _table.shape[1]] = _table
        table[-1, : len(key)] = key
        _table = table
        _layouts[key] = table.shape[0] - 1
        return _layouts[key]


def layout_table() -> np.ndarray:
    """Every layout :func:`layout_id` has named, one row each (read-only use)."""
    return _table


def use(files: int) -> bool:
    """Whether an operation over ``files`` year files should take the kernels."""
    return files >= MIN_FILES and available()


def addresses(files: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """``(map addresses, layout rows)`` of ``files`` (open :class:`YearFile` objects)."""
    n = len(files)
    return (
        np.fromiter((yf.address for yf in files), np.int64, n),
        np.fromiter((yf.layout_id for yf in files), np.int64, n),
    )


_compiled: Any = None
_compile_lock = threading.Lock()


def available() -> bool:
    """Whether the compiled kernels can run here (numba installed, not disabled). The first call
    imports numba (about 0.3 s); compiled code is cached on disk, so later processes skip the
    compile."""
    if os.environ.get("MKTS_NO_NUMBA"):
        return False
    return _kernels() is not None


def _kernels() -> Any:
    global _compiled
    if _compiled is None:
        with _compile_lock:
            if _compiled is None:
                try:
                    from mktsframe.engine import _kernels_numba as compiled
                except ImportError:
                    compiled = False
                _compiled = compiled
    return _compiled or None


def cross_section(
    bases: np.ndarray, lids: np.ndarray, pos: np.ndarray, cols: list[int], slot: int, outs: list[np.ndarray]
) -> np.ndarray | None:
    """Slot ``slot`` of each file (``bases``: map addresses, ``lids``: layout rows, ``pos``: the
    bucket's row in ``outs``): column ``cols[k]`` into ``outs[k][pos]`` where the bar is present.
    Returns the ``have`` mask over ``outs``' rows, or ``None`` if a file's watermarks are
    implausible (the caller reads with numpy instead)."""
    k = _kernels()
    have = np.zeros(outs[0].shape[0], np.bool_) if outs else np.zeros(0, np.bool_)
    table = layout_table()
    if not k.present_at(bases, lids, pos, table, MARKS_OFFSET, slot, have):
        return None
    for c, out in zip(cols, outs, strict=True):
        k.column_at(out, bases, lids, pos, table, c + 2, slot, have)
    return have


def grid_plan(
    bases: np.ndarray, lids: np.ndarray, g0: int, g1: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Each file's present slots within ``[g0, g1)``: ``(c0, c1, count)`` (``c0 == c1`` and a count
    of 0 where none are), or ``None`` if a file's watermarks are implausible."""
    n = bases.shape[0]
    c0, c1, count = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
    if not _kernels().plan(bases, lids, layout_table(), MARKS_OFFSET, g0, g1, c0, c1, count):
        return None
    return c0, c1, count


def grid_fill(
    out: np.ndarray,
    bases: np.ndarray,
    lids: np.ndarray,
    column: int | None,
    pos: np.ndarray,
    c0: np.ndarray,
    c1: np.ndarray,
    lo: int,
    entries: np.ndarray,
) -> None:
    """For each file in ``entries`` (indices into the other arrays): slots ``[c0, c1)`` of column
    ``column`` (``None``: the presence bytes, as ``bool``) into rows ``[c0 - lo, c1 - lo)`` of
    ``out``'s column ``pos``. ``out`` is C-ordered ``(rows, buckets)``. Releases the GIL."""
    field = 1 if column is None else column + 2
    target = out.view(np.uint8) if column is None else out  # presence: written as 0/1 bytes
    _kernels().fill(target, bases, lids, layout_table(), field, pos, c0, c1, lo, entries)


def write_rows(bases: np.ndarray, lids: np.ndarray, slots: np.ndarray, columns: list[np.ndarray]) -> None:
    """One row into each file: ``columns[k][i]`` (schema order, the files' dtypes) at slot
    ``slots[i]`` of file ``i``, then its presence byte and watermarks (in the map), in that order:
    a reader in another process never sees a present slot before its values. The files must be
    writable, their marks plausible (a writable open repairs them) and the slots' blocks reserved."""
    k = _kernels()
    table = layout_table()
    for c, values in enumerate(columns):
        k.put_column(values, bases, lids, table, c + 2, slots)
    k.publish_slots(bases, lids, table, MARKS_OFFSET, slots)


#: Linux 5.14+: fault pages in writable without storing to them.
_MADV_POPULATE_WRITE = 23
_populate_ok: bool | None = None


def populate_rows(bases: np.ndarray, lids: np.ndarray, slots: np.ndarray, itemsizes: np.ndarray) -> int:
    """Fault in, writable, the pages :func:`write_rows` would store into at ``slots`` (one per file;
    ``itemsizes``: the columns' item sizes, schema order), without storing anything: Linux's
    ``MADV_POPULATE_WRITE`` (5.14+). A store to a page the kernel has written back faults into the
    file system (ext4's ``page_mkwrite``, a few µs a page: 150 ms for a 5,000-bucket row); after
    this the store does not. Returns how many pages could not be populated (all of them on an older
    kernel: see :func:`populate_supported`). Releases the GIL."""
    k = _kernels()
    return int(k.populate_rows(bases, lids, layout_table(), MARKS_OFFSET, slots, itemsizes, mmap.PAGESIZE,
                               _MADV_POPULATE_WRITE))  # fmt: skip


def populate_supported() -> bool:
    """Whether :func:`populate_rows` can work here: Linux 5.14 or newer, probed once on a page of
    anonymous memory (an older kernel refuses the advice with ``EINVAL``; elsewhere the number
    means something else, so only Linux is asked)."""
    global _populate_ok
    if _populate_ok is None:
        ok = sys.platform.startswith("linux")
        if ok:
            probe = mmap.mmap(-1, mmap.PAGESIZE)
            try:
                probe.madvise(_MADV_POPULATE_WRITE)
            except OSError:
                ok = False
            finally:
                probe.close()
        _populate_ok = ok
    return _populate_ok
