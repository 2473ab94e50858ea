"""What a subscriber receives: MarketStore's push messages, one per stored row, plus notices.

A row message is exactly MarketStore's ``/ws`` payload::

    {"key": "BTC/1Min/OHLCV", "data": {"Epoch": 1704067200, "Open": 1.0, ..., "Volume": 3.0}}

``Epoch`` is whole **seconds** since the Unix epoch, UTC (the bar start for fixed buckets); tick
(variable-length) buckets add ``Nanoseconds`` (0..999,999,999 within that second), as MarketStore
does. Values are plain Python scalars (float32 columns arrive as the same value in a float).
MarketStore pushes only the last row of each write; mktsframe pushes every row of a write, in
time order, so a 500-row write is 500 messages.

Notices have no ``key`` (pymarketstore's ``StreamConn`` ignores them) and a ``notice`` field:

* ``{"notice": "dropped", "dropped": n}`` — this subscriber was too slow and lost its ``n``
  oldest pending rows (see :mod:`mktsframe.streaming.feed`); resubscribe with ``since`` to
  recover them from storage.
* ``{"notice": "caught_up", "rows": n, "seq": s}`` — the ``n`` rows replayed from storage for a
  ``since`` subscription have all been sent; live messages follow.
* ``{"notice": "deleted", "bucket": key, "start": ns|None, "end": ns|None}`` and
  ``{"notice": "destroyed", "bucket": key}`` — rows or a bucket were removed (mktsframe clients
  only: a pymarketstore client never receives these).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from mktsframe.backend.base import Batch

__all__ = ["Chunk", "Notice", "row_messages"]

NS = 1_000_000_000
Message = dict[str, Any]


def row_messages(key: str, batch: Batch, variable: bool) -> list[Message]:
    """``{"key", "data"}`` for every row of ``batch`` (index int64 ns UTC), generic over its columns."""
    index = np.asarray(batch.index, dtype=np.int64)
    secs, nanos = np.divmod(index, NS)
    names = ["Epoch"]
    columns: list[list[Any]] = [secs.tolist()]
    for name, values in batch.columns.items():
        if name in ("Epoch", "Nanoseconds"):
            continue
        names.append(name)
        columns.append(np.asarray(values).tolist())
    if variable or "Nanoseconds" in batch.columns:
        names.append("Nanoseconds")
        columns.append(nanos.tolist())
    return [{"key": key, "data": dict(zip(names, row, strict=True))} for row in zip(*columns, strict=True)]


@dataclass(eq=False)
class Chunk:
    """The rows of one committed write heading to subscribers (``seq``: the commit's position).

    Frames are encoded once, lazily, and shared by every connection that receives the chunk.
    """

    seq: int
    key: str
    batch: Batch
    variable: bool = False
    _frames: list[bytes] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.batch)

    def messages(self) -> list[Message]:
        return row_messages(self.key, self.batch, self.variable)

    def frames(self) -> list[bytes]:
        """msgpack frames of :meth:`messages` (what ``/ws`` sends)."""
        if self._frames is None:
            self._frames = [msgpack.packb(m, use_bin_type=True) for m in self.messages()]
        return self._frames

    def tail(self, n: int) -> Chunk:
        """The last ``n`` rows (what survives when the oldest are dropped)."""
        b = self.batch
        start = len(b) - n
        return Chunk(self.seq, self.key, Batch(b.index[start:], {c: v[start:] for c, v in b.columns.items()}),
                     self.variable)


@dataclass(eq=False)
class Notice:
    """A control message for one subscriber; never dropped, counts as no row."""

    body: Message
    raw: bytes | None = None
    """Exact bytes to send instead of encoding ``body`` (the subscribe echo)."""
    seq: int = 0
    key: str | None = None

    def __len__(self) -> int:
        return 0

    def messages(self) -> list[Message]:
        return [self.body]

    def frames(self) -> list[bytes]:
        return [self.raw if self.raw is not None else msgpack.packb(self.body, use_bin_type=True)]
