"""``WsSocket`` (the ``/ws`` subscriptions' client) against a real ``websockets`` server that does
what mktsframe's server never does: pings, fragmented and text messages, a policy close."""

from __future__ import annotations

import threading

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

from mktsframe.streaming.ws_socket import WsSocket


def handler(conn: ServerConnection) -> None:
    request = conn.recv()
    conn.send(request)  # echo
    pong = conn.ping(b"are you there")
    conn.send([b"frag", b"mented"])  # one message in three frames
    conn.send("text é")
    conn.send(b"x" * 70_000)  # 8-byte length header
    if pong.wait(10):
        conn.send(b"pong seen")
    conn.close(1008, "too slow")


@pytest.fixture
def ws_server():
    with serve(handler, "127.0.0.1", 0) as server:
        t = threading.Thread(target=server.serve_forever, daemon=True)
        t.start()
        yield f"ws://127.0.0.1:{server.socket.getsockname()[1]}/"
        server.shutdown()
        t.join(10)


def test_messages_pings_fragments_and_close(ws_server: str) -> None:
    ws = WsSocket(ws_server, timeout=10)
    try:
        ws.send(b"hello")
        got: list[bytes] = []
        with pytest.raises(ConnectionClosed):
            got.extend(ws.messages(timeout=10))
        assert got == [b"hello", b"fragmented", "text é".encode(), b"x" * 70_000, b"pong seen"]
        assert ws.close_received is not None
        assert (ws.close_received.code, ws.close_received.reason) == (1008, "too slow")
    finally:
        ws.close()


def test_batches_bring_the_same_messages_a_read_at_a_time(ws_server: str) -> None:
    ws = WsSocket(ws_server, timeout=10)
    try:
        ws.send(b"hello")
        batches: list[list[bytes]] = []
        with pytest.raises(ConnectionClosed):
            batches.extend(ws.batches(timeout=10))
        assert all(batches)  # never an empty list
        assert [m for b in batches for m in b] == [b"hello", b"fragmented", "text é".encode(), b"x" * 70_000,
                                                   b"pong seen"]
        assert ws.close_received is not None
        assert ws.close_received.code == 1008
    finally:
        ws.close()


def test_close_wakes_a_blocked_reader(ws_server: str) -> None:
    ws = WsSocket(ws_server, timeout=10)
    ended = threading.Event()

    def read() -> None:
        with pytest.raises(ConnectionClosed):
            list(ws.messages())
        ended.set()

    t = threading.Thread(target=read)
    t.start()  # nothing sent, so the server waits and the reader blocks in recv
    ws.close()
    t.join(10)
    assert ended.is_set()
