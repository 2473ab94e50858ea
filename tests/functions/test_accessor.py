"""``df.mkts.candles()`` on bar and tick frames, including several symbols in one frame."""

from __future__ import annotations

import numpy as np
import pandas as pd

import mktsframe  # noqa: F401  (registers the accessor)


def test_bar_frame_candles_match_pandas() -> None:
    rng = np.random.default_rng(1)
    idx = pd.date_range("2024-01-01 00:03", periods=5000, freq="1min", tz="UTC").as_unit("ns")
    c = 100 + rng.standard_normal(5000).cumsum()
    df = pd.DataFrame({"open": c, "high": c + 1, "low": c - 1, "close": c, "volume": rng.random(5000)}, index=idx)
    got = df.mkts.candles("1H")
    r = df.resample("1h", closed="left", label="left")
    want = r.agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
    pd.testing.assert_frame_equal(got, want, check_names=False, check_freq=False)


def test_tick_frame_with_duplicate_ns_timestamps() -> None:
    idx = pd.DatetimeIndex(["2024-01-01 00:00:00.000000001"] * 3 + ["2024-01-01 00:01:00.5"], tz="UTC")
    df = pd.DataFrame({"Price": [10.0, 11.0, 9.5, 12.0], "Size": [1, 2, 3, 4]}, index=idx)
    got = df.mkts.candles("1Min")
    assert list(got.columns) == ["Open", "High", "Low", "Close", "Volume"]
    assert got.loc["2024-01-01 00:00"].tolist() == [10.0, 11.0, 9.5, 9.5, 6]
    assert got.loc["2024-01-01 00:01"].tolist() == [12.0, 12.0, 12.0, 12.0, 4]


def test_several_symbols_are_aggregated_separately() -> None:
    idx = pd.date_range("2024-01-01", periods=10, freq="1min", tz="UTC").as_unit("ns")
    a = pd.DataFrame({"Close": np.arange(10.0)}, index=idx)
    b = pd.DataFrame({"Close": np.arange(10.0) + 100}, index=idx)
    both = pd.concat([a.assign(Symbol="A"), b.assign(Symbol="B")])[["Symbol", "Close"]]
    got = both.mkts.candles("5Min")
    assert got["Symbol"].tolist() == ["A", "B", "A", "B"]
    assert got["Close"].tolist() == [4.0, 104.0, 9.0, 109.0]
