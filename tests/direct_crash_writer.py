"""A writer of *large* writes for the direct-write crash tests (see ``Engine._write_direct``).

Run as ``python direct_crash_writer.py ROOT FIRST [POINT COUNT]``. Like ``crash_writer.py``, it
announces operation ``n`` with ``B n`` before it starts (its rows already built) and ``A n`` once
the engine returns. Rows are the self-checking rows of ``crash_writer.py`` (93 bytes each), so a
50,000-row write carries 4.4 MiB of values: enough to take the direct path into empty slots.

With ``POINT``, operations ``FIRST .. FIRST+COUNT-1`` run normally and the next one is killed
(SIGKILL, by the writer itself) at that point of the direct path; the points are in :data:`POINTS`.
"""

from __future__ import annotations

import os
import signal
import sys

import numpy as np

try:
    from .crash_writer import KEY, columns, index_ns
except ImportError:  # run as a script
    from crash_writer import KEY, columns, index_ns  # type: ignore[no-redef]

__all__ = ["KEY", "MAX_OPS", "POINTS", "SLOTS", "plan"]

BULK_ROWS = 50_000
APPEND0 = 500_000  # minutes from crash_writer.BASE_S (2023-12-31): appends start in late 2024 ...
BACKFILLS = 10  # ... and back-fills go down from there to minute 0, in 2023
MAX_OPS = 300
SLOTS = APPEND0 + (2 * (MAX_OPS // 6 + 1) + 1) * BULK_ROWS


def plan(b: int) -> tuple:
    """Operation ``b``: ``("write", minutes)`` or ``("delete", lo, hi)`` (inclusive minutes)."""
    c, m = divmod(b, 6)
    here = APPEND0 + 2 * c * BULK_ROWS  # where operation 6c appended
    if m == 0:  # append past the last bar (the first one crosses into 2025): direct
        return ("write", here + np.arange(BULK_ROWS, dtype=np.int64))
    if m == 1:  # overwrite three rows of that append: logged
        return ("write", here + 1_000 + np.arange(3, dtype=np.int64))
    if m == 2:  # delete 100 rows from its middle: logged
        return ("delete", here + 20_000, here + 20_099)
    if m == 3:
        if c < BACKFILLS:  # back-fill below the first bar (the last one crosses into 2023): direct
            return ("write", APPEND0 - (c + 1) * BULK_ROWS + np.arange(BULK_ROWS, dtype=np.int64))
        return ("write", here + BULK_ROWS + np.arange(BULK_ROWS, dtype=np.int64))  # another append
    if m == 4:  # rewrite most of the append, partly over the gap after it: occupied, so logged (4 MiB)
        return ("write", here + 10_000 + np.arange(BULK_ROWS, dtype=np.int64))
    return ("write", APPEND0 - BULK_ROWS + 7 + np.arange(2, dtype=np.int64))  # two rows of the back-fill


def prepare(engine, b: int):  # type: ignore[no-untyped-def]
    """Operation ``b`` as a call ready to run (the rows are built before it is announced)."""
    from mktsframe.backend.base import Batch

    op = plan(b)
    if op[0] == "write":
        batch = Batch(index_ns(op[1]), columns(b, op[1]))
        return lambda: engine.write(KEY, batch)
    start, end = int(index_ns(np.int64(op[1]))), int(index_ns(np.int64(op[2])))
    return lambda: engine.delete(KEY, start=start, end=end)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str) -> None:
    """Make the next direct write kill this process at ``point``."""
    from mktsframe.engine import engine as engine_mod
    from mktsframe.engine import wal as wal_mod
    from mktsframe.engine import year_file as yf_mod

    def before(cls: type, name: str, when=lambda *args: True) -> None:  # type: ignore[no-untyped-def]
        original = getattr(cls, name)

        def patched(*args, **kwargs):  # type: ignore[no-untyped-def]
            if when(*args):
                _die()
            return original(*args, **kwargs)

        setattr(cls, name, patched)

    if point == "logged":  # the direct record is durable, no row written yet
        before(yf_mod.YearFile, "store_durable")
    elif point == "half":  # the first half of every column and of the presence bytes written

        def half(fd: int, parts: list) -> None:  # type: ignore[type-arg]
            for offset, buf in parts:
                os.pwrite(fd, buf[: len(buf) // 2], offset)
            _die()

        yf_mod.pwrite_durable = half  # type: ignore[assignment]
    elif point == "stored":  # every row durable, not yet published
        before(yf_mod.YearFile, "publish")
    elif point == "published":  # watermarks moved (in the page cache), no commit record yet
        before(wal_mod.WriteAheadLog, "append", lambda wal, meta, *rest: meta.get("op") == "commit")
    elif point == "committed":  # the commit record is durable; the caller was never told
        before(engine_mod.Engine, "_announce", lambda engine, op, *rest: op == "write")
    else:
        raise SystemExit(f"unknown point {point!r}")


POINTS = ("logged", "half", "stored", "published", "committed")


def main() -> None:
    from mktsframe.engine import Engine

    root, first = sys.argv[1], int(sys.argv[2])
    point = sys.argv[3] if len(sys.argv) > 3 else None
    count = int(sys.argv[4]) if len(sys.argv) > 4 else MAX_OPS
    engine = Engine(root, read_only=False)
    print("READY", flush=True)
    for b in range(first, MAX_OPS):
        if point is not None and b == first + count:
            arm(point)
        call = prepare(engine, b)
        print(f"B {b}", flush=True)
        call()
        print(f"A {b}", flush=True)
    print("DONE", flush=True)
    engine.close()


if __name__ == "__main__":
    main()
