"""Backends by URL scheme: the registry :func:`mktsframe.connect` looks targets up in.

A backend is an *opener*, ``opener(target: str, **options) -> Backend``, registered for one or
more URL schemes. Ours: ``""``/``file`` (the local engine), ``http``/``https`` (a server) and the
object stores fsspec knows (``s3``, ``gcs``/``gs``, ``az``/``abfs``, ``memory``, …: a read-only
published root). Another package adds its own through the ``mktsframe.backends`` entry-point
group (``name = "pkg.module:opener"``, the name being the scheme), loaded on the first lookup of a
scheme nobody registered in-process, so importing mktsframe stays cheap.

:class:`BackendSpec` is the small picklable description a backend gives of itself (``spec``): a
dask task or an xarray array sent to another process opens its own backend from it, once per
process (:func:`open_spec`), and never pickles an engine or a socket.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import unquote, urlparse

from mktsframe.backend.base import Backend

__all__ = ["ENTRY_POINT_GROUP", "BackendSpec", "open_spec", "opener_for", "register_backend", "registered_schemes"]

ENTRY_POINT_GROUP = "mktsframe.backends"
Opener = Callable[..., Backend]

_lock = threading.Lock()
#: scheme → opener, or a ``"module:attr"`` string imported on first use (keeps imports lazy).
_openers: dict[str, Opener | str] = {
    "": "mktsframe.backend.local:open_target",
    "file": "mktsframe.backend.local:open_target",
    "http": "mktsframe.backend.http:open_target",
    "https": "mktsframe.backend.http:open_target",
}
#: Schemes served by the read-only object-storage backend when fsspec knows them.
_FSSPEC_OPENER = "mktsframe.backend.objstore:open_store"
_entry_points_loaded = False


def register_backend(scheme: str, opener: Opener | str, *, replace: bool = False) -> None:
    """Serve ``scheme://`` targets with ``opener(target, **options)`` (or a ``"module:attr"`` path).

    Raises ``ValueError`` if the scheme is taken and not ``replace``: two packages silently
    fighting over ``s3://`` would send reads to whichever imported last.
    """
    scheme = scheme.lower()
    with _lock:
        if scheme in _openers and not replace and _openers[scheme] != opener:
            raise ValueError(f"a backend is already registered for {scheme!r}:// (pass replace=True)")
        _openers[scheme] = opener


def registered_schemes() -> list[str]:
    """Schemes with an opener (entry points included; fsspec's protocols are served on demand)."""
    _load_entry_points()
    with _lock:
        return sorted(s for s in _openers if s)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    found = {ep.name.lower(): ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    with _lock:
        for scheme, value in found.items():
            _openers.setdefault(scheme, value)
        _entry_points_loaded = True


def _resolve(ref: Opener | str) -> Opener:
    if not isinstance(ref, str):
        return ref
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]


def opener_for(scheme: str) -> Opener:
    """The opener of ``scheme`` (``""`` = a plain path). ``ValueError`` naming the choices if none."""
    scheme = scheme.lower()
    ref = _openers.get(scheme)
    if ref is None:
        _load_entry_points()
        ref = _openers.get(scheme)
    if ref is None and _fsspec_knows(scheme):
        ref = _FSSPEC_OPENER
    if ref is None:
        raise ValueError(
            f"unsupported backend URL scheme {scheme!r}: use a path, file://, http(s):// or an fsspec "
            f"object-store URL (s3://, gcs://, az://, memory://); registered: {registered_schemes()}"
        )
    return _resolve(ref)


def _fsspec_knows(scheme: str) -> bool:
    from fsspec.registry import known_implementations, registry

    return scheme in registry or scheme in known_implementations


@dataclass(frozen=True)
class BackendSpec:
    """How to open a backend again in another process: its target URL and options.

    Picklable and hashable-by-content (``key``); options hold plain values only (no clients,
    no credentials objects). Equal specs share one backend per process (:func:`open_spec`).
    """

    target: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.target}|{sorted(self.options.items())!r}"

    def open(self) -> Backend:
        """A new backend (the caller closes it)."""
        from mktsframe.backend import connect

        return connect(self.target, **self.options)


_process_backends: dict[str, tuple[Backend, tuple[int, int] | None]] = {}
_process_lock = threading.Lock()


def _identity(spec: BackendSpec) -> tuple[int, int] | None:
    """What the store behind ``spec`` is *now*: for a local root (a path or ``file://``), its
    directory's (device, inode), so that a root deleted and made again at the same path is another
    store; ``None`` otherwise (object-store specs are pinned to one snapshot, a server is itself)."""
    target = spec.target
    scheme = urlparse(target).scheme.lower() if "://" in target else ""
    if scheme not in ("", "file"):
        return None
    path = unquote(urlparse(target).path) if scheme == "file" else target
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def open_spec(spec: BackendSpec) -> Backend:
    """The backend for ``spec`` in this process, opened on first use and kept: a dask worker runs
    many tasks against the same store, and opening it (an engine, a connection pool, a manifest
    fetch) costs more than a task's read. Closed at interpreter exit by the backends' own hooks.

    A local root is checked on every call (one ``stat``, ~2 µs): a read-only engine follows the
    writer's changes to a live root by itself, but a root replaced by another at the same path
    has other files and another catalog, so the kept backend is closed and the new root opened."""
    now = _identity(spec)
    with _process_lock:
        entry = _process_backends.get(spec.key)
        if entry is not None:
            if entry[1] == now:
                return entry[0]
            del _process_backends[spec.key]
            entry[0].close()  # engines close under their apply lock: a copy in progress finishes first
        be = spec.open()
        from mktsframe.backend.local import LocalBackend

        if isinstance(be, LocalBackend) and not be.engine.read_only:
            # This process writes the root (a Dataset pickled and loaded here): never keep the writer's
            # engine open past its owner's close; the handle goes when its user does.
            be.close_when_unreachable()
            return be
        _process_backends[spec.key] = (be, now)
        return be
