"""Replication: read-only replicas that follow a master's write-ahead log (``docs/replication.md``).

The server starts one side or the other from ``mkts.yml``'s ``replication:`` section
(:func:`start_replication`); both speak only the :class:`~mktsframe.changes.ChangeFeed` and
:class:`~mktsframe.backend.base.Backend` protocols, never the engine.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mktsframe.config import Config, ConfigError
from mktsframe.replication.position import forget_master
from mktsframe.replication.settings import ReplicationSettings, parse_replication

if TYPE_CHECKING:
    from mktsframe.backend.base import Backend
    from mktsframe.replication.master import ReplicationMaster
    from mktsframe.replication.replica import Replica

__all__ = ["ReplicationSettings", "parse_replication", "start_replication"]

log = logging.getLogger("mktsframe.replication")


def start_replication(
    backend: Backend, config: Config, settings: ReplicationSettings, *, interceptors: Any = (),
    host: str | None = None,
) -> ReplicationMaster | Replica | None:
    """Start this server's side of replication (``None`` when it is off).

    ``interceptors`` (gRPC server interceptors: the server's token check) guard the master's
    stream, which listens on ``host`` (default: the server's ``listen_host``); a replica sends its
    ``settings.token`` as ``authorization: Bearer`` metadata.
    """
    meta_dir = Path(config.root_path()) / ".mkts"
    if settings.role != "replica":
        was = forget_master(meta_dir)
        if was is not None:
            log.warning("promoted: this root was a replica (at master position %d); it is now writable", was[1])
    if settings.role == "off":
        return None
    feed = getattr(backend, "changes", None)
    if feed is None or getattr(backend, "read_only", False):
        raise ConfigError("replication needs the server's own writable root (init_wal_cache: true)")
    if settings.role == "master":
        if config.wal_bypass:
            raise ConfigError("replication.enabled needs the write-ahead log: wal_bypass must be false")
        from mktsframe.replication.master import ReplicationMaster

        host = host or config.listen_host or "127.0.0.1"
        return ReplicationMaster(backend, feed, settings, meta_dir, host=host, interceptors=interceptors)
    from mktsframe.replication.replica import Replica

    if config.triggers:
        log.warning("replica with triggers: a trigger that writes (ondiskagg) writes into the replica's copy and "
                    "diverges it from the master; the master's derived buckets are replicated anyway")  # fmt: skip
    metadata = [("authorization", f"Bearer {settings.token}")] if settings.token else []
    return Replica(backend, settings, meta_dir, metadata=metadata)
