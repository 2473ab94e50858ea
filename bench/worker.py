"""One measurement in its own process: ``python -m bench.worker MODE ... --out result.json``.

A fresh process per system and round gives each system its own peak RSS, keeps one library's
caches and threads from disturbing the next, and lets the peers run in another venv (the
orchestrator, :mod:`bench.run`, picks the interpreter). Modes:

``system NAME``   the full protocol on one system (bulk write, reads, appends; all verified)
``fsync``         latency of a 32-byte write + ``fdatasync`` on the benchmark's disk
``tenyear-build`` a 10-year 1Min bucket for the "one day from a 10-year bucket" RSS probe
``tenyear-read``  read one day from it and report how much the process's RSS grew
``tenyear-serve`` serve it with ``python -m mktsframe.server`` and read it whole over loopback: the server's RSS
``candles NAME``  1Min bars → 5Min/1H/1D candles (``bench/candles_bench.py``)
``ticks NAME``    the tick protocol (``bench/tick_run.py``): a day of ticks, hour reads, 1,000-tick appends

Times are seconds, sizes bytes.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import sys
import traceback
from typing import Any

import numpy as np

from bench.common import (
    BAR,
    COLS,
    DAY,
    Params,
    build_data,
    check_same,
    med,
    p99,
    perf,
    proc_status,
    reset_peak_rss,
    time_each,
    time_repeated,
)


def run_system(name: str, root: str, p: Params) -> dict[str, Any]:
    """Measure one system; every read is checked against the source data before it is timed."""
    import pandas as pd

    from bench.systems import load

    data = build_data(p)
    gc.collect()
    base = proc_status()
    reset_peak_rss()
    sysobj = load(name, root)
    R: dict[str, Any] = {"notes": sysobj.notes, "python": sys.executable, "pandas": pd.__version__}
    df = data.df
    try:
        # bulk write: fresh store each repeat
        if sysobj.persistent:
            wt = []
            for _ in range(p.repeats):
                sysobj.reset()
                sysobj.prepare_write()
                gc.collect()
                t0 = perf()
                sysobj.write(df)
                wt.append(perf() - t0)
                t1 = perf()
                sysobj.finish_write()
                R.setdefault("bulk_write_close_s_all", []).append(perf() - t1)
            R["bulk_write_s"], R["bulk_write_s_all"] = med(wt), wt
        else:
            sysobj.reset()
            sysobj.write(df)
        R["size_bytes"], R["size_apparent_bytes"] = sysobj.size()

        sysobj.open_read()
        check_same(sysobj.read_all(), df, f"{name} full read")
        if sysobj.persistent:
            ft = time_repeated(sysobj.read_all, p.repeats, p.repeats, 0.0)
            R["full_read_s"], R["full_read_s_all"] = med(ft), ft

        s, e = data.range_s, data.range_e
        check_same(sysobj.read_range(s, e), data.want_range(), f"{name} range read")
        rt = time_repeated(lambda: sysobj.read_range(s, e), p.warm_min, p.warm_max, p.warm_budget_s)
        R["range_s"], R["range_p99_s"], R["range_n"] = med(rt), p99(rt), len(rt)
        R["range_rows"] = len(data.want_range())
        if hasattr(sysobj, "read_range_raw"):
            raw = time_repeated(lambda: sysobj.read_range_raw(s, e), p.warm_min, p.warm_max, p.warm_budget_s)
            R["range_raw_records_s"] = med(raw)

        check_same(sysobj.tail(100), df.iloc[-100:], f"{name} tail")
        tt = time_repeated(lambda: sysobj.tail(100), p.warm_min, p.warm_max, p.warm_budget_s)
        R["tail100_s"], R["tail100_p99_s"] = med(tt), p99(tt)
        sysobj.close()

        # appends after the last bar: 1-row, then chunks
        sysobj.open_append()
        st = time_each(sysobj.append_row, data.rows)
        R["append1_s"], R["append1_p99_s"], R["append1_n"] = med(st), p99(st), len(st)
        ct = time_each(sysobj.append_chunk, data.chunks)
        R["append_chunk_s"], R["append_chunk_p99_s"], R["append_chunk_n"] = med(ct), p99(ct), len(ct)
        R["append_chunk_rows"] = p.chunk_rows
        sysobj.close()

        # everything appended is there, in order
        sysobj.open_read()
        total = data.total()
        check_same(sysobj.read_all(), total, f"{name} full read after appends")
        check_same(sysobj.tail(100), total.iloc[-100:], f"{name} tail after appends")
        sysobj.close()
        R["after_size_bytes"] = sysobj.size()[0]
        if hasattr(sysobj, "measure_extra"):  # e.g. the server systems' concurrent queries/s
            R.update(sysobj.measure_extra(data, p))
        R["verified"] = True
    finally:
        sysobj.close()
        sysobj.shutdown()
    end = proc_status()
    R["rss_base_bytes"] = base.get("VmRSS")
    R["peak_rss_bytes"] = end.get("VmHWM")
    if base.get("VmRSS") is not None and end.get("VmHWM") is not None:
        R["peak_rss_delta_bytes"] = end["VmHWM"] - base["VmRSS"]
    return R


def run_fsync(workdir: str, n: int = 200) -> dict[str, Any]:
    """Median latency of appending 32 bytes and ``fdatasync`` (the durable-append floor), and of write alone."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "fsync-probe.bin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    rec = b"x" * 32
    synced, plain = [], []
    try:
        for _ in range(20):  # warm-up: allocate the first blocks
            os.write(fd, rec)
            os.fdatasync(fd)
        for _ in range(n):
            t0 = perf()
            os.write(fd, rec)
            os.fdatasync(fd)
            synced.append(perf() - t0)
            t0 = perf()
            os.write(fd, rec)
            plain.append(perf() - t0)
    finally:
        os.close(fd)
        os.unlink(path)
    return {"write_fdatasync_32b_s": med(synced), "write_fdatasync_32b_p99_s": p99(synced),
            "write_32b_s": med(plain), "n": n}


TENYEAR_KEY = "BTC/1Min/OHLCV"
TENYEAR_FIRST = 2015


def run_tenyear_build(root: str, years: int) -> dict[str, Any]:
    """Write ``years`` full years of 1Min bars (one write per year, through the WAL) into a fresh root."""
    import shutil

    import mktsframe
    from bench.common import make_bars
    from mktsframe.engine.year_file import year_bounds

    shutil.rmtree(root, ignore_errors=True)
    db = mktsframe.connect(root, read_only=False)
    rows = 0
    t0 = perf()
    last = 30000.0
    for i in range(years):
        y0, y1 = year_bounds(TENYEAR_FIRST + i)
        df = make_bars((y1 - y0) // BAR, y0, seed=100 + i, last_close=last)
        last = float(df["Close"].iloc[-1])
        mktsframe.write_mkts(df, TENYEAR_KEY, backend=db)
        rows += len(df)
        del df
    db.close()
    from bench.common import du

    files = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(root) for f in fs if f.endswith(".bin"))
    return {"rows": rows, "years": years, "build_s": perf() - t0, "bucket_bytes": du(root)[0],
            "bucket_apparent_bytes": du(root)[1], "year_files": len(files),
            "year_file_apparent_bytes": max((os.path.getsize(f) for f in files), default=0)}


def _evict(root: str) -> None:
    """Drop the bucket's files from the page cache (``POSIX_FADV_DONTNEED``; needs no privileges)."""
    for dp, _dn, fns in os.walk(root):
        for fn in fns:
            fd = os.open(os.path.join(dp, fn), os.O_RDONLY)
            try:
                os.fdatasync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def run_tenyear_read(root: str, years: int, cold: bool) -> dict[str, Any]:
    """Open the 10-year bucket in a fresh process, read one day from its middle year, report RSS growth.

    The year files are memory-mapped, so the question is how many of their pages become resident:
    only those of the day (~1440 slots per column) should, not the year file nor the bucket.
    ``cold`` first evicts the files from the page cache (an archive read); warm reads follow the
    build, whose large page-cache folios the kernel may map whole (resident but shared, not copied).
    """
    import pandas as pd

    import mktsframe
    from mktsframe.engine.year_file import year_bounds

    y0, _ = year_bounds(TENYEAR_FIRST + years // 2)
    s = y0 + 180 * DAY
    if cold:
        _evict(root)
    db = mktsframe.connect(root, read_only=True)
    pd.read_mkts(TENYEAR_KEY, start=pd.Timestamp(s - 400 * DAY, unit="s"),
                 end=pd.Timestamp(s - 400 * DAY + 60, unit="s"), backend=db)  # warm imports and the catalog
    gc.collect()
    before = proc_status()
    reset_peak_rss()
    t0 = perf()
    df = pd.read_mkts(TENYEAR_KEY, start=pd.Timestamp(s, unit="s"), end=pd.Timestamp((s + DAY) * 1_000_000_000 - 1),
                      backend=db)
    took = perf() - t0
    after = proc_status()
    rows = len(df)
    ok = rows == DAY // BAR and bool(np.all(np.diff(df.index.asi8) == BAR * 1_000_000_000))
    ok = ok and all(c in df.columns for c in COLS)
    db.close()
    return {"rows": rows, "verified": ok, "read_s": took,
            "rss_delta_bytes": after["VmRSS"] - before["VmRSS"],
            "peak_rss_delta_bytes": after["VmHWM"] - before["VmRSS"],
            "rss_file_delta_bytes": after.get("RssFile", 0) - before.get("RssFile", 0),
            "rss_anon_delta_bytes": after.get("RssAnon", 0) - before.get("RssAnon", 0),
            "vm_size_delta_bytes": after.get("VmSize", 0) - before.get("VmSize", 0)}


def run_ticks(name: str, root: str, tp: Any) -> dict[str, Any]:
    """Write a day of ticks, read hours back, append 1,000-tick batches; every read is verified first."""
    import pandas as pd

    from bench.systems.ticks import TICK_SYSTEMS
    from bench.tick_data import DAY0_NS, HOUR_NS, build_ticks, check_ticks

    data = build_ticks(tp)
    sysobj = TICK_SYSTEMS[name][0](root)
    sysobj.name = name
    R: dict[str, Any] = {"notes": sysobj.notes, "python": sys.executable, "pandas": pd.__version__,
                         "day_ticks": len(data.day)}
    try:
        sysobj.reset()
        sysobj.prepare_write()
        gc.collect()
        t0 = perf()
        sysobj.write(data.day)
        R["day_write_s"] = perf() - t0
        t0 = perf()
        sysobj.finish_write()
        R["day_write_close_s"] = perf() - t0
        R["size_bytes"], R["size_apparent_bytes"] = sysobj.size()

        sysobj.open_read()
        rows = []
        for h in range(24):  # every hour checked once (also warms the caches)
            want = data.hour(h)
            check_ticks(sysobj.read_range(DAY0_NS + h * HOUR_NS, DAY0_NS + (h + 1) * HOUR_NS), want, f"{name} hour {h}")
            rows.append(len(want))
        R["hour_rows"] = med(rows)
        k = iter(range(10**9))

        def one_hour() -> object:
            h = next(k) % 24
            return sysobj.read_range(DAY0_NS + h * HOUR_NS, DAY0_NS + (h + 1) * HOUR_NS)

        ht = time_repeated(one_hour, tp.warm_min, tp.warm_max, tp.warm_budget_s)
        R["hour_read_s"], R["hour_read_p99_s"], R["hour_read_n"] = med(ht), p99(ht), len(ht)
        sysobj.close()

        sysobj.open_append()
        at = time_each(sysobj.append_chunk, data.batches)
        R["append_batch_s"], R["append_batch_p99_s"], R["append_batch_n"] = med(at), p99(at), len(at)
        R["append_batch_rows"] = tp.batch
        sysobj.close()

        sysobj.open_read()
        check_ticks(sysobj.read_all(), data.total(), f"{name} everything after the appends")
        sysobj.close()
        R["after_size_bytes"] = sysobj.size()[0]
        R["verified"] = True
    finally:
        sysobj.close()
    return R


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["system", "fsync", "tenyear-build", "tenyear-read", "tenyear-serve", "ticks",
                                     "candles"])
    ap.add_argument("name", nargs="?", help="system name (mode 'system')")
    ap.add_argument("--root", required=True, help="directory for this measurement's data")
    ap.add_argument("--out", required=True, help="where to write the JSON result")
    ap.add_argument("--params", default="{}", help="JSON of bench.common.Params fields")
    ap.add_argument("--years", type=int, default=10)
    ap.add_argument("--rows", type=int, default=0, help="tenyear-serve: rows in the bucket")
    ap.add_argument("--cold", action="store_true", help="tenyear-read: evict the bucket from the page cache first")
    a = ap.parse_args(argv)
    if a.mode == "ticks":
        from bench.tick_data import TickParams

        p: Any = TickParams(**json.loads(a.params))
    elif a.mode == "candles":
        from bench.candles_bench import CandleParams

        p = CandleParams(**json.loads(a.params))
    else:
        p = Params(**json.loads(a.params))
    try:
        if a.mode == "ticks":
            res = run_ticks(a.name, a.root, p)
        elif a.mode == "candles":
            from bench.candles_bench import run_worker

            res = run_worker(a.name, a.root, p)
        elif a.mode == "system":
            res = run_system(a.name, a.root, p)
        elif a.mode == "fsync":
            res = run_fsync(a.root)
        elif a.mode == "tenyear-build":
            res = run_tenyear_build(a.root, a.years)
        elif a.mode == "tenyear-serve":
            from bench.systems.server import serve_bucket_rss

            res = serve_bucket_rss(a.root, a.rows)
        else:
            res = run_tenyear_read(a.root, a.years, a.cold)
    except Exception as exc:  # record the failure; the orchestrator reports it and goes on
        traceback.print_exc()
        res = {"error": f"{type(exc).__name__}: {exc}"}
    res["params"] = dataclasses.asdict(p)
    with open(a.out, "w") as f:
        json.dump(res, f)
    return 1 if "error" in res else 0


if __name__ == "__main__":
    sys.exit(main())
