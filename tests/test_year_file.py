"""Year files: slot arithmetic, sparse creation, reads, deletes, and header validation."""

from __future__ import annotations

import calendar
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mktsframe.engine.year_file import FORMAT_VERSION, YearFile, year_bounds
from mktsframe.errors import CorruptFileError

SCHEMA = (("Open", "f4"), ("Volume", "i8"), ("Name", "U16"), ("Flag", "bool"))


def make(path: Path, tf: int = 60, year: int = 2024, schema=SCHEMA) -> YearFile:
    return YearFile.create(path, "A/1Min/OHLCV", tf, year, schema)


def values(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "Open": rng.random(n).astype("f4"),
        "Volume": rng.integers(-(2**62), 2**62, n),
        "Name": np.array([f"n{seed}-{i}" for i in range(n)], "U16"),
        "Flag": rng.random(n) < 0.5,
    }


def read_all(yf: YearFile, s0: int = 0, s1: int | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    s0, s1, idx = yf.select(s0, yf.nslots if s1 is None else s1)
    n = (s1 - s0) if idx is None else idx.size
    ns = np.empty(n, np.int64)
    outs = {name: np.empty(n, yf.columns[name].dtype) for name in yf.columns}
    yf.copy_into(s0, s1, idx, ns, outs)
    return ns, outs


@pytest.mark.parametrize(
    ("year", "tf", "nslots"),
    [(2023, 60, 525_600), (2024, 60, 527_040), (2023, 86_400, 365), (2024, 86_400, 366), (2023, 1, 31_536_000),
     (2000, 3600, 8784), (1900, 3600, 8760), (1969, 60, 525_600)],
)  # fmt: skip
def test_slot_counts_and_bounds(tmp_path: Path, year: int, tf: int, nslots: int) -> None:
    yf = make(tmp_path / f"{year}.bin", tf=tf, year=year, schema=(("x", "f8"),))
    try:
        assert yf.nslots == nslots
        start, end = year_bounds(year)
        assert start == calendar.timegm((year, 1, 1, 0, 0, 0))
        assert yf.year_start == start
        assert yf.year_end == end
        assert yf.slot_of(start) == 0
        assert yf.slot_of(end - 1) == nslots - 1
        assert yf.count() == 0
        assert yf.bounds() is None
        # Sparse: an empty year costs (almost) no disk, even for 1Sec bars.
        assert yf.disk_usage() < 1 << 20
    finally:
        yf.close()


def test_write_select_delete_round_trip(tmp_path: Path) -> None:
    yf = make(tmp_path / "2024.bin")
    slots = np.array([0, 1, 2, 10, 527_039], np.int64)  # first minute, a hole, the last minute
    vals = values(5)
    yf.write(slots, vals)
    assert (yf.lo, yf.hi) == (0, 527_040)
    assert yf.count() == 5
    first, last = yf.bounds() or (0, 0)
    assert first == yf.year_start
    assert last == yf.year_end - 60
    ns, got = read_all(yf)
    np.testing.assert_array_equal(ns, (yf.year_start + slots * 60) * 1_000_000_000)
    for name in vals:
        np.testing.assert_array_equal(got[name], vals[name])
    # Contiguous reads take the straight-slice path.
    s0, s1, idx = yf.select(0, 3)
    assert (s0, s1, idx) == (0, 3, None)
    # Overwrite replaces in place.
    yf.write(np.array([1], np.int64), {k: v[:1] for k, v in values(1, seed=9).items()})
    _, got = read_all(yf, 1, 2)
    assert got["Name"].tolist() == ["n9-0"]
    assert yf.count() == 5
    # Delete clears values too, and the watermarks shrink.
    assert yf.delete(0, 3) == 3
    assert yf.delete(0, 3) == 0
    assert (yf.lo, yf.hi) == (10, 527_040)
    assert yf.delete(527_039, 527_040) == 1
    assert (yf.lo, yf.hi) == (10, 11)
    assert yf.columns["Name"][0] == ""
    assert yf.columns["Volume"][1] == 0
    assert yf.delete(0, yf.nslots) == 1
    assert (yf.lo, yf.hi) == (0, 0)
    assert yf.bounds() is None
    yf.close()


def test_staged_values_stay_invisible_until_written(tmp_path: Path) -> None:
    """stage_run (what a durable append does while its log record is being synced) copies values
    only into slots outside the watermarks, marks nothing present, and never touches a stored row."""
    yf = make(tmp_path / "2024.bin")
    names = list(yf.columns)
    vals = values(20)
    yf.write_run(100, 20, [vals[n] for n in names])
    before = read_all(yf)
    staged = values(20, seed=5)
    yf.stage_run(100, [staged[n] for n in names])  # inside the watermarks: nothing happens
    yf.stage_run(110, [staged[n] for n in names])  # overlaps the data: nothing happens
    after = read_all(yf)
    np.testing.assert_array_equal(after[0], before[0])
    for n in names:
        np.testing.assert_array_equal(after[1][n], before[1][n])
    yf.stage_run(120, [staged[n] for n in names])  # past the data: values land, rows do not appear
    assert (yf.lo, yf.hi) == (100, 120)
    assert yf.count() == 20
    assert not yf.presence[120:140].any()
    np.testing.assert_array_equal(yf.columns["Name"][120:140], staged["Name"])
    yf.stage_run(527_030, [staged[n] for n in names])  # would run past the end of the year: nothing happens
    assert not yf.columns["Volume"][527_030:].any()
    yf.write_run(120, 20, [staged[n] for n in names])  # the write itself publishes them
    assert (yf.lo, yf.hi) == (100, 140)
    ns, got = read_all(yf)
    assert ns.size == 40
    np.testing.assert_array_equal(got["Open"][20:], staged["Open"])
    yf.close()


def test_out_of_range_slots_are_refused(tmp_path: Path) -> None:
    yf = make(tmp_path / "2023.bin", year=2023)
    with pytest.raises(ValueError, match="out of range"):
        yf.write(np.array([525_600], np.int64), values(1))
    with pytest.raises(ValueError, match="out of range"):
        yf.write(np.array([-1], np.int64), values(1))
    yf.close()


def test_reopen_read_only_sees_the_data(tmp_path: Path) -> None:
    path = tmp_path / "2024.bin"
    yf = make(path)
    yf.write(np.array([5, 6, 100], np.int64), values(3))
    yf.flush()
    ro = YearFile.open(path, writable=False)
    try:
        assert ro.count() == 3
        assert (ro.lo, ro.hi) == (5, 101)
        # The reader shares the mapping: a later append is visible to it.
        yf.write(np.array([200], np.int64), values(1, seed=3))
        assert ro.count() == 4
        assert ro.hi == 201
        with pytest.raises((TypeError, ValueError)):
            ro.columns["Open"][0] = 1.0
    finally:
        ro.close()
        yf.close()


def test_implausible_watermarks_are_rescanned(tmp_path: Path) -> None:
    path = tmp_path / "2024.bin"
    yf = make(path)
    yf.write(np.array([7, 9], np.int64), values(2))
    yf.flush()
    yf.close()
    with open(path, "r+b") as f:  # watermarks are an unchecksummed hint
        f.seek(32)
        f.write(struct.pack("<qq", 10**9, -5))
    ro = YearFile.open(path, writable=False)
    assert (ro.lo, ro.hi) == (7, 10)
    assert ro.count() == 2
    ro.close()
    rw = YearFile.open(path, writable=True)
    assert (rw.lo, rw.hi) == (7, 10)
    rw.close()


def test_last_and_first_slots_honour_holes(tmp_path: Path) -> None:
    yf = make(tmp_path / "2024.bin", schema=(("x", "f8"),))
    slots = np.array([3, 50, 51, 9000, 20_000, 400_000], np.int64)
    yf.write(slots, {"x": slots.astype("f8")})
    for n in range(1, 8):
        s0 = yf.last_slots(n, yf.nslots)
        present = slots[slots >= s0]
        assert present.tolist() == slots[-n:].tolist()
        s1 = yf.first_slots(n, 0)
        assert slots[slots < s1].tolist() == slots[:n].tolist()
    assert yf.last_slots(2, 9000) == 50  # the two rows before slot 9000
    assert yf.first_slots(1, 52) == 9001
    yf.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ops=st.lists(
        st.tuples(st.booleans(), st.integers(0, 8783), st.integers(0, 50)),
        min_size=1,
        max_size=12,
    ),
    window=st.tuples(st.integers(0, 8784), st.integers(0, 8784)),
)
def test_year_file_matches_a_dictionary_model(tmp_path: Path, ops: list[tuple[bool, int, int]], window) -> None:
    path = tmp_path / "m.bin"
    path.unlink(missing_ok=True)
    yf = make(path, tf=3600, year=2024, schema=(("x", "i8"),))
    model: dict[int, int] = {}
    try:
        for k, (is_write, start, length) in enumerate(ops):
            stop = min(start + length, yf.nslots)
            if is_write:
                slots = np.arange(start, stop, 2, dtype=np.int64)  # with holes
                yf.write(slots, {"x": slots * 10 + k})
                model.update({int(s): int(s) * 10 + k for s in slots})
            else:
                removed = yf.delete(start, stop)
                gone = [s for s in model if start <= s < stop]
                assert removed == len(gone)
                for s in gone:
                    del model[s]
        assert yf.count() == len(model)
        lo, hi = sorted(window)
        ns, got = read_all(yf, lo, hi)
        expected = sorted(s for s in model if lo <= s < hi)
        assert ((ns // 1_000_000_000 - yf.year_start) // 3600).tolist() == expected
        assert got["x"].tolist() == [model[s] for s in expected]
        if model:
            assert yf.bounds() == (yf.year_start + min(model) * 3600, yf.year_start + max(model) * 3600)
    finally:
        yf.close()


# -- header validation ---------------------------------------------------------------------------


def _saved(tmp_path: Path) -> Path:
    path = tmp_path / "2024.bin"
    yf = make(path)
    yf.write(np.array([1, 2], np.int64), values(2))
    yf.flush()
    yf.close()
    return path


def _patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: _patch(p, 0, b"NOTMKTS!"), "bad magic"),
        (lambda p: _patch(p, 8, struct.pack("<I", FORMAT_VERSION + 1)), "unsupported format version"),
        (lambda p: _patch(p, 12, struct.pack("<I", 1 << 30)), "corrupt header"),
        (lambda p: _patch(p, 16, struct.pack("<I", 10**6)), "corrupt header"),
        (lambda p: _patch(p, 20, struct.pack("<I", 12345)), "checksum"),
        (lambda p: _patch(p, 64 + 5, b"X"), "checksum"),
        (lambda p: os.truncate(p, 3), "bad magic"),
        (lambda p: os.truncate(p, 0), "bad magic"),
        (lambda p: os.truncate(p, 200), "checksum"),
        (lambda p: os.truncate(p, os.path.getsize(p) - 1), "truncated"),
    ],
)
def test_corrupt_headers_are_named_and_refused(tmp_path: Path, damage, message: str) -> None:
    path = _saved(tmp_path)
    damage(path)
    for writable in (False, True):
        with pytest.raises(CorruptFileError) as exc:
            YearFile.open(path, writable=writable)
        assert str(path) in str(exc.value)
        assert message in str(exc.value)


def test_header_is_self_describing(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    head = path.read_bytes()[:4096]
    assert head[:8] == b"MKTSYEAR"
    meta_len = struct.unpack_from("<I", head, 16)[0]
    meta = json.loads(head[64 : 64 + meta_len])
    assert meta["key"] == "A/1Min/OHLCV"
    assert meta["year"] == 2024
    assert meta["timeframe_seconds"] == 60
    assert meta["nslots"] == 527_040
    assert [c["name"] for c in meta["columns"]] == [n for n, _ in SCHEMA]
    assert meta["file_size"] == path.stat().st_size
