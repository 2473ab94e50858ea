"""Disk faults: a full disk is an error (never SIGBUS), a failed sync is never acknowledged.

The full disk is real: a 24 MiB tmpfs mounted for the test (the tests run as root; see
/work/shared/guides/real-parts.md), where 20,000-row writes used to end the process with
``Bus error`` (exit 135) and reopening the root died the same way in replay. Sync failures are
injected in a child process at the system-call wrappers (``os.fdatasync``, ``durable.msync``): the
engine sees exactly what a failing disk returns (``EIO``), then the child exits without closing
and the parent reopens the root, as after a crash.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mktsframe.engine import applied
from mktsframe.engine.engine import Engine
from mktsframe.errors import ReadOnlyError
from tests.faults_child import KEYS, NS, T0, TICK_KEYS

CHILD = Path(__file__).with_name("faults_child.py")


def mount_tmpfs(path: Path, size: str) -> None:
    """Mount a tmpfs of ``size`` at ``path`` (root only), unmounted at exit if a test does not."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.fail("the disk-full tests mount a tmpfs and must run as root (as CI does)")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    atexit.register(subprocess.run, ["umount", "-l", str(path)], check=False, capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mnt"
    mount_tmpfs(mnt, "24m")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def run_child(mode: str, root: Path) -> tuple[int, list[dict]]:
    env = {**os.environ, "PYTHONPATH": str(CHILD.parent.parent)}
    cmd = [sys.executable, str(CHILD), mode, str(root)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0, f"child {mode} exited {proc.returncode} (-7: SIGBUS)\n{proc.stderr[-3000:]}"
    return proc.returncode, events


def acked_rows(events: list[dict], destroyed: str | None = None) -> dict[str, set[int]]:
    """Minutes acknowledged per key (after ``destroyed`` was destroyed, only the later acks of it)."""
    rows: dict[str, set[int]] = {k: set() for k in KEYS}
    for ev in events:
        if ev["event"] == "ack":
            rows[ev["key"]].update(range(ev["first"], ev["first"] + ev["rows"]))
    if destroyed is not None:
        rows[destroyed] = set()
    return rows


def assert_holds(engine: Engine, rows: dict[str, set[int]]) -> None:
    """Every acknowledged minute is there, with the values written (derived from the minute)."""
    for key, minutes in rows.items():
        if not minutes:
            continue
        got = engine.query(key)[key]
        m = got.index // NS // 60 - T0 // 60
        present = set(m.tolist())
        missing = minutes - present
        assert not missing, f"{key}: {len(missing)} acknowledged rows lost (first {min(missing)})"
        np.testing.assert_array_equal(got.columns["Volume"], m.astype("f8"))
        np.testing.assert_array_equal(got.columns["Close"], (m % 1000).astype("f4"))


def fill_to_the_last_byte(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\1" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


def test_disk_full_is_an_error_and_a_log_without_room_opens_read_only(small_disk: Path) -> None:
    root = small_disk / "root"
    _, events = run_child("fill", root)
    kinds = [ev["event"] for ev in events]
    assert kinds.count("ack") >= 6, kinds
    assert "full" in kinds, kinds
    full = next(ev for ev in events if ev["event"] == "full")
    assert "no space left on the device" in full["error"]
    assert "nothing of it was stored" in full["error"]
    counts = next(ev for ev in events if ev["event"] == "counts")["counts"]
    before = acked_rows([ev for ev in events if not ev.get("after_free")])
    assert counts == {k: len(v) for k, v in before.items()}  # nothing partial; reads work on a full disk
    refused = next(ev for ev in events if ev["event"] == "refused")
    assert refused["n"] == 3
    assert refused["counts"] == counts
    assert events[-1].get("after_free")  # written again once a bucket was destroyed, without a restart
    acked = acked_rows(events, destroyed=KEYS[0])
    acked[events[-1]["key"]].update(range(events[-1]["first"], events[-1]["first"] + events[-1]["rows"]))

    # The child exited without closing: the log holds its writes. Lose a year file (as a machine crash
    # loses pages never flushed) and fill the disk: the log cannot be replayed, and the root opens
    # read-only with the reason instead of dying in replay.
    (root / "FULL1" / "1Min" / "OHLCV" / "2024.bin").unlink()
    applied.forget(root)  # a machine crash: the page cache cannot be trusted to hold the log's records
    filler = small_disk / "filler"
    fill_to_the_last_byte(filler)
    with Engine(root) as e:
        assert e.read_only
        assert e.read_only_reason is not None
        assert "could not be replayed" in e.read_only_reason
        assert "no space left" in e.read_only_reason
        with pytest.raises(ReadOnlyError, match="no space left"):
            e.write(KEYS[2], e.query(KEYS[2])[KEYS[2]])
        assert e.query(KEYS[2])[KEYS[2]].index.size > 0  # reads what the year files hold
    filler.unlink()
    with Engine(root) as e:  # room again: replay completes, every acknowledged row is back
        assert not e.read_only
        assert not e.recovery.problems
        assert_holds(e, acked)
    with Engine(root) as e:  # and after a clean close too
        assert_holds(e, acked)


def test_tick_buckets_on_a_full_disk(small_disk: Path) -> None:
    """Appends, growth of a day's file and new days: refused with nothing logged, never poisoned."""
    root = small_disk / "root"
    _, events = run_child("ticks", root)
    full = next(ev for ev in events if ev["event"] == "full")
    assert "no space left on the device" in full["error"]
    acks = [ev for ev in events if ev["event"] == "ack"]
    assert len(acks) >= 6
    counts = next(ev for ev in events if ev["event"] == "counts")["counts"]
    assert counts == {k: sum(a["rows"] for a in acks if a["key"] == k and not a.get("after_free")) for k in TICK_KEYS}
    assert acks[-1].get("after_free")  # not poisoned: once space was freed, the refused write went through
    with Engine(root) as e:
        assert not e.recovery.problems
        key = acks[-1]["key"]
        got = e.query(key)[key]
        j = got.index // NS - T0
        want = {n for a in acks if a["key"] == key for n in range(a["first"], a["first"] + a["rows"])}
        assert want <= set(j.tolist())
        np.testing.assert_array_equal(got.columns["Price"], j.astype("f8"))
        assert e.list_keys() == [key]


@pytest.mark.parametrize("mode", ["sync", "msync"])
def test_failed_sync_is_never_acknowledged_and_poisons_writes(tmp_path: Path, mode: str) -> None:
    root = tmp_path / "root"
    _, events = run_child(mode, root)
    kinds = [ev["event"] for ev in events]
    if mode == "sync":
        assert "refused" in kinds
        assert not any(ev["event"] == "ack" and ev["first"] == 500 for ev in events)
        assert "fdatasync" in next(ev for ev in events if ev["event"] == "refused")["error"]
    else:
        assert "checkpoint_failed" in kinds
        assert "checkpointed" not in kinds
    poisoned = next(ev for ev in events if ev["event"] == "poisoned")
    assert poisoned["type"] == "SyncFailedError"
    assert "refused until the root is reopened" in poisoned["error"]
    assert "create_refused" in kinds
    assert "created" not in kinds
    read = next(ev for ev in events if ev["event"] == "read")
    acked = acked_rows(events)
    assert read["rows"] == len(acked[KEYS[0]])  # reads keep working
    assert kinds[-1] == "closed"
    with Engine(root) as e:  # reopened: the log gives back every acknowledged write, writes work again
        assert_holds(e, acked)
        e.write(KEYS[0], e.query(KEYS[0])[KEYS[0]])


def test_server_on_a_full_disk_refuses_writes_and_keeps_serving(small_disk: Path, tmp_path: Path) -> None:
    """Through the real server and pymarketstore: a write that does not fit gets a clear error, reads
    and /ws streams keep working on the full disk, and writes succeed again after a destroy."""
    import msgpack
    import pymarketstore as pymkts
    import websocket

    sys.path.insert(0, str(Path(__file__).parent / "server"))
    from live_helpers import replies, start_server

    def write_error(arr: np.ndarray, key: str) -> str | None:
        """The error of a pymarketstore write (it returns MarketStore's per-request errors), or ``None``."""
        errors = [r["error"] for r in replies(client.write(arr, key)) or [] if r.get("error")]
        return errors[0] if errors else None

    server = start_server(tmp_path / "srv", root=small_disk / "root")
    ws = None
    try:
        client = pymkts.Client(server.rpc)
        dtype = [("Epoch", "i8"), ("Open", "f4"), ("High", "f4"), ("Low", "f4"), ("Close", "f4"), ("Volume", "f8")]

        def rows(first: int, n: int) -> np.ndarray:
            arr = np.zeros(n, dtype)
            m = np.arange(first, first + n)
            arr["Epoch"] = T0 + m * 60
            arr["Close"] = (m % 1000).astype("f4")
            arr["Volume"] = m.astype("f8")
            return arr

        acked: dict[str, int] = {}
        error = None
        for i in range(200):
            key = KEYS[i % 3]
            error = write_error(rows(acked.get(key, 0), 20_000), key)
            if error is not None:
                break
            acked[key] = acked.get(key, 0) + 20_000
        assert error is not None, "the disk never filled"
        assert "no space left on the device" in error
        ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws", timeout=10)
        ws.send(msgpack.dumps({"streams": [f"{KEYS[1]}"]}), opcode=websocket.ABNF.OPCODE_BINARY)
        assert msgpack.loads(ws.recv()) == {"streams": [KEYS[1]]}  # subscribing works on a full disk
        for key, n in acked.items():  # reads work on a full disk, and the refused write left nothing
            sym, tf, group = key.split("/")
            df = client.query(pymkts.Params(sym, tf, group, limit=1)).first().df()
            assert int(df["Volume"].iloc[-1]) == n - 1
        assert "no space left" in (write_error(rows(acked[KEYS[1]], 20_000), KEYS[1]) or "")
        client.destroy(KEYS[0])  # frees space: writes work again, no restart, and are pushed
        assert write_error(rows(acked[KEYS[1]], 5), KEYS[1]) is None
        msg = msgpack.loads(ws.recv())
        assert msg["key"] == KEYS[1]
        assert msg["data"]["Volume"] == float(acked[KEYS[1]])
    finally:
        if ws is not None:
            ws.close()
        server.stop()
