"""The values every layer passes around: rows of one bucket and what is known about a bucket.

They live below both the engine and the backends (the engine must not import from
:mod:`mktsframe.backend`), so each layer can hand them to the next without a conversion.
:mod:`mktsframe.backend.base` re-exports them for the layers above.

Units: timestamps are **int64 nanoseconds since the Unix epoch, UTC**; fixed-timeframe buckets
carry the start of each bar.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Batch", "BucketInfo", "Stacked"]


@dataclass(frozen=True)
class Batch:
    """Rows of one bucket, by column.

    Attributes
    ----------
    index : numpy.ndarray
        int64 nanoseconds since the epoch, UTC, ascending for query results.
    columns : Mapping[str, numpy.ndarray]
        One array per column, each as long as ``index``, in bucket order.
    variable_length : bool
        ``True`` for rows of a tick (variable-length) bucket: ``index`` holds each record's exact
        time, and equal timestamps may repeat (in arrival order). ``False``: bar starts, unique.
    """

    index: np.ndarray
    columns: Mapping[str, np.ndarray] = field(default_factory=dict)
    variable_length: bool = False

    def __len__(self) -> int:
        return int(self.index.shape[0])


@dataclass(frozen=True)
class Stacked:
    """Rows of several buckets in one set of arrays: what a multi-bucket query hands to pandas.

    Rows are ordered by time, then by the order the buckets were named (ticks at one time keep
    their arrival order), so a frame is built from it with no further sort or concatenation: a
    dict of one :class:`Batch` per bucket costs a join and a transpose per column on top of the
    read (at 5,000 symbols, more than the read itself).

    Attributes
    ----------
    keys : tuple of str
        The buckets' ``SYMBOL/TIMEFRAME/ATTRGROUP`` keys, in the order named.
    index : numpy.ndarray
        int64 nanoseconds since the epoch, UTC, ascending.
    columns : Mapping[str, numpy.ndarray]
        One array per column, each as long as ``index``.
    which : numpy.ndarray or None
        For each row, the position in ``keys`` of its bucket (the smallest signed integer type
        that holds ``len(keys)``); ``None`` when there is one key.
    variable_length : bool
        ``True`` when the rows come from tick buckets.
    """

    keys: tuple[str, ...]
    index: np.ndarray
    columns: Mapping[str, np.ndarray]
    which: np.ndarray | None
    variable_length: bool = False

    def __len__(self) -> int:
        return int(self.index.shape[0])


@dataclass(frozen=True)
class BucketInfo:
    """What :meth:`Backend.info` reports about a bucket."""

    key: str
    timeframe: str
    timeframe_seconds: int
    record_type: str
    columns: tuple[tuple[str, str], ...]
    years: tuple[int, ...]
    rows: int
    first: int | None
    """Nanoseconds of the first bar, or ``None`` if empty."""
    last: int | None
    """Nanoseconds of the last bar, or ``None`` if empty."""
    disk_bytes: int
