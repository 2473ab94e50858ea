"""Joining several buckets' rows into one :class:`~mktsframe.records.Stacked`, time-major.

The order is the one ``read_mkts`` promises for a multi-bucket key: by time, then by the order
the buckets were named (rows of one tick bucket at one time keep their arrival order). Two cases:

* every bucket holds the same bar times (a universe read over a common range): row ``r`` of bucket
  ``j`` goes to position ``r * buckets + j``. Each bucket's column is written once, strided, into
  the ``(rows, buckets)`` result: no join followed by a transpose (a transpose of a 7 M-row column
  through numpy costs ~4× a plain copy);
* otherwise the columns are joined and put in order with one stable sort (skipped when already in
  order).

Below the engine and the backends (numpy only), so the engine's fast path and any backend's
``query`` result share it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mktsframe.errors import SchemaMismatchError
from mktsframe.records import Batch, Stacked

__all__ = ["bucket_major", "code_dtype", "stack", "time_major", "unstack"]


def code_dtype(n: int) -> np.dtype:
    """The smallest signed integer type for positions ``0 .. n-1`` (what pandas keeps a
    ``Categorical``'s codes in: handing it wider codes costs a copy of them)."""
    for t in (np.int8, np.int16, np.int32):
        if n <= np.iinfo(t).max:
            return np.dtype(t)
    return np.dtype(np.int64)


def stack(results: Mapping[str, Batch]) -> Stacked:
    """One :class:`Stacked` from each bucket's :class:`Batch` (in the order named).

    Raises :class:`SchemaMismatchError` unless every bucket has the same column names *and* types:
    joining an ``i8`` column with an ``f8`` one would silently round it.
    """
    keys = tuple(results)
    batches = list(results.values())
    if not batches:
        raise ValueError("nothing to stack")
    tick = any(b.variable_length for b in batches)
    first = batches[0]
    if len(batches) == 1:
        return Stacked(keys, first.index, dict(first.columns), None, tick)
    names = list(first.columns)
    dtypes = [np.asarray(a).dtype for a in first.columns.values()]
    if any(list(b.columns) != names or [a.dtype for a in b.columns.values()] != dtypes for b in batches[1:]):
        schemas = [[f"{n}:{np.asarray(a).dtype.str.lstrip('<|')}" for n, a in b.columns.items()] for b in batches]
        raise SchemaMismatchError(
            "symbols in a query must have the same columns (or be filtered by common columns): "
            + "; ".join(f"{k}: {sc}" for k, sc in zip(keys, schemas, strict=True) if sc != schemas[0])
            + f" (the first, {keys[0]}: {schemas[0]})"
        )
    nb, rows = len(batches), first.index.shape[0]
    codes = np.arange(nb, dtype=code_dtype(nb))
    lengths = np.fromiter((len(b) for b in batches), np.int64, nb)
    same_times = lengths.min() == lengths.max()
    if same_times and (np.concatenate([b.index for b in batches]).reshape(nb, rows) == first.index).all():
        cols = {n: _time_major([b.columns[n] for b in batches], rows, dt) for n, dt in zip(names, dtypes, strict=True)}
        return Stacked(keys, np.repeat(first.index, nb), cols, np.tile(codes, rows), tick)
    index = np.concatenate([b.index for b in batches])
    cols = {n: np.concatenate([b.columns[n] for b in batches]) for n in names}
    return _by_time(keys, index, cols, np.repeat(codes, lengths), tick)


def time_major(
    keys: tuple[str, ...], index: np.ndarray, columns: dict[str, np.ndarray], counts: np.ndarray,
    variable_length: bool = False,
) -> Stacked:
    """A :class:`Stacked` from rows grouped by bucket (``counts[j]`` rows of ``keys[j]``, in that
    order, each bucket's in time order: MarketStore's wire layout); the inverse of
    :func:`bucket_major`. ``index`` and ``columns`` are reordered copies unless already in order."""
    nk = len(keys)
    if nk == 1:
        return Stacked(keys, index, columns, None, variable_length)
    codes = np.arange(nk, dtype=code_dtype(nk))
    rows = int(counts[0]) if nk else 0
    if rows > 1 and index.shape[0] == nk * rows and (index.reshape(nk, rows) == index[:rows]).all():
        cols = {c: np.ascontiguousarray(v.reshape(nk, rows).T).reshape(-1) for c, v in columns.items()}
        return Stacked(keys, np.repeat(index[:rows], nk), cols, np.tile(codes, rows), variable_length)
    return _by_time(keys, index, columns, np.repeat(codes, counts), variable_length)


def _by_time(
    keys: tuple[str, ...], index: np.ndarray, cols: dict[str, np.ndarray], which: np.ndarray, tick: bool
) -> Stacked:
    """Rows joined bucket by bucket put in time order with one stable sort (skipped when already in
    order): ties keep the order named (and ticks their arrival)."""
    if index.shape[0] > 1 and not (index[1:] >= index[:-1]).all():
        order = np.argsort(index, kind="stable")
        index, which = index[order], which[order]
        cols = {n: c[order] for n, c in cols.items()}
    return Stacked(keys, index, cols, which, tick)


#: Up to this many rows a bucket, joining then transposing beats a strided write per bucket.
_FEW_ROWS = 16


def _time_major(arrays: list[np.ndarray], rows: int, dtype: np.dtype) -> np.ndarray:
    """``arrays`` (one per bucket, each ``rows`` long) interleaved: element ``r`` of array ``j`` at
    ``r * len(arrays) + j``."""
    nb = len(arrays)
    if rows <= _FEW_ROWS:
        joined = np.concatenate(arrays)
        return joined if rows == 1 else np.ascontiguousarray(joined.reshape(nb, rows).T).reshape(-1)
    grid = np.empty((rows, nb), dtype)
    for j, a in enumerate(arrays):
        grid[:, j] = a
    return grid.reshape(-1)


def bucket_major(stacked: Stacked) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """The rows of ``stacked`` grouped by bucket in the order named, each bucket's rows in time
    order: ``(index, columns, counts)``, ``counts[j]`` rows of ``keys[j]`` (zero for a bucket with
    none). One reordering copy of each column (none for a cross-section, already in that order);
    MarketStore's wire and :func:`unstack` want this layout."""
    keys = stacked.keys
    which = stacked.which
    if which is None:
        return stacked.index, dict(stacked.columns), np.array([len(stacked)], np.int64)
    counts = np.bincount(which, minlength=len(keys))
    if which.shape[0] == len(keys) and (counts == 1).all() and (which[1:] > which[:-1]).all():
        return stacked.index, dict(stacked.columns), counts  # a cross-section: one row each, in key order
    order = np.argsort(which, kind="stable")  # keeps each bucket's rows in time order
    return stacked.index[order], {n: c[order] for n, c in stacked.columns.items()}, counts


def unstack(stacked: Stacked) -> dict[str, Batch]:
    """Each bucket's rows of ``stacked`` as a :class:`Batch` (in time order), keyed in the order
    named; the inverse of :func:`stack`. The batches are views of one reordered copy of each column."""
    keys = stacked.keys
    if stacked.which is None:
        return {keys[0]: Batch(stacked.index, dict(stacked.columns), stacked.variable_length)}
    index, cols, counts = bucket_major(stacked)
    ends = np.cumsum(counts).tolist()
    out: dict[str, Batch] = {}
    a = 0
    for k, z in zip(keys, ends, strict=True):
        out[k] = Batch(index[a:z], {n: c[a:z] for n, c in cols.items()}, stacked.variable_length)
        a = z
    return out
