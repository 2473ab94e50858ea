"""The network backend: the :class:`~mktsframe.backend.base.Backend` protocol over ``/rpc``.

It speaks MarketStore's msgpack JSON-RPC (the same wire pymarketstore uses), plus a few
mktsframe extensions (``mkts_*`` request keys and ``DataService.Delete``) so that every
operation behaves exactly as on the local engine. One :class:`~.http_pool.ConnectionPool` is kept
per backend, so connections are reused (keep-alive) by any number of threads; every call has a timeout.

Errors: a server-side mktsframe error comes back with its class name and is re-raised as the
same class (``BucketNotFoundError`` for a missing bucket, ``SchemaMismatchError``...); an
unreachable server raises :class:`~mktsframe.errors.MktsError` naming the URL.
"""

from __future__ import annotations

import base64
import os
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlparse, urlunparse

import msgpack
import numpy as np

from mktsframe import errors
from mktsframe.backend import nmds
from mktsframe.backend.base import Batch, BucketInfo, Capabilities, Stacked
from mktsframe.backend.http_pool import ConnectionPool
from mktsframe.backend.registry import BackendSpec
from mktsframe.errors import BucketNotFoundError, MktsError, SchemaMismatchError
from mktsframe.keys import CATEGORY
from mktsframe.stacking import bucket_major, stack, time_major
from mktsframe.streaming.feed import DEFAULT_MAX_ROWS, OverflowPolicy
from mktsframe.times import TimeLike, to_ns

if TYPE_CHECKING:
    from mktsframe.streaming.subscription import Subscription

__all__ = ["HTTPBackend", "Transport", "redact_url"]

NS = 1_000_000_000
_MSGPACK = "application/x-msgpack"
_ERRORS: dict[str, type[Exception]] = {
    name: getattr(errors, name) for name in errors.__all__
} | {"ValueError": ValueError, "TypeError": TypeError}


class Transport(Protocol):
    """Carries one msgpack request body to ``/rpc`` and brings back ``(HTTP status, reply body)``.

    Raises :class:`TimeoutError` or :class:`OSError` when the server cannot be reached.
    """

    def post(self, body: bytes) -> tuple[int, bytes]: ...

    def close(self) -> None: ...


def open_target(url: str, *, read_only: bool | None = None, **options: Any) -> HTTPBackend:
    """The registry's opener for ``http(s)://`` (see :mod:`.registry`). ``read_only`` is the
    server's business (its ``read_only`` setting and tokens): accepted and not used here."""
    return HTTPBackend(url, **options)


class HTTPBackend:
    """A mktsframe (or MarketStore) server at ``url``.

    Parameters
    ----------
    url : str
        ``http://host:port`` (``/rpc`` is appended when no path is given) or the full ``/rpc`` URL.
    timeout : float
        Seconds to wait for connecting and for each read/write on the socket (not the whole
        call): a large query that keeps streaming is not cut off, a dead server is.
    transport : Transport, optional
        What carries the request bodies (default: a keep-alive :class:`~.http_pool.ConnectionPool`
        to ``url``). Tests pass :class:`mktsframe.server.rpc.InProcess` to run a server's ``/rpc``
        in the same process, as httpx's tests use a mock transport.
    token : str, optional
        The access token of a server with ``auth`` (``mktsframe token add``), sent as ``Bearer`` on
        every call and stream. Default: ``$MKTS_TOKEN``, or the password of a
        ``http://NAME:TOKEN@host`` URL (sent as Basic, as pymarketstore does). Never shown in
        :attr:`url`, ``repr`` or error messages.
    ca_file : str, optional
        PEM file of the CA to trust for ``https://`` (default: the system's, or ``$SSL_CERT_FILE``).
    """

    #: Writes, deletes and streams as the server allows.
    capabilities = Capabilities(stacked_query=True, stacked_write=True)

    def __init__(self, url: str, *, timeout: float = 30.0, transport: Transport | None = None,
                 token: str | None = None, ca_file: str | os.PathLike[str] | None = None) -> None:
        parts = urlparse(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"expected an http:// or https:// URL with a host, got {redact_url(url)!r}")
        path = parts.path.rstrip("/") or "/rpc"
        netloc = parts.netloc.rpartition("@")[2]  # credentials go in a header, never in the URL kept
        self.url = urlunparse(parts._replace(netloc=netloc, path=path, query="", fragment=""))
        self.timeout = float(timeout)
        self._auth = _authorization(token, parts.username, parts.password)
        self._ssl = ssl.create_default_context(cafile=os.fspath(ca_file)) if ca_file is not None else None
        headers = {"Content-Type": _MSGPACK, "Accept": _MSGPACK}
        if self._auth:
            headers["Authorization"] = self._auth
        self._pool: Transport = transport if transport is not None else ConnectionPool(
            self.url, headers, self.timeout, context=self._ssl)
        self._closed = False

    def __repr__(self) -> str:
        return f"<HTTPBackend {self.url!r}>"

    @property
    def spec(self) -> BackendSpec:
        """The server's URL and timeout (a custom transport is not carried: it stays in this process)."""
        return BackendSpec(self.url, {"timeout": self.timeout})

    # -- transport ------------------------------------------------------------------------------
    def _call(self, method: str, params: dict[str, Any]) -> Any:
        if self._closed:
            raise MktsError(f"{self.url}: connection is closed")
        body = msgpack.packb({"jsonrpc": "2.0", "method": method, "id": "1", "params": params}, use_bin_type=True)
        try:
            status, content = self._pool.post(body)
        except TimeoutError as exc:
            raise MktsError(f"server at {self.url} did not answer within {self.timeout:g} s ({exc})") from None
        except OSError as exc:
            raise MktsError(f"cannot reach the mktsframe server at {self.url}: {exc or type(exc).__name__}") from None
        if status in (401, 403):
            raise errors.AccessDeniedError(f"{self.url}: {_message(content)}")
        if status != 200:
            raise MktsError(f"{self.url} answered HTTP {status}: {content[:300].decode('utf-8', 'replace')}")
        try:
            reply = msgpack.unpackb(content, raw=False)
        except ValueError as exc:
            raise MktsError(f"{self.url} sent a reply that is not msgpack ({exc})") from None
        if not isinstance(reply, dict):
            raise MktsError(f"{self.url} sent a malformed reply")
        err = reply.get("error")
        if err:
            raise _error(err.get("message", str(err)) if isinstance(err, dict) else str(err), err)
        if "result" not in reply:
            raise MktsError(f"{self.url}: invalid JSON-RPC reply (no result or error)")
        return reply["result"]

    def _each(self, method: str, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Call a per-request method and raise the first per-request error."""
        out = self._call(method, {"requests": requests}).get("responses") or []
        for r in out:
            status = r.get("ServerResp", r) if isinstance(r, dict) else {}
            if status.get("error"):
                raise _error(status["error"], status)
        return out

    # -- Backend --------------------------------------------------------------------------------
    def write(self, key: str, batch: Batch, *, variable_length: bool = False) -> None:
        """Store rows: index ns → wire ``Epoch`` seconds (floored), plus, for ticks, MarketStore's
        ``Nanoseconds`` column, and mktsframe's exact ``mkts_index_ns`` (so a mktsframe server keeps
        every nanosecond even when an existing tick bucket is written without the flag)."""
        self._send_writes([_write_request([(key, batch)], variable_length)])

    def write_many(
        self, items: Mapping[str, Batch] | Sequence[tuple[str, Batch]], *, variable_length: bool = False
    ) -> None:
        """Many buckets in one call: buckets with the same columns go in one ``DataService.Write``
        request (one dataset naming every key, as MarketStore's wire allows), which a mktsframe
        server stores with one log record and one sync, all or nothing. Buckets with other columns
        go in further requests of the same call, committed together too (``mkts_atomic``)."""
        pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
        by_schema: dict[tuple[Any, ...], list[tuple[str, Batch]]] = {}
        for key, batch in pairs:
            shape = tuple((n, np.asarray(v).dtype.str) for n, v in batch.columns.items())
            by_schema.setdefault(shape, []).append((key, batch))
        self._send_writes([_write_request(group, variable_length) for group in by_schema.values()])

    def write_stacked(self, stacked: Stacked, *, variable_length: bool = False) -> None:
        """:meth:`write_many` of the rows of ``stacked`` as one request over one set of arrays (the
        wire's layout: each key's rows after the previous key's), with no :class:`Batch` per bucket;
        the server stores it as one commit, all or nothing."""
        index, columns, counts = bucket_major(stacked)
        keep = counts > 0
        keys = [k for k, kept in zip(stacked.keys, keep.tolist(), strict=True) if kept]
        if not keys:
            return
        req = _write_request([(keys[0], Batch(index, columns))], variable_length or stacked.variable_length)
        nmds.with_key_rows(req["dataset"], keys, counts[keep], "")
        self._send_writes([req])

    def _send_writes(self, requests: list[dict[str, Any]]) -> None:
        """One ``DataService.Write``; with several requests, ``mkts_atomic`` asks a mktsframe server
        to commit them all at once or none (MarketStore applies each on its own)."""
        if not requests:
            return
        params: dict[str, Any] = {"requests": requests}
        if len(requests) > 1:
            params["mkts_atomic"] = True
        result = self._call("DataService.Write", params)
        for r in result.get("responses") or []:
            if r.get("error"):
                raise _error(r["error"], r)

    def query_stacked(
        self,
        key: str,
        *,
        start: TimeLike = None,
        end: TimeLike = None,
        columns: Sequence[str] | None = None,
        limit: int | None = None,
        limit_from_start: bool = False,
    ) -> Stacked:
        """:meth:`query` as one :class:`~mktsframe.records.Stacked`, built from the reply's one set of
        column buffers (the wire already holds the buckets' rows joined): no :class:`Batch` per
        bucket, which cost ~20 µs each, 100 ms for a 5,000-symbol cross-section."""
        kw: dict[str, Any] = {"start": start, "end": end, "columns": columns, "limit": limit,
                              "limit_from_start": limit_from_start}  # fmt: skip
        if limit == 0:
            return stack(self.query(key, **kw))
        response = self._query_response(key, start, end, columns, limit, limit_from_start)
        if "result" not in response:  # a dataset per schema: joining them fails as on the engine
            return stack(dict(self._found(response, limit)))
        got = _decode_joined(response["result"])
        return got if got is not None else stack(dict(self._found(response, limit)))

    def _query_response(
        self, key: str, start: TimeLike, end: TimeLike, columns: Sequence[str] | None, limit: int | None,
        limit_from_start: bool,
    ) -> dict[str, Any]:
        """The server's response to one native ``DataService.Query``."""
        if limit is not None and (not isinstance(limit, (int, np.integer)) or limit < 0):
            raise ValueError(f"limit must be a non-negative integer, got {limit!r}")
        req: dict[str, Any] = {"destination": key, "mkts_native": True, "limit_from_start": bool(limit_from_start)}
        req.update(_time_fields("start", start))
        req.update(_time_fields("end", end))
        if limit is not None:
            req["limit_record_count"] = max(int(limit), 1)  # limit 0 means "none" on the wire
        if columns is not None:
            req["columns"] = list(columns)
        result = self._call("DataService.Query", {"requests": [req]})
        (response,) = result["responses"]
        return response

    def _found(self, response: dict[str, Any], limit: int | None) -> list[tuple[str, Batch]]:
        """Each key's :class:`Batch` of a query response, in the order named."""
        datasets = response["results"] if "results" in response else [response["result"]]
        found: list[tuple[str, Batch]] = []
        for ds in datasets:  # one dataset, or one per schema when the buckets' schemas differ
            for k, b, _ in sorted(_decode(ds), key=lambda t: t[2]):
                found.append((k, b if limit != 0 else _head(b, 0)))
        order = {k: i for i, k in enumerate(response.get("mkts_order") or [])}
        if order:
            found.sort(key=lambda t: order.get(t[0], len(order)))
        return found

    def query(
        self,
        key: str,
        *,
        start: TimeLike = None,
        end: TimeLike = None,
        columns: Sequence[str] | None = None,
        limit: int | None = None,
        limit_from_start: bool = False,
    ) -> dict[str, Batch]:
        """Rows with ``start <= t <= end`` per bucket, in the order named (see the protocol)."""
        return dict(self._found(self._query_response(key, start, end, columns, limit, limit_from_start), limit))

    def list_symbols(self) -> list[str]:
        return sorted(self._call("DataService.ListSymbols", {"format": "symbol"}).get("Results") or [])

    def list_keys(self) -> list[str]:
        return sorted(self._call("DataService.ListSymbols", {"format": "tbk"}).get("Results") or [])

    def info(self, key: str) -> BucketInfo:
        (r,) = self._each("DataService.GetInfo", [{"key": key}])
        m = r.get("mkts")
        if not isinstance(m, dict):
            raise MktsError(f"{self.url} does not report bucket details (not a mktsframe server?)")
        return BucketInfo(
            key=m["key"],
            timeframe=m["timeframe"],
            timeframe_seconds=int(m["timeframe_seconds"]),
            record_type=m["record_type"],
            columns=tuple((str(n), str(t)) for n, t in m["columns"]),
            years=tuple(int(y) for y in m["years"]),
            rows=int(m["rows"]),
            first=m["first"],
            last=m["last"],
            disk_bytes=int(m["disk_bytes"]),
        )

    def create(self, key: str, columns: Sequence[tuple[str, str]], *, variable_length: bool = False) -> None:
        """Create an empty bucket (a tick bucket if ``variable_length``); idempotent for the same
        schema, as on the local engine."""
        cols = list(columns)
        req = {
            "key": key if ":" in key else f"{key}:{CATEGORY}",
            "column_names": ["Epoch", *(str(n) for n, _ in cols)],
            "column_types": ["i8", *(t for _, t in cols)],
            "row_type": "variable" if variable_length else "fixed",
            "is_variable_length": bool(variable_length),
            "mkts_exist_ok": True,
        }
        self._each("DataService.Create", [req])

    def delete(self, key: str, *, start: TimeLike = None, end: TimeLike = None) -> int:
        """Remove the rows in ``[start, end]`` via mktsframe's ``DataService.Delete``."""
        req: dict[str, Any] = {"key": key, **_time_fields("start", start), **_time_fields("end", end)}
        (r,) = self._each("DataService.Delete", [req])
        return int(r.get("deleted", 0))

    def destroy(self, key: str) -> None:
        self._each("DataService.Destroy", [{"key": key}])

    def subscribe(
        self,
        pattern: str | Iterable[str],
        *,
        since: TimeLike = None,
        callback: Callable[[dict[str, Any]], Any] | None = None,
        max_rows: int = DEFAULT_MAX_ROWS,
        policy: OverflowPolicy = "drop_oldest",
    ) -> Subscription:
        """Hear the server's commits to buckets matching ``pattern`` over its ``/ws``.

        Returns once the server confirmed the subscription (every write acknowledged after that
        is delivered). Needs the ``websockets`` package (``mktsframe[stream]``)."""
        from mktsframe.streaming.ws_client import subscribe_ws

        return subscribe_ws(
            self.url, pattern, since=since, callback=callback, max_rows=max_rows, policy=policy, timeout=self.timeout,
            headers={"Authorization": self._auth} if self._auth else None, ssl_context=self._ssl,
        )

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.close()

    def __enter__(self) -> HTTPBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _authorization(token: str | None, user: str | None, password: str | None) -> str | None:
    """The ``Authorization`` header: ``token=``, else ``$MKTS_TOKEN``, else the URL's credentials."""
    token = token or os.environ.get("MKTS_TOKEN") or None
    if token:
        return f"Bearer {token}"
    if user or password:
        pair = f"{unquote(user or '')}:{unquote(password or '')}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")
    return None


def redact_url(url: str) -> str:
    """``url`` without the credentials it may carry."""
    head, at, tail = url.partition("@")
    return f"{head.partition('://')[0]}://***@{tail}" if at and "://" in head else url


def _message(content: bytes) -> str:
    """The error message of a 401/403 reply (a JSON-RPC error in msgpack or JSON)."""
    import json

    for load in (lambda b: msgpack.unpackb(b, raw=False), json.loads):
        try:
            err = load(content).get("error") or {}
            return str(err.get("message") or err)
        except Exception:
            continue
    return content[:300].decode("utf-8", "replace")


def _error(message: str, obj: Any) -> Exception:
    """The mktsframe exception a server error stands for (``mkts_error`` names the class)."""
    kind = obj.get("mkts_error") if isinstance(obj, dict) else None
    cls = _ERRORS.get(kind) if isinstance(kind, str) else None
    if cls is None:  # a MarketStore server: recognise its wording
        cls = BucketNotFoundError if "no files returned from query parse" in message else MktsError
    return cls(message)


def _time_fields(which: str, value: TimeLike) -> dict[str, Any]:
    """Wire fields for a bound: exact ``epoch_<which>`` seconds (+ ``_nanos``).

    Zone-less times are UTC here as in every backend and API; they are converted on this side,
    so the server's ``timezone`` setting (which only labels replies) never shifts a bound.
    """
    ns = to_ns(value, name=which)
    if ns is None:
        return {}
    secs, nanos = divmod(ns, NS)
    out: dict[str, Any] = {f"epoch_{which}": secs}
    if nanos:
        out[f"epoch_{which}_nanos"] = nanos
    return out


def _wire_array(name: str, v: np.ndarray) -> np.ndarray:
    """Values as a wire type: ``str`` objects become ``U16`` (refusing longer strings)."""
    if v.dtype.kind == "O":
        if not all(isinstance(x, str) for x in v):
            raise SchemaMismatchError(f"column {name!r} has dtype object, which cannot be stored")
        v = v.astype(str) if v.size else np.empty(0, "U16")
    if v.dtype.kind == "U":
        if v.size and np.char.str_len(v).max() > 16:
            raise SchemaMismatchError(f"column {name!r}: strings longer than 16 characters do not fit U16")
        return v.astype("<U16")
    if v.dtype.byteorder == ">":
        return v.astype(v.dtype.newbyteorder("<"))
    return v


def _decode(ds: dict[str, Any]) -> list[tuple[str, Batch, int]]:
    """``(key, Batch, first row)`` for every key of a result dataset (index Epoch s → ns), validated
    as the server validates a write (:func:`~mktsframe.backend.nmds.decode`); columns are copied
    out of the reply, so a kept result does not hold the whole reply's memory."""
    try:
        decoded = nmds.decode(ds, what="the server's result")
    except (MktsError, ValueError) as exc:
        raise MktsError(f"the server sent a malformed result: {exc}") from None
    variable = bool(ds.get("mkts_variable"))
    out = []
    for key, (first, _) in decoded.slices.items():
        try:
            b, _ = decoded.batch(key)
        except MktsError as exc:
            raise MktsError(f"the server sent a malformed result: {exc}") from None
        index, cols = _with_nanoseconds(b, variable)
        out.append((key.split(":", 1)[0], Batch(index, {c: v.copy() for c, v in cols.items()}, variable), first))
    return out


def _with_nanoseconds(b: Batch, variable: bool) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(index, columns)`` of decoded rows: for tick rows (``variable``), the wire's ``Nanoseconds``
    column folded back into the index (ns) and dropped from the columns."""
    cols = dict(b.columns)
    return (b.index + cols.pop("Nanoseconds") if variable and "Nanoseconds" in cols else b.index), cols


def _decode_joined(ds: dict[str, Any]) -> Stacked | None:
    """A result dataset as one time-major :class:`Stacked` (validated as :func:`_decode`), or
    ``None`` when its keys' rows do not follow each other in order (not how our server sends them;
    then bucket by bucket)."""
    try:
        decoded = nmds.decode(ds, what="the server's result")
        spans = sorted(decoded.slices.items(), key=lambda kv: kv[1][0])
        counts = np.array([n for _, (_, n) in spans], np.int64)
        firsts = np.array([first for _, (first, _) in spans], np.int64)
        if not spans or int(counts.sum()) != decoded.length or (firsts != np.cumsum(counts) - counts).any():
            return None
        b, _ = decoded.rows(slice(0, decoded.length), "the result")
    except (MktsError, ValueError) as exc:
        raise MktsError(f"the server sent a malformed result: {exc}") from None
    variable = bool(ds.get("mkts_variable"))
    index, cols = _with_nanoseconds(b, variable)
    keys = tuple(k.split(":", 1)[0] for k, _ in spans)
    out = time_major(keys, index, cols, counts, variable)
    fresh = {c: v if v.flags.writeable else v.copy() for c, v in out.columns.items()}  # not views of the reply
    return Stacked(out.keys, out.index, fresh, out.which, out.variable_length)


def _head(b: Batch, n: int) -> Batch:
    return Batch(b.index[:n], {c: v[:n] for c, v in b.columns.items()}, b.variable_length)


def _write_request(items: list[tuple[str, Batch]], variable_length: bool) -> dict[str, Any]:
    """One ``WriteRequest`` holding ``items`` (buckets with the same columns) in one NMDS dataset
    naming every key, plus mktsframe's exact ``mkts_index_ns``."""
    checked: list[tuple[str, Batch]] = []
    for key, batch in items:
        index = np.asarray(batch.index)
        if index.dtype != np.int64 or index.ndim != 1:
            raise SchemaMismatchError("batch index must be a 1-d int64 array of nanoseconds")
        n = index.shape[0]
        if variable_length and "Nanoseconds" in batch.columns:
            raise SchemaMismatchError("'Nanoseconds' is not a column of a tick bucket: the index holds it")
        columns = {}
        for name, values in batch.columns.items():
            v = np.asarray(values)
            if v.ndim != 1 or v.shape[0] != n:
                raise SchemaMismatchError(f"column {name!r} has {v.shape[0] if v.ndim else 0} rows, index has {n}")
            columns[name] = _wire_array(name, v)
        checked.append((key, Batch(index, columns, bool(variable_length))))
    if len({k for k, _ in checked}) != len(checked):
        raise ValueError("a key appears more than once in one write")
    ds = nmds.encode(checked, key_suffix="")
    ds["data"][0] = bytes(ds["data"][0])  # Epoch seconds, whole: msgpack packs plain buffers
    exact = np.concatenate([b.index for _, b in checked]) if len(checked) > 1 else checked[0][1].index
    return {"dataset": ds, "is_variable_length": bool(variable_length),
            "mkts_index_ns": memoryview(np.ascontiguousarray(exact, "<i8")).cast("B")}  # fmt: skip
