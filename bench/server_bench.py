"""Network server benchmark: pymarketstore and mktsframe's HTTP backend over loopback.

Starts ``python -m mktsframe.server`` on a temporary root holding a 10-year 1Min OHLCV bucket
(Open/High/Low/Close f4, Volume f8: 32-byte records, as in the peer anchors), then measures:

* one-day query latency (1,440 rows → DataFrame), median of ``--queries`` random days, for
  pymarketstore, the HTTP backend, and the local engine reading the same files (reference);
* queries/s with 8 concurrent clients (8 processes, one-day queries, ``--seconds`` each);
* ingest rows/s writing 10,000-row batches;
* server RSS (anonymous and file-backed, kB) idle, after the latency runs, and while/after
  serving the whole 10-year bucket in one query.

Usage: ``.venv/bin/python bench/server_bench.py [--years 10] [--queries 300] [--seconds 5]
[--batches 30] [--markdown FILE]``. The anchor to beat is local HDF5's warm one-day read
(5.01 ms, /work/shared/bench/anchors-results.md).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pymarketstore as pymkts

import mktsframe
from mktsframe.backend.http import HTTPBackend

KEY = "BENCH/1Min/OHLCV"
HDF5_WARM_DAY_MS = 5.01  # /work/shared/bench/anchors-results.md
ARCTIC_WARM_DAY_MS = 2.50
START = pd.Timestamp("2015-01-01", tz="UTC")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_frame(start: pd.Timestamp, n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = (100 + rng.standard_normal(n).cumsum() * 0.01).astype("f4")
    idx = pd.date_range(start, periods=n, freq="1min").as_unit("ns")
    return pd.DataFrame(
        {"Open": close, "High": close + 0.5, "Low": close - 0.5, "Close": close, "Volume": rng.random(n) * 1000},
        index=idx,
    )


def populate(root: Path, years: int) -> int:
    """Write the 10-year bucket with the local engine (a year per call) before serving it."""
    rows = 0
    with mktsframe.connect(root) as db:
        for y in range(years):
            a = START + pd.DateOffset(years=y)
            b = START + pd.DateOffset(years=y + 1)
            n = int((b - a) / pd.Timedelta("1min"))
            make_frame(a, n, seed=y).to_mkts(KEY, backend=db)
            rows += n
    return rows


def rss(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[name] = int(value.split()[0])
    return out


def day_windows(rng: np.random.Generator, n: int, years: int) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    days = rng.integers(0, 365 * years - 1, n)
    return [(START + pd.Timedelta(days=int(d)), START + pd.Timedelta(days=int(d)) + pd.Timedelta("1439min"))
            for d in days]


def time_calls(fn: Any, windows: list[tuple[pd.Timestamp, pd.Timestamp]], expect: int = 1440) -> float:
    """Median seconds per call after 20 warm-up calls; checks every result has a full day."""
    for s, e in windows[:20]:
        assert len(fn(s, e)) == expect
    samples = []
    for s, e in windows:
        t0 = time.perf_counter()
        n = len(fn(s, e))
        samples.append(time.perf_counter() - t0)
        assert n == expect
    return statistics.median(samples)


def _qps_worker(args: tuple[str, str, float, int, int]) -> int:
    kind, rpc, seconds, years, seed = args
    rng = np.random.default_rng(seed)
    windows = day_windows(rng, 100_000, years)
    if kind == "pymarketstore":
        client = pymkts.Client(rpc)

        def one(s: pd.Timestamp, e: pd.Timestamp) -> int:
            return len(client.query(pymkts.Params("BENCH", "1Min", "OHLCV", start=s, end=e)).first().df())
    else:
        db = HTTPBackend(rpc)

        def one(s: pd.Timestamp, e: pd.Timestamp) -> int:
            return len(pd.read_mkts(KEY, s, e, backend=db))

    one(*windows[0])
    count = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        s, e = windows[count % len(windows)]
        assert one(s, e) == 1440
        count += 1
    return count


def qps(kind: str, rpc: str, seconds: float, years: int, clients: int = 8) -> float:
    ctx = mp.get_context("spawn")
    with ctx.Pool(clients) as pool:
        t0 = time.perf_counter()
        counts = pool.map(_qps_worker, [(kind, rpc, seconds, years, i) for i in range(clients)])
        elapsed = time.perf_counter() - t0
    # elapsed includes the workers' start-up; use the fixed measuring window instead
    del elapsed
    return sum(counts) / seconds


def ingest(kind: str, rpc: str, batches: int, offset_years: int) -> float:
    """Rows/s writing ``batches`` consecutive 10,000-row batches to a new bucket."""
    frames = [make_frame(START + pd.DateOffset(years=offset_years) + pd.Timedelta(minutes=10_000 * i), 10_000, i)
              for i in range(batches)]
    key = f"ING{kind[:3].upper()}/1Min/OHLCV"
    if kind == "pymarketstore":
        client = pymkts.Client(rpc)
        recs = []
        for f in frames:
            r = f.reset_index(names="Epoch")
            r["Epoch"] = r["Epoch"].astype("int64") // 10**9
            recs.append(r.to_records(index=False))
        t0 = time.perf_counter()
        for rec in recs:
            assert client.write(rec, key) == {"responses": None}
        return batches * 10_000 / (time.perf_counter() - t0)
    db = HTTPBackend(rpc)
    t0 = time.perf_counter()
    for f in frames:
        f.to_mkts(key, backend=db)
    elapsed = time.perf_counter() - t0
    db.close()
    return batches * 10_000 / elapsed


def fmt_ms(s: float) -> str:
    return f"{s * 1e3:.2f} ms"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--years", type=int, default=10)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--markdown", help="also write the results as markdown to this file")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mkts-server-bench-"))
    proc = None
    lines: list[str] = []
    try:
        t0 = time.perf_counter()
        rows = populate(tmp / "data", args.years)
        print(f"populated {rows:,} rows in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        port = free_port()
        log = (tmp / "server.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "mktsframe.server", "--root", str(tmp / "data"), "--port", str(port),
             "--host", "127.0.0.1"], stdout=log, stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(f"{url}/heartbeat").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        rpc = f"{url}/rpc"
        rss_idle = rss(proc.pid)
        rng = np.random.default_rng(42)
        windows = day_windows(rng, args.queries, args.years)

        client = pymkts.Client(rpc)

        def via_pymkts(s: pd.Timestamp, e: pd.Timestamp) -> pd.DataFrame:
            return client.query(pymkts.Params("BENCH", "1Min", "OHLCV", start=s, end=e)).first().df()

        http = HTTPBackend(url)

        def via_http(s: pd.Timestamp, e: pd.Timestamp) -> pd.DataFrame:
            return pd.read_mkts(KEY, s, e, backend=http)

        local = mktsframe.connect(tmp / "data", read_only=True)

        def via_local(s: pd.Timestamp, e: pd.Timestamp) -> pd.DataFrame:
            return pd.read_mkts(KEY, s, e, backend=local)

        lat = {name: time_calls(fn, windows) for name, fn in
               (("pymarketstore", via_pymkts), ("HTTP backend", via_http), ("local engine (same files)", via_local))}
        rss_after_days = rss(proc.pid)
        q = {kind: qps(kind, rpc, args.seconds, args.years) for kind in ("pymarketstore", "http")}
        ing = {kind: ingest(kind, rpc, args.batches, args.years + 1 + i)
               for i, kind in enumerate(("pymarketstore", "http"))}
        t0 = time.perf_counter()
        full = http.query(KEY)
        full_s = time.perf_counter() - t0
        assert len(full[KEY]) == rows
        del full
        rss_after_full = rss(proc.pid)
        http.close()
        local.close()

        lines.append(f"Generated by `bench/server_bench.py --years {args.years} --queries {args.queries} "
                     f"--seconds {args.seconds:g} --batches {args.batches}` on "
                     f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} CPUs, "
                     f"{platform.platform()}, python {platform.python_version()}, pandas {pd.__version__}. "
                     f"Server and clients share the machine (loopback).")
        lines.append("")
        lines.append(f"Data: one {args.years}-year 1Min OHLCV bucket, {rows:,} rows of 32 bytes "
                     "(Open/High/Low/Close f4, Volume f8). A query = one random day (1,440 rows) into a DataFrame.")
        lines.append("")
        lines.append("| measure | pymarketstore 0.22 | mktsframe HTTP backend | local engine (same files) |")
        lines.append("|---|---|---|---|")
        lines.append(f"| one-day query, median of {args.queries} | {fmt_ms(lat['pymarketstore'])} | "
                     f"{fmt_ms(lat['HTTP backend'])} | {fmt_ms(lat['local engine (same files)'])} |")
        lines.append(f"| ÷ HDF5 warm day read ({HDF5_WARM_DAY_MS} ms) | "
                     f"{lat['pymarketstore'] * 1e3 / HDF5_WARM_DAY_MS:.2f}× | "
                     f"{lat['HTTP backend'] * 1e3 / HDF5_WARM_DAY_MS:.2f}× | "
                     f"{lat['local engine (same files)'] * 1e3 / HDF5_WARM_DAY_MS:.2f}× |")
        lines.append(f"| ÷ ArcticDB warm day read ({ARCTIC_WARM_DAY_MS} ms) | "
                     f"{lat['pymarketstore'] * 1e3 / ARCTIC_WARM_DAY_MS:.2f}× | "
                     f"{lat['HTTP backend'] * 1e3 / ARCTIC_WARM_DAY_MS:.2f}× | "
                     f"{lat['local engine (same files)'] * 1e3 / ARCTIC_WARM_DAY_MS:.2f}× |")
        lines.append(f"| queries/s, 8 concurrent clients | {q['pymarketstore']:,.0f} | {q['http']:,.0f} | – |")
        lines.append(f"| ingest, 10,000-row batches | {ing['pymarketstore'] / 1e6:.2f} M rows/s | "
                     f"{ing['http'] / 1e6:.2f} M rows/s | – |")
        lines.append("")
        lines.append("Server memory (kB; RssFile is page cache of the memory-mapped year files, shared and reclaimable):")
        lines.append("")
        lines.append("| moment | VmRSS | RssAnon | RssFile | VmHWM (peak) |")
        lines.append("|---|---|---|---|---|")
        for label, r in (("idle after start", rss_idle), ("after the latency runs", rss_after_days),
                         (f"after one whole-bucket query ({rows:,} rows, {full_s:.2f} s)", rss_after_full)):
            lines.append(f"| {label} | {r['VmRSS']:,} | {r.get('RssAnon', 0):,} | {r.get('RssFile', 0):,} | "
                         f"{r['VmHWM']:,} |")
        text = "\n".join(lines)
        print(text)
        if args.markdown:
            Path(args.markdown).write_text(text + "\n")
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
