"""Which buckets are tick (variable-length) buckets, remembered per key.

Push messages of tick buckets carry ``Nanoseconds`` (MarketStore's payload), so the streaming
side must know a bucket's record type; asking storage on every write would be wasteful, so the
answer is cached until the bucket is created or destroyed again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from mktsframe.backend.base import BucketInfo
from mktsframe.errors import MktsError

__all__ = ["RecordTypes"]


class RecordTypes:
    """``variable(key)`` with a cache; ``forget(key)`` after a create or destroy."""

    def __init__(self, info: Callable[[str], BucketInfo]) -> None:
        self._info = info
        self._known: dict[str, bool] = {}
        self._lock = threading.Lock()

    def variable(self, key: str) -> bool:
        hit = self._known.get(key)
        if hit is None:
            try:
                hit = self._info(key).record_type == "variable"
            except MktsError:
                return False
            with self._lock:
                self._known[key] = hit
        return hit

    def forget(self, key: str) -> None:
        with self._lock:
            self._known.pop(key, None)
