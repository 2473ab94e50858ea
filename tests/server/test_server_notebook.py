"""The notebook features against a live server: the browser and live widgets, the magic and xarray over HTTP."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from live_helpers import ServerProcess

import mktsframe
from mktsframe.backend import set_default_backend
from tests.helpers import ipython_shell, ohlcv
from tests.test_live_view import check_live_view
from tests.test_widgets import check_browser

xr = pytest.importorskip("xarray")
pytest.importorskip("IPython")


@pytest.fixture
def remote(live_server: ServerProcess, sym: str) -> tuple[mktsframe.Backend, str, str]:
    db = mktsframe.connect(live_server.url)
    key, other = f"{sym}/1Min/OHLCV", f"{sym}B/1D/TRADES"
    mktsframe.write_mkts(ohlcv("2024-01-02", 2 * 1440, seed=9), key, backend=db)
    mktsframe.write_mkts(ohlcv("2023-12-30", 5, freq="1D", seed=8), other, backend=db)
    yield db, key, other
    db.destroy(key)
    db.destroy(other)
    db.close()


class _OnlyOurKeys:
    """The session server is shared: show the browser only this test's buckets."""

    def __init__(self, db: mktsframe.Backend, keys: list[str]) -> None:
        self._db, self._keys = db, keys

    def __getattr__(self, name: str) -> object:
        return getattr(self._db, name)

    def list_keys(self) -> list[str]:
        return [k for k in self._db.list_keys() if k in self._keys]


def test_browser_over_http(remote: tuple[mktsframe.Backend, str, str]) -> None:
    db, key, other = remote
    check_browser(_OnlyOurKeys(db, [key, other]), key, other)  # type: ignore[arg-type]


def test_live_view_over_http(live_server: ServerProcess, sym: str) -> None:
    """The live view fed by ``/ws``: the server pushes what another client writes through ``/rpc``."""
    key, other = f"{sym}/1Min/OHLCV", f"{sym}/1D/TRADES"
    with mktsframe.connect(live_server.url) as db:
        try:
            check_live_view(db, key, other)
        finally:
            for k in (key, other):
                db.destroy(k)


def test_xarray_over_http(live_server: ServerProcess, remote: tuple[mktsframe.Backend, str, str]) -> None:
    db, key, _ = remote
    with xr.open_dataset(live_server.url, engine="mkts", keys=[key], start="2024-01-03", chunks={}) as ds:
        assert ds.sizes == {"time": 1440, "symbol": 1}
        got = ds.Close.isel(symbol=0).values
    want = mktsframe.read_mkts(key, "2024-01-03", backend=db)["Close"].to_numpy()
    np.testing.assert_array_equal(got, want)


def test_xarray_tick_bucket_over_http(live_server: ServerProcess, sym: str) -> None:
    key = f"{sym}/1Sec/TICK"
    times = ["2024-01-03T00:00:00.000000001"] * 2 + ["2024-01-04T09:30:00.25"]
    idx = pd.DatetimeIndex(np.array(times, "M8[ns]"), tz="UTC")
    ticks = pd.DataFrame({"Price": [1.5, 2.5, 3.5], "Size": np.array([1, 2, 3], "i8")}, index=idx)
    with mktsframe.connect(live_server.url) as db:
        mktsframe.write_mkts(ticks, key, variable_length=True, backend=db)
        try:
            with xr.open_dataset(live_server.url, engine="mkts", keys=key, chunks={}) as ds:
                assert ds.Price.chunks == ((2, 1),)
                np.testing.assert_array_equal(ds.time.values, idx.tz_convert(None).to_numpy())
                np.testing.assert_array_equal(ds.Size.isel(time=slice(1, None)).values, [2, 3])
        finally:
            db.destroy(key)


def test_magic_over_http(live_server: ServerProcess, remote: tuple[mktsframe.Backend, str, str]) -> None:
    _, key, _ = remote
    ip = ipython_shell()
    ip.run_line_magic("load_ext", "mktsframe")
    try:
        ip.run_line_magic("mkts", f"connect {live_server.url}")
        assert key in ip.run_line_magic("mkts", "ls")
        df = ip.run_line_magic("mkts", f"read {key} --start 2024-01-03 --limit 5")
        assert len(df) == 5
        assert df.index[-1] == pd.Timestamp("2024-01-03 23:59", tz="UTC")
        assert ip.run_line_magic("mkts", f"info {key}")["rows"] == 2 * 1440
    finally:
        ip.run_line_magic("unload_ext", "mktsframe")
        set_default_backend(None)
