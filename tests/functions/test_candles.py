"""Candles on in-memory Batches, checked against pandas' resample and hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mktsframe.backend.base import Batch
from mktsframe.errors import FunctionError
from mktsframe.functions import apply_functions, candles, parse_window

NS = 1_000_000_000
T0 = pd.Timestamp("2024-01-01", tz="UTC").value  # a Monday
MIN = 60 * NS

# pandas offsets with the same window starts (left-closed, left-labelled) as ours
PANDAS_FREQ = {"5Min": "5min", "15Min": "15min", "1H": "1h", "4H": "4h", "1D": "1D", "1M": "MS", "3M": "QS-JAN",
               "1Y": "YS", "1W": "W-MON"}


def bars(index: np.ndarray, seed: int = 0, dtype: str = "f4") -> Batch:
    rng = np.random.default_rng(seed)
    n = index.shape[0]
    close = (100 + rng.standard_normal(n).cumsum()).astype(dtype)
    return Batch(
        np.asarray(index, np.int64),
        {"Open": close + 0.25, "High": close + 1, "Low": close - 1, "Close": close,
         "Volume": rng.integers(0, 1000, n).astype("f8")},
    )  # fmt: skip


def reference(batch: Batch, window: str) -> pd.DataFrame:
    """pandas' answer, with the empty windows dropped (we emit no candle for them)."""
    df = pd.DataFrame(dict(batch.columns), index=pd.DatetimeIndex(batch.index.view("M8[ns]"), tz="UTC"))
    kw = {"closed": "left", "label": "left"}
    r = df.resample(PANDAS_FREQ[window], **kw)
    out = r.agg({"Open": "first", "High": "max", "Low": "min", "Close": "last", "Volume": "sum"})
    return out[r.size() > 0]


def assert_matches(got: Batch, want: pd.DataFrame) -> None:
    np.testing.assert_array_equal(got.index, want.index.as_unit("ns").asi8)
    for col in want.columns:
        np.testing.assert_allclose(got.columns[col], want[col].to_numpy(), rtol=1e-6, err_msg=col)


@pytest.mark.parametrize("window", ["5Min", "15Min", "1H", "4H", "1D", "1W", "1M", "3M", "1Y"])
def test_continuous_minute_bars_match_pandas(window: str) -> None:
    # starts mid-window and ends mid-window, so the first and last candles are partial
    idx = T0 + 7 * MIN + np.arange(200_000, dtype=np.int64) * MIN
    b = bars(idx)
    got = candles(b, window)
    assert_matches(got, reference(b, window))
    assert got.columns["Open"].dtype == np.float32
    assert got.columns["Volume"].dtype == np.float64


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 60 * 24 * 90), min_size=0, max_size=400, unique=True),
    st.sampled_from(["5Min", "1H", "1D", "1W", "1M"]),
)
def test_bars_with_gaps_match_pandas(minutes: list[int], window: str) -> None:
    idx = T0 + np.sort(np.array(minutes, dtype=np.int64)) * MIN
    b = bars(idx, seed=len(minutes))
    got = candles(b, window)
    if len(minutes) == 0:
        assert len(got) == 0
        assert set(got.columns) == {"Open", "High", "Low", "Close", "Volume"}
        return
    assert_matches(got, reference(b, window))


def test_weeks_start_monday_and_months_on_the_first_utc() -> None:
    times = pd.to_datetime(["2024-01-07 23:59", "2024-01-08 00:00", "2024-02-29 23:00", "2024-03-01 00:00"], utc=True)
    b = Batch(times.as_unit("ns").asi8, {"Price": np.array([1.0, 2.0, 3.0, 4.0])})
    weeks = candles(b, "1W")
    assert list(pd.DatetimeIndex(weeks.index.view("M8[ns]"))) == [
        pd.Timestamp("2024-01-01"), pd.Timestamp("2024-01-08"), pd.Timestamp("2024-02-26")]
    months = candles(b, "1M")
    assert list(pd.DatetimeIndex(months.index.view("M8[ns]"))) == [
        pd.Timestamp("2024-01-01"), pd.Timestamp("2024-02-01"), pd.Timestamp("2024-03-01")]
    assert months.columns["Close"].tolist() == [2.0, 3.0, 4.0]
    quarters = candles(b, "3M")
    assert list(pd.DatetimeIndex(quarters.index.view("M8[ns]"))) == [pd.Timestamp("2024-01-01")]
    assert quarters.columns["Open"].tolist() == [1.0]
    assert quarters.columns["Close"].tolist() == [4.0]


def test_before_1970_floors_to_the_window_start() -> None:
    t = pd.Timestamp("1969-12-31 23:58:30", tz="UTC").value
    got = candles(Batch(np.array([t], np.int64), {"Price": np.array([5.0])}), "5Min")
    assert got.index.tolist() == [pd.Timestamp("1969-12-31 23:55", tz="UTC").value]
    month = candles(Batch(np.array([t], np.int64), {"Price": np.array([5.0])}), "1M")
    assert month.index.tolist() == [pd.Timestamp("1969-12-01", tz="UTC").value]


def test_ticks_with_duplicate_timestamps_keep_arrival_order() -> None:
    # ns-precision ticks, three at the same instant, out of order across windows
    t = T0 + np.array([5, 5, 5, 1, 61 * NS, 59 * NS + 999_999_999], dtype=np.int64)
    price = np.array([10.0, 12.0, 11.0, 9.0, 20.0, 8.0])
    size = np.array([1, 2, 3, 4, 5, 6], dtype=np.int32)
    got = candles(Batch(t, {"Price": price, "Size": size}), "1Min")
    assert got.index.tolist() == [T0, T0 + MIN]
    # sorted stably: 9.0 (t=1), then 10, 12, 11 (t=5, arrival order), then 8.0 (59.999999999 s)
    assert got.columns["Open"].tolist() == [9.0, 20.0]
    assert got.columns["Close"].tolist() == [8.0, 20.0]
    assert got.columns["High"].tolist() == [12.0, 20.0]
    assert got.columns["Low"].tolist() == [8.0, 20.0]
    assert got.columns["Volume"].tolist() == [16, 5]
    assert got.columns["Volume"].dtype == np.int64  # integer sizes widen, never overflow int32


def test_last_tick_of_equal_timestamps_is_the_close() -> None:
    t = np.full(4, T0 + 30 * NS, dtype=np.int64)
    got = candles(Batch(t, {"Price": np.array([1.0, 4.0, 2.0, 3.0])}), "1Min")
    assert (got.columns["Open"][0], got.columns["High"][0], got.columns["Low"][0], got.columns["Close"][0]) == (
        1.0, 4.0, 1.0, 3.0)


def test_nan_is_ignored_by_high_low_and_sums() -> None:
    idx = T0 + np.arange(4, dtype=np.int64) * MIN
    b = Batch(idx, {"Open": np.array([1, 2, 3, 4.0]), "High": np.array([np.nan, 5, 2, np.nan]),
                    "Low": np.array([np.nan, np.nan, np.nan, np.nan]), "Close": np.array([1, 2, 3, 4.0]),
                    "Volume": np.array([1, np.nan, 2, 3.0])})  # fmt: skip
    got = candles(b, "1H")
    assert got.columns["High"].tolist() == [5.0]
    assert np.isnan(got.columns["Low"][0])
    assert got.columns["Volume"].tolist() == [6.0]


def test_types_are_kept_and_other_columns_dropped_unless_named() -> None:
    idx = T0 + np.arange(10, dtype=np.int64) * MIN
    b = Batch(idx, {"Open": np.arange(10, dtype="i4"), "High": np.arange(10, dtype="i4"),
                    "Low": np.arange(10, dtype="i4"), "Close": np.arange(10, dtype="i4"),
                    "Volume": np.full(10, 2**31 - 1, dtype="i4"), "VWAP": np.linspace(1, 2, 10)})  # fmt: skip
    got = candles(b, "5Min")
    assert list(got.columns) == ["Open", "High", "Low", "Close", "Volume"]
    assert got.columns["Open"].dtype == np.int32
    assert got.columns["Volume"].tolist() == [5 * (2**31 - 1)] * 2
    got = candles(b, "5Min", agg={"VWAP": "mean", "Close": "max"})
    vwap = np.linspace(1, 2, 10)
    np.testing.assert_allclose(got.columns["VWAP"], [vwap[:5].mean(), vwap[5:].mean()])


def test_unsorted_input_is_sorted_first() -> None:
    idx = T0 + np.arange(100, dtype=np.int64) * MIN
    b = bars(idx)
    perm = np.random.default_rng(3).permutation(100)
    shuffled = Batch(idx[perm], {k: v[perm] for k, v in b.columns.items()})
    got, want = candles(shuffled, "15Min"), candles(b, "15Min")
    np.testing.assert_array_equal(got.index, want.index)
    for k in want.columns:
        np.testing.assert_array_equal(got.columns[k], want.columns[k])


def test_no_price_column_is_a_clear_error() -> None:
    with pytest.raises(FunctionError, match="no Open/High/Low/Close columns"):
        candles(Batch(np.array([T0]), {"Bid": np.array([1.0])}), "1Min")
    got = candles(Batch(np.array([T0]), {"Bid": np.array([1.0])}), "1Min", price="Bid")
    assert got.columns["Close"].tolist() == [1.0]


@pytest.mark.parametrize("text", ["5m", "0Min", "Min", "5 parsecs", "1T5", "", "5Fortnight"])
def test_bad_windows_are_refused(text: str) -> None:
    with pytest.raises(FunctionError, match="candle duration"):
        parse_window(text)


@pytest.mark.parametrize(("text", "name"), [("5Min", "5Min"), ("5T", "5Min"), ("1Hour", "1H"), ("60Min", "1H"),
                                            ("1Day", "1D"), ("2W", "2W"), ("1M", "1M"), ("5min", "5Min"),
                                            ("30Sec", "30Sec"), ("3Months", "3M"), ("1Y", "1Y")])
def test_window_spellings(text: str, name: str) -> None:
    assert parse_window(text).name == name


def test_candlecandler_names_and_types_follow_marketstore() -> None:
    idx = T0 + np.arange(10, dtype=np.int64) * MIN
    b = bars(idx)
    b.columns["Size"] = np.arange(10, dtype="i8")  # type: ignore[index]
    got = apply_functions(b, "candlecandler('5Min',Open,High,Low,Close,Sum::Volume,Avg::Size)")
    assert list(got.columns) == ["Open", "High", "Low", "Close", "Volume_SUM", "Size_AVG"]
    assert got.columns["Volume_SUM"].dtype == np.float64
    assert got.columns["Size_AVG"].tolist() == [2.0, 7.0]
    # a trailing positional column is summed (pymarketstore's documented form)
    again = apply_functions(b, "CandleCandler('5Min', Open, High, Low, Close, Volume)")
    np.testing.assert_array_equal(again.columns["Volume_SUM"], got.columns["Volume_SUM"])
    # prices mapped by name
    bid = apply_functions(b, "candlecandler('5Min', Open::Close, High::Close, Low::Close, Close::Close)")
    assert bid.columns["Open"].tolist() == b.columns["Close"][[0, 5]].tolist()


def test_tickcandler_averages_several_prices() -> None:
    t = T0 + np.array([0, 10, 70], dtype=np.int64) * NS
    b = Batch(t, {"Bid": np.array([1.0, 3.0, 5.0]), "Ask": np.array([2.0, 4.0, 6.0]),
                  "Size": np.array([1.0, 1.0, 2.0])})  # fmt: skip
    got = apply_functions(b, "tickcandler('1Min', Bid, Ask, Sum::Size)")
    assert got.columns["Open"].tolist() == [1.5, 5.5]
    assert got.columns["High"].tolist() == [3.5, 5.5]
    assert got.columns["Size_SUM"].tolist() == [2.0, 2.0]


def test_functions_chain_and_summaries() -> None:
    idx = T0 + np.array([0, 10, 30, 60], dtype=np.int64) * NS
    b = Batch(idx, {"Example": np.array([2.0, 4.0, 6.0, 8.0], dtype="f4")})
    assert apply_functions(b, "AVG (Example)").columns["Avg"].tolist() == [5.0]
    assert apply_functions(b, "max(Example)").columns["Max"].tolist() == [8.0]
    assert apply_functions(b, "MIN(Example)").columns["Min"].dtype == np.float32
    assert apply_functions(b, "count(*)").columns["Count"].tolist() == [4]
    for threshold, n in (("1Sec", 3), ("10Sec", 2), ("20Sec", 1), ("30Sec", 0)):
        assert len(apply_functions(b, f"GAP ('{threshold}')")) == n
    g = apply_functions(b, "gap('10Sec')")
    assert g.index.tolist() == [(T0 // NS + 10) * NS, (T0 // NS + 30) * NS]
    assert g.columns["End"].tolist() == [T0 // NS + 30, T0 // NS + 60]
    assert g.columns["Length"].tolist() == [20, 30]
    chained = apply_functions(b, ["tickcandler('20Sec', Example)", "count(*)"])
    assert chained.columns["Count"].tolist() == [3]


def test_gap_without_threshold_uses_z_score() -> None:
    secs = np.concatenate([np.arange(100) * 60, [100 * 60 + 3600], 100 * 60 + 3600 + np.arange(1, 50) * 60])
    got = apply_functions(Batch(T0 + secs.astype(np.int64) * NS, {}), "gap()")
    assert got.columns["Length"].tolist() == [3660]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("candlecandler(5Min, Open)", "needs exactly one quoted duration"),
        ("candlecandler('5Min', Open, Hi)", "no column 'Hi'"),
        ("candlecandler('5Min', Open, High, Low, Close, Median::Volume)", "unknown parameter Median::Volume"),
        ("candlecandler('5m')", "ambiguous"),
        ("tickcandler('1Min')", "needs a price column"),
        ("avg(*)", "takes exactly one column"),
        ("gap('1M')", "must be a fixed duration"),
        ("adjust('split')", "unknown function 'adjust'"),
        ("count(*", "missing"),
        ("count(*) extra", "unexpected text"),
        ("count((x))", "nested"),
        ("avg(,)", "empty argument"),
        ("avg('a'b)", "literal"), ("avg('a'b')", "closing quote"),
        ("avg(Sum::)", "Param::Column"),
        ("42", "expected name"),
    ],
)
def test_bad_calls_are_clear_errors(text: str, message: str) -> None:
    b = bars(T0 + np.arange(3, dtype=np.int64) * MIN)
    with pytest.raises(FunctionError, match=message):
        apply_functions(b, [text])


def test_empty_input_gives_empty_outputs() -> None:
    empty = bars(np.empty(0, np.int64))
    got = apply_functions(empty, "candlecandler('1H', Open, High, Low, Close, Sum::Volume)")
    assert len(got) == 0
    assert list(got.columns) == ["Open", "High", "Low", "Close", "Volume_SUM"]
    assert apply_functions(empty, "count(*)").columns["Count"].tolist() == [0]
    assert len(apply_functions(empty, "avg(Close)")) == 0
    assert len(apply_functions(empty, "gap('1Sec')")) == 0
