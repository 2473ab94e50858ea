"""``mktsframe.sql.execute``: MarketStore's SQL natively, full SQL through DuckDB, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mktsframe
from mktsframe.errors import BucketNotFoundError, FunctionError, InvalidKeyError, SQLError
from mktsframe.sql import execute
from mktsframe.sql.parse import epoch_literal_ns

START = pd.Timestamp("2000-01-05 12:00", tz="UTC")
RANGE = "Epoch BETWEEN '2000-01-05-12:30' AND '2000-01-05-13:00'"


@pytest.fixture
def bars(db):
    """Two hours of 1Min bars in AAPL and MSFT (MSFT = 2 x AAPL); Open = 10 + minute number."""
    idx = pd.date_range(START, periods=120, freq="1min", name="Epoch").as_unit("ns")
    n = np.arange(120)
    df = pd.DataFrame(
        {"Open": (10 + n).astype("f4"), "High": (11 + n).astype("f4"), "Low": (9 + n).astype("f4"),
         "Close": (10.5 + n).astype("f4"), "Volume": 1 + n % 7},
        index=idx,
    )  # fmt: skip
    mktsframe.write_mkts(df, "AAPL/1Min/OHLCV", backend=db)
    mktsframe.write_mkts(df * 2, "MSFT/1Min/OHLCV", backend=db)
    return df


def test_select_range_inclusive_between_and_exclusive_comparisons(db, bars) -> None:
    df = execute(f"SELECT * FROM `AAPL/1Min/OHLCV` WHERE {RANGE};", db)
    pd.testing.assert_frame_equal(df, bars.iloc[30:61], check_freq=False)
    strict = execute(
        "SELECT * FROM `AAPL/1Min/OHLCV` WHERE Epoch > '2000-01-05-12:30' AND Epoch < '2000-01-05-13:00'", db
    )
    assert len(strict) == 29
    assert execute(
        "SELECT * FROM `AAPL/1Min/OHLCV` WHERE Epoch > '2000-01-05-13:00' AND Epoch < '2000-01-05'", db
    ).empty


def test_columns_aliases_predicates_and_limit(db, bars) -> None:
    df = execute('select open, Close as c from "AAPL/1Min/OHLCV" where Open >= 100.5 and Volume = 3 limit 2', db)
    assert list(df.columns) == ["Open", "c"]
    expected = bars[(bars.Open >= 100.5) & (bars.Volume == 3)].iloc[:2]
    assert df["Open"].tolist() == expected["Open"].tolist()
    assert df.index.tolist() == expected.index.tolist()
    assert execute("SELECT * FROM `AAPL/1Min/OHLCV` LIMIT 3", db).index.tolist() == bars.index[:3].tolist()
    by_epoch = execute(f"SELECT Close FROM `AAPL/1Min/OHLCV` WHERE Epoch = {int(START.value // 10**9) + 60}", db)
    assert by_epoch["Close"].tolist() == [11.5]


def test_aggregates(db, bars) -> None:
    before = pd.Timestamp.now("UTC").floor("s")
    df = execute(f"SELECT count(*) FROM `AAPL/1Min/OHLCV` WHERE {RANGE}", db)
    assert df["Count"].tolist() == [31]
    assert df.index[0] >= before
    assert execute("select count(*) from (select count(*) from `AAPL/1Min/OHLCV`)", db)["Count"].tolist() == [1]
    agg = execute("SELECT avg(Open), min(Open), max(Open) AS top FROM `AAPL/1Min/OHLCV`", db)
    assert list(agg.columns) == ["Avg", "Min", "top"]
    assert agg.iloc[0].tolist() == [bars.Open.mean(), 10.0, 129.0]
    assert agg["Min"].dtype == np.float32
    empty = execute("SELECT count(*), avg(Open) FROM `AAPL/1Min/OHLCV` WHERE Epoch > '2030-01-01'", db)
    assert empty["Count"].tolist() == [0]
    assert np.isnan(empty["Avg"].iloc[0])
    with pytest.raises(SQLError, match="two results would be named 'Min'"):
        execute("SELECT min(Open), min(Close) FROM `AAPL/1Min/OHLCV`", db)


def test_candles_and_gaps(db, bars) -> None:
    c = execute(
        "SELECT candlecandler('1H', Open, High, Low, Close, Sum::Volume, Avg::Close) FROM `AAPL/1Min/OHLCV`", db
    )
    assert list(c.columns) == ["Open", "High", "Low", "Close", "Volume_SUM", "Close_AVG"]
    assert c.index.tolist() == [START, START + pd.Timedelta("1h")]
    assert c["Open"].tolist() == [10, 70]
    assert c["High"].tolist() == [70, 130]
    assert c["Low"].tolist() == [9, 69]
    assert c["Close"].tolist() == [69.5, 129.5]
    assert c["Volume_SUM"].tolist() == [bars.Volume[:60].sum(), bars.Volume[60:].sum()]
    assert c["Close_AVG"].tolist() == pytest.approx([bars.Close[:60].mean(), bars.Close[60:].mean()])
    # pymarketstore's documented form: a trailing positional column is summed.
    c2 = execute("SELECT candlecandler('1H', Open, High, Low, Close, Volume) FROM `AAPL/1Min/OHLCV`", db)
    assert c2["Volume_SUM"].tolist() == c["Volume_SUM"].tolist()
    t = execute(f"SELECT TickCandler('5Min', Open) FROM `AAPL/1Min/OHLCV` WHERE {RANGE}", db)
    assert len(t) == 7
    assert t.iloc[0].tolist() == [40, 44, 40, 44]
    db.delete("AAPL/1Min/OHLCV", start="2000-01-05 12:10", end="2000-01-05 12:19")
    g = execute("SELECT gap('5Min') FROM `AAPL/1Min/OHLCV`", db)
    assert g.index.tolist() == [pd.Timestamp("2000-01-05 12:09", tz="UTC")]
    assert g["Length"].tolist() == [660]
    assert g["End"].tolist() == [pd.Timestamp("2000-01-05 12:20", tz="UTC").value // 10**9]


@pytest.mark.parametrize(
    ("duration", "first"),
    [
        ("1D", "2000-01-05"),
        ("1W", "2000-01-03"),
        ("1M", "2000-01-01"),
        ("1Y", "2000-01-01"),
        ("30Min", "2000-01-05 12:00"),
    ],
)
def test_calendar_candle_windows(db, bars, duration, first) -> None:
    c = execute(f"SELECT candlecandler('{duration}', Open, High, Low, Close) FROM `AAPL/1Min/OHLCV`", db)
    assert c.index[0] == pd.Timestamp(first, tz="UTC")


def test_insert_into_select(db, bars) -> None:
    db.create("AAPL/5Min/OHLCV", [(c, str(bars[c].dtype.str[1:])) for c in bars.columns])
    out = execute(f"INSERT INTO `AAPL/5Min/OHLCV` SELECT * FROM `AAPL/1Min/OHLCV` WHERE {RANGE}", db)
    assert out["Rows Written"].tolist() == [31]
    back = mktsframe.read_mkts("AAPL/5Min/OHLCV", backend=db)
    assert back["Open"].tolist() == [44, 49, 54, 59, 64, 69, 70]  # last row of each 5Min bar wins
    db.create("X/1Min/C", [("Last", "f4")])
    execute("INSERT INTO `X/1Min/C` (Last) SELECT Close FROM `AAPL/1Min/OHLCV` LIMIT 2", db)
    assert mktsframe.read_mkts("X/1Min/C", backend=db)["Last"].tolist() == [10.5, 11.5]
    with pytest.raises(BucketNotFoundError):
        execute("INSERT INTO `NEW/1Min/OHLCV` SELECT * FROM `AAPL/1Min/OHLCV`", db)
    with pytest.raises(SQLError, match="names 2 columns but the SELECT returns 1"):
        execute("INSERT INTO `X/1Min/C` (Last, Other) SELECT Close FROM `AAPL/1Min/OHLCV`", db)


def test_duckdb_joins_windows_and_group_by(db, bars) -> None:
    df = execute(
        "SELECT a.Epoch, a.Close, b.Close AS msft, avg(a.Close) OVER (ORDER BY a.Epoch ROWS 2 PRECEDING) AS ma "
        'FROM "AAPL/1Min/OHLCV" a JOIN "MSFT/1Min/OHLCV" b ON a.Epoch = b.Epoch ORDER BY a.Epoch LIMIT 4',
        db,
    )
    assert df.index.tolist() == bars.index[:4].tolist()
    assert df["msft"].tolist() == [21, 23, 25, 27]
    assert df["ma"].tolist() == [10.5, 11.0, 11.5, 12.5]
    g = execute('SELECT Symbol, count(*) AS n, max(High) AS hi FROM "AAPL,MSFT/1Min/OHLCV" GROUP BY 1 ORDER BY 1', db)
    assert g.to_dict("list") == {"Symbol": ["AAPL", "MSFT"], "n": [120, 120], "hi": [130.0, 260.0]}
    ors = execute("SELECT Open FROM `AAPL/1Min/OHLCV` WHERE Open < 11 OR Open > 128", db)
    assert ors["Open"].tolist() == [10, 129]
    with pytest.raises(SQLError, match="beyond MarketStore's SQL"):
        execute("SELECT Open FROM `AAPL/1Min/OHLCV` WHERE Open < 11 OR Open > 128", db, engine="marketstore")
    same = execute(f"SELECT * FROM `AAPL/1Min/OHLCV` WHERE {RANGE}", db, engine="duckdb")
    pd.testing.assert_frame_equal(same, bars.iloc[30:61], check_freq=False)


class _Recording:
    """The real backend, remembering the ranges queried (to see the push-down)."""

    def __init__(self, db) -> None:
        self._db, self.ranges = db, []

    def __getattr__(self, name: str):
        return getattr(self._db, name)

    def query(self, key, start=None, end=None, **kw):
        self.ranges.append((key, start, end))
        return self._db.query(key, start=start, end=end, **kw)


def test_duckdb_reads_only_the_epoch_range_the_where_implies(db) -> None:
    idx = pd.date_range("2019-06-01", "2022-06-01", freq="1D", tz="UTC", name="Epoch").as_unit("ns")
    days = pd.DataFrame({"Close": np.arange(len(idx), dtype="f8")}, index=idx)
    mktsframe.write_mkts(days, "AAA/1D/OHLCV", backend=db)
    mktsframe.write_mkts(days * 2, "BBB/1D/OHLCV", backend=db)
    rec = _Recording(db)
    day = pd.Timedelta("1D")
    lo, hi = pd.Timestamp("2020-03-01", tz="UTC"), pd.Timestamp("2020-03-10", tz="UTC")

    sql = "SELECT * FROM `AAA/1D/OHLCV` WHERE Epoch >= '2020-03-01' AND Epoch < '2020-03-10'"
    got = execute(sql, rec, engine="duckdb")
    pd.testing.assert_frame_equal(got, days[lo : hi - day], check_freq=False)
    assert [(k, pd.Timestamp(s, tz="UTC"), pd.Timestamp(e, tz="UTC")) for k, s, e in rec.ranges] == [
        ("AAA/1D/OHLCV", lo - day, hi + day)
    ]

    rec.ranges.clear()  # a join: each side bounded by its own conditions; the result is unchanged
    got = execute(
        'SELECT a.Epoch, a.Close, b.Close AS b FROM "AAA/1D/OHLCV" a LEFT JOIN "BBB/1D/OHLCV" b '
        "ON a.Epoch = b.Epoch WHERE a.Epoch BETWEEN '2020-03-01' AND '2020-03-09' "
        "AND (b.Epoch <= '2020-03-05-00:00' OR b.Epoch IS NULL) ORDER BY a.Epoch",
        rec,
        engine="duckdb",
    )
    assert got["b"].tolist() == (days["Close"][lo : lo + 4 * day] * 2).tolist()  # b matched every day
    bounded = [(k, s is not None, e is not None) for k, s, e in rec.ranges]
    assert bounded == [("AAA/1D/OHLCV", True, True), ("BBB/1D/OHLCV", False, False)]

    rec.ranges.clear()  # OR at the top, a number: no push-down, still right
    sql = "SELECT count(*) AS n FROM `AAA/1D/OHLCV` WHERE Epoch >= '2022-05-31' OR Close < 2"
    got = execute(sql, rec, engine="duckdb")
    assert got["n"].tolist() == [4]
    assert [(s, e) for _, s, e in rec.ranges] == [(None, None)]


def test_duckdb_is_sandboxed(db, bars, tmp_path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    with pytest.raises(SQLError, match="disabled by configuration"):
        execute(f"SELECT * FROM read_csv('{secret}')", db)
    for stmt in (f"COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'", "SET enable_external_access = true", "ATTACH 'x.db'"):
        with pytest.raises(SQLError):
            execute(stmt, db)
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize(
    ("sql", "line", "col"),
    [
        ("SELECT Open Close High FROM `AAPL/1Min/OHLCV`", 1, 19),
        ("SELECT * FROM `AAPL/1Min/OHLCV` WHERE (Open > 1", 1, 47),
        ("SELECT *\nFROM `AAPL/1Min/OHLCV`\nWHERE Open >> > 2", 3, 15),
    ],
)
def test_syntax_errors_carry_their_position(db, bars, sql, line, col) -> None:
    with pytest.raises(SQLError) as info:
        execute(sql, db)
    assert (info.value.line, info.value.col) == (line, col)
    text = str(info.value)
    assert f"line {line}, column {col}" in text
    src, caret = text.splitlines()[-2:]
    assert src.strip() == sql.splitlines()[line - 1].strip()
    assert caret.index("^") == col + 1  # two spaces of indent, 1-based column


def test_other_errors(db, bars) -> None:
    with pytest.raises(InvalidKeyError):
        execute("select * from `fooble`", db)
    with pytest.raises(BucketNotFoundError, match="no files returned from query parse"):
        execute("select * from `NOPE/1Min/OHLCV`", db)
    with pytest.raises(SQLError, match="unknown column 'Nope'"):
        execute("select Nope from `AAPL/1Min/OHLCV`", db)
    with pytest.raises(SQLError, match="empty SQL statement"):
        execute("  ; ", db)
    with pytest.raises(SQLError, match=r"incomplete LIMIT \(expression missing\) at line 1, column 33"):
        execute("SELECT * FROM `AAPL/1Min/OHLCV` LIMIT", db)
    with pytest.raises(SQLError, match="expected one SQL statement"):
        execute("select 1; select 2", db)
    with pytest.raises(FunctionError, match="invalid candle duration '5Q'"):
        execute("select candlecandler('5Q', Open, High, Low, Close) from `AAPL/1Min/OHLCV`", db)


def test_epoch_literals() -> None:
    ns = pd.Timestamp("2006-01-02 15:04:05", tz="UTC").value
    assert epoch_literal_ns("2006-01-02-15:04:05") == ns
    assert epoch_literal_ns("2006-01-02-15:04:05 UTC") == ns
    assert epoch_literal_ns("2006-01-02-15:04:05.5") == ns + 500_000_000
    assert epoch_literal_ns("2006-01-02-15:04") == ns - 5 * 10**9
    assert epoch_literal_ns("2006-01-02T16:04:05+01:00") == ns
    assert epoch_literal_ns(ns // 10**9) == ns  # seconds
    assert epoch_literal_ns(ns) == ns  # nanoseconds
    with pytest.raises(SQLError, match="time zone 'MST'"):
        epoch_literal_ns("2006-01-02-15:04:05 MST")
