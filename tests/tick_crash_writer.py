"""A tick writer for the tick crash test: a deterministic sequence of tick operations on one root.

Run as ``python tick_crash_writer.py ROOT FIRST``. Operation ``n`` (see :func:`plan`) is announced
with ``B n`` before it starts and acknowledged with ``A n`` after the engine call returns, so the
parent knows which operations were acknowledged when it kills the process. Every tick written by
operation ``b`` is self-checking: ``F = b * 0.5 + R`` where ``R`` is its row in the batch.
"""

from __future__ import annotations

import sys

import numpy as np

NS = 1_000_000_000
DAY_NS = 86_400 * NS
KEY = "TICK/1Min/T"
T0 = 1_709_251_200 * NS  # 2024-03-01 00:00 UTC
OPS_PER_DAY = 40
MAX_OPS = 2_000


def plan(n: int) -> tuple:
    """``("write", ns)`` (times in arrival order) or ``("delete", start_ns, end_ns)`` (inclusive)."""
    rng = np.random.default_rng(n)
    day = T0 + (n // OPS_PER_DAY) * DAY_NS
    slot = day + (n % OPS_PER_DAY) * 600 * NS  # ten minutes of the day per operation
    m = n % 10
    if m == 6:  # late ticks, into earlier parts of this day and the day before
        return ("write", day - DAY_NS + rng.integers(0, 2 * DAY_NS - 3600 * NS, 60))
    if m == 7:  # exact duplicates of operation n - 3's timestamps, plus more at the same nanosecond
        prev = plan(n - 3)[1] if n >= 3 else np.array([slot], np.int64)
        return ("write", np.concatenate([prev[:40], np.repeat(prev[:1], 5)]))
    if m == 8:  # delete part of operation n - 5's ten minutes ...
        start = T0 + ((n - 5) // OPS_PER_DAY) * DAY_NS + ((n - 5) % OPS_PER_DAY) * 600 * NS + 120 * NS
        return ("delete", int(start), int(start + 240 * NS - 1))
    if m == 9:  # ... and write that range again (delete + write = a rewrite)
        start = T0 + ((n - 6) // OPS_PER_DAY) * DAY_NS + ((n - 6) % OPS_PER_DAY) * 600 * NS + 120 * NS
        return ("write", start + np.sort(rng.integers(0, 240 * NS, 150)))
    if n % 40 == 13:  # a big batch spread over the whole day: a copy-on-write of the partition
        return ("write", day + rng.integers(0, DAY_NS, 30_000))
    times = slot + np.sort(rng.integers(0, 600 * NS, 200))
    times[rng.integers(0, 200, 20)] = times[0]  # duplicates, out of order within the batch
    times[:10] = slot - rng.integers(1, 1200 * NS, 10)  # a little late: merged into the partition's tail
    return ("write", times)


def columns(b: int, size: int) -> dict[str, np.ndarray]:
    r = np.arange(size, dtype=np.int32)
    return {"B": np.full(size, b, np.int32), "R": r, "F": b * 0.5 + r}


def main() -> None:
    from mktsframe.backend.base import Batch
    from mktsframe.engine import Engine

    root, first = sys.argv[1], int(sys.argv[2])
    engine = Engine(root, read_only=False)
    print("READY", flush=True)
    for b in range(first, MAX_OPS):
        op = plan(b)
        print(f"B {b}", flush=True)
        if op[0] == "write":
            engine.write(KEY, Batch(op[1], columns(b, op[1].size)), variable_length=True)
        else:
            engine.delete(KEY, start=op[1], end=op[2])
        print(f"A {b}", flush=True)
    print("DONE", flush=True)
    engine.close()


if __name__ == "__main__":
    main()
