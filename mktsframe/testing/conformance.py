"""The conformance suite every :class:`~mktsframe.backend.base.Backend` passes.

One set of expectations for the local engine, the HTTP client and the object-storage reader (and
a backend another package registers): the same data written through the local engine must read
back identically, key patterns resolve in the same order, errors have the same classes, and what a
backend declares in its :class:`~mktsframe.backend.base.Capabilities` is what it does.

Use it from pytest: subclass :class:`BackendConformance` in a test module (the name must start
with ``Test``) and give it a ``backend`` fixture that returns a backend serving the data
:func:`populate` wrote into a local root::

    class TestMyBackend(BackendConformance):
        @pytest.fixture(scope="class")
        def backend(self, tmp_path_factory):
            root = mktsframe.connect(tmp_path_factory.mktemp("root"))
            populate(root)
            ...  # expose that root through your backend
            return my_backend

The expected values are computed here from the data's definition, never read from another backend.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mktsframe.backend.base import Backend, Batch, capabilities
from mktsframe.errors import BucketNotFoundError, MktsError, ReadOnlyError, SchemaMismatchError

__all__ = ["DATA", "BackendConformance", "expected", "populate"]

_NS = 1_000_000_000
#: The data set: key → (first bar, bars, timeframe seconds); 1Min buckets cross a new year, so
#: reads span two year files. Columns: Open/High/Low/Close f4, Volume i8 (CCC: Close f8 only).
DATA: dict[str, tuple[str, int, int]] = {
    "AAA/1Min/OHLCV": ("2023-12-31 22:00", 300, 60),
    "BBB/1Min/OHLCV": ("2023-12-31 23:00", 240, 60),
    "CCC/1D/CLOSE": ("2023-12-01", 45, 86_400),
}


def expected(key: str) -> Batch:
    """The rows of ``key`` as :func:`populate` writes them (a pure function of the key)."""
    first, n, tf = DATA[key]
    t0 = pd.Timestamp(first, tz="UTC").value
    index = t0 + np.arange(n, dtype=np.int64) * tf * _NS
    seed = sum(key.encode())
    base = (np.arange(n) + seed).astype(np.float64)
    if key.endswith("CLOSE"):
        return Batch(index, {"Close": base * 1.5})
    return Batch(index, {
        "Open": base.astype("f4"), "High": (base + 2).astype("f4"), "Low": (base - 1).astype("f4"),
        "Close": (base + 0.5).astype("f4"), "Volume": (np.arange(n, dtype=np.int64) * 7 + seed),
    })  # fmt: skip


def populate(backend: Backend) -> None:
    """Write :data:`DATA` through ``backend`` (a writable one: the local engine or a server)."""
    for key in DATA:
        backend.write(key, expected(key))


def _assert_batch(got: Batch, want: Batch) -> None:
    np.testing.assert_array_equal(got.index, want.index)
    assert list(got.columns) == list(want.columns)
    for name, arr in want.columns.items():
        assert np.asarray(got.columns[name]).dtype == arr.dtype, name
        np.testing.assert_array_equal(got.columns[name], arr)


def _slice(b: Batch, sl: slice | np.ndarray, columns: list[str] | None = None) -> Batch:
    names = columns if columns is not None else list(b.columns)
    return Batch(b.index[sl], {n: b.columns[n][sl] for n in names})


class BackendConformance:
    """The suite; subclasses provide a ``backend`` fixture (see the module docstring)."""

    def test_lists_keys_and_symbols(self, backend: Backend) -> None:
        assert backend.list_keys() == sorted(DATA)
        assert backend.list_symbols() == ["AAA", "BBB", "CCC"]

    def test_reads_every_row_across_years(self, backend: Backend) -> None:
        for key in DATA:
            (got,) = backend.query(key).values()
            _assert_batch(got, expected(key))

    def test_range_is_inclusive_at_bar_granularity(self, backend: Backend) -> None:
        want = expected("AAA/1Min/OHLCV")
        lo, hi = int(want.index[100]) + 30 * _NS, int(want.index[200]) + 59 * _NS  # inside bars 100 and 200
        (got,) = backend.query("AAA/1Min/OHLCV", start=np.datetime64(lo, "ns"), end=np.datetime64(hi, "ns")).values()
        _assert_batch(got, _slice(want, slice(100, 201)))

    def test_columns_in_the_order_asked(self, backend: Backend) -> None:
        (got,) = backend.query("AAA/1Min/OHLCV", columns=["Volume", "Epoch", "Close"]).values()
        _assert_batch(got, _slice(expected("AAA/1Min/OHLCV"), slice(None), ["Volume", "Close"]))
        with pytest.raises(SchemaMismatchError, match="Nope"):
            backend.query("AAA/1Min/OHLCV", columns=["Nope"])

    @pytest.mark.parametrize(("limit", "from_start"), [(5, False), (5, True), (200, False), (0, False)])
    def test_limit_counts_from_the_end_or_the_start(self, backend: Backend, limit: int, from_start: bool) -> None:
        want = expected("AAA/1Min/OHLCV")  # 120 bars in 2023, 180 in 2024: 200 spans both files
        n = len(want)
        sl = slice(0, limit) if from_start else slice(n - limit, n)
        (got,) = backend.query("AAA/1Min/OHLCV", limit=limit, limit_from_start=from_start).values()
        _assert_batch(got, _slice(want, sl))

    def test_patterns_resolve_in_order(self, backend: Backend) -> None:
        assert list(backend.query("BBB,AAA/1Min/OHLCV", limit=1)) == ["BBB/1Min/OHLCV", "AAA/1Min/OHLCV"]
        assert list(backend.query("*/1Min/OHLCV", limit=1)) == ["AAA/1Min/OHLCV", "BBB/1Min/OHLCV"]
        with pytest.raises(BucketNotFoundError):
            backend.query("ZZZ/1Min/OHLCV")
        with pytest.raises(BucketNotFoundError):
            backend.query("*/1H/OHLCV")

    def test_empty_range_keeps_the_schema(self, backend: Backend) -> None:
        (got,) = backend.query("CCC/1D/CLOSE", start="2030-01-01").values()
        assert len(got) == 0
        assert got.columns["Close"].dtype == np.float64

    def test_info(self, backend: Backend) -> None:
        info = backend.info("AAA/1Min/OHLCV")
        want = expected("AAA/1Min/OHLCV")
        assert (info.rows, info.first, info.last) == (len(want), int(want.index[0]), int(want.index[-1]))
        assert info.years == (2023, 2024)
        assert info.timeframe_seconds == 60
        assert info.record_type == "fixed"
        assert info.columns == (("Open", "f4"), ("High", "f4"), ("Low", "f4"), ("Close", "f4"), ("Volume", "i8"))
        with pytest.raises(BucketNotFoundError):
            backend.info("ZZZ/1Min/OHLCV")

    def test_read_mkts_and_read_dask_agree(self, backend: Backend) -> None:
        from mktsframe.io.dask import read_dask
        from mktsframe.io.pandas import read_mkts

        frame = read_mkts("AAA,BBB/1Min/OHLCV", "2024-01-01", backend=backend)
        assert list(frame["Symbol"].cat.categories) == ["AAA", "BBB"]
        assert len(frame) == 180 + 180
        lazy = read_dask("AAA,BBB/1Min/OHLCV", "2024-01-01", backend=backend)
        got = lazy.compute(scheduler="sync").reset_index().sort_values(["Epoch", "Symbol"], kind="stable")
        pd.testing.assert_frame_equal(got.set_index("Epoch"), frame, check_like=False, check_flags=False)

    @pytest.mark.parametrize(("start", "end"), [("2024-01-01", "2024-12-31"), ("2023-12-31 23:00", "2024-01-01 01:00"),
                                                ("2024-01-01 00:05", "2024-01-01 00:05"), (None, None)])  # fmt: skip
    def test_stacked_query_is_the_query_joined(self, backend: Backend, start: str | None, end: str | None) -> None:
        from mktsframe.backend.base import query_stacked
        from mktsframe.stacking import stack

        for key in ("AAA,BBB/1Min/OHLCV", "*/1Min/OHLCV", "BBB,AAA/1Min/OHLCV"):
            got = query_stacked(backend, key, start=start, end=end, columns=["Close", "Volume"])
            want = stack(backend.query(key, start=start, end=end, columns=["Close", "Volume"]))
            assert got.keys == want.keys
            np.testing.assert_array_equal(got.index, want.index)
            np.testing.assert_array_equal(got.which, want.which)
            assert list(got.columns) == ["Close", "Volume"]
            for name, values in want.columns.items():
                np.testing.assert_array_equal(got.columns[name], values)
                assert got.columns[name].dtype == values.dtype

    def test_capabilities_are_what_it_does(self, backend: Backend) -> None:
        caps = capabilities(backend)
        key = "ZZW/1Min/OHLCV"
        batch = _slice(expected("AAA/1Min/OHLCV"), slice(0, 3))
        if not caps.write or getattr(backend, "read_only", False):
            with pytest.raises(ReadOnlyError):
                backend.write(key, batch)
            assert key not in backend.list_keys()
        else:
            backend.write(key, batch)
            try:
                (got,) = backend.query(key).values()
                _assert_batch(got, batch)
                if caps.delete:
                    assert backend.delete(key, start=np.datetime64(int(batch.index[0]), "ns"),
                                          end=np.datetime64(int(batch.index[0]), "ns")) == 1  # fmt: skip
            finally:
                if caps.delete:
                    backend.destroy(key)
        if not caps.delete:
            with pytest.raises((ReadOnlyError, MktsError)):
                backend.destroy("AAA/1Min/OHLCV")
            assert "AAA/1Min/OHLCV" in backend.list_keys()

    def test_spec_reopens_the_same_data_elsewhere(self, backend: Backend) -> None:
        if not capabilities(backend).pickle_spec:
            pytest.skip("this backend declares no picklable spec")
        spec: Any = pickle.loads(pickle.dumps(backend.spec))  # type: ignore[attr-defined]
        other = spec.open()
        try:
            assert other.list_keys() == backend.list_keys()
            (got,) = other.query("CCC/1D/CLOSE").values()
            _assert_batch(got, expected("CCC/1D/CLOSE"))
        finally:
            other.close()
