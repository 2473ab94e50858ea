"""Every column type round-trips exactly through write → read (property-based)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import mktsframe

NUMERIC = ["i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f4", "f8"]
_counter = itertools.count()


def _column(type_string: str) -> st.SearchStrategy[np.ndarray]:
    if type_string == "U16":
        elements = st.text(
            alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00"),
            max_size=16,
        )
        return st.lists(elements, min_size=1, max_size=40).map(lambda xs: np.array(xs, dtype="U16"))
    if type_string == "bool":
        return st.lists(st.booleans(), min_size=1, max_size=40).map(lambda xs: np.array(xs, dtype=bool))
    dtype = np.dtype(type_string)
    return hnp.arrays(dtype, st.integers(1, 40), elements=hnp.from_dtype(dtype, allow_nan=True))


@st.composite
def frames(draw: st.DrawFn) -> tuple[str, pd.DataFrame]:
    types = draw(st.lists(st.sampled_from([*NUMERIC, "U16", "bool"]), min_size=1, max_size=5))
    cols = [draw(_column(t)) for t in types]
    n = min(len(c) for c in cols)
    tf = draw(st.sampled_from(["1Sec", "1Min", "1H", "1D"]))
    seconds = {"1Sec": 1, "1Min": 60, "1H": 3600, "1D": 86400}[tf]
    # Distinct bar starts spread over ~3 years around a year boundary, in random order.
    offsets = draw(st.lists(st.integers(-400 * 86400 // seconds, 800 * 86400 // seconds), min_size=n, max_size=n,
                            unique=True))  # fmt: skip
    base = pd.Timestamp("2024-01-01", tz="UTC").value
    index = pd.DatetimeIndex(np.array([base + o * seconds * 10**9 for o in offsets], dtype="M8[ns]"), tz="UTC")
    data = {f"c{i}_{t}": c[:n] for i, (t, c) in enumerate(zip(types, cols, strict=True))}
    return tf, pd.DataFrame(data, index=index)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=frames())
def test_every_type_round_trips_exactly(case: tuple[str, pd.DataFrame], tmp_path: Path) -> None:
    tf, df = case
    key = f"S{next(_counter)}/{tf}/T"
    with mktsframe.connect(tmp_path / "data", read_only=False) as db:
        df.to_mkts(key, backend=db)
        got = pd.read_mkts(key, backend=db)
    want = df.sort_index()
    assert got.index.name == "Epoch"
    assert str(got.index.dtype) == "datetime64[ns, UTC]"
    np.testing.assert_array_equal(got.index.asi8, want.index.asi8)
    assert list(got.columns) == list(want.columns)
    for name in want.columns:
        expected = want[name].to_numpy()
        actual = got[name].to_numpy()
        if expected.dtype.kind == "f":
            assert actual.dtype == expected.dtype
            np.testing.assert_array_equal(actual.view(f"u{expected.dtype.itemsize}"),
                                          expected.view(f"u{expected.dtype.itemsize}"))  # bit-exact, NaN too
        elif expected.dtype.kind == "U":
            assert actual.tolist() == expected.tolist()
        else:
            assert actual.dtype == expected.dtype
            np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("text", ["héllo wörld", "日本語テキスト", "😀🚀💹", "a" * 16])
def test_multibyte_strings(text: str, tmp_path: Path) -> None:
    df = pd.DataFrame({"S": [text, text[:3]]}, index=pd.date_range("2024-05-01", periods=2, freq="1h", tz="UTC"))
    with mktsframe.connect(tmp_path / "d", read_only=False) as db:
        df.to_mkts("STR/1H/T", backend=db)
        assert pd.read_mkts("STR/1H/T", backend=db)["S"].tolist() == [text, text[:3]]
        assert db.info("STR/1H/T").columns == (("S", "U16"),)
