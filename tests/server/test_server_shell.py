"""``connect --url`` against a live server prints exactly what ``connect --dir`` prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.server, pytest.mark.timeout(180)]


def connect(target: list[str], script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mktsframe.cli", "connect", *target], input=script,
                          capture_output=True, text=True, timeout=120, cwd=cwd)  # fmt: skip


def test_same_session_on_a_directory_and_on_a_server(live_server, sym, tmp_path) -> None:
    key = f"{sym}/1Min/OHLCV"
    csv = tmp_path / "bars.csv"
    csv.write_text("Epoch,Open,Volume\n2024-01-02 09:30:00,1.5,100\n2024-01-02 09:31:00,1.625,200\n"
                   "2024-01-02 09:32:00,1.75,300\n")  # fmt: skip
    script = "\n".join([
        f"\\create {key}:Symbol/Timeframe/AttributeGroup Open/float32:Volume/int64 fixed",
        f"\\load {key} {csv}",
        f"\\show {key} 2024-01-02 2024-01-02T09:31",
        f"\\getinfo {key}",
        f"SELECT Open FROM `{key}` WHERE Volume >= 200 LIMIT 1",
        f"\\trim {key} 2024-01-02T09:32",
        f"select candlecandler('5Min', Open, Open, Open, Open, Sum::Volume) from `{key}`",
        f"\\create {sym}/1Min/TICK Bid/float32 variable",
        f"\\destroy {key}",
    ]) + "\n"  # fmt: skip
    local = connect(["--dir", str(tmp_path / "root")], script, tmp_path)
    remote = connect(["--url", f"127.0.0.1:{live_server.port}"], script, tmp_path)
    assert local.returncode == remote.returncode == 0, remote.stderr
    assert remote.stderr == local.stderr == ""
    assert f"Successfully created a new catalog entry: {sym}/1Min/TICK" in remote.stdout
    # Byte for byte the same output, including getinfo, trim and the computed candle.
    assert remote.stdout == local.stdout
    assert "2024-01-02 09:31:00 +0000 UTC  1.625" in remote.stdout
    assert "Removed 1 rows" in remote.stdout
    assert "2024-01-02 09:30:00 +0000 UTC  1.5         1.625       1.5         1.625       300" in remote.stdout
