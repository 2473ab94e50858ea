"""Tick (variable-length) buckets over the wire: pymarketstore's tick usage against a live server (the
cases of MarketStore's own integration tests, with the nanosecond bugs they xfail fixed), and the
pandas front door behaving identically over the local engine and the HTTP backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pymarketstore as pymkts
import pytest
from live_helpers import replies

import mktsframe
from mktsframe import Backend
from mktsframe.backend.base import Batch

pytestmark = [pytest.mark.server, pytest.mark.timeout(120)]

NS = 1_000_000_000
TICK = [("Epoch", "i8"), ("Bid", "f4"), ("Ask", "f4"), ("Nanoseconds", "i4")]



def tick_array(ns: list[int] | np.ndarray, dtype: list[tuple[str, str]] = TICK) -> np.ndarray:
    ns = np.asarray(ns, np.int64)
    arr = np.zeros(ns.size, dtype=dtype)
    arr["Epoch"], nanos = np.divmod(ns, NS)
    if "Nanoseconds" in arr.dtype.names:
        arr["Nanoseconds"] = nanos
    for j, name in enumerate(n for n in arr.dtype.names if n not in ("Epoch", "Nanoseconds")):
        arr[name] = np.arange(ns.size) + 100 * j
    return arr


def times(ds: pymkts.results.DataSet) -> list[int]:
    a = ds.array
    return (a["Epoch"].astype(np.int64) * NS + a["Nanoseconds"]).tolist()


def test_tick_round_trip_keeps_every_nanosecond_and_duplicate(client: pymkts.Client, sym: str) -> None:
    t = pd.Timestamp("2024-03-01 10:01:59", tz="UTC").value  # MarketStore: 10:01:58.999999995 at 1Min
    ns = [t + 999_999_999, t, t, t + 1, t + 59 * NS + 999_999_880]  # out of order, a duplicate
    assert replies(client.write(tick_array(ns), f"{sym}/1Min/TICK", isvariablelength=True)) is None
    ds = client.query(pymkts.Params(sym, "1Min", "TICK")).first()
    assert ds.array.dtype == np.dtype([("Epoch", "i8"), ("Bid", "f4"), ("Ask", "f4"), ("Nanoseconds", "i4")])
    assert times(ds) == sorted(ns)
    assert ds.array["Bid"].tolist() == [1, 2, 3, 0, 4]  # equal times in write order
    df = ds.df()
    assert list(df.columns) == ["Bid", "Ask", "Nanoseconds"]
    assert df.index[0] == pd.Timestamp("2024-03-01 10:01:59", tz="UTC")


def test_duplicate_seconds_at_1sec_keep_write_order(client: pymkts.Client, sym: str) -> None:
    """MarketStore's test_1sec_timeframe: same Epoch, ordered by Nanoseconds, identical rows kept."""
    base = pd.Timestamp("2024-03-01", tz="UTC").value
    first = tick_array([base + 5, base + 5, base + 7])
    second = tick_array([base + 6, base + 5])
    second["Bid"] = [50, 51]
    client.write(first, f"{sym}/1Sec/TICK", isvariablelength=True)
    client.write(second, f"{sym}/1Sec/TICK", isvariablelength=True)
    ds = client.query(pymkts.Params(sym, "1Sec", "TICK")).first()
    assert times(ds) == [base + 5, base + 5, base + 5, base + 6, base + 7]
    assert ds.array["Bid"].tolist() == [0, 1, 51, 50, 2]


def test_nanosecond_ranges_and_limits(client: pymkts.Client, sym: str) -> None:
    """MarketStore's test_range_nanosec and test_leakage_1second_limit."""
    base = pd.Timestamp("2024-03-01 00:00:03", tz="UTC").value
    client.write(tick_array([base + k * 100_000_000 for k in range(1, 6)] + [base]), f"{sym}/1Sec/TICK",
                 isvariablelength=True)  # fmt: skip

    def q(**kw: object) -> list[int]:
        return [t - base for t in times(client.query(pymkts.Params(sym, "1Sec", "TICK", **kw)).first())]

    s, e = pd.Timestamp(base + 200_000_000, tz="UTC"), pd.Timestamp(base + 400_000_000, tz="UTC")
    assert q(start=s, end=e) == [200_000_000, 300_000_000, 400_000_000]
    assert q(start=s, end=e, limit=2, limit_from_start=True) == [200_000_000, 300_000_000]
    assert q(start=s, end=e, limit=2) == [300_000_000, 400_000_000]
    assert q(start=pd.Timestamp(base + 100_000_000, tz="UTC"), limit=1, limit_from_start=True) == [100_000_000]
    assert q(end=pd.Timestamp(base, tz="UTC"), limit=1) == [0]
    assert len(q(limit=4)) == 4  # the limit counts ticks, not intervals


def test_fields_types_and_create(client: pymkts.Client, live_server, sym: str) -> None:
    """MarketStore's test_ticks_fields_and_types, test_create (variable) and GetInfo's RecordType."""
    client.write(tick_array([1_709_251_200 * NS + 3], dtype=[("Epoch", "i8"), ("Ask", "f4"), ("Nanoseconds", "i4")]),
                 f"{sym}/1Min/VAR", isvariablelength=True)  # fmt: skip
    var = client.query(pymkts.Params(sym, "1Min", "VAR")).first().df()
    assert list(var.columns) == ["Ask", "Nanoseconds"]
    assert (var["Ask"].dtype, var["Nanoseconds"].dtype) == (np.dtype("f4"), np.dtype("i4"))
    assert var["Nanoseconds"].tolist() == [3]
    dt = [("Epoch", "i8"), ("Bid", "f8"), ("Nanoseconds", "i4")]
    assert replies(client.create(f"{sym}/1Sec/NEW", dt, isvariablelength=True))[0]["error"] == ""
    assert replies(client.write(tick_array([1_709_251_200 * NS + 9], dtype=dt), f"{sym}/1Sec/NEW")) is None
    assert times(client.query(pymkts.Params(sym, "1Sec", "NEW")).first()) == [1_709_251_200 * NS + 9]
    info = pymkts.Client(live_server.rpc).client._request("DataService.GetInfo", requests=[{"key": f"{sym}/1Sec/NEW"}])
    assert info["responses"][0]["RecordType"] == 1
    assert [d["Name"] for d in info["responses"][0]["DSV"]] == ["Epoch", "Bid"]
    f8 = tick_array([0], dtype=[("Epoch", "i8"), ("Ask", "f4"), ("Nanoseconds", "f8")])
    assert "unexpected data type for Nanoseconds" in replies(client.write(f8, f"{sym}/1Min/VAR", True))[0]["error"]
    i8 = tick_array([1_709_251_200 * NS + 5], dtype=[("Epoch", "i8"), ("Ask", "f4"), ("Nanoseconds", "i8")])
    assert replies(client.write(i8, f"{sym}/1Min/VAR", True)) is None  # pandas >= 2 habits: int64 is fine


def test_random_ticks_with_duplicates_across_years(client: pymkts.Client, sym: str) -> None:
    """MarketStore's test_ticks / test_data_integrity / test_query_overlapping_years: 10,000 random ticks,
    20% duplicated timestamps, written in one call, come back sorted, complete and exact."""
    rng = np.random.default_rng(11)
    ns = pd.Timestamp("2023-12-31 23:00", tz="UTC").value + rng.integers(0, 2 * 3600 * NS, 10_000)
    ns[rng.integers(0, ns.size, 2_000)] = ns[rng.integers(0, ns.size, 2_000)]
    arr = tick_array(ns)
    arr["Bid"] = np.arange(ns.size)
    client.write(arr, f"{sym}/1Min/TICK", isvariablelength=True)
    got = client.query(pymkts.Params(sym, "1Min", "TICK")).first().array
    order = np.argsort(ns, kind="stable")
    assert (got["Epoch"] * NS + got["Nanoseconds"]).tolist() == ns[order].tolist()
    assert got["Bid"].tolist() == arr["Bid"][order].tolist()
    only_2024 = client.query(pymkts.Params(sym, "1Min", "TICK", start=pd.Timestamp("2024-01-01", tz="UTC"))).first()
    assert len(only_2024.array) == int((ns >= pd.Timestamp("2024-01-01", tz="UTC").value).sum())


def test_string16_ticks(client: pymkts.Client, sym: str) -> None:
    dt = [("Epoch", "i8"), ("Venue", "U16"), ("Nanoseconds", "i4")]
    arr = np.array([(1_709_251_200, "NYSE-ü-🚀", 5), (1_709_251_200, "ARCA", 5)], dtype=dt)
    client.write(arr, f"{sym}/1Sec/STR", isvariablelength=True)
    got = client.query(pymkts.Params(sym, "1Sec", "STR")).first().array
    assert got["Venue"].tolist() == ["NYSE-ü-🚀", "ARCA"]


# -- pandas front door over both backends --------------------------------------------------------


@pytest.fixture(params=["local", "http"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "local":
        be = mktsframe.connect(tmp_path / "data")
    else:
        be = mktsframe.connect(request.getfixturevalue("live_server").url)
    yield be
    be.close()


def tick_frame(ns: list[int] | np.ndarray, start: float = 0.0) -> pd.DataFrame:
    idx = pd.DatetimeIndex(np.asarray(ns, np.int64).view("M8[ns]"), tz="UTC")
    n = len(idx)
    return pd.DataFrame({"Price": start + np.arange(n, dtype="f8"), "Size": np.arange(n, dtype="i4")}, index=idx)


def test_ticks_round_trip_over_both_backends(backend: Backend, sym: str) -> None:
    key = f"{sym}/1Min/TICK"
    base = pd.Timestamp("2024-03-01 09:30", tz="UTC").value
    ns = [base + 7, base + 1, base + 7, base - 1, base + 86_400 * NS + 999_999_999]
    tick_frame(ns).to_mkts(key, variable_length=True, backend=backend)
    tick_frame([base + 7, base - 2], start=10).to_mkts(key, backend=backend)  # late, into the existing bucket
    out = pd.read_mkts(key, backend=backend)
    assert out.index.asi8.tolist() == [base - 2, base - 1, base + 1, base + 7, base + 7, base + 7, ns[-1]]
    assert out["Price"].tolist() == [11, 3, 1, 0, 2, 10, 4]
    assert list(out.columns) == ["Price", "Size"]
    assert str(out.index.dtype) == "datetime64[ns, UTC]"
    window = pd.read_mkts(key, start=pd.Timestamp(base + 1, tz="UTC"), end=pd.Timestamp(base + 7, tz="UTC"),
                          backend=backend)  # fmt: skip
    assert window.index.asi8.tolist() == [base + 1, base + 7, base + 7, base + 7]
    assert pd.read_mkts(key, limit=2, backend=backend)["Price"].tolist() == [10, 4]
    assert backend.delete(key, start=pd.Timestamp(base + 7, tz="UTC"), end=pd.Timestamp(base + 7, tz="UTC")) == 3
    assert len(pd.read_mkts(key, backend=backend)) == 4
    info = backend.info(key)
    assert (info.record_type, info.rows, info.first, info.last) == ("variable", 4, base - 2, ns[-1])


def test_create_and_batches_over_both_backends(backend: Backend, sym: str) -> None:
    key = f"{sym}/1Sec/QUOTE"
    backend.create(key, [("Bid", "f4"), ("Ask", "f4")], variable_length=True)
    assert backend.info(key).record_type == "variable"
    t = 1_709_251_200 * NS + 123
    backend.write(key, Batch(np.array([t, t], np.int64), {"Bid": np.array([1, 2], "f4"), "Ask": np.ones(2, "f4")}))
    (got,) = backend.query(key).values()
    assert got.variable_length
    assert got.index.tolist() == [t, t]
    assert got.columns["Bid"].tolist() == [1, 2]
    assert list(got.columns) == ["Bid", "Ask"]
