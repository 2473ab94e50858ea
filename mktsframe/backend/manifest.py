"""The layout of a root published to object storage: a manifest, snapshots, and immutable objects.

::

    URL/manifest.json                 {"format": "mktsframe-manifest", "current": ID, "snapshots": [...]}
    URL/snapshots/ID.json             one snapshot: every bucket's metadata and every file's object
    URL/objects/SYM/TF/GROUP/2024.bin.<sha256[:20]>    a year file's bytes, never overwritten

An object's name carries a hash of its content, so an unchanged file is uploaded once and shared
by every snapshot that holds it, and a changed one is a *new* object: nothing a snapshot names is
ever modified. A sync uploads the new objects, then writes the snapshot document, then the
manifest, last: a single ``PUT`` replaces it whole (object stores publish a ``PUT`` atomically), so a
reader sees the old snapshot or the new one, never a mixture. A reader opened on a snapshot reads
only that snapshot's objects, so it keeps reading the same data while the next sync runs.
Older snapshots stay readable (``connect(url, snapshot=ID)``) until their objects are deleted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mktsframe.errors import CorruptFileError, MktsError

__all__ = ["MANIFEST", "FileEntry", "Snapshot", "load_manifest", "load_snapshot", "snapshot_path"]

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "mktsframe-manifest"
SNAPSHOT_FORMAT = "mktsframe-snapshot"
VERSION = 1


@dataclass(frozen=True)
class FileEntry:
    """One file of the root as published: where its bytes are and how many (sha256 of them)."""

    object: str
    size: int
    sha256: str
    mtime_ns: int = 0
    """The source file's modification time when it was hashed (lets the next sync skip hashing it)."""


@dataclass(frozen=True)
class Snapshot:
    """A published, immutable state of a root."""

    id: str
    created: str
    """UTC, ISO 8601."""
    buckets: dict[str, dict[str, Any]]
    """Bucket key → its ``bucket.json`` content."""
    files: dict[str, FileEntry]
    """Path in the root (``SYM/TF/GROUP/2024.bin``) → its object."""

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "format": SNAPSHOT_FORMAT,
                "version": VERSION,
                "id": self.id,
                "created": self.created,
                "buckets": self.buckets,
                "files": {p: [f.object, f.size, f.sha256, f.mtime_ns] for p, f in sorted(self.files.items())},
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes, where: str) -> Snapshot:
        try:
            doc = json.loads(raw)
            if doc.get("format") != SNAPSHOT_FORMAT or doc.get("version") != VERSION:
                raise ValueError(f"format {doc.get('format')!r} version {doc.get('version')!r}")
            files = {str(p): FileEntry(str(o), int(n), str(h), int(t)) for p, (o, n, h, t) in doc["files"].items()}
            return cls(str(doc["id"]), str(doc["created"]), dict(doc["buckets"]), files)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptFileError(f"{where}: unreadable snapshot document ({exc})") from None


def snapshot_path(snapshot_id: str) -> str:
    return f"snapshots/{snapshot_id}.json"


def load_manifest(fs: Any, root: str, url: str) -> dict[str, Any]:
    """The manifest at ``root`` (``{"current": ID | None, "snapshots": [{"id", "created", "files", "bytes"}]}``);
    an empty one if nothing was published there yet."""
    try:
        raw = fs.cat_file(f"{root}/{MANIFEST}")
    except FileNotFoundError:
        return {"format": MANIFEST_FORMAT, "version": VERSION, "current": None, "snapshots": []}
    try:
        doc = json.loads(raw)
        if doc.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"format {doc.get('format')!r}")
        doc["snapshots"] = list(doc["snapshots"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptFileError(f"{url}/{MANIFEST}: unreadable manifest ({exc})") from None
    return doc  # type: ignore[no-any-return]


def load_snapshot(fs: Any, root: str, url: str, snapshot_id: str | None) -> Snapshot:
    """The snapshot ``snapshot_id`` (default: the manifest's current one) published at ``root``."""
    if snapshot_id is None:
        snapshot_id = load_manifest(fs, root, url).get("current")
        if snapshot_id is None:
            raise MktsError(f"nothing is published at {url} (no {MANIFEST}): publish a root with `mktsframe sync`")
    if not snapshot_id or "/" in snapshot_id or snapshot_id.startswith("."):
        raise ValueError(f"invalid snapshot id {snapshot_id!r}")
    where = f"{url}/{snapshot_path(snapshot_id)}"
    try:
        raw = fs.cat_file(f"{root}/{snapshot_path(snapshot_id)}")
    except FileNotFoundError:
        raise MktsError(f"no snapshot {snapshot_id!r} at {url} (`mktsframe snapshots {url}` lists them)") from None
    return Snapshot.from_json(raw, where)
