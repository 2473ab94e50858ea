"""``start``/``end`` values: every accepted spelling means the same instant."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

import mktsframe
from mktsframe.times import to_ns

from .helpers import NS, ohlcv

T = pd.Timestamp("2024-03-05 14:30:00", tz="UTC")
T_NS = T.value
T_S = T_NS // NS


@pytest.mark.parametrize(
    "value",
    [
        "2024-03-05 14:30",
        "2024-03-05T14:30:00Z",
        "2024-03-05T09:30:00-05:00",
        "2024-03-05 14:30:00+00:00",
        dt.datetime(2024, 3, 5, 14, 30),
        dt.datetime(2024, 3, 5, 14, 30, tzinfo=dt.UTC),
        dt.datetime(2024, 3, 5, 15, 30, tzinfo=dt.timezone(dt.timedelta(hours=1))),
        pd.Timestamp("2024-03-05 14:30"),
        T,
        T.tz_convert("Asia/Tokyo"),
        np.datetime64("2024-03-05T14:30:00"),
        np.datetime64(T_NS, "ns"),
        T_S,
        np.int64(T_S),
        np.int32(T_S),
        float(T_S),
        T_NS,
        np.int64(T_NS),
    ],
    ids=repr,
)
def test_every_spelling_of_one_instant(value: object) -> None:
    assert to_ns(value) == T_NS


def test_dates_none_and_fractions() -> None:
    assert to_ns(None) is None
    assert to_ns(dt.date(2024, 3, 5)) == pd.Timestamp("2024-03-05", tz="UTC").value
    assert to_ns(1.5) == 1_500_000_000
    assert to_ns(-86400) == -86400 * NS  # before 1970
    assert to_ns(0) == 0
    assert to_ns("2024-03-05 14:30:00.123456789") == T_NS + 123_456_789


def test_zone_less_values_are_read_in_the_given_zone() -> None:
    assert to_ns("2024-03-05 09:30", tz="America/New_York") == T_NS
    assert to_ns(dt.datetime(2024, 3, 5, 9, 30), tz="America/New_York") == T_NS
    assert to_ns("2024-03-05T14:30Z", tz="America/New_York") == T_NS  # explicit zone wins


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (True, TypeError),
        (np.bool_(False), TypeError),
        (1_700_000_000_000, ValueError),  # milliseconds: ambiguous
        (1_700_000_000_000_000, ValueError),  # microseconds: ambiguous
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        ("not a time", ValueError),
        ("", ValueError),
        (pd.NaT, ValueError),
        (object(), ValueError),
    ],
    ids=repr,
)
def test_bad_times_are_refused_with_the_argument_name(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="start"):
        to_ns(value, name="start")


def test_queries_accept_every_spelling(db: mktsframe.Backend) -> None:
    ohlcv("2024-03-05 14:00", 60).to_mkts("T/1Min/OHLCV", backend=db)
    expected = mktsframe.read_mkts("T/1Min/OHLCV", start="2024-03-05 14:30", end="2024-03-05 14:35", backend=db)
    assert len(expected) == 6
    spellings = [
        (dt.datetime(2024, 3, 5, 14, 30), dt.datetime(2024, 3, 5, 14, 35)),
        (T, T + pd.Timedelta(minutes=5)),
        (T_S, T_S + 300),
        (float(T_S), float(T_S + 300)),
        (T_NS, T_NS + 300 * NS),
        (np.datetime64(T_NS, "ns"), np.datetime64(T_NS + 300 * NS, "ns")),
        ("2024-03-05T09:30-05:00", "2024-03-05T09:35-05:00"),
    ]
    for start, end in spellings:
        got = mktsframe.read_mkts("T/1Min/OHLCV", start=start, end=end, backend=db)
        pd.testing.assert_frame_equal(got, expected)
    assert db.delete("T/1Min/OHLCV", start=T_S, end=T_NS + 300 * NS) == 6
