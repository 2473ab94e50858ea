"""Finding a plugin's factory from the ``module:`` of an ``mkts.yml`` entry.

MarketStore loads Go ``.so`` files; here the same names resolve to Python entry points, so an
unchanged MarketStore config works and any installed distribution can add plugins:

* ``ondiskagg.so``, ``/path/to/ondiskagg.so`` or ``ondiskagg`` → entry point ``ondiskagg`` of the
  group (``mktsframe.triggers`` or ``mktsframe.bgworkers``);
* ``package.module:attribute`` → that object, imported directly (handy in a notebook, no packaging).
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points
from typing import Any

from mktsframe.errors import MktsError

__all__ = ["TRIGGER_GROUP", "WORKER_GROUP", "PluginError", "find_factory", "plugin_name"]

log = logging.getLogger("mktsframe.plugins")

TRIGGER_GROUP = "mktsframe.triggers"
WORKER_GROUP = "mktsframe.bgworkers"

#: The built-in plugins, as declared in pyproject.toml; used when the installed metadata lacks them
#: (a source tree on ``PYTHONPATH``, or an editable install made before a plugin was added).
BUILTINS = {
    TRIGGER_GROUP: {"ondiskagg": "mktsframe.plugins.ondiskagg:new_trigger"},
    WORKER_GROUP: {"gdaxfeeder": "mktsframe.plugins.candle_feeder:new_bgworker"},
}


class PluginError(MktsError, ValueError):
    """A plugin entry cannot be loaded (unknown module, bad entry, factory failed)."""


def plugin_name(module: str) -> str:
    """The entry-point name of a MarketStore ``module:`` value (directory and ``.so`` dropped)."""
    name = module.strip().replace("\\", "/").rsplit("/", 1)[-1]
    return name.removesuffix(".so")


def find_factory(module: Any, group: str) -> Any:
    """The factory named by ``module`` in entry-point ``group``; :class:`PluginError` if none."""
    if not isinstance(module, str) or not module.strip():
        raise PluginError(f"plugin entry needs a 'module:' string, got {module!r}")
    if ":" in module and "/" not in module:
        return _import(module)
    name = plugin_name(module)
    found = [ep for ep in entry_points(group=group) if ep.name == name]
    if not found and name in BUILTINS.get(group, {}):
        return _import(BUILTINS[group][name])
    if not found:
        known = sorted({ep.name for ep in entry_points(group=group)})
        raise PluginError(f"no plugin {name!r} in entry-point group {group} (installed: {', '.join(known) or 'none'})")
    if len({ep.value for ep in found}) > 1:
        log.warning("plugin %r is provided by several packages (%s); using %s",
                    name, ", ".join(ep.value for ep in found), found[0].value)  # fmt: skip
    try:
        return found[0].load()
    except Exception as exc:
        raise PluginError(f"cannot load plugin {name!r} ({found[0].value}): {exc}") from exc


def _import(target: str) -> Any:
    """The object of ``package.module:attribute``."""
    mod_name, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(mod_name.strip())
        for part in attr.strip().split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise PluginError(f"cannot import plugin {target!r}: {exc}") from exc
    return obj
