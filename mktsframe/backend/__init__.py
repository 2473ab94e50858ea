"""Backends: the one storage interface and :func:`connect`, which picks an implementation."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

from mktsframe.backend.base import Backend, Batch, BucketInfo
from mktsframe.config import Config, default_root, load_config

__all__ = ["Backend", "Batch", "BucketInfo", "connect", "default_backend", "set_default_backend"]

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
        or MarketStore server. Default: ``$MKTS_ROOT``, ``./mkts.yml``'s root, else ``./data``.
    read_only : bool, optional
        Local only. ``None`` writes if no other process holds the root's write lock and reads
        otherwise; ``False`` raises :class:`~mktsframe.errors.LockedError` if it is held.
    config : Config, optional
        Engine settings (``background_sync``, checkpoint and WAL intervals) from ``mkts.yml``.
    **options
        Passed to the backend (e.g. ``timeout=``, ``token=``, ``ca_file=`` for HTTP;
        ``background_sync=`` for local).
    """
    if target is None:
        target = default_root()
        if config is None and not os.environ.get("MKTS_ROOT") and Path("mkts.yml").is_file():
            config = load_config("mkts.yml")
    text = os.fspath(target)
    scheme = urlparse(text).scheme.lower() if "://" in text else ""
    if scheme in ("http", "https"):
        from mktsframe.backend.http import HTTPBackend

        return HTTPBackend(text, **options)  # type: ignore[arg-type]
    if scheme == "file":
        text = unquote(urlparse(text).path)
    elif scheme:
        raise ValueError(f"unsupported backend URL scheme {scheme!r} in {text!r} (use a path, file:// or http://)")
    from mktsframe.backend.local import open_local

    opts: dict[str, object] = dict(config.engine_options()) if config is not None else {}
    opts.update(options)
    if read_only is not None:
        opts["read_only"] = read_only
    return open_local(Path(text), **opts)


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
