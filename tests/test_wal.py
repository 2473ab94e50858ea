"""The write-ahead log on its own: framing, checksums, resynchronisation, checkpoints, segments."""

from __future__ import annotations

import logging
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mktsframe.engine.wal import MAGIC, PREALLOCATE, ReplayReport, WriteAheadLog

ARRAYS = [
    np.arange(5, dtype="<i8"),
    np.array([1.5, -0.0, np.inf], "<f8"),
    np.array(["é", "🚀x", ""], "<U16"),
    np.array([True, False]),
    np.array([], "<f4"),
    np.array([2**64 - 1], "<u8"),
]


def _log(directory: Path, n: int, *, start: bool = True) -> tuple[WriteAheadLog, list[int]]:
    wal = WriteAheadLog(directory)
    if start:
        wal.start_segment()
    seqs = [wal.append({"op": "write", "key": f"K{i}/1Min/T", "i": i}, [np.full(i + 1, i, "<i8")]) for i in range(n)]
    wal.sync()
    return wal, seqs


def _replay(directory: Path) -> tuple[list[tuple[int, int]], ReplayReport, WriteAheadLog]:
    wal = WriteAheadLog(directory)
    report = ReplayReport()
    out = []
    for rec in wal.replay(report):
        (arr,) = rec.arrays()
        assert arr.tolist() == [rec.meta["i"]] * (rec.meta["i"] + 1)  # a served record is exactly what was logged
        out.append((rec.seq, rec.meta["i"]))
    return out, report, wal


def test_records_round_trip_with_their_arrays(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    assert wal.checkpoint_seq == 0
    assert wal.segments() == []
    wal.start_segment()
    assert [p.name for p in wal.segments()] == ["00000000000000000001.wal"]
    assert wal.append({"op": "create", "key": "A/1Min/T", "columns": [["x", "f8"]]}) == 1
    assert wal.append({"op": "write", "key": "A/1Min/T"}, ARRAYS) == 2
    assert wal.written_seq == 2
    assert wal.synced_seq == 0
    wal.sync()
    assert wal.synced_seq == 2
    wal.close()
    again = WriteAheadLog(tmp_path)
    report = ReplayReport()
    records = list(again.replay(report))
    assert [r.seq for r in records] == [1, 2]
    assert records[0].meta["columns"] == [["x", "f8"]]
    assert records[0].arrays() == []
    for got, want in zip(records[1].arrays(), ARRAYS, strict=True):
        assert got.dtype == want.dtype
        assert got.tobytes() == want.tobytes()
    assert report.records == 2
    assert report.problems == []
    assert report.skipped_bytes == 0
    assert again.next_seq == 3


def test_append_needs_an_open_segment(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    with pytest.raises(RuntimeError, match="not open"):
        wal.append({"op": "x"})


def test_checkpoint_skips_applied_records_and_segments_rotate(tmp_path: Path) -> None:
    wal, _ = _log(tmp_path, 4)
    wal.write_checkpoint(3)
    wal.start_segment()  # records 5.. go to a new segment
    wal.append({"op": "write", "key": "K4/1Min/T", "i": 4}, [np.full(5, 4, "<i8")])
    wal.sync()
    assert [p.name for p in wal.segments()] == ["00000000000000000001.wal", "00000000000000000005.wal"]
    wal.drop_checkpointed()  # segment 1 holds 1..4, and 4 is not checkpointed yet
    assert len(wal.segments()) == 2
    wal.close()
    got, report, again = _replay(tmp_path)
    assert got == [(4, 3), (5, 4)]
    assert report.records == 2
    assert again.checkpoint_seq == 3
    again.write_checkpoint(5)
    again.start_segment()
    again.drop_checkpointed()
    assert [p.name for p in again.segments()] == ["00000000000000000006.wal"]
    again.close()
    assert _replay(tmp_path)[0] == []


@pytest.mark.parametrize(
    "damage",
    [b"", b"garbage", b"MKCKPT01" + struct.pack("<QI", 3, 0), b"\x00" * 20, b"MKCKPT01" + struct.pack("<Q", 3)],
)
def test_a_corrupt_checkpoint_means_a_full_replay(tmp_path: Path, damage: bytes, caplog) -> None:
    wal, _ = _log(tmp_path, 3)
    wal.write_checkpoint(2)
    wal.close()
    assert WriteAheadLog(tmp_path).checkpoint_seq == 2
    (tmp_path / "checkpoint").write_bytes(damage)
    with caplog.at_level(logging.WARNING, logger="mktsframe.wal"):
        got, _, again = _replay(tmp_path)
    assert again.checkpoint_seq == 0
    assert got == [(1, 0), (2, 1), (3, 2)]
    assert any("checkpoint" in r.getMessage() and "corrupt" in r.getMessage() for r in caplog.records)


def _frames(path: Path) -> list[tuple[int, int]]:
    """(offset, length) of each frame in a segment, up to its preallocated zero tail."""
    data = path.read_bytes()
    out, pos = [], 0
    while pos < len(data) and data[pos : pos + 4] == MAGIC:
        _, meta_len, data_len, _, _ = struct.unpack_from("<4sIIQI", data, pos)
        length = 24 + meta_len + data_len
        out.append((pos, length))
        pos += length
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 8), where=st.floats(0, 1), size=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_damage_anywhere_costs_only_the_damaged_records(tmp_path: Path, n: int, where: float, size: int, seed: int):
    directory = Path(tempfile.mkdtemp(dir=tmp_path))  # hypothesis reruns examples: a fresh log each time
    wal, _ = _log(directory, n)
    wal.close()
    (seg,) = wal.segments()
    data = bytearray(seg.read_bytes())
    logged = _logged_bytes(seg)  # damage the records, not the zero tail after them
    a = int(where * (logged - 1))
    b = min(logged, a + size)
    rng = np.random.default_rng(seed)
    noise = rng.integers(1, 256, b - a, dtype=np.uint8)  # XOR with non-zero: every byte really changes
    data[a:b] = (np.frombuffer(bytes(data[a:b]), np.uint8) ^ noise).tobytes()
    seg.write_bytes(bytes(data))
    got, report, again = _replay(directory)
    intact = [i for i, (off, length) in enumerate(_frames_from_sizes(n)) if off + length <= a or off >= b]
    assert got == [(i + 1, i) for i in intact]
    assert report.problems  # the damage is always reported
    assert all("WAL" in p and "skipped" in p for p in report.problems)
    assert report.skipped_bytes >= b - a
    assert again.next_seq >= max([i + 2 for i in intact], default=1)


def _frames_from_sizes(n: int) -> list[tuple[int, int]]:
    """Frame offsets of the log written by ``_log`` (computed from a pristine copy)."""
    key = ("frames", n)
    if key not in _FRAME_CACHE:
        with tempfile.TemporaryDirectory() as d:
            wal, _ = _log(Path(d), n)
            wal.close()
            _FRAME_CACHE[key] = _frames(wal.segments()[0])
    return _FRAME_CACHE[key]


_FRAME_CACHE: dict[tuple[str, int], list[tuple[int, int]]] = {}


def _logged_bytes(seg: Path) -> int:
    """Where the records of a segment end and its preallocated zero tail begins."""
    off, length = _frames(seg)[-1]
    return off + length


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 6), cut=st.floats(0, 1))
def test_truncation_keeps_exactly_the_whole_records(tmp_path: Path, n: int, cut: float) -> None:
    directory = Path(tempfile.mkdtemp(dir=tmp_path))
    wal, _ = _log(directory, n)
    wal.close()
    (seg,) = wal.segments()
    data = seg.read_bytes()[: _logged_bytes(seg)]
    assert not any(seg.read_bytes()[len(data) :])  # the rest is the preallocated zero tail
    at = int(cut * len(data))
    seg.write_bytes(data[:at])  # a log truncated by a crash (or written before preallocation)
    got, report, _again = _replay(directory)
    whole = [i for i, (off, length) in enumerate(_pristine(n)) if off + length <= at]
    assert got == [(i + 1, i) for i in whole]
    torn = at not in {off for off, _ in _pristine(n)} and at != len(data)
    assert bool(report.problems) == torn
    if torn:
        assert "torn tail" in report.problems[0]


def _pristine(n: int) -> list[tuple[int, int]]:
    return _frames_from_sizes(n)


def test_oversized_frame_headers_are_not_trusted(tmp_path: Path) -> None:
    wal, _ = _log(tmp_path, 3)
    wal.close()
    (seg,) = wal.segments()
    data = bytearray(seg.read_bytes())
    frames = _frames(seg)
    off = frames[1][0]
    struct.pack_into("<I", data, off + 8, 2**32 - 1)  # data_len of record 2: absurd
    seg.write_bytes(bytes(data))
    got, report, _ = _replay(tmp_path)
    assert got == [(1, 0), (3, 2)]
    assert "corrupt record" in report.problems[0]


def test_garbage_between_segments_and_magic_lookalikes(tmp_path: Path) -> None:
    wal, _ = _log(tmp_path, 2)
    wal.start_segment()
    wal.append({"op": "write", "key": "K2/1Min/T", "i": 2}, [np.full(3, 2, "<i8")])
    wal.close()
    first, _second = wal.segments()
    with open(first, "ab") as f:
        f.write(MAGIC + b"\xff" * 30 + MAGIC)  # looks like a frame start, twice
    got, report, _ = _replay(tmp_path)
    assert got == [(1, 0), (2, 1), (3, 2)]
    assert len(report.problems) == 1
    assert first.name in report.problems[0]


# -- preallocated segments ------------------------------------------------------------------------


def test_segments_are_preallocated_and_end_in_a_clean_zero_tail(tmp_path: Path) -> None:
    wal, _ = _log(tmp_path, 5)
    (seg,) = wal.segments()
    logged = _logged_bytes(seg)
    size = seg.stat().st_size
    assert size >= logged + PREALLOCATE // 2  # the file did not grow record by record
    assert not any(seg.read_bytes()[logged:])
    wal.close()
    got, report, again = _replay(tmp_path)
    assert got == [(i + 1, i) for i in range(5)]
    assert report.problems == []
    assert report.skipped_bytes == 0
    assert again.next_seq == 6


def test_records_larger_than_the_preallocation_and_across_its_boundary(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    wal.start_segment()
    big = np.arange(PREALLOCATE // 8 + 1000, dtype="<i8")  # one record longer than a preallocation step
    small = [np.full(3000, i, "<i8") for i in range(3000)]  # 24 KB each: crosses several steps
    wal.append({"op": "write", "key": "A/1Min/T"}, [big])
    for i, a in enumerate(small):
        wal.append({"op": "write", "key": "A/1Min/T", "i": i}, [a])
    wal.sync()
    wal.close()
    report = ReplayReport()
    records = list(WriteAheadLog(tmp_path).replay(report))
    assert report.problems == []
    assert len(records) == 1 + len(small)
    assert records[0].arrays()[0].tobytes() == big.tobytes()
    assert all(r.arrays()[0].tolist() == [r.meta["i"]] * 3000 for r in records[1:])


def test_a_torn_record_before_the_zero_tail_is_reported_at_its_own_size(tmp_path: Path) -> None:
    wal, _ = _log(tmp_path, 4)
    wal.close()
    (seg,) = wal.segments()
    frames = _frames(seg)
    last_off, last_len = frames[-1]
    data = bytearray(seg.read_bytes())
    keep = last_len // 2
    data[last_off + keep : last_off + last_len] = bytes(last_len - keep)  # the second half never reached the disk
    seg.write_bytes(bytes(data))
    got, report, again = _replay(tmp_path)
    assert got == [(1, 0), (2, 1), (3, 2)]
    assert len(report.problems) == 1
    assert "torn tail" in report.problems[0]
    assert report.skipped_bytes <= keep  # the record's surviving bytes, not the preallocated megabytes
    assert again.next_seq == 4  # the torn record's number is reused: it was never acknowledged


def test_a_zeroed_record_in_the_middle_does_not_end_the_log(tmp_path: Path) -> None:
    """Unsynced pages can reach the disk out of order (background sync): a hole is not the end."""
    wal, _ = _log(tmp_path, 5)
    wal.close()
    (seg,) = wal.segments()
    off, length = _frames(seg)[2]
    data = bytearray(seg.read_bytes())
    data[off : off + length] = bytes(length)
    seg.write_bytes(bytes(data))
    got, report, _ = _replay(tmp_path)
    assert got == [(1, 0), (2, 1), (4, 3), (5, 4)]
    assert len(report.problems) == 1
    assert "corrupt record" in report.problems[0]


def test_a_leftover_segment_of_the_same_name_is_replaced(tmp_path: Path) -> None:
    """Replay sets ``next_seq`` past every valid record, so a file with the next segment's name holds none."""
    wal, _ = _log(tmp_path, 2)
    wal.close()
    stale = tmp_path / f"{3:020d}.wal"
    stale.write_bytes(b"\x07" * 100)  # e.g. the torn first record of a segment started before a crash
    report = ReplayReport()
    again = WriteAheadLog(tmp_path)
    assert [r.seq for r in again.replay(report)] == [1, 2]
    assert report.problems
    again.start_segment()
    assert again._segment == stale
    again.append({"op": "write", "key": "K2/1Min/T", "i": 2}, [np.full(3, 2, "<i8")])
    again.sync()
    again.close()
    got, report, _ = _replay(tmp_path)
    assert got == [(1, 0), (2, 1), (3, 2)]
    assert report.problems == []
