"""Bucket keys (``SYMBOL/TIMEFRAME/ATTRGROUP``) and timeframes.

A key names a directory under the data root, so every part is validated here, once, before it
reaches the filesystem: a key can never address a file outside the root (MarketStore used key
parts verbatim as directory names).

Timeframes are canonicalised by duration (``1T`` and ``60Sec`` → ``1Min``, ``1Hour`` and
``60Min`` → ``1H``, ``1Day`` and ``24H`` → ``1D``), so one duration always maps to one bucket;
MarketStore kept the original spelling, which made ``1Hour`` data unreachable by query.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from mktsframe.errors import InvalidKeyError

__all__ = [
    "KeyPattern",
    "TimeBucketKey",
    "Timeframe",
    "join_keys",
    "parse_key",
    "parse_key_pattern",
    "parse_timeframe",
]

#: Longest accepted key part, in UTF-8 bytes (file systems allow 255 per path component).
MAX_PART_BYTES = 128
#: Longest query key: a comma list naming a universe (10,000 symbols of ~6 characters fit).
MAX_KEY_CHARS = 1 << 17
#: Query keys up to this long are parsed once and cached (longer ones, comma lists of many symbols, each time).
_CACHED_KEY_CHARS = 4 * MAX_PART_BYTES
#: The category suffix MarketStore clients append (``AAPL/1Min/OHLCV:Symbol/Timeframe/AttributeGroup``).
CATEGORY = "Symbol/Timeframe/AttributeGroup"
SECONDS_PER_DAY = 86_400

_TF_RE = re.compile(r"^(\d{1,9})([A-Za-z]+)$")
_UNIT_SECONDS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "t": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hour": 3600, "hours": 3600,
    "d": SECONDS_PER_DAY, "day": SECONDS_PER_DAY, "days": SECONDS_PER_DAY,
}  # fmt: skip
_CALENDAR_UNITS = {"w", "week", "weeks", "m", "mo", "month", "months", "y", "year", "years"}
_FORBIDDEN_CHARS = set('/\\\x00,*:?[]"<>|')


@dataclass(frozen=True, slots=True)
class Timeframe:
    """A bar duration that divides one day exactly (1 second to 1 day).

    Attributes
    ----------
    seconds : int
        Duration in seconds.
    """

    seconds: int

    @property
    def name(self) -> str:
        """Canonical spelling: the largest of ``D``/``H``/``Min``/``Sec`` that divides the duration."""
        s = self.seconds
        if s % SECONDS_PER_DAY == 0:
            return f"{s // SECONDS_PER_DAY}D"
        if s % 3600 == 0:
            return f"{s // 3600}H"
        if s % 60 == 0:
            return f"{s // 60}Min"
        return f"{s}Sec"

    @property
    def nanoseconds(self) -> int:
        return self.seconds * 1_000_000_000

    def __str__(self) -> str:
        return self.name


@lru_cache(maxsize=4096)
def parse_timeframe(text: str) -> Timeframe:
    """Parse ``1Min``, ``5T``, ``1Hour``, ``1D``… into a :class:`Timeframe`.

    Units are case-insensitive (``5min`` as pandas writes it is accepted). Weekly, monthly and
    yearly durations do not divide a day and cannot be stored; they are rejected with a reason.
    """
    if not isinstance(text, str):
        raise InvalidKeyError(f"timeframe must be a string like '1Min', got {text!r}")
    m = _TF_RE.match(text.strip())
    if m is None:
        raise InvalidKeyError(f"invalid timeframe {text!r}: expected <N><unit> such as 1Sec, 1Min, 5Min, 1H, 1D")
    count, unit = int(m.group(1)), m.group(2).lower()
    if unit in _CALENDAR_UNITS:
        raise InvalidKeyError(
            f"timeframe {text!r} is calendar-based; buckets store durations from 1Sec to 1D "
            "(aggregate weekly/monthly bars from a daily bucket instead)"
        )
    if unit not in _UNIT_SECONDS:
        raise InvalidKeyError(f"invalid timeframe {text!r}: unknown unit {m.group(2)!r} (use Sec, Min, H or D)")
    seconds = count * _UNIT_SECONDS[unit]
    if seconds <= 0:
        raise InvalidKeyError(f"invalid timeframe {text!r}: duration must be positive")
    if seconds > SECONDS_PER_DAY or SECONDS_PER_DAY % seconds:
        raise InvalidKeyError(
            f"timeframe {text!r} ({seconds} s) must divide one day exactly (e.g. 1Sec, 1Min, 5Min, 1H, 4H, 1D)"
        )
    return Timeframe(seconds)


def _check_part(part: str, what: str, key: str) -> str:
    if not part:
        raise InvalidKeyError(f"key {key!r}: {what} is empty")
    if len(part.encode("utf-8", "surrogatepass")) > MAX_PART_BYTES:
        raise InvalidKeyError(f"key {key!r}: {what} is longer than {MAX_PART_BYTES} bytes")
    bad = _FORBIDDEN_CHARS.intersection(part)
    if bad:
        raise InvalidKeyError(f"key {key!r}: {what} {part!r} contains forbidden character(s) {sorted(bad)!r}")
    if part.startswith(".") or part != part.strip():
        raise InvalidKeyError(f"key {key!r}: {what} {part!r} may not start with '.' or have surrounding spaces")
    if any(ord(c) < 32 or ord(c) == 127 for c in part):
        raise InvalidKeyError(f"key {key!r}: {what} {part!r} contains control characters")
    return part


def _split(key: str) -> list[str]:
    if not isinstance(key, str):
        raise InvalidKeyError(f"key must be a string like 'BTC/1Min/OHLCV', got {type(key).__name__}")
    if len(key) > MAX_KEY_CHARS:
        raise InvalidKeyError(f"key is too long ({len(key)} characters, at most {MAX_KEY_CHARS})")
    item, sep, category = key.partition(":")
    if sep and category != CATEGORY:
        raise InvalidKeyError(f"key {key!r}: unsupported category {category!r} (only {CATEGORY!r})")
    parts = item.split("/")
    if len(parts) != 3:
        raise InvalidKeyError(f"key {key!r} must have exactly three parts SYMBOL/TIMEFRAME/ATTRGROUP")
    return parts


@dataclass(frozen=True, slots=True)
class TimeBucketKey:
    """One bucket: ``symbol/timeframe/attribute_group``, already validated and canonical."""

    symbol: str
    timeframe: Timeframe
    attribute_group: str

    @property
    def parts(self) -> tuple[str, str, str]:
        """Directory names under the root, in order."""
        return (self.symbol, self.timeframe.name, self.attribute_group)

    @property
    def item_key(self) -> str:
        return "/".join(self.parts)

    def __str__(self) -> str:
        return self.item_key


@lru_cache(maxsize=65536)
def parse_key(key: str) -> TimeBucketKey:
    """Validate a concrete key (no lists or wildcards) and canonicalise its timeframe.

    Raises
    ------
    InvalidKeyError
        Naming the offending part: empty, containing ``/``, ``\\``, NUL, ``..``, a leading dot,
        a wildcard, or longer than :data:`MAX_PART_BYTES`.
    """
    symbol, tf, group = _split(key)
    _check_part(symbol, "symbol", key)
    _check_part(tf, "timeframe", key)
    _check_part(group, "attribute group", key)
    return TimeBucketKey(symbol, parse_timeframe(tf), group)


@dataclass(frozen=True, slots=True)
class KeyPattern:
    """A query key: each part is a comma-separated list of names or glob patterns (``*``)."""

    symbols: tuple[str, ...]
    timeframes: tuple[str, ...]
    groups: tuple[str, ...]

    @property
    def is_concrete(self) -> bool:
        return all(len(p) == 1 and not _is_glob(p[0]) for p in (self.symbols, self.timeframes, self.groups))

    def matches(self, key: TimeBucketKey) -> bool:
        return (
            _match_any(key.symbol, self.symbols)
            and _match_any(key.timeframe.name, self.timeframes)
            and _match_any(key.attribute_group, self.groups)
        )

    def expand(self) -> list[TimeBucketKey] | None:
        """The concrete keys named, in the order given, or ``None`` if a part is a glob."""
        if any(_is_glob(p) for part in (self.symbols, self.timeframes, self.groups) for p in part):
            return None
        return [
            TimeBucketKey(s, parse_timeframe(t), g) for s in self.symbols for t in self.timeframes for g in self.groups
        ]


def _is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _match_any(name: str, patterns: tuple[str, ...]) -> bool:
    if patterns == ("*",):  # the commonest pattern part: no fnmatch per bucket (a universe has thousands)
        return True
    return any(fnmatch.fnmatchcase(name, p) if _is_glob(p) else name == p for p in patterns)


def parse_key_pattern(key: str) -> KeyPattern:
    """Parse a query key such as ``AAPL,MSFT/1Min/OHLCV`` or ``*/1Min/OHLCV``.

    Timeframe names are canonicalised (``1T`` finds the ``1Min`` bucket). Globs may use ``*`` and
    ``?``; a glob can only match existing directory names, so it cannot escape the root.
    """
    if isinstance(key, str) and len(key) <= _CACHED_KEY_CHARS:
        return _parse_key_pattern_cached(key)
    return _parse_key_pattern(key)


def join_keys(keys: Sequence[str]) -> list[str]:
    """Query keys naming exactly ``keys`` (canonical bucket keys) in few requests: keys that share a
    timeframe and attribute group become one comma list ``A,B,C/1Min/OHLCV`` (each at most
    ``MAX_KEY_CHARS``), so reading a universe is a handful of queries, not one per symbol."""
    groups: dict[tuple[str, str], list[str]] = {}
    for k in keys:
        sym, tf, grp = k.split("/")
        groups.setdefault((tf, grp), []).append(sym)
    out = []
    for (tf, grp), syms in groups.items():
        budget = MAX_KEY_CHARS - len(tf) - len(grp) - 2
        chunk: list[str] = []
        size = 0
        for sym in syms:
            if chunk and size + len(sym) + 1 > budget:
                out.append(f"{','.join(chunk)}/{tf}/{grp}")
                chunk, size = [], 0
            chunk.append(sym)
            size += len(sym) + 1
        out.append(f"{','.join(chunk)}/{tf}/{grp}")
    return out


@lru_cache(maxsize=4096)
def _parse_key_pattern_cached(key: str) -> KeyPattern:
    return _parse_key_pattern(key)


def _parse_key_pattern(key: str) -> KeyPattern:
    parts = _split(key)
    out: list[tuple[str, ...]] = []
    for what, part in zip(("symbol", "timeframe", "attribute group"), parts, strict=True):
        names: list[str] = []
        for name in part.split(","):
            if _is_glob(name):
                if not name or len(name) > MAX_PART_BYTES or "/" in name or "\x00" in name:
                    raise InvalidKeyError(f"key {key!r}: bad {what} pattern {name!r}")
                names.append(name)
                continue
            if any(c in name for c in "[]"):
                raise InvalidKeyError(f"key {key!r}: bad {what} {name!r}")
            _check_part(name, what, key)
            names.append(parse_timeframe(name).name if what == "timeframe" else name)
        out.append(tuple(dict.fromkeys(names)))
    return KeyPattern(*out)
