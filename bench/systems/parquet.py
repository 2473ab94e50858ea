"""Parquet through pyarrow: a dataset directory, one file per write (Parquet has no in-place append)."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from bench.systems.base import System


class ParquetSystem(System):
    notes = ("pyarrow dataset directory; bulk = one file, default row groups; append = one more file per "
             "append; range = dataset.to_table(filter=Epoch range); tail = last row groups via metadata")

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.ds: Any = None
        self.files: list[str] = []
        self.nfile = 0

    def _fname(self) -> str:
        self.nfile += 1
        return os.path.join(self.root, f"part-{self.nfile:07d}.parquet")

    def reset(self) -> None:
        super().reset()
        self.nfile = 0

    def write(self, df: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pandas(df), self._fname())

    def open_read(self) -> None:
        import pyarrow.dataset as ds

        self.ds = ds.dataset(self.root, format="parquet")
        self.files = sorted(self.ds.files)

    def open_append(self) -> None:
        self.nfile = len(os.listdir(self.root))

    def close(self) -> None:
        self.ds = None
        self.files = []

    def read_all(self) -> pd.DataFrame:
        return self.ds.to_table().to_pandas()

    def read_range(self, s: int, e: int) -> pd.DataFrame:
        import pyarrow as pa
        import pyarrow.dataset as ds

        f = ((ds.field("Epoch") >= pa.scalar(pd.Timestamp(s, unit="s")))
             & (ds.field("Epoch") < pa.scalar(pd.Timestamp(e, unit="s"))))
        return self.ds.to_table(filter=f).to_pandas()

    def tail(self, n: int) -> pd.DataFrame:
        import pyarrow as pa
        import pyarrow.parquet as pq

        parts, have = [], 0
        for fn in reversed(self.files):
            pf = pq.ParquetFile(fn)
            for rg in range(pf.metadata.num_row_groups - 1, -1, -1):
                parts.append(pf.read_row_group(rg))
                have += pf.metadata.row_group(rg).num_rows
                if have >= n:
                    break
            if have >= n:
                break
        t = pa.concat_tables(list(reversed(parts)))
        return t.slice(max(t.num_rows - n, 0)).to_pandas()

    def append_chunk(self, df: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pandas(df), self._fname())
