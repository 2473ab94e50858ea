"""``mkts.yml``: MarketStore's configuration file, read into a typed :class:`Config`.

Every key of MarketStore's file is known here with MarketStore's default, plus a few of ours
(marked *mktsframe* in :data:`DEFAULT_CONFIG_TEXT`). The file is parsed with
``yaml.safe_load``; unknown keys produce a warning naming them (MarketStore ignored them
silently, which hid typos), and a bad value raises :class:`ConfigError` naming the key.

The data root used when no backend is given is, in order: ``$MKTS_ROOT``, ``root_directory``
of ``./mkts.yml``, then ``./data``.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mktsframe.errors import MktsError

__all__ = ["DEFAULT_CONFIG_TEXT", "Config", "ConfigError", "default_root", "load_config"]


class ConfigError(MktsError, ValueError):
    """``mkts.yml`` is unreadable or has a bad value."""


_TRUE = {"1", "t", "true", "yes", "on"}
_FALSE = {"0", "f", "false", "no", "off"}
_LOG_LEVELS = {"fatal", "error", "warning", "warn", "info", "debug"}


@dataclass
class Config:
    """The settings of one mktsframe server or engine (see :data:`DEFAULT_CONFIG_TEXT`)."""

    root_directory: str = "data"
    listen_host: str = ""
    listen_port: int = 5993
    grpc_listen_port: int | None = 5995
    grpc_max_send_msg_size: int = 1024
    grpc_max_recv_msg_size: int = 1024
    utilities_url: str | None = None
    timezone: str = "UTC"
    log_level: str = "info"
    stop_grace_period: float = 0.0
    wal_rotate_interval: int = 5
    disable_variable_compression: bool = False
    init_catalog: bool = True
    init_wal_cache: bool = True
    background_sync: bool = False
    wal_bypass: bool = False
    queryable: bool = True
    enable_add: bool = True
    enable_remove: bool = True
    enable_last_known: bool = False
    stale_threshold: int | None = None
    triggers: list[dict[str, Any]] = field(default_factory=list)
    bgworkers: list[dict[str, Any]] = field(default_factory=list)
    replication: dict[str, Any] = field(default_factory=dict)
    # mktsframe's own keys
    checkpoint_interval: float = 300.0
    sync_interval: float = 0.5
    wal_max_bytes: int = 256 << 20
    max_body_bytes: int = 256 << 20
    stream_max_wait: float = 0.15
    max_open_files: int = 0
    # mktsframe's access control and bounds (docs/security.md)
    auth: bool = False
    allow_anonymous: bool = False
    tls_cert_file: str = ""
    tls_key_file: str = ""
    max_reply_rows: int = 25_000_000
    idle_timeout: float = 30.0
    max_streams: int = 1000

    def engine_options(self) -> dict[str, Any]:
        """Keyword arguments for :class:`mktsframe.engine.Engine`."""
        return {
            "read_only": True if not self.init_wal_cache else None,
            "background_sync": self.background_sync,
            "sync_interval": self.sync_interval,
            "checkpoint_interval": self.checkpoint_interval,
            "wal_rotate_interval": self.wal_rotate_interval,
            "wal_max_bytes": self.wal_max_bytes,
            "wal_bypass": self.wal_bypass,
            "max_open_files": self.max_open_files or None,
        }

    def root_path(self, base: Path | None = None) -> Path:
        """``root_directory`` resolved against ``base`` (the config file's directory) or the CWD."""
        p = Path(self.root_directory).expanduser()
        return p if p.is_absolute() else (base or Path.cwd()) / p


def _as_bool(key: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, str)) and str(v).strip().lower() in _TRUE | _FALSE:
        return str(v).strip().lower() in _TRUE
    raise ConfigError(f"mkts.yml: {key} must be true or false, got {v!r}")


def _as_int(key: str, v: Any, *, minimum: int | None = None) -> int:
    try:
        out = int(str(v).strip().lstrip(":")) if not isinstance(v, bool) else None
    except ValueError:
        out = None
    if out is None or (minimum is not None and out < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ConfigError(f"mkts.yml: {key} must be an integer{bound}, got {v!r}")
    return out


def _as_float(key: str, v: Any) -> float:
    try:
        out = float(str(v).strip().rstrip("s"))
    except ValueError:
        raise ConfigError(f"mkts.yml: {key} must be a number of seconds, got {v!r}") from None
    if out < 0:
        raise ConfigError(f"mkts.yml: {key} must not be negative, got {v!r}")
    return out


def load_config(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Config:
    """Read ``mkts.yml`` (or only defaults when ``path`` is ``None``), then apply ``overrides``.

    A relative ``root_directory`` is resolved against the file's directory.
    """
    raw: dict[str, Any] = {}
    base: Path | None = None
    if path is not None:
        p = Path(path)
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {p} does not exist") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: invalid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping of settings at the top level")
        raw = loaded
        base = p.resolve().parent
    raw.update({k: v for k, v in overrides.items() if v is not None})
    cfg = Config()
    fields = {f.name: f for f in dataclasses.fields(Config)}
    unknown = sorted(str(k) for k in raw if k not in fields)  # YAML keys need not be strings (`1:`, `yes:`)
    if unknown:
        warnings.warn(f"mkts.yml: unknown key(s) ignored: {', '.join(unknown)}", UserWarning, stacklevel=2)
    for key, value in raw.items():
        if key not in fields or value is None:
            continue
        setattr(cfg, key, _convert(key, value, fields[key].type))
    if cfg.log_level.lower() not in _LOG_LEVELS:
        raise ConfigError(f"mkts.yml: log_level must be one of {sorted(_LOG_LEVELS)}, got {cfg.log_level!r}")
    try:
        zoneinfo.ZoneInfo(cfg.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"mkts.yml: unknown timezone {cfg.timezone!r}") from None
    if base is not None and not Path(cfg.root_directory).is_absolute():
        cfg.root_directory = str(base / cfg.root_directory)
    for key in ("tls_cert_file", "tls_key_file"):  # relative to the file, as the root
        value = getattr(cfg, key)
        if value and base is not None and not Path(value).expanduser().is_absolute():
            setattr(cfg, key, str(base / value))
    return cfg


def _convert(key: str, value: Any, typ: Any) -> Any:
    t = str(typ)
    if t == "bool":
        return _as_bool(key, value)
    if t.startswith("int"):
        return _as_int(key, value, minimum=0 if key != "wal_rotate_interval" else 1)
    if t == "float":
        return _as_float(key, value)
    if t.startswith("list"):
        if not isinstance(value, list) or not all(isinstance(x, dict) for x in value):
            raise ConfigError(f"mkts.yml: {key} must be a list of mappings")
        # YAML 1.1 reads the bare key ``on`` (MarketStore's trigger pattern key) as ``True``.
        return [{("on" if k is True else k): v for k, v in item.items()} for item in value]
    if t.startswith("dict"):
        if not isinstance(value, dict):
            raise ConfigError(f"mkts.yml: {key} must be a mapping")
        return value
    if not isinstance(value, (str, int)):
        raise ConfigError(f"mkts.yml: {key} must be a string, got {value!r}")
    return str(value)


def default_root() -> Path:
    """Where data lives when no backend is given: ``$MKTS_ROOT``, ``./mkts.yml``, or ``./data``."""
    env = os.environ.get("MKTS_ROOT")
    if env:
        return Path(env).expanduser()
    local = Path("mkts.yml")
    if local.is_file():
        return load_config(local).root_path()
    return Path("data")


DEFAULT_CONFIG_TEXT = """\
# mkts.yml — mktsframe configuration (MarketStore-compatible keys)
# Written by `mktsframe init`. Paths are relative to this file.

# Data directory (created if missing).
root_directory: data
# HTTP API (/rpc, /ws, /heartbeat). Empty host: 127.0.0.1 without auth, all interfaces with it.
listen_host: ""
listen_port: 5993
# gRPC API port (proto.Marketstore, for pymarketstore's grpc=True); 0 disables it.
grpc_listen_port: 5995
# Largest gRPC message sent / accepted, MB.
grpc_max_send_msg_size: 1024
grpc_max_recv_msg_size: 1024
# Zone used for zone-less times in requests (bars are always aligned in UTC).
timezone: UTC
# fatal | error | warning | info | debug
log_level: info
# Seconds to let in-flight requests finish on shutdown.
stop_grace_period: 0
# false (mktsframe default): every write is fsync'd before it is acknowledged.
# true (MarketStore default): the write-ahead log is synced every sync_interval seconds;
#   much faster small writes, but a machine crash can lose the last interval of writes.
background_sync: false
# Delete checkpointed write-ahead-log segments every N checkpoints.
wal_rotate_interval: 5
# false: the server refuses queries (e.g. while loading).
queryable: true
# Allow clients to create buckets (Create, or Write to a new key) / destroy them.
enable_add: true
enable_remove: true
# false: open the data read-only (no write-ahead log, no writes).
init_wal_cache: true
# mktsframe: seconds between checkpoints (year files flushed, log trimmed).
checkpoint_interval: 300
# mktsframe: log sync interval with background_sync, seconds.
sync_interval: 0.5
# mktsframe: largest accepted request body, bytes.
max_body_bytes: 268435456
# mktsframe: while writers go flat out, /ws subscribers get rows in batches at most this many
# seconds apart (lower: fresher rows, slower writers; 0: never batch on purpose).
stream_max_wait: 0.15
# mktsframe: most year files and tick partitions kept mapped at once (a map holds no file
# descriptor; the least recently used is closed to open another). 0: an eighth of
# vm.max_map_count, at most 8192.
max_open_files: 0
# mktsframe: access control (docs/security.md). true: every listener needs a token
# (`mktsframe token add NAME --role read|write|admin`). Without auth the server listens on
# 127.0.0.1 only, unless allow_anonymous: true (anyone who reaches the port may write and destroy).
auth: false
allow_anonymous: false
# mktsframe: TLS for HTTP/WS and gRPC (PEM files; paths relative to this file).
tls_cert_file: ""
tls_key_file: ""
# mktsframe: most rows one query may read or return (0: no bound); ask with limit or page past it.
max_reply_rows: 25000000
# mktsframe: seconds a connection may stall before sending a whole request (head or body).
idle_timeout: 30
# mktsframe: most stream patterns one /ws connection may subscribe to.
max_streams: 1000
# Plugins (see docs): triggers run after writes, bgworkers run beside the server.
triggers: []
bgworkers: []
"""
