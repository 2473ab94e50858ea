"""Children for the fault tests (``tests/test_faults.py``): run as ``python faults_child.py MODE ROOT``.

Each runs the engine in its own process, because the faults it provokes end a process when they
are mishandled (``SIGBUS`` on a full disk) or must be injected into it (a failing ``fdatasync``).
It prints one JSON line per event, flushed, and ends with ``os._exit`` *without* closing the engine:
a crash, so the parent's reopen exercises replay.

Modes:

``fill``  20,000-row OHLCV writes to three buckets until the disk is full; then checks, in the
          same process, that a refused write stored nothing, that reads still work, and that a
          write succeeds again once a bucket is destroyed.
``ticks`` the same with 20,000-tick writes to two tick buckets (appends, growth of a day's file, new
          days), then a write succeeds again once the other bucket is destroyed.
``sync``  acknowledged writes, then ``fdatasync`` fails (EIO) for one write; then succeeds again,
          and further writes must still be refused (poisoned) while reads work.
``msync`` acknowledged writes, then the checkpoint's ``msync`` fails; writes refused, reads work.
"""

from __future__ import annotations

import errno
import json
import os
import sys

import numpy as np

NS = 1_000_000_000
T0 = 1_704_067_200  # 2024-01-01 UTC
ROWS = 20_000
KEYS = ("FULL0/1Min/OHLCV", "FULL1/1Min/OHLCV", "FULL2/1Min/OHLCV")
TICK_KEYS = ("TICK0/1Sec/TICK", "TICK1/1Sec/TICK")


def batch(first_minute: int, n: int) -> object:
    from mktsframe.backend.base import Batch

    m = np.arange(first_minute, first_minute + n, dtype=np.int64)
    v = (m % 1000).astype("f4")
    cols = {"Open": v, "High": v + 1, "Low": v - 1, "Close": v, "Volume": m.astype("f8")}
    return Batch((T0 + m * 60) * NS, cols)


def emit(**event: object) -> None:
    print(json.dumps(event), flush=True)


def fill(root: str) -> None:
    from mktsframe.engine.engine import Engine
    from mktsframe.errors import NoSpaceError

    e = Engine(root)
    i = 0
    while True:
        key = KEYS[i % 3]
        first = (i // 3) * ROWS
        try:
            e.write(key, batch(first, ROWS))
        except NoSpaceError as exc:
            emit(event="full", key=key, first=first, error=str(exc))
            break
        emit(event="ack", key=key, first=first, rows=ROWS)
        i += 1
    # Nothing partial: the refused write's rows are not there, and every bucket still reads.
    counts = {k: int(e.query(k)[k].index.size) for k in KEYS}
    emit(event="counts", counts=counts)
    refused = 0
    for _ in range(3):  # still full: more writes are refused, the process lives on
        try:
            e.write(key, batch(first, ROWS))
        except NoSpaceError:
            refused += 1
    emit(event="refused", n=refused, counts={k: int(e.query(k)[k].index.size) for k in KEYS})
    e.destroy(KEYS[0])  # frees its year file's blocks
    e.write(key, batch(first, ROWS))
    emit(event="ack", key=key, first=first, rows=ROWS, after_free=True)
    os._exit(0)


def ticks(first: int, n: int) -> object:
    """Ticks ``first .. first+n-1``, one a second from ``T0``; values derived from the tick number."""
    from mktsframe.backend.base import Batch

    j = np.arange(first, first + n, dtype=np.int64)
    return Batch((T0 + j) * NS, {"Price": j.astype("f8"), "Size": (j % 1000).astype("i4")}, True)


def fill_ticks(root: str) -> None:
    from mktsframe.engine.engine import Engine
    from mktsframe.errors import NoSpaceError

    e = Engine(root)
    i = 0
    while True:
        key, first = TICK_KEYS[i % 2], (i // 2) * ROWS
        try:
            e.write(key, ticks(first, ROWS), variable_length=True)
        except NoSpaceError as exc:
            emit(event="full", key=key, first=first, error=str(exc))
            break
        emit(event="ack", key=key, first=first, rows=ROWS)
        i += 1
    emit(event="counts", counts={k: int(e.query(k)[k].index.size) for k in TICK_KEYS})
    other = TICK_KEYS[(i + 1) % 2]
    e.destroy(other)
    e.write(key, ticks(first, ROWS))
    emit(event="ack", key=key, first=first, rows=ROWS, after_free=True, destroyed=other)
    os._exit(0)


def _fail(*_: object) -> None:
    raise OSError(errno.EIO, "Input/output error (injected)")


def sync(root: str, mode: str) -> None:
    from mktsframe.engine import durable
    from mktsframe.engine.engine import Engine
    from mktsframe.errors import MktsError, SyncFailedError

    e = Engine(root, checkpoint_interval=3600)
    key = KEYS[0]
    for i in range(5):
        e.write(key, batch(i * 100, 100))
        emit(event="ack", key=key, first=i * 100, rows=100)
    real_fdatasync, real_msync = os.fdatasync, durable._mmap_flush
    if mode == "sync":
        os.fdatasync = _fail  # the write's log sync fails: the kernel may have dropped its pages
        try:
            e.write(key, batch(500, 100))
            emit(event="ack", key=key, first=500, rows=100)  # must never happen
        except SyncFailedError as exc:
            emit(event="refused", first=500, error=str(exc))
        os.fdatasync = real_fdatasync  # a retry would now "succeed": it must not be trusted
    else:
        e.write(key, batch(500, 100))
        emit(event="ack", key=key, first=500, rows=100)
        durable._mmap_flush = _fail  # the msync system call reports EIO
        try:
            e.checkpoint()
            emit(event="checkpointed")
        except SyncFailedError as exc:
            emit(event="checkpoint_failed", error=str(exc))
        durable._mmap_flush = real_msync
    try:
        e.write(key, batch(600, 100))
        emit(event="ack", key=key, first=600, rows=100)  # must never happen
    except MktsError as exc:
        emit(event="poisoned", error=str(exc), type=type(exc).__name__)
    try:
        e.create("OTHER/1Min/OHLCV", [("Close", "f4")])
        emit(event="created")
    except MktsError as exc:
        emit(event="create_refused", type=type(exc).__name__)
    emit(event="read", rows=int(e.query(key)[key].index.size))
    e.close()  # must not checkpoint over what the failed sync may have lost
    emit(event="closed")
    os._exit(0)


if __name__ == "__main__":
    mode, root = sys.argv[1], sys.argv[2]
    if mode == "fill":
        fill(root)
    elif mode == "ticks":
        fill_ticks(root)
    else:
        sync(root, mode)
