"""The local storage engine: memory-mapped year files behind a write-ahead log."""

from mktsframe.changes import CommitEvent
from mktsframe.engine.engine import Engine

__all__ = ["CommitEvent", "Engine"]
