"""MarketStore's gRPC API (``proto.Marketstore``) as a thin protobuf codec around :class:`~.service.Service`.

Served by grpcio's asyncio server on ``grpc_listen_port``, on the HTTP server's event loop. Each
call is one hop to a worker thread, which parses the protobuf request, turns it into the same
request map the ``/rpc`` codec produces, runs :meth:`Service.call` and serialises the reply, so
the event loop never parses, waits on disk or copies a large reply. Handlers get the raw bytes
(no grpcio (de)serialiser), which keeps a malformed message an ``INVALID_ARGUMENT`` with our text
and lets a reply's size be checked before it is built.

Errors: a whole-call failure is a gRPC status (:func:`~.service.status_of`: ``NOT_FOUND`` for a
missing bucket, ``INVALID_ARGUMENT``, ``PERMISSION_DENIED`` for a disabled operation or a
read-only server, ``UNAVAILABLE`` while not queryable, ``RESOURCE_EXHAUSTED`` for a reply over
``grpc_max_send_msg_size``) with the message ``/rpc`` gives; a per-request failure of Write,
Create or Destroy is that request's ``ServerResponse.error``, as in MarketStore.

With ``auth: true`` each call is authenticated from its ``authorization`` metadata (``Bearer
TOKEN`` or ``Basic ...``, as on HTTP) before its request is even decoded: ``UNAUTHENTICATED``
otherwise; a role too low for the method is ``PERMISSION_DENIED`` from the service. With
``tls_cert_file``/``tls_key_file`` the port serves TLS only.

proto3 has no "unset" for scalars, so as in MarketStore a zero means absent: ``epoch_start`` and
``epoch_end`` of 0 (with 0 nanos) are open bounds and ``limit_record_count`` 0 is no limit.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import DecodeError

from mktsframe.backend import nmds
from mktsframe.config import Config
from mktsframe.server.auth import ANONYMOUS, Authenticator, AuthFailure, Role
from mktsframe.server.exposure import bind_host, tls_files
from mktsframe.server.grpc_schema import METHODS, PACKAGE, SERVICE, messages
from mktsframe.server.service import CallContext, CallError, Service, Status, brief, message_of, status_of

__all__ = ["GrpcApi", "GrpcServer"]

log = logging.getLogger("mktsframe.server")

MIB = 1 << 20
#: Worker threads for gRPC calls (as for ``/rpc``: writers may queue on the engine's write lock).
GRPC_THREADS = 40


class GrpcApi:
    """Request bytes → :class:`Service` → reply bytes, for each method of ``proto.Marketstore``.

    Synchronous (run in a worker thread); raises :class:`CallError` or a mktsframe error for a
    failed call, which :func:`_handler` turns into a status.
    """

    def __init__(self, service: Service, max_send_bytes: int) -> None:
        self.service = service
        self.max_send_bytes = max_send_bytes
        self.msg = messages()
        self._codecs: dict[str, Callable[[Any, CallContext], Any]] = {
            "Query": self.query,
            "Write": self.write,
            "Create": self.create,
            "Destroy": self.destroy,
            "ListSymbols": self.list_symbols,
            "ServerVersion": self.server_version,
        }

    def handle(self, method: str, body: bytes, ctx: CallContext) -> bytes:
        """Decode ``body`` as ``method``'s request, run it, and encode the reply."""
        request_type, _ = METHODS[method]
        try:
            request = self.msg[request_type].FromString(body)
        except (DecodeError, ValueError, RecursionError) as exc:
            raise CallError(Status.INVALID_ARGUMENT, f"grpc: cannot decode {request_type}: {brief(exc)}") from None
        reply = self._codecs[method](request, ctx)
        size = reply.ByteSize()
        if size > self.max_send_bytes:
            raise CallError(
                Status.RESOURCE_EXHAUSTED,
                f"the reply is {size:,} bytes, over grpc_max_send_msg_size ({self.max_send_bytes // MIB} MB); "
                "query less at once",
                "MktsError",
            )
        return reply.SerializeToString()

    # -- per method: protobuf → request map → Service → protobuf ---------------------------------
    def query(self, m: Any, ctx: CallContext) -> QueryReply:
        reqs = []
        for r in m.requests:
            d: dict[str, Any] = {"destination": r.destination, "limit_from_start": r.limit_from_start}
            if r.is_sql_statement:
                d.update(is_sqlstatement=True, sql_statement=r.sql_statement)
            if r.key_category:
                d["key_category"] = r.key_category
            for which in ("start", "end"):
                secs, nanos = getattr(r, f"epoch_{which}"), getattr(r, f"epoch_{which}_nanos")
                if secs or nanos:
                    d[f"epoch_{which}"], d[f"epoch_{which}_nanos"] = secs, nanos
            if r.limit_record_count:
                d["limit_record_count"] = r.limit_record_count
            if r.columns:
                d["columns"] = list(r.columns)
            if r.functions:
                d["functions"] = list(r.functions)
            reqs.append(d)
        return QueryReply(self.service.call("DataService.Query", {"requests": reqs}, ctx))

    def write(self, m: Any, ctx: CallContext) -> Any:
        reqs = []
        for r in m.requests:
            mds = r.data
            ds = {"names": list(mds.data.column_names), "types": list(mds.data.column_types),
                  "data": list(mds.data.column_data), "length": mds.data.length,
                  "startindex": dict(mds.start_index), "lengths": dict(mds.lengths)}  # fmt: skip
            reqs.append({"dataset": ds, "is_variable_length": r.is_variable_length})
        return self._responses(self.service.call("DataService.Write", {"requests": reqs}, ctx))

    def create(self, m: Any, ctx: CallContext) -> Any:
        reqs = [{"key": r.key, "column_names": [s.name for s in r.data_shapes],
                 "column_types": [s.type for s in r.data_shapes], "row_type": r.row_type or "fixed"}
                for r in m.requests]  # fmt: skip
        return self._responses(self.service.call("DataService.Create", {"requests": reqs}, ctx))

    def destroy(self, m: Any, ctx: CallContext) -> Any:
        reqs = [{"key": r.key} for r in m.requests]
        return self._responses(self.service.call("DataService.Destroy", {"requests": reqs}, ctx))

    def list_symbols(self, m: Any, ctx: CallContext) -> Any:
        fmt = "tbk" if m.format == 1 else "symbol"
        result = self.service.call("DataService.ListSymbols", {"format": fmt}, ctx)
        return self.msg["ListSymbolsResponse"](results=result["Results"])

    def server_version(self, m: Any, ctx: CallContext) -> Any:
        return self.msg["ServerVersionResponse"](version=self.service.version)

    def _responses(self, result: dict[str, Any]) -> Any:
        out = self.msg["MultiServerResponse"]()
        for r in result.get("responses") or []:
            out.responses.add(error=r.get("error", ""), version=r.get("version", self.service.version))
        return out


class QueryReply:
    """A ``MultiQueryResponse`` written straight from the service's result, not via protobuf objects.

    Its column buffers go from the query result into the one reply buffer (protobuf messages would
    copy each column into the message, then serialise it: two copies of a large result instead
    of one). Field numbers are those of :mod:`~.grpc_schema` (a test reads replies with
    pymarketstore's own classes).
    """

    def __init__(self, result: dict[str, Any]) -> None:
        reply = _Message()
        for response in result["responses"]:  # responses = 1: QueryResponse{result = 1: NumpyMultiDataset}
            reply.message(1, _Message().message(1, self._dataset(response["result"])))
        self._reply = reply.text(2, result["version"]).text(3, result["timezone"])

    @staticmethod
    def _dataset(ds: dict[str, Any]) -> _Message:
        data = _Message()
        for t in ds["types"]:
            data.text(1, t)
        for n in ds["names"]:
            data.text(2, n)
        for col in ds["data"]:
            data.buffer(3, col)
        data.varint(4, _int32(ds["length"], "rows in one reply"))
        out = _Message().message(1, data)
        for number, field in ((2, "startindex"), (3, "lengths")):  # map<string, int32>: one entry message each
            for key, value in ds[field].items():
                out.message(number, _Message().text(1, key).varint(2, _int32(value, "rows")))
        return out

    def ByteSize(self) -> int:  # protobuf's names, as the other replies have
        return self._reply.size

    def SerializeToString(self) -> bytes:
        """The reply as one ``bytes`` (what grpcio sends): each column copied once, from the result."""
        parts, self._reply.parts = self._reply.parts, []
        return b"".join([bytes(p) if isinstance(p, nmds.EpochSeconds) else p for p in parts])


class _Message:
    """Protobuf fields in order: the pieces to send (bytes, or buffers not copied) and their total size."""

    __slots__ = ("parts", "size")

    def __init__(self) -> None:
        self.parts: list[Any] = []
        self.size = 0

    def buffer(self, number: int, value: Any) -> _Message:
        """A bytes field holding ``value`` (any buffer, or :class:`~mktsframe.backend.nmds.EpochSeconds`)."""
        n = value.nbytes if isinstance(value, nmds.EpochSeconds) else memoryview(value).nbytes
        head = _tag(number, 2) + _varint(n)
        self.parts += (head, value)
        self.size += len(head) + n
        return self

    def text(self, number: int, value: str) -> _Message:
        return self.buffer(number, value.encode())

    def varint(self, number: int, value: int) -> _Message:
        piece = _tag(number, 0) + _varint(value)
        self.parts.append(piece)
        self.size += len(piece)
        return self

    def message(self, number: int, inner: _Message) -> _Message:
        head = _tag(number, 2) + _varint(inner.size)
        self.parts.append(head)
        self.parts += inner.parts
        self.size += len(head) + inner.size
        return self


@functools.lru_cache(maxsize=64)
def _tag(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _varint(n: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative ``n``."""
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _int32(n: int, what: str) -> int:
    if n > 2**31 - 1:
        raise CallError(Status.RESOURCE_EXHAUSTED, f"too many {what} for gRPC's int32 ({n:,}); query less at once",
                        "MktsError")
    return n


def _authorization(metadata: Any) -> str | bytes | None:
    """The ``authorization`` value of a call's metadata (``None`` without one)."""
    return next((v for k, v in metadata or () if k == "authorization"), None)


def _handler(api: GrpcApi, method: str, pool: ThreadPoolExecutor,
             auth: Authenticator | None) -> Callable[..., Awaitable[bytes]]:
    async def handle(body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        who = ANONYMOUS
        if auth is not None:
            try:
                who = auth.authenticate(_authorization(context.invocation_metadata()))
            except AuthFailure as exc:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        ctx = CallContext("grpc", context.peer() or "", deadline, role=who.role, user=who.name)
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, api.handle, method, body, ctx)
        except Exception as exc:
            status = status_of(exc)
            if status is Status.INTERNAL:
                log.error("internal error in gRPC %s", method, exc_info=exc)
                text = f"internal error: {type(exc).__name__}: {exc}"
            else:
                text = message_of(exc)
            await context.abort(grpc.StatusCode[status.name], text)
            raise  # not reached: abort raises

    return handle


class GrpcServer:
    """grpcio's asyncio server with ``proto.Marketstore`` and the worker threads it runs calls on."""

    def __init__(self, server: grpc.aio.Server, pool: ThreadPoolExecutor, address: str) -> None:
        self.server = server
        self.pool = pool
        self.address = address

    @classmethod
    async def start(cls, service: Service, config: Config, host: str | None = None,
                    auth: Authenticator | None = None) -> GrpcServer | None:
        """Serve on ``config.grpc_listen_port`` (``None`` when it is unset or 0).

        Raises ``RuntimeError`` naming the address when the port cannot be bound, so a server never
        silently runs without the API its configuration promises.
        """
        port = config.grpc_listen_port
        if not port:
            return None
        send, recv = config.grpc_max_send_msg_size * MIB, config.grpc_max_recv_msg_size * MIB
        pool = ThreadPoolExecutor(GRPC_THREADS, thread_name_prefix="mkts-grpc")
        api = GrpcApi(service, send)
        handlers = {name: grpc.unary_unary_rpc_method_handler(_handler(api, name, pool, auth)) for name in METHODS}
        idle_ms = int(config.idle_timeout * 1000) if config.idle_timeout else 0
        server = grpc.aio.server(
            handlers=[grpc.method_handlers_generic_handler(f"{PACKAGE}.{SERVICE}", handlers)],
            options=[("grpc.max_send_message_length", send), ("grpc.max_receive_message_length", recv),
                     ("grpc.so_reuseport", 0),  # a port in use is an error, not shared
                     # connections without calls for idle_timeout get a GOAWAY (clients reconnect when needed),
                     # and a connection must finish its handshake within it
                     *([("grpc.max_connection_idle_ms", idle_ms), ("grpc.server_handshake_timeout_ms", idle_ms)]
                       if idle_ms else [])],
        )
        address = f"{host or bind_host(config)}:{port}"
        tls = tls_files(config)
        try:
            if tls is None:
                bound = server.add_insecure_port(address)
            else:
                cert, key = (Path(p).read_bytes() for p in tls)
                bound = server.add_secure_port(address, grpc.ssl_server_credentials([(key, cert)]))
        except RuntimeError as exc:
            bound, reason = 0, str(exc)
        else:
            reason = "is the port in use?"
        if not bound:
            pool.shutdown(wait=False)
            raise RuntimeError(f"cannot serve gRPC on {address} ({reason})")
        await server.start()
        log.info("gRPC API on %s%s", address, " (TLS)" if tls else "")
        return cls(server, pool, address)

    async def stop(self, grace: float) -> None:
        """Stop accepting calls and let running ones finish (their clients are cancelled after ``grace``
        seconds), then wait for the worker threads, so no call still runs when the engine closes."""
        await self.server.stop(grace)
        await asyncio.to_thread(self.pool.shutdown, True)


class TokenInterceptor(grpc.ServerInterceptor):
    """Guards a (synchronous) gRPC server's streaming methods with the server's tokens: the
    replication master's stream, which carries every row and so needs at least ``role``. Refused
    before the stream starts: UNAUTHENTICATED without a valid token, PERMISSION_DENIED below ``role``."""

    def __init__(self, auth: Authenticator, role: Role) -> None:
        self._auth = auth
        self._role = role

    def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        try:
            who = self._auth.authenticate(_authorization(details.invocation_metadata))
        except AuthFailure as exc:
            return _refusal(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        if not who.allows(self._role):
            need = self._role.name.lower()
            return _refusal(grpc.StatusCode.PERMISSION_DENIED,
                            f"token {who.name!r} has role {who.role.name.lower()}; this needs {need}")
        return continuation(details)


def _refusal(code: grpc.StatusCode, text: str) -> grpc.RpcMethodHandler:
    def refuse(requests: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, text)

    return grpc.stream_stream_rpc_method_handler(refuse)
