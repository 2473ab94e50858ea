"""The symbol browser, driven headless by setting widget state (as a front end would)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("ipywidgets")
import mktsframe
from mktsframe.backend.local import LocalBackend
from mktsframe.widgets.browser import SymbolBrowser

from .helpers import chart_drawn, frame, ohlcv


def check_browser(db: mktsframe.Backend, key: str, other: str) -> None:
    """Shared by the local and the HTTP tests: ``key`` has 1Min OHLCV bars on 2024-01-02..03."""
    b = SymbolBrowser(db, max_rows=100)
    assert list(b.key.options) == sorted([key, other])
    b.key.value = key
    # A new key shows its last day; the table and chart hold the last max_rows bars.
    assert (b.start.value, b.end.value) == (dt.date(2024, 1, 3), dt.date(2024, 1, 3))
    want = mktsframe.read_mkts(key, "2024-01-03", "2024-01-03 23:59", limit=100, backend=db)
    pd.testing.assert_frame_equal(b.frame, want)
    assert chart_drawn(b.chart) == ("candles", 100, "")
    assert b.chart.timeframe is None
    assert f"{key}: 100 bars" in b.status.value
    assert "<table" in b.table.value
    assert b.table.value.count("<tr>") == 51  # one header row (Epoch is a column), the newest 50 rows

    # The front end sends a new date range (DatePicker state is an ISO date dict).
    b.start.set_state({"value": {"year": 2024, "month": 0, "date": 2}})
    b.end.set_state({"value": {"year": 2024, "month": 0, "date": 2}})
    b.max_rows.value = 2000
    assert b.frame is not None
    assert b.frame.index[0] == pd.Timestamp("2024-01-02", tz="UTC")
    assert b.frame.index[-1] == pd.Timestamp("2024-01-02 23:59", tz="UTC")
    assert len(b.frame) == 1440

    # 1440 bars are more than the chart's 600 candles: it draws 5Min candles of them.
    assert b.chart.timeframe == "5Min"
    assert chart_drawn(b.chart) == ("candles", 288, "")
    pd.testing.assert_frame_equal(b.chart.shown, b.frame.mkts.candles("5Min"), check_freq=False)
    b.chart_kind.value = "line"
    assert chart_drawn(b.chart) == ("line", 288, "Close")

    b.start.value = dt.date(2024, 1, 5)
    assert "ends (2024-01-02) before it starts" in b.status.value
    assert b.frame is None
    b.end.value = dt.date(2024, 1, 6)
    assert b.frame is not None
    assert b.frame.empty
    assert "no rows in this range" in b.chart.figure.layout.title.text

    state = b.key.get_state()
    assert state["_model_name"] == "DropdownModel"
    assert state["index"] == list(b.key.options).index(key)


def test_browser_local(db: LocalBackend) -> None:
    mktsframe.write_mkts(ohlcv("2024-01-02", 2 * 1440, seed=5), "BTC/1Min/OHLCV", backend=db)
    mktsframe.write_mkts(frame(["2024-01-02", "2024-01-03"], Price=[1.5, 2.5]), "ETH/1D/TRADES", backend=db)
    check_browser(db, "BTC/1Min/OHLCV", "ETH/1D/TRADES")


def test_browser_line_for_non_ohlc_buckets_and_errors(db: LocalBackend, tmp_path: Path) -> None:
    mktsframe.write_mkts(frame(["2024-01-02", "2024-01-03"], Price=[1.5, 2.5], N=np.array([1, 2])), "ETH/1D/TRADES",
                         backend=db)
    b = SymbolBrowser(db)
    assert b.key.value == "ETH/1D/TRADES"
    assert b.frame is not None
    assert len(b.frame) == 1  # the last day
    b.start.value = dt.date(2024, 1, 1)
    assert len(b.frame) == 2
    assert chart_drawn(b.chart) == ("line", 2, "Price")  # no OHLC columns: a line of the price

    mktsframe.write_mkts(ohlcv("2024-01-02", 3, seed=1), "BTC/1Min/OHLCV", backend=db)
    b.refresh_keys()
    assert b.key.value == "ETH/1D/TRADES"
    db.destroy("ETH/1D/TRADES")
    b.refresh()
    assert "BucketNotFoundError" in b.status.value
    assert b.frame is None

    empty = SymbolBrowser(str(tmp_path / "empty"))
    assert empty.key.value is None
    assert "no buckets yet" in empty.status.value
    empty.backend.close()


def test_table_shows_values_as_stored() -> None:
    """pandas' Styler HTML: one header row over the columns, the newest first, decimals as needed."""
    from mktsframe.widgets.html import decimals, table_html

    assert decimals(np.array([447.0, 12.0])) == 0
    assert decimals(np.array([101.125, 100.5], dtype="f4")) == 3
    assert decimals(np.array([73.48864746], dtype="f4")) == 5  # float32 holds ~7 digits
    assert decimals(np.array([73.48864746])) == 6
    assert decimals(np.array([np.nan, 1.5])) == 1
    df = frame(["2024-01-02 00:00", "2024-01-02 00:01"], Close=np.array([101.125, 100.5], dtype="f4"),
               Volume=[447.0, 12.0])
    html = table_html(df)
    assert html.count("<tr>") == 3
    assert [h.split(">")[-1] for h in html.split("</th>")[:-1]] == ["Epoch (UTC)", "Close", "Volume"]
    rows = [r.split("</tr>")[0] for r in html.split("<tr>")[2:]]
    assert "2024-01-02 00:01:00" in rows[0]
    assert ">100.500<" in rows[0]
    assert ">12<" in rows[0]
    assert ">101.125<" in rows[1]
    # Times are shown in UTC (a frame in another zone too), to the microsecond when they have a fraction.
    ny = df.tz_convert("America/New_York")
    assert ny.index[0].hour == 19
    assert "2024-01-02 00:01:00<" in table_html(ny)
    ticks = df.set_axis(df.index + pd.Timedelta(1500, "us"))
    assert "2024-01-02 00:01:00.001500<" in table_html(ticks)
