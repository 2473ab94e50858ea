"""The year files a cross-section write stores into, kept for the next minute of the same buckets.

A feed writes one bar to each of the same 5,000 buckets every minute. :class:`CrossSectionFiles`
holds what that write needs and would otherwise look up bucket by bucket: each bucket's year file,
its year's bounds, the slots known to have disk blocks, the maps' addresses for the compiled
kernels, the files' ids for the open-file set, and the log record's packed metadata. The engine's
cross-section write (``EngineWrites._cross_section_plan``) builds one and reuses it while it holds.
"""

from __future__ import annotations

import numpy as np

from mktsframe.engine import kernels
from mktsframe.engine.catalog import Bucket
from mktsframe.engine.many import cross_section_meta
from mktsframe.engine.open_files import OpenFiles
from mktsframe.engine.wal import WriteAheadLog
from mktsframe.engine.year_file import YearFile, rows_written

__all__ = ["CrossSectionFiles"]


class CrossSectionFiles:
    """The year file each bucket of a cross-section writes into (its last-written one), with what
    checking and storing a row in each needs as arrays: years' first and last bar starts, the
    slots known to have disk blocks, and the maps' addresses for the kernels. Stale entries are
    harmless: :meth:`slots` refuses what the arrays do not cover, and :meth:`store_rows` stores
    only while every file is still open (the caller falls back). A file that is no longer its
    bucket's last-written one but still open is the right place for a bar of its year all the same.
    ``closed``: the open-file set's :attr:`~OpenFiles.closed` count before ``files`` were looked up."""

    def __init__(self, buckets: list[Bucket], files: list[YearFile], open_files: OpenFiles, closed: int) -> None:
        n = len(files)
        self.buckets = buckets
        self.files = files
        self.open_files = open_files
        self.closed = closed
        self.touched: int | None = None  # the open-file set's order stamp after the last write
        self.marked: int | None = None  # the engine's checkpoint count when files were last marked
        self.year_start = np.fromiter((yf.year_start for yf in files), np.int64, n)
        self.year_end = np.fromiter((yf.year_end for yf in files), np.int64, n)
        # Blocks once reserved stay allocated (slots are cleared by writing zeros, never punched).
        spans = np.array([yf.reserved_span for yf in files], np.int64).reshape(n, 2)
        self.reserved_from, self.reserved_to = spans[:, 0].copy(), spans[:, 1].copy()
        self.addresses = kernels.addresses(files) if kernels.use(n) else None
        self.file_ids = [id(yf) for yf in files]
        self._log_meta: dict[tuple[str, ...], bytes] = {}

    def log_meta(self, wal: WriteAheadLog, record: list[np.ndarray]) -> bytes:
        """The packed metadata of this cross-section's log ``record`` (its keys, ~100 KB for 5,000
        buckets, packed in ~1 ms), packed once per column dtypes: the same every minute."""
        shape = tuple(a.dtype.str for a in record)
        packed = self._log_meta.get(shape)
        if packed is None:
            meta = cross_section_meta([b.item_key for b in self.buckets], len(record) - 2)
            packed = self._log_meta[shape] = wal.pack_meta(meta, record)
        return packed

    def slots(self, secs: np.ndarray, timeframe: int) -> np.ndarray | None:
        """Each bucket's slot for its bar at ``secs`` (bar starts, seconds, key order), or ``None``
        if a bar falls outside its file's year or outside the slots with blocks."""
        if not ((self.year_start <= secs) & (secs < self.year_end)).all():
            return None
        slots = (secs - self.year_start) // timeframe
        if not ((self.reserved_from <= slots) & (slots < self.reserved_to)).all():
            return None
        return slots

    def store_rows(self, slots: np.ndarray, arrays: list[np.ndarray], checkpoints: int) -> bool:
        """:meth:`YearFile.write_row` into every file at once in the compiled kernels (a universe's
        minute: 5,000 rows in about 2 ms, most of it the first store to each clean page, instead
        of ~25 ms of Python), when they apply and no file was closed since the files were looked
        up; ``False`` (nothing stored) otherwise. Under the apply lock (no file closes meanwhile).

        The files are marked for the next checkpoint once per ``checkpoints`` (the engine's count
        of checkpoints begun: only a checkpoint clears the marks, it holds the write lock as writers
        do, and it counts itself before clearing any): a loop over 5,000 files costs ~1.5 ms, and a
        feed writes several minutes between checkpoints."""
        if self.addresses is None or self.open_files.closed != self.closed or not kernels.available():
            return False
        kernels.write_rows(*self.addresses, slots, arrays)
        if self.marked != checkpoints:
            rows_written(self.files)
            self.marked = checkpoints
        return True
