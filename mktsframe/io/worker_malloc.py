"""Give a dask worker back glibc's large-block reuse, which ``distributed`` turns off by accident.

``distributed``'s nanny starts every worker process with ``MALLOC_TRIM_THRESHOLD_=65536`` (so freed
memory goes back to the OS). glibc then also stops adapting its mmap threshold (``mallopt(3)``:
"dynamic adjustment of the mmap threshold is disabled if any of M_TRIM_THRESHOLD, M_TOP_PAD,
M_MMAP_THRESHOLD or M_MMAP_MAX is set"): every array over 128 KiB becomes a fresh ``mmap`` whose
pages fault in, zeroed, on first touch, and go back to the OS when freed. A partition's read
allocates tens of MB of fresh arrays (bar times, columns, the frame, the groupby's scratch), so in
such a worker the same reads and groupby took twice the CPU they take in a plain process
(``bench/scale_bench.py``; reads alone 3×: 195,000 page faults a pass instead of 24,000).

:func:`restore_mmap_threshold` puts back the state glibc's dynamic thresholds settle in for such
work: mmap threshold 32 MiB (the ceiling the dynamic one climbs to) and trim threshold twice that
(glibc keeps them in that ratio), once, in a process that runs our tasks from a spec, and only when
the process *started* with ``MALLOC_TRIM_THRESHOLD_`` and without ``MALLOC_MMAP_THRESHOLD_`` (set
that one yourself, e.g. in ``distributed.nanny.pre-spawn-environ``, and we leave the allocator
alone). The cost: a worker may keep up to 64 MiB of freed heap instead of returning it at once
(the mmap threshold alone is not enough: with dask's 64 KiB trim threshold each freed array at the
top of the heap goes back to the OS and faults in again; measured, 40,000 faults a pass, not 3,600).
"""

from __future__ import annotations

import ctypes
import sys
import threading

__all__ = ["MMAP_THRESHOLD", "restore_mmap_threshold"]

#: Bytes: glibc's ``DEFAULT_MMAP_THRESHOLD_MAX`` on 64-bit Linux (where its dynamic threshold stops).
MMAP_THRESHOLD = 32 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # from glibc's <malloc.h>
_lock = threading.Lock()
_done: bool | None = None  # None: not looked at yet; then whether the threshold was set


def _started_with(name: str) -> bool:
    """Whether ``name`` was in this process's environment when it started (what glibc read), not
    merely set since: importing ``distributed`` sets ``MALLOC_TRIM_THRESHOLD_`` in ``os.environ``
    of the client too, where it came too late to change anything."""
    try:
        with open("/proc/self/environ", "rb") as f:
            return any(item.startswith(name.encode() + b"=") for item in f.read().split(b"\0"))
    except OSError:
        return False


def restore_mmap_threshold() -> bool:
    """Set glibc's mmap threshold to :data:`MMAP_THRESHOLD` (and the trim threshold to twice that)
    in a worker started with a trim threshold (see the module's docstring); once per process.
    Returns whether they are set."""
    global _done
    if _done is not None:
        return _done
    with _lock:
        if _done is None:
            _done = False
            if sys.platform.startswith("linux") and _started_with("MALLOC_TRIM_THRESHOLD_"):
                if not _started_with("MALLOC_MMAP_THRESHOLD_"):
                    try:
                        mallopt = ctypes.CDLL("libc.so.6").mallopt
                    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
                        return False
                    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD)
                    _done = bool(ok)
        return _done
