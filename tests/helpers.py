"""Builders and checks shared by the test modules."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

NS = 1_000_000_000


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def ohlcv(start: str, periods: int, freq: str = "1min", seed: int = 0) -> pd.DataFrame:
    """OHLCV bars (f4 prices, f8 volume) on a UTC ns index."""
    rng = np.random.default_rng(seed)
    idx = pd.date_range(start, periods=periods, freq=freq, tz="UTC").as_unit("ns")
    cols = {c: rng.random(periods).astype("f4") for c in ("Open", "High", "Low", "Close")}
    cols["Volume"] = rng.random(periods)
    return pd.DataFrame(cols, index=idx)


def frame(times: list[str] | pd.DatetimeIndex, **columns: object) -> pd.DataFrame:
    idx = pd.DatetimeIndex(pd.to_datetime(times, utc=True)).as_unit("ns")
    return pd.DataFrame(dict(columns), index=idx)


def index_strings(df: pd.DataFrame) -> list[str]:
    return [t.strftime("%Y-%m-%d %H:%M:%S") for t in df.index]


def assert_epoch_index(df: pd.DataFrame) -> None:
    """Results are indexed by a tz-aware UTC nanosecond DatetimeIndex named Epoch."""
    assert isinstance(df.index, pd.DatetimeIndex)
    assert df.index.name == "Epoch"
    assert str(df.index.tz) == "UTC"
    assert df.index.unit == "ns"


def tree(path: Path) -> set[str]:
    """Every file and directory below ``path``, relative to it."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            out.add(os.path.relpath(os.path.join(dirpath, name), path))
    return out


def ipython_shell() -> Any:
    """The process's IPython InteractiveShell (a singleton), with history kept in memory only."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    if not InteractiveShell.initialized():
        config = Config()
        config.HistoryManager.hist_file = ":memory:"
        return InteractiveShell.instance(config=config)
    return InteractiveShell.instance()


def chart_drawn(chart: Any) -> tuple[str, int, str]:
    """What a :class:`~mktsframe.widgets.chart.CandleChart` draws, as its front end receives it:
    ``("candles" | "line", points, the line's column)``."""
    candles, line, _volume = chart.figure.data
    if candles.visible:
        return "candles", len(candles.x), ""
    return "line", len(line.x), line.name
