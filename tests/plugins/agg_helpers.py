"""Shared by the ondiskagg tests and their SIGKILL child: data, a stand-in dispatcher, the reference.

The dispatcher does what the plugin framework does (hear commits on the writer's thread, call
``fire`` later on another thread with the events in commit order); the reference candles come
from pandas' ``resample``, an implementation independent of ours.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import pandas as pd

from mktsframe.backend.base import Backend
from mktsframe.engine.commits import CommitEvent

DESTS = ["5Min", "15Min", "1H", "1D"]
T0 = pd.Timestamp("2024-01-01", tz="UTC")


def minute_bars(first_minute: int, n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = (100 + rng.standard_normal(n).cumsum()).astype("f4")
    idx = (T0 + pd.to_timedelta(first_minute + np.arange(n), unit="min")).as_unit("ns")
    return pd.DataFrame({"Open": close + np.float32(0.5), "High": close + np.float32(1), "Low": close - np.float32(1),
                         "Close": close, "Volume": rng.integers(1, 1000, n).astype("i8")}, index=idx)  # fmt: skip


class Dispatcher:
    """Collects commit events; :meth:`flush` hands them to the trigger, as the framework would."""

    def __init__(self, backend: Backend, trigger: object) -> None:
        self.backend = backend
        self.trigger = trigger
        self.events: list[CommitEvent] = []
        self._lock = threading.Lock()
        self.unlisten = backend.on_commit(self._hear)  # type: ignore[attr-defined]

    def _hear(self, ev: CommitEvent) -> None:
        with self._lock:
            self.events.append(ev)

    def flush(self) -> int:
        with self._lock:
            batch, self.events = self.events, []
        if batch:
            self.trigger.fire(self.backend, batch)  # type: ignore[attr-defined]
        return len(batch)


def expected(source: pd.DataFrame, tf: str) -> pd.DataFrame:
    freq = tf.replace("Min", "min").replace("H", "h")
    r = source.resample(freq, closed="left", label="left")
    out = r.agg({"Open": "first", "High": "max", "Low": "min", "Close": "last", "Volume": "sum"})
    return out[r.size() > 0]


def mismatches(backend: Backend, symbol: str, dests: Sequence[str] = DESTS, group: str = "OHLCV") -> list[str]:
    """Destinations that differ from the reference candles of the stored source (empty = consistent)."""
    src = pd.read_mkts(f"{symbol}/1Min/{group}", backend=backend)
    bad = []
    for tf in dests:
        want = expected(src, tf)
        try:
            got = pd.read_mkts(f"{symbol}/{tf}/{group}", backend=backend)
        except KeyError:
            got = want.iloc[:0]
        if len(got) != len(want) or not np.array_equal(got.index.asi8, want.index.as_unit("ns").asi8):
            bad.append(f"{tf}: {len(got)} candles, want {len(want)}")
            continue
        for col in want.columns:
            if not np.allclose(got[col].to_numpy(np.float64), want[col].to_numpy(np.float64)):
                bad.append(f"{tf}.{col} differs")
    return bad
