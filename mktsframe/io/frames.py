"""Converting between pandas DataFrames and the backend's :class:`~mktsframe.backend.base.Batch`.

A frame's time is its index: a ``DatetimeIndex`` (zone-less means UTC) or, as pymarketstore
builds them, an integer ``Epoch`` column of epoch seconds. Query results come back with a
tz-aware UTC ``DatetimeIndex`` named ``Epoch`` at nanosecond resolution (pandas 3 would default
to microseconds; we never drop the nanoseconds).
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from mktsframe.backend.base import Batch, Stacked
from mktsframe.dtypes import nanoseconds_part
from mktsframe.errors import SchemaMismatchError
from mktsframe.io import fastpaths
from mktsframe.stacking import code_dtype

__all__ = ["batch_to_frame", "empty_index", "frame_to_batch"]

_NS = 1_000_000_000
_UNIT_TO_NS = {"s": _NS, "ms": 1_000_000, "us": 1_000, "ns": 1}
_NAT = np.iinfo(np.int64).min
#: Below this many elements, Python's own ``min`` on a list beats a numpy reduction (~2.5 µs a call).
_SMALL = 64


@functools.lru_cache(maxsize=64)
def _unit_scale(dtype: object) -> int:
    """Nanoseconds per tick of a ``DatetimeIndex`` dtype (naive ``datetime64[unit]`` or tz-aware)."""
    unit = getattr(dtype, "unit", None) or np.datetime_data(dtype)[0]  # type: ignore[arg-type]
    return _UNIT_TO_NS[unit]


def frame_to_batch(
    df: pd.DataFrame, *, tz: str = "UTC", nanoseconds_column: bool = False, exclude: tuple[str, ...] = ()
) -> Batch:
    """The rows of ``df`` as a :class:`Batch` (index in ns UTC, columns as numpy arrays), without
    the columns named in ``exclude`` (a multi-bucket frame's label columns: no ``drop`` copy).

    ``nanoseconds_column``: a frame timed by an integer ``Epoch`` column (seconds) takes the
    sub-second part from its ``Nanoseconds`` column, as pymarketstore's tick frames carry it.

    This runs once per write, so a 1-row append pays it in full: column names are cached per
    column index and numeric columns are taken as views of pandas' blocks (~10 µs per frame in
    all instead of ~35 µs through the public accessors).
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
    idx = df.index
    names, problem = _column_names(df.columns)
    skip = exclude
    if isinstance(idx, pd.DatetimeIndex):
        if tz != "UTC" and idx.tz is None:
            idx = idx.tz_localize(tz)
        ns = idx.asi8  # UTC for tz-aware indexes, in the index's unit; NaT is the smallest int64
        # (not ``idx.hasnans`` / ``idx.unit``: ~10 µs on the fresh 1-row frame of every append)
        if ns.size and (ns.min() if ns.size > _SMALL else min(ns.tolist())) == _NAT:
            raise SchemaMismatchError("the index contains NaT; every row needs a timestamp")
        scale = _unit_scale(idx.dtype)
        ns = ns.copy() if scale == 1 else ns * scale  # copied: the batch never aliases the frame
    elif "Epoch" in names:
        epoch = df["Epoch"].to_numpy()
        if epoch.dtype.kind not in "iu":
            raise SchemaMismatchError(f"the Epoch column must hold integer epoch seconds, not {epoch.dtype}")
        ns = epoch.astype(np.int64) * _NS
        skip = (*exclude, "Epoch")
        if nanoseconds_column and "Nanoseconds" in names:
            ns = ns + nanoseconds_part(df["Nanoseconds"].to_numpy())
            skip = (*skip, "Nanoseconds")
    else:
        raise SchemaMismatchError(
            "the frame needs a DatetimeIndex (or an integer 'Epoch' column of epoch seconds) to be stored"
        )
    if problem is not None:
        raise SchemaMismatchError(problem)
    arrays = _block_arrays(df, len(names))
    cols: dict[str, np.ndarray] = {}
    for i, name in enumerate(names):
        if name in skip:
            continue
        arr = arrays[i]
        cols[name] = arr if arr is not None else _column_values(name, df, i)
    return Batch(ns, cols)  # int64 on every branch above


#: Column names per column index, keyed by the identity of the index's data (frames cut from one
#: frame share it), which is kept alive here so the identity cannot be reused. Bounded.
_NAMES: dict[int, tuple[object, tuple[str, ...], str | None]] = {}
_NAMES_MAX = 256


def _column_names(columns: pd.Index) -> tuple[tuple[str, ...], str | None]:
    """The names of ``columns`` and what is wrong with them (duplicates, non-strings) or ``None``.

    Reading a pandas 3 ``str`` index costs ~9 µs even for five names, so the answer is cached
    (keyed by the index's data where :func:`fastpaths.index_data` gives it; else not cached).
    """
    data = fastpaths.index_data(columns)
    if data is not None:
        hit = _NAMES.get(id(data))
        if hit is not None and hit[0] is data:
            return hit[1], hit[2]
    fast = fastpaths.index_strings(columns) if fastpaths.index_strings is not None else None
    # a pandas 3 str Index iterates slowly: convert once
    names = tuple(fast) if fast is not None else tuple(columns.to_numpy(dtype=object))
    problem = None
    if len(set(names)) != len(names):
        problem = f"duplicate column names in {list(names)}"
    else:
        bad = next((n for n in names if not isinstance(n, str)), None)
        if bad is not None:
            problem = f"column names must be strings, got {bad!r}"
    if data is not None:
        if len(_NAMES) >= _NAMES_MAX:
            _NAMES.clear()
        _NAMES[id(data)] = (data, names, problem)
    return names, problem


def _block_arrays(df: pd.DataFrame, ncols: int) -> list[np.ndarray | None]:
    """Each column's values as a 1-d view of its pandas block where that is a numpy array of a
    storable kind; ``None`` for the others (for all where the fast path is off)."""
    fast = fastpaths.block_arrays
    return fast(df, ncols) if fast is not None else [None] * ncols


def _column_values(name: str, df: pd.DataFrame, i: int) -> np.ndarray:
    # ``df[name]`` builds a Series (~20 µs a column); on a 1-row append that is most of the cost,
    # so look at the column's array directly where the fast path allows.
    fast = fastpaths.column_array
    if fast is not None:
        arr = fast(df, i)
    else:
        col = df.iloc[:, i]
        arr = col.to_numpy() if isinstance(col.dtype, np.dtype) else col.array
    if isinstance(arr, np.ndarray) and arr.dtype.kind in "iufbU":
        return arr
    s = df.iloc[:, i]
    dtype = s.dtype
    if pd.api.types.is_string_dtype(dtype) or (isinstance(dtype, np.dtype) and dtype.kind == "O"):
        if s.isna().any():
            raise SchemaMismatchError(f"column {name!r} has missing values; strings must all be present")
        values = s.to_numpy(dtype=object)
        if not all(isinstance(v, str) for v in values):
            raise SchemaMismatchError(f"column {name!r} mixes strings and other objects")
        arr = values.astype(str) if len(values) else np.empty(0, "U16")
        if arr.size and np.char.str_len(arr).max() > 16:
            raise SchemaMismatchError(f"column {name!r}: strings longer than 16 characters do not fit U16")
        return arr.astype("U16")
    if isinstance(dtype, pd.api.extensions.ExtensionDtype) and getattr(dtype, "numpy_dtype", None) is not None:
        if s.isna().any():
            raise SchemaMismatchError(f"column {name!r} has missing values, which a {dtype} bucket column cannot hold")
        return s.to_numpy(dtype=dtype.numpy_dtype)
    raise SchemaMismatchError(f"column {name!r} has dtype {dtype}, which cannot be stored")


_UTC_NS = pd.DatetimeTZDtype("ns", "UTC")


def _index(ns: np.ndarray) -> pd.DatetimeIndex:
    """A UTC ns ``DatetimeIndex`` named ``Epoch`` over ``ns``: without copying where the fast path is on.

    The public route copies the whole array (~250 µs per million rows), more than reading them.
    """
    fast = fastpaths.utc_index
    if fast is not None:
        return fast(ns, "Epoch")
    return pd.DatetimeIndex(ns.view("M8[ns]"), dtype=_UTC_NS, name="Epoch")


def empty_index() -> pd.DatetimeIndex:
    return _index(np.empty(0, np.int64))


@functools.lru_cache(maxsize=1024)
def _columns_index(names: tuple[str, ...]) -> pd.Index:
    return pd.Index(list(names))  # pandas 3 infers its str dtype here: ~50 µs, so built once per schema


def batch_to_frame(batch: Batch) -> pd.DataFrame:
    """A DataFrame indexed by a UTC ``DatetimeIndex`` named ``Epoch`` (ns resolution).

    Numeric columns skip ``DataFrame(dict)``'s per-column sanitising (220 µs for five columns under
    pandas 3, more than reading a day of bars): the arrays are fresh, 1-d and of the right length,
    so each becomes a block as it is — no copy and no consolidation (which would copy 24 MB for
    1M bars: +10 ms). Other columns (strings), and every column where the fast path is off
    (:mod:`mktsframe.io.fastpaths`), take the public route, which does not consolidate either.
    """
    cols = batch.columns
    n = batch.index.shape[0]
    arrays = list(cols.values())
    fast = fastpaths.frame_from_arrays
    if fast is not None and all(
        isinstance(a, np.ndarray) and a.ndim == 1 and a.shape[0] == n and a.dtype.kind in "iufb" for a in arrays
    ):
        return fast(arrays, _columns_index(tuple(cols)), _index(batch.index))
    return pd.DataFrame(dict(cols), index=_index(batch.index), copy=False)


#: The column that names each row's key part where a write's key has ``*`` (what a multi-bucket
#: ``read_mkts`` labels its rows with).
LABELS = ("Symbol", "Timeframe", "AttributeGroup")


def frame_to_stacked(df: pd.DataFrame, pattern: str, *, nanoseconds_column: bool = False) -> Stacked:
    """The rows of a frame of several buckets as a :class:`Stacked`: ``pattern`` is a key whose
    ``*`` parts are taken, row by row, from the ``Symbol`` / ``Timeframe`` / ``AttributeGroup``
    columns (the frame a multi-bucket ``read_mkts`` returns writes back with the key it was read
    with). The label columns are factorised once, not split into a frame per bucket.
    """
    parts = pattern.split("/") if isinstance(pattern, str) else []
    wild = [i for i, p in enumerate(parts) if p == "*"]
    if len(parts) != 3 or not wild or any("*" in p for i, p in enumerate(parts) if i not in wild):
        raise ValueError(
            f"a multi-bucket write takes a key like '*/1Min/OHLCV' (whole parts as '*'), got {pattern!r}"
        )
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
    labels = [LABELS[i] for i in wild]
    present = _column_names(df.columns)[0]  # cached: ``in df.columns`` builds a hash table per frame
    missing = [label for label in labels if label not in present]
    if missing:
        raise SchemaMismatchError(
            f"writing to {pattern!r} takes each row's {' and '.join(missing)} from a column of that name; "
            f"the frame has none (columns: {list(df.columns)})"
        )
    values = [df[label] for label in labels]
    suffix = "/" + "/".join(parts[1:]) if wild == [0] else None  # "*/1Min/OHLCV", the usual universe
    coded = _categorical_keys(values[0], suffix) if suffix is not None else None
    if coded is not None:
        codes, keys = coded
    else:
        codes, keys = _factorized_keys(df, values, labels, parts, wild, suffix)
    batch = frame_to_batch(df, nanoseconds_column=nanoseconds_column, exclude=tuple(labels))
    which = codes.astype(code_dtype(len(keys)), copy=False)
    return Stacked(keys, batch.index, batch.columns, which, nanoseconds_column)


def _factorized_keys(
    df: pd.DataFrame, values: list[pd.Series], labels: list[str], parts: list[str], wild: list[int], suffix: str | None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Each row's key number and the keys, from the label columns ``values`` (any dtype)."""
    if len(values) == 1:
        codes, uniques = pd.factorize(values[0])
        names = [[str(u) for u in uniques]]
    else:
        codes, uniques = pd.MultiIndex.from_arrays(values).factorize()
        names = [[str(u[i]) for u in uniques] for i in range(len(values))]
    if len(codes) and codes.min() < 0:
        row = df.index[int(np.argmin(codes))]
        raise SchemaMismatchError(f"the row at {row} has no {' / '.join(labels)}: every row must name its bucket")
    if suffix is not None:  # one string join a key
        return codes, tuple(name + suffix for name in names[0])
    keys = []
    for j in range(len(names[0])):
        filled = list(parts)
        for w, column in zip(wild, names, strict=True):
            filled[w] = column[j]
        keys.append("/".join(filled))
    return codes, tuple(keys)


#: Keys per categorical label column, keyed by the identity of its categories (an immutable index,
#: kept alive here so the identity cannot be reused) and the key's fixed part. Bounded.
_CATEGORY_KEYS: dict[int, tuple[pd.Index, str, tuple[str, ...]]] = {}
_CATEGORY_KEYS_MAX = 64


def _categorical_keys(column: pd.Series, suffix: str) -> tuple[np.ndarray, tuple[str, ...]] | None:
    """Each row's key number and the keys (category + ``suffix``) of a categorical label column
    whose every row has a category and every category a row; ``None`` otherwise (the general path
    explains a missing label). The frame of a universe's minute, or one read back by ``read_mkts``,
    is such a column: a feed that writes the same 5,000 symbols each minute builds their keys once
    (~1 ms of a ~5 ms write), not per frame."""
    dtype = column.dtype
    if not isinstance(dtype, pd.CategoricalDtype):
        return None
    codes = column.array.codes
    cats = dtype.categories
    if codes.size == 0 or codes.min() < 0 or np.bincount(codes, minlength=len(cats)).min() == 0:
        return None
    hit = _CATEGORY_KEYS.get(id(cats))
    if hit is not None and hit[0] is cats and hit[1] == suffix:
        return codes, hit[2]
    keys = tuple(str(c) + suffix for c in cats.to_numpy(dtype=object))
    if len(_CATEGORY_KEYS) >= _CATEGORY_KEYS_MAX:
        _CATEGORY_KEYS.clear()
    _CATEGORY_KEYS[id(cats)] = (cats, suffix, keys)
    return codes, keys
