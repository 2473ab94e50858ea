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
