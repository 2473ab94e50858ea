"""A feed's next minute finds its pages writable (``mktsframe.engine.prefault``).

Once the kernel has written a minute's pages back, the next minute's first store to each page
faults into the file system. The engine's background thread faults them in writable shortly before
the next write is due (``MADV_POPULATE_WRITE``). Counted here in page faults, not time: a
``syncfs`` stands in for the kernel's periodic writeback, and ``ru_minflt`` counts the faults the
write takes (the store faults on write-protected pages are minor faults).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mktsframe
from mktsframe.backend.local import LocalBackend
from mktsframe.engine import kernels, prefault
from mktsframe.engine.durable import sync_filesystem
from mktsframe.engine.prefault import NextBarPrefault

N = 200  # buckets: over kernels.MIN_FILES, so the feed's minute takes the compiled row stores
T0 = pd.Timestamp("2024-01-02", tz="UTC")
SYMS = pd.Categorical([f"S{i:03d}" for i in range(N)])

needs_kernels = pytest.mark.skipif(not kernels.available(), reason="the compiled kernels (numba) are not installed")


def minute(m: int) -> pd.DataFrame:
    """One OHLCV bar for each symbol at minute ``m`` after T0."""
    at = pd.DatetimeIndex([T0 + pd.Timedelta(minutes=m)] * N, name="Epoch")
    cols = {c: np.full(N, float(m)) for c in ("Open", "High", "Low", "Close")}
    return pd.DataFrame({"Symbol": SYMS} | cols | {"Volume": np.full(N, m, np.int64)}, index=at)


def faults_of(fn: Callable[[], object]) -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    fn()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.fixture
def feed(tmp_path: Path) -> Iterator[LocalBackend]:
    """A root whose 200 buckets have had three minutes written as one frame each."""
    be = mktsframe.connect(tmp_path / "root")
    for m in range(3):
        mktsframe.write_mkts(minute(m), "*/1Min/OHLCV", backend=be)
    yield be
    be.close()


def write(be: LocalBackend, m: int) -> int:
    """Write minute ``m``; the page faults it took."""
    return faults_of(lambda: mktsframe.write_mkts(minute(m), "*/1Min/OHLCV", backend=be))


@needs_kernels
def test_a_pass_leaves_the_next_minute_without_write_faults(feed: LocalBackend) -> None:
    e = feed.engine
    sync_filesystem(e.root)  # what the kernel's writeback does between two minutes
    cold = write(feed, 3)
    assert cold >= 3 * N  # each bucket: its watermarks, presence byte and five columns' pages
    sync_filesystem(e.root)
    populated = e._prefault.populate(e._apply_lock)
    assert populated >= 3 * N
    warm = write(feed, 4)
    assert warm < N // 4, (cold, warm)
    got = pd.read_mkts("*/1Min/OHLCV", start=T0 + pd.Timedelta(minutes=4), backend=feed)
    assert len(got) == N
    assert (got["Volume"] == 4).all()
    prior = pd.read_mkts("*/1Min/OHLCV", start=T0, end=T0 + pd.Timedelta(minutes=3), backend=feed)
    assert len(prior) == 4 * N
    assert list(prior["Volume"][::N]) == [0, 1, 2, 3]


@needs_kernels
def test_the_background_thread_runs_the_pass_before_the_next_minute(feed: LocalBackend) -> None:
    """A feed every 3 s (over MIN_GAP_SECONDS): the engine's own thread populates between minutes."""
    e = feed.engine
    gap = 3.0
    start = time.monotonic()
    for m in range(3, 6):
        time.sleep(max(0.0, start + (m - 3) * gap - time.monotonic()))
        write(feed, m)
        sync_filesystem(e.root)  # written back at once: only a pass makes the next minute's pages writable
    passes = e._prefault.passes
    due = e._prefault.next_pass()
    assert due is not None
    assert due <= time.monotonic() + gap
    deadline = time.monotonic() + 15
    while e._prefault.passes == passes and time.monotonic() < deadline:
        time.sleep(0.05)
    assert e._prefault.passes == passes + 1, "the background thread ran no pass"
    assert e._prefault.next_pass() is None  # one pass per write
    assert write(feed, 6) < N // 4


@needs_kernels
def test_a_file_closed_since_the_plan_stops_the_pass(feed: LocalBackend) -> None:
    """A reader may close files to make room: the pass never touches an address it cannot trust."""
    e = feed.engine
    with e._apply_lock:
        yf = e._last_cross_section.files[0]
        e.open_files.discard(yf)
        yf.evicted()
    assert e._prefault.populate(e._apply_lock) == 0
    write(feed, 3)  # stores bucket by bucket (its plan is stale too), and forgets the plan
    assert e._prefault.populate(e._apply_lock) == 0
    write(feed, 4)  # plans again: the pass after it populates
    assert e._prefault.populate(e._apply_lock) >= 3 * N
    assert write(feed, 5) < N // 4


def test_passes_follow_the_feeds_cadence(monkeypatch: pytest.MonkeyPatch) -> None:
    p = NextBarPrefault()
    files, slots = object(), np.arange(3)

    def wrote(at: float) -> None:
        p.wrote(files, slots, [8, 8], at)  # type: ignore[arg-type]

    wrote(0.0)
    assert p.next_pass() is None  # one write: no cadence yet
    wrote(60.0)
    due = 60.0 + 60.0 - prefault.LEAD_SECONDS
    assert p.next_pass() == due
    assert not p.due(due - 0.1)
    assert p.due(due)
    monkeypatch.setattr(kernels, "available", lambda: False)
    assert p.populate(None) == 0  # a pass (nothing to populate here) disarms
    assert p.next_pass() is None
    assert not p.due(due)
    p.cleaned()  # a checkpoint synced: the pages are write-protected again
    assert p.next_pass() == due
    wrote(61.0)  # the minute rewritten a second later (late trades): still due before the next minute
    assert p.next_pass() == 61.0 + 60.0 - prefault.LEAD_SECONDS
    assert not p.due(61.0 + 2 * 60.0 + 1)  # missed by a whole gap: the feed stopped, the plan is dropped
    p.cleaned()
    assert p.next_pass() is None

    q = NextBarPrefault()
    for at in (0.0, 1.0, 2.0):  # faster than MIN_GAP_SECONDS: its own writes keep the pages dirty
        q.wrote(files, slots, [8], at)  # type: ignore[arg-type]
    assert q.next_pass() is None
    gap = 3.0 * prefault.MIN_GAP_SECONDS  # a short gap: the pass starts a quarter of it early
    q.wrote(files, slots, [8], 2.0 + gap)  # type: ignore[arg-type]
    assert q.next_pass() == 2.0 + gap + gap - min(prefault.LEAD_SECONDS, gap / 4)


@needs_kernels
def test_a_kernel_without_populate_gets_no_passes(feed: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before Linux 5.14 (or off Linux) the advice is refused: no passes, writes as before."""
    assert kernels.populate_supported()  # this machine's kernel has it (the tests above rely on it)
    monkeypatch.setattr(kernels, "_populate_ok", False)
    e = feed.engine
    assert e._prefault.populate(e._apply_lock) == 0
    assert not e._prefault.supported
    plan = e._last_cross_section
    e._prefault.wrote(plan, np.zeros(N, np.int64), [8] * 5, 0.0)
    e._prefault.wrote(plan, np.zeros(N, np.int64), [8] * 5, 60.0)  # a cadence that would be due at 117.5 s
    assert e._prefault.next_pass() is None
    write(feed, 3)
    got = pd.read_mkts("*/1Min/OHLCV", start=T0 + pd.Timedelta(minutes=3), backend=feed)
    assert (got["Volume"] == 3).all()


@needs_kernels
def test_a_checkpoint_arms_the_pass_again(feed: LocalBackend) -> None:
    """A checkpoint's sync write-protects the pages a pass made writable: the pass is due again."""
    e = feed.engine
    plan = e._last_cross_section
    slots = (T0.value // 1_000_000_000 + 2 * 60 - plan.year_start) // 60  # minute 2, the last written
    e._prefault.wrote(plan, slots, [8] * 5, time.monotonic() - 60.0)
    e._prefault.wrote(plan, slots, [8] * 5, time.monotonic())  # a one-minute cadence
    assert e._prefault.populate(e._apply_lock) > 0
    assert e._prefault.next_pass() is None
    e.checkpoint()
    assert e._prefault.next_pass() is not None
