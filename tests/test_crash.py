"""Crash safety: SIGKILL at random moments loses no acknowledged write and tears no row; damaged
log records, checkpoints and year-file headers are detected, reported, skipped and never served."""

from __future__ import annotations

import logging
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
import pytest

from mktsframe.engine import Engine, applied
from mktsframe.errors import BucketNotFoundError, CorruptFileError

from .crash_writer import BASE_S, BULK_ROWS, KEY, NS, SLOTS, plan

WRITER = Path(__file__).with_name("crash_writer.py")


class _Model(Protocol):
    def copy(self: M) -> M: ...
    def apply(self, n: int) -> None: ...


M = TypeVar("M", bound=_Model)


# -- the expected state ------------------------------------------------------------------------


@dataclass
class Model:
    """What the root must hold: for every minute, the batch and row that wrote it (-1: absent)."""

    b: np.ndarray = field(default_factory=lambda: np.full(SLOTS, -1, np.int32))
    r: np.ndarray = field(default_factory=lambda: np.zeros(SLOTS, np.int32))
    side: set[str] = field(default_factory=set)

    def copy(self) -> Model:
        return type(self)(self.b.copy(), self.r.copy(), set(self.side))

    def plan(self, n: int) -> tuple:
        """Operation ``n`` of the writer this model follows."""
        return plan(n)

    def apply(self, n: int) -> None:
        op = self.plan(n)
        if op[0] == "write":
            self.b[op[1]] = n
            self.r[op[1]] = np.arange(op[1].size)
        elif op[0] == "delete":
            self.b[op[1] : op[2] + 1] = -1
        elif op[0] == "create":
            self.side.add(op[1])
        else:
            self.side.discard(op[1])

    def same_data(self, other: Model) -> bool:
        present = self.b >= 0
        return bool(np.array_equal(self.b, other.b) and np.array_equal(self.r[present], other.r[present]))


def observe(engine: Engine, model: type[Model] = Model) -> Model:
    """The root's state, after checking that every row is internally consistent (not torn)."""
    seen = model()
    seen.side = set(engine.list_keys()) - {KEY}
    try:
        (got,) = engine.query(KEY).values()
    except BucketNotFoundError:
        return seen
    secs = got.index // NS - BASE_S
    assert np.all(got.index % NS == 0)
    assert np.all(secs % 60 == 0), "a bar is not at its bar start"
    minutes = secs // 60
    c = got.columns
    np.testing.assert_array_equal(c["T"], minutes, err_msg="row stored at another bar than written")
    np.testing.assert_array_equal(c["F"], c["B"] * 0.5 + c["R"], err_msg="torn row (F)")
    np.testing.assert_array_equal(c["S"].astype(np.int64), c["B"] * 100_000 + c["R"], err_msg="torn row (S)")
    np.testing.assert_array_equal(c["Flag"], (c["B"] + c["R"]) % 2 == 0, err_msg="torn row (Flag)")
    seen.b[minutes] = c["B"]
    seen.r[minutes] = c["R"]
    return seen


def check_tree(root: Path, side: set[str]) -> None:
    """No debris: destroyed buckets leave no directories, the trash is emptied."""
    symbols = {k.split("/")[0] for k in side}
    on_disk = {p.name for p in root.iterdir() if p.name.startswith("X")}
    debris = {str(p.relative_to(root)) for d in on_disk - symbols for p in (root / d).rglob("*")}
    lost = sorted(symbols - on_disk)
    assert on_disk == symbols, f"left behind: {sorted(on_disk - symbols)} {sorted(debris)}; lost {lost}"
    trash = root / ".mkts" / "trash"
    assert not trash.exists() or not any(trash.iterdir())


# -- running and killing the writer ------------------------------------------------------------


class Child:
    def __init__(self, root: Path, first: int, *args: str, writer: Path = WRITER) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._stderr = open(root.parent / f"stderr-{first}-{time.monotonic_ns()}.txt", "w+")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, str(writer), str(root), str(first), *args],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())
            self._queue.put(line.strip())
        self._queue.put(None)

    def wait_for(self, wanted: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"writer never printed {wanted!r}; stderr: {self.stderr()}")
            if line is None:
                pytest.fail(f"writer exited before {wanted!r} (rc {self.proc.wait()}); stderr: {self.stderr()}")
            if line == wanted:
                return

    def kill(self) -> int:
        self.proc.send_signal(signal.SIGKILL)
        return self.finish()

    def finish(self) -> int:
        rc = self.proc.wait(timeout=60)
        self._thread.join(timeout=60)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self._stderr.close()
        return rc

    def stderr(self) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read()[-3000:]

    def acked(self) -> list[int]:
        return [int(x.split()[1]) for x in self.lines if x.startswith("A ")]

    def begun(self) -> list[int]:
        return [int(x.split()[1]) for x in self.lines if x.startswith("B ")]


def first_op_of(kind: str, start: int) -> int:
    def matches(n: int) -> bool:
        op = plan(n)
        if kind == "bulk":
            return op[0] == "write" and op[1].size == BULK_ROWS
        if kind == "overwrite":
            return n % 20 == 14
        return op[0] == kind

    return next(n for n in range(start + 1, start + 60) if matches(n))


# (mode, seconds to wait after the trigger before SIGKILL)
SCHEDULE = [
    ("random", 0.3), ("bulk", 0.04), ("delete", 0.002), ("create", 0.003), ("destroy", 0.003),
    ("overwrite", 0.001), ("bulk", 0.01), ("random", 0.05), ("delete", 0.0), ("startup", 0.0),
    ("bulk", 0.02), ("create", 0.0), ("destroy", 0.0), ("random", 0.15), ("bulk", 0.003),
    ("delete", 0.001), ("overwrite", 0.0), ("random", 0.01), ("bulk", 0.06), ("create", 0.001),
    ("destroy", 0.001), ("startup", 0.0), ("random", 0.2), ("bulk", 0.0),
]  # fmt: skip


def kill_writer(
    root: Path,
    next_op: int,
    mode: str,
    delay: float | tuple[float, float],
    rng: random.Random,
    target: Callable[[int], int],
    writer: Path = WRITER,
) -> tuple[list[int], list[int], int]:
    """Start ``writer`` at operation ``next_op`` and SIGKILL it; returns (acknowledged, begun, kills).

    ``random``: after up to ``delay`` s. ``startup``: kill one writer, then the next one somewhere in
    its start-up and recovery. Otherwise: up to ``delay`` s after operation ``target(next_op)`` begins.
    A ``(low, high)`` delay kills at a time drawn from that window instead.
    """
    if mode == "startup":
        # Leave the previous crash's log un-recovered, and kill the next writer while it starts
        # up and replays it: recovery itself must survive being interrupted.
        started = time.monotonic()
        child = Child(root, next_op, writer=writer)
        child.wait_for("READY")
        startup = time.monotonic() - started  # interpreter start, imports, recovery: on this machine
        time.sleep(rng.uniform(0.0, 0.05))
        assert child.kill() == -signal.SIGKILL, child.stderr()
        child_ops = (child.acked(), child.begun())
        restart = Child(root, max([next_op - 1, *child_ops[1]]) + 1, writer=writer)
        # Somewhere in its own start-up, measured rather than guessed: a fixed 1.2 s let a fast
        # machine's writer finish starting and run ~90 operations, past the end of its plan.
        time.sleep(rng.uniform(0.0, startup))
        assert restart.kill() == -signal.SIGKILL, restart.stderr()
        return child_ops[0] + restart.acked(), child_ops[1] + restart.begun(), 2
    child = Child(root, next_op, writer=writer)
    child.wait_for("READY")
    if mode == "random":
        time.sleep(rng.uniform(*delay) if isinstance(delay, tuple) else rng.uniform(0.0, delay))
    else:
        child.wait_for(f"B {target(next_op)}")
        time.sleep(rng.uniform(*delay) if isinstance(delay, tuple) else rng.uniform(0.0, delay))
    assert child.kill() == -signal.SIGKILL, child.stderr()
    return child.acked(), child.begun(), 1


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_no_acknowledged_write(tmp_path: Path) -> None:
    root = tmp_path / "data"
    rng = random.Random(20240229)
    model = Model()
    next_op = 0
    kills = verified = replayed = adopted = inflight_bulk = 0
    torn_tails = 0
    for mode, delay in SCHEDULE:
        acked, begun, killed = kill_writer(
            root, next_op, mode, delay, rng, lambda after, m=mode: first_op_of(m, after + rng.randint(0, 25))
        )
        kills += killed

        # Acknowledged operations are certain; at most one begun operation is in flight.
        alternatives, inflight = outcomes(model, acked, begun)
        inflight_bulk += sum(plan(n)[0] == "write" and plan(n)[1].size == BULK_ROWS for n in inflight)

        with Engine(root, read_only=False) as engine:  # must open, whatever was interrupted
            replayed += engine.recovery.records
            adopted += engine.recovery.applied_before
            for problem in engine.recovery.problems:
                assert "torn tail" in problem, problem  # a kill can only tear the end of the log
                torn_tails += 1
            seen = observe(engine)
        matching = [m for m in alternatives if m.same_data(seen)]
        assert matching, _explain(alternatives, seen, acked, inflight)
        assert seen.side in [m.side for m in alternatives], (seen.side ^ model.side, inflight)
        check_tree(root, seen.side)
        model = matching[0]
        model.side = seen.side  # resolve the in-flight operations to what actually happened
        verified += 1
        next_op = max([next_op - 1, *begun]) + 1

    assert kills >= 20
    assert verified >= 20
    assert next_op > 100, "the writer hardly wrote anything"
    assert inflight_bulk >= 1, "no kill landed during a bulk write"
    assert replayed > 0, "no kill left un-checkpointed work to replay"
    assert adopted > 0, "no kill fell between two writes (whose records the page cache already holds)"
    logging.getLogger(__name__).warning(
        "crash test: %d kills, %d operations, %d WAL records replayed, %d adopted from the page cache, "
        "%d torn tails, %d in-flight bulk writes",
        kills, next_op, replayed, adopted, torn_tails, inflight_bulk,
    )  # fmt: skip


def _applied(model: M, n: int) -> M:
    out = model.copy()
    out.apply(n)
    return out


def outcomes(model: M, acked: list[int], begun: list[int]) -> tuple[list[M], list[int]]:
    """Every state the root may now hold, and the operations that were in flight at a kill.

    Operations run one after another, so they are applied in their order: an acknowledged one to
    every alternative, an in-flight one (begun, killed before its acknowledgement, possibly durable)
    applied or not. Order matters: in ``startup`` mode the first writer may be killed inside
    operation n after it became durable, and the second writer's n+1 (a delete) then acts on it.
    """
    inflight = sorted(set(begun) - set(acked))
    assert len(inflight) <= 2  # one per killed process
    alternatives = [model]
    for n in sorted(set(acked) | set(inflight)):
        if n in inflight:
            alternatives = [m for a in alternatives for m in (a, _applied(a, n))]
        else:
            for a in alternatives:
                a.apply(n)
    return alternatives, inflight


def test_an_in_flight_operation_is_placed_before_the_acknowledged_ones_after_it() -> None:
    # Writer 1 is killed inside bulk write 12 after it became durable; writer 2 deletes 1,000 of its
    # rows (13). The root then holds 12 minus the deleted rows, not 12 applied after the delete.
    alternatives, inflight = outcomes(Model(), acked=[13], begun=[12, 13])
    assert inflight == [12]
    rows = plan(12)[1]
    lo, hi = plan(13)[1:]
    applied = [m for m in alternatives if (m.b == 12).any()]
    assert len(alternatives) == 2
    assert len(applied) == 1
    assert (applied[0].b[rows] == 12).sum() == BULK_ROWS - (hi - lo + 1)
    assert (applied[0].b[lo : hi + 1] == -1).all()


def _explain(alternatives: list[Model], seen: Model, acked: list[int], inflight: list[int]) -> str:
    m = alternatives[0]
    diff = np.flatnonzero((m.b != seen.b) | ((m.b >= 0) & (m.r != seen.r)))
    sample = [(int(t), int(m.b[t]), int(seen.b[t])) for t in diff[:10]]
    return f"state differs at {diff.size} minutes (minute, expected batch, found batch): {sample}; " + (
        f"acked {acked[-5:]}, in flight {inflight}"
    )


# -- damaged files -----------------------------------------------------------------------------

N_FIXED = 12  # operations 0..11: small writes; WAL: seq 1 = create, seq n + 2 = operation n


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root whose writer died (os._exit) after 12 acknowledged writes, nothing checkpointed."""
    root = tmp_path_factory.mktemp("crashed") / "data"
    child = Child(root, 0, "fixed", str(N_FIXED))
    assert child.finish() == 0, child.stderr()
    assert child.acked() == list(range(N_FIXED))
    return root


@pytest.fixture(scope="module")
def crashed_mid_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like ``crashed``, but a checkpoint after operation 5 left the log segment in place."""
    root = tmp_path_factory.mktemp("crashed-ckpt") / "data"
    child = Child(root, 0, "fixed-checkpoint", str(N_FIXED))
    assert child.finish() == 0, child.stderr()
    return root


def _copy(src: Path, dst: Path, *, log_only: bool = False) -> Path:
    """A copy of a crashed root; ``log_only`` keeps only the log, so everything comes from replay."""
    if log_only:
        (dst / ".mkts" / "wal").mkdir(parents=True)
        for seg in (src / ".mkts" / "wal").glob("*.wal"):
            shutil.copy(seg, dst / ".mkts" / "wal" / seg.name)
    else:
        shutil.copytree(src, dst)
    return dst


def _segment(root: Path) -> Path:
    (seg,) = sorted((root / ".mkts" / "wal").glob("*.wal"))
    return seg


def _frame_offsets(seg: Path) -> tuple[list[int], int]:
    """Offsets of the frames in a segment, and where the last one ends (its preallocated zero tail begins)."""
    data = seg.read_bytes()
    offsets, pos = [], 0
    while pos < len(data) and data[pos : pos + 4] == b"MKW1":
        offsets.append(pos)
        meta_len, data_len = (
            int.from_bytes(data[pos + 4 : pos + 8], "little"),
            int.from_bytes(data[pos + 8 : pos + 12], "little"),
        )
        pos += 24 + meta_len + data_len
    return offsets, pos


def _expect(ops: list[int]) -> Model:
    m = Model()
    for n in ops:
        m.apply(n)
    return m


def _open_twice(root: Path) -> Iterator[Engine]:
    """Open (recover), yield, close; then check that a second open replays nothing again."""
    with Engine(root, read_only=False) as engine:
        yield engine
    with Engine(root, read_only=False) as again:
        assert again.recovery.records == 0, "records were applied twice"
        assert again.recovery.problems == [], "a skipped record came back"


@pytest.mark.parametrize(
    ("damage", "lost", "what"),
    [
        ("truncate-mid-last", [N_FIXED - 1], "torn tail"),
        ("truncate-mid-header", [N_FIXED - 1], "torn tail"),
        ("flip-last-payload", [N_FIXED - 1], "torn tail"),
        ("flip-last-crc", [N_FIXED - 1], "torn tail"),
        ("append-garbage", [], "torn tail"),
        ("append-half-frame", [], "torn tail"),
        ("flip-middle", [5], "corrupt record"),
        ("zero-middle-magic", [5], "corrupt record"),
        ("flip-two-records", [3, 8], "corrupt record"),
    ],
)
def test_damaged_log_records_are_reported_skipped_and_never_served(
    crashed: Path, tmp_path: Path, damage: str, lost: list[int], what: str
) -> None:
    root = _copy(crashed, tmp_path / "data", log_only=True)  # nothing applied: all comes from the log
    seg = _segment(root)
    whole = seg.read_bytes()
    offsets, logged = _frame_offsets(seg)
    assert not any(whole[logged:])  # the preallocated rest of the segment is zero
    data = bytearray(whole[:logged])  # damage the records; the zero tail is put back after them
    assert len(offsets) == N_FIXED + 1
    last = offsets[-1]

    def frame_of(n: int) -> int:
        return offsets[n + 1]

    if damage == "truncate-mid-last":
        del data[last + (len(data) - last) // 2 :]
    elif damage == "truncate-mid-header":
        del data[last + 10 :]
    elif damage == "flip-last-payload":
        data[-3] ^= 0xFF
    elif damage == "flip-last-crc":
        data[last + 20] ^= 0x01
    elif damage == "append-garbage":
        data += os.urandom(333)
    elif damage == "append-half-frame":
        data += data[frame_of(2) : frame_of(2) + 30]  # a frame header whose body never arrived
    elif damage == "flip-middle":
        data[frame_of(5) + 40] ^= 0x55
    elif damage == "zero-middle-magic":
        data[frame_of(5) : frame_of(5) + 4] = b"\0\0\0\0"
    elif damage == "flip-two-records":
        data[frame_of(3) + 30] ^= 0x10
        data[frame_of(8) + 30] ^= 0x10
    seg.write_bytes(bytes(data) + bytes(max(0, len(whole) - len(data))))

    for engine in _open_twice(root):
        problems = engine.recovery.problems
        assert problems, "the damage was not reported"
        assert all(seg.name in p and what in p and "skipped" in p for p in problems), problems
        assert engine.recovery.records == N_FIXED + 1 - len(lost)
        seen = observe(engine)
        expected = _expect([n for n in range(N_FIXED) if n not in lost])
        assert expected.same_data(seen), _explain([expected], seen, [], lost)
        # The engine carries on: new writes after the damaged record are kept.
        engine.write(KEY, _small_batch(900))
    with Engine(root, read_only=False) as engine:
        assert observe(engine).b[900 * 60] == 900


def _small_batch(n: int):  # type: ignore[no-untyped-def]
    from mktsframe.backend.base import Batch

    from .crash_writer import columns, index_ns

    minutes = np.array([n * 60], np.int64)
    return Batch(index_ns(minutes), columns(n, minutes))


def test_replay_after_a_crash_is_exact_and_happens_once(crashed: Path, tmp_path: Path) -> None:
    for log_only in (False, True):
        root = _copy(crashed, tmp_path / f"data{log_only}", log_only=log_only)
        for engine in _open_twice(root):
            assert engine.recovery.records == N_FIXED + 1
            assert engine.recovery.problems == []
            assert _expect(list(range(N_FIXED))).same_data(observe(engine))


def test_a_second_crash_replays_only_the_new_records(crashed: Path, tmp_path: Path) -> None:
    root = _copy(crashed, tmp_path / "data")
    child = Child(root, N_FIXED, "fixed", "6")  # recovers the first crash, writes 6 more, dies again
    assert child.finish() == 0, child.stderr()
    applied.forget(root)  # as after a machine restart: the log since the checkpoint is replayed
    for engine in _open_twice(root):
        assert engine.recovery.records == 6  # not the 13 records the first recovery already applied
        assert _expect(list(range(N_FIXED + 6))).same_data(observe(engine))


def test_corrupt_checkpoint_falls_back_to_full_replay(crashed_mid_checkpoint: Path, tmp_path: Path, caplog) -> None:
    intact = _copy(crashed_mid_checkpoint, tmp_path / "intact")
    with Engine(intact, read_only=False) as engine:
        after_checkpoint = engine.recovery.records
        assert 0 < after_checkpoint < N_FIXED + 1  # only records after the checkpoint
        assert _expect(list(range(N_FIXED))).same_data(observe(engine))
    for damage in (b"", b"garbage!", b"MKCKPT01" + bytes(12)):
        root = _copy(crashed_mid_checkpoint, tmp_path / f"bad{len(damage)}", log_only=True)
        shutil.copy(crashed_mid_checkpoint / ".mkts" / "wal" / "checkpoint", root / ".mkts" / "wal" / "checkpoint")
        (root / ".mkts" / "wal" / "checkpoint").write_bytes(damage)
        with caplog.at_level(logging.WARNING, logger="mktsframe.wal"):
            for engine in _open_twice(root):
                assert engine.recovery.records == N_FIXED + 1  # everything, from the start of the log
                assert _expect(list(range(N_FIXED))).same_data(observe(engine))
        assert any("checkpoint" in r.getMessage() and "corrupt" in r.getMessage() for r in caplog.records)


def test_corrupt_year_file_header_is_named_and_never_served(crashed: Path, tmp_path: Path) -> None:
    root = _copy(crashed, tmp_path / "data")
    year_file = root / "CRASH" / "1Min" / "T" / "2023.bin"
    with open(year_file, "r+b") as f:
        f.seek(70)
        f.write(b"#")  # inside the checksummed metadata
    with Engine(root, read_only=False) as engine:  # startup is not blocked
        assert engine.recovery.problems, "replaying into a corrupt file must be reported"
        assert all("could not be replayed" in p and str(year_file) in p for p in engine.recovery.problems)
        with pytest.raises(CorruptFileError) as exc:
            engine.query(KEY)
        assert str(year_file) in str(exc.value)
        assert "checksum" in str(exc.value)
        with pytest.raises(CorruptFileError, match=r"2023\.bin"):
            engine.write(KEY, _small_batch(0))
        assert "CRASH/1Min/T" in engine.list_keys()
    with Engine(root, read_only=True) as reader, pytest.raises(CorruptFileError, match=r"2023\.bin"):
        reader.query(KEY)


def test_corrupt_bucket_metadata_is_named(crashed: Path, tmp_path: Path) -> None:
    root = _copy(crashed, tmp_path / "data")
    meta = root / "CRASH" / "1Min" / "T" / "bucket.json"
    meta.write_text('{"format": "mktsframe-bucket", "columns": [[')
    with Engine(root, read_only=True) as reader:
        with pytest.raises(CorruptFileError) as exc:
            reader.query(KEY)
        assert str(meta) in str(exc.value)


def test_replayed_destroy_removes_the_parents_an_interrupted_destroy_left(tmp_path: Path) -> None:
    """A kill between moving the bucket to the trash and removing its empty parents."""
    root = tmp_path / "data"
    wal_dir = root / ".mkts" / "wal"
    with Engine(root, read_only=False) as engine:
        engine.create("GONE/1Min/T", [("A", "f8")])
        engine.create("KEPT/1Min/T", [("A", "f8")])
        engine.create("KEPT/1H/T", [("A", "f8")])
        engine.checkpoint()
        engine.destroy("GONE/1Min/T")
        engine.destroy("KEPT/1H/T")
        log = {p.name: p.read_bytes() for p in wal_dir.glob("*.wal")}  # the log as a crash leaves it
        checkpoint = (wal_dir / "checkpoint").read_bytes()
    for name, data in log.items():
        (wal_dir / name).write_bytes(data)
    (wal_dir / "checkpoint").write_bytes(checkpoint)
    (root / "GONE" / "1Min").mkdir(parents=True)  # what the interrupted destroy left behind
    (root / ".mkts" / "trash" / "0123abcd").mkdir(parents=True)
    applied.forget(root)  # the clean close marked both destroys applied; a kill inside one never would
    with Engine(root, read_only=False) as engine:
        assert engine.recovery.records == 2
        assert engine.list_keys() == ["KEPT/1Min/T"]
    assert sorted(p.name for p in root.iterdir()) == [".mkts", "KEPT"]
    assert sorted(p.name for p in (root / "KEPT").iterdir()) == ["1Min"]
    assert not any((root / ".mkts" / "trash").glob("*")) if (root / ".mkts" / "trash").exists() else True


@pytest.mark.parametrize("mode", ["fixed-rotate", "fixed-bgsync"])
def test_crash_after_rotations_and_with_background_sync(tmp_path: Path, mode: str) -> None:
    """Log rotation mid-stream loses nothing; with background sync a killed *process* loses nothing
    either (the appended log is in the page cache; only a machine crash could lose it)."""
    root = tmp_path / "data"
    ops = 40  # includes a bulk write, deletes, an overwrite, a create and a destroy
    child = Child(root, 0, mode, str(ops))
    assert child.finish() == 0, child.stderr()
    assert child.acked() == list(range(ops))
    segments = sorted(p.name for p in (root / ".mkts" / "wal").glob("*.wal"))
    if mode == "fixed-rotate":
        assert len(segments) == 1  # old segments were dropped
        assert segments[0] != "00000000000000000001.wal"
    for engine in _open_twice(root):
        assert engine.recovery.problems == []
        seen = observe(engine)
        expected = _expect(list(range(ops)))
        assert expected.same_data(seen), _explain([expected], seen, [], [])
        assert seen.side == expected.side


def test_runs_of_consecutive_bars_are_logged_without_their_times_and_replay_exactly_once(tmp_path: Path) -> None:
    """A write of consecutive bars is a ``write_run`` record: its first bar's time, then the columns."""
    from mktsframe.backend.base import Batch
    from mktsframe.engine.wal import ReplayReport, WriteAheadLog

    src = tmp_path / "src"
    year_end = 1_735_689_600  # 2025-01-01 00:00 UTC: the first run crosses into a new year file
    runs = [(year_end - 60 * 500, 1_000), (year_end + 60 * 2_000, 16), (year_end + 60 * 5_000, 3)]

    def batch(start_s: int, n: int, base: float) -> Batch:
        secs = start_s + 60 * np.arange(n, dtype=np.int64)
        return Batch(secs * NS, {"x": base + np.arange(n, dtype="f8"), "y": (secs % 97).astype("i4")})

    engine = Engine(src, read_only=False, checkpoint_interval=3600)
    try:
        for i, (start, n) in enumerate(runs):
            engine.write("R/1Min/T", batch(start, n, 1_000.0 * i))
        (seg,) = sorted((src / ".mkts" / "wal").glob("*.wal"))
        report = ReplayReport()
        records = list(WriteAheadLog(seg.parent).replay(report))  # read while the writer is still open
    finally:
        for copy in ("log", "damaged"):  # the log as a crash leaves it
            shutil.copytree(src / ".mkts" / "wal", tmp_path / copy / ".mkts" / "wal")
        engine.close()
    writes = [r for r in records if r.meta["op"] in ("write", "write_run")]
    assert [r.meta["op"] for r in writes] == ["write_run", "write_run", "write"]  # 3 rows: below the threshold
    assert [r.meta.get("start") for r in writes[:2]] == [runs[0][0], runs[1][0]]
    assert len(writes[0].data) == 1_000 * (8 + 4)  # columns only: no int64 time per row

    def expected() -> tuple[list[int], list[float]]:
        got = [batch(s, n, 1_000.0 * i) for i, (s, n) in enumerate(runs)]
        return [int(t) for b in got for t in b.index], [float(v) for b in got for v in b.columns["x"]]

    root = tmp_path / "log"
    for engine in _open_twice(root):
        assert engine.recovery.problems == []
        out = engine.query("R/1Min/T")["R/1Min/T"]
        assert (out.index.tolist(), out.columns["x"].tolist()) == expected()
        assert out.columns["y"].tolist() == [int(t // NS % 97) for t in out.index]
        assert engine.info("R/1Min/T").years == (2024, 2025)

    # A damaged run record costs exactly that record: the run after it is still replayed.
    damaged = tmp_path / "damaged"
    (seg,) = sorted((damaged / ".mkts" / "wal").glob("*.wal"))
    offsets, _ = _frame_offsets(seg)
    data = bytearray(seg.read_bytes())
    data[offsets[-2] + 40] ^= 0x5A  # the frames: create, run, run, write; hit the second run
    seg.write_bytes(bytes(data))
    for engine in _open_twice(damaged):
        assert len(engine.recovery.problems) == 1
        assert "corrupt record" in engine.recovery.problems[0]
        out = engine.query("R/1Min/T")["R/1Min/T"]
        times = expected()[0]
        assert out.index.tolist() == times[:1_000] + times[1_016:]

