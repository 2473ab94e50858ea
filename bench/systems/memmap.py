"""The physical-limit baseline: a ``numpy.memmap`` of 32-byte records with a dense slot per minute.

No WAL, header, locking or fsync: row ``i`` holds the bar at ``epoch0 + 60 * i``. Reads slice the
mapping and build a DataFrame exactly as the anchors did (``copy=True``, int seconds → ns index), so
DataFrame construction is included, as it is for every other system.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from bench.common import BAR, COLS, REC, SYMBOL, epoch_to_index
from bench.systems.base import System


def df_to_rec(df: pd.DataFrame) -> np.ndarray:
    """Frame → 32-byte records (epoch seconds + OHLCV)."""
    rec = np.empty(len(df), REC)
    rec["Epoch"] = df.index.as_unit("ns").asi8 // 1_000_000_000
    for c in COLS:
        rec[c] = df[c].to_numpy()
    return rec


def rec_to_df(rec: np.ndarray) -> pd.DataFrame:
    """Records → DataFrame (copies: the mapping must not leak into the result)."""
    return pd.DataFrame({c: rec[c] for c in COLS}, index=epoch_to_index(rec["Epoch"]), copy=True)


class MemmapSystem(System):
    notes = ("numpy.memmap of 32-byte records, row = (epoch-epoch0)/60; append = df->records + os.pwrite "
             "at the computed offset (no fsync); reads build the DataFrame with pandas' public constructor")

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.path = os.path.join(root, f"{SYMBOL}_1Min_OHLCV.bin")
        self.mm: np.memmap | None = None
        self.fd: int | None = None
        self.epoch0 = 0

    def write(self, df: pd.DataFrame) -> None:
        with open(self.path, "wb") as f:
            f.write(df_to_rec(df).data)

    def open_read(self) -> None:
        self.mm = np.memmap(self.path, dtype=REC, mode="r")
        self.epoch0 = int(self.mm[0]["Epoch"])

    def open_append(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY)
        with open(self.path, "rb") as f:
            self.epoch0 = int(np.frombuffer(f.read(REC.itemsize), REC)[0]["Epoch"])

    def close(self) -> None:
        self.mm = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _slice(self, s: int, e: int) -> np.ndarray:
        assert self.mm is not None
        n = len(self.mm)
        i0 = min(max((s - self.epoch0 + BAR - 1) // BAR, 0), n)
        i1 = min(max((e - self.epoch0 + BAR - 1) // BAR, 0), n)
        return self.mm[i0:i1]

    def read_all(self) -> pd.DataFrame:
        assert self.mm is not None
        return rec_to_df(self.mm)

    def read_range(self, s: int, e: int) -> pd.DataFrame:
        return rec_to_df(self._slice(s, e))

    def read_range_raw(self, s: int, e: int) -> np.ndarray:
        """The same slice as plain records, no DataFrame: the storage floor."""
        return np.array(self._slice(s, e))

    def tail(self, n: int) -> pd.DataFrame:
        assert self.mm is not None
        return rec_to_df(self.mm[-n:])

    def append_chunk(self, df: pd.DataFrame) -> None:
        assert self.fd is not None
        rec = df_to_rec(df)
        os.pwrite(self.fd, rec.data, (int(rec[0]["Epoch"]) - self.epoch0) // BAR * REC.itemsize)
