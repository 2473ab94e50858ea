"""``python -m bench.slow_sync_server [server arguments]``: the real server, with every ``fdatasync`` of
its write-ahead log taking ``MKTS_BENCH_SYNC_MS`` milliseconds longer (default 5).

Only for ``make bench-universe``'s group-commit row. This machine's disk flushes in ~0.1 ms, so
concurrent writers have almost no sync to share and their rate is bounded by CPU (2 cores for the
server and 50 clients). Group commit is for disks whose flush takes milliseconds (network block
storage, a RAID controller without a write cache, a spinning disk), and no such disk (nor
device-mapper's ``delay`` target) exists here: the delay stands in for one. It sleeps before the
real ``fdatasync``, without the GIL, exactly where a slow flush would block the committing thread.
Everything else is the unmodified server.
"""

from __future__ import annotations

import os
import time

from mktsframe.engine import wal
from mktsframe.server.settings import main

DELAY_S = float(os.environ.get("MKTS_BENCH_SYNC_MS", "5")) / 1000
_real_fdatasync = wal.fdatasync


def _slow_fdatasync(fd: int, what: str = "fdatasync") -> None:
    time.sleep(DELAY_S)
    _real_fdatasync(fd, what)


wal.fdatasync = _slow_fdatasync  # the log's syncs only (wal.py imported it by name)

if __name__ == "__main__":
    raise SystemExit(main(prog="mktsframe.server"))
