"""Both branches of every pandas fast path (mktsframe.io.fastpaths): on and off, same results.

``make test`` runs this file under the project's pandas 3 and again under pandas 2.2, so each
branch is exercised on both major versions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mktsframe
from mktsframe.backend.base import Batch
from mktsframe.errors import SchemaMismatchError
from mktsframe.io import fastpaths
from mktsframe.io.frames import batch_to_frame, frame_to_batch

_PATHS = ("frame_from_arrays", "utc_index", "block_arrays", "column_array", "index_strings")


@pytest.fixture(params=["fast", "public"])
def branch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "public":
        for name in _PATHS:
            monkeypatch.setattr(fastpaths, name, None)
        monkeypatch.setattr(fastpaths, "index_data", lambda index: None)  # no cache of column names
    return request.param


def test_fast_paths_are_on_for_the_pandas_versions_we_support() -> None:
    major, minor = (int(p) for p in pd.__version__.split(".")[:2])
    if (major, minor) not in {(2, 2), (2, 3), (3, 0), (3, 1)}:
        pytest.skip(f"pandas {pd.__version__}: the public route is used where a probe fails")
    assert [name for name in _PATHS if getattr(fastpaths, name) is None] == []


def test_a_fast_path_that_disagrees_or_raises_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    import pandas.core.internals.construction as construction

    real = construction.arrays_to_mgr

    def broken(*args: object, **kwargs: object) -> object:
        if kwargs.get("verify_integrity", True):  # pandas' own public constructors keep working
            return real(*args, **kwargs)
        raise ValueError("'typ' needs to be one of {'block', 'array'}, got 'None'")  # pandas 2.x without typ=

    monkeypatch.setattr(construction, "arrays_to_mgr", broken)
    frame_from_arrays, utc_index, *_ = fastpaths._probe()
    assert frame_from_arrays is None
    assert utc_index is not None  # the others stand on their own
    def shifted(ns: np.ndarray, name: str) -> pd.DatetimeIndex:  # answers, but with the wrong values
        return pd.DatetimeIndex((ns + 1).view("M8[ns]"), dtype="datetime64[ns, UTC]", name=name)

    monkeypatch.setattr(fastpaths, "_make_utc_index", lambda: shifted)
    assert fastpaths._probe()[1] is None


def _batch(n: int) -> Batch:
    ns = 1_704_067_200 * 10**9 + np.arange(n, dtype=np.int64) * 60 * 10**9 + 7
    return Batch(ns, {"Open": np.arange(n, dtype="f4"), "Volume": np.arange(n, dtype="i8"),
                      "Flag": np.arange(n) % 2 == 0, "Price": np.linspace(1, 2, n)})  # fmt: skip


@pytest.mark.parametrize("n", [0, 1, 1000])
def test_batch_to_frame(branch: str, n: int) -> None:
    batch = _batch(n)
    df = batch_to_frame(batch)
    assert list(df.columns) == ["Open", "Volume", "Flag", "Price"]
    assert [str(t) for t in df.dtypes] == ["float32", "int64", "bool", "float64"]
    assert str(df.index.dtype) == "datetime64[ns, UTC]"
    assert df.index.name == "Epoch"
    assert np.array_equal(df.index.asi8, batch.index)
    for name, values in batch.columns.items():
        assert np.array_equal(df[name].to_numpy(), values)
    if branch == "fast" and n:
        assert np.shares_memory(df.index.asi8, batch.index)  # nothing copied
        assert np.shares_memory(df["Volume"].to_numpy(), batch.columns["Volume"])
    # strings take the public route on both branches
    s = batch_to_frame(Batch(batch.index, {"Sym": np.array(["AB"] * n, "U16"), "Open": batch.columns["Open"]}))
    assert s["Sym"].tolist() == ["AB"] * n


@pytest.mark.parametrize(
    "make",
    [
        lambda idx: pd.DataFrame({"a": np.arange(3.0), "b": np.arange(3, dtype="i4")}, index=idx),
        lambda idx: pd.DataFrame({"a": pd.array([1, 2, 3], dtype="Int64"), "b": pd.array([1.5, 2, 3], "Float32")},
                                 index=idx),
        lambda idx: pd.DataFrame({"s": ["x", "y", "z"], "o": pd.Series(["p", "q", "r"], dtype=object).to_numpy()},
                                 index=idx),
        lambda idx: pd.DataFrame(np.arange(12.0).reshape(3, 4)[:, ::2], columns=["u", "v"], index=idx),
        lambda idx: pd.concat([pd.DataFrame({"a": [1.0, 2, 3]}, index=idx), pd.DataFrame({"b": [4, 5, 6]}, index=idx)],
                              axis=1)[["b", "a"]],
    ],
    ids=["numpy", "extension", "strings", "strided", "blocks-reordered"],
)
def test_frame_to_batch(branch: str, make) -> None:
    idx = pd.date_range("2024-01-02", periods=3, freq="1min", tz="UTC")
    df = make(idx)
    batch = frame_to_batch(df)
    assert list(batch.columns) == list(df.columns)
    assert np.array_equal(batch.index, idx.as_unit("ns").asi8)
    for name in df.columns:
        got, want = batch.columns[name], df[name]
        assert isinstance(got, np.ndarray)
        assert got.tolist() == want.tolist()
        if want.dtype.kind in "iufb":
            assert got.dtype == getattr(want.dtype, "numpy_dtype", want.dtype)


def test_frame_to_batch_errors_are_the_same(branch: str) -> None:
    idx = pd.date_range("2024-01-02", periods=2, freq="1min", tz="UTC")
    with pytest.raises(SchemaMismatchError, match="missing values"):
        frame_to_batch(pd.DataFrame({"a": pd.array([1, None], dtype="Int64")}, index=idx))
    with pytest.raises(SchemaMismatchError, match="longer than 16"):
        frame_to_batch(pd.DataFrame({"s": ["x" * 17, "y"]}, index=idx))
    with pytest.raises(SchemaMismatchError, match="cannot be stored"):
        frame_to_batch(pd.DataFrame({"c": pd.Categorical(["a", "b"])}, index=idx))


def test_round_trip_through_the_engine(branch: str, tmp_path: Path) -> None:
    idx = pd.date_range("2024-01-02 09:30", periods=50, freq="1min", tz="UTC").as_unit("ns")
    df = pd.DataFrame({"Open": np.arange(50, dtype="f4"), "Volume": np.arange(50, dtype="i8")}, index=idx)
    db = mktsframe.connect(tmp_path / "data")
    try:
        df.to_mkts("CMP/1Min/OHLCV", backend=db)
        df.iloc[:10].to_mkts("CMP2/1Min/OHLCV", backend=db)
        pd.testing.assert_frame_equal(pd.read_mkts("CMP/1Min/OHLCV", backend=db), df, check_names=False,
                                      check_freq=False)  # fmt: skip
        both = pd.read_mkts("CMP,CMP2/1Min/OHLCV", backend=db)
        assert both["Symbol"].tolist()[:2] == ["CMP", "CMP2"]
        assert len(both) == 60
    finally:
        db.close()
