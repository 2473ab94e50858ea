"""pandas ``HDFStore`` in ``format='table'`` (PyTables), no compression, default index."""

from __future__ import annotations

import os

import pandas as pd

from bench.common import SYMBOL
from bench.systems.base import System


class HDFSystem(System):
    notes = ("pandas HDFStore, format='table', no compression, default index; append = store.append; "
             "range = select(where='index>=s & index<e'); tail = select(start=nrows-n)")

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.path = os.path.join(root, "bars.h5")
        self.store: pd.HDFStore | None = None

    def write(self, df: pd.DataFrame) -> None:
        df.to_hdf(self.path, key=SYMBOL, format="table", mode="w")

    def open_read(self) -> None:
        self.store = pd.HDFStore(self.path, mode="r")

    def open_append(self) -> None:
        self.store = pd.HDFStore(self.path, mode="a")

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    def read_all(self) -> pd.DataFrame:
        assert self.store is not None
        return self.store.select(SYMBOL)

    def read_range(self, s: int, e: int) -> pd.DataFrame:
        assert self.store is not None
        s_ts, e_ts = pd.Timestamp(s, unit="s"), pd.Timestamp(e, unit="s")
        return self.store.select(SYMBOL, where=f"index>=Timestamp('{s_ts}') & index<Timestamp('{e_ts}')")

    def tail(self, n: int) -> pd.DataFrame:
        assert self.store is not None
        nrows = self.store.get_storer(SYMBOL).nrows
        return self.store.select(SYMBOL, start=max(nrows - n, 0))

    def append_chunk(self, df: pd.DataFrame) -> None:
        assert self.store is not None
        self.store.append(SYMBOL, df)
