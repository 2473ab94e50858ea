"""Command-line settings and the uvicorn runner for ``python -m mktsframe.server``.

Precedence: command-line flags, then ``--config mkts.yml``, then the embedded defaults (root
``data/`` under the current directory, HTTP port 5993, gRPC port 5995 — MarketStore's defaults —
and, unlike MarketStore, 127.0.0.1 only unless ``auth`` is on: see :mod:`~.exposure`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from mktsframe.config import Config, load_config
from mktsframe.errors import MktsError
from mktsframe.replication.settings import parse_replication

__all__ = ["add_arguments", "config_from_args", "main", "serve"]

log = logging.getLogger("mktsframe.server")

_LEVELS = {"fatal": "critical", "error": "error", "warning": "warning", "warn": "warning",
           "info": "info", "debug": "debug"}  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The server's flags (shared by ``python -m mktsframe.server`` and ``mktsframe start``)."""
    parser.add_argument("--config", "-c", metavar="FILE", help="MarketStore-style mkts.yml to read")
    parser.add_argument("--root", metavar="DIR", help="data directory (default: data/ here, or the config's)")
    parser.add_argument("--port", type=int, metavar="N", help="HTTP port (default 5993)")
    parser.add_argument("--host", metavar="H",
                        help="listen address (default: 127.0.0.1; all interfaces with --auth)")
    parser.add_argument("--auth", action="store_true", default=None,
                        help="require a token on every listener (as auth: true in mkts.yml; see docs/security.md)")
    parser.add_argument("--grpc-port", type=int, metavar="N", help="gRPC port (default 5995; 0 = no gRPC API)")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    """The effective :class:`Config`; ``--root`` is relative to the current directory."""
    overrides: dict[str, object] = {}
    if args.root is not None:
        overrides["root_directory"] = str(Path(args.root).expanduser().resolve())
    if args.port is not None:
        if not 0 <= args.port <= 65535:
            raise SystemExit(f"--port must be between 0 and 65535, got {args.port}")
        overrides["listen_port"] = args.port
    if args.grpc_port is not None:
        if not 0 <= args.grpc_port <= 65535:
            raise SystemExit(f"--grpc-port must be between 0 and 65535, got {args.grpc_port}")
        overrides["grpc_listen_port"] = args.grpc_port
    if args.host is not None:
        overrides["listen_host"] = args.host
    if getattr(args, "auth", None):
        overrides["auth"] = True
    return load_config(args.config, **overrides)


#: Settings this server accepts but does not honour: whether each is set, and why it has no effect.
#: ``tests/server/test_settings_truth.py`` checks that each really changes nothing.
_UNSUPPORTED: tuple[tuple[str, Callable[[Config], bool], str], ...] = (
    ("utilities_url", lambda c: bool(c.utilities_url),
     "no separate listener; /heartbeat is always served on the main port"),
    ("init_catalog", lambda c: not c.init_catalog,
     "ignored; the catalog is always read lazily, one bucket at a time"),
    ("enable_last_known", lambda c: c.enable_last_known, "never implemented by MarketStore either; ignored"),
    ("stale_threshold", lambda c: c.stale_threshold is not None,
     "never implemented by MarketStore either; ignored"),
)  # fmt: skip


def unsupported_settings(config: Config) -> list[str]:
    """``"key: why"`` for each setting in ``config`` that this server accepts but does not honour
    (logged as a warning at start). Honoured settings are never listed; see :func:`setting_notes`."""
    return [f"{key}: {why}" for key, is_set, why in _UNSUPPORTED if is_set(config)]


def setting_notes(config: Config) -> list[str]:
    """What honoured settings with consequences an operator must know do (logged as warnings)."""
    out = []
    if config.wal_bypass:
        out.append("wal_bypass: writes skip the write-ahead log and reach the data files directly; they are "
                   "flushed only at checkpoints and shutdown, so a crash can lose or tear anything written "
                   "since the last checkpoint (meant for one-off bulk loads)")  # fmt: skip
    return out


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


#: glibc ``mallopt`` parameter number of ``M_MMAP_THRESHOLD``.
_M_MMAP_THRESHOLD = -3


def give_back_large_blocks(threshold: int = 1 << 20) -> bool:
    """Have glibc ``mmap`` every allocation of ``threshold`` bytes or more, so freed result arrays go
    back to the OS at once. By default glibc raises that threshold after the first large free (up
    to 32 MiB, then keeps such blocks in its heap): a server that once answered a whole-bucket
    query would stay that much bigger. Returns whether the setting was applied (glibc only).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return bool(libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False


#: Largest message a client may send on ``/ws`` (bytes): subscribe messages are a few KB.
WS_MAX_MESSAGE = 1 << 20


def _http_protocol() -> type:
    """uvicorn's HTTP protocol class (httptools' when installed)."""
    if _has("httptools"):
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return HttpToolsProtocol
    from uvicorn.protocols.http.h11_impl import H11Protocol

    return H11Protocol


def serve(config: Config) -> None:
    """Run the server in the foreground until SIGINT/SIGTERM.

    On a stop signal uvicorn stops accepting connections, lets in-flight requests finish (at
    most ``stop_grace_period`` seconds when it is > 0; without limit when it is 0), then the
    lifespan closes the engine, which checkpoints and trims the WAL.
    """
    import uvicorn

    from mktsframe.server.app import create_app
    from mktsframe.server.exposure import bind_host, exposure_warnings, tls_files
    from mktsframe.server.idle import idle_protocol

    class _Server(uvicorn.Server):
        """Marks the service not queryable (heartbeat 503) as soon as a stop signal arrives."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            service = getattr(app.state, "service", None)
            if service is not None:
                service.stopping = True
            super().handle_exit(sig, frame)

    level = _LEVELS.get(config.log_level.lower(), "info")
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mktsframe").setLevel(level.upper())
    host = bind_host(config)  # refuses a non-loopback address without auth (ConfigError)
    config.listen_host = host  # the gRPC API binds the same address
    tls = tls_files(config)
    app = create_app(config)
    http = _http_protocol()
    uv_config = uvicorn.Config(
        app,
        host=host,
        port=config.listen_port,
        loop="uvloop" if _has("uvloop") else "asyncio",
        http=idle_protocol(http, config.idle_timeout),
        ws="websockets-sansio" if _has("websockets") else "none",
        ws_per_message_deflate=False,  # deflate costs CPU on binary msgpack
        ws_max_size=WS_MAX_MESSAGE,  # what a client sends on /ws is a subscribe message
        lifespan="on",
        log_level=level,
        access_log=level == "debug",
        server_header=False,
        proxy_headers=False,  # no X-Forwarded-* rewriting: the app never uses the client address
        timeout_graceful_shutdown=config.stop_grace_period or None,
        ssl_certfile=tls[0] if tls else None,
        ssl_keyfile=tls[1] if tls else None,
    )
    give_back_large_blocks()
    for reason in unsupported_settings(config):
        log.warning("mkts.yml %s (not supported)", reason)
    for note in setting_notes(config):
        log.warning("mkts.yml %s", note)
    for warning in exposure_warnings(config, host):
        log.warning("mkts.yml %s", warning)
    scheme = "https" if tls else "http"
    log.info("mktsframe server: root %s, %s://%s:%d/rpc (auth %s)", config.root_path(), scheme, host,
             config.listen_port, "on" if config.auth else "off")
    _Server(uv_config).run()


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Entry point of ``python -m mktsframe.server``; returns the process exit code."""
    parser = add_arguments(argparse.ArgumentParser(prog=prog or "python -m mktsframe.server", description=__doc__))
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
        parse_replication(config.replication)
        serve(config)
    except MktsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
