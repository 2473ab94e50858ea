"""The ondiskagg trigger on a real engine: streaming, late and overwritten bars, deletes, ticks,
and repair after a real SIGKILL between the source write and the aggregate write.

The plugin framework (``mktsframe/plugins``) is built separately; here :class:`Dispatcher` does
its job (commit events heard on the writer's thread, ``fire`` called afterwards in commit order).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from agg_helpers import DESTS, Dispatcher, expected, minute_bars, mismatches

import mktsframe
from mktsframe.plugins.ondiskagg import ConfigError, new_trigger

pytestmark = pytest.mark.timeout(180)
CHILD = Path(__file__).with_name("ondiskagg_child.py")


@pytest.fixture
def agg(db):
    trig = new_trigger({"destinations": DESTS})
    trig.start(db)
    disp = Dispatcher(db, trig)
    yield disp
    disp.unlisten()
    trig.stop()


def test_streaming_bars_keep_every_destination_equal_to_the_source(db, agg) -> None:
    for i in range(40):  # 40 chunks of 37 minutes, so chunks cut windows at odd places
        minute_bars(i * 37, 37, seed=i).to_mkts("AAA/1Min/OHLCV", backend=db)
        agg.flush()
    assert mismatches(db, "AAA") == []
    five = pd.read_mkts("AAA/5Min/OHLCV", backend=db)
    assert five["Open"].dtype == np.float32
    assert five["Volume"].dtype == np.int64


def test_late_overwritten_and_deleted_bars_recompute_their_windows(db, agg) -> None:
    minute_bars(0, 3 * 1440, seed=1).to_mkts("AAA/1Min/OHLCV", backend=db)
    agg.flush()
    spike = minute_bars(1500, 1, seed=2)
    spike["High"] = np.float32(1e6)
    spike.to_mkts("AAA/1Min/OHLCV", backend=db)  # overwrite inside day 2
    minute_bars(5 * 1440 + 3, 2, seed=3).to_mkts("AAA/1Min/OHLCV", backend=db)  # a later day, after a gap
    agg.flush()
    assert pd.read_mkts("AAA/1D/OHLCV", backend=db)["High"].iloc[1] == np.float32(1e6)
    assert mismatches(db, "AAA") == []
    db.delete("AAA/1Min/OHLCV", start="2024-01-02 00:00", end="2024-01-02 23:59")  # empties a whole day
    db.delete("AAA/1Min/OHLCV", start="2024-01-01 10:02", end="2024-01-01 10:03")  # part of a 5Min window
    agg.flush()
    assert mismatches(db, "AAA") == []
    assert pd.Timestamp("2024-01-02", tz="UTC") not in pd.read_mkts("AAA/1D/OHLCV", backend=db).index


def test_bulk_write_in_one_event(db, agg) -> None:
    minute_bars(0, 200_000, seed=5).to_mkts("AAA/1Min/OHLCV", backend=db)
    agg.flush()
    assert mismatches(db, "AAA") == []


def test_tick_like_sources_become_ohlcv(db) -> None:
    trig = new_trigger({"destinations": ["1Min", "1H"]})
    trig.start(db)
    disp = Dispatcher(db, trig)
    rng = np.random.default_rng(0)
    secs = np.sort(rng.choice(7200, 3000, replace=False))
    idx = pd.DatetimeIndex(pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(secs, unit="s")).as_unit("ns")
    trades = pd.DataFrame({"Price": rng.random(3000) * 10, "Size": rng.integers(1, 9, 3000).astype("u8")}, index=idx)
    trades.to_mkts("XYZ/1Sec/TRADE", backend=db)
    disp.flush()
    got = pd.read_mkts("XYZ/1H/OHLCV", backend=db)
    r = trades.resample("1h")
    want = pd.DataFrame({"Open": r["Price"].first(), "High": r["Price"].max(), "Low": r["Price"].min(),
                         "Close": r["Price"].last(), "Volume": r["Size"].sum()})  # fmt: skip
    np.testing.assert_allclose(got.to_numpy(np.float64), want.to_numpy(np.float64))
    assert len(pd.read_mkts("XYZ/1Min/OHLCV", backend=db)) == 120
    trig.stop()


def test_bad_configs_are_refused() -> None:
    for cfg, msg in (({}, "destinations must be"), ({"destinations": ["7Min"]}, "bad destination"),
                     ({"destinations": ["1W"]}, "bad destination"),
                     ({"destinations": ["1D"], "filter": "nasdaq"}, "not supported")):
        with pytest.raises(ConfigError, match=msg):
            new_trigger(cfg)


def run_child(root: Path, mode: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, str(CHILD), str(root), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "READY", proc.stderr.read() if proc.stderr else ""
    return proc


def test_sigkill_between_source_and_aggregate_writes_is_repaired_at_start(tmp_path: Path) -> None:
    root = tmp_path / "data"
    proc = run_child(root, "between")
    assert proc.wait(60) == -signal.SIGKILL
    db = mktsframe.connect(root, read_only=False)
    try:
        # the source holds the writes, the destinations do not: the crash really fell in between
        assert mismatches(db, "AAA") != []
        trig = new_trigger({"destinations": DESTS, "on": "*/1Min/OHLCV"})
        trig.start(db)
        assert mismatches(db, "AAA") == []
        assert mismatches(db, "BBB") == []  # never aggregated before the kill: found through `on`
        trig.stop()
    finally:
        db.close()


def test_sigkill_while_firing_is_repaired_at_start(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for delay in (0.3, 0.7, 1.1):
        proc = run_child(root, "during")
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(60) == -signal.SIGKILL
        db = mktsframe.connect(root, read_only=False)
        try:
            assert_repaired_at_start(db)
        finally:
            db.close()


def assert_repaired_at_start(db) -> None:
    """Starting the trigger on a crashed root makes every destination match the source again."""
    trig = new_trigger({"destinations": DESTS})
    trig.start(db)
    assert mismatches(db, "AAA") == []
    trig.stop()


def test_expected_reference_is_not_our_implementation() -> None:
    # guard: the reference must be pandas' resample, not mktsframe's candles
    df = minute_bars(0, 10)
    assert expected(df, "5Min")["Volume"].tolist() == [df["Volume"].iloc[:5].sum(), df["Volume"].iloc[5:].sum()]


def test_registered_as_an_entry_point() -> None:
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="mktsframe.triggers") if e.name == "ondiskagg"]
    assert ep.load() is new_trigger


def test_real_tick_bucket_with_late_ticks(db) -> None:
    trig = new_trigger({"destinations": ["1Min", "15Min"]})
    trig.start(db)
    disp = Dispatcher(db, trig)
    rng = np.random.default_rng(9)
    t0 = pd.Timestamp("2024-01-01", tz="UTC").value
    all_ticks = []
    for chunk in range(20):  # ns-precision ticks arriving in chunks; every 4th chunk is late
        lo = (chunk if chunk % 4 else max(chunk - 10, 0)) * 60 * 10**9
        ns = np.sort(t0 + lo + rng.integers(0, 120 * 10**9, 300))
        ns[1::5] = ns[0::5][: len(ns[1::5])]  # duplicate timestamps
        ns = np.maximum.accumulate(ns)
        df = pd.DataFrame({"Price": rng.random(300) * 10, "Size": rng.integers(1, 9, 300).astype("i4")},
                          index=pd.DatetimeIndex(ns.view("M8[ns]"), tz="UTC"))  # fmt: skip
        df.to_mkts("TCK/1Sec/TRADE", variable_length=True, backend=db)
        all_ticks.append(df)
        disp.flush()
    src = pd.read_mkts("TCK/1Sec/TRADE", backend=db)
    assert len(src) == 6000
    for tf, freq in (("1Min", "1min"), ("15Min", "15min")):
        r = src.resample(freq, closed="left", label="left")
        want = pd.DataFrame({"Open": r["Price"].first(), "High": r["Price"].max(), "Low": r["Price"].min(),
                             "Close": r["Price"].last(), "Volume": r["Size"].sum()})[r.size() > 0]  # fmt: skip
        got = pd.read_mkts(f"TCK/{tf}/OHLCV", backend=db)
        np.testing.assert_array_equal(got.index.asi8, want.index.as_unit("ns").asi8)
        np.testing.assert_allclose(got.to_numpy(np.float64), want.to_numpy(np.float64))
    trig.stop()


def test_a_new_bar_rewrites_one_candle_per_destination(db, agg) -> None:
    minute_bars(0, 600, seed=1).to_mkts("AAA/1Min/OHLCV", backend=db)
    agg.flush()
    dest_writes: list[tuple[str, int]] = []
    unlisten = db.on_commit(lambda ev: dest_writes.append((ev.key, len(ev.batch))) if ev.op == "write" else None)
    minute_bars(600, 1, seed=2).to_mkts("AAA/1Min/OHLCV", backend=db)
    agg.flush()
    unlisten()
    assert sorted(dest_writes) == sorted([("AAA/1Min/OHLCV", 1)] + [(f"AAA/{tf}/OHLCV", 1) for tf in DESTS])
    assert mismatches(db, "AAA") == []


def test_events_the_framework_dropped_are_recomputed_at_the_next_fire(db, agg) -> None:
    minute_bars(0, 600, seed=1).to_mkts("AAA/1Min/OHLCV", backend=db)
    agg.flush()
    late = minute_bars(100, 3, seed=5)
    late["Low"] = np.float32(-1e6)
    late.to_mkts("AAA/1Min/OHLCV", backend=db)
    with agg._lock:
        agg.events.clear()  # a full queue: the framework dropped this event
    minute_bars(600, 5, seed=6).to_mkts("AAA/1Min/OHLCV", backend=db)
    agg.flush()
    assert pd.read_mkts("AAA/1H/OHLCV", backend=db)["Low"].iloc[1] == np.float32(-1e6)
    assert mismatches(db, "AAA") == []


def test_sigkill_after_commit_before_the_journal_hears_of_it(tmp_path: Path) -> None:
    """The window between a durable source write and the trigger's ``dirty`` line is covered by the
    engine's replay report: the change is in the WAL after the last checkpoint."""
    root = tmp_path / "data"
    proc = run_child(root, "unjournaled")
    assert proc.wait(60) == -signal.SIGKILL
    db = mktsframe.connect(root, read_only=False)
    try:
        src = pd.read_mkts("AAA/1Min/OHLCV", backend=db)
        assert (src["Low"] == np.float32(-10_000)).sum() == 3  # the late overwrite was acknowledged
        assert mismatches(db, "AAA") != []  # and never aggregated
        assert any(op == "write" and key == "AAA/1Min/OHLCV" for op, key, _, _ in db.replayed_changes())
        assert_repaired_at_start(db)
    finally:
        db.close()


def test_journal_is_fsynced_before_each_checkpoint_of_the_log(db, agg, monkeypatch) -> None:
    # Power loss: a dirty line must be durable before the engine stops replaying its change.
    import os

    order: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        order.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    minute_bars(0, 30).to_mkts("AAA/1Min/OHLCV", backend=db)
    agg.flush()  # the source is known from now on: its changes get dirty lines
    monkeypatch.setattr(os, "fsync", fsync)
    minute_bars(30, 5).to_mkts("AAA/1Min/OHLCV", backend=db)
    assert not any(path.endswith(".journal") for path in order)  # the line alone is not synced
    db.engine.checkpoint()
    monkeypatch.undo()
    assert any(path.endswith(".journal") for path in order), order
    agg.flush()
    assert mismatches(db, "AAA") == []

