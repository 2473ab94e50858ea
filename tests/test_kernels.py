"""The compiled universe-read kernels (numba, the ``fast`` extra): they are taken when a read spans
enough files, give exactly what the numpy loops give, and hand back to numpy where a file's
watermarks cannot be trusted (tests/test_stacked_reads.py runs its whole suite on both paths)."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mktsframe
import mktsframe.engine.reads as reads
from mktsframe.backend.base import Batch
from mktsframe.engine import kernels

NS = 1_000_000_000
T0 = pd.Timestamp("2024-12-30", tz="UTC").value  # two days before a year end
MIN = 60 * NS
N = 80  # buckets: above kernels.MIN_FILES, so the default threshold applies


def _universe(root: Path) -> list[str]:
    """``N`` symbols over four days across a year end: full, holey, late, early and empty ones."""
    keys = [f"K{i:03d}/1Min/OHLCV" for i in range(N)]
    slots = np.arange(4 * 1440, dtype=np.int64)
    with mktsframe.connect(root) as be:
        items = []
        for i, k in enumerate(keys):
            pick = {0: slots[slots % 5 != 2], 1: slots[1000:], 2: slots[:3000], 3: slots[:3]}.get(i % 7, slots)
            if i % 7 == 3:
                pick = pick - 20 * 1440  # nothing in the ranges read below
            t = T0 + pick * MIN
            rng = np.random.default_rng(i)
            items.append((k, Batch(t, {"Open": rng.random(t.size), "Volume": rng.integers(0, 9, t.size)})))
        be.write_many(items)
    return keys


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kernels")
    _universe(path)
    return path


def _both(be, start: int, end: int, monkeypatch: pytest.MonkeyPatch, **kw) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The same read through the kernels (counting their calls) and through numpy."""
    calls = {"cross_section": 0, "grid_fill": 0}
    for name in calls:
        real = getattr(kernels, name)

        def counted(*a, _real=real, _name=name):
            calls[_name] += 1
            return _real(*a)

        monkeypatch.setattr(kernels, name, counted)
    monkeypatch.delenv("MKTS_NO_NUMBA", raising=False)
    compiled = pd.read_mkts("*/1Min/OHLCV", start=start, end=end, backend=be, **kw)
    monkeypatch.setenv("MKTS_NO_NUMBA", "1")
    plain = pd.read_mkts("*/1Min/OHLCV", start=start, end=end, backend=be, **kw)
    monkeypatch.delenv("MKTS_NO_NUMBA")
    return compiled, plain, calls


@pytest.mark.parametrize(
    ("first", "last", "kernel"),
    [
        (1500, 1500, "cross_section"),  # every kind of bucket, one with a hole at this bar
        (1502, 1502, "cross_section"),
        (1440, 2 * 1440 - 1, "grid_fill"),  # the last day of 2024: holes, so a masked grid
        (1000, 3 * 1440 + 5, "grid_fill"),  # across the year end: a grid per year
    ],
)
def test_kernels_are_taken_and_agree_with_numpy(root: Path, monkeypatch: pytest.MonkeyPatch,
                                                first: int, last: int, kernel: str) -> None:  # fmt: skip
    assert kernels.available()
    with mktsframe.connect(root) as be:
        compiled, plain, calls = _both(be, T0 + first * MIN, T0 + last * MIN, monkeypatch)
        assert calls[kernel] > 0
        pd.testing.assert_frame_equal(compiled, plain)
        assert len(compiled) > 0
        compiled, plain, _ = _both(be, T0 + first * MIN, T0 + last * MIN, monkeypatch, columns=["Volume"])
        pd.testing.assert_frame_equal(compiled, plain)


def test_a_read_only_root_and_its_appends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader of a root another process writes reads the watermarks from the shared maps: it sees
    the writer's new bars through the kernels as it does through numpy."""
    _universe(tmp_path)
    t = T0 + 4 * 1440 * MIN  # after every bar
    with mktsframe.connect(tmp_path, read_only=True) as ro:
        compiled, plain, _ = _both(ro, t, t, monkeypatch)
        assert len(compiled) == len(plain) == 0
        write = (
            "import sys, numpy as np, mktsframe\n"
            "from mktsframe.backend.base import Batch\n"
            "with mktsframe.connect(sys.argv[1]) as be:\n"
            f"    be.write_many([(f'K{{i:03d}}/1Min/OHLCV', Batch(np.array([{t}]), {{'Open': np.ones(1), "
            f"'Volume': np.ones(1, np.int64)}})) for i in range(0, {N}, 2)])\n"
        )
        subprocess.run([sys.executable, "-c", write, str(tmp_path)], check=True)
        compiled, plain, calls = _both(ro, t, t, monkeypatch)
        assert calls["cross_section"] > 0
        pd.testing.assert_frame_equal(compiled, plain)
        assert len(compiled) == N // 2


def test_implausible_watermarks_take_the_numpy_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = _universe(tmp_path)
    bad = tmp_path / keys[5] / "2024.bin"
    with open(bad, "r+b") as f:  # an unchecksummed hint: a read-only open pins a scanned extent
        f.seek(kernels.MARKS_OFFSET)
        f.write(struct.pack("<qq", 10**9, -5))
    with mktsframe.connect(tmp_path, read_only=True) as ro:
        for first, last in ((1500, 1500), (1440, 2 * 1440 - 1)):
            compiled, plain, _ = _both(ro, T0 + first * MIN, T0 + last * MIN, monkeypatch)
            pd.testing.assert_frame_equal(compiled, plain)
            assert "K005" in set(compiled["Symbol"])  # its bars are served, from the scanned extent


def test_small_reads_stay_in_numpy(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``kernels.MIN_FILES`` files a read never touches the kernels (nor imports numba)."""
    with mktsframe.connect(root) as be:
        monkeypatch.setattr(kernels, "MIN_FILES", N + 1)
        compiled, plain, calls = _both(be, T0 + 1440 * MIN, T0 + 1600 * MIN, monkeypatch)
        assert calls == {"cross_section": 0, "grid_fill": 0}
        pd.testing.assert_frame_equal(compiled, plain)


def test_layouts_get_one_row_each() -> None:
    a = kernels.layout_id(100, 4096, (8192, 12288))
    assert kernels.layout_id(100, 4096, (8192, 12288)) == a
    b = kernels.layout_id(200, 4096, (8192, 12288, 16384))
    assert b != a
    table = kernels.layout_table()
    assert table[a, :4].tolist() == [100, 4096, 8192, 12288]
    assert table[b, :5].tolist() == [200, 4096, 8192, 12288, 16384]


def test_cross_section_writes_take_the_kernels_until_a_file_closes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next minute of the same buckets reuses the year files kept from the last; once one of
    them is closed (a reader made room), that write stores row by row, and the one after looks the
    files up again and takes the kernels. Every row lands wherever it went."""
    keys = _universe(tmp_path)
    monkeypatch.delenv("MKTS_NO_NUMBA", raising=False)
    stored = []
    real = kernels.write_rows
    monkeypatch.setattr(kernels, "write_rows", lambda *a: stored.append(1) or real(*a))
    symbols = pd.Categorical([k.split("/")[0] for k in keys])

    def minute(m: int) -> None:
        at = pd.DatetimeIndex([pd.Timestamp(T0 + (4 * 1440 + m) * MIN)] * N, name="Epoch")
        df = pd.DataFrame({"Symbol": symbols, "Open": np.full(N, float(m)), "Volume": np.arange(N)}, index=at)
        mktsframe.write_mkts(df, "*/1Min/OHLCV", backend=be)

    with mktsframe.connect(tmp_path) as be:
        e = be.engine
        minute(0)  # year 2025's files: some buckets only now get one
        minute(1)
        assert len(stored) >= 1
        before = len(stored)
        victim = e._last_cross_section.files[7]
        with e._apply_lock:
            e.open_files.discard(victim)
            victim.evicted()
        minute(2)
        assert len(stored) == before  # row by row: a kept file was closed
        minute(3)
        assert len(stored) == before + 1  # looked up again
        got = pd.read_mkts("*/1Min/OHLCV", start=T0 + 4 * 1440 * MIN, backend=be)
        assert len(got) == 4 * N
        assert got.groupby("Symbol", observed=True)["Open"].apply(list).map(tuple).nunique() == 1
        assert got["Open"].tolist()[::N] == [0.0, 1.0, 2.0, 3.0]


def test_rows_stored_by_the_kernels_are_always_in_the_next_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernels mark their files dirty once per checkpoint begun, not once per write: after any
    checkpoint, even one that failed half way (its files' marks already cleared), the next
    cross-section marks every file again, so no stored row is ever left out of a checkpoint."""
    from mktsframe.errors import NoSpaceError

    keys = _universe(tmp_path)
    monkeypatch.delenv("MKTS_NO_NUMBA", raising=False)
    symbols = pd.Categorical([k.split("/")[0] for k in keys])
    with mktsframe.connect(tmp_path) as be:
        e = be.engine

        def minute(m: int) -> list | None:
            at = pd.DatetimeIndex([pd.Timestamp(T0 + (4 * 1440 + m) * MIN)] * N, name="Epoch")
            df = pd.DataFrame({"Symbol": symbols, "Open": np.full(N, float(m)), "Volume": np.arange(N)}, index=at)
            mktsframe.write_mkts(df, "*/1Min/OHLCV", backend=be)
            kept = e._last_cross_section
            return None if kept is None else kept.files

        minute(0)
        files = minute(1)  # the kernels' path from here on
        assert all(f.dirty for f in files)
        with e._write_lock:
            e._checkpoint()
        assert not any(f.dirty for f in files)
        assert minute(2) is files
        assert all(f.dirty for f in files)
        real = e._wal.write_checkpoint

        def full(seq: int) -> None:
            raise NoSpaceError("the log's disk is full")

        monkeypatch.setattr(e._wal, "write_checkpoint", full)
        with e._write_lock, pytest.raises(NoSpaceError):
            e._checkpoint()  # every file flushed and unmarked, then the checkpoint failed
        monkeypatch.setattr(e._wal, "write_checkpoint", real)
        assert not any(f.dirty for f in files)
        assert minute(3) is files
        assert all(f.dirty for f in files)


def test_a_second_fill_thread_only_where_a_core_is_free_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """The grid fill splits in two when the tasks runnable right now leave a core free, whatever
    the lagging load average says; without ``/proc/stat`` the load average decides."""
    monkeypatch.setattr(reads.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(reads.os, "getloadavg", lambda: (1.9, 1.0, 1.0))
    monkeypatch.setattr(reads, "_tasks_running", lambda: 1)  # this thread alone
    assert reads._idle_core()
    monkeypatch.setattr(reads, "_tasks_running", lambda: 2)  # another task is running
    assert not reads._idle_core()
    monkeypatch.setattr(reads, "_tasks_running", lambda: None)
    assert not reads._idle_core()
    monkeypatch.setattr(reads.os, "getloadavg", lambda: (0.5, 1.0, 1.0))
    assert reads._idle_core()
    monkeypatch.setattr(reads.os, "cpu_count", lambda: 1)
    assert not reads._idle_core()
    if Path("/proc/stat").exists():
        monkeypatch.undo()
        assert reads._tasks_running() >= 1  # at least this test


def test_the_open_file_set_counts_closes_and_knows_when_an_order_still_stands() -> None:
    """What the cross-section write relies on to skip work: ``closed`` moves with every eviction
    and discard, and a ``touch_all`` stamp skips only while nothing was opened or touched since
    (otherwise the files are moved to the most recent end again, as the LRU needs)."""
    from mktsframe.engine.open_files import OpenFiles

    class File:
        dirty = False
        hold_while_dirty = False

        def evicted(self) -> None:
            pass

    files = OpenFiles(capacity=4)
    a, b, c, d, e = (File() for _ in range(5))
    for f in (a, b, c, d):
        files.add(f)
    stamp = files.touch_all([a, b])
    assert files.touch_all([a, b], unless=stamp) == stamp  # nothing in between: skipped
    files.touch(c)  # c is now the most recent
    assert files.touch_all([a, b], unless=stamp) != stamp
    assert list(files._files.values())[-2:] == [a, b]  # moved back to the most recent end
    closed = files.closed
    files.add(e)  # over capacity: the least recently used (d) is evicted
    assert files.closed == closed + 1
    files.discard(a)
    files.discard(a)  # twice: counted once
    assert files.closed == closed + 2
    # with the callers' ids: moved in one pass, and one that is no longer tracked (a) is skipped
    files.touch_all([c, b], ids=[id(c), id(b)])
    assert list(files._files.values())[-2:] == [c, b]
    files.touch_all([b, a, c], ids=[id(b), id(a), id(c)])
    assert list(files._files.values())[-2:] == [b, c]
    assert a not in files._files.values()
