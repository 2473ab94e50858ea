"""Candles: bars or ticks → coarser bars, vectorised over window boundaries.

One implementation serves the server's ``candlecandler``/``tickcandler`` query functions, the
pandas ``df.mkts.candles()`` / ``read_mkts(timeframe=)`` and the ``ondiskagg`` trigger.

How: the input is sorted by time (query results are; other input is stable-sorted, so ticks
with equal timestamps keep their arrival order). The start of every non-empty window is found
either by ``np.searchsorted`` of the window edges (when there are fewer windows than rows — the
usual case) or by flooring every timestamp. Each output column is then one numpy call over those
group starts: ``values[starts]`` (first), ``values[ends]`` (last), ``np.fmax.reduceat`` /
``np.fmin.reduceat`` (high/low, NaN ignored unless the whole window is NaN),
``np.add.reduceat`` (sums, NaN counted as 0). No Python loop runs per row or per window.

Windows without rows produce no candle (pandas' ``resample`` would emit a row of NaN). Each
candle's timestamp is its window start (see :mod:`mktsframe.functions.windows` for alignment).
Open and Close are the first and last *rows* of the window, in time order and, for equal
timestamps, in arrival order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from mktsframe.backend.base import Batch
from mktsframe.errors import FunctionError
from mktsframe.functions.syntax import Call, numeric, resolve_column
from mktsframe.functions.windows import Window, parse_window

__all__ = ["BAR_RULES", "Reduction", "aggregate", "candlecandler", "candles", "group_starts", "tickcandler"]

Reduction = Literal["first", "last", "max", "min", "sum", "mean", "count"]
_REDUCTIONS = ("first", "last", "max", "min", "sum", "mean", "count")

#: How :func:`candles` aggregates a column by its name (case-insensitive); other columns are dropped.
BAR_RULES: dict[str, Reduction] = {
    "open": "first", "high": "max", "low": "min", "close": "last",
    "volume": "sum", "trades": "sum", "count": "sum",
}  # fmt: skip
#: Tick columns :func:`candles` sums into ``Volume`` when the input has no bar columns.
TICK_SIZE_NAMES = ("size", "volume", "qty", "quantity", "amount")
TICK_PRICE_NAMES = ("price", "last", "trade")

Spec = tuple[str, np.ndarray, Reduction, "np.dtype | None"]
"""One output column: (name, input values, reduction, output dtype or None for the natural one)."""


def group_starts(index: np.ndarray, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Positions where each non-empty window starts in the sorted ``index``, and those windows' starts.

    Returns ``(starts, labels)``: ``starts`` (intp, ascending, ``starts[0] == 0``) and ``labels``
    (int64 ns UTC, the window start of each group).
    """
    n = index.shape[0]
    if n == 0:
        return np.empty(0, np.intp), np.empty(0, np.int64)
    first, last = int(index[0]), int(index[-1])
    regular = _regular_starts(index, window)
    if regular is not None:
        d = window.seconds * 1_000_000_000
        first_label = int(window.floor(index[:1])[0])
        return regular, first_label + np.arange(regular.shape[0], dtype=np.int64) * d
    if window.count_between(first, last) <= n:
        edges = window.edges(first, last)
        pos = np.searchsorted(index, edges, side="left")
        nonempty = pos[1:] > pos[:-1]
        return pos[:-1][nonempty], edges[:-1][nonempty]
    w = window.floor(index)
    change = np.empty(n, dtype=bool)
    change[0] = True
    np.not_equal(w[1:], w[:-1], out=change[1:])
    starts = np.flatnonzero(change)
    return starts, w[starts]


def _regular_starts(index: np.ndarray, window: Window) -> np.ndarray | None:
    """Group starts by arithmetic when rows are evenly spaced by a step dividing a fixed window.

    That is the usual input (consecutive bars of a fixed bucket); checking it costs one pass,
    against a binary search per window.
    """
    n = index.shape[0]
    d = window.fixed_ns
    if n < 3 or d is None or window.unit != "s":
        return None
    step = int(index[1]) - int(index[0])
    if step <= 0 or d % step or d // step < 2 or int(index[-1]) - int(index[0]) != (n - 1) * step:
        return None
    if not bool((np.diff(index) == step).all()):
        return None
    k = d // step
    off = int(index[0]) - int(window.floor(index[:1])[0])
    if off % step:
        return None
    head = k - off // step  # rows of the first (possibly partial) window
    return np.concatenate((np.zeros(1, np.intp), np.arange(head, n, k, dtype=np.intp)))


class _Groups:
    """Row ranges of the candles, plus a fast path for runs of equal small windows.

    ``body`` = ``(g0, g1, k)`` when groups ``g0..g1-1`` all hold ``k`` rows (and only the first
    and last group may differ): those are reduced as a ``(groups, k)`` matrix, column by column,
    which for small ``k`` beats ``reduceat``'s per-group overhead several times over.
    """

    SMALL = 32

    def __init__(self, starts: np.ndarray, n: int) -> None:
        self.starts = starts
        g = starts.shape[0]
        self.ends = np.empty_like(starts)
        if g:
            self.ends[:-1] = starts[1:] - 1
            self.ends[-1] = n - 1
        self.body: tuple[int, int, int] | None = None
        if g >= 3:
            sizes = self.ends - starts + 1
            k = int(sizes[1])
            if 1 < k <= self.SMALL and bool((sizes[1:-1] == k).all()):
                g0 = 0 if sizes[0] == k else 1
                g1 = g if sizes[-1] == k else g - 1
                self.body = (g0, g1, k)

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def reduce(self, values: np.ndarray, ufunc: np.ufunc, acc: np.dtype) -> np.ndarray:
        """``ufunc`` over each group, accumulated in ``acc``."""
        if self.body is None:
            return ufunc.reduceat(values, self.starts, dtype=acc)
        g0, g1, k = self.body
        r0 = int(self.starts[g0])
        mat = values[r0 : r0 + (g1 - g0) * k].reshape(-1, k)
        out = np.empty(len(self), dtype=acc)
        body = out[g0:g1]
        body[:] = mat[:, 0]
        for j in range(1, k):
            ufunc(body, mat[:, j], out=body)
        for g in {0, len(self) - 1}:
            if g0 <= g < g1:
                continue
            out[g] = ufunc.reduce(values[self.starts[g] : self.ends[g] + 1], dtype=acc)
        return out


def _sorted(batch: Batch) -> Batch:
    idx = np.asarray(batch.index, dtype=np.int64)
    if idx.shape[0] < 2 or bool((idx[1:] >= idx[:-1]).all()):
        return batch if idx is batch.index else Batch(idx, batch.columns)
    order = np.argsort(idx, kind="stable")
    return Batch(idx[order], {k: np.asarray(v)[order] for k, v in batch.columns.items()})


def _reduce(values: np.ndarray, groups: _Groups, how: Reduction) -> np.ndarray:
    """One value per group."""
    if len(groups) == 0:
        return np.empty(0, _natural_dtype(values.dtype, how))
    if how == "first":
        return values[groups.starts]
    if how == "last":
        return values[groups.ends]
    sizes = groups.ends - groups.starts + 1
    if how == "count":
        return sizes.astype(np.int64)
    kind = values.dtype.kind
    if how in ("max", "min"):
        if kind == "f":
            ufunc = np.fmax if how == "max" else np.fmin
        elif kind in "iub":
            ufunc = np.maximum if how == "max" else np.minimum
        else:
            raise FunctionError(f"cannot take the {how} of {values.dtype} values")
        return groups.reduce(values, ufunc, values.dtype)
    if kind not in "iufb":
        raise FunctionError(f"cannot {how} {values.dtype} values")
    if kind == "f":
        nan = np.isnan(values)
        if nan.any():
            values = np.where(nan, 0.0, values)
    sums = groups.reduce(values, np.add, _natural_dtype(values.dtype, "sum"))
    if how == "sum":
        return sums
    return sums / sizes


def _natural_dtype(dt: np.dtype, how: Reduction) -> np.dtype:
    if how in ("first", "last", "max", "min"):
        return dt
    if how == "count":
        return np.dtype(np.int64)
    if how == "mean" or dt.kind == "f":
        return np.dtype(np.float64)
    return np.dtype(np.uint64 if dt.kind == "u" else np.int64)


def aggregate(index: np.ndarray, window: Window | str, specs: Sequence[Spec]) -> Batch:
    """Candles of already time-sorted rows: one output column per ``(name, values, how, dtype)``.

    ``dtype`` ``None`` keeps the natural type: the input's for first/last/max/min, int64 (uint64
    for unsigned) or float64 for sums, float64 for means, int64 for counts.
    """
    win = parse_window(window) if isinstance(window, str) else window
    idx = np.asarray(index, dtype=np.int64)
    starts, labels = group_starts(idx, win)
    groups = _Groups(starts, idx.shape[0])
    out: dict[str, np.ndarray] = {}
    for name, values, how, dtype in specs:
        if how not in _REDUCTIONS:
            known = ", ".join(_REDUCTIONS)
            raise FunctionError(f"unknown aggregation {how!r} for column {name!r} (use one of {known})")
        if name in out:
            raise FunctionError(f"two output columns would be named {name!r}")
        v = np.asarray(values)
        res = _reduce(v, groups, how)
        out[name] = res if dtype is None or res.dtype == dtype else res.astype(dtype)
    return Batch(labels, out)


def _bar_columns(batch: Batch) -> dict[str, Reduction]:
    return {c: BAR_RULES[c.lower()] for c in batch.columns if c.lower() in BAR_RULES}


def _sum_dtype(values: np.ndarray) -> np.dtype | None:
    """Sums keep a float column's type (``f4`` Volume stays ``f4``); integers widen to 64 bits."""
    return values.dtype if values.dtype.kind == "f" else None


def candles(
    batch: Batch,
    window: Window | str,
    *,
    agg: Mapping[str, Reduction] | None = None,
    price: str | None = None,
) -> Batch:
    """Coarser candles from bars or ticks, by MarketStore's column conventions.

    Bars (the input has ``Open``/``High``/``Low``/``Close``, any case): Open = first,
    High = max, Low = min, Close = last, ``Volume`` (and ``Trades``/``Count``) = sum. Ticks
    (no bar columns): ``price`` (default: a ``Price``/``Last``/``Trade`` column) becomes
    Open/High/Low/Close and a ``Size``/``Volume``/``Qty`` column is summed into ``Volume``.
    Other columns are dropped unless ``agg`` names them (``{"VWAP": "mean"}``); ``agg`` also
    overrides the conventions. Types are kept (sums of integers widen to int64/uint64).

    Parameters
    ----------
    batch : Batch
        Rows (index int64 ns UTC; need not be sorted; duplicates allowed).
    window : str or Window
        ``'5Min'``, ``'1H'``, ``'1D'``, ``'1W'`` (Monday 00:00 UTC), ``'1M'`` (calendar month), ...
    agg : mapping, optional
        Column → one of ``first, last, max, min, sum, mean, count``.
    price : str, optional
        Tick price column (implies tick mode).
    """
    win = parse_window(window) if isinstance(window, str) else window
    b = _sorted(batch)
    rules = {} if price is not None else _bar_columns(b)
    specs: list[Spec] = []
    if rules:
        for col, how in rules.items():
            v = np.asarray(b.columns[col])
            specs.append((col, v, how, _sum_dtype(v) if how == "sum" else None))
    else:
        pcol = resolve_column(b, price) if price is not None else _first_present(b, TICK_PRICE_NAMES)
        if pcol is None:
            raise FunctionError(
                "cannot make candles: no Open/High/Low/Close columns and no tick price column "
                f"(Price, Last or Trade; or pass price=) among {list(b.columns)}"
            )
        p = numeric(b, pcol)
        specs += [("Open", p, "first", None), ("High", p, "max", None), ("Low", p, "min", None),
                  ("Close", p, "last", None)]  # fmt: skip
        scol = _first_present(b, TICK_SIZE_NAMES)
        if scol is not None and scol != pcol:
            s = numeric(b, scol)
            specs.append(("Volume", s, "sum", _sum_dtype(s)))
    for col, how in (agg or {}).items():
        real = resolve_column(b, col)
        specs = [sp for sp in specs if sp[0] != real]
        v = np.asarray(b.columns[real])
        specs.append((real, v, how, _sum_dtype(v) if how == "sum" else None))
    return aggregate(b.index, win, specs)


def _first_present(batch: Batch, names: Sequence[str]) -> str | None:
    lower = {c.lower(): c for c in batch.columns}
    return next((lower[n] for n in names if n in lower), None)


# -- MarketStore's query functions ----------------------------------------------------------------
def _window_arg(call: Call) -> Window:
    if len(call.literals) != 1:
        raise call.fail(f"needs exactly one quoted duration first, e.g. {call.name}('5Min', ...)")
    try:
        return parse_window(call.literals[0])
    except FunctionError as exc:
        raise call.fail(str(exc)) from None


def _extras(batch: Batch, call: Call, named: Sequence[tuple[str, str]]) -> list[Spec]:
    """``Sum::X`` → ``X_SUM`` and ``Avg::Y`` → ``Y_AVG``, both float64 (MarketStore's names and types)."""
    out: list[Spec] = []
    f8 = np.dtype(np.float64)
    for param, col in named:
        kind = param.lower()
        if kind not in ("sum", "avg"):
            raise call.fail(f"unknown parameter {param}::{col} (use Sum::Column or Avg::Column)")
        real = resolve_column(batch, col, call)
        v = numeric(batch, real, call)
        out.append((f"{col}_{kind.upper()}", v, "sum" if kind == "sum" else "mean", f8))
    return out


def candlecandler(batch: Batch, call: Call) -> Batch:
    """``candlecandler('5Min', Open, High, Low, Close [, Sum::X] [, Avg::Y])``: bars → coarser bars.

    The four prices come positionally in that order or by name (``Open::Bid``); missing ones
    default to the column of that name. A positional column after the four is summed
    (``candlecandler('1H',Open,High,Low,Close,Volume)`` as pymarketstore's docs write it; MarketStore
    itself rejected that with "extra args used"). Output: ``Open, High, Low, Close`` in the input
    types, then ``X_SUM`` / ``Y_AVG`` as float64.
    """
    win = _window_arg(call)
    b = _sorted(batch)
    roles: dict[str, str | None] = {"Open": None, "High": None, "Low": None, "Close": None}
    rest: list[tuple[str, str]] = []
    for param, col in call.named:
        role = param.capitalize()
        if role in roles:
            roles[role] = col
        else:
            rest.append((param, col))
    positional = list(call.columns)
    for role in roles:
        if roles[role] is None:
            roles[role] = positional.pop(0) if positional else role
    rest = [("Sum", c) for c in positional] + rest
    hows: dict[str, Reduction] = {"Open": "first", "High": "max", "Low": "min", "Close": "last"}
    specs: list[Spec] = [(role, numeric(b, col, call), hows[role], None) for role, col in roles.items()]  # type: ignore[arg-type]
    return aggregate(b.index, win, specs + _extras(b, call, rest))


def tickcandler(batch: Batch, call: Call) -> Batch:
    """``tickcandler('1Min', Price [, Price2 ...] [, Sum::Size] [, Avg::X])``: ticks → OHLC bars.

    Several price columns are averaged per row (float64), e.g. ``tickcandler('1Min', Bid, Ask)``
    for mid-price candles; ``CandlePrice::X`` names a price too. Output as for candlecandler.
    """
    win = _window_arg(call)
    b = _sorted(batch)
    prices = list(call.columns) + [c for p, c in call.named if p.lower() in ("candleprice", "price")]
    rest = [(p, c) for p, c in call.named if p.lower() not in ("candleprice", "price")]
    if not prices:
        raise call.fail("needs a price column, e.g. tickcandler('1Min', Price)")
    cols = [numeric(b, c, call) for c in prices]
    p = cols[0] if len(cols) == 1 else np.mean([c.astype(np.float64) for c in cols], axis=0)
    specs: list[Spec] = [("Open", p, "first", None), ("High", p, "max", None), ("Low", p, "min", None),
                         ("Close", p, "last", None)]  # fmt: skip
    return aggregate(b.index, win, specs + _extras(b, call, rest))
