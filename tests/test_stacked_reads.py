"""Multi-bucket reads built as one time-major result (issue 19): the engine's grid path and the
bucket-by-bucket join must both give exactly what reading each bucket alone and sorting gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mktsframe
from mktsframe.backend.base import Batch
from mktsframe.backend.local import LocalBackend
from mktsframe.engine import Engine
from mktsframe.errors import BucketNotFoundError, SchemaMismatchError
from mktsframe.stacking import stack

# Every test on both read paths: the numpy loops and the compiled kernels (conftest.kernel_path).
pytestmark = pytest.mark.usefixtures("kernel_path")

NS = 1_000_000_000
T0 = pd.Timestamp("2024-01-02", tz="UTC").value
MIN = 60 * NS


def bars(times: np.ndarray, seed: int) -> Batch:
    rng = np.random.default_rng(seed)
    n = times.size
    return Batch(times.astype(np.int64), {"Close": rng.random(n), "Volume": rng.integers(0, 1000, n)})


def expected(backend: LocalBackend, keys: list[str], start: int, end: int,
             columns: list[str] | None = None) -> pd.DataFrame:  # fmt: skip
    """The reference: every bucket read alone, labelled, joined and stably sorted by time."""
    frames = []
    for k in keys:
        df = pd.read_mkts(k, start=start, end=end, columns=columns, backend=backend)
        df.insert(0, "Symbol", k.split("/")[0])
        frames.append(df)
    out = pd.concat(frames).sort_index(kind="stable")
    symbols = pd.Index([k.split("/")[0] for k in keys], dtype=object)  # as read_mkts labels them
    out["Symbol"] = pd.Categorical(out["Symbol"].astype(object), categories=symbols)
    return out


def check(backend: LocalBackend, pattern: str, keys: list[str], start: int, end: int,
          columns: list[str] | None = None) -> pd.DataFrame:  # fmt: skip
    got = pd.read_mkts(pattern, start=start, end=end, columns=columns, backend=backend)
    want = expected(backend, keys, start, end, columns)
    pd.testing.assert_frame_equal(got, want, check_freq=False)
    return got


@pytest.fixture
def universe(tmp_path: Path) -> tuple[LocalBackend, list[str]]:
    """Six symbols over two days of 1Min bars, with every irregularity a universe has: a symbol
    missing bars, one that starts late, one that stops early, one empty in the range, and one
    whose bars straddle a year boundary."""
    be = mktsframe.connect(tmp_path)
    day = np.arange(2 * 1440, dtype=np.int64)
    keys = [f"S{i}/1Min/OHLCV" for i in range(6)]
    be.write(keys[0], bars(T0 + day * MIN, 0))
    be.write(keys[1], bars(T0 + day[day % 7 != 3] * MIN, 1))  # holes
    be.write(keys[2], bars(T0 + day[600:] * MIN, 2))  # starts late
    be.write(keys[3], bars(T0 + day[:2000] * MIN, 3))  # stops early
    be.write(keys[4], bars(T0 - 10 * 86_400 * NS + day[:5] * MIN, 4))  # nothing in the range
    be.write(keys[5], bars(T0 + day * MIN, 5))
    yield be, keys
    be.close()


def test_a_dense_range_reads_as_one_grid_and_matches_reading_each(universe: tuple) -> None:
    be, keys = universe
    e: Engine = be.engine
    start, end = T0 + 700 * MIN, T0 + 1900 * MIN
    dense = [keys[0], keys[5]]
    grid = e._grid_query(e._resolve("S0,S5/1Min/OHLCV"), e._bucket_drops, start, end, None, None)
    assert grid is not None  # the grid path, not the fallback
    assert grid.which.dtype == np.int8
    np.testing.assert_array_equal(grid.index[:4], [start, start, start + MIN, start + MIN])
    got = check(be, "S0,S5/1Min/OHLCV", dense, start, end)
    assert got.attrs["mkts_key"] == ",".join(dense)
    check(be, "*/1Min/OHLCV", keys, start, end)  # holes, late and early buckets: masked grid
    check(be, "*/1Min/OHLCV", keys, start, end, columns=["Volume"])


def test_a_cross_section_with_missing_symbols(universe: tuple) -> None:
    be, keys = universe
    for minute in (0, 3, 599, 600, 2000, 2879):  # S1's hole, before S2 starts, after S3 stops
        t = T0 + minute * MIN
        got = check(be, "*/1Min/OHLCV", keys, t, t)
        assert got.index.nunique() == 1


def test_ranges_across_a_year_end_and_sparse_ones(tmp_path: Path) -> None:
    with mktsframe.connect(tmp_path) as be:
        new_year = pd.Timestamp("2024-01-01", tz="UTC").value
        around = new_year + np.arange(-30, 30, dtype=np.int64) * MIN
        be.write("A/1Min/OHLCV", bars(around, 1))
        be.write("B/1Min/OHLCV", bars(around[::2], 2))
        check(be, "*/1Min/OHLCV", ["A/1Min/OHLCV", "B/1Min/OHLCV"], int(around[0]), int(around[-1]))
        # one bar in each of 400 minutes for one symbol, one bar in all for the other: a grid of
        # 2 x 400 cells would be mostly holes, so it is read bucket by bucket instead; same answer
        be.write("C/1Min/OHLCV", bars(new_year + np.arange(400, dtype=np.int64) * 7 * MIN, 3))
        be.write("D/1Min/OHLCV", bars(np.array([new_year + 350 * MIN]), 4))
        e = be.engine
        lo, hi = new_year, new_year + 400 * 7 * MIN
        assert e._grid_query(e._resolve("C,D/1Min/OHLCV"), e._bucket_drops, lo, hi, None, None) is None
        check(be, "C,D/1Min/OHLCV", ["C/1Min/OHLCV", "D/1Min/OHLCV"], lo, hi)


def test_the_grid_path_agrees_with_the_join_when_files_do_not_all_fit(tmp_path: Path) -> None:
    with Engine(tmp_path, max_open_files=3) as e:
        times = T0 + np.arange(100, dtype=np.int64) * MIN
        for i in range(8):
            e.write(f"S{i}/1Min/OHLCV", bars(times, i))
        got = e.query_stacked("*/1Min/OHLCV", start=int(times[10]), end=int(times[50]))
        want = stack(e.query("*/1Min/OHLCV", start=int(times[10]), end=int(times[50])))
        assert got.keys == want.keys
        np.testing.assert_array_equal(got.index, want.index)
        np.testing.assert_array_equal(got.which, want.which)
        for n in want.columns:
            np.testing.assert_array_equal(got.columns[n], want.columns[n])
        assert len(e.open_files) <= 3


def test_a_destroyed_or_recreated_bucket_is_never_served_from_the_resolved_list(tmp_path: Path) -> None:
    with mktsframe.connect(tmp_path) as be:
        times = T0 + np.arange(10, dtype=np.int64) * MIN
        for s in "ABC":
            be.write(f"{s}/1Min/OHLCV", bars(times, ord(s)))
        first = pd.read_mkts("*/1Min/OHLCV", start=int(times[0]), end=int(times[-1]), backend=be)
        assert list(first["Symbol"].cat.categories) == ["A", "B", "C"]
        be.destroy("B/1Min/OHLCV")
        again = pd.read_mkts("*/1Min/OHLCV", start=int(times[0]), end=int(times[-1]), backend=be)
        assert list(again["Symbol"].cat.categories) == ["A", "C"]
        be.write("B/1Min/OHLCV", Batch(times, {"Close": np.ones(10, "f4")}))  # another schema now
        with pytest.raises(SchemaMismatchError):
            pd.read_mkts("*/1Min/OHLCV", start=int(times[0]), end=int(times[-1]), backend=be)
        with pytest.raises(BucketNotFoundError):
            pd.read_mkts("Z*/1Min/OHLCV", start=int(times[0]), end=int(times[-1]), backend=be)


@pytest.mark.parametrize("limit", [None, 5000, 3])
def test_query_by_pattern_hands_each_bucket_what_reading_it_alone_gives(universe: tuple, limit: int | None) -> None:
    be, keys = universe
    for start, end in ((T0 + 700 * MIN, T0 + 1900 * MIN), (T0 + 599 * MIN, T0 + 599 * MIN)):
        got = be.query("*/1Min/OHLCV", start=start, end=end, limit=limit)  # a limit >= the bars: the grid
        assert list(got) == keys
        for k in keys:
            (alone,) = be.query(k, start=start, end=end, limit=limit).values()
            np.testing.assert_array_equal(got[k].index, alone.index)
            assert list(got[k].columns) == list(alone.columns)
            for n, values in alone.columns.items():
                np.testing.assert_array_equal(got[k].columns[n], values)
                assert got[k].columns[n].dtype == values.dtype


def test_a_grid_filled_by_two_threads_is_the_same(universe: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    import mktsframe.engine.reads as reads

    be, keys = universe
    start, end = T0 + 100 * MIN, T0 + 2500 * MIN
    one = pd.read_mkts("*/1Min/OHLCV", start=start, end=end, backend=be)
    calls = []
    real = reads._in_parallel
    monkeypatch.setattr(reads, "_PARALLEL_VALUES", 1)  # every grid in two halves
    monkeypatch.setattr(reads, "_idle_core", lambda: True)  # whatever the machine's load
    monkeypatch.setattr(reads, "_in_parallel", lambda *a: calls.append(a[2]) or real(*a))
    two = pd.read_mkts("*/1Min/OHLCV", start=start, end=end, backend=be)
    assert calls  # the threaded path ran
    pd.testing.assert_frame_equal(one, two)
    check(be, "*/1Min/OHLCV", keys, start, end)


def test_cross_sections_of_every_column_layout(tmp_path: Path, universe: tuple) -> None:
    be, keys = universe
    t = T0 + 1000 * MIN  # S1 lacks this bar, S4 has nothing then
    check(be, "*/1Min/OHLCV", keys, t, t, columns=["Volume", "Close"])  # a projection of the row view
    check(be, "*/1Min/OHLCV", keys, t, t, columns=["Close"])
    with mktsframe.connect(tmp_path / "mixed") as mixed:  # f4 and i8: no row view, one read per column
        times = T0 + np.arange(10, dtype=np.int64) * MIN
        for i in range(3):
            mixed.write(f"M{i}/1Min/OHLCV", Batch(times, {"Close": np.arange(10, dtype="f4") + i,
                                                          "Volume": np.arange(10, dtype="i8") * i}))  # fmt: skip
        (yf,) = mixed.engine._resolve("M0/1Min/OHLCV")[0].open_years()
        assert yf.rows is None
        mk = [f"M{i}/1Min/OHLCV" for i in range(3)]
        check(mixed, "*/1Min/OHLCV", mk, int(times[4]), int(times[4]))
        check(mixed, "*/1Min/OHLCV", mk, int(times[4]), int(times[4]), columns=["Volume"])
