"""The worker malloc fix: set in processes started like a dask worker, and it removes the page faults.

Each case is a fresh interpreter with the environment a ``distributed`` nanny gives its workers
(glibc reads ``MALLOC_*`` variables only at start), measuring minor page faults with ``getrusage``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator (Linux)")

CHILD = r"""
import json, resource, sys
import numpy as np
from numpy._core import multiarray
from mktsframe.io.worker_malloc import restore_mmap_threshold

# Counted in 4 KiB pages: numpy asks for transparent huge pages on large arrays, and whether the
# kernel has any to give (memory fragmentation) would otherwise change the count 512-fold.
multiarray._set_madvise_hugepage(False)

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):  # a partition-sized array, filled and freed, as each task does
        a = np.empty(1 << 20)
        a.fill(1.0)
        del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

faults()
first = faults()
done = restore_mmap_threshold()
faults()
print(json.dumps({"before": first, "set": done, "after": faults(), "again": restore_mmap_threshold()}))
"""


def _run(**env: str) -> dict[str, int]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", CHILD], env={**base, **env}, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_a_worker_started_with_a_trim_threshold_stops_faulting_on_every_array() -> None:
    got = _run(MALLOC_TRIM_THRESHOLD_="65536")
    assert got["set"] == 1
    assert got["again"] == 1
    # 8 MiB a round: a fresh mmap each time before (pages fault in again), reused heap memory after
    assert got["before"] >= 20 * 100
    assert got["after"] < got["before"] / 10


def test_other_processes_are_left_alone() -> None:
    plain = _run()
    assert plain["set"] == 0
    assert plain["before"] < 20 * 100  # glibc's own dynamic threshold already reuses the block
    assert _run(MALLOC_TRIM_THRESHOLD_="65536", MALLOC_MMAP_THRESHOLD_="1048576")["set"] == 0  # the user chose
