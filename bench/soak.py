"""Soak: the real server under steady load, killed with SIGKILL and restarted every few minutes.

``make soak`` runs it for 10 minutes (``--duration 600 --kill-every 150``); ``tests/test_soak.py``
runs a 60-second version (two kills) in ``make test``. What runs, all over loopback against
``python -m mktsframe.server`` on a free port:

* **writers** (``--writers``, threads): the unmodified pymarketstore client writing ``--batch`` 1Min
  bars at a time to a bucket each, consecutive bars, values derived from the bar's number. A write
  is *acknowledged* when the server's reply arrived without an error; a write that failed (server
  down) is retried with the same rows. Every acknowledged bar is remembered.
* **readers** (``--readers``): the last 100 bars of a writer's bucket, checked for consistency.
* **subscribers** (``--subscribers``): ``/ws`` streams of every writer's bucket (websocket-client,
  pymarketstore's own library) that drop their connection every few seconds, and reconnect
  whenever the server goes away; every pushed row is checked like a read.
* **the killer**: ``kill -9`` of the server every ``--kill-every`` seconds, then a restart on the
  same root (on a new free port: the clients follow), timed until ``/heartbeat`` answers.
* **the monitor**: the server's RSS and open file descriptors (``/proc``) twice a second.

At the end every acknowledged bar is read back through a fresh server and compared. Pass/fail
(``checks`` in the JSON result): no acknowledged bar lost or changed; after each life's warm-up
(``--warmup`` seconds), open descriptors stay within a small band and RSS does not grow by more
than 16 MiB or 10 % within a life, nor by more than half across lives; the p99 latencies of reads
and writes in the second half of the run are within 3× (+50 ms) of the first half's.

Usage: ``.venv/bin/python bench/soak.py [--duration 600] [--kill-every 150] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pymarketstore as pymkts
import requests
import websocket

from mktsframe.server.launch import ServerProcess, ServerStartError

NS = 1_000_000_000
T0 = 1_704_067_200  # 2024-01-01 00:00 UTC
DTYPE = [("Epoch", "i8"), ("Open", "f4"), ("Close", "f4"), ("Volume", "f8")]
MAX_BARS = 500_000  # 1Min bars in 2024 (527,040): the writers stop before the year ends
MiB = 1 << 20


def bars(first: int, n: int) -> np.ndarray:
    """Bars ``first .. first+n-1``: Epoch from the bar number, values derived from it (self-checking)."""
    i = np.arange(first, first + n, dtype=np.int64)
    arr = np.zeros(n, DTYPE)
    arr["Epoch"] = T0 + i * 60
    arr["Open"] = (i % 100_000).astype("f4")
    arr["Close"] = arr["Open"] + 0.5
    arr["Volume"] = i.astype("f8")
    return arr


def consistent(epoch: np.ndarray, open_: np.ndarray, close: np.ndarray, volume: np.ndarray) -> bool:
    i = (np.asarray(epoch, np.int64) - T0) // 60
    return bool(
        np.array_equal(np.asarray(volume, "f8"), i.astype("f8"))
        and np.array_equal(np.asarray(open_, "f4"), (i % 100_000).astype("f4"))
        and np.array_equal(np.asarray(close, "f4"), (i % 100_000).astype("f4") + np.float32(0.5))
    )


@dataclass
class State:
    """What the threads share; the lock guards the lists."""

    root: Path
    server: ServerProcess | None = None
    up: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: float = field(default_factory=time.monotonic)
    life: int = 0
    life_started: float = 0.0
    write_lat: list[tuple[float, float]] = field(default_factory=list)
    read_lat: list[tuple[float, float]] = field(default_factory=list)
    samples: list[tuple[int, float, float, int]] = field(default_factory=list)  # life, t in life, RSS, fds
    restarts: list[float] = field(default_factory=list)
    failed_writes: int = 0
    failed_reads: int = 0
    bad_reads: int = 0
    ws_messages: int = 0
    ws_bad: int = 0
    ws_connects: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def now(self) -> float:
        return time.monotonic() - self.started

    def note(self, msg: str) -> None:
        with self.lock:
            if len(self.errors) < 50:
                self.errors.append(f"{self.now():.1f}s {msg}")


def start(st: State) -> None:
    t = time.monotonic()
    for attempt in range(3):
        try:
            st.server = ServerProcess(st.root, timeout=120)
            break
        except ServerStartError:
            if attempt == 2:
                raise
    st.restarts.append(time.monotonic() - t)
    st.life += 1
    st.life_started = time.monotonic()
    st.up.set()


def writer(st: State, key: str, acked: np.ndarray, batch: int, pause: float) -> None:
    i = 0
    while not st.stop.is_set() and i + batch <= MAX_BARS:
        if not st.up.wait(0.5):
            continue
        url = st.url
        arr = bars(i, batch)
        t = time.perf_counter()
        try:
            reply = pymkts.Client(f"{url}/rpc").write(arr, key)
        except (requests.RequestException, ConnectionError, OSError):
            with st.lock:
                st.failed_writes += 1
            time.sleep(0.05)
            continue  # not acknowledged: the same rows again
        except Exception as exc:  # an error reply: remembered, the same rows again
            st.note(f"write {key}: {exc}")
            time.sleep(0.05)
            continue
        lat = time.perf_counter() - t
        errors = [r for r in (reply.get("responses") or []) if r.get("error")] if isinstance(reply, dict) else []
        if errors:
            st.note(f"write {key}: {errors}")
            continue
        acked[i : i + batch] = True
        with st.lock:
            st.write_lat.append((st.now(), lat))
        i += batch
        time.sleep(pause)


def reader(st: State, keys: list[str], pause: float) -> None:
    rnd = random.Random(1)
    while not st.stop.is_set():
        if not st.up.wait(0.5):
            continue
        key = rnd.choice(keys)
        sym, tf, group = key.split("/")
        t = time.perf_counter()
        try:
            reply = pymkts.Client(f"{st.url}/rpc").query(pymkts.Params(sym, tf, group, limit=100))
            arr = reply.first().array
        except (requests.RequestException, ConnectionError, OSError):
            with st.lock:
                st.failed_reads += 1
            time.sleep(0.05)
            continue
        except Exception as exc:  # no bucket yet (before the first write) or an error reply
            if "no bucket" not in str(exc) and "no files returned" not in str(exc):
                st.note(f"read {key}: {exc}")
            time.sleep(0.05)
            continue
        lat = time.perf_counter() - t
        ok = consistent(arr["Epoch"], arr["Open"], arr["Close"], arr["Volume"])
        with st.lock:
            st.read_lat.append((st.now(), lat))
            st.bad_reads += not ok
        time.sleep(pause)


def subscriber(st: State, keys: list[str], hold: float) -> None:
    """Subscribe, take pushes for ``hold`` seconds (or until the server goes away), drop, reconnect."""
    while not st.stop.is_set():
        if not st.up.wait(0.5):
            continue
        ws = None
        try:
            ws = websocket.create_connection(st.url.replace("http://", "ws://") + "/ws", timeout=5)
            ws.send(msgpack.dumps({"streams": keys}), opcode=websocket.ABNF.OPCODE_BINARY)
            echo = msgpack.loads(ws.recv())
            if echo != {"streams": keys}:
                st.note(f"ws subscribe answered {echo}")
            with st.lock:
                st.ws_connects += 1
            until = time.monotonic() + hold
            ws.settimeout(0.5)
            while time.monotonic() < until and not st.stop.is_set():
                try:
                    msg = msgpack.loads(ws.recv())
                except websocket.WebSocketTimeoutException:
                    continue
                data = msg.get("data", {}) if isinstance(msg, dict) else {}
                if "Epoch" not in data:
                    continue
                ok = consistent(
                    np.atleast_1d(data["Epoch"]), np.atleast_1d(data["Open"]),
                    np.atleast_1d(data["Close"]), np.atleast_1d(data["Volume"]),
                )  # fmt: skip
                with st.lock:
                    st.ws_messages += 1
                    st.ws_bad += not ok
        except (websocket.WebSocketException, ConnectionError, OSError):
            time.sleep(0.1)  # the server went away: reconnect once it is back
        finally:
            if ws is not None:
                with contextlib.suppress(Exception):
                    ws.close()
                    ws.shutdown()


def monitor(st: State) -> None:
    while not st.stop.wait(0.5):
        server = st.server
        if server is None or not st.up.is_set():
            continue
        pid = server.proc.pid
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            rss = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) * 1024
            fds = len(os.listdir(f"/proc/{pid}/fd"))
        except (OSError, StopIteration):
            continue
        with st.lock:
            st.samples.append((st.life, time.monotonic() - st.life_started, rss, fds))


def verify(st: State, keys: list[str], acked: list[np.ndarray]) -> dict[str, int]:
    """Every acknowledged bar read back (in slices, whatever the server's reply limit) and compared."""
    client = pymkts.Client(f"{st.url}/rpc")
    lost = changed = checked = 0
    for key, ack in zip(keys, acked, strict=True):
        sym, tf, group = key.split("/")
        idx = np.flatnonzero(ack)
        if idx.size == 0:
            continue
        present = np.zeros(MAX_BARS, bool)
        step = 50_000
        for lo in range(0, int(idx[-1]) + 1, step):
            p = pymkts.Params(sym, tf, group, start=T0 + lo * 60, end=T0 + (lo + step - 1) * 60)
            try:
                arr = client.query(p).first().array
            except Exception as exc:
                if "no files returned" in str(exc):
                    continue
                raise
            i = (arr["Epoch"].astype(np.int64) - T0) // 60
            present[i] = True
            changed += int(not consistent(arr["Epoch"], arr["Open"], arr["Close"], arr["Volume"]))
        lost += int(np.count_nonzero(ack & ~present))
        checked += int(idx.size)
    return {"acknowledged_bars": checked, "lost": lost, "inconsistent_slices": changed}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def summarise(st: State, duration: float, warmup: float, verified: dict[str, int]) -> dict[str, Any]:
    warm = [s for s in st.samples if s[1] >= warmup]
    lives: dict[int, list[tuple[int, float, float, int]]] = {}
    for s in warm:
        lives.setdefault(s[0], []).append(s)
    growth = [(v[-1][2] - v[0][2]) for v in lives.values() if len(v) >= 2]
    first_rss = [v[0][2] for v in lives.values()]
    fds = [s[3] for s in warm]
    half = duration / 2

    def p99(lat: list[tuple[float, float]], first: bool) -> float:
        return pct([x for t, x in lat if (t < half) == first and t > warmup], 99)

    res: dict[str, Any] = {
        "duration_s": round(duration, 1),
        "kills": len(st.restarts) - 1,
        "restart_s": [round(x, 2) for x in st.restarts[1:]],
        "writes": len(st.write_lat),
        "reads": len(st.read_lat),
        "failed_writes_while_down": st.failed_writes,
        "failed_reads_while_down": st.failed_reads,
        "ws_connects": st.ws_connects,
        "ws_messages": st.ws_messages,
        "write_p50_ms": round(pct([x for _, x in st.write_lat], 50) * 1e3, 2),
        "write_p99_ms": [round(p99(st.write_lat, True) * 1e3, 2), round(p99(st.write_lat, False) * 1e3, 2)],
        "read_p50_ms": round(pct([x for _, x in st.read_lat], 50) * 1e3, 2),
        "read_p99_ms": [round(p99(st.read_lat, True) * 1e3, 2), round(p99(st.read_lat, False) * 1e3, 2)],
        "rss_mib_after_warmup": [round(min(s[2] for s in warm) / MiB, 1), round(max(s[2] for s in warm) / MiB, 1)]
        if warm
        else None,
        "rss_growth_in_life_mib": [round(g / MiB, 1) for g in growth],
        "fds_after_warmup": [min(fds), max(fds)] if fds else None,
        "errors": st.errors,
        **verified,
    }
    rss_ok = all(g <= max(16 * MiB, 0.10 * v[0][2]) for g, v in zip(growth, lives.values(), strict=False))
    res["checks"] = {
        "no_acknowledged_bar_lost": verified["lost"] == 0 and verified["inconsistent_slices"] == 0,
        "reads_and_pushes_consistent": st.bad_reads == 0 and st.ws_bad == 0,
        "killed_and_restarted": len(st.restarts) >= 2,
        "subscribers_reconnected": st.ws_connects >= len(st.restarts) and st.ws_messages > 0,
        "fds_flat": bool(fds) and max(fds) - min(fds) <= 16,
        "rss_flat": bool(growth) and rss_ok and max(first_rss) <= 1.5 * min(first_rss),
        "p99_stable": all(
            p99(lat, False) <= 3 * p99(lat, True) + 0.05 for lat in (st.write_lat, st.read_lat)
        ),
        "no_unexpected_errors": not st.errors,
    }
    return res


def run(
    duration: float = 600.0,
    kill_every: float = 150.0,
    *,
    writers: int = 2,
    readers: int = 2,
    subscribers: int = 2,
    batch: int = 10,
    pause: float = 0.02,
    warmup: float = 5.0,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Run the soak; returns the figures and ``checks`` (see the module docstring)."""
    tmp = tempfile.TemporaryDirectory(prefix="mkts-soak-", dir=workdir)
    st = State(Path(tmp.name) / "root")
    keys = [f"SOAK{i}/1Min/OHLCV" for i in range(writers)]
    acked = [np.zeros(MAX_BARS, bool) for _ in keys]
    threads = [threading.Thread(target=writer, args=(st, k, a, batch, pause)) for k, a in zip(keys, acked, strict=True)]
    threads += [threading.Thread(target=reader, args=(st, keys, 0.05)) for _ in range(readers)]
    threads += [threading.Thread(target=subscriber, args=(st, keys, 4.0 + 2 * i)) for i in range(subscribers)]
    threads.append(threading.Thread(target=monitor, args=(st,)))
    try:
        start(st)
        for t in threads:
            t.start()
        end = time.monotonic() + duration
        next_kill = time.monotonic() + kill_every
        while time.monotonic() < end:
            time.sleep(min(0.2, max(0.0, end - time.monotonic())))
            if time.monotonic() >= next_kill and end - time.monotonic() > 5:
                # Clients keep going: their requests to the dead server fail and are retried.
                assert st.server is not None
                st.server.proc.kill()  # kill -9: no checkpoint, no clean close
                st.server.proc.wait()
                st.server.stop()
                start(st)
                next_kill = time.monotonic() + kill_every
        elapsed = time.monotonic() - st.started
        st.stop.set()
        for t in threads:
            t.join(timeout=30)
        # Read back through a server restarted after one more kill -9 (nothing in flight now).
        st.up.clear()
        assert st.server is not None
        st.server.proc.kill()
        st.server.proc.wait()
        st.server.stop()
        start(st)
        verified = verify(st, keys, acked)
        st.restarts.pop()  # the verification's restart is not one of the soak's
        return summarise(st, elapsed, warmup, verified)
    finally:
        st.stop.set()
        if st.server is not None:
            st.server.stop()
        tmp.cleanup()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    ap.add_argument("--kill-every", type=float, default=150.0, help="seconds between kill -9 of the server")
    ap.add_argument("--writers", type=int, default=2)
    ap.add_argument("--readers", type=int, default=2)
    ap.add_argument("--subscribers", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args(argv)
    res = run(args.duration, args.kill_every, writers=args.writers, readers=args.readers, subscribers=args.subscribers)
    text = json.dumps(res, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    failed = [k for k, ok in res["checks"].items() if not ok]
    print("PASS" if not failed else f"FAIL: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
