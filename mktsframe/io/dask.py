"""``read_dask``: buckets as a lazy ``dask.dataframe.DataFrame``, one partition per bucket-year.

Backtests over hundreds of symbols and years outgrow one process long before the data outgrows
its store. ``read_dask`` plans the reads up front (which buckets, which years hold data in the
range) and hands dask one small task per bucket-year (years of fine timeframes are split into
spans of at most :data:`PARTITION_ROWS` bars): each task is a plain ``query`` of its span, so the
work spreads over a ``distributed`` cluster's worker processes.

Tasks carry a :class:`~mktsframe.backend.registry.BackendSpec` (a path, a server URL or an
object-store URL pinned to one snapshot, with its options), never an engine or a socket: each
worker process opens the backend once (:func:`~mktsframe.backend.registry.open_spec`) and reuses it.
The partitions concatenate to what :func:`~mktsframe.io.pandas.read_mkts` returns for the same
arguments — rows, columns, dtypes, the categorical ``Symbol`` column (with every symbol as a
category in every partition, so dask knows them) — ordered by bucket, then time, rather than by
time across buckets. One bucket: the divisions (partition start times, UTC) are known, so
``ddf.loc["2024-03-01":"2024-03-02"]`` computes only the partition that holds those days.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mktsframe.backend import Backend, default_backend
from mktsframe.backend.base import Batch, capabilities
from mktsframe.backend.registry import BackendSpec, open_spec
from mktsframe.engine.year_file import year_bounds
from mktsframe.functions.candles import candles
from mktsframe.functions.resample import finest_sources, read_candles, window_range
from mktsframe.functions.windows import Window, parse_window
from mktsframe.io.frames import batch_to_frame
from mktsframe.times import TimeLike, to_ns

if TYPE_CHECKING:
    import dask.dataframe as dd

__all__ = ["PARTITION_ROWS", "read_dask"]

NS = 1_000_000_000
#: Most bars in one partition: a year of 1Min bars (525,600) is one; a year of 1Sec bars, 31.
PARTITION_ROWS = 1 << 20
_LABELS = ("Symbol", "Timeframe", "AttributeGroup")


@dataclass(frozen=True)
class _Part:
    """One task: bucket ``key``'s rows in ``[lo, hi]`` (ns, inclusive), labelled for the combined frame."""

    source: BackendSpec | Any  # a Backend object only when it cannot be described (threads only)
    key: str
    lo: int
    hi: int
    window: Window | None
    labels: tuple[tuple[str, str, tuple[str, ...]], ...]
    """``(column, this bucket's value, every value)`` for each label column of the combined frame."""
    columns: tuple[str, ...] | None
    """The stored columns asked for (``None``: all); dask's projection may narrow them further."""
    here: Backend | None = field(default=None, compare=False, repr=False)
    """The caller's backend, used while the task runs in the caller's process; never pickled (a task
    sent to a worker opens its own from ``source``, so the caller's handles stay the caller's)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Part, self._fields())

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        source = self.source if isinstance(self.source, BackendSpec) else id(self.source)
        return ("mktsframe-part", source, *self._fields()[1:])

    def _fields(self) -> tuple[Any, ...]:
        return (self.source, self.key, self.lo, self.hi, self.window, self.labels, self.columns)


def read_dask(
    key: str,
    start: TimeLike = None,
    end: TimeLike = None,
    *,
    columns: Sequence[str] | None = None,
    timeframe: str | None = None,
    backend: Backend | None = None,
) -> dd.DataFrame:
    """Read buckets into a lazy dask DataFrame: the rows :func:`mktsframe.read_mkts` returns.

    Parameters
    ----------
    key, start, end, columns, timeframe, backend
        As for :func:`~mktsframe.io.pandas.read_mkts` (no ``limit``: a limit is a whole-result
        question; use ``.head``/``.tail``). ``timeframe`` aggregates candles inside each task, in
        spans aligned to whole candles.

    Returns
    -------
    dask.dataframe.DataFrame
        Indexed by ``Epoch`` (UTC, ns). Several buckets: a ``Symbol`` column first (and
        ``Timeframe``/``AttributeGroup`` if those vary), partitions ordered by bucket then time,
        divisions unknown. One bucket: no label columns, known divisions.

    Notes
    -----
    Works with dask's default scheduler and with ``distributed`` (worker processes included):
    a task opens the backend from its description (a local root read-only, a server URL, or an
    object-store URL pinned to the snapshot this call saw).
    """
    import dask.dataframe as dd

    be = backend if backend is not None else default_backend()
    source: BackendSpec | Backend = be.spec if capabilities(be).pickle_spec and hasattr(be, "spec") else be
    lo, hi = to_ns(start, name="start"), to_ns(end, name="end")
    cols = list(columns) if columns is not None else None
    ask = tuple(cols) if cols is not None else None
    window = parse_window(timeframe) if timeframe is not None else None
    if window is not None:
        lo, hi = window_range(window, lo, hi)
        found = finest_sources(be, key, window)
        keys = [f"{s.symbol}/{window.name}/{s.attribute_group}" for s in found]
        sources = [s.item_key for s in found]
        empty = {k: candles(b, window) for k, b in zip(keys, (next(iter(be.query(s, columns=cols, limit=0).values()))
                                                              for s in sources), strict=True)}  # fmt: skip
    else:
        empty = be.query(key, columns=cols, limit=0)
        keys = sources = list(empty)
    labels = _label_values(keys) if len(keys) > 1 else []
    label_of = {k: tuple((name, values[i], tuple(dict.fromkeys(values))) for name, values in labels)
                for i, k in enumerate(keys)}  # fmt: skip
    parts = [_Part(source, src, a, b, window, label_of[k], ask, be)
             for k, src in zip(keys, sources, strict=True) for a, b in _spans(be, src, lo, hi, window)]  # fmt: skip
    meta = _frame(next(iter(empty.values())), label_of[keys[0]], None)
    divisions = None
    if len(keys) == 1 and parts:
        divisions = tuple(pd.Timestamp(t, tz="UTC") for t in [p.lo for p in parts] + [parts[-1].hi])
    if not parts:  # nothing in range: one empty partition keeps the schema
        parts = [_Part(source, sources[0], 0, -1, window, label_of[keys[0]], ask, be)]
    return dd.from_map(_read_part, parts, meta=meta, divisions=divisions, label="read-mkts", enforce_metadata=False)


def _label_values(keys: list[str]) -> list[tuple[str, list[str]]]:
    """The label columns of a combined frame (as :func:`~mktsframe.io.pandas._combine` adds them)."""
    parts = list(zip(*(k.split("/") for k in keys), strict=True))
    return [(name, list(values)) for name, values in zip(_LABELS, parts, strict=True)
            if name == "Symbol" or len(set(values)) > 1]  # fmt: skip


def _spans(be: Backend, key: str, lo: int | None, hi: int | None, window: Window | None) -> list[tuple[int, int]]:
    """``[a, b]`` ns spans of ``key`` holding its data in ``[lo, hi]``: one per year file with data
    (split into :data:`PARTITION_ROWS`-bar pieces), clipped to the range and to the data's extent."""
    info = be.info(key)
    if info.first is None or info.last is None:
        return []
    a_all = info.first if lo is None else max(lo, info.first)
    b_all = info.last if hi is None else min(hi, info.last)
    if window is not None and not _year_aligned(window):  # candles may cross years: one span
        return [(lo if lo is not None else window_range(window, info.first, None)[0] or 0,
                 hi if hi is not None else window_range(window, None, info.last)[1] or info.last)]  # fmt: skip
    if window is not None:
        wa, wb = window_range(window, a_all, b_all)
        a_all, b_all = wa if wa is not None else a_all, wb if wb is not None else b_all
    step = info.timeframe_seconds * NS
    piece = step * PARTITION_ROWS if window is None and info.record_type == "fixed" else None
    spans = []
    for year in info.years:
        y0, y1 = (t * NS for t in year_bounds(year))
        a, b = max(a_all, y0), min(b_all, y1 - 1)
        while a <= b:
            z = b if piece is None else min(b, a + piece - 1)
            spans.append((a, z))
            a = z + 1
    return spans


def _year_aligned(window: Window) -> bool:
    """Whether every calendar year starts a candle of ``window`` (so year spans hold whole candles)."""
    if window.unit == "s":
        return 86_400 % window.seconds == 0
    return window.unit == "M" and 12 % window.count == 0


def _read_part(part: _Part, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """One partition's frame (runs in a dask task: in this process or a worker)."""
    if part.here is not None:
        be = part.here
    else:
        be = open_spec(part.source) if isinstance(part.source, BackendSpec) else part.source
    label_names = [n for n, _, _ in part.labels]
    wanted = list(part.columns) if part.columns is not None else None
    if columns is not None:
        wanted = [c for c in columns if c not in label_names]
    if part.hi < part.lo:
        (batch,) = be.query(part.key, columns=wanted, limit=0).values()
        batch = batch if part.window is None else candles(batch, part.window)
    elif part.window is not None:
        (batch,) = read_candles(be, part.key, part.window, start=part.lo, end=part.hi, columns=wanted).values()
    else:
        (batch,) = be.query(part.key, start=part.lo, end=part.hi, columns=wanted).values()
    return _frame(batch, part.labels, columns)


def _frame(
    batch: Batch, labels: Sequence[tuple[str, str, tuple[str, ...]]], columns: Sequence[str] | None
) -> pd.DataFrame:
    df = batch_to_frame(batch)
    n = len(df)
    for pos, (name, value, categories) in enumerate(labels):
        codes = np.full(n, categories.index(value), np.int32)
        df.insert(pos, name, pd.Categorical.from_codes(codes, categories=pd.Index(categories, dtype=object)))
    df.attrs.clear()
    return df if columns is None else df[list(columns)]
