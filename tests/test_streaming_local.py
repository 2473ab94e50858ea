"""``LocalBackend.subscribe``: in-process push subscriptions on a real data root (no server)."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from mktsframe.backend.base import Batch
from mktsframe.backend.local import LocalBackend
from mktsframe.errors import InvalidKeyError
from mktsframe.streaming import SlowConsumerError

NS = 1_000_000_000
T0 = 1_704_067_200  # 2024-01-01 00:00:00 UTC


def bars(seconds: list[int], close: list[float]) -> Batch:
    return Batch(np.array(seconds, dtype=np.int64) * NS, {"Close": np.array(close, dtype="f8")})


def test_async_for_hears_every_row_in_order_and_only_matching_keys(db: LocalBackend) -> None:
    key = "BTC/1Min/OHLCV"

    async def consume() -> list[dict]:
        out = []
        async with db.subscribe(["BTC/1Min/*", "*/1D/OHLCV"]) as sub:
            db.write(key, bars([T0 + 120, T0, T0 + 60], [3.0, 1.0, 2.0]))  # unsorted: pushed in time order
            db.write("ETH/1Min/OHLCV", bars([T0], [9.0]))  # not matched
            db.write("ETH/1D/OHLCV", bars([T0], [5.0]))
            db.delete(key, start=T0 * NS, end=T0 * NS)
            db.destroy(key)
            async for msg in sub:
                out.append(msg)
                if len(out) == 6:
                    return out
        return out

    out = asyncio.run(asyncio.wait_for(consume(), 20))
    assert out[:4] == [
        {"key": key, "data": {"Epoch": T0, "Close": 1.0}},
        {"key": key, "data": {"Epoch": T0 + 60, "Close": 2.0}},
        {"key": key, "data": {"Epoch": T0 + 120, "Close": 3.0}},
        {"key": "ETH/1D/OHLCV", "data": {"Epoch": T0, "Close": 5.0}},
    ]
    assert out[4] == {"notice": "deleted", "bucket": key, "start": T0 * NS, "end": T0 * NS}
    assert out[5] == {"notice": "destroyed", "bucket": key}
    assert all(isinstance(m["data"]["Epoch"], int) for m in out[:4])


def test_callback_form_runs_on_a_thread_and_stops_on_close(db: LocalBackend) -> None:
    key = "BTC/1Min/OHLCV"
    seen: list[dict] = []
    threads: set[str] = set()
    got_two = threading.Event()

    def on_message(msg: dict) -> None:
        seen.append(msg)
        threads.add(threading.current_thread().name)
        if len(seen) == 2:
            got_two.set()
        if msg["data"]["Close"] == 1.0:
            raise RuntimeError("a failing callback is logged, not fatal")

    sub = db.subscribe("BTC/*/*", callback=on_message)
    db.write(key, bars([T0], [1.0]))
    db.write(key, bars([T0 + 60], [2.0]))
    assert got_two.wait(10)
    assert [m["data"]["Close"] for m in seen] == [1.0, 2.0]
    assert threading.current_thread().name not in threads
    sub.close()
    assert sub.closed
    db.write(key, bars([T0 + 120], [3.0]))
    time.sleep(0.2)
    assert len(seen) == 2
    with pytest.raises(InvalidKeyError, match="invalid stream"):
        db.subscribe("BTC/1Min")


def test_blocking_iteration_and_since_resume(db: LocalBackend) -> None:
    key = "BTC/1Min/OHLCV"
    db.write(key, bars([T0, T0 + 60, T0 + 120], [1.0, 2.0, 3.0]))
    with db.subscribe(key, since=(T0 + 60) * NS) as sub:
        got = [sub.get(10)]  # storage is read at the first get: the cut is now
        db.write(key, bars([T0 + 180], [4.0]))
        got += [sub.get(10) for _ in range(3)]
        assert sub.get(0.2) is None
    assert [m["data"]["Epoch"] for m in got if "data" in m] == [T0 + 60, T0 + 120, T0 + 180]
    assert got[2] == {"notice": "caught_up", "rows": 2, "seq": got[2]["seq"]}
    # A write after subscribing but before the first read is in the snapshot, and only there.
    with db.subscribe(key, since=(T0 + 120) * NS) as sub:
        db.write(key, bars([T0 + 240], [5.0]))
        got = [sub.get(10) for _ in range(4)]
        assert sub.get(0.2) is None
    assert [m["data"]["Epoch"] for m in got if "data" in m] == [T0 + 120, T0 + 180, T0 + 240]
    assert got[3]["rows"] == 3


def test_tick_pushes_carry_nanoseconds(db: LocalBackend) -> None:
    """Variable-length buckets: one message per tick, Epoch in seconds plus Nanoseconds, equal
    timestamps kept, as MarketStore pushes them."""
    key = "EUR/1Sec/TICKS"
    ns = np.array([T0 * NS + 999_999_999, T0 * NS + 5, (T0 + 1) * NS, T0 * NS + 5], dtype=np.int64)
    with db.subscribe("EUR/*/*") as sub:
        db.write(key, Batch(ns, {"Bid": np.array([1.0, 2.0, 3.0, 4.0], dtype="f4")}), variable_length=True)
        got = [sub.get(10) for _ in range(4)]
    assert [(m["data"]["Epoch"], m["data"]["Nanoseconds"]) for m in got] == [
        (T0, 5), (T0, 5), (T0, 999_999_999), (T0 + 1, 0)]  # fmt: skip
    assert sorted(m["data"]["Bid"] for m in got[:2]) == [2.0, 4.0]
    assert list(got[0]["data"]) == ["Epoch", "Bid", "Nanoseconds"]


def test_slow_local_consumer_drop_oldest_and_disconnect(db: LocalBackend) -> None:
    """A subscriber that does not read never blocks the writer: drop_oldest keeps the newest rows
    and says how many were lost; disconnect ends the subscription with SlowConsumerError."""
    key = "BTC/1Min/OHLCV"
    dropping = db.subscribe(key, max_rows=5)
    strict = db.subscribe(key, max_rows=5, policy="disconnect")
    fast: list[dict] = []
    keeper = db.subscribe(key, callback=fast.append)
    try:
        for i in range(4):
            db.write(key, bars([T0 + 60 * (3 * i + j) for j in range(3)], [float(3 * i + j) for j in range(3)]))
        got = []
        while (m := dropping.get(0.5)) is not None:
            got.append(m)
        assert got[0] == {"notice": "dropped", "dropped": 7}
        assert [m["data"]["Close"] for m in got[1:]] == [7.0, 8.0, 9.0, 10.0, 11.0]
        with pytest.raises(SlowConsumerError):
            strict.get(5)
        deadline = time.monotonic() + 10
        while len(fast) < 12 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [m["data"]["Close"] for m in fast] == [float(i) for i in range(12)]
    finally:
        for s in (dropping, strict, keeper):
            s.close()
