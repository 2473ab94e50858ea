"""What kind of bucket a key names, its column dtypes and whether it holds ticks, remembered per key.

The server conforms every write to the bucket's schema, and the stream must know whether a bucket
holds ticks (their pushes carry ``Nanoseconds``). Asking storage each time costs a bucket lookup
and an empty query on the path of every 1-row write (~40 µs, several times that on a CPU that
has just woken up), so the answer is kept until the owner says the bucket was created or
destroyed again (:meth:`BucketKinds.forget`, called from a commit listener). A missing bucket is
not remembered: the next write may create it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from mktsframe.backend.base import Batch
from mktsframe.errors import BucketNotFoundError, MktsError

__all__ = ["BucketKind", "BucketKinds"]


@dataclass(frozen=True)
class BucketKind:
    """A bucket's column dtypes (``Epoch`` excluded, in bucket order) and record type."""

    dtypes: Mapping[str, np.dtype]
    variable: bool


class BucketKinds:
    """``get(key)`` answered from a cache; ``probe(key)`` is the backend's ``query(key, limit=0)``.
    With ``cache=False`` (nobody will call :meth:`forget`) every ``get`` asks ``probe``."""

    def __init__(self, probe: Callable[[str], Mapping[str, Batch]], *, cache: bool = True) -> None:
        self._probe = probe
        self._cache = cache
        self._known: dict[str, BucketKind] = {}
        self._lock = threading.Lock()
        self._forgets = 0  # bumped by every forget: a probe that raced with one is not kept

    def get(self, key: str) -> BucketKind | None:
        """The kind of bucket ``key`` (an item key), ``None`` if it does not exist."""
        hit = self._known.get(key)
        if hit is not None:
            return hit
        forgets = self._forgets
        try:
            (batch,) = self._probe(key).values()
        except BucketNotFoundError:
            return None
        hit = BucketKind({n: v.dtype for n, v in batch.columns.items()}, batch.variable_length)
        if self._cache:
            with self._lock:
                if forgets == self._forgets:
                    self._known[key] = hit
        return hit

    def known(self, key: str) -> bool:
        """Whether ``key``'s kind is cached (the bucket existed when last asked)."""
        return key in self._known

    def variable(self, key: str) -> bool:
        """Whether ``key`` is a tick bucket (``False`` if it does not exist or cannot be read)."""
        try:
            kind = self.get(key)
        except MktsError:
            return False
        return kind is not None and kind.variable

    def forget(self, key: str) -> None:
        """Bucket ``key`` was created or destroyed: ask storage next time."""
        with self._lock:
            self._forgets += 1
            self._known.pop(key, None)
