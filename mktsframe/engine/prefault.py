"""Make the pages a feed's next minute will store into writable before that minute arrives.

Why: a feed writes one bar to each of the same 5,000 buckets every minute, and between two minutes
the kernel writes the last minute's pages back (``vm.dirty_expire_centisecs``, 30 s, plus the
flusher's 5 s period) and write-protects them again. The next minute's first store to each page
then faults into the file system (ext4's ``page_mkwrite``): 35,000 faults, 145–170 ms measured
here, for a write that takes 4–5 ms when its pages are writable. Back to back the cost never
shows; once a minute it is the whole write.

:class:`NextBarPrefault` learns a cross-section writer's cadence and, shortly before its next write
is due, has the engine's background thread fault those pages in writable with
``MADV_POPULATE_WRITE`` (:func:`~mktsframe.engine.kernels.populate_rows`). That call stores
nothing, so it cannot race a writer; it only moves the fault out of the write's latency. The
kernel then writes those pages back once more per cycle, as it does anyway for the write itself.

One pass per write, at most: a pass is armed by a cross-section write (or re-armed by a checkpoint,
whose sync cleans the pages again) and runs once the next write is near, at the last write plus the
longer of the last two gaps, less :data:`LEAD_SECONDS`. A feed that stops costs one pass; writes
closer than :data:`MIN_GAP_SECONDS` keep their pages dirty themselves and get none. Without numba
(the compiled kernels) or on a kernel older than 5.14 there are no passes and nothing changes.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

import numpy as np

from mktsframe.engine import kernels
from mktsframe.engine.cross_section import CrossSectionFiles

__all__ = ["LEAD_SECONDS", "MIN_GAP_SECONDS", "NextBarPrefault"]

log = logging.getLogger(__name__)

#: How long before the next write is due a pass starts (seconds; a quarter of the gap when the gap
#: is shorter than four times this). A pass takes 30–180 ms for 5,000 buckets; the background
#: thread that runs it wakes every second.
LEAD_SECONDS = 2.5
#: Writes closer together than this (seconds) get no passes: their own stores keep most pages
#: dirty, and a pass per write would cost more than the one write in ~35 s that faults.
MIN_GAP_SECONDS = 2.0
#: Files populated per hold of the engine's apply lock (readers and writers wait at most this long:
#: ~2,000 pages, a few ms).
CHUNK_FILES = 256


class NextBarPrefault:
    """When to fault in the next bar's pages of the last cross-section write, and doing it.

    Times are ``time.monotonic()`` seconds, passed in by the caller (tests give their own). Thread
    safe: the engine calls :meth:`wrote` and :meth:`cleaned` holding its write lock, and
    :meth:`due` and :meth:`populate` from its background thread, holding neither lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._writes: deque[float] = deque(maxlen=3)  # the last cross-section writes' times
        self._plan: tuple[CrossSectionFiles, np.ndarray, np.ndarray] | None = None
        self._armed = False
        self.supported = True
        """``False`` once a pass found ``MADV_POPULATE_WRITE`` unsupported here (no more passes)."""
        self.passes = 0
        """Passes run, for tests and diagnostics."""
        self.pages = 0
        """Pages populated by all passes (counted per store a write makes: a file's watermarks and
        presence byte may share a page)."""

    def wrote(self, files: CrossSectionFiles, slots: np.ndarray, itemsizes: list[int], now: float) -> None:
        """A cross-section write stored into ``files`` at ``slots`` (columns of ``itemsizes`` bytes)
        at ``now``: the next one is expected one slot further on."""
        with self._lock:
            self._writes.append(now)
            self._plan = (files, slots + 1, np.array(itemsizes, np.int64))
            self._armed = True

    def cleaned(self) -> None:
        """A checkpoint synced the files: pages populated before it are write-protected again."""
        with self._lock:
            self._armed = self._plan is not None

    def next_pass(self) -> float | None:
        """When the armed pass is due (monotonic seconds), or ``None`` if none is."""
        with self._lock:
            cadence = self._cadence()
        return None if cadence is None else _pass_time(*cadence)

    def due(self, now: float) -> bool:
        """Whether a pass should run at ``now``. A feed that missed its next write by a whole gap
        is taken as stopped: its plan is dropped (a later write arms a new one)."""
        with self._lock:
            cadence = self._cadence()
            if cadence is None:
                return False
            last, gap = cadence
            if now > last + 2 * gap:
                self._plan, self._armed = None, False
                return False
        return now >= _pass_time(last, gap)

    def _cadence(self) -> tuple[float, float] | None:
        """``(last write, expected gap to the next)`` while a pass is armed and the gap is known
        and long enough; the gap is the longer of the last two, so that a feed that rewrites each
        minute a second after writing it (late trades) still has its pass before the next minute.
        Call holding ``_lock``."""
        if not (self._armed and self.supported) or self._plan is None or len(self._writes) < 2:
            return None
        w = self._writes
        gap = max(w[-1] - w[-2], w[-2] - w[-3] if len(w) > 2 else 0.0)
        return (w[-1], gap) if gap >= MIN_GAP_SECONDS else None

    def populate(self, apply_lock: Any) -> int:
        """Run the pass: fault in the planned pages, :data:`CHUNK_FILES` files per hold of
        ``apply_lock`` (the lock under which the engine closes year files, so every file is still
        mapped while it is touched; if one was closed since the plan, the pass stops: the next
        write plans again). Disarms; returns the pages populated (as :attr:`pages` counts them)."""
        with self._lock:
            plan, self._armed = self._plan, False
        if plan is None or not kernels.available():
            return 0
        if not kernels.populate_supported():
            self.supported = False
            return 0
        files, slots, itemsizes = plan
        assert files.addresses is not None  # wrote() follows only rows the kernels stored
        bases, lids = files.addresses
        inside = (files.reserved_from <= slots) & (slots < files.reserved_to)  # blocks to store into
        pages = failed = 0
        for a in range(0, len(bases), CHUNK_FILES):
            take = np.flatnonzero(inside[a : a + CHUNK_FILES]) + a
            with apply_lock:
                if files.open_files.closed != files.closed:
                    break
                failed += kernels.populate_rows(bases[take], lids[take], slots[take], itemsizes)
            pages += len(take) * (2 + len(itemsizes))
        if failed:  # a page the file system could not make writable (a full disk): the write will say
            log.debug("prefault: %d of %d pages not populated", failed, pages)
        self.passes += 1
        self.pages += pages - failed
        return pages - failed


def _pass_time(last: float, gap: float) -> float:
    """When a pass is due: :data:`LEAD_SECONDS` (or a quarter of a short ``gap``) before the next
    write is expected, ``gap`` after the ``last``."""
    return last + gap - min(LEAD_SECONDS, gap / 4)
