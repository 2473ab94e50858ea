"""Commit events: every acknowledged change reaches listeners once, in order, with the stored rows."""

from __future__ import annotations

import threading

import numpy as np

from mktsframe.backend.base import Batch
from mktsframe.engine import CommitEvent

NS = 1_000_000_000
T0 = 1_704_067_200  # 2024-01-01 00:00:00 UTC, seconds


def bars(seconds: list[int], close: list[float]) -> Batch:
    return Batch(np.array(seconds, dtype=np.int64) * NS, {"Close": np.array(close, dtype=np.float64)})


def test_events_carry_stored_rows_in_commit_order(open_engine):
    engine = open_engine()
    events: list[CommitEvent] = []
    engine.commits.add(events.append)
    # Unsorted, with a duplicate timestamp and a mid-bar time: the event shows what was stored.
    engine.write("BTC/1Min/OHLCV", bars([T0 + 120, T0 + 5, T0 + 60, T0 + 60], [3.0, 1.0, 2.0, 2.5]))
    engine.delete("BTC/1Min/OHLCV", start=(T0 + 60) * NS, end=(T0 + 60) * NS)
    engine.destroy("BTC/1Min/OHLCV")

    assert [(e.op, e.key) for e in events] == [
        ("create", "BTC/1Min/OHLCV"),
        ("write", "BTC/1Min/OHLCV"),
        ("delete", "BTC/1Min/OHLCV"),
        ("destroy", "BTC/1Min/OHLCV"),
    ]
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs))
    write = events[1].batch
    assert write is not None
    np.testing.assert_array_equal(write.index, np.array([T0, T0 + 60, T0 + 120]) * NS)
    np.testing.assert_array_equal(write.columns["Close"], [1.0, 2.5, 3.0])
    assert (events[2].start, events[2].end) == ((T0 + 60) * NS, (T0 + 60) * NS)


def test_failing_listener_never_fails_the_write(open_engine, caplog):
    engine = open_engine()
    seen: list[str] = []

    def broken(event: CommitEvent) -> None:
        raise RuntimeError("plugin bug")

    engine.commits.add(broken)
    engine.commits.add(lambda e: seen.append(e.op))
    engine.write("ETH/1Min/OHLCV", bars([T0], [1.0]))
    assert seen == ["create", "write"]
    assert "plugin bug" in caplog.text
    out = engine.query("ETH/1Min/OHLCV")["ETH/1Min/OHLCV"]
    np.testing.assert_array_equal(out.columns["Close"], [1.0])


def test_unsubscribe_and_concurrent_writers_keep_one_total_order(open_engine):
    engine = open_engine()
    events: list[CommitEvent] = []
    remove = engine.commits.add(events.append)
    engine.create("X/1Sec/T", [("Close", "f8")])

    def writer(w: int) -> None:
        for i in range(50):
            engine.write("X/1Sec/T", bars([T0 + w * 1000 + i], [float(w)]))

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writes = [e for e in events if e.op == "write"]
    assert len(writes) == 200
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    remove()
    remove()  # idempotent
    engine.write("X/1Sec/T", bars([T0 + 9999], [9.0]))
    assert len(events) == 201


def test_local_backend_on_commit(tmp_root):
    import mktsframe

    db = mktsframe.connect(tmp_root)
    try:
        got: list[CommitEvent] = []
        remove = db.on_commit(got.append)
        db.write("AAPL/1D/OHLCV", bars([T0], [190.0]))
        remove()
        db.write("AAPL/1D/OHLCV", bars([T0 + 86400], [191.0]))
        assert [e.op for e in got] == ["create", "write"]
    finally:
        db.close()


def test_wal_bypass_still_announces(open_engine):
    engine = open_engine(wal_bypass=True)
    got: list[str] = []
    engine.commits.add(lambda e: got.append(e.op))
    engine.write("Z/1Min/OHLCV", bars([T0], [1.0]))
    assert got == ["create", "write"]


def test_before_checkpoint_hooks_run_before_the_log_is_checkpointed(open_engine, caplog):
    engine = open_engine()
    seen: list[tuple[int, int]] = []  # (checkpointed seq, events heard) when the hook ran
    events: list[str] = []

    def hook() -> None:
        seen.append((engine._wal.checkpoint_seq, len(events)))

    def broken() -> None:
        raise OSError("disk gone")

    remove = engine.commits.add(lambda e: events.append(e.op), before_checkpoint=hook)
    engine.commits.add(lambda e: None, before_checkpoint=broken)
    engine.write("Z/1Min/OHLCV", bars([T0, T0 + 60], [1.0, 2.0]))
    before = engine._wal.checkpoint_seq
    engine.checkpoint()
    assert seen == [(before, 2)]  # every event told, nothing checkpointed yet
    assert engine._wal.checkpoint_seq > before  # a failing hook is logged, the checkpoint happens
    assert "before_checkpoint hook" in caplog.text
    remove()
    engine.write("Z/1Min/OHLCV", bars([T0 + 120], [3.0]))
    engine.checkpoint()
    assert len(seen) == 1


def test_a_catalog_listener_hears_creates_and_destroys_and_writes_build_no_events(tmp_root, monkeypatch):
    """The server's cache of bucket kinds listens with ``catalog_only``: it hears every create and
    destroy, in order with their sequence numbers, and a write of many buckets builds no event."""
    import mktsframe
    from mktsframe.engine import commits

    db = mktsframe.connect(tmp_root)
    try:
        got: list[CommitEvent] = []
        db.on_commit(got.append, catalog_only=True)
        built: list[str] = []
        real = commits.CommitListeners.emit
        monkeypatch.setattr(commits.CommitListeners, "emit", lambda self, e: built.append(e.op) or real(self, e))
        db.write("AAPL/1D/OHLCV", bars([T0], [190.0]))
        db.write_many({f"S{i}/1D/OHLCV": bars([T0], [1.0]) for i in range(3)})
        db.write_many({f"S{i}/1D/OHLCV": bars([T0 + 86400], [2.0]) for i in range(3)})
        db.delete("AAPL/1D/OHLCV")
        db.destroy("S1/1D/OHLCV")
        creates = [("create", "AAPL/1D/OHLCV"), *[("create", f"S{i}/1D/OHLCV") for i in range(3)]]
        assert [(e.op, e.key) for e in got] == [*creates, ("destroy", "S1/1D/OHLCV")]
        assert built == ["create"] * 4 + ["destroy"]  # no event built for a write or a delete
        assert [e.seq for e in got] == sorted({e.seq for e in got})
        everything: list[str] = []
        db.on_commit(lambda e: everything.append(e.op))
        db.write("AAPL/1D/OHLCV", bars([T0 + 2 * 86400], [3.0]))
        assert everything == ["write"]
        assert got[-1].op == "destroy"
    finally:
        db.close()
