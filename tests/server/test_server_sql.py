"""``is_sqlstatement`` queries from the unmodified pymarketstore client against a live server.

Mirrors MarketStore's SQL integration test (spec §12 item 19) with our deliberate fix: BETWEEN is
inclusive on both ends, as in standard SQL.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pymarketstore as pymkts
import pytest
from live_helpers import replies

pytestmark = [pytest.mark.server, pytest.mark.timeout(120)]

OHLCV = [("Epoch", "i8"), ("Open", "f4"), ("High", "f4"), ("Low", "f4"), ("Close", "f4"), ("Volume", "f8")]
START = pd.Timestamp("2000-01-05 12:00", tz="UTC")



@pytest.fixture
def minute_bars(client: pymkts.Client, sym: str) -> np.ndarray:
    """Two hours of 1Min bars from 2000-01-05 12:00 with Open = 10 + minute number."""
    arr = np.zeros(120, dtype=OHLCV)
    arr["Epoch"] = START.value // 10**9 + 60 * np.arange(120)
    arr["Open"] = 10 + np.arange(120)
    arr["High"] = arr["Open"] + 1
    arr["Low"] = arr["Open"] - 1
    arr["Close"] = arr["Open"] + 0.5
    arr["Volume"] = 1 + np.arange(120) % 7
    assert replies(client.write(arr, f"{sym}/1Min/OHLCV")) is None
    return arr


RANGE = "Epoch BETWEEN '2000-01-05-12:30' AND '2000-01-05-13:00'"


def test_select_range_comes_back_as_a_normal_query_result(client, sym, minute_bars) -> None:
    stmt = f"SELECT * FROM `{sym}/1Min/OHLCV` WHERE {RANGE};"
    reply = client.sql(stmt)
    ds = reply.first()
    assert ds.key == stmt.split(":")[0]  # MarketStore keys SQL results by the statement text
    assert ds.array.dtype == np.dtype(OHLCV)
    np.testing.assert_array_equal(ds.array, minute_bars[30:61])  # inclusive BETWEEN: 31 bars
    df = ds.df()
    assert df.index[0] == pd.Timestamp("2000-01-05 12:30", tz="UTC")
    assert df.index[-1] == pd.Timestamp("2000-01-05 13:00", tz="UTC")


def test_where_filters_limit_and_columns(client, sym, minute_bars) -> None:
    exclusive = client.sql(
        f'SELECT Open, Close FROM "{sym}/1Min/OHLCV" WHERE Epoch > \'2000-01-05-12:30\' '
        "AND Epoch < '2000-01-05-13:00' AND Open > 45.5 LIMIT 5"
    ).first().array
    assert exclusive.dtype.names == ("Epoch", "Open", "Close")
    assert exclusive["Open"].tolist() == [46, 47, 48, 49, 50]
    inverted = client.sql(f"SELECT * FROM `{sym}/1Min/OHLCV` WHERE Epoch > '2000-01-05-13:00' AND Epoch < '2000-01-05'")
    assert len(inverted.first().array) == 0


def test_aggregates_and_candles(client, sym, minute_bars) -> None:
    count = client.sql(f"SELECT count(*) FROM `{sym}/1Min/OHLCV` WHERE Epoch > '2000-01-05-12:30' "
                       "AND Epoch < '2000-01-05-13:00'").first().array
    assert count.dtype.names == ("Epoch", "Count")
    assert count["Count"].tolist() == [29]
    assert abs(int(count["Epoch"][0]) - pd.Timestamp.now("UTC").value // 10**9) < 120  # stamped now
    nested = client.sql(f"SELECT count(*) FROM (SELECT count(*) FROM `{sym}/1Min/OHLCV`)").first().array
    assert nested["Count"].tolist() == [1]
    ticks = client.sql(f"SELECT TickCandler('5Min', Open) FROM `{sym}/1Min/OHLCV` WHERE {RANGE}").first().df()
    assert len(ticks) == 7  # 12:30 .. 13:00 inclusive
    assert ticks["Open"].iloc[0] == 40
    assert ticks["High"].iloc[0] == 44
    candles = client.sql(
        f"SELECT candlecandler('1H', Open, High, Low, Close, Sum::Volume) FROM `{sym}/1Min/OHLCV`"
    ).first().array
    assert candles.dtype.names == ("Epoch", "Open", "High", "Low", "Close", "Volume_SUM")
    assert candles["Open"].tolist() == [10, 70]
    assert candles["High"].tolist() == [70, 130]
    assert candles["Volume_SUM"].tolist() == [minute_bars["Volume"][:60].sum(), minute_bars["Volume"][60:].sum()]


def test_insert_into_select_writes_the_rows(client, sym, minute_bars) -> None:
    client.create(f"{sym}/5Min/OHLCV", OHLCV)
    reply = client.sql(f"INSERT INTO `{sym}/5Min/OHLCV` SELECT * FROM `{sym}/1Min/OHLCV` WHERE {RANGE}").first()
    assert reply.array["Rows Written"].tolist() == [31]
    back = client.query(pymkts.Params(sym, "5Min", "OHLCV")).first().array
    # One bar per 5 minutes; the last row written into each bar wins.
    assert back["Open"].tolist() == [44, 49, 54, 59, 64, 69, 70]


def test_full_sql_through_duckdb(client, sym, minute_bars) -> None:
    client.write(minute_bars, f"{sym}B/1Min/OHLCV")
    arr = client.sql(
        f'SELECT a.Epoch, a.Close - b.Open AS spread, avg(a.Close) OVER (ORDER BY a.Epoch ROWS 1 PRECEDING) AS ma '
        f'FROM "{sym}/1Min/OHLCV" a JOIN "{sym}B/1Min/OHLCV" b ON a.Epoch = b.Epoch ORDER BY a.Epoch LIMIT 3'
    ).first().array
    assert arr.dtype.names == ("Epoch", "spread", "ma")
    assert arr["Epoch"].tolist() == minute_bars["Epoch"][:3].tolist()
    assert arr["spread"].tolist() == [0.5, 0.5, 0.5]
    assert arr["ma"].tolist() == [10.5, 11.0, 12.0]


def test_sub_second_times_keep_their_nanoseconds(client, sym) -> None:
    ticks = np.array(
        [(1_700_000_000, 5, 1.5), (1_700_000_000, 999_999_999, 2.5), (1_700_000_001, 0, 3.5)],
        dtype=[("Epoch", "i8"), ("Nanoseconds", "i4"), ("Price", "f8")],
    )
    client.write(ticks, f"{sym}/1Sec/TICK", isvariablelength=True)
    arr = client.sql(f"SELECT * FROM `{sym}/1Sec/TICK`").first().array
    assert arr.dtype.names == ("Epoch", "Price", "Nanoseconds")
    assert arr["Epoch"].tolist() == [1_700_000_000, 1_700_000_000, 1_700_000_001]
    assert arr["Nanoseconds"].tolist() == [5, 999_999_999, 0]
    duck = client.sql(f'SELECT Epoch, Price * 2 AS p2 FROM "{sym}/1Sec/TICK" ORDER BY Epoch DESC').first().array
    assert duck["Nanoseconds"].tolist() == [0, 999_999_999, 5]
    bars = client.sql(f"SELECT count(*) FROM `{sym}/1Sec/TICK`").first().array
    assert "Nanoseconds" not in bars.dtype.names  # whole seconds: the usual result


def test_sql_errors_reach_the_client(client, sym, minute_bars) -> None:
    with pytest.raises(Exception, match=r"line 1, column 14"):
        client.sql(f"SELECT * FRM `{sym}/1Min/OHLCV`")
    with pytest.raises(Exception, match="no files returned from query parse"):
        client.sql(f"SELECT * FROM `{sym}/1Min/NOPE`")
    with pytest.raises(Exception, match="unknown column 'Nope'"):
        client.sql(f"SELECT Nope FROM `{sym}/1Min/OHLCV`")
    with pytest.raises(Exception, match="file system operations are disabled"):
        client.sql("SELECT * FROM read_csv('/etc/hostname')")
