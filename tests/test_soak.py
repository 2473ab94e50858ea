"""The 60-second soak (``bench/soak.py``; ``make soak`` runs it for 10 minutes): writers, readers and
reconnecting ``/ws`` subscribers against the real server, killed with SIGKILL twice. Every
acknowledged bar must survive; descriptors, RSS and p99 latency must stay flat."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import soak

pytestmark = [pytest.mark.timeout(300)]


def test_soak_60_seconds_with_two_kills(tmp_path: Path) -> None:
    res = soak.run(60.0, 22.0, workdir=tmp_path)
    print(json.dumps(res, indent=1))
    assert res["kills"] == 2
    assert res["acknowledged_bars"] > 5_000
    failed = {k: ok for k, ok in res["checks"].items() if not ok}
    assert not failed, json.dumps(res, indent=1)
