"""The interface every measured system implements; the worker drives it identically for all."""

from __future__ import annotations

import os
import shutil

import pandas as pd

from bench.common import du


class System:
    """A store under test. Ranges are half-open ``[s, e)`` in epoch seconds; every read returns a
    DataFrame indexed by a ``DatetimeIndex`` with the five OHLCV columns."""

    name = "?"
    persistent = True  # False: in memory only (no bulk write, full read or size on disk)
    notes = ""

    def __init__(self, root: str) -> None:
        self.root = root

    def reset(self) -> None:
        """Remove all data: the next :meth:`write` starts from nothing."""
        self.close()
        shutil.rmtree(self.root, ignore_errors=True)
        os.makedirs(self.root, exist_ok=True)

    def prepare_write(self) -> None:
        """Open for the bulk write (not timed)."""

    def write(self, df: pd.DataFrame) -> None:
        """Bulk-write the whole frame (timed)."""
        raise NotImplementedError

    def finish_write(self) -> None:
        """Close after the bulk write (not timed; flushes whatever the system defers)."""
        self.close()

    def open_read(self) -> None:
        """Open for reading (not timed)."""

    def open_append(self) -> None:
        """Open for appending (not timed)."""
        self.open_read()

    def close(self) -> None:
        """Release files and handles."""

    def shutdown(self) -> None:
        """End of the measurement: stop whatever the system started (a server process)."""
        self.close()

    def read_all(self) -> pd.DataFrame:
        raise NotImplementedError

    def read_range(self, s: int, e: int) -> pd.DataFrame:
        raise NotImplementedError

    def tail(self, n: int) -> pd.DataFrame:
        raise NotImplementedError

    def append_row(self, df: pd.DataFrame) -> None:
        """Append a 1-row frame; by default the same call as a chunk."""
        self.append_chunk(df)

    def append_chunk(self, df: pd.DataFrame) -> None:
        raise NotImplementedError

    def size(self) -> tuple[int, int]:
        """(allocated, apparent) bytes on disk."""
        return du(self.root)
