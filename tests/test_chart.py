"""The candle chart (plotly FigureWidget): what it sends to the front end for a frame and a zoom."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("plotly")
import mktsframe  # noqa: F401  (df.mkts)
from mktsframe.widgets.chart import CandleChart, pick_timeframe

from .helpers import chart_drawn, ohlcv

NS = 1_000_000_000


def zoom(chart: CandleChart, lo: str, hi: str) -> None:
    """What plotly.js reports when the user drags a zoom box (or pans) on the x axis."""
    with chart.figure.batch_update():
        chart.figure.layout.xaxis.autorange = False
        chart.figure.layout.xaxis.range = [lo, hi]


def test_pick_timeframe() -> None:
    assert pick_timeframe(599 * 60 * NS, 600) == "1Min"
    assert pick_timeframe(4319 * 60 * NS, 600) == "10Min"
    assert pick_timeframe(10 * 365 * 86_400 * NS, 600) == "1W"
    assert pick_timeframe(10**9 * 86_400 * NS, 10) == "1Y"


def test_downsamples_past_max_candles_and_zoom_draws_finer() -> None:
    df = ohlcv("2024-01-02", 3 * 1440, seed=2)
    chart = df.mkts.plot(title="BTC", max_candles=500)
    assert isinstance(chart, CandleChart)
    # 4,320 bars over 3 days, 500 candles at most: 10Min candles, the same as df.mkts.candles.
    assert chart.timeframe == "10Min"
    assert chart_drawn(chart) == ("candles", 432, "")
    pd.testing.assert_frame_equal(chart.shown, df.mkts.candles("10Min"), check_freq=False)
    assert chart.figure.layout.title.text == "BTC · 10Min candles"
    volume = chart.figure.data[2]
    assert volume.visible
    np.testing.assert_allclose(np.asarray(volume.y, dtype="f8"), df.mkts.candles("10Min")["Volume"].to_numpy())
    assert chart.figure.layout.xaxis2.type == "date"

    # Zoomed to 3 hours: 181 bars fit, so the bars themselves, with one range either side for panning.
    zoom(chart, "2024-01-03 00:00", "2024-01-03 03:00")
    assert chart.timeframe is None
    assert chart.shown.index[0] == pd.Timestamp("2024-01-02 21:00", tz="UTC")
    assert chart.shown.index[-1] == pd.Timestamp("2024-01-03 06:00", tz="UTC")
    assert chart.figure.layout.title.text == "BTC"
    # Zoomed to 1.5 days: 5Min candles (the finest that fits 2,160 minutes into 500).
    zoom(chart, "2024-01-02 12:00", "2024-01-04 00:00")
    assert chart.timeframe == "5Min"
    # Double-click (autorange): the whole frame again.
    chart.figure.layout.xaxis.autorange = True
    assert chart.timeframe == "10Min"
    assert len(chart.shown) == 432

    # A new frame keeps a zoom the user chose (the live view redraws several times a second).
    zoom(chart, "2024-01-03 00:00", "2024-01-03 03:00")
    chart.show(df.iloc[:1530])  # to 2024-01-03 01:29
    assert chart.timeframe is None
    assert (chart.shown.index[0], chart.shown.index[-1]) == (pd.Timestamp("2024-01-02 21:00", tz="UTC"), df.index[1529])


def test_line_ticks_and_no_volume() -> None:
    t0 = pd.Timestamp("2024-01-02", tz="UTC")
    ticks = pd.DataFrame({"Price": np.linspace(1, 2, 5000), "Size": np.ones(5000)},
                         index=t0 + pd.to_timedelta(np.arange(5000) * 250, unit="ms"))
    chart = CandleChart(ticks, max_candles=600)
    # 1,250 s of ticks: 5Sec candles of the price, volume summed.
    assert chart.timeframe == "5Sec"
    assert chart_drawn(chart) == ("candles", 250, "")
    pd.testing.assert_frame_equal(chart.shown, ticks.mkts.candles("5Sec").astype("f8"), check_freq=False)
    chart.show(ticks.iloc[:100])
    assert chart_drawn(chart) == ("line", 100, "Price")  # few ticks: the prices themselves

    closes = pd.DataFrame({"Close": [1.0, 2.0, 1.5]}, index=pd.date_range("2024-01-02", periods=3, freq="1D"))
    chart.show(closes, "daily")
    assert chart_drawn(chart) == ("line", 3, "Close")
    assert not chart.figure.data[2].visible
    assert chart.figure.layout.yaxis2.visible is False
    assert chart.figure.layout.yaxis.domain == (0.04, 1.0)


def test_unsorted_frames_are_drawn_in_time_order() -> None:
    df = ohlcv("2024-01-02", 1000, seed=4)
    chart = df.iloc[::-1].mkts.plot(max_candles=100)
    assert chart.timeframe == "10Min"
    pd.testing.assert_frame_equal(chart.shown, df.mkts.candles("10Min"), check_freq=False)


def test_bad_frames_say_why() -> None:
    df = ohlcv("2024-01-02", 10)
    two = pd.concat([df.assign(Symbol="BTC"), df.assign(Symbol="ETH")])
    with pytest.raises(ValueError, match="several symbols"):
        two.mkts.plot()
    chart = two[two.Symbol == "ETH"].mkts.plot("line", title="ETH")
    assert chart_drawn(chart) == ("line", 10, "Close")
    with pytest.raises(TypeError, match="DatetimeIndex"):
        CandleChart(df.reset_index())
    with pytest.raises(ValueError, match="max_candles"):
        CandleChart(max_candles=1)
    with pytest.raises(ValueError, match="kind must be one of"):
        df.mkts.plot("bars")
