"""``gdaxfeeder``: a bgworker polling an exchange's REST candles (the Coinbase/GDAX form) into buckets.

Configured as MarketStore's ``gdaxfeeder.so``::

    bgworkers:
      - module: gdaxfeeder.so
        name: GdaxFetcher
        config:
          symbols: [BTC-USD, ETH-USD]     # default: every product GET /products lists
          base_timeframe: 1Min            # 1Min, 5Min, 15Min, 1H, 6H or 1D
          query_start: "2024-01-01 00:00" # first bar to backfill (UTC); default: one request back

Each symbol ``S`` is written to ``gdax_S/<base_timeframe>/OHLCV`` (float64 Open, High, Low,
Close, Volume) from ``GET {base_url}/products/S/candles?start=&end=&granularity=``, whose answer is
``[[time, low, high, open, close, volume], ...]`` newest first, at most ``max_candles`` (300) rows.

**Backfill then follow.** A cursor per symbol starts at the last stored bar (so a restart resumes
where the data ends, with no gap; that bar is fetched again because it may have been stored while
still forming) or at ``query_start``. Windows of ``max_candles`` bars are fetched in turn for every
symbol; once a window reaches the present the feeder waits ``poll_interval`` seconds and asks again
from the newest bar. An empty window older than ``settle`` seconds is a real gap (no trades) and is
skipped; a recent one is asked again later. Bars are keyed by their start time, so fetching a bar
twice overwrites it: no duplicates.

**Being polite.** Requests are spaced ``1 / requests_per_second`` apart. A 429 waits
``Retry-After`` seconds (or the backoff), a 5xx, timeout or connection error waits ``retry_delay``
seconds doubling up to ``max_retry_delay``, and the request is retried, indefinitely, until the
server stops. Another 4xx (e.g. an unknown product) is logged and that symbol is retried after
``poll_interval``. A malformed answer raises: the worker framework logs it and restarts the
feeder with backoff.

Units: config times are seconds; stored times are int64 nanoseconds UTC.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pandas as pd

from mktsframe.backend.base import Backend, Batch
from mktsframe.errors import BucketNotFoundError, MktsError
from mktsframe.keys import parse_timeframe

__all__ = ["DEFAULT_BASE_URL", "FeederConfig", "GdaxFeeder", "new_bgworker"]

log = logging.getLogger("mktsframe.plugins.gdaxfeeder")

NS = 1_000_000_000
DEFAULT_BASE_URL = "https://api.exchange.coinbase.com"
#: Stored columns and their position in an answer row ``[time, low, high, open, close, volume]``.
COLUMNS = (("Open", 3), ("High", 2), ("Low", 1), ("Close", 4), ("Volume", 5))
#: Candle sizes the Coinbase API serves, seconds.
GRANULARITIES = (60, 300, 900, 3600, 21600, 86400)


class FeedError(MktsError, RuntimeError):
    """The exchange refused a request (a 4xx other than 429)."""


class _Stopped(Exception):
    """The server is shutting down; unwinds the feeder from wherever it waits."""


@dataclass(frozen=True)
class FeederConfig:
    """The ``config:`` map of a ``gdaxfeeder`` entry, checked (times in seconds)."""

    base_url: str = DEFAULT_BASE_URL
    symbols: tuple[str, ...] = ()
    base_timeframe: str = "1Min"
    granularity: int = 60
    query_start: int | None = None
    """First bar to fetch, ns UTC; ``None`` = ``max_candles`` bars before now."""
    requests_per_second: float = 3.0
    poll_interval: float = 30.0
    settle: float = 600.0
    timeout: float = 10.0
    retry_delay: float = 1.0
    max_retry_delay: float = 60.0
    max_candles: int = 300
    key_prefix: str = "gdax_"

    @classmethod
    def parse(cls, config: Mapping[str, Any]) -> FeederConfig:
        tf = parse_timeframe(str(config.get("base_timeframe") or "1Min"))
        if tf.seconds not in GRANULARITIES:
            raise ValueError(f"gdaxfeeder: base_timeframe {tf.name} is not one of 1Min, 5Min, 15Min, 1H, 6H, 1D")
        symbols = config.get("symbols") or ()
        if isinstance(symbols, str):
            symbols = [s.strip() for s in symbols.split(",") if s.strip()]
        start = config.get("query_start")
        return cls(
            base_url=str(config.get("base_url") or DEFAULT_BASE_URL).rstrip("/"),
            symbols=tuple(str(s) for s in symbols),
            base_timeframe=tf.name,
            granularity=tf.seconds,
            query_start=None if start in (None, "") else _parse_time(start),
            requests_per_second=_positive(config, "requests_per_second", 3.0),
            poll_interval=_positive(config, "poll_interval", min(float(tf.seconds), 30.0)),
            settle=_positive(config, "settle", 10.0 * tf.seconds),
            timeout=_positive(config, "timeout", 10.0),
            retry_delay=_positive(config, "retry_delay", 1.0),
            max_retry_delay=_positive(config, "max_retry_delay", 60.0),
            max_candles=int(_positive(config, "max_candles", 300)),
            key_prefix=str(config.get("key_prefix", "gdax_")),
        )

    def key(self, symbol: str) -> str:
        return f"{self.key_prefix}{symbol}/{self.base_timeframe}/OHLCV"


def new_bgworker(config: Mapping[str, Any] | None) -> GdaxFeeder:
    """Entry point ``mktsframe.bgworkers: gdaxfeeder`` (MarketStore's ``NewBgWorker``)."""
    return GdaxFeeder(dict(config or {}))


class GdaxFeeder:
    """The bgworker; see the module docstring."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = FeederConfig.parse(config)

    def __repr__(self) -> str:
        c = self.config
        return f"<GdaxFeeder {c.base_url} {list(c.symbols) or 'all products'} {c.base_timeframe}>"

    def run(self, backend: Backend, stop: threading.Event) -> None:
        c = self.config
        with httpx.Client(base_url=c.base_url, timeout=c.timeout, headers={"User-Agent": "mktsframe-feeder"}) as http:
            session = _Session(http, c, stop)
            try:
                symbols = list(c.symbols) or self._products(session)
                cursors = {s: self._resume(backend, s) for s in symbols}
                log.info("gdaxfeeder: %d symbol(s) from %s", len(symbols), c.base_url)
                while not stop.is_set():
                    recent = [self._step(backend, session, s, cursors) for s in symbols]
                    if all(recent):
                        stop.wait(c.poll_interval)
            except _Stopped:
                return

    def _products(self, session: _Session) -> list[str]:
        products = session.get("/products", {})
        if not isinstance(products, list):
            raise ValueError(f"gdaxfeeder: /products answered {str(products)[:200]!r}, not a list")
        return sorted(str(p["id"]) for p in products)

    def _resume(self, backend: Backend, symbol: str) -> int:
        """Where to start: the last stored bar (fetched again), else ``query_start``; ns UTC."""
        c = self.config
        try:
            last = backend.info(c.key(symbol)).last
        except BucketNotFoundError:
            last = None
        if last is not None:
            return int(last)
        if c.query_start is not None:
            return c.query_start // (c.granularity * NS) * c.granularity * NS
        return (time.time_ns() // (c.granularity * NS) - c.max_candles) * c.granularity * NS

    def _step(self, backend: Backend, session: _Session, symbol: str, cursors: dict[str, int]) -> bool:
        """Fetch one window of ``symbol``; ``True`` if it reached the recent past (nothing to hurry)."""
        c = self.config
        g = c.granularity * NS
        now = time.time_ns() // g * g
        start = cursors[symbol]
        if start > now:
            return True
        end = min(start + (c.max_candles - 1) * g, now)
        try:
            rows = session.candles(symbol, start, end)
        except FeedError as exc:
            log.error("gdaxfeeder: %s: %s; retrying after poll_interval", symbol, exc)
            return True
        rows = rows[(rows[:, 0] >= start) & (rows[:, 0] <= end)]
        if len(rows):
            order = np.argsort(rows[:, 0], kind="stable")
            rows = rows[order]
            idx = rows[:, 0].astype(np.int64)
            keep = np.r_[idx[1:] != idx[:-1], True]  # one bar per time (the last answer)
            rows, idx = rows[keep], idx[keep]
            cols = {name: np.ascontiguousarray(rows[:, i]) for name, i in COLUMNS}
            backend.write(c.key(symbol), Batch(idx, cols))
        settled = end <= now - int(c.settle * NS)
        if settled:
            cursors[symbol] = end + g
            return False
        if len(rows):
            cursors[symbol] = int(idx[-1])
            if idx[-1] == end and end < now:
                return False  # more bars may follow the window: go on at once
        return True


class _Session:
    """HTTP with request pacing, ``Retry-After`` and exponential backoff (see the module docstring)."""

    def __init__(self, http: httpx.Client, config: FeederConfig, stop: threading.Event) -> None:
        self.http = http
        self.config = config
        self.stop = stop
        self._next = 0.0  # monotonic time of the next allowed request

    def _wait(self, seconds: float) -> None:
        if seconds > 0 and self.stop.wait(seconds):
            raise _Stopped
        if self.stop.is_set():
            raise _Stopped

    def get(self, path: str, params: Mapping[str, Any]) -> Any:
        c = self.config
        delay = c.retry_delay
        while True:
            self._wait(self._next - time.monotonic())
            self._next = time.monotonic() + 1.0 / c.requests_per_second
            try:
                r = self.http.get(path, params=dict(params))
            except httpx.TransportError as exc:  # timeouts, refused or reset connections
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if r.status_code == 429:
                    wait = _retry_after(r.headers.get("Retry-After"))
                    wait = delay if wait is None else wait
                    log.warning("gdaxfeeder: rate limited (429) on %s; waiting %.1f s", path, wait)
                    self._wait(wait)
                    delay = min(delay * 2, c.max_retry_delay)
                    continue
                if r.status_code < 400:
                    return r.json()
                if r.status_code < 500:
                    raise FeedError(f"HTTP {r.status_code} on {path}: {r.text[:200]}")
                problem = f"HTTP {r.status_code}"
            log.warning("gdaxfeeder: %s on %s; retrying in %.1f s", problem, path, delay)
            self._wait(delay)
            delay = min(delay * 2, c.max_retry_delay)

    def candles(self, symbol: str, start: int, end: int) -> np.ndarray:
        """Rows ``[time ns, low, high, open, close, volume]`` of ``[start, end]`` (ns, inclusive)."""
        params = {"start": _iso(start), "end": _iso(end), "granularity": self.config.granularity}
        data = self.get(f"/products/{symbol}/candles", params)
        if not isinstance(data, list) or not all(isinstance(r, list) and len(r) >= 6 for r in data):
            raise ValueError(f"gdaxfeeder: {symbol} candles answered {str(data)[:200]!r}, not [[time, low, ...]]")
        out = np.array([r[:6] for r in data], dtype=np.float64).reshape(-1, 6)
        out[:, 0] *= NS
        return out


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns // NS, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _parse_time(value: Any) -> int:
    """``2006-01-02[ 15:04[:05]]`` (MarketStore's forms) or any ISO time; zone-less = UTC; → ns."""
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise ValueError(f"gdaxfeeder: query_start {value!r} is not a time like 2024-01-02 15:04") from None
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value)


def _positive(config: Mapping[str, Any], key: str, default: float) -> float:
    value = config.get(key)
    if value is None:
        return default
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = -1.0
    if out <= 0:
        raise ValueError(f"gdaxfeeder: {key} must be a positive number, got {value!r}")
    return out

