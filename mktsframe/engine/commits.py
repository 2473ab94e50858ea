"""Commit events: what streaming subscribers and plugin triggers hear after a change is durable.

The engine announces each acknowledged change (write, delete, destroy, create) to the listeners
registered on :attr:`Engine.commits <mktsframe.engine.Engine.commits>`, in commit order, on the
writer's thread and while the engine's write lock is held. That ordering is the point: a
subscriber that records the last event it saw can resume from storage without gaps or
duplicates. The price is that a listener must be quick and must not call back into the engine's
write path (that would deadlock): it should only hand the event to a queue or another thread.

A listener that raises is logged and otherwise ignored, so a broken plugin can never fail a write
that is already durable. Replay of the write-ahead log at startup does not emit events: nobody
can be listening yet, and the data was announced when it was first written.

A listener that keeps its own record of events (ondiskagg's journal) may also register a
``before_checkpoint`` hook. The engine calls it just before a checkpoint makes the log records
so far unnecessary for replay: it is the listener's moment to make what it recorded durable
(fsync), because after the checkpoint a change it lost in a power failure is no longer replayed
and reported by :meth:`LocalBackend.replayed_changes <mktsframe.backend.local.LocalBackend.replayed_changes>`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from mktsframe.changes import CommitEvent, Listener

__all__ = ["CommitEvent", "CommitListeners"]  # CommitEvent lives in mktsframe.changes

log = logging.getLogger("mktsframe.engine.commits")


#: The changes to the catalog: all a ``catalog_only`` listener hears.
CATALOG_OPS = frozenset({"create", "destroy"})


class CommitListeners:
    """The registry of listeners of one engine; falsy while none hears every change, so the write
    path can skip building events (listeners of the catalog alone hear creates and destroys)."""

    def __init__(self) -> None:
        self._listeners: tuple[Listener, ...] = ()
        #: Listeners of creates and destroys only (``add(catalog_only=True)``): a server caching
        #: bucket kinds must not make every write of 5,000 buckets build 5,000 events.
        self.catalog: tuple[Listener, ...] = ()
        self._hooks: tuple[Callable[[], None], ...] = ()  # before_checkpoint
        self._lock = threading.Lock()
        self._seq = 0

    def __bool__(self) -> bool:
        return bool(self._listeners)

    def __len__(self) -> int:
        return len(self._listeners)

    def add(
        self, listener: Listener, before_checkpoint: Callable[[], None] | None = None, *, catalog_only: bool = False
    ) -> Callable[[], None]:
        """Register ``listener`` (and its ``before_checkpoint`` hook, see the module docstring);
        returns a function that unregisters both (idempotent). ``catalog_only``: it hears creates
        and destroys alone (:data:`CATALOG_OPS`)."""
        hooks = () if before_checkpoint is None else (before_checkpoint,)
        with self._lock:
            if catalog_only:
                self.catalog = (*self.catalog, listener)
            else:
                self._listeners = (*self._listeners, listener)
            self._hooks = (*self._hooks, *hooks)

        def remove() -> None:
            with self._lock:
                self._listeners = tuple(x for x in self._listeners if x is not listener)
                self.catalog = tuple(x for x in self.catalog if x is not listener)
                self._hooks = tuple(x for x in self._hooks if x not in hooks)

        return remove

    def before_checkpoint(self) -> None:
        """Run the ``before_checkpoint`` hooks (the engine's write lock is held); failures are logged."""
        for hook in self._hooks:
            try:
                hook()
            except Exception:
                log.exception("before_checkpoint hook %r failed", hook)

    @property
    def last_seq(self) -> int:
        """The ``seq`` of the latest change (0 before any); stable while the engine's write lock is held."""
        return self._seq

    def next_seq(self) -> int:
        """Reserve the next sequence number (callers hold the engine's write lock)."""
        self._seq += 1
        return self._seq

    def skip(self, n: int) -> None:
        """Use up ``n`` sequence numbers at once (changes nobody listened to; write lock held)."""
        self._seq += n

    def hears(self, op: str) -> bool:
        """Whether any listener hears a change of kind ``op`` (an event need not be built otherwise)."""
        return bool(self._listeners) or (op in CATALOG_OPS and bool(self.catalog))

    def emit(self, event: CommitEvent) -> None:
        listeners = (*self._listeners, *self.catalog) if event.op in CATALOG_OPS else self._listeners
        for listener in listeners:  # a snapshot: add/remove during emit affects the next event
            try:
                listener(event)
            except Exception:
                log.exception("commit listener %r failed on %s %s", listener, event.op, event.key)
