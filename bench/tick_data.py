"""The tick benchmark's data: one UTC day of ticks, the 1,000-tick batches appended after it, and checks.

Imports in both interpreters (project venv and ``bench/.venv-peers``): numpy and pandas only.
Times are int64 nanoseconds since the epoch (UTC) unless a name says otherwise; durations seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

DAY0_NS = 1_709_251_200 * 1_000_000_000  # 2024-03-01 00:00 UTC
DAY_NS = 86_400 * 1_000_000_000
HOUR_NS = 3_600 * 1_000_000_000
TICK_COLS = ["Price", "Size"]


@dataclass(frozen=True)
class TickParams:
    """What one tick run measures; identical for every system."""

    ticks: int = 5_000_000  # in the day
    dup_share: float = 0.1  # share of ticks that repeat the previous tick's timestamp
    appends: int = 200  # 1,000-tick batches appended after the day
    batch: int = 1_000
    warm_min: int = 20  # hour reads: at least this many timed calls ...
    warm_max: int = 200  # ... at most this many ...
    warm_budget_s: float = 3.0  # ... stopping once this much time was spent (after warm_min)


def tick_frame(ns: np.ndarray, seed: int) -> pd.DataFrame:
    """Ticks at ``ns`` (sorted, duplicates allowed): Price float64 random walk, Size int32.

    The index is tz-naive ``datetime64[ns]`` (UTC), named ``Epoch``.
    """
    rng = np.random.default_rng(seed)
    n = ns.size
    price = 100.0 + np.cumsum(rng.normal(0.0, 0.01, n))
    size = rng.integers(1, 1000, n).astype("i4")
    return pd.DataFrame({"Price": price, "Size": size}, index=pd.DatetimeIndex(ns.view("M8[ns]"), name="Epoch"))


def day_times(n: int, dup_share: float, seed: int = 42) -> np.ndarray:
    """``n`` sorted tick times over the day (random nanoseconds), ``dup_share`` of them repeated."""
    rng = np.random.default_rng(seed)
    ns = np.sort(DAY0_NS + rng.integers(0, DAY_NS - HOUR_NS // 60, n))  # the last minute stays free for appends
    dup = rng.random(n) < dup_share
    dup[0] = False
    ns[dup] = ns[np.flatnonzero(dup) - 1]
    return np.maximum.accumulate(ns)


@dataclass
class TickData:
    day: pd.DataFrame
    batches: list[pd.DataFrame]

    def hour(self, h: int) -> pd.DataFrame:
        """The source rows of hour ``h`` of the day: ``[start, start + 1 h)``."""
        s, e = np.searchsorted(self.day.index.asi8, [DAY0_NS + h * HOUR_NS, DAY0_NS + (h + 1) * HOUR_NS])
        return self.day.iloc[s:e]

    def total(self) -> pd.DataFrame:
        return pd.concat([self.day, *self.batches])


def build_ticks(p: TickParams) -> TickData:
    ns = day_times(p.ticks, p.dup_share)
    day = tick_frame(ns, seed=42)
    last = int(ns[-1]) if ns.size else DAY0_NS
    batches = []
    for k in range(p.appends):  # each batch: the next 1,000 ticks, 50 µs apart on average, after the day
        rng = np.random.default_rng(1000 + k)
        t = last + 1 + np.sort(rng.integers(0, 100_000 * p.batch, p.batch))
        last = int(t[-1])
        batches.append(tick_frame(t, seed=1000 + k))
    return TickData(day, batches)


def check_ticks(got: pd.DataFrame, want: pd.DataFrame, what: str) -> None:
    """Raise unless ``got`` holds ``want``'s times (ns, any zone) and values, in order."""
    if len(got) != len(want):
        raise AssertionError(f"{what}: {len(got)} rows, expected {len(want)}")
    if not np.array_equal(got.index.as_unit("ns").asi8, want.index.as_unit("ns").asi8):
        raise AssertionError(f"{what}: times differ")
    for c in TICK_COLS:
        g, w = got[c].to_numpy(), want[c].to_numpy()
        if g.dtype != w.dtype or not np.array_equal(g, w):
            raise AssertionError(f"{what}: column {c} differs ({g.dtype} vs {w.dtype})")
