"""What one Query call may read: a bounded, role-aware view of the server's backend.

:class:`GuardedReads` stands in for the backend during one ``DataService.Query`` call, for every
path a query can take (plain reads, ``columns``, candles of an unstored timeframe, SQL, SQL's
``INSERT``). It bounds the rows the call reads in all at ``max_reply_rows``: each read asks the
backend for at most the rows still allowed plus one per key, and the rows it got are counted
against the allowance before anything else is read, so a refusal (pointing at ``limit`` and
paging) comes before any further work. A pattern (``*/1Min/OHLCV``, ``A,B/...``) is read in one
pass, each key limited to the allowance: its transient peak is at most the allowance per key,
not in all. Reading such a pattern key by key would bound the total strictly but made a
2,000-symbol cross-section 2.4x slower (107 → 263 ms in process), the commonest pattern query.
Writes through it (SQL ``INSERT``) need the write role.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mktsframe.backend.base import Backend, Batch, Stacked, capabilities
from mktsframe.server.auth import Role
from mktsframe.times import TimeLike

if TYPE_CHECKING:
    from mktsframe.server.service import CallContext

__all__ = ["GuardedReads"]


class GuardedReads:
    """``backend``'s reads, at most ``max_rows`` rows in all (0: no bound); writes need ``ctx``'s
    role to be write or more. Everything else is the backend's own."""

    def __init__(self, backend: Backend, max_rows: int, ctx: CallContext) -> None:
        self.backend = backend
        self.max_rows = max_rows
        self.left: int | None = max_rows or None
        self.ctx = ctx

    def __getattr__(self, name: str) -> Any:  # list_keys, list_symbols, info, kinds...
        return getattr(self.backend, name)

    def query(self, key: str, *, start: TimeLike = None, end: TimeLike = None, columns: Sequence[str] | None = None,
              limit: int | None = None, limit_from_start: bool = False) -> dict[str, Batch]:
        if self.left is None or limit == 0:
            return self.backend.query(key, start=start, end=end, columns=columns, limit=limit,
                                      limit_from_start=limit_from_start)  # fmt: skip
        step = self.left + 1 if limit is None else min(limit, self.left + 1)
        out = self.backend.query(key, start=start, end=end, columns=columns, limit=step,
                                 limit_from_start=limit_from_start)  # fmt: skip
        self._take(sum(len(batch.index) for batch in out.values()))
        return out

    def query_grid(self, key: str, *, start: TimeLike, end: TimeLike, columns: Sequence[str] | None = None,
                   limit: int | None = None) -> Stacked | None:
        """The backend's grid read (see :class:`~mktsframe.backend.base.Capabilities`) when it
        declares one and the grid cannot exceed the rows left, else ``None`` (then :meth:`query`)."""
        if not capabilities(self.backend).grid_query or limit == 0:
            return None
        got: Stacked | None = self.backend.query_grid(  # type: ignore[attr-defined]
            key, start=start, end=end, columns=columns, limit=limit, max_rows=self.left
        )
        if got is not None and self.left is not None:
            self._take(len(got))
        return got

    def _take(self, rows: int) -> None:
        assert self.left is not None
        if rows > self.left:
            from mktsframe.server.service import CallError, Status

            raise CallError(
                Status.RESOURCE_EXHAUSTED,
                f"the query reads more than max_reply_rows ({self.max_rows:,}) rows: ask for fewer with a limit "
                "(limit_record_count, limit=) or a narrower time range, and page through the rest by time",
                "MktsError",
            )
        self.left -= rows

    # -- writes (SQL INSERT INTO) ----------------------------------------------------------------
    def _writing(self, what: str) -> None:
        if self.ctx.role < Role.WRITE:
            from mktsframe.server.service import forbidden

            raise forbidden(self.ctx, what, Role.WRITE)

    def write(self, key: str, batch: Batch, *, variable_length: bool = False) -> None:
        self._writing("INSERT INTO")
        self.backend.write(key, batch, variable_length=variable_length)

    def write_many(self, items: Any, *, variable_length: bool = False) -> None:
        self._writing("INSERT INTO")
        self.backend.write_many(items, variable_length=variable_length)

    def create(self, key: str, columns: Sequence[tuple[str, str]], *, variable_length: bool = False) -> None:
        self._writing("INSERT INTO a new bucket")
        self.backend.create(key, columns, variable_length=variable_length)

    def delete(self, key: str, *, start: TimeLike = None, end: TimeLike = None) -> int:
        self._writing("delete")
        return self.backend.delete(key, start=start, end=end)

    def destroy(self, key: str) -> None:
        from mktsframe.server.service import forbidden

        if self.ctx.role < Role.ADMIN:
            raise forbidden(self.ctx, "destroy", Role.ADMIN)
        self.backend.destroy(key)
