"""``/rpc``: MarketStore's JSON-RPC envelope and its msgpack/JSON codecs around :class:`~.service.Service`.

A thin codec: it decodes a body, calls :meth:`Service.call` with the request's params and a
:class:`~.service.CallContext`, and encodes the result or the error. Every check lives in the
service. Everything here is synchronous and runs in a worker thread (the app hands it the raw
body), so decoding, disk work and encoding never block the event loop.

Envelope (MarketStore's, so the unmodified pymarketstore client works): a msgpack or JSON map
``{jsonrpc: "2.0", method, params, id}``; replies ``{jsonrpc, result, id}`` or
``{jsonrpc, error: {code, message, data}, id}`` — errors are always HTTP 200 so the client
raises them with their message. Our error objects also carry ``mkts_error``, the mktsframe
exception class name, so :class:`~mktsframe.backend.http.HTTPBackend` re-raises the same class.

Methods: ``DataService.Query``, ``Write``, ``Create``, ``Destroy``, ``ListSymbols``,
``GetInfo`` (MarketStore's) and ``DataService.Delete`` (mktsframe's: removes a time range).
Request-level keys starting with ``mkts_`` are mktsframe extensions that MarketStore clients
never send; they are documented in ``docs/server.md``.
"""

from __future__ import annotations

import base64
import enum
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any

import msgpack
import numpy as np

from mktsframe.backend import nmds
from mktsframe.errors import MktsError
from mktsframe.keys import parse_key
from mktsframe.server.service import CallContext, CallError, Service, Status, brief, kind_of, message_of

__all__ = ["JSON", "LATER", "MSGPACK", "InProcess", "JsonRpc", "Later", "Reply", "RpcError"]

log = logging.getLogger("mktsframe.server")

MSGPACK = "application/x-msgpack"
JSON = "application/json"

# JSON-RPC error codes (MarketStore uses the same ones).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000
#: Access refusals keep their HTTP status (the body still holds the JSON-RPC error); every other error is HTTP 200.
_HTTP_STATUS = {Status.UNAUTHENTICATED: 401, Status.PERMISSION_DENIED: 403}
#: A :class:`~.service.Status` as a JSON-RPC code (MarketStore answers -32000 for any method error).
_CODES = {Status.INVALID_ARGUMENT: INVALID_PARAMS, Status.UNIMPLEMENTED: METHOD_NOT_FOUND,
          Status.INTERNAL: INTERNAL_ERROR}  # fmt: skip


class Later(enum.Enum):
    """:meth:`JsonRpc.handle_now`'s answer for a request that must go to a worker thread."""

    LATER = "later"


LATER = Later.LATER
#: :meth:`JsonRpc.handle_now` takes writes of at most this many rows in all...
NOW_MAX_ROWS = 32
#: ... in a body of at most this many bytes.
NOW_MAX_BYTES = 16 << 10


class RpcError(Exception):
    """A request the envelope cannot even read (reported as a JSON-RPC error, always HTTP 200)."""

    def __init__(self, code: int, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.kind = kind


class JsonRpc:
    """MarketStore's ``/rpc`` over a :class:`~.service.Service`: bodies in, reply bodies out."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self._no_wait: Callable[[], AbstractContextManager[bool]] | None = getattr(
            service.backend, "writes_without_waiting", None)

    def handle(self, body: bytes, content_type: str, caller: str | CallContext = "") -> Reply | None:
        """Decode one request body, run it, and encode the reply (``None``: notification)."""
        return self._handle(body, content_type == JSON, caller)

    def handle_now(self, body: bytes, content_type: str, caller: str | CallContext = "") -> Reply | Later | None:
        """:meth:`handle` a small write on the calling thread if nothing there can wait; else
        :data:`LATER` (hand the body to a worker thread).

        For the server's event loop, which skips two thread hops for the commonest request, a
        few-row append, and must never stall: only a msgpack ``DataService.Write`` of at most
        ``NOW_MAX_ROWS`` rows, into buckets already known, while the backend says writes run
        without waiting (:meth:`~mktsframe.backend.local.LocalBackend.writes_without_waiting`:
        no other change under way and a fast disk). Anything else, including a body that does
        not decode, returns :data:`LATER` and gets its reply from :meth:`handle`.
        """
        no_wait = self._no_wait
        if no_wait is None or content_type != MSGPACK or len(body) > NOW_MAX_BYTES:
            return LATER
        try:
            req = msgpack.unpackb(body, raw=False)
            if not self._small_write(req):
                return LATER
        except Exception:
            return LATER
        with no_wait() as now:
            return self._handle(body, False, caller, req) if now else LATER

    def _small_write(self, req: Any) -> bool:
        """A ``DataService.Write`` of few rows to buckets that exist (raises on odd shapes)."""
        if not isinstance(req, dict) or req.get("method") != "DataService.Write":
            return False
        params = req.get("params")
        if isinstance(params, list) and len(params) == 1:
            params = params[0]
        reqs = params.get("requests")
        if not isinstance(reqs, list) or not 0 < len(reqs) <= 4:
            return False
        rows = 0
        for r in reqs:
            ds = r["dataset"]
            rows += int(ds["length"])
            if not all(self.service.kinds.known(parse_key(k).item_key) for k in ds["startindex"]):
                return False
        return rows <= NOW_MAX_ROWS

    def _handle(self, body: bytes, codec_json: bool, caller: str | CallContext, decoded: Any = None) -> Reply | None:
        """``caller``: the transport's :class:`~.service.CallContext` (its role), or only the peer's name."""
        req_id: Any = None
        status = 200
        try:
            try:
                req = decoded if decoded is not None else (json.loads(body) if codec_json
                                                           else msgpack.unpackb(body, raw=False))
            except (ValueError, TypeError, RecursionError) as exc:
                raise RpcError(PARSE_ERROR, f"rpc: cannot decode request body: {brief(exc)}") from None
            if not isinstance(req, dict):
                raise RpcError(INVALID_REQUEST, f"rpc: request must be a map, got {type(req).__name__}")
            req_id = req.get("id")
            if not _plain_id(req_id):
                req_id = None
                raise RpcError(INVALID_REQUEST, "rpc: id must be a string, a number or null")
            if req.get("jsonrpc") != "2.0":
                raise RpcError(INVALID_REQUEST, "rpc: jsonrpc must be 2.0")
            method = req.get("method")
            if not isinstance(method, str):
                raise RpcError(INVALID_REQUEST, "rpc: method must be a string")
            params = req.get("params", {})
            if isinstance(params, list) and len(params) == 1:
                params = params[0]
            if params is None:
                params = {}
            if not isinstance(params, dict):
                raise RpcError(INVALID_PARAMS, "rpc: params must be a map (or a one-element list holding one)")
            if codec_json:
                params = _unbase64(params)
            ctx = caller if isinstance(caller, CallContext) else CallContext("http", caller)
            result = self.service.call(method, params, ctx)
            if "id" not in req or req_id is None:
                return None
            reply: dict[str, Any] = {"jsonrpc": "2.0", "result": result, "id": req_id}
        except RpcError as exc:
            reply = _error_reply(exc.code, exc.message, exc.kind, req_id)
        except CallError as exc:
            reply = _error_reply(_CODES.get(exc.status, SERVER_ERROR), exc.message, exc.kind, req_id)
            status = _HTTP_STATUS.get(exc.status, 200) if exc.kind == "AccessDeniedError" else 200
        except MktsError as exc:
            reply = _error_reply(SERVER_ERROR, message_of(exc), kind_of(exc), req_id)
        except (ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
            reply = _error_reply(INVALID_PARAMS, message_of(exc), kind_of(exc), req_id)
        except Exception as exc:  # a bug: report it, keep serving
            log.exception("internal error handling a request")
            reply = _error_reply(INTERNAL_ERROR, f"internal error: {type(exc).__name__}: {exc}", None, req_id)
        try:
            out = encode(reply, codec_json)
            out.status = status
            return out
        except ValueError as exc:  # a result too large for the wire format
            return encode(_error_reply(INVALID_PARAMS, str(exc), "ValueError", req_id), codec_json)


class InProcess:
    """An :class:`~mktsframe.backend.http.HTTPBackend` transport that hands each body straight to a
    :class:`JsonRpc` in this process (no socket): the whole client and service, minus HTTP."""

    def __init__(self, rpc: JsonRpc) -> None:
        self.rpc = rpc

    def post(self, body: bytes) -> tuple[int, bytes]:
        reply = self.rpc.handle(body, MSGPACK, "in-process")
        return 200, b"" if reply is None else bytes(reply)

    def close(self) -> None:
        pass


def _plain_id(v: object) -> bool:
    return v is None or (isinstance(v, (str, int, float)) and not isinstance(v, bool) and len(str(v)) <= 256)


def _error_reply(code: int, message: str, kind: str | None, req_id: Any) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message, "data": None}
    if kind:
        err["mkts_error"] = kind
    return {"jsonrpc": "2.0", "error": err, "id": req_id}


def _unbase64(obj: Any) -> Any:
    """JSON carries binary column data as base64 strings (MarketStore's JSON codec)."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k == "data" and isinstance(v, list) and all(isinstance(x, str) for x in v):
                try:
                    out[k] = [base64.b64decode(x, validate=True) for x in v]
                except ValueError:
                    raise CallError(Status.INVALID_ARGUMENT,
                                    "dataset.data must be base64 strings in JSON requests") from None
            else:
                out[k] = _unbase64(v)
        return out
    if isinstance(obj, list):
        return [_unbase64(x) for x in obj]
    return obj


def _json_default(v: Any) -> Any:
    if isinstance(v, nmds.EpochSeconds):
        v = bytes(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return base64.b64encode(v).decode("ascii")
    if isinstance(v, np.integer):
        return int(v)
    raise TypeError(f"cannot encode {type(v).__name__} as JSON")


class Reply:
    """A reply body as buffers to send in order (``nbytes`` in all), released as they are sent.

    A large msgpack reply is never packed whole: its column buffers go out as they are (views of
    the engine's result arrays, in slices of at most :data:`SEND_SLICE_BYTES`) and the Epoch
    column is converted slice by slice, so serving a result costs about its own size once, not
    the result plus its epochs plus a packed copy (plus a transport copy).
    """

    def __init__(self, parts: list[Any], status: int = 200) -> None:
        self._parts = parts
        self.nbytes = sum(_nbytes(p) for p in parts)
        self.status = status
        """The HTTP status to send it with (401/403 for access refusals, else 200)."""

    def buffers(self) -> Iterator[bytes | memoryview]:
        """The body in order; each part is dropped (and its memory freed) once it has been handed out."""
        parts, self._parts = self._parts, []
        parts.reverse()
        while parts:
            part = parts.pop()
            if isinstance(part, nmds.EpochSeconds):
                yield from part.slices()
            elif isinstance(part, bytes) or _nbytes(part) <= SEND_SLICE_BYTES:
                yield part
            else:
                view = memoryview(part).cast("B")
                for i in range(0, len(view), SEND_SLICE_BYTES):
                    yield view[i : i + SEND_SLICE_BYTES]
                del view
            del part

    def __bytes__(self) -> bytes:
        return b"".join(self.buffers())


#: Binary values from this size on are sent as separate buffers instead of packed into the reply.
STREAM_MIN_BYTES = 1 << 20
#: Largest piece handed to the transport at once (it waits for the socket between pieces).
SEND_SLICE_BYTES = 1 << 20
_BIN32_MAX = 2**32 - 1


def _nbytes(v: Any) -> int:
    if isinstance(v, nmds.EpochSeconds):
        return v.nbytes
    return memoryview(v).nbytes


def _set_aside(v: Any, token: bytes, big: list[Any]) -> Any:
    """``v`` with each large binary value appended to ``big`` and replaced by ``token`` + its number.

    A module-level function on purpose: a recursive closure would be a reference cycle holding
    ``big`` (the whole result) until the cyclic garbage collector happens to run.
    """
    if isinstance(v, dict):
        return {k: _set_aside(x, token, big) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_set_aside(x, token, big) for x in v]
    if isinstance(v, nmds.EpochSeconds) and v.nbytes < STREAM_MIN_BYTES:
        return bytes(v)
    if isinstance(v, (nmds.EpochSeconds, bytes, bytearray, memoryview)) and _nbytes(v) >= STREAM_MIN_BYTES:
        if _nbytes(v) > _BIN32_MAX:
            raise ValueError(f"a reply column of {_nbytes(v):,} bytes exceeds msgpack's 4 GiB; query less at once")
        big.append(v)
        return token + (len(big) - 1).to_bytes(4, "little")
    return v


#: Marks where each large value goes in a packed reply: random per process and never sent, so stored
#: data cannot contain it except by a 2**-96 chance per position.
_PLACEHOLDER = os.urandom(12)


def _pack_parts(reply: Mapping[str, Any]) -> list[Any]:
    """msgpack ``reply`` with every large binary value left out of the packed bytes: the packed
    pieces and those values (as msgpack bin32 each) in order, ready for :class:`Reply`."""
    token = _PLACEHOLDER
    big: list[Any] = []
    head = msgpack.packb(_set_aside(reply, token, big), use_bin_type=True)
    parts: list[Any] = []
    pos = 0
    for i, value in enumerate(big):
        marker = b"\xc4\x10" + token + i.to_bytes(4, "little")  # the placeholder, packed as bin8
        at = head.index(marker, pos)
        parts += [head[pos:at], b"\xc6" + _nbytes(value).to_bytes(4, "big"), value]
        pos = at + len(marker)
    parts.append(head[pos:])
    return parts


def encode(reply: Mapping[str, Any], as_json: bool) -> Reply:
    """A reply body in the request's codec (binary as msgpack bin, or base64 in JSON)."""
    if as_json:
        return Reply([json.dumps(reply, default=_json_default, separators=(",", ":")).encode()])
    return Reply(_pack_parts(reply))


def content_codec(header: str | None) -> str | None:
    """``application/x-msgpack`` or ``application/json`` from a Content-Type, else ``None``."""
    ct = (header or "").split(";", 1)[0].strip().lower()
    return ct if ct in (MSGPACK, JSON) else None


def request_error(message: str, code: int, as_json: bool, kind: str | None = None) -> bytes:
    """An error reply for a request that could not even be read (id unknown)."""
    return bytes(encode(_error_reply(code, message, kind, None), as_json))
