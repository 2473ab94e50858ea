"""Query ``functions`` through the unmodified pymarketstore client against a live server.

The data and expected values restate MarketStore's own integration tests (test_aggcandler,
test_basic_aggfunc; MarketStore spec §12 items 16-17) plus weekly/monthly candles (#200).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pymarketstore as pymkts
import pytest
from live_helpers import replies

pytestmark = [pytest.mark.server, pytest.mark.timeout(120)]

HOURLY = [("Epoch", "i8"), ("Open", "f4"), ("High", "f4"), ("Low", "f4"), ("Close", "f4"), ("Ask", "f4"),
          ("Volume", "i8")]  # fmt: skip


def ts(text: str) -> int:
    return pd.Timestamp(text, tz="UTC").value // 10**9



@pytest.fixture
def hourly(client: pymkts.Client, sym: str) -> str:
    arr = np.zeros(4, dtype=HOURLY)
    arr["Epoch"] = [ts(f"2024-01-02 0{h}:00") for h in range(4)]
    arr["Open"], arr["High"], arr["Low"] = [20, 40, 60, 80], [40, 80, 120, 160], [10, 20, 30, 40]
    arr["Close"], arr["Ask"], arr["Volume"] = [30, 60, 90, 120], [10, 30, 50, 70], [1, 2, 3, 4]
    assert replies(client.write(arr, f"{sym}/1H/OHLCV")) is None
    return sym


def test_candlecandler_and_tickcandler(client: pymkts.Client, hourly: str) -> None:
    def first(fn: str) -> pd.Series:
        df = client.query(pymkts.Params(hourly, "1H", "OHLCV", functions=[fn])).first().df()
        return df.iloc[0]

    c2 = first("candlecandler('2H',Open,High,Low,Close)")
    assert (c2.Open, c2.High, c2.Low, c2.Close) == (20, 80, 10, 60)
    c4 = first("candlecandler('4H',Open,High,Low,Close)")
    assert (c4.Open, c4.High, c4.Low, c4.Close) == (20, 160, 10, 120)
    t2 = first("tickcandler('2H', Ask)")
    assert (t2.Open, t2.High, t2.Low, t2.Close) == (10, 30, 10, 30)
    reply = client.query(pymkts.Params(hourly, "1H", "OHLCV", functions=[
        "candlecandler('2H',Open,High,Low,Close,Sum::Volume)"]))
    ds = reply.first()
    assert ds.key == f"{hourly}/1H/OHLCV"
    assert ds.array.dtype.names == ("Epoch", "Open", "High", "Low", "Close", "Volume_SUM")
    assert ds.array["Epoch"].tolist() == [ts("2024-01-02 00:00"), ts("2024-01-02 02:00")]
    assert ds.array["Volume_SUM"].tolist() == [3.0, 7.0]


def test_aggregates_apply_after_limit(client: pymkts.Client, sym: str) -> None:
    arr = np.zeros(4, dtype=[("Epoch", "i8"), ("Example", "f4")])
    t0 = ts("2024-01-02 00:00")
    arr["Epoch"] = [t0, t0 + 10, t0 + 30, t0 + 60]
    arr["Example"] = [2, 4, 6, 8]
    client.write(arr, f"{sym}/1Sec/ORDERS")

    def one(fn: str, **kw: object) -> np.ndarray:
        return client.query(pymkts.Params(sym, "1Sec", "ORDERS", functions=[fn], **kw)).first().array

    for limit, want in ((2, 3.0), (3, 4.0), (200, 5.0)):
        assert one("AVG(Example)", limit=limit, limit_from_start=True)["Avg"].tolist() == [want]
    assert one("AVG(Example)", limit=2)["Avg"].tolist() == [7.0]
    assert one("MAX(Example)", limit=3, limit_from_start=True)["Max"].tolist() == [6.0]
    assert one("MIN(Example)", limit=2)["Min"].tolist() == [6.0]
    assert one("COUNT(*)", limit=3)["Count"].tolist() == [3]
    for threshold, n in (("1Sec", 3), ("10Sec", 2), ("20Sec", 1), ("30Sec", 0)):
        assert len(one(f"GAP('{threshold}')")) == n
    gaps = one("GAP('10Sec')")
    assert gaps["Epoch"].tolist() == [t0 + 10, t0 + 30]
    assert gaps["End"].tolist() == [t0 + 30, t0 + 60]
    assert gaps["Length"].tolist() == [20, 30]


def test_weekly_and_monthly_candles_from_daily_bars(client: pymkts.Client, sym: str) -> None:
    days = pd.date_range("2024-01-01", "2024-03-31", freq="D", tz="UTC")  # 2024-01-01 is a Monday
    arr = np.zeros(len(days), dtype=[("Epoch", "i8"), ("Open", "f8"), ("High", "f8"), ("Low", "f8"),
                                     ("Close", "f8"), ("Volume", "f8")])  # fmt: skip
    arr["Epoch"] = days.as_unit("s").asi8
    price = np.arange(len(days), dtype="f8")
    arr["Open"], arr["High"], arr["Low"], arr["Close"], arr["Volume"] = price, price + 1, price - 1, price, 1.0
    client.write(arr, f"{sym}/1D/OHLCV")
    weekly = client.query(pymkts.Params(sym, "1D", "OHLCV", functions=[
        "candlecandler('1W',Open,High,Low,Close,Sum::Volume)"])).first().df()
    assert weekly.index[0] == pd.Timestamp("2024-01-01", tz="UTC")
    assert (weekly.index.day_of_week == 0).all()
    assert weekly["Volume_SUM"].iloc[0] == 7
    assert weekly["Close"].iloc[0] == 6
    assert weekly["High"].iloc[0] == 7
    assert weekly["Open"].dtype == np.float64  # prices keep their type (MarketStore rounded them to f4)
    monthly = client.query(pymkts.Params(sym, "1D", "OHLCV", functions=[
        "candlecandler('1M',Open,High,Low,Close,Sum::Volume)"])).first().df()
    assert list(monthly.index) == list(pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01"], utc=True))
    assert monthly["Volume_SUM"].tolist() == [31, 29, 31]
    assert monthly["Open"].tolist() == [0, 31, 60]


def test_functions_on_several_symbols_and_chains(client: pymkts.Client, hourly: str, sym: str) -> None:
    other = sym + "B"
    arr = np.zeros(2, dtype=HOURLY)
    arr["Epoch"] = [ts("2024-01-02 00:00"), ts("2024-01-02 05:00")]
    client.write(arr, f"{other}/1H/OHLCV")
    reply = client.query(pymkts.Params([hourly, other], "1H", "OHLCV", functions=[
        "candlecandler('4H',Open,High,Low,Close)", "count(*)"]))
    counts = {sym_: ds.array["Count"].tolist() for sym_, ds in reply.by_symbols().items()}
    assert counts == {hourly: [1], other: [2]}


def test_bad_functions_fail_the_query_clearly(client: pymkts.Client, hourly: str) -> None:
    for fn, msg in (("candlecandler('5m',Open,High,Low,Close)", "ambiguous"),
                    ("tickcandler('1H', Nope)", "no column 'Nope'"),
                    ("median(Close)", "unknown function 'median'")):
        with pytest.raises(Exception, match=msg):
            client.query(pymkts.Params(hourly, "1H", "OHLCV", functions=[fn]))
    # the data is untouched
    assert len(client.query(pymkts.Params(hourly, "1H", "OHLCV")).first().df()) == 4


# -- the same implementation from Python: read_mkts(timeframe=) over the local engine and over HTTP --
@pytest.fixture(params=["local", "http"])
def backend(request: pytest.FixtureRequest, tmp_path):
    import mktsframe

    target = tmp_path / "data" if request.param == "local" else request.getfixturevalue("live_server").url
    be = mktsframe.connect(target)
    yield be
    be.close()


def minute_bars(start: str, n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 + rng.standard_normal(n).cumsum()
    idx = pd.date_range(start, periods=n, freq="1min", tz="UTC").as_unit("ns")
    return pd.DataFrame({"Open": close + 0.1, "High": close + 1, "Low": close - 1, "Close": close,
                         "Volume": rng.integers(1, 100, n)}, index=idx)  # fmt: skip


def pandas_candles(df: pd.DataFrame, freq: str) -> pd.DataFrame:
    r = df.resample(freq, closed="left", label="left")
    out = r.agg({"Open": "first", "High": "max", "Low": "min", "Close": "last", "Volume": "sum"})
    return out[r.size() > 0]


def test_read_mkts_timeframe_aggregates_the_finest_bucket(backend, sym: str) -> None:
    from mktsframe.errors import BucketNotFoundError, FunctionError

    df = minute_bars("2024-01-02 09:30", 3 * 24 * 60)
    df.to_mkts(f"{sym}/1Min/OHLCV", backend=backend)
    # a coarser bucket holding different numbers must not be the source
    stale = pandas_candles(df, "1h")
    stale["Close"] = -1.0
    stale.to_mkts(f"{sym}/1H/OHLCV", backend=backend)
    got = pd.read_mkts(f"{sym}/1H/OHLCV", timeframe="4H", backend=backend)
    want = pandas_candles(df, "4h")
    np.testing.assert_array_equal(got.index.asi8, want.index.as_unit("ns").asi8)
    np.testing.assert_allclose(got[["Open", "High", "Low", "Close"]].to_numpy(), want[["Open", "High", "Low", "Close"]])
    assert got["Volume"].tolist() == want["Volume"].tolist()
    assert got.attrs["mkts_key"] == f"{sym}/4H/OHLCV"
    # bounds inside a candle select the whole candle; limit counts candles
    part = pd.read_mkts(f"{sym}/*/OHLCV", "2024-01-03 01:30", "2024-01-03 06:10", timeframe="4H", backend=backend)
    assert list(part.index) == list(pd.to_datetime(["2024-01-03 00:00", "2024-01-03 04:00"], utc=True))
    assert part["Volume"].iloc[0] == want.loc["2024-01-03 00:00", "Volume"]
    last2 = pd.read_mkts(f"{sym}/1Min/OHLCV", timeframe="1D", limit=2, backend=backend)
    assert list(last2.index) == list(pd.to_datetime(["2024-01-04", "2024-01-05"], utc=True))
    # no stored bucket fine enough: a clear error, not a silent substitute
    pandas_candles(df, "1h").to_mkts(f"{sym}H/1H/OHLCV", backend=backend)
    with pytest.raises(FunctionError, match=r"no stored timeframe divides 5Min \(stored: 1H\)"):
        pd.read_mkts(f"{sym}H/1H/OHLCV", timeframe="5Min", backend=backend)
    with pytest.raises(BucketNotFoundError):
        pd.read_mkts(f"{sym}NONE/1Min/OHLCV", timeframe="5Min", backend=backend)


def test_accessor_candles_equal_server_candles(client: pymkts.Client, sym: str) -> None:
    df = minute_bars("2024-03-01", 2000, seed=4).astype({"Volume": "f8"})
    arr = np.zeros(len(df), dtype=[("Epoch", "i8")] + [(c, "f8") for c in df.columns])
    arr["Epoch"] = df.index.as_unit("s").asi8
    for c in df.columns:
        arr[c] = df[c].to_numpy()
    client.write(arr, f"{sym}/1Min/OHLCV")
    server = client.query(pymkts.Params(sym, "1Min", "OHLCV", functions=[
        "candlecandler('15Min',Open,High,Low,Close,Sum::Volume)"])).first().df()
    local = df.mkts.candles("15Min")
    np.testing.assert_array_equal(server.index.as_unit("ns").asi8, local.index.asi8)
    np.testing.assert_array_equal(server[["Open", "High", "Low", "Close"]].to_numpy(),
                                  local[["Open", "High", "Low", "Close"]].to_numpy())
    np.testing.assert_array_equal(server["Volume_SUM"].to_numpy(), local["Volume"].to_numpy())


# -- ticks (variable-length buckets) end to end ------------------------------------------------
def random_ticks(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` trades over two hours at ns precision, 20% of them sharing a timestamp with the one before."""
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp("2024-03-01 10:00", tz="UTC").value
    ns = np.sort(t0 + rng.integers(0, 2 * 3600 * 10**9, n))
    dup = rng.random(n) < 0.2
    dup[0] = False
    ns[dup] = ns[np.flatnonzero(dup) - 1]
    ns = np.maximum.accumulate(ns)
    return pd.DataFrame({"Price": (100 + rng.standard_normal(n).cumsum()).astype("f8"),
                         "Size": rng.integers(1, 50, n).astype("i4")},
                        index=pd.DatetimeIndex(ns.view("M8[ns]"), tz="UTC"))  # fmt: skip


def tick_candles(ticks: pd.DataFrame, freq: str) -> pd.DataFrame:
    r = ticks.resample(freq, closed="left", label="left")
    out = pd.DataFrame({"Open": r["Price"].first(), "High": r["Price"].max(), "Low": r["Price"].min(),
                        "Close": r["Price"].last(), "Volume": r["Size"].sum()})  # fmt: skip
    return out[r.size() > 0]


def test_tickcandler_on_a_tick_bucket(client: pymkts.Client, sym: str) -> None:
    ticks = random_ticks(5000, seed=7)
    arr = np.zeros(len(ticks), dtype=[("Epoch", "i8"), ("Price", "f8"), ("Size", "i4"), ("Nanoseconds", "i4")])
    arr["Epoch"], arr["Nanoseconds"] = np.divmod(ticks.index.as_unit("ns").asi8, 10**9)
    arr["Price"], arr["Size"] = ticks["Price"].to_numpy(), ticks["Size"].to_numpy()
    assert replies(client.write(arr, f"{sym}/1Sec/TRADE", isvariablelength=True)) is None
    got = client.query(pymkts.Params(sym, "1Sec", "TRADE", functions=[
        "tickcandler('5Min', Price, Sum::Size)"])).first().df()
    want = tick_candles(ticks, "5min")
    assert list(got.columns) == ["Open", "High", "Low", "Close", "Size_SUM"]  # no Nanoseconds: candles are bars
    np.testing.assert_array_equal(got.index.as_unit("ns").asi8, want.index.as_unit("ns").asi8)
    np.testing.assert_array_equal(got[["Open", "High", "Low", "Close"]].to_numpy(),
                                  want[["Open", "High", "Low", "Close"]].to_numpy())
    assert got["Size_SUM"].tolist() == want["Volume"].astype(float).tolist()
    n = client.query(pymkts.Params(sym, "1Sec", "TRADE", functions=["count(*)"])).first().array["Count"]
    assert n.tolist() == [5000]


def test_read_mkts_candles_from_a_tick_bucket(backend, sym: str) -> None:
    ticks = random_ticks(3000, seed=8)
    mktsframe_key = f"{sym}/1Sec/TRADE"
    ticks.to_mkts(mktsframe_key, variable_length=True, backend=backend)
    want = tick_candles(ticks, "1min")
    got = pd.read_mkts(f"{sym}/*/TRADE", timeframe="1Min", backend=backend)
    np.testing.assert_array_equal(got.index.asi8, want.index.as_unit("ns").asi8)
    np.testing.assert_array_equal(got.to_numpy(np.float64), want.to_numpy(np.float64))
    stored = pd.read_mkts(mktsframe_key, backend=backend)
    assert stored.index.has_duplicates
    pd.testing.assert_frame_equal(stored.mkts.candles("1Min"), got, check_names=False, check_freq=False)


def test_query_of_an_unstored_timeframe_returns_candles(client: pymkts.Client, sym: str) -> None:
    """MarketStore answered 10Min with the 5Min bars and 4H with 2H bars; here they are aggregated."""
    df = minute_bars("2024-01-01", 20 * 24 * 60, seed=5).astype({"Volume": "f8"})
    arr = np.zeros(len(df), dtype=[("Epoch", "i8")] + [(c, "f8") for c in df.columns])
    arr["Epoch"] = df.index.as_unit("s").asi8
    for c in df.columns:
        arr[c] = df[c].to_numpy()
    client.write(arr, f"{sym}/1Min/OHLCV")
    for tf, freq in (("10Min", "10min"), ("4H", "4h"), ("1W", "W-MON"), ("1M", "MS")):
        got = client.query(pymkts.Params(sym, tf, "OHLCV")).first()
        assert got.key == f"{sym}/{tf}/OHLCV"
        want = pandas_candles(df, freq) if tf != "1W" else df.resample("W-MON", closed="left", label="left").agg(
            {"Open": "first", "High": "max", "Low": "min", "Close": "last", "Volume": "sum"})
        np.testing.assert_array_equal(got.df().index.as_unit("ns").asi8, want.index.as_unit("ns").asi8)
        np.testing.assert_allclose(got.df()[list(want.columns)].to_numpy(), want.to_numpy())
    last2 = client.query(pymkts.Params(sym, "1D", "OHLCV", limit=2, columns=["Close", "Nope"])).first().df()
    assert list(last2.columns) == ["Close"]
    assert list(last2.index) == list(pd.to_datetime(["2024-01-19", "2024-01-20"], utc=True))
    with_fn = client.query(pymkts.Params(sym, "4H", "OHLCV", functions=["count(*)"])).first().array
    assert with_fn["Count"].tolist() == [20 * 6]
    with pytest.raises(Exception, match="no files returned from query parse"):
        client.query(pymkts.Params(f"{sym}NOPE", "10Min", "OHLCV"))
    client.write(arr[:10], f"{sym}X/1H/OHLCV")
    with pytest.raises(Exception, match=r"no files returned from query parse.*no stored timeframe divides 5Min"):
        client.query(pymkts.Params(f"{sym}X", "5Min", "OHLCV"))
