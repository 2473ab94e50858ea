"""Commit events and the change-feed protocol: what streaming, plugins and replication consume.

A *change feed* is anything that announces each durable change (write, delete, destroy, create)
in commit order and can hold changes off for a moment (a barrier) so a reader can cut a
consistent snapshot between two commits. The local engine is one
(:class:`mktsframe.engine.Engine`); the streaming hub, ``since=`` resume, plugin triggers and
replication speak only this protocol, never the concrete engine, so a replica applying a
master's changes can feed the same subscribers.

Sequence numbers (``seq``) order the changes of one feed; they are strictly increasing while the
feed is open. Times are int64 nanoseconds since the Unix epoch, UTC.

A feed also reads its write-ahead log from a *position* (:meth:`ChangeFeed.changes_since`): a log
sequence number, durable and the same across restarts, unlike ``CommitEvent.seq``, which counts
from 0 in each process. Replication resumes from positions; listeners serve live subscribers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from mktsframe.errors import MktsError
from mktsframe.records import Batch

__all__ = ["ChangeCursor", "ChangeFeed", "CommitEvent", "CommitOp", "Listener", "LogGone", "LoggedChange"]

CommitOp = Literal["create", "write", "delete", "destroy"]


@dataclass(frozen=True)
class CommitEvent:
    """One durable change to one bucket.

    Attributes
    ----------
    op : {"create", "write", "delete", "destroy"}
    key : str
        Canonical bucket key, ``SYMBOL/TIMEFRAME/ATTRGROUP`` (aliases already resolved).
    seq : int
        Position of the change in this engine's commit order (strictly increasing per process).
    batch : Batch or None
        For ``write``: the rows as stored (index in int64 nanoseconds UTC, sorted, one row per
        timestamp for fixed-timeframe buckets; columns in bucket order).
    start, end : int or None
        For ``delete``: the removed range in nanoseconds UTC, inclusive; ``None`` = unbounded.
    """

    op: CommitOp
    key: str
    seq: int
    batch: Batch | None = None
    start: int | None = None
    end: int | None = None


Listener = Callable[[CommitEvent], None]


class LogGone(MktsError):
    """The log no longer holds the changes after the asked position (deleted at a checkpoint, or
    the position is ahead of the log): start again from a copy of the data."""


@dataclass(frozen=True)
class LoggedChange:
    """One durable record of the write-ahead log, as :meth:`ChangeFeed.changes_since` reads it.

    Attributes
    ----------
    seq : int
        The record's WAL sequence number: durable, the same across restarts (a position).
    ops : tuple of (meta, arrays)
        What the record did, in order, applied all together: ``meta["op"]`` is ``create`` (with
        ``columns``, ``record_type``), ``write`` (``arrays[0]``: bar-start **seconds** for fixed
        buckets, exact **nanoseconds** for tick buckets; then the columns in bucket order),
        ``delete`` (``start``/``end`` bar-start seconds, or ``start_ns``/``end_ns`` for tick
        buckets; inclusive, ``None`` = unbounded) or ``destroy``. A multi-bucket write is one
        record with a ``create``/``write`` op per bucket.
    """

    seq: int
    ops: tuple[tuple[dict[str, Any], list[np.ndarray]], ...]


@runtime_checkable
class ChangeCursor(Protocol):
    """Reads a feed's log forwards from a position (see :meth:`ChangeFeed.changes_since`)."""

    position: int

    def read(self, max_bytes: int = 4 << 20) -> list[LoggedChange]:
        """The next durable changes (about ``max_bytes`` of log at most; empty when caught up)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class ChangeFeed(Protocol):
    """A source of commit events plus the reads a subscriber needs to catch up around them."""

    def listen(self, listener: Listener, before_checkpoint: Callable[[], None] | None = None) -> Callable[[], None]:
        """Call ``listener`` with every change after it is durable, in commit order, on the
        committing thread (it must be quick and must not write); returns a function that stops it.

        ``before_checkpoint`` runs before the feed forgets log records (see
        :mod:`mktsframe.engine.commits`)."""
        ...

    def commit_barrier(self) -> AbstractContextManager[int]:
        """Hold off every change while the block runs; yields the ``seq`` of the last commit so far."""
        ...

    @property
    def last_seq(self) -> int:
        """The ``seq`` of the latest change (0 before any)."""
        ...

    @property
    def log_position(self) -> int:
        """The WAL sequence number of the last durable record (a position for :meth:`changes_since`)."""
        ...

    def changes_since(self, position: int) -> ChangeCursor:
        """A cursor over the records logged after ``position``, in log order; raises
        :class:`LogGone` if the log no longer holds them (or ``position`` is ahead of it)."""
        ...

    def query(
        self,
        key: str,
        *,
        start: int | None = None,
        end: int | None = None,
        columns: Sequence[str] | None = None,
        limit: int | None = None,
        limit_from_start: bool = False,
    ) -> dict[str, Batch]:
        """Rows of the buckets ``key`` names, ``start``/``end`` in ns UTC inclusive (as
        :meth:`Backend.query <mktsframe.backend.base.Backend.query>`)."""
        ...
