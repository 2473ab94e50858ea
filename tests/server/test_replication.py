"""Replication end to end: a master and replicas as real ``python -m mktsframe.server`` processes
on loopback, driven by pymarketstore and mktsframe's HTTP backend; kill -9 on either side."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pymarketstore as pymkts
import pytest
from live_helpers import ServerProcess, free_port, start_server

import mktsframe as mf
from mktsframe.backend.base import Batch
from mktsframe.errors import BucketNotFoundError, MktsError

pytestmark = [pytest.mark.server, pytest.mark.timeout(240)]

NS = 1_000_000_000
T0 = 1_704_067_200  # 2024-01-01 UTC
FAST_LOG = {"checkpoint_interval": 0.2, "wal_rotate_interval": 1}  # the master's log rotates all the time


def dump(server: ServerProcess) -> dict[str, tuple[list[int], dict[str, list[Any]], bool]]:
    """Every bucket of ``server``, whole: exact index (ns) and every column."""
    with mf.connect(server.url) as db:
        out = {}
        for key in db.list_keys():
            b = db.query(key)[key]
            out[key] = (b.index.tolist(), {k: v.tolist() for k, v in b.columns.items()}, b.variable_length)
        return out


def converge(master: ServerProcess, *replicas: ServerProcess, timeout: float = 30.0) -> dict[str, Any]:
    """Wait until every replica holds exactly what the master holds; returns that."""
    deadline = time.monotonic() + timeout
    want = dump(master)
    while True:
        try:
            got = [dump(r) for r in replicas]
        except BucketNotFoundError:  # listed, then destroyed before it was read (a re-seed under way)
            got = [{} for _ in replicas]
        if all(g == want for g in got):
            return want
        if time.monotonic() > deadline:
            for r, g in zip(replicas, got, strict=True):
                diff = sorted(k for k in set(want) | set(g) if want.get(k) != g.get(k))
                assert g == want, f"replica {r.url} differs in {diff}\n{r.output()[-3000:]}"
        time.sleep(0.1)
        want = dump(master)


def status(server: ServerProcess) -> dict[str, Any]:
    return httpx.get(f"{server.url}/heartbeat", timeout=5).json()["replication"]


def bars(seconds: list[int], values: list[float]) -> Batch:
    return Batch(np.array(seconds, np.int64) * NS, {"Close": np.array(values, np.float64)})


def ticks(ns: list[int], prices: list[float]) -> Batch:
    return Batch(np.array(ns, np.int64), {"Price": np.array(prices, np.float32)}, True)


def pymkts_bars(seconds: list[int]) -> np.ndarray:
    return np.array([(s, float(s % 997)) for s in seconds], dtype=[("Epoch", "i8"), ("Close", "f8")])


class Writer(threading.Thread):
    """Keeps writing 1-row bars and ticks to the master; remembers what was acknowledged."""

    def __init__(self, url: str, tag: str) -> None:
        super().__init__(daemon=True)
        self.url, self.tag = url, tag
        self.stop = threading.Event()
        self.acked: list[tuple[str, int, float]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        i = 0
        with mf.connect(self.url) as db:
            while not self.stop.is_set():
                i += 1
                try:
                    db.write(f"{self.tag}/1Min/OHLCV", bars([T0 + 60 * i], [float(i)]))
                    self.acked.append((f"{self.tag}/1Min/OHLCV", (T0 + 60 * i) * NS, float(i)))
                    db.write(f"{self.tag}T/1Sec/TICK", ticks([T0 * NS + i * 1001], [i / 4]), variable_length=True)
                    self.acked.append((f"{self.tag}T/1Sec/TICK", T0 * NS + i * 1001, i / 4))
                except (MktsError, httpx.HTTPError, OSError) as exc:
                    self.error = exc
                    return


def master_config(port: int, **extra: Any) -> dict[str, Any]:
    return {"replication": {"enabled": True, "listen_port": port, **extra.pop("replication", {})}, **extra}


def replica_config(port: int, host: str = "127.0.0.1", **extra: Any) -> dict[str, Any]:
    return {"replication": {"master_host": f"{host}:{port}", "retry_interval": "0.1s", "retry_backoff_coeff": 1.5,
                            "max_retry_interval": 0.5, **extra}}  # fmt: skip


def test_replicas_catch_up_follow_and_survive_kill9(tmp_path: Path) -> None:
    port = free_port()
    master = start_server(tmp_path / "m", config=master_config(port, **FAST_LOG))
    started = [master]
    try:
        client = pymkts.Client(master.rpc)
        client.write(pymkts_bars([T0 + 60 * i for i in range(50)]), "AAA/1Min/OHLCV")
        with mf.connect(master.url) as db:
            db.write("TCK/1Sec/TICK", ticks([T0 * NS + 1, T0 * NS + 1, T0 * NS + 999_999_999], [1, 2, 3]),
                     variable_length=True)  # fmt: skip
            db.create("EMPTY/1D/OHLCV", [("Close", "f8")])
            db.write_many({"M1/1Min/OHLCV": bars([T0], [1.0]), "M2/1Min/OHLCV": bars([T0], [2.0])})
        a = start_server(tmp_path / "a", config=replica_config(port))
        started.append(a)
        converge(master, a)

        # a replica refuses every change, over every API, naming its master
        rc = pymkts.Client(a.rpc)
        with pytest.raises(Exception, match=f"read-only replica of 127.0.0.1:{port}"):
            rc.write(pymkts_bars([T0]), "AAA/1Min/OHLCV")
        grpc_client = pymkts.Client(a.grpc, grpc=True)
        with pytest.raises(Exception, match="read-only replica"):
            grpc_client.destroy("AAA/1Min/OHLCV")
        grpc_client.client.channel.close()
        with pytest.raises(Exception, match="read-only replica"):
            rc.sql(['INSERT INTO "AAA/1Min/OHLCV" SELECT * FROM "AAA/1Min/OHLCV"'])
        csv = tmp_path / "bars.csv"
        csv.write_text("Epoch,Close\n2024-01-01 00:00:00,1.5\n")
        cmd = [sys.executable, "-m", "mktsframe.cli", "load", "AAA/1Min/OHLCV", str(csv), "--url", a.url]
        load = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert load.returncode != 0
        assert "read-only replica" in load.stderr + load.stdout
        with mf.connect(a.url) as db:
            with pytest.raises(MktsError, match="read-only replica"):
                db.write("AAA/1Min/OHLCV", bars([T0], [0.0]))
            with pytest.raises(MktsError, match="read-only replica"):
                db.delete("AAA/1Min/OHLCV")
        # a malformed stream request is refused; the master carries on
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.stream_stream("/mktsframe.Replication/Stream")(iter([b"\xc1 not msgpack"]))
            with pytest.raises(grpc.RpcError) as refused:
                list(call)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # /ws on the replica hears replicated writes
        with mf.connect(a.url) as rdb, rdb.subscribe("AAA/1Min/OHLCV") as sub:
            client.write(pymkts_bars([T0 + 60 * 1000]), "AAA/1Min/OHLCV")
            msg = sub.get(10)
            while msg is not None and "key" not in msg:
                msg = sub.get(10)
            assert msg == {
                "key": "AAA/1Min/OHLCV",
                "data": {"Epoch": T0 + 60 * 1000, "Close": float((T0 + 60000) % 997)},
            }

        rc.client.rpc._session.close()
        writer = Writer(master.url, "W")
        writer.start()
        time.sleep(0.5)
        a.stop(signal.SIGKILL)  # mid-stream
        with mf.connect(master.url) as db:  # the changes it misses: deletes, destroys, creates, writes
            db.delete("AAA/1Min/OHLCV", start=(T0 + 600) * NS, end=(T0 + 1200) * NS)
            db.delete("TCK/1Sec/TICK", start=T0 * NS + 1, end=T0 * NS + 1)
            db.destroy("M2/1Min/OHLCV")
            db.write("M2/1Min/OHLCV", Batch(np.array([T0 * NS]), {"Other": np.array([7], np.int32)}))
        b = start_server(tmp_path / "b", config=replica_config(port))  # a second replica, started late
        started.append(b)
        time.sleep(1.0)  # the master's log rotates meanwhile (kept: log_retention_mb)
        a = start_server(tmp_path / "a", root=a.root, config=replica_config(port))
        started.append(a)
        time.sleep(0.5)
        writer.stop.set()
        writer.join(10)
        assert writer.error is None
        assert len(writer.acked) > 10
        final = converge(master, a, b)
        assert "M2/1Min/OHLCV" in final
        assert final["M2/1Min/OHLCV"][1] == {"Other": [7]}
        assert final["TCK/1Sec/TICK"][0] == [T0 * NS + 999_999_999]  # exact nanoseconds, delete applied
        restarted = a.output()  # resumed from its position, from the master's kept log: no copy
        assert "re-seeding" not in restarted, restarted[-2000:]
        assert "from position 0" not in restarted, restarted[-2000:]

        # visible state: the master lists both replicas caught up; each replica its position; the CLI
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ms = status(master)
            if len(ms["replicas"]) == 2 and all(r["lag_records"] == 0 for r in ms["replicas"]):
                break
            time.sleep(0.1)
        assert len(ms["replicas"]) == 2, ms
        assert all(r["lag_records"] == 0 for r in ms["replicas"]), ms
        rs = status(a)
        assert rs["state"] == "streaming"
        assert rs["applied"] == ms["position"]
        assert rs["lag_records"] == 0
        cli = subprocess.run([sys.executable, "-m", "mktsframe.cli", "replication", "--url", b.url],
                             capture_output=True, text=True, timeout=30)  # fmt: skip
        assert cli.returncode == 0
        assert "role: replica" in cli.stdout
        assert "state: streaming" in cli.stdout

        client.client.rpc._session.close()
        # promotion: restarted without master_host, a replica is a writable server with everything
        b.stop()
        promoted = start_server(tmp_path / "b2", root=b.root)
        started.append(promoted)
        assert dump(promoted) == final
        with mf.connect(promoted.url) as db:
            db.write("AAA/1Min/OHLCV", bars([T0 + 60 * 5000], [1.5]))
        assert "replication" not in httpx.get(f"{promoted.url}/heartbeat").json()
        assert "promoted" in promoted.output()
    finally:
        for s in started:
            s.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    trustme = pytest.importorskip("trustme")  # a test dependency: present in CI
    d = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    for extra in cert.cert_chain_pems[1:]:
        with (d / "cert.pem").open("ab") as f:
            f.write(extra.bytes())
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    return {"cert": str(d / "cert.pem"), "key": str(d / "key.pem"), "ca": str(d / "ca.pem")}


def test_tls_reseed_and_master_kill9_loses_no_acknowledged_write(tmp_path: Path, tls_files: dict[str, str]) -> None:
    port = free_port()
    tls = {"tls_enabled": True, "cert_file": tls_files["cert"], "key_file": tls_files["key"], "log_retention_mb": 0}
    mconf = master_config(port, replication=tls, **FAST_LOG)
    rconf = replica_config(port, tls_enabled=True, cert_file=tls_files["ca"])
    master = start_server(tmp_path / "m", config=mconf)
    started = [master]
    try:
        with mf.connect(master.url) as db:
            db.write("X/1Min/OHLCV", bars([T0 + 60 * i for i in range(1000)], [float(i) for i in range(1000)]))
        r = start_server(tmp_path / "r", config=rconf)
        started.append(r)
        converge(master, r)
        assert status(r)["tls"] is True

        # a replica without the master's CA cannot follow it
        untrusted = start_server(tmp_path / "u", config=replica_config(port))  # plain text against TLS
        started.append(untrusted)
        time.sleep(1.0)
        assert status(untrusted)["state"] != "streaming"
        assert status(untrusted)["last_error"]
        untrusted.stop(signal.SIGKILL)

        # the replica is away while the master's log rotates away (log_retention_mb: 0): re-seeded
        r.stop(signal.SIGKILL)
        with mf.connect(master.url) as db:
            db.write("X/1Min/OHLCV", bars([T0 + 60 * 2000], [1.0]))
            db.destroy("X/1Min/OHLCV")
            db.write("Y/1Min/OHLCV", bars([T0], [2.0]))
        time.sleep(1.0)  # checkpoints every 0.2 s delete the segments
        r = start_server(tmp_path / "r", root=r.root, config=rconf)
        started.append(r)
        converge(master, r)
        assert "re-seeding" in r.output()

        # a frozen replica never holds the master's writers up: the log is its queue
        assert r.proc is not None
        r.proc.send_signal(signal.SIGSTOP)
        try:
            t = time.monotonic()
            with mf.connect(master.url) as db:
                for i in range(300):
                    db.write("Z/1Min/OHLCV", bars(T0 + 60 * np.arange(i * 100, (i + 1) * 100), np.ones(100)))
            assert time.monotonic() - t < 60
        finally:
            r.proc.send_signal(signal.SIGCONT)
        converge(master, r)

        # kill -9 the master during writes; restart it; every acknowledged write reaches the replica
        writer = Writer(master.url, "K")
        writer.start()
        time.sleep(1.0)
        master.stop(signal.SIGKILL)
        writer.join(10)
        assert writer.acked, writer.error
        master = start_server(tmp_path / "m", root=master.root, config=mconf)
        started.append(master)
        final = converge(master, r)
        stored = {k: dict(zip(v[0], next(iter(v[1].values())), strict=True)) for k, v in final.items()}
        missing = [a for a in writer.acked if stored.get(a[0], {}).get(a[1]) != pytest.approx(a[2])]
        assert not missing, missing[:5]
    finally:
        for s in started:
            s.stop(signal.SIGKILL)


def test_a_master_with_auth_streams_only_to_replicas_with_a_token(tmp_path: Path) -> None:
    """``auth: true`` covers the replication listener too: a replica presents a token with at least
    the read role (``replication.token``); without one the master refuses the stream."""
    from mktsframe.server.auth import Role, TokenStore

    port = free_port()
    store = TokenStore(tmp_path / "m" / "data")
    writer_token = store.add("feed", Role.WRITE)
    replica_token = store.add("replica", Role.READ)
    master = start_server(tmp_path / "m", config=master_config(port, auth=True))
    started = [master]
    try:
        with mf.connect(master.url, token=writer_token) as db:
            db.write("A/1Min/OHLCV", bars([T0, T0 + 60], [1.0, 2.0]))
        anonymous = start_server(tmp_path / "anon", config=replica_config(port))
        started.append(anonymous)
        r = start_server(tmp_path / "r", config=replica_config(port, token=replica_token))
        started.append(r)
        deadline = time.monotonic() + 30
        while dump(r) != {"A/1Min/OHLCV": ([T0 * NS, (T0 + 60) * NS], {"Close": [1.0, 2.0]}, False)}:
            assert time.monotonic() < deadline, r.output()[-3000:]
            time.sleep(0.1)
        assert status(r)["state"] == "streaming"
        assert status(anonymous)["state"] != "streaming"
        assert "token" in str(status(anonymous)["last_error"]).lower()
        assert dump(anonymous) == {}
        assert replica_token not in r.output() + master.output()
    finally:
        for s in started:
            s.stop(signal.SIGKILL)
