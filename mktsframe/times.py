"""Turning what users type for ``start``/``end`` into int64 nanoseconds since the epoch, UTC.

Accepted: ``None`` (unbounded), strings pandas can parse, ``datetime``/``date``,
``pandas.Timestamp``, ``numpy.datetime64``, and numbers. Zone-less values are read in ``tz``
(UTC unless configured). An integer is taken as epoch **seconds** when its magnitude is below
1e11 and as epoch **nanoseconds** when it is at least 1e17; anything in between (milliseconds,
microseconds) is ambiguous and refused. A float is epoch seconds.
"""

from __future__ import annotations

import datetime as dt
import numbers
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["TimeLike", "to_ns"]

TimeLike = str | dt.datetime | dt.date | pd.Timestamp | np.datetime64 | int | float | None

_SECONDS_MAX = 10**11
_NANOS_MIN = 10**17


def to_ns(value: Any, *, tz: str = "UTC", name: str = "time") -> int | None:
    """Convert one ``start``/``end`` value; ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a time, got a boolean")
    if isinstance(value, numbers.Integral):
        v = int(value)
        if abs(v) < _SECONDS_MAX:
            return v * 1_000_000_000
        if abs(v) >= _NANOS_MIN:
            return v
        raise ValueError(
            f"{name}={v} is ambiguous: pass epoch seconds (< 1e11), epoch nanoseconds (>= 1e17) or a Timestamp"
        )
    if isinstance(value, numbers.Real):
        f = float(value)
        if not np.isfinite(f):
            raise ValueError(f"{name}: {value!r} is not a finite time")
        return round(f * 1_000_000_000)
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}: cannot parse {value!r} as a time ({exc})") from None
    if ts is pd.NaT:
        raise ValueError(f"{name}: NaT is not a time")
    if ts.tzinfo is None:
        ts = ts.tz_localize(tz)
    return int(ts.as_unit("ns").value)
