"""The xarray backend: ``xr.open_dataset(root, engine="mkts", keys=[...])``.

Laziness is checked for real: a Python audit hook records every file the process opens, so the
tests see exactly which year files the engine touched (no part of the engine is replaced).
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

xr = pytest.importorskip("xarray")

import mktsframe  # noqa: E402
from mktsframe.io.xarray import MktsBackendEntrypoint  # noqa: E402

from .helpers import frame  # noqa: E402

YEARS = range(2019, 2024)
_opened: list[str] | None = None


def _audit(event: str, args: tuple[object, ...]) -> None:
    if event == "open" and _opened is not None and isinstance(args[0], str) and args[0].endswith(".bin"):
        _opened.append(args[0])


sys.addaudithook(_audit)  # hooks cannot be removed; this one records only inside opened_files()


class opened_files:
    """Record the year files (``SYMBOL/YEAR``) opened inside the ``with`` block."""

    def __enter__(self) -> set[str]:
        global _opened
        _opened = []
        self.files: set[str] = set()
        return self.files

    def __exit__(self, *exc: object) -> None:
        global _opened
        assert _opened is not None
        self.files.update(f"{Path(p).parts[-4]}/{Path(p).stem}" for p in _opened)
        _opened = None


def daily(seed: int, years: range = YEARS) -> pd.DataFrame:
    """Daily bars on weekdays only, so the time grid has real holes."""
    idx = pd.bdate_range(f"{years[0]}-01-01", f"{years[-1]}-12-31", tz="UTC").as_unit("ns")
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"Close": rng.random(len(idx)).astype("f4"), "Volume": rng.integers(0, 1000, len(idx))}, index=idx
    )


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """A closed data root with AAA and BBB daily over 2019-2023 (one year file per year)."""
    path = tmp_path / "data"
    with mktsframe.connect(path) as db:
        mktsframe.write_mkts(daily(1), "AAA/1D/OHLCV", backend=db)
        mktsframe.write_mkts(daily(2).iloc[::3], "BBB/1D/OHLCV", backend=db)
    return path


def expected(root: Path, key: str, column: str, grid: pd.DatetimeIndex) -> np.ndarray:
    with mktsframe.connect(root, read_only=True) as db:
        s = mktsframe.read_mkts(key, backend=db)[column]
    return s.tz_convert(None).reindex(grid).to_numpy(dtype="f8")


def test_open_shape_coords_and_values(root: Path) -> None:
    with xr.open_dataset(root, engine="mkts", keys=["AAA/1D/OHLCV", "BBB/1D/OHLCV"]) as ds:
        assert ds.sizes == {"time": len(pd.date_range("2019-01-01", "2023-12-29")), "symbol": 2}
        assert list(ds.symbol.values) == ["AAA", "BBB"]
        assert ds.time.dtype == np.dtype("M8[ns]")
        assert ds.time.attrs["timezone"] == "UTC"
        assert set(ds.data_vars) == {"Close", "Volume"}
        assert ds.Close.dtype == np.float32
        assert ds.Volume.dtype == np.float64
        assert ds.Volume.attrs["mkts_dtype"] == "i8"
        assert ds.attrs["timeframe"] == "1D"
        grid = ds.indexes["time"]
        for sym in ("AAA", "BBB"):
            for col in ("Close", "Volume"):
                got = ds[col].sel(symbol=sym).values.astype("f8")
                np.testing.assert_array_equal(got, expected(root, f"{sym}/1D/OHLCV", col, grid))
        # Saturdays hold no bar: NaN on the shared grid.
        assert np.isnan(ds.Close.sel(time="2021-01-02", symbol="AAA").item())


def test_selection_reads_only_the_year_files_it_needs(root: Path) -> None:
    with opened_files() as at_open:
        ds = xr.open_dataset(root, engine="mkts", keys="AAA,BBB/1D/OHLCV")
    # Schema from an empty query, extent from the first and last bar: two year files per symbol.
    assert at_open == {"AAA/2019", "BBB/2019", "AAA/2023", "BBB/2023"}
    with opened_files() as by_read:
        part = ds.Close.sel(time=slice("2021-02-01", "2021-03-31")).load()
    assert by_read == {"AAA/2021", "BBB/2021"}
    assert part.sizes["time"] == 59
    assert np.isfinite(part.values).sum() > 0
    ds.close()

    # With bounds given nothing outside them is opened at all.
    with opened_files() as files:
        ds = xr.open_dataset(root, engine="mkts", keys="AAA,BBB/1D/OHLCV", start="2022-06-01", end="2022-06-30")
        total = float(ds.Volume.sum())
        ds.close()
    assert files == {"AAA/2022", "BBB/2022"}
    want = np.nansum(expected(root, "AAA/1D/OHLCV", "Volume", ds.indexes["time"]))
    want += np.nansum(expected(root, "BBB/1D/OHLCV", "Volume", ds.indexes["time"]))
    assert total == want


def test_dask_chunks_follow_year_files(root: Path) -> None:
    with xr.open_dataset(root, engine="mkts", keys="*/1D/OHLCV", chunks={}) as ds:
        assert ds.Close.chunks == ((365, 366, 365, 365, 363), (1, 1))
        assert list(ds.symbol.values) == ["AAA", "BBB"]
        with opened_files() as files:
            mean_2020 = ds.Close.sel(time="2020", symbol="AAA").mean().compute()
        assert files == {"AAA/2020"}
        want = np.nanmean(expected(root, "AAA/1D/OHLCV", "Close", ds.indexes["time"][365:731]))
        assert float(mean_2020) == pytest.approx(want, rel=1e-6)


def test_steps_points_and_columns(root: Path) -> None:
    with xr.open_dataset(root, engine="mkts", keys="AAA/1D/OHLCV", columns=["Close"]) as ds:
        assert list(ds.data_vars) == ["Close"]
        full = ds.Close.values
        np.testing.assert_array_equal(ds.Close.isel(time=slice(None, None, -7)).values, full[::-7])
        np.testing.assert_array_equal(ds.Close.isel(time=slice(3, 40, 5)).values, full[3:40:5])
        assert ds.Close.isel(time=2, symbol=0).values == full[2, 0]
    with xr.open_dataset(root, engine="mkts", keys="AAA/1D/OHLCV", drop_variables="Volume") as ds:
        assert list(ds.data_vars) == ["Close"]


def test_helpful_errors(root: Path, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="keys="):
        xr.open_dataset(root, engine="mkts")
    with pytest.raises(mktsframe.BucketNotFoundError):
        xr.open_dataset(root, engine="mkts", keys="ZZZ/1D/OHLCV")
    with pytest.raises(ValueError, match="no bucket matches"):
        xr.open_dataset(root, engine="mkts", keys="Q*/1D/OHLCV")
    with pytest.raises(ValueError, match="no column"):
        xr.open_dataset(root, engine="mkts", keys="AAA/1D/OHLCV", columns=["Bid"])
    with pytest.raises(FileNotFoundError, match="no mktsframe data root"):
        xr.open_dataset(tmp_path / "nowhere", engine="mkts", keys="AAA/1D/OHLCV")
    assert not (tmp_path / "nowhere").exists()
    with mktsframe.connect(root) as db:
        mktsframe.write_mkts(frame(["2020-01-01 00:01"], Close=[1.0]), "AAA/1Min/OHLCV", backend=db)
    with pytest.raises(ValueError, match="one timeframe"):
        xr.open_dataset(root, engine="mkts", keys=["AAA/1D/OHLCV", "AAA/1Min/OHLCV"])


def test_guess_can_open_is_cheap_and_never_raises(root: Path, tmp_path: Path) -> None:
    entry = MktsBackendEntrypoint()
    assert entry.guess_can_open(root)
    assert entry.guess_can_open(str(root))
    for other in (tmp_path, tmp_path / "x.nc", "http://h:1/x", "s3://b/k", 42, None, b"\xff", object(), "\x00"):
        assert entry.guess_can_open(other) is False
    # Without engine= xarray finds us from the root's .mkts directory.
    with xr.open_dataset(root, keys="AAA/1D/OHLCV") as ds:
        assert ds.sizes["symbol"] == 1


def test_arrays_pickle_as_their_target(root: Path) -> None:
    with xr.open_dataset(root, engine="mkts", keys="AAA,BBB/1D/OHLCV", start="2020-01-01", end="2020-12-31") as ds:
        clone = pickle.loads(pickle.dumps(ds))
        np.testing.assert_array_equal(clone.Volume.values, ds.Volume.values)
    db = mktsframe.connect(root)
    try:  # opened from a Backend object: it pickles as the backend's spec (the root, read-only)
        ds = xr.open_dataset(db, engine="mkts", keys="AAA/1D/OHLCV")
        data = pickle.dumps(ds.Close.variable._data)
        assert b"mktsframe.engine" not in data
        np.testing.assert_array_equal(pickle.loads(pickle.dumps(ds)).Close.values, ds.Close.values)
    finally:
        db.close()


@pytest.mark.timeout(120)
def test_distributed_local_cluster(root: Path) -> None:
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
        ) as cluster,
        distributed.Client(cluster) as client,
        xr.open_dataset(root, engine="mkts", keys="AAA,BBB/1D/OHLCV", chunks={}) as ds,
    ):
        monthly = ds.Close.resample(time="1MS").mean().compute()
        assert len(client.scheduler_info()["workers"]) == 2
        grid = ds.indexes["time"]
    for j, sym in enumerate(("AAA", "BBB")):
        want = pd.Series(expected(root, f"{sym}/1D/OHLCV", "Close", grid), index=grid).resample("1MS").mean()
        np.testing.assert_allclose(monthly.values[:, j], want.to_numpy(), rtol=1e-6)


def test_tick_bucket_opens_with_exact_repeated_times_read_lazily(tmp_path: Path) -> None:
    root = tmp_path / "ticks"
    idx = pd.DatetimeIndex(
        np.array(
            ["2024-01-02T23:59:59.999999999", "2024-01-03T00:00:00.000000001", "2024-01-03T00:00:00.000000001",
             "2024-01-03T00:00:00.000000001", "2024-01-03T12:00:00.5", "2024-01-04T00:00:00"],
            dtype="M8[ns]",
        ),
        tz="UTC",
    )  # fmt: skip
    ticks = pd.DataFrame({"Price": np.arange(6) + 0.5, "Size": np.arange(10, 16, dtype="i4")}, index=idx)
    with mktsframe.connect(root) as db:
        mktsframe.write_mkts(ticks, "BTC/1Sec/TICK", variable_length=True, backend=db)
        mktsframe.write_mkts(ticks.iloc[:2], "AAA/1Sec/TICK", variable_length=True, backend=db)
    with xr.open_dataset(root, engine="mkts", keys="BTC/1Sec/TICK") as ds:
        assert ds.Price.dims == ("time",)
        assert ds.symbol.item() == "BTC"
        np.testing.assert_array_equal(ds.time.values, idx.tz_convert(None).to_numpy())  # exact ns, repeats kept
        assert ds.Size.dtype == np.int32  # no grid, no holes: stored types
        with opened_files() as files:
            np.testing.assert_array_equal(ds.Price.isel(time=slice(2, 5)).values, [2.5, 3.5, 4.5])
        assert files == set()  # tick day files are not year files: nothing else was read
        np.testing.assert_array_equal(ds.Size.isel(time=slice(None, None, -2)).values, [15, 13, 11])
        assert ds.Size.isel(time=3).item() == 13
        np.testing.assert_array_equal(ds.Size.values, ticks["Size"].to_numpy())
        np.testing.assert_array_equal(ds.Price.sel(time="2024-01-03").values, [1.5, 2.5, 3.5, 4.5])
    with xr.open_dataset(root, engine="mkts", keys="BTC/1Sec/TICK", chunks={}) as ds:
        assert ds.Price.chunks == ((1, 4, 1),)  # one chunk per UTC day
        np.testing.assert_array_equal(ds.Price.values, ticks["Price"].to_numpy())
    with xr.open_dataset(
        root, engine="mkts", keys="BTC/1Sec/TICK", start="2024-01-03T00:00:00.000000001", end="2024-01-03T12:00"
    ) as ds:
        np.testing.assert_array_equal(ds.Size.values, [11, 12, 13])  # exact ns bounds
    with pytest.raises(ValueError, match="one key at a time"):
        xr.open_dataset(root, engine="mkts", keys=["BTC/1Sec/TICK", "AAA/1Sec/TICK"])
