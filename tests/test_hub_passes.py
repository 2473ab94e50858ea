"""``CommitHub`` on an event loop (the server's mode): delivery passes, in commit order, with
commits coalesced while the passes' share of the loop is paid back, and a lone commit pushed at once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from mktsframe.backend.base import Batch
from mktsframe.streaming import hub as hub_module
from mktsframe.streaming.hub import CommitHub
from mktsframe.streaming.messages import Chunk, Notice
from mktsframe.streaming.patterns import StreamPatterns

NS = 1_000_000_000
T0 = 1_704_067_200
KEY = "BTC/1Min/OHLCV"


class Recorder:
    """A sink that keeps what each ``put_many`` brought (the server's ``/ws`` outlet gets one per pass)."""

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []

    def put(self, item: Any) -> None:
        self.calls.append([item])

    def put_many(self, items: list[Any]) -> None:
        self.calls.append(items)

    def close(self) -> None:
        pass

    def rows(self) -> list[float]:
        return [float(v) for items in self.calls for it in items if isinstance(it, Chunk)
                for v in it.batch.columns["Close"]]


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def settle(loop: asyncio.AbstractEventLoop) -> None:
    """Wait until the loop has run everything queued before now (callbacks queued later run later)."""
    asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(5)


def write(engine: Any, i: int) -> None:
    engine.write(KEY, Batch(np.array([(T0 + 60 * i) * NS]), {"Close": np.array([float(i)])}))


def test_a_lone_commit_is_delivered_at_once(open_engine: Any, loop: asyncio.AbstractEventLoop) -> None:
    engine = open_engine()
    hub = CommitHub(engine, loop=loop)
    sinks = [Recorder() for _ in range(40)]  # more than one slice: the first slice goes at once
    for s in sinks:
        hub.subscribe(StreamPatterns(["BTC/*/*"]), s)
    write(engine, 0)
    settle(loop)
    assert all(s.rows() == [0.0] for s in sinks[: hub_module.FAN_OUT_SLICE])
    for _ in range(5):
        settle(loop)
    assert all(s.rows() == [0.0] for s in sinks)
    hub.close()


def test_passes_coalesce_commits_in_order_and_share_one_list(
    open_engine: Any, loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a pass's loop time is paid back (here at 1% of the loop), commits pile up and go out
    together in the next pass: fewer ``put_many`` calls than commits, every row once, in order."""
    monkeypatch.setattr(hub_module, "FAN_OUT_SHARE", 0.01)
    monkeypatch.setattr(hub_module, "FAN_OUT_BURST", 1e-6)
    engine = open_engine()
    hub = CommitHub(engine, loop=loop)
    sinks = [Recorder() for _ in range(30)]
    for s in sinks:
        hub.subscribe(StreamPatterns(["BTC/1Min/*"]), s)
    other = Recorder()
    hub.subscribe(StreamPatterns(["ETH/*/*"]), other, notices=True)
    n = 200
    for i in range(n):
        write(engine, i)
    engine.delete(KEY, start=T0 * NS, end=T0 * NS)
    deadline = loop.time() + 60
    while any(len(s.rows()) < n for s in sinks) and loop.time() < deadline:
        settle(loop)
    for s in sinks:
        assert s.rows() == [float(i) for i in range(n)]
        assert len(s.calls) < n  # coalesced
        assert not any(isinstance(it, Notice) for items in s.calls for it in items)  # no notices asked for
    # every subscriber with the same streams got the very same list in each pass (encoded once)
    assert all(a is b for a, b in zip(sinks[0].calls, sinks[1].calls, strict=False))
    assert other.calls == []  # nothing matched ETH
    hub.close()


def test_a_commit_made_on_the_loop_is_delivered_right_after_the_callers_step(
    open_engine: Any, loop: asyncio.AbstractEventLoop
) -> None:
    """The server's inline writes run on the event loop. Their acknowledgement goes first (the
    pass must not sit between the writer and its reply), and their rows go on the loop's very next
    turn: ahead of anything queued after the write."""
    engine = open_engine()
    hub = CommitHub(engine, loop=loop)
    sink = Recorder()
    hub.subscribe(StreamPatterns(["BTC/*/*"]), sink)
    write(engine, 0)  # from this thread: tells the hub which thread is the loop's
    settle(loop)
    seen: list[list[float]] = []

    def write_on_loop() -> list[float]:
        write(engine, 1)
        loop.call_soon(lambda: seen.append(sink.rows()))  # queued after the write
        return sink.rows()  # still inside the caller's step (where the reply is sent)

    async def run() -> list[float]:
        return write_on_loop()

    assert asyncio.run_coroutine_threadsafe(run(), loop).result(10) == [0.0]
    settle(loop)
    assert seen == [[0.0, 1.0]]
    hub.close()


def test_a_group_that_hears_nothing_is_not_visited_and_update_regroups(
    open_engine: Any, loop: asyncio.AbstractEventLoop
) -> None:
    """Subscribers with the same streams form one group: a pass matches once per group and never
    calls the members of a group that hears none of its items; ``update`` moves a subscriber."""

    class Untouchable(Recorder):
        def put_many(self, items: list[Any]) -> None:
            raise AssertionError("a subscriber that hears nothing was handed items")

    engine = open_engine()
    hub = CommitHub(engine, loop=loop)
    hearing = [Recorder() for _ in range(3)]
    for r in hearing:
        hub.subscribe(StreamPatterns(["BTC/*/*"]), r)
    deaf = [hub.subscribe(StreamPatterns(["ETH/*/*"]), Untouchable()) for _ in range(20)]
    assert len(hub._groups) == 2
    write(engine, 0)
    settle(loop)
    assert all(r.rows() == [0.0] for r in hearing)
    assert all(a is b for a, b in zip(hearing[0].calls, hearing[1].calls, strict=True))  # one shared list

    moved = Recorder()
    sub = hub.subscribe(StreamPatterns(["ETH/*/*"]), moved)
    hub.update(sub, StreamPatterns(["BTC/1Min/*"]), notices=True)
    assert len(hub._groups) == 3
    engine.delete(KEY, start=T0 * NS, end=T0 * NS)  # a notice: only the subscriber that asked hears it
    write(engine, 1)
    settle(loop)
    assert moved.rows() == [1.0]
    assert [type(it).__name__ for items in moved.calls for it in items] == ["Notice", "Chunk"]
    assert all(r.rows() == [0.0, 1.0] for r in hearing)
    for d in deaf:
        hub.unsubscribe(d)
    assert len(hub._groups) == 2
    sub.patterns = StreamPatterns(["Z/*/*"])  # changed behind the hub's back: still found and removed
    hub.unsubscribe(sub)
    assert [len(g.subscribers) for g in hub._groups] == [3]
    hub.close()


def test_no_pass_waits_longer_than_the_cap(
    open_engine: Any, loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass made long by encoding many rows leaves a debt; at a share this small it would take
    hours to pay back, but the next pass waits at most ``max_wait``."""
    monkeypatch.setattr(hub_module, "FAN_OUT_SHARE", 1e-6)
    monkeypatch.setattr(hub_module, "FAN_OUT_SHARE_BUSY", 1e-6)
    monkeypatch.setattr(hub_module, "FAN_OUT_BURST", 1e-9)
    engine = open_engine()
    hub = CommitHub(engine, loop=loop, max_wait=0.05)
    sink = Recorder()
    hub.subscribe(StreamPatterns(["BTC/*/*"]), sink)
    engine.write(KEY, Batch((T0 + 60 * np.arange(5000)) * NS, {"Close": np.arange(5000.0)}))
    deadline = loop.time() + 10
    while len(sink.rows()) < 5000 and loop.time() < deadline:
        settle(loop)
    write(engine, 6000)  # after the long pass: it finds the credit in debt
    deadline = loop.time() + 10
    while len(sink.rows()) < 5001 and loop.time() < deadline:
        settle(loop)
    assert len(sink.rows()) == 5001
    hub.close()
    with pytest.raises(ValueError, match="max_wait"):
        CommitHub(engine, loop=loop, max_wait=-1)


def test_back_to_back_commits_lower_the_share_and_quiet_ones_restore_it(
    open_engine: Any, loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commits arriving back to back (writers bound by the loop) get ``FAN_OUT_SHARE_BUSY``; commits
    now and then get ``FAN_OUT_SHARE``; a wait never exceeds the cap when the share changes."""
    monkeypatch.setattr(hub_module, "FAN_OUT_BUSY_RATE", 200.0)  # busy: on average under 5 ms apart
    engine = open_engine(background_sync=True)  # no fdatasync per write: back to back on any disk
    hub = CommitHub(engine, loop=loop)
    sink = Recorder()
    hub.subscribe(StreamPatterns(["BTC/*/*"]), sink)
    assert hub._share() == hub_module.FAN_OUT_SHARE
    n = 300
    for i in range(n):
        write(engine, i)
    settle(loop)
    assert hub._share() == hub_module.FAN_OUT_SHARE_BUSY
    for i in range(n, n + 40):  # 20 ms apart: quiet again once the average catches up
        write(engine, i)
        threading.Event().wait(0.02)
    settle(loop)
    assert hub._share() == hub_module.FAN_OUT_SHARE
    deadline = loop.time() + 10
    while len(sink.rows()) < n + 40 and loop.time() < deadline:
        settle(loop)
    assert sink.rows() == [float(i) for i in range(n + 40)]

    # a debt run up at the quiet share is waited out for at most the cap at the busy one
    waits: list[float] = []
    monkeypatch.setattr(loop, "call_later", lambda delay, fn: waits.append(delay))
    hub._gap = 0.0  # back to back
    hub._credit = -hub_module.FAN_OUT_SHARE * hub.max_wait  # the floor at the quiet share
    hub._credit_at = time.monotonic()
    hub._schedule_pass()
    assert waits == [hub.max_wait]
    hub.close()
