"""The gdaxfeeder bgworker against a local exchange-like HTTP server (tests/plugins/exchange.py):
backfill, follow, rate limits and retries, restart without gaps or duplicates, crash isolation."""

from __future__ import annotations

import itertools
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pymarketstore as pymkts
import pytest
from exchange import Exchange

from mktsframe.plugins import start_plugins
from mktsframe.plugins.candle_feeder import FeederConfig
from tests.server.live_helpers import start_server

pytestmark = pytest.mark.timeout(120)
G = 60
KEY = "gdax_BTC-USD/1Min/OHLCV"


@pytest.fixture
def exchange():
    ex = Exchange(horizon=time.time_ns() // 10**9 // G * G - 1800)  # the exchange's data ends 30 min ago
    while ex.gap(ex.horizon, G):  # at a traded bar (one minute in 37 has no trades: a test then saw none forming)
        ex.horizon -= G
    yield ex
    ex.close()


def feeder_entry(ex: Exchange, first: int, **extra) -> dict:
    config = {"base_url": ex.url, "symbols": ["BTC-USD"], "base_timeframe": "1Min",
              "query_start": pd.Timestamp(first, unit="s").strftime("%Y-%m-%d %H:%M"),
              "poll_interval": 0.1, "requests_per_second": 50, "settle": 7200, "retry_delay": 0.1} | extra  # fmt: skip
    return {"bgworkers": [{"module": "gdaxfeeder.so", "name": "GdaxFetcher", "config": config}]}


def stored(db) -> np.ndarray:
    try:
        df = pd.read_mkts(KEY, backend=db)
    except Exception:
        return np.zeros((0, 6))
    t = df.index.as_unit("ns").asi8 // 10**9
    return np.column_stack([t, df["Low"], df["High"], df["Open"], df["Close"], df["Volume"]])


def wait_equal(db, ex: Exchange, first: int, timeout: float = 30.0) -> np.ndarray:
    want = np.array(ex.expected(first, G))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = stored(db)
        if got.shape == want.shape and np.array_equal(got, want):
            return got
        time.sleep(0.05)
    got = stored(db)
    raise AssertionError(f"stored {got.shape} != exchange {want.shape}; last stored {got[-1:]}, want {want[-1:]}")


def test_backfill_is_complete_then_follow_picks_up_new_and_finished_candles(db, exchange) -> None:
    first = exchange.horizon - 1199 * G  # 1,200 bars: four requests of at most 300
    exchange.outage = (first + 350 * G, first + 750 * G)  # no trades for 400 bars: one window is empty
    with start_plugins(db, feeder_entry(exchange, first)) as plugins:
        wait_equal(db, exchange, first)
        assert stored(db)[-1, 5] == candle_volume(exchange.horizon) / 2  # the forming bar, as served
        exchange.horizon += 25 * G  # time passes on the exchange (still before our clock)
        wait_equal(db, exchange, first)  # new bars, and the formerly forming one now complete
        assert plugins.workers["GdaxFetcher"].crashes == 0
    reqs = exchange.candle_requests()
    assert all(r["status"] == 200 for r in reqs)  # never more than 300 candles asked for
    assert 1225 - 400 - 40 < len(stored(db)) < 1225 - 400  # the exchange's gaps (outage, no-trade bars) stay gaps
    info = db.info(KEY)
    assert [c for c, _ in info.columns] == ["Open", "High", "Low", "Close", "Volume"]


def candle_volume(t: int) -> float:
    return float((t // G) % 7 + 1)


def test_rate_limit_429_and_5xx_backoff_and_timeouts(db, exchange) -> None:
    first = exchange.horizon - 899 * G  # three windows
    exchange.faults.extend([500, 500, 500, ("429", 1), ("sleep", 1.0), "ok"])
    entry = feeder_entry(exchange, first, requests_per_second=10, timeout=0.4, retry_delay=0.1, max_retry_delay=5)
    with start_plugins(db, entry):
        wait_equal(db, exchange, first)
    reqs = exchange.candle_requests()
    assert [r["status"] for r in reqs[:4]] == [500, 500, 500, 429]
    # Waits are measured from when the exchange began sending an answer to when the next request
    # arrived: the client cannot start waiting sooner, so scheduling jitter only adds to them.
    waited = np.array([b["at"] - a["sent"] for a, b in itertools.pairwise(reqs[:5])])
    np.testing.assert_array_less([0.099, 0.199, 0.399], waited[:3])  # exponential backoff after each 5xx
    assert waited[3] >= 0.999  # Retry-After: 1 honoured
    # The 1 s answer times out (0.4 s), then the backoff, doubled by now to 1.6 s, applies.
    assert reqs[5]["at"] - reqs[4]["at"] >= 0.4 + 1.6 - 0.05
    at = np.array([r["at"] for r in reqs])
    assert np.diff(at).min() >= 0.05  # requests_per_second = 10, less arrival jitter
    assert (at[-1] - at[0]) / (len(at) - 1) >= 0.095
    assert len(reqs) >= 8


def test_restart_resumes_from_the_last_stored_bar_without_gaps_or_duplicates(db, exchange) -> None:
    exchange.horizon -= 800 * G  # room for 700 more bars before our clock
    first = exchange.horizon - 599 * G
    with start_plugins(db, feeder_entry(exchange, first)):
        wait_equal(db, exchange, first)
    last = int(stored(db)[-1, 0])
    assert last == exchange.expected(first, G)[-1][0]  # the newest traded bar (the horizon's may have no trades)
    exchange.horizon += 700 * G  # the feeder was down while 700 bars were traded
    seen = len(exchange.candle_requests())
    with start_plugins(db, feeder_entry(exchange, first)):
        got = wait_equal(db, exchange, first)
    resumed = exchange.candle_requests()[seen]["query"]["start"]
    assert pd.Timestamp(resumed).value // 10**9 == last  # from the last stored bar, not query_start
    assert len(np.unique(got[:, 0])) == len(got)
    assert np.all(np.diff(got[:, 0]) > 0)


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="base_timeframe"):
        FeederConfig.parse({"base_timeframe": "2Min"})
    with pytest.raises(ValueError, match="query_start"):
        FeederConfig.parse({"query_start": "yesterday-ish"})
    with pytest.raises(ValueError, match="requests_per_second"):
        FeederConfig.parse({"requests_per_second": 0})
    c = FeederConfig.parse({"query_start": "2024-01-02 15:04", "symbols": "BTC-USD, ETH-USD"})
    assert c.query_start == pd.Timestamp("2024-01-02 15:04", tz="UTC").value
    assert c.symbols == ("BTC-USD", "ETH-USD")
    assert c.key("BTC-USD") == KEY


@pytest.mark.server
def test_feeder_in_a_live_server_all_products_and_a_crash_isolated(tmp_path: Path, exchange) -> None:
    first = exchange.horizon - 299 * G
    exchange.garbage_for.add("ETH-USD")  # a malformed answer: the feeder crashes, is restarted
    entry = feeder_entry(exchange, first)
    del entry["bgworkers"][0]["config"]["symbols"]  # every product the exchange lists
    entry["bgworkers"][0]["restart_delay"] = 0.2
    server = start_server(tmp_path / "srv", config=entry | {"stop_grace_period": 2})
    try:
        client = pymkts.Client(server.rpc)
        deadline = time.monotonic() + 30
        want = np.array(exchange.expected(first, G))
        n = 0
        while time.monotonic() < deadline and n < len(want):
            try:
                n = len(client.query(pymkts.Params("gdax_BTC-USD", "1Min", "OHLCV")).first().df())
            except Exception:
                n = 0
            time.sleep(0.1)
        df = client.query(pymkts.Params("gdax_BTC-USD", "1Min", "OHLCV")).first().df()
        assert np.array_equal(df[["Low", "High", "Open", "Close", "Volume"]].to_numpy(), want[:, 1:])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and server.output().count("bgworker GdaxFetcher crashed") < 2:
            time.sleep(0.1)
        arr = np.array([(1_700_000_000, 1.0)], dtype=[("Epoch", "i8"), ("Close", "f8")])
        client.write(arr, "OTHER/1Min/OHLCV")  # the server still serves writes and reads
        assert len(client.query(pymkts.Params("OTHER", "1Min", "OHLCV")).first().df()) == 1
    finally:
        rc = server.stop(signal.SIGTERM, timeout=30)
    out = server.output()
    assert rc in (0, -signal.SIGTERM), out[-3000:]
    assert out.count("bgworker GdaxFetcher crashed") >= 2, out[-3000:]
    assert "ETH-USD candles answered" in out
