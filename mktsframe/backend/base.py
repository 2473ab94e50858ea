"""The one interface every storage backend implements.

User-facing layers (pandas functions, the accessor, later xarray, the magic and the CLI) speak
only this protocol; :func:`mktsframe.connect` picks the implementation from the target (a
directory → the local engine, ``http://`` → the network client). Data crosses it as
:class:`Batch`: plain numpy arrays, so no backend depends on pandas.

Units: timestamps in a :class:`Batch` are **int64 nanoseconds since the Unix epoch, UTC**;
fixed-timeframe buckets return the start of each bar. ``start``/``end`` arguments accept anything
:func:`mktsframe.times.to_ns` does (strings, datetimes, epoch seconds or nanoseconds).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from mktsframe.records import Batch, BucketInfo, Stacked
from mktsframe.stacking import stack, unstack
from mktsframe.times import TimeLike

if TYPE_CHECKING:
    from mktsframe.streaming.subscription import Subscription

__all__ = [
    "Backend", "Batch", "BucketInfo", "Capabilities", "Stacked", "capabilities", "query_stacked", "write_stacked",
]  # fmt: skip


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, declared by its class (``capabilities`` attribute) instead of being
    probed with ``getattr``: callers ask before offering a feature (a read-only store refuses writes
    with :class:`~mktsframe.errors.ReadOnlyError` either way)."""

    write: bool = True
    """``write``/``write_many``/``create`` can succeed (a handle opened read-only still says so: its
    ``read_only`` property is the per-handle answer)."""
    delete: bool = True
    """``delete``/``destroy`` can succeed."""
    stream: bool = True
    """``subscribe`` hears committed writes."""
    commit_listeners: bool = False
    """``on_commit`` (with ``catalog_only``) and ``replayed_changes`` exist (the local engine in this
    process)."""
    pickle_spec: bool = True
    """``spec`` describes the backend so that another process (a dask worker) can open its own."""
    stacked_query: bool = False
    """``query_stacked`` (``query``'s arguments) returns one :class:`Stacked` for many buckets,
    built where the data is instead of joined from a :class:`Batch` per bucket."""
    grid_query: bool = False
    """``query_grid(key, start=, end=, columns=, limit=, max_rows=)`` returns the buckets' rows as one
    time-major :class:`Stacked` read straight from storage where they form a dense grid (one
    timeframe and schema, a bounded range), else ``None``: what a server answers a universe read
    with, with no :class:`Batch` per bucket."""
    stacked_write: bool = False
    """``write_stacked`` stores a :class:`Stacked` (one commit, as ``write_many``) without a
    :class:`Batch` per bucket first."""


#: What a backend that declares nothing is taken to support (the protocol's full surface).
_DEFAULT_CAPABILITIES = Capabilities()


def capabilities(backend: object) -> Capabilities:
    """The :class:`Capabilities` ``backend`` (an instance or a class) declares (the full protocol,
    without commit listeners, if it declares none)."""
    caps = getattr(backend if isinstance(backend, type) else type(backend), "capabilities", None)
    return caps if isinstance(caps, Capabilities) else _DEFAULT_CAPABILITIES


def query_stacked(
    backend: Backend,
    key: str,
    *,
    start: TimeLike = None,
    end: TimeLike = None,
    columns: Sequence[str] | None = None,
    limit: int | None = None,
    limit_from_start: bool = False,
) -> Stacked:
    """``backend.query(...)`` for many buckets as one :class:`Stacked` (time-major, then the order
    named): the backend's own ``query_stacked`` where it declares one, else its ``query`` result
    joined by :func:`~mktsframe.stacking.stack`."""
    kw: dict[str, Any] = {"start": start, "end": end, "columns": columns, "limit": limit,
                          "limit_from_start": limit_from_start}  # fmt: skip
    if capabilities(backend).stacked_query:
        return backend.query_stacked(key, **kw)  # type: ignore[attr-defined, no-any-return]
    return stack(backend.query(key, **kw))


def write_stacked(backend: Backend, stacked: Stacked, *, variable_length: bool = False) -> None:
    """Store the rows of ``stacked`` (several buckets' rows in one set of arrays) as one
    ``write_many``: the backend's own ``write_stacked`` where it declares one, else its
    ``write_many`` of :func:`~mktsframe.stacking.unstack`'s batches."""
    if capabilities(backend).stacked_write:
        backend.write_stacked(stacked, variable_length=variable_length)  # type: ignore[attr-defined]
        return
    backend.write_many(list(unstack(stacked).items()), variable_length=variable_length)


@runtime_checkable
class Backend(Protocol):
    """Storage operations on buckets addressed by ``SYMBOL/TIMEFRAME/ATTRGROUP`` keys."""

    def write(self, key: str, batch: Batch, *, variable_length: bool = False) -> None:
        """Store rows. Creates the bucket if missing: a tick bucket if ``variable_length``.

        Fixed buckets: a row at an existing bar replaces it. Tick buckets: rows are added at their
        exact nanosecond, duplicates and late rows included. The flag only matters at creation (as
        MarketStore's ``is_variable_length``): an existing bucket keeps its kind.
        """

    def write_many(
        self, items: Mapping[str, Batch] | Sequence[tuple[str, Batch]], *, variable_length: bool = False
    ) -> None:
        """Store rows in many buckets in one call, ``{key: batch}`` or ``[(key, batch), ...]``.

        The local engine logs them as one record with one sync, all or nothing (a bad item fails
        the call with nothing written); over HTTP, buckets with the same columns travel in one
        request and commit the same way. ``variable_length`` applies to buckets it creates.
        """

    def query(
        self,
        key: str,
        *,
        start: TimeLike = None,
        end: TimeLike = None,
        columns: Sequence[str] | None = None,
        limit: int | None = None,
        limit_from_start: bool = False,
    ) -> dict[str, Batch]:
        """Rows with ``start <= t <= end`` (ns, inclusive at bar granularity; exact nanoseconds for
        tick buckets) for each bucket the key names (comma lists and ``*`` allowed), in the order named.

        ``limit`` keeps the last N rows, or the first N with ``limit_from_start``.
        """
        ...

    def list_symbols(self) -> list[str]:
        """Distinct symbols, sorted."""
        ...

    def list_keys(self) -> list[str]:
        """Every bucket key ``SYMBOL/TIMEFRAME/ATTRGROUP``, sorted."""
        ...

    def info(self, key: str) -> BucketInfo:
        """Schema, extent and size of one bucket."""
        ...

    def create(self, key: str, columns: Sequence[tuple[str, str]], *, variable_length: bool = False) -> None:
        """Create an empty bucket with columns ``[(name, wire_type), ...]`` (Epoch excluded);
        ``variable_length`` makes it a tick bucket."""

    def delete(self, key: str, *, start: TimeLike = None, end: TimeLike = None) -> int:
        """Remove the rows in ``[start, end]`` (inclusive, ns; bar granularity for fixed buckets);
        returns how many were removed."""
        ...

    def destroy(self, key: str) -> None:
        """Remove a bucket and all its data."""

    def subscribe(
        self,
        pattern: str | Iterable[str],
        *,
        since: TimeLike = None,
        callback: Callable[[dict[str, Any]], Any] | None = None,
        max_rows: int = 100_000,
        policy: Literal["drop_oldest", "disconnect"] = "drop_oldest",
    ) -> Subscription:
        """Hear every committed write to buckets matching ``pattern`` (``*/1Min/*``, ``BTC/*/*``).

        Iterate the result (``async for``/``for``) or pass ``callback``; ``since`` (ns or any time)
        replays stored rows at or after it first. See :mod:`mktsframe.streaming`.
        """
        ...

    def close(self) -> None:
        """Release files, locks and connections."""
