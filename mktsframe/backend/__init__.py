"""Backends: the one storage interface and :func:`connect`, which picks an implementation."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from mktsframe.backend.base import Backend, Batch, BucketInfo, Capabilities, capabilities
from mktsframe.backend.registry import BackendSpec, opener_for, register_backend
from mktsframe.config import Config, default_root, load_config

__all__ = [
    "Backend",
    "BackendSpec",
    "Batch",
    "BucketInfo",
    "Capabilities",
    "capabilities",
    "connect",
    "default_backend",
    "register_backend",
    "set_default_backend",
]

_default: Backend | None = None
_default_lock = threading.Lock()


def connect(
    target: str | os.PathLike[str] | None = None,
    *,
    read_only: bool | None = None,
    config: Config | None = None,
    **options: object,
) -> Backend:
    """Open a backend.

    Parameters
    ----------
    target : str or path, optional
        A directory or ``file://`` URL → the local engine; ``http://host:port`` → a mktsframe
        or MarketStore server; an fsspec object-store URL (``s3://bucket/prefix``, ``gcs://``,
        ``az://``, ``memory://``) → a read-only published root (see :func:`mktsframe.sync`);
        other schemes → a backend registered for them (:mod:`mktsframe.backend.registry`).
        Default: ``$MKTS_ROOT``, ``./mkts.yml``'s root, else ``./data``.
    read_only : bool, optional
        Local: ``None`` writes if no other process holds the root's write lock and reads
        otherwise; ``False`` raises :class:`~mktsframe.errors.LockedError` if it is held.
        Object stores are always read-only.
    config : Config, optional
        Engine settings (``background_sync``, checkpoint and WAL intervals) from ``mkts.yml``.
    **options
        Passed to the backend (e.g. ``timeout=``, ``token=``, ``ca_file=`` for HTTP;
        ``background_sync=`` for local; ``storage_options=`` and ``snapshot=`` for object stores).
    """
    if target is None:
        target = default_root()
        if config is None and not os.environ.get("MKTS_ROOT") and Path("mkts.yml").is_file():
            config = load_config("mkts.yml")
    text = os.fspath(target)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    opts: dict[str, object] = dict(config.engine_options()) if config is not None and scheme in ("", "file") else {}
    opts.update(options)
    if read_only is not None:
        opts["read_only"] = read_only
    return opener_for(scheme)(text, **opts)


def default_backend() -> Backend:
    """The backend used when none is passed: opened on first use from :func:`connect`'s default."""
    global _default
    with _default_lock:
        if _default is None:
            _default = connect()
        return _default


def set_default_backend(backend: Backend | None) -> Backend | None:
    """Make ``backend`` the default for ``read_mkts``/``to_mkts``; returns the previous one."""
    global _default
    with _default_lock:
        previous, _default = _default, backend
        return previous
