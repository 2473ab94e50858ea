"""MarketStore's query functions (spec §6.2) over a result frame: candles, gaps, count/avg/min/max.

Input frames are indexed by ``Epoch`` (a UTC ``DatetimeIndex``, ns) as every mktsframe read
returns them. Output column names and types follow MarketStore so its clients see the same
schema: candles give ``Open/High/Low/Close`` as ``f4`` plus ``<Col>_SUM`` / ``<Col>_AVG`` as
``f8``, indexed by the window start; ``count`` gives ``Count`` (``i8``), ``avg`` ``Avg`` (``f8``),
``min``/``max`` ``Min``/``Max`` (``f4``), at ``Epoch`` = now (whole seconds).

Candle windows are aligned in UTC: ``Sec/Min/H/D`` by duration since the epoch, ``W`` to ISO
weeks (Monday), ``M`` to calendar months, ``Y`` to years.

This is the one implementation the SQL package uses; the server's ``functions`` request key
(another module) should call these rather than duplicate them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd

from mktsframe.backend.base import Batch
from mktsframe.errors import SQLError
from mktsframe.io.frames import batch_to_frame

__all__ = ["aggregate", "aggregate_result", "candle_windows", "candlecandler", "gap", "resolve_column", "tickcandler"]

NS = 1_000_000_000
_DURATION = re.compile(r"(\d+)(Sec|Min|H|D|W|M|Y)")
_FIXED_SECONDS = {"Sec": 1, "Min": 60, "H": 3600, "D": 86_400}
_MONDAY_1970_NS = 4 * 86_400 * NS  # 1970-01-05 was a Monday
_WEEK_NS = 7 * 86_400 * NS


def resolve_column(df: pd.DataFrame, name: str) -> str:
    """The frame column ``name`` refers to (exact match first, then case-insensitive)."""
    if name in df.columns:
        return name
    folded = [c for c in df.columns if str(c).lower() == name.lower()]
    if len(folded) == 1:
        return folded[0]
    raise SQLError(f"unknown column {name!r} (columns: {', '.join(map(str, df.columns))})")


def candle_windows(index_ns: np.ndarray, duration: str) -> np.ndarray:
    """The start (int64 ns UTC) of the candle window holding each timestamp."""
    m = _DURATION.search(duration or "")
    if not m or int(m.group(1)) <= 0:
        raise SQLError(f"invalid candle duration {duration!r} (expected e.g. '5Min', '1H', '1D', '1W', '1M', '1Y')")
    n, unit = int(m.group(1)), m.group(2)
    idx = np.asarray(index_ns, dtype=np.int64)
    if unit in _FIXED_SECONDS:
        d = n * _FIXED_SECONDS[unit] * NS
        return idx - idx % d
    if unit == "W":
        d = n * _WEEK_NS
        rel = idx - _MONDAY_1970_NS
        return rel - rel % d + _MONDAY_1970_NS
    step = "M" if unit == "M" else "Y"
    units = idx.view("M8[ns]").astype(f"M8[{step}]").astype(np.int64)
    units = units - units % n
    return units.astype(f"M8[{step}]").astype("M8[ns]").view(np.int64)


def _groups(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start offsets and sizes of the runs of equal windows (input sorted by time)."""
    if windows.size == 0:
        return np.empty(0, np.intp), np.empty(0, np.intp)
    starts = np.concatenate(([0], np.flatnonzero(np.diff(windows)) + 1))
    sizes = np.diff(np.append(starts, windows.size))
    return starts, sizes


def _frame(index_ns: np.ndarray, columns: dict[str, np.ndarray]) -> pd.DataFrame:
    return batch_to_frame(Batch(np.ascontiguousarray(index_ns, dtype=np.int64), columns))


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df if df.index.is_monotonic_increasing else df.sort_index(kind="stable")


def _ohlc(
    df: pd.DataFrame, duration: str, price: dict[str, np.ndarray], named: Sequence[tuple[str, str]]
) -> pd.DataFrame:
    """Candles from per-row open/high/low/close inputs plus ``Sum::``/``Avg::`` extras."""
    windows = candle_windows(df.index.asi8, duration)
    starts, sizes = _groups(windows)
    ends = starts + sizes - 1
    out: dict[str, np.ndarray] = {}
    if starts.size:
        out["Open"] = price["Open"][starts].astype(np.float32)
        out["High"] = np.maximum.reduceat(price["High"], starts).astype(np.float32)
        out["Low"] = np.minimum.reduceat(price["Low"], starts).astype(np.float32)
        out["Close"] = price["Close"][ends].astype(np.float32)
    else:
        out.update({k: np.empty(0, np.float32) for k in ("Open", "High", "Low", "Close")})
    for kind, col in named:
        values = df[resolve_column(df, col)].to_numpy(dtype=np.float64)
        sums = np.add.reduceat(values, starts) if starts.size else np.empty(0)
        if kind.lower() == "sum":
            out[f"{col}_SUM"] = sums
        elif kind.lower() == "avg":
            out[f"{col}_AVG"] = sums / sizes if starts.size else np.empty(0)
        else:
            raise SQLError(f"unknown candle argument {kind}::{col} (use Sum::Column or Avg::Column)")
    return _frame(windows[starts], out)


def _duration_arg(name: str, literals: Sequence[str]) -> str:
    if len(literals) != 1:
        raise SQLError(f"{name}() needs exactly one duration literal first, e.g. {name}('5Min', ...)")
    return literals[0]


def candlecandler(
    df: pd.DataFrame, literals: Sequence[str], columns: Sequence[str], named: Sequence[tuple[str, str]]
) -> pd.DataFrame:
    """``candlecandler('5Min', Open, High, Low, Close [, Sum::X] [, Avg::Y])``: bars to longer bars.

    Required inputs come positionally in that order or by name (``Open::Bid``); positional columns
    after the four prices are summed (MarketStore rejected them, pymarketstore's docs use them).
    """
    duration = _duration_arg("candlecandler", literals)
    df = _sorted(df)
    roles = {"open": None, "high": None, "low": None, "close": None}
    extra: list[tuple[str, str]] = []
    for kind, col in named:
        if kind.lower() in roles:
            roles[kind.lower()] = col
        else:
            extra.append((kind, col))
    positional = list(columns)
    for role in roles:
        if roles[role] is None:
            if positional:
                roles[role] = positional.pop(0)
            else:
                roles[role] = role.capitalize()  # default: the column of that name
    extra = [("Sum", c) for c in positional] + extra
    price = {r.capitalize(): df[resolve_column(df, c)].to_numpy(dtype=np.float64) for r, c in roles.items()}
    return _ohlc(df, duration, price, extra)


def tickcandler(
    df: pd.DataFrame, literals: Sequence[str], columns: Sequence[str], named: Sequence[tuple[str, str]]
) -> pd.DataFrame:
    """``tickcandler('1Min', Price [, Price2...] [, Sum::Size])``: ticks to bars (several prices are averaged)."""
    duration = _duration_arg("tickcandler", literals)
    prices = list(columns) + [c for k, c in named if k.lower() in ("candleprice", "price")]
    extra = [(k, c) for k, c in named if k.lower() not in ("candleprice", "price")]
    if not prices:
        raise SQLError("tickcandler() needs a price column, e.g. tickcandler('1Min', Price)")
    df = _sorted(df)
    values = np.mean([df[resolve_column(df, c)].to_numpy(dtype=np.float64) for c in prices], axis=0)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    return _ohlc(df, duration, {"Open": values, "High": values, "Low": values, "Close": values}, extra)


def gap(
    df: pd.DataFrame, literals: Sequence[str], columns: Sequence[str], named: Sequence[tuple[str, str]]
) -> pd.DataFrame:
    """``gap(['10Sec'])``: one row per gap between consecutive rows longer than the threshold.

    Without a threshold a gap is a spacing whose z-score exceeds 3. Output: ``Epoch`` = last row
    before the gap, ``End`` = first row after it (epoch seconds, i8), ``Length`` (seconds, i8).
    """
    if columns or named or len(literals) > 1:
        raise SQLError("gap() takes at most one duration literal, e.g. gap('10Sec')")
    df = _sorted(df)
    secs = df.index.asi8 // NS
    diffs = np.diff(secs)
    if literals:
        m = _DURATION.fullmatch(literals[0])
        if not m or m.group(2) not in _FIXED_SECONDS:
            raise SQLError(f"invalid gap threshold {literals[0]!r} (expected e.g. '10Sec', '5Min', '1H', '1D')")
        mask = diffs > int(m.group(1)) * _FIXED_SECONDS[m.group(2)]
    elif diffs.size > 1 and diffs.std() > 0:
        mask = np.abs((diffs - diffs.mean()) / diffs.std()) > 3
    else:
        mask = np.zeros(diffs.size, bool)
    where = np.flatnonzero(mask)
    return _frame(secs[where] * NS, {"End": secs[where + 1].astype(np.int64), "Length": diffs[where].astype(np.int64)})


def aggregate(df: pd.DataFrame, calls: Sequence[tuple[str, str | None, str | None]]) -> pd.DataFrame:
    """One row at ``Epoch`` = now with ``count``/``avg``/``min``/``max`` of the input.

    ``calls`` are ``(function, column or None for *, alias or None)``. MarketStore's output names
    are ``Count``, ``Avg``, ``Min``, ``Max``; an alias replaces them.
    """
    out: dict[str, np.ndarray] = {}
    for name, column, alias in calls:
        if name == "count":
            label, value = "Count", np.array([len(df)], np.int64)
        else:
            if column is None:
                raise SQLError(f"{name}(*) is not defined; name a column")
            values = df[resolve_column(df, column)].to_numpy().astype(np.float32)
            label = name.capitalize()
            if name == "avg":
                value = np.array([values.astype(np.float64).mean() if values.size else np.nan])
            else:
                fn = np.max if name == "max" else np.min
                value = np.array([fn(values) if values.size else np.nan], np.float32)
        label = alias or label
        if label in out:
            raise SQLError(f"two results would be named {label!r}; name them with AS")
        out[label] = value
    return aggregate_result(out)


def aggregate_result(columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """A one-row result at ``Epoch`` = now (whole seconds), as MarketStore stamps computed rows."""
    now = time.time_ns() // NS * NS
    return _frame(np.array([now], np.int64), columns)


#: Table-valued functions by lower-case name.
CANDLE_FUNCTIONS = {"candlecandler": candlecandler, "tickcandler": tickcandler, "gap": gap}
