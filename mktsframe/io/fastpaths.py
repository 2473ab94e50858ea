"""Optional fast paths over pandas internals, each probed once and used only where it is proven.

Building a frame through pandas' public API costs more than reading the data it holds: under
pandas 3.1, ``DataFrame(dict, copy=False)`` takes ~60 µs for five columns and a public UTC
``DatetimeIndex`` copies its values (~250 µs per million rows), where the private constructors
take ~19 µs in all and copy nothing; on writes, reading five columns back through ``df.iloc``
costs ~100 µs a frame against ~5 µs from the blocks. The private names differ between pandas
versions (pandas 2.x's ``arrays_to_mgr`` takes a ``typ`` argument that 3.x removed), so:

- every fast path here has a public twin in :mod:`mktsframe.io.frames`, which is always correct;
- each is probed at import against that public twin on a small sample (values, dtypes, names,
  no copy) and is ``None`` if anything differs or raises, on any pandas version: a future pandas
  that moves these internals is slower, never wrong;
- the tests run both branches (``tests/test_pandas_compat.py`` turns them off), under pandas 3 and,
  in ``make test``, again under pandas 2.2.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["block_arrays", "column_array", "frame_from_arrays", "index_data", "index_strings", "utc_index"]

#: ``(arrays, columns, index) -> DataFrame`` without copying or consolidating the 1-d arrays.
FrameFromArrays = Callable[[Sequence[np.ndarray], pd.Index, pd.DatetimeIndex], pd.DataFrame]
#: ``(int64 ns UTC, name) -> tz-aware UTC DatetimeIndex`` sharing the int64 buffer.
UtcIndex = Callable[[np.ndarray, str], pd.DatetimeIndex]
#: ``(df, ncols) -> list`` of each column's 1-d numpy view where it is a numeric block, else None.
BlockArrays = Callable[[pd.DataFrame, int], list[np.ndarray | None]]
#: ``(df, i) -> the i-th column's array`` (numpy or extension array) without building a Series.
ColumnArray = Callable[[pd.DataFrame, int], Any]

_UTC_NS = pd.DatetimeTZDtype("ns", "UTC")


def _make_frame_from_arrays() -> FrameFromArrays | None:
    try:
        from pandas.core.internals.construction import arrays_to_mgr

        params = inspect.signature(arrays_to_mgr).parameters
        from_mgr = pd.DataFrame._from_mgr  # type: ignore[attr-defined]
    except (ImportError, AttributeError, TypeError, ValueError):
        return None
    extra = {"typ": "block"} if "typ" in params else {}  # pandas 2.x: "block" or "array"; 3.x: no such argument

    def build(arrays: Sequence[np.ndarray], columns: pd.Index, index: pd.DatetimeIndex) -> pd.DataFrame:
        mgr = arrays_to_mgr(list(arrays), columns._view(), index, verify_integrity=False, consolidate=False, **extra)
        return from_mgr(mgr, axes=mgr.axes)

    return build


def _make_utc_index() -> UtcIndex | None:
    try:
        simple_array = pd.arrays.DatetimeArray._simple_new  # type: ignore[attr-defined]
        simple_index = pd.DatetimeIndex._simple_new  # type: ignore[attr-defined]
    except AttributeError:
        return None

    def build(ns: np.ndarray, name: str) -> pd.DatetimeIndex:
        return simple_index(simple_array(ns.view("M8[ns]"), dtype=_UTC_NS), name=name)

    return build


def _block_arrays(df: pd.DataFrame, ncols: int) -> list[np.ndarray | None]:
    out: list[np.ndarray | None] = [None] * ncols
    for blk in df._mgr.blocks:  # type: ignore[attr-defined]
        values = blk.values
        if isinstance(values, np.ndarray) and values.ndim == 2 and values.dtype.kind in "iufb":
            locs = blk.mgr_locs.indexer
            positions = range(locs.start, locs.stop, locs.step or 1) if isinstance(locs, slice) else locs.tolist()
            for j, pos in enumerate(positions):
                out[pos] = values[j]
    return out


def _column_array(df: pd.DataFrame, i: int) -> Any:
    return df._get_column_array(i)  # type: ignore[attr-defined]


def index_data(index: pd.Index) -> object | None:
    """The array behind ``index``, shared by the column indexes of frames cut from one frame (a
    cache key for their names), or ``None`` where pandas keeps it elsewhere (then nothing is cached)."""
    return getattr(index, "_data", None)


def _arrow_strings(index: pd.Index) -> list[Any] | None:
    """The values of an Arrow-backed ``str`` index as a list (~2.5 µs for five names against ~8 µs
    through ``to_numpy``: a ``write_many`` of 5,000 fresh 1-row frames reads 5,000 column indexes),
    or ``None`` for any other index."""
    arrow = getattr(getattr(index, "_values", None), "_pa_array", None)
    return None if arrow is None else arrow.to_pylist()


def _probe_index_strings() -> Callable[[pd.Index], list[Any] | None] | None:
    try:
        sample = pd.Index(["Open", "Volume", "Close"])
        got = _arrow_strings(sample)
        if got is not None and got != list(sample.to_numpy(dtype=object)):
            return None
    except Exception:
        return None
    return _arrow_strings


#: ``(index) -> list of its values`` for Arrow-backed string indexes, else ``None`` (use the public route).
index_strings = _probe_index_strings()


def _probe() -> tuple[FrameFromArrays | None, UtcIndex | None, BlockArrays | None, ColumnArray | None]:
    """Each fast path if it agrees with the public route on a sample, else ``None``."""
    ns = np.array([0, 60_000_000_000, 120_000_000_123], np.int64)
    arrays = [np.array([1.5, 2.5, 3.5], np.float32), np.array([1, 2, 3], np.int32), np.array([4.0, 5.0, 6.0])]
    names = ["Open", "Volume", "Close"]
    public_index = pd.DatetimeIndex(ns.view("M8[ns]"), dtype=_UTC_NS, name="Epoch")
    public = pd.DataFrame(dict(zip(names, arrays, strict=True)), index=public_index)

    utc_index = _make_utc_index()
    try:
        if utc_index is not None:
            idx = utc_index(ns, "Epoch")
            if not (idx.equals(public_index) and idx.dtype == _UTC_NS and idx.name == "Epoch"
                    and np.shares_memory(idx.asi8, ns)):  # fmt: skip
                utc_index = None
    except Exception:  # any failure means: do not use it
        utc_index = None

    frame_from_arrays = _make_frame_from_arrays()
    try:
        if frame_from_arrays is not None:
            df = frame_from_arrays(arrays, pd.Index(names), public_index)
            same = df.equals(public) and list(df.columns) == names and list(df.dtypes) == list(public.dtypes)
            if not (same and df.index.equals(public_index) and np.shares_memory(df["Volume"].to_numpy(), arrays[1])):
                frame_from_arrays = None
    except Exception:
        frame_from_arrays = None

    block_arrays: BlockArrays | None = _block_arrays
    try:
        got = _block_arrays(public, len(names))
        if not all(g is not None and g.ndim == 1 and np.array_equal(g, public[n].to_numpy()) and g.dtype == a.dtype
                   for g, n, a in zip(got, names, arrays, strict=True)):  # fmt: skip
            block_arrays = None
    except Exception:
        block_arrays = None

    column_array: ColumnArray | None = _column_array
    try:
        if not all(np.array_equal(np.asarray(_column_array(public, i)), public.iloc[:, i].to_numpy())
                   for i in range(len(names))):  # fmt: skip
            column_array = None
    except Exception:
        column_array = None
    return frame_from_arrays, utc_index, block_arrays, column_array


frame_from_arrays, utc_index, block_arrays, column_array = _probe()
