"""The server's operations, once, for every transport: requests in, results or typed errors out.

:class:`Service` holds MarketStore's methods (Query, Write, Create, Destroy, ListSymbols, GetInfo)
and mktsframe's Delete over one :class:`~mktsframe.backend.base.Backend`, with every check a
client must not get around in this one place: ``queryable``, a read-only server, ``enable_add`` /
``enable_remove``, key validation and the limits on how much work one call may ask for. The
transports are thin codecs beside it: :mod:`~mktsframe.server.rpc` (msgpack/JSON-RPC over HTTP
``/rpc``) and :mod:`~mktsframe.server.grpc_api` (protobuf over gRPC). Each decodes its wire into
the same plain request maps (MarketStore's msgpack field names: ``destination``, ``epoch_start``,
``dataset``... see ``docs/server.md``), calls :meth:`Service.call` and encodes what comes back.

Errors come in two sizes, as on MarketStore's wire:

* a failure of the whole call raises: :class:`CallError` (with a transport-neutral
  :class:`Status`) or a mktsframe error (:func:`status_of` gives its status). HTTP turns it into
  a JSON-RPC error object, gRPC into a status code, both with the same message;
* a failure of one request among several (Write, Create, Destroy, Delete, GetInfo) is reported
  in that request's response ``{"error": text, "mkts_error": class name}``; the others proceed.

An operation refused by the server's configuration (read-only, ``enable_add: false`` for Create,
``enable_remove: false`` for Destroy) refuses the whole call with :attr:`Status.PERMISSION_DENIED`.

Each call carries a :class:`CallContext` (transport, caller, deadline, role): :meth:`Service.call`
refuses an operation the caller's :class:`~.auth.Role` does not allow (``_NEEDS``) before any work,
for every transport; the transports only authenticate (:mod:`~.auth`) and fill the context.
"""

from __future__ import annotations

import enum
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mktsframe.backend import nmds
from mktsframe.backend.base import Backend, Batch, Stacked, capabilities, write_stacked
from mktsframe.backend.bucket_kinds import BucketKinds
from mktsframe.changes import CommitEvent
from mktsframe.config import Config
from mktsframe.dtypes import WIRE_TYPES, coerce_column, nanoseconds_part
from mktsframe.errors import (
    BucketExistsError,
    BucketNotFoundError,
    FunctionError,
    InvalidKeyError,
    LockedError,
    MktsError,
    ReadOnlyError,
    SchemaMismatchError,
    SQLError,
)
from mktsframe.functions import Call, apply_functions, parse_functions, parse_window
from mktsframe.functions.resample import read_candles
from mktsframe.keys import CATEGORY, parse_key
from mktsframe.server.auth import Role
from mktsframe.server.reads import GuardedReads
from mktsframe.stacking import code_dtype, unstack
from mktsframe.times import to_ns

__all__ = ["MAX_REQUESTS", "MAX_SQL_CHARS", "CallContext", "CallError", "Role", "Service", "Status", "brief",
           "kind_of", "message_of", "status_of"]

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


class Status(enum.Enum):
    """Why a call failed, in gRPC's vocabulary (which every transport maps to its own codes)."""

    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    PERMISSION_DENIED = "permission_denied"
    UNAUTHENTICATED = "unauthenticated"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    UNAVAILABLE = "unavailable"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    UNIMPLEMENTED = "unimplemented"
    UNKNOWN = "unknown"
    INTERNAL = "internal"


class CallError(Exception):
    """The whole call refused, with its :class:`Status` and the mktsframe error class the caller
    should see (``kind``: HTTPBackend re-raises that class)."""

    def __init__(self, status: Status, message: str, kind: str = "ValueError") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind


def status_of(exc: BaseException) -> Status:
    """The :class:`Status` a call that raised ``exc`` ends with."""
    if isinstance(exc, CallError):
        return exc.status
    if isinstance(exc, BucketNotFoundError):
        return Status.NOT_FOUND
    if isinstance(exc, BucketExistsError):
        return Status.ALREADY_EXISTS
    if isinstance(exc, ReadOnlyError):
        return Status.PERMISSION_DENIED
    if isinstance(exc, LockedError):
        return Status.UNAVAILABLE
    if isinstance(exc, (ValueError, TypeError, KeyError, OverflowError, RecursionError)):
        return Status.INVALID_ARGUMENT  # includes InvalidKey, SchemaMismatch, Function and SQL errors
    if isinstance(exc, MktsError):
        return Status.UNKNOWN
    return Status.INTERNAL


def kind_of(exc: BaseException) -> str:
    """The error class name a client re-raises (``ValueError`` for plain Python errors)."""
    if isinstance(exc, CallError):
        return exc.kind
    return type(exc).__name__ if isinstance(exc, MktsError) else "ValueError"


def message_of(exc: BaseException) -> str:
    """The text a failed call reports, the same on every transport."""
    if isinstance(exc, CallError):
        return exc.message
    return str(exc) if isinstance(exc, MktsError) else brief(exc)


@dataclass(frozen=True)
class CallContext:
    """Who calls and until when: what a transport knows about a call beyond its request.

    ``deadline`` is a :func:`time.monotonic` value in seconds (``None``: no deadline); a call whose
    deadline has passed is refused before any work. ``caller`` is the peer as the transport names
    it (``"127.0.0.1:51234"``, ``"ipv4:127.0.0.1:51234"``); no check uses it yet. ``role`` is what
    the caller's token allows (:class:`~.auth.Role`; everything on a server without ``auth``),
    ``user`` the token's name (for messages; never the token).
    """

    transport: str = "local"
    caller: str = ""
    deadline: float | None = None
    role: Role = Role.ADMIN
    user: str = ""


#: The context of calls made in-process (tests, tools).
LOCAL = CallContext()


def _param_error(message: str) -> CallError:
    return CallError(Status.INVALID_ARGUMENT, message)


def _denied(message: str) -> CallError:
    return CallError(Status.PERMISSION_DENIED, message, "ReadOnlyError")


#: The role each operation needs (``/ws`` subscriptions need READ, which every token has).
_NEEDS = {"DataService.Query": Role.READ, "DataService.ListSymbols": Role.READ, "DataService.GetInfo": Role.READ,
          "DataService.Write": Role.WRITE, "DataService.Create": Role.WRITE, "DataService.Delete": Role.WRITE,
          "DataService.Destroy": Role.ADMIN}  # fmt: skip


def forbidden(ctx: CallContext, what: str, needs: Role) -> CallError:
    """The refusal of ``what`` to a caller whose role is below ``needs`` (HTTP 403, gRPC PERMISSION_DENIED)."""
    who = f"token {ctx.user!r}" if ctx.user else "this caller"
    has = ctx.role.name.lower()
    return CallError(Status.PERMISSION_DENIED, f"permission denied: {what} needs the {needs.name.lower()} role; "
                     f"{who} has {has}", "AccessDeniedError")  # fmt: skip


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




class Service:
    """The method table over one backend, with ``mkts.yml``'s switches applied.

    Parameters
    ----------
    backend : Backend
        Usually the local engine of the server's root.
    config : Config
        ``queryable``, ``enable_add``, ``enable_remove`` and ``timezone`` are enforced here, and a
        read-only backend (``init_wal_cache: false``) refuses every change here, for every transport.
    version : str
        Reported in replies, the ``Marketstore-Version`` header and gRPC's ``ServerVersion``.
    """

    def __init__(self, backend: Backend, config: Config, version: str) -> None:
        self.backend = backend
        self.config = config
        self.version = version
        self.stopping = False
        self.started = time.monotonic()
        self.replica_of = ""
        """``HOST:PORT`` of the master when this server is a replica: every change is refused."""
        self.replication: Any = None
        """The running replication side (``status()`` for ``/heartbeat``), or ``None``."""
        self._methods: dict[str, Callable[[dict[str, Any]], Any]] = {
            "DataService.Query": self.query,
            "DataService.Write": self.write,
            "DataService.Create": self.create,
            "DataService.Destroy": self.destroy,
            "DataService.ListSymbols": self.list_symbols,
            "DataService.GetInfo": self.get_info,
            "DataService.Delete": self.delete,
        }
        self._changes = {"DataService.Write", "DataService.Create", "DataService.Destroy", "DataService.Delete"}
        self._ddl_lock = threading.Lock()  # create/destroy checks and actions as one step
        # Bucket kinds are cached only where creates and destroys are heard (the local engine).
        on_commit = backend.on_commit if capabilities(backend).commit_listeners else None  # type: ignore[attr-defined]
        self.kinds = BucketKinds(lambda key: backend.query(key, limit=0), cache=on_commit is not None)
        if on_commit is not None:  # creates and destroys alone: writes then build no events for it
            on_commit(self._heard, catalog_only=True)
        self._hears_catalog = on_commit is not None
        self._catalog_changes = 0  # creates and destroys heard: what a remembered key list depends on
        self._stacked_keys: tuple[tuple[str, ...], int, tuple[str, ...], Mapping[str, np.dtype]] | None = None
        """The last key list :meth:`_plan_stacked` accepted: ``(keys as sent, catalog changes,
        bucket keys, schema)``. A live feed sends the same universe every minute, and looking up
        5,000 keys is ~20 ms; kept only where creates and destroys are heard."""

    @property
    def queryable(self) -> bool:
        return self.config.queryable and not self.stopping

    @property
    def read_only(self) -> bool:
        return bool(getattr(self.backend, "read_only", False))

    def call(self, method: str, params: dict[str, Any], ctx: CallContext = LOCAL) -> Any:
        """Run ``method`` (``"DataService.Query"``...) on a request map; the transport-neutral entry.

        Raises :class:`CallError` (or a mktsframe error) when the whole call fails; see the module
        docstring for which failures are reported per request instead.
        """
        fn = self._methods.get(method)
        if fn is None:
            raise CallError(Status.UNIMPLEMENTED, f"rpc: can't find method {method[:100]!r}", "MktsError")
        needs = _NEEDS.get(method, Role.ADMIN)
        if ctx.role < needs:
            raise forbidden(ctx, method, needs)
        if ctx.deadline is not None and time.monotonic() >= ctx.deadline:
            raise CallError(Status.DEADLINE_EXCEEDED, f"{method}: the caller's deadline passed before it ran",
                            "MktsError")
        if method in self._changes:
            self._require_writable()
        if method == "DataService.Query":
            return self.query(params, ctx)
        return fn(params)

    def _require_writable(self) -> None:
        if self.replica_of:
            raise _denied(f"this server is a read-only replica of {self.replica_of}: write to the master instead")
        if self.read_only:
            raise _denied("the server is read-only (init_wal_cache: false): no writes, creates or deletes")

    # -- helpers --------------------------------------------------------------------------------
    def _require_queryable(self) -> None:
        if not self.queryable:
            raise CallError(Status.UNAVAILABLE, _NOT_QUERYABLE, "MktsError")

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
                raise _param_error(f"{label} must be an integer, got {brief(v)}")
        ns = secs * NS + nanos
        if which == "start":
            return None if ns <= _I64[0] else min(ns, _I64[1])
        return None if ns >= _I64[1] else max(ns, _I64[0])

    def _heard(self, event: CommitEvent) -> None:  # a commit listener: the writer's thread
        if event.op in ("create", "destroy"):
            self._catalog_changes += 1
            self.kinds.forget(event.key)

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
        return {"error": brief(exc, 2000), "version": self.version, "mkts_error": kind_of(exc)}

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
                f"destinations must have a Symbol, Timeframe and AttributeGroup, have: {brief(dest, 200)}"
            )
        cat = req.get("key_category")
        if cat not in (None, "", CATEGORY):
            raise _param_error(f"unsupported key_category {brief(cat)} (only {CATEGORY!r})")
        if ":" not in dest and cat:
            dest = f"{dest}:{cat}"
        functions = parse_functions(req.get("functions") or [])  # bad calls fail before any data is read
        limit = req.get("limit_record_count")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
            raise _param_error(f"limit_record_count must be a non-negative integer, got {brief(limit)}")
        from_start = req.get("limit_from_start", False)
        if from_start is None:
            from_start = False
        if not isinstance(from_start, bool):
            raise _param_error(f"limit_from_start must be a boolean, got {brief(from_start)}")
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

    def query(self, params: dict[str, Any], ctx: CallContext = LOCAL) -> dict[str, Any]:
        """``DataService.Query``: one response per request; any failure fails the whole call.

        Everything the call reads goes through one :class:`GuardedReads` (at most ``max_reply_rows``
        rows in all, SQL ``INSERT`` only for the write role), so no request can make the server
        materialise more than that, whichever path (plain, columns, candles, SQL) it takes."""
        self._require_queryable()
        specs = [self._parse_query(i, r) for i, r in enumerate(self._requests(params))]
        reads = GuardedReads(self.backend, self.config.max_reply_rows, ctx)
        responses = [self._run_query(spec, reads) for spec in specs]
        return {"responses": responses, "version": self.version, "timezone": self.config.timezone}

    def _fetch(self, spec: _QuerySpec, key: str, columns: list[str] | None, reads: Backend) -> dict[str, Batch]:
        return reads.query(
            key,
            start=_ts(spec.start),
            end=_ts(spec.end),
            columns=columns,
            limit=spec.limit,
            limit_from_start=spec.from_start,
        )

    def _run_sql(self, stmt: str, reads: Backend) -> dict[str, Any]:
        """An ``is_sqlstatement`` request: the rows in the usual NMDS, keyed ``<statement>:SQL``.

        As in MarketStore the key is the statement text (pymarketstore keeps the part before the
        first ``:``), and results without a time column are stamped ``Epoch`` = now.
        """
        from mktsframe.sql import execute

        if re.match(r"\s*insert\b", stmt, re.IGNORECASE):
            self._require_writable()
            if not self.config.enable_add:
                raise ReadOnlyError("INSERT INTO is disabled on this server (enable_add: false)")
        frame = execute(stmt, reads)
        batch = sql_batch(frame)
        ds = nmds.encode([(stmt, batch)], key_suffix=":SQL")
        if batch.variable_length:
            ds["mkts_variable"] = True  # as for tick queries: HTTPBackend folds Nanoseconds back
        return {"result": ds}

    def _run_query(self, spec: _QuerySpec, reads: GuardedReads) -> dict[str, Any]:
        if spec.sql is not None:
            return self._run_sql(spec.sql, reads)
        if not spec.functions and (spec.columns is None or spec.native) and None not in (spec.start, spec.end):
            # A universe read (one timeframe and schema, a bounded range) straight from the grid:
            # one set of arrays to encode instead of a Batch per bucket (5,000 for a cross-section).
            grid = reads.query_grid(spec.destination, start=_ts(spec.start), end=_ts(spec.end),
                                    columns=spec.columns, limit=spec.limit)  # fmt: skip
            if grid is not None:
                return {"result": nmds.encode_stacked(grid)}
        try:
            results = self._select(spec, reads)
        except (BucketNotFoundError, InvalidKeyError) as missing:
            if spec.native:
                raise  # HTTPBackend must see exactly what the local engine does
            results = self._candles_instead(spec, missing, reads)
        if spec.functions:
            # MarketStore runs the chain per bucket on the rows the query selected (after limit).
            results = {key: apply_functions(batch, spec.functions) for key, batch in results.items()}
        return self._respond(spec, results)

    def _candles_instead(self, spec: _QuerySpec, missing: MktsError, reads: Backend) -> dict[str, Batch]:
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
            results = read_candles(reads, spec.destination, tf, start=_ts(spec.start), end=_ts(spec.end),
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

    def _select(self, spec: _QuerySpec, reads: Backend) -> dict[str, Batch]:
        if spec.columns is None or spec.native:
            results = self._fetch(spec, spec.destination, spec.columns, reads)
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
                results = self._fetch(spec, spec.destination, next(iter(wanted.values())), reads)
            else:
                results = {}
                for key, cols in wanted.items():
                    results.update(self._fetch(spec, key, cols, reads))
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
                planned = [item for i, req in enumerate(requests) for item in _items(self._plan_write(i, req))]
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

    def _commit_write(self, planned: list[tuple[str, Batch, bool]] | Stacked) -> None:
        """Store what :meth:`_plan_write` checked: several keys as one commit, all or nothing."""
        if isinstance(planned, Stacked):
            write_stacked(self.backend, planned)
        elif len(planned) == 1:
            (key, batch, ticks), = planned
            self.backend.write(key, batch, variable_length=ticks)
        elif planned:  # ``ticks`` only matters for buckets the write creates, where it is the request's flag
            self.backend.write_many([(key, batch) for key, batch, _ in planned],
                                    variable_length=any(t for _, _, t in planned))  # fmt: skip

    def _plan_write(self, i: int, req: Mapping[str, Any]) -> list[tuple[str, Batch, bool]] | Stacked:
        """One WriteRequest. ``is_variable_length`` (MarketStore's flag) makes a missing bucket a tick
        bucket and, as there, takes the ``Nanoseconds`` column as the sub-second part of each row's
        time; into an existing tick bucket ``Nanoseconds`` is always read that way. mktsframe's
        ``mkts_index_ns`` (int64 ns, one per row) gives the exact times directly."""
        variable = req.get("is_variable_length") or False
        if not isinstance(variable, bool):
            raise _param_error(f"is_variable_length must be a boolean, got {brief(variable)}")
        ds = nmds.decode(req.get("dataset"), what=f"requests[{i}].dataset")
        if "Epoch" not in ds.columns:
            raise SchemaMismatchError(f"requests[{i}].dataset has no Epoch column (int64 epoch seconds)")
        exact = _index_ns(req.get("mkts_index_ns"), ds.length)
        stacked = None if variable else self._plan_stacked(ds, exact)
        if stacked is not None:
            return stacked
        # Validate every key of the request before writing any, so a bad one writes nothing.
        planned: list[tuple[str, Batch, bool]] = []
        for raw_key in ds.slices:
            key = parse_key(raw_key).item_key
            batch, _ = ds.batch(raw_key)
            found = self.kinds.get(key)
            ticks = variable if found is None else found.variable
            if variable or ticks:
                batch = _fold_nanoseconds(batch)
            if exact is not None:
                first, count = ds.slices[raw_key]
                batch = Batch(exact[first : first + count], batch.columns)
            if found is None:
                if not self.config.enable_add:
                    raise ReadOnlyError(f"cannot create bucket {key!r}: enable_add is false on this server")
            else:
                batch = _conform(key, batch, found.dtypes)
            planned.append((key, batch, ticks))
        return planned

    def _plan_stacked(self, ds: nmds.DecodedDataset, exact: np.ndarray | None) -> Stacked | None:
        """A dataset of many existing fixed buckets of one schema, each key's rows after the
        previous key's (how mktsframe's clients send a universe), as one :class:`Stacked`: checked
        and converted once for all keys, stored with one ``write_stacked`` (a minute of 5,000
        symbols is 5,000 batches otherwise). ``None`` where the per-key plan is needed: a bucket
        to create, a tick bucket, mixed schemas, keys out of row order, a backend without it."""
        if len(ds.slices) < 2 or not capabilities(self.backend).stacked_write:
            return None
        spans = np.array(list(ds.slices.values()), np.int64).reshape(-1, 2)
        counts = spans[:, 1]
        if int(counts.sum()) != ds.length or (spans[:, 0] != np.cumsum(counts) - counts).any():
            return None  # keys' rows not one after the other
        sent = tuple(ds.slices)
        changes = self._catalog_changes  # read first: a change while we look makes the entry stale
        hit = self._stacked_keys
        if hit is not None and hit[0] == sent and hit[1] == changes:
            keys, schema = hit[2], hit[3]
        else:
            looked = self._stacked_schema(sent)
            if looked is None:
                return None
            keys, schema = looked
            if self._hears_catalog:
                self._stacked_keys = (sent, changes, keys, schema)
        batch, _ = ds.rows(slice(0, ds.length), "the dataset")
        if exact is not None:
            batch = Batch(exact, batch.columns)
        batch = _conform(f"{keys[0]} and {len(keys) - 1} more", batch, schema)
        which = np.repeat(np.arange(len(keys), dtype=code_dtype(len(keys))), counts)
        return Stacked(keys, batch.index, batch.columns, which)

    def _stacked_schema(self, sent: tuple[str, ...]) -> tuple[tuple[str, ...], Mapping[str, np.dtype]] | None:
        """``(bucket keys, their one schema)`` for keys as sent, if each names a distinct existing
        fixed bucket and all share one schema, else ``None``."""
        keys: list[str] = []
        schema: Mapping[str, np.dtype] | None = None
        for raw_key in sent:
            key = parse_key(raw_key).item_key
            found = self.kinds.get(key)
            if found is None or found.variable or (schema is not None and found.dtypes != schema):
                return None
            schema = found.dtypes
            keys.append(key)
        if schema is None or len(set(keys)) != len(keys):
            return None
        return tuple(keys), schema

    # -- Create / Destroy -----------------------------------------------------------------------
    def create(self, params: dict[str, Any]) -> dict[str, Any]:
        """``DataService.Create``: one ``{error, version}`` per request (error ``""`` = created)."""
        if not self.config.enable_add:
            raise _denied("creating buckets is disabled on this server (enable_add is false)")
        return self._each(params, self._create_one)

    def _create_one(self, req: Mapping[str, Any]) -> None:
        k = _key(req)
        row_type = req.get("row_type") or "fixed"
        if row_type not in ("fixed", "variable"):
            raise _param_error(f"row_type must be 'fixed' or 'variable', got {brief(row_type)}")
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
                raise SchemaMismatchError(f"unexpected data type:{brief(tstr)}") from None
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
        with self._ddl_lock:
            if not req.get("mkts_exist_ok") and self.kinds.get(k) is not None:
                raise BucketExistsError(f"creation of new catalog entry failed: bucket {k!r} already exists")
            self.backend.create(k, columns, variable_length=variable)

    def destroy(self, params: dict[str, Any]) -> dict[str, Any]:
        """``DataService.Destroy``: one ``{error, version}`` per request; a missing key is an error."""
        if not self.config.enable_remove:
            raise _denied("destroying buckets is disabled on this server (enable_remove: false)")
        def destroy_one(req: Mapping[str, Any]) -> None:
            with self._ddl_lock:
                self.backend.destroy(_key(req))

        return self._each(params, destroy_one)

    def delete(self, params: dict[str, Any]) -> dict[str, Any]:
        """``DataService.Delete`` (mktsframe): remove rows of a key in ``[start, end]``, inclusive.

        Params ``{requests: [{key, epoch_start?, epoch_start_nanos?, epoch_end?, epoch_end_nanos?,
        mkts_start?, mkts_end?}]}``; reply ``{responses: [{deleted: rows, error, version}]}``.
        """
        def delete_one(req: Mapping[str, Any]) -> dict[str, Any]:
            start, end = _ts(self._time(req, "start")), _ts(self._time(req, "end"))
            return {"deleted": int(self.backend.delete(_key(req), start=start, end=end))}

        return self._each(params, delete_one, failed={"deleted": 0})

    def _each(self, params: Mapping[str, Any], one: Callable[[Mapping[str, Any]], dict[str, Any] | None],
              failed: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``one`` per request, each answered ``{..., error, version}``: a request that fails is
        answered with its error (and ``failed``'s fields) and the others still run."""
        out = []
        for req in self._requests(params):
            try:
                out.append({**(one(req) or {}), **self._ok()})
            except (MktsError, ValueError, TypeError, KeyError) as exc:
                out.append({**(failed or {}), **self._fail(exc)})
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
                info = self.backend.info(_key(req))
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
            **({"replication": self.replication.status()} if self.replication is not None else {}),
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


def _items(plan: list[tuple[str, Batch, bool]] | Stacked) -> list[tuple[str, Batch, bool]]:
    """A write plan as ``(key, batch, ticks)`` items (a :class:`Stacked` one is of fixed buckets)."""
    return [(k, b, False) for k, b in unstack(plan).items()] if isinstance(plan, Stacked) else plan


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


def _key(req: Mapping[str, Any]) -> str:
    """A request's ``key`` as an item key (validated: :class:`InvalidKeyError` names the problem)."""
    key = req.get("key")
    if not isinstance(key, str):
        raise _param_error(f"key must be a string like 'AAPL/1Min/OHLCV', got {brief(key)}")
    return parse_key(key).item_key


def _ts(ns: int | None) -> np.datetime64 | None:
    """ns → a value :func:`mktsframe.times.to_ns` reads exactly (bare ints would be ambiguous)."""
    return None if ns is None else np.datetime64(ns, "ns")


def brief(v: object, limit: int = 300) -> str:
    """``v`` as text of at most ``limit`` characters (error messages quote what they were sent)."""
    text = v if isinstance(v, str) else str(v) if isinstance(v, BaseException) else repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."

