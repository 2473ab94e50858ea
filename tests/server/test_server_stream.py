"""``/ws`` against a live server: the unmodified pymarketstore ``StreamConn``, and ``HTTPBackend.subscribe``."""

from __future__ import annotations

import signal
import threading
import time

import msgpack
import numpy as np
import pymarketstore as pymkts
import pytest
from live_helpers import asgi_lifespan
from pymarketstore.stream import StreamConn

import mktsframe as mf
from mktsframe.backend.base import Batch
from mktsframe.errors import InvalidKeyError, MktsError

pytestmark = [pytest.mark.server, pytest.mark.timeout(120)]

NS = 1_000_000_000
T0 = 1_704_067_200  # 2024-01-01 00:00:00 UTC
OHLCV = [("Epoch", "i8"), ("Open", "f4"), ("Close", "f4"), ("Volume", "f8")]


def ws_endpoint(server) -> str:
    return f"ws://127.0.0.1:{server.port}/ws"


def bars(seconds: list[int], start: float = 1.0) -> np.ndarray:
    arr = np.zeros(len(seconds), dtype=OHLCV)
    arr["Epoch"] = seconds
    arr["Open"] = start + np.arange(len(seconds))
    arr["Close"] = arr["Open"] + 0.5
    arr["Volume"] = 1000 + np.arange(len(seconds))
    return arr


def batch(seconds: list[int], close: list[float]) -> Batch:
    return Batch(np.array(seconds, dtype=np.int64) * NS, {"Close": np.array(close, dtype="f8")})


def recv(ws, timeout: float = 10.0) -> dict:
    ws.settimeout(timeout)
    return msgpack.loads(ws.recv())


def connect_streamconn(server, streams: list[str]):
    """pymarketstore's own connect + subscribe, so we can also see what StreamConn ignores."""
    conn = StreamConn(ws_endpoint(server))
    ws = conn._connect()
    conn._subscribe(ws, streams)
    return ws


def close_ws(ws) -> None:
    """Close a websocket-client connection and its socket: its ``close()`` returns early, leaving
    the socket open, once a close frame from the server has been answered; ``shutdown()`` closes it."""
    ws.close()
    ws.shutdown()


def test_subscribe_echo_error_and_replace(live_server, sym):
    ws = connect_streamconn(live_server, [f"{sym}/*/*", "*/1Min/OHLCV"])
    try:
        assert recv(ws) == {"streams": [f"{sym}/*/*", "*/1Min/OHLCV"]}
        ws.send(msgpack.dumps({"streams": ["BTC/1Min"]}), opcode=0x2)
        assert recv(ws) == {"error": "BTC/1Min is an invalid stream"}
        ws.send(b"\xc1 not msgpack", opcode=0x2)  # logged and ignored
        ws.send(msgpack.dumps({"streams": [f"{sym}/5Min/*"]}), opcode=0x2)
        assert recv(ws) == {"streams": [f"{sym}/5Min/*"]}
        # The new set replaced the old: a 1Min write is not heard, a 5Min one is.
        client = pymkts.Client(live_server.rpc)
        client.write(bars([T0]), f"{sym}/1Min/OHLCV")
        client.write(bars([T0 + 300], start=7.0), f"{sym}/5Min/OHLCV")
        msg = recv(ws)
        assert msg["key"] == f"{sym}/5Min/OHLCV"
        assert msg["data"] == {"Epoch": T0 + 300, "Open": 7.0, "Close": 7.5, "Volume": 1000.0}
    finally:
        close_ws(ws)


def test_streamconn_run_gets_every_row_of_every_matching_write(live_server, sym):
    """StreamConn.run() as users call it; a multi-row write pushes each row, in time order."""
    got: list[dict] = []
    done = threading.Event()

    class Stop(Exception):
        pass

    conn = StreamConn(ws_endpoint(live_server))

    @conn.on(rf"^{sym}/")
    def handler(c, msg):
        got.append(msg)
        if len(got) == 4:
            done.set()
            raise Stop  # the only way to leave run(): it closes the socket in its finally

    errors: list[BaseException] = []

    def run():
        try:
            conn.run([f"{sym}/*/*"])
        except Stop:
            pass
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    # Wait until subscribed: a probe write repeats until its row arrives.
    client = pymkts.Client(live_server.rpc)
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        client.write(bars([T0]), f"{sym}/1Min/OHLCV")
        time.sleep(0.05)
    assert got, errors
    n_probe = len(got)
    client.write(bars([T0 + 180, T0 + 60, T0 + 120], start=10.0), f"{sym}/1Min/OHLCV")  # unsorted on purpose
    client.write(bars([T0]), "OTHER/1Min/OHLCV")  # not matched
    t.join(10)
    assert done.is_set()
    assert not errors
    rows = got[n_probe : n_probe + 3]
    assert [m["key"] for m in rows] == [f"{sym}/1Min/OHLCV"] * 3
    assert [m["data"]["Epoch"] for m in rows] == [T0 + 60, T0 + 120, T0 + 180]
    assert [m["data"]["Open"] for m in rows] == [11.0, 12.0, 10.0]
    assert all(isinstance(m["data"]["Epoch"], int) for m in rows)


def test_glob_streams_select_keys(live_server, sym):
    ws = connect_streamconn(live_server, [f"{sym}A/1Min/*", f"*/1D/{sym}"])
    try:
        recv(ws)
        client = pymkts.Client(live_server.rpc)
        client.write(bars([T0]), f"{sym}A/1Min/OHLCV")  # heard
        client.write(bars([T0]), f"{sym}A/5Min/OHLCV")  # other timeframe
        client.write(bars([T0]), f"{sym}B/1Min/OHLCV")  # other symbol
        client.write(bars([T0]), f"ZZ{sym}/1D/{sym}")  # heard (attribute group named sym)
        client.write(bars([T0]), f"ZZ{sym}/1D/{sym}X")  # the whole part must match
        keys = [recv(ws)["key"], recv(ws)["key"]]
        assert keys == [f"{sym}A/1Min/OHLCV", f"ZZ{sym}/1D/{sym}"]
        ws.settimeout(0.5)
        with pytest.raises(Exception, match="timed out"):
            ws.recv()
    finally:
        close_ws(ws)


def test_http_backend_subscribe_async_callback_and_since(live_server, sym):
    import asyncio

    key = f"{sym}/1Min/OHLCV"
    with mf.connect(live_server.url) as db:
        db.write(key, batch([T0, T0 + 60], [1.0, 2.0]))
        seen: list[dict] = []
        with db.subscribe(f"{sym}/*/*", callback=seen.append):
            live = db.subscribe(key, since=(T0 + 60) * NS)

            async def consume() -> list[dict]:
                out = []
                async for msg in live:
                    out.append(msg)
                    if msg.get("notice") == "caught_up":
                        db.write(key, batch([T0 + 120], [3.0]))
                        db.delete(key, start=T0 * NS, end=T0 * NS)
                    if len(out) == 4:
                        return out
                return out

            out = asyncio.run(asyncio.wait_for(consume(), 20))
            live.close()
            deadline = time.monotonic() + 10
            while len(seen) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
        assert out[0] == {"key": key, "data": {"Epoch": T0 + 60, "Close": 2.0}}
        assert out[1]["notice"] == "caught_up"
        assert out[1]["rows"] == 1
        assert out[2] == {"key": key, "data": {"Epoch": T0 + 120, "Close": 3.0}}
        assert out[3] == {"notice": "deleted", "bucket": key, "start": T0 * NS, "end": T0 * NS}
        assert seen[0] == {"key": key, "data": {"Epoch": T0 + 120, "Close": 3.0}}
        assert seen[1]["notice"] == "deleted"
        with pytest.raises(InvalidKeyError, match="invalid stream"):
            db.subscribe("no-slashes")


def test_shutdown_closes_streams(server_factory):
    server = server_factory()
    with mf.connect(server.url) as db:
        sub = db.subscribe("*/*/*")
        ws = connect_streamconn(server, ["*/*/*"])
        recv(ws)
        t = time.monotonic()
        assert server.stop(signal.SIGTERM, timeout=15) in (0, -signal.SIGTERM, 128 + signal.SIGTERM)
        assert time.monotonic() - t < 10
        with pytest.raises(MktsError, match="closed"):
            sub.get(5)
        ws.settimeout(5)
        opcode, frame = ws.recv_data_frame(control_frame=True)
        assert opcode == 0x8  # close
        assert int.from_bytes(frame.data[:2], "big") == 1012  # "service restart"
        sub.close()
        close_ws(ws)


def test_tick_pushes_carry_nanoseconds_to_streamconn(live_server, sym):
    """pymarketstore writes a tick bucket; a StreamConn subscriber gets one message per tick with
    MarketStore's Epoch (seconds) + Nanoseconds, duplicates included, in time order."""
    key = f"{sym}/1Sec/TICK"
    ws = connect_streamconn(live_server, [f"{sym}/*/TICK"])
    try:
        recv(ws)
        ns = np.array([T0 * NS + 999_999_999, T0 * NS + 7, T0 * NS + 7, (T0 + 1) * NS], dtype=np.int64)
        arr = np.zeros(4, dtype=[("Epoch", "i8"), ("Bid", "f4"), ("Nanoseconds", "i4")])
        arr["Epoch"], arr["Nanoseconds"] = np.divmod(ns, NS)
        arr["Bid"] = [1.0, 2.0, 3.0, 4.0]
        pymkts.Client(live_server.rpc).write(arr, key, isvariablelength=True)
        got = [recv(ws) for _ in range(4)]
    finally:
        close_ws(ws)
    assert [m["key"] for m in got] == [key] * 4
    assert [(m["data"]["Epoch"], m["data"]["Nanoseconds"]) for m in got] == [
        (T0, 7), (T0, 7), (T0, 999_999_999), (T0 + 1, 0)]  # fmt: skip
    assert sorted(m["data"]["Bid"] for m in got[:2]) == [2.0, 3.0]
    assert list(got[0]["data"]) == ["Epoch", "Bid", "Nanoseconds"]


WIDE = [("Epoch", "i8")] + [(f"Column{i:02d}", "f8") for i in range(24)]  # ~400-byte push messages


def wide_bars(first: int, n: int) -> np.ndarray:
    arr = np.zeros(n, dtype=WIDE)
    arr["Epoch"] = T0 + 60 * np.arange(first, first + n)
    arr["Column00"] = np.arange(first, first + n)
    return arr


def raw_subscriber(server, request: dict):
    """A WebSocket that subscribes with mktsframe's extensions and is then not read."""
    ws = StreamConn(ws_endpoint(server))._connect()
    ws.send(msgpack.dumps(request), opcode=0x2)
    assert recv(ws) == request
    return ws


def read_until_close(ws, timeout: float = 20.0) -> tuple[list[dict], int | None]:
    """Every message up to the server's close frame, and its close code."""
    ws.settimeout(timeout)
    out = []
    while True:
        opcode, frame = ws.recv_data_frame(control_frame=True)
        if opcode == 0x8:
            return out, int.from_bytes(frame.data[:2], "big") if len(frame.data) >= 2 else None
        if opcode == 0x2:
            out.append(msgpack.loads(frame.data))


def test_slow_subscriber_does_not_hold_the_writer_or_others(live_server, sym):
    """A subscriber that stops reading (its socket buffers fill, ~30 MB pushed) only loses its own
    oldest rows: every write is acknowledged, a fast subscriber gets every row, and the slow one,
    when it reads again, gets what fitted, a "dropped" notice, then the newest rows: each row once."""
    key = f"{sym}/1Min/WIDE"
    total, per_write = 80_000, 4_000
    slow = raw_subscriber(live_server, {"streams": [key], "mkts_max_rows": 500})
    try:
        fast_rows, fast_other = write_with_a_fast_subscriber(live_server, key, total, per_write)
        slow.settimeout(20)
        rows: list[int] = []
        dropped = 0
        while not rows or rows[-1] != total - 1:
            msg = msgpack.loads(slow.recv())
            if "notice" in msg:
                assert msg["notice"] == "dropped"
                dropped += msg["dropped"]
            else:
                rows.append(int(msg["data"]["Column00"]))
    finally:
        close_ws(slow)
    assert fast_rows == list(range(total))
    assert fast_other == []
    assert dropped > 0
    assert len(rows) + dropped == total
    assert rows == sorted(set(rows))  # in order, no duplicate
    assert rows[-500:] == list(range(total - 500, total))  # the newest rows survive


def write_with_a_fast_subscriber(server, key: str, total: int, per_write: int) -> tuple[list[int], list[dict]]:
    """Write ``total`` wide rows (pymarketstore, ``per_write`` a call) while an HTTP-backend callback
    subscriber reads them; returns the ``Column00`` values it got and its other messages."""
    fast_rows: list[int] = []
    fast_other: list[dict] = []

    def on_fast(msg: dict) -> None:
        if "data" in msg:
            fast_rows.append(int(msg["data"]["Column00"]))
        else:
            fast_other.append(msg)

    with mf.connect(server.url) as db:
        fast = db.subscribe(key, callback=on_fast)
        try:
            client = pymkts.Client(server.rpc)
            for first in range(0, total, per_write):
                assert client.write(wide_bars(first, per_write), key) == {"responses": None}
            deadline = time.monotonic() + 60
            while len(fast_rows) < total and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            fast.close()
    return fast_rows, fast_other


def test_policy_disconnect_closes_a_slow_subscriber(live_server, sym):
    """``disconnect``: the server closes a subscriber that fell more than its bound behind with
    code 1008; over the HTTP backend an overflowing subscription raises SlowConsumerError."""
    from mktsframe.streaming import SlowConsumerError

    key = f"{sym}/1Min/WIDE"
    slow = raw_subscriber(live_server, {"streams": [key], "mkts_max_rows": 500, "mkts_policy": "disconnect"})
    try:
        client = pymkts.Client(live_server.rpc)
        with mf.connect(live_server.url) as db:
            sub = db.subscribe(key, max_rows=100, policy="disconnect")  # never read: its own feed overflows
            for first in range(0, 80_000, 400):  # each write fits the bound: only a backlog overflows it
                client.write(wide_bars(first, 400), key)
            with pytest.raises(SlowConsumerError):
                list(sub)  # what was kept, then the error
            sub.close()
        got, code = read_until_close(slow)
    finally:
        close_ws(slow)
    assert code == 1008
    assert 0 < len(got) < 80_000
    epochs = [m["data"]["Epoch"] for m in got]
    assert epochs == [T0 + 60 * i for i in range(len(got))]  # what was sent before the close: no gap


def test_stream_max_wait_from_the_config_reaches_the_servers_hub(tmp_path) -> None:
    """``stream_max_wait`` in mkts.yml bounds how long the server's delivery passes may wait."""
    import asyncio

    from mktsframe.config import load_config
    from mktsframe.server.app import create_app

    cfg = load_config(None, root_directory=str(tmp_path / "data"), stream_max_wait=0.02, grpc_listen_port=0)
    app = create_app(cfg)

    async def lifespan() -> float:  # the ASGI lifespan protocol, as uvicorn drives it
        async with asgi_lifespan(app):
            return app.state.hub.max_wait

    assert asyncio.run(lifespan()) == 0.02
