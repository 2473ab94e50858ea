"""Tick buckets under SIGKILL: no acknowledged tick is lost, none is torn, none is duplicated by replay
(MarketStore re-appended variable records on replay), whatever the kill interrupted: appends, late
ticks, duplicates, range rewrites, a copy-on-write of a whole partition, or recovery itself."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest

from mktsframe.engine import Engine
from mktsframe.errors import BucketNotFoundError

from .test_crash import kill_writer, outcomes
from .tick_crash_writer import KEY, plan

WRITER = Path(__file__).with_name("tick_crash_writer.py")


class TickModel:
    """The ticks that must be stored: (time, batch, row) of every acknowledged write, minus deletes."""

    def __init__(self) -> None:
        self.ns = np.empty(0, np.int64)
        self.b = np.empty(0, np.int32)
        self.r = np.empty(0, np.int32)

    def copy(self) -> TickModel:
        m = TickModel()
        m.ns, m.b, m.r = self.ns.copy(), self.b.copy(), self.r.copy()
        return m

    def apply(self, n: int) -> None:
        op = plan(n)
        if op[0] == "write":
            t = op[1]
            self.ns = np.concatenate([self.ns, t])
            self.b = np.concatenate([self.b, np.full(t.size, n, np.int32)])
            self.r = np.concatenate([self.r, np.arange(t.size, dtype=np.int32)])
        else:
            keep = (self.ns < op[1]) | (self.ns > op[2])
            self.ns, self.b, self.r = self.ns[keep], self.b[keep], self.r[keep]

    def expected(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sorted by time; equal times in arrival order (batch, then row within the batch)."""
        order = np.lexsort((self.r, self.b, self.ns))
        return self.ns[order], self.b[order], self.r[order]


def observe(engine: Engine) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        (got,) = engine.query(KEY).values()
    except BucketNotFoundError:
        return np.empty(0, np.int64), np.empty(0, np.int32), np.empty(0, np.int32)
    c = got.columns
    np.testing.assert_array_equal(c["F"], c["B"] * 0.5 + c["R"], err_msg="torn tick")
    return got.index, c["B"], c["R"]


def same(model: TickModel, seen: tuple[np.ndarray, np.ndarray, np.ndarray]) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(model.expected(), seen, strict=True))


def _explain(model: TickModel, seen: tuple[np.ndarray, np.ndarray, np.ndarray]) -> str:
    ns, b, _ = model.expected()
    return f"expected {ns.size} ticks from batches {sorted(set(b.tolist()))[-5:]}, found {seen[0].size} " + (
        f"from batches {sorted(set(seen[1].tolist()))[-5:]}"
    )


# (mode, seconds after the trigger before SIGKILL); "big" waits for a 30,000-tick copy-on-write
SCHEDULE = [
    ("random", 0.3), ("big", 0.005), ("rewrite", 0.0), ("late", 0.001), ("random", 0.05),
    ("startup", 0.0), ("big", 0.02), ("dup", 0.0), ("random", 0.15), ("rewrite", 0.002),
    ("late", 0.0), ("big", 0.0), ("random", 0.02), ("startup", 0.0), ("dup", 0.001),
    ("rewrite", 0.001), ("random", 0.1), ("big", 0.01),
]  # fmt: skip


def _target(mode: str, after: int) -> int:
    want = {"big": lambda n: n % 40 == 13, "rewrite": lambda n: n % 10 in (8, 9),
            "late": lambda n: n % 10 == 6, "dup": lambda n: n % 10 == 7}[mode]  # fmt: skip
    return next(n for n in range(after + 1, after + 80) if want(n))


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sigkill_during_tick_writes_loses_tears_and_duplicates_nothing(tmp_path: Path) -> None:
    root = tmp_path / "data"
    rng = random.Random(4711)
    model = TickModel()
    next_op = 0
    kills = replayed = 0
    for mode, delay in SCHEDULE:
        acked, begun, killed = kill_writer(
            root, next_op, mode, delay, rng, lambda after, m=mode: _target(m, after + rng.randint(0, 5)), WRITER
        )
        kills += killed
        alternatives, inflight = outcomes(model, acked, begun)
        with Engine(root, read_only=False) as engine:
            replayed += engine.recovery.records
            assert all("torn tail" in p for p in engine.recovery.problems), engine.recovery.problems
            seen = observe(engine)
        matching = [m for m in alternatives if same(m, seen)]
        assert matching, _explain(model, seen) + f"; acked {acked[-3:]}, in flight {inflight}"
        model = matching[0]
        next_op = max([next_op - 1, *begun]) + 1
    assert kills >= 20
    assert next_op > 60, "the writer hardly wrote anything"
    assert replayed > 0, "no kill left un-checkpointed ticks to replay"
    assert model.ns.size > 10_000
    logging.getLogger(__name__).warning("tick crash test: %d kills, %d operations, %d WAL records replayed, "
                                        "%d ticks", kills, next_op, replayed, model.ns.size)
