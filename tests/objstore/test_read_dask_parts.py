"""How read_dask cuts a read into partitions: bucket-years, packed across buckets, split when large.

Runs on dask's synchronous scheduler (the cluster tests are in ``test_dask_cluster.py``): what is
checked here is the plan — which rows each partition holds — and that the partitions together are
exactly what ``read_mkts`` returns.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mktsframe
import mktsframe.io.dask as mdask
from mktsframe.backend.local import LocalBackend

pytest.importorskip("dask.dataframe")

SYMBOLS = [f"S{i}" for i in range(7)]


@pytest.fixture(scope="module")
def universe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBackend]:
    """7 symbols × 3 years of 1H bars (8,760 or 8,784 a year): 21 bucket-years."""
    db = mktsframe.connect(Path(tmp_path_factory.mktemp("u")) / "root", read_only=False)
    assert isinstance(db, LocalBackend)
    idx = pd.date_range("2022-01-01", "2024-12-31 23:00", freq="1h", tz="UTC")
    for i, sym in enumerate(SYMBOLS):
        close = (np.arange(len(idx)) + 1000 * i).astype("f4")
        frame = pd.DataFrame({"Close": close, "Volume": np.full(len(idx), i, "f8")}, index=idx)
        frame.to_mkts(f"{sym}/1H/OHLCV", backend=db)
    yield db
    db.close()


def _by_time(df: pd.DataFrame) -> pd.DataFrame:
    return df.reset_index().sort_values(["Epoch", "Symbol"], kind="stable").set_index("Epoch")


def _symbols_per_partition(lazy: object) -> list[list[str]]:
    return [list(dict.fromkeys(p["Symbol"].astype(str))) for p in lazy.to_delayed()]  # type: ignore[attr-defined]


def test_small_bucket_years_share_partitions_up_to_the_row_bound(
    universe: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    want = mktsframe.read_mkts("*/1H/OHLCV", backend=universe)
    # the default bound: 21 bucket-years of ~8,770 bars fit in one partition
    lazy = mktsframe.read_dask("*/1H/OHLCV", backend=universe)
    assert lazy.npartitions == 1
    pd.testing.assert_frame_equal(_by_time(lazy.compute(scheduler="sync")), want, check_flags=False)
    # at most 20,000 bars a partition: two bucket-years each (17,520 to 17,568 bars), in bucket order
    monkeypatch.setattr(mdask, "PARTITION_ROWS", 20_000)
    lazy = mktsframe.read_dask("*/1H/OHLCV", backend=universe)
    assert lazy.npartitions == 11  # 21 bucket-years, two by two
    parts = [p.compute(scheduler="sync") for p in lazy.to_delayed()]
    assert all(len(p) <= 20_000 for p in parts)
    assert [len(p) for p in parts[:2]] == [8760 + 8760, 8784 + 8760]  # S0 2022+2023, S0 2024 + S1 2022
    for p in parts:  # every partition knows every symbol; rows are ordered by bucket then time
        assert list(p["Symbol"].cat.categories) == SYMBOLS
        codes = p["Symbol"].cat.codes.to_numpy()
        assert (np.diff(codes) >= 0).all()
    got = pd.concat(parts)
    pd.testing.assert_frame_equal(_by_time(got), want, check_flags=False)
    # a range and a column projection keep the packing and prune the rest
    lazy = mktsframe.read_dask("*/1H/OHLCV", "2023-06-01", "2024-03-01", backend=universe)[["Symbol", "Close"]]
    want = mktsframe.read_mkts("*/1H/OHLCV", "2023-06-01", "2024-03-01", columns=["Close"], backend=universe)
    pd.testing.assert_frame_equal(_by_time(lazy.compute(scheduler="sync")), want, check_flags=False)


def test_one_bucket_keeps_a_partition_per_year_and_large_years_split(
    universe: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    lazy = mktsframe.read_dask("S3/1H/OHLCV", backend=universe)
    assert lazy.npartitions == 3  # one per year file, however small
    assert lazy.known_divisions
    assert [d.year for d in lazy.divisions[:-1]] == [2022, 2023, 2024]
    monkeypatch.setattr(mdask, "PARTITION_ROWS", 5_000)
    lazy = mktsframe.read_dask("S3/1H/OHLCV", backend=universe)
    assert lazy.npartitions == 6  # each year in two pieces of at most 5,000 bars
    pd.testing.assert_frame_equal(
        lazy.compute(scheduler="sync"), mktsframe.read_mkts("S3/1H/OHLCV", backend=universe), check_flags=False
    )


def test_the_graph_is_one_task_per_partition(universe: LocalBackend) -> None:
    """No per-partition string conversion after the reads: labels are categoricals, not strings."""
    lazy = mktsframe.read_dask("*/1H/OHLCV", columns=["Close"], backend=universe)
    graph = lazy.__dask_graph__()
    assert len(graph) == lazy.npartitions
    dtype = pd.CategoricalDtype(pd.Index(SYMBOLS, dtype=object))
    assert lazy.dtypes["Symbol"] == dtype
    assert lazy.compute(scheduler="sync")["Symbol"].dtype == dtype
