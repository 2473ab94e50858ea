"""The starlette application: ``/rpc`` (POST, HEAD), ``/ws`` (push stream), ``/heartbeat``, and the lifespan.

The app is a thin async shell. Each ``/rpc`` body is read here (bounded by ``max_body_bytes``)
and handed whole to :meth:`RpcService.handle` in a worker thread, so decoding, disk work and
encoding never run on the event loop; the engine's own locks serialise writes through the WAL
and let reads proceed between commits. The engine is opened on startup and closed (checkpointed,
WAL trimmed, write lock released) on shutdown, after uvicorn has let in-flight requests finish.
Plugins (``triggers:``, ``bgworkers:``) start after the engine opens and stop before it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute

from mktsframe.backend import Backend, connect
from mktsframe.backend.local import LocalBackend
from mktsframe.config import Config
from mktsframe.plugins import Plugins, start_plugins
from mktsframe.server.rpc import INVALID_REQUEST, JSON, RpcService, content_codec, request_error
from mktsframe.server.ws import stream_endpoint
from mktsframe.streaming.hub import CommitHub

__all__ = ["create_app", "server_version"]

log = logging.getLogger("mktsframe.server")


def server_version() -> str:
    """What ``Marketstore-Version`` reports (pymarketstore's ``server_version()``)."""
    from mktsframe import __version__

    return f"mktsframe-{__version__}"


def open_backend(config: Config) -> Backend:
    """The local engine of ``config``'s root; refuses to run if another process writes it.

    ``init_wal_cache: false`` opens it read-only (MarketStore: no WAL, no writes).
    """
    return connect(config.root_path(), config=config, read_only=not config.init_wal_cache)


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


def create_app(config: Config, *, backend: Backend | None = None) -> Starlette:
    """The ASGI app serving ``config`` (or ``backend``, which the caller then owns and closes)."""
    version = server_version()
    headers = {"Marketstore-Version": version, "X-Content-Type-Options": "nosniff"}
    limit = config.max_body_bytes

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        be = backend if backend is not None else await anyio.to_thread.run_sync(open_backend, config)
        service = RpcService(be, config, version)
        app.state.service = service
        plugins = await anyio.to_thread.run_sync(_start_plugins, be, config)
        app.state.plugins = plugins
        # One commit listener for all /ws connections; fan-out happens on this event loop.
        hub = CommitHub(be.engine, loop=asyncio.get_running_loop()) if isinstance(be, LocalBackend) else None
        app.state.hub = hub
        log.info("serving %r (timezone %s, queryable=%s)", be, config.timezone, config.queryable)
        try:
            yield
        finally:
            service.stopping = True
            if plugins is not None:
                await anyio.to_thread.run_sync(plugins.stop)
            if hub is not None:
                hub.close()
            if backend is None:
                await anyio.to_thread.run_sync(be.close)
                log.info("engine closed cleanly")

    async def rpc(request: Request) -> Response:
        if request.method == "HEAD":
            return Response(status_code=200, headers=headers)
        if request.method != "POST":
            return PlainTextResponse(f"rpc: POST method required, received {request.method}", 405, headers)
        raw_ct = request.headers.get("content-type")
        codec = content_codec(raw_ct)
        if codec is None:
            return PlainTextResponse(f"rpc: unrecognized Content-Type: {raw_ct or '(none)'}", 415, headers)
        as_json = codec == JSON
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return _too_big(declared, limit, as_json, headers, codec)
        chunks = bytearray()
        async for chunk in request.stream():
            chunks += chunk
            if len(chunks) > limit:
                return _too_big(f"more than {limit}", limit, as_json, headers, codec)
        service: RpcService = request.app.state.service
        out = await anyio.to_thread.run_sync(service.handle, bytes(chunks), codec)
        if out is None:  # a notification (no id): MarketStore writes no body
            return Response(b"", 200, headers)
        return Response(out, 200, headers, media_type=codec)

    async def heartbeat(request: Request) -> Response:
        service: RpcService = request.app.state.service
        body = service.heartbeat()
        return JSONResponse(body, 200 if service.queryable else 503, headers)

    return Starlette(
        routes=[
            Route("/rpc", rpc, methods=["POST", "HEAD", "GET", "PUT", "DELETE", "PATCH"]),
            Route("/heartbeat", heartbeat, methods=["GET", "HEAD"]),
            WebSocketRoute("/ws", stream_endpoint),
        ],
        lifespan=lifespan,
    )


def _too_big(size: str, limit: int, as_json: bool, headers: dict[str, str], codec: str) -> Response:
    """An HTTP-200 error object (so MarketStore clients raise it); the connection is closed
    because the rest of the body is never read."""
    body = request_error(
        f"rpc: request body too large ({size} bytes; max_body_bytes is {limit})", INVALID_REQUEST, as_json
    )
    return Response(body, 200, {**headers, "Connection": "close"}, media_type=codec)
