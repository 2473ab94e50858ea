"""A universe through the server in one set of arrays. Reads: the engine's grid read, encoded
whole, and its client side (``HTTPBackend.query_stacked``): the reply must be exactly the one the
bucket-by-bucket path sends, keys with no rows included, and ``max_reply_rows`` must still bound
what a request can make the server allocate. Writes: ``HTTPBackend.write_stacked`` sends one
dataset and the server stores it with one ``write_stacked``, with the per-key path's result and
refusals."""

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
from mktsframe.errors import MktsError, SchemaMismatchError
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


def _http(backend: LocalBackend, config: Config | None = None) -> HTTPBackend:
    return HTTPBackend("http://in-process", transport=InProcess(JsonRpc(Service(backend, config or Config(), "test"))))


def _universe_frame(minute: int, keys: list[str] = KEYS, rows_each: int = 1) -> pd.DataFrame:
    at = pd.DatetimeIndex([pd.Timestamp((T0 + 60 * (minute + r)) * NS, tz="UTC") for r in range(rows_each)
                           for _ in keys], name="Epoch")  # fmt: skip
    n = len(at)
    symbols = [k.split("/")[0] for _ in range(rows_each) for k in keys]
    values = {"Close": np.linspace(1.0, 2.0, n), "Volume": np.arange(n, dtype=np.int64)}
    return pd.DataFrame({"Symbol": symbols, **values}, index=at)


@pytest.mark.parametrize("rows_each", [1, 3], ids=["cross-section", "three-bars-each"])
def test_stacked_write_through_the_server_is_one_commit_with_the_local_result(
    engine: Engine, tmp_path: Path, rows_each: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = _universe_frame(2000, rows_each=rows_each)
    be = _http(LocalBackend(engine))
    seq = engine._wal.written_seq  # type: ignore[union-attr]

    def per_key(*_: object, **__: object) -> None:
        raise AssertionError("the server planned the write key by key")

    monkeypatch.setattr(Engine, "write_many", per_key)
    frame.to_mkts("*/1Min/OHLCV", backend=be)
    monkeypatch.undo()
    assert engine._wal.written_seq == seq + 1  # type: ignore[union-attr]
    with Engine(tmp_path / "other") as e2:
        for k in KEYS:  # the same buckets, written locally from the same frame
            e2.create(k, [("Close", "f8"), ("Volume", "i8")])
        frame.to_mkts("*/1Min/OHLCV", backend=LocalBackend(e2))
        start, end = (T0 + 60 * 2000) * NS, (T0 + 60 * (2000 + rows_each)) * NS
        got = pd.read_mkts("*/1Min/OHLCV", start=start, end=end, backend=be)
        want = pd.read_mkts("*/1Min/OHLCV", start=start, end=end, backend=LocalBackend(e2))
    pd.testing.assert_frame_equal(got, want)
    assert len(got) == N * rows_each


def test_stacked_writes_the_server_plans_key_by_key(engine: Engine) -> None:
    """New buckets, and a bucket of another schema among them, take the per-key plan: same rows."""
    be = _http(LocalBackend(engine))
    engine.create("ODD/1Min/OHLCV", [("Close", "f4"), ("Volume", "i8")])
    keys = [*KEYS[:3], "NEW1/1Min/OHLCV", "ODD/1Min/OHLCV"]
    frame = _universe_frame(2100, keys=keys)
    frame.to_mkts("*/1Min/OHLCV", backend=be)
    at = (T0 + 60 * 2100) * NS
    for k, (_, row) in zip(keys, frame.iterrows(), strict=True):
        got = engine.query(k, start=at, end=at)[k]
        assert got.columns["Close"].tolist() == [np.float32(row["Close"]) if k.startswith("ODD") else row["Close"]]
    assert engine.info("NEW1/1Min/OHLCV").rows == 1


def test_refused_stacked_writes_store_nothing(engine: Engine) -> None:
    be = _http(LocalBackend(engine))
    frame = _universe_frame(2200)
    lossy = frame.assign(Volume=frame["Volume"] + 0.5)  # floats into an integer column lose data
    with pytest.raises(SchemaMismatchError):
        lossy.to_mkts("*/1Min/OHLCV", backend=be)
    extra = frame.assign(Other=1.0)
    with pytest.raises(SchemaMismatchError):
        extra.to_mkts("*/1Min/OHLCV", backend=be)
    no_add = _http(LocalBackend(engine), Config(enable_add=False))
    with pytest.raises(MktsError, match="enable_add"):
        _universe_frame(2200, keys=[*KEYS, "BRAND/1Min/OHLCV"]).to_mkts("*/1Min/OHLCV", backend=no_add)
    at = (T0 + 60 * 2200) * NS
    assert all(len(b) == 0 for b in engine.query("*/1Min/OHLCV", start=at, end=at).values())
    frame.to_mkts("*/1Min/OHLCV", backend=no_add)  # existing buckets only: allowed, one commit
    assert all(len(b) == 1 for b in engine.query("*/1Min/OHLCV", start=at, end=at).values())


def test_dataset_key_rows_are_checked_in_bulk_as_one_by_one() -> None:
    """Key rows of a universe are validated at once; every bad entry still gets its precise error."""
    from mktsframe.backend import nmds

    n = 6
    ds = {"names": ["Epoch", "Close"], "types": ["i8", "f8"], "length": n,
          "data": [np.arange(n, dtype="<i8").tobytes(), np.ones(n).tobytes()]}  # fmt: skip
    good = nmds.decode({**ds, "startindex": {"A": 0, "B": 2, "C": 6}, "lengths": {"A": 2, "B": 4, "C": 0}})
    assert good.slices == {"A": (0, 2), "B": (2, 4), "C": (6, 0)}
    big = 2**62
    bad = [
        ("exceed length", {"A": big}, {"A": big}),  # first + count overflows int64: still refused
        ("exceed length", {"A": 5}, {"A": 2}),
        (r"startindex\['A'\] must be a non-negative integer", {"A": True}, {"A": 1}),
        (r"lengths\['A'\] must be a non-negative integer", {"A": 0}, {"A": -1}),
        ("keys must be strings", {1: 0}, {1: 1}),
    ]
    for match, starts, lengths in bad:
        with pytest.raises(ValueError, match=match):
            nmds.decode({**ds, "startindex": starts, "lengths": lengths})


def test_the_remembered_key_list_follows_destroys_and_recreates(engine: Engine) -> None:
    """The server remembers the last universe's buckets and schema. After a destroy, or a bucket
    made again with another schema, between two writes, the next write still stores exactly
    what it should."""
    be = _http(LocalBackend(engine))
    _universe_frame(2300).to_mkts("*/1Min/OHLCV", backend=be)
    be.destroy(KEYS[1])
    _universe_frame(2301).to_mkts("*/1Min/OHLCV", backend=be)  # made again by the write
    assert engine.info(KEYS[1]).rows == 1
    be.destroy(KEYS[2])
    be.create(KEYS[2], [("Close", "f4"), ("Volume", "i8")])
    frame = _universe_frame(2302)
    frame.to_mkts("*/1Min/OHLCV", backend=be)
    at = (T0 + 60 * 2302) * NS
    (got,) = engine.query(KEYS[2], start=at, end=at).values()
    assert got.columns["Close"].dtype == np.float32
    assert got.columns["Close"].tolist() == [np.float32(frame["Close"].iloc[2])]
    for k in (KEYS[0], KEYS[3]):
        (row,) = engine.query(k, start=at, end=at).values()
        assert len(row) == 1


def test_universe_through_a_real_server_and_pymarketstore(server_factory, tmp_path: Path) -> None:
    """The real server process: pymarketstore's multi-symbol query over a range (the grid path)
    gets what the local engine holds; a universe written as one frame over HTTP is one commit that
    ``/ws`` subscribers hear bucket by bucket, and reads back over HTTP as written."""
    import time

    import pymarketstore as pymkts

    import mktsframe

    root = tmp_path / "data"
    with Engine(root) as e:
        e.write_many({k: Batch((T0 + 60 * np.arange(30)) * NS, {"Close": np.arange(30.0) + i,
                                                                "Volume": np.arange(30) + i})
                      for i, k in enumerate(KEYS)})  # fmt: skip
    server = server_factory(root=root)
    symbols = [k.split("/")[0] for k in KEYS[::4]]
    reply = pymkts.Client(server.rpc).query(pymkts.Params(symbols, "1Min", "OHLCV", start=T0 + 600, end=T0 + 1200))
    frames = {s: ds.df() for s, ds in reply.by_symbols().items()}
    assert sorted(frames) == sorted(symbols)
    for s in symbols:
        i = KEYS.index(f"{s}/1Min/OHLCV")
        assert frames[s]["Close"].tolist() == [float(m + i) for m in range(10, 21)]
        assert frames[s]["Volume"].tolist() == [m + i for m in range(10, 21)]
    with mktsframe.connect(server.url) as db:
        heard: list[object] = []
        frame = _universe_frame(100)
        with db.subscribe("*/1Min/OHLCV", callback=heard.append):
            time.sleep(0.3)
            frame.to_mkts("*/1Min/OHLCV", backend=db)
            deadline = time.monotonic() + 30
            while len(heard) < N and time.monotonic() < deadline:
                time.sleep(0.05)
        assert len(heard) >= N
        at = (T0 + 60 * 100) * NS
        back = pd.read_mkts("*/1Min/OHLCV", start=at, end=at, backend=db)
    assert list(back["Symbol"]) == [k.split("/")[0] for k in KEYS]
    np.testing.assert_array_equal(back["Close"].to_numpy(), frame["Close"].to_numpy())
    np.testing.assert_array_equal(back["Volume"].to_numpy(), frame["Volume"].to_numpy())


def test_a_remembered_key_list_never_gets_around_enable_add(engine: Engine) -> None:
    """A bucket destroyed after the server remembered the universe's key list is one the next
    write would create: with ``enable_add: false`` that write is refused, with nothing stored."""
    be = _http(LocalBackend(engine), Config(enable_add=False))
    _universe_frame(2400).to_mkts("*/1Min/OHLCV", backend=be)  # all exist: allowed, and remembered
    engine.destroy(KEYS[4])  # heard by the service (a commit listener)
    with pytest.raises(MktsError, match="enable_add"):
        _universe_frame(2401).to_mkts("*/1Min/OHLCV", backend=be)
    assert KEYS[4] not in engine.list_keys()
    at = (T0 + 60 * 2401) * NS
    assert all(len(b) == 0 for b in engine.query("*/1Min/OHLCV", start=at, end=at).values())
