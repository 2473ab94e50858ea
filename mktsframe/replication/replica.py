"""The replica's side: follow a master's change stream and apply it through the local backend.

A thread dials ``master_host``, says which log it follows and the last record it applied
(:mod:`.position`), and applies every record it receives through the backend's own write path,
so its commit listeners (``/ws`` subscribers, triggers) hear replicated changes as they are
applied. After each record the position is saved; a multi-bucket write is applied as one
``write_many``, all or nothing.

The replica's engine syncs its log in the background (``background_sync``), not once per
record: the master's log is the durable copy. A killed replica process loses nothing (its log
and position are in the page cache); a replica whose *machine* stopped uncleanly is re-seeded
(:class:`~.position.PositionFile`). Syncing every record would only repeat, on each replica, the
``fdatasync`` the master already paid, and replicas sharing a disk with it would slow it down.

Connection or stream errors are retried after ``retry_interval × retry_backoff_coeff^n`` seconds
(capped at ``max_retry_interval``), for ever: a master restart is survived, and on reconnection
the replica resumes from its position (or is re-seeded when the master's log no longer holds it).

Consecutive records that only write (a replica that is behind receives many in one message) are
applied as one ``write_many``: one sync of the replica's log for all of them, so a replica keeps
up with a master taking many small writes, and catch-up runs at bulk-write speed.

Re-applying a record is harmless for bar writes, range deletes, creates and destroys; a tick
write applied twice would repeat its rows. So before tick writes the replica saves an *intent*
(the records' positions with the row count each range held), and on start it checks an intent
left by a crash against the buckets: the rows are all there or none are.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from mktsframe.backend.base import Backend
from mktsframe.errors import BucketNotFoundError
from mktsframe.records import Batch
from mktsframe.replication.master import METHOD, grpc_options
from mktsframe.replication.position import PositionFile
from mktsframe.replication.settings import ReplicationSettings
from mktsframe.replication.wire import Op, decode_op, pack, unpack

__all__ = ["Replica"]

log = logging.getLogger("mktsframe.replication")

NS = 1_000_000_000


def _join(parts: list[Batch]) -> Batch:
    if len(parts) == 1:
        return parts[0]
    names = list(parts[0].columns)
    return Batch(
        np.concatenate([p.index for p in parts]),
        {n: np.concatenate([p.columns[n] for p in parts]) for n in names},
        parts[0].variable_length,
    )


class Applier:
    """Applies log operations (:class:`~mktsframe.changes.LoggedChange` ops) to a backend."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._kinds: dict[str, tuple[bool, list[str]]] = {}

    def kind(self, key: str) -> tuple[bool, list[str]] | None:
        """``(tick bucket?, column names)`` of ``key`` here, or ``None`` if there is no such bucket."""
        known = self._kinds.get(key)
        if known is None:
            try:
                empty = self.backend.query(key, limit=0)[key]
            except (BucketNotFoundError, KeyError):
                return None
            known = self._kinds[key] = (empty.variable_length, list(empty.columns))
        return known

    def batch(self, key: str, arrays: list[np.ndarray]) -> Batch | None:
        kind = self.kind(key)
        if kind is None:
            return None
        ticks, names = kind
        times = arrays[0] if ticks else arrays[0] * NS
        return Batch(times, dict(zip(names, arrays[1:], strict=True)), ticks)

    def apply(self, ops: Sequence[Op], before_writes: Callable[[dict[str, Batch]], None] | None = None) -> None:
        """Apply ``ops`` in order; their writes go last, as one ``write_many`` (all or nothing), with
        the writes to one bucket joined (the later bar wins, ticks keep their order), after
        ``before_writes`` has seen them. Only creates (of a multi-bucket write) may share a group
        with writes; a delete or destroy is a record of its own."""
        writes: dict[str, list[Batch]] = {}
        for meta, arrays in ops:
            op, key = meta.get("op"), meta["key"]
            if op == "create":
                self._kinds.pop(key, None)
                columns = [(str(n), str(t)) for n, t in meta["columns"]]
                self.backend.create(key, columns, variable_length=meta.get("record_type") == "variable")
            elif op == "write":
                batch = self.batch(key, arrays)
                if batch is not None and len(batch):  # missing: destroyed while a seed copied (its destroy follows)
                    writes.setdefault(key, []).append(batch)
            elif op == "delete":
                self._delete(key, meta)
            elif op == "destroy":
                self._kinds.pop(key, None)
                with contextlib.suppress(BucketNotFoundError):
                    self.backend.destroy(key)
            else:
                raise ValueError(f"unknown replicated operation {op!r}")
        if not writes:
            return
        joined = {key: _join(parts) for key, parts in writes.items()}
        if before_writes is not None:
            before_writes(joined)
        if len(joined) == 1:
            self.backend.write(*next(iter(joined.items())))
        else:
            self.backend.write_many(joined)

    def _delete(self, key: str, meta: dict[str, Any]) -> None:
        kind = self.kind(key)
        if kind is None:
            return
        if kind[0]:
            start, end = meta.get("start_ns"), meta.get("end_ns")
        else:
            start = None if meta.get("start") is None else int(meta["start"]) * NS
            end = None if meta.get("end") is None else int(meta["end"]) * NS
        self.backend.delete(key, start=start, end=end)

    def wipe(self) -> None:
        """Destroy every local bucket (before a seed)."""
        for key in self.backend.list_keys():
            with contextlib.suppress(BucketNotFoundError):
                self.backend.destroy(key)
        self._kinds.clear()

    def tick_rows(self, key: str, start: int, end: int) -> int:
        """Rows of tick bucket ``key`` in ``[start, end]`` ns (what a tick write's intent records)."""
        return len(self.backend.query(key, start=start, end=end, columns=[])[key])


class Replica:
    """Follows the master named in ``settings`` into ``backend`` (the local backend of ``meta_dir``'s root)."""

    def __init__(
        self,
        backend: Backend,
        settings: ReplicationSettings,
        meta_dir: Path,
        *,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.settings = settings
        self.applier = Applier(backend)
        self.position = PositionFile(meta_dir)
        self._intent_path = meta_dir / "replica-intent"
        self._metadata = list(metadata)
        self._stop = threading.Event()
        self._call: Any = None
        self.state = "connecting"
        self.head = 0
        self.last_error = ""
        self.connected_at: float | None = None
        self._caught_up_at = time.monotonic()
        if self.position.lost_at_reboot:
            log.warning("replication: the machine stopped without closing this replica; it will be re-seeded")
        self._resolve_intent()
        self._thread = threading.Thread(target=self._run, name="mkts-replica", daemon=True)
        self._thread.start()

    # -- state ------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        applied = self.position.seq
        behind = max(0, self.head - applied)
        return {
            "role": "replica",
            "master": self.settings.master_host,
            "tls": self.settings.tls_enabled,
            "state": self.state,
            "applied": applied,
            "master_position": self.head,
            "lag_records": behind,
            "lag_seconds": 0.0 if not behind else round(time.monotonic() - self._caught_up_at, 3),
            "connected_at": self.connected_at,
            "last_error": self.last_error,
        }

    def stop(self) -> None:
        self._stop.set()
        call = self._call
        if call is not None:
            call.cancel()
        self._thread.join(15)
        sync = getattr(self.applier.backend, "sync", None)
        if sync is not None:
            sync()  # the replica's log durable first: then the position is marked clean
        self.position.close()

    # -- the connection loop ----------------------------------------------------------------------
    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._session()
            except grpc.RpcError as exc:
                if self._stop.is_set():
                    break
                self.last_error = f"{exc.code().name}: {exc.details()}" if hasattr(exc, "code") else str(exc)
            except Exception as exc:  # a record that cannot be applied here: this copy is not to be trusted
                if self._stop.is_set():
                    break
                log.exception("replication from %s failed; this replica will be re-seeded", self.settings.master_host)
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.position.save(None, 0, durable=True)
            if self.connected_at is not None:  # it was following: back-off starts again
                failures = 0
            self.state, self.connected_at = "retrying", None
            s = self.settings
            wait = min(s.max_retry_interval, s.retry_interval * s.retry_backoff_coeff**failures)
            failures += 1
            log.warning("replication: master %s: %s; retrying in %.1f s", s.master_host, self.last_error, wait)
            self._stop.wait(wait)
        self.state = "stopped"

    def _channel(self) -> grpc.Channel:
        s = self.settings
        if s.tls_enabled:
            assert s.cert_file is not None
            creds = grpc.ssl_channel_credentials(root_certificates=s.cert_file.read_bytes())
            return grpc.secure_channel(s.master_host, creds, options=grpc_options(master=False))
        return grpc.insecure_channel(s.master_host, options=grpc_options(master=False))

    def _session(self) -> None:
        self.state = "connecting"
        outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        known = None if self.position.seeding else self.position.log_id  # a seed cut short starts again
        outbox.put(pack({"t": "hello", "pos": self.position.seq, "log_id": known, "name": socket.gethostname()}))

        def requests() -> Iterator[bytes]:
            while (item := outbox.get()) is not None:
                yield item

        with self._channel() as channel:
            call = channel.stream_stream(METHOD)(requests(), metadata=self._metadata or None)
            self._call = call
            try:
                for raw in call:
                    if self._stop.is_set():
                        break
                    self._handle(unpack(raw))
                    # every message is acknowledged once applied: the master sends the next ones
                    # only then (a few at most in flight), and shows this replica's position
                    outbox.put(pack({"t": "ack", "pos": self.position.seq}))
            finally:
                outbox.put(None)
                call.cancel()
                self._call = None
        if not self._stop.is_set():
            raise grpc.RpcError("the master ended the stream")

    def _handle(self, msg: dict[str, Any]) -> None:
        t = msg["t"]
        if "head" in msg:
            self.head = int(msg["head"])
            if self.position.seq >= self.head:
                self._caught_up_at = time.monotonic()
        if self.state == "connecting":
            self.state, self.connected_at, self.last_error = "streaming", time.time(), ""
            log.info("replication: following %s from position %d", self.settings.master_host, self.position.seq)
        if t == "changes":
            seeding = self.position.seeding
            group: list[tuple[int, list[Op]]] = []  # consecutive write-only records: applied as one
            for seq, ops in msg["recs"]:
                decoded = [decode_op(op) for op in ops]
                if all(m.get("op") == "write" for m, _ in decoded):
                    group.append((int(seq), decoded))
                    continue
                self._apply_records(group, seeding)
                self._apply_records([(int(seq), decoded)], seeding)
                group = []
            self._apply_records(group, seeding)
        elif t == "seed_begin":
            self.state = "seeding"
            log.warning("replication: re-seeding this replica from %s (a full copy)", self.settings.master_host)
            self.position.save(bytes(msg["log_id"]), 0, seeding=True, durable=True)
            self.applier.wipe()
        elif t == "seed":
            self.applier.apply([decode_op(op) for op in msg["ops"]])
        elif t == "seed_end":
            self.position.save(self.position.log_id, int(msg["pos"]), durable=True)
            self.state = "streaming"
            log.info("replication: seeded; following from position %d", self.position.seq)

    def _apply_records(self, records: list[tuple[int, list[Op]]], seeding: bool) -> None:
        """Apply log records (one group: see :meth:`Applier.apply`), then save the last one's position."""
        if not records:
            return
        first, last = records[0][0], records[-1][0]
        intent: list[list[Any]] = []

        def note_ticks(writes: dict[str, Batch]) -> None:
            for key, b in writes.items():
                if b.variable_length:
                    lo, hi = int(b.index.min()), int(b.index.max())
                    intent.append([key, lo, hi, self.applier.tick_rows(key, lo, hi), len(b)])
            if intent:
                self._intent_path.write_bytes(pack({"t": "intent", "first": first, "last": last, "counts": intent}))

        self.applier.apply([op for _, ops in records for op in ops], note_ticks)
        self.position.save(self.position.log_id, last, seeding=seeding)
        if intent:
            self._intent_path.unlink(missing_ok=True)

    def _resolve_intent(self) -> None:
        """A crash between a tick write and saving its position: did the rows land? (module docstring)"""
        try:
            intent = unpack(self._intent_path.read_bytes())
        except (FileNotFoundError, ValueError):
            return
        first, seq = int(intent.get("first", 0)), int(intent.get("last", 0))
        if first == self.position.seq + 1 and not self.position.seeding:
            landed = all(
                self.applier.kind(key) is not None and self.applier.tick_rows(key, lo, hi) == before + rows
                for key, lo, hi, before, rows in intent["counts"]
            )
            if landed:
                log.info("replication: record %d was applied before the crash; not applying it again", seq)
                self.position.save(self.position.log_id, seq, durable=True)
        self._intent_path.unlink(missing_ok=True)
