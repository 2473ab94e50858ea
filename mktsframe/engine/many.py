"""Writes to many buckets in one log record: :meth:`Engine.write_many` and group commit.

A live feed that writes one bar to each of 5,000 symbols every minute must not pay 5,000
``fdatasync`` calls. :meth:`Engine.write_many` checks every item first (nothing is logged if any
is refused), logs them as **one** ``write_many`` record and syncs once, so the write is
all-or-nothing across its keys, after a crash too: the record's checksum covers all of it.

The record packs items by *shape* (kind and column dtypes) so that its size does not grow with
the number of arrays: per shape, one array of row counts, one of first-bar seconds (runs of
consecutive bars) or of times (other writes, ticks in ns), and one array per column holding every
item's values end to end. Its metadata lists the keys, each shape's item numbers, and the schema
of buckets the write creates.

Group commit (:class:`PendingWrite`): threads that call :meth:`Engine.write` while another write
holds the log queue their write; the next thread to get the write lock commits everything queued
as one ``write_many``. A write therefore waits for at most one sync already in flight, and is never
acknowledged before its own record is durable.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mktsframe.keys import TimeBucketKey, parse_key

__all__ = [
    "Item",
    "PendingWrite",
    "WriteQueue",
    "cross_section_arrays",
    "cross_section_meta",
    "decode_record",
    "encode_record",
]

#: Queued writes of more rows than this commit on their own (their own record and optimisations).
GROUP_MAX_ROWS = 4096


@dataclass(slots=True)
class Item:
    """One bucket's part of a multi-bucket write, checked and normalised, ready to log.

    ``times`` are bar-start **seconds** for fixed buckets and **nanoseconds** for tick buckets;
    ``create`` is ``(schema, record_type)`` when the write creates the bucket.
    """

    key: TimeBucketKey
    ticks: bool
    times: np.ndarray
    arrays: list[np.ndarray]
    timeframe: int
    create: tuple[tuple[tuple[str, str], ...], str] | None = None

    @property
    def kind(self) -> str:
        if self.ticks:
            return "ticks"
        t = self.times
        consecutive = int(t[-1]) - int(t[0]) == (t.shape[0] - 1) * self.timeframe
        return "run" if consecutive else "write"


def encode_record(items: list[Item]) -> tuple[dict[str, Any], list[np.ndarray]]:
    """The ``write_many`` WAL record (meta, arrays) holding ``items`` (see the module docstring)."""
    shapes: dict[tuple[Any, ...], list[int]] = {}
    kinds = [it.kind for it in items]
    for i, it in enumerate(items):
        shapes.setdefault((kinds[i], *(a.dtype.str for a in it.arrays)), []).append(i)
    arrays: list[np.ndarray] = []
    groups = []
    for (kind, *_), members in shapes.items():
        group = [items[i] for i in members]
        arrays.append(np.array([it.times.shape[0] for it in group], np.int64))
        if kind == "run":
            arrays.append(np.array([int(it.times[0]) for it in group], np.int64))
        else:
            arrays.append(_concat([it.times for it in group]))
        ncols = len(group[0].arrays)
        arrays.extend(_concat([it.arrays[c] for it in group]) for c in range(ncols))
        groups.append([kind, members, ncols])
    meta = {
        "op": "write_many",
        "keys": [it.key.item_key for it in items],
        "groups": groups,
        "create": [[i, [list(c) for c in it.create[0]], it.create[1]] for i, it in enumerate(items) if it.create],
    }
    return meta, arrays


def cross_section_meta(keys: Sequence[str], ncols: int) -> dict[str, Any]:
    """The metadata of the record :func:`encode_record` makes of one bar for each existing fixed
    bucket ``keys[j]`` (a cross-section), built from the keys alone: the same for every minute of a
    feed that writes the same buckets, so a writer packs it once."""
    n = len(keys)
    return {"op": "write_many", "keys": list(keys), "groups": [["run", list(range(n)), ncols]], "create": []}


def cross_section_arrays(secs: np.ndarray, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """The arrays of that record: row counts (all 1), bar starts (``secs``, seconds), then the
    columns as they are (one value per key each, one dtype per column)."""
    return [np.ones(secs.shape[0], np.int64), np.ascontiguousarray(secs, np.int64), *arrays]


def decode_record(meta: dict[str, Any], arrays: list[np.ndarray]) -> list[tuple[dict[str, Any], list[np.ndarray]]]:
    """A ``write_many`` record as the ``create`` and ``write`` records it stands for, in item order
    (``write`` arrays: times first, seconds for fixed buckets, ns for ticks; then the columns)."""
    keys = meta["keys"]
    creates = {int(i): (cols, rt) for i, cols, rt in meta.get("create", ())}
    per_item: dict[int, list[np.ndarray]] = {}
    pos = 0
    for kind, members, ncols in meta["groups"]:
        counts, times = arrays[pos], arrays[pos + 1]
        cols = arrays[pos + 2 : pos + 2 + ncols]
        pos += 2 + ncols
        ends = np.cumsum(counts)
        for j, i in enumerate(members):
            a, z = int(ends[j] - counts[j]), int(ends[j])
            if kind == "run":
                tf = _timeframe(keys[i])
                t = np.arange(int(times[j]), int(times[j]) + (z - a) * tf, tf, dtype=np.int64)
            else:
                t = times[a:z]
            per_item[int(i)] = [t, *(c[a:z] for c in cols)]
    out: list[tuple[dict[str, Any], list[np.ndarray]]] = []
    for i, key in enumerate(keys):
        if i in creates:
            columns, record_type = creates[i]
            out.append(({"op": "create", "key": key, "columns": columns, "record_type": record_type}, []))
        out.append(({"op": "write", "key": key}, per_item[i]))
    return out


def _timeframe(key: str) -> int:
    return parse_key(key).timeframe.seconds


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


@dataclass(slots=True)
class PendingWrite:
    """A write queued for group commit; the committing thread fills ``error`` and sets ``done``,
    then ``wakeup``."""

    key: str
    batch: Any
    variable_length: bool
    done: bool = False
    error: BaseException | None = None
    rows: int = 0
    wakeup: threading.Event = field(default_factory=threading.Event)


#: How long the writer at the head of the queue sleeps before trying the write lock again when
#: nobody wakes it (the lock was released by something other than a write: a checkpoint, a
#: delete), seconds.
_WAKE_POLL_S = 0.002
#: The same for the writers behind it, who are woken when their write is done (a safety net only).
_IDLE_WAIT_S = 0.05


@dataclass
class WriteQueue:
    """Writes waiting for the write lock (appended and taken under ``lock``).

    Only the writer at the head of the queue tries the write lock; the others sleep until the
    committing thread has done their write (a leader takes the whole queue) and wakes them one by
    one. With 50 writers and 5 ms syncs, every waiter polling the lock (or all of them woken at
    once) cost more CPU than the writes: the GIL went round 50 threads several times a sync.
    """

    lock: threading.Lock = field(default_factory=threading.Lock)
    pending: list[PendingWrite] = field(default_factory=list)

    def take(self) -> list[PendingWrite]:
        with self.lock:
            taken, self.pending = self.pending, []
        return taken

    def put(self, w: PendingWrite) -> None:
        with self.lock:
            self.pending.append(w)

    def wait_to_lead(self, w: PendingWrite, write_lock: Any) -> bool:
        """Block until ``w`` is done (``False``) or this thread holds ``write_lock`` (``True``: it
        must commit the queue, release the lock and :meth:`wake` the others)."""
        while True:
            with self.lock:
                if w.done:
                    return False
                head = bool(self.pending) and self.pending[0] is w  # pending until a leader takes the queue
            if head and write_lock.acquire(blocking=False):
                return True
            w.wakeup.wait(_WAKE_POLL_S if head else _IDLE_WAIT_S)
            w.wakeup.clear()  # the state is read again above: a wakeup cleared here is not lost

    def wake(self, committed: Sequence[PendingWrite] = ()) -> None:
        """After the write lock is released: wake the writers whose writes were ``committed``, and
        the writer now at the head of the queue, to lead the next group."""
        for w in committed:
            w.wakeup.set()
        with self.lock:
            head = self.pending[0] if self.pending else None
        if head is not None:
            head.wakeup.set()
