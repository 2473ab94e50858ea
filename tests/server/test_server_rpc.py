"""The ``/rpc`` envelope, both codecs, bad input, every ``mkts.yml`` switch, shutdown and the CLI."""

from __future__ import annotations

import base64
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import msgpack
import numpy as np
import pandas as pd
import pymarketstore as pymkts
import pytest
from live_helpers import ServerProcess, asgi_lifespan, free_port, mkts_client, replies, start_server

import mktsframe
from mktsframe import BucketNotFoundError, MktsError
from mktsframe.backend.http import HTTPBackend

pytestmark = [pytest.mark.server, pytest.mark.timeout(120)]

MSGPACK = {"Content-Type": "application/x-msgpack"}


def call(server: ServerProcess, method: str, params: object, *, req_id: object = "1", **extra: object) -> dict:
    body = {"jsonrpc": "2.0", "method": method, "id": req_id, "params": params, **extra}
    r = httpx.post(server.rpc, content=msgpack.packb(body), headers=MSGPACK, timeout=30)
    assert r.status_code == 200
    assert r.headers["marketstore-version"].startswith("mktsframe-")
    return msgpack.unpackb(r.content)


def raw(server: ServerProcess, body: bytes, content_type: str = "application/x-msgpack") -> httpx.Response:
    return httpx.post(server.rpc, content=body, headers={"Content-Type": content_type}, timeout=30)


def one_bar(sym: str, group: str = "OHLCV") -> tuple[np.ndarray, str]:
    arr = np.array([(1_704_153_600, 1.5)], dtype=[("Epoch", "i8"), ("Close", "f8")])
    return arr, f"{sym}/1Min/{group}"


def populate(root: Path, key: str = "PRE/1Min/OHLCV") -> None:
    """Write a bucket with the local engine before a server opens the root."""
    with mktsframe.connect(root) as db:
        idx = pd.date_range("2024-01-02", periods=3, freq="1min", tz="UTC")
        pd.DataFrame({"Close": [1.0, 2.0, 3.0]}, index=idx).to_mkts(key, backend=db)


# -- envelope ---------------------------------------------------------------------------------
def test_head_get_and_content_types(live_server: ServerProcess) -> None:
    head = httpx.head(live_server.rpc)
    assert head.headers["Marketstore-Version"].startswith("mktsframe-")
    get = httpx.get(live_server.rpc)
    assert get.status_code == 405
    assert "POST method required" in get.text
    assert "Marketstore-Version" in get.headers
    bad = raw(live_server, b"{}", "text/plain")
    assert bad.status_code == 415
    assert "unrecognized Content-Type" in bad.text
    hb = httpx.get(f"{live_server.url}/heartbeat").json()
    assert hb["status"] == "queryable"
    assert hb["version"].startswith("mktsframe-")


def test_envelope_errors(live_server: ServerProcess) -> None:
    def error_of(body: bytes) -> dict:
        r = raw(live_server, body)
        assert r.status_code == 200
        return msgpack.unpackb(r.content)["error"]

    assert error_of(b"\xc1garbage")["code"] == -32700
    assert error_of(msgpack.packb([1, 2]))["code"] == -32600
    e = error_of(msgpack.packb({"method": "DataService.ListSymbols", "id": "1", "params": {}}))
    assert (e["code"], e["message"]) == (-32600, "rpc: jsonrpc must be 2.0")
    e = call(live_server, "DataService.Nope", {})["error"]
    assert e["code"] == -32601
    assert "can't find method" in e["message"]
    assert call(live_server, "DataService.ListSymbols", "x")["error"]["code"] == -32602
    assert "Results" in call(live_server, "DataService.ListSymbols", [{"format": "tbk"}])["result"]
    assert call(live_server, "DataService.ListSymbols", {}, req_id=7)["id"] == 7
    e = call(live_server, "DataService.Query", {"requests": [{"destination": 5}]})["error"]
    assert "destinations must have a Symbol, Timeframe and AttributeGroup" in e["message"]
    e = call(live_server, "DataService.Query", {"requests": [{"destination": "A/1Min/B", "epoch_start": "x"}]})
    assert "epoch_start must be an integer" in e["error"]["message"]
    e = call(live_server, "DataService.Query", {"requests": "nope"})["error"]
    assert "requests must be a list" in e["message"]
    e = call(live_server, "DataService.Query", {"requests": [{"destination": "A/1Min/B", "limit_record_count": -1}]})
    assert "limit_record_count" in e["error"]["message"]


def test_notification_runs_but_gets_no_body(live_server: ServerProcess, sym: str) -> None:
    arr, key = one_bar(sym)
    ds = {"names": ["Epoch", "Close"], "types": ["i8", "f8"], "data": [arr["Epoch"].tobytes(), arr["Close"].tobytes()],
          "length": 1, "startindex": {key: 0}, "lengths": {key: 1}}
    body = {"jsonrpc": "2.0", "method": "DataService.Write", "params": {"requests": [{"dataset": ds}]}}
    r = raw(live_server, msgpack.packb(body))
    assert r.status_code == 200
    assert r.content == b""
    assert pymkts.Client(live_server.rpc).query(pymkts.Params(sym, "1Min", "OHLCV")).first().array.shape == (1,)


def test_json_codec_round_trip(live_server: ServerProcess, sym: str) -> None:
    arr, key = one_bar(sym)
    ds = {"names": ["Epoch", "Close"], "types": ["i8", "f8"],
          "data": [base64.b64encode(arr[n].tobytes()).decode() for n in ("Epoch", "Close")],
          "length": 1, "startindex": {key: 0}, "lengths": {key: 1}}
    body = {"jsonrpc": "2.0", "method": "DataService.Write", "id": 1, "params": {"requests": [{"dataset": ds}]}}
    r = raw(live_server, json.dumps(body).encode(), "application/json; charset=utf-8")
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {"jsonrpc": "2.0", "result": {"responses": None}, "id": 1}
    q = {"jsonrpc": "2.0", "method": "DataService.Query", "id": "q", "params": {"requests": [{"destination": key}]}}
    res = raw(live_server, json.dumps(q).encode(), "application/json").json()["result"]["responses"][0]["result"]
    assert res["names"] == ["Epoch", "Close"]
    assert np.frombuffer(base64.b64decode(res["data"][1]), "<f8").tolist() == [1.5]
    assert raw(live_server, b"{not json", "application/json").json()["error"]["code"] == -32700


def test_bad_datasets_write_nothing(live_server: ServerProcess, sym: str) -> None:
    arr, key = one_bar(sym)
    good = {"names": ["Epoch", "Close"], "types": ["i8", "f8"],
            "data": [arr["Epoch"].tobytes(), arr["Close"].tobytes()],
            "length": 1, "startindex": {key: 0}, "lengths": {key: 1}}
    other = f"{sym}/1Min/OTHER"
    cases = {
        "bytes; 1 rows of f8 need 8": {**good, "data": [arr["Epoch"].tobytes(), b"\0" * 7]},
        "length must be a non-negative integer": {**good, "length": -5},
        "exceed length": {**good, "lengths": {key: 2}},
        "unsupported type string": {**good, "types": ["i8", "c16"]},
        "must have the same length": {**good, "names": ["Epoch"]},
        "duplicate column name": {**good, "names": ["Epoch", "Epoch"]},
        "may not start with '.'": {**good, "startindex": {"../1Min/A": 0}, "lengths": {"../1Min/A": 1}},
            "exactly three parts": {**good, "startindex": {"../x/1Min/A": 0}, "lengths": {"../x/1Min/A": 1}},
        "must be binary": {**good, "data": [arr["Epoch"].tobytes(), "text"]},
        # a huge length with tiny buffers must be refused before anything is allocated
        "need 8000000000000": {**good, "length": 10**12, "lengths": {key: 10**12}},
    }
    for expected, ds in cases.items():
        res = call(live_server, "DataService.Write", {"requests": [{"dataset": ds}]})["result"]
        assert expected in res["responses"][0]["error"], (expected, res)
    # two keys in one request, the second invalid: the first must not be written either
    two = {**good, "data": [np.repeat(arr["Epoch"], 2).tobytes(), np.repeat(arr["Close"], 2).tobytes()], "length": 2,
           "startindex": {other: 0, "bad/1W/X": 1}, "lengths": {other: 1, "bad/1W/X": 1}}
    res = call(live_server, "DataService.Write", {"requests": [{"dataset": two}]})["result"]
    assert "calendar-based" in res["responses"][0]["error"]
    keys = call(live_server, "DataService.ListSymbols", {"format": "tbk"})["result"]["Results"]
    assert key not in keys
    assert other not in keys
    # multi-bucket write in one dataset (MarketStore's startindex/lengths)
    two["startindex"] = {other: 0, key: 1}
    two["lengths"] = {other: 1, key: 1}
    assert call(live_server, "DataService.Write", {"requests": [{"dataset": two}]})["result"] == {"responses": None}
    keys = call(live_server, "DataService.ListSymbols", {"format": "tbk"})["result"]["Results"]
    assert {key, other} <= set(keys)


def test_get_info(live_server: ServerProcess, sym: str) -> None:
    arr, key = one_bar(sym)
    pymkts.Client(live_server.rpc).write(arr, key)
    (info,) = call(live_server, "DataService.GetInfo", {"requests": [{"key": key}]})["result"]["responses"]
    assert info["TimeFrame"] == 60 * 10**9
    assert info["LatestYear"] == 2024
    assert info["DSV"] == [{"Name": "Epoch", "Type": 3}, {"Name": "Close", "Type": 2}]
    assert info["ServerResp"]["error"] == ""
    assert info["mkts"]["rows"] == 1
    reply = call(live_server, "DataService.GetInfo", {"requests": [{"key": f"{sym}/1D/NO"}]})
    (missing,) = reply["result"]["responses"]
    assert "no bucket" in missing["ServerResp"]["error"]


# -- configuration ----------------------------------------------------------------------------
def test_oversized_bodies(server_factory) -> None:
    server = server_factory(config={"max_body_bytes": 1000})
    big = msgpack.packb({"jsonrpc": "2.0", "method": "DataService.ListSymbols", "id": "1", "params": {"x": "y" * 5000}})
    r = raw(server, big)
    assert r.status_code == 200
    assert "request body too large" in msgpack.unpackb(r.content)["error"]["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while streaming
        for i in range(0, len(big), 100):
            yield big[i : i + 100]

    r = httpx.post(server.rpc, content=chunks(), headers=MSGPACK, timeout=30)
    assert "request body too large" in msgpack.unpackb(r.content)["error"]["message"]
    assert call(server, "DataService.ListSymbols", {})["result"] == {"Results": []}


def test_not_queryable(server_factory, tmp_path: Path) -> None:
    populate(tmp_path / "root")
    server = server_factory(config={"queryable": False}, root=tmp_path / "root")
    assert httpx.get(f"{server.url}/heartbeat").status_code == 503
    client = pymkts.Client(server.rpc)
    with pytest.raises(Exception, match="server is not queryable"):
        client.query(pymkts.Params("PRE", "1Min", "OHLCV"))
    with pytest.raises(Exception, match="server is not queryable"):
        client.list_symbols()


def test_enable_add_and_remove_false(server_factory, tmp_path: Path, transport: str) -> None:
    """A disabled operation refuses the whole call (gRPC: PERMISSION_DENIED); a write creating a new
    bucket fails that request only, on both APIs with the same text."""
    populate(tmp_path / "root")
    server = server_factory(config={"enable_add": False, "enable_remove": False}, root=tmp_path / "root")
    client = mkts_client(server, transport)
    arr = np.array([(1_704_153_600, 9.0)], dtype=[("Epoch", "i8"), ("Close", "f8")])
    assert replies(client.write(arr, "PRE/1Min/OHLCV")) is None  # existing bucket: allowed
    assert "enable_add is false" in replies(client.write(arr, "NEW/1Min/OHLCV"))[0]["error"]
    with pytest.raises(Exception, match=r"creating buckets is disabled on this server \(enable_add is false\)") as e:
        client.create("NEW/1Min/OHLCV", [("Close", "f8")])
    assert transport == "http" or e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(Exception, match=r"destroying buckets is disabled on this server \(enable_remove: false\)"):
        client.destroy("PRE/1Min/OHLCV")
    assert list(client.list_symbols(pymkts.ListSymbolsFormat.TBK)) == ["PRE/1Min/OHLCV"]
    assert client.query(pymkts.Params("PRE", "1Min", "OHLCV")).first().array["Close"].tolist() == [9.0, 2.0, 3.0]


def test_read_only_without_wal(server_factory, tmp_path: Path) -> None:
    populate(tmp_path / "root")
    server = server_factory(config={"init_wal_cache": False}, root=tmp_path / "root")
    with HTTPBackend(server.url) as db:
        assert pd.read_mkts("PRE/1Min/OHLCV", backend=db)["Close"].tolist() == [1.0, 2.0, 3.0]
        with pytest.raises(mktsframe.ReadOnlyError, match="read-only"):
            pd.DataFrame({"Close": [1.0]}, index=pd.DatetimeIndex(["2024-01-05"], tz="UTC")).to_mkts(
                "PRE/1Min/OHLCV", backend=db
            )


def test_zone_less_times_are_utc_whatever_the_server_timezone(server_factory) -> None:
    """One rule on every backend: zone-less bounds are UTC; the server's ``timezone`` only labels replies."""
    server = server_factory(config={"timezone": "America/New_York"})
    idx = pd.date_range("2024-01-02 09:29", periods=3, freq="1min", tz="UTC")
    with HTTPBackend(server.url) as db:
        pd.DataFrame({"Close": [1.0, 2.0, 3.0]}, index=idx).to_mkts("TZ/1Min/OHLCV", backend=db)
        naive = pd.read_mkts("TZ/1Min/OHLCV", start="2024-01-02 09:30", backend=db)
        assert naive["Close"].tolist() == [2.0, 3.0]
        aware = pd.read_mkts("TZ/1Min/OHLCV", start="2024-01-02 04:30-05:00", backend=db)
        assert aware["Close"].tolist() == [2.0, 3.0]
    # The wire's own time text (``mkts_start``) follows the same rule.
    reply = call(server, "DataService.Query", {"requests": [
        {"destination": "TZ/1Min/OHLCV", "mkts_start": "2024-01-02 09:30", "mkts_end": "2024-01-02 09:30"}]})
    assert reply["result"]["responses"][0]["result"]["length"] == 1
    assert reply["result"]["timezone"] == "America/New_York"


def test_log_level(server_factory) -> None:
    quiet = server_factory(config={"log_level": "error"})
    loud = server_factory(config={"log_level": "debug"})
    for s in (quiet, loud):
        call(s, "DataService.ListSymbols", {})
    time.sleep(0.2)
    assert "POST /rpc" in loud.output()
    assert "POST /rpc" not in quiet.output()
    assert "startup complete" not in quiet.output()


def test_second_server_on_same_root_refuses(server_factory, tmp_path: Path) -> None:
    first = server_factory()
    with pytest.raises(RuntimeError, match="open for writing by another process"):
        start_server(tmp_path / "second", root=first.root)


# -- shutdown, concurrency, client errors ------------------------------------------------------
def test_graceful_shutdown_finishes_in_flight_write(tmp_path: Path) -> None:
    server = start_server(tmp_path / "s", config={"stop_grace_period": 20, "log_level": "debug"})
    try:
        n = 200_000
        epochs = 1_600_000_000 + 60 * np.arange(n, dtype=np.int64)
        ds = {"names": ["Epoch", "Close"], "types": ["i8", "f8"], "data": [epochs.tobytes(), np.ones(n).tobytes()],
              "length": n, "startindex": {"BIG/1Min/OHLCV": 0}, "lengths": {"BIG/1Min/OHLCV": n}}
        body = msgpack.packb({"jsonrpc": "2.0", "method": "DataService.Write", "id": "1",
                              "params": {"requests": [{"dataset": ds}]}})
        half = threading.Event()

        def slow_body() -> Iterator[bytes]:
            step = len(body) // 10
            for i in range(0, len(body), step):
                if i >= 5 * step:
                    half.set()
                    time.sleep(0.1)
                yield body[i : i + step]

        result: dict[str, object] = {}

        def send() -> None:
            result["r"] = httpx.post(server.rpc, content=slow_body(), headers=MSGPACK, timeout=60)

        t = threading.Thread(target=send)
        t.start()
        assert half.wait(20)
        # In flight means the server has begun the request: a connection it has not read yet when
        # the signal lands is closed unanswered (uvicorn, like any server, serves only started work).
        deadline = time.monotonic() + 20
        while "rpc: reading a request body" not in server.output():
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.01)
        server.proc.send_signal(signal.SIGTERM)  # mid-request
        t.join(60)
        r = result["r"]
        assert isinstance(r, httpx.Response)
        assert msgpack.unpackb(r.content) == {"jsonrpc": "2.0", "result": {"responses": None}, "id": "1"}
        assert server.proc.wait(30) in (0, -signal.SIGTERM, 128 + signal.SIGTERM)
        assert "engine closed cleanly" in server.output()
    finally:
        server.stop()
    assert not list((server.root / ".mkts" / "wal").glob("*.wal"))  # checkpointed and trimmed on close
    with mktsframe.connect(server.root) as db:
        assert db.info("BIG/1Min/OHLCV").rows == n
    assert not list((server.root / ".mkts" / "wal").glob("*.wal"))


def test_concurrent_clients(live_server: ServerProcess, sym: str, transport: str) -> None:
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            client = mkts_client(live_server, transport)
            for j in range(20):
                arr = np.array([(1_704_153_600 + 60 * j, float(i))], dtype=[("Epoch", "i8"), ("Close", "f8")])
                assert replies(client.write(arr, f"{sym}T{i}/1Min/OHLCV")) is None  # T: never another test's sym
                got = client.query(pymkts.Params(f"{sym}T{i}", "1Min", "OHLCV")).first().array
                assert len(got) == j + 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors


def test_http_backend_server_down_and_timeout() -> None:
    port = free_port()
    db = mktsframe.connect(f"http://127.0.0.1:{port}", timeout=2)
    with pytest.raises(MktsError, match="cannot reach"):
        db.list_symbols()
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        slow = HTTPBackend(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.5)
        t0 = time.monotonic()
        with pytest.raises(MktsError, match=r"did not answer within 0\.5 s"):
            slow.list_keys()
        assert time.monotonic() - t0 < 5
        slow.close()
    with pytest.raises(MktsError, match="closed"):
        slow.list_keys()


def test_http_backend_maps_errors(live_server: ServerProcess, sym: str) -> None:
    with HTTPBackend(live_server.url + "/rpc") as db:
        with pytest.raises(BucketNotFoundError, match="no files returned from query parse"):
            db.query(f"{sym}/1Min/OHLCV")
        with pytest.raises(mktsframe.InvalidKeyError):
            db.query("a/b")


def test_middleware_wraps_rpc_too(tmp_path: Path) -> None:
    """create_app's ``middleware`` sees every path, ``/rpc`` included (which does not go through
    starlette's routing), and can change its replies."""
    import asyncio

    from starlette.middleware import Middleware

    from mktsframe.config import load_config
    from mktsframe.server.app import create_app

    seen: list[str] = []

    class Tag:  # a plain ASGI middleware: records the path, adds a header
        def __init__(self, app) -> None:
            self.app = app

        async def __call__(self, scope, receive, send) -> None:
            if scope["type"] != "http":
                return await self.app(scope, receive, send)
            seen.append(scope["path"])

            async def tagged(message) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message["headers"], (b"x-tag", b"1")]
                await send(message)

            return await self.app(scope, receive, tagged)

    cfg = load_config(None, root_directory=str(tmp_path / "data"), grpc_listen_port=0)
    app = create_app(cfg, middleware=[Middleware(Tag)])

    async def run() -> tuple[httpx.Response, httpx.Response]:
        body = msgpack.packb({"jsonrpc": "2.0", "method": "DataService.ListSymbols", "id": "1", "params": {}})
        transport = httpx.ASGITransport(app=app)
        async with asgi_lifespan(app), httpx.AsyncClient(transport=transport, base_url="http://in-process") as c:
            return await c.post("/rpc", content=body, headers=MSGPACK), await c.get("/heartbeat")

    rpc, beat = asyncio.run(run())
    assert seen == ["/rpc", "/heartbeat"]
    assert rpc.headers["x-tag"] == beat.headers["x-tag"] == "1"
    assert msgpack.unpackb(rpc.content)["result"] == {"Results": []}


# -- CLI --------------------------------------------------------------------------------------
def test_cli_init(tmp_path: Path) -> None:
    exe = [sys.executable, "-c", "import sys; from mktsframe.cli import main; sys.exit(main(sys.argv[1:]))"]
    r = subprocess.run([*exe, "init"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "mkts.yml").read_text() == mktsframe.config.DEFAULT_CONFIG_TEXT
    (tmp_path / "mkts.yml").write_text("root_directory: mine\n")
    r = subprocess.run([*exe, "init"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "--force" in r.stderr
    assert (tmp_path / "mkts.yml").read_text() == "root_directory: mine\n"
    r = subprocess.run([*exe, "init", "--force"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    assert mktsframe.load_config(tmp_path / "mkts.yml").listen_port == 5993


def test_cli_start_uses_config(tmp_path: Path) -> None:
    port, grpc_port = free_port(), free_port()
    (tmp_path / "mkts.yml").write_text(f"root_directory: fromcfg\nlisten_port: {port}\nlisten_host: 127.0.0.1\n"
                                       f"grpc_listen_port: {grpc_port}\n")
    exe = [sys.executable, "-c", "import sys; from mktsframe.cli import main; sys.exit(main(sys.argv[1:]))"]
    with (tmp_path / "log").open("wb") as log:
        proc = subprocess.Popen([*exe, "start", "--config", "mkts.yml"], cwd=tmp_path, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/heartbeat").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            pytest.fail((tmp_path / "log").read_text())
        pymkts.Client(f"http://127.0.0.1:{port}/rpc").write(*one_bar("CLI"))
        assert (tmp_path / "fromcfg" / "CLI" / "1Min" / "OHLCV").is_dir()
        assert list(pymkts.Client(f"127.0.0.1:{grpc_port}", grpc=True).list_symbols()) == ["CLI"]
    finally:
        proc.terminate()
        proc.wait(30)
    bad = subprocess.run([*exe, "start", "--config", "missing.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode == 2
    assert "does not exist" in bad.stderr
