"""Writing many buckets from one frame: ``write_mkts(df, "*/1Min/OHLCV")`` and ``Engine.write_stacked``.

The frame a multi-bucket ``read_mkts`` returns (a ``Symbol`` column naming each row's bucket)
writes back with the key it was read with, as one commit. A cross-section (one bar for each of
many existing buckets: a live feed's minute) takes a path with no per-bucket batches; everything
else goes through ``write_many``. Both must store exactly what ``write_many`` stores, log one
record, sync once, refuse bad input with nothing written, and survive a crash.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mktsframe
from mktsframe.backend.base import write_stacked
from mktsframe.backend.local import LocalBackend
from mktsframe.engine import Engine, applied, kernels
from mktsframe.errors import SchemaMismatchError
from mktsframe.io.frames import frame_to_stacked
from mktsframe.stacking import unstack

from .test_universe import SyncCounter, bars

# Every test on both write paths: rows stored by Python and by the compiled kernels (conftest.kernel_path;
# a child process takes the test's path through the environment and _kernel_setup).
pytestmark = pytest.mark.usefixtures("kernel_path")

NS = 1_000_000_000
T0 = pd.Timestamp("2024-01-02", tz="UTC")
REPO = Path(__file__).resolve().parent.parent
SYMS = [f"S{i:03d}" for i in range(40)]


def cross_section(when: pd.Timestamp, syms: list[str] = SYMS, value: float = 1.0) -> pd.DataFrame:
    """One bar for each symbol at ``when``: Close = value + position, Volume = position."""
    n = len(syms)
    return pd.DataFrame(
        {"Symbol": pd.Categorical(syms), "Close": value + np.arange(n, dtype="f8"), "Volume": np.arange(n)},
        index=pd.DatetimeIndex([when] * n, name="Epoch"),
    )


def _kernel_setup() -> str:
    """Lines for a child process's script that take the same path as this test."""
    return f"import mktsframe.engine.kernels as _k; _k.MIN_FILES = {kernels.MIN_FILES}\n"


@pytest.fixture
def universe(tmp_path: Path) -> Iterator[LocalBackend]:
    """40 buckets, each with a first bar (so the year files exist and are open)."""
    be = mktsframe.connect(tmp_path / "root")
    mktsframe.write_mkts(cross_section(T0), "*/1Min/OHLCV", backend=be)
    yield be
    be.close()


def test_a_frame_read_from_a_pattern_writes_back_with_it(universe: LocalBackend) -> None:
    be = universe
    mktsframe.write_mkts(cross_section(T0 + pd.Timedelta("1min"), value=100.0), "*/1Min/OHLCV", backend=be)
    df = pd.read_mkts("*/1Min/OHLCV", backend=be)
    assert len(df) == 80
    assert list(df["Symbol"][:2]) == ["S000", "S001"]
    df["Close"] *= 2
    mktsframe.write_mkts(df, "*/1Min/OHLCV", backend=be)  # 2 rows a bucket: the general path
    again = pd.read_mkts("*/1Min/OHLCV", backend=be)
    pd.testing.assert_frame_equal(again, df)
    one = pd.read_mkts("S007/1Min/OHLCV", backend=be)
    assert list(one["Close"]) == [16.0, 214.0]
    assert list(one["Volume"]) == [7, 7]


def test_a_cross_section_is_one_record_one_sync_and_no_batches(
    universe: LocalBackend, monkeypatch: pytest.MonkeyPatch, kernel_path: str
) -> None:
    e = universe.engine
    counter = SyncCounter(monkeypatch, e)
    seq = e._wal.written_seq  # type: ignore[union-attr]
    shuffled = cross_section(T0 + pd.Timedelta("1min"), value=50.0).iloc[::-1]  # rows in any order

    def no_batches(*_: object) -> None:
        raise AssertionError("the cross-section took the per-bucket path")

    monkeypatch.setattr(type(e), "_prepare_many", no_batches)
    compiled = []
    real_rows = kernels.write_rows
    monkeypatch.setattr(kernels, "write_rows", lambda *a: compiled.append(1) or real_rows(*a))
    mktsframe.write_mkts(shuffled, "*/1Min/OHLCV", backend=universe)
    assert counter.calls == 1
    assert len(compiled) == (kernel_path == "compiled")
    assert e._wal.written_seq == seq + 1  # type: ignore[union-attr]
    got = e.query("*/1Min/OHLCV", start=(T0 + pd.Timedelta("1min")).value)
    assert [float(b.columns["Close"][0]) for b in got.values()] == [50.0 + i for i in range(40)]


def test_the_cross_section_stores_what_write_many_stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same inputs through both paths leave the same rows, bounds and float32 rounding."""
    general = Engine._cross_section_of_items  # write_many of 1-row items takes the cross-section too
    when = T0 + pd.Timedelta("3min")
    frame = cross_section(when, value=0.1)
    results = []
    for name, fast in (("fast", True), ("many", False)):
        with Engine(tmp_path / name) as e:
            for s in SYMS:
                e.create(f"{s}/1Min/OHLCV", [("Close", "f4"), ("Volume", "i8")])
            e.write_many({f"{s}/1Min/OHLCV": bars(1) for s in SYMS})
            stacked = frame_to_stacked(frame, "*/1Min/OHLCV")
            if fast:
                e.write_stacked(stacked)
            else:
                monkeypatch.setattr(Engine, "_cross_section_of_items", lambda *_: None)
                e.write_many(unstack(stacked))
                monkeypatch.setattr(Engine, "_cross_section_of_items", general)
            got = e.query("*/1Min/OHLCV")
            results.append({k: (b.index.tolist(), b.columns["Close"].tolist(), b.columns["Volume"].tolist())
                            for k, b in got.items()})  # fmt: skip
    assert results[0] == results[1]
    assert results[0]["S001/1Min/OHLCV"][1][1] == float(np.float32(1.1))


def test_everything_else_takes_the_general_path(universe: LocalBackend) -> None:
    be = universe
    when = T0 + pd.Timedelta("1min")
    # a new symbol (created), a symbol twice, another year, an alias of a symbol: all one commit each
    df = cross_section(when, [*SYMS[:3], "NEW"])
    mktsframe.write_mkts(df, "*/1Min/OHLCV", backend=be)
    assert "NEW/1Min/OHLCV" in be.list_keys()
    twice = pd.concat([cross_section(when, ["S001"], 5.0), cross_section(when, ["S001"], 6.0)])
    mktsframe.write_mkts(twice, "*/1Min/OHLCV", backend=be)  # the last row at a bar wins
    assert list(pd.read_mkts("S001/1Min/OHLCV", backend=be)["Close"]) == [2.0, 6.0]
    mktsframe.write_mkts(cross_section(pd.Timestamp("2025-01-01", tz="UTC"), SYMS[:2]), "*/1Min/OHLCV", backend=be)
    assert len(pd.read_mkts("S000/1Min/OHLCV", backend=be)) == 3
    frame = cross_section(when, ["S002", "S003"])
    stacked = frame_to_stacked(frame, "*/1Min/OHLCV")
    alias = type(stacked)(("S002/1Min/OHLCV", "S002/1T/OHLCV"), stacked.index, stacked.columns, stacked.which)
    with pytest.raises(ValueError, match="more than once"):
        write_stacked(be, alias)


def test_bad_frames_are_refused_with_nothing_written(universe: LocalBackend) -> None:
    be = universe
    when = T0 + pd.Timedelta("1min")
    before = pd.read_mkts("*/1Min/OHLCV", backend=be)
    lossy = cross_section(when).astype({"Volume": "f8"})
    lossy.iloc[5, lossy.columns.get_loc("Volume")] = 0.5
    with pytest.raises(SchemaMismatchError, match="Volume"):
        mktsframe.write_mkts(lossy, "*/1Min/OHLCV", backend=be)
    with pytest.raises(SchemaMismatchError, match="Symbol"):
        mktsframe.write_mkts(cross_section(when).drop(columns="Symbol"), "*/1Min/OHLCV", backend=be)
    nameless = cross_section(when)
    nameless["Symbol"] = nameless["Symbol"].astype(object)
    nameless.iloc[3, 0] = None
    with pytest.raises(SchemaMismatchError, match="no Symbol"):
        mktsframe.write_mkts(nameless, "*/1Min/OHLCV", backend=be)
    extra = cross_section(when).assign(Other=1.0)
    with pytest.raises(SchemaMismatchError, match="Other"):
        mktsframe.write_mkts(extra, "*/1Min/OHLCV", backend=be)
    for bad_key in ("S*/1Min/OHLCV", "*/1Min", "*/1Min/OHLCV/x"):
        with pytest.raises(ValueError, match="whole parts"):
            mktsframe.write_mkts(cross_section(when), bad_key, backend=be)
    pd.testing.assert_frame_equal(pd.read_mkts("*/1Min/OHLCV", backend=be), before)


def test_a_categorical_symbol_column_names_its_buckets_by_category(universe: LocalBackend) -> None:
    """Codes and keys come straight from the categories (the keys built once per categories, as a
    feed reuses them), but only when every row has a category and every category a row: a missing
    label is still explained, and an unused category creates no bucket."""
    be = universe
    when = T0 + pd.Timedelta("1min")
    one, two = cross_section(when), cross_section(when + pd.Timedelta("1min"), value=2.0)
    two["Symbol"] = one["Symbol"].array  # a feed's next minute, labelled by the same Categorical
    assert one["Symbol"].cat.categories is two["Symbol"].cat.categories
    assert frame_to_stacked(one, "*/1Min/OHLCV").keys is frame_to_stacked(two, "*/1Min/OHLCV").keys
    backwards = cross_section(when, SYMS[::-1])  # categories sorted, rows not: codes follow the rows
    stacked = frame_to_stacked(backwards, "*/1Min/OHLCV")
    assert [stacked.keys[c] for c in stacked.which] == [f"{s}/1Min/OHLCV" for s in SYMS[::-1]]
    mktsframe.write_mkts(backwards, "*/1Min/OHLCV", backend=be)
    got = pd.read_mkts("*/1Min/OHLCV", start=when, end=when, backend=be)
    assert dict(zip(got["Symbol"], got["Close"], strict=True)) == {s: 1.0 + i for i, s in enumerate(SYMS[::-1])}
    unused = cross_section(when, SYMS[:2])
    unused["Symbol"] = unused["Symbol"].cat.add_categories(["UNUSED"])
    mktsframe.write_mkts(unused, "*/1Min/OHLCV", backend=be)
    assert "UNUSED/1Min/OHLCV" not in be.list_keys()
    missing = cross_section(when, SYMS[:3])
    missing.iloc[1, 0] = np.nan
    with pytest.raises(SchemaMismatchError, match="no Symbol"):
        mktsframe.write_mkts(missing, "*/1Min/OHLCV", backend=be)


def test_several_wildcards_name_buckets_from_their_columns(tmp_path: Path) -> None:
    with mktsframe.connect(tmp_path) as be:
        df = cross_section(T0, ["A", "A", "B"]).assign(Timeframe=["1Min", "5Min", "1Min"])
        mktsframe.write_mkts(df, "*/*/OHLCV", backend=be)
        assert be.list_keys() == ["A/1Min/OHLCV", "A/5Min/OHLCV", "B/1Min/OHLCV"]
        back = pd.read_mkts("*/*/OHLCV", backend=be)
        assert sorted(zip(back["Symbol"], back["Timeframe"], back["Close"], strict=True)) == [
            ("A", "1Min", 1.0), ("A", "5Min", 2.0), ("B", "1Min", 3.0)]  # fmt: skip


@pytest.mark.parametrize("reboot", [False, True], ids=["same-boot", "after-reboot"])
def test_a_cross_section_survives_kill_9_before_any_checkpoint(universe: LocalBackend, reboot: bool) -> None:
    """On the same boot the dead writer's stores are in the page cache and the record is adopted;
    after a machine restart (simulated by forgetting the applied mark) it is replayed."""
    root = universe.engine.root
    universe.close()
    code = textwrap.dedent(f"""
        import os, numpy as np, pandas as pd
        import mktsframe
        {_kernel_setup()}
        be = mktsframe.connect({str(root)!r})
        n = {len(SYMS)}
        df = pd.DataFrame({{"Symbol": pd.Categorical([f"S{{i:03d}}" for i in range(n)]),
                            "Close": np.arange(n, dtype="f8") + 0.5, "Volume": np.arange(n)}},
                          index=pd.DatetimeIndex([pd.Timestamp({str(T0 + pd.Timedelta("2min"))!r})] * n))
        mktsframe.write_mkts(df, "*/1Min/OHLCV", backend=be)
        os.kill(os.getpid(), 9)
    """)
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    assert proc.returncode == -9
    if reboot:
        applied.forget(root)
    with mktsframe.connect(root) as be:
        report = be.engine.recovery
        assert (report.records, report.applied_before) == ((1, 0) if reboot else (0, 1))
        got = pd.read_mkts("*/1Min/OHLCV", start=T0 + pd.Timedelta("2min"), backend=be)
        assert list(got["Close"]) == [i + 0.5 for i in range(len(SYMS))]


def test_a_file_closed_between_plan_and_apply_is_reopened(
    universe: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader may open files (closing others) while the write is logged: the rows still land."""
    e = universe.engine
    real = type(e)._cross_section_plan

    def plan_then_evict(self: Engine, stacked: object) -> object:
        plan = real(self, stacked)  # type: ignore[arg-type]
        assert plan is not None
        with self._apply_lock:
            for yf in plan[1].files[::2]:  # every other bucket's year file, as the open-file set would
                self.open_files.discard(yf)
                yf.evicted()
        return plan

    reopened = []
    real_apply = type(e)._apply_write
    monkeypatch.setattr(type(e), "_cross_section_plan", plan_then_evict)
    monkeypatch.setattr(type(e), "_apply_write", lambda self, b, *a: reopened.append(b) or real_apply(self, b, *a))
    mktsframe.write_mkts(cross_section(T0 + pd.Timedelta("1min"), value=9.0), "*/1Min/OHLCV", backend=universe)
    monkeypatch.undo()
    assert len(reopened) == 20  # the closed half, through the general apply
    got = pd.read_mkts("*/1Min/OHLCV", start=T0 + pd.Timedelta("1min"), backend=universe)
    assert list(got["Close"]) == [9.0 + i for i in range(40)]


def test_ticks_of_many_symbols_in_one_frame(tmp_path: Path) -> None:
    """Tick buckets too: every row kept at its exact nanosecond, duplicates in arrival order."""
    t = pd.DatetimeIndex(["2024-01-02 00:00:00.000000001"] * 3 + ["2024-01-02 00:00:00.5"], tz="UTC", name="Epoch")
    prices = np.array([1.0, 2.0, 3.0, 4.0], "f4")
    ticks = pd.DataFrame({"Symbol": ["EUR", "USD", "EUR", "EUR"], "Price": prices}, index=t)
    with mktsframe.connect(tmp_path) as be:
        mktsframe.write_mkts(ticks, "*/1Sec/TICK", variable_length=True, backend=be)
        assert be.info("EUR/1Sec/TICK").record_type == "variable"
        eur = pd.read_mkts("EUR/1Sec/TICK", backend=be)
        assert list(eur["Price"]) == [1.0, 3.0, 4.0]
        assert list(eur.index.asi8 - T0.value) == [1, 1, 500_000_000]
        assert list(pd.read_mkts("USD/1Sec/TICK", backend=be)["Price"]) == [2.0]


def test_a_bucket_destroyed_between_two_cross_sections_is_made_again(universe: LocalBackend) -> None:
    """The key list's buckets are remembered between writes: never past a destroy."""
    be = universe
    mktsframe.write_mkts(cross_section(T0 + pd.Timedelta("1min")), "*/1Min/OHLCV", backend=be)
    be.destroy("S005/1Min/OHLCV")
    mktsframe.write_mkts(cross_section(T0 + pd.Timedelta("2min"), value=7.0), "*/1Min/OHLCV", backend=be)
    again = pd.read_mkts("S005/1Min/OHLCV", backend=be)
    assert list(again["Close"]) == [12.0]  # only the write after the destroy
    assert len(pd.read_mkts("S006/1Min/OHLCV", backend=be)) == 3


def test_a_frame_of_several_buckets_stores_itself_back(universe: LocalBackend) -> None:
    """``df.mkts.write()`` on a multi-bucket read: each row back to its bucket, one commit."""
    be = universe
    both = pd.read_mkts("S001,S002/1Min/OHLCV", backend=be)
    assert both.mkts.key == "S001/1Min/OHLCV,S002/1Min/OHLCV"
    both["Close"] += 100
    both.mkts.write(backend=be)
    assert list(pd.read_mkts("S001,S002/1Min/OHLCV", backend=be)["Close"]) == [102.0, 103.0]
    assert list(pd.read_mkts("S003/1Min/OHLCV", backend=be)["Close"]) == [4.0]  # not named: untouched


def test_write_many_of_one_row_each_is_a_cross_section(
    universe: LocalBackend, monkeypatch: pytest.MonkeyPatch, kernel_path: str
) -> None:
    """``write_many({key: 1-row frame})``, a feed's minute in the README's words, is stored as the
    cross-section it is (one record, one sync, no per-bucket batches) and stores what the per-item
    path stores; an item the cross-section cannot take (a value that is not a number) sends the
    call to the per-item path, which refuses it as before, with nothing written."""
    e = universe.engine
    counter = SyncCounter(monkeypatch, e)
    seq = e._wal.written_seq  # type: ignore[union-attr]
    when = T0 + pd.Timedelta("5min")

    def one_row(i: int, close: object = None) -> pd.DataFrame:
        return pd.DataFrame({"Close": [1.5 + i if close is None else close], "Volume": [i]},
                            index=pd.DatetimeIndex([when], name="Epoch"))  # fmt: skip

    real_prepare = type(e)._prepare_many
    monkeypatch.setattr(type(e), "_prepare_many", lambda *_: pytest.fail("took the per-item path"))
    mktsframe.write_many({f"{s}/1Min/OHLCV": one_row(i) for i, s in enumerate(SYMS)}, backend=universe)
    assert counter.calls == 1
    assert e._wal.written_seq == seq + 1  # type: ignore[union-attr]
    got = pd.read_mkts("*/1Min/OHLCV", start=when, end=when, backend=universe)
    assert list(got["Close"]) == [1.5 + i for i in range(len(SYMS))]
    assert list(got["Volume"]) == list(range(len(SYMS)))
    monkeypatch.setattr(type(e), "_prepare_many", real_prepare)
    later = when + pd.Timedelta("1min")
    bad = {f"{s}/1Min/OHLCV": one_row(i).set_axis(pd.DatetimeIndex([later], name="Epoch")) for i, s in enumerate(SYMS)}
    bad[f"{SYMS[7]}/1Min/OHLCV"] = one_row(7, close="x")  # not a number
    with pytest.raises(SchemaMismatchError, match="column 'Close'"):
        mktsframe.write_many(bad, backend=universe)
    assert len(pd.read_mkts("*/1Min/OHLCV", start=later, end=later, backend=universe)) == 0
    assert e._wal.written_seq == seq + 1  # type: ignore[union-attr]
