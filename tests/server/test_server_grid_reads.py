"""A universe read through the server in one set of arrays (the engine's grid read, encoded whole),
and its client side (``HTTPBackend.query_stacked``): the reply must be exactly the one the
bucket-by-bucket path sends, keys with no rows included, and ``max_reply_rows`` must still bound
what a request can make the server allocate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mktsframe.backend.base import Batch, Capabilities, query_stacked
from mktsframe.backend.http import HTTPBackend
from mktsframe.backend.local import LocalBackend
from mktsframe.backend.nmds import EpochSeconds
from mktsframe.config import Config
from mktsframe.engine import Engine
from mktsframe.server.rpc import InProcess, JsonRpc
from mktsframe.server.service import CallError, Service
from mktsframe.stacking import stack

T0 = pd.Timestamp("2024-01-02", tz="UTC").value // 10**9
NS = 10**9
N = 40
KEYS = [f"G{i:03d}/1Min/OHLCV" for i in range(N)]


class PerBucket(LocalBackend):
    """The local backend without its grid read: the server answers bucket by bucket."""

    capabilities = Capabilities(commit_listeners=True, stacked_query=True, stacked_write=True)


@pytest.fixture
def engine(tmp_path: Path) -> Any:
    """40 buckets of one day of bars; some lack bars (every 7th bar of every 3rd bucket), one has
    none in the second half of the day, so the grid drops rows and keys come out empty."""
    rng = np.random.default_rng(7)
    with Engine(tmp_path / "data") as e:
        items = {}
        for i, k in enumerate(KEYS):
            minutes = np.arange(1440)
            if i % 3 == 0:
                minutes = minutes[minutes % 7 != 0]
            if i == 5:
                minutes = minutes[:600]
            items[k] = Batch((T0 + 60 * minutes) * NS, {"Close": rng.random(minutes.size), "Volume": minutes + i})
        e.write_many(items)
        yield e


def _plain(v: Any) -> Any:
    """A reply with its buffers as bytes, so two replies compare by value."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, EpochSeconds):
        return bytes(v)
    if isinstance(v, memoryview):
        return v.tobytes()
    return v


def _reply(backend: LocalBackend, req: dict[str, Any], config: Config | None = None) -> Any:
    return _plain(Service(backend, config or Config(), "test").query({"requests": [req]}))


@pytest.mark.parametrize(
    ("start", "end"),
    [(T0 + 600 * 60, T0 + 600 * 60), (T0, T0 + 86_399), (T0 + 900 * 60, T0 + 86_399), (T0 + 590 * 60, T0 + 610 * 60)],
    ids=["one-bar", "day", "after-one-ends", "across-the-gap"],
)
@pytest.mark.parametrize("native", [True, False], ids=["native", "pymarketstore"])
def test_grid_reply_is_the_per_bucket_reply(engine: Engine, start: int, end: int, native: bool) -> None:
    req = {"destination": "*/1Min/OHLCV", "epoch_start": start, "epoch_end": end, "mkts_native": native}
    grid = LocalBackend(engine)
    got, want = _reply(grid, req), _reply(PerBucket(engine), req)
    assert got == want
    ds = got["responses"][0]["result"]
    assert len(ds["startindex"]) == N
    assert ds["length"] == sum(ds["lengths"].values()) > 0
    assert grid.query_grid("*/1Min/OHLCV", start=start * NS, end=end * NS) is not None  # the grid answered


def test_grid_reply_with_columns_and_a_limit(engine: Engine) -> None:
    req = {"destination": "*/1Min/OHLCV", "epoch_start": T0, "epoch_end": T0 + 3599, "columns": ["Volume"],
           "mkts_native": True, "limit_record_count": 60}  # fmt: skip
    assert _reply(LocalBackend(engine), req) == _reply(PerBucket(engine), req)
    req["limit_record_count"] = 10  # below the bars in the range: bucket by bucket, same reply
    assert _reply(LocalBackend(engine), req) == _reply(PerBucket(engine), req)


def test_max_reply_rows_bounds_the_grid(engine: Engine) -> None:
    req = {"destination": "*/1Min/OHLCV", "epoch_start": T0, "epoch_end": T0 + 86_399, "mkts_native": True}
    rows = _reply(LocalBackend(engine), req)["responses"][0]["result"]["length"]
    at_bound = _reply(LocalBackend(engine), req, Config(max_reply_rows=N * 1440))
    assert at_bound["responses"][0]["result"]["length"] == rows

    with pytest.raises(CallError, match="max_reply_rows"):
        _reply(LocalBackend(engine), req, Config(max_reply_rows=rows - 1))
    # the grid is never allocated past the bound (buckets x bars); the per-bucket path then reads
    # only up to it and refuses
    assert LocalBackend(engine).query_grid("*/1Min/OHLCV", start=T0 * NS, end=(T0 + 86_399) * NS,
                                           max_rows=N * 1440 - 1) is None  # fmt: skip


@pytest.mark.parametrize(("start", "end"), [(T0 + 600 * 60, T0 + 600 * 60), (T0, T0 + 86_399), (None, None)])
def test_http_stacked_query_is_the_local_one(engine: Engine, start: int | None, end: int | None) -> None:
    local = LocalBackend(engine)
    be = HTTPBackend("http://in-process", transport=InProcess(JsonRpc(Service(local, Config(), "test"))))
    kw = {"start": None if start is None else start * NS, "end": None if end is None else end * NS}
    got = be.query_stacked("*/1Min/OHLCV", **kw)
    want = query_stacked(local, "*/1Min/OHLCV", **kw)
    assert got.keys == want.keys == tuple(KEYS)
    np.testing.assert_array_equal(got.index, want.index)
    np.testing.assert_array_equal(got.which, want.which)
    for name in ("Close", "Volume"):
        np.testing.assert_array_equal(got.columns[name], want.columns[name])
        assert got.columns[name].flags.writeable  # the caller's arrays, not views of the reply
    as_stack = stack(be.query("*/1Min/OHLCV", **kw))
    np.testing.assert_array_equal(got.index, as_stack.index)
    np.testing.assert_array_equal(got.which, as_stack.which)
    frame = pd.read_mkts("*/1Min/OHLCV", start=kw["start"], end=kw["end"], backend=be)
    pd.testing.assert_frame_equal(frame, pd.read_mkts("*/1Min/OHLCV", start=kw["start"], end=kw["end"],
                                                      backend=local))  # fmt: skip
