"""``df.mkts`` and ``df.to_mkts``: registered with pandas' official accessor API.

pandas builds a new accessor object on every attribute access, so nothing is cached here; the
key a frame was read from lives in ``df.attrs["mkts_key"]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import pandas as pd

from mktsframe.backend import Backend
from mktsframe.functions.candles import Reduction, candles
from mktsframe.io.frames import batch_to_frame, frame_to_batch
from mktsframe.io.pandas import write_mkts

if TYPE_CHECKING:
    from mktsframe.widgets.chart import CandleChart

__all__ = ["MktsAccessor", "ToMkts"]


class MktsAccessor:
    """``df.mkts``: mktsframe operations on a DataFrame."""

    def __init__(self, df: pd.DataFrame) -> None:
        self._df = df

    @property
    def key(self) -> str | None:
        """The bucket key this frame was read from, if any."""
        return self._df.attrs.get("mkts_key")

    def candles(
        self, timeframe: str, *, agg: Mapping[str, Reduction] | None = None, price: str | None = None
    ) -> pd.DataFrame:
        """Coarser candles of this frame of bars or ticks (one implementation with the server's).

        Bars: Open = first, High = max, Low = min, Close = last, Volume (and Trades/Count) = sum,
        matched case-insensitively; other columns are dropped unless ``agg`` names them
        (``agg={"VWAP": "mean"}``, reductions ``first, last, max, min, sum, mean, count``).
        Ticks (no bar columns): the ``price`` column (default ``Price``/``Last``/``Trade``) gives
        Open/High/Low/Close and ``Size``/``Volume``/``Qty`` is summed into ``Volume``.

        Windows are aligned in UTC: fixed durations on multiples since the epoch (``1D`` at
        midnight UTC), ``W`` on Mondays, ``M`` on the 1st of the month, ``Y`` on 1 January.
        Each candle is labelled by its window start; windows without rows give no candle.
        A frame with a ``Symbol`` column (several buckets read at once) is aggregated per symbol.
        """
        df = self._df
        labels = [c for c in ("Symbol", "Timeframe", "AttributeGroup") if c in df.columns]
        if not labels:
            return self._candles(df, timeframe, agg, price)
        parts = []
        for values, part in df.groupby(labels, sort=False, observed=True):
            out = self._candles(part.drop(columns=labels), timeframe, agg, price)
            for j, (name, value) in enumerate(zip(labels, values if isinstance(values, tuple) else (values,),
                                                   strict=True)):
                out.insert(j, name, pd.Series(value, index=out.index, dtype=df[name].dtype))
            parts.append(out)
        return pd.concat(parts).sort_index(kind="stable")

    @staticmethod
    def _candles(df: pd.DataFrame, timeframe: str, agg: Mapping[str, Reduction] | None, price: str | None
                 ) -> pd.DataFrame:  # fmt: skip
        return batch_to_frame(candles(frame_to_batch(df), timeframe, agg=agg, price=price))

    def plot(
        self, kind: str = "candles", *, title: str | None = None, max_candles: int = 600, height: int = 460
    ) -> CandleChart:
        """An interactive chart of this frame: the widgets' :class:`~mktsframe.widgets.chart.CandleChart`.

        Candles (or a line with ``kind="line"``; ticks and other columns draw a line), a volume
        pane, a dated UTC axis, hover, zoom and pan; more rows than ``max_candles`` in view are
        drawn as candles of a coarser timeframe. ``height`` in pixels. Needs ``mktsframe[jupyter]``.
        """
        from mktsframe.widgets.chart import CandleChart

        return CandleChart(self._df, title=(self.key or "") if title is None else title, kind=kind,
                           max_candles=max_candles, height=height)  # fmt: skip

    def write(
        self, key: str | None = None, *, variable_length: bool = False, backend: Backend | None = None
    ) -> None:
        """Store the frame in ``key`` (default: the key it was read from); see :func:`write_mkts`.

        A frame read from several buckets writes back to them, each row to the bucket its
        ``Symbol`` (``Timeframe``, ``AttributeGroup``) column names, as one commit.
        """
        target = key or self.key
        if target is None:
            raise ValueError("no key given and the frame was not read from mktsframe")
        if key is None and "," in target and "/" in target.split(",")[0]:  # the keys of a multi-bucket read
            target = _pattern_of(target.split(","))
        write_mkts(self._df, target, variable_length=variable_length, backend=backend)


def _pattern_of(keys: list[str]) -> str:
    """The key that names ``keys`` through the frame's label columns: each part they share, ``*``
    for each part that varies (``A/1Min/OHLCV`` and ``B/1Min/OHLCV`` give ``*/1Min/OHLCV``)."""
    parts = zip(*(k.split("/") for k in keys), strict=True)
    return "/".join(p[0] if len(set(p)) == 1 else "*" for p in parts)


class ToMkts:
    """``df.to_mkts(key)``: the same as :func:`mktsframe.write_mkts` (pandas-flavor pattern).

    ``df.to_mkts(key, variable_length=True)`` stores ticks (any number per interval, exact ns).
    """

    def __init__(self, df: pd.DataFrame) -> None:
        self._df = df

    def __call__(self, key: str, *, variable_length: bool = False, backend: Backend | None = None) -> None:
        write_mkts(self._df, key, variable_length=variable_length, backend=backend)


def register() -> None:
    """Install the accessors and ``pd.read_mkts`` once (never over a foreign definition)."""
    from mktsframe.io.pandas import read_mkts

    if "mkts" not in getattr(pd.DataFrame, "_accessors", set()):
        pd.api.extensions.register_dataframe_accessor("mkts")(MktsAccessor)
    if "to_mkts" not in getattr(pd.DataFrame, "_accessors", set()):
        pd.api.extensions.register_dataframe_accessor("to_mkts")(ToMkts)
    if not hasattr(pd, "read_mkts"):
        pd.read_mkts = read_mkts  # type: ignore[attr-defined]
