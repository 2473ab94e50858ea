"""Candle windows: which interval of time each timestamp's candle covers, in UTC.

A window duration is written as MarketStore's candle functions take it — ``<N><unit>`` with units
``Sec``, ``Min``, ``H``, ``D``, ``W`` (week), ``M`` (calendar month), ``Y`` (calendar year) — and
also as the bucket timeframes spell it (``5T``, ``1Hour``, ``1Day``, ``5min``). ``M`` is always a
month, never a minute; a lower-case ``m`` alone is refused as ambiguous.

Alignment, all in UTC (the engine stores UTC; the server's ``timezone`` setting only changes how
results are displayed):

* fixed durations (seconds to days, any whole number of seconds) start at multiples of the
  duration since the Unix epoch, so ``1D`` windows start at 00:00 UTC and ``4H`` at 00/04/08…;
* ``W`` windows start on **Monday 00:00 UTC** (ISO weeks); ``NW`` counts N-week blocks from
  Monday 1970-01-05;
* ``M`` windows start on the **1st of the month, 00:00 UTC**; ``NM`` counts N-month blocks from
  January 1970, so ``3M`` gives calendar quarters and ``6M`` half-years;
* ``Y`` windows start on 1 January 00:00 UTC; ``NY`` counts from 1970.

MarketStore truncated every N-month window to the current month (so ``3M`` was a 1-month
candle labelled as a quarter) and aligned ``D`` to the server's local midnight; both are fixed
here as described.

Timestamps are int64 nanoseconds since the epoch, UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from mktsframe.errors import FunctionError

__all__ = ["Window", "parse_window"]

NS = 1_000_000_000
_MONDAY_1970_NS = 4 * 86_400 * NS  # 1970-01-05, the first Monday after the epoch
_RE = re.compile(r"^\s*(\d{1,9})\s*([A-Za-z]+)\s*$")
_FIXED = {
    "sec": 1, "secs": 1, "s": 1, "second": 1, "seconds": 1,
    "min": 60, "mins": 60, "t": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hour": 3600, "hours": 3600,
    "d": 86_400, "day": 86_400, "days": 86_400,
}  # fmt: skip
_CALENDAR = {"w": "W", "week": "W", "weeks": "W", "mo": "M", "month": "M", "months": "M", "ms": "M",
             "y": "Y", "year": "Y", "years": "Y"}  # fmt: skip


@dataclass(frozen=True)
class Window:
    """A candle duration and its alignment.

    Attributes
    ----------
    count : int
        How many units one window spans.
    unit : {"s", "W", "M", "Y"}
        ``"s"`` for fixed durations (``seconds`` holds the length), else calendar weeks, months
        or years.
    seconds : int
        Length in seconds for fixed durations and weeks; 0 for months and years (they vary).
    """

    count: int
    unit: str
    seconds: int

    @property
    def name(self) -> str:
        """Canonical spelling (``5Min``, ``1H``, ``1D``, ``2W``, ``3M``, ``1Y``)."""
        if self.unit != "s":
            return f"{self.count}{self.unit}"
        s = self.seconds
        for size, suffix in ((86_400, "D"), (3600, "H"), (60, "Min")):
            if s % size == 0:
                return f"{s // size}{suffix}"
        return f"{s}Sec"

    @property
    def fixed_ns(self) -> int | None:
        """Length in nanoseconds when every window has the same length (not months/years)."""
        return self.seconds * NS if self.seconds else None

    def __str__(self) -> str:
        return self.name

    def floor(self, index_ns: np.ndarray) -> np.ndarray:
        """The start (int64 ns UTC) of the window holding each timestamp."""
        idx = np.asarray(index_ns, dtype=np.int64)
        if self.unit == "s":
            d = self.seconds * NS
            return idx - idx % d  # numpy's % has the divisor's sign: floors times before 1970 too
        if self.unit == "W":
            d = self.seconds * NS
            rel = idx - _MONDAY_1970_NS
            return rel - rel % d + _MONDAY_1970_NS
        step = "M" if self.unit == "M" else "Y"
        units = idx.view("M8[ns]").astype(f"M8[{step}]").astype(np.int64)  # numpy floors the conversion
        units -= units % self.count
        return units.astype(f"M8[{step}]").astype("M8[ns]").view(np.int64)

    def edges(self, first_ns: int, last_ns: int) -> np.ndarray:
        """Every window start from the window of ``first_ns`` to the one after ``last_ns`` (int64 ns)."""
        lo = int(self.floor(np.array([first_ns]))[0])
        if self.unit in ("s", "W"):
            d = self.seconds * NS
            return np.arange(lo, int(last_ns) + d + 1, d, dtype=np.int64)[: (int(last_ns) - lo) // d + 2]
        step = "M" if self.unit == "M" else "Y"
        u0 = np.datetime64(lo, "ns").astype(f"M8[{step}]").astype(np.int64)
        u1 = np.datetime64(int(last_ns), "ns").astype(f"M8[{step}]").astype(np.int64)
        units = np.arange(u0, u1 + self.count + 1, self.count, dtype=np.int64)
        return units.astype(f"M8[{step}]").astype("M8[ns]").view(np.int64)

    def count_between(self, first_ns: int, last_ns: int) -> int:
        """How many windows ``[first_ns, last_ns]`` touches (cheap; no arrays)."""
        if self.unit in ("s", "W"):
            return (int(last_ns) - int(first_ns)) // (self.seconds * NS) + 2
        per_year = 12 if self.unit == "M" else 1
        return (int(last_ns) - int(first_ns)) // (365 * 86_400 * NS) * per_year // self.count + 3


@lru_cache(maxsize=512)
def parse_window(text: str) -> Window:
    """Parse a candle duration such as ``'5Min'``, ``'1H'``, ``'1D'``, ``'1W'``, ``'1M'`` or ``'1Y'``.

    Raises
    ------
    FunctionError
        For anything else, naming the accepted forms.
    """
    if not isinstance(text, str):
        raise FunctionError(f"candle duration must be a string like '5Min', got {text!r}")
    m = _RE.match(text)
    if m is None:
        raise FunctionError(f"invalid candle duration {text!r}: expected <N><unit> such as 5Min, 1H, 1D, 1W, 1M, 1Y")
    count, unit = int(m.group(1)), m.group(2)
    if count <= 0:
        raise FunctionError(f"invalid candle duration {text!r}: the count must be positive")
    if unit == "M":
        return Window(count, "M", 0)
    if unit == "m":
        raise FunctionError(f"candle duration {text!r} is ambiguous: write Min for minutes or M for months")
    low = unit.lower()
    if low in _FIXED:
        return Window(count, "s", count * _FIXED[low])
    cal = _CALENDAR.get(low)
    if cal == "W":
        return Window(count, "W", count * 7 * 86_400)
    if cal is not None:
        return Window(count, cal, 0)
    raise FunctionError(f"invalid candle duration {text!r}: unknown unit {unit!r} (use Sec, Min, H, D, W, M or Y)")
