"""Universe scale: many buckets at once (issue 19).

One commit for many buckets (``write_many``: one record, one sync, all or nothing), group commit
of concurrent writers, and a bounded set of open files: thousands of buckets under ``ulimit -n 256``
in a child process, where the old engine failed with ``EMFILE``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mktsframe.backend.base import Batch
from mktsframe.engine import Engine
from mktsframe.engine.many import PendingWrite
from mktsframe.errors import MktsError, SchemaMismatchError

NS = 1_000_000_000
T0 = pd.Timestamp("2024-01-02", tz="UTC").value


def bars(n: int, start: int = T0, step_s: int = 60, value: float = 1.0) -> Batch:
    index = start + np.arange(n, dtype=np.int64) * step_s * NS
    return Batch(index, {"Close": np.full(n, value, "f8"), "Volume": np.arange(n, dtype="i8")})


class SyncCounter:
    """Counts ``os.fdatasync`` calls on one file descriptor set (the log's), calling the real one."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, engine: Engine) -> None:
        self.calls = 0
        self._real = os.fdatasync
        self._wal_dir = str(engine.root / ".mkts" / "wal")
        monkeypatch.setattr(os, "fdatasync", self)

    def __call__(self, fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(self._wal_dir):
            self.calls += 1
        self._real(fd)


def test_write_many_is_one_record_and_one_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Engine(tmp_path) as e:
        e.write("S0/1Min/OHLCV", bars(1))  # the log's segment exists; the rest are new buckets
        counter = SyncCounter(monkeypatch, e)
        seq_before = e._wal.written_seq  # type: ignore[union-attr]
        e.write_many({f"S{i}/1Min/OHLCV": bars(3, value=float(i)) for i in range(200)})
        assert counter.calls == 1
        assert e._wal.written_seq == seq_before + 1  # type: ignore[union-attr]
        got = e.query("*/1Min/OHLCV")
        assert len(got) == 200
        assert all(np.all(b.columns["Close"] == float(k[1:].split("/")[0])) for k, b in got.items())
        # one sync per write when written one by one: what write_many saves
        counter.calls = 0
        for i in range(20):
            e.write(f"S{i}/1Min/OHLCV", bars(1, start=T0 + 3600 * NS))
        assert counter.calls == 20


def test_write_many_is_all_or_nothing(tmp_path: Path) -> None:
    with Engine(tmp_path) as e:
        e.write("A/1Min/OHLCV", bars(2))
        bad = Batch(np.array([T0], np.int64), {"Other": np.ones(1)})
        with pytest.raises(SchemaMismatchError, match="A/1Min/OHLCV"):
            e.write_many({"NEW/1Min/OHLCV": bars(5), "A/1Min/OHLCV": bad})
        assert e.list_keys() == ["A/1Min/OHLCV"]  # the new bucket was not created either
        with pytest.raises(ValueError, match="more than once"):
            e.write_many([("B/1Min/OHLCV", bars(1)), ("B/1T/OHLCV", bars(1))])
        assert e.list_keys() == ["A/1Min/OHLCV"]


def test_write_many_mixes_ticks_gaps_and_new_buckets_and_survives_replay(tmp_path: Path) -> None:
    gap = Batch(np.array([T0, T0 + 600 * NS, T0 + 60 * NS], np.int64),
                {"Close": np.array([1.0, 3.0, 2.0]), "Volume": np.array([1, 3, 2])})  # fmt: skip
    ticks = Batch(np.array([T0 + 5, T0 + 5, T0 + 1], np.int64), {"Price": np.array([1.0, 2.0, 0.5], "f4")})
    e = Engine(tmp_path)
    e.write("OLD/1Min/OHLCV", bars(1))
    e.write_many({"OLD/1Min/OHLCV": bars(2, start=T0 + 60 * NS, value=7.0), "GAP/1Min/OHLCV": gap})
    e.write_many({"EUR/1Sec/TICK": ticks}, variable_length=True)
    expect = {k: (b.index.copy(), {c: v.copy() for c, v in b.columns.items()}) for k, b in e.query(
        "OLD,GAP/1Min/OHLCV").items()}  # fmt: skip
    # Simulate a crash: the process dies without closing, so the next open replays the log.
    e._wal._fd and os.close(e._wal._fd)  # type: ignore[union-attr]
    e._wal._fd = None  # type: ignore[union-attr]
    os.close(e._lock_fd)  # type: ignore[arg-type]
    e._lock_fd = None
    e._stop.set()
    e._closed = True
    with Engine(tmp_path) as e2:
        assert e2.recovery.records >= 3
        got = e2.query("OLD,GAP/1Min/OHLCV")
        for k, (index, cols) in expect.items():
            np.testing.assert_array_equal(got[k].index, index)
            for c, v in cols.items():
                np.testing.assert_array_equal(got[k].columns[c], v)
        assert list(got["GAP/1Min/OHLCV"].columns["Close"]) == [1.0, 2.0, 3.0]
        (t,) = e2.query("EUR/1Sec/TICK").values()
        assert list(t.index - T0) == [1, 5, 5]
        assert list(t.columns["Price"]) == [0.5, 1.0, 2.0]
        assert e2.info("EUR/1Sec/TICK").record_type == "variable"


def test_concurrent_writers_share_syncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Group commit: 16 threads × 20 one-row writes to their own buckets take fewer syncs than writes,
    and every acknowledged row is there."""
    with Engine(tmp_path) as e:
        for i in range(16):
            e.write(f"T{i}/1Min/OHLCV", bars(1))
        counter = SyncCounter(monkeypatch, e)
        start = threading.Barrier(16)
        errors: list[BaseException] = []

        def writer(i: int) -> None:
            start.wait()
            try:
                for j in range(1, 21):
                    e.write(f"T{i}/1Min/OHLCV", bars(1, start=T0 + j * 60 * NS, value=float(j)))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert counter.calls < 16 * 20
        for i in range(16):
            (b,) = e.query(f"T{i}/1Min/OHLCV").values()
            assert list(b.columns["Close"]) == [1.0, *map(float, range(1, 21))]


def test_writers_on_a_slow_disk_share_most_syncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a 5 ms flush (a sleep before the real fdatasync, as on network block storage), 20 writers
    must form groups: a committed writer returns at once instead of waiting behind the next group's
    sync for the write lock (it did: 1.7 writes a sync, 50 writers 1.8x one)."""
    from mktsframe.engine import wal

    with Engine(tmp_path) as e:
        for i in range(20):
            e.write(f"G{i}/1Min/OHLCV", bars(1))
        real = wal.fdatasync
        syncs = [0]

        def slow(fd: int, what: str = "fdatasync") -> None:
            syncs[0] += 1
            time.sleep(0.005)
            real(fd, what)

        monkeypatch.setattr(wal, "fdatasync", slow)
        start = threading.Barrier(20)

        def writer(i: int) -> None:
            start.wait()
            for j in range(1, 26):
                e.write(f"G{i}/1Min/OHLCV", bars(1, start=T0 + j * 60 * NS, value=float(j)))

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert 20 * 25 / syncs[0] >= 5, f"{syncs[0]} syncs for 500 writes"
        for i in range(20):
            (b,) = e.query(f"G{i}/1Min/OHLCV").values()
            assert list(b.columns["Close"]) == [1.0, *map(float, range(1, 26))]


def test_group_commit_gives_each_write_its_own_error(tmp_path: Path) -> None:
    with Engine(tmp_path) as e:
        e.write("G0/1Min/OHLCV", bars(1))
        results: dict[int, BaseException | None] = {}
        held = threading.Event()

        def writer(i: int) -> None:
            b = Batch(np.array([T0], np.int64), {"Nope": np.ones(1)}) if i == 3 else bars(1, start=T0 + i * 60 * NS)
            try:
                e.write("G0/1Min/OHLCV" if i == 3 else f"G{i}/1Min/OHLCV", b)
                results[i] = None
            except BaseException as exc:
                results[i] = exc

        with e._write_lock:  # hold the log so that all eight queue up and commit as one group
            threads = [threading.Thread(target=writer, args=(i,)) for i in range(1, 9)]
            for t in threads:
                t.start()
            while len(e._queue.pending) < 8:
                held.wait(0.001)
        for t in threads:
            t.join()
        assert isinstance(results.pop(3), SchemaMismatchError)
        assert all(v is None for v in results.values())
        assert sorted(e.list_keys()) == sorted(["G0/1Min/OHLCV", *(f"G{i}/1Min/OHLCV" for i in range(1, 9) if i != 3)])


def _run_limited(code: str, tmp_path: Path, nofile: int = 256, **env_extra: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a child whose open-file limit (soft and hard) is ``nofile``."""
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(code))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), **env_extra}
    env.pop("MKTS_MAX_OPEN_FILES", None)
    return subprocess.run(
        ["bash", "-c", f"ulimit -n {nofile} && exec {sys.executable} {script} {tmp_path / 'root'}"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip


LIMITED = """
import os, sys, resource
import numpy as np
from mktsframe.backend.base import Batch
from mktsframe.engine import Engine

N = int(os.environ.get("N_BUCKETS", "10000"))
T0 = 1704153600 * 10**9  # 2024-01-02
root = sys.argv[1]

from mktsframe.engine.open_files import count_open_data_files

peak = [0, 0]
def check():
    f, m = count_open_data_files(root)
    peak[0], peak[1] = max(peak[0], f), max(peak[1], m)

from mktsframe.engine.mapping import HOLDS_DESCRIPTOR
e = Engine(root)
cap = e.open_files.capacity
print("soft", resource.getrlimit(resource.RLIMIT_NOFILE)[0], "capacity", cap)
if HOLDS_DESCRIPTOR:
    assert cap <= 128, cap
keys = [f"S{i:05d}/1Min/OHLCV" for i in range(N)]
# every tenth bucket has two years (last year's bar, this year's), the rest one bar this year
def rows(i):
    if i % 10:
        return Batch(np.array([T0], np.int64), {"Close": np.array([float(i)]), "Volume": np.array([i])})
    return Batch(np.array([T0 - 86400 * 10**9 * 5, T0], np.int64),
                 {"Close": np.array([1.0, float(i)]), "Volume": np.array([1, i])})
for a in range(0, N, 1000):
    e.write_many({k: rows(i) for i, k in enumerate(keys[a:a + 1000], start=a)})
    check()
for i in range(0, N, 7):  # single writes, appends
    e.write(keys[i], Batch(np.array([T0 + 60 * 10**9], np.int64), {"Close": np.array([2.0]), "Volume": np.array([2])}))
check()
got = e.query("*/1Min/OHLCV", start=T0, end=T0)
check()
assert len(got) == N and all(b.columns["Close"][0] == float(i) for i, b in enumerate(got.values()))
got = e.query("*/1Min/OHLCV")  # every year file of every bucket
check()
assert sum(len(b) for b in got.values()) == N + len(range(0, N, 10)) + len(range(0, N, 7))
infos = [e.info(k) for k in keys[:1000]]
assert all(i.rows >= 1 for i in infos)
check()
e.delete(keys[1], start=T0, end=T0)
e.destroy(keys[2])
evictions = e.open_files.evictions
e.close()
e = Engine(root)  # reopen: replay, then read everything again
got = e.query("*/1Min/OHLCV", start=T0, end=T0 + 60 * 10**9)
check()
assert len(got) == N - 1
e.close()
print("peak", *peak, "evictions", evictions, "peak_tracked", e.open_files.peak)
assert peak[0] <= (cap if HOLDS_DESCRIPTOR else 4) and peak[1] <= cap, (peak, cap)
"""


def test_thousands_of_buckets_under_ulimit_256(tmp_path: Path) -> None:
    """Maps hold no descriptor: ulimit -n 256 does not bound them, max_map_count / 8 does (and
    10,000 buckets, 11,000 year files, exceed that too: files are evicted)."""
    out = _run_limited(LIMITED, tmp_path, N_BUCKETS="10000")
    assert out.returncode == 0, out.stderr[-3000:]
    words = out.stdout.split()
    cap = int(words[words.index("capacity") + 1])
    assert cap == max(16, min(int(Path("/proc/sys/vm/max_map_count").read_text()) // 8, 8192))
    assert int(words[words.index("peak") + 1]) <= 4  # descriptors on data files: only while opening one
    assert int(words[words.index("evictions") + 1]) > 0


def test_thousands_of_buckets_under_ulimit_256_with_python_mmap(tmp_path: Path) -> None:
    """Where maps keep a descriptor (Python's mmap: other platforms), the budget follows ulimit -n."""
    out = _run_limited(LIMITED, tmp_path, N_BUCKETS="2000", MKTS_PYTHON_MMAP="1")
    assert out.returncode == 0, out.stderr[-3000:]
    words = out.stdout.split()
    assert int(words[words.index("capacity") + 1]) == 128  # half of 256, leaving descriptors for the rest
    assert int(words[words.index("evictions") + 1]) > 0


def test_ulimit_256_failed_before_the_bound(tmp_path: Path) -> None:
    """The same workload with the bound lifted and descriptor-holding maps (what the engine did
    before) runs out of descriptors: proof that the tests above exercise the limit."""
    code = LIMITED.replace("e = Engine(root)\ncap", "e = Engine(root, max_open_files=100_000)\ncap").replace(
        "    assert cap <= 128, cap", "    pass"
    )
    out = _run_limited(code, tmp_path, N_BUCKETS="600", MKTS_PYTHON_MMAP="1")
    assert out.returncode != 0
    assert "Too many open files" in out.stderr


def test_readers_never_see_a_file_closed_under_them(tmp_path: Path) -> None:
    """Capacity 2, 40 buckets × 3 years: readers and a writer in threads churn the set constantly."""
    with Engine(tmp_path, max_open_files=2) as e:
        years = [pd.Timestamp(f"{y}-06-01", tz="UTC").value for y in (2022, 2023, 2024)]
        for i in range(40):
            e.write(f"R{i}/1H/OHLCV", Batch(np.array(years, np.int64),
                                            {"Close": np.full(3, float(i)), "Volume": np.arange(3)}))  # fmt: skip
        errors: list[BaseException] = []
        stop = threading.Event()

        def reader() -> None:
            try:
                while not stop.is_set():
                    got = e.query("*/1H/OHLCV")
                    assert all(len(b) >= 3 and b.columns["Close"][0] == float(k[1:].split("/")[0])
                               for k, b in got.items())  # fmt: skip
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=reader) for _ in range(2)]
        for t in threads:
            t.start()
        for j in range(200):
            row = Batch(np.array([years[j % 3] + 3600 * NS * (1 + j)], np.int64),
                        {"Close": np.array([float(j % 40)]), "Volume": np.array([j])})  # fmt: skip
            e.write(f"R{j % 40}/1H/OHLCV", row)
        stop.set()
        for t in threads:
            t.join()
        assert not errors, errors[0]
        assert e.open_files.evictions > 100
        assert len(e.open_files) <= 2


def test_cached_catalog_follows_creates_and_destroys(tmp_path: Path) -> None:
    """Listing and ``*`` resolution use a cached key list; a reader in another engine (as in another
    process) sees the writer's new and destroyed buckets at once."""
    with Engine(tmp_path) as w, Engine(tmp_path, read_only=True) as r:
        w.write("A/1Min/OHLCV", bars(1))
        assert r.list_keys() == w.list_keys() == ["A/1Min/OHLCV"]
        w.write_many({"B/1Min/OHLCV": bars(1), "C/1H/OHLCV": bars(1, step_s=3600)})
        assert r.list_keys() == ["A/1Min/OHLCV", "B/1Min/OHLCV", "C/1H/OHLCV"]
        assert list(r.query("*/1Min/OHLCV")) == ["A/1Min/OHLCV", "B/1Min/OHLCV"]
        w.create("D/1D/OHLCV", [("Close", "f8")])
        assert "D/1D/OHLCV" in r.list_keys()
        w.destroy("A/1Min/OHLCV")
        assert list(w.query("*/1Min/OHLCV")) == list(r.query("*/1Min/OHLCV")) == ["B/1Min/OHLCV"]
        assert r.list_symbols() == ["B", "C", "D"]


def test_reads_and_appends_by_position_match_mapped_ones(tmp_path: Path) -> None:
    """With the open set full, year files are read and appended by position (year_io): every query
    (ranges, limits from either end, gaps, several years) matches an engine that maps everything."""
    rng = np.random.default_rng(7)
    small, big = Engine(tmp_path / "small", max_open_files=2), Engine(tmp_path / "big", max_open_files=1000)
    try:
        y = [pd.Timestamp(f"{yr}-12-31 22:00", tz="UTC").value for yr in (2022, 2023)]
        for step in range(40):
            key = f"P{step % 12}/1H/OHLCV"
            start = y[step % 2] + int(rng.integers(0, 6)) * 3600 * NS
            n = int(rng.integers(1, 5))
            index = start + np.sort(rng.choice(8, n, replace=False)).astype(np.int64) * 3600 * NS
            b = Batch(index, {"Close": rng.random(n), "Volume": rng.integers(0, 100, n)})
            small.write(key, b)
            big.write(key, b)
        assert small.open_files.full
        lo, hi = y[0], y[1] + 10 * 3600 * NS
        for key in [f"P{i}/1H/OHLCV" for i in range(12)]:
            for kw in ({}, {"start": lo + 3 * 3600 * NS}, {"end": hi - 30 * 3600 * NS}, {"limit": 3},
                       {"limit": 2, "limit_from_start": True}, {"start": y[1], "limit": 1}):  # fmt: skip
                (a,) = small.query(key, **kw).values()  # type: ignore[arg-type]
                (b,) = big.query(key, **kw).values()  # type: ignore[arg-type]
                np.testing.assert_array_equal(a.index, b.index)
                for c in b.columns:
                    np.testing.assert_array_equal(a.columns[c], b.columns[c])
        small.close()
        small = Engine(tmp_path / "small", max_open_files=1000)  # appended by position, checkpointed: all there
        for key in [f"P{i}/1H/OHLCV" for i in range(12)]:
            (a,), (b,) = small.query(key).values(), big.query(key).values()
            np.testing.assert_array_equal(a.columns["Close"], b.columns["Close"])
    finally:
        small.close()
        big.close()


def test_a_queued_write_is_never_acknowledged_when_its_committer_fails(tmp_path: Path) -> None:
    """Group commit: if the thread committing a group dies before reaching a write (here: an
    interrupt while committing the first), the other writes of the group get an error, not success."""
    with Engine(tmp_path) as e:
        group = [PendingWrite(f"Q{i}/1Min/OHLCV", bars(1), False, rows=1) for i in range(3)]
        group.insert(1, PendingWrite("BAD/1Min/OHLCV", bars(5000), False, rows=5000))  # committed alone

        def interrupted(w: PendingWrite) -> None:
            raise KeyboardInterrupt

        e._commit_alone = interrupted  # type: ignore[method-assign]
        with pytest.raises(KeyboardInterrupt):
            e._commit_queued(group)
        assert all(w.done for w in group)
        assert all(isinstance(w.error, MktsError) for w in group[2:])


def test_a_write_by_the_thread_holding_the_write_lock_commits_the_queue(tmp_path: Path) -> None:
    """The server writes on its event loop inside ``writes_without_waiting`` (holding the write
    lock). A write queued meanwhile by another thread (a bgworker) is at the head of the queue,
    waiting for that lock: the holder's own write commits both instead of queueing behind it,
    where the two waited for each other for good (seen as a hung server in the plugin test)."""
    with Engine(tmp_path) as e:
        e.write("A/1Min/OHLCV", bars(1))
        e.write("B/1Min/OHLCV", bars(1))
        done = threading.Event()
        other = threading.Thread(target=e.write, args=("B/1Min/OHLCV", bars(1, start=T0 + 60 * NS)))

        def holder() -> None:
            with e.writes_without_waiting() as fast:
                assert fast
                other.start()
                deadline = time.monotonic() + 10
                while not e._queue.pending and time.monotonic() < deadline:
                    time.sleep(0.001)
                assert e._queue.pending, "the other write did not queue"
                e.write("A/1Min/OHLCV", bars(1, start=T0 + 60 * NS))
            done.set()

        t = threading.Thread(target=holder, daemon=True)
        t.start()
        assert done.wait(10), "the lock holder's write waited behind the queue"
        other.join(timeout=10)
        assert not other.is_alive()
        assert all(len(e.query(f"{k}/1Min/OHLCV")[f"{k}/1Min/OHLCV"]) == 2 for k in "AB")


def test_only_the_head_of_the_write_queue_polls_the_lock(tmp_path: Path) -> None:
    """Writers queued behind a busy write lock do not all poll it (50 of them polling every 2 ms
    cost the server more CPU than the writes): only the head tries, the rest sleep until their
    write is committed, and every one of them returns, committed, once the lock is free."""
    with Engine(tmp_path) as e:
        e.write("W0/1Min/OHLCV", bars(1))

        class CountingLock:
            def __init__(self, lock: threading.RLock) -> None:
                self.lock, self.tries = lock, 0

            def acquire(self, blocking: bool = True) -> bool:
                self.tries += not blocking
                return self.lock.acquire(blocking)

            def release(self) -> None:
                self.lock.release()

            def __enter__(self) -> None:
                self.lock.acquire()

            def __exit__(self, *exc: object) -> None:
                self.lock.release()

        counting = CountingLock(e._write_lock)
        e._write_lock = counting  # type: ignore[assignment]
        counting.acquire()  # a long operation holds the write lock
        writers = [threading.Thread(target=e.write, args=(f"W{i}/1Min/OHLCV", bars(1))) for i in range(1, 21)]
        for t in writers:
            t.start()
        time.sleep(0.3)
        tries = counting.tries
        counting.release()
        for t in writers:
            t.join(timeout=10)
        assert not any(t.is_alive() for t in writers)
        # 0.3 s at one try per 2 ms is ~150 for the head alone; 20 writers polling made ~3,000
        assert tries < 600, tries
        assert all(len(e.query(f"W{i}/1Min/OHLCV")[f"W{i}/1Min/OHLCV"]) == 1 for i in range(21))


def test_a_checkpoint_after_a_wide_write_is_one_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each msync of a map is an fdatasync of its file: after a write_many to many buckets the
    checkpoint syncs the file system once instead of every year file (5,000 buckets: ~5 s)."""
    import mktsframe.engine.engine as engine_module
    import mktsframe.engine.writes as writes_module
    from mktsframe.engine.year_file import YearFile

    calls = {"msync": 0, "syncfs": 0}
    flush, syncfs = YearFile.flush, engine_module.sync_filesystem

    def counted_flush(self: YearFile) -> None:
        calls["msync"] += self.dirty
        flush(self)

    def counted_syncfs(path: Path) -> None:
        calls["syncfs"] += 1
        syncfs(path)

    monkeypatch.setattr(YearFile, "flush", counted_flush)
    monkeypatch.setattr(engine_module, "sync_filesystem", counted_syncfs)  # checkpoints
    monkeypatch.setattr(writes_module, "sync_filesystem", counted_syncfs)  # files a write creates
    t = np.array([pd.Timestamp("2024-01-02", tz="UTC").value])
    with Engine(tmp_path) as e:
        e.write_many({f"W{i}/1Min/X": Batch(t, {"Close": np.array([float(i)])}) for i in range(40)})
        created = calls["syncfs"]  # new files are made durable together too
        e.checkpoint()
        assert calls == {"msync": 0, "syncfs": created + 1}
        e.write("W0/1Min/X", Batch(t + 60 * 10**9, {"Close": np.array([1.0])}))
        e.checkpoint()  # one file changed: its own msync
        assert calls == {"msync": 1, "syncfs": created + 1}
    with Engine(tmp_path) as e:
        assert len(e.query("*/1Min/X")) == 40
