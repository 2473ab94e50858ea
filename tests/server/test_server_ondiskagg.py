"""ondiskagg end to end: configured in mkts.yml, run by the plugin framework inside a live server,
fed by the unmodified pymarketstore client — and repaired after the server is SIGKILLed.

Runs once the plugin framework (``mktsframe/plugins/__init__.py``, built separately) is present.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pymarketstore as pymkts
import pytest

import mktsframe

pytestmark = [
    pytest.mark.server,
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        not (Path(mktsframe.__file__).parent / "plugins" / "__init__.py").exists(),
        reason="the plugin framework (mktsframe/plugins/__init__.py) has not landed yet",
    ),
]

DESTS = ["5Min", "1H"]
CONFIG = {"triggers": [{"module": "ondiskagg.so", "on": "*/1Min/OHLCV",
                        "config": {"destinations": DESTS, "on": "*/1Min/OHLCV"}}]}  # fmt: skip
DT = [("Epoch", "i8"), ("Open", "f4"), ("High", "f4"), ("Low", "f4"), ("Close", "f4"), ("Volume", "f8")]


def bars(first_minute: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    arr = np.zeros(n, dtype=DT)
    arr["Epoch"] = pd.Timestamp("2024-01-01", tz="UTC").value // 10**9 + 60 * (first_minute + np.arange(n))
    c = 100 + rng.standard_normal(n).cumsum()
    arr["Open"], arr["High"], arr["Low"], arr["Close"] = c, c + 1, c - 1, c + 0.5
    arr["Volume"] = rng.integers(1, 100, n)
    return arr


def consistent(client: pymkts.Client, sym: str) -> bool:
    src = client.query(pymkts.Params(sym, "1Min", "OHLCV")).first().df()
    for tf, freq in (("5Min", "5min"), ("1H", "1h")):
        r = src.resample(freq, closed="left", label="left")
        want = r.agg({"Open": "first", "High": "max", "Low": "min", "Close": "last", "Volume": "sum"})[r.size() > 0]
        try:
            got = client.query(pymkts.Params(sym, tf, "OHLCV")).first().df()
        except Exception:
            return False
        if len(got) != len(want) or not np.allclose(got.to_numpy(np.float64), want.to_numpy(np.float64)):
            return False
    return True


def wait_consistent(client: pymkts.Client, sym: str, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if consistent(client, sym):
            return True
        time.sleep(0.2)
    return False


def test_ondiskagg_in_a_live_server_and_after_sigkill(server_factory, tmp_path: Path) -> None:
    root = tmp_path / "data"
    server = server_factory(config=CONFIG, root=root)
    client = pymkts.Client(server.rpc)
    for i in range(10):
        client.write(bars(i * 47, 47, seed=i), "AAA/1Min/OHLCV")
    assert wait_consistent(client, "AAA"), server.output()[-3000:]
    late = bars(100, 1, seed=99)
    late["High"] = 1e6
    client.write(late, "AAA/1Min/OHLCV")  # an overwritten bar in the middle
    assert wait_consistent(client, "AAA"), server.output()[-3000:]
    assert client.query(pymkts.Params("AAA", "1H", "OHLCV")).first().df()["High"].iloc[1] == 1e6
    # SIGKILL right after more acknowledged writes, then restart on the same root: start() repairs
    client.write(bars(2000, 500, seed=7), "AAA/1Min/OHLCV")
    late["High"] = 2e6
    client.write(late, "AAA/1Min/OHLCV")
    client.write(bars(0, 30, seed=8), "BBB/1Min/OHLCV")
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    again = server_factory(config=CONFIG, root=root)
    client = pymkts.Client(again.rpc)
    assert wait_consistent(client, "AAA", timeout=20), again.output()[-3000:]
    assert wait_consistent(client, "BBB", timeout=20), again.output()[-3000:]
