"""``read_mkts`` / ``write_mkts``: the pandas front door (also ``pd.read_mkts`` and ``df.to_mkts``)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from mktsframe.backend import Backend, default_backend
from mktsframe.backend.base import Batch, Stacked, query_stacked, write_stacked
from mktsframe.functions.resample import read_candles
from mktsframe.io.frames import LABELS, batch_to_frame, frame_to_batch, frame_to_stacked
from mktsframe.keys import parse_key_pattern
from mktsframe.stacking import code_dtype, stack
from mktsframe.times import TimeLike

__all__ = ["read_mkts", "write_many", "write_mkts"]


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
        return _one_bucket(results) if len(results) == 1 else _stacked_frame(stack(results))
    kw = {"start": start, "end": end, "columns": list(columns) if columns is not None else None, "limit": limit,
          "limit_from_start": limit_from_start}  # fmt: skip
    if _names_one_bucket(key):
        return _one_bucket(be.query(key, **kw))
    stacked = query_stacked(be, key, **kw)
    if len(stacked.keys) == 1:
        return _one_bucket({stacked.keys[0]: Batch(stacked.index, stacked.columns, stacked.variable_length)})
    return _stacked_frame(stacked)


def _names_one_bucket(key: str) -> bool:
    """``key`` is one plain ``SYMBOL/TIMEFRAME/ATTRGROUP`` (no list, no wildcard)."""
    named = parse_key_pattern(key).expand()
    return named is not None and len(named) == 1


def _one_bucket(results: dict[str, Batch]) -> pd.DataFrame:
    ((k, batch),) = results.items()
    df = batch_to_frame(batch)
    df.attrs["mkts_key"] = k
    return df


def _stacked_frame(stacked: Stacked) -> pd.DataFrame:
    """The frame of several buckets' rows (already time-major, see :mod:`mktsframe.stacking`), with a
    categorical ``Symbol`` column first (and ``Timeframe`` / ``AttributeGroup`` if those vary).

    Labels are the row's bucket position (``which``) used as the codes of a ``Categorical`` over the
    distinct names: no string per row is ever built. A DataFrame per bucket and a ``concat`` cost
    ~1 ms a bucket: 5,000 symbols took seconds.
    """
    keys = stacked.keys
    which = stacked.which
    if which is None:
        raise ValueError("a stacked result of one bucket has no labels")  # read_mkts builds those itself
    out = batch_to_frame(Batch(stacked.index, stacked.columns))
    for pos, (label, categories, codes_of_keys) in enumerate(_labels(keys)):
        codes = which if codes_of_keys is None else codes_of_keys[which]
        out.insert(pos, label, pd.Categorical.from_codes(codes, categories=categories, validate=False))
    out.attrs["mkts_key"] = ",".join(keys)
    return out


@functools.lru_cache(maxsize=32)
def _labels(keys: tuple[str, ...]) -> list[tuple[str, pd.Index, np.ndarray | None]]:
    """For each label column of a frame of ``keys``: its name, its categories, and the code of each
    key (``None`` when every key has its own name: the key positions are the codes). Cached: a
    universe is read again and again, and splitting 5,000 keys costs ~2 ms."""
    parts = list(zip(*(k.split("/") for k in keys), strict=True))
    labels = []
    for label, values in zip(LABELS, parts, strict=True):
        distinct = list(dict.fromkeys(values))
        if label != "Symbol" and len(distinct) == 1:
            continue
        codes = None
        if len(distinct) != len(values):
            code_of = {v: i for i, v in enumerate(distinct)}
            codes = np.array([code_of[v] for v in values], code_dtype(len(distinct)))
        labels.append((label, pd.Index(distinct, dtype=object), codes))
    return labels


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

    A key with ``*`` parts (``"*/1Min/OHLCV"``) writes a frame of many buckets, as a multi-bucket
    :func:`read_mkts` returns it: each row's ``Symbol`` (``Timeframe``, ``AttributeGroup``) column
    names its bucket, and all of it is **one** durable commit, as :func:`write_many`. A live feed's
    bar for every symbol of a universe is one such frame and one call.
    """
    be = backend if backend is not None else default_backend()
    if isinstance(key, str) and "*" in key:
        stacked = frame_to_stacked(df, key, nanoseconds_column=variable_length)
        write_stacked(be, stacked, variable_length=variable_length)
        return
    be.write(key, frame_to_batch(df, nanoseconds_column=variable_length), variable_length=variable_length)


def write_many(
    frames: Mapping[str, pd.DataFrame] | Sequence[tuple[str, pd.DataFrame]],
    *,
    variable_length: bool = False,
    backend: Backend | None = None,
) -> None:
    """Store several frames, each in its bucket, as **one** durable commit: ``{key: df, ...}``.

    A live feed that writes a bar to every symbol of a universe each minute pays one log sync
    instead of one per symbol, and a crash keeps all of the call or none of it. Every frame is
    checked before anything is written: a bad one fails the call with nothing stored. Each bucket
    behaves as with :func:`write_mkts` (created if missing, ``variable_length`` making new buckets
    tick buckets). Over HTTP, frames with the same columns travel in one request.
    """
    be = backend if backend is not None else default_backend()
    pairs = list(frames.items()) if isinstance(frames, Mapping) else list(frames)
    be.write_many([(key, frame_to_batch(df, nanoseconds_column=variable_length)) for key, df in pairs],
                  variable_length=variable_length)  # fmt: skip
