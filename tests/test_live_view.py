"""The live view widget, driven headless by real subscriptions: writes through a backend, then the
widget's table/chart state is checked (as a front end would see it)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("ipywidgets")
import mktsframe
from mktsframe.backend.base import Batch
from mktsframe.backend.local import LocalBackend
from mktsframe.widgets.live import KeptRows, LiveView

from .helpers import NS, chart_drawn, ohlcv


def wait_until(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def shows(view: LiveView, n: int, last: pd.Timestamp) -> Callable[[], bool]:
    def ok() -> bool:
        f = view.frame
        return f is not None and len(f) == n and f.index[-1] == last

    return ok


def check_live_view(db: mktsframe.Backend, key: str, other: str) -> None:
    """Shared by the local and the HTTP tests: ``key`` (1Min OHLCV) and ``other`` are empty and
    both match ``key``'s symbol pattern."""
    sym = key.split("/")[0]
    bars = ohlcv("2024-01-02", 60, seed=3)
    view = LiveView(db, [f"{sym}/1Min/*", other], max_rows=30, interval=0)
    try:
        assert view.live
        assert view.running.value
        assert view.frame is None
        mktsframe.write_mkts(bars.iloc[:20], key, backend=db)
        wait_until(shows(view, 20, bars.index[19]), "the first 20 bars")
        pd.testing.assert_frame_equal(view.frame, bars.iloc[:20].astype("f8"), check_names=False, check_freq=False)
        assert view.frame.index.name == "Epoch"
        assert chart_drawn(view.chart) == ("candles", 20, "")
        assert "<table" in view.table.value
        assert f"{bars.iloc[19]['Volume']:.6f}"[:6] in view.table.value
        assert "20 rows received" in view.status.value

        # Bounded: only the newest max_rows bars are kept, in one multi-row write or many.
        mktsframe.write_mkts(bars.iloc[20:45], key, backend=db)
        for i in range(45, 50):
            mktsframe.write_mkts(bars.iloc[i : i + 1], key, backend=db)
        wait_until(shows(view, 30, bars.index[49]), "the newest 30 of 50 bars")
        pd.testing.assert_frame_equal(view.frame, bars.iloc[20:50].astype("f8"), check_names=False, check_freq=False)
        assert chart_drawn(view.chart) == ("candles", 30, "")

        # A re-written bar replaces the one shown.
        fixed = bars.iloc[49:50].copy()
        fixed["Close"] = np.float32(123.5)
        mktsframe.write_mkts(fixed, key, backend=db)
        wait_until(lambda: view.frame is not None and view.frame["Close"].iloc[-1] == 123.5, "the re-written bar")
        assert len(view.frame) == 30

        # A second bucket: the picker lists both; the chart follows the selection.
        days = pd.date_range("2024-01-02", periods=3, freq="1D", tz="UTC").as_unit("ns")
        before = view.messages
        mktsframe.write_mkts(pd.DataFrame({"Price": [1.5, 2.5, 2.0]}, index=days), other, backend=db)
        wait_until(lambda: view.messages == before + 3 and list(view.key.options) == sorted([key, other]),
                   "the second key's rows")
        assert view.key.value == key  # the selection stays
        view.key.value = other
        assert list(view.frame.columns) == ["Price"]
        assert view.frame["Price"].tolist() == [1.5, 2.5, 2.0]
        assert chart_drawn(view.chart) == ("line", 3, "Price")
        view.key.value = key
        view.chart_kind.value = "line"
        assert chart_drawn(view.chart) == ("line", 30, "Close")

        # Deleted rows disappear.
        db.delete(key, start=bars.index[49].value, end=bars.index[49].value)
        wait_until(shows(view, 29, bars.index[48]), "the deleted bar to go")

        # Stop (the front end's toggle): nothing is heard; start replays what was written meanwhile.
        view.running.value = False
        assert not view.live
        assert "stopped" in view.status.value
        received = view.messages
        mktsframe.write_mkts(bars.iloc[50:55], key, backend=db)
        time.sleep(0.3)
        assert view.messages == received
        assert view.frame.index[-1] == bars.index[48]
        view.start()
        assert view.live
        assert view.running.value
        wait_until(shows(view, 30, bars.index[54]), "the bars written while stopped")
        want = pd.concat([bars.iloc[25:49], bars.iloc[50:55]])
        assert view.frame.index[-29:].equals(want.index)
        mktsframe.write_mkts(bars.iloc[55:56], key, backend=db)
        wait_until(shows(view, 30, bars.index[55]), "a live bar after the restart")
    finally:
        view.close()
    assert not view.live


def test_live_view_local(db: LocalBackend) -> None:
    check_live_view(db, "BTC/1Min/OHLCV", "BTC/1D/TRADES")


def test_live_view_ticks_since_and_errors(db: LocalBackend) -> None:
    """Tick buckets keep every row (equal timestamps too) at ns resolution; ``since`` fills the
    view from storage first; a bad pattern is refused before anything starts."""
    key = "ETH/1Sec/TICKS"
    t0 = pd.Timestamp("2024-03-01", tz="UTC").value
    stored = np.array([t0 + 1, t0 + 5, t0 + NS + 7], dtype=np.int64)
    db.write(key, Batch(stored, {"Bid": np.array([1.0, 2.0, 3.0])}), variable_length=True)
    view = LiveView(db, "ETH/*/*", since=t0, max_rows=4, interval=0, start=False)
    try:
        assert not view.live
        assert "stopped" in view.status.value
        view.running.value = True  # the front end's toggle starts it
        wait_until(lambda: view.frame is not None and len(view.frame) == 3, "the stored ticks")
        assert view.frame.index.asi8.tolist() == stored.tolist()
        live = np.array([t0 + NS + 7, t0 + 2 * NS], dtype=np.int64)  # a tick at an existing time is kept
        db.write(key, Batch(live, {"Bid": np.array([4.0, 5.0])}), variable_length=True)
        wait_until(lambda: len(view.frame) == 4 and view.frame.index[-1].value == t0 + 2 * NS, "the live ticks")
        assert view.frame.index.asi8.tolist() == [t0 + 5, t0 + NS + 7, t0 + NS + 7, t0 + 2 * NS]
        assert view.frame["Bid"].tolist() == [2.0, 3.0, 4.0, 5.0]
    finally:
        view.close()
    with pytest.raises(mktsframe.InvalidKeyError):
        LiveView(db, "no-slashes")
    with pytest.raises(ValueError, match="max_rows"):
        LiveView(db, "A/1Min/*", max_rows=0)


def test_kept_rows_order_replace_and_bounds() -> None:
    kept = KeptRows(3)
    for epoch, close in [(120, 2.0), (60, 1.0), (180, 3.0), (120, 2.5), (240, 4.0)]:
        kept.add({"Epoch": epoch, "Close": close})
    assert kept.times == [120 * NS, 180 * NS, 240 * NS]
    assert [r["Close"] for r in kept.rows] == [2.5, 3.0, 4.0]
    kept.remove(150 * NS, None)
    assert kept.times == [120 * NS]
    assert kept.frame()["Close"].tolist() == [2.5]
