"""``/ws`` against a live server: the unmodified pymarketstore ``StreamConn``, and ``HTTPBackend.subscribe``."""

from __future__ import annotations

import signal
import threading
import time

import msgpack
import numpy as np
import pymarketstore as pymkts
import pytest
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
        ws.close()


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
        ws.close()


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
        ws.close()
