"""Aggregations over :class:`~mktsframe.backend.base.Batch` rows: candles and MarketStore's query functions.

The server's ``functions`` query field, the pandas API (``df.mkts.candles()``,
``read_mkts(timeframe=)``) and the ``ondiskagg`` trigger all call this package, so a candle is
computed the same way everywhere. Everything is numpy over whole columns; timestamps are int64
nanoseconds since the epoch, UTC, and windows are aligned in UTC (:mod:`.windows`).
"""

from mktsframe.functions.candles import BAR_RULES, aggregate, candles, group_starts
from mktsframe.functions.pipeline import FUNCTIONS, apply_functions, parse_functions
from mktsframe.functions.syntax import Call, parse_call
from mktsframe.functions.windows import Window, parse_window

__all__ = [
    "BAR_RULES",
    "FUNCTIONS",
    "Call",
    "Window",
    "aggregate",
    "apply_functions",
    "candles",
    "group_starts",
    "parse_call",
    "parse_functions",
    "parse_window",
]
