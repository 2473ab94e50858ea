"""``df.mkts`` and ``df.to_mkts``: registered with pandas' official accessor API.

pandas builds a new accessor object on every attribute access, so nothing is cached here; the
key a frame was read from lives in ``df.attrs["mkts_key"]``.
"""

from __future__ import annotations

import pandas as pd

from mktsframe.backend import Backend
from mktsframe.io.pandas import write_mkts

__all__ = ["MktsAccessor", "ToMkts"]


class MktsAccessor:
    """``df.mkts``: mktsframe operations on a DataFrame."""

    def __init__(self, df: pd.DataFrame) -> None:
        self._df = df

    @property
    def key(self) -> str | None:
        """The bucket key this frame was read from, if any."""
        return self._df.attrs.get("mkts_key")

    def write(self, key: str | None = None, *, backend: Backend | None = None) -> None:
        """Store the frame in ``key`` (default: the key it was read from)."""
        target = key or self.key
        if target is None:
            raise ValueError("no key given and the frame was not read from mktsframe")
        write_mkts(self._df, target, backend=backend)


class ToMkts:
    """``df.to_mkts(key)``: the same as :func:`mktsframe.write_mkts` (pandas-flavor pattern)."""

    def __init__(self, df: pd.DataFrame) -> None:
        self._df = df

    def __call__(self, key: str, *, backend: Backend | None = None) -> None:
        write_mkts(self._df, key, backend=backend)


def register() -> None:
    """Install the accessors and ``pd.read_mkts`` once (never over a foreign definition)."""
    from mktsframe.io.pandas import read_mkts

    if "mkts" not in getattr(pd.DataFrame, "_accessors", set()):
        pd.api.extensions.register_dataframe_accessor("mkts")(MktsAccessor)
    if "to_mkts" not in getattr(pd.DataFrame, "_accessors", set()):
        pd.api.extensions.register_dataframe_accessor("to_mkts")(ToMkts)
    if not hasattr(pd, "read_mkts"):
        pd.read_mkts = read_mkts  # type: ignore[attr-defined]
