"""Stream patterns: which bucket keys a subscription hears.

A pattern is MarketStore's stream glob ``SYMBOL/TIMEFRAME/ATTRGROUP`` with ``*`` (any run of
characters within a part) and ``?`` wildcards, e.g. ``*/1Min/*`` or ``BTC/*/*``; comma lists
(``BTC,ETH/1Min/OHLCV``) work as in queries. Timeframes are canonicalised (``1T`` hears the
``1Min`` bucket). Unlike MarketStore's trigger matching, a pattern must match the *whole* key
(``*/1Min/OHLCV`` never hears ``X/1Min/OHLCVX``).
"""

from __future__ import annotations

from collections.abc import Iterable

from mktsframe.errors import InvalidKeyError
from mktsframe.keys import KeyPattern, parse_key, parse_key_pattern

__all__ = ["StreamPatterns", "parse_streams", "stream_list"]


def parse_streams(streams: Iterable[object]) -> tuple[str, ...]:
    """Validate stream patterns; raises :class:`InvalidKeyError` naming the first bad one.

    The message is MarketStore's (``"<stream> is an invalid stream"``) so the ``/ws`` error reply
    can reuse it.
    """
    out = []
    for s in streams:
        if not isinstance(s, str):
            raise InvalidKeyError(f"{s!r} is an invalid stream")
        try:
            parse_key_pattern(s)
        except InvalidKeyError:
            raise InvalidKeyError(f"{s} is an invalid stream") from None
        out.append(s)
    return tuple(dict.fromkeys(out))


def stream_list(pattern: str | Iterable[str]) -> tuple[str, ...]:
    """``subscribe``'s argument (one pattern or several) as validated patterns."""
    streams = parse_streams([pattern] if isinstance(pattern, str) else list(pattern))
    if not streams:
        raise InvalidKeyError("subscribe needs at least one stream pattern, e.g. '*/1Min/*'")
    return streams


class StreamPatterns:
    """A set of stream patterns with a per-key answer cache (keys are few; writes are many)."""

    def __init__(self, streams: Iterable[object] = ()) -> None:
        self.streams = parse_streams(streams)
        self._patterns: tuple[KeyPattern, ...] = tuple(parse_key_pattern(s) for s in self.streams)
        self._cache: dict[str, bool] = {}

    def __repr__(self) -> str:
        return f"StreamPatterns({list(self.streams)!r})"

    def __bool__(self) -> bool:
        return bool(self.streams)

    def matches(self, key: str) -> bool:
        """Whether canonical ``key`` (``SYM/TF/AG``, no category) is heard."""
        hit = self._cache.get(key)
        if hit is None:
            try:
                k = parse_key(key)
            except InvalidKeyError:
                return False
            hit = any(p.matches(k) for p in self._patterns)
            if len(self._cache) < 65_536:
                self._cache[key] = hit
        return hit
