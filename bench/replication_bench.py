"""Replication benchmark: replica lag, the master's write throughput with replicas, catch-up speed.

Real processes on loopback (``python -m mktsframe.server --config``): one master and two
replicas, each with its own root; the client is mktsframe's ``HTTPBackend`` in this process.

* **lag** (ack → readable on a replica): 1-row writes to the master, paced ``--pace-ms`` apart;
  after each acknowledgement the replica is queried (``limit=1`` from the end, over ``/rpc``)
  until the row is there. The figure includes one query's round trip (~0.3-1 ms), so it is an
  upper bound of the replication lag itself. p50 and p99 over ``--lag-writes`` writes.
* **throughput**: 1-row writes/s of one writer, as fast as it goes, on the master (replication
  enabled) with no replica attached, then with two replicas following (at normal priority, then
  at ``nice 19``: as if on other machines, taking only the CPU the master leaves), then with both
  frozen (``SIGSTOP``), then with none again (the replicas stopped). ``--pairs`` such cycles a
  round, back to back; each with-replicas figure is divided by the mean of the no-replica figures
  just before and just after it (a shared machine's speed drifts), and the ratios' median is the
  result. The master's CPU time per write (user + system, from ``/proc``) is reported beside it:
  unlike writes/s, it hardly moves with the machine's load.
* **catch-up**: ``--bars`` 1Min bars (OHLCV, float32 + int32) written to the master in
  ``--batch``-row writes (timed: the baseline) while a replica is away; then the time it takes to
  apply them all: (a) the replica was frozen (``SIGSTOP``) and resumes (``SIGCONT``) on its open
  stream; (b) the replica was stopped and is restarted (process start included, and measured
  alone by restarting it again with nothing missed), catching up from the master's kept log;
  (c) a fresh replica on an empty root, seeded with a copy.

Usage: ``.venv/bin/python bench/replication_bench.py [--rounds 3]`` (``make bench-replication``).
Targets (issue 15): lag p50 ≤ 5 ms, p99 ≤ 50 ms; throughput with 2 replicas ≥ 0.8× none;
catch-up of 1,000,000 missed bars ≤ 2× the time of writing them in 10k-row batches.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make ``bench`` importable as a package
    sys.path.insert(0, str(REPO))

from bench.run import finish_run, run_meta, start_run  # noqa: E402
from bench.systems.server import ServerProcess, free_port  # noqa: E402

TITLE = "## Replication"
NS = 1_000_000_000
T0 = 1_577_836_800  # 2020-01-01 UTC


def _config(path: Path, replication: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"replication": replication}))
    return path


def _signal(servers: list[ServerProcess], sig: int) -> None:
    for srv in servers:
        assert srv.proc is not None
        os.kill(srv.proc.pid, sig)


def _nice(servers: list[ServerProcess], value: int) -> None:
    for srv in servers:
        assert srv.proc is not None
        os.setpriority(os.PRIO_PROCESS, srv.proc.pid, value)


def _cpu_s(servers: list[ServerProcess]) -> float:
    """User + system CPU seconds the server processes have used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for srv in servers:
        assert srv.proc is not None
        fields = Path(f"/proc/{srv.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _status(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/heartbeat", timeout=10).json()["replication"]


def _wait_caught_up(replica_url: str, master_url: str, timeout: float = 600.0) -> float:
    """Seconds until the replica has applied the master's last position."""
    t = time.perf_counter()
    head = _status(master_url)["position"]
    while time.perf_counter() - t < timeout:
        try:
            s = _status(replica_url)
            if s["applied"] >= head and s["state"] == "streaming":
                return time.perf_counter() - t
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(0.005)
    raise TimeoutError(f"replica {replica_url} did not catch up in {timeout} s")


def _bar(i: int) -> Any:
    from mktsframe.records import Batch

    return Batch(np.array([(T0 + 60 * i) * NS], np.int64), {"Close": np.array([float(i)], np.float64)})


def measure_lag(master_url: str, replica_url: str, writes: int, pace: float) -> list[float]:
    import mktsframe as mf

    out = []
    key = "LAG/1Min/OHLCV"
    with mf.connect(master_url) as m, mf.connect(replica_url) as r:
        m.write(key, _bar(0))
        _wait_caught_up(replica_url, master_url)
        for i in range(1, writes + 1):
            m.write(key, _bar(i))
            acked = time.perf_counter()
            want = (T0 + 60 * i) * NS
            while True:
                b = r.query(key, limit=1)[key]
                if len(b) and int(b.index[-1]) == want:
                    break
            out.append((time.perf_counter() - acked) * 1e3)
            time.sleep(pace)
    return out


def measure_throughput(master_url: str, writes: int, start: int) -> float:
    import mktsframe as mf

    with mf.connect(master_url) as m:
        t = time.perf_counter()
        for i in range(start, start + writes):
            m.write("TPUT/1Min/OHLCV", _bar(i))
        return writes / (time.perf_counter() - t)


class Throughput:
    """1-row writes/s on the master and the CPU µs each write cost the master and the replicas."""

    def __init__(self, master: ServerProcess, writes: int) -> None:
        self.master, self.writes, self.next = master, writes, 0
        self.runs: dict[str, list[dict[str, float]]] = {}

    def measure(self, label: str, replicas: list[ServerProcess]) -> float:
        m0, r0 = _cpu_s([self.master]), _cpu_s(replicas)
        rate = measure_throughput(self.master.url, self.writes, self.next)
        m1, r1 = _cpu_s([self.master]), _cpu_s(replicas)
        self.next += self.writes
        self.runs.setdefault(label, []).append({"writes_per_s": rate, "master_cpu_us": (m1 - m0) / self.writes * 1e6,
                                                "replicas_cpu_us": (r1 - r0) / self.writes * 1e6})  # fmt: skip
        return rate

    def summary(self) -> dict[str, Any]:
        """Medians of each label's runs, and each with-replicas run's ratio to the no-replica runs
        just before and after it (``none`` has one more run than the others)."""
        none = [r["writes_per_s"] for r in self.runs["none"]]
        out: dict[str, Any] = {"runs": self.runs}
        for label, runs in self.runs.items():
            for k in ("writes_per_s", "master_cpu_us", "replicas_cpu_us"):
                out[f"{label}_{k}"] = statistics.median(r[k] for r in runs)
            if label != "none":
                out[f"{label}_ratio"] = statistics.median(
                    r["writes_per_s"] / ((none[i] + none[i + 1]) / 2) for i, r in enumerate(runs)
                )
        return out


def write_bars(master_url: str, key: str, bars: int, batch: int) -> float:
    import mktsframe as mf
    from mktsframe.records import Batch

    rng = np.random.default_rng(1)
    with mf.connect(master_url) as m:
        t = time.perf_counter()
        for a in range(0, bars, batch):
            n = min(batch, bars - a)
            idx = (T0 + 60 * np.arange(a, a + n, dtype=np.int64)) * NS
            cols = {c: rng.random(n, dtype=np.float32) for c in ("Open", "High", "Low", "Close")}
            cols["Volume"] = rng.integers(0, 1000, n, dtype=np.int32)
            m.write(key, Batch(idx, cols))
        return time.perf_counter() - t


def one_round(workdir: Path, a: argparse.Namespace, r: int, log: Any) -> dict[str, Any]:
    rd = workdir / f"round{r}"
    rd.mkdir(parents=True, exist_ok=True)
    port = free_port()
    mconf = _config(rd / "master.yml", {"enabled": True, "listen_port": port})
    rconf = _config(rd / "replica.yml", {"master_host": f"127.0.0.1:{port}", "retry_interval": "0.05s",
                                         "max_retry_interval": 0.5})  # fmt: skip
    res: dict[str, Any] = {}
    master = ServerProcess(rd / "master", rd / "master.log", mconf)
    replicas: list[ServerProcess] = []
    try:
        tp = Throughput(master, a.tput_writes)
        tp.measure("none", [])
        for _ in range(a.pairs):
            replicas = [ServerProcess(rd / f"replica{i}", rd / f"replica{i}.log", rconf) for i in range(2)]
            for rep in replicas:
                _wait_caught_up(rep.url, master.url)
            tp.measure("following", replicas)
            _nice(replicas, 19)
            tp.measure("following_niced", replicas)
            _nice(replicas, 0)
            for rep in replicas:
                _wait_caught_up(rep.url, master.url)
            _signal(replicas, signal.SIGSTOP)
            tp.measure("frozen", replicas)
            _signal(replicas, signal.SIGCONT)
            for rep in replicas:
                _wait_caught_up(rep.url, master.url)
                rep.stop()
            replicas = []
            tp.measure("none", [])
        tput = tp.summary()
        replicas = [ServerProcess(rd / f"replica{i}", rd / f"replica{i}.log", rconf) for i in range(2)]
        for rep in replicas:
            _wait_caught_up(rep.url, master.url)
        lag = measure_lag(master.url, replicas[0].url, a.lag_writes, a.pace_ms / 1e3)
        log(f"round {r}: lag p50 {np.percentile(lag, 50):.2f} ms p99 {np.percentile(lag, 99):.2f} ms")
        # catch-up (a): replica 0 frozen while the bars are written, then resumed
        assert replicas[0].proc is not None
        os.kill(replicas[0].proc.pid, signal.SIGSTOP)
        write_a = write_bars(master.url, "CATCH/1Min/A", a.bars, a.batch)
        os.kill(replicas[0].proc.pid, signal.SIGCONT)
        resume = _wait_caught_up(replicas[0].url, master.url)
        # catch-up (b): replica 1 stopped while the bars are written, then restarted (from the kept log)
        replicas[1].stop()
        write_b = write_bars(master.url, "CATCH/1Min/B", a.bars, a.batch)
        t = time.perf_counter()
        replicas[1] = ServerProcess(rd / "replica1", rd / "replica1.log", rconf)
        restart = time.perf_counter() - t + _wait_caught_up(replicas[1].url, master.url)
        replicas[1].stop()  # the same restart with nothing missed: the process start alone
        t = time.perf_counter()
        replicas[1] = ServerProcess(rd / "replica1", rd / "replica1.log", rconf)
        restart_idle = time.perf_counter() - t + _wait_caught_up(replicas[1].url, master.url)
        for rep in replicas:
            rep.stop()
        replicas = []
        # (c): a fresh replica on an empty root: a full copy (3 × bars rows and the small buckets)
        t = time.perf_counter()
        fresh = ServerProcess(rd / "fresh", rd / "fresh.log", rconf)
        replicas = [fresh]
        seed = time.perf_counter() - t + _wait_caught_up(fresh.url, master.url)
        res = {
            "lag_ms": lag,
            "lag_p50_ms": float(np.percentile(lag, 50)),
            "lag_p99_ms": float(np.percentile(lag, 99)),
            **tput,
            "write_bars_s": [write_a, write_b],
            "catch_up_resume_s": resume,
            "catch_up_restart_s": restart,
            "restart_idle_s": restart_idle,
            "seed_fresh_s": seed,
            "catch_up_ratio_resume": resume / write_a,
            "catch_up_ratio_restart": restart / write_b,
        }
        log(f"round {r}: writes/s none {tput['none_writes_per_s']:.0f}, two replicas following "
            f"{tput['following_writes_per_s']:.0f} ({tput['following_ratio']:.2f}x none; niced "
            f"{tput['following_niced_ratio']:.2f}x; frozen {tput['frozen_ratio']:.2f}x); master CPU/write "
            f"{tput['none_master_cpu_us']:.0f} us none, {tput['following_master_cpu_us']:.0f} us following; "
            f"{a.bars:,} bars written in {write_a:.2f} s, resumed replica caught up in {resume:.2f} s, "
            f"restarted in {restart:.2f} s (idle restart {restart_idle:.2f} s); fresh replica seeded in {seed:.2f} s")  # fmt: skip
    finally:
        for rep in replicas:
            if rep.proc is not None and rep.proc.poll() is None:
                os.kill(rep.proc.pid, signal.SIGCONT)  # a frozen one could not act on SIGTERM
            rep.stop()
        master.stop()
    return res


def section(res: dict[str, Any]) -> str:
    med = res["median"]
    p = res["params"]
    return f"""{TITLE}

`make bench-replication` ({res["meta"]["date"]}; {p["rounds"]} rounds, medians; 2-core machine, load average
{res["load"][0]:.1f} at the start{" (**under load**: figures are noisy)" if res["load"][0] > 1.0 else ""}). Master and two replicas are separate server processes on one
machine, each with its own root on the same disk (the master `fdatasync`s every write; replicas sync their
logs in the background, see [replication](replication.md)); the client writes over `/rpc`.

| Measure | Result | Target |
|---|---|---|
| Lag, ack on the master → readable on a replica (1-row writes, {p["pace_ms"]} ms apart), p50 | {med["lag_p50_ms"]:.2f} ms | ≤ 5 ms |
| Same, p99 | {med["lag_p99_ms"]:.2f} ms | ≤ 50 ms |
| Master 1-row writes/s, replication on, no replica attached | {med["none_writes_per_s"]:.0f} | |
| Same, two replicas following; ratio to no replica, back to back | {med["following_writes_per_s"]:.0f} ({med["following_ratio"]:.2f}×) | ≥ 0.8× |
| Same, replicas at `nice 19` (as if on other machines: only the CPU the master leaves) | {med["following_niced_writes_per_s"]:.0f} ({med["following_niced_ratio"]:.2f}×) | |
| Same, both replicas frozen (`SIGSTOP`) | {med["frozen_writes_per_s"]:.0f} ({med["frozen_ratio"]:.2f}×) | |
| Master CPU per write: no replica / two following / two frozen | {med["none_master_cpu_us"]:.0f} / {med["following_master_cpu_us"]:.0f} / {med["frozen_master_cpu_us"]:.0f} µs | |
| The two replicas' CPU per write they apply, following | {med["following_replicas_cpu_us"]:.0f} µs | |
| Writing {p["bars"]:,} 1Min bars in {p["batch"]:,}-row batches | {med["write_bars_s"]:.2f} s | |
| Catch-up of those bars, replica frozen then resumed | {med["catch_up_resume_s"]:.2f} s ({med["catch_up_ratio_resume"]:.2f}× the writing) | ≤ 2× |
| Catch-up of those bars, replica restarted, process start included | {med["catch_up_restart_s"]:.2f} s | |
| The same restart with nothing missed (the process start alone) | {med["restart_idle_s"]:.2f} s | |
| Fresh replica on an empty root, seeded with a copy of {3 * p["bars"]:,}+ rows | {med["seed_fresh_s"]:.2f} s | |

The lag includes one replica query's round trip (the client polls until the row is readable), so the
replication lag itself is lower. Throughput: {p["pairs"]} cycles a round of no replica, two following, the same at
`nice 19`, two frozen, no replica again ({p["tput_writes"]} writes each, the replicas stopped and restarted between
cycles); each with-replicas figure is divided by the mean of the no-replica figures just before and after it (the
machine's speed drifts), and the ratios' median is given. The master, both replicas and the client compete for two
cores and one disk, so "two replicas following" is a worst case; the `nice 19` row shows what the replicas' own
CPU costs the master. CPU per write (the processes' user + system time over the writes) hardly moves with the
machine's load, unlike writes/s. Raw figures:
`{res["meta"]["json"]}`.
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--lag-writes", type=int, default=300)
    ap.add_argument("--pace-ms", type=float, default=5.0)
    ap.add_argument("--tput-writes", type=int, default=1000)
    ap.add_argument("--pairs", type=int, default=3, help="none/following/niced/frozen throughput cycles per round")
    ap.add_argument("--bars", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--workdir", type=Path, help="scratch directory (default: a new temporary one, removed)")
    ap.add_argument("--out", type=Path, help="JSON results (default bench/results/replication-<date>.json)")
    ap.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks.md")
    ap.add_argument("--no-doc", action="store_true", help="print the section, do not write --doc")
    a = ap.parse_args(argv)
    log, workdir, out_json = start_run(a, "replication")
    load_before = os.getloadavg()[0]
    rounds = [one_round(workdir, a, r, log) for r in range(a.rounds)]
    keys = [k for k in rounds[0] if k not in ("lag_ms", "write_bars_s", "runs")]
    median = {k: statistics.median(r[k] for r in rounds) for k in keys}
    median["write_bars_s"] = statistics.median(x for r in rounds for x in r["write_bars_s"])
    params = {k: getattr(a, k) for k in ("rounds", "lag_writes", "pace_ms", "tput_writes", "pairs", "bars", "batch")}
    res = {
        "meta": run_meta(argv, out_json, Path(sys.executable)),
        "params": params,
        "load": [load_before, os.getloadavg()[0]],
        "median": median,
        "rounds": rounds,
    }
    finish_run(a, log, workdir, out_json, res, section(res), TITLE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
