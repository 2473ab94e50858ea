"""``mktsframe sync ROOT URL`` and ``mktsframe snapshots URL [--prune KEEP]``: publishing a root to
object storage, listing what was published and deleting old snapshots.

Kept out of :mod:`mktsframe.cli` so the command line grows by two sub-commands registered in one
call (:func:`add_commands`). Storage options come as JSON (``--storage-options '{"anon": false}'``)
or from the environment the filesystem reads (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``…).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["add_commands"]


def _options(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        opts = json.loads(text)
    except ValueError as exc:
        raise SystemExit(f"error: --storage-options is not JSON ({exc})") from None
    if not isinstance(opts, dict):
        raise SystemExit("error: --storage-options must be a JSON object")
    return opts


def _sync(args: argparse.Namespace) -> int:
    from mktsframe.publish import sync

    r = sync(args.root, args.url, storage_options=_options(args.storage_options),
             progress=True if args.progress else None)  # fmt: skip
    print(f"published snapshot {r.snapshot} at {r.url}: {r.files} files, {r.uploaded} uploaded "
          f"({r.uploaded_bytes / 1e6:.1f} MB), {r.reused} unchanged, in {r.seconds:.1f} s")  # fmt: skip
    if r.skipped:
        print(f"not published: {', '.join(r.skipped)}")
    return 0


def _snapshots(args: argparse.Namespace) -> int:
    from mktsframe.publish import list_snapshots, prune_snapshots

    if args.prune is not None:
        r = prune_snapshots(args.url, args.prune, min_age=args.min_age, storage_options=_options(args.storage_options))
        print(f"deleted {len(r.deleted)} snapshots ({r.objects_deleted} objects, {r.bytes_deleted / 1e6:.1f} MB), "
              f"kept {len(r.kept)}")  # fmt: skip
    for s in list_snapshots(args.url, storage_options=_options(args.storage_options)):
        mark = "*" if s["current"] else " "
        print(f"{mark} {s['id']}  {s['created']}  {s['files']} files  {s['bytes'] / 1e6:.1f} MB")
    return 0


def add_commands(sub: Any) -> None:
    """Add ``sync`` and ``snapshots`` to the ``mktsframe`` command's sub-parsers."""
    p = sub.add_parser("sync", help="publish a consistent snapshot of a data root to object storage (fsspec URL)")
    p.add_argument("root", type=Path, help="the data root (sync from the process that writes it if it is live)")
    p.add_argument("url", help="s3://bucket/prefix, gcs://…, az://…, file:///…")
    p.add_argument("--storage-options", help="JSON object passed to the filesystem")
    p.add_argument("--progress", action="store_true", help="always show the progress bar")
    p.set_defaults(func=_sync)
    p = sub.add_parser("snapshots", help="list the snapshots published at a URL (* = current), or prune old ones")
    p.add_argument("url")
    p.add_argument("--storage-options", help="JSON object passed to the filesystem")
    p.add_argument("--prune", type=int, metavar="KEEP",
                   help="delete all but the newest KEEP snapshots (and the objects only they name)")
    p.add_argument("--min-age", type=float, default=3600.0, metavar="SECONDS",
                   help="with --prune: keep snapshots replaced less than this long ago (default 3600)")  # fmt: skip
    p.set_defaults(func=_snapshots)
