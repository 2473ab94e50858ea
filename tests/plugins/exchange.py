"""A small exchange-like HTTP server of the Coinbase candles form, for the feeder tests.

Serves ``GET /products`` and ``GET /products/{id}/candles?start&end&granularity`` with
deterministic candles (newest first, at most 300, none after ``horizon``, none in a few
deterministic no-trade bars; the bar at ``horizon`` is still forming: half its volume). Scripted
faults (``faults``: ``500``, ``("429", retry_after)``, ``("sleep", seconds)``, ``"garbage"``) are
served to the next candle requests. Every request is logged with its monotonic arrival time.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

__all__ = ["Exchange", "candle"]


def candle(t: int, g: int, forming: bool = False) -> list[float]:
    """``[time, low, high, open, close, volume]`` of the bar starting at ``t`` seconds."""
    m = t // g
    o = 100.0 + m % 50
    vol = float(m % 7 + 1)
    return [t, o - 1, o + 2, o, o + 1, vol / 2 if forming else vol]


@dataclass
class Exchange:
    horizon: int
    """Newest bar start served, seconds UTC (the exchange's "now")."""
    products: tuple[str, ...] = ("BTC-USD", "ETH-USD")
    faults: collections.deque[Any] = field(default_factory=collections.deque)
    requests: list[dict[str, Any]] = field(default_factory=list)
    garbage_for: set[str] = field(default_factory=set)
    outage: tuple[int, int] = (0, 0)
    """``[from, to)`` seconds without any bar (longer than one request: an empty window)."""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        exchange = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                exchange._serve(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def gap(self, t: int, g: int) -> bool:
        """A bar with no trades (the exchange omits it)."""
        return (t // g) % 37 == 5 or self.outage[0] <= t < self.outage[1]

    def expected(self, first: int, g: int) -> list[list[float]]:
        """Every bar from ``first`` to ``horizon`` as the exchange serves it now, oldest first."""
        return [candle(t, g, t == self.horizon) for t in range(first, self.horizon + 1, g) if not self.gap(t, g)]

    def candle_requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if r["path"].endswith("/candles")]

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        url = urlparse(h.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        rec = {"at": time.monotonic(), "path": url.path, "query": q, "status": 200}
        with self._lock:
            self.requests.append(rec)
            fault = self.faults.popleft() if self.faults and url.path.endswith("/candles") else None
        status, body, headers = self._answer(url.path, q, fault)
        rec["status"] = status
        data = json.dumps(body).encode()
        try:
            h.send_response(status)
            for k, v in headers.items():
                h.send_header(k, v)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            rec["sent"] = time.monotonic()  # before the body: the client cannot have the answer sooner
            h.wfile.write(data)
        except OSError:
            pass  # the client gave up (a timeout fault)

    def _answer(self, path: str, q: dict[str, str], fault: Any) -> tuple[int, Any, dict[str, str]]:
        if fault == 500:
            return 500, {"message": "internal error"}, {}
        if isinstance(fault, tuple) and fault[0] == "429":
            return 429, {"message": "slow down"}, {"Retry-After": str(fault[1])}
        if isinstance(fault, tuple) and fault[0] == "sleep":
            time.sleep(fault[1])
        if path == "/products":
            return 200, [{"id": p, "status": "online"} for p in self.products], {}
        parts = path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "products" or parts[2] != "candles":
            return 404, {"message": "NotFound"}, {}
        if parts[1] not in self.products:
            return 404, {"message": "NotFound"}, {}
        if parts[1] in self.garbage_for:
            return 200, {"message": "not candles"}, {}
        g = int(q["granularity"])
        start = int(dt.datetime.fromisoformat(q["start"]).timestamp())
        end = int(dt.datetime.fromisoformat(q["end"]).timestamp())
        if (end - start) // g + 1 > 300:
            return 400, {"message": "granularity too small for the requested time range"}, {}
        first = -(-start // g) * g
        rows = [candle(t, g, t == self.horizon) for t in range(first, min(end, self.horizon) + 1, g)
                if not self.gap(t, g)]  # fmt: skip
        return 200, rows[::-1], {}
