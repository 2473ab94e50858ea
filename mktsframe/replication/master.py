"""The master's side: a gRPC stream per replica, read from the write-ahead log.

Each replica connects to ``replication.listen_port`` and calls ``/mktsframe.Replication/Stream``
(bidirectional, raw msgpack messages, :mod:`.wire`), saying which position of which log it has
applied. Its handler thread then sends the log records after that position
(:class:`~.recent.Reader`), waking when a commit is heard, so:

* live changes and catch-up are the same path: a replica that was stopped for a day, or started
  late, reads the log kept on disk (``log_retention_mb``) until it reaches the newest records,
  which every following replica takes from one shared cache (:class:`~.recent.RecentLog`: each
  record read back and encoded once, however many replicas there are);
* a commit costs the writer one condition-variable notify, and the replicas' handlers nothing
  per commit: a handler gathers the commits of a few milliseconds into one message (2 ms apart,
  20 ms while commits come faster than every 3 ms), and sends nothing while ``WINDOW`` messages
  wait to be acknowledged, so a stopped or slow replica costs no work at all until it acks again;
* a slow or stopped replica costs the master bounded memory (the shared cache, and one read
  buffer of about 4 MiB while it reads the log) and never holds a writer up: the log is the queue;
* a replica whose position the log no longer holds (or that followed another log) is re-seeded:
  every bucket is copied under a commit barrier held for that bucket only (a consistent cut of
  each bucket at a known log position), then the log from the seed's start is streamed with each
  bucket's records up to its own cut dropped, and the replica follows from there.

Authentication (at merge with the token-auth work): pass gRPC server ``interceptors`` to
:class:`ReplicationMaster`; the replica side sends ``metadata`` (:class:`~.replica.Replica`).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

from mktsframe.backend.base import Backend
from mktsframe.changes import ChangeFeed, CommitEvent, LogGone
from mktsframe.errors import BucketNotFoundError, MktsError
from mktsframe.replication.position import log_id
from mktsframe.replication.recent import Reader, RecentLog, open_cursor
from mktsframe.replication.settings import ReplicationSettings
from mktsframe.replication.wire import changes_message, encode_op, pack, unpack

__all__ = ["METHOD", "ReplicationMaster", "grpc_options"]

log = logging.getLogger("mktsframe.replication")

SERVICE = "mktsframe.Replication"
METHOD = f"/{SERVICE}/Stream"
#: Log bytes read (and sent) per message: the most a replica's handler holds at a time.
READ_BYTES = 4 << 20
#: Seconds between heartbeats when nothing is written (replicas see the head and the link alive).
HEARTBEAT = 1.0
MAX_REPLICAS = 32
#: Least seconds between two messages to one replica while commits stream in, and once they come
#: faster than that (see ReplicationMaster._serve).
COALESCE, COALESCE_BUSY, BUSY_GAP = 0.002, 0.020, 0.003
#: Messages sent to one replica and not yet applied (acknowledged) before the next waits.
WINDOW = 2


def grpc_options(master: bool) -> list[tuple[str, int]]:
    """Channel options of either side. One log record travels as one message (a single write of
    millions of rows is large); what a replica sends (hello, acks) is tiny, so the master accepts
    at most 1 MiB. Keepalive pings every 10 s find a dead peer behind a silent network."""
    big, small = 1 << 30, 1 << 20
    return [("grpc.max_send_message_length", big if master else small),
            ("grpc.max_receive_message_length", small if master else big),
            ("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000)]  # fmt: skip


class _Peer:
    """What the master knows of one connected replica, and its messages not yet applied."""

    def __init__(self, peer: str, name: str, applied: int) -> None:
        self.peer, self.name, self.applied = peer, name, applied
        self.state = "connecting"
        self.connected_at = time.time()
        self.caught_up_at = time.monotonic()
        self._acks = threading.Condition()
        self._unacked: collections.deque[int] = collections.deque()  # each message's last record

    def sent(self, last_seq: int) -> None:
        with self._acks:
            self._unacked.append(last_seq)

    def acked(self, position: int, head: int) -> None:
        """The replica has applied everything up to ``position`` (its ack)."""
        with self._acks:
            self.applied = max(self.applied, position)
            if self.applied >= head:
                self.caught_up_at = time.monotonic()
            while self._unacked and self._unacked[0] <= self.applied:
                self._unacked.popleft()
            self._acks.notify_all()

    def wait_window(self, timeout: float) -> bool:
        """Whether another message may go now: fewer than ``WINDOW`` are unapplied (waits up to
        ``timeout`` seconds for an ack otherwise). A stopped replica thus costs the master nothing
        per commit once ``WINDOW`` messages wait for it; it reads the log when it comes back."""
        with self._acks:
            if len(self._unacked) >= WINDOW:
                self._acks.wait(timeout)
            return len(self._unacked) < WINDOW

    def wake(self) -> None:
        with self._acks:
            self._acks.notify_all()

    def status(self, head: int) -> dict[str, Any]:
        behind = max(0, head - self.applied)
        return {
            "peer": self.peer,
            "name": self.name,
            "state": self.state,
            "applied": self.applied,
            "lag_records": behind,
            "lag_seconds": 0.0 if not behind else round(time.monotonic() - self.caught_up_at, 3),
            "connected_at": self.connected_at,
        }


class ReplicationMaster:
    """Serves the change stream of ``backend`` (its :attr:`changes` feed) to replicas."""

    def __init__(
        self,
        backend: Backend,
        feed: ChangeFeed,
        settings: ReplicationSettings,
        meta_dir: Path,
        *,
        host: str = "0.0.0.0",
        interceptors: Sequence[grpc.ServerInterceptor] = (),
        poll: float = HEARTBEAT,
    ) -> None:
        self.backend, self.feed, self.settings = backend, feed, settings
        self.log_id = log_id(meta_dir)
        self._cond = threading.Condition()
        self._last_commit, self._gap = time.monotonic(), 1.0
        self._stopping = False
        self._poll = poll
        self._peers: dict[int, _Peer] = {}
        self._peers_lock = threading.Lock()
        self.recent = RecentLog(feed)
        self._unlisten = feed.listen(self._heard)
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=MAX_REPLICAS + 2, thread_name_prefix="mkts-repl"),
            interceptors=list(interceptors),
            options=grpc_options(master=True),
            maximum_concurrent_rpcs=MAX_REPLICAS,
        )
        handler = grpc.stream_stream_rpc_method_handler(self._stream)
        self._server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {"Stream": handler})])
        address = f"{host}:{settings.listen_port}"
        if settings.tls_enabled:
            assert settings.cert_file is not None
            assert settings.key_file is not None
            creds = grpc.ssl_server_credentials([(settings.key_file.read_bytes(), settings.cert_file.read_bytes())])
            self.port = self._server.add_secure_port(address, creds)
        else:
            self.port = self._server.add_insecure_port(address)
        if not self.port:
            self._unlisten()
            raise MktsError(f"replication: cannot listen on {address}")
        self._server.start()
        log.info("replication master: listening on %s (tls=%s), log position %d",
                 address, settings.tls_enabled, feed.log_position)  # fmt: skip

    def stop(self, grace: float = 1.0) -> None:
        self._stopping = True
        self._unlisten()
        with self._cond:
            self._cond.notify_all()
        with self._peers_lock:
            peers = list(self._peers.values())
        for peer in peers:
            peer.wake()
        self._server.stop(grace).wait(grace + 5)
        self.recent.close()

    def status(self) -> dict[str, Any]:
        head = self.feed.log_position
        with self._peers_lock:
            peers = [p.status(head) for p in self._peers.values()]
        return {"role": "master", "position": head, "listen_port": self.port, "tls": self.settings.tls_enabled,
                "log_retention_bytes": self.settings.log_retention_bytes, "replicas": peers}  # fmt: skip

    def _heard(self, event: CommitEvent) -> None:  # the committing thread: only a wake-up
        now = time.monotonic()
        gap = now - self._last_commit
        if gap > 1e-4:  # not the next bucket of the same commit (a multi-bucket write announces each)
            self._gap += (gap - self._gap) / 8  # mean seconds between commits, recent ones weigh most
            self._last_commit = now
        with self._cond:
            self._cond.notify_all()

    # -- one replica ------------------------------------------------------------------------------
    def _stream(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        try:
            hello = unpack(next(requests))
            pos = int(hello.get("pos", 0))
            lid = hello.get("log_id")
        except (StopIteration, ValueError, TypeError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"replication: bad hello ({exc})")
            return
        peer = _Peer(context.peer(), str(hello.get("name", ""))[:200], pos)
        with self._peers_lock:
            self._peers[id(peer)] = peer
        threading.Thread(target=self._read_acks, args=(requests, peer), daemon=True, name="mkts-repl-acks").start()
        log.info("replica %s (%s) connected at position %d", peer.peer, peer.name, pos)
        try:
            yield from self._serve(peer, pos, lid, context)
        finally:
            with self._peers_lock:
                self._peers.pop(id(peer), None)
            log.info("replica %s (%s) disconnected at position %d", peer.peer, peer.name, peer.applied)

    def _read_acks(self, requests: Iterator[bytes], peer: _Peer) -> None:
        try:
            for raw in requests:
                msg = unpack(raw)
                if msg.get("t") == "ack":
                    peer.acked(int(msg.get("pos", peer.applied)), self.feed.log_position)
        except (grpc.RpcError, ValueError, TypeError):
            return

    def _serve(self, peer: _Peer, pos: int, lid: Any, context: grpc.ServicerContext) -> Iterator[bytes]:
        reader: Reader | None = None
        if lid == self.log_id:
            try:
                reader = Reader(self.feed, self.recent, pos)
            except LogGone as exc:
                log.warning("replica %s: %s; re-seeding it", peer.peer, exc)
                reader = None
        elif lid is not None:
            log.warning("replica %s followed another log; re-seeding it", peer.peer)
        try:
            if reader is None:
                reader = yield from self._seed(peer, context)
            peer.state = "streaming"
            last_sent = time.monotonic()
            while not self._stopping and context.is_active():
                if not peer.wait_window(self._poll):
                    continue  # its earlier messages are not applied yet: nothing more now
                try:
                    seqs, recs = reader.read(READ_BYTES)
                except LogGone as exc:
                    log.warning("replica %s: %s; re-seeding it", peer.peer, exc)
                    reader.close()
                    reader = yield from self._seed(peer, context)
                    continue
                if recs:
                    peer.sent(seqs[-1])
                    yield changes_message(self.feed.log_position, recs)
                    last_sent = time.monotonic()
                    if sum(map(len, recs)) >= READ_BYTES // 2:
                        continue  # far behind (catching up): the next message at once
                with self._cond:
                    if self.feed.log_position <= reader.position and not self._stopping:
                        self._cond.wait(self._poll)
                # Gather a stream of commits into fewer messages (each costs the master and the
                # replica CPU): at most one per COALESCE seconds, or per COALESCE_BUSY while commits
                # come more often than every BUSY_GAP seconds. Sparse writes wait for nothing.
                pause = last_sent + (COALESCE_BUSY if self._gap < BUSY_GAP else COALESCE) - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                if time.monotonic() - last_sent >= HEARTBEAT and self.feed.log_position <= reader.position:
                    yield pack({"t": "hb", "head": self.feed.log_position})
                    last_sent = time.monotonic()
        finally:
            if reader is not None:
                reader.close()

    def _seed(self, peer: _Peer, context: grpc.ServicerContext) -> Generator[bytes, None, Reader]:
        """Send a consistent copy of every bucket; returns the reader to follow from (a generator's value)."""
        peer.state = "seeding"
        with self.feed.commit_barrier():
            start = self.feed.log_position
        cursor = open_cursor(self.feed, start)
        yield pack({"t": "seed_begin", "log_id": self.log_id})
        cuts: dict[str, int] = {}
        for key in self.backend.list_keys():
            with self.feed.commit_barrier():  # this bucket exactly as of log position cuts[key]
                try:
                    info = self.backend.info(key)
                    batch = self.backend.query(key)[key]
                except BucketNotFoundError:
                    continue
                cuts[key] = self.feed.log_position
            yield from _seed_messages(key, info.columns, info.record_type, batch)
            if self._stopping or not context.is_active():
                return Reader(self.feed, self.recent, cursor.position, cursor)
        end = max(cuts.values(), default=start)
        while cursor.position < end:  # the log during the copy, minus what each bucket's copy holds
            recs = []
            for c in cursor.read(READ_BYTES):
                if c.seq <= start:  # read again by open_cursor
                    continue
                ops = [encode_op(m, a) for m, a in c.ops if c.seq > cuts.get(m["key"], 0)]
                recs.append([c.seq, ops])
            if recs:
                yield pack({"t": "changes", "head": self.feed.log_position, "recs": recs})
        yield pack({"t": "seed_end", "pos": cursor.position})
        log.info("replica %s seeded: %d bucket(s), following from position %d", peer.peer, len(cuts), cursor.position)
        peer.state = "streaming"
        return Reader(self.feed, self.recent, cursor.position, cursor)


def _seed_messages(key: str, columns: Any, record_type: str, batch: Any) -> Iterator[bytes]:
    """The ``seed`` messages of one bucket: its create, then its rows in chunks of about ``READ_BYTES``."""
    import numpy as np

    create = {"op": "create", "key": key, "columns": [list(c) for c in columns], "record_type": record_type}
    ticks = record_type == "variable"
    cols = list(batch.columns.values())
    times = batch.index if ticks else batch.index // 1_000_000_000
    row_bytes = 8 + sum(a.dtype.itemsize for a in cols)
    step = max(1, READ_BYTES // row_bytes)
    ops = [encode_op(create, [])]
    for a in range(0, len(batch), step):
        ops.append(encode_op({"op": "write", "key": key}, [np.ascontiguousarray(times[a : a + step]),
                                                            *[c[a : a + step] for c in cols]]))  # fmt: skip
        yield pack({"t": "seed", "ops": ops})
        ops = []
    if ops:
        yield pack({"t": "seed", "ops": ops})
