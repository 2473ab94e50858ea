"""A published root in object storage (any fsspec URL) as a read-only :class:`Backend`.

``connect("s3://bucket/prefix", storage_options={...})`` reads the snapshot a ``mktsframe sync``
published there (:mod:`.manifest`): the catalog, the bucket schemas and every file's size come from
the snapshot document (one ``GET``), so listing and opening cost no ``LIST`` request. Year files are
read by byte range, with the same slot arithmetic as the local engine's positional reads
(:mod:`mktsframe.engine.year_io`). ``sync`` publishes each year file in day blocks
(:mod:`mktsframe.engine.year_blocks`), so a one-day query is the header (fetched once, cached:
objects are immutable, so a cached header never goes stale) and then **one ranged GET** per year
file touched; reads of several files go out together through ``fs.cat_ranges`` (concurrent on
s3fs/gcsfs/adlfs).

The backend stays on the snapshot it opened (readers keep reading it while the next sync runs);
``refresh()`` moves to the newest. Writes raise :class:`~mktsframe.errors.ReadOnlyError`.
Tick buckets are published a day an object (:mod:`.tick_objects`) and read by :mod:`.tick_days`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NoReturn

import fsspec
import numpy as np

from mktsframe.backend.base import Batch, BucketInfo, Capabilities
from mktsframe.backend.manifest import FileEntry, Snapshot, load_snapshot
from mktsframe.backend.registry import BackendSpec
from mktsframe.backend.tick_days import TickDays, bucket_info
from mktsframe.backend.tick_objects import day_of_name
from mktsframe.dtypes import dtype_of
from mktsframe.engine import year_io
from mktsframe.engine.catalog import check_limit, parse_bucket_meta, query_columns
from mktsframe.engine.year_blocks import HEAD_BYTES, BlockedHeader, parse_blocked_header
from mktsframe.engine.year_file import year_bounds
from mktsframe.errors import BucketNotFoundError, MktsError, ReadOnlyError
from mktsframe.keys import TimeBucketKey, parse_key, parse_key_pattern
from mktsframe.times import TimeLike, to_ns

__all__ = ["ObjectStoreBackend", "open_store"]

NS = 1_000_000_000


def open_store(url: str, **options: Any) -> ObjectStoreBackend:
    """The registry's opener for fsspec URLs (see :mod:`.registry`)."""
    return ObjectStoreBackend(url, **options)


class ObjectStoreBackend:
    """A root published at ``url`` by :func:`mktsframe.sync`, read-only.

    Parameters
    ----------
    url : str
        Any fsspec URL: ``s3://bucket/prefix``, ``gcs://…``, ``az://…``, ``memory://…``, ``file://…``.
    storage_options : dict, optional
        Passed to the filesystem (s3fs: ``key``, ``secret``, ``client_kwargs={"endpoint_url": …}``).
    snapshot : str, optional
        Open this snapshot instead of the current one (``mktsframe snapshots URL`` lists them).
    read_only : bool, optional
        Accepted for :func:`mktsframe.connect`'s sake; ``False`` raises (a published snapshot is immutable).
    """

    capabilities = Capabilities(write=False, delete=False, stream=False)

    def __init__(
        self,
        url: str,
        *,
        storage_options: Mapping[str, Any] | None = None,
        snapshot: str | None = None,
        read_only: bool | None = None,
    ) -> None:
        if read_only is False:
            raise ReadOnlyError(f"{url} is object storage: it is read-only (publish changes with mktsframe.sync)")
        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.fs, self._root = fsspec.core.url_to_fs(self.url, **self.storage_options)
        self._root = self._root.rstrip("/")
        self._lock = threading.Lock()
        self._headers: dict[str, tuple[Any, int, int]] = {}
        self.requests = 0
        """Ranged reads issued so far (each range of a batch counts one)."""
        self.bytes_fetched = 0
        """Bytes those reads returned (headers included)."""
        self._closed = False
        self._load(snapshot)
        self._ticks = TickDays(self)

    def _load(self, snapshot_id: str | None) -> None:
        snap = load_snapshot(self.fs, self._root, self.url, snapshot_id)
        metas = {k: parse_bucket_meta(_json_bytes(m), f"{self.url} snapshot {snap.id}: {k}")
                 for k, m in snap.buckets.items()}  # fmt: skip
        keys = sorted((parse_key(k) for k in metas), key=lambda k: k.parts)
        years: dict[str, list[int]] = {k: [] for k in metas}
        days: dict[str, list[int]] = {k: [] for k in metas}
        for path in snap.files:
            key, _, name = path.rpartition("/")
            stem, _, ext = name.partition(".")
            if ext == "bin" and key in years and stem.lstrip("-").isdigit():
                years[key].append(int(stem))
            elif key in days and (day := day_of_name(name)) is not None:
                days[key].append(day)
        with self._lock:
            self.snapshot: Snapshot = snap
            self._metas = metas
            self._keys = keys
            self._years = {k: sorted(v) for k, v in years.items()}
            self._days = {k: sorted(v) for k, v in days.items()}

    def __repr__(self) -> str:
        return f"<ObjectStoreBackend {self.url!r} snapshot {self.snapshot.id}>"

    @property
    def snapshot_id(self) -> str:
        return self.snapshot.id

    @property
    def read_only(self) -> bool:
        return True

    @property
    def spec(self) -> BackendSpec:
        """This URL pinned to this snapshot: dask workers read exactly what this process reads."""
        return BackendSpec(self.url, {"storage_options": self.storage_options, "snapshot": self.snapshot.id})

    def refresh(self) -> str:
        """Move to the manifest's current snapshot (readers already holding data are unaffected); its id."""
        self._load(None)
        return self.snapshot.id

    # -- reads ----------------------------------------------------------------------------------
    def list_keys(self) -> list[str]:
        return [k.item_key for k in self._keys]

    def list_symbols(self) -> list[str]:
        return sorted({k.symbol for k in self._keys})

    def _resolve(self, key: str) -> list[TimeBucketKey]:
        pattern = parse_key_pattern(key)
        named = pattern.expand()
        if named is None:
            found = [k for k in self._keys if pattern.matches(k)]
            if not found:
                raise BucketNotFoundError(f"no bucket matches {key!r} (no files returned from query parse)")
            return found
        for k in named:
            if k.item_key not in self._metas:
                raise BucketNotFoundError(f"no bucket {k.item_key!r} (no files returned from query parse)")
        return named

    def _meta(self, key: TimeBucketKey) -> dict[str, Any]:
        return self._metas[key.item_key]

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
        check_limit(limit)
        s_ns, e_ns = to_ns(start, name="start"), to_ns(end, name="end")
        keys = self._resolve(key)
        plans = []
        ticks: dict[str, Batch] = {}
        for k in keys:
            meta = self._meta(k)
            names = query_columns(k.item_key, [n for n, _ in meta["schema"]], columns)
            if meta["record_type"] != "fixed":
                ticks[k.item_key] = self._ticks.query(k.item_key, meta, self._days[k.item_key], s_ns, e_ns, names,
                                                      limit, limit_from_start)  # fmt: skip
                continue
            tf = k.timeframe.seconds
            s = None if s_ns is None else s_ns // NS // tf * tf
            e = None if e_ns is None else e_ns // NS // tf * tf
            years = [y for y in self._years[k.item_key]
                     if (s is None or year_bounds(y)[1] > s) and (e is None or year_bounds(y)[0] <= e)]  # fmt: skip
            plans.append((k, meta, names, s, e, years if limit != 0 else []))
        self._prefetch_headers([f"{k.item_key}/{y}.bin" for k, _, _, _, _, ys in plans for y in ys])
        bars = {k.item_key: self._read_bucket(k, meta, names, s, e, years, limit, limit_from_start)
                for k, meta, names, s, e, years in plans}  # fmt: skip
        return {k.item_key: ticks[k.item_key] if k.item_key in ticks else bars[k.item_key] for k in keys}

    def _read_bucket(
        self,
        k: TimeBucketKey,
        meta: dict[str, Any],
        names: list[str],
        s: int | None,
        e: int | None,
        years: list[int],
        limit: int | None,
        from_start: bool,
    ) -> Batch:
        pieces = []
        remaining = limit
        for year in years if limit is None or from_start else years[::-1]:
            path = f"{k.item_key}/{year}.bin"
            h, lo, hi, _ = self._header(path)
            s0, s1 = year_io.year_slots(year, k.timeframe.seconds, s, e)
            ns, cols = year_io.slots_from(h, lo, hi, s0, s1, names, remaining, from_start,
                                          self._fetcher(path), one_trip=True)  # fmt: skip
            if ns.shape[0]:
                pieces.append((ns, cols))
            if remaining is not None:
                remaining -= ns.shape[0]
                if remaining <= 0:
                    break
        if limit is not None and not from_start:
            pieces.reverse()
        dtypes = {n: dtype_of(t) for n, t in meta["schema"]}
        if not pieces:
            return Batch(np.empty(0, np.int64), {n: np.empty(0, dtypes[n]) for n in names})
        if len(pieces) == 1:
            return Batch(pieces[0][0], pieces[0][1])
        cols = {n: np.concatenate([p[1][n] for p in pieces]) for n in names}
        return Batch(np.concatenate([p[0] for p in pieces]), cols)

    def info(self, key: str) -> BucketInfo:
        k = parse_key(key)
        if k.item_key not in self._metas:
            raise BucketNotFoundError(f"no bucket {k.item_key!r} (no files returned from query parse)")
        meta = self._meta(k)
        if meta["record_type"] != "fixed":
            return self._ticks.info(k, meta, self._days[k.item_key])
        years = self._years[k.item_key]
        paths = [f"{k.item_key}/{y}.bin" for y in years]
        self._prefetch_headers(paths)
        rows, first, last = 0, None, None
        for year, path in zip(years, paths, strict=True):
            h, lo, hi, blocked = self._header(path)  # exact extent and count, from the header alone
            if blocked.rows:
                rows += blocked.rows
                y0 = year_bounds(year)[0]
                first = (y0 + lo * h.timeframe) * NS if first is None else first
                last = (y0 + (hi - 1) * h.timeframe) * NS
        return bucket_info(k, meta, years, rows, first, last, sum(self.snapshot.files[p].size for p in paths))

    # -- ranged reads ---------------------------------------------------------------------------
    def _entry(self, path: str) -> FileEntry:
        try:
            return self.snapshot.files[path]
        except KeyError:
            raise MktsError(f"{self.url} snapshot {self.snapshot.id} lists no file {path}") from None

    def _cat_ranges(self, objects: list[str], ranges: list[tuple[int, int]]) -> list[bytes]:
        """Fetch ``(offset, nbytes)`` of each object in one batch (concurrent where the filesystem is async)."""
        if self._closed:
            raise MktsError(f"{self.url}: connection is closed")
        if not ranges:
            return []
        paths = [f"{self._root}/{o}" for o in objects]
        starts = [o for o, _ in ranges]
        ends = [o + n for o, n in ranges]
        got = self.fs.cat_ranges(paths, starts, ends, on_error="raise")
        with self._lock:
            self.requests += len(ranges)
            self.bytes_fetched += sum(len(b) for b in got)
        return got  # type: ignore[no-any-return]

    def _fetcher(self, path: str) -> Callable[[list[tuple[int, int]]], list[Any]]:
        """Reads of ``path`` addressed as the column-major year file, served from its published blocks."""
        obj = self._entry(path).object
        return self._header(path)[3].fetcher(lambda ranges: self._cat_ranges([obj] * len(ranges), ranges))

    def _prefetch_headers(self, paths: Iterable[str]) -> None:
        """The headers of ``paths`` not cached yet, in one batch of ranged reads. Cached by object
        name: an object's bytes never change, and a refreshed snapshot names new objects."""
        entries = {e.object: e for e in (self._entry(p) for p in dict.fromkeys(paths))}
        missing = [e for o, e in entries.items() if o not in self._headers]
        if not missing:
            return
        heads = self._cat_ranges([e.object for e in missing], [(0, min(HEAD_BYTES, e.size)) for e in missing])
        for entry, head in zip(missing, heads, strict=True):
            obj = entry.object
            blocked = parse_blocked_header(f"{self.url}/{obj}", head,
                                           lambda offset, n, o=obj: self._cat_ranges([o], [(offset, n)])[0],
                                           entry.size)  # fmt: skip
            h = year_io.cache_header(f"{self.url}/{obj}", blocked.crc, blocked.meta, blocked.layout())
            with self._lock:
                self._headers[obj] = (h, blocked.lo, blocked.hi, blocked)

    def _header(self, path: str) -> tuple[Any, int, int, BlockedHeader]:
        obj = self._entry(path).object
        found = self._headers.get(obj)
        if found is None:
            self._prefetch_headers([path])
            found = self._headers[obj]
        return found

    # -- writes are refused ----------------------------------------------------------------------
    def _refuse(self, what: str) -> NoReturn:
        raise ReadOnlyError(
            f"{self.url} is a published snapshot in object storage: {what} is refused "
            "(write to the data root and publish it again with `mktsframe sync`)"
        )

    def write(self, key: str, batch: Batch, *, variable_length: bool = False) -> None:
        self._refuse("write")

    def write_many(
        self, items: Mapping[str, Batch] | Sequence[tuple[str, Batch]], *, variable_length: bool = False
    ) -> None:
        self._refuse("write")

    def create(self, key: str, columns: Sequence[tuple[str, str]], *, variable_length: bool = False) -> None:
        self._refuse("create")

    def delete(self, key: str, *, start: TimeLike = None, end: TimeLike = None) -> int:
        self._refuse("delete")

    def destroy(self, key: str) -> None:
        self._refuse("destroy")

    def subscribe(self, pattern: str | Iterable[str], **kw: Any) -> NoReturn:
        raise MktsError(f"{self.url}: object storage has no live stream; subscribe to the server that writes the root")

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> ObjectStoreBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _json_bytes(meta: dict[str, Any]) -> bytes:
    return json.dumps(meta).encode()
