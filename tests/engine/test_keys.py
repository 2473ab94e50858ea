"""Keys and timeframes: canonical names, and no key can reach outside the root."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mktsframe
from mktsframe.errors import InvalidKeyError
from mktsframe.keys import parse_key, parse_key_pattern, parse_timeframe


@pytest.mark.parametrize(
    ("text", "canonical", "seconds"),
    [
        ("1Sec", "1Sec", 1), ("1S", "1Sec", 1), ("30Sec", "30Sec", 30), ("60Sec", "1Min", 60),
        ("1Min", "1Min", 60), ("1T", "1Min", 60), ("5min", "5Min", 300), ("60Min", "1H", 3600),
        ("1H", "1H", 3600), ("1Hour", "1H", 3600), ("4H", "4H", 14400), ("24H", "1D", 86400),
        ("1D", "1D", 86400), ("1Day", "1D", 86400),
    ],
)  # fmt: skip
def test_timeframes_are_canonical(text: str, canonical: str, seconds: int) -> None:
    tf = parse_timeframe(text)
    assert (tf.name, tf.seconds) == (canonical, seconds)


@pytest.mark.parametrize("text", ["0H", "xyz", "1MIN2", "1Month", "1W", "1Y", "7Min", "2D", "", "-1Min", "1.5H"])
def test_bad_timeframes_are_rejected_with_a_reason(text: str) -> None:
    with pytest.raises(InvalidKeyError, match="timeframe"):
        parse_timeframe(text)


HOSTILE = [
    "../x/1Min/OHLCV",
    "a/1Min/..",
    "a/../1Min",
    "..",
    "a/1Min/b/c",
    "a/1Min",
    "/etc/passwd/1Min",
    "a\\..\\b/1Min/T",
    "a\x00b/1Min/T",
    "/1Min/T",
    "a//T",
    ".hidden/1Min/T",
    "a/1Min/.mkts",
    "x" * 200 + "/1Min/T",
    "a/1Min/T:Other/Category/Here",
    " a/1Min/T",
    "a\n/1Min/T",
]


@pytest.mark.parametrize("key", HOSTILE)
def test_hostile_keys_never_touch_the_filesystem(key: str, tmp_path: Path) -> None:
    root = tmp_path / "data"
    before = set(tmp_path.rglob("*"))
    with mktsframe.connect(root, read_only=False) as db:
        df = pd.DataFrame({"A": [1.0]}, index=pd.DatetimeIndex(["2024-01-01"], tz="UTC"))
        with pytest.raises(InvalidKeyError) as exc:
            df.to_mkts(key, backend=db)
        assert "key" in str(exc.value) or "timeframe" in str(exc.value)
        with pytest.raises(InvalidKeyError):
            db.query(key)
        with pytest.raises(InvalidKeyError):
            db.create(key, [("A", "f8")])
        with pytest.raises(InvalidKeyError):
            db.destroy(key)
    created = {p for p in tmp_path.rglob("*") if p not in before}
    assert all(p == root or root in p.parents for p in created)
    assert not any(p.suffix == ".bin" or p.name == "bucket.json" for p in created)


def test_key_parts_and_category_suffix() -> None:
    k = parse_key("AAPL/1Hour/OHLCV:Symbol/Timeframe/AttributeGroup")
    assert k.parts == ("AAPL", "1H", "OHLCV")
    assert str(k) == "AAPL/1H/OHLCV"
    assert parse_key("BRK.B/1D/Bars").symbol == "BRK.B"
    assert parse_key("L1-Ask_x/1Min/QUOTE").symbol == "L1-Ask_x"


def test_patterns() -> None:
    p = parse_key_pattern("AAPL,MSFT/1T/OHLCV")
    assert p.symbols == ("AAPL", "MSFT")
    assert p.timeframes == ("1Min",)
    assert [str(k) for k in p.expand() or []] == ["AAPL/1Min/OHLCV", "MSFT/1Min/OHLCV"]
    star = parse_key_pattern("*/1Min/OHLCV")
    assert star.expand() is None
    assert star.matches(parse_key("X/1Min/OHLCV"))
    assert not star.matches(parse_key("X/5Min/OHLCV"))


def test_glob_queries_only_match_directories_under_the_root(tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    with mktsframe.connect(tmp_path / "data", read_only=False) as db:
        df = pd.DataFrame({"A": np.arange(3.0)}, index=pd.date_range("2024-01-01", periods=3, freq="1min", tz="UTC"))
        df.to_mkts("IN/1Min/T", backend=db)
        assert list(db.query("*/1Min/T")) == ["IN/1Min/T"]
        with pytest.raises(InvalidKeyError):
            db.query("*/../T")
