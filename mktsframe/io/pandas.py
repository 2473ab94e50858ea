"""``read_mkts`` / ``write_mkts``: the pandas front door (also ``pd.read_mkts`` and ``df.to_mkts``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mktsframe.backend import Backend, default_backend
from mktsframe.errors import SchemaMismatchError
from mktsframe.functions.resample import read_candles
from mktsframe.io.frames import batch_to_frame, frame_to_batch
from mktsframe.times import TimeLike

__all__ = ["read_mkts", "write_mkts"]


def read_mkts(
    key: str,
    start: TimeLike = None,
    end: TimeLike = None,
    *,
    columns: Sequence[str] | None = None,
    limit: int | None = None,
    limit_from_start: bool = False,
    timeframe: str | None = None,
    backend: Backend | None = None,
) -> pd.DataFrame:
    """Read bars from one or more buckets into a DataFrame.

    Parameters
    ----------
    key : str
        ``SYMBOL/TIMEFRAME/ATTRGROUP``; the symbol (or any part) may be a comma list or ``*``.
    start, end : str, datetime, Timestamp, int or float, optional
        Inclusive bounds at bar granularity (a bound inside a bar selects that bar). Zone-less
        values are UTC; integers are epoch seconds or nanoseconds (see :func:`mktsframe.times.to_ns`).
    columns : list of str, optional
        Columns to return (default: all).
    limit : int, optional
        Return only the last ``limit`` rows in the range, or the first with ``limit_from_start``.
    timeframe : str, optional
        Return candles of this duration (``'5Min'``, ``'1H'``, ``'1D'``, ``'1W'``, ``'1M'``…),
        aggregated from the finest stored bucket of the key's symbol and attribute group whose
        timeframe divides it (the key's own timeframe part is not used; write ``*``). ``start``/``end``
        then select whole candles and ``limit`` counts candles. A
        :class:`~mktsframe.errors.FunctionError` if no stored bucket is fine enough (MarketStore
        silently read another timeframe instead). Column rules: :meth:`MktsAccessor.candles`.
    backend : Backend, optional
        Where to read; default: the root from ``MKTS_ROOT``, ``./mkts.yml`` or ``./data``.

    Returns
    -------
    pandas.DataFrame
        Indexed by a UTC ``DatetimeIndex`` named ``Epoch`` (ns; for a tick bucket each tick's exact
        time, with repeated timestamps in arrival order). When the key names several
        buckets, one frame holding them all, with a ``Symbol`` column first (and ``Timeframe``
        / ``AttributeGroup`` columns if those vary), sorted by time then by the order named.
        An empty range gives an empty frame with the bucket's columns and dtypes.

    Raises
    ------
    BucketNotFoundError
        If a named bucket does not exist.
    """
    be = backend if backend is not None else default_backend()
    if timeframe is not None:
        results = read_candles(be, key, timeframe, start=start, end=end, columns=columns, limit=limit,
                               limit_from_start=limit_from_start)  # fmt: skip
    else:
        results = be.query(
            key,
            start=start,
            end=end,
            columns=list(columns) if columns is not None else None,
            limit=limit,
            limit_from_start=limit_from_start,
        )
    if len(results) == 1:
        (k, batch), = results.items()
        df = batch_to_frame(batch)
        df.attrs["mkts_key"] = k
        return df
    return _combine(results)


def _combine(results: dict[str, object]) -> pd.DataFrame:
    keys = list(results)
    split = [k.split("/") for k in keys]
    label_cols = {"Symbol": [s[0] for s in split]}
    if len({s[1] for s in split}) > 1:
        label_cols["Timeframe"] = [s[1] for s in split]
    if len({s[2] for s in split}) > 1:
        label_cols["AttributeGroup"] = [s[2] for s in split]
    frames = []
    for i, batch in enumerate(results.values()):
        df = batch_to_frame(batch)  # type: ignore[arg-type]
        for j, (name, values) in enumerate(label_cols.items()):
            df.insert(j, name, pd.Series(values[i], index=df.index, dtype="str"))
        df.insert(0, "_order", np.full(len(df), i, np.int32))
        frames.append(df)
    # Same names *and* types: concatenating an i8 column with an f8 one would silently round it.
    schemas = [
        [f"{n}:{np.asarray(a).dtype.str.lstrip('<|')}" for n, a in b.columns.items()]  # type: ignore[attr-defined]
        for b in results.values()
    ]
    if any(sc != schemas[0] for sc in schemas):
        raise SchemaMismatchError(
            "symbols in a query must have the same columns (or be filtered by common columns): "
            + "; ".join(f"{k}: {sc}" for k, sc in zip(keys, schemas, strict=True))
        )
    out = pd.concat(frames)
    order = np.lexsort((out["_order"].to_numpy(), out.index.asi8))
    out = out.iloc[order].drop(columns="_order")
    out.attrs["mkts_key"] = ",".join(keys)
    return out


def write_mkts(
    df: pd.DataFrame, key: str, *, variable_length: bool = False, backend: Backend | None = None
) -> None:
    """Store a DataFrame's rows in the bucket ``key`` (created from the frame if missing).

    Fixed buckets (the default): a row at a bar that already holds data replaces it, and rows in
    one call that fall in the same bar keep the last. Tick buckets (``variable_length=True`` when
    the bucket is created; an existing bucket keeps its kind): every row is kept at its exact
    nanosecond, duplicate and late timestamps included, rows at equal times in arrival order. A
    pymarketstore-style frame with integer ``Epoch`` seconds and a ``Nanoseconds`` column has the
    two combined into each tick's time.

    The bucket's schema is fixed at creation: other columns raise
    :class:`~mktsframe.errors.SchemaMismatchError`; numeric values are converted to the bucket's
    type only when nothing is lost (floats into an ``f4`` column are rounded, as MarketStore does).
    """
    be = backend if backend is not None else default_backend()
    be.write(key, frame_to_batch(df, nanoseconds_column=variable_length), variable_length=variable_length)
