"""Subscriptions over a server's ``/ws`` (what ``HTTPBackend.subscribe`` returns).

One daemon thread per subscription reads its socket (:class:`~.ws_socket.WsSocket`) and decodes
the frames. Iterated (``for``/``async for``/``get``), the subscription gets them through its
bounded feed, so a slow consumer is handled as in process. With ``callback=``, that thread calls
the callback itself, one thread switch per message fewer: while a callback runs, rows wait in
the server's queue for this connection, which applies the same ``max_rows`` and ``policy`` (a
``"dropped"`` notice, or a close that ends the subscription with :class:`SlowConsumerError`), so
a slow callback still never slows the writers or other subscribers.

The subscribe message is MarketStore's ``{"streams": [...]}`` plus mktsframe's
extensions, which MarketStore and the pymarketstore client never send:

* ``mkts_since`` (int, ns UTC): replay rows from storage first (see :mod:`.resume`);
* ``mkts_notices`` (bool): also send delete/destroy notices;
* ``mkts_max_rows`` / ``mkts_policy``: this connection's queue bound and overflow policy on
  the server (see :mod:`.feed`).

:func:`subscribe_ws` returns once the server has echoed the subscription, so every write
acknowledged after that is delivered.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlparse, urlunparse

import msgpack

from mktsframe.errors import AccessDeniedError, InvalidKeyError, MktsError
from mktsframe.streaming.feed import DEFAULT_MAX_ROWS, Feed, OverflowPolicy, SlowConsumerError
from mktsframe.streaming.messages import Message
from mktsframe.streaming.patterns import stream_list
from mktsframe.streaming.subscription import Received, Subscription, call_back
from mktsframe.times import TimeLike, to_ns

__all__ = ["subscribe_ws", "ws_url"]

log = logging.getLogger("mktsframe.streaming")

#: WebSocket close code the server uses for a ``policy="disconnect"`` subscriber that fell behind.
CLOSE_SLOW_CONSUMER = 1008


def ws_url(rpc_url: str) -> str:
    """``http://h:p/rpc`` → ``ws://h:p/ws`` (pymarketstore's derivation)."""
    parts = urlparse(rpc_url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path[: -len("/rpc")] if parts.path.endswith("/rpc") else parts.path.rstrip("/")
    return urlunparse(parts._replace(scheme=scheme, path=path + "/ws", query="", fragment=""))


def subscribe_ws(
    rpc_url: str,
    pattern: str | Iterable[str],
    *,
    since: TimeLike = None,
    callback: Callable[[Message], Any] | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    policy: OverflowPolicy = "drop_oldest",
    timeout: float = 30.0,
    headers: dict[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Subscription:
    """Subscribe over ``/ws`` of the server at ``rpc_url`` (``headers``: added to the handshake,
    e.g. ``Authorization``; ``ssl_context``: verifies a ``wss://`` server)."""
    try:
        from websockets.exceptions import ConnectionClosed

        from mktsframe.streaming.ws_socket import WsSocket
    except ImportError:  # pragma: no cover - depends on the install
        raise MktsError("subscribing to a server needs 'websockets': pip install 'mktsframe[stream]'") from None
    streams = stream_list(pattern)
    feed = Feed(max_rows, policy)  # validates max_rows and policy before connecting
    request: dict[str, Any] = {"streams": list(streams), "mkts_notices": True, "mkts_max_rows": int(max_rows),
                               "mkts_policy": policy}
    since_ns = to_ns(since, name="since")
    if since_ns is not None:
        request["mkts_since"] = since_ns
    url = ws_url(rpc_url)
    try:
        ws = WsSocket(url, timeout, headers=headers, ssl_context=ssl_context)
    except (OSError, TimeoutError) as exc:
        raise MktsError(f"cannot open the stream at {url}: {exc}") from None
    except Exception as exc:  # websockets' handshake errors (e.g. HTTP 404 from a server without /ws)
        status = getattr(getattr(exc, "response", None), "status_code", None)
        cls = AccessDeniedError if status in (401, 403) else MktsError
        raise cls(f"{url} refused the stream: {exc}") from None
    try:
        ws.send(msgpack.packb(request, use_bin_type=True))
        echo = msgpack.unpackb(ws.recv(timeout), raw=False)
    except (OSError, ConnectionClosed, ValueError) as exc:  # OSError includes TimeoutError
        ws.close()
        raise MktsError(f"{url} did not confirm the subscription: {exc}") from None
    if isinstance(echo, dict) and "error" in echo:
        ws.close()
        raise InvalidKeyError(str(echo["error"]))

    sub = Subscription(feed, streams=streams, on_close=ws.close)

    def deliver(msg: Message) -> None:
        if callback is not None:
            call_back(callback, msg)
        else:
            feed.put(Received(msg))

    def read() -> None:
        unpackb = msgpack.unpackb
        try:
            for frames in ws.batches():  # one step per read of the socket, whatever it brought
                for frame in frames:
                    try:
                        msg = unpackb(frame, raw=False)
                    except ValueError:
                        log.warning("ignoring an undecodable stream frame from %s", url)
                        continue
                    if isinstance(msg, dict):
                        deliver(msg)
        except ConnectionClosed:
            if sub.closed:
                return
            rcvd = ws.close_received
            if rcvd is not None and rcvd.code == CLOSE_SLOW_CONSUMER:
                error: MktsError = SlowConsumerError(f"the server disconnected this slow subscriber ({rcvd.reason})")
            elif rcvd is not None:
                error = MktsError(f"the server closed the stream {url} ({rcvd.code} {rcvd.reason})".rstrip())
            else:
                error = MktsError(f"the stream {url} was closed")
            sub.fail(error)
            if callback is not None:
                log.warning("subscription %s ended: %s", list(streams), error)

    reader = threading.Thread(target=read, name=f"mkts-ws {url}", daemon=True)
    if callback is not None:
        sub.join_on_close(reader)
    reader.start()
    return sub
