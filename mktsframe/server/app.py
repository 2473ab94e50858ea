"""The ASGI application: ``/rpc`` (POST, HEAD), ``/ws`` (push stream), ``/heartbeat``, and the lifespan.

The lifespan also runs the gRPC API (:mod:`~mktsframe.server.grpc_api`) on the same event loop when
``grpc_listen_port`` is set: both transports are codecs over one :class:`~.service.Service`.

The app is a thin async shell. Each ``/rpc`` body is read here (bounded by ``max_body_bytes``)
and handed whole to :meth:`JsonRpc.handle` in a worker thread, so decoding, disk work and
encoding stay off the event loop; the engine's own locks serialise writes through the WAL and
let reads proceed between commits. One exception, the commonest request: a write of a few rows
to existing buckets runs on the loop itself when the engine says it will not wait
(:meth:`JsonRpc.handle_now`: no other change under way, the last log sync was fast). That
saves the two thread hops (to the worker and back), about a quarter of a 1-row write's latency
on a small machine, and costs the loop at most one fast sync.

``/rpc`` and ``/ws`` are plain ASGI handlers in front of starlette (which serves ``/heartbeat``).
``/ws`` needs uvicorn's own ``send`` to push rows without an ASGI message per frame
(:mod:`mktsframe.server.ws_push`). ``/rpc`` is the hot path — a one-day query costs the server
~0.3 ms of work, and starlette's request,
response and middleware objects cost about as much again per call. The worker threads are a
dedicated pool (``loop.run_in_executor``), cheaper per hop than anyio's limiter-guarded threads.

The engine is opened on startup and closed (checkpointed, WAL trimmed, write lock released) on
shutdown, after uvicorn has let in-flight requests finish.
Plugins (``triggers:``, ``bgworkers:``) start after the engine opens and stop before it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mktsframe.backend import Backend, connect
from mktsframe.backend.local import LocalBackend
from mktsframe.config import Config
from mktsframe.engine.check import report_damaged_buckets
from mktsframe.plugins import Plugins, start_plugins
from mktsframe.replication import parse_replication, start_replication
from mktsframe.server.auth import ANONYMOUS, WWW_AUTHENTICATE, Authenticator, AuthFailure, Principal, Role
from mktsframe.server.exposure import bind_host
from mktsframe.server.rpc import (
    INVALID_REQUEST,
    JSON,
    LATER,
    SERVER_ERROR,
    JsonRpc,
    Reply,
    content_codec,
    request_error,
)
from mktsframe.server.service import CallContext, Service
from mktsframe.server.ws import serve_stream
from mktsframe.server.ws_push import FrameCache
from mktsframe.streaming.hub import CommitHub

__all__ = ["create_app", "server_version"]

log = logging.getLogger("mktsframe.server")


def server_version() -> str:
    """What ``Marketstore-Version`` reports (pymarketstore's ``server_version()``)."""
    from mktsframe import __version__

    return f"mktsframe-{__version__}"


def open_backend(config: Config) -> Backend:
    """The local engine of ``config``'s root; refuses to run if another process writes it.

    ``init_wal_cache: false`` opens it read-only (MarketStore: no WAL, no writes). A replication
    master keeps ``log_retention_mb`` of checkpointed log for its replicas; a replica syncs its log
    in the background (see :mod:`mktsframe.replication.replica`).
    """
    repl = parse_replication(config.replication)
    opts: dict[str, object] = {}
    if repl.role == "master" and config.init_wal_cache:
        opts["log_retention_bytes"] = repl.log_retention_bytes
    elif repl.role == "replica":
        opts["background_sync"] = True  # the master's log is the durable copy (mktsframe.replication.replica)
    return connect(config.root_path(), config=config, read_only=not config.init_wal_cache, **opts)


def _start_plugins(backend: Backend, config: Config) -> Plugins | None:
    """The configured triggers and bgworkers, started before requests are accepted (a plugin that
    fails to load is logged and skipped; one that cannot start at all never stops the server)."""
    if not (config.triggers or config.bgworkers):
        return None
    try:
        return start_plugins(backend, config)
    except Exception:
        log.exception("plugins not started")
        return None


def create_app(config: Config, *, backend: Backend | None = None, middleware: Sequence[Middleware] = ()) -> ASGIApp:
    """The ASGI app serving ``config`` (or ``backend``, which the caller then owns and closes).

    ``middleware`` (starlette :class:`~starlette.middleware.Middleware` entries, outermost first)
    wraps every path, ``/rpc`` and ``/ws`` included, not only the starlette routes.

    With ``auth: true`` every HTTP and WebSocket request is authenticated here, before its body
    is read or the socket accepted (401 otherwise); the caller's role goes into the
    :class:`~.service.CallContext` of its calls, where the service checks it.
    """
    version = server_version()
    headers = {"Marketstore-Version": version, "X-Content-Type-Options": "nosniff"}
    limit = config.max_body_bytes

    repl_settings = parse_replication(config.replication)  # a bad replication: section stops the start
    auth = Authenticator.for_config(config)  # one token store for every listener

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        be = backend if backend is not None else await anyio.to_thread.run_sync(open_backend, config)
        service = Service(be, config, version)
        service.replica_of = repl_settings.master_host
        app.state.service = service
        app.state.rpc = JsonRpc(service)
        plugins = await anyio.to_thread.run_sync(_start_plugins, be, config)
        app.state.plugins = plugins
        # One commit listener for all /ws connections; fan-out happens on this event loop.
        loop = asyncio.get_running_loop()
        hub = None
        if isinstance(be, LocalBackend):
            hub = CommitHub(be.changes, loop=loop, max_wait=config.stream_max_wait)
        if isinstance(be, LocalBackend):  # damaged buckets are named in the log; the others are served
            report_damaged_buckets(be.engine.root, log)
        app.state.hub = hub
        app.state.frames = FrameCache()
        grpc_server = None
        try:  # a gRPC port that cannot be bound stops the start-up, after the cleanup below
            service.replication = await anyio.to_thread.run_sync(_start_replication, be, config, repl_settings, auth)
            grpc_server = await _start_grpc(service, config, auth) if config.grpc_listen_port else None
            log.info("serving %r (timezone %s, queryable=%s)", be, config.timezone, config.queryable)
            yield
        finally:
            service.stopping = True
            if grpc_server is not None:
                await grpc_server.stop(config.stop_grace_period or GRPC_UNTIL_DONE)
            if service.replication is not None:
                await anyio.to_thread.run_sync(service.replication.stop)
            if plugins is not None:
                await anyio.to_thread.run_sync(plugins.stop)
            if hub is not None:
                hub.close()
            if backend is None:
                await anyio.to_thread.run_sync(be.close)
                log.info("engine closed cleanly")

    async def heartbeat(request: Request) -> Response:
        service: Service = request.app.state.service
        body = service.heartbeat()
        return JSONResponse(body, 200 if service.queryable else 503, headers)

    site = Starlette(
        routes=[
            Route("/heartbeat", heartbeat, methods=["GET", "HEAD"]),
        ],
        lifespan=lifespan,
    )
    site.state.max_streams = config.max_streams
    return RpcFront(site, headers, limit, middleware, auth=auth,
                    idle_timeout=config.idle_timeout or None)


def _start_replication(be: Backend, config: Config, settings: Any, auth: Authenticator | None) -> Any:
    """This server's side of replication, on the same address policy and tokens as every listener:
    a replica's stream needs a token with the read role when ``auth`` is on."""
    interceptors: list[Any] = []
    if auth is not None and settings.role == "master":
        from mktsframe.server.grpc_api import TokenInterceptor

        interceptors.append(TokenInterceptor(auth, Role.READ))
    return start_replication(be, config, settings, interceptors=interceptors, host=bind_host(config))


async def _start_grpc(service: Service, config: Config, auth: Authenticator | None) -> Any:
    """The gRPC API beside ``/rpc`` on this event loop (grpcio is imported only when it is configured)."""
    from mktsframe.server.grpc_api import GrpcServer

    return await GrpcServer.start(service, config, auth=auth)


#: ``stop_grace_period: 0`` means "until in-flight calls finish": for gRPC, at most this many seconds.
GRPC_UNTIL_DONE = 3600.0

#: Worker threads for ``/rpc`` bodies (decode, disk work, encode). Writers queue on the engine's write
#: lock inside their thread, so the pool must be large enough that waiting writers never leave a read
#: without a thread (anyio's default, which served this before, is 40 too).
RPC_THREADS = 40


class RpcFront:
    """``/rpc`` and ``/ws`` as plain ASGI handlers; everything else (lifespan, ``/heartbeat``) goes
    to the starlette ``site``, whose ``state`` this exposes."""

    def __init__(self, site: Starlette, headers: dict[str, str], limit: int,
                 middleware: Sequence[Middleware] = (), *, auth: Authenticator | None = None,
                 idle_timeout: float | None = None) -> None:
        self.site = site
        self.limit = limit
        self.auth = auth
        self.idle_timeout = idle_timeout
        self._headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self._pool: ThreadPoolExecutor | None = None
        self._working = 0  # /rpc requests being answered in worker threads now
        app: ASGIApp = self._route
        for cls, args, kwargs in reversed(middleware):
            app = cls(app, *args, **kwargs)
        self._app = app

    @property
    def state(self) -> Any:
        return self.site.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        who = ANONYMOUS
        if self.auth is not None and scope["type"] in ("http", "websocket"):
            try:
                who = self.auth.authenticate(dict(scope["headers"]).get(b"authorization"))
            except AuthFailure as exc:
                await self._unauthenticated(scope, send, str(exc))
                return
        if scope["type"] == "http" and scope["path"] == "/rpc":
            await self._rpc(scope, receive, send, who)
            return
        if scope["type"] == "websocket" and scope["path"] == "/ws":
            await serve_stream(scope, receive, send, self.site.state)
            return
        try:
            await self.site(scope, receive, send)
        finally:
            if scope["type"] == "lifespan" and self._pool is not None:
                self._pool.shutdown(wait=False)

    async def _reply(self, send: Send, status: int, body: bytes | Reply, content_type: str | None,
                     close: bool = False, extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
        """Send ``body``; a :class:`Reply` goes out buffer by buffer, each after the socket took the
        previous one (uvicorn's flow control), so a large reply is never copied whole."""
        size = body.nbytes if isinstance(body, Reply) else len(body)
        headers = [*self._headers, *extra, (b"content-length", str(size).encode())]
        if content_type is not None:
            headers.append((b"content-type", content_type.encode()))
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if isinstance(body, Reply):
            buffers = body.buffers()
            last = next(buffers, b"")
            for buf in buffers:  # one message per buffer; the last one closes the body
                await send({"type": "http.response.body", "body": last, "more_body": True})
                last = buf
            body = last
        await send({"type": "http.response.body", "body": body})

    async def _unauthenticated(self, scope: Scope, send: Send, message: str) -> None:
        """401 in the JSON-RPC error shape (the body is never read, so the connection closes);
        a WebSocket handshake is answered 401 without being accepted."""
        if scope["type"] == "websocket":
            await send({"type": "websocket.http.response.start", "status": 401,
                        "headers": [*self._headers, (b"www-authenticate", WWW_AUTHENTICATE.encode())]})
            await send({"type": "websocket.http.response.body", "body": message.encode()})
            return
        raw_ct = dict(scope["headers"]).get(b"content-type")
        codec = content_codec(raw_ct.decode("latin-1") if raw_ct is not None else None) or JSON
        body = request_error(message, SERVER_ERROR, codec == JSON, "AccessDeniedError")
        await self._reply(send, 401, body, codec, close=True,
                          extra=[(b"www-authenticate", WWW_AUTHENTICATE.encode())])

    async def _rpc(self, scope: Scope, receive: Receive, send: Send, who: Principal = ANONYMOUS) -> None:
        method = scope["method"]
        if method == "HEAD":
            await self._reply(send, 200, b"", None)
            return
        if method != "POST":
            msg = f"rpc: POST method required, received {method}"
            await self._reply(send, 405, msg.encode(), "text/plain; charset=utf-8")
            return
        hdrs: MutableMapping[bytes, bytes] = dict(scope["headers"])
        raw_ct = hdrs.get(b"content-type")
        codec = content_codec(raw_ct.decode("latin-1") if raw_ct is not None else None)
        if codec is None:
            shown = raw_ct.decode("latin-1") if raw_ct else "(none)"
            await self._reply(send, 415, f"rpc: unrecognized Content-Type: {shown}".encode(),
                              "text/plain; charset=utf-8")
            return
        declared = hdrs.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._too_big(send, declared.decode("latin-1"), codec)
            return
        log.debug("rpc: reading a request body (%s bytes)", declared.decode("latin-1") if declared else "chunked")
        body = bytearray()
        more = True
        while more:
            try:  # a client that stops sending mid-body must not hold the connection for ever
                async with asyncio.timeout(self.idle_timeout):
                    message = await receive()
            except TimeoutError:
                await self._reply(send, 408, request_error(
                    f"rpc: no request data for {self.idle_timeout:g} s (idle_timeout); closing", INVALID_REQUEST,
                    codec == JSON), codec, close=True)  # fmt: skip
                return
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                await self._too_big(send, f"more than {self.limit}", codec)
                return
        rpc: JsonRpc = self.site.state.rpc
        client = scope.get("client")
        caller = CallContext("http", f"{client[0]}:{client[1]}" if client else "", role=who.role, user=who.name)
        # A few-row append runs on the loop when it cannot stall it, and only while no other request
        # is in a worker: concurrent writers go to the workers, where the engine commits them in
        # groups (one log sync for many), which the loop's one-at-a-time writes never could.
        out = rpc.handle_now(body, codec, caller) if self._working == 0 else LATER
        if out is LATER:
            self._working += 1
            try:
                out = await self._in_thread(rpc.handle, bytes(body), codec, caller)
            finally:
                self._working -= 1
        if out is None:  # a notification (no id): MarketStore writes no body
            await self._reply(send, 200, b"", None)
        else:
            await self._reply(send, out.status, out, codec)

    def _in_thread(self, fn: Callable[..., Reply | None], *args: object) -> Awaitable[Reply | None]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(RPC_THREADS, thread_name_prefix="mkts-rpc")
        return asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def _too_big(self, send: Send, size: str, codec: str) -> None:
        """An HTTP-200 error object (so MarketStore clients raise it); the connection is closed
        because the rest of the body is never read."""
        body = request_error(
            f"rpc: request body too large ({size} bytes; max_body_bytes is {self.limit})", INVALID_REQUEST,
            codec == JSON,
        )
        await self._reply(send, 200, body, codec, close=True)
