"""The pandas front door: exact round trips of every type, multi-symbol frames, accessors."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import pandas as hpd

import mktsframe
from mktsframe.backend import set_default_backend
from mktsframe.backend.local import LocalBackend
from mktsframe.errors import BucketNotFoundError, ReadOnlyError, SchemaMismatchError

from .helpers import assert_epoch_index, frame, ohlcv

NUMERIC = ["i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f4", "f8"]
_keys = itertools.count()

# Strings: up to 16 code points, any plane (multibyte, emoji); NUL cannot be told from U16 padding.
u16_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=16)
u16_samples = st.sampled_from(
    ["", "a", "é", "日本語テキスト", "🚀", "👍🏽👍🏽", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "x" * 16, "🙂" * 16, "a b\tc\n"]
)


def _columns() -> list[hpd.column]:
    cols = [hpd.column(t, dtype=np.dtype(t)) for t in NUMERIC]
    cols.append(hpd.column("s", elements=u16_text | u16_samples, dtype=object))
    cols.append(hpd.column("b", dtype=bool))
    return cols


TIMEFRAMES = {  # timeframe → (unit, first bar, how many bars the offsets may span)
    "1Sec": ("s", "2024-12-31 23:59:00", 600),  # across a year boundary
    "1Min": ("min", "2023-12-31 22:00", 5000),
    "1H": ("h", "2023-12-01", 24 * 800),  # three year files, a leap year
    "1D": ("D", "1999-06-01", 365 * 30),  # thirty years
}


def _to_index(offsets: pd.Index, tf: str) -> pd.DatetimeIndex:
    unit, first, _ = TIMEFRAMES[tf]
    return (pd.Timestamp(first, tz="UTC") + pd.to_timedelta(np.asarray(offsets, np.int64), unit=unit)).as_unit("ns")


def _expected(df: pd.DataFrame) -> pd.DataFrame:
    out = df.sort_index().astype({"s": "str"})
    out.index.name = "Epoch"
    return out


@st.composite
def frames(draw: st.DrawFn) -> tuple[str, pd.DataFrame]:
    tf = draw(st.sampled_from(sorted(TIMEFRAMES)))
    span = TIMEFRAMES[tf][2]
    index = hpd.indexes(elements=st.integers(0, span), unique=True, min_size=1, max_size=40)
    df = draw(hpd.data_frames(_columns(), index=index))
    df.index = _to_index(df.index, tf)
    return tf, df


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=frames(), split=st.floats(0, 1))
def test_every_type_round_trips_exactly(db: LocalBackend, case: tuple[str, pd.DataFrame], split: float) -> None:
    tf, df = case
    key = f"RT{next(_keys)}/{tf}/ALL"
    cut = int(len(df) * split)
    df.iloc[:cut].to_mkts(key, backend=db)  # unsorted, in two writes (the first may be empty)
    df.iloc[cut:].to_mkts(key, backend=db)
    got = pd.read_mkts(key, backend=db)
    assert_epoch_index(got)
    pd.testing.assert_frame_equal(got, _expected(df), check_exact=True)
    assert [str(got[c].dtype) for c in NUMERIC] == [str(np.dtype(t)) for t in NUMERIC]
    assert got["b"].dtype == bool
    info = db.info(key)
    assert dict(info.columns) == {**{t: t for t in NUMERIC}, "s": "U16", "b": "bool"}
    assert info.rows == len(df)
    # A bounded read of the middle rows is the same slice of the frame.
    exp = _expected(df)
    lo, hi = exp.index[len(exp) // 3], exp.index[2 * len(exp) // 3]
    pd.testing.assert_frame_equal(pd.read_mkts(key, start=lo, end=hi, backend=db), exp.loc[lo:hi], check_exact=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    df=hpd.data_frames(
        [hpd.column("f8", dtype=float), hpd.column("f4", dtype=np.float32)],
        index=hpd.indexes(elements=st.integers(0, 10_000), unique=True, min_size=1, max_size=20),
    )
)
def test_special_floats_round_trip_bit_for_bit(db: LocalBackend, df: pd.DataFrame) -> None:
    df.index = _to_index(df.index, "1Min")
    key = f"FL{next(_keys)}/1Min/T"
    df.to_mkts(key, backend=db)
    got = pd.read_mkts(key, backend=db)
    exp = df.sort_index()
    for c in ("f8", "f4"):
        assert got[c].to_numpy().tobytes() == exp[c].to_numpy().tobytes()  # NaN payloads, -0.0, inf


@pytest.mark.parametrize(
    "text", ["é", "日本語", "🚀🚀", "👨‍👩‍👧", "ÄÖÜäöüß", "𝄞", "a" * 16, "🙂" * 16, "", "Ω≈ç√∫˜µ≤≥÷", "\u200b"]
)
def test_multibyte_strings(db: LocalBackend, text: str) -> None:
    df = frame(["2024-01-01", "2024-01-02"], s=np.array([text, text[::-1]], dtype=object))
    key = f"U{next(_keys)}/1D/T"
    df.to_mkts(key, backend=db)
    assert pd.read_mkts(key, backend=db)["s"].tolist() == [text, text[::-1]]


def test_strings_longer_than_sixteen_characters_are_refused(db: LocalBackend) -> None:
    with pytest.raises(SchemaMismatchError, match="16"):
        frame(["2024-01-01"], s=["x" * 17]).to_mkts("L/1D/T", backend=db)
    with pytest.raises(SchemaMismatchError, match="16"):
        frame(["2024-01-01"], s=["🙂" * 17]).to_mkts("L/1D/T", backend=db)
    assert db.list_keys() == []


def test_nanosecond_index_and_zones(db: LocalBackend) -> None:
    idx = pd.DatetimeIndex(["2024-03-10 01:59:59.999999999", "2024-03-10 03:00:00.000000001"], tz="America/New_York")
    pd.DataFrame({"x": [1.0, 2.0]}, index=idx).to_mkts("NS/1Sec/T", backend=db)
    got = pd.read_mkts("NS/1Sec/T", backend=db)
    assert_epoch_index(got)
    assert got.index.tolist() == [pd.Timestamp("2024-03-10 06:59:59Z"), pd.Timestamp("2024-03-10 07:00Z")]
    naive = pd.DataFrame({"x": [3.0]}, index=pd.DatetimeIndex(["2024-03-10 06:59:59"]))  # zone-less = UTC
    naive.to_mkts("NS/1Sec/T", backend=db)
    assert pd.read_mkts("NS/1Sec/T", backend=db)["x"].tolist() == [3.0, 2.0]
    for unit in ("s", "ms", "us"):
        df = pd.DataFrame({"x": [9.0]}, index=pd.DatetimeIndex(["2024-03-10 07:00:00"], tz="UTC").as_unit(unit))
        df.to_mkts("NS/1Sec/T", backend=db)
        assert pd.read_mkts("NS/1Sec/T", backend=db, limit=1).index[0] == pd.Timestamp("2024-03-10 07:00", tz="UTC")


def test_epoch_column_frames_like_pymarketstore(db: LocalBackend) -> None:
    epoch = np.array([1_699_999_980, 1_700_000_040], np.int64)  # minute-aligned epoch seconds
    pd.DataFrame({"Epoch": epoch, "Ask": np.array([1.5, 2.5], "f4")}).to_mkts("E/1Min/T", backend=db)
    got = pd.read_mkts("E/1Min/T", backend=db)
    assert list(got.columns) == ["Ask"]
    assert got.index.asi8.tolist() == (epoch * 10**9).tolist()
    with pytest.raises(SchemaMismatchError, match="Epoch"):
        pd.DataFrame({"Epoch": [1.7e9], "Ask": [1.0]}).to_mkts("E/1Min/T", backend=db)


@pytest.mark.parametrize(
    ("df", "match"),
    [
        (pd.DataFrame({"x": [1.0]}), "DatetimeIndex"),
        (pd.DataFrame({"x": [1.0, 2.0]}, index=pd.DatetimeIndex(["2024-01-01", None], tz="UTC")), "NaT"),
        (pd.DataFrame([[1.0, 2.0]], columns=["x", "x"], index=pd.DatetimeIndex(["2024-01-01"])), "duplicate"),
        (pd.DataFrame({0: [1.0]}, index=pd.DatetimeIndex(["2024-01-01"])), "strings"),
        (pd.DataFrame({"s": ["a", None]}, index=pd.DatetimeIndex(["2024-01-01", "2024-01-02"])), "missing"),
        (pd.DataFrame({"s": ["a", 1]}, index=pd.DatetimeIndex(["2024-01-01", "2024-01-02"])), "mixes"),
        (
            pd.DataFrame({"n": pd.array([1, None], "Int64")}, index=pd.DatetimeIndex(["2024-01-01", "2024-01-02"])),
            "missing",
        ),
        (pd.DataFrame({"c": pd.Categorical(["a"])}, index=pd.DatetimeIndex(["2024-01-01"])), "cannot be stored"),
        (
            pd.DataFrame({"t": pd.DatetimeIndex(["2024-01-01"])}, index=pd.DatetimeIndex(["2024-01-01"])),
            "cannot be stored",
        ),
        (pd.DataFrame({"z": [1 + 2j]}, index=pd.DatetimeIndex(["2024-01-01"])), "dtype"),
    ],
)
def test_frames_that_cannot_be_stored_are_refused(db: LocalBackend, df: pd.DataFrame, match: str) -> None:
    with pytest.raises(SchemaMismatchError, match=match):
        df.to_mkts("BAD/1Min/T", backend=db)
    assert db.list_keys() == []


def test_frame_layouts_keep_each_value_under_its_name() -> None:
    """Columns are read straight from pandas' blocks: whatever the block layout, values stay with names."""
    from mktsframe.io.frames import frame_to_batch

    idx = pd.date_range("2024-01-01", periods=3, freq="1min", tz="UTC")
    grid = np.asfortranarray(np.arange(12, dtype="f8").reshape(3, 4))  # one block, column-major
    cases = [
        pd.DataFrame(grid, columns=["a", "b", "c", "d"], index=idx),
        pd.DataFrame({"a": [1, 2, 3], "b": [0.5, 1.5, 2.5], "c": np.array([7, 8, 9], "f4"), "d": [True, False, True]},
                     index=idx)[["d", "b", "a", "c"]],  # interleaved dtypes, reordered
        pd.DataFrame({"s": ["x", "y", "z"], "a": [1.0, 2.0, 3.0]}, index=idx),  # a string column beside numbers
    ]
    split = pd.DataFrame({"a": [1.0, 2.0, 3.0]}, index=idx)
    split["b"] = np.array([4, 5, 6], "i2")  # an unconsolidated second block
    split["a2"] = split["a"] * 10
    cases.append(split)
    for df in cases:
        for rows in (df, df.iloc[1:2].copy(), df.iloc[::2]):
            batch = frame_to_batch(rows)
            assert list(batch.columns) == list(rows.columns)
            for name in rows.columns:
                np.testing.assert_array_equal(batch.columns[name], rows[name].to_numpy(), err_msg=name)
            assert batch.index.tolist() == rows.index.as_unit("ns").asi8.tolist()
    renamed = cases[0].rename(columns={"a": "A"})
    assert list(frame_to_batch(renamed).columns) == ["A", "b", "c", "d"]


def test_nullable_and_string_extension_dtypes(db: LocalBackend) -> None:
    idx = pd.DatetimeIndex(["2024-01-01", "2024-01-02"], tz="UTC")
    df = pd.DataFrame(
        {"n": pd.array([1, 2], "Int64"), "f": pd.array([0.5, 1.5], "Float32"), "s": pd.array(["a", "🚀"], "string")},
        index=idx,
    )
    df.to_mkts("X/1D/T", backend=db)
    got = pd.read_mkts("X/1D/T", backend=db)
    assert got["n"].dtype == np.int64
    assert got["f"].dtype == np.float32
    assert got["n"].tolist() == [1, 2]
    assert got["s"].tolist() == ["a", "🚀"]


# -- schemas through pandas --------------------------------------------------------------------


def test_schema_mismatch_errors(db: LocalBackend) -> None:
    base = ohlcv("2024-01-02", 3)
    base.to_mkts("S/1Min/OHLCV", backend=db)
    with pytest.raises(SchemaMismatchError, match="unexpected \\['Extra'\\]"):
        base.assign(Extra=1.0).to_mkts("S/1Min/OHLCV", backend=db)
    with pytest.raises(SchemaMismatchError, match="missing \\['Volume'\\]"):
        base.drop(columns="Volume").to_mkts("S/1Min/OHLCV", backend=db)
    pd.DataFrame({"n": [1]}, index=base.index[:1]).to_mkts("I/1Min/T", backend=db)
    with pytest.raises(SchemaMismatchError, match="'n'"):
        pd.DataFrame({"n": [1.5]}, index=base.index[:1]).to_mkts("I/1Min/T", backend=db)
    # f8 into the f4 price columns is coerced (MarketStore test_coerce_column).
    wide = base.astype({"Open": "f8", "Close": "f8"}) + 0.1
    wide.to_mkts("S/1Min/OHLCV", backend=db)
    got = pd.read_mkts("S/1Min/OHLCV", backend=db)
    assert got["Open"].dtype == np.float32
    np.testing.assert_array_equal(got["Open"].to_numpy(), wide["Open"].to_numpy().astype("f4"))
    # Column order in the frame does not matter; the bucket's order is kept.
    base[list(reversed(base.columns))].to_mkts("S/1Min/OHLCV", backend=db)
    assert list(pd.read_mkts("S/1Min/OHLCV", backend=db).columns) == list(base.columns)


# -- multi-symbol queries ----------------------------------------------------------------------


@pytest.fixture
def three(db: LocalBackend) -> LocalBackend:
    ohlcv("2024-01-02 10:00", 3, seed=1).to_mkts("AAPL/1Min/OHLCV", backend=db)
    ohlcv("2024-01-02 10:01", 3, seed=2).to_mkts("MSFT/1Min/OHLCV", backend=db)
    ohlcv("2024-01-02 10:00", 1, seed=3).to_mkts("IBM/1Min/OHLCV", backend=db)
    return db


def test_comma_list_gives_one_frame_with_a_symbol_column(three: LocalBackend) -> None:
    df = pd.read_mkts("MSFT,AAPL/1Min/OHLCV", backend=three)
    assert_epoch_index(df)
    assert list(df.columns) == ["Symbol", "Open", "High", "Low", "Close", "Volume"]
    # Sorted by time, then in the order the symbols were named.
    assert [(t.strftime("%H:%M"), s) for t, s in zip(df.index, df["Symbol"], strict=True)] == [
        ("10:00", "AAPL"), ("10:01", "MSFT"), ("10:01", "AAPL"),
        ("10:02", "MSFT"), ("10:02", "AAPL"), ("10:03", "MSFT"),
    ]  # fmt: skip
    assert df["Open"].dtype == np.float32
    assert df["Volume"].dtype == np.float64
    aapl = df[df["Symbol"] == "AAPL"].drop(columns="Symbol")
    pd.testing.assert_frame_equal(aapl, pd.read_mkts("AAPL/1Min/OHLCV", backend=three), check_exact=True)


def test_wildcard_and_projection_and_limits(three: LocalBackend) -> None:
    df = pd.read_mkts("*/1Min/OHLCV", backend=three)
    assert sorted(set(df["Symbol"])) == ["AAPL", "IBM", "MSFT"]
    assert len(df) == 7
    df = pd.read_mkts("*/1Min/OHLCV", columns=["Close"], limit=1, backend=three)
    assert list(df.columns) == ["Symbol", "Close"]
    assert sorted(df["Symbol"]) == ["AAPL", "IBM", "MSFT"]
    df = pd.read_mkts("AAPL,MSFT/1Min/OHLCV", start="2024-01-02 10:01", end="2024-01-02 10:01", backend=three)
    assert df["Symbol"].tolist() == ["AAPL", "MSFT"]
    empty = pd.read_mkts("AAPL,MSFT/1Min/OHLCV", start="2030-01-01", backend=three)
    assert len(empty) == 0
    assert list(empty.columns) == ["Symbol", "Open", "High", "Low", "Close", "Volume"]
    assert empty["Open"].dtype == np.float32
    assert_epoch_index(empty)


def test_multi_symbol_with_differing_schemas(three: LocalBackend) -> None:
    frame(["2024-01-02 10:00"], Close=np.array([1.0], "f4"), Ask=[2.0]).to_mkts("Q/1Min/OHLCV", backend=three)
    with pytest.raises(SchemaMismatchError, match="symbols in a query must have the same"):
        pd.read_mkts("AAPL,Q/1Min/OHLCV", backend=three)
    df = pd.read_mkts("AAPL,Q/1Min/OHLCV", columns=["Close"], backend=three)
    assert df["Symbol"].tolist() == ["AAPL", "Q", "AAPL", "AAPL"]


def test_multi_symbol_with_same_names_but_other_types_is_refused(db: LocalBackend) -> None:
    """Concatenating an i8 column with an f8 one would round 2**53 + 1: refuse, as MarketStore does."""
    frame(["2024-01-02"], x=np.array([2**53 + 1], "i8")).to_mkts("INT/1D/T", backend=db)
    frame(["2024-01-02"], x=np.array([0.5], "f8")).to_mkts("FLT/1D/T", backend=db)
    with pytest.raises(SchemaMismatchError, match="same"):
        pd.read_mkts("INT,FLT/1D/T", backend=db)
    assert pd.read_mkts("INT/1D/T", backend=db)["x"].tolist() == [2**53 + 1]


def test_several_timeframes_get_a_timeframe_column(db: LocalBackend) -> None:
    frame(["2024-01-02 10:00"], x=[1.0]).to_mkts("A/1Min/T", backend=db)
    frame(["2024-01-02 10:00"], x=[2.0]).to_mkts("A/1H/T", backend=db)
    df = pd.read_mkts("A/1Min,1H/T", backend=db)
    assert list(df.columns) == ["Symbol", "Timeframe", "x"]
    assert df["Timeframe"].tolist() == ["1Min", "1H"]


def test_missing_buckets(three: LocalBackend) -> None:
    with pytest.raises(BucketNotFoundError, match="no files returned from query parse") as exc:
        pd.read_mkts("NOPE/1Min/OHLCV", backend=three)
    assert "NOPE/1Min/OHLCV" in str(exc.value)
    with pytest.raises(BucketNotFoundError, match="NOPE"):
        pd.read_mkts("AAPL,NOPE/1Min/OHLCV", backend=three)
    with pytest.raises(BucketNotFoundError):
        pd.read_mkts("ZZ*/1Min/OHLCV", backend=three)


# -- accessors, defaults and connections -------------------------------------------------------


def test_accessors_and_attrs(db: LocalBackend) -> None:
    df = ohlcv("2024-01-02", 2)
    df.to_mkts("ACC/1Min/OHLCV", backend=db)
    got = pd.read_mkts("ACC/1Min/OHLCV", backend=db)
    assert got.mkts.key == "ACC/1Min/OHLCV"
    assert got.attrs["mkts_key"] == "ACC/1Min/OHLCV"
    got["Close"] = np.float32(1.0)
    got.mkts.write(backend=db)  # back to where it came from
    assert pd.read_mkts("ACC/1Min/OHLCV", backend=db)["Close"].tolist() == [1.0, 1.0]
    got.mkts.write("ACC2/1Min/OHLCV", backend=db)
    assert db.list_keys() == ["ACC/1Min/OHLCV", "ACC2/1Min/OHLCV"]
    with pytest.raises(ValueError, match="no key"):
        ohlcv("2024-01-02", 1).mkts.write(backend=db)
    assert pd.read_mkts is mktsframe.read_mkts


def test_default_backend_from_mkts_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MKTS_ROOT", str(tmp_path / "envroot"))
    previous = set_default_backend(None)
    try:
        ohlcv("2024-01-02", 2).to_mkts("DEF/1Min/OHLCV")
        assert len(pd.read_mkts("DEF/1Min/OHLCV")) == 2
        assert (tmp_path / "envroot" / "DEF" / "1Min" / "OHLCV" / "bucket.json").is_file()
    finally:
        current = set_default_backend(previous)
        if current is not None:
            current.close()


def test_connect_targets(tmp_path: Path, open_db) -> None:
    a = open_db(tmp_path / "a", read_only=False)
    ohlcv("2024-01-02", 1).to_mkts("T/1Min/OHLCV", backend=a)
    b = open_db(f"file://{tmp_path / 'a'}")
    assert b.engine is a.engine  # one engine per root per process
    assert b.list_keys() == ["T/1Min/OHLCV"]
    with pytest.raises(ValueError, match="scheme"):
        mktsframe.connect("nosuch://example/x")


def test_read_only_handle_refuses_writes_even_beside_a_writer(tmp_root: Path, open_db) -> None:
    writer = open_db(read_only=False)
    ohlcv("2024-01-02", 2).to_mkts("RO/1Min/OHLCV", backend=writer)
    reader = open_db(read_only=True)
    assert reader.read_only
    assert not writer.read_only
    df = ohlcv("2024-01-03", 1)
    for call in (
        lambda: df.to_mkts("RO/1Min/OHLCV", backend=reader),
        lambda: reader.create("NEW/1Min/T", [("x", "f8")]),
        lambda: reader.delete("RO/1Min/OHLCV"),
        lambda: reader.destroy("RO/1Min/OHLCV"),
    ):
        with pytest.raises(ReadOnlyError):
            call()
    assert len(pd.read_mkts("RO/1Min/OHLCV", backend=reader)) == 2
    assert writer.list_keys() == ["RO/1Min/OHLCV"]


def test_empty_window_gives_an_empty_frame_with_the_schema(db: LocalBackend) -> None:
    df = frame(["2024-01-02"], a=np.array([1], "u2"), s=["x"], f=np.array([True]))
    df.to_mkts("EMPTY/1D/T", backend=db)
    full = pd.read_mkts("EMPTY/1D/T", backend=db)
    windows = (
        {"start": "2025-01-01"},
        {"end": "2023-12-31"},
        {"limit": 0},
        {"start": "2024-01-03", "end": "2024-01-09"},
    )
    for kw in windows:
        got = pd.read_mkts("EMPTY/1D/T", backend=db, **kw)
        assert_epoch_index(got)
        assert len(got) == 0
        assert list(got.columns) == ["a", "s", "f"]
        assert got.dtypes.tolist() == full.dtypes.tolist()
        assert got["a"].dtype == np.uint16
    db.create("NEVER/1D/T", [("p", "f4")])
    got = pd.read_mkts("NEVER/1D/T", backend=db)
    assert len(got) == 0
    assert got["p"].dtype == np.float32
