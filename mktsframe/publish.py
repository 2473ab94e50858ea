"""Publishing a data root to object storage: :func:`sync` and :func:`list_snapshots`.

A research cluster reads the data where it lives (S3, GCS, Azure) instead of from the one server
that writes it. ``sync`` copies a *consistent* snapshot of a live root there:

1. with the engine's writers held off, it checkpoints (every acknowledged write is then in the
   year files) and copies the files that changed since the last published snapshot into a local
   staging folder, re-blocked by day for ranged reads (:mod:`mktsframe.engine.year_blocks`: days
   without bars are left out, so a sparse year uploads only its data) — writers wait only for
   that local copy;
2. it uploads the changed files as new, content-named objects (unchanged ones are shared with the
   previous snapshot, so a daily sync uploads the year files that changed, not the archive);
3. it writes the snapshot document, then the manifest, last, naming it current.

The layout and why it is safe for readers during a sync are in :mod:`mktsframe.backend.manifest`.
One publisher per URL at a time (two syncs racing would each write a manifest; the last wins).
Tick buckets are published a day an object (:mod:`mktsframe.backend.tick_objects`), only the days that changed.

Old snapshots are kept until :func:`prune_snapshots` (``mktsframe snapshots URL --prune KEEP``)
deletes them: it keeps the newest ``keep`` and every snapshot that was current less than
``min_age`` seconds ago (a reader opened on it may still be reading), and deletes the objects only
the others named. Run it where you run ``sync`` (it rewrites the manifest: one publisher at a time).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from mktsframe.backend.manifest import (
    MANIFEST,
    FileEntry,
    Snapshot,
    load_manifest,
    load_snapshot,
    snapshot_path,
)
from mktsframe.errors import LockedError, MktsError

if TYPE_CHECKING:
    from mktsframe.backend.local import LocalBackend

__all__ = ["PruneResult", "SyncResult", "list_snapshots", "prune_snapshots", "sync"]

log = logging.getLogger("mktsframe.publish")

_CHUNK = 4 << 20
#: A file's modification time is trusted to mean "unchanged" only if it was this much older than
#: the moment it was hashed: a write in the same clock tick as the hash would keep the same mtime.
_MTIME_MARGIN_NS = 2_000_000_000


@dataclass
class SyncResult:
    """What one :func:`sync` published."""

    snapshot: str
    url: str
    files: int = 0
    """Files in the snapshot."""
    uploaded: int = 0
    """Files whose bytes were uploaded (new or changed)."""
    uploaded_bytes: int = 0
    reused: int = 0
    """Files shared with the previous snapshot (nothing uploaded)."""
    skipped: list[str] = field(default_factory=list)
    """Buckets not published (none today: bars and ticks are; kept for callers that look)."""
    seconds: float = 0.0


def sync(
    source: str | os.PathLike[str] | LocalBackend,
    url: str,
    *,
    storage_options: Mapping[str, Any] | None = None,
    progress: bool | None = None,
) -> SyncResult:
    """Publish a consistent snapshot of a data root at ``url`` (any fsspec URL), uploading only
    changed files, and make it the current snapshot there.

    Parameters
    ----------
    source : path or LocalBackend
        The root, or an open writable local backend on it (a server's, say: sync from the process
        that writes it). A path is opened for writing; if another process holds the root's write
        lock, a :class:`~mktsframe.errors.LockedError` says to sync from that process instead (only
        the writer can checkpoint and hold writes for a consistent copy).
    url : str
        ``s3://bucket/prefix``, ``gcs://…``, ``az://…``, ``file:///…``, ``memory://…``.
    storage_options : dict, optional
        For the filesystem (e.g. s3fs ``key``/``secret``/``client_kwargs``).
    progress : bool, optional
        Show a tqdm bar of bytes uploaded; default: when more than 64 MiB are to be uploaded.

    Returns
    -------
    SyncResult
        The new snapshot's id and what was uploaded. ``connect(url)`` now reads it.
    """
    from mktsframe.backend.local import LocalBackend, open_local

    t0 = time.perf_counter()
    owned = not isinstance(source, LocalBackend)
    backend = open_local(Path(os.fspath(source))) if owned else source  # type: ignore[arg-type]
    try:
        engine = backend.engine
        if engine.read_only:
            raise LockedError(
                f"{engine.root} is written by another process: run sync in that process "
                "(mktsframe.sync(backend, url)) so it can checkpoint and hold writes for a consistent copy"
            )
        url = url.rstrip("/")
        fs, root = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        root = root.rstrip("/")
        manifest = load_manifest(fs, root, url)
        previous = load_snapshot(fs, root, url, manifest["current"]).files if manifest.get("current") else {}
        with tempfile.TemporaryDirectory(prefix="mkts-sync-") as staging:
            buckets, files, staged, skipped = _stage(engine, previous, Path(staging))
            result = SyncResult(_new_id(), url, files=len(files), skipped=skipped)
            _upload(fs, root, staged, files, result, progress)
        snap = Snapshot(result.snapshot, _now_iso(), buckets, files)
        _put_whole(fs, f"{root}/{snapshot_path(snap.id)}", snap.to_json())
        manifest["snapshots"].append({
            "id": snap.id, "created": snap.created, "files": len(files),
            "bytes": sum(f.size for f in files.values()),
        })  # fmt: skip
        manifest["current"] = snap.id
        _put_whole(fs, f"{root}/{MANIFEST}", json.dumps(manifest, indent=1).encode())  # last: publishes it
    finally:
        if owned:
            backend.close()
    result.seconds = time.perf_counter() - t0
    if skipped:
        log.warning("sync to %s: skipped %s", url, ", ".join(skipped))
    return result


def _stage(
    engine: Any, previous: Mapping[str, FileEntry], staging: Path
) -> tuple[dict[str, dict[str, Any]], dict[str, FileEntry], dict[str, Path], list[str]]:
    """Under the engine's writers' lock: checkpoint, then list every bucket and year file, copying
    the changed ones to ``staging`` (hashed on the way). Returns the bucket metadata, every file's
    entry (objects of changed files not uploaded yet), the staged copies and the skipped buckets."""
    from mktsframe.engine.catalog import iter_bucket_keys, read_bucket_meta

    buckets: dict[str, dict[str, Any]] = {}
    files: dict[str, FileEntry] = {}
    staged: dict[str, Path] = {}
    skipped: list[str] = []
    with engine.commit_barrier():
        engine.checkpoint()
        for key in iter_bucket_keys(engine.root):
            directory = engine.root.joinpath(*key.parts)
            meta = read_bucket_meta(directory)
            if meta is None:
                continue
            meta.pop("schema", None)
            buckets[key.item_key] = meta
            if meta["record_type"] == "fixed":
                _stage_files(key.item_key, directory, previous, staging, files, staged, _is_year_file,
                             lambda name, dst, d=directory: _publishable_copy(d / name, dst))  # fmt: skip
            else:
                _stage_files(key.item_key, directory, previous, staging, files, staged, _is_tick_day,
                             lambda name, dst, k=key.item_key: _publishable_day(engine, k, name, dst))  # fmt: skip
    return buckets, files, staged, skipped


def _is_year_file(name: str) -> bool:
    stem, _, ext = name.partition(".")
    return ext == "bin" and stem.lstrip("-").isdigit()


def _is_tick_day(name: str) -> bool:
    from mktsframe.backend.tick_objects import day_of_name

    return day_of_name(name) is not None


def _stage_files(
    key: str, directory: Path, previous: Mapping[str, FileEntry], staging: Path, files: dict[str, FileEntry],
    staged: dict[str, Path], select: Callable[[str], bool], write: Callable[[str, Path], bool],
) -> None:
    """Stage the files of bucket ``key`` that ``select`` names and that changed since ``previous``:
    ``write(name, copy)`` writes the publishable copy (``False``: nothing to publish). An unchanged
    file (same size and a trusted modification time) keeps its object, as does a changed one whose
    copy hashes the same."""
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if not select(entry.name):
            continue
        rel = f"{key}/{entry.name}"
        st = entry.stat()
        old = previous.get(rel)
        if old is not None and old.mtime_ns and old.mtime_ns == st.st_mtime_ns and old.size == st.st_size:
            files[rel] = old
            continue
        hashed_at = time.time_ns()
        copy = staging / f"{len(staged)}.{entry.name.partition('.')[2]}"
        if not write(entry.name, copy):
            continue
        digest = _sha256(copy)
        trusted = st.st_mtime_ns if st.st_mtime_ns < hashed_at - _MTIME_MARGIN_NS else 0
        if old is not None and old.sha256 == digest:
            files[rel] = FileEntry(old.object, old.size, old.sha256, trusted)
            copy.unlink()
            continue
        files[rel] = FileEntry(f"objects/{rel}.{digest[:20]}", copy.stat().st_size, digest, trusted)
        staged[rel] = copy


def _publishable_day(engine: Any, key: str, name: str, dst: Path) -> bool:
    """Write tick day ``name`` of ``key`` as a day object (:mod:`~mktsframe.backend.tick_objects`),
    read through the engine (under the caller's commit barrier: every committed tick, nothing torn);
    ``False`` for a day whose ticks were all deleted."""
    from mktsframe.backend.tick_objects import day_of_name, write_day
    from mktsframe.engine.tick_file import DAY_NS

    day = day_of_name(name)
    assert day is not None
    (batch,) = engine.query(key, start=day * DAY_NS, end=(day + 1) * DAY_NS - 1).values()
    if not len(batch):
        return False
    with open(dst, "wb") as out:
        write_day(out, batch.index, dict(batch.columns))
    return True


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _put_whole(fs: Any, path: str, data: bytes) -> None:
    """Write ``path`` so that readers see the old bytes or the new, never part: one ``PUT`` on an
    object store; a temporary file renamed over it on a local (or mounted) filesystem."""
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    if isinstance(fs, LocalFileSystem):
        tmp = f"{path}.tmp-{secrets.token_hex(4)}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)


def _publishable_copy(src: Path, dst: Path) -> bool:
    """Write the year file ``src`` re-blocked for object storage (:mod:`~mktsframe.engine.year_blocks`) to ``dst``."""
    from mktsframe.engine.year_blocks import write_blocked

    with open(dst, "wb") as out:
        write_blocked(src, out)
    return True


def _upload(
    fs: Any, root: str, staged: Mapping[str, Path], files: Mapping[str, FileEntry], result: SyncResult,
    progress: bool | None,
) -> None:
    total = sum(p.stat().st_size for p in staged.values())
    show = progress if progress is not None else total > (64 << 20)
    from tqdm.auto import tqdm

    with tqdm(total=total, unit="B", unit_scale=True, desc=f"sync {result.url}", disable=not show) as bar:
        for rel, copy in staged.items():
            obj = f"{root}/{files[rel].object}"
            size = copy.stat().st_size
            if not fs.exists(obj):  # content-named: an object already there holds these bytes
                fs.makedirs(obj.rsplit("/", 1)[0], exist_ok=True)  # folders of file:// (nothing on S3)
                fs.put_file(str(copy), obj)
                result.uploaded += 1
                result.uploaded_bytes += size
            bar.update(size)
    result.reused = result.files - result.uploaded


def list_snapshots(url: str, *, storage_options: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The snapshots published at ``url``, oldest first: ``{"id", "created", "files", "bytes", "current"}``."""
    url = url.rstrip("/")
    fs, root = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    manifest = load_manifest(fs, root.rstrip("/"), url)
    if not manifest["snapshots"]:
        raise MktsError(f"nothing is published at {url} (no {MANIFEST})")
    return [{**s, "current": s["id"] == manifest["current"]} for s in manifest["snapshots"]]


@dataclass
class PruneResult:
    """What one :func:`prune_snapshots` deleted (and kept)."""

    deleted: list[str]
    """Snapshot ids deleted, oldest first."""
    kept: list[str]
    objects_deleted: int = 0
    bytes_deleted: int = 0


def prune_snapshots(
    url: str,
    keep: int,
    *,
    min_age: float = 3600.0,
    storage_options: Mapping[str, Any] | None = None,
) -> PruneResult:
    """Delete the old snapshots published at ``url`` and the objects only they named.

    Parameters
    ----------
    keep : int
        How many of the newest snapshots to keep (at least 1: the current one is never deleted).
    min_age : float
        Seconds. A snapshot replaced less than this long ago is kept whatever ``keep`` says: a reader
        opened on it (``connect(url)`` before the last sync, or a dask job whose tasks name it) may
        still be reading. A job that needs an old snapshot for longer pins it with
        ``connect(url, snapshot=ID)``, and the publisher keeps enough snapshots.
    storage_options : dict, optional
        For the filesystem.

    The manifest is rewritten first, without the deleted snapshots (no new reader can find them),
    then their documents are deleted, then the objects no kept snapshot names. Objects a sync
    uploads but has not published yet are never touched: only objects named by a deleted snapshot
    are candidates. One publisher per URL at a time: do not run it beside a ``sync`` of the URL.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1 (the current snapshot), not {keep}")
    url = url.rstrip("/")
    fs, root = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    root = root.rstrip("/")
    manifest = load_manifest(fs, root, url)
    snaps = manifest["snapshots"]
    if not snaps:
        raise MktsError(f"nothing is published at {url} (no {MANIFEST})")
    now = dt.datetime.now(dt.UTC)
    doomed: list[str] = []
    for i, s in enumerate(snaps[: max(len(snaps) - keep, 0)]):
        replaced = dt.datetime.fromisoformat(snaps[i + 1]["created"])  # when the next one took over
        if s["id"] != manifest["current"] and (now - replaced).total_seconds() >= min_age:
            doomed.append(s["id"])
    kept = [s["id"] for s in snaps if s["id"] not in doomed]
    result = PruneResult(doomed, kept)
    if not doomed:
        return result
    named = {f.object: f.size for sid in kept for f in load_snapshot(fs, root, url, sid).files.values()}
    gone: dict[str, int] = {}
    for sid in doomed:
        try:
            files = load_snapshot(fs, root, url, sid).files
        except MktsError:  # its document is already gone (an earlier prune stopped half-way)
            continue
        gone.update({f.object: f.size for f in files.values() if f.object not in named})
    manifest["snapshots"] = [s for s in snaps if s["id"] not in doomed]
    _put_whole(fs, f"{root}/{MANIFEST}", json.dumps(manifest, indent=1).encode())  # first: unlisted
    for sid in doomed:
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(f"{root}/{snapshot_path(sid)}")
    for obj, size in gone.items():
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(f"{root}/{obj}")
            result.objects_deleted += 1
            result.bytes_deleted += size
    return result


def _new_id() -> str:
    """Sortable by time (UTC), unique: ``20261206T131500Z-1a2b3c``."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")

