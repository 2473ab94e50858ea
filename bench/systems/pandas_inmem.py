"""The DataFrame baseline of MarketStore's claim: an in-memory frame, appended with ``pd.concat``."""

from __future__ import annotations

import pandas as pd

from bench.systems.base import System


class PandasSystem(System):
    persistent = False
    notes = "in-memory DataFrame; append = pd.concat([df, new]); range = df.loc[s:e]; tail = df.tail(n)"

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.df: pd.DataFrame | None = None

    def reset(self) -> None:
        self.df = None

    def write(self, df: pd.DataFrame) -> None:
        self.df = df  # not timed: there is nothing to write

    def read_all(self) -> pd.DataFrame:
        assert self.df is not None
        return self.df

    def read_range(self, s: int, e: int) -> pd.DataFrame:
        assert self.df is not None
        return self.df.loc[pd.Timestamp(s, unit="s"):pd.Timestamp(e * 1_000_000_000 - 1)]

    def tail(self, n: int) -> pd.DataFrame:
        assert self.df is not None
        return self.df.tail(n)

    def append_chunk(self, df: pd.DataFrame) -> None:
        self.df = pd.concat([self.df, df])

    def size(self) -> tuple[int, int]:
        """Bytes of RAM the frame holds (it has no disk footprint)."""
        b = int(self.df.memory_usage(deep=True, index=True).sum()) if self.df is not None else 0
        return b, b
