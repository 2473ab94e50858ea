"""The ``replication:`` section of ``mkts.yml`` (MarketStore's keys, plus ``log_retention_mb``).

Master::

    replication: {enabled: true, listen_port: 5996, tls_enabled: false, cert_file: ..., key_file: ...,
                  log_retention_mb: 1024}

Replica::

    replication: {master_host: "HOST:5996", tls_enabled: false, cert_file: ..., retry_interval: 10s,
                  retry_backoff_coeff: 2, token: ...}

``master_host`` names the master's *replication* port. With ``auth: true`` on the master, a replica
presents a token with at least the read role (``token:``, or ``$MKTS_TOKEN``; see docs/security.md).
``cert_file`` is the master's certificate chain on the master and the certificate (or CA) the
replica trusts on a replica.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mktsframe.config import ConfigError, _as_bool

__all__ = ["ReplicationSettings", "parse_replication"]

_KEYS = {"enabled", "listen_port", "tls_enabled", "cert_file", "key_file", "master_host", "retry_interval",
         "retry_backoff_coeff", "log_retention_mb", "max_retry_interval", "token"}  # fmt: skip


@dataclass(frozen=True)
class ReplicationSettings:
    """What one server does for replication: ``role`` is ``"master"``, ``"replica"`` or ``"off"``."""

    role: str = "off"
    listen_port: int = 5996
    tls_enabled: bool = False
    cert_file: Path | None = None
    key_file: Path | None = None
    master_host: str = ""
    retry_interval: float = 10.0
    """Seconds before the first reconnection attempt (MarketStore: 10 s)."""
    retry_backoff_coeff: float = 2.0
    max_retry_interval: float = 300.0
    """Seconds the growing retry interval never exceeds (MarketStore's grew without bound)."""
    log_retention_bytes: int = 1 << 30
    """Checkpointed write-ahead log the master keeps for replicas to catch up from (default 1 GiB)."""
    token: str | None = field(default=None, repr=False)
    """The access token a replica presents to a master with ``auth`` (never logged)."""


def _number(key: str, v: Any, minimum: float) -> float:
    text = str(v).strip()
    scale = 1.0
    for suffix, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(suffix) and not isinstance(v, (int, float)):
            text, scale = text[: -len(suffix)], factor
            break
    try:
        out = float(text) * scale
    except ValueError:
        raise ConfigError(f"mkts.yml: replication.{key} must be a number, got {v!r}") from None
    if isinstance(v, bool) or not out >= minimum:
        raise ConfigError(f"mkts.yml: replication.{key} must be >= {minimum}, got {v!r}")
    return out


def _file(key: str, v: Any) -> Path:
    p = Path(str(v)).expanduser()
    if not p.is_file():
        raise ConfigError(f"mkts.yml: replication.{key}: no such file {str(p)!r}")
    return p


def parse_replication(raw: dict[str, Any] | None) -> ReplicationSettings:
    """Check the ``replication:`` map; raises :class:`ConfigError` naming the bad key."""
    raw = raw or {}
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ConfigError(f"mkts.yml: unknown replication key(s) {unknown}; known: {sorted(_KEYS)}")
    enabled = _as_bool("replication.enabled", raw.get("enabled", False))
    master = str(raw.get("master_host") or "").strip()
    if enabled and master:
        raise ConfigError("mkts.yml: replication has both enabled: true (master) and master_host (replica)")
    if not enabled and not master:
        return ReplicationSettings()
    tls = _as_bool("replication.tls_enabled", raw.get("tls_enabled", False))
    cert = _file("cert_file", raw["cert_file"]) if raw.get("cert_file") else None
    key = _file("key_file", raw["key_file"]) if raw.get("key_file") else None
    if tls and cert is None:
        raise ConfigError("mkts.yml: replication.tls_enabled needs cert_file")
    if enabled:
        if tls and key is None:
            raise ConfigError("mkts.yml: replication.tls_enabled on the master needs key_file")
        port = int(_number("listen_port", raw.get("listen_port", 5996), 0))
        if port > 65535:
            raise ConfigError(f"mkts.yml: replication.listen_port must be 0-65535, got {port}")
        retention = _number("log_retention_mb", raw.get("log_retention_mb", 1024), 0)
        return ReplicationSettings("master", port, tls, cert, key, log_retention_bytes=int(retention * (1 << 20)))
    host, _, port_text = master.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise ConfigError(f"mkts.yml: replication.master_host must be HOST:PORT (the master's replication port), "
                          f"got {master!r}")  # fmt: skip
    return ReplicationSettings(
        "replica",
        tls_enabled=tls,
        cert_file=cert,
        master_host=master,
        retry_interval=_number("retry_interval", raw.get("retry_interval", 10.0), 0.01),
        retry_backoff_coeff=_number("retry_backoff_coeff", raw.get("retry_backoff_coeff", 2.0), 1.0),
        max_retry_interval=_number("max_retry_interval", raw.get("max_retry_interval", 300.0), 0.01),
        token=str(raw.get("token") or os.environ.get("MKTS_TOKEN") or "").strip() or None,
    )
