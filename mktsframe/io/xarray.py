"""``xr.open_dataset(root, engine="mkts", keys=[...])``: buckets as a lazily loaded Dataset.

The Dataset has dims ``("time", "symbol")`` and one data variable per bucket column. The time
axis is the bucket's regular bar grid (one step per timeframe, like the fixed slots of a year
file) from the first to the last bar, or over ``start``/``end`` when given; bars that hold no
data read as NaN. Nothing is read at open time except each bucket's schema and, without
``start``/``end``, its first and last bar (which touches only the first and last year files).
Values are read on access, one query per symbol for exactly the time range asked for, so a
selection inside one year opens only that year's files.

With ``chunks={}`` xarray makes one dask chunk per calendar year (UTC) and symbol, matching the
year files on disk. Arrays pickle as their backend's spec (a path, a server or an object-store URL):
dask workers in other processes reconnect on their own (read-only for a local root).

Tick buckets (``variable_length``) have no grid: one opens alone as dims ``("time",)``, the
``time`` coordinate holding every tick's exact nanosecond (duplicates kept, in arrival order) and
``symbol`` a scalar coordinate. Opening reads the tick times only (8 bytes a tick); values are
read on access by position, with one dask chunk per UTC day (the tick files' partitioning). The
Dataset is a view of the ticks present at open time: reopen it to see later writes.

Like the pandas layer, this module speaks only the :class:`~mktsframe.backend.base.Backend`
protocol. Times are tz-naive ``datetime64[ns]`` in UTC (xarray has no time zones); the ``time``
coordinate says so in ``attrs["timezone"]``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import xarray as xr
from xarray.backends import BackendArray, BackendEntrypoint
from xarray.core import indexing

from mktsframe.backend import Backend, connect
from mktsframe.backend.base import Batch, capabilities
from mktsframe.backend.registry import BackendSpec, open_spec
from mktsframe.io.worker_malloc import restore_mmap_threshold
from mktsframe.keys import join_keys, parse_key, parse_key_pattern
from mktsframe.times import TimeLike, to_ns

__all__ = ["MktsBackendEntrypoint", "open_mkts_dataset"]

NS = 1_000_000_000
#: A regular grid longer than this (bars) is refused at open time: pass ``start``/``end``. The
#: ``time`` coordinate is held in memory (8 bytes a bar): 20M bars = 160 MB, 38 years of minutes.
MAX_GRID = 20_000_000
_STATE_DIR = ".mkts"


class _Source:
    """Where arrays read from. Pickles as the backend's :class:`BackendSpec` (a path, a server URL
    or an object-store URL pinned to a snapshot), never as an open handle."""

    def __init__(self, backend: Backend, *, owned: bool) -> None:
        self._backend: Backend | None = backend
        describable = capabilities(backend).pickle_spec and hasattr(backend, "spec")
        self.spec: BackendSpec | None = backend.spec if describable else None  # type: ignore[attr-defined]
        self._owned = owned

    def close(self) -> None:
        """Release the handle opened for this Dataset (a copy in another process owns nothing)."""
        if self._owned and self._backend is not None:
            self._owned = False
            self._backend.close()

    def backend(self) -> Backend:
        if self._backend is None:
            assert self.spec is not None
            restore_mmap_threshold()  # a dask worker: see mktsframe.io.worker_malloc
            self._backend = open_spec(self.spec)  # one read-only handle per process (a dask worker)
        return self._backend

    def __getstate__(self) -> dict[str, Any]:
        if self.spec is None:
            raise TypeError(
                "this Dataset's backend cannot describe itself to other processes (no spec); open it from a "
                "path or URL (xr.open_dataset('data/', engine='mkts', ...)) to use dask distributed"
            )
        return {"spec": self.spec}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._backend = None
        self._owned = False
        self.spec = state["spec"]


class MktsColumnArray(BackendArray):
    """One column of several buckets on a regular time grid: shape ``(time, symbol)``.

    Parameters
    ----------
    source : _Source
        Where to read.
    keys : tuple of str
        One bucket key per symbol, in ``symbol`` order.
    column : str
        The bucket column.
    present : tuple of bool
        Whether each bucket has the column (a missing one reads as fill).
    t0 : int
        First grid time, nanoseconds since the epoch, UTC.
    step : int
        Grid step (the timeframe) in nanoseconds.
    ntime : int
        Grid length.
    dtype : numpy.dtype
        Result dtype (floats for numeric columns so missing bars can be NaN).
    """

    def __init__(
        self,
        source: _Source,
        keys: tuple[str, ...],
        column: str,
        present: tuple[bool, ...],
        t0: int,
        step: int,
        ntime: int,
        dtype: np.dtype[Any],
    ) -> None:
        self.source = source
        self.keys = keys
        self.column = column
        self.present = present
        self.t0 = t0
        self.step = step
        self.shape = (ntime, len(keys))
        self.dtype = dtype

    @property
    def fill(self) -> Any:
        return "" if self.dtype.kind == "U" else np.nan

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.BASIC, self._read)

    def _read(self, key: tuple[int | slice, ...]) -> np.ndarray:
        tsel, ssel = key
        rows = range(self.shape[0])[tsel] if isinstance(tsel, slice) else range(tsel, tsel + 1)
        syms = range(self.shape[1])[ssel] if isinstance(ssel, slice) else range(ssel, ssel + 1)
        out = np.full((len(rows), len(syms)), self.fill, dtype=self.dtype)
        if len(rows) and len(syms):
            lo, hi = min(rows[0], rows[-1]), max(rows[0], rows[-1])
            start, end = self.t0 + lo * self.step, self.t0 + hi * self.step
            wanted = [self.keys[s] for s in syms if self.present[s]]
            got = _query_many(self.source.backend(), wanted, start=_at(start), end=_at(end), columns=[self.column])
            for j, s in enumerate(syms):
                if not self.present[s]:
                    continue
                batch = got[self.keys[s]]
                slot = (batch.index - self.t0) // self.step - rows.start
                stride = rows.step
                ok = slot % abs(stride) == 0
                pos = slot[ok] // stride
                out[pos, j] = batch.columns[self.column][ok]
        return out[0 if isinstance(tsel, int) else slice(None), 0 if isinstance(ssel, int) else slice(None)]


class MktsTickArray(BackendArray):
    """One column of one tick bucket, by tick position: shape ``(tick,)``.

    ``times`` is the ``time`` coordinate read at open (int64 ns UTC, sorted, duplicates in
    arrival order). Positions ``lo..hi`` are the rows the bucket returns for
    ``[times[lo], times[hi]]``, starting ``lo - (first position at times[lo])`` rows in: ticks
    sharing a nanosecond come back in the order they were stored.
    """

    def __init__(self, source: _Source, key: str, column: str, times: np.ndarray, dtype: np.dtype[Any]) -> None:
        self.source = source
        self.key = key
        self.column = column
        self.times = times
        self.shape = (times.shape[0],)
        self.dtype = dtype

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.BASIC, self._read)

    def _read(self, key: tuple[int | slice, ...]) -> np.ndarray:
        (sel,) = key
        positions = range(self.shape[0])[sel] if isinstance(sel, slice) else range(sel, sel + 1)
        if not len(positions):
            return np.empty(0, dtype=self.dtype)
        lo, hi = min(positions[0], positions[-1]), max(positions[0], positions[-1])
        t_lo, t_hi = int(self.times[lo]), int(self.times[hi])
        (batch,) = self.source.backend().query(self.key, start=_at(t_lo), end=_at(t_hi), columns=[self.column]).values()
        first = lo - int(np.searchsorted(self.times, t_lo, side="left"))
        stop = first + hi - lo + 1
        if len(batch) < stop or not np.array_equal(np.asarray(batch.index)[first:stop], self.times[lo : hi + 1]):
            raise RuntimeError(f"ticks of {self.key} changed since the Dataset was opened: open it again")
        values = np.asarray(batch.columns[self.column])[first:stop]
        out = values[np.asarray(positions) - lo]
        return out[0] if isinstance(sel, int) else out


def open_mkts_dataset(
    source: str | os.PathLike[str] | Backend,
    keys: str | Sequence[str],
    *,
    start: TimeLike = None,
    end: TimeLike = None,
    columns: Sequence[str] | None = None,
    drop_variables: str | Iterable[str] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> xr.Dataset:
    """Open buckets as a lazily loaded Dataset (what ``engine="mkts"`` calls).

    Parameters
    ----------
    source : str, path or Backend
        A data root (directory or ``file://``), a server URL (``http://host:5993``), a published
        root in object storage (``s3://bucket/prefix``, any fsspec URL) or an open backend (sent
        to dask workers as its :class:`~mktsframe.backend.registry.BackendSpec`).
    keys : str or list of str
        Bucket keys with the same timeframe, one per symbol; comma lists and ``*`` are expanded
        (``"AAPL,MSFT/1Min/OHLCV"``, ``"*/1D/OHLCV"``). A tick bucket opens alone.
    start, end : time, optional
        Bounds of the time grid (inclusive, at bar granularity; zone-less means UTC). Default:
        the first and last bar of the buckets. For ticks: exact nanosecond bounds.
    columns : list of str, optional
        Columns to open as variables (default: all).
    drop_variables : str or list of str, optional
        Columns to leave out.
    storage_options : dict, optional
        For an object-store URL (e.g. s3fs ``key``/``secret``/``client_kwargs``).

    Returns
    -------
    xarray.Dataset
        Dims ``time`` (``datetime64[ns]``, UTC) and ``symbol``; numeric variables are floating
        point (integer columns become ``float64``) so bars without data can be NaN; the original
        bucket type is in each variable's ``attrs["mkts_dtype"]``. A tick bucket: dim ``time``
        only (exact, possibly repeated nanoseconds), ``symbol`` a scalar coordinate, variables in
        their stored types.
    """
    if isinstance(source, (str, os.PathLike)):
        target = _check_target(os.fspath(source))
        backend: Backend = connect(target, **({"storage_options": storage_options} if storage_options else {}))
        owned = True
    elif isinstance(source, Backend):
        backend, owned = source, False
    else:
        raise TypeError(f"expected a data root, a server URL or a Backend, got {type(source).__name__}")
    src = _Source(backend, owned=owned)
    try:
        ds = _build(src, keys, start, end, columns, drop_variables)
    except BaseException:
        src.close()
        raise
    ds.set_close(src.close)
    return ds


def _check_target(text: str) -> str:
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme not in ("", "file"):
        return text  # a server or object-store URL: connect() checks the scheme
    path = text[len("file://") :] if scheme == "file" else text
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no mktsframe data root at {path!r}")
    return os.path.abspath(path)


def _expand_keys(backend: Backend, keys: str | Sequence[str]) -> list[str]:
    wanted = [keys] if isinstance(keys, str) else list(keys)
    if not wanted:
        raise ValueError("keys is empty: name at least one bucket, e.g. keys=['AAPL/1Min/OHLCV']")
    out: dict[str, None] = {}
    existing: list[str] | None = None
    for text in wanted:
        pattern = parse_key_pattern(text)
        concrete = pattern.expand()
        if concrete is None:
            existing = backend.list_keys() if existing is None else existing
            found = [k for k in existing if pattern.matches(parse_key(k))]
            if not found:
                raise ValueError(f"no bucket matches {text!r}")
            out.update(dict.fromkeys(found))
        else:
            out.update(dict.fromkeys(k.item_key for k in concrete))
    return list(out)


def _query_many(backend: Backend, keys: Sequence[str], **kw: Any) -> dict[str, Batch]:
    """Each of ``keys`` (canonical) queried with ``kw``, in a few multi-symbol queries
    (:func:`~mktsframe.keys.join_keys`) instead of one per symbol: a universe is thousands."""
    out: dict[str, Batch] = {}
    for q in join_keys(keys) if keys else ():
        out.update(backend.query(q, **kw))
    return out


def _at(ns: int | None) -> np.datetime64 | None:
    """A time for ``Backend.query`` (a bare int near 1970 would read as epoch seconds)."""
    return None if ns is None else np.datetime64(ns, "ns")


def _floor(ns: int, step: int) -> int:
    return ns - ns % step


def _year_chunks(t0: int, step: int, n: int) -> tuple[int, ...]:
    """Grid points per calendar year (UTC): the dask chunks that match the year files."""
    if n == 0:
        return (0,)
    t1 = t0 + (n - 1) * step
    y0 = int(np.datetime64(t0, "ns").astype("datetime64[Y]").astype(int)) + 1970
    y1 = int(np.datetime64(t1, "ns").astype("datetime64[Y]").astype(int)) + 1970
    bounds = [int(np.datetime64(f"{y:04d}-01-01", "ns").astype(np.int64)) for y in range(y0 + 1, y1 + 1)]
    cuts = [0] + [-(-(b - t0) // step) for b in bounds] + [n]
    return tuple(b - a for a, b in itertools.pairwise(cuts) if b > a)


def _build(
    source: _Source,
    keys: str | Sequence[str],
    start: TimeLike,
    end: TimeLike,
    columns: Sequence[str] | None,
    drop_variables: str | Iterable[str] | None,
) -> xr.Dataset:
    backend = source.backend()
    names = _expand_keys(backend, keys)
    parsed = [parse_key(k) for k in names]
    if len({k.timeframe.seconds for k in parsed}) > 1:
        raise ValueError(f"keys must share one timeframe (one time grid): {names}")
    symbols = [k.symbol for k in parsed]
    if len(set(symbols)) != len(symbols):
        raise ValueError(f"each symbol may appear once (open one attribute group at a time): {names}")
    step = parsed[0].timeframe.seconds * NS

    # Schemas from an empty query (limit=0 reads no year file).
    schemas: list[dict[str, np.dtype[Any]]] = []
    ticks: list[str] = []
    empty = _query_many(backend, names, limit=0)
    for k in names:
        batch = empty[k]
        schemas.append({c: np.asarray(a).dtype for c, a in batch.columns.items()})
        ticks += [k] if batch.variable_length else []
    all_columns = _chosen_columns(names, schemas, columns, drop_variables)
    if ticks:
        if len(names) > 1:
            raise ValueError(
                f"tick bucket(s) {ticks} open one key at a time (each has its own tick times), not with {names}; "
                "for a common grid read candles: pd.read_mkts(key, timeframe=...)"
            )
        return _build_ticks(source, names[0], schemas[0], all_columns, start, end)

    t0, t1 = _extent(backend, names, schemas, start, end, step)
    n = 0 if t0 is None or t1 is None or t1 < t0 else (t1 - t0) // step + 1
    if n > MAX_GRID:
        raise ValueError(f"the time grid would have {n} bars; pass start=/end= to open a narrower range")
    t0 = t0 or 0
    chunks = {"time": _year_chunks(t0, step, n), "symbol": 1}

    variables = {}
    for c in all_columns:
        present = tuple(c in s for s in schemas)
        stored = np.result_type(*(s[c] for s in schemas if c in s))
        dtype = stored if stored.kind in "fU" else np.dtype("f8")
        array = MktsColumnArray(source, tuple(names), c, present, t0, step, n, dtype)
        variables[c] = xr.Variable(
            ("time", "symbol"),
            indexing.LazilyIndexedArray(array),
            attrs={"mkts_dtype": stored.str.lstrip("<>|=")},
            encoding={"preferred_chunks": chunks},
        )
    time = (t0 + np.arange(n, dtype=np.int64) * step).view("M8[ns]")
    coords = {
        "time": xr.Variable("time", time, attrs={"timezone": "UTC"}),
        "symbol": xr.Variable("symbol", np.array(symbols, dtype=str)),
    }
    attrs = {
        "timeframe": parsed[0].timeframe.name,
        "attribute_group": ",".join(dict.fromkeys(k.attribute_group for k in parsed)),
        "mkts_keys": ",".join(names),
    }
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def _chosen_columns(
    names: list[str],
    schemas: list[dict[str, np.dtype[Any]]],
    columns: Sequence[str] | None,
    drop_variables: str | Iterable[str] | None,
) -> list[str]:
    """The columns to open: ``columns`` (checked) or all, less ``drop_variables``."""
    chosen = list(dict.fromkeys(c for s in schemas for c in s))
    if columns is not None:
        unknown = [c for c in columns if c not in chosen]
        if unknown:
            raise ValueError(f"no column(s) {unknown} in {names}; they have {chosen}")
        chosen = list(dict.fromkeys(columns))
    dropped = {drop_variables} if isinstance(drop_variables, str) else set(drop_variables or ())
    return [c for c in chosen if c not in dropped]


def _build_ticks(
    source: _Source,
    key: str,
    schema: dict[str, np.dtype[Any]],
    columns: list[str],
    start: TimeLike,
    end: TimeLike,
) -> xr.Dataset:
    """A tick bucket as dims ``("time",)``: the tick times are read now, values on access."""
    k = parse_key(key)
    lo, hi = to_ns(start, name="start"), to_ns(end, name="end")
    first_column = list(schema)[:1]
    (b,) = source.backend().query(
        key, start=_at(lo), end=_at(hi), columns=first_column, limit=MAX_GRID + 1, limit_from_start=True
    ).values()
    if len(b) > MAX_GRID:
        raise ValueError(f"{key} holds more than {MAX_GRID:,} ticks in that range; pass start=/end= to open fewer")
    times = np.asarray(b.index, dtype=np.int64)
    days = np.unique(times // (86_400 * NS), return_counts=True)[1]
    chunks = {"time": tuple(int(n) for n in days) or (0,)}
    variables = {
        c: xr.Variable(
            ("time",),
            indexing.LazilyIndexedArray(MktsTickArray(source, key, c, times, schema[c])),
            attrs={"mkts_dtype": schema[c].str.lstrip("<>|=")},
            encoding={"preferred_chunks": chunks},
        )
        for c in columns
    }
    coords = {
        "time": xr.Variable("time", times.view("M8[ns]"), attrs={"timezone": "UTC"}),
        "symbol": xr.Variable((), np.array(k.symbol)),
    }
    attrs = {
        "timeframe": k.timeframe.name,
        "attribute_group": k.attribute_group,
        "mkts_keys": key,
        "record_type": "variable",
    }
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def _extent(
    backend: Backend,
    names: list[str],
    schemas: list[dict[str, np.dtype[Any]]],
    start: TimeLike,
    end: TimeLike,
    step: int,
) -> tuple[int | None, int | None]:
    """First and last grid time (ns): the bounds given, else the buckets' first and last bars."""
    lo, hi = to_ns(start, name="start"), to_ns(end, name="end")
    if lo is not None and hi is not None:
        return _floor(lo, step), _floor(hi, step)
    firsts: list[int] = []
    lasts: list[int] = []
    by_first_column: dict[str, list[str]] = {}
    for k, schema in zip(names, schemas, strict=True):
        by_first_column.setdefault(next(iter(schema), ""), []).append(k)
    for column, group in by_first_column.items():  # one query per first column, not one per symbol
        cols = [column] if column else None
        if lo is None:
            got = _query_many(backend, group, end=_at(hi), columns=cols, limit=1, limit_from_start=True)
            firsts += [int(b.index[0]) for b in got.values() if len(b)]
        if hi is None:
            got = _query_many(backend, group, start=_at(lo), columns=cols, limit=1)
            lasts += [int(b.index[-1]) for b in got.values() if len(b)]
    first = _floor(lo, step) if lo is not None else (min(firsts) if firsts else None)
    last = _floor(hi, step) if hi is not None else (max(lasts) if lasts else None)
    return first, last


class MktsBackendEntrypoint(BackendEntrypoint):
    """xarray backend for mktsframe buckets: ``xr.open_dataset(root, engine="mkts", keys=[...])``.

    Opens a data root (directory or ``file://``) or a mktsframe/MarketStore server
    (``http://host:5993``) as a Dataset with dims ``time`` and ``symbol`` and one lazily loaded
    variable per column. Extra keywords: ``keys`` (required), ``start``, ``end``, ``columns``.

    See Also
    --------
    open_mkts_dataset : the same as a function, with the parameters documented.
    mktsframe.read_mkts : the pandas equivalent.
    """

    description = "Open mktsframe / MarketStore buckets (a data root or a server URL) lazily"
    open_dataset_parameters = (
        "filename_or_obj", "drop_variables", "keys", "start", "end", "columns", "storage_options"
    )

    def open_dataset(  # type: ignore[override]
        self,
        filename_or_obj: Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        keys: str | Sequence[str] | None = None,
        start: TimeLike = None,
        end: TimeLike = None,
        columns: Sequence[str] | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> xr.Dataset:
        if keys is None:
            raise TypeError("engine='mkts' needs keys=, e.g. keys=['AAPL/1Min/OHLCV'] or keys='*/1D/OHLCV'")
        return open_mkts_dataset(
            filename_or_obj, keys, start=start, end=end, columns=columns, drop_variables=drop_variables,
            storage_options=storage_options,
        )

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        """True only for a local directory that holds a mktsframe root (cheap; never raises)."""
        try:
            if not isinstance(filename_or_obj, (str, os.PathLike)):
                return False
            text = os.fspath(filename_or_obj)
            if not isinstance(text, str) or "://" in text:
                return False
            return os.path.isdir(os.path.join(text, _STATE_DIR))
        except Exception:
            return False
