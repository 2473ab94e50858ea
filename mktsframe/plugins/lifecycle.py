"""Starting and stopping every configured plugin: :func:`start_plugins` and its :class:`Plugins` handle.

The server calls it when it starts (after the engine opened, before it accepts requests) and
stops the handle on shutdown (before the engine closes). A notebook can do the same on a local
backend, so triggers such as ondiskagg also run without a server.

An entry that cannot be loaded (unknown module, factory raising) is logged and skipped, as in
MarketStore: a broken plugin never stops the server.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from mktsframe.backend.base import Backend, capabilities
from mktsframe.config import Config, load_config
from mktsframe.plugins.discovery import TRIGGER_GROUP, WORKER_GROUP, PluginError, find_factory, plugin_name
from mktsframe.plugins.triggers import TriggerRunner
from mktsframe.plugins.workers import WorkerRunner

__all__ = ["DEFAULT_STOP_TIMEOUT", "Plugins", "start_plugins"]

log = logging.getLogger("mktsframe.plugins")

#: Seconds :meth:`Plugins.stop` waits for each plugin when ``stop_grace_period`` is 0 (unset).
DEFAULT_STOP_TIMEOUT = 10.0


class Plugins:
    """The running plugins of one backend. Stop it (or use it as a context manager) before closing
    the backend."""

    def __init__(self, triggers: Sequence[TriggerRunner], workers: Sequence[WorkerRunner], timeout: float) -> None:
        self.triggers: dict[str, TriggerRunner] = {t.name: t for t in triggers}
        self.workers: dict[str, WorkerRunner] = {w.name: w for w in workers}
        self.timeout = timeout
        self.skipped: list[str] = []
        """Entries that could not be loaded, each with the reason."""
        self._stopped = False

    def __repr__(self) -> str:
        return f"<Plugins triggers={list(self.triggers)} bgworkers={list(self.workers)}>"

    def __enter__(self) -> Plugins:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the bgworkers, then fire what the triggers still have queued and stop them.

        Waits at most ``timeout`` seconds per plugin (default: the config's ``stop_grace_period``,
        or :data:`DEFAULT_STOP_TIMEOUT` when that is 0). Returns ``False`` if any plugin had to be
        abandoned. Idempotent.
        """
        if self._stopped:
            return True
        self._stopped = True
        wait = self.timeout if timeout is None else timeout
        ok = True
        for w in self.workers.values():  # workers first: their last writes still reach the triggers
            ok &= w.stop(wait)
        for t in self.triggers.values():
            ok &= t.stop(wait)
        return ok

    def status(self) -> dict[str, Any]:
        """Counters of every plugin (``fired``, ``dropped``, ``errors``, ``crashes``…)."""
        return {"triggers": [t.status() for t in self.triggers.values()],
                "bgworkers": [w.status() for w in self.workers.values()], "skipped": list(self.skipped)}  # fmt: skip


def start_plugins(
    backend: Backend, config: Config | Mapping[str, Any] | str | os.PathLike[str] | None = None
) -> Plugins:
    """Start the ``triggers:`` and ``bgworkers:`` of ``config`` (a :class:`Config`, a mapping with
    those keys as in ``mkts.yml``, or the path of an ``mkts.yml``) on ``backend``.

    Triggers need a backend that announces commits (the local one); they are refused with
    :class:`PluginError` on others. Bgworkers run with any backend.
    """
    if config is None or isinstance(config, (str, os.PathLike)):
        config = load_config(config)
    if isinstance(config, Config):
        triggers, workers, grace = config.triggers, config.bgworkers, config.stop_grace_period
    else:
        triggers = list(config.get("triggers") or [])
        workers = list(config.get("bgworkers") or [])
        grace = float(config.get("stop_grace_period") or 0)
    if triggers and not capabilities(backend).commit_listeners:
        raise PluginError(f"triggers need a local backend (one that announces commits), not {backend!r}")
    plugins = Plugins([], [], grace or DEFAULT_STOP_TIMEOUT)
    for i, entry in enumerate(triggers):
        made = _make(entry, TRIGGER_GROUP, f"triggers[{i}]", plugins)
        if made is not None:
            name = _unique(made[0], plugins.triggers)
            runner = TriggerRunner(name, made[1], backend, entry)
            plugins.triggers[name] = runner
    for i, entry in enumerate(workers):
        made = _make(entry, WORKER_GROUP, f"bgworkers[{i}]", plugins)
        if made is not None:
            name = _unique(str(entry.get("name") or made[0]), plugins.workers)
            plugins.workers[name] = WorkerRunner(name, made[1], backend, entry)
    for t in plugins.triggers.values():
        t.start()
        log.info("trigger %s started on %r", t.name, t.on)
    for w in plugins.workers.values():
        w.start()
        log.info("bgworker %s started", w.name)
    return plugins


def _make(entry: Any, group: str, where: str, plugins: Plugins) -> tuple[str, Any] | None:
    """``(name, plugin)`` built by the entry's factory, or ``None`` (logged) if that fails."""
    try:
        if not isinstance(entry, Mapping):
            raise PluginError(f"expected a mapping with 'module:', got {entry!r}")
        factory = find_factory(entry.get("module"), group)
        cfg = entry.get("config") or {}
        if not isinstance(cfg, Mapping):
            raise PluginError(f"'config:' must be a mapping, got {cfg!r}")
        plugin = factory(dict(cfg))
        required = "fire" if group == TRIGGER_GROUP else "run"
        if not callable(getattr(plugin, required, None)):
            raise PluginError(f"factory returned {plugin!r}, which has no {required}() method")
    except Exception as exc:
        reason = f"mkts.yml {where}: {exc}"
        plugins.skipped.append(reason)
        log.error("%s; plugin skipped", reason, exc_info=not isinstance(exc, PluginError))
        return None
    return plugin_name(str(entry["module"]).split(":")[-1]), plugin


def _unique(name: str, taken: Mapping[str, Any]) -> str:
    out, n = name, 1
    while out in taken:
        n += 1
        out = f"{name}#{n}"
    return out
