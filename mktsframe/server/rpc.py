"""``/rpc``: MarketStore's JSON-RPC methods over any :class:`~mktsframe.backend.base.Backend`.

Everything here is synchronous and runs in a worker thread (the app hands it the raw body), so
decoding, disk work and encoding never block the event loop.

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
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
import pandas as pd

from mktsframe.backend.base import Backend, Batch
from mktsframe.backend.bucket_kinds import BucketKinds
from mktsframe.config import Config
from mktsframe.dtypes import WIRE_TYPES, coerce_column, nanoseconds_part
from mktsframe.engine.commits import CommitEvent
from mktsframe.errors import (
    BucketExistsError,
    BucketNotFoundError,
    FunctionError,
    InvalidKeyError,
    MktsError,
    ReadOnlyError,
    SchemaMismatchError,
    SQLError,
)
from mktsframe.functions import Call, apply_functions, parse_functions, parse_window
from mktsframe.functions.resample import read_candles
from mktsframe.keys import CATEGORY, parse_key
from mktsframe.server import nmds
from mktsframe.times import to_ns

__all__ = ["JSON", "LATER", "MSGPACK", "Later", "Reply", "RpcError", "RpcService"]

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

class Later(enum.Enum):
    """:meth:`RpcService.handle_now`'s answer for a request that must go to a worker thread."""

    LATER = "later"


LATER = Later.LATER
#: :meth:`RpcService.handle_now` takes writes of at most this many rows in all...
NOW_MAX_ROWS = 32
#: ... in a body of at most this many bytes.
NOW_MAX_BYTES = 16 << 10

#: Most sub-requests accepted in one call: bounds the work one request can queue.
MAX_REQUESTS = 10_000
#: Longest SQL statement accepted (characters): bounds parsing work per request.
MAX_SQL_CHARS = 100_000
NS = 1_000_000_000
_I64 = (-(2**63), 2**63 - 1)
_NOT_QUERYABLE = "server is not queryable"
# MarketStore's DataShape type codes (GetInfo's DSV), see the MarketStore spec §1.3.
_TYPE_CODES = {"f4": 0, "i4": 1, "f8": 2, "i8": 3, "i1": 5, "bool": 6, "i2": 9,
               "u1": 10, "u2": 11, "u4": 12, "u8": 13, "U16": 14}  # fmt: skip


class RpcError(Exception):
    """A failure reported as a JSON-RPC error object (always HTTP 200)."""

    def __init__(self, code: int, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.kind = kind


def _param_error(message: str) -> RpcError:
    return RpcError(INVALID_PARAMS, message, "ValueError")


@dataclass
class _QuerySpec:
    destination: str
    start: int | None
    end: int | None
    limit: int | None
    from_start: bool
    columns: list[str] | None
    native: bool
    functions: list[Call]
    sql: str | None = None


class RpcService:
    """The method table over one backend, with ``mkts.yml``'s switches applied.

    Parameters
    ----------
    backend : Backend
        Usually the local engine of the server's root.
    config : Config
        ``queryable``, ``enable_add``, ``enable_remove`` and ``timezone`` are enforced here
        (``init_wal_cache: false`` opens the backend read-only, which refuses writes itself).
    version : str
        Reported in replies and the ``Marketstore-Version`` header.
    """

    def __init__(self, backend: Backend, config: Config, version: str) -> None:
        self.backend = backend
        self.config = config
        self.version = version
        self.stopping = False
        self.started = time.monotonic()
        self._methods: dict[str, Callable[[dict[str, Any]], Any]] = {
            "DataService.Query": self.query,
            "DataService.Write": self.write,
            "DataService.Create": self.create,
            "DataService.Destroy": self.destroy,
            "DataService.ListSymbols": self.list_symbols,
            "DataService.GetInfo": self.get_info,
            "DataService.Delete": self.delete,
        }
        self._ddl_lock = threading.Lock()  # create/destroy checks and actions as one step
        # Bucket kinds are cached only where creates and destroys are heard (the local engine).
        on_commit = getattr(backend, "on_commit", None)
        self._kinds = BucketKinds(lambda key: backend.query(key, limit=0), cache=on_commit is not None)
        if on_commit is not None:
            on_commit(self._heard)
        self._no_wait: Callable[[], AbstractContextManager[bool]] | None = getattr(
            backend, "writes_without_waiting", None)

    @property
    def queryable(self) -> bool:
        return self.config.queryable and not self.stopping

    # -- envelope -------------------------------------------------------------------------------
    def handle(self, body: bytes, content_type: str) -> Reply | None:
        """Decode one request body, run it, and encode the reply (``None``: notification)."""
        return self._handle(body, content_type == JSON)

    def handle_now(self, body: bytes, content_type: str) -> Reply | Later | None:
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
            return self._handle(body, False, req) if now else LATER

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
            if not all(self._kinds.known(parse_key(k).item_key) for k in ds["startindex"]):
                return False
        return rows <= NOW_MAX_ROWS

    def _handle(self, body: bytes, codec_json: bool, decoded: Any = None) -> Reply | None:
        req_id: Any = None
        try:
            try:
                req = decoded if decoded is not None else (json.loads(body) if codec_json
                                                           else msgpack.unpackb(body, raw=False))
            except (ValueError, TypeError, RecursionError) as exc:
                raise RpcError(PARSE_ERROR, f"rpc: cannot decode request body: {_brief(exc)}") from None
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
            fn = self._methods.get(method)
            if fn is None:
                raise RpcError(METHOD_NOT_FOUND, f"rpc: can't find method {method[:100]!r}")
            params = req.get("params", {})
            if isinstance(params, list) and len(params) == 1:
                params = params[0]
            if params is None:
                params = {}
            if not isinstance(params, dict):
                raise RpcError(INVALID_PARAMS, "rpc: params must be a map (or a one-element list holding one)")
            if codec_json:
                params = _unbase64(params)
            result = fn(params)
            if "id" not in req or req_id is None:
                return None
            reply: dict[str, Any] = {"jsonrpc": "2.0", "result": result, "id": req_id}
        except RpcError as exc:
            reply = _error_reply(exc.code, exc.message, exc.kind, req_id)
        except MktsError as exc:
            reply = _error_reply(SERVER_ERROR, str(exc), type(exc).__name__, req_id)
        except (ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
            reply = _error_reply(INVALID_PARAMS, _brief(exc), "ValueError", req_id)
        except Exception as exc:  # a bug: report it, keep serving
            log.exception("internal error handling a request")
            reply = _error_reply(INTERNAL_ERROR, f"internal error: {type(exc).__name__}: {exc}", None, req_id)
        try:
            return encode(reply, codec_json)
        except ValueError as exc:  # a result too large for the wire format
            return encode(_error_reply(INVALID_PARAMS, str(exc), "ValueError", req_id), codec_json)

    # -- helpers --------------------------------------------------------------------------------
    def _require_queryable(self) -> None:
        if not self.queryable:
            raise MktsError(_NOT_QUERYABLE)

    def _time(self, req: Mapping[str, Any], which: str) -> int | None:
        """``epoch_<which>`` (+ ``_nanos``) or mktsframe's time text ``mkts_<which>`` → ns.

        Zone-less text is UTC, as everywhere in mktsframe; the ``timezone`` setting only labels
        replies (pymarketstore localises its DataFrames to it) and never shifts a bound.
        """
        text = req.get(f"mkts_{which}")
        if text is not None:
            if not isinstance(text, str) or len(text) > 64:
                raise _param_error(f"mkts_{which} must be a time string")
            return to_ns(text, name=which)
        secs = req.get(f"epoch_{which}")
        if secs is None:
            return None
        nanos = req.get(f"epoch_{which}_nanos") or 0
        for label, v in ((f"epoch_{which}", secs), (f"epoch_{which}_nanos", nanos)):
            if not isinstance(v, int) or isinstance(v, bool):
                raise _param_error(f"{label} must be an integer, got {_brief(v)}")
        ns = secs * NS + nanos
        if which == "start":
            return None if ns <= _I64[0] else min(ns, _I64[1])
        return None if ns >= _I64[1] else max(ns, _I64[0])

    def _heard(self, event: CommitEvent) -> None:  # a commit listener: the writer's thread
        if event.op in ("create", "destroy"):
            self._kinds.forget(event.key)

    def _requests(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        reqs = params.get("requests")
        if reqs is None:
            return []
        if not isinstance(reqs, list):
            raise _param_error("params.requests must be a list")
        if len(reqs) > MAX_REQUESTS:
            raise _param_error(f"too many requests in one call ({len(reqs)} > {MAX_REQUESTS})")
        for i, r in enumerate(reqs):
            if not isinstance(r, dict):
                raise _param_error(f"requests[{i}] must be a map, got {type(r).__name__}")
        return reqs

    def _ok(self) -> dict[str, Any]:
        return {"error": "", "version": self.version}

    def _fail(self, exc: BaseException) -> dict[str, Any]:
        kind = type(exc).__name__ if isinstance(exc, MktsError) else "ValueError"
        return {"error": _brief(exc, 2000), "version": self.version, "mkts_error": kind}

    # -- Query ----------------------------------------------------------------------------------
    def _parse_query(self, i: int, req: Mapping[str, Any]) -> _QuerySpec:
        if req.get("is_sqlstatement"):
            stmt = req.get("sql_statement")
            if not isinstance(stmt, str) or not stmt.strip():
                raise _param_error(f"requests[{i}].sql_statement must be a non-empty string")
            if len(stmt) > MAX_SQL_CHARS:
                raise _param_error(f"requests[{i}].sql_statement is longer than {MAX_SQL_CHARS} characters")
            return _QuerySpec("", None, None, None, False, None, False, [], sql=stmt)
        dest = req.get("destination")
        if not isinstance(dest, str) or dest.count("/") < 2:
            raise InvalidKeyError(
                f"destinations must have a Symbol, Timeframe and AttributeGroup, have: {_brief(dest, 200)}"
            )
        cat = req.get("key_category")
        if cat not in (None, "", CATEGORY):
            raise _param_error(f"unsupported key_category {_brief(cat)} (only {CATEGORY!r})")
        if ":" not in dest and cat:
            dest = f"{dest}:{cat}"
        functions = parse_functions(req.get("functions") or [])  # bad calls fail before any data is read
        limit = req.get("limit_record_count")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
            raise _param_error(f"limit_record_count must be a non-negative integer, got {_brief(limit)}")
        from_start = req.get("limit_from_start", False)
        if from_start is None:
            from_start = False
        if not isinstance(from_start, bool):
            raise _param_error(f"limit_from_start must be a boolean, got {_brief(from_start)}")
        columns = req.get("columns")
        if columns is not None:
            if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
                raise _param_error("columns must be a list of strings")
            if len(columns) > 4096:
                raise _param_error("too many columns requested")
        native = bool(req.get("mkts_native", False))
        return _QuerySpec(
            destination=dest,
            start=self._time(req, "start"),
            end=self._time(req, "end"),
            limit=limit if native else (limit or None),  # MarketStore: 0 means no limit
            from_start=from_start,
            columns=columns,
            native=native,
            functions=functions,
        )

    def query(self, params: dict[str, Any]) -> dict[str, Any]:
        """``DataService.Query``: one response per request; any failure fails the whole call."""
        self._require_queryable()
        specs = [self._parse_query(i, r) for i, r in enumerate(self._requests(params))]
        responses = [self._run_query(spec) for spec in specs]
        return {"responses": responses, "version": self.version, "timezone": self.config.timezone}

    def _fetch(self, spec: _QuerySpec, key: str, columns: list[str] | None) -> dict[str, Batch]:
        return self.backend.query(
            key,
            start=_ts(spec.start),
            end=_ts(spec.end),
            columns=columns,
            limit=spec.limit,
            limit_from_start=spec.from_start,
        )

    def _run_sql(self, stmt: str) -> dict[str, Any]:
        """An ``is_sqlstatement`` request: the rows in the usual NMDS, keyed ``<statement>:SQL``.

        As in MarketStore the key is the statement text (pymarketstore keeps the part before the
        first ``:``), and results without a time column are stamped ``Epoch`` = now.
        """
        from mktsframe.sql import execute

        if not self.config.enable_add and re.match(r"\s*insert\b", stmt, re.IGNORECASE):
            raise ReadOnlyError("INSERT INTO is disabled on this server (enable_add: false)")
        frame = execute(stmt, self.backend)
        batch = sql_batch(frame)
        ds = nmds.encode([(stmt, batch)], key_suffix=":SQL")
        if batch.variable_length:
            ds["mkts_variable"] = True  # as for tick queries: HTTPBackend folds Nanoseconds back
        return {"result": ds}

    def _run_query(self, spec: _QuerySpec) -> dict[str, Any]:
        if spec.sql is not None:
            return self._run_sql(spec.sql)
        try:
            results = self._select(spec)
        except (BucketNotFoundError, InvalidKeyError) as missing:
            if spec.native:
                raise  # HTTPBackend must see exactly what the local engine does
            results = self._candles_instead(spec, missing)
        if spec.functions:
            # MarketStore runs the chain per bucket on the rows the query selected (after limit).
            results = {key: apply_functions(batch, spec.functions) for key, batch in results.items()}
        return self._respond(spec, results)

    def _candles_instead(self, spec: _QuerySpec, missing: MktsError) -> dict[str, Batch]:
        """A timeframe nobody stored (``10Min``, ``4H``, ``1W``, ``1M``…): candles from the finest
        stored bucket of the symbol and group whose timeframe divides it.

        MarketStore read another bucket here without aggregating (``10Min`` got ``5Min`` bars,
        ``4H`` got ``2H`` bars). ``limit`` then counts candles; ``columns`` picks among the candle
        columns. If nothing fits, the original error stands (with the reason for a bucket-not-found).
        """
        parts = spec.destination.partition(":")[0].split("/")
        if len(parts) != 3:
            raise missing
        tf = parts[1]
        try:
            parse_window(tf)
            results = read_candles(self.backend, spec.destination, tf, start=_ts(spec.start), end=_ts(spec.end),
                                   limit=spec.limit, limit_from_start=spec.from_start)  # fmt: skip
        except (BucketNotFoundError, InvalidKeyError):
            raise missing from None
        except FunctionError as exc:
            if isinstance(missing, BucketNotFoundError):
                raise BucketNotFoundError(f"{missing}; {exc}") from None
            raise missing from None
        if spec.columns is not None:
            results = {k: Batch(b.index, {c: b.columns[c] for c in dict.fromkeys(spec.columns) if c in b.columns})
                       for k, b in results.items()}  # fmt: skip
        return results

    def _select(self, spec: _QuerySpec) -> dict[str, Batch]:
        if spec.columns is None or spec.native:
            results = self._fetch(spec, spec.destination, spec.columns)
        else:
            # MarketStore: Epoch first, then the requested columns that exist in request order,
            # then Nanoseconds if the bucket has it; unknown names are ignored.
            probe = self.backend.query(spec.destination, limit=0)
            wanted: dict[str, list[str]] = {}
            for key, b in probe.items():
                cols = [c for c in dict.fromkeys(spec.columns) if c in b.columns]
                if "Nanoseconds" in b.columns and "Nanoseconds" not in cols:
                    cols.append("Nanoseconds")
                wanted[key] = cols
            lists = {tuple(v) for v in wanted.values()}
            if len(lists) == 1:
                results = self._fetch(spec, spec.destination, next(iter(wanted.values())))
            else:
                results = {}
                for key, cols in wanted.items():
                    results.update(self._fetch(spec, key, cols))
        return results

    def _respond(self, spec: _QuerySpec, results: dict[str, Batch]) -> dict[str, Any]:
        # Tick buckets' results end with MarketStore's Nanoseconds column (the sub-second part of each
        # tick's time), so they never share a dataset with fixed buckets.
        groups: dict[tuple[object, ...], list[tuple[str, Batch]]] = {}
        for key, batch in results.items():
            sig = (batch.variable_length, *((n, v.dtype.str) for n, v in batch.columns.items()))
            groups.setdefault(sig, []).append((key, batch))
        if len(groups) == 1:
            return {"result": self._encode(list(results.items()), spec.native)}
        if spec.native:
            return {"results": [self._encode(parts, True) for parts in groups.values()], "mkts_order": list(results)}
        raise SchemaMismatchError(
            "symbols in a query must have the same data type or be filtered by common columns. "
            f"symbols={list(results)}"
        )

    @staticmethod
    def _encode(parts: list[tuple[str, Batch]], native: bool) -> dict[str, Any]:
        ds = nmds.encode(parts)
        if native and parts and parts[0][1].variable_length:
            ds["mkts_variable"] = True  # HTTPBackend folds Nanoseconds back into the index
        return ds

    # -- Write ----------------------------------------------------------------------------------
    def write(self, params: dict[str, Any]) -> dict[str, Any]:
        """``DataService.Write``: ``{responses: None}`` if all succeed, else only the failures."""
        errors = []
        requests = self._requests(params)
        if params.get("mkts_atomic") is True and len(requests) > 1:
            # mktsframe's write_many over several datasets (buckets of different columns): one
            # commit for all of them, or nothing (MarketStore's clients never send the flag).
            try:
                planned = [item for i, req in enumerate(requests) for item in self._plan_write(i, req)]
                self._commit_write(planned)
            except (MktsError, ValueError, TypeError, KeyError, OverflowError) as exc:
                errors.append(self._fail(exc))
            return {"responses": errors or None}
        for i, req in enumerate(requests):
            try:
                self._commit_write(self._plan_write(i, req))
            except (MktsError, ValueError, TypeError, KeyError, OverflowError) as exc:
                errors.append(self._fail(exc))
        return {"responses": errors or None}

    def _commit_write(self, planned: list[tuple[str, Batch, bool]]) -> None:
        """Store what :meth:`_plan_write` checked: several keys as one commit, all or nothing."""
        if len(planned) == 1:
            (key, batch, ticks), = planned
            self.backend.write(key, batch, variable_length=ticks)
        elif planned:  # ``ticks`` only matters for buckets the write creates, where it is the request's flag
            self.backend.write_many([(key, batch) for key, batch, _ in planned],
                                    variable_length=any(t for _, _, t in planned))  # fmt: skip

    def _plan_write(self, i: int, req: Mapping[str, Any]) -> list[tuple[str, Batch, bool]]:
        """One WriteRequest. ``is_variable_length`` (MarketStore's flag) makes a missing bucket a tick
        bucket and, as there, takes the ``Nanoseconds`` column as the sub-second part of each row's
        time; into an existing tick bucket ``Nanoseconds`` is always read that way. mktsframe's
        ``mkts_index_ns`` (int64 ns, one per row) gives the exact times directly."""
        variable = req.get("is_variable_length") or False
        if not isinstance(variable, bool):
            raise _param_error(f"is_variable_length must be a boolean, got {_brief(variable)}")
        ds = nmds.decode(req.get("dataset"), what=f"requests[{i}].dataset")
        if "Epoch" not in ds.columns:
            raise SchemaMismatchError(f"requests[{i}].dataset has no Epoch column (int64 epoch seconds)")
        exact = _index_ns(req.get("mkts_index_ns"), ds.length)
        # Validate every key of the request before writing any, so a bad one writes nothing.
        planned: list[tuple[str, Batch, bool]] = []
        for raw_key in ds.slices:
            key = parse_key(raw_key).item_key
            batch, _ = ds.batch(raw_key)
            found = self._kinds.get(key)
            ticks = variable if found is None else found.variable
            if variable or ticks:
                batch = _fold_nanoseconds(batch)
            if exact is not None:
                first, count = ds.slices[raw_key]
                batch = Batch(exact[first : first + count], batch.columns)
            if found is None:
                if not self.config.enable_add:
                    raise MktsError(f"cannot create bucket {key!r}: enable_add is false on this server")
            else:
                batch = _conform(key, batch, found.dtypes)
            planned.append((key, batch, ticks))
        return planned

    # -- Create / Destroy -----------------------------------------------------------------------
    def create(self, params: dict[str, Any]) -> dict[str, Any]:
        """``DataService.Create``: one ``{error, version}`` per request (error ``""`` = created)."""
        out = []
        for req in self._requests(params):
            try:
                self._create_one(req)
                out.append(self._ok())
            except (MktsError, ValueError, TypeError, KeyError) as exc:
                out.append(self._fail(exc))
        return {"responses": out}

    def _create_one(self, req: Mapping[str, Any]) -> None:
        key = req.get("key")
        if not isinstance(key, str):
            raise _param_error(f"key must be a string like 'AAPL/1Min/OHLCV', got {_brief(key)}")
        k = parse_key(key).item_key
        row_type = req.get("row_type") or "fixed"
        if row_type not in ("fixed", "variable"):
            raise _param_error(f"row_type must be 'fixed' or 'variable', got {_brief(row_type)}")
        # MarketStore's msgpack server reads is_variable_length; pymarketstore sends row_type: honour both
        variable = bool(req.get("is_variable_length")) or row_type == "variable"
        names = req.get("column_names") or []
        types = req.get("column_types") or []
        if not isinstance(names, list) or not isinstance(types, list) or len(names) != len(types):
            raise _param_error("column_names and column_types must be lists of the same length")
        columns = []
        for name, tstr in zip(names, types, strict=True):
            try:
                wt = nmds.wire_type_of(tstr)
            except SchemaMismatchError:
                raise SchemaMismatchError(f"unexpected data type:{_brief(tstr)}") from None
            if name == "Epoch":
                if wt != "i8":
                    raise SchemaMismatchError(f"unexpected data type for Epoch column: {tstr!r} (must be i8)")
                continue
            if name == "Nanoseconds" and variable:  # part of each tick's time, not a stored column
                if wt[0] not in "iu":
                    raise SchemaMismatchError(f"unexpected data type for Nanoseconds column: {tstr!r} (an integer "
                                              "type: i4 as MarketStore, or any other)")  # fmt: skip
                continue
            columns.append((name, wt))
        if not self.config.enable_add:
            raise MktsError(f"cannot create bucket {k!r}: enable_add is false on this server")
        with self._ddl_lock:
            if not req.get("mkts_exist_ok") and self._kinds.get(k) is not None:
                raise BucketExistsError(f"creation of new catalog entry failed: bucket {k!r} already exists")
            self.backend.create(k, columns, variable_length=variable)

    def destroy(self, params: dict[str, Any]) -> dict[str, Any]:
        """``DataService.Destroy``: one ``{error, version}`` per request; a missing key is an error."""
        out = []
        for req in self._requests(params):
            try:
                if not self.config.enable_remove:
                    raise ReadOnlyError("destroying buckets is disabled on this server (enable_remove: false)")
                key = req.get("key")
                if not isinstance(key, str):
                    raise _param_error(f"key must be a string like 'AAPL/1Min/OHLCV', got {_brief(key)}")
                with self._ddl_lock:
                    self.backend.destroy(parse_key(key).item_key)
                out.append(self._ok())
            except (MktsError, ValueError, TypeError, KeyError) as exc:
                out.append(self._fail(exc))
        return {"responses": out}

    def delete(self, params: dict[str, Any]) -> dict[str, Any]:
        """``DataService.Delete`` (mktsframe): remove rows of a key in ``[start, end]``, inclusive.

        Params ``{requests: [{key, epoch_start?, epoch_start_nanos?, epoch_end?, epoch_end_nanos?,
        mkts_start?, mkts_end?}]}``; reply ``{responses: [{deleted: rows, error, version}]}``.
        """
        out = []
        for req in self._requests(params):
            try:
                key = req.get("key")
                if not isinstance(key, str):
                    raise _param_error(f"key must be a string like 'AAPL/1Min/OHLCV', got {_brief(key)}")
                n = self.backend.delete(
                    parse_key(key).item_key, start=_ts(self._time(req, "start")), end=_ts(self._time(req, "end"))
                )
                out.append({"deleted": int(n), **self._ok()})
            except (MktsError, ValueError, TypeError, KeyError) as exc:
                out.append({"deleted": 0, **self._fail(exc)})
        return {"responses": out}

    # -- ListSymbols / GetInfo ------------------------------------------------------------------
    def list_symbols(self, params: dict[str, Any]) -> dict[str, Any]:
        """``DataService.ListSymbols``: ``{Results: [...]}`` (capital R, as MarketStore)."""
        self._require_queryable()
        fmt = params.get("format")
        results = self.backend.list_keys() if fmt == "tbk" else self.backend.list_symbols()
        return {"Results": results}

    def get_info(self, params: dict[str, Any]) -> dict[str, Any]:
        """``DataService.GetInfo``: MarketStore's fields plus ``mkts`` (the full BucketInfo)."""
        self._require_queryable()
        out = []
        for req in self._requests(params):
            try:
                key = req.get("key")
                if not isinstance(key, str):
                    raise _param_error(f"key must be a string like 'AAPL/1Min/OHLCV', got {_brief(key)}")
                info = self.backend.info(parse_key(key).item_key)
                out.append({
                    "LatestYear": max(info.years) if info.years else 0,
                    "TimeFrame": info.timeframe_seconds * NS,
                    "DSV": [{"Name": "Epoch", "Type": 3}]
                    + [{"Name": n, "Type": _TYPE_CODES.get(t, -1)} for n, t in info.columns],
                    "RecordType": 1 if info.record_type == "variable" else 0,
                    "ServerResp": self._ok(),
                    "mkts": {
                        "key": info.key,
                        "timeframe": info.timeframe,
                        "timeframe_seconds": info.timeframe_seconds,
                        "record_type": info.record_type,
                        "columns": [[n, t] for n, t in info.columns],
                        "years": list(info.years),
                        "rows": info.rows,
                        "first": info.first,
                        "last": info.last,
                        "disk_bytes": info.disk_bytes,
                    },
                })
            except (MktsError, ValueError, TypeError, KeyError) as exc:
                out.append({"LatestYear": 0, "TimeFrame": 0, "DSV": [], "RecordType": 0, "ServerResp": self._fail(exc)})
        return {"responses": out}

    def heartbeat(self) -> dict[str, Any]:
        """``/heartbeat`` body (MarketStore's fields)."""
        up = int(time.monotonic() - self.started)
        return {
            "status": "queryable" if self.queryable else "not queryable",
            "version": self.version,
            "git_hash": self.version,
            "uptime": f"{up // 3600}h{up // 60 % 60}m{up % 60}s",
            "timezone": self.config.timezone,
        }


def sql_batch(frame: pd.DataFrame) -> Batch:
    """A SQL result frame as a :class:`Batch` the wire can carry.

    The ``Epoch`` index becomes the time (rows without one get the current second); times with a
    sub-second part travel as tick results do, ``Epoch`` seconds plus a trailing ``Nanoseconds``
    column, so nothing is rounded away. Timestamp columns become int64 ns, nullable integers
    float64 (NA → NaN), text ``U16``. Text longer than 16 characters and duplicate column names
    are refused rather than silently changed.
    """
    n = len(frame)
    if isinstance(frame.index, pd.DatetimeIndex):
        index = frame.index.as_unit("ns").asi8
    else:
        index = np.full(n, time.time_ns() // NS * NS, np.int64)
    names = [str(c) for c in frame.columns]
    if len(set(names)) != len(names):
        raise SQLError(f"the result has duplicate column names {names}; name them with AS")
    columns: dict[str, np.ndarray] = {}
    for i, name in enumerate(names):
        s = frame.iloc[:, i]
        dtype = s.dtype
        if pd.api.types.is_datetime64_any_dtype(dtype):
            values = s.dt.tz_localize(None).to_numpy("M8[ns]").view(np.int64) if getattr(dtype, "tz", None) \
                else s.to_numpy("M8[ns]").view(np.int64)
        elif isinstance(dtype, np.dtype) and dtype.kind in "iufb":
            values = s.to_numpy()
        elif pd.api.types.is_bool_dtype(dtype) and not s.isna().any():
            values = s.to_numpy(bool)
        elif pd.api.types.is_numeric_dtype(dtype):
            values = s.to_numpy(np.float64, na_value=np.nan)
        else:
            text = s.astype(str).to_numpy(dtype=object) if n else np.empty(0, object)
            if n and max(len(t) for t in text) > 16:
                raise SQLError(f"column {name!r} holds text longer than 16 characters (the wire carries U16)")
            values = text.astype("U16") if n else np.empty(0, "U16")
        columns[name] = values
    index = np.ascontiguousarray(index, np.int64)
    sub_second = bool(np.any(index % NS))
    if sub_second and "Nanoseconds" in columns:
        raise SQLError("the result's times have a sub-second part, sent as a Nanoseconds column: rename yours with AS")
    return Batch(index, columns, variable_length=sub_second)


def _conform(key: str, batch: Batch, schema: Mapping[str, np.dtype]) -> Batch:
    """Check a write against an existing bucket exactly as the engine will, before writing."""
    if set(batch.columns) != set(schema):
        raise SchemaMismatchError(
            f"unable to match data columns {list(batch.columns)} to bucket columns {list(schema)} for {key!r}"
        )
    wire = {n: _wire_name(dt) for n, dt in schema.items()}
    return Batch(batch.index, {n: coerce_column(n, batch.columns[n], wire[n]) for n in schema})


def _fold_nanoseconds(batch: Batch) -> Batch:
    """Add a ``Nanoseconds`` column (any integer type, 0 ≤ n < 10⁹) to the index and drop it from the columns."""
    nanos = batch.columns.get("Nanoseconds")
    if nanos is None:
        return batch
    cols = {n: v for n, v in batch.columns.items() if n != "Nanoseconds"}
    return Batch(batch.index + nanoseconds_part(nanos), cols)


def _index_ns(value: object, length: int) -> np.ndarray | None:
    """mktsframe's ``mkts_index_ns``: int64 nanoseconds (little-endian bytes), one per row."""
    if value is None:
        return None
    if not isinstance(value, (bytes, bytearray, memoryview)) or len(value) != 8 * length:
        raise _param_error(f"mkts_index_ns must be {length} little-endian int64 values (binary)")
    return np.frombuffer(value, "<i8").astype(np.int64)


def _wire_name(dt: np.dtype) -> str:
    for name, d in WIRE_TYPES.items():
        if d == dt:
            return name
    raise SchemaMismatchError(f"bucket column type {dt} has no wire type")


def _ts(ns: int | None) -> np.datetime64 | None:
    """ns → a value :func:`mktsframe.times.to_ns` reads exactly (bare ints would be ambiguous)."""
    return None if ns is None else np.datetime64(ns, "ns")


def _plain_id(v: object) -> bool:
    return v is None or (isinstance(v, (str, int, float)) and not isinstance(v, bool) and len(str(v)) <= 256)


def _brief(v: object, limit: int = 300) -> str:
    text = v if isinstance(v, str) else str(v) if isinstance(v, BaseException) else repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
                    raise _param_error("dataset.data must be base64 strings in JSON requests") from None
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

    def __init__(self, parts: list[Any]) -> None:
        self._parts = parts
        self.nbytes = sum(_nbytes(p) for p in parts)

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


def request_error(message: str, code: int, as_json: bool) -> bytes:
    """An error reply for a request that could not even be read (id unknown)."""
    return bytes(encode(_error_reply(code, message, None, None), as_json))
