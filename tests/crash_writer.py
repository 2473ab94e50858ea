"""A writer for the crash tests: a deterministic sequence of operations on one data root.

Run as ``python crash_writer.py ROOT FIRST [MODE [N]]`` (modes in :func:`main`). Operation ``n``
(see :func:`plan`) is announced with ``B n`` *before* it starts and acknowledged with ``A n``
after the engine call returns, each line flushed, so the parent knows exactly which operations
were acknowledged when it kills the process. ``loop`` runs until killed; the ``fixed`` modes run
``N`` operations and then ``os._exit(0)`` without closing (a crash with nothing in flight).

Every row written by operation ``b`` is self-checking: its columns are all derived from ``b``,
its row number ``R`` and its minute ``T``, so a torn row (columns from different writes) shows.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

import numpy as np

NS = 1_000_000_000
KEY = "CRASH/1Min/T"
BASE_S = 1_703_980_800  # 2023-12-31 00:00 UTC: the small writes cross into 2024 after a day
BULK0 = 200_000  # minutes from BASE_S where bulk writes start (mid-2024, crossing into 2025)
BULK_ROWS = 20_000
SMALL_SIZES = (1, 2, 5, 60)
MAX_OPS = 3_000
SLOTS = BULK0 + (MAX_OPS // 20 + 1) * BULK_ROWS


def plan(b: int) -> tuple:
    """Operation ``b``: ``("write", minutes)``, ``("delete", lo, hi)`` (inclusive minutes),
    ``("create", key)`` or ``("destroy", key)``."""
    m = b % 20
    if m == 12:  # bulk write
        return ("write", BULK0 + (b // 20) * BULK_ROWS + np.arange(BULK_ROWS, dtype=np.int64))
    if m == 13:  # delete 1,000 rows from the middle of the bulk write before
        lo = BULK0 + (b // 20) * BULK_ROWS + 5_000
        return ("delete", lo, lo + 999)
    if m == 14:  # overwrite the five rows of small write b-4
        return ("write", (b - 4) * 60 + np.arange(5, dtype=np.int64))
    if m == 15:
        return ("create", f"X{b}/1Min/T")
    if m == 16:
        return ("destroy", f"X{b - 1}/1Min/T")
    if m == 17:  # delete both rows of small write b-8
        return ("delete", (b - 8) * 60, (b - 8) * 60 + 1)
    return ("write", b * 60 + np.arange(SMALL_SIZES[b % 4], dtype=np.int64))


def columns(b: int, minutes: np.ndarray) -> dict[str, np.ndarray]:
    r = np.arange(minutes.size, dtype=np.int64)
    return {
        "B": np.full(minutes.size, b, np.int64),
        "R": r.astype(np.int32),
        "T": minutes.astype(np.int64),
        "F": b * 0.5 + r,
        "S": (b * 100_000 + r).astype(str).astype("U16"),
        "Flag": (b + r) % 2 == 0,
    }


def index_ns(minutes: np.ndarray) -> np.ndarray:
    return (BASE_S + minutes * 60) * NS


def run(engine, b: int) -> None:  # type: ignore[no-untyped-def]
    from mktsframe.backend.base import Batch
    from mktsframe.errors import BucketNotFoundError

    op = plan(b)
    if op[0] == "write":
        engine.write(KEY, Batch(index_ns(op[1]), columns(b, op[1])))
    elif op[0] == "delete":
        engine.delete(KEY, start=int(index_ns(np.int64(op[1]))), end=int(index_ns(np.int64(op[2]))))
    elif op[0] == "create":
        engine.create(op[1], [("A", "f8")])
    else:
        with contextlib.suppress(BucketNotFoundError):  # its create may never have been acknowledged
            engine.destroy(op[1])


def main() -> None:
    from mktsframe.engine import Engine

    root, first = sys.argv[1], int(sys.argv[2])
    mode = sys.argv[3] if len(sys.argv) > 3 else "loop"
    count = int(sys.argv[4]) if len(sys.argv) > 4 else MAX_OPS
    options: dict[str, object] = {}
    if mode == "fixed-checkpoint":  # background checkpoints that do not rotate the log
        options = {"checkpoint_interval": 0.05, "wal_rotate_interval": 1000}
    elif mode == "fixed-rotate":  # a checkpoint and a new segment every few kilobytes of log
        options = {"wal_max_bytes": 3000}
    elif mode == "fixed-bgsync":  # MarketStore's mode: the log is synced in the background
        options = {"background_sync": True, "sync_interval": 60.0}
    engine = Engine(root, read_only=False, **options)
    print("READY", flush=True)
    for b in range(first, min(first + count, MAX_OPS)):
        if mode == "fixed-checkpoint" and b == first + count // 2:
            time.sleep(0.5)  # let the background thread checkpoint (without rotating the log)
        print(f"B {b}", flush=True)
        run(engine, b)
        print(f"A {b}", flush=True)
    if mode.startswith("fixed"):
        os._exit(0)  # no close(): the log is left un-checkpointed, as after a crash
    print("DONE", flush=True)
    engine.close()


if __name__ == "__main__":
    main()
