"""A universe behind the server under ``ulimit -n 256`` (issue 19): queries over every bucket,
multi-key writes as one commit, /ws streaming of them, and ondiskagg, while the server keeps at
most its open-file budget of data files open (the old engine died with EMFILE here)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pymarketstore as pymkts

import mktsframe
from mktsframe.backend.base import Batch
from mktsframe.engine import Engine
from mktsframe.engine.open_files import count_open_data_files

N = 2000
T0 = pd.Timestamp("2024-01-02", tz="UTC").value // 10**9
NS = 10**9
# Maps hold no descriptor, so ulimit -n 256 alone would leave room for all 2,000 buckets' maps: a
# budget of 128 maps makes the server evict while it serves.
CONFIG = {"max_open_files": 128,
          "triggers": [{"module": "ondiskagg.so", "on": "S000*/1Min/OHLCV",
                        "config": {"destinations": ["5Min"], "on": "S000*/1Min/OHLCV"}}]}  # fmt: skip


def row(i: int, minute: int) -> Batch:
    values = {"Open": np.array([1.0 + i]), "Close": np.array([2.0 + i]), "Volume": np.array([i], "i8")}
    return Batch(np.array([(T0 + 60 * minute) * NS], np.int64), values)


def test_universe_through_the_server_under_ulimit_256(server_factory, tmp_path: Path) -> None:
    root = tmp_path / "data"
    keys = [f"S{i:05d}/1Min/OHLCV" for i in range(N)]
    with Engine(root) as e:
        for a in range(0, N, 500):
            e.write_many({k: row(i, 0) for i, k in enumerate(keys[a : a + 500], start=a)})
    server = server_factory(config=CONFIG, root=root, nofile=256)
    peak = [0, 0]
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.02):
            f, m = count_open_data_files(root, server.proc.pid)
            peak[0], peak[1] = max(peak[0], f), max(peak[1], m)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with mktsframe.connect(server.url) as db:
            assert sum(k.endswith("/1Min/OHLCV") for k in db.list_keys()) == N  # (ondiskagg adds 5Min ones)
            seen: list[dict] = []
            with db.subscribe("*/1Min/OHLCV", callback=seen.append):
                time.sleep(0.5)
                # one bar to every symbol in one multi-key request: one commit
                db.write_many({k: row(i, 1) for i, k in enumerate(keys)})
                deadline = time.monotonic() + 60
                while len(seen) < N and time.monotonic() < deadline:
                    time.sleep(0.05)
            assert len(seen) >= N
            cross = pd.read_mkts("*/1Min/OHLCV", start=(T0 + 60) * NS, end=(T0 + 60) * NS, backend=db)
            assert len(cross) == N
            assert list(cross["Close"][:3]) == [2.0, 3.0, 4.0]
            whole = pd.read_mkts("*/1Min/OHLCV", backend=db)
            assert len(whole) == 2 * N
        client = pymkts.Client(server.rpc)  # the unmodified client, several symbols at once
        reply = client.query(pymkts.Params([f"S{i:05d}" for i in range(0, N, 97)], "1Min", "OHLCV"))
        assert len(reply.by_symbols()) == len(range(0, N, 97))
        deadline = time.monotonic() + 30
        agg = None
        while time.monotonic() < deadline:
            try:
                agg = client.query(pymkts.Params("S00007", "5Min", "OHLCV")).first().df()
                if len(agg) and agg["Close"].iloc[-1] == 9.0:
                    break
            except Exception:
                pass
            time.sleep(0.2)
        assert agg is not None
        assert agg["Close"].iloc[-1] == 9.0  # ondiskagg ran on the written universe
    finally:
        stop.set()
        watcher.join()
    # Maps never exceed the budget; a descriptor is only open while a file is opened or read by position.
    assert 0 < peak[1] <= 128, peak
    assert peak[0] <= 8, peak
    assert "Too many open files" not in server.output()
