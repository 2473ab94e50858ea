"""Reading the write-ahead log from a durable position onwards: the changes since a sequence number.

Replication (and anything else that must resume exactly where it stopped, across restarts) reads
the log rather than listening to commits: a WAL sequence number is durable and the same in every
process, while :attr:`CommitEvent.seq <mktsframe.changes.CommitEvent.seq>` counts from 0 in each.

A :class:`LogCursor` walks the segments (``<first seq>.wal``, see :mod:`.wal`) record by record,
never past ``limit()`` (the last record made durable), and hands out each operation as a
:class:`~mktsframe.changes.LoggedChange` whose arrays are decoded:

* ``write_run`` records become the ``write`` they stand for (bar times put back);
* a ``direct`` write (rows stored only in the year files, :meth:`Engine._write_direct`) becomes a
  ``write`` of the rows those slots hold when its ``commit`` record is read; an uncommitted one is
  skipped (it was never acknowledged). Reading the slots later than the commit can only show
  changes that come after it in the log, which a consumer applies next anyway;
* ``write_many`` stays one change (its sub-operations in ``ops``), so a consumer can apply it all
  or nothing as the master did.

When the log no longer holds the record after the position (segments deleted at checkpoints
beyond ``retain_bytes``), :class:`LogGone` is raised: the reader must start again from a copy.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mktsframe.changes import LoggedChange, LogGone
from mktsframe.engine.many import decode_record
from mktsframe.engine.wal import _HEAD, MAGIC, Record, WriteAheadLog
from mktsframe.engine.year_file import year_bounds
from mktsframe.keys import parse_key
from mktsframe.records import Batch

__all__ = ["LogCursor"]

NS = 1_000_000_000
#: Bytes read at a time when looking for the next frame.
_READ = 1 << 20
_OPS = ("create", "write", "write_run", "write_many", "delete", "destroy")


class LogCursor:
    """The changes logged after sequence ``after``, in log order (not thread-safe: one reader each).

    Parameters
    ----------
    directory : Path
        The log's directory (``root/.mkts/wal``).
    after : int
        Sequence number already consumed (0: from the start of the log).
    limit : callable
        Returns the highest sequence number that may be read (the last durable record).
    query : callable
        ``query(key, start_ns, end_ns) -> Batch`` of the engine, to read what a ``direct`` write stored.
    """

    def __init__(
        self, directory: Path, after: int, limit: Callable[[], int], query: Callable[[str, int, int], Batch]
    ) -> None:
        self.dir = directory
        self.position = after
        """Sequence number of the last record read (consumed or skipped)."""
        self._limit = limit
        self._query = query
        self._fd: int | None = None
        self._first = 0  # first sequence number of the open segment
        self._offset = 0
        self._direct: dict[int, dict[str, Any]] = {}
        if limit() < after:
            raise LogGone(f"position {after} is ahead of this log's last record {limit()}")
        self._open_segment_for(after + 1)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.dir.glob("*.wal") if p.stem.isdigit())

    def _open_segment_for(self, seq: int) -> None:
        """Open the segment that holds (or will hold) record ``seq``, or raise :class:`LogGone`."""
        firsts = self._segments()
        holding = [f for f in firsts if f <= seq]
        if not holding:
            if seq > self._limit() and (not firsts or firsts[0] == seq):
                holding = firsts[:1]  # nothing logged after ``seq - 1`` yet
            if not holding:
                oldest = firsts[0] if firsts else None
                raise LogGone(f"the log no longer holds record {seq} (oldest kept: {oldest})")
        self._switch(holding[-1])

    def _switch(self, first: int) -> None:
        self.close()
        try:
            self._fd = os.open(self.dir / f"{first:020d}.wal", os.O_RDONLY)
        except FileNotFoundError:
            raise LogGone(f"log segment {first} was deleted before it was read") from None
        self._first, self._offset = first, 0

    def read(self, max_bytes: int = 4 << 20) -> list[LoggedChange]:
        """The next changes up to about ``max_bytes`` of log (at least one if any is durable)."""
        out: list[LoggedChange] = []
        used = 0
        while used < max_bytes:
            rec = self._next_record()
            if rec is None:
                break
            used += len(rec.data) + 64
            change = self._change(rec)
            if change is not None:
                out.append(change)
        return out

    def _next_record(self) -> Record | None:
        limit = self._limit()
        while self.position < limit:
            assert self._fd is not None
            head = os.pread(self._fd, _HEAD.size, self._offset)
            if len(head) == _HEAD.size and head[:4] == MAGIC:
                _, meta_len, data_len, seq, _ = _HEAD.unpack(head)
                if seq > limit:
                    return None
                total = _HEAD.size + meta_len + data_len
                frame = WriteAheadLog._frame_at(memoryview(os.pread(self._fd, total, self._offset)), 0)
                if frame is not None:
                    self._offset += frame[3]
                    if frame[0] <= self.position:
                        continue
                    self.position = frame[0]
                    return Record(frame[0], frame[1], frame[2])
            if not self._skip_to_next_frame(damaged=any(head)):
                return None
        return None

    def _skip_to_next_frame(self, damaged: bool) -> bool:
        """At the end of the segment's records (or at a ``damaged`` frame): move to the next valid
        frame of this segment or to the next segment. ``False`` when there is nothing more to read yet."""
        later = [f for f in self._segments() if f > self._first]
        if later and later[0] <= self.position + 1:
            self._switch(later[0])
            return True
        if not damaged:  # the zero (preallocated) tail: the rest is not written yet, or in a later segment
            if later and later[0] > self.position + 1:  # the segments in between were deleted while idle here
                raise LogGone(f"the log no longer holds record {self.position + 1} (oldest kept: {later[0]})")
            if later:
                self._switch(later[0])
            return bool(later)
        assert self._fd is not None
        pos = self._offset + 1
        while True:  # a torn or corrupt frame that replay skipped: resynchronise on the next valid one
            chunk = os.pread(self._fd, _READ + _HEAD.size, pos)
            if len(chunk) < _HEAD.size or not any(chunk):
                break
            at = chunk.find(MAGIC)
            if at == -1:
                pos += _READ
                continue
            head = os.pread(self._fd, _HEAD.size, pos + at)
            _, meta_len, data_len, _, _ = _HEAD.unpack(head)
            frame = os.pread(self._fd, _HEAD.size + meta_len + data_len, pos + at)
            if WriteAheadLog._frame_at(memoryview(frame), 0) is not None:
                self._offset = pos + at
                return True
            pos += at + 1
        if later:
            self._switch(later[0])
            return True
        return False

    def _change(self, rec: Record) -> LoggedChange | None:
        op = rec.meta.get("op")
        if op == "direct":
            self._direct = {rec.seq: rec.meta}  # its commit is the next record (same write lock)
            return None
        if op == "commit":
            direct = self._direct.pop(rec.meta.get("direct"), None)
            return None if direct is None else self._direct_write(rec.seq, direct)
        if op not in _OPS:
            return None
        arrays = rec.arrays()
        if op == "write_many":
            return LoggedChange(rec.seq, tuple(decode_record(rec.meta, arrays)))
        if op == "write_run":
            tf = parse_key(rec.meta["key"]).timeframe.seconds
            start = int(rec.meta["start"])
            secs = np.arange(start, start + arrays[0].shape[0] * tf, tf, dtype=np.int64)
            return LoggedChange(rec.seq, (({"op": "write", "key": rec.meta["key"]}, [secs, *arrays]),))
        return LoggedChange(rec.seq, ((dict(rec.meta), arrays),))

    def _direct_write(self, seq: int, meta: dict[str, Any]) -> LoggedChange | None:
        key = meta["key"]
        tf = parse_key(key).timeframe.seconds
        secs: list[np.ndarray] = []
        cols: list[list[np.ndarray]] = []
        for year, s0, s1 in meta["ranges"]:
            y0 = year_bounds(int(year))[0]
            try:
                batch = self._query(key, (y0 + int(s0) * tf) * NS, (y0 + (int(s1) - 1) * tf) * NS)
            except Exception:  # destroyed since: its destroy follows in the log
                return None
            secs.append(batch.index // NS)
            cols.append(list(batch.columns.values()))
        if not secs or not sum(len(s) for s in secs):
            return None
        arrays = [np.concatenate(secs), *[np.concatenate(c) for c in zip(*cols, strict=True)]]
        return LoggedChange(seq, (({"op": "write", "key": key}, arrays),))
