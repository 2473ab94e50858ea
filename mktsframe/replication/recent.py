"""The master's newest log records, read from the log once and encoded once for every replica.

Replicas that follow the master want the same few records a moment after each commit. Reading
them back from the log and encoding them in each replica's handler would cost the master that
work once per replica per commit. :class:`RecentLog` reads them once (with its own
:class:`~mktsframe.changes.ChangeCursor`, when the first handler asks for records past its end),
encodes each once (:func:`~.wire.encode_record`) and keeps the newest ones, at most ``max_bytes``
of them, for every handler to send as they are.

It is a cache, never a queue: a handler whose replica is further behind than the records kept
(a replica that was stopped, frozen or slow while more than ``max_bytes`` were committed) reads
the log itself, as before, until it reaches the records kept here. So the master's memory is
``max_bytes`` whatever the replicas do, and writers never wait for it: it is filled by the
handlers, not by the committing thread.
"""

from __future__ import annotations

import bisect
import threading

from mktsframe.changes import ChangeCursor, ChangeFeed, LogGone
from mktsframe.replication.wire import encode_record

__all__ = ["RECENT_BYTES", "Reader", "RecentLog", "open_cursor"]

#: Encoded bytes of the newest records kept for replicas that follow (about 75,000 1-row OHLCV writes).
RECENT_BYTES = 8 << 20


class RecentLog:
    """The newest records of ``feed``'s log, encoded: those after :attr:`start`, up to :attr:`end`.

    Thread-safe; :meth:`after` is what a replica's handler calls.
    """

    def __init__(self, feed: ChangeFeed, max_bytes: int = RECENT_BYTES, read_bytes: int = 4 << 20) -> None:
        self._feed = feed
        self.max_bytes = max_bytes
        self._read_bytes = read_bytes
        self._lock = threading.Lock()
        self._seqs: list[int] = []
        self._blobs: list[bytes] = []
        self._size = 0
        self._cursor: ChangeCursor | None = None
        self.start = self.end = 0
        """Records with ``start < seq <= end`` are all here (``end``: the last log record read,
        kept or skipped, such as a commit marker)."""
        self._restart()

    def _restart(self) -> None:
        """Begin (again) empty at the log's head."""
        if self._cursor is not None:
            self._cursor.close()
        self._seqs, self._blobs, self._size = [], [], 0
        head = self._feed.log_position
        self._cursor = open_cursor(self._feed, head)
        self.start = self.end = head

    def close(self) -> None:
        with self._lock:
            if self._cursor is not None:
                self._cursor.close()
                self._cursor = None

    def after(self, position: int, max_bytes: int) -> tuple[list[int], list[bytes], int] | None:
        """The records after ``position`` (about ``max_bytes`` at most; at least one if any): their
        sequence numbers, their encodings and the position they take the reader to; ``None`` when
        ``position`` is older than the records kept (the caller reads the log itself)."""
        with self._lock:
            if self._cursor is None:  # closed
                return None
            if position >= self.end and self._feed.log_position > self.end:
                self._fill()
            if position < self.start:
                return None
            i = j = bisect.bisect_right(self._seqs, position)
            used = 0
            while j < len(self._blobs) and (used < max_bytes or j == i):
                used += len(self._blobs[j])
                j += 1
            reached = self.end if j == len(self._blobs) else self._seqs[j - 1]
            return self._seqs[i:j], self._blobs[i:j], max(reached, position)

    def _fill(self) -> None:
        assert self._cursor is not None
        try:
            changes = self._cursor.read(self._read_bytes)
        except LogGone:  # no replica read while checkpoints deleted the log after ``end``: begin again
            self._restart()  # at the head; replicas that needed those records are re-seeded
            return
        for c in changes:
            if c.seq <= self.end:  # the record before, read again (see open_cursor)
                continue
            blob = encode_record(c.seq, c.ops)
            self._seqs.append(c.seq)
            self._blobs.append(blob)
            self._size += len(blob)
        self.end = max(self.end, self._cursor.position)
        drop = 0
        while self._size > self.max_bytes:  # a record larger than it all is not kept: each reads the log
            self._size -= len(self._blobs[drop])
            drop += 1
        if drop:
            self.start = self._seqs[drop - 1]
            del self._seqs[:drop], self._blobs[:drop]


def open_cursor(feed: ChangeFeed, position: int) -> ChangeCursor:
    """A cursor of ``feed`` from ``position``, begun one record earlier when the log still holds it.

    A large write is two log records, ``direct`` (the rows went to the data files) then its
    ``commit``, and the cursor turns the pair into one change as it reads the commit. A position
    taken while a reader was between the two (the log's durable end fell there) would lose that
    write to a cursor begun after the ``direct``; begun one record earlier it reads the pair
    whole. The caller drops the changes at or before ``position`` (:class:`Reader` does).
    """
    if position > 0:
        try:
            return feed.changes_since(position - 1)
        except LogGone:  # that record's segment is gone: the next one begins at ``position + 1``
            pass
    return feed.changes_since(position)


class Reader:
    """What one replica's handler sends next: its own log cursor while it is further behind than
    ``recent`` holds (catch-up, a seed's tail), the shared encoded records once it is not.

    ``position`` is the last record read (sent or skipped). :class:`LogGone`, from the
    constructor or :meth:`read`, means the log no longer holds what the replica needs, or that
    ``position`` is ahead of it: re-seed it.
    """

    def __init__(self, feed: ChangeFeed, recent: RecentLog, position: int, cursor: ChangeCursor | None = None) -> None:
        self.feed, self.recent, self.position = feed, recent, position
        self._cursor = cursor
        self._floor = position  # records at or before it were sent already (see open_cursor)
        if position > feed.log_position:
            raise LogGone(f"position {position} is ahead of this log's last record {feed.log_position}")
        if cursor is None and position < recent.start:
            self._cursor = open_cursor(feed, position)

    def close(self) -> None:
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None

    def read(self, max_bytes: int) -> tuple[list[int], list[bytes]]:
        """The next records: sequence numbers and encodings (empty when there is nothing new)."""
        if self._cursor is not None and self.position >= self.recent.start:
            self.close()  # caught up with the shared records: its own reads stop here
        if self._cursor is None:
            got = self.recent.after(self.position, max_bytes)
            if got is not None:
                seqs, recs, self.position = got
                return seqs, recs
            # further behind than the shared records (a slow replica): read the log itself
            self._cursor, self._floor = open_cursor(self.feed, self.position), self.position
        changes = self._cursor.read(max_bytes)
        self.position = max(self.position, self._cursor.position)
        fresh = [c for c in changes if c.seq > self._floor]
        return [c.seq for c in fresh], [encode_record(c.seq, c.ops) for c in fresh]
