"""Large ``/rpc`` replies: streamed from the result's buffers, byte-exact, and the server's memory bounded."""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pandas as pd
import pymarketstore as pymkts
import pytest
from live_helpers import ServerProcess

import mktsframe
from mktsframe.backend import nmds
from mktsframe.backend.base import Batch
from mktsframe.server.rpc import STREAM_MIN_BYTES, encode

pytestmark = [pytest.mark.server, pytest.mark.timeout(300)]

NS = 1_000_000_000


def _batch(rows: int, t0: int, seed: int) -> Batch:
    rng = np.random.default_rng(seed)
    index = (t0 + 60 * np.arange(rows, dtype=np.int64)) * NS
    return Batch(index, {"Close": rng.random(rows).astype("f4"), "Volume": rng.random(rows)})


def _materialised(v: object) -> object:
    """The reply as plain msgpack-able values (what the streamed bytes must equal)."""
    if isinstance(v, dict):
        return {k: _materialised(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_materialised(x) for x in v]
    if isinstance(v, (nmds.EpochSeconds, memoryview)):
        return bytes(v)
    return v


@pytest.mark.parametrize("rows", [10, STREAM_MIN_BYTES // 4 + 7])
def test_streamed_reply_is_the_packed_reply(rows: int) -> None:
    """Column buffers sent apart from the packed envelope give exactly msgpack.packb's bytes, for
    small replies (packed whole) and large ones (Close is just above the streaming size)."""
    parts = [("A/1Min/OHLCV", _batch(rows, 1_700_000_000, 1)), ("B/1Min/OHLCV", _batch(3, 1_600_000_000, 2))]
    ds_one = nmds.encode(parts[:1])
    ds_two = nmds.encode(parts)
    reply = {"jsonrpc": "2.0", "id": "7", "result": {"responses": [{"result": ds_one}, {"result": ds_two}],
                                                     "version": "v", "timezone": "UTC"}}
    want = msgpack.packb(_materialised(reply), use_bin_type=True)
    out = encode(reply, as_json=False)
    assert out.nbytes == len(want)
    assert bytes(out) == want
    got = msgpack.unpackb(want)["result"]["responses"][0]["result"]
    assert np.array_equal(np.frombuffer(got["data"][0], "<i8"), parts[0][1].index // NS)


def _anon_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("RssAnon:"))


def test_whole_bucket_queries_keep_server_memory_bounded(server_factory, tmp_path: Path) -> None:
    """A reply of ~58 MB costs the server about the result once (peak anonymous RSS sampled while it
    is served), and nothing of it stays behind: repeated whole-bucket queries do not grow the server."""
    rows = 1_800_000
    root = tmp_path / "data"
    idx = pd.date_range("2015-01-01", periods=rows, freq="1min", tz="UTC")
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"Open": rng.random(rows).astype("f4"), "Close": rng.random(rows).astype("f4"),
                          "Volume": rng.random(rows)}, index=idx)
    with mktsframe.connect(root) as db:
        frame.to_mkts("BIG/1Min/OHLCV", backend=db)
    result_bytes = rows * (8 + 4 + 4 + 8)
    del frame
    gc.collect()
    server: ServerProcess = server_factory(root=root)
    client = pymkts.Client(server.rpc)
    params = pymkts.Params("BIG", "1Min", "OHLCV", start=0)
    client.query(pymkts.Params("BIG", "1Min", "OHLCV", limit=1))  # warm: imports, catalog
    idle = _anon_bytes(server.proc.pid)
    peak = idle
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.wait(0.002):
            peak = max(peak, _anon_bytes(server.proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        for _ in range(3):
            df = client.query(params).first().df()
            assert len(df) == rows
            assert df.index[-1] == idx[-1]
            del df
            gc.collect()
    finally:
        stop.set()
        sampler.join()
    time.sleep(0.3)
    after = _anon_bytes(server.proc.pid)
    assert peak - idle <= 1.5 * result_bytes, (idle, peak, result_bytes)
    assert after - idle <= 0.25 * result_bytes, (idle, after, result_bytes)
