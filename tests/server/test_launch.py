"""``mktsframe.server.launch.ServerProcess``: the notebooks' server, and why it did not start."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from mktsframe.server.launch import ServerProcess, ServerStartError

pytestmark = pytest.mark.server


def test_starts_serves_and_stops(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data") as server:
        assert httpx.get(f"{server.url}/heartbeat", timeout=5).status_code == 200
        proc = server.proc
    assert proc.poll() is not None
    assert server.output() == ""  # closed with the process


def test_a_server_that_cannot_start_says_why_at_once(tmp_path: Path) -> None:
    """The README's old install line lacked uvicorn: the notebook waited ~50 s and said only
    "the server did not start". Here uvicorn is shadowed by a package that fails to import."""
    shadow = tmp_path / "shadow" / "uvicorn"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'uvicorn'\", name='uvicorn')\n")
    env = {**os.environ, "PYTHONPATH": str(shadow.parent)}
    t0 = time.monotonic()
    with pytest.raises(ServerStartError, match="exited with code 1") as info:
        ServerProcess(tmp_path / "data", env=env, timeout=60)
    assert time.monotonic() - t0 < 20  # the exit is noticed, not the 60 s timeout
    assert "No module named 'uvicorn'" in str(info.value)  # the server's own traceback
    assert "missing 'uvicorn': pip install 'mktsframe[server]'" in str(info.value)


def test_a_bad_flag_is_quoted(tmp_path: Path) -> None:
    with pytest.raises(ServerStartError, match="--no-such-flag"):
        ServerProcess(tmp_path / "data", args=["--no-such-flag"])
