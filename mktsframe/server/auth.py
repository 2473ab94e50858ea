"""Access tokens with roles: stored hashed under the root, verified the same way by every listener.

Transport-neutral on purpose: ``/rpc``, ``/heartbeat`` and ``/ws`` (:mod:`~.app`), gRPC
(:mod:`~.grpc_api`) and any further listener (replication) do the same three things:

1. ``auth = Authenticator.for_config(config)`` once at start (``None`` when ``auth`` is off);
2. per connection or call, ``principal = auth.authenticate(header)`` with the request's
   ``Authorization`` value (HTTP header or gRPC metadata ``authorization``), which raises
   :class:`~.service.CallError` with :attr:`~.service.Status.UNAUTHENTICATED` before any work;
3. put ``principal.role`` into the :class:`~.service.CallContext`: :meth:`Service.call` checks each
   operation's role there (``principal.require(Role.WRITE, "...")`` does it for work outside it).

Tokens are ``mkts_`` + 43 URL-safe characters (256 random bits), shown once by
``mktsframe token add``. Only their SHA-256 is stored, in ``<root>/.mkts-auth/tokens.json``
(directory 0700, file 0600, written atomically). A slow password hash would add nothing for
256-bit random secrets and would cost every request; comparisons are constant-time
(:func:`hmac.compare_digest` against every stored hash, no early exit). The file is re-read
when it changes (one ``stat`` per check), so ``token revoke`` takes effect on a running server
at its next request, without a restart. Tokens never appear in logs or error messages.

``Authorization`` forms accepted: ``Bearer TOKEN``, and ``Basic base64(NAME:TOKEN)`` (what
``requests``, hence the unmodified pymarketstore client, sends for ``http://NAME:TOKEN@host/rpc``);
with Basic, ``NAME`` must be the token's name (or empty), and a lone ``TOKEN`` as user name with
an empty password is accepted too.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import enum
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ANONYMOUS",
    "AUTH_DIR",
    "WWW_AUTHENTICATE",
    "AuthFailure",
    "Authenticator",
    "Principal",
    "Role",
    "TokenStore",
]

#: Where the token hashes live, relative to the data root (a hidden directory: never a bucket).
AUTH_DIR = ".mkts-auth"
_FILE = "tokens.json"
_PREFIX = "mkts_"
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
#: The ``WWW-Authenticate`` header of a 401 (HTTP clients retry with credentials on it).
WWW_AUTHENTICATE = 'Basic realm="mktsframe", charset="UTF-8"'


class Role(enum.IntEnum):
    """What a token may do; each role includes the ones below it.

    read: queries, SELECT, list, info, subscribe. write: also write, create, delete rows, SQL
    INSERT (and so CSV loads). admin: also destroy buckets.
    """

    READ = 1
    WRITE = 2
    ADMIN = 3

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r}: read, write or admin") from None


class AuthFailure(Exception):
    """A request without a valid token (the message never quotes the token)."""


@dataclass(frozen=True)
class Principal:
    """Who a request runs as: the token's ``name`` and ``role``."""

    name: str
    role: Role

    def allows(self, role: Role) -> bool:
        return self.role >= role


#: Everyone, when ``auth`` is off: no token needed and every operation allowed (as before auth).
ANONYMOUS = Principal("", Role.ADMIN)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class TokenStore:
    """The token file of one data root: add, list, revoke (the CLI) and look up (the server)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.dir = Path(root) / AUTH_DIR
        self.path = self.dir / _FILE
        self._seen: tuple[int, int, int] | None = None
        self._entries: list[tuple[str, Role, str]] = []  # (name, role, sha256 hex)

    # -- the CLI's side ---------------------------------------------------------------------------
    def add(self, name: str, role: Role) -> str:
        """A new token for ``name`` (a new one replaces an old one of that name); returns it, the
        only time it is ever seen."""
        if not _NAME.fullmatch(name):
            raise ValueError(f"token name {name!r}: 1-64 letters, digits, '_', '.', '@' or '-'")
        token = _PREFIX + secrets.token_urlsafe(32)
        with self._editing() as tokens:
            tokens[name] = {"role": role.name.lower(), "sha256": _digest(token), "created": int(time.time())}
        return token

    def revoke(self, name: str) -> bool:
        """Remove ``name``'s token; ``False`` if there was none."""
        with self._editing() as tokens:
            return tokens.pop(name, None) is not None

    def list(self) -> list[dict[str, Any]]:
        """``[{name, role, created (epoch seconds)}]`` sorted by name (hashes are not shown)."""
        tokens = self._read()
        return [{"name": n, "role": t["role"], "created": t.get("created", 0)} for n, t in sorted(tokens.items())]

    @contextlib.contextmanager
    def _editing(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write under an exclusive lock; the new file replaces the old atomically."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        with open(self.dir / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            tokens = self._read()
            yield tokens
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tokens-")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump({"version": 1, "tokens": tokens}, f, indent=1, sort_keys=True)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            dfd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def _read(self) -> dict[str, Any]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ValueError(f"{self.path} is unreadable ({exc}); fix or remove it") from None
        tokens = raw.get("tokens") if isinstance(raw, dict) else None
        if not isinstance(tokens, dict):
            raise ValueError(f"{self.path} has no 'tokens' map; fix or remove it")
        return tokens

    # -- the server's side ------------------------------------------------------------------------
    def _current(self) -> list[tuple[str, Role, str]]:
        """The entries, re-read when the file changed (one ``stat`` when it did not)."""
        try:
            st = os.stat(self.path)
            seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            seen = None
        if seen != self._seen:
            entries = []
            if seen is not None:
                try:
                    tokens = self._read()
                except ValueError:
                    tokens = {}  # a damaged file lets nobody in (never everyone)
                for name, t in tokens.items():
                    with contextlib.suppress(KeyError, ValueError, TypeError, AttributeError):
                        entries.append((str(name), Role.parse(t["role"]), str(t["sha256"])))
            self._entries, self._seen = entries, seen
        return self._entries

    def count(self) -> int:
        return len(self._current())

    def lookup(self, token: str) -> Principal | None:
        """The principal of ``token``, or ``None``; every stored hash is compared (constant time)."""
        digest = _digest(token)
        found = None
        for name, role, stored in self._current():
            if hmac.compare_digest(digest, stored):
                found = Principal(name, role)
        return found


class Authenticator:
    """Turns an ``Authorization`` value into a :class:`Principal` (see the module docstring)."""

    def __init__(self, store: TokenStore) -> None:
        self.store = store

    @classmethod
    def for_config(cls, config: Any) -> Authenticator | None:
        """The authenticator of a server's ``config`` (``auth: true``), else ``None`` (open server)."""
        return cls(TokenStore(config.root_path())) if getattr(config, "auth", False) else None

    def authenticate(self, authorization: str | bytes | None) -> Principal:
        """The caller of a request with this ``Authorization`` value; raises :class:`AuthFailure`."""
        if isinstance(authorization, bytes):
            authorization = authorization.decode("latin-1")
        if not authorization:
            raise AuthFailure("authentication required: this server needs a token (Authorization: Bearer TOKEN, "
                              "or http://NAME:TOKEN@host:port/rpc); see docs/security.md")  # fmt: skip
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        name: str | None = None
        if scheme.lower() == "bearer":
            token = value
        elif scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
            except (binascii.Error, ValueError):
                raise AuthFailure("authentication failed: malformed Basic credentials") from None
            name, token = (user, password) if password else ("", user)
        else:
            raise AuthFailure(f"authentication failed: unsupported scheme {scheme[:20]!r} (use Bearer or Basic)")
        principal = self.store.lookup(token) if token else None
        if principal is None or (name and name != principal.name):
            raise AuthFailure("authentication failed: unknown or revoked token (or a name that is not the token's)")
        return principal
