"""The changes since a durable position (``Engine.changes_since``), log retention, a replica's
applier fed from it (the same buckets, whole), and the master's shared, bounded cache of encoded
records with the per-replica window of unacknowledged messages: without any server."""

from __future__ import annotations

import threading
from pathlib import Path

import msgpack
import numpy as np
import pytest

from mktsframe.backend.local import LocalBackend
from mktsframe.changes import ChangeCursor, ChangeFeed, LoggedChange, LogGone
from mktsframe.config import ConfigError
from mktsframe.engine import Engine
from mktsframe.engine.writes import DIRECT_MIN_BYTES
from mktsframe.records import Batch
from mktsframe.replication.master import WINDOW, _Peer
from mktsframe.replication.recent import Reader, RecentLog
from mktsframe.replication.replica import Applier
from mktsframe.replication.settings import parse_replication
from mktsframe.replication.wire import changes_message, decode_op, encode_op, encode_record, pack, unpack

NS = 1_000_000_000
T0 = 1_704_067_200


def bars(secs: list[int] | np.ndarray, values: list[float] | np.ndarray) -> Batch:
    return Batch(np.asarray(secs, np.int64) * NS, {"Close": np.asarray(values, np.float64)})


def changes(engine: Engine, after: int) -> list:
    cursor = engine.changes_since(after)
    try:
        return cursor.read(1 << 30)
    finally:
        cursor.close()


def dump(engine: Engine) -> dict:
    out = {}
    for key in engine.list_keys():
        b = engine.query(key)[key]
        out[key] = (b.index.tolist(), {k: v.tolist() for k, v in b.columns.items()}, b.variable_length)
    return out


def busy(e: Engine) -> None:
    """Every kind of change: creates, fixed and tick writes (exact ns), write_many, runs, a direct
    write (rows only in the year files), deletes and a destroy + re-create with another schema."""
    e.write("A/1Min/OHLCV", bars([T0, T0 + 60], [1, 2]))
    e.write("T/1Sec/TICK", Batch(np.array([T0 * NS + 7, T0 * NS + 7, T0 * NS + 9]), {"P": np.ones(3, "f4")}, True),
            variable_length=True)  # fmt: skip
    e.write("A/1Min/OHLCV", bars(T0 + 60 * np.arange(100), np.arange(100.0)))
    e.write_many({"A/1Min/OHLCV": bars([T0], [9]), "B/1Min/OHLCV": bars([T0], [3])})
    n = DIRECT_MIN_BYTES // 8 + 10
    e.write("C/1Min/OHLCV", bars(T0 + 60 * np.arange(n), np.arange(n, dtype=float)))
    e.delete("A/1Min/OHLCV", start=(T0 + 120) * NS, end=(T0 + 600) * NS)
    e.delete("T/1Sec/TICK", start=T0 * NS + 9, end=T0 * NS + 9)
    e.destroy("B/1Min/OHLCV")
    e.write("B/1Min/OHLCV", Batch(np.array([T0 * NS]), {"V": np.array([4], np.int32)}))
    e.create("E/1D/OHLCV", [("Close", "f4")])


def test_engine_is_a_change_feed_with_durable_positions(tmp_path: Path) -> None:
    with Engine(tmp_path / "m", log_retention_bytes=1 << 30) as e:
        assert isinstance(e, ChangeFeed)
        busy(e)
        recs = changes(e, 0)
        assert [r.seq for r in recs] == sorted({r.seq for r in recs})
        assert recs[-1].seq == e.log_position
        ops = [m["op"] for r in recs for m, _ in r.ops]
        assert {"create", "write", "delete", "destroy"} <= set(ops)
        assert not {"direct", "commit", "write_run"} & set(ops)
        # replaying the feed into an empty root gives the same buckets, exact to the nanosecond
        with Engine(tmp_path / "r") as r:
            applier = Applier(LocalBackend(r))
            for rec in recs:
                applier.apply(rec.ops)
            assert dump(r) == dump(e)
        middle = recs[len(recs) // 2].seq
        assert [r.seq for r in changes(e, middle)] == [r.seq for r in recs if r.seq > middle]
        head = e.log_position
    # positions survive a restart; the log is kept across it (log_retention_bytes)
    with Engine(tmp_path / "m", log_retention_bytes=1 << 30) as e:
        assert e.log_position == head
        assert [r.seq for r in changes(e, 0)] == [r.seq for r in recs]
        e.write("A/1Min/OHLCV", bars([T0 + 60 * 5000], [1]))
        assert [r.seq for r in changes(e, head)] == [head + 1]
        assert changes(e, e.log_position) == []
        with pytest.raises(LogGone, match="ahead"):
            e.changes_since(e.log_position + 5)


def test_without_retention_checkpointed_log_is_gone(tmp_path: Path) -> None:
    with Engine(tmp_path / "m") as e:
        e.write("A/1Min/OHLCV", bars([T0], [1]))
        e.checkpoint()
        e.write("A/1Min/OHLCV", bars([T0 + 60], [1]))
        with pytest.raises(LogGone, match="no longer holds record 1"):
            e.changes_since(0)
        assert [r.seq for r in changes(e, e.log_position - 1)] == [e.log_position]


def test_retention_keeps_only_the_newest_segments(tmp_path: Path) -> None:
    row = 4 << 20  # each segment is preallocated in 4 MiB steps
    with Engine(tmp_path / "m", log_retention_bytes=2 * row) as e:
        for i in range(6):
            e.write("A/1Min/OHLCV", bars([T0 + 60 * i], [i]))
            e.checkpoint()
        kept = sorted((tmp_path / "m" / ".mkts" / "wal").glob("*.wal"))
        assert 2 <= len(kept) <= 3
        with pytest.raises(LogGone):
            e.changes_since(0)
        assert len(changes(e, e.log_position - 1)) == 1


def test_a_cursor_follows_the_log_live_across_rotations(tmp_path: Path) -> None:
    with Engine(tmp_path / "m", log_retention_bytes=1 << 30) as e:
        cursor = e.changes_since(0)
        seen = []
        for i in range(20):
            e.write("A/1Min/OHLCV", bars([T0 + 60 * i], [i]))
            if i % 3 == 0:
                e.checkpoint()  # a new segment
            seen += [r.seq for r in cursor.read()]
        cursor.close()
        assert seen == list(range(1, e.log_position + 1))


def test_replication_settings() -> None:
    assert parse_replication({}).role == "off"
    m = parse_replication({"enabled": True, "listen_port": 6000, "log_retention_mb": 10})
    assert (m.role, m.listen_port, m.log_retention_bytes) == ("master", 6000, 10 << 20)
    r = parse_replication({"master_host": "db1:5996", "retry_interval": "10s", "retry_backoff_coeff": 2})
    assert (r.role, r.master_host, r.retry_interval, r.retry_backoff_coeff) == ("replica", "db1:5996", 10.0, 2.0)
    for bad, match in [
        ({"enabled": True, "master_host": "a:1"}, "both"),
        ({"master_host": "127.0.0.1"}, "HOST:PORT"),
        ({"enabled": True, "tls_enabled": True}, "cert_file"),
        ({"enabled": True, "listen_port": 70000}, "listen_port"),
        ({"master_host": "a:1", "retry_interval": "soon"}, "retry_interval"),
        ({"enabled": True, "listne_port": 1}, "unknown"),
        ({"enabled": True, "cert_file": "/no/such.pem"}, "no such file"),
    ]:
        with pytest.raises(ConfigError, match=match):
            parse_replication(bad)


@pytest.mark.parametrize("landed", [True, False])
def test_a_tick_write_cut_by_a_crash_is_applied_exactly_once(tmp_path: Path, landed: bool) -> None:
    """The replica died between applying tick rows and saving their position: on start, the
    intent it left says whether the rows landed, so they are neither lost nor doubled."""
    from mktsframe.replication.position import PositionFile
    from mktsframe.replication.replica import Replica
    from mktsframe.replication.wire import pack

    key = "T/1Sec/TICK"
    with Engine(tmp_path / "r") as e:
        backend = LocalBackend(e)
        e.write(key, Batch(np.array([T0 * NS + 5]), {"P": np.ones(1, "f4")}, True), variable_length=True)
        meta = tmp_path / "r" / ".mkts"
        pos = PositionFile(meta)
        pos.save(b"x" * 16, 41)
        pos.close()
        lo, hi = T0 * NS + 5, T0 * NS + 6
        (meta / "replica-intent").write_bytes(pack({"t": "intent", "first": 42, "last": 43,
                                                    "counts": [[key, lo, hi, 1, 2]]}))  # fmt: skip
        if landed:
            e.write(key, Batch(np.array([lo, hi]), {"P": np.ones(2, "f4")}, True))
        settings = parse_replication({"master_host": "127.0.0.1:9", "retry_interval": "30s"})
        replica = Replica(backend, settings, meta)
        replica.stop()
        assert PositionFile(meta).seq == (43 if landed else 41)
        assert not (meta / "replica-intent").exists()


@pytest.mark.parametrize("clean", [True, False])
def test_a_replica_position_after_the_machine_restarted(tmp_path: Path, clean: bool) -> None:
    """Same boot (a killed process): the position holds. Another boot: only a clean close is trusted."""
    import struct

    import crc32c

    from mktsframe.replication import position

    pos = position.PositionFile(tmp_path)
    pos.save(b"L" * 16, 99)
    if clean:
        pos.close()
    assert position.PositionFile(tmp_path).seq == 99  # same boot: trusted either way
    raw = (tmp_path / "replica-position").read_bytes()
    fields = list(position._FMT.unpack(raw[:-4]))
    fields[-1] = b"\x01" * 16  # written during another boot of the machine
    body = position._FMT.pack(*fields)
    (tmp_path / "replica-position").write_bytes(body + struct.pack("<I", crc32c.crc32c(body)))
    again = position.PositionFile(tmp_path)
    assert (again.seq, again.log_id, again.lost_at_reboot) == ((99, b"L" * 16, False) if clean else (0, None, True))


def test_wire_ops_round_trip_and_refuse_malformed_input() -> None:

    arrays = [np.array([1, 2], np.int64), np.array([0.5, 1.5], np.float32)]
    op = encode_op({"op": "write", "key": "A/1Min/OHLCV"}, arrays)
    meta, back = decode_op(unpack(pack({"t": "x", "op": op}))["op"])
    assert meta == {"op": "write", "key": "A/1Min/OHLCV"}
    assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(arrays, back, strict=True))
    for bad in (
        [{"op": "write", "key": "A/1Min/OHLCV", "arrays": [["<i8", 5]]}, b"\0" * 8],  # overruns its data
        [{"op": "write", "key": "A/1Min/OHLCV", "arrays": [["|O", 1]]}, b"\0" * 8],  # objects
        [{"op": "write"}, b""],  # no key
        ["meta", b""],
    ):
        with pytest.raises(ValueError, match="malformed"):
            decode_op(bad)
    for raw in (b"\xc1", b"\x93\x01\x02\x03", pack({"no": "type"})):
        with pytest.raises(ValueError, match="malformed"):
            unpack(raw)


def read_all_changes(cursor: ChangeCursor) -> list[LoggedChange]:
    out: list[LoggedChange] = []
    while got := cursor.read():
        out += got
    return out


def read_all(reader: Reader) -> tuple[list[int], list[bytes]]:
    seqs, recs = [], []
    while True:
        s, r = reader.read(1 << 10)
        if not r:
            return seqs, recs
        seqs += s
        recs += r


def test_changes_message_is_the_packed_map() -> None:
    ops = [({"op": "write", "key": "A/1Min/OHLCV"}, [np.arange(3, dtype="i8"), np.ones(3)])]
    for n in (0, 1, 15, 16):
        recs = [encode_record(i, ops) for i in range(n)]
        want = pack({"t": "changes", "head": 7 + n, "recs": [[i, [encode_op(m, a) for m, a in ops]] for i in range(n)]})
        assert changes_message(7 + n, recs) == want
    for n in (65535, 65536):  # the longer array headers
        assert changes_message(1 << 40, [b"\xc0"] * n) == pack({"t": "changes", "head": 1 << 40, "recs": [None] * n})


def test_replicas_share_the_newest_records_and_read_older_ones_from_the_log(tmp_path: Path) -> None:
    with Engine(tmp_path / "m", log_retention_bytes=1 << 30) as e:
        busy(e)  # every kind of change, a direct write (rows only in the year files) among them
        recent = RecentLog(e, max_bytes=4 << 10)
        assert recent.start == recent.end == e.log_position
        for i in range(200):  # ~100 bytes each: far more than the 4 KiB kept
            e.write("A/1Min/OHLCV", bars([T0 + 60 * (1000 + i)], [i]))
        e.destroy("B/1Min/OHLCV")
        busy(e)  # again: the direct write's rows read back while the cache fills
        want = changes(e, 0)

        # a replica at the start: its own cursor up to the records kept, then the shared ones
        behind = Reader(e, recent, 0)
        seqs, recs = read_all(behind)
        assert seqs == [c.seq for c in want]
        assert recs == [encode_record(c.seq, c.ops) for c in want]
        assert recent.start > 0
        assert recent.end == e.log_position
        assert sum(map(len, recent._blobs)) <= 4 << 10  # bounded, whatever the replicas do

        # one at the head takes the very same bytes (encoded once), never the log
        e.write("A/1Min/OHLCV", bars([T0], [7.0]))
        at_head = Reader(e, recent, behind.position)
        s1, r1 = at_head.read(1 << 20)
        s2, r2 = behind.read(1 << 20)
        assert s1 == s2 == [e.log_position]
        assert r1[0] is r2[0]
        assert at_head._cursor is None

        # a record larger than the whole cache is not kept: each reader takes it from the log
        e.write("A/1Min/OHLCV", bars(T0 + 60 * np.arange(2000), np.arange(2000.0)))
        e.write("A/1Min/OHLCV", bars([T0], [8.0]))
        big, small = e.log_position - 1, e.log_position
        assert read_all(at_head)[0] == read_all(behind)[0] == [big, small]
        assert recent._size <= 4 << 10

        # a replica left further behind than the cache holds reads the log again, in order
        old = Reader(e, recent, want[len(want) // 2].seq)
        assert old._cursor is not None
        assert read_all(old)[0] == [c.seq for c in changes(e, want[len(want) // 2].seq)]
        with pytest.raises(LogGone, match="ahead"):
            Reader(e, recent, e.log_position + 1)
        recent.close()


def test_a_reader_idle_while_the_log_rotates_away_is_told_so(tmp_path: Path) -> None:
    """Nobody reads for a while and checkpoints delete the segments after a cursor's position
    (the shared cache's, or a frozen replica's): the cursor raises LogGone (the replica is
    re-seeded) rather than skip to the segments that are left; a current replica carries on."""
    with Engine(tmp_path / "m") as e:  # no retention: checkpointed segments are deleted
        e.write("A/1Min/OHLCV", bars([T0], [1]))
        recent = RecentLog(e)
        at = e.log_position
        idle = e.changes_since(at)
        for i in range(3):
            e.write("A/1Min/OHLCV", bars([T0 + 60 * (i + 1)], [i]))
            e.checkpoint()
            e.checkpoint()
        with pytest.raises(LogGone, match="no longer holds record"):
            read_all_changes(idle)  # what its open (deleted) segment still holds, then the gap
        idle.close()
        with pytest.raises(LogGone):
            read_all(Reader(e, recent, at))
        e.write("A/1Min/OHLCV", bars([T0 + 600], [9]))
        assert read_all(Reader(e, recent, e.log_position - 1))[0] == [e.log_position]
        recent.close()


def test_a_replica_that_does_not_acknowledge_gets_no_more_messages() -> None:
    peer = _Peer("p", "r", 0)
    for seq in range(1, WINDOW + 1):
        assert peer.wait_window(0)
        peer.sent(seq * 10)
    assert not peer.wait_window(0.01)  # full: the handler sends nothing, reads nothing
    threading.Timer(0.05, peer.acked, (10, 100)).start()
    assert peer.wait_window(5)  # the first message applied: one more may go
    assert peer.applied == 10
    peer.acked(WINDOW * 10, 100)
    assert peer.wait_window(0)
    assert not peer._unacked
    assert msgpack.unpackb(changes_message(1, [])) == {"t": "changes", "head": 1, "recs": []}
