"""The local engine: storage semantics, queries, schemas, locking and concurrency (real files)."""

from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mktsframe.backend.base import Batch
from mktsframe.engine import Engine
from mktsframe.errors import (
    BucketExistsError,
    BucketNotFoundError,
    LockedError,
    MktsError,
    ReadOnlyError,
    SchemaMismatchError,
)

from .helpers import NS

log = logging.getLogger(__name__)


def ns(text: str) -> int:
    return pd.Timestamp(text, tz="UTC").value


def batch(times: list[str] | list[int], **cols: object) -> Batch:
    index = np.array([t if isinstance(t, int) else ns(t) for t in times], np.int64)
    if not cols:
        cols = {"x": np.arange(len(times), dtype="f8")}
    return Batch(index, {k: np.asarray(v) for k, v in cols.items()})


def times(b: Batch) -> list[str]:
    return [str(pd.Timestamp(int(t), tz="UTC"))[:19] for t in b.index]


def q(engine: Engine, key: str, **kw: object) -> Batch:
    (got,) = engine.query(key, **kw).values()  # type: ignore[arg-type]
    return got


# -- calendar: year boundaries, leap years, 1 January ------------------------------------------


def test_bars_either_side_of_new_year(engine: Engine) -> None:
    engine.write("Y/1Min/T", batch(["2023-12-31 23:59", "2024-01-01 00:00"], x=[1.0, 2.0]))
    got = q(engine, "Y/1Min/T")
    assert times(got) == ["2023-12-31 23:59:00", "2024-01-01 00:00:00"]
    assert got.columns["x"].tolist() == [1.0, 2.0]
    assert engine.info("Y/1Min/T").years == (2023, 2024)
    assert sorted(p.name for p in (engine.root / "Y" / "1Min" / "T").glob("*.bin")) == ["2023.bin", "2024.bin"]
    assert times(q(engine, "Y/1Min/T", end=ns("2023-12-31 23:59:59"))) == ["2023-12-31 23:59:00"]
    assert times(q(engine, "Y/1Min/T", start=ns("2024-01-01 00:00"))) == ["2024-01-01 00:00:00"]
    # A bound inside a bar selects that bar.
    assert len(q(engine, "Y/1Min/T", start=ns("2023-12-31 23:59:59"))) == 2
    assert len(q(engine, "Y/1Min/T", start=ns("2023-12-31 23:59:59"), end=ns("2023-12-31 23:59:59.9"))) == 1
    assert times(q(engine, "Y/1Min/T", limit=1)) == ["2024-01-01 00:00:00"]
    assert times(q(engine, "Y/1Min/T", limit=1, limit_from_start=True)) == ["2023-12-31 23:59:00"]


@pytest.mark.parametrize("year", [2018, 2024, 1970, 2100])
def test_daily_bar_on_first_of_january(engine: Engine, year: int) -> None:
    # MarketStore #109: a 1D bar for 1 January could not be stored.
    days = [f"{year}-01-01", f"{year}-01-02", f"{year}-12-31", f"{year + 1}-01-01"]
    engine.write("D/1D/OHLCV", batch(days, Close=[1.0, 2.0, 3.0, 4.0]))
    got = q(engine, "D/1D/OHLCV")
    assert times(got) == [f"{d} 00:00:00" for d in days]
    assert got.columns["Close"].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert times(q(engine, "D/1D/OHLCV", start=ns(f"{year}-01-01"), end=ns(f"{year}-01-01"))) == [days[0] + " 00:00:00"]
    info = engine.info("D/1D/OHLCV")
    assert info.first == ns(days[0])
    assert info.last == ns(days[-1])
    assert info.rows == 4


def test_leap_years(engine: Engine) -> None:
    stamps = ["2024-02-28 23:00", "2024-02-29 00:00", "2024-02-29 23:00", "2024-03-01 00:00", "2024-12-31 23:00",
              "2000-02-29 12:00", "2100-02-28 12:00", "2100-03-01 12:00"]  # fmt: skip
    engine.write("L/1H/T", batch(stamps))
    assert times(q(engine, "L/1H/T")) == sorted(f"{s}:00" for s in stamps)
    engine.write("L/1D/T", batch(["2024-12-31", "2023-12-31", "2024-02-29"]))
    assert times(q(engine, "L/1D/T")) == ["2023-12-31 00:00:00", "2024-02-29 00:00:00", "2024-12-31 00:00:00"]
    engine.write("L/1Min/T", batch(["2024-12-31 23:59", "2024-02-29 23:59"]))
    assert times(q(engine, "L/1Min/T")) == ["2024-02-29 23:59:00", "2024-12-31 23:59:00"]
    with pytest.raises(ValueError, match="day is out of range"):
        pd.Timestamp("2100-02-29")  # sanity: 2100 is not a leap year, and the engine agrees:
    engine.write("L/1D/T", batch(["2100-12-31"]))
    assert engine.info("L/1D/T").last == ns("2100-12-31")


def test_before_1970(engine: Engine) -> None:
    stamps = ["1969-12-31 23:59", "1970-01-01 00:00", "1960-06-15 12:34", "1900-01-01 00:00"]
    engine.write("P/1Min/T", batch(stamps, x=[1.0, 2.0, 3.0, 4.0]))
    got = q(engine, "P/1Min/T")
    assert times(got) == ["1900-01-01 00:00:00", "1960-06-15 12:34:00", "1969-12-31 23:59:00", "1970-01-01 00:00:00"]
    assert got.columns["x"].tolist() == [4.0, 3.0, 1.0, 2.0]
    engine.write("P/1Min/T", batch([ns("1969-12-31 23:59:59")], x=[9.0]))  # floors to 23:59, not 1970
    got = q(engine, "P/1Min/T", start=ns("1969-12-31 23:59"), end=ns("1969-12-31 23:59"))
    assert got.columns["x"].tolist() == [9.0]
    assert engine.delete("P/1Min/T", end=ns("1969-12-31 23:59")) == 3


def test_multi_year_and_out_of_order_writes(engine: Engine) -> None:
    days = pd.date_range("2019-11-01", "2025-02-01", freq="7D", tz="UTC").as_unit("ns")
    order = np.random.default_rng(1).permutation(len(days))
    values = np.arange(len(days), dtype="f8")
    engine.write("M/1D/T", Batch(days.asi8[order].astype(np.int64), {"x": values[order]}))
    got = q(engine, "M/1D/T")
    np.testing.assert_array_equal(got.index, days.asi8)
    np.testing.assert_array_equal(got.columns["x"], values)
    assert engine.info("M/1D/T").years == tuple(range(2019, 2026))
    # Out-of-order batches: a later write into an earlier year, then a row in between.
    engine.write("M/1D/T", batch(["2018-05-05"], x=[-1.0]))
    engine.write("M/1D/T", batch(["2022-01-02"], x=[-2.0]))
    got = q(engine, "M/1D/T")
    assert np.all(np.diff(got.index) > 0)
    assert times(got)[0] == "2018-05-05 00:00:00"
    assert len(got) == len(days) + 2


def test_overwrite_is_last_write_wins(engine: Engine) -> None:
    engine.write("O/1Min/T", batch(["2024-01-02 10:00", "2024-01-02 10:01"], x=[1.0, 2.0]))
    engine.write("O/1Min/T", batch(["2024-01-02 10:01"], x=[20.0]))
    assert q(engine, "O/1Min/T").columns["x"].tolist() == [1.0, 20.0]
    # Within one write the last row for a bar wins, whatever the order.
    engine.write(
        "O/1Min/T",
        batch(["2024-01-02 10:05", "2024-01-02 10:00", "2024-01-02 10:05", "2024-01-02 10:00"], x=[5.0, 6.0, 7.0, 8.0]),
    )
    got = q(engine, "O/1Min/T")
    assert times(got) == ["2024-01-02 10:00:00", "2024-01-02 10:01:00", "2024-01-02 10:05:00"]
    assert got.columns["x"].tolist() == [8.0, 20.0, 7.0]
    assert engine.info("O/1Min/T").rows == 3


def test_sub_bar_timestamps_are_floored_to_the_bar_start(engine: Engine) -> None:
    stamps = [ns("2024-01-02 12:00:30"), ns("2024-01-02 12:01:59.999999999"), ns("2024-01-02 12:02:00") + 1]
    engine.write("F/1Min/T", Batch(np.array(stamps, np.int64), {"x": np.array([1.0, 2.0, 3.0])}))
    assert times(q(engine, "F/1Min/T")) == ["2024-01-02 12:00:00", "2024-01-02 12:01:00", "2024-01-02 12:02:00"]
    # Two timestamps inside one bar in one write: the later row wins.
    engine.write("F/1H/T", batch([ns("2024-01-02 12:10"), ns("2024-01-02 12:50"), ns("2024-01-02 12:05")], x=[1, 2, 3]))
    got = q(engine, "F/1H/T")
    assert times(got) == ["2024-01-02 12:00:00"]
    assert got.columns["x"].tolist() == [3]
    engine.write("F/1D/T", batch([ns("2024-05-05 23:59:59.999999999")], x=[1.0]))
    assert times(q(engine, "F/1D/T")) == ["2024-05-05 00:00:00"]


# -- queries: bounds, limits, empties ----------------------------------------------------------


@pytest.fixture
def four_bars(engine: Engine) -> Engine:
    """Spec §6.1: 1Sec bars at 00:00, 01:00, 02:00, 03:00."""
    engine.write("G/1Sec/T", batch(["2024-01-01 00:00", "2024-01-01 01:00", "2024-01-01 02:00", "2024-01-01 03:00"]))
    return engine


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"start": "01:30"}, ["02:00", "03:00"]),
        ({"end": "01:30"}, ["00:00", "01:00"]),
        ({"start": "01:00", "end": "02:00"}, ["01:00", "02:00"]),
        ({"limit": 2}, ["02:00", "03:00"]),
        ({"limit": 2, "limit_from_start": True}, ["00:00", "01:00"]),
        ({"start": "01:00", "end": "03:00", "limit": 2, "limit_from_start": True}, ["01:00", "02:00"]),
        ({"start": "01:00", "end": "03:00", "limit": 2}, ["02:00", "03:00"]),
        ({"end": "02:30", "limit": 1}, ["02:00"]),
        ({"start": "00:30", "limit": 1, "limit_from_start": True}, ["01:00"]),
        ({"limit": 1}, ["03:00"]),
        ({"limit": 1, "limit_from_start": True}, ["00:00"]),
        ({"limit": 0}, []),
        ({"limit": 0, "limit_from_start": True}, []),
        ({"limit": 10}, ["00:00", "01:00", "02:00", "03:00"]),
        ({"limit": 10, "limit_from_start": True}, ["00:00", "01:00", "02:00", "03:00"]),
        ({"start": "03:00", "end": "03:00"}, ["03:00"]),
        ({"start": "03:00:00.5", "end": "03:00:00.7"}, ["03:00"]),  # inside the 1Sec bar: that bar
        ({"start": "02:00:01", "end": "02:59:59"}, []),
        ({"start": "03:00", "end": "01:00"}, []),
        ({"start": "04:00"}, []),
        ({"end": "2023-12-31 23:59"}, []),
        ({"start": "04:00", "limit": 3}, []),
    ],
)
def test_spec_range_and_limit_behaviour(four_bars: Engine, kw: dict[str, object], expected: list[str]) -> None:
    args = dict(kw)
    for bound in ("start", "end"):
        if bound in args:
            text = str(args[bound])
            args[bound] = ns(text if text.startswith("20") else f"2024-01-01 {text}")
    got = q(four_bars, "G/1Sec/T", **args)
    assert [t[11:16] for t in times(got)] == expected
    assert set(got.columns) == {"x"}
    assert got.columns["x"].dtype == np.float64


def test_inclusive_bounds_at_bar_granularity(engine: Engine) -> None:
    engine.write("H/1H/T", batch([f"2024-01-02 {h:02d}:00" for h in range(24)]))
    got = q(engine, "H/1H/T", start=ns("2024-01-02 10:15"), end=ns("2024-01-02 12:59:59"))
    assert [t[11:13] for t in times(got)] == ["10", "11", "12"]
    got = q(engine, "H/1H/T", start=ns("2024-01-02 10:00") - 1, end=ns("2024-01-02 11:00"))
    assert [t[11:13] for t in times(got)] == ["09", "10", "11"]


@pytest.mark.parametrize("tf", ["1Sec", "1Min", "1D"])
def test_limits_across_year_files(engine: Engine, tf: str) -> None:
    key = f"Z/{tf}/T"
    engine.write(key, batch(["2017-01-01", "2018-01-01"], x=[17.0, 18.0]))
    assert q(engine, key, limit=1).columns["x"].tolist() == [18.0]
    assert q(engine, key, limit=1, limit_from_start=True).columns["x"].tolist() == [17.0]
    for kw in ({"limit": 2}, {"limit": 2, "limit_from_start": True}, {"limit": 5}, {}):
        got = q(engine, key, **kw)
        assert got.columns["x"].tolist() == [17.0, 18.0]  # both, ascending, no duplicates
    assert q(engine, key, end=ns("2017-06-01"), limit=5).columns["x"].tolist() == [17.0]
    assert q(engine, key, start=ns("2017-06-01"), limit=5, limit_from_start=True).columns["x"].tolist() == [18.0]


def test_limit_spanning_many_year_files_with_gaps(engine: Engine) -> None:
    stamps = [f"{y}-{m:02d}-15 10:{mi:02d}" for y in (2015, 2017, 2020, 2021) for m in (1, 6, 12) for mi in (0, 7)]
    engine.write("K/1Min/T", batch(stamps, x=np.arange(len(stamps), dtype="f8")))
    for n in range(len(stamps) + 2):
        last = q(engine, "K/1Min/T", limit=n).columns["x"].tolist()
        assert last == (list(range(len(stamps)))[-n:] if n else [])
        first = q(engine, "K/1Min/T", limit=n, limit_from_start=True).columns["x"].tolist()
        assert first == list(range(len(stamps)))[:n]


@pytest.mark.parametrize("bad", [-1, 1.5, "3", None.__class__])
def test_bad_limits_are_refused(four_bars: Engine, bad: object) -> None:
    with pytest.raises(ValueError, match="limit"):
        q(four_bars, "G/1Sec/T", limit=bad)


def test_empty_windows_keep_the_schema(engine: Engine) -> None:
    cols = {"a": np.array([1], "i1"), "b": np.array([2], "u8"), "c": np.array(["x"], "U16"), "d": np.array([True])}
    engine.write("E/1Min/T", batch(["2024-06-01 10:00"], **cols))
    engine.create("E2/1Min/T", [("a", "f4")])
    for kw in (
        {"start": ns("2024-06-01 10:01")},  # after
        {"end": ns("2024-06-01 09:59")},  # before
        {"start": ns("2030-01-01"), "end": ns("2031-01-01")},  # another year, no file
        {"limit": 0},
    ):
        got = q(engine, "E/1Min/T", **kw)
        assert len(got) == 0
        assert got.index.dtype == np.int64
        assert {k: v.dtype.str for k, v in got.columns.items()} == {"a": "|i1", "b": "<u8", "c": "<U16", "d": "|b1"}
    got = q(engine, "E2/1Min/T")  # created, never written
    assert len(got) == 0
    assert got.columns["a"].dtype == np.float32


def test_missing_bucket_error_names_the_key(engine: Engine) -> None:
    engine.write("HAVE/1Min/T", batch(["2024-01-01"]))
    for call in (
        lambda: engine.query("NOPE/1Min/T"),
        lambda: engine.query("HAVE,NOPE/1Min/T"),
        lambda: engine.query("HAVE/1H/T"),
        lambda: engine.info("NOPE/1Min/T"),
        lambda: engine.delete("NOPE/1Min/T"),
        lambda: engine.destroy("NOPE/1Min/T"),
    ):
        with pytest.raises(BucketNotFoundError) as exc:
            call()
        assert "/T" in str(exc.value)
    with pytest.raises(BucketNotFoundError) as exc:
        engine.query("NOPE/1Min/T")
    assert "NOPE/1Min/T" in str(exc.value)
    assert "no files returned from query parse" in str(exc.value)
    with pytest.raises(BucketNotFoundError, match="no files returned from query parse"):
        engine.query("Q*/1Min/T")
    with pytest.raises(KeyError):  # also a KeyError, for dict-minded callers
        engine.query("NOPE/1Min/T")


def test_columns_projection(engine: Engine) -> None:
    engine.write("C/1Min/T", batch(["2024-01-01 00:00", "2024-01-01 00:01"], a=[1, 2], b=[3.0, 4.0], c=["p", "q"]))
    got = q(engine, "C/1Min/T", columns=["c", "a"])
    assert list(got.columns) == ["c", "a"]
    assert got.columns["c"].tolist() == ["p", "q"]
    assert list(q(engine, "C/1Min/T", columns=["Epoch", "b"]).columns) == ["b"]
    assert list(q(engine, "C/1Min/T", columns=[]).columns) == []
    assert len(q(engine, "C/1Min/T", columns=[])) == 2
    with pytest.raises(SchemaMismatchError, match="'zz'"):
        q(engine, "C/1Min/T", columns=["a", "zz"])


def test_multi_bucket_queries_in_the_order_named(engine: Engine) -> None:
    for sym in ("MSFT", "AAPL", "IBM"):
        engine.write(f"{sym}/1Min/OHLCV", batch(["2024-01-01 00:00"], x=[float(len(sym))]))
    assert list(engine.query("MSFT,AAPL/1Min/OHLCV")) == ["MSFT/1Min/OHLCV", "AAPL/1Min/OHLCV"]
    assert list(engine.query("*/1Min/OHLCV")) == ["AAPL/1Min/OHLCV", "IBM/1Min/OHLCV", "MSFT/1Min/OHLCV"]
    assert list(engine.query("A*,I?M/1Min/OHLCV")) == ["AAPL/1Min/OHLCV", "IBM/1Min/OHLCV"]
    assert list(engine.query("MSFT,AAPL,IBM/1Min/OHLCV")) == ["MSFT/1Min/OHLCV", "AAPL/1Min/OHLCV", "IBM/1Min/OHLCV"]


# -- a model-based check of writes, deletes and every query shape ------------------------------

_keys = itertools.count()
HOUR = 3600 * NS
T0 = ns("2023-11-01")
SPAN_HOURS = 24 * 520  # Nov 2023 .. Apr 2025: three year files

op = st.one_of(
    st.tuples(st.just("w"), st.lists(st.integers(0, SPAN_HOURS), min_size=1, max_size=30)),
    st.tuples(st.just("d"), st.tuples(st.none() | st.integers(0, SPAN_HOURS), st.none() | st.integers(0, SPAN_HOURS))),
)
query = st.tuples(
    st.none() | st.integers(-5, SPAN_HOURS + 5),
    st.none() | st.integers(-5, SPAN_HOURS + 5),
    st.none() | st.integers(0, 40),
    st.booleans(),
    st.integers(0, 59),  # minutes inside the bar for bounds: must not matter
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op, min_size=1, max_size=8), queries=st.lists(query, min_size=1, max_size=8))
def test_engine_matches_a_model(engine: Engine, ops: list, queries: list) -> None:
    key = f"MODEL{next(_keys)}/1H/T"
    model: dict[int, float] = {}
    step = 0
    for kind, arg in ops:
        step += 1
        if kind == "w":
            hours = np.array(arg, np.int64)
            values = np.arange(len(arg), dtype="f8") + step * 1000
            engine.write(key, Batch(T0 + hours * HOUR + 59 * 60 * NS, {"x": values}))  # inside the bar
            for h, v in zip(hours.tolist(), values.tolist(), strict=True):
                model[h] = v  # later rows win
        else:
            lo, hi = arg
            if not model and key not in engine.list_keys():
                continue
            removed = engine.delete(
                key, start=None if lo is None else T0 + lo * HOUR, end=None if hi is None else T0 + hi * HOUR + 1
            )
            gone = [h for h in model if (lo is None or h >= lo) and (hi is None or h <= hi)]
            assert removed == len(gone)
            for h in gone:
                del model[h]
    if key not in engine.list_keys():
        return
    for lo, hi, limit, from_start, minute in queries:
        got = q(
            engine,
            key,
            start=None if lo is None else T0 + lo * HOUR + minute * 60 * NS,
            end=None if hi is None else T0 + hi * HOUR + minute * 60 * NS,
            limit=limit,
            limit_from_start=from_start,
        )
        hours = sorted(h for h in model if (lo is None or h >= lo) and (hi is None or h <= hi))
        if limit is not None:
            hours = hours[:limit] if from_start else hours[max(0, len(hours) - limit) :]
        assert ((got.index - T0) // HOUR).tolist() == hours
        assert got.columns["x"].tolist() == [model[h] for h in hours]
    info = engine.info(key)
    assert info.rows == len(model)
    if model:
        assert info.first == T0 + min(model) * HOUR
        assert info.last == T0 + max(model) * HOUR


# -- deletes and destroys ----------------------------------------------------------------------


def test_delete_range_is_inclusive(engine: Engine) -> None:
    engine.write("R/1Min/T", batch([f"2024-01-02 10:{m:02d}" for m in range(10)]))
    assert engine.delete("R/1Min/T", start=ns("2024-01-02 10:02"), end=ns("2024-01-02 10:04")) == 3
    assert [t[14:16] for t in times(q(engine, "R/1Min/T"))] == ["00", "01", "05", "06", "07", "08", "09"]
    # Bounds inside bars select those bars.
    assert engine.delete("R/1Min/T", start=ns("2024-01-02 10:05:30"), end=ns("2024-01-02 10:06:01")) == 2
    assert engine.delete("R/1Min/T", start=ns("2024-01-02 10:05"), end=ns("2024-01-02 10:06")) == 0
    assert engine.delete("R/1Min/T", end=ns("2024-01-02 10:00")) == 1
    assert engine.delete("R/1Min/T", start=ns("2024-01-02 10:09")) == 1
    assert engine.delete("R/1Min/T", start=ns("2024-01-02 10:08"), end=ns("2024-01-02 10:01")) == 0  # inverted
    assert [t[14:16] for t in times(q(engine, "R/1Min/T"))] == ["01", "07", "08"]
    assert engine.delete("R/1Min/T") == 3
    assert len(q(engine, "R/1Min/T")) == 0
    assert "R/1Min/T" in engine.list_keys()  # delete keeps the bucket
    engine.write("R/1Min/T", batch(["2024-01-02 10:03"], x=[7.0]))  # and it can be written again
    assert q(engine, "R/1Min/T").columns["x"].tolist() == [7.0]


def test_delete_across_years(engine: Engine) -> None:
    engine.write("RY/1D/T", batch([f"{y}-{md}" for y in range(2020, 2025) for md in ("01-01", "06-30", "12-31")]))
    assert engine.delete("RY/1D/T", start=ns("2020-12-31"), end=ns("2023-01-01")) == 8
    assert [t[:10] for t in times(q(engine, "RY/1D/T"))] == [
        "2020-01-01", "2020-06-30", "2023-06-30", "2023-12-31", "2024-01-01", "2024-06-30", "2024-12-31",
    ]  # fmt: skip
    assert engine.info("RY/1D/T").rows == 7


def test_destroy_removes_the_bucket_and_empty_parents(engine: Engine) -> None:
    engine.write("X/1Min/A", batch(["2024-01-01"]))
    engine.write("X/1Min/B", batch(["2024-01-01"]))
    engine.write("X/1H/A", batch(["2024-01-01"]))
    engine.write("Y/1Min/A", batch(["2024-01-01"]))
    root = engine.root
    engine.destroy("X/1Min/A")
    assert not (root / "X" / "1Min" / "A").exists()
    assert (root / "X" / "1Min" / "B").is_dir()
    engine.destroy("X/1Min/B")
    assert not (root / "X" / "1Min").exists()
    assert (root / "X" / "1H").is_dir()
    engine.destroy("X/60Min/A")  # an alias of X/1H/A
    assert not (root / "X").exists()
    assert engine.list_keys() == ["Y/1Min/A"]
    assert engine.list_symbols() == ["Y"]
    with pytest.raises(BucketNotFoundError):
        engine.query("X/1Min/A")
    with pytest.raises(BucketNotFoundError):
        engine.destroy("X/1Min/A")
    assert sorted(os.listdir(root)) == [".mkts", "Y"]
    assert not any((root / ".mkts" / "trash").glob("*")) if (root / ".mkts" / "trash").exists() else True
    # The key can be reused with another schema.
    engine.write("X/1Min/A", batch(["2025-01-01"], s=["new"]))
    assert q(engine, "X/1Min/A").columns["s"].tolist() == ["new"]
    assert engine.info("X/1Min/A").years == (2025,)


# -- create, info and schemas ------------------------------------------------------------------


def test_create_and_info(engine: Engine) -> None:
    all_types = [("i1", "i1"), ("i2", "i2"), ("i4", "i4"), ("i8", "i8"), ("u1", "u1"), ("u2", "u2"), ("u4", "u4"),
                 ("u8", "u8"), ("f4", "f4"), ("f8", "f8"), ("s", "U16"), ("b", "bool")]  # fmt: skip
    engine.create("NEW/1Min/T", all_types)
    engine.create("NEW/1Min/T", all_types)  # same schema again: a no-op
    with pytest.raises(BucketExistsError, match="NEW/1Min/T"):
        engine.create("NEW/1Min/T", [("f4", "f4")])
    engine.create("EMPTY/1Min/T", [])  # an empty column list is allowed (MarketStore test_create)
    assert engine.list_symbols() == ["EMPTY", "NEW"]
    assert engine.list_keys() == ["EMPTY/1Min/T", "NEW/1Min/T"]
    info = engine.info("NEW/1Min/T")
    assert info.columns == tuple(all_types)
    assert info.rows == 0
    assert info.first is None
    assert info.years == ()
    assert (info.key, info.timeframe, info.timeframe_seconds, info.record_type) == ("NEW/1Min/T", "1Min", 60, "fixed")
    engine.write("EMPTY/1Min/T", Batch(np.array([ns("2024-01-01"), ns("2024-01-02")], np.int64), {}))
    got = q(engine, "EMPTY/1Min/T")
    assert times(got) == ["2024-01-01 00:00:00", "2024-01-02 00:00:00"]
    assert dict(got.columns) == {}
    engine.write("NEW/1Min/T", batch(["2023-05-01", "2024-05-01"], **{n: np.zeros(2, t) for n, t in all_types}))
    info = engine.info("NEW/1Min/T")
    assert info.rows == 2
    assert info.years == (2023, 2024)
    assert info.disk_bytes > 0
    assert (info.first, info.last) == (ns("2023-05-01"), ns("2024-05-01"))
    for bad in ([("Epoch", "i8")], [("a", "f16")], [("a", "f4"), ("a", "f4")]):
        with pytest.raises(SchemaMismatchError):
            engine.create("BAD/1Min/T", bad)
    assert "BAD" not in engine.list_symbols()


def test_schema_is_fixed_by_the_first_write(engine: Engine) -> None:
    key = "S/1Min/T"
    engine.write(key, batch(["2024-01-01 00:00"], p=np.array([1.5], "f4"), n=np.array([3], "i4")))
    before = q(engine, key)
    refused = [
        ({"p": np.array([1.5], "f4")}, "missing \\['n'\\]"),
        ({"p": np.array([1.5], "f4"), "n": np.array([3], "i4"), "z": np.array([1.0])}, "unexpected \\['z'\\]"),
        ({"p": np.array([1.5], "f4"), "n": np.array([3.0])}, "'n'"),  # float → int refused
        ({"p": np.array([1.5], "f4"), "n": np.array([2**40])}, "'n'.*out of range"),
        ({"p": np.array(["1.5"]), "n": np.array([3], "i4")}, "'p'"),
        ({"p": np.array([True]), "n": np.array([3], "i4")}, "'p'"),
    ]
    for cols, match in refused:
        with pytest.raises(SchemaMismatchError, match=match):
            engine.write(key, batch(["2024-01-01 00:01"], **cols))
    after = q(engine, key)  # nothing half-written
    np.testing.assert_array_equal(after.index, before.index)
    # Safe conversions: f8 → f4 rounds (MarketStore test_coerce_column), narrower ints widen, fitting ints narrow.
    engine.write(key, batch(["2024-01-01 00:02"], p=np.array([0.1]), n=np.array([7], "i1")))
    engine.write(key, batch(["2024-01-01 00:03"], p=np.array([2], "i8"), n=np.array([2**31 - 1], "i8")))
    got = q(engine, key)
    assert got.columns["p"].dtype == np.float32
    assert got.columns["n"].dtype == np.int32
    assert got.columns["p"].tolist() == [1.5, float(np.float32(0.1)), 2.0]
    assert got.columns["n"].tolist() == [3, 7, 2**31 - 1]
    assert engine.info(key).columns == (("p", "f4"), ("n", "i4"))


def test_malformed_batches(engine: Engine) -> None:
    with pytest.raises(TypeError):
        engine.write("B/1Min/T", {"x": [1]})  # type: ignore[arg-type]
    with pytest.raises(SchemaMismatchError, match="int64"):
        engine.write("B/1Min/T", Batch(np.array([1.0]), {"x": np.array([1.0])}))
    with pytest.raises(SchemaMismatchError, match="rows"):
        engine.write("B/1Min/T", Batch(np.array([0, 60 * NS], np.int64), {"x": np.array([1.0])}))
    with pytest.raises(SchemaMismatchError, match="dtype"):
        engine.write("B/1Min/T", Batch(np.array([0], np.int64), {"x": np.array([1 + 2j])}))
    with pytest.raises(SchemaMismatchError, match="reserved"):
        engine.write("B/1Min/T", Batch(np.array([0], np.int64), {"Epoch": np.array([1])}))
    engine.write("B/1Min/T", Batch(np.empty(0, np.int64), {"x": np.empty(0)}))  # empty: no bucket is created
    assert engine.list_keys() == []


# -- durability across reopen ------------------------------------------------------------------


@pytest.mark.parametrize("options", [{}, {"background_sync": True}, {"wal_bypass": True}])
def test_data_survives_close_and_reopen(tmp_root: Path, options: dict[str, bool]) -> None:
    with Engine(tmp_root, read_only=False, **options) as engine:
        engine.write("P/1Min/T", batch(["2024-01-01 00:00", "2025-01-01 00:00"], x=[1.0, 2.0]))
        engine.delete("P/1Min/T", start=ns("2025-01-01"))
        engine.write("Q/1Min/T", batch(["2024-01-01 00:00"]))
        engine.destroy("Q/1Min/T")
    with Engine(tmp_root, read_only=False) as engine:
        assert engine.recovery.records == 0
        assert engine.recovery.problems == []
        assert q(engine, "P/1Min/T").columns["x"].tolist() == [1.0]
        assert engine.list_keys() == ["P/1Min/T"]
    assert sorted(p.name for p in (tmp_root / ".mkts" / "wal").iterdir() if p.suffix == ".wal") == []


def test_closed_engine_refuses_work(tmp_root: Path) -> None:
    engine = Engine(tmp_root, read_only=False)
    engine.write("A/1Min/T", batch(["2024-01-01"]))
    engine.close()
    engine.close()  # idempotent
    with pytest.raises(MktsError, match="closed"):
        engine.write("A/1Min/T", batch(["2024-01-02"]))
    with pytest.raises(MktsError):
        engine.create("B/1Min/T", [("x", "f8")])
    with Engine(tmp_root, read_only=False) as again:  # the lock was released
        assert len(q(again, "A/1Min/T")) == 1


# -- read-only and locking ---------------------------------------------------------------------


def test_read_only_engine_refuses_writes(tmp_root: Path, open_engine: Callable[..., Engine]) -> None:
    with Engine(tmp_root, read_only=False) as w:
        w.write("A/1Min/T", batch(["2024-01-01"], x=[5.0]))
    ro = open_engine(read_only=True)
    assert ro.read_only
    for call in (
        lambda: ro.write("A/1Min/T", batch(["2024-01-02"])),
        lambda: ro.write("NEW/1Min/T", batch(["2024-01-02"])),
        lambda: ro.create("NEW/1Min/T", [("x", "f8")]),
        lambda: ro.delete("A/1Min/T"),
        lambda: ro.destroy("A/1Min/T"),
        lambda: ro.checkpoint(),
    ):
        with pytest.raises(ReadOnlyError, match="read-only"):
            call()
    assert q(ro, "A/1Min/T").columns["x"].tolist() == [5.0]
    assert ro.list_keys() == ["A/1Min/T"]
    assert ro.info("A/1Min/T").rows == 1
    assert not (tmp_root / "NEW").exists()


LOCK_CHILD = textwrap.dedent(
    """
    import sys, numpy as np
    from mktsframe.engine import Engine
    from mktsframe.backend.base import Batch
    from mktsframe.errors import LockedError
    root, mode = sys.argv[1], sys.argv[2]
    if mode == "writer":
        try:
            Engine(root, read_only=False)
        except LockedError as exc:
            print("LOCKED", exc)
        else:
            print("GOT LOCK")
    elif mode == "auto":
        e = Engine(root)
        (b,) = e.query("A/1Min/T").values()
        print("READ_ONLY" if e.read_only else "WRITABLE", b.columns["x"].tolist())
        e.close()
    elif mode == "reader":
        e = Engine(root, read_only=True)
        (b,) = e.query("A/1Min/T").values()
        print("ROWS", b.columns["x"].tolist())
        e.close()
    elif mode == "hold":
        e = Engine(root, read_only=False)
        e.write("A/1Min/T", Batch(np.array([0, 60 * 10**9], np.int64), {"x": np.array([1.0, 2.0])}))
        print("HOLDING", flush=True)
        sys.stdin.readline()
        e.write("A/1Min/T", Batch(np.array([120 * 10**9], np.int64), {"x": np.array([3.0])}))
        print("WROTE", flush=True)
        sys.stdin.readline()
        e.close()
    """
)


def _child(root: Path, mode: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", LOCK_CHILD, str(root), mode], capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout.strip()


def test_second_writer_process_is_locked_out_but_readers_share(engine: Engine) -> None:
    engine.write("A/1Min/T", batch([0, 60 * NS], x=[1.0, 2.0]))
    out = _child(engine.root, "writer")
    assert out.startswith("LOCKED")
    assert f"pid {os.getpid()}" in out
    assert str(engine.root) in out
    assert _child(engine.root, "auto") == "READ_ONLY [1.0, 2.0]"
    assert _child(engine.root, "reader") == "ROWS [1.0, 2.0]"
    engine.write("A/1Min/T", batch([120 * NS], x=[3.0]))
    assert _child(engine.root, "reader") == "ROWS [1.0, 2.0, 3.0]"  # a reader sees acknowledged writes


def test_lock_held_by_another_process(tmp_root: Path, open_engine: Callable[..., Engine]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", LOCK_CHILD, str(tmp_root), "hold"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdin is not None
        assert proc.stdout.readline().strip() == "HOLDING"
        with pytest.raises(LockedError, match=f"pid {proc.pid}"):
            Engine(tmp_root, read_only=False)
        auto = open_engine(read_only=None)
        assert auto.read_only
        assert q(auto, "A/1Min/T").columns["x"].tolist() == [1.0, 2.0]
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "WROTE"
        assert q(auto, "A/1Min/T").columns["x"].tolist() == [1.0, 2.0, 3.0]  # appends are visible
        with pytest.raises(ReadOnlyError):
            auto.write("A/1Min/T", batch([180 * NS]))
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with Engine(tmp_root, read_only=False) as engine:  # released on exit
        assert q(engine, "A/1Min/T").columns["x"].tolist() == [1.0, 2.0, 3.0]


# -- concurrency -------------------------------------------------------------------------------


def test_concurrent_writer_and_reader_threads(engine: Engine) -> None:
    """Writers on their own buckets and on one shared bucket, readers throughout: no torn rows."""
    n_writers, rounds, rows = 4, 40, 25
    errors: list[BaseException] = []
    stop = threading.Event()
    base = ns("2024-03-01")

    def make_rows(w: int, r: int) -> Batch:
        slot = np.arange(rows, dtype=np.int64) + (r % 5) * rows  # the shared bucket: overlapping slots
        return Batch(
            base + slot * 60 * NS,
            {"w": np.full(rows, w, "i8"), "r": np.full(rows, r, "i8"), "slot": slot, "chk": slot * 1000.0 + w * 10 + r},
        )

    def writer(w: int) -> None:
        try:
            for r in range(rounds):
                engine.write(
                    f"W{w}/1Min/T",
                    make_rows(w, r).__class__(
                        base + (np.arange(rows, dtype=np.int64) + r * rows) * 60 * NS,
                        {"v": np.arange(rows, dtype="f8") + r * rows},
                    ),
                )
                engine.write("SHARED/1Min/T", make_rows(w, r))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def check_shared(b: Batch) -> None:
        c = b.columns
        np.testing.assert_array_equal((b.index - base) // (60 * NS), c["slot"])
        np.testing.assert_array_equal(c["chk"], c["slot"] * 1000.0 + c["w"] * 10 + c["r"])

    def reader() -> None:
        try:
            while not stop.is_set():
                try:
                    got = engine.query("SHARED/1Min/T")
                except BucketNotFoundError:
                    continue
                check_shared(got["SHARED/1Min/T"])
                for w in range(n_writers):
                    try:
                        own = q(engine, f"W{w}/1Min/T")
                    except BucketNotFoundError:
                        continue
                    # Writes are applied whole: a reader sees a prefix of complete batches.
                    assert len(own) % rows == 0
                    np.testing.assert_array_equal(own.columns["v"], np.arange(len(own), dtype="f8"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(n_writers)]
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers + threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    stop.set()
    for t in readers:
        t.join(timeout=60)
    assert not errors, errors[0]
    for w in range(n_writers):
        assert q(engine, f"W{w}/1Min/T").columns["v"].tolist() == list(np.arange(rounds * rows, dtype="f8"))
    shared = q(engine, "SHARED/1Min/T")
    check_shared(shared)
    assert len(shared) == 5 * rows
    # Each slot holds one writer's last round for that slot (rounds r with r % 5 == block).
    for block in range(5):
        sl = shared.columns["r"][block * rows : (block + 1) * rows]
        assert set(sl.tolist()) <= {r for r in range(rounds) if r % 5 == block}
        assert len(set(shared.columns["w"][block * rows : (block + 1) * rows].tolist())) == 1  # one batch per block


def test_ten_thousand_buckets(open_engine: Callable[..., Engine], tmp_root: Path) -> None:
    """The catalog is read lazily from the tree: 10,000 buckets list and resolve quickly.

    The tree is laid out as the engine lays it out (one bucket made by the engine, its metadata
    re-keyed for the others) so the test measures listing, not 10,000 metadata fsyncs.
    """
    with open_engine() as maker:
        maker.create("S00000/1Min/OHLCV", [("Close", "f4")])
    template = json.loads((tmp_root / "S00000/1Min/OHLCV/bucket.json").read_text())
    for i in range(1, 10_000):
        directory = tmp_root / f"S{i:05d}/1Min/OHLCV"
        directory.mkdir(parents=True)
        (directory / "bucket.json").write_text(json.dumps({**template, "key": f"S{i:05d}/1Min/OHLCV"}))
    engine = open_engine()
    t0 = time.perf_counter()
    keys = engine.list_keys()
    listed = time.perf_counter() - t0
    t0 = time.perf_counter()
    symbols = engine.list_symbols()
    symbols_time = time.perf_counter() - t0
    log.warning("10,000 buckets: list_keys %.3fs, list_symbols %.3fs", listed, symbols_time)
    assert len(keys) == 10_000
    assert keys[0] == "S00000/1Min/OHLCV"
    assert keys[-1] == "S09999/1Min/OHLCV"
    assert len(symbols) == 10_000
    assert len(q(engine, "S09999/1Min/OHLCV")) == 0
    assert len(engine.query("S0000*/1Min/OHLCV")) == 10
    engine.write("S09999/1Min/OHLCV", batch(["2024-01-01"], Close=np.array([1.0], "f4")))
    assert q(engine, "S09999/1Min/OHLCV").columns["Close"].tolist() == [1.0]


def test_large_logs_checkpoint_early(open_engine: Callable[..., Engine]) -> None:
    """``wal_max_bytes`` bounds the log between checkpoints, so replay time stays bounded."""
    engine = open_engine(wal_max_bytes=100_000)
    for i in range(10):
        start = ns("2024-01-01") + i * 2 * 86_400 * NS
        engine.write("K/1Min/T", Batch(start + np.arange(2000, dtype=np.int64) * 60 * NS, {"A": np.arange(2000.0)}))
        assert engine._wal is not None
        assert engine._wal.bytes_since_checkpoint <= 100_000 + 20_000
    assert len(q(engine, "K/1Min/T")) == 20_000


def test_reader_engine_follows_destroy_and_recreate(open_engine: Callable[..., Engine]) -> None:
    """A read-only engine (another process, in practice) never serves a destroyed bucket's data."""
    writer = open_engine()
    reader = open_engine(read_only=True)
    writer.write("K/1Min/T", batch([0], x=[1.0]))
    assert q(reader, "K/1Min/T").columns["x"].tolist() == [1.0]
    writer.destroy("K/1Min/T")
    with pytest.raises(BucketNotFoundError):
        reader.query("K/1Min/T")
    writer.write("K/1Min/T", batch([0], x=[2.0]))
    assert q(reader, "K/1Min/T").columns["x"].tolist() == [2.0]
    # Destroyed and re-created between two reads: same schema, then another one.
    writer.destroy("K/1Min/T")
    writer.write("K/1Min/T", batch([60 * NS], x=[3.0]))
    got = q(reader, "K/1Min/T")
    assert got.columns["x"].tolist() == [3.0]
    assert got.index.tolist() == [60 * NS]
    writer.destroy("K/1Min/T")
    writer.write("K/1Min/T", batch([0], y=np.array([5], "i4")))
    assert dict(q(reader, "K/1Min/T").columns) == {"y": [5]}
    assert reader.info("K/1Min/T").columns == (("y", "i4"),)


def test_readers_racing_destroy_and_recreate_see_a_bucket_or_none(engine: Engine) -> None:
    stop = threading.Event()
    errors: list[BaseException] = []
    schemas = [{"x": np.array([1.0, 2.0])}, {"y": np.array([7, 8], "i4"), "z": np.array(["a", "b"], "U16")}]

    def churn() -> None:
        try:
            for i in range(150):
                engine.write("RACE/1Min/T", Batch(np.array([0, 60 * NS], np.int64), schemas[i % 2]))
                engine.destroy("RACE/1Min/T")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            stop.set()

    def read() -> None:
        try:
            while not stop.is_set():
                try:
                    got = q(engine, "RACE/1Min/T")
                    info = engine.info("RACE/1Min/T")
                except BucketNotFoundError:
                    continue
                assert len(got) in (0, 2)
                assert set(got.columns) in ({"x"}, {"y", "z"})
                assert info.rows in (0, 2)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=churn)] + [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, repr(errors[0])
