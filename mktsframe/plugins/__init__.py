"""Plugins: triggers (run after writes commit) and background workers (run beside the server).

Configured in ``mkts.yml`` as in MarketStore (``triggers: [{module, on, config}]``,
``bgworkers: [{module, name, config}]``) and found through the entry-point groups
``mktsframe.triggers`` and ``mktsframe.bgworkers``; see ``docs/plugins.md``.

Built in: the ``ondiskagg`` trigger (:mod:`mktsframe.plugins.ondiskagg`) and the ``gdaxfeeder``
candle feeder (:mod:`mktsframe.plugins.candle_feeder`).
"""

from mktsframe.plugins.base import BgWorker, BgWorkerFactory, Trigger, TriggerFactory
from mktsframe.plugins.discovery import TRIGGER_GROUP, WORKER_GROUP, PluginError
from mktsframe.plugins.lifecycle import Plugins, start_plugins

__all__ = [
    "TRIGGER_GROUP",
    "WORKER_GROUP",
    "BgWorker",
    "BgWorkerFactory",
    "PluginError",
    "Plugins",
    "Trigger",
    "TriggerFactory",
    "start_plugins",
]
