"""Tick stores measured by ``bench/tick_run.py``: mktsframe tick buckets beside ArcticDB.

Each system writes a day of ticks, reads hours back and appends 1,000-tick batches; ``read_range``
takes a half-open ``[s, e)`` range in int64 **nanoseconds** (the bar systems' is in seconds). Reads
return a DataFrame indexed by time with the ``Price`` and ``Size`` columns. Opening, closing and
appending are the bar systems' (:mod:`bench.systems.mkts`, :mod:`bench.systems.arcticdb`).
"""

from __future__ import annotations

import pandas as pd

from bench.systems.arcticdb import ArcticSystem
from bench.systems.base import System
from bench.systems.mkts import MktsSystem

TICK_KEY = "EURUSD/1Sec/TICK"


class MktsTicks(MktsSystem):
    notes = ("mktsframe.connect(root) (durable: WAL fdatasync per write); df.to_mkts(key, variable_length=True) / "
             "pd.read_mkts(key, start=, end=) with inclusive ns bounds")

    def write(self, df: pd.DataFrame) -> None:
        df.to_mkts(TICK_KEY, variable_length=True, backend=self.db)

    append_chunk = write

    def read_all(self) -> pd.DataFrame:
        return pd.read_mkts(TICK_KEY, backend=self.db)

    def read_range(self, s: int, e: int) -> pd.DataFrame:
        return pd.read_mkts(TICK_KEY, start=pd.Timestamp(s, tz="UTC"), end=pd.Timestamp(e - 1, tz="UTC"),
                            backend=self.db)


class MktsTicksBackground(MktsTicks):
    background_sync = True
    notes = "as mktsframe, with connect(root, background_sync=True): the WAL is fdatasync'd every 0.5 s"


class ArcticTicks(ArcticSystem):
    notes = ("Arctic('lmdb://...'), default LibraryOptions; lib.write of the day / lib.append per batch "
             "(non-unique sorted index) / lib.read(date_range=) with inclusive bounds")

    def read_range(self, s: int, e: int) -> pd.DataFrame:
        from bench.common import SYMBOL

        return self.lib.read(SYMBOL, date_range=(pd.Timestamp(s), pd.Timestamp(e - 1))).data


#: name → (class, venv), as :data:`bench.systems.SYSTEMS`
TICK_SYSTEMS: dict[str, tuple[type[System], str]] = {
    "mktsframe": (MktsTicks, "main"),
    "mktsframe-bg": (MktsTicksBackground, "main"),
    "arcticdb-lmdb": (ArcticTicks, "peers"),
}
