"""mktsframe's local engine through its pandas front door (``write_mkts`` / ``pd.read_mkts``).

Two variants: the durable default (every write ``fdatasync``'d before it returns) and
``background_sync=True`` (the log is synced every 0.5 s, MarketStore's default behaviour).
The durable bulk write (1M bars into an empty bucket) takes the engine's direct path: the rows are
``fdatasync``'d into the year files between two synced WAL records (``docs/format.md``); with
``background_sync`` it goes through the log. The checkpoint at close is outside the timing (as no
peer's close is timed either).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from bench.common import KEY
from bench.systems.base import System


class MktsSystem(System):
    background_sync = False
    notes = ("mktsframe.connect(root) (durable: WAL fdatasync per write); write_mkts(df, key) / "
             "pd.read_mkts(key, start=, end=) / pd.read_mkts(key, limit=100)")

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.db: Any = None

    def _open(self) -> None:
        import mktsframe

        if self.db is None:
            self.db = mktsframe.connect(self.root, background_sync=self.background_sync, read_only=False)

    prepare_write = open_read = open_append = _open

    def close(self) -> None:
        if self.db is not None:
            self.db.close()  # checkpoints: msync of the year files, WAL dropped
            self.db = None

    def write(self, df: pd.DataFrame) -> None:
        import mktsframe

        mktsframe.write_mkts(df, KEY, backend=self.db)

    append_chunk = write

    def read_all(self) -> pd.DataFrame:
        return pd.read_mkts(KEY, backend=self.db)

    def read_range(self, s: int, e: int) -> pd.DataFrame:
        # inclusive bounds: the last nanosecond before e selects the last bar of the day
        return pd.read_mkts(KEY, start=pd.Timestamp(s, unit="s"), end=pd.Timestamp(e * 1_000_000_000 - 1),
                            backend=self.db)

    def tail(self, n: int) -> pd.DataFrame:
        return pd.read_mkts(KEY, limit=n, backend=self.db)


class MktsBackgroundSystem(MktsSystem):
    background_sync = True
    notes = ("as mktsframe, with connect(root, background_sync=True): the WAL is fdatasync'd every 0.5 s "
             "by a background thread instead of per write")
