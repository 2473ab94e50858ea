"""What the engine does when the disk fails it: a full disk is an error, a failed sync poisons.

A failed ``fdatasync``/``msync``/``syncfs`` (:class:`~.durable.SyncError`) may have lost the pages it
was flushing, and Linux may have marked them clean, so a retry can report success over lost data
(PostgreSQL's "fsyncgate"). Nothing after it can be acknowledged honestly: the engine is
*poisoned* and refuses every change until the root is reopened, whose replay of the write-ahead
log restores every acknowledged write; reads keep working. ``ENOSPC`` becomes
:class:`~mktsframe.errors.NoSpaceError`: space is reserved before a write is logged, so nothing of
it was stored and later writes may succeed once space is freed. See ``docs/format.md``, *Faults*.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Iterator
from pathlib import Path

from mktsframe.engine.durable import SyncError
from mktsframe.engine.space import no_space
from mktsframe.errors import NoSpaceError, SyncFailedError

__all__ = ["Faults"]

log = logging.getLogger("mktsframe.engine")


class Faults:
    """The fault state of one engine (its root's): whether it is poisoned, and why."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.poisoned: str | None = None

    def poison(self, why: str) -> None:
        """Refuse every change from now on (the first reason is kept)."""
        if self.poisoned is None:
            self.poisoned = (
                f"{self.root}: {why}; writes are refused until the root is reopened (reads keep working; "
                "reopening replays the write-ahead log, which holds every acknowledged write)"
            )
            log.error("%s", self.poisoned)

    def check(self) -> None:
        """Raise :class:`SyncFailedError` if poisoned."""
        if self.poisoned is not None:
            raise SyncFailedError(self.poisoned)

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Around a change: a failed sync poisons and raises :class:`SyncFailedError`; ``ENOSPC``
        raises :class:`NoSpaceError` naming the root."""
        try:
            yield
        except SyncError as exc:
            self.poison(str(exc))
            raise SyncFailedError(self.poisoned) from exc
        except NoSpaceError:
            raise
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise no_space(self.root, str(exc)) from exc
            raise

    @contextlib.contextmanager
    def applying(self) -> Iterator[None]:
        """Around applying a change already logged: if that fails, the files no longer match the
        log (a replay would make them), so writes stop until the root is reopened."""
        try:
            yield
        except BaseException as exc:
            self.poison(f"a logged change could not be applied ({exc})")
            raise
