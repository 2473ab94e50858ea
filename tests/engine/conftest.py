"""Fixtures for engine tests: a fresh data root per test, engines always closed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mktsframe
from mktsframe.backend.local import LocalBackend


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def db(root: Path) -> Iterator[LocalBackend]:
    backend = mktsframe.connect(root, read_only=False)
    assert isinstance(backend, LocalBackend)
    yield backend
    backend.close()


def bars(start: str, periods: int, freq: str = "1min", seed: int = 0) -> pd.DataFrame:
    """OHLCV bars with float32 prices and float64 volume, UTC index."""
    rng = np.random.default_rng(seed)
    idx = pd.date_range(start, periods=periods, freq=freq, tz="UTC").as_unit("ns")
    cols = {c: rng.random(periods).astype("f4") for c in ("Open", "High", "Low", "Close")}
    cols["Volume"] = rng.random(periods)
    return pd.DataFrame(cols, index=idx)
