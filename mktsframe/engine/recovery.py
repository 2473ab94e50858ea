"""Recovery: replaying the write-ahead log after the last checkpoint when a root is opened.

A mixin of :class:`~mktsframe.engine.Engine`. Every logged operation is idempotent, so replay
applies each record after the checkpoint through the same code as a live write
(``Engine._apply``), skipping records that a later destroy of the same key erased and direct
writes whose commit record never made it (those are rolled back). A record that cannot be decoded
or applied is reported in :attr:`Engine.recovery` and skipped, never served half; running out of
space is raised (the engine then opens read-only). What was replayed is listed as
``(op, key, start_ns, end_ns)`` (UTC nanoseconds, inclusive) for triggers that keep derived data.

When the last writer died on this boot after applying every record (:mod:`.applied`), the log is
*adopted* instead: its records are in the page cache already, so nothing is replayed and the next
checkpoint syncs the file system before the log forgets them.
"""

from __future__ import annotations

import errno
import logging
import shutil
from collections.abc import Iterator
from typing import Any

import numpy as np

from mktsframe.engine.many import decode_record
from mktsframe.engine.space import no_space
from mktsframe.errors import MktsError, NoSpaceError
from mktsframe.keys import parse_key

__all__ = ["EngineRecovery"]

log = logging.getLogger("mktsframe.engine")

NS = 1_000_000_000
#: Adopted records of up to this many bytes are kept until their changes are asked for.
_DEFER_MAX_BYTES = 32 << 20


class EngineRecovery:
    """Log replay of an :class:`~mktsframe.engine.Engine` (mixed into it)."""

    def _recover(self) -> None:
        """Replay the log after the last checkpoint, then checkpoint and start a fresh segment."""
        assert self._wal is not None
        trash = self._meta_dir / "trash"
        if trash.exists():
            shutil.rmtree(trash, ignore_errors=True)
        records = list(self._wal.replay(self.recovery))
        committed = {rec.meta.get("direct") for rec in records if rec.meta.get("op") == "commit"}
        last_destroy: dict[str, int] = {}
        for rec in records:
            if rec.meta.get("op") == "destroy":
                last_destroy[rec.meta["key"]] = rec.seq
        applied = self._applied
        assert applied is not None
        interrupted = any(rec.meta.get("op") == "direct" and rec.seq not in committed for rec in records)
        if records and not interrupted and applied.covers(records[-1].seq):
            self._adopt(records, last_destroy, committed)
            return
        applied.forget()
        for rec, meta, arrays in self._operations(records, last_destroy):
            self._replay_one(rec, meta, arrays, committed)
        if self.recovery.records or self.recovery.problems:
            log.warning(
                "recovered %s: replayed %d WAL records, %d problem(s)",
                self.root,
                self.recovery.records,
                len(self.recovery.problems),
            )
        self._checkpoint(rotate=True)
        applied.stamp(self._wal.written_seq)

    def _adopt(self, records: list[Any], last_destroy: dict[str, int], committed: set[Any]) -> None:
        """The crashed writer applied every record after the checkpoint on this boot: its stores
        are in the page cache, so take the files as they are instead of replaying (see
        :mod:`.applied`). The next checkpoint syncs the whole file system before the log forgets
        them. What they changed is worked out only if asked (:attr:`ReplayReport.changes`)."""
        assert self._wal is not None
        assert self._applied is not None
        self.recovery.applied_before, self.recovery.records = self.recovery.records, 0
        self.recovery.defer_changes(lambda: self._changes_of(records, last_destroy, committed))
        if sum(len(rec.data) for rec in records) > _DEFER_MAX_BYTES:
            _ = self.recovery.changes  # not worth keeping that much of the log in memory meanwhile
        log.warning(
            "recovered %s: the %d WAL record(s) after the checkpoint were already applied by the last writer "
            "on this boot; none replayed%s",
            self.root,
            self.recovery.applied_before,
            f", {len(self.recovery.problems)} problem(s)" if self.recovery.problems else "",
        )
        self._adopted_unsynced = True
        self._wal.start_segment()
        self._applied.stamp(self._wal.written_seq)

    def _changes_of(
        self, records: list[Any], last_destroy: dict[str, int], committed: set[Any]
    ) -> list[tuple[str, str, int | None, int | None]]:
        """``ReplayReport.changes`` of adopted ``records``: what replaying them would have listed."""
        out = []
        for rec, meta, arrays in self._operations(records, last_destroy):
            try:
                if meta.get("op") == "direct":
                    change = self._direct_change(meta["key"], meta["ranges"]) if rec.seq in committed else None
                else:
                    change = self._replayed_change(*_expand_run(meta, rec.arrays() if arrays is None else arrays))
            except (MktsError, OSError, ValueError, KeyError):
                continue  # a bucket gone or damaged since: nothing to recompute from it
            if change is not None:
                out.append(change)
        return out

    def _operations(
        self, records: list[Any], last_destroy: dict[str, int]
    ) -> Iterator[tuple[Any, dict[str, Any], list[np.ndarray] | None]]:
        """``(record, operation, its arrays or None for the record's own)`` for every operation of
        ``records`` that replay applies: a ``write_many`` as its creates and writes, without commit
        records (read with their direct record) and operations a later destroy of the key erased.
        A record that cannot be decoded is reported among the problems and skipped."""
        for rec in records:
            try:  # a write_many record stands for a create or write per bucket
                many = rec.meta.get("op") == "write_many"
                subs = decode_record(rec.meta, rec.arrays()) if many else [(rec.meta, None)]
            except (KeyError, ValueError, TypeError, IndexError) as exc:
                msg = f"WAL record {rec.seq} (write_many) could not be decoded: {exc}"
                log.error(msg)
                self.recovery.problems.append(msg)
                continue
            for meta, arrays in subs:
                op = meta.get("op")
                if op == "commit" or (op != "destroy" and last_destroy.get(meta.get("key", ""), 0) > rec.seq):
                    continue
                yield rec, meta, arrays

    def _replay_one(self, rec: Any, meta: dict[str, Any], arrays: list[np.ndarray] | None, committed: set[Any]) -> None:
        """Replay one operation of log record ``rec`` (``arrays``: its own, or ``None`` for the record's)."""
        key = meta.get("key", "")
        try:
            op = meta.get("op")
            if op == "direct":
                change = self._replay_direct(parse_key(key), meta["ranges"], rec.seq, rec.seq in committed)
            else:
                meta, arrays = _expand_run(meta, rec.arrays() if arrays is None else arrays)
                self._apply(meta, arrays, seq=rec.seq, replay=True)
                change = self._replayed_change(meta, arrays)
            if change is not None:
                self.recovery.changes.append(change)
        except NoSpaceError:
            raise
        except (MktsError, OSError, ValueError) as exc:
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                raise no_space(self.root, f"replaying WAL record {rec.seq}") from exc
            msg = f"WAL record {rec.seq} ({meta.get('op')} {key}) could not be replayed: {exc}"
            log.error(msg)
            self.recovery.problems.append(msg)

    def _replayed_change(
        self, meta: dict[str, Any], arrays: list[np.ndarray]
    ) -> tuple[str, str, int | None, int | None]:
        """``(op, key, start_ns, end_ns)`` of a record just replayed (see ``ReplayReport.changes``)."""
        op, key = str(meta.get("op")), str(meta.get("key", ""))
        b = self._bucket(parse_key(key)) if op in ("write", "delete") else None
        if b is None:
            return op, key, None, None
        if b.ticks is not None:  # tick records carry nanoseconds
            if op == "delete":
                return op, key, meta.get("start_ns"), meta.get("end_ns")
            return op, key, int(arrays[0].min()), int(arrays[0].max())
        if op == "delete":  # bar starts in seconds; the last bar runs to its end
            s, e = meta.get("start"), meta.get("end")
            return op, key, None if s is None else s * NS, None if e is None else (e + b.timeframe) * NS - 1
        return op, key, int(arrays[0].min()) * NS, int(arrays[0].max()) * NS


def _expand_run(meta: dict[str, Any], arrays: list[np.ndarray]) -> tuple[dict[str, Any], list[np.ndarray]]:
    """A logged ``write_run`` (consecutive bars from ``start``, times not logged) as the ``write``
    it stands for: its bar-start seconds put back in front of its columns. Other records pass through."""
    if meta.get("op") != "write_run":
        return meta, arrays
    tf = parse_key(meta["key"]).timeframe.seconds
    start = int(meta["start"])
    secs = np.arange(start, start + arrays[0].shape[0] * tf, tf, dtype=np.int64)
    return {"op": "write", "key": meta["key"]}, [secs, *arrays]
