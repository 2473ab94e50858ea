"""mktsframe's network server over loopback, measured by the same worker protocol as the local peers.

Three systems, one server each: ``server-pymarketstore`` (the unmodified pymarketstore 0.22 client,
what a MarketStore user runs), ``server-pymarketstore-grpc`` (the same client with ``grpc=True``,
on the server's gRPC port) and ``server-http`` (mktsframe's HTTP backend,
``mktsframe.connect("http://...")``). Each starts ``python -m mktsframe.server`` on free loopback
ports with its own data root (durable: every write ``fdatasync``'d before the reply) and talks to
it only through the client, so every figure includes the client, the wire over loopback and the
server. The bulk write goes in 10,000-row batches (the issue's ingest unit), so rows/s of
ingest is ``rows / bulk_write_s``. :meth:`ServerSystem.measure_extra` adds queries/s with 8
concurrent client processes and the server's own peak RSS.

The server process is always stopped: by :meth:`ServerSystem.shutdown` (the worker's
``finally``), by ``atexit``, and, should the worker be killed, by the kernel
(``PR_SET_PDEATHSIG``: the server gets SIGTERM when the worker dies).

Times are seconds, sizes bytes.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import BAR, DAY, EPOCH0, KEY, SYMBOL, Data, Params, proc_status, reset_peak_rss
from bench.systems.base import System

INGEST_BATCH = 10_000  # rows per write call in the bulk write (the ingest batch)
CLIENTS = 8  # concurrent client processes for queries/s
QPS_SECONDS = 3.0  # measuring window of the concurrent run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the server child, before exec: SIGTERM it when the process that started it dies."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ServerProcess:
    """``python -m mktsframe.server --root ROOT`` on a free loopback port; :meth:`stop` ends it.
    ``module``: another entry point taking the same arguments (``bench.slow_sync_server``)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        log_path: str | os.PathLike[str],
        config: Path | None = None,
        module: str = "mktsframe.server",
    ) -> None:
        import httpx

        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        for _attempt in range(5):  # the free port may be taken before the server binds it
            self.port, self.grpc_port = free_port(), free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            with open(log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", module, "--root", str(self.root), "--port", str(self.port),
                     "--host", "127.0.0.1", "--grpc-port", str(self.grpc_port),
                     *(["--config", str(config)] if config is not None else [])],
                    stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
            atexit.register(self.stop)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if httpx.get(f"{self.url}/heartbeat", timeout=2).status_code == 200:
                        return
                except httpx.TransportError:
                    time.sleep(0.05)
            self.stop()
        raise RuntimeError(f"server did not start; see {log_path}: {Path(log_path).read_text()[-1000:]}")

    @property
    def rpc(self) -> str:
        return f"{self.url}/rpc"

    def endpoint(self, kind: str) -> str:
        """What a client of ``kind`` connects to: the gRPC ``host:port`` or the ``/rpc`` URL."""
        return f"127.0.0.1:{self.grpc_port}" if kind == "pymarketstore-grpc" else self.rpc

    def status(self) -> dict[str, int]:
        """The server's ``/proc/PID/status`` memory lines in bytes (VmRSS, VmHWM, RssAnon, RssFile...)."""
        assert self.proc is not None
        return proc_status(self.proc.pid)

    def stop(self) -> None:
        """SIGTERM (graceful: in-flight requests finish, the engine checkpoints), SIGKILL after 30 s."""
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# -- the clients ----------------------------------------------------------------------------------

class _PymktsClient:
    """pymarketstore 0.22, used exactly as its README shows."""

    grpc = False

    def __init__(self, endpoint: str) -> None:
        import pymarketstore as pymkts

        self.pymkts = pymkts
        self.client = pymkts.Client(endpoint, grpc=self.grpc)
        self.tf, self.group = KEY.split("/")[1:]

    def write(self, df: pd.DataFrame) -> None:
        rec = np.empty(len(df), dtype=[("Epoch", "<i8")] + [(c, df[c].dtype.str) for c in df.columns])
        rec["Epoch"] = df.index.asi8 // 1_000_000_000
        for c in df.columns:
            rec[c] = df[c].to_numpy()
        self.client.write(rec, KEY)

    def query(self, **kw: Any) -> pd.DataFrame:
        return self.client.query(self.pymkts.Params(SYMBOL, self.tf, self.group, **kw)).first().df()

    def read_range(self, s: int, e: int) -> pd.DataFrame:
        return self.query(start=s, end=e - 1)  # MarketStore's end is inclusive (epoch seconds)

    def tail(self, n: int) -> pd.DataFrame:
        return self.query(limit=n)

    def read_all(self) -> pd.DataFrame:
        return self.query()

    def close(self) -> None:
        self.client.client.rpc._session.close()


class _PymktsGrpcClient(_PymktsClient):
    """pymarketstore 0.22 with ``grpc=True`` (its ``GRPCClient``), otherwise used the same way."""

    grpc = True

    def close(self) -> None:
        self.client.client.channel.close()


class _HttpClient:
    """mktsframe's HTTP backend through the pandas front door (as the local mktsframe system)."""

    def __init__(self, rpc: str) -> None:
        import mktsframe

        self.db = mktsframe.connect(rpc)

    def write(self, df: pd.DataFrame) -> None:
        import mktsframe

        mktsframe.write_mkts(df, KEY, backend=self.db)

    def read_range(self, s: int, e: int) -> pd.DataFrame:
        return pd.read_mkts(KEY, start=pd.Timestamp(s, unit="s"), end=pd.Timestamp(e * 1_000_000_000 - 1),
                            backend=self.db)

    def tail(self, n: int) -> pd.DataFrame:
        return pd.read_mkts(KEY, limit=n, backend=self.db)

    def read_all(self) -> pd.DataFrame:
        return pd.read_mkts(KEY, backend=self.db)

    def close(self) -> None:
        self.db.close()


CLIENT_KINDS: dict[str, type[_PymktsClient] | type[_HttpClient]] = {
    "pymarketstore": _PymktsClient, "pymarketstore-grpc": _PymktsGrpcClient, "http": _HttpClient}


def _qps_client(kind: str, endpoint: str, days: int, seconds: float, seed: int, ready: Any, out: Any) -> None:
    """One of the concurrent clients: warm up, wait for all, then count verified one-day reads."""
    client = CLIENT_KINDS[kind](endpoint)
    rng = np.random.default_rng(seed)
    starts = EPOCH0 + DAY * rng.integers(0, days, 100_000)
    for s in starts[:10]:
        client.read_range(int(s), int(s) + DAY)
    ready.wait(timeout=300)  # never hang if the measuring process died
    n, bad = 0, 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        s = int(starts[n % len(starts)])
        bad += len(client.read_range(s, s + DAY)) != DAY // BAR
        n += 1
    client.close()
    out.put((n, bad))


def concurrent_qps(kind: str, endpoint: str, days: int, clients: int = CLIENTS,
                   seconds: float = QPS_SECONDS) -> dict[str, Any]:
    """One-day queries per second from ``clients`` processes at once, all inside one ``seconds`` window."""
    ctx = mp.get_context("spawn")
    ready, out = ctx.Barrier(clients + 1), ctx.Queue()
    procs = [ctx.Process(target=_qps_client, args=(kind, endpoint, days, seconds, i, ready, out)) for i in range(clients)]
    for p in procs:
        p.start()
    try:
        ready.wait(timeout=120)
        res = [out.get(timeout=seconds + 120) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    n, bad = sum(r[0] for r in res), sum(r[1] for r in res)
    if bad:
        raise AssertionError(f"{bad} of {n} concurrent one-day reads returned the wrong number of rows")
    return {"qps_clients": clients, "qps_seconds": seconds, "qps": n / seconds}


# -- the systems ----------------------------------------------------------------------------------

class ServerSystem(System):
    kind = "?"

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.server: ServerProcess | None = None
        self.client: _PymktsClient | _HttpClient | None = None

    def _data(self) -> Path:
        return Path(self.root) / "data"

    def reset(self) -> None:
        """A fresh store: the bucket is destroyed through the server (it keeps running between repeats)."""
        if self.server is None:
            shutil.rmtree(self.root, ignore_errors=True)
            os.makedirs(self.root, exist_ok=True)
            self.server = ServerProcess(self._data(), Path(self.root) / "server.log")
        else:
            import mktsframe
            from mktsframe.errors import BucketNotFoundError

            with mktsframe.connect(self.server.rpc) as db, contextlib.suppress(BucketNotFoundError):
                db.destroy(KEY)

    def _open(self) -> None:
        if self.client is None:
            assert self.server is not None
            self.client = CLIENT_KINDS[self.kind](self.server.endpoint(self.kind))

    prepare_write = open_read = open_append = _open

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def shutdown(self) -> None:
        self.close()
        if self.server is not None:
            self.server.stop()
            self.server = None

    def write(self, df: pd.DataFrame) -> None:
        assert self.client is not None
        for i in range(0, len(df), INGEST_BATCH):
            self.client.write(df.iloc[i:i + INGEST_BATCH])

    def append_chunk(self, df: pd.DataFrame) -> None:
        assert self.client is not None
        self.client.write(df)

    def read_all(self) -> pd.DataFrame:
        assert self.client is not None
        return self.client.read_all()

    def read_range(self, s: int, e: int) -> pd.DataFrame:
        assert self.client is not None
        return self.client.read_range(s, e)

    def tail(self, n: int) -> pd.DataFrame:
        assert self.client is not None
        return self.client.tail(n)

    def size(self) -> tuple[int, int]:
        from bench.common import du

        return du(self._data())

    def measure_extra(self, data: Data, p: Params) -> dict[str, Any]:
        """Queries/s with 8 concurrent clients over the bulk-written days, and the server's RSS."""
        assert self.server is not None
        days = max(1, len(data.df) * BAR // DAY - 1)
        out = concurrent_qps(self.kind, self.server.endpoint(self.kind), days)
        out["rows_written"], out["ingest_batch_rows"] = len(data.df), INGEST_BATCH
        st = self.server.status()
        out["server_rss_bytes"], out["server_peak_rss_bytes"] = st.get("VmRSS"), st.get("VmHWM")
        return out


class PymktsServerSystem(ServerSystem):
    kind = "pymarketstore"
    notes = ("python -m mktsframe.server on loopback (durable), unmodified pymarketstore 0.22: "
             "Client.write(records) in 10,000-row batches, Client.query(Params(start=, end=)).first().df(), "
             "Params(limit=100); size on disk includes the running server's write-ahead log")


class PymktsGrpcServerSystem(ServerSystem):
    kind = "pymarketstore-grpc"
    notes = ("python -m mktsframe.server on loopback (durable), unmodified pymarketstore 0.22 with grpc=True "
             "on the server's gRPC port: the same calls as server-pymarketstore; size on disk includes the "
             "running server's write-ahead log")


class HttpServerSystem(ServerSystem):
    kind = "http"
    notes = ("python -m mktsframe.server on loopback (durable), mktsframe.connect('http://...') with "
             "write_mkts in 10,000-row batches / pd.read_mkts(key, start=, end=) / pd.read_mkts(key, limit=100); "
             "size on disk includes the running server's write-ahead log")


class PeakAnon:
    """The highest RssAnon (bytes) of the server while the block runs, sampled every ``interval`` s.

    The kernel keeps only the peak of all RSS (VmHWM), which also counts the page cache of the
    memory-mapped year files a whole-bucket read maps in (shared, reclaimable); what the server
    itself allocates to answer is its anonymous memory.
    """

    def __init__(self, server: ServerProcess, interval: float = 0.002) -> None:
        import threading

        self.server, self.interval = server, interval
        self.peak, self.samples = 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            anon = self.server.status().get("RssAnon", 0)
            self.peak, self.samples = max(self.peak, anon), self.samples + 1
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakAnon:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def serve_bucket_rss(root: str, rows: int) -> dict[str, Any]:
    """Serve an existing root, query the whole of ``KEY`` once per client kind, report the server's RSS.

    The result is ``rows`` 32-byte records; what matters is how much anonymous memory the server
    needs on top of its idle size to answer (the year files are mapped: page cache, not copies).
    """
    import gc

    out: dict[str, Any] = {"rows": rows, "result_bytes": rows * 32}
    server = ServerProcess(root, Path(root).parent / "serve-rss.log")
    try:
        for kind in CLIENT_KINDS:
            client = CLIENT_KINDS[kind](server.endpoint(kind))
            client.tail(1)  # warm: imports, catalog, connection
            before = server.status()
            assert server.proc is not None
            reset_peak_rss(server.proc.pid)
            with PeakAnon(server) as anon:
                t0 = time.perf_counter()
                df = client.read_all()
                took = time.perf_counter() - t0
            ok = len(df) == rows
            del df
            gc.collect()
            after = server.status()
            client.close()
            out[kind] = {"read_s": took, "verified": ok, "idle_rss_bytes": before.get("VmRSS"),
                         "peak_rss_delta_bytes": after["VmHWM"] - before["VmRSS"],
                         "peak_anon_delta_bytes": anon.peak - before.get("RssAnon", 0),
                         "anon_samples": anon.samples,
                         "rss_anon_after_delta_bytes": after.get("RssAnon", 0) - before.get("RssAnon", 0)}
    finally:
        server.stop()
    return out

