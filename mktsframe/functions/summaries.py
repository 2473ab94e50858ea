"""Whole-result summaries: ``count``, ``min``, ``max``, ``avg`` and ``gap`` (MarketStore spec §6.2).

``count``/``min``/``max``/``avg`` return one row stamped ``Epoch`` = now (whole seconds, UTC), as
MarketStore does for computed rows, with columns ``Count`` (int64), ``Min``/``Max`` (the input
column's type — MarketStore cast to float32, which rounds prices) and ``Avg`` (float64). Over no
rows ``count`` is 0 and the others return no row (MarketStore failed with "empty input to Accum").

``gap(['10Sec'])`` lists every spacing between consecutive rows strictly longer than the
threshold; without one, every spacing whose z-score exceeds 3 (sample standard deviation; a
constant spacing has none). Rows: ``Epoch`` = the last row before the gap, ``End`` = the first
row after it (int64 epoch seconds), ``Length`` = ``End - Epoch`` in seconds. As in MarketStore,
spacings are measured in whole seconds.
"""

from __future__ import annotations

import time

import numpy as np

from mktsframe.backend.base import Batch
from mktsframe.functions.syntax import Call, numeric
from mktsframe.functions.windows import parse_window

__all__ = ["avg", "count", "gap", "maximum", "minimum"]

NS = 1_000_000_000


def _now() -> np.ndarray:
    return np.array([time.time_ns() // NS * NS], dtype=np.int64)


def _one_column(call: Call) -> str:
    if call.literals or call.named or len(call.columns) != 1 or call.columns[0] == "*":
        raise call.fail(f"takes exactly one column, e.g. {call.name}(Close)")
    return call.columns[0]


def count(batch: Batch, call: Call) -> Batch:
    """``count(*)`` or ``count(X)``: the number of input rows, as ``Count`` (int64)."""
    if call.literals or call.named or len(call.columns) > 1:
        raise call.fail("takes * or one column, e.g. count(*)")
    if call.columns and call.columns[0] != "*":
        numeric(batch, call.columns[0], call)  # the column must exist
    return Batch(_now(), {"Count": np.array([len(batch)], dtype=np.int64)})


def _extreme(batch: Batch, call: Call, label: str) -> Batch:
    values = numeric(batch, _one_column(call), call)
    if values.shape[0] == 0:
        return Batch(np.empty(0, np.int64), {label: values[:0]})
    fn = (np.nanmax if label == "Max" else np.nanmin) if values.dtype.kind == "f" else (
        np.max if label == "Max" else np.min)
    with np.errstate(invalid="ignore"):
        if values.dtype.kind == "f" and np.isnan(values).all():
            result = np.array([np.nan], values.dtype)
        else:
            result = np.array([fn(values)], values.dtype)
    return Batch(_now(), {label: result})


def maximum(batch: Batch, call: Call) -> Batch:
    """``max(X)``: the largest value as ``Max`` (NaN ignored), in X's type."""
    return _extreme(batch, call, "Max")


def minimum(batch: Batch, call: Call) -> Batch:
    """``min(X)``: the smallest value as ``Min`` (NaN ignored), in X's type."""
    return _extreme(batch, call, "Min")


def avg(batch: Batch, call: Call) -> Batch:
    """``avg(X)``: the mean as ``Avg`` (float64, accumulated in float64)."""
    values = numeric(batch, _one_column(call), call)
    if values.shape[0] == 0:
        return Batch(np.empty(0, np.int64), {"Avg": np.empty(0, np.float64)})
    return Batch(_now(), {"Avg": np.array([values.mean(dtype=np.float64)], np.float64)})


def gap(batch: Batch, call: Call) -> Batch:
    """``gap(['10Sec'])``: spacings between consecutive rows longer than the threshold (see module doc)."""
    if call.columns or call.named or len(call.literals) > 1:
        raise call.fail("takes at most one quoted threshold, e.g. gap('10Sec')")
    secs = np.sort(np.asarray(batch.index, dtype=np.int64)) // NS
    diffs = np.diff(secs)
    if call.literals:
        win = parse_window(call.literals[0])
        if not win.seconds or win.unit != "s":
            raise call.fail(f"threshold {call.literals[0]!r} must be a fixed duration such as '10Sec', '5Min', '1D'")
        mask = diffs > win.seconds
    elif diffs.shape[0] >= 2:
        std = diffs.std(ddof=1)
        mask = np.abs((diffs - diffs.mean()) / (std if std > 0 else 1.0)) > 3
    else:
        mask = np.zeros(diffs.shape[0], dtype=bool)
    where = np.flatnonzero(mask)
    return Batch(secs[where] * NS, {"End": secs[where + 1].astype(np.int64), "Length": diffs[where].astype(np.int64)})
