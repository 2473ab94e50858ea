"""ArcticDB on its LMDB backend, with default library options (runs in ``bench/.venv-peers``)."""

from __future__ import annotations

import gc
from typing import Any

import pandas as pd

from bench.common import SYMBOL
from bench.systems.base import System


class ArcticSystem(System):
    notes = ("Arctic('lmdb://...'), default LibraryOptions; lib.write / lib.append (each append is a new "
             "version, previous versions kept) / lib.read(date_range=) / lib.tail")

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.ac: Any = None
        self.lib: Any = None

    def _open(self) -> None:
        from arcticdb import Arctic

        self.ac = Arctic(f"lmdb://{self.root}")
        self.lib = self.ac.get_library("bars", create_if_missing=True)

    def prepare_write(self) -> None:
        self._open()

    def open_read(self) -> None:
        self._open()

    def close(self) -> None:
        self.lib = self.ac = None
        gc.collect()

    def write(self, df: pd.DataFrame) -> None:
        self.lib.write(SYMBOL, df)

    def read_all(self) -> pd.DataFrame:
        return self.lib.read(SYMBOL).data

    def read_range(self, s: int, e: int) -> pd.DataFrame:
        rng = (pd.Timestamp(s, unit="s"), pd.Timestamp(e * 1_000_000_000 - 1))
        return self.lib.read(SYMBOL, date_range=rng).data

    def tail(self, n: int) -> pd.DataFrame:
        return self.lib.tail(SYMBOL, n).data

    def append_chunk(self, df: pd.DataFrame) -> None:
        self.lib.append(SYMBOL, df)
