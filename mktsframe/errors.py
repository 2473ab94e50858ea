"""Exceptions raised by mktsframe.

Every error a user can trigger derives from :class:`MktsError`, so ``except MktsError`` catches
them all. Messages name the key, column or file involved: the server forwards them verbatim to
network clients, so they must make sense without a traceback.
"""

from __future__ import annotations

__all__ = [
    "AccessDeniedError",
    "BucketExistsError",
    "BucketNotFoundError",
    "CorruptFileError",
    "FunctionError",
    "InvalidKeyError",
    "LockedError",
    "MktsError",
    "NoSpaceError",
    "ReadOnlyError",
    "SQLError",
    "SchemaMismatchError",
    "SyncFailedError",
]


class MktsError(Exception):
    """Base class of every mktsframe error."""


class InvalidKeyError(MktsError, ValueError):
    """A bucket key, timeframe or key part is malformed or unsafe."""


class BucketNotFoundError(MktsError, KeyError):
    """The key names no bucket in the catalog."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain message
        return str(self.args[0]) if self.args else "bucket not found"


class BucketExistsError(MktsError):
    """``create`` was asked for a bucket that exists with another schema."""


class SchemaMismatchError(MktsError, ValueError):
    """Written data does not fit the bucket's fixed schema."""


class CorruptFileError(MktsError):
    """A file on disk failed its integrity check; it is never served."""


class LockedError(MktsError):
    """Another process holds the root's write lock."""


class AccessDeniedError(MktsError, PermissionError):
    """The server refused the caller: no valid token (HTTP 401, gRPC ``UNAUTHENTICATED``) or a
    token whose role does not allow the operation (HTTP 403, gRPC ``PERMISSION_DENIED``)."""


class ReadOnlyError(MktsError):
    """A write was attempted through a read-only connection."""


class FunctionError(MktsError, ValueError):
    """A query function (``candlecandler(...)``, ``count(*)``, a candle duration…) is malformed or
    does not fit the data it is applied to."""


class SQLError(MktsError, ValueError):
    """A SQL statement could not be parsed or run.

    ``line`` and ``col`` (1-based) give the position of a syntax error when known; the message
    repeats them and shows the statement with a caret under the offending token.
    """

    def __init__(self, message: str, *, line: int | None = None, col: int | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.col = col


class NoSpaceError(MktsError, OSError):
    """The file system has no room for a write (``ENOSPC``). The write was refused before anything
    was logged or stored, so nothing of it is partial; earlier writes stay readable, and writes
    succeed again once space is freed (no restart needed)."""


class SyncFailedError(MktsError):
    """``fdatasync``/``msync``/``syncfs`` reported an error: the data it was flushing may be lost,
    and a second try could report success over lost pages (PostgreSQL's "fsyncgate"). The engine
    acknowledges nothing that depended on it and refuses every write until the root is reopened
    (which replays the write-ahead log); reads keep working."""
