"""Who can reach the server: the address it binds, TLS, and the warnings an operator must see.

The safe default: a server without ``auth`` listens on 127.0.0.1 only. Binding any other address
without ``auth`` is refused at start (with what to do instead), unless ``allow_anonymous: true``
says so explicitly, and then every start logs a warning. With ``auth`` (or that opt-in) an empty
``listen_host`` means every interface, as in MarketStore. Every listener (HTTP/WS, gRPC, and the
replication listener) binds through :func:`bind_host`, so none can be more open than the others.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from mktsframe.config import Config, ConfigError
from mktsframe.server.auth import TokenStore

__all__ = ["bind_host", "exposure_warnings", "is_loopback", "tls_files"]

LOOPBACK = "127.0.0.1"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable from this machine only."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def bind_host(config: Config) -> str:
    """The address to listen on; raises :class:`ConfigError` for a non-loopback address without auth."""
    host = config.listen_host.strip()
    if config.auth or config.allow_anonymous:
        return host or "0.0.0.0"
    if not host:
        return LOOPBACK
    if is_loopback(host):
        return host
    raise ConfigError(
        f"refusing to listen on {host} without authentication: anyone who reaches it could write, delete and "
        "destroy data. Set `auth: true` in mkts.yml (or pass --auth) and give each client a token with "
        "`mktsframe token add NAME --role read|write|admin` (see docs/security.md); or listen on 127.0.0.1; "
        "or, on a network you trust completely, set `allow_anonymous: true`."
    )


def tls_files(config: Config) -> tuple[str, str] | None:
    """``(cert, key)`` PEM paths when TLS is configured; raises :class:`ConfigError` if only one
    is set or a file is missing (a server must never fall back to plain text silently)."""
    cert, key = config.tls_cert_file, config.tls_key_file
    if not cert and not key:
        return None
    if not (cert and key):
        raise ConfigError("mkts.yml: TLS needs both tls_cert_file and tls_key_file")
    for name, path in (("tls_cert_file", cert), ("tls_key_file", key)):
        if not Path(path).expanduser().is_file():
            raise ConfigError(f"mkts.yml: {name} {path} does not exist")
    return str(Path(cert).expanduser()), str(Path(key).expanduser())


def exposure_warnings(config: Config, host: str) -> list[str]:
    """What to log as a warning at every start: anonymous access beyond loopback, auth without
    tokens, tokens over plain text beyond loopback."""
    out = []
    beyond = not is_loopback(host)
    if not config.auth and beyond:
        out.append(f"allow_anonymous: serving {host} WITHOUT authentication: anyone who reaches this port can "
                   "write, delete and destroy data (set auth: true, see docs/security.md)")  # fmt: skip
    if config.auth:
        tokens = TokenStore(config.root_path())
        if tokens.count() == 0:
            out.append(f"auth: true but no tokens yet in {tokens.path}: every request is refused until you run "
                       "`mktsframe token add NAME --role read|write|admin`")  # fmt: skip
        if beyond and not (config.tls_cert_file and config.tls_key_file):
            out.append(f"auth: tokens travel in plain text to {host}: set tls_cert_file and tls_key_file "
                       "unless a TLS proxy or a private network carries them")  # fmt: skip
    return out
