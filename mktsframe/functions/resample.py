"""Candles read from storage: pick the finest stored bucket, query it, aggregate.

MarketStore answered a query for an unstored timeframe by silently reading another bucket
(``10Min`` read ``5Min``, ``4H`` read ``2H``) without aggregating. Here a requested timeframe is
built from the **finest** stored bucket of the same symbol and attribute group whose timeframe
divides it (so every source bar falls inside one candle), and it is an error if there is none.

Only the :class:`~mktsframe.backend.base.Backend` protocol is used (``list_keys`` then ``query``),
so this works the same over the local engine and over HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mktsframe.backend.base import Backend, Batch
from mktsframe.errors import BucketNotFoundError, FunctionError, InvalidKeyError
from mktsframe.functions.candles import candles
from mktsframe.functions.windows import Window, parse_window
from mktsframe.keys import KeyPattern, TimeBucketKey, parse_key, parse_key_pattern
from mktsframe.times import TimeLike, to_ns

__all__ = ["finest_sources", "read_candles", "window_range"]


def finest_sources(backend: Backend, key: str, window: Window) -> list[TimeBucketKey]:
    """For each symbol/attribute group ``key`` names, its finest stored bucket that divides ``window``.

    The timeframe part of ``key`` is not used to choose the source (write ``*`` or any timeframe).

    Raises
    ------
    BucketNotFoundError
        If no stored bucket matches the symbol and attribute group.
    FunctionError
        If one matches but none has a timeframe that divides ``window`` (naming what is stored).
    """
    pattern = _family(key)
    stored: dict[tuple[str, str], list[TimeBucketKey]] = {}
    for k in backend.list_keys():
        try:
            tbk = parse_key(k)
        except InvalidKeyError:
            continue
        if pattern.matches(tbk):
            stored.setdefault((tbk.symbol, tbk.attribute_group), []).append(tbk)
    if not stored:
        raise BucketNotFoundError(f"no files returned from query parse: no bucket matches {key!r}")
    order = {s: i for i, s in enumerate(pattern.symbols)}
    out = []
    for (symbol, group), keys in sorted(stored.items(), key=lambda kv: (order.get(kv[0][0], len(order)), kv[0])):
        fits = [k for k in keys if _divides(k.timeframe.seconds, window)]
        if not fits:
            have = ", ".join(k.timeframe.name for k in sorted(keys, key=lambda k: k.timeframe.seconds))
            raise FunctionError(
                f"cannot make {window.name} candles for {symbol}/*/{group}: no stored timeframe divides "
                f"{window.name} (stored: {have}); store a finer bucket"
            )
        out.append(min(fits, key=lambda k: k.timeframe.seconds))
    return out


def _family(key: str) -> KeyPattern:
    item = key.partition(":")[0]
    parts = item.split("/")
    if len(parts) == 3:
        parts[1] = "*"  # the source timeframe is chosen here, not by the caller
    return parse_key_pattern("/".join(parts))


def _divides(seconds: int, window: Window) -> bool:
    if window.unit in ("s", "W"):
        return window.seconds % seconds == 0
    return 86_400 % seconds == 0  # months and years are whole days


def window_range(window: Window, start: int | None, end: int | None) -> tuple[int | None, int | None]:
    """Widen ``[start, end]`` (ns) to whole candles: a bound inside a candle selects all of it."""
    lo = None if start is None else int(window.floor(np.array([start], np.int64))[0])
    hi = None
    if end is not None:
        w0 = int(window.floor(np.array([end], np.int64))[0])
        hi = int(window.edges(w0, w0)[1]) - 1
    return lo, hi


def read_candles(
    backend: Backend,
    key: str,
    timeframe: str | Window,
    *,
    start: TimeLike = None,
    end: TimeLike = None,
    columns: Sequence[str] | None = None,
    limit: int | None = None,
    limit_from_start: bool = False,
) -> dict[str, Batch]:
    """Candles of ``timeframe`` for each symbol/attribute group ``key`` names, keyed ``SYM/<timeframe>/GROUP``.

    ``start``/``end`` select whole candles (inclusive); ``limit`` keeps the last (or first)
    N candles, after aggregation. Column rules are those of :func:`~mktsframe.functions.candles`.
    """
    window = parse_window(timeframe) if isinstance(timeframe, str) else timeframe
    lo, hi = window_range(window, to_ns(start, name="start"), to_ns(end, name="end"))
    out: dict[str, Batch] = {}
    for src in finest_sources(backend, key, window):
        (batch,) = backend.query(
            src.item_key,
            start=None if lo is None else np.datetime64(lo, "ns"),
            end=None if hi is None else np.datetime64(hi, "ns"),
            columns=list(columns) if columns is not None else None,
        ).values()
        result = candles(batch, window)
        if limit is not None:
            n = len(result)
            sl = slice(0, min(limit, n)) if limit_from_start else slice(n - min(limit, n), n)
            result = Batch(result.index[sl], {k: v[sl] for k, v in result.columns.items()})
        out[f"{src.symbol}/{window.name}/{src.attribute_group}"] = result
    return out
