"""Third-party plugins named in mkts.yml, loaded by a live server from a package that is only on
``PYTHONPATH`` (its own dist-info entry points), fed by the unmodified pymarketstore client; broken,
hung and crashing plugins alongside must not disturb the server or its data."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pymarketstore as pymkts
import pytest
from thirdparty import make_package

from tests.server.live_helpers import start_server

pytestmark = [pytest.mark.server, pytest.mark.timeout(120)]


def test_server_runs_third_party_plugins_and_survives_broken_ones(tmp_path: Path, monkeypatch) -> None:
    site = tmp_path / "site"
    make_package(site)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    rec, runs = tmp_path / "rec.txt", tmp_path / "runs.txt"
    config = {
        "stop_grace_period": 1,
        "triggers": [
            {"module": "recorder.so", "on": "A*/1Min/OHLCV", "config": {"path": str(rec)}},
            {"module": "boom.so", "on": "*/1Min/OHLCV"},
            {"module": "hang.so", "on": "*/*/*", "queue_size": 3},
            {"module": "badfactory.so", "on": "*/*/*"},
            {"module": "notinstalled.so", "on": "*/*/*"},
        ],
        "bgworkers": [
            {"module": "ticker.so", "name": "ticker", "config": {"key": "TICK/1Min/OHLCV", "every": 0.02}},
            {"module": "crasher.so", "name": "crasher", "config": {"path": str(runs)}, "restart_delay": 0.05},
        ],
    }
    server = start_server(tmp_path / "srv", config=config)
    try:
        client = pymkts.Client(server.rpc)
        arr = np.zeros(1, dtype=[("Epoch", "i8"), ("Close", "f8")])
        for m in range(30):
            arr["Epoch"], arr["Close"] = 1_700_000_000 + 60 * m, m
            client.write(arr, "AAA/1Min/OHLCV")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (not rec.exists() or len(rec.read_text().splitlines()) < 32):
            time.sleep(0.05)
        got = rec.read_text().splitlines()
        assert got[0] == "started"
        assert got[2:32] == ["write AAA/1Min/OHLCV 1"] * 30
        assert len(client.query(pymkts.Params("AAA", "1Min", "OHLCV")).first().df()) == 30
        assert len(client.query(pymkts.Params("TICK", "1Min", "OHLCV")).first().df()) > 0  # the bgworker writes
        assert len(runs.read_text().splitlines()) >= 2  # crashed and was restarted
    finally:
        rc = server.stop(signal.SIGTERM, timeout=30)
    out = server.output()
    assert rc in (0, -signal.SIGTERM), out[-3000:]
    assert "boom: a broken trigger" in out
    assert "bad config for this plugin" in out
    assert "no plugin 'notinstalled'" in out
    assert "crasher crashed" in out
    assert "trigger hang: still running" in out
    assert rec.read_text().splitlines()[-1] == "stopped"
