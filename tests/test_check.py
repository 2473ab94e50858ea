"""``mktsframe check ROOT`` finds each kind of damage with its file and offset, and a server that
starts on a damaged root names the damaged buckets and keeps serving the others."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pymarketstore as pymkts
import pytest

from mktsframe.backend.base import Batch
from mktsframe.cli import main
from mktsframe.engine.engine import Engine

sys.path.insert(0, str(Path(__file__).parent / "server"))
from live_helpers import start_server

NS = 1_000_000_000
T = (1_704_067_200 + np.arange(100, dtype=np.int64) * 60) * NS


def make_root(root: Path) -> None:
    with Engine(root) as e:
        for sym in ("GOOD", "HEAD", "META"):
            e.write(f"{sym}/1Min/OHLCV", Batch(T, {"Close": np.arange(100, dtype="f4")}))
        e.write("TICK/1Sec/TICK", Batch(T, {"Price": np.arange(100, dtype="f8")}), variable_length=True)


def poke(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)


def run_check(root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict]]:
    rc = main(["check", str(root), "--json"])
    return rc, json.loads(capsys.readouterr().out)


def test_check_reports_each_damage_with_file_and_offset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    make_root(root)
    assert run_check(root, capsys) == (0, [])
    poke(root / "HEAD/1Min/OHLCV/2024.bin", 80, b"XX")  # inside the checksummed metadata
    (root / "META/1Min/OHLCV/bucket.json").write_text("{not json")
    tick = next((root / "TICK/1Sec/TICK").glob("*.tick"))
    ns_offset = json.loads(tick.read_bytes()[160:4096].rstrip(b"\0"))["ns_offset"]
    poke(tick, ns_offset + 8 * 50, np.int64(T[0] - 1).tobytes())  # row 50 earlier than row 49: unsorted
    poke(root / "GOOD/1Min/OHLCV/2024.bin", 32, np.array([10, 5], "<i8").tobytes())  # watermarks: a hint
    wal = root / ".mkts" / "wal"
    (wal / "00000000000000000099.wal").write_bytes(b"MKW1" + b"\x07" * 60)  # a torn record
    rc, found = run_check(root, capsys)
    assert rc == 1
    by_file = {(Path(p["path"]).relative_to(root).as_posix(), p["offset"], p["severity"]): p for p in found}
    assert ("HEAD/1Min/OHLCV/2024.bin", 20, "error") in by_file
    assert "checksum" in by_file["HEAD/1Min/OHLCV/2024.bin", 20, "error"]["message"]
    assert by_file["META/1Min/OHLCV/bucket.json", None, "error"]["key"] == "META/1Min/OHLCV"
    assert (tick.relative_to(root).as_posix(), ns_offset + 8 * 50, "error") in by_file
    assert ("GOOD/1Min/OHLCV/2024.bin", 32, "warning") in by_file
    assert (".mkts/wal/00000000000000000099.wal", 0, "error") in by_file
    assert len(found) == 6  # the unsorted tick is also outside its day
    assert main(["check", str(root)]) == 1
    assert "5 error(s), 1 warning(s)" in capsys.readouterr().out


def test_server_names_damaged_buckets_and_serves_the_others(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_root(root)
    poke(root / "HEAD/1Min/OHLCV/2024.bin", 80, b"XX")
    (root / "META/1Min/OHLCV/bucket.json").write_text("{not json")
    server = start_server(tmp_path / "srv", root=root)
    try:
        client = pymkts.Client(server.rpc)
        df = client.query(pymkts.Params("GOOD", "1Min", "OHLCV")).first().df()
        assert len(df) == 100
        assert client.query(pymkts.Params("TICK", "1Sec", "TICK")).first().df().shape[0] == 100
        with pytest.raises(Exception, match=r"2024\.bin"):
            client.query(pymkts.Params("HEAD", "1Min", "OHLCV"))
        row = np.array([(int(T[0] // NS) + 6000 * 60, 1.0)], [("Epoch", "i8"), ("Close", "f4")])
        client.write(row, "GOOD/1Min/OHLCV")  # writes to the others work too
        assert len(client.query(pymkts.Params("GOOD", "1Min", "OHLCV")).first().df()) == 101
        deadline = time.monotonic() + 10
        while "2 damaged bucket" not in server.output() and time.monotonic() < deadline:
            time.sleep(0.1)
        out = server.output()
        assert "damaged bucket HEAD/1Min/OHLCV" in out
        assert "damaged bucket META/1Min/OHLCV" in out
        assert "damaged bucket GOOD" not in out
        assert "2 damaged bucket(s)" in out
    finally:
        server.stop(signal.SIGTERM)
