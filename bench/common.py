"""Shared pieces of the benchmark: the bar set, result checks, timing loops and memory probes.

This module must import in *both* interpreters the harness uses: the project venv (pandas 3,
mktsframe) and ``bench/.venv-peers`` (pandas 2, ArcticDB), so it depends on numpy and pandas only.

Units: times are seconds (floats from :func:`time.perf_counter`), sizes are bytes, epochs are
int64 seconds since 1970-01-01 UTC unless a name says ``ns``.
"""

from __future__ import annotations

import gc
import os
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

perf = time.perf_counter

SYMBOL = "BTC"
KEY = "BTC/1Min/OHLCV"
EPOCH0 = 1609459200  # 2021-01-01T00:00:00Z, a midnight: day boundaries are multiples of 86400 from here
BAR = 60  # seconds per 1-minute bar
DAY = 86400
COLS = ["Open", "High", "Low", "Close", "Volume"]
REC = np.dtype([("Epoch", "<i8"), ("Open", "<f4"), ("High", "<f4"), ("Low", "<f4"), ("Close", "<f4"),
                ("Volume", "<f8")])  # 32-byte records, as in the anchors


@dataclass(frozen=True)
class Params:
    """What one run measures; identical for every system so results are comparable."""

    rows: int = 1_000_000
    repeats: int = 5  # bulk writes and full reads per round
    single_appends: int = 300  # 1-row appends per round
    chunk_appends: int = 50  # chunk appends per round
    chunk_rows: int = 1000
    warm_min: int = 30  # warm reads: at least this many timed calls ...
    warm_max: int = 300  # ... at most this many ...
    warm_budget_s: float = 1.5  # ... and stop once this much time was spent (after warm_min)


@dataclass
class Data:
    """The bar set and everything appended to it, built identically in every worker."""

    df: pd.DataFrame
    rows: list[pd.DataFrame]  # 1-row frames continuing after df
    chunks: list[pd.DataFrame]  # chunk frames continuing after the rows
    range_s: int  # one-day range read [range_s, range_e) in epoch seconds, from the middle
    range_e: int

    def want_range(self) -> pd.DataFrame:
        i0 = (self.range_s - EPOCH0) // BAR
        i1 = (self.range_e - EPOCH0) // BAR
        return self.df.iloc[max(i0, 0):min(i1, len(self.df))]

    def total(self) -> pd.DataFrame:
        return pd.concat([self.df, *self.rows, *self.chunks])


def epoch_to_index(epoch_s: np.ndarray) -> pd.DatetimeIndex:
    """Tz-naive (UTC) nanosecond ``DatetimeIndex`` named ``Epoch`` from int64 epoch seconds."""
    return pd.DatetimeIndex(np.asarray(epoch_s, dtype="<i8").astype("datetime64[s]").astype("datetime64[ns]"),
                            name="Epoch")


def make_bars(n: int, start_epoch: int, seed: int, last_close: float = 30000.0) -> pd.DataFrame:
    """Random-walk 1-minute OHLCV bars without gaps (OHLC float32, Volume float64), as the anchors."""
    rng = np.random.default_rng(seed)
    close = last_close * np.exp(np.cumsum(rng.normal(0.0, 5e-4, n)))
    open_ = np.empty(n)
    if n:
        open_[0] = last_close
        open_[1:] = close[:-1]
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 2e-4, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 2e-4, n)))
    vol = rng.lognormal(3.0, 1.0, n)
    epoch = start_epoch + BAR * np.arange(n, dtype=np.int64)
    return pd.DataFrame({"Open": open_.astype("f4"), "High": high.astype("f4"), "Low": low.astype("f4"),
                         "Close": close.astype("f4"), "Volume": vol.astype("f8")}, index=epoch_to_index(epoch))


def build_data(p: Params) -> Data:
    """The benchmark's bars (seed 42) and the appends that continue them (seed 43)."""
    df = make_bars(p.rows, EPOCH0, seed=42)
    n_app = p.single_appends + p.chunk_appends * p.chunk_rows
    last = float(df["Close"].iloc[-1]) if len(df) else 30000.0
    app = make_bars(n_app, EPOCH0 + BAR * p.rows, seed=43, last_close=last)
    rows = [app.iloc[i:i + 1].copy() for i in range(p.single_appends)]
    off = p.single_appends
    chunks = [app.iloc[off + k * p.chunk_rows: off + (k + 1) * p.chunk_rows].copy() for k in range(p.chunk_appends)]
    mid = EPOCH0 + BAR * (p.rows // 2)
    range_s = mid - (mid - EPOCH0) % DAY
    return Data(df, rows, chunks, range_s, range_s + DAY)


def check_same(got: pd.DataFrame, want: pd.DataFrame, what: str) -> None:
    """Raise unless ``got`` holds exactly ``want``'s timestamps (ns, any zone) and column values/dtypes."""
    if len(got) != len(want):
        raise AssertionError(f"{what}: {len(got)} rows, expected {len(want)}")
    gi = got.index
    if not isinstance(gi, pd.DatetimeIndex):
        raise AssertionError(f"{what}: index is {type(gi).__name__}, not a DatetimeIndex")
    if not np.array_equal(gi.as_unit("ns").asi8, want.index.as_unit("ns").asi8):
        raise AssertionError(f"{what}: index differs")
    for c in COLS:
        g, w = got[c].to_numpy(), want[c].to_numpy()
        if g.dtype != w.dtype:
            raise AssertionError(f"{what}: column {c} is {g.dtype}, expected {w.dtype}")
        if not np.array_equal(g, w):
            raise AssertionError(f"{what}: column {c} differs")


def med(xs: list[float]) -> float | None:
    """Median, or ``None`` for no samples."""
    return float(statistics.median(xs)) if xs else None


def p99(xs: list[float]) -> float | None:
    """99th percentile, or ``None`` for no samples."""
    return float(np.percentile(np.asarray(xs), 99)) if xs else None


def time_each(fn: Callable[[object], object], items: list) -> list[float]:
    """Seconds taken by ``fn(item)`` for each item, in order (garbage collected once before)."""
    gc.collect()
    out = []
    for it in items:
        t0 = perf()
        fn(it)
        out.append(perf() - t0)
    return out


def time_repeated(fn: Callable[[], object], lo: int, hi: int, budget_s: float) -> list[float]:
    """Seconds per call of ``fn``: at least ``lo`` calls, at most ``hi``, stopping after ``budget_s``."""
    gc.collect()
    out: list[float] = []
    start = perf()
    while len(out) < hi and (len(out) < lo or perf() - start < budget_s):
        t0 = perf()
        fn()
        out.append(perf() - t0)
    return out


def du(path: str) -> tuple[int, int]:
    """(allocated, apparent) bytes of a file or tree; allocated is what sparse files really cost."""
    if os.path.isfile(path):
        st = os.stat(path)
        return st.st_blocks * 512, st.st_size
    alloc = appar = 0
    for dp, _dn, fns in os.walk(path):
        for fn in fns:
            try:
                st = os.stat(os.path.join(dp, fn))
            except FileNotFoundError:
                continue
            alloc += st.st_blocks * 512
            appar += st.st_size
    return alloc, appar


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """Memory fields of ``/proc/PID/status`` (VmRSS, VmHWM, RssAnon, RssFile, VmSize) in bytes."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "VmSize"):
                    out[k] = int(v.split()[0]) * 1024
    except OSError:  # not Linux: fall back to the portable peak
        out["VmHWM"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


def reset_peak_rss(pid: int | str = "self") -> bool:
    """Reset a process's peak RSS (VmHWM) to its current RSS (Linux ``clear_refs`` 5; default: this one)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
