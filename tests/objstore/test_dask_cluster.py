"""read_dask, df.mkts and xarray's dask chunks on a real distributed cluster (worker processes).

One small LocalCluster for the module (2 worker processes, 1 thread each): tasks are pickled to
the workers, which open the local root read-only, or the S3 snapshot, from the tasks' specs.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

import mktsframe
from mktsframe.backend.local import LocalBackend
from mktsframe.publish import sync
from mktsframe.testing.s3 import S3Server

distributed = pytest.importorskip("distributed")
xr = pytest.importorskip("xarray")

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def client() -> Iterator[distributed.Client]:
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def _malloc_restored() -> bool | None:
    from mktsframe.io import worker_malloc

    return worker_malloc._done


def _by_time(df: pd.DataFrame) -> pd.DataFrame:
    return df.reset_index().sort_values(["Epoch", "Symbol"], kind="stable").set_index("Epoch")


def test_read_dask_on_worker_processes_local_and_s3(
    client: distributed.Client, populated: LocalBackend, s3: S3Server
) -> None:
    want = mktsframe.read_mkts("*/1Min/OHLCV", "2024-01-01", columns=["Close", "Volume"], backend=populated)
    lazy = mktsframe.read_dask("*/1Min/OHLCV", "2024-01-01", columns=["Close", "Volume"], backend=populated)
    got = client.compute(lazy).result()
    pd.testing.assert_frame_equal(_by_time(got), want, check_flags=False)
    # the workers read it: the local root read-only (this process holds the writer's lock)
    assert set(client.run(lambda: __import__("os").getpid())) != {__import__("os").getpid()}
    # and the workers that ran a task got glibc's large-block reuse back (see worker_malloc)
    assert True in client.run(_malloc_restored).values()

    sync(populated, "s3://mkts/dask", storage_options=s3.storage_options)
    store = mktsframe.connect("s3://mkts/dask", storage_options=s3.storage_options)
    lazy = mktsframe.read_dask("*/1Min/OHLCV", "2024-01-01", columns=["Close", "Volume"], backend=store)
    pd.testing.assert_frame_equal(_by_time(client.compute(lazy).result()), want, check_flags=False)


def test_one_bucket_has_divisions_and_df_mkts_runs_on_the_workers(
    client: distributed.Client, populated: LocalBackend
) -> None:
    lazy = mktsframe.read_dask("AAA/1Min/OHLCV", backend=populated)
    assert lazy.known_divisions
    assert lazy.npartitions == 2  # the 2023 and 2024 year files
    assert lazy.loc["2024-01-01 01:00":"2024-01-01 02:00"].npartitions == 1
    frame = mktsframe.read_mkts("AAA/1Min/OHLCV", backend=populated)
    candles = lazy.map_partitions(lambda df: df.mkts.candles("1H"), meta=frame.mkts.candles("1H").iloc[:0])
    pd.testing.assert_frame_equal(client.compute(candles).result(), frame.mkts.candles("1H"), check_flags=False)


def test_xarray_chunks_compute_on_the_workers(
    client: distributed.Client, populated: LocalBackend, s3: S3Server
) -> None:
    keys = "AAA,BBB/1Min/OHLCV"
    frame = mktsframe.read_mkts(keys, backend=populated)
    expect = frame.groupby("Symbol", observed=True)["Close"].sum()
    with xr.open_dataset(populated.root, engine="mkts", keys=keys, chunks={}) as ds:
        assert ds.Close.chunks is not None
        total = client.compute(ds.Close.sum(dim="time")).result()
        np.testing.assert_allclose(total.values, expect.to_numpy(), rtol=1e-6)
    sync(populated, "s3://mkts/xr", storage_options=s3.storage_options)
    with xr.open_dataset("s3://mkts/xr", engine="mkts", keys=keys, chunks={},
                         storage_options=s3.storage_options) as ds:  # fmt: skip
        total = client.compute(ds.Close.sum(dim="time")).result()
        np.testing.assert_allclose(total.values, expect.to_numpy(), rtol=1e-6)
