"""Every call of the unmodified pymarketstore 0.22 client against a live mktsframe server, over HTTP
``/rpc`` and over gRPC (``grpc=True``): the ``client`` fixture runs each test on both."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pymarketstore as pymkts
import pytest
from live_helpers import mkts_client, replies

pytestmark = [pytest.mark.server, pytest.mark.timeout(120)]

OHLCV = [("Epoch", "i8"), ("Open", "f4"), ("High", "f4"), ("Low", "f4"), ("Close", "f4"), ("Volume", "f8")]


def ts(text: str) -> int:
    return pd.Timestamp(text, tz="UTC").value // 10**9


def bars(times: list[str], *, dtype: list[tuple[str, str]] = OHLCV, start: float = 1.0) -> np.ndarray:
    arr = np.zeros(len(times), dtype=dtype)
    arr["Epoch"] = [ts(t) for t in times]
    for j, name in enumerate(arr.dtype.names[1:]):
        arr[name] = start + np.arange(len(times)) + 100 * j
    return arr



def test_server_version(client: pymkts.Client) -> None:
    assert client.server_version().startswith("mktsframe-")


def test_write_structured_array_and_query_back(client: pymkts.Client, sym: str) -> None:
    data = bars(["2024-01-02 09:30", "2024-01-02 09:31", "2024-01-02 09:32"])
    assert replies(client.write(data, f"{sym}/1Min/OHLCV")) is None
    reply = client.query(pymkts.Params(sym, "1Min", "OHLCV"))
    assert reply.timezone == "UTC"
    ds = reply.first()
    assert ds.key == f"{sym}/1Min/OHLCV"
    assert ds.array.dtype == np.dtype(OHLCV)
    np.testing.assert_array_equal(ds.array, data)
    df = ds.df()
    assert list(df.columns) == ["Open", "High", "Low", "Close", "Volume"]
    assert str(df.index.tz) == "UTC"
    assert df.index[0] == pd.Timestamp("2024-01-02 09:30", tz="UTC")


def test_write_dataframe_records(client: pymkts.Client, sym: str) -> None:
    df = pd.DataFrame(
        {"Epoch": [ts("2024-03-01"), ts("2024-03-02")], "Bid": np.array([1.5, 2.5], "f8"), "Size": np.array([3, 4])}
    )
    assert replies(client.write(df.to_records(index=False), f"{sym}/1D/QUOTE")) is None
    out = client.query(pymkts.Params(sym, "1D", "QUOTE")).first().df()
    assert out["Bid"].tolist() == [1.5, 2.5]
    assert out["Size"].tolist() == [3, 4]
    assert out.index.tolist() == [pd.Timestamp("2024-03-01", tz="UTC"), pd.Timestamp("2024-03-02", tz="UTC")]


def test_inclusive_ranges_and_limits(client: pymkts.Client, sym: str) -> None:
    """MarketStore's test_grpc_compat cases (1Sec bars at 00:00, 01:00, 02:00, 03:00)."""
    client.write(bars(["2021-01-01 00:00", "2021-01-01 01:00", "2021-01-01 02:00", "2021-01-01 03:00"]),
                 f"{sym}/1Sec/OHLCV")

    def hours(**kw: object) -> list[int]:
        df = client.query(pymkts.Params(sym, "1Sec", "OHLCV", **kw)).first().df()
        return [t.hour for t in df.index]

    assert hours(start="2021-01-01 01:30") == [2, 3]
    assert hours(end="2021-01-01 01:30") == [0, 1]
    assert hours(start="2021-01-01 01:00", end="2021-01-01 02:00") == [1, 2]
    assert hours(limit=2) == [2, 3]
    assert hours(limit=2, limit_from_start=True) == [0, 1]
    assert hours(limit=2, limit_from_start=False) == [2, 3]
    assert hours(start="2021-01-01 01:00", end="2021-01-01 03:00", limit=2, limit_from_start=True) == [1, 2]
    assert hours(start=ts("2021-01-01 02:00")) == [2, 3]  # int start = epoch seconds
    assert hours(limit=0) == [0, 1, 2, 3]  # MarketStore: 0 = no limit


def test_sub_second_bounds_select_the_containing_bar(client: pymkts.Client, sym: str) -> None:
    client.write(bars(["2022-05-05 10:00", "2022-05-05 10:01", "2022-05-05 10:02"]), f"{sym}/1Min/OHLCV")
    p = pymkts.Params(sym, "1Min", "OHLCV", start="2022-05-05 10:00:30.25", end="2022-05-05 10:01:00.5")
    df = client.query(p).first().df()  # sends epoch_start_nanos / epoch_end_nanos
    assert [t.minute for t in df.index] == [0, 1]


def test_limit_across_years(client: pymkts.Client, sym: str) -> None:
    client.write(bars(["2017-01-01 00:00", "2018-01-01 00:00"]), f"{sym}/1Min/OHLCV")
    last = client.query(pymkts.Params(sym, "1Min", "OHLCV", limit=1)).first().df()
    first = client.query(pymkts.Params(sym, "1Min", "OHLCV", limit=1, limit_from_start=True)).first().df()
    both = client.query(pymkts.Params(sym, "1Min", "OHLCV", limit=2)).first().df()
    assert last.index.year.tolist() == [2018]
    assert first.index.year.tolist() == [2017]
    assert both.index.year.tolist() == [2017, 2018]


def test_columns_order_unknown_ignored_nanoseconds_last(client: pymkts.Client, sym: str) -> None:
    client.write(bars(["2024-01-02 00:00"]), f"{sym}/1Min/OHLCV")
    arr = client.query(pymkts.Params(sym, "1Min", "OHLCV", columns=["Close", "Open", "NoSuch"])).first().array
    assert arr.dtype.names == ("Epoch", "Close", "Open")
    dt = [("Epoch", "i8"), ("Nanoseconds", "i4"), ("Ask", "f4")]
    client.write(bars(["2024-01-02 00:00"], dtype=dt), f"{sym}/1Min/TICKS")
    arr = client.query(pymkts.Params(sym, "1Min", "TICKS", columns=["Ask"])).first().array
    assert arr.dtype.names == ("Epoch", "Ask", "Nanoseconds")
    assert arr.dtype["Nanoseconds"] == np.dtype("i4")
    assert arr.dtype["Ask"] == np.dtype("f4")


def test_several_symbols_and_several_params(client: pymkts.Client, sym: str) -> None:
    syms = [f"{sym}A", f"{sym}B", f"{sym}C"]
    for i, s in enumerate(syms):
        client.write(bars(["2024-01-02 00:00", "2024-01-02 00:01"], start=10 * i), f"{s}/1Min/OHLCV")
    reply = client.query(pymkts.Params(syms, "1Min", "OHLCV"))
    assert sorted(reply.keys()) == sorted(f"{s}/1Min/OHLCV" for s in syms)
    for i, s in enumerate(syms):
        assert reply.all()[f"{s}/1Min/OHLCV"].df()["Open"].tolist() == [10 * i, 10 * i + 1]
    assert sorted(reply.symbols()) == sorted(syms)
    multi = client.query([pymkts.Params(syms[0], "1Min", "OHLCV"), pymkts.Params(syms[1], "1Min", "OHLCV", limit=1)])
    assert len(multi.results) == 2
    assert multi.results[0].keys() == [f"{syms[0]}/1Min/OHLCV"]
    assert len(multi.results[1].first().df()) == 1
    assert set(multi.all()) == {f"{syms[0]}/1Min/OHLCV", f"{syms[1]}/1Min/OHLCV"}
    for s in syms[:2]:
        client.write(bars(["2024-01-02 00:00"]), f"{s}/1Min/G{sym}")
    star = client.query(pymkts.Params("*", "1Min", f"G{sym}", columns=["Open"]))
    assert sorted(star.keys()) == [f"{s}/1Min/G{sym}" for s in syms[:2]]


def test_multi_symbol_differing_schemas(client: pymkts.Client, sym: str) -> None:
    client.write(bars(["2024-01-02"], dtype=[("Epoch", "i8"), ("Bid", "f4"), ("Ask", "f4")]), f"{sym}A/1Min/Q")
    client.write(bars(["2024-01-02"], dtype=[("Epoch", "i8"), ("Ask", "f4")]), f"{sym}B/1Min/Q")
    with pytest.raises(Exception, match="symbols in a query must have the same data type"):
        client.query(pymkts.Params([f"{sym}A", f"{sym}B"], "1Min", "Q"))
    reply = client.query(pymkts.Params([f"{sym}A", f"{sym}B"], "1Min", "Q", columns=["Ask"]))
    assert sorted(reply.keys()) == [f"{sym}A/1Min/Q", f"{sym}B/1Min/Q"]


def test_empty_range_and_missing_symbol(client: pymkts.Client, sym: str) -> None:
    client.write(bars(["2024-01-02 00:00"]), f"{sym}/1Min/OHLCV")
    windows = ({"start": "2030-01-01"}, {"end": "2000-01-01"}, {"start": "2024-01-02 00:01", "end": "2024-01-02 00:05"})
    for kw in windows:
        df = client.query(pymkts.Params(sym, "1Min", "OHLCV", **kw)).first().df()
        assert df.empty
        assert list(df.columns) == ["Open", "High", "Low", "Close", "Volume"]
    with pytest.raises(Exception, match="no files returned from query parse"):
        client.query(pymkts.Params(f"{sym}NOPE", "1Min", "OHLCV"))
    with pytest.raises(Exception, match="no files returned from query parse"):
        client.query([pymkts.Params(sym, "1Min", "OHLCV"), pymkts.Params(f"{sym}NOPE", "1Min", "OHLCV")])


def test_list_symbols_both_formats(client: pymkts.Client, sym: str) -> None:
    client.write(bars(["2024-01-02"]), f"{sym}/1Min/OHLCV")
    client.write(bars(["2024-01-02"]), f"{sym}/1H/OHLCV")
    assert sym in client.list_symbols()
    assert list(client.list_symbols()).count(sym) == 1  # (gRPC: pymarketstore returns protobuf's list)
    tbks = client.list_symbols(pymkts.ListSymbolsFormat.TBK)
    assert {f"{sym}/1Min/OHLCV", f"{sym}/1H/OHLCV"} <= set(tbks)


def test_list_symbols_empty_db(server_factory, transport: str) -> None:
    server = server_factory()
    client = mkts_client(server, transport)
    assert list(client.list_symbols()) == []
    assert list(client.list_symbols(pymkts.ListSymbolsFormat.TBK)) == []


@pytest.mark.parametrize("wire", ["i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f4", "f8"])
def test_create_every_type_then_write_and_read(client: pymkts.Client, sym: str, wire: str) -> None:
    tbk = f"{sym}/1Min/T{wire}"
    reply = client.create(tbk, [("Epoch", "<i8"), ("Value", f"<{wire}")])
    assert replies(reply)[0]["error"] == ""
    assert sym in client.list_symbols()
    data = np.array([(ts("2024-01-02"), 7)], dtype=[("Epoch", "i8"), ("Value", wire)])
    assert replies(client.write(data, tbk)) is None
    arr = client.query(pymkts.Params(sym, "1Min", f"T{wire}")).first().array
    assert arr.dtype["Value"] == np.dtype(wire)
    assert arr["Value"].tolist() == [7]


def test_create_empty_columns_existing_and_variable(client: pymkts.Client, sym: str) -> None:
    assert replies(client.create(f"{sym}/1Min/EMPTY", []))[0]["error"] == ""
    again = replies(client.create(f"{sym}/1Min/EMPTY", []))[0]["error"]
    assert "already exists" in again
    var = client.create(f"{sym}/1Sec/TICK", [("Epoch", "i8"), ("Bid", "f4")], isvariablelength=True)
    assert replies(var)[0]["error"] == ""  # row_type "variable" is honoured (MarketStore ignored it)
    arr = client.query(pymkts.Params(sym, "1Sec", "TICK")).first().array
    assert arr.dtype.names == ("Epoch", "Bid", "Nanoseconds")
    bad = client.create(f"{sym}/1Min/BAD", [("Epoch", "i8"), ("Bid", "c16")])
    assert "unexpected data type" in replies(bad)[0]["error"]


def test_destroy(client: pymkts.Client, sym: str) -> None:
    client.write(bars(["2024-01-02"]), f"{sym}/1Min/OHLCV")
    assert replies(client.destroy(f"{sym}/1Min/OHLCV"))[0]["error"] == ""
    assert sym not in client.list_symbols()
    missing = replies(client.destroy(f"{sym}/1Min/OHLCV"))[0]["error"]
    assert missing  # idempotent-setup style: an error string, not an exception
    with pytest.raises(Exception, match="no files returned from query parse"):
        client.query(pymkts.Params(sym, "1Min", "OHLCV"))


def test_write_overwrites_and_coerces(client: pymkts.Client, sym: str) -> None:
    tbk = f"{sym}/1Min/OHLCV"
    client.write(bars(["2024-01-02 00:00", "2024-01-02 00:01"]), tbk)
    f8 = [(n, "f8" if t == "f4" else t) for n, t in OHLCV]
    assert replies(client.write(bars(["2024-01-02 00:01"], dtype=f8, start=50.25), tbk)) is None
    arr = client.query(pymkts.Params(sym, "1Min", "OHLCV")).first().array
    assert arr.dtype["Open"] == np.dtype("f4")
    assert arr["Open"].tolist() == [1.0, 50.25]


def test_write_errors_are_returned_not_raised(client: pymkts.Client, sym: str) -> None:
    tbk = f"{sym}/1Min/OHLCV"
    client.write(bars(["2024-01-02"]), tbk)
    other = client.write(bars(["2024-01-03"], dtype=[("Epoch", "i8"), ("Other", "f4")]), tbk)
    assert "unable to match data columns" in replies(other)[0]["error"]
    i4_epoch = client.write(bars(["2024-01-03"], dtype=[("Epoch", "i4"), ("Bid", "f4")]), f"{sym}/1Min/X")
    assert "unexpected data type for Epoch column" in replies(i4_epoch)[0]["error"]
    f8_nanos = client.write(bars(["2024-01-03"], dtype=[("Epoch", "i8"), ("Nanoseconds", "f8")]), f"{sym}/1Min/Y")
    assert "unexpected data type for Nanoseconds column" in replies(f8_nanos)[0]["error"]
    nanos = bars(["2024-01-03"] * 3, dtype=[("Epoch", "i8"), ("Nanoseconds", "i4"), ("Bid", "f4")])
    nanos["Nanoseconds"] = [5, 1_000_000_000, -1]
    var = client.write(nanos, f"{sym}/1Sec/TICK", isvariablelength=True)
    assert "column 'Nanoseconds', row 1: 1000000000 is not in [0, 999999999]" in replies(var)[0]["error"]
    assert client.query(pymkts.Params(sym, "1Min", "OHLCV")).first().array.shape == (1,)
    assert set(client.list_symbols(pymkts.ListSymbolsFormat.TBK)).isdisjoint(
        {f"{sym}/1Min/X", f"{sym}/1Min/Y", f"{sym}/1Sec/TICK"}
    )


@pytest.mark.parametrize("dtype", ["i2", "i4", "i8", "u2", "u4", "u8", "<i8"])
def test_tick_nanoseconds_of_any_integer_dtype(client: pymkts.Client, sym: str, dtype: str) -> None:
    """pandas >= 2 keeps int64 where pymarketstore-era code had int32: every integer type is taken."""
    arr = np.zeros(3, dtype=[("Epoch", "i8"), ("Nanoseconds", dtype), ("Bid", "f8")])
    arr["Epoch"], arr["Nanoseconds"], arr["Bid"] = ts("2024-01-03"), [7, 3, 9], [1.0, 2.0, 3.0]
    assert replies(client.write(arr, f"{sym}/1Sec/TICK", isvariablelength=True)) is None
    df = client.query(pymkts.Params(sym, "1Sec", "TICK")).first().df()
    assert df["Nanoseconds"].tolist() == [3, 7, 9]
    assert df["Bid"].tolist() == [2.0, 1.0, 3.0]


def test_tick_nanoseconds_from_a_pandas_frame(client: pymkts.Client, sym: str) -> None:
    """A DataFrame's records written through pymarketstore (int64 columns under pandas >= 2)."""
    df = pd.DataFrame({"Epoch": [ts("2024-01-03")] * 2, "Nanoseconds": [500, 100], "Bid": [1.5, 2.5]})
    assert df["Nanoseconds"].dtype == np.int64
    records = df.to_records(index=False)
    assert replies(client.write(records, f"{sym}/1Sec/TICK", isvariablelength=True)) is None
    assert client.query(pymkts.Params(sym, "1Sec", "TICK")).first().df()["Nanoseconds"].tolist() == [100, 500]


def test_string16_and_column_names(client: pymkts.Client, sym: str) -> None:
    dt = [("Epoch", "i8"), ("_ask", "f4"), ("L1-Ask", "f4"), ("l1_ask", "f4"), ("Name", "U16")]
    data = np.array([(ts("2024-01-02"), 1, 2, 3, "añ€😀"), (ts("2024-01-03"), 4, 5, 6, "x" * 16)], dtype=dt)
    assert replies(client.write(data, f"{sym}/1D/STR")) is None
    arr = client.query(pymkts.Params(sym, "1D", "STR")).first().array
    assert arr.dtype.names == ("Epoch", "_ask", "L1-Ask", "l1_ask", "Name")
    assert arr["Name"].tolist() == ["añ€😀", "x" * 16]


def test_functions_answer_not_supported(client: pymkts.Client, sym: str) -> None:
    client.write(bars(["2024-01-02"]), f"{sym}/1Min/OHLCV")
    with pytest.raises(Exception, match="unknown function 'adjust'"):
        client.query(pymkts.Params(sym, "1Min", "OHLCV", functions=["adjust('split')"]))


def test_reply_timezone_localises_dataframes(server_factory, transport: str) -> None:
    server = server_factory(config={"timezone": "America/New_York"})
    client = mkts_client(server, transport)
    client.write(bars(["2024-01-02 14:30"]), "TZ/1Min/OHLCV")
    reply = client.query(pymkts.Params("TZ", "1Min", "OHLCV"))
    assert reply.timezone == "America/New_York"
    idx = reply.first().df().index
    assert str(idx.tz) == "America/New_York"
    assert idx[0].hour == 9
