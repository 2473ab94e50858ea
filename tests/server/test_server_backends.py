"""One behavioural suite for ``read_mkts``/``to_mkts``/``connect`` over both backends.

``backend`` is the local engine on a temp directory, :class:`HTTPBackend` on a live server
process (one in UTC, one whose ``timezone`` is America/New_York), or :class:`HTTPBackend` over the
server's service in this process (its ``InProcess`` transport: the same client and service, no
socket); every test must pass identically on all: zone-less times are UTC on every backend.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mktsframe
from mktsframe import (
    Backend,
    BucketExistsError,
    BucketNotFoundError,
    InvalidKeyError,
    SchemaMismatchError,
)
from mktsframe.backend.http import HTTPBackend
from mktsframe.config import Config
from mktsframe.server.rpc import InProcess, JsonRpc
from mktsframe.server.service import Service

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["local", "http", "http-new-york", "in-process"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "local":
        be = mktsframe.connect(tmp_path / "data")
    elif request.param == "in-process":
        local = mktsframe.connect(tmp_path / "data")
        be = HTTPBackend("http://in-process", transport=InProcess(JsonRpc(Service(local, Config(), "test"))))
        yield be
        be.close()
        local.close()
        return
    else:
        server = request.getfixturevalue("live_server" if request.param == "http" else "live_server_ny")
        be = mktsframe.connect(server.url)
        assert isinstance(be, HTTPBackend)
    yield be
    be.close()


def frame(start: str = "2024-01-02 09:30", n: int = 5, freq: str = "1min") -> pd.DataFrame:
    idx = pd.date_range(start, periods=n, freq=freq, tz="UTC").as_unit("ns")
    return pd.DataFrame(
        {
            "Open": np.arange(n, dtype="f4") + 1,
            "Close": np.arange(n, dtype="f8") * 2,
            "Volume": np.arange(n, dtype="i8") * 100,
        },
        index=idx,
    )


def test_round_trip(backend: Backend, sym: str) -> None:
    df = frame()
    df.to_mkts(f"{sym}/1Min/OHLCV", backend=backend)
    out = pd.read_mkts(f"{sym}/1Min/OHLCV", backend=backend)
    pd.testing.assert_frame_equal(out, df, check_names=False, check_freq=False)
    assert out.index.name == "Epoch"
    assert str(out.index.dtype) == "datetime64[ns, UTC]"
    assert out.attrs["mkts_key"] == f"{sym}/1Min/OHLCV"
    assert list(out.dtypes) == [np.dtype("f4"), np.dtype("f8"), np.dtype("i8")]


def test_bounds_in_every_form(backend: Backend, sym: str) -> None:
    frame(n=10).to_mkts(f"{sym}/1Min/OHLCV", backend=backend)
    key = f"{sym}/1Min/OHLCV"
    t0 = pd.Timestamp("2024-01-02 09:32", tz="UTC")
    forms = [
        ("2024-01-02 09:32", "2024-01-02 09:34"),
        (t0, t0 + pd.Timedelta("2min")),
        (int(t0.timestamp()), int(t0.timestamp()) + 120),  # epoch seconds
        (t0.value, t0.value + 120 * 10**9),  # epoch nanoseconds
        (dt.datetime(2024, 1, 2, 9, 32), dt.datetime(2024, 1, 2, 9, 34)),  # naive = UTC
        (t0.tz_convert("America/New_York"), "2024-01-02 04:34-05:00"),
        (np.datetime64("2024-01-02T09:32"), "2024-01-02 09:34:59.999"),  # inside the last bar
        ("2024-01-02 09:32:30", "2024-01-02 09:34"),  # a bound inside a bar selects that bar
    ]
    for start, end in forms:
        out = pd.read_mkts(key, start, end, backend=backend)
        assert [t.minute for t in out.index] == [32, 33, 34], (start, end)
    assert len(pd.read_mkts(key, start="2024-01-02 09:38", backend=backend)) == 2
    assert len(pd.read_mkts(key, end="2024-01-02 09:30", backend=backend)) == 1
    assert pd.read_mkts(key, start="2025-01-01", backend=backend).empty


def test_columns_and_limits(backend: Backend, sym: str) -> None:
    key = f"{sym}/1Min/OHLCV"
    frame(n=10).to_mkts(key, backend=backend)
    out = pd.read_mkts(key, columns=["Volume", "Open"], backend=backend)
    assert list(out.columns) == ["Volume", "Open"]
    with pytest.raises(SchemaMismatchError, match="NoSuch"):
        pd.read_mkts(key, columns=["NoSuch"], backend=backend)
    assert [t.minute for t in pd.read_mkts(key, limit=3, backend=backend).index] == [37, 38, 39]
    first = pd.read_mkts(key, limit=3, limit_from_start=True, backend=backend)
    assert [t.minute for t in first.index] == [30, 31, 32]
    empty = pd.read_mkts(key, limit=0, backend=backend)
    assert empty.empty
    assert list(empty.columns) == ["Open", "Close", "Volume"]
    assert list(empty.dtypes) == [np.dtype("f4"), np.dtype("f8"), np.dtype("i8")]
    with pytest.raises(ValueError, match="limit"):
        pd.read_mkts(key, limit=-1, backend=backend)


def test_several_symbols_one_frame(backend: Backend, sym: str) -> None:
    frame(n=3).to_mkts(f"{sym}A/1Min/OHLCV", backend=backend)
    frame(start="2024-01-02 09:31", n=3).to_mkts(f"{sym}B/1Min/OHLCV", backend=backend)
    out = pd.read_mkts(f"{sym}B,{sym}A/1Min/OHLCV", backend=backend)
    assert list(out.columns) == ["Symbol", "Open", "Close", "Volume"]
    a, b = f"{sym}A", f"{sym}B"
    assert out["Symbol"].tolist() == [a, b, a, b, a, b]  # by time, then in the order named
    assert out.index.is_monotonic_increasing
    res = backend.query(f"{sym}B,{sym}A/1Min/OHLCV", limit=1)
    assert list(res) == [f"{sym}B/1Min/OHLCV", f"{sym}A/1Min/OHLCV"]
    pd.DataFrame({"Bid": [1.0]}, index=pd.DatetimeIndex(["2024-01-02"], tz="UTC")).to_mkts(
        f"{sym}C/1Min/OHLCV", backend=backend
    )
    mixed = backend.query(f"{sym}C,{sym}A/1Min/OHLCV")
    assert list(mixed) == [f"{sym}C/1Min/OHLCV", f"{sym}A/1Min/OHLCV"]
    assert list(mixed[f"{sym}C/1Min/OHLCV"].columns) == ["Bid"]
    with pytest.raises(SchemaMismatchError, match="same columns"):
        pd.read_mkts(f"{sym}A,{sym}C/1Min/OHLCV", backend=backend)
    star = backend.query(f"{sym}*/1Min/OHLCV")
    assert sorted(star) == [f"{sym}A/1Min/OHLCV", f"{sym}B/1Min/OHLCV", f"{sym}C/1Min/OHLCV"]


def test_overwrite_coercion_and_schema_errors(backend: Backend, sym: str) -> None:
    key = f"{sym}/1Min/OHLCV"
    frame(n=3).to_mkts(key, backend=backend)
    patch = frame(start="2024-01-02 09:31", n=1) * 10
    patch["Open"] = patch["Open"].astype("f8")  # f8 into the f4 column: rounded, accepted
    patch["Volume"] = patch["Volume"].astype("i4")  # narrower ints widen
    patch.to_mkts(key, backend=backend)
    out = pd.read_mkts(key, backend=backend)
    assert out["Open"].tolist() == [1.0, 10.0, 3.0]
    assert out["Open"].dtype == np.dtype("f4")
    with pytest.raises(SchemaMismatchError, match=r"columns do not match|unable to match"):
        frame(n=1).rename(columns={"Open": "Opn"}).to_mkts(key, backend=backend)
    bad = frame(n=1)
    bad["Volume"] = 0.5
    with pytest.raises(SchemaMismatchError, match="Volume"):
        bad.to_mkts(key, backend=backend)
    assert pd.read_mkts(key, backend=backend)["Open"].tolist() == [1.0, 10.0, 3.0]


def test_strings_and_bools(backend: Backend, sym: str) -> None:
    idx = pd.date_range("2024-01-01", periods=2, freq="1D", tz="UTC")
    df = pd.DataFrame({"Name": ["añ€😀", "sixteen chars ok"], "Flag": [True, False]}, index=idx)
    df.to_mkts(f"{sym}/1D/META", backend=backend)
    out = pd.read_mkts(f"{sym}/1D/META", backend=backend)
    assert out["Name"].tolist() == ["añ€😀", "sixteen chars ok"]
    assert out["Flag"].tolist() == [True, False]
    with pytest.raises(SchemaMismatchError, match="16"):
        pd.DataFrame({"Name": ["x" * 17]}, index=idx[:1]).to_mkts(f"{sym}/1D/META2", backend=backend)


def test_accessor(backend: Backend, sym: str) -> None:
    key = f"{sym}/5Min/OHLCV"
    frame(freq="5min").mkts.write(key, backend=backend)
    out = pd.read_mkts(key, backend=backend)
    assert out.mkts.key == key
    (out * 2).mkts.write(backend=backend)
    assert pd.read_mkts(key, backend=backend)["Volume"].tolist() == [0, 200, 400, 600, 800]


def test_catalog_operations(backend: Backend, sym: str) -> None:
    key = f"{sym}/1H/OHLCV"
    backend.create(key, [("Open", "f4"), ("Volume", "i8")])
    backend.create(key, [("Open", "f4"), ("Volume", "i8")])  # same schema: no-op
    with pytest.raises(BucketExistsError):
        backend.create(key, [("Open", "f8")])
    assert sym in backend.list_symbols()
    assert key in backend.list_keys()
    assert backend.list_keys() == sorted(backend.list_keys())
    info = backend.info(key)
    assert (info.key, info.rows, info.first, info.columns) == (key, 0, None, (("Open", "f4"), ("Volume", "i8")))
    frame(start="2023-12-31 22:00", n=4, freq="1h")[["Open", "Volume"]].to_mkts(key, backend=backend)
    info = backend.info(key)
    assert info.rows == 4
    assert info.years == (2023, 2024)
    assert info.timeframe == "1H"
    assert info.timeframe_seconds == 3600
    assert info.first == pd.Timestamp("2023-12-31 22:00", tz="UTC").value
    assert info.last == pd.Timestamp("2024-01-01 01:00", tz="UTC").value
    assert backend.delete(key, start="2023-12-31 23:00", end="2024-01-01 00:00") == 2
    assert [t.hour for t in pd.read_mkts(key, backend=backend).index] == [22, 1]
    assert backend.delete(key) == 2
    backend.destroy(key)
    assert key not in backend.list_keys()
    with pytest.raises(BucketNotFoundError):
        pd.read_mkts(key, backend=backend)
    with pytest.raises(BucketNotFoundError):
        backend.destroy(key)
    with pytest.raises(BucketNotFoundError):
        backend.info(key)


@pytest.mark.parametrize("bad", ["../etc/1Min/x", "A/1Min", "A/1W/OHLCV", "A/1Min/.hidden", "A/0Min/X"])
def test_invalid_keys(backend: Backend, bad: str) -> None:
    with pytest.raises(InvalidKeyError):
        frame(n=1).to_mkts(bad, backend=backend)
    with pytest.raises((InvalidKeyError, BucketNotFoundError)):
        pd.read_mkts(bad, backend=backend)


def test_is_a_backend(backend: Backend) -> None:
    assert isinstance(backend, mktsframe.Backend)


def test_write_many_and_cross_section(backend: Backend, sym: str) -> None:
    """A universe written in one call and read back as one frame (issue 19), on both backends."""
    syms = [f"{sym}U{i:03d}" for i in range(60)]
    frames = {f"{s}/1Min/OHLCV": frame(n=3) * (i + 1) for i, s in enumerate(syms)}
    frames[f"{syms[7]}/1Min/OHLCV"] = frame(start="2024-01-02 09:31", n=1)  # other times: the general path
    mktsframe.write_many(frames, backend=backend)
    key = ",".join(syms) + "/1Min/OHLCV"
    out = pd.read_mkts(key, start="2024-01-02 09:31", end="2024-01-02 09:31", backend=backend)
    assert list(out["Symbol"]) == syms  # one bar each, in the order named
    assert isinstance(out["Symbol"].dtype, pd.CategoricalDtype)
    assert (out.index == pd.Timestamp("2024-01-02 09:31", tz="UTC")).all()
    expected = [(i + 1) * 2.0 if i != 7 else 0.0 for i in range(60)]
    assert list(out["Close"]) == expected
    whole = pd.read_mkts(key, backend=backend)
    assert len(whole) == 59 * 3 + 1
    assert whole.index.is_monotonic_increasing
    first = whole.loc[whole.index[0]]
    assert list(first["Symbol"]) == [s for i, s in enumerate(syms) if i != 7]  # ties: the order named
    # The frames read back write back with the key they were read with, each as one commit.
    out["Close"] += 0.5
    out.to_mkts("*/1Min/OHLCV", backend=backend)  # one bar each: the cross-section
    again = pd.read_mkts(key, start="2024-01-02 09:31", end="2024-01-02 09:31", backend=backend)
    pd.testing.assert_frame_equal(again, out, check_like=False, check_freq=False)
    whole["Volume"] += 1
    whole.to_mkts("*/1Min/OHLCV", backend=backend)  # three bars each
    assert (pd.read_mkts(key, backend=backend)["Volume"].to_numpy() == whole["Volume"].to_numpy()).all()


def test_write_many_refuses_all_when_one_is_bad(backend: Backend, sym: str) -> None:
    frame().to_mkts(f"{sym}A/1Min/OHLCV", backend=backend)
    bad = frame().rename(columns={"Close": "Last"})
    with pytest.raises(SchemaMismatchError):
        mktsframe.write_many({f"{sym}B/1Min/OHLCV": frame(), f"{sym}A/1Min/OHLCV": bad}, backend=backend)
    assert f"{sym}B/1Min/OHLCV" not in backend.list_keys()


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64", "uint32", "uint64"])
def test_tick_nanoseconds_column_of_any_integer_dtype(backend: Backend, sym: str, dtype: str) -> None:
    """pymarketstore-style tick frames: integer Epoch seconds plus Nanoseconds of any integer dtype."""
    key = f"{sym}/1Sec/TICK"
    df = pd.DataFrame({"Epoch": np.full(3, 1_704_067_200), "Nanoseconds": np.array([90, 10, 50], dtype),
                       "Bid": [1.0, 2.0, 3.0]})  # fmt: skip
    df.to_mkts(key, variable_length=True, backend=backend)
    out = pd.read_mkts(key, backend=backend)
    assert (out.index.asi8 - 1_704_067_200 * 10**9).tolist() == [10, 50, 90]
    assert out["Bid"].tolist() == [2.0, 3.0, 1.0]
    bad = df.assign(Nanoseconds=np.array([1, 2, 3], dtype))
    bad.loc[2, "Nanoseconds"] = np.iinfo(dtype).max if np.iinfo(dtype).max >= 10**9 else np.iinfo(dtype).min
    if np.iinfo(dtype).max < 10**9 and np.iinfo(dtype).min == 0:
        return  # no out-of-range value exists for this dtype
    with pytest.raises(SchemaMismatchError, match=r"column 'Nanoseconds', row 2: -?\d+ is not in \[0, 999999999\]"):
        bad.to_mkts(key, variable_length=True, backend=backend)
    assert len(pd.read_mkts(key, backend=backend)) == 3  # nothing of the bad frame was written
