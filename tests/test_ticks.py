"""Tick (variable-length) buckets on the local engine: exact nanoseconds at every timeframe, duplicates
in arrival order, late and out-of-order writes, range rewrites that do not grow the files, replay
that never duplicates, and the pandas front door."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mktsframe
from mktsframe.backend.base import Batch
from mktsframe.engine import Engine
from mktsframe.engine.tick_file import DAY_NS, TickPartition
from mktsframe.errors import BucketExistsError, SchemaMismatchError

NS = 1_000_000_000
T0 = 1_709_251_200 * NS  # 2024-03-01 00:00 UTC
KEY = "EURUSD/1Min/TICK"


def ticks(ns: np.ndarray | list[int], start: float = 0.0) -> Batch:
    ns = np.asarray(ns, np.int64)
    return Batch(ns, {"Bid": start + np.arange(ns.size, dtype="f8"), "Size": np.arange(ns.size, dtype="i4")})


def stable_expected(writes: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """All written (time, value) rows sorted by time, equal times in arrival order."""
    ns = np.concatenate([w[0] for w in writes])
    vals = np.concatenate([w[1] for w in writes])
    order = np.argsort(ns, kind="stable")
    return ns[order], vals[order]


def read(engine: Engine, key: str = KEY, **kw: object) -> Batch:
    (b,) = engine.query(key, **kw).values()  # type: ignore[arg-type]
    return b


# -- exactness --------------------------------------------------------------------------------

_TIMES = st.integers(min_value=-(2**62), max_value=2**62)  # ±146 years around 1970, any nanosecond


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    tf=st.sampled_from(["1Sec", "1Min", "5Min", "1H", "4H", "1D"]),
    base=_TIMES,
    batches=st.lists(
        st.lists(st.integers(min_value=-3 * DAY_NS, max_value=3 * DAY_NS), min_size=1, max_size=40),
        min_size=1,
        max_size=4,
    ),
)
def test_every_nanosecond_comes_back_exactly_at_every_timeframe(
    tmp_path_factory: pytest.TempPathFactory, tf: str, base: int, batches: list[list[int]]
) -> None:
    root = tmp_path_factory.mktemp("exact")
    key = f"X/{tf}/T"
    writes = []
    with Engine(root, read_only=False) as engine:
        for i, offsets in enumerate(batches):
            ns = base + np.asarray(offsets, np.int64)
            vals = np.arange(ns.size, dtype="f8") + 1000 * i
            engine.write(key, Batch(ns, {"V": vals}), variable_length=True)
            writes.append((ns, vals))
        want_ns, want_v = stable_expected(writes)
        got = read(engine, key)
        assert got.variable_length
        np.testing.assert_array_equal(got.index, want_ns)
        np.testing.assert_array_equal(got.columns["V"], want_v)
        # any inclusive nanosecond window selects exactly the rows inside it
        lo, hi = int(want_ns[want_ns.size // 3]), int(want_ns[2 * want_ns.size // 3])
        win = read(engine, key, start=lo, end=hi)
        inside = (want_ns >= lo) & (want_ns <= hi)
        np.testing.assert_array_equal(win.index, want_ns[inside])
        np.testing.assert_array_equal(win.columns["V"], want_v[inside])
    with Engine(root, read_only=True) as reader:  # from the files alone
        np.testing.assert_array_equal(read(reader, key).index, want_ns)


def test_sub_microsecond_times_that_marketstore_rounds(engine: Engine) -> None:
    """MarketStore's 1Min ticks came back as 10:01:58.999999995 for 10:01:59 (its #197)."""
    t = pd.Timestamp("2024-03-01 10:01:59", tz="UTC").value
    ns = np.array([t, t + 1, t + 999_999_999, t + 59 * NS + 999_999_999], np.int64)
    engine.write(KEY, ticks(ns), variable_length=True)
    np.testing.assert_array_equal(read(engine).index, ns)


# -- ordering -------------------------------------------------------------------------------------


def test_duplicate_timestamps_stay_in_arrival_order_across_writes(engine: Engine) -> None:
    t = T0 + 123_456_789
    engine.write(KEY, ticks([t, t, t + 1], start=0), variable_length=True)
    engine.write(KEY, ticks([t + 1, t, t], start=10), variable_length=True)
    engine.write(KEY, ticks([t], start=20))  # flag ignored: the bucket is already variable
    got = read(engine)
    np.testing.assert_array_equal(got.index, [t, t, t, t, t, t + 1, t + 1])
    np.testing.assert_array_equal(got.columns["Bid"], [0, 1, 11, 12, 20, 2, 10])


def test_late_and_out_of_order_writes_are_placed_by_time(engine: Engine) -> None:
    rng = np.random.default_rng(1)
    writes = []
    for i in range(12):  # each batch: ticks over three days, in random order, many late
        ns = T0 + rng.integers(0, 3 * DAY_NS, 500)
        vals = np.arange(500, dtype="f8") + 1000 * i
        engine.write(KEY, Batch(ns, {"Bid": vals, "Size": np.zeros(500, "i4")}), variable_length=True)
        writes.append((ns, vals))
    want_ns, want_v = stable_expected(writes)
    got = read(engine)
    np.testing.assert_array_equal(got.index, want_ns)
    np.testing.assert_array_equal(got.columns["Bid"], want_v)
    assert engine.info(KEY).rows == 6000
    assert sorted(p.name for p in (engine.root / "EURUSD" / "1Min" / "TICK").glob("*.tick")) == [
        "20240301.tick", "20240302.tick", "20240303.tick"]  # fmt: skip


def test_late_ticks_merge_in_place_saving_overwritten_durable_rows(engine: Engine) -> None:
    """Late ticks are merged into the partition in place (no copy of the day); checkpointed rows they
    overwrite are first saved to the undo file, which the next checkpoint removes."""
    path = engine.root / "EURUSD" / "1Min" / "TICK" / "20240301.tick"
    undo = path.with_suffix(".undo")
    engine.write(KEY, ticks(T0 + np.arange(0, 1000, 10, dtype=np.int64) * NS), variable_length=True)
    engine.checkpoint()
    inode = path.stat().st_ino
    engine.write(KEY, ticks(T0 + np.arange(1000, 2000, 10, dtype=np.int64) * NS, start=100), variable_length=True)
    engine.write(KEY, ticks([T0 + 1500 * NS, T0 + 2500 * NS], start=500), variable_length=True)
    assert not undo.exists()  # only rows written since the checkpoint were moved
    engine.write(KEY, ticks([T0 + 995 * NS, T0 + 5 * NS], start=501), variable_length=True)
    assert undo.exists()
    assert path.stat().st_ino == inode  # in place
    engine.checkpoint()
    assert not undo.exists()
    got = read(engine)
    want = np.concatenate([np.arange(0, 2000, 10), [1500, 2500, 995, 5]]) * NS + T0
    vals = np.concatenate([np.arange(200.0), [500, 501, 501, 502]])
    order = np.argsort(want, kind="stable")
    np.testing.assert_array_equal(got.index, want[order])
    np.testing.assert_array_equal(got.columns["Bid"], vals[order])


def test_limits_and_ranges_cross_partitions(engine: Engine) -> None:
    ns = T0 + np.arange(10, dtype=np.int64) * (DAY_NS // 4)  # four ticks a day over 2.5 days
    engine.write(KEY, ticks(ns), variable_length=True)
    np.testing.assert_array_equal(read(engine, limit=3).index, ns[-3:])
    np.testing.assert_array_equal(read(engine, limit=6, limit_from_start=True).index, ns[:6])
    np.testing.assert_array_equal(read(engine, start=int(ns[3]), limit=2, limit_from_start=True).index, ns[3:5])
    np.testing.assert_array_equal(read(engine, end=int(ns[6]) - 1, limit=2).index, ns[4:6])
    assert read(engine, limit=0).index.size == 0
    assert read(engine, start=int(ns[-1]) + 1).index.size == 0
    assert read(engine, columns=["Size"]).columns.keys() == {"Size"}


# -- deletes and rewrites -------------------------------------------------------------------------


def test_range_rewrite_does_not_grow_the_files(engine: Engine) -> None:
    """Delete an hour and write it again, 25 times: the day's file keeps its size (MarketStore's
    files only ever grew)."""
    rng = np.random.default_rng(7)
    day = np.sort(T0 + rng.integers(0, DAY_NS, 200_000))
    engine.write(KEY, ticks(day), variable_length=True)
    engine.checkpoint()
    path = engine.root / "EURUSD" / "1Min" / "TICK" / "20240301.tick"
    size0, blocks0 = path.stat().st_size, path.stat().st_blocks
    hour = 3600 * NS
    for i in range(25):
        h0 = T0 + (i % 24) * hour
        removed = engine.delete(KEY, start=h0, end=h0 + hour - 1)
        assert removed > 0
        engine.write(KEY, ticks(np.sort(h0 + rng.integers(0, hour, removed)), start=1e6 * i), variable_length=True)
    engine.checkpoint()
    assert path.stat().st_size == size0
    assert path.stat().st_blocks <= blocks0 * 1.05
    assert engine.info(KEY).rows == day.size
    assert sorted(p.name for p in path.parent.iterdir()) == ["20240301.tick", "bucket.json"]  # no leftovers


def test_delete_is_exact_to_the_nanosecond_and_empties_partitions(engine: Engine) -> None:
    ns = np.array([T0, T0 + 1, T0 + 2, T0 + 2, T0 + DAY_NS + 5], np.int64)
    engine.write(KEY, ticks(ns), variable_length=True)
    assert engine.delete(KEY, start=T0 + 1, end=T0 + 2) == 3
    np.testing.assert_array_equal(read(engine).index, [T0, T0 + DAY_NS + 5])
    assert engine.delete(KEY, start=T0 + DAY_NS) == 1
    assert not (engine.root / "EURUSD" / "1Min" / "TICK" / "20240302.tick").exists()
    assert engine.delete(KEY) == 1
    assert read(engine).index.size == 0
    assert engine.info(KEY).rows == 0


# -- replay ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("log_only", [False, True])
def test_replay_restores_ticks_exactly_once(open_engine, tmp_path: Path, log_only: bool) -> None:
    """A copy of a live root is what a kill -9 leaves; recovery must not re-append its ticks."""
    engine = open_engine(checkpoint_interval=3600)
    rng = np.random.default_rng(3)
    writes = []
    for i in range(8):
        ns = T0 + rng.integers(0, 2 * DAY_NS, 300)
        vals = np.arange(300, dtype="f8") + 1000 * i
        engine.write(KEY, Batch(ns, {"Bid": vals, "Size": np.zeros(300, "i4")}), variable_length=True)
        writes.append((ns, vals))
        if i == 3 and not log_only:  # a checkpoint drops the log before it
            engine.checkpoint()
        if i == 5:
            engine.delete(KEY, start=T0 + DAY_NS // 2, end=T0 + DAY_NS)
            keep = [(w[0] < T0 + DAY_NS // 2) | (w[0] > T0 + DAY_NS) for w in writes]
            writes = [(w[0][k], w[1][k]) for w, k in zip(writes, keep, strict=True)]
    want_ns, want_v = stable_expected(writes)
    crashed = tmp_path / "crashed"
    if log_only:
        shutil.copytree(engine.root / ".mkts" / "wal", crashed / ".mkts" / "wal")
    else:
        shutil.copytree(engine.root, crashed)
        (crashed / ".mkts" / "lock").unlink()
    for _ in range(2):
        with Engine(crashed, read_only=False) as again:
            assert again.recovery.problems == []
            got = read(again)
            np.testing.assert_array_equal(got.index, want_ns)
            np.testing.assert_array_equal(got.columns["Bid"], want_v)


@pytest.mark.parametrize("change", ["late ticks", "delete"])
def test_a_torn_in_place_change_is_repaired_from_the_undo_file(open_engine, tmp_path: Path, change: str) -> None:
    """A kill in the middle of merging late ticks (or closing the gap of a delete) in place leaves
    torn rows, checkpointed ones included; recovery puts the saved durable rows back and re-applies
    the log, exactly."""
    engine = open_engine(checkpoint_interval=3600)
    ns = T0 + np.arange(0, 10_000, dtype=np.int64) * NS
    engine.write(KEY, ticks(ns), variable_length=True)
    engine.checkpoint()
    late = T0 + np.array([100, 100, 5000], np.int64) * NS + 1
    if change == "delete":
        assert engine.delete(KEY, start=T0 + 101 * NS, end=T0 + 200 * NS) == 100
        late = np.empty(0, np.int64)
    else:
        engine.write(KEY, ticks(late, start=-1), variable_length=True)
    crashed = tmp_path / "crashed"
    shutil.copytree(engine.root, crashed)
    (crashed / ".mkts" / "lock").unlink()
    part = crashed / "EURUSD" / "1Min" / "TICK" / "20240301.tick"
    assert part.with_suffix(".undo").exists()
    ns_offset = partition_meta(part)["ns_offset"]
    data = bytearray(part.read_bytes())
    data[ns_offset + 8 * 101 : ns_offset + 8 * 9000] = b"\xab" * (8 * 8899)  # torn from the first moved row on
    part.write_bytes(bytes(data))
    with Engine(crashed, read_only=False) as again:
        assert again.recovery.problems == []
        got = read(again)
    want_ns = np.concatenate([ns, late])
    want_v = np.concatenate([np.arange(10_000.0), np.arange(late.size) - 1.0])
    keep = (want_ns < T0 + 101 * NS) | (want_ns > T0 + 200 * NS) if change == "delete" else want_ns > 0
    order = np.argsort(want_ns[keep], kind="stable")
    np.testing.assert_array_equal(got.index, want_ns[keep][order])
    np.testing.assert_array_equal(got.columns["Bid"], want_v[keep][order])


def partition_meta(path: Path) -> dict:
    p = TickPartition.open(path, writable=False)
    try:
        return p.meta
    finally:
        p.close()


def test_ticks_survive_a_crash_after_the_log_numbering_restarted(tmp_path: Path) -> None:
    """A lost WAL checkpoint file restarts the log's sequence numbers below the partitions' own;
    acknowledged ticks must still not be skipped by the next replay."""
    root = tmp_path / "data"
    with Engine(root, read_only=False) as engine:
        for i in range(5):
            engine.write(KEY, ticks(T0 + np.arange(i * 10, i * 10 + 10, dtype=np.int64)), variable_length=True)
    (root / ".mkts" / "wal" / "checkpoint").write_bytes(b"lost")
    engine = Engine(root, read_only=False, checkpoint_interval=3600)
    try:
        engine.write(KEY, ticks(T0 + np.arange(50, 60, dtype=np.int64)), variable_length=True)
        engine.write(KEY, ticks(T0 + np.arange(60, 70, dtype=np.int64)), variable_length=True)
        shutil.copytree(root, tmp_path / "crashed")  # what a kill -9 now leaves
    finally:
        engine.close()
    (tmp_path / "crashed" / ".mkts" / "lock").unlink()
    with Engine(tmp_path / "crashed", read_only=False) as again:
        np.testing.assert_array_equal(read(again).index, T0 + np.arange(70))


def test_torn_commit_slot_is_never_served(engine: Engine, tmp_path: Path) -> None:
    engine.write(KEY, ticks([T0, T0 + 1]), variable_length=True)
    engine.write(KEY, ticks([T0 + 2]), variable_length=True)  # an append: the other commit slot
    engine.checkpoint()
    path = engine.root / "EURUSD" / "1Min" / "TICK" / "20240301.tick"
    copy = tmp_path / "torn" / "EURUSD" / "1Min" / "TICK"
    shutil.copytree(engine.root / "EURUSD", tmp_path / "torn" / "EURUSD")
    data = bytearray(path.read_bytes())
    gens = [int.from_bytes(data[off : off + 8], "little") for off in (64, 112)]
    newest = (64, 112)[gens.index(max(gens))]
    data[newest + 8] ^= 0xFF  # tear the newest slot: the previous one holds
    (copy / "20240301.tick").write_bytes(bytes(data))
    with Engine(tmp_path / "torn", read_only=True) as reader:
        assert read(reader).index.size in (2, 3)  # a consistent earlier state, never garbage
        assert (read(reader).index == np.array([T0, T0 + 1, T0 + 2])[: read(reader).index.size]).all()


# -- schema and API -------------------------------------------------------------------------------


def test_kind_and_reserved_names(engine: Engine) -> None:
    engine.create(KEY, [("Bid", "f8"), ("Size", "i4")], variable_length=True)
    engine.create(KEY, [("Bid", "f8"), ("Size", "i4")], variable_length=True)  # idempotent
    with pytest.raises(BucketExistsError, match="variable"):
        engine.create(KEY, [("Bid", "f8"), ("Size", "i4")])
    with pytest.raises(SchemaMismatchError, match="Nanoseconds"):
        engine.create("A/1Sec/TICK", [("Nanoseconds", "i4")], variable_length=True)
    info = engine.info(KEY)
    assert (info.record_type, info.rows, info.first) == ("variable", 0, None)
    engine.write("F/1Min/OHLCV", ticks([T0 + 30 * NS]))  # fixed buckets still floor to the bar
    assert read(engine, "F/1Min/OHLCV").index.tolist() == [T0]
    assert not read(engine, "F/1Min/OHLCV").variable_length


def test_commit_events_carry_the_exact_ticks(engine: Engine) -> None:
    events = []
    engine.commits.add(events.append)
    engine.write(KEY, ticks([T0 + 5, T0 + 1, T0 + 5]), variable_length=True)
    (create, write) = events
    assert create.op == "create"
    assert write.batch.variable_length
    assert write.batch.index.tolist() == [T0 + 1, T0 + 5, T0 + 5]
    assert write.batch.columns["Bid"].tolist() == [1.0, 0.0, 2.0]


def test_pandas_round_trip_with_duplicate_ns_index(db) -> None:
    idx = pd.DatetimeIndex(
        ["2024-03-01 09:30:00.000000001", "2024-03-01 09:30:00.000000001", "2024-03-01 09:29:59.999999999"],
        tz="UTC",
    ).as_unit("ns")
    df = pd.DataFrame({"Price": [1.5, 2.5, 0.5], "Size": np.array([1, 2, 3], "i4")}, index=idx)
    df.to_mkts(KEY, variable_length=True, backend=db)
    df.iloc[:1].to_mkts(KEY, backend=db)  # an existing tick bucket appends
    out = pd.read_mkts(KEY, backend=db)
    assert out.index.unit == "ns"
    assert str(out.index.tz) == "UTC"
    assert not out.index.is_unique
    assert out.index.asi8.tolist() == [idx[2].value, idx[0].value, idx[0].value, idx[0].value]
    assert out["Price"].tolist() == [0.5, 1.5, 2.5, 1.5]
    # pymarketstore-style frame: Epoch seconds + Nanoseconds
    recs = pd.DataFrame({"Epoch": [1_709_285_400, 1_709_285_400], "Nanoseconds": np.array([7, 3], "i4"),
                         "Price": [9.0, 8.0], "Size": np.array([1, 1], "i4")})  # fmt: skip
    mktsframe.write_mkts(recs, "B/1Sec/TICK", variable_length=True, backend=db)
    got = pd.read_mkts("B/1Sec/TICK", backend=db)
    assert got.index.asi8.tolist() == [1_709_285_400 * NS + 3, 1_709_285_400 * NS + 7]
    assert list(got.columns) == ["Price", "Size"]
