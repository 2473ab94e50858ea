"""Tick buckets published to S3 (moto's server) read back exactly as the local engine reads them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

import mktsframe
from mktsframe.backend.objstore import ObjectStoreBackend
from mktsframe.publish import sync
from mktsframe.testing.s3 import S3Server

KEY = "TCK/1Sec/TICK"
NS = 1_000_000_000


def _ticks(start: str, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp(start, tz="UTC").value
    ns = t0 + np.sort(rng.integers(0, 3 * 86_400 * NS, n))  # three days, exact nanoseconds
    ns[10:13] = ns[10]  # equal times keep their arrival order
    idx = pd.DatetimeIndex(ns, tz="UTC").as_unit("ns")
    return pd.DataFrame({"Price": rng.random(n), "Size": rng.integers(1, 100, n).astype("i4")}, index=idx)


def test_tick_days_publish_and_read_by_range(open_db, s3: S3Server) -> None:
    db = open_db(read_only=False)
    _ticks("2023-12-30 12:00", 3000, 1).to_mkts(KEY, variable_length=True, backend=db)
    _bars = pd.DataFrame({"Close": np.arange(5.0)}, index=pd.date_range("2024-01-01", periods=5, freq="1min", tz="UTC"))
    _bars.to_mkts("BAR/1Min/OHLCV", backend=db)
    url, so = "s3://mkts/ticks-test", s3.storage_options
    first = sync(db, url, storage_options=so)
    assert first.skipped == []
    store = mktsframe.connect(url, storage_options=so)
    assert isinstance(store, ObjectStoreBackend)
    assert store.list_keys() == ["BAR/1Min/OHLCV", KEY]

    got, want = store.info(KEY), db.info(KEY)
    assert dataclasses.replace(got, disk_bytes=0) == dataclasses.replace(want, disk_bytes=0)
    lo, hi = pd.Timestamp("2023-12-31 07:13:01.123456789", tz="UTC"), pd.Timestamp("2024-01-01 03:00", tz="UTC")
    for args in ({}, {"start": lo}, {"end": hi}, {"start": lo, "end": hi}, {"start": lo, "end": lo},
                 {"columns": ["Size"]}, {"limit": 7}, {"limit": 7, "limit_from_start": True},
                 {"start": lo, "end": hi, "limit": 2500}, {"limit": 0}):  # fmt: skip
        (want,) = db.query(KEY, **args).values()
        (got,) = store.query(KEY, **args).values()
        np.testing.assert_array_equal(got.index, want.index, err_msg=str(args))
        assert got.variable_length
        assert list(got.columns) == list(want.columns)
        for name, arr in want.columns.items():
            assert got.columns[name].dtype == arr.dtype
            np.testing.assert_array_equal(got.columns[name], arr, err_msg=str(args))
    # several buckets at once, bars and ticks; and through read_mkts / read_dask
    both = store.query("BAR,TCK/*/*", start=lo)
    assert set(both) == {"BAR/1Min/OHLCV", KEY}
    frame = mktsframe.read_mkts(KEY, lo, hi, backend=store)
    pd.testing.assert_frame_equal(frame, mktsframe.read_mkts(KEY, lo, hi, backend=db))
    lazy = mktsframe.read_dask(KEY, lo, hi, backend=store)
    pd.testing.assert_frame_equal(lazy.compute(scheduler="sync"), frame, check_flags=False)

    # a new day uploads that day only; the old snapshot keeps its ticks
    before = mktsframe.read_mkts(KEY, backend=store)
    _ticks("2024-01-05", 50, 2).to_mkts(KEY, variable_length=True, backend=db)
    again = sync(db, url, storage_options=so)
    assert again.uploaded == 3  # the new days only (its three days)
    pd.testing.assert_frame_equal(mktsframe.read_mkts(KEY, backend=store), before)
    store.refresh()
    assert len(mktsframe.read_mkts(KEY, backend=store)) == 3050
