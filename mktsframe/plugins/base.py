"""What a plugin is: the trigger and background-worker protocols, and their factories.

A plugin is found by name through a Python entry point (group ``mktsframe.triggers`` or
``mktsframe.bgworkers``) whose object is a *factory* — MarketStore's ``NewTrigger`` /
``NewBgWorker`` — called once with the entry's ``config:`` mapping from ``mkts.yml``.

Triggers and workers run on threads of their own (see :mod:`mktsframe.plugins.triggers` and
:mod:`mktsframe.plugins.workers`), so a plugin that raises or hangs never fails or blocks a write.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from mktsframe.backend.base import Backend
from mktsframe.changes import CommitEvent

__all__ = ["BgWorker", "BgWorkerFactory", "Trigger", "TriggerFactory"]


@runtime_checkable
class Trigger(Protocol):
    """Runs after writes commit, on the buckets its ``on:`` glob matches.

    Optional methods, called when present:

    * ``start(self, backend) -> None`` — once, on the trigger's thread, before any ``fire``
      (events committed meanwhile are queued). For crash repair and state loading.
    * ``stop(self) -> None`` — once at shutdown, after the last ``fire`` returned.
    """

    def fire(self, backend: Backend, events: Sequence[CommitEvent]) -> None:
        """Handle ``events`` (in commit order; one or more, possibly for several keys).

        Called on the trigger's own thread, never concurrently with itself. It may write through
        ``backend``; an exception is logged and the next batch is still delivered.
        """


@runtime_checkable
class BgWorker(Protocol):
    """Runs beside the server from start to shutdown (a feeder, a poller…)."""

    def run(self, backend: Backend, stop: threading.Event) -> None:
        """Work until ``stop`` is set, then return promptly (wait with ``stop.wait(seconds)``
        rather than ``time.sleep`` so shutdown is not delayed). An exception is logged and, if the
        entry says ``restart: true`` (the default), ``run`` is called again after a backoff."""


TriggerFactory = Callable[[Mapping[str, Any]], Trigger]
"""``factory(config) -> trigger``: the entry-point object of group ``mktsframe.triggers``."""

BgWorkerFactory = Callable[[Mapping[str, Any]], BgWorker]
"""``factory(config) -> worker``: the entry-point object of group ``mktsframe.bgworkers``."""
