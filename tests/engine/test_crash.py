"""Crash safety: acknowledged writes survive SIGKILL; torn or corrupt log records are never served."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mktsframe
from mktsframe.engine import Engine
from mktsframe.errors import CorruptFileError

WRITER = textwrap.dedent(
    """
    import sys, numpy as np, pandas as pd, mktsframe
    root, first = sys.argv[1], int(sys.argv[2])
    db = mktsframe.connect(root, read_only=False)
    batch = first
    while True:
        n = 1 if batch % 3 else (100 if batch % 2 else 2_000)  # 1-row appends and bulk writes
        # Bars of batch b hold minutes [b*2_000, b*2_000 + n): disjoint across batches, within a few decades.
        idx = pd.Timestamp("2023-12-01", tz="UTC") + pd.to_timedelta(batch * 2_000 + np.arange(n), unit="min")
        cols = {"Batch": np.full(n, batch, "i8"), "Check": np.full(n, batch * 7.5), "Row": np.arange(n, dtype="i4")}
        df = pd.DataFrame(cols, index=idx)
        df.to_mkts("CRASH/1Min/T", backend=db)
        if batch % 11 == 5:
            db.delete("CRASH/1Min/T", start=idx[0], end=idx[min(n, 3) - 1])  # delete what we just wrote
            print(f"D {batch}", flush=True)
        elif batch % 13 == 7:
            db.create(f"X{batch}/1Min/T", [("A", "f8")])
            print(f"C {batch}", flush=True)
        else:
            print(f"W {batch} {n}", flush=True)
        batch += 1
    """
)


def _acks(out: str) -> tuple[dict[int, int], set[int], set[int]]:
    written: dict[int, int] = {}
    deleted: set[int] = set()
    created: set[int] = set()
    for line in out.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "W" and len(parts) == 3:
            written[int(parts[1])] = int(parts[2])
        elif parts[0] == "D" and len(parts) == 2:
            deleted.add(int(parts[1]))
        elif parts[0] == "C" and len(parts) == 2:
            created.add(int(parts[1]))
    return written, deleted, created


@pytest.mark.slow
def test_sigkill_loop_keeps_every_acknowledged_row(tmp_path: Path) -> None:
    root = tmp_path / "data"
    rng = random.Random(1234)
    next_batch = 0
    all_written: dict[int, int] = {}
    all_deleted: set[int] = set()
    all_created: set[int] = set()
    kills = replayed = 0
    for _ in range(22):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), str(next_batch)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(rng.uniform(0.6, 2.0))  # includes interpreter start-up, recovery and writes
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, err
        kills += 1
        written, deleted, created = _acks(out)
        all_written.update(written)
        all_deleted |= deleted
        all_created |= created
        seen = [int(x.split()[1]) for x in out.splitlines() if len(x.split()) >= 2]
        # The batch in flight when killed may or may not have landed; skip past it either way.
        next_batch = (max(seen) if seen else next_batch) + 2

        with Engine(root, read_only=False) as engine:  # must open, whatever the kill interrupted
            replayed += engine.recovery.records
            got = engine.query("CRASH/1Min/T")["CRASH/1Min/T"] if all_written or all_deleted else None
            if got is None:
                continue
            batch_col = got.columns["Batch"]
            # No torn row: every column of every row comes from the same write.
            np.testing.assert_array_equal(got.columns["Check"], batch_col * 7.5)
            minute = (got.index - pd.Timestamp("2023-12-01", tz="UTC").value) // 60_000_000_000
            np.testing.assert_array_equal(minute, batch_col * 2_000 + got.columns["Row"])
            counts = dict(zip(*np.unique(batch_col, return_counts=True), strict=True))
            for b, n in all_written.items():
                assert counts.get(b) == n, f"acknowledged batch {b} ({n} rows) has {counts.get(b)} rows"
            for b in all_deleted:
                n = 1 if b % 3 else (100 if b % 2 else 2_000)
                assert counts.get(b, 0) == n - min(n, 3), f"acknowledged delete of batch {b} not applied"
            keys = set(engine.list_keys())
            for b in all_created:
                assert f"X{b}/1Min/T" in keys
    assert kills >= 20
    assert len(all_written) > 20
    assert replayed > 0  # the kills did interrupt un-checkpointed work


def _write_some(root: Path, n_batches: int = 5) -> pd.DataFrame:
    frames = []
    with mktsframe.connect(root, read_only=False) as db:
        for i in range(n_batches):
            idx = pd.date_range("2024-03-01", periods=10, freq="1min", tz="UTC") + pd.Timedelta(hours=i)
            df = pd.DataFrame({"A": np.arange(10.0) + 100 * i}, index=idx.as_unit("ns"))
            df.to_mkts("W/1Min/T", backend=db)
            frames.append(df)
        # Leave the log un-checkpointed, as a crash would: copy it away before close() trims it.
        seg = sorted((root / ".mkts" / "wal").glob("*.wal"))
        saved = {p.name: p.read_bytes() for p in seg}
    for name, data in saved.items():
        (root / ".mkts" / "wal" / name).write_bytes(data)
    (root / ".mkts" / "wal" / "checkpoint").unlink()  # force a full replay
    return pd.concat(frames)


def _segment(root: Path) -> Path:
    (seg,) = sorted((root / ".mkts" / "wal").glob("*.wal"))
    return seg


def test_torn_wal_tail_is_reported_and_skipped(root: Path) -> None:
    expected = _write_some(root)
    seg = _segment(root)
    data = seg.read_bytes()
    seg.write_bytes(data[:-7])  # tear the last record
    with Engine(root, read_only=False) as engine:
        problems = engine.recovery.problems
        assert len(problems) == 1
        assert "torn tail" in problems[0]
        assert seg.name in problems[0]
        got = engine.query("W/1Min/T")["W/1Min/T"]
    # Every record but the torn one was replayed (year files already hold it too: fine).
    assert np.array_equal(got.columns["A"], expected["A"].to_numpy())


def test_corrupt_record_in_the_middle_does_not_cost_the_later_ones(root: Path) -> None:
    _write_some(root)
    seg = _segment(root)
    data = bytearray(seg.read_bytes())
    # Wipe the year files so that only the log can restore the data, then flip a byte inside
    # the third frame's payload.
    for f in (root / "W" / "1Min" / "T").glob("*.bin"):
        f.unlink()
    starts = [i for i in range(len(data)) if data[i : i + 4] == b"MKW1"]
    data[starts[3] + 40] ^= 0xFF
    seg.write_bytes(bytes(data))
    with Engine(root, read_only=False) as engine:
        assert any("corrupt record" in p for p in engine.recovery.problems), engine.recovery.problems
        got = engine.query("W/1Min/T")["W/1Min/T"]
    values = set(got.columns["A"].tolist())
    assert 405.0 in values  # the last batch survived although an earlier record was corrupt
    assert len(values) == 40  # exactly one 10-row batch lost, nothing served twice


def test_garbage_appended_to_the_log_is_skipped(root: Path) -> None:
    expected = _write_some(root)
    seg = _segment(root)
    with open(seg, "ab") as f:
        f.write(b"MKW1" + os.urandom(200))
    with Engine(root, read_only=False) as engine:
        assert engine.recovery.problems
        got = engine.query("W/1Min/T")["W/1Min/T"]
    assert np.array_equal(got.columns["A"], expected["A"].to_numpy())


def test_replay_is_not_applied_twice_after_checkpoint(root: Path) -> None:
    expected = _write_some(root)
    with Engine(root, read_only=False) as engine:
        assert engine.recovery.records == 6  # create + 5 writes
    with Engine(root, read_only=False) as engine:
        assert engine.recovery.records == 0  # checkpointed: nothing to replay
        got = engine.query("W/1Min/T")["W/1Min/T"]
    assert np.array_equal(got.columns["A"], expected["A"].to_numpy())


def test_corrupt_checkpoint_falls_back_to_full_replay(root: Path) -> None:
    expected = _write_some(root)
    (root / ".mkts" / "wal" / "checkpoint").write_bytes(b"\x00garbage")
    with Engine(root, read_only=False) as engine:
        assert engine.recovery.records == 6
        got = engine.query("W/1Min/T")["W/1Min/T"]
    assert np.array_equal(got.columns["A"], expected["A"].to_numpy())


def test_corrupt_year_file_header_is_detected(root: Path) -> None:
    _write_some(root)
    with Engine(root, read_only=False):
        pass
    (year,) = (root / "W" / "1Min" / "T").glob("*.bin")
    raw = bytearray(year.read_bytes()[:4096])
    raw[100] ^= 0x01  # inside the JSON metadata
    with open(year, "r+b") as f:
        f.write(raw)
    with Engine(root, read_only=True) as engine, pytest.raises(CorruptFileError, match=r"2024\.bin.*checksum"):
        engine.query("W/1Min/T")
    with open(year, "r+b") as f:
        f.write(b"NOTMAGIC")
    with Engine(root, read_only=True) as engine, pytest.raises(CorruptFileError, match="bad magic"):
        engine.query("W/1Min/T")
