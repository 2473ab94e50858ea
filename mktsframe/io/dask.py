"""``read_dask``: buckets as a lazy ``dask.dataframe.DataFrame``, partitioned by bucket-year.

Backtests over hundreds of symbols and years outgrow one process long before the data outgrows
its store. ``read_dask`` plans the reads up front (which buckets, which years hold data in the
range) and hands dask one task per partition: a bucket-year (years of fine timeframes are split
into spans of at most :data:`PARTITION_ROWS` bars), each task a plain ``query`` of its span, so
the work spreads over a ``distributed`` cluster's worker processes.

Several buckets: consecutive bucket-years far smaller than :data:`PARTITION_ROWS` share a
partition (up to that many bars in all). A distributed task costs its worker and the scheduler
a few milliseconds of CPU (measured in ``bench/scale_bench.py``: ~2 ms of worker event loop per
task on this machine) while a 5Min bucket-year (105,120 bars) reads in about one: a universe of
thousands of daily or 5Min buckets as one partition per bucket-year would spend most of a
cluster's CPU on bookkeeping. ``read_parquet`` does the same with small files (dask fuses them).

Tasks carry a :class:`~mktsframe.backend.registry.BackendSpec` (a path, a server URL or an
object-store URL pinned to one snapshot, with its options), never an engine or a socket: each
worker process opens the backend once (:func:`~mktsframe.backend.registry.open_spec`) and reuses it,
and gets glibc's large-block reuse back (:mod:`~mktsframe.io.worker_malloc`: without it a
``distributed`` worker spent twice the CPU on the same partition).
The partitions concatenate to what :func:`~mktsframe.io.pandas.read_mkts` returns for the same
arguments — rows, columns, dtypes, the categorical ``Symbol`` column (with every symbol as a
category in every partition, so dask knows them) — ordered by bucket, then time, rather than by
time across buckets. One bucket: the divisions (partition start times, UTC) are known, so
``ddf.loc["2024-03-01":"2024-03-02"]`` computes only the partition that holds those days.
"""

from __future__ import annotations

import contextlib
import functools
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
from mktsframe.io.worker_malloc import restore_mmap_threshold
from mktsframe.times import TimeLike, to_ns

if TYPE_CHECKING:
    import dask.dataframe as dd

__all__ = ["PARTITION_ROWS", "read_dask"]

NS = 1_000_000_000
#: Most bars in one partition: a year of 1Min bars (525,600) is one; a year of 1Sec bars, 31; nine
#: 5Min bucket-years (105,120 bars each) of different buckets share one.
PARTITION_ROWS = 1 << 20
_LABELS = ("Symbol", "Timeframe", "AttributeGroup")


@dataclass(frozen=True)
class _Part:
    """One task: the rows of ``pieces`` (bucket-year spans, in order), labelled for the combined frame."""

    source: BackendSpec | Any  # a Backend object only when it cannot be described (threads only)
    pieces: tuple[tuple[str, int, int, tuple[int, ...]], ...]
    """``(stored key, lo, hi, label codes)``: the bucket's rows in ``[lo, hi]`` (ns, inclusive; an
    empty piece has ``hi < lo``), and its code in each label column's categories."""
    window: Window | None
    labels: tuple[tuple[str, tuple[str, ...]], ...]
    """``(column, every value)`` for each label column of the combined frame (its categories)."""
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
        return (self.source, self.pieces, self.window, self.labels, self.columns)


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
    import dask
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
    positions = [{v: i for i, v in enumerate(dict.fromkeys(values))} for _, values in labels]
    categories = tuple((name, tuple(pos)) for (name, _), pos in zip(labels, positions, strict=True))
    codes = [
        tuple(pos[values[i]] for (_, values), pos in zip(labels, positions, strict=True)) for i in range(len(keys))
    ]
    pieces = [
        ((src, a, b, codes[i]), n) for i, src in enumerate(sources) for a, b, n in _spans(be, src, lo, hi, window)
    ]
    groups = _pack(pieces) if len(keys) > 1 else [[p] for p, _ in pieces]
    parts = [_Part(source, tuple(g), window, categories, ask, be) for g in groups]
    empty_batch = next(iter(empty.values()))
    meta = _frame([empty_batch], [codes[0]], categories, None)
    divisions = None
    if len(keys) == 1 and parts:
        bounds = [p.pieces[0][1] for p in parts] + [parts[-1].pieces[-1][2]]
        divisions = tuple(pd.Timestamp(t, tz="UTC") for t in bounds)
    if not parts:  # nothing in range: one empty partition keeps the schema
        parts = [_Part(source, ((sources[0], 0, -1, codes[0]),), window, categories, ask, be)]
    # Labels are categoricals, numbers numbers: with no object-dtype strings in the frame, dask's
    # string conversion would be one more no-op task per partition (a third of a scan's graph).
    plain = not _has_object_strings(meta)
    with dask.config.set({"dataframe.convert-string": False}) if plain else contextlib.nullcontext():
        return dd.from_map(_read_part, parts, meta=meta, divisions=divisions, label="read-mkts", enforce_metadata=False)


def _has_object_strings(meta: pd.DataFrame) -> bool:
    """Whether dask's string conversion would change ``meta`` (``True`` if we cannot tell)."""
    try:
        from dask.dataframe._pyarrow import is_object_string_dataframe
    except ImportError:  # a private module of dask's: keep its conversion if it moves
        return True
    return bool(is_object_string_dataframe(meta))


def _pack(pieces: list[tuple[Any, int]]) -> list[list[Any]]:
    """Consecutive pieces grouped into partitions of at most :data:`PARTITION_ROWS` bars (estimated;
    a piece larger than that is a partition of its own). Keeps the pieces' order."""
    groups: list[list[Any]] = []
    total = PARTITION_ROWS + 1
    for piece, rows in pieces:
        if total + rows > PARTITION_ROWS:
            groups.append([])
            total = 0
        groups[-1].append(piece)
        total += rows
    return groups


def _label_values(keys: list[str]) -> list[tuple[str, list[str]]]:
    """The label columns of a combined frame (as :func:`~mktsframe.io.pandas._combine` adds them)."""
    parts = list(zip(*(k.split("/") for k in keys), strict=True))
    return [(name, list(values)) for name, values in zip(_LABELS, parts, strict=True)
            if name == "Symbol" or len(set(values)) > 1]  # fmt: skip


def _spans(be: Backend, key: str, lo: int | None, hi: int | None, window: Window | None) -> list[tuple[int, int, int]]:
    """``(a, b, rows)``: ``[a, b]`` ns spans of ``key`` holding its data in ``[lo, hi]``, one per
    year file with data (split into :data:`PARTITION_ROWS`-bar pieces), clipped to the range and to
    the data's extent; ``rows`` estimates the bars in the span (the bucket's rows spread evenly)."""
    info = be.info(key)
    if info.first is None or info.last is None:
        return []
    a_all = info.first if lo is None else max(lo, info.first)
    b_all = info.last if hi is None else min(hi, info.last)
    density = info.rows / (info.last - info.first + 1)

    def rows(a: int, b: int) -> int:
        return int(density * (max(min(b, info.last) - max(a, info.first), -1) + 1)) + 1

    if window is not None and not _year_aligned(window):  # candles may cross years: one span
        a = lo if lo is not None else window_range(window, info.first, None)[0] or 0
        b = hi if hi is not None else window_range(window, None, info.last)[1] or info.last
        return [(a, b, rows(a, b))]
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
            spans.append((a, z, rows(a, z)))
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
    else:  # in a worker (or a task that was pickled)
        restore_mmap_threshold()
        be = open_spec(part.source) if isinstance(part.source, BackendSpec) else part.source
    label_names = [n for n, _ in part.labels]
    wanted = list(part.columns) if part.columns is not None else None
    if columns is not None:
        wanted = [c for c in columns if c not in label_names]
    batches = []
    for key, lo, hi, _ in part.pieces:
        if hi < lo:
            (batch,) = be.query(key, columns=wanted, limit=0).values()
            batch = batch if part.window is None else candles(batch, part.window)
        elif part.window is not None:
            (batch,) = read_candles(be, key, part.window, start=lo, end=hi, columns=wanted).values()
        else:
            (batch,) = be.query(key, start=lo, end=hi, columns=wanted).values()
        batches.append(batch)
    return _frame(batches, [p[3] for p in part.pieces], part.labels, columns)


def _frame(
    batches: Sequence[Batch],
    codes: Sequence[tuple[int, ...]],
    labels: Sequence[tuple[str, tuple[str, ...]]],
    columns: Sequence[str] | None,
) -> pd.DataFrame:
    """The pieces' rows as one frame (their arrays joined once, by column), label columns first:
    categoricals whose codes repeat each piece's code over its rows."""
    if len(batches) == 1:
        batch = batches[0]
    else:
        names = list(batches[0].columns)
        batch = Batch(np.concatenate([b.index for b in batches]),
                      {n: np.concatenate([b.columns[n] for b in batches]) for n in names})  # fmt: skip
    df = batch_to_frame(batch)
    lengths = [len(b.index) for b in batches]
    for pos, (name, categories) in enumerate(labels):
        dtype = _categorical(categories)
        ours = np.array([c[pos] for c in codes], dtype=_code_type(len(categories)))
        df.insert(pos, name, pd.Categorical.from_codes(np.repeat(ours, lengths), dtype=dtype, validate=False))
    df.attrs.clear()
    return df if columns is None else df[list(columns)]


@functools.lru_cache(maxsize=64)
def _categorical(categories: tuple[str, ...]) -> pd.CategoricalDtype:
    """One dtype per label set (checking 5,000 categories for uniqueness per partition adds up)."""
    return pd.CategoricalDtype(pd.Index(categories, dtype=object))


def _code_type(n: int) -> type[np.signedinteger[Any]]:
    """The integer type pandas keeps codes of ``n`` categories in (so ``from_codes`` copies nothing)."""
    return np.int8 if n < 127 else np.int16 if n < 32_767 else np.int32
