"""A tick bucket's day as a published object: compact, by column, readable by byte range.

A local tick partition (:mod:`mktsframe.engine.tick_file`) keeps room for growth, commit slots
and an undo file; none of that belongs in object storage. ``sync`` publishes each day that holds
ticks as one immutable object::

    b"MKTSTICK" | u32 length of the JSON | JSON {"rows", "first", "last", "columns": [[name, dtype]]}
    | padding to 8 bytes | times (int64 ns since the epoch, UTC, ascending) | each column, whole

so a reader fetches the head once (cached: objects never change), then a whole day is one ranged
``GET`` per column, and part of a day the times first (to find the rows by binary search), then
one ranged ``GET`` per column for just those rows. Times keep their exact nanoseconds, and equal
times their arrival order.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from mktsframe.errors import CorruptFileError

__all__ = ["HEAD_BYTES", "MAGIC", "TickDayHead", "day_of_name", "parse_head", "write_day"]

MAGIC = b"MKTSTICK"
#: Bytes a reader fetches first: the head of any day of up to a few hundred columns.
HEAD_BYTES = 4096
_PREFIX = struct.Struct("<8sI")


@dataclass(frozen=True)
class TickDayHead:
    """What a day object's head says: its rows, time extent and where each column starts."""

    rows: int
    first: int | None
    last: int | None
    columns: tuple[tuple[str, np.dtype[Any]], ...]
    data: int
    """Offset of the times; column ``i`` follows at ``data + rows * 8 + sum of the earlier columns``."""

    def offset(self, name: str) -> tuple[int, np.dtype[Any]]:
        """Where column ``name`` starts, and its dtype."""
        pos = self.data + self.rows * 8
        for n, dt in self.columns:
            if n == name:
                return pos, dt
            pos += self.rows * dt.itemsize
        raise KeyError(name)


def day_of_name(name: str) -> int | None:
    """The day (days since 1970-01-01, UTC) of a tick partition's or day object's name,
    ``YYYYMMDD.tick``; ``None`` for any other name."""
    stem, _, ext = name.partition(".")
    if ext != "tick" or len(stem) != 8 or not stem.isdigit():
        return None
    try:
        return int(np.datetime64(f"{stem[:4]}-{stem[4:6]}-{stem[6:]}", "D").astype(np.int64))
    except ValueError:
        return None


def write_day(out: IO[bytes], ns: np.ndarray, columns: dict[str, np.ndarray]) -> None:
    """Write one day's ticks (``ns`` ascending, int64 ns) as a day object to ``out``."""
    n = int(ns.shape[0])
    doc = {"rows": n, "first": int(ns[0]) if n else None, "last": int(ns[-1]) if n else None,
           "columns": [[name, np.asarray(a).dtype.str] for name, a in columns.items()]}  # fmt: skip
    raw = json.dumps(doc, separators=(",", ":")).encode()
    head = _PREFIX.pack(MAGIC, len(raw)) + raw
    out.write(head + b"\0" * (-len(head) % 8))
    out.write(np.ascontiguousarray(ns, dtype="<i8").tobytes())
    for a in columns.values():
        out.write(np.ascontiguousarray(a).tobytes())


def parse_head(where: str, raw: bytes, more: Any) -> TickDayHead:
    """The head of the day object ``where`` from its first bytes ``raw``; ``more(offset, n)`` fetches
    the rest of a head longer than ``raw``."""
    if len(raw) < _PREFIX.size or raw[:8] != MAGIC:
        raise CorruptFileError(f"{where}: not a published tick day (bad magic)")
    (_, length) = _PREFIX.unpack_from(raw)
    end = _PREFIX.size + length
    if len(raw) < end:
        raw = raw + more(len(raw), end - len(raw))
    try:
        doc = json.loads(raw[_PREFIX.size : end])
        columns = tuple((str(name), np.dtype(dt)) for name, dt in doc["columns"])
        rows = int(doc["rows"])
        first = None if doc["first"] is None else int(doc["first"])
        last = None if doc["last"] is None else int(doc["last"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptFileError(f"{where}: unreadable tick day head ({exc})") from None
    return TickDayHead(rows, first, last, columns, end + (-end % 8))
