"""Bucket keys and timeframes: canonical spelling, and no key can reach outside the data root."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mktsframe
from mktsframe.backend.base import Batch
from mktsframe.engine import Engine
from mktsframe.errors import BucketNotFoundError, InvalidKeyError, MktsError
from mktsframe.keys import MAX_PART_BYTES, parse_key, parse_key_pattern, parse_timeframe

from .helpers import NS, tree


@pytest.mark.parametrize(
    ("text", "canonical", "seconds"),
    [
        ("1Sec", "1Sec", 1),
        ("1S", "1Sec", 1),
        ("30Sec", "30Sec", 30),
        ("60Sec", "1Min", 60),
        ("1T", "1Min", 60),
        ("1Min", "1Min", 60),
        ("1min", "1Min", 60),
        ("5T", "5Min", 300),
        ("15Min", "15Min", 900),
        ("60Min", "1H", 3600),
        ("1H", "1H", 3600),
        ("1Hour", "1H", 3600),
        ("2Hours", "2H", 7200),
        ("4H", "4H", 14400),
        ("24H", "1D", 86400),
        ("1440Min", "1D", 86400),
        ("1Day", "1D", 86400),
        ("1D", "1D", 86400),
    ],
)
def test_timeframes_are_canonicalised(text: str, canonical: str, seconds: int) -> None:
    tf = parse_timeframe(text)
    assert tf.name == canonical
    assert str(tf) == canonical
    assert tf.seconds == seconds
    assert tf.nanoseconds == seconds * NS
    assert parse_key(f"A/{text}/OHLCV").item_key == f"A/{canonical}/OHLCV"


@pytest.mark.parametrize(
    "text", ["xyz", "0H", "0Min", "1Month", "1M", "1W", "1Y", "2D", "7Min", "1.5H", "-1Min", "", "Min", "1Lightyear"]
)
def test_bad_timeframes_are_rejected_with_the_text(text: str) -> None:
    with pytest.raises(InvalidKeyError) as exc:
        parse_timeframe(text)
    assert repr(text) in str(exc.value)


def test_timeframe_must_be_a_string() -> None:
    with pytest.raises(InvalidKeyError):
        parse_timeframe(60)  # type: ignore[arg-type]


def test_aliases_address_the_same_bucket(engine: Engine) -> None:
    engine.write("A/1T/OHLCV", Batch(np.array([0], np.int64), {"x": np.array([1.0])}))
    engine.write("A/60Sec/OHLCV", Batch(np.array([60 * NS], np.int64), {"x": np.array([2.0])}))
    assert engine.list_keys() == ["A/1Min/OHLCV"]
    assert (engine.root / "A" / "1Min" / "OHLCV").is_dir()
    for alias in ("A/1Min/OHLCV", "A/1T/OHLCV", "A/60Sec/OHLCV", "A/1min/OHLCV"):
        (got,) = engine.query(alias).values()
        assert got.columns["x"].tolist() == [1.0, 2.0]
    engine.write("B/1Hour/OHLCV", Batch(np.array([0], np.int64), {"x": np.array([1.0])}))
    engine.write("C/1Day/OHLCV", Batch(np.array([0], np.int64), {"x": np.array([1.0])}))
    engine.write("D/60Min/OHLCV", Batch(np.array([0], np.int64), {"x": np.array([1.0])}))
    assert engine.list_keys() == ["A/1Min/OHLCV", "B/1H/OHLCV", "C/1D/OHLCV", "D/1H/OHLCV"]
    assert engine.info("B/60Min/OHLCV").timeframe == "1H"


def test_key_parts_and_category_suffix() -> None:
    k = parse_key("AAPL/1Min/OHLCV:Symbol/Timeframe/AttributeGroup")
    assert (k.symbol, k.timeframe.name, k.attribute_group) == ("AAPL", "1Min", "OHLCV")
    assert k.parts == ("AAPL", "1Min", "OHLCV")
    assert str(k) == "AAPL/1Min/OHLCV"
    assert parse_key("BTC-USD/1H/ohlcv_v2").parts == ("BTC-USD", "1H", "ohlcv_v2")
    assert parse_key("股票/1D/TICK").symbol == "股票"
    with pytest.raises(InvalidKeyError, match="category"):
        parse_key("AAPL/1Min/OHLCV:Year")


HOSTILE_KEYS = [
    "../x/1Min/OHLCV",
    "../1Min/OHLCV",
    "a/1Min/..",
    "a/../OHLCV",
    "./1Min/OHLCV",
    "a/1Min/.",
    "a/1Min/b/c",
    "a/1Min",
    "a",
    "",
    "/etc/passwd",
    "/etc/passwd/x",
    "//etc/passwd",
    "../../../../etc/passwd",
    "/1Min/OHLCV",
    "a//OHLCV",
    "a/1Min/",
    "a/1Min/OH\x00LCV",
    "a\x00/1Min/OHLCV",
    "a\\..\\..\\x/1Min/OHLCV",
    "..\\x/1Min/OHLCV",
    "a/1Min/b\\c",
    ".hidden/1Min/OHLCV",
    ".mkts/1Min/OHLCV",
    "a/1Min/.mkts",
    "a/1Min/.git",
    "A" * (MAX_PART_BYTES + 1) + "/1Min/OHLCV",
    "a/1Min/" + "B" * 10_000,
    "é" * (MAX_PART_BYTES // 2 + 1) + "/1Min/OHLCV",
    " a/1Min/OHLCV",
    "a /1Min/OHLCV",
    "a\n/1Min/OHLCV",
    "a/1Min/OHLCV\r",
    "a\t/1Min/OHLCV",
    "a\x7f/1Min/OHLCV",
    "*/1Min/OHLCV",
    "a?/1Min/OHLCV",
    "a[0]/1Min/OHLCV",
    "A,B/1Min/OHLCV",
    "C:/x/1Min/OHLCV",
    "a/1Min/OHLCV:../../x",
    "a/../../1Min/OHLCV",
    "a/1Min/OHLCV/",
    "a/1W/OHLCV",
    "a/xyz/OHLCV",
    "a/1Min/<script>",
    "a|b/1Min/OHLCV",
]


@pytest.mark.parametrize("key", HOSTILE_KEYS, ids=lambda k: repr(k)[:40])
def test_hostile_keys_are_rejected_and_touch_nothing(key: str, tmp_path: Path) -> None:
    root = tmp_path / "deep" / "data"
    outside_before = tree(tmp_path)
    with pytest.raises(InvalidKeyError):
        parse_key(key)
    batch = Batch(np.array([0], np.int64), {"x": np.array([1.0])})
    with Engine(root, read_only=False) as engine:
        root_before = tree(root)
        calls = [
            lambda: engine.write(key, batch),
            lambda: engine.create(key, [("x", "f8")]),
            lambda: engine.delete(key),
            lambda: engine.destroy(key),
            lambda: engine.info(key),
        ]
        for call in calls:
            with pytest.raises(InvalidKeyError):
                call()
        # Queries may use lists and globs; a hostile one is refused or matches nothing.
        with pytest.raises((InvalidKeyError, BucketNotFoundError)):
            engine.query(key)
        assert tree(root) == root_before
        assert engine.list_keys() == []
    created = tree(tmp_path) - outside_before
    assert {p for p in created if p not in ("deep", "deep/data") and not p.startswith("deep/data/")} == set()
    assert {p for p in created if p.startswith("deep/data/") and not p.startswith("deep/data/.mkts")} == set()


@pytest.mark.parametrize("key", ["../x/1Min/OHLCV", "/etc/passwd", "a/1Min/.."], ids=repr)
def test_hostile_keys_through_pandas(key: str, db: mktsframe.Backend) -> None:
    df = pd.DataFrame({"x": [1.0]}, index=pd.DatetimeIndex(["2024-01-01"], tz="UTC"))
    with pytest.raises(InvalidKeyError):
        mktsframe.write_mkts(df, key, backend=db)
    with pytest.raises(InvalidKeyError):
        mktsframe.read_mkts(key, backend=db)


part_chars = st.characters(codec="utf-8", exclude_categories=("Cs",))
any_part = st.text(part_chars, max_size=12) | st.sampled_from(["..", ".", "", "~", "/", "\\", "\x00", ".mkts"])


@settings(max_examples=300, deadline=None)
@given(symbol=any_part, tf=st.sampled_from(["1Min", "1D", "..", "1T", ""]), group=any_part, sep=st.sampled_from("/\\"))
def test_any_accepted_key_stays_inside_the_root(symbol: str, tf: str, group: str, sep: str) -> None:
    root = Path("/nonexistent/root")
    key = sep.join([symbol, tf, group])
    try:
        k = parse_key(key)
    except InvalidKeyError:
        return
    path = root.joinpath(*k.parts)
    assert len(k.parts) == 3
    assert all(p and p not in (".", "..") and "/" not in p and "\\" not in p and "\x00" not in p for p in k.parts)
    assert not any(p.startswith(".") for p in k.parts)
    assert path.parent.parent.parent == root
    assert ".." not in path.parts
    # A valid key round-trips through its canonical spelling.
    assert parse_key(k.item_key) == k


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    symbol=st.text(part_chars, min_size=1, max_size=20)
    .filter(lambda s: s == s.strip() and not s.startswith(".") and not set(s) & set('/\\\x00,*:?[]"<>|'))
    .filter(lambda s: all(ord(c) >= 32 and ord(c) != 127 for c in s))
)
def test_unicode_symbols_round_trip(symbol: str, engine: Engine) -> None:
    key = f"{symbol}/1Min/OHLCV"
    engine.write(key, Batch(np.array([60 * NS], np.int64), {"x": np.array([3.5])}))
    (got,) = engine.query(key).values()
    assert got.columns["x"].tolist() == [3.5]
    assert symbol in engine.list_symbols()
    assert (engine.root / symbol / "1Min" / "OHLCV" / "bucket.json").is_file()
    engine.destroy(key)
    assert not (engine.root / symbol).exists()


def test_patterns() -> None:
    p = parse_key_pattern("AAPL,MSFT/1T/OHLCV")
    assert p.symbols == ("AAPL", "MSFT")
    assert p.timeframes == ("1Min",)
    assert not p.is_concrete
    assert [k.item_key for k in p.expand() or []] == ["AAPL/1Min/OHLCV", "MSFT/1Min/OHLCV"]
    assert parse_key_pattern("AAPL,AAPL/1Min/OHLCV").symbols == ("AAPL",)
    assert parse_key_pattern("*/1Min/OHLCV").expand() is None
    assert parse_key_pattern("AAPL/1Min/OHLCV").is_concrete
    for bad in ("../*/1Min/OHLCV", "*/1Min/..", "A,../1Min/OHLCV", "A,/1Min/OHLCV", "*/*/*/*", "A/1W/OHLCV"):
        with pytest.raises(InvalidKeyError):
            parse_key_pattern(bad)


def test_globs_never_see_engine_files_or_foreign_directories(engine: Engine) -> None:
    engine.write("A/1Min/OHLCV", Batch(np.array([0], np.int64), {"x": np.array([1.0])}))
    (engine.root / "junk" / "1Min" / "OHLCV").mkdir(parents=True)  # no bucket.json: not a bucket
    (engine.root / "bad name" / "1Min").mkdir(parents=True)
    assert list(engine.query("*/*/*")) == ["A/1Min/OHLCV"]
    for pattern in (".*/*/*", "*/.*/*", ".mkts/*/*", "*/1Min/.*"):
        with pytest.raises((BucketNotFoundError, InvalidKeyError)):
            engine.query(pattern)
    assert engine.list_symbols() == ["A"]


def test_errors_are_mkts_errors() -> None:
    with pytest.raises(MktsError):
        parse_key("../x/1Min/OHLCV")
    with pytest.raises(ValueError, match="key"):
        parse_key("../x/1Min/OHLCV")
