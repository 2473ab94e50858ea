"""Which years or days of a bucket have a file: a directory listing cached until the directory changes.

Creating, renaming or removing a file in a directory updates its mtime, so a ``stat`` (about a
microsecond) tells whether a cached listing is still right, also when another process wrote.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["NumberedFiles"]


class NumberedFiles:
    """The numbers that ``parse`` reads from the names of a directory's entries, ascending.

    ``parse(name)`` returns the number a file name stands for (``2024.bin`` → 2024) or ``None`` for
    entries that are not such files.
    """

    def __init__(self, directory: Path, parse: Callable[[str], int | None], *, owner: bool = False) -> None:
        self.dir = directory
        self._parse = parse
        self._found: list[int] | None = None
        self._mtime = -1
        #: The writer process creates and removes these files itself (and calls :meth:`invalidate`):
        #: it may trust its listing without a ``stat`` per use (thousands of buckets per query).
        self._owner = owner

    def get(self) -> list[int]:
        if self._owner and self._found is not None:
            return self._found
        try:
            mtime = os.stat(self.dir).st_mtime_ns
        except FileNotFoundError:
            return []
        if self._found is None or mtime != self._mtime:
            found = []
            try:
                with os.scandir(self.dir) as it:
                    for e in it:
                        n = self._parse(e.name)
                        if n is not None:
                            found.append(n)
            except FileNotFoundError:  # removed since the stat
                return []
            self._found = sorted(found)
            self._mtime = mtime
        return self._found

    def invalidate(self) -> None:
        """Forget the listing (after this process created a file within the mtime's resolution)."""
        self._found = None
