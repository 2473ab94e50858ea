"""``JsonRpc.handle_now``: the few-row appends the server runs on its event loop, and every case
that must still go to a worker thread (so the loop never waits on a lock, a slow disk or big work)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import msgpack
import numpy as np
import pytest

from mktsframe.backend import connect
from mktsframe.backend.base import Batch
from mktsframe.backend.local import LocalBackend
from mktsframe.config import Config
from mktsframe.server.rpc import JSON, LATER, MSGPACK, NOW_MAX_ROWS, JsonRpc
from mktsframe.server.service import Service

NS = 1_000_000_000
T0 = 1_704_067_200
KEY = "A/1Min/X"


def write_body(rows: int, key: str = KEY, first: int = 0) -> bytes:
    epochs = T0 + 60 * np.arange(first, first + rows, dtype="<i8")
    ds = {"names": ["Epoch", "Close"], "types": ["i8", "f8"],
          "data": [epochs.tobytes(), np.arange(rows, dtype="<f8").tobytes()], "length": rows,
          "startindex": {key: 0}, "lengths": {key: rows}}
    return msgpack.packb({"jsonrpc": "2.0", "id": "1", "method": "DataService.Write",
                          "params": {"requests": [{"dataset": ds, "is_variable_length": False}]}})


@pytest.fixture
def service(tmp_path: Path):
    with connect(tmp_path) as db:
        svc = JsonRpc(Service(db, Config(), "test"))
        db.write(KEY, Batch(np.array([(T0 - 60) * NS]), {"Close": np.array([0.0])}))
        yield db, svc


def stored(db: LocalBackend) -> int:
    (batch,) = db.query(KEY).values()
    return len(batch)


def test_a_small_write_to_a_known_bucket_runs_now(service, monkeypatch: pytest.MonkeyPatch) -> None:
    db, svc = service
    # A fast disk (a first fdatasync on a cold CI disk can take longer than FAST_SYNC_SECONDS,
    # which rightly sends writes to a worker: tested below).
    monkeypatch.setattr(db.engine._wal, "last_sync_seconds", 0.0)
    assert svc.handle_now(write_body(1), MSGPACK) is LATER  # the bucket's kind is not known yet...
    assert stored(db) == 1
    svc.handle(write_body(1), MSGPACK)  # ... until a worker has written to it once
    monkeypatch.setattr(db.engine._wal, "last_sync_seconds", 0.0)  # that write's sync, too
    reply = svc.handle_now(write_body(NOW_MAX_ROWS, first=1), MSGPACK)
    assert reply is not LATER
    assert msgpack.unpackb(bytes(reply))["result"] == {"responses": None}
    assert stored(db) == 2 + NOW_MAX_ROWS


def test_everything_else_goes_to_a_worker(service, monkeypatch: pytest.MonkeyPatch) -> None:
    db, svc = service
    svc.handle(write_body(1), MSGPACK)  # the bucket is now known
    query = msgpack.packb({"jsonrpc": "2.0", "id": "1", "method": "DataService.Query",
                           "params": {"requests": [{"destination": KEY}]}})
    as_json = json.dumps({"jsonrpc": "2.0", "id": "1", "method": "DataService.ListSymbols"}).encode()
    for body, codec in [
        (write_body(NOW_MAX_ROWS + 1, first=5), MSGPACK),  # too many rows
        (write_body(1, key="B/1Min/X"), MSGPACK),  # a bucket not known (would be created)
        (query, MSGPACK),
        (as_json, JSON),
        (b"\xc1not msgpack", MSGPACK),
    ]:
        assert svc.handle_now(body, codec) is LATER
    before = stored(db)
    monkeypatch.setattr(db.engine._wal, "last_sync_seconds", 0.0)  # only the lock says no below
    # another change under way: the write lock is taken
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with db.engine.commit_barrier():
            held.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(10)
    try:
        assert svc.handle_now(write_body(1, first=9), MSGPACK) is LATER
    finally:
        release.set()
        t.join(10)
    # the last log sync was slow: the disk may be busy
    monkeypatch.setattr(db.engine._wal, "last_sync_seconds", 0.5)
    assert svc.handle_now(write_body(1, first=9), MSGPACK) is LATER
    assert stored(db) == before


def test_a_read_only_backend_never_writes_now(tmp_path: Path) -> None:
    with connect(tmp_path) as db:
        db.write(KEY, Batch(np.array([T0 * NS]), {"Close": np.array([0.0])}))
    with connect(tmp_path, read_only=True) as ro:
        with ro.writes_without_waiting() as now:
            assert not now
        svc = JsonRpc(Service(ro, Config(), "test"))
        assert svc.handle_now(write_body(1, first=1), MSGPACK) is LATER


def test_background_sync_writes_never_wait_for_the_disk(open_engine) -> None:
    """With ``background_sync`` a write does not sync, so a slow sync in the background thread does
    not send small writes to a worker; a durable engine's slow sync does."""
    for background, expected in [(True, True), (False, False)]:
        engine = open_engine(background_sync=background)
        engine._wal.last_sync_seconds = 0.5
        with engine.writes_without_waiting() as now:
            assert now is expected
        engine.close()


def test_the_server_writes_on_its_loop_only_while_no_worker_is_busy(tmp_path: Path) -> None:
    """The app's rule: a few-row write runs on the event loop only while no other /rpc request is in
    a worker thread; otherwise it joins the workers (where concurrent writers share log syncs).
    A query held up inside a worker (the test holds the engine's apply lock) makes the next small
    write go to a worker too: without the rule it would run on the loop, and block it."""
    import asyncio

    import httpx
    from live_helpers import asgi_lifespan

    from mktsframe.config import load_config
    from mktsframe.server.app import create_app

    db = connect(tmp_path / "data")
    db.write(KEY, Batch(np.array([(T0 - 60) * NS]), {"Close": np.array([0.0])}))
    db.engine._wal.last_sync_seconds = 0.0
    threads: list[str] = []
    db.on_commit(lambda event: threads.append(threading.current_thread().name))
    app = create_app(load_config(None, root_directory=str(tmp_path / "data"), grpc_listen_port=0), backend=db)
    query = msgpack.packb({"jsonrpc": "2.0", "id": "q", "method": "DataService.Query",
                           "params": {"requests": [{"destination": KEY}]}})

    async def run() -> None:
        headers = {"Content-Type": MSGPACK}
        async with asgi_lifespan(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://in-process"
        ) as c:
            await c.post("/rpc", content=write_body(1, first=1), headers=headers)  # learns the bucket's kind
            db.engine._wal.last_sync_seconds = 0.0
            await c.post("/rpc", content=write_body(1, first=2), headers=headers)  # idle: on the loop
            assert threads[-1] == threading.current_thread().name
            with db.engine._apply_lock:
                slow = asyncio.create_task(c.post("/rpc", content=query, headers=headers))
                await asyncio.sleep(0.3)  # the query is now waiting in its worker
                db.engine._wal.last_sync_seconds = 0.0
                write = asyncio.create_task(c.post("/rpc", content=write_body(1, first=3), headers=headers))
                await asyncio.sleep(0.2)
                assert not write.done()  # waiting in a worker for the lock, not blocking this loop
            await slow
            await write
            assert threads[-1].startswith("mkts-rpc")

    try:
        asyncio.run(run())
        assert stored(db) == 4
    finally:
        db.close()
