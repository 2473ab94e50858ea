"""A counter shared between the writer process and read-only processes: how many destroys so far.

A read-only engine (another process) caches bucket metadata and year-file mappings. When the
writer destroys a bucket and creates a new one under the same key, the cached objects would go on
serving the destroyed bucket's data, and a directory inode number cannot tell the two apart
(destroy removes the old directory at once, so the kernel may hand its inode to the new one).
So the writer bumps this counter after every destroy it applies, and a reader compares it with
the value it last saw before using its cache: one memory read per query, no system call.

The counter lives in ``root/.mkts/generation``: 8 bytes, a little-endian ``uint64``, mapped
shared so a store by the writer is visible to readers at once. A second ``uint64`` after it counts
bucket creations: with the first it stamps the catalog, so listing and pattern resolution over
thousands of buckets can use a cached key list until either changes (a file from an older
writer has only the first; readers then rescan every time). It is never reset (the file is
created once, and reopened by later writers), so a value a reader saw is never seen again. It
needs no ``fsync``: it only matters to readers that are alive at the same time as the writer.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

__all__ = ["DestroyGeneration"]

FILE_NAME = "generation"
_FORMAT = struct.Struct("<Q")
_SIZE = 2 * _FORMAT.size  # destroys, then creations


class DestroyGeneration:
    """The shared destroy counter of one data root, writable by the writer, read by readers."""

    def __init__(self, meta_dir: Path, *, writable: bool) -> None:
        self._path = meta_dir / FILE_NAME
        self._writable = writable
        self._map: mmap.mmap | None = None
        self._open()

    def _open(self) -> None:
        flags = os.O_RDWR | os.O_CREAT if self._writable else os.O_RDONLY
        try:
            fd = os.open(self._path, flags, 0o644)
        except OSError:
            return  # a reader of a root whose writer predates this file: see value()
        try:
            size = os.fstat(fd).st_size
            if size < _SIZE and self._writable:
                os.ftruncate(fd, _SIZE)
                size = _SIZE
            if size < _FORMAT.size:
                return
            access = mmap.ACCESS_WRITE if self._writable else mmap.ACCESS_READ
            self._map = mmap.mmap(fd, min(size, _SIZE), access=access)
        finally:
            os.close(fd)

    def value(self) -> int | None:
        """The number of destroys applied so far, ``None`` if no writer has created the file yet."""
        if self._map is None:
            self._open()  # a writer may have started since
            if self._map is None:
                return None
        return int(_FORMAT.unpack_from(self._map, 0)[0])

    def bump(self) -> None:
        """Record one more destroy (writer only, under its apply lock)."""
        assert self._map is not None, "read-only"
        _FORMAT.pack_into(self._map, 0, _FORMAT.unpack_from(self._map, 0)[0] + 1)

    def catalog_stamp(self) -> tuple[int, int] | None:
        """``(destroys, creations)`` so far: equal stamps mean the same set of buckets; ``None`` when
        unknown (no writer yet, or one that does not count creations)."""
        if self._map is None:
            self._open()
        if self._map is None or len(self._map) < _SIZE:
            return None
        return _FORMAT.unpack_from(self._map, 0)[0], _FORMAT.unpack_from(self._map, _FORMAT.size)[0]

    def bump_created(self) -> None:
        """Record bucket creations (writer only, under its apply lock)."""
        assert self._map is not None, "read-only"
        _FORMAT.pack_into(self._map, _FORMAT.size, _FORMAT.unpack_from(self._map, _FORMAT.size)[0] + 1)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
