"""The directory tree: one directory per bucket, ``root/SYMBOL/TIMEFRAME/ATTRGROUP/``.

A bucket directory holds ``bucket.json`` (key, timeframe, record type, schema) and one
``YEAR.bin`` per year with data. Nothing is loaded at startup: a key maps straight to its
directory (O(1)), bucket metadata and year files are opened on first use, and only listing walks
the tree (three ``scandir`` levels; 10,000 buckets list in tens of milliseconds).
Engine files live in ``root/.mkts/``, which no key can name (key parts may not start with a dot).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mktsframe.dtypes import Schema, dtype_of
from mktsframe.engine.durable import fsync_dir, write_atomic
from mktsframe.engine.listing import NumberedFiles
from mktsframe.engine.open_files import OpenFiles
from mktsframe.engine.tick_file import TickStore
from mktsframe.engine.year_file import YearFile, year_bounds
from mktsframe.errors import CorruptFileError, SchemaMismatchError
from mktsframe.keys import TimeBucketKey, parse_key

__all__ = [
    "Bucket",
    "check_limit",
    "iter_bucket_keys",
    "parse_bucket_meta",
    "query_columns",
    "read_bucket_meta",
    "write_bucket_meta",
]

META_NAME = "bucket.json"
FORMAT = "mktsframe-bucket"


RECORD_TYPES = ("fixed", "variable")


def write_bucket_meta(
    directory: Path, key: TimeBucketKey, schema: Schema, record_type: str = "fixed", *, durable: bool = True
) -> None:
    """Create the bucket directory and its metadata atomically (temp file, rename, fsync).

    ``record_type`` is ``"fixed"`` (one row per bar, year files) or ``"variable"`` (ticks: any number
    of rows per interval at exact nanoseconds, day partitions; see :mod:`.tick_file`).
    ``durable=False``: no ``fsync``; the caller makes many at once durable with ``sync_filesystem``.
    """
    if record_type not in RECORD_TYPES:
        raise ValueError(f"record type must be one of {RECORD_TYPES}, got {record_type!r}")
    directory.mkdir(parents=True, exist_ok=True, mode=0o770)
    meta = {
        "format": FORMAT,
        "version": 1,
        "key": key.item_key,
        "timeframe": key.timeframe.name,
        "timeframe_seconds": key.timeframe.seconds,
        "record_type": record_type,
        "columns": [[n, t] for n, t in schema],
    }
    write_atomic(directory / META_NAME, json.dumps(meta, indent=1).encode(), durable=durable)
    for d in (directory.parent, directory.parent.parent, directory.parent.parent.parent) if durable else ():
        fsync_dir(d)  # the new symbol/timeframe/group directories themselves


def read_bucket_meta(directory: Path) -> dict[str, Any] | None:
    """The bucket's metadata, ``None`` if the directory is not a bucket."""
    try:
        raw = (directory / META_NAME).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return parse_bucket_meta(raw, directory / META_NAME)


def parse_bucket_meta(raw: bytes, where: object) -> dict[str, Any]:
    """A ``bucket.json``'s bytes, checked, with ``schema`` added; ``where`` names it in errors."""
    try:
        meta = json.loads(raw)
        if meta.get("format") != FORMAT:
            raise ValueError("format")
        meta["schema"] = tuple((str(n), str(t)) for n, t in meta["columns"])
        if meta.setdefault("record_type", "fixed") not in RECORD_TYPES:
            raise ValueError(f"record_type {meta['record_type']!r}")
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptFileError(f"{where}: unreadable bucket metadata ({exc})") from None
    return meta


def check_limit(limit: object) -> None:
    """A query's ``limit``: ``None`` or a non-negative integer (``ValueError`` otherwise)."""
    if limit is not None and (not isinstance(limit, (int, np.integer)) or limit < 0):
        raise ValueError(f"limit must be a non-negative integer, got {limit!r}")


def query_columns(key: str, names: list[str], columns: Sequence[str] | None) -> list[str]:
    """The columns a query of bucket ``key`` (columns ``names``) returns: all, or those asked for in
    that order (``Epoch``, always returned as the index, is accepted and dropped). Raises
    :class:`SchemaMismatchError` naming the unknown ones."""
    if columns is None:
        return names
    wanted = list(columns)
    unknown = [c for c in wanted if c not in names and c != "Epoch"]
    if unknown:
        raise SchemaMismatchError(f"bucket {key!r} has no column(s) {unknown}; it has {names}")
    return [c for c in wanted if c != "Epoch"]


def iter_bucket_keys(root: Path) -> Iterator[TimeBucketKey]:
    """Every bucket under ``root`` (directories with valid names and a ``bucket.json``)."""
    for sym in _subdirs(root):
        for tf in _subdirs(sym):
            for grp in _subdirs(tf):
                if (Path(grp.path) / META_NAME).is_file():
                    try:
                        yield parse_key(f"{sym.name}/{tf.name}/{grp.name}")
                    except ValueError:
                        continue  # a foreign directory that is not a valid key


def _subdirs(path: Path | os.DirEntry[str]) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return [e for e in it if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _year_of_name(name: str) -> int | None:
    stem, _, ext = name.partition(".")
    return int(stem) if ext == "bin" and stem.lstrip("-").isdigit() else None


_SCHEMAS: dict[Schema, Schema] = {}


def _interned(schema: Schema) -> Schema:
    """One shared object per distinct schema, so that comparing the schemas of a universe's
    thousands of buckets (all alike) is an identity check. Bounded by the distinct schemas."""
    return _SCHEMAS.setdefault(schema, schema)


class Bucket:
    """One bucket's metadata and its lazily opened year files.

    Year files count against the engine's :class:`~mktsframe.engine.open_files.OpenFiles`: opening
    one may close the least recently used file of any bucket, and this bucket forgets a year file
    that was closed to make room (it is opened again on its next use). ``on_dirty_close`` receives
    the path of a year file closed with changes not yet ``msync``'d, for the next checkpoint.
    """

    def __init__(
        self,
        key: TimeBucketKey,
        directory: Path,
        meta: dict[str, Any],
        writable: bool,
        files: OpenFiles | None = None,
        on_dirty_close: Callable[[Path], None] | None = None,
        *,
        hold_ticks_while_dirty: bool = False,
    ) -> None:
        self.key = key
        self.item_key = key.item_key  # built from its parts on every access: cached for the write path
        self.dir = directory
        self.schema: Schema = _interned(meta["schema"])
        self.names = [n for n, _ in self.schema]
        self.dtypes = {n: dtype_of(t) for n, t in self.schema}
        #: The column dtypes in schema order (what a write's columns are checked against first).
        self.dtype_list = tuple(self.dtypes[n] for n in self.names)
        #: Bytes of one row's values (all columns).
        self.row_bytes = sum(dt.itemsize for dt in self.dtype_list)
        self.timeframe = key.timeframe.seconds
        self.writable = writable
        self.files = files if files is not None else OpenFiles()
        self._on_dirty_close = on_dirty_close
        self.record_type: str = meta["record_type"]
        #: The tick partitions of a variable-length bucket (``None`` for fixed buckets).
        self.ticks: TickStore | None = None
        if self.record_type == "variable":
            self.ticks = TickStore(
                directory, key.item_key, self.schema, writable, self.files, hold_while_dirty=hold_ticks_while_dirty
            )
        self._years: dict[int, YearFile] = {}
        #: The year file of the latest write: appends land there again, skipping calendar maths.
        self.last_written: YearFile | None = None
        self._year_list = NumberedFiles(directory, _year_of_name, owner=writable)

    def years(self) -> list[int]:
        """Years that have a file, ascending (re-listed when the directory changes)."""
        return self._year_list.get()

    def open_year(self, year: int) -> YearFile | None:
        """The year file if it is open now (marked most recently used), else ``None``: opens nothing."""
        yf = self._years.get(year)
        if yf is not None:
            self.files.touch(yf)
        return yf

    def year_file(self, year: int, *, create: bool = False, durable: bool = True) -> YearFile | None:
        """The open year file (opened now if needed, possibly closing another bucket's least recently
        used one: call under the engine's apply lock); ``None`` if there is none and not ``create``."""
        yf = self._years.get(year)
        if yf is not None:
            self.files.touch(yf)
            return yf
        path = self.dir / f"{year}.bin"
        self.files.reserve()
        if path.exists():
            yf = YearFile.open(path, writable=self.writable)
            if yf.schema != self.schema or yf.timeframe != self.timeframe:
                raise CorruptFileError(f"{path}: header schema/timeframe disagrees with {self.dir / META_NAME}")
        elif create:
            yf = YearFile.create(path, self.key.item_key, self.timeframe, year, self.schema, durable=durable)
            self._year_list.invalidate()
        else:
            return None
        self._years[year] = yf
        yf.evicted = functools.partial(self._evict_year, year)  # type: ignore[method-assign]
        self.files.add(yf)
        return yf

    def _evict_year(self, year: int) -> None:
        """Called by :class:`OpenFiles` (under the apply lock) when year ``year``'s file is closed to make room."""
        yf = self._years.pop(year, None)
        if yf is None:
            return
        if self.last_written is yf:
            self.last_written = None
        if yf.dirty and self._on_dirty_close is not None:
            self._on_dirty_close(yf.path)
        yf.close()

    def open_years(self) -> list[YearFile]:
        return list(self._years.values())

    def close(self) -> None:
        self.last_written = None
        if self.ticks is not None:
            self.ticks.close()
        for yf in self._years.values():
            self.files.discard(yf)
            yf.close()
        self._years.clear()

    def year_range(self, start_s: int | None, end_s: int | None) -> list[int]:
        """Years with a file that can hold bars in ``[start_s, end_s]`` (seconds, inclusive)."""
        years = self.years()
        if start_s is not None:
            years = [y for y in years if year_bounds(y)[1] > start_s]
        if end_s is not None:
            years = [y for y in years if year_bounds(y)[0] <= end_s]
        return years
