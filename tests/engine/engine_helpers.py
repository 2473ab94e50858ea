"""Data builders shared by the engine tests."""

from __future__ import annotations

import numpy as np
import pandas as pd


def bars(start: str, periods: int, freq: str = "1min", seed: int = 0) -> pd.DataFrame:
    """OHLCV bars with float32 prices and float64 volume, UTC index."""
    rng = np.random.default_rng(seed)
    idx = pd.date_range(start, periods=periods, freq=freq, tz="UTC").as_unit("ns")
    cols = {c: rng.random(periods).astype("f4") for c in ("Open", "High", "Low", "Close")}
    cols["Volume"] = rng.random(periods)
    return pd.DataFrame(cols, index=idx)
