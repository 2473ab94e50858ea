"""Loading CSV files into a bucket: MarketStore's loader control files and plain CSVs with a header.

A load is **all or nothing**: the whole file is parsed and checked first (streamed in chunks of
``chunk_rows`` lines, with a tqdm progress bar: on stderr, or as a widget in a notebook), and
only then written in one call, which
the engine applies as one atomic write-ahead-log record. A bad row stops the load with its line
number and nothing is written.

Description file (MarketStore's YAML control file, every key optional)::

    firstRowHasColumnNames: true      # default false when a description is given
    timeFormat: "20060102 15:04:05"   # a Go layout, or "timestamp" (Unix seconds[.fraction])
    timeZone: "US/Eastern"            # zone of times without an offset (default UTC)
    columnNameMap: [Epoch, Open, High, Low, Close, Volume]   # names by position (renames a header)
    truncateStrings: false            # mktsframe: cut string16 values to 16 characters (see below)

Without a description the first row must be a header. The time comes from a column named
``Epoch`` (any case) or from ``Epoch-date`` + ``Epoch-time`` columns joined with a space; other
columns are matched to the bucket's by name, case-insensitively, and extra columns are ignored.
Without ``timeFormat`` the format is detected from the first row: Unix seconds, MarketStore's
default ``1/2/2006 3:04:05 PM``, or ISO 8601. As in MarketStore, a time with a trailing
``" 140000"`` (7 characters more than the layout) is read as microseconds and with 3 characters
more as milliseconds.

``string16`` columns hold at most 16 characters. MarketStore silently truncated longer values;
a load refuses them by default, naming the line. ``truncateStrings: true`` (or
``load_csv(truncate_strings=True)``, ``\\load ... --truncate-strings``, ``mktsframe load
--truncate-strings``) cuts them to 16 characters instead and reports how many were cut
(:attr:`LoadResult.truncated`).

Units: times become int64 ns UTC; fixed buckets keep the bar start (sub-bar parts are floored).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import yaml

from mktsframe.backend import Backend, default_backend
from mktsframe.backend.base import Batch
from mktsframe.dtypes import WIRE_TYPES, coerce_column
from mktsframe.errors import BucketNotFoundError, MktsError, SchemaMismatchError

__all__ = ["CsvDescription", "CsvLoadError", "LoadResult", "go_layout_to_strptime", "load_csv"]

#: MarketStore's loader default time layout (Go syntax).
DEFAULT_GO_LAYOUT = "1/2/2006 3:04:05 PM"
_GO_TOKENS = sorted(
    {
        "January": "%B", "Monday": "%A", "Jan": "%b", "Mon": "%a", "MST": "%Z",
        "Z07:00": "%z", "-07:00": "%z", "Z0700": "%z", "-0700": "%z", "Z07": "%z", "-07": "%z",
        "2006": "%Y", "06": "%y", "01": "%m", "1": "%m", "02": "%d", "_2": "%d", "2": "%d",
        "15": "%H", "03": "%I", "3": "%I", "04": "%M", "4": "%M", "05": "%S", "5": "%S", "PM": "%p", "pm": "%p",
    }.items(),
    key=lambda kv: -len(kv[0]),
)  # fmt: skip
_FRACTION = re.compile(r"[.,](0+|9+)")
_NUMBER = re.compile(r"^\s*-?\d+(\.\d*)?\s*$")
_EMPTY = np.array([], dtype=object)


class CsvLoadError(MktsError, ValueError):
    """A CSV file could not be loaded; ``line`` is the 1-based line of the bad row when known."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


@dataclass(frozen=True)
class CsvDescription:
    """How to read a CSV file (MarketStore's loader control file; see the module docstring)."""

    first_row_has_column_names: bool = True
    time_format: str | None = None
    """A Go layout (``"2006-01-02 15:04:05"``), ``"timestamp"``, or ``None`` to detect it."""
    time_zone: str = "UTC"
    column_name_map: tuple[str, ...] | None = None
    truncate_strings: bool = False
    """Cut ``string16`` values longer than 16 characters (counted) instead of refusing the load."""

    @classmethod
    def from_yaml(cls, source: str | os.PathLike[str]) -> CsvDescription:
        """Read a control file (MarketStore's keys; ``firstRowHasColumnNames`` defaults to false)."""
        path = Path(source)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise CsvLoadError(f"cannot read the description file {path}: {exc}") from None
        if not isinstance(data, dict):
            raise CsvLoadError(f"{path}: a description file must be a YAML mapping")
        known = {"firstrowhascolumnnames", "timeformat", "timezone", "columnnamemap", "truncatestrings"}
        folded = {str(k).lower(): v for k, v in data.items()}
        unknown = sorted(str(k) for k in data if str(k).lower() not in known)
        if unknown:
            raise CsvLoadError(
                f"{path}: unknown keys {unknown} (known: firstRowHasColumnNames, timeFormat, timeZone, "
                "columnNameMap, truncateStrings)"
            )
        names = folded.get("columnnamemap")
        if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
            raise CsvLoadError(f"{path}: columnNameMap must be a list of column names")
        header = folded.get("firstrowhascolumnnames", False)
        if not isinstance(header, bool):
            raise CsvLoadError(f"{path}: firstRowHasColumnNames must be true or false")
        tz = folded.get("timezone") or "UTC"
        fmt = folded.get("timeformat")
        if fmt is not None and not isinstance(fmt, str):
            raise CsvLoadError(f"{path}: timeFormat must be a string")
        truncate = folded.get("truncatestrings", False)
        if not isinstance(truncate, bool):
            raise CsvLoadError(f"{path}: truncateStrings must be true or false")
        desc = cls(header, fmt or None, str(tz), tuple(names) if names is not None else None, truncate)
        desc.check()
        return desc

    def check(self) -> None:
        """Refuse descriptions that cannot work (MarketStore's "not enough info" case, bad zone)."""
        if not self.first_row_has_column_names and not self.column_name_map:
            raise CsvLoadError(
                "not enough info to map bucket columns to the CSV file: set firstRowHasColumnNames or columnNameMap"
            )
        try:
            pd.Timestamp("2000-01-01").tz_localize(self.time_zone)
        except Exception:
            raise CsvLoadError(f"unknown timeZone {self.time_zone!r} (use an IANA name like 'US/Eastern')") from None


@dataclass(frozen=True)
class LoadResult:
    """What a load wrote: rows and the first/last time (int64 ns UTC, ``None`` if no rows), and how
    many ``string16`` values were cut to 16 characters (only with ``truncate_strings``)."""

    key: str
    rows: int
    first: int | None
    last: int | None
    seconds: float
    truncated: int = 0


def go_layout_to_strptime(layout: str) -> str:
    """Translate a Go time layout (``"20060102 15:04:05"``) into a ``strptime`` format."""
    out = []
    i = 0
    while i < len(layout):
        m = _FRACTION.match(layout, i)
        if m and out and out[-1] == "%S":
            out.append(".%f")
            i = m.end()
            continue
        for token, code in _GO_TOKENS:
            if layout.startswith(token, i):
                out.append(code)
                i += len(token)
                break
        else:
            out.append("%%" if layout[i] == "%" else layout[i])
            i += 1
    return "".join(out)


class _Progress:
    """A tqdm bar over the file's bytes, with the rows parsed so far (``tqdm.auto``: a widget in
    a notebook, a text bar on stderr elsewhere)."""

    def __init__(self, path: Path, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=path.stat().st_size, desc=f"loading {path.name}", unit="B", unit_scale=True,
                        unit_divisor=1024, disable=not enabled, file=sys.stderr, mininterval=0.2)  # fmt: skip
        self.pos = 0

    def update(self, pos: int, rows: int) -> None:
        self.bar.set_postfix_str(f"{rows:,} rows", refresh=False)
        self.bar.update(pos - self.pos)
        self.pos = pos

    def close(self) -> None:
        self.bar.close()


def _interactive() -> bool:
    """Whether a person is watching: stderr is a terminal, or this runs in a Jupyter kernel (where
    ``tqdm.auto`` draws a widget)."""
    return sys.stderr.isatty() or "ipykernel" in sys.modules


@dataclass
class _Strings:
    """How ``string16`` values longer than 16 characters are handled, and how many were cut."""

    truncate: bool
    cut: int = 0


@dataclass
class _Layout:
    """Where things are in the file: positions of the time field(s) and of each bucket column."""

    header_lines: int
    time_cols: list[int]
    columns: dict[str, int]
    n_fields: int


def _layout(path: Path, desc: CsvDescription, bucket_columns: Sequence[str] | None) -> _Layout:
    with path.open("r", encoding="utf-8", newline="") as f:
        first = f.readline()
    if not first:
        raise CsvLoadError(f"{path} is empty")
    import csv

    row = next(csv.reader([first]))
    names = [n.strip() for n in row] if desc.first_row_has_column_names else [""] * len(row)
    if desc.column_name_map:
        if desc.first_row_has_column_names and len(desc.column_name_map) > len(names):
            raise CsvLoadError(
                f"columnNameMap has {len(desc.column_name_map)} names but the file has {len(names)} columns"
            )
        if not desc.first_row_has_column_names:
            names = list(desc.column_name_map) + [""] * max(0, len(row) - len(desc.column_name_map))
        else:
            names = [m or n for m, n in zip(desc.column_name_map, names, strict=False)] + names[
                len(desc.column_name_map) :
            ]
    folded = {n.lower(): i for i, n in reversed(list(enumerate(names))) if n}
    if "epoch" in folded:
        time_cols = [folded["epoch"]]
    elif "epoch-date" in folded and "epoch-time" in folded:
        time_cols = [folded["epoch-date"], folded["epoch-time"]]
    else:
        raise CsvLoadError(f"{path}: no 'Epoch' column (or 'Epoch-date' and 'Epoch-time') among {names}")
    skip = {n.lower() for n in ("Epoch", "Epoch-date", "Epoch-time")}
    wanted = list(bucket_columns) if bucket_columns is not None else [n for n in names if n and n.lower() not in skip]
    columns: dict[str, int] = {}
    missing = []
    for name in wanted:
        if name.lower() in folded:
            columns[name] = folded[name.lower()]
        else:
            missing.append(name)
    if missing:
        raise CsvLoadError(f"{path}: no CSV column for bucket column(s) {missing} (CSV columns: {names})")
    return _Layout(1 if desc.first_row_has_column_names else 0, time_cols, columns, len(row))


class _TimeParser:
    """Turns the time field(s) of a chunk into int64 ns UTC; the format is fixed on the first row."""

    def __init__(self, desc: CsvDescription) -> None:
        self.desc = desc
        self.kind: str | None = None  # "timestamp" | "strptime" | "iso"
        self.fmt: str | None = None
        self.suffix = 0  # MarketStore's trailing ms (3) / µs (7) characters

    def _decide(self, sample: str) -> None:
        fmt = self.desc.time_format
        if fmt == "timestamp" or (fmt is None and _NUMBER.match(sample)):
            self.kind = "timestamp"
            return
        candidates = [go_layout_to_strptime(fmt)] if fmt else [go_layout_to_strptime(DEFAULT_GO_LAYOUT), None]
        for cand in candidates:
            for suffix in (0, 3, 7) if cand else (0,):
                text = sample[: len(sample) - suffix] if suffix else sample
                try:
                    if cand is None:
                        pd.to_datetime([text], format="ISO8601", utc=True)
                    else:
                        pd.to_datetime([text], format=cand)
                except (ValueError, TypeError):
                    continue
                self.kind, self.fmt, self.suffix = ("strptime" if cand else "iso"), cand, suffix
                return
        shown = f"timeFormat {fmt!r}" if fmt else "Unix seconds, '1/2/2006 3:04:05 PM' or ISO 8601"
        raise ValueError(f"cannot read time {sample!r} as {shown}")

    def parse(self, text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(ns, bad)``: ns per row and a mask of rows whose time could not be read."""
        if self.kind is None:
            self._decide(str(text[0]))
        s = pd.Series(text, dtype=object)
        if self.kind == "timestamp":
            parts = s.str.strip().str.partition(".")
            secs = pd.to_numeric(parts[0], errors="coerce")
            frac = parts[2].str.ljust(9, "0").str[:9]
            nanos = pd.to_numeric(frac.where(frac != "000000000", "0"), errors="coerce")
            bad = (secs.isna() | nanos.isna() | ~parts[2].str.fullmatch(r"\d*")).to_numpy().copy()
            ns = np.where(
                bad, 0, secs.fillna(0).to_numpy(np.int64) * 1_000_000_000 + nanos.fillna(0).to_numpy(np.int64)
            )
            return ns.astype(np.int64), bad
        extra = None
        if self.suffix:
            body, tail = s.str[: -self.suffix], s.str[-self.suffix :]
            extra = pd.to_numeric(tail.str.strip(), errors="coerce")
            unit = 1_000 if self.suffix == 7 else 1_000_000
            s = body
        if self.kind == "iso":
            parsed = pd.to_datetime(s, format="ISO8601", utc=True, errors="coerce")
        else:
            parsed = pd.to_datetime(s, format=self.fmt, errors="coerce")
            if parsed.dt.tz is None:
                parsed = parsed.dt.tz_localize(self.desc.time_zone, ambiguous="NaT", nonexistent="NaT")
        bad = parsed.isna().to_numpy().copy()
        ns = parsed.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("M8[ns]").view(np.int64).copy()
        if extra is not None:
            bad |= extra.isna().to_numpy()
            ns += extra.fillna(0).to_numpy(np.int64) * unit
        ns[bad] = 0
        return ns, bad


def _target_types(backend: Backend, key: str, create: bool) -> dict[str, str] | None:
    """The bucket's ``{column: wire type}``; ``None`` if it is missing and may be created."""
    try:
        probe = backend.query(key, limit=0)
    except BucketNotFoundError:
        if create:
            return None
        raise
    (batch,) = probe.values()
    out = {}
    for name, values in batch.columns.items():
        dt = np.asarray(values).dtype
        out[name] = next(t for t, d in WIRE_TYPES.items() if d == dt)
    return out


def _read(handle: IO[bytes], layout: _Layout, typed: dict[int, Any], chunk_rows: int) -> Any:
    # No usecols: without it pandas reports rows with too many fields (and their line numbers).
    dtype: dict[int, Any] = dict.fromkeys(range(layout.n_fields), object)
    dtype.update(typed)
    return pd.read_csv(
        handle, header=None, skiprows=layout.header_lines, dtype=dtype, chunksize=chunk_rows,
        na_filter=False, skip_blank_lines=False, engine="c", encoding="utf-8",
    )  # fmt: skip


def _bad(message: str, first_line: int, offset: int) -> CsvLoadError:
    line = first_line + offset
    return CsvLoadError(f"line {line}: {message}; nothing was written", line=line)


def _parse_chunk(
    chunk: pd.DataFrame, layout: _Layout, types: dict[str, str], times: _TimeParser, first_line: int, strict: bool,
    strings: _Strings,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Times and typed columns of one chunk; raises :class:`CsvLoadError` at the first bad row."""
    tcols = [chunk[c].to_numpy() for c in layout.time_cols]
    if strict:
        empty_row = np.ones(len(chunk), bool)
        for c in chunk.columns:
            col = chunk[c]
            empty_row &= (col.isna() | (col.astype(str).str.strip() == "")).to_numpy()
        if empty_row.any():  # blank lines: skipped, but still counted for line numbers
            keep = ~empty_row
            chunk, tcols = chunk[keep], [t[keep] for t in tcols]
            lines = np.flatnonzero(keep)
        else:
            lines = None
        for name, i in [("Epoch", c) for c in layout.time_cols] + list(layout.columns.items()):
            missing = chunk[i].isna().to_numpy()
            if missing.any():
                at = int(np.argmax(missing))
                raise _bad(f"missing field for {name!r} (too few fields)", first_line, _line(lines, at))
    else:
        lines = None
    text = (
        tcols[0]
        if len(tcols) == 1
        else (pd.Series(tcols[0], dtype=object) + " " + pd.Series(tcols[1], dtype=object)).to_numpy()
    )
    if len(text) == 0:
        return np.empty(0, np.int64), {n: np.empty(0, WIRE_TYPES[t]) for n, t in types.items()}
    try:
        ns, bad = times.parse(text)
    except ValueError as exc:
        raise _bad(str(exc), first_line, _line(lines, 0)) from None
    if bad.any():
        at = int(np.argmax(bad))
        raise _bad(f"cannot read time {text[at]!r}", first_line, _line(lines, at))
    out: dict[str, np.ndarray] = {}
    for name, t in types.items():
        raw = chunk[layout.columns[name]]
        out[name] = _column(name, raw, t, first_line, lines, strings)
    return ns, out


def _line(lines: np.ndarray | None, at: int) -> int:
    return int(lines[at]) if lines is not None else at


def _column(
    name: str, raw: pd.Series, wire: str, first_line: int, lines: np.ndarray | None, strings: _Strings
) -> np.ndarray:
    dt = WIRE_TYPES[wire]
    values = raw.to_numpy()
    if values.dtype != object:  # typed fast path: pandas already parsed it
        try:
            return coerce_column(name, values, wire)
        except SchemaMismatchError as exc:
            raise CsvLoadError(f"{exc}; nothing was written") from None
    if dt.kind == "U":
        text = raw.astype(str).str.strip()
        long = (text.str.len() > 16).to_numpy()
        if long.any():
            if not strings.truncate:
                at = int(np.argmax(long))
                raise _bad(f"column {name!r}: {text.iloc[at]!r} is longer than 16 characters (MarketStore cut such "
                           "values; to do the same, set truncateStrings or --truncate-strings)",
                           first_line, _line(lines, at))  # fmt: skip
            strings.cut += int(long.sum())
            text = text.str[:16]
        return text.to_numpy().astype(dt)
    if dt.kind == "b":
        low = raw.astype(str).str.strip().str.lower()
        ok = low.isin(["true", "false", "1", "0"]).to_numpy()
        if not ok.all():
            at = int(np.argmax(~ok))
            raise _bad(f"column {name!r}: {raw.iloc[at]!r} is not a boolean", first_line, _line(lines, at))
        return low.isin(["true", "1"]).to_numpy()
    text = raw.astype(str).str.strip()
    nums = pd.to_numeric(text, errors="coerce")
    bad = nums.isna().to_numpy() & ~text.str.lower().isin(["nan"]).to_numpy()
    if dt.kind in "iu":
        bad |= nums.isna().to_numpy()
        arr = nums.to_numpy()
        if arr.dtype.kind == "f":
            bad |= ~np.isnan(arr) & (arr != np.round(arr))
    if bad.any():
        at = int(np.argmax(bad))
        kind = "an integer" if dt.kind in "iu" else "a number"
        what = "empty field" if text.iloc[at] == "" else f"{raw.iloc[at]!r} is not {kind}"
        raise _bad(f"column {name!r}: {what}", first_line, _line(lines, at))
    arr = nums.to_numpy()
    if dt.kind in "iu" and arr.dtype.kind == "f":
        arr = arr.astype(np.int64)
    try:
        return coerce_column(name, arr, wire)
    except SchemaMismatchError as exc:
        raise CsvLoadError(f"{exc}; nothing was written") from None


def _infer_types(path: Path, layout: _Layout) -> dict[str, str]:
    """Column types for a new bucket: ``f8`` for every column (exact for integers up to 2**53).

    Checks the first rows so a text column fails early with a hint instead of at a later row.
    """
    sample = pd.read_csv(path, header=None, skiprows=layout.header_lines, nrows=1000, dtype=str, na_filter=False)
    for name, i in layout.columns.items():
        text = sample[i].astype(str).str.strip() if i in sample.columns else pd.Series([], dtype=str)
        nums = pd.to_numeric(text, errors="coerce")
        if (nums.isna() & ~text.str.lower().eq("nan")).any():
            raise CsvLoadError(
                f"{path}: column {name!r} is not numeric; create the bucket first "
                "(e.g. \\create KEY Name/string16 fixed) to load text"
            )
    return dict.fromkeys(layout.columns, "f8")


def load_csv(
    key: str,
    path: str | os.PathLike[str],
    description: CsvDescription | str | os.PathLike[str] | None = None,
    *,
    backend: Backend | None = None,
    create: bool = True,
    chunk_rows: int = 1_000_000,
    progress: bool | None = None,
    truncate_strings: bool | None = None,
) -> LoadResult:
    """Load a CSV file into bucket ``key``, all or nothing.

    Parameters
    ----------
    key : str
        ``SYMBOL/TIMEFRAME/ATTRGROUP``.
    path : path
        The CSV file (UTF-8, comma-separated).
    description : CsvDescription or path to a YAML control file, optional
        How to read the file; default: the first row is a header, the time format is detected.
    backend : Backend, optional
        Where to write (default: the default backend).
    create : bool
        If the bucket is missing, create it from the CSV's columns (integers → ``i8``, other
        numbers → ``f8``); with ``False`` a missing bucket raises ``BucketNotFoundError``.
    chunk_rows : int
        Lines parsed at a time (bounds the parser's temporary memory, not the staged rows).
    progress : bool, optional
        Show a tqdm progress bar (default: when stderr is a terminal or in a Jupyter kernel).
    truncate_strings : bool, optional
        Cut ``string16`` values longer than 16 characters and count them in
        :attr:`LoadResult.truncated` (default: the description's ``truncateStrings``, else refuse
        the load at the first such value).

    Raises
    ------
    CsvLoadError
        A bad row (``.line`` is its 1-based line number), a missing column, a bad description.
    """
    t0 = time.perf_counter()
    path = Path(path)
    if not path.is_file():
        raise CsvLoadError(f"no such file: {path}")
    if isinstance(description, (str, os.PathLike)):
        desc = CsvDescription.from_yaml(description)
    else:
        desc = description or CsvDescription()
        desc.check()
    be = backend if backend is not None else default_backend()
    existing = _target_types(be, key, create)
    layout = _layout(path, desc, list(existing) if existing is not None else None)
    types = existing if existing is not None else _infer_types(path, layout)
    show = _interactive() if progress is None else progress
    truncate = desc.truncate_strings if truncate_strings is None else truncate_strings
    strings = _Strings(truncate)
    try:
        index, columns = _parse_file(path, layout, types, desc, chunk_rows, show, strings, strict=False)
    except _Retry:
        strings = _Strings(truncate)
        index, columns = _parse_file(path, layout, types, desc, chunk_rows, show, strings, strict=True)
    if existing is None and len(index) == 0:
        raise CsvLoadError(f"{path} has no data rows to create {key!r} from")
    be.write(key, Batch(index, columns))
    first, last = (int(index.min()), int(index.max())) if len(index) else (None, None)
    return LoadResult(key, len(index), first, last, time.perf_counter() - t0, strings.cut)


class _Retry(Exception):
    """The typed fast path hit something it cannot explain; re-read as text to find the row."""


def _parse_file(
    path: Path,
    layout: _Layout,
    types: dict[str, str],
    desc: CsvDescription,
    chunk_rows: int,
    show: bool,
    strings: _Strings,
    *,
    strict: bool,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    typed: dict[int, Any] = {}
    if not strict:  # let pandas parse plain numeric columns; anything odd falls back to the strict path
        for name, t in types.items():
            if t in ("f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8"):
                typed[layout.columns[name]] = np.float64 if t[0] == "f" else np.int64
    times = _TimeParser(desc)
    indexes: list[np.ndarray] = []
    parts: dict[str, list[np.ndarray]] = {n: [] for n in types}
    rows = 0
    line = layout.header_lines + 1
    with path.open("rb") as handle, contextlib.closing(_Progress(path, show)) as bar:
        try:
            with _read(handle, layout, typed, chunk_rows) as reader:  # closes pandas' wrapper of ``handle``
                for chunk in reader:
                    if not strict and any(chunk[i].isna().any() for i in typed if chunk[i].dtype.kind == "f"):
                        raise _Retry  # NaN may be a missing field: let the strict pass decide
                    ns, cols = _parse_chunk(chunk, layout, types, times, line, strict, strings)
                    indexes.append(ns)
                    for n in types:
                        parts[n].append(cols[n])
                    rows += len(ns)
                    line += len(chunk)
                    bar.update(handle.tell(), rows)
        except pd.errors.ParserError as exc:
            m = re.search(r"line (\d+)", str(exc))
            at = int(m.group(1)) if m else None
            raise CsvLoadError(
                f"line {at}: {_first_line(str(exc))}; nothing was written"
                if at
                else f"{path}: {exc}; nothing was written",
                line=at,
            ) from None
        except (ValueError, TypeError, OverflowError) as exc:
            if not strict:
                raise _Retry from None  # the strict pass finds and reports the bad row
            if isinstance(exc, CsvLoadError):
                raise
            raise CsvLoadError(f"{path}: {exc}; nothing was written") from None
        except UnicodeDecodeError as exc:
            raise CsvLoadError(f"{path} is not UTF-8 text ({exc}); nothing was written") from None
        bar.update(bar.bar.total, rows)
    index = np.concatenate(indexes) if indexes else np.empty(0, np.int64)
    columns = {n: (np.concatenate(p) if p else np.empty(0, WIRE_TYPES[types[n]])) for n, p in parts.items()}
    return index, columns


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
