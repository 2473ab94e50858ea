"""The local backend: a handle on the :class:`~mktsframe.engine.Engine` of a data root.

One engine serves each root per process (a second engine would fight over the write lock), so
handles are reference-counted: ``close()`` on a handle closes the engine only when it was the
last one. Every handle is closed at interpreter exit, which checkpoints cleanly.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from mktsframe.backend.base import Backend, Batch, BucketInfo, Capabilities, Stacked
from mktsframe.backend.manifest import MANIFEST
from mktsframe.backend.registry import BackendSpec
from mktsframe.changes import ChangeFeed, CommitEvent
from mktsframe.engine import Engine
from mktsframe.errors import MktsError, ReadOnlyError
from mktsframe.streaming.feed import DEFAULT_MAX_ROWS, OverflowPolicy
from mktsframe.times import TimeLike, to_ns

if TYPE_CHECKING:
    from mktsframe.streaming.subscription import Subscription

__all__ = ["LocalBackend", "open_local", "open_target"]

_lock = threading.Lock()
_engines: dict[Path, tuple[Engine, int]] = {}


def open_local(root: str | os.PathLike[str], **options: object) -> LocalBackend:
    """A handle on the engine of ``root``, opening it if this process has not yet."""
    path = Path(root).expanduser().resolve()
    with _lock:
        entry = _engines.get(path)
        if entry is None or entry[0]._closed:
            engine = Engine(path, **options)  # type: ignore[arg-type]
            _engines[path] = (engine, 1)
        else:
            engine, refs = entry
            if options.get("read_only") is False and engine.read_only:
                raise MktsError(f"{path} is already open read-only in this process")
            _engines[path] = (engine, refs + 1)
    # A handle asked for read-only stays read-only even when it shares this process's writable engine.
    return LocalBackend(engine, read_only=options.get("read_only") is True)


def open_target(target: str, **options: Any) -> Backend:
    """The registry's opener for a path or ``file://`` URL (see :mod:`.registry`): the local engine,
    or the object-storage reader when the folder holds a root *published* by ``sync`` (a manifest)."""
    if target.lower().startswith("file://"):
        target = unquote(urlparse(target).path)
    if (Path(target) / MANIFEST).is_file() and not (Path(target) / ".mkts").exists():
        from mktsframe.backend.objstore import open_store  # a root published here by sync, not a data root

        return open_store(Path(target).resolve().as_uri(), **options)
    return open_local(Path(target), **options)


def _release(engine: Engine) -> None:
    with _lock:
        entry = _engines.get(engine.root)
        if entry is None or entry[0] is not engine:
            engine.close()
            return
        refs = entry[1] - 1
        if refs > 0:
            _engines[engine.root] = (engine, refs)
            return
        del _engines[engine.root]
    engine.close()


@atexit.register
def _close_all() -> None:
    with _lock:
        engines = [e for e, _ in _engines.values()]
        _engines.clear()
    for e in engines:
        e.close()


class LocalBackend:
    """The :class:`~mktsframe.backend.base.Backend` over a directory on this machine."""

    capabilities = Capabilities(commit_listeners=True, stacked_query=True, stacked_write=True, grid_query=True)

    def __init__(self, engine: Engine, *, read_only: bool = False) -> None:
        self.engine = engine
        self._read_only = read_only
        self._closed = False
        self._finalizer: weakref.finalize[Any, LocalBackend] | None = None

    def close_when_unreachable(self) -> None:
        """Release this handle when nothing refers to it any more (``close()`` still works): for
        handles a library opens on the caller's behalf, such as an unpickled dask array's."""
        if self._finalizer is None and not self._closed:
            self._finalizer = weakref.finalize(self, _release, self.engine)

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else "read-write"
        return f"<LocalBackend {str(self.engine.root)!r} {mode}>"

    @property
    def root(self) -> Path:
        return self.engine.root

    @property
    def read_only(self) -> bool:
        return self._read_only or self.engine.read_only

    @property
    def spec(self) -> BackendSpec:
        """This root, read-only: what a dask worker or another process opens (never the writer's lock)."""
        return BackendSpec(str(self.engine.root), {"read_only": True})

    def _check_writable(self) -> None:
        if self._read_only:
            raise ReadOnlyError(f"{self.engine.root} is open read-only; writes are refused")

    def write(self, key: str, batch: Batch, *, variable_length: bool = False) -> None:
        self._check_writable()
        self.engine.write(key, batch, variable_length=variable_length)

    def write_many(
        self, items: Mapping[str, Batch] | Sequence[tuple[str, Batch]], *, variable_length: bool = False
    ) -> None:
        self._check_writable()
        self.engine.write_many(items, variable_length=variable_length)

    def write_stacked(self, stacked: Stacked, *, variable_length: bool = False) -> None:
        """See :meth:`Engine.write_stacked <mktsframe.engine.Engine.write_stacked>`."""
        self._check_writable()
        self.engine.write_stacked(stacked, variable_length=variable_length)

    def writes_without_waiting(self) -> contextlib.AbstractContextManager[bool]:
        """See :meth:`Engine.writes_without_waiting` (``False`` when open read-only)."""
        if self.read_only:
            return contextlib.nullcontext(False)
        return self.engine.writes_without_waiting()

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
        return self.engine.query(key, **_engine_range(start, end), columns=columns, limit=limit,
                                 limit_from_start=limit_from_start)  # fmt: skip

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
        """:meth:`query` as one :class:`~mktsframe.records.Stacked`, built straight from the year
        files where it can be (see :meth:`Engine.query_stacked <mktsframe.engine.Engine.query_stacked>`)."""
        return self.engine.query_stacked(key, **_engine_range(start, end), columns=columns, limit=limit,
                                         limit_from_start=limit_from_start)  # fmt: skip

    def query_grid(
        self,
        key: str,
        *,
        start: TimeLike,
        end: TimeLike,
        columns: Sequence[str] | None = None,
        limit: int | None = None,
        max_rows: int | None = None,
    ) -> Stacked | None:
        """The grid read of :meth:`query_stacked`, or ``None`` where it does not apply or could
        exceed ``max_rows`` rows (see :meth:`Engine.query_grid <mktsframe.engine.Engine.query_grid>`)."""
        r = _engine_range(start, end)
        if r["start"] is None or r["end"] is None:
            return None
        return self.engine.query_grid(key, start=r["start"], end=r["end"], columns=columns, limit=limit,
                                      max_rows=max_rows)  # fmt: skip

    def list_symbols(self) -> list[str]:
        return self.engine.list_symbols()

    def list_keys(self) -> list[str]:
        return self.engine.list_keys()

    def info(self, key: str) -> BucketInfo:
        return self.engine.info(key)

    def create(self, key: str, columns: Sequence[tuple[str, str]], *, variable_length: bool = False) -> None:
        self._check_writable()
        self.engine.create(key, columns, variable_length=variable_length)

    def delete(self, key: str, *, start: TimeLike = None, end: TimeLike = None) -> int:
        self._check_writable()
        return self.engine.delete(key, start=to_ns(start, name="start"), end=to_ns(end, name="end"))

    def destroy(self, key: str) -> None:
        self._check_writable()
        self.engine.destroy(key)

    def on_commit(
        self,
        listener: Callable[[CommitEvent], None],
        before_checkpoint: Callable[[], None] | None = None,
        *,
        catalog_only: bool = False,
    ) -> Callable[[], None]:
        """Call ``listener`` after every acknowledged change made through this process's engine.

        Events arrive in commit order on the writer's thread (see :mod:`mktsframe.engine.commits`):
        the listener must return quickly and must not write. Changes made by another process are
        not seen. ``before_checkpoint`` runs before each checkpoint of the write-ahead log, so a
        listener that journals events can make them durable first. ``catalog_only``: hear creates
        and destroys alone (a cache of what exists), so writes build no events for this listener.
        Returns a function that unregisters both.
        """
        return self.engine.listen(listener, before_checkpoint, catalog_only=catalog_only)

    @property
    def changes(self) -> ChangeFeed:
        """This root's change feed (the engine, seen only through :class:`~mktsframe.changes.ChangeFeed`):
        what the server's streaming hub and replication consume."""
        return self.engine

    def replayed_changes(self) -> list[tuple[str, str, int | None, int | None]]:
        """Changes the engine replayed from its write-ahead log when it opened: ``(op, key,
        start_ns, end_ns)``, times inclusive, UTC, ``None`` = unbounded.

        Empty after a clean close. After a crash these were acknowledged, but commit listeners of
        the crashed process may never have heard of them: a trigger keeping derived data (e.g.
        ``ondiskagg``) recomputes them at start. Every change a listener missed is here, because
        the engine checkpoints only after its listeners have been told.
        """
        return list(self.engine.recovery.changes)

    def subscribe(
        self,
        pattern: str | Iterable[str],
        *,
        since: TimeLike = None,
        callback: Callable[[dict[str, Any]], Any] | None = None,
        max_rows: int = DEFAULT_MAX_ROWS,
        policy: OverflowPolicy = "drop_oldest",
    ) -> Subscription:
        """Hear this process's commits to buckets matching ``pattern`` (see :mod:`mktsframe.streaming`).

        Listening starts before this returns. Changes made by other processes are not heard."""
        from mktsframe.streaming.local import subscribe_local

        return subscribe_local(self.changes, pattern, since=since, callback=callback, max_rows=max_rows, policy=policy)

    def sync(self) -> None:
        """Make all writes durable now (only matters with ``background_sync``)."""
        self.engine.sync()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._finalizer is not None:
                self._finalizer()  # releases once, whichever of the two comes first
            else:
                _release(self.engine)

    def __enter__(self) -> LocalBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _engine_range(start: TimeLike, end: TimeLike) -> dict[str, int | None]:
    """``start``/``end`` as the engine takes them: int nanoseconds since the epoch, UTC."""
    return {"start": to_ns(start, name="start"), "end": to_ns(end, name="end")}
