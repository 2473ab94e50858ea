"""Memory maps of data files that hold no file descriptor.

Python's :class:`mmap.mmap` keeps a duplicate of the descriptor it maps for as long as the map
lives (before Python 3.13's ``trackfd=False``). With one map per year file that made the number of
open *descriptors* the limit of a universe: 128 data files under ``ulimit -n 256`` (macOS's
default), so a cross-section of 5,000 symbols closed and reopened files all the time. The kernel
needs no descriptor to keep a shared mapping alive, so this module maps with ``mmap(2)`` directly
and closes the descriptor at once: the only limit left is the number of maps
(``vm.max_map_count``), which the engine's open-file set stays well under.

Safety rule, the same as :class:`mmap.mmap`'s: the region is unmapped only when nothing can reach it
any more. Every numpy view made on :attr:`FileMap.buffer` keeps the buffer alive, and the buffer's
finaliser calls ``munmap``; :meth:`FileMap.close` only drops the map's own reference. A view a
reader still holds therefore never points at unmapped memory.

On platforms other than Linux and macOS (or where ``libc`` cannot be loaded, or with the
environment variable ``MKTS_PYTHON_MMAP=1``) :func:`map_file` falls back to :class:`mmap.mmap`;
:data:`HOLDS_DESCRIPTOR` tells the open-file set to count one descriptor per map then.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import mmap
import os
import sys
import weakref
from typing import Any

__all__ = ["HOLDS_DESCRIPTOR", "FileMap", "map_file"]

# msync(2) flags differ between the two systems this module maps on.
_MS_SYNC = {"linux": 4, "darwin": 0x10}.get(sys.platform)
_MADV_RANDOM = 1  # the same on Linux and macOS
_MAP_FAILED = ctypes.c_void_p(-1).value


def _load_libc() -> Any:
    if _MS_SYNC is None or ctypes.sizeof(ctypes.c_void_p) != 8 or os.environ.get("MKTS_PYTHON_MMAP") == "1":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        c_int = ctypes.c_int
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, c_int, c_int, c_int, ctypes.c_int64]
        for name in ("munmap", "msync", "madvise"):
            getattr(libc, name).restype = ctypes.c_int
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.msync.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    except (OSError, AttributeError):
        return None
    return libc


_libc = _load_libc()

#: ``True`` when each map keeps a file descriptor open (the :class:`mmap.mmap` fallback).
HOLDS_DESCRIPTOR: bool = _libc is None


def _unmap(addr: int, size: int) -> None:
    _libc.munmap(addr, size)


def _raise_errno(what: str) -> None:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")


class FileMap:
    """A shared mapping of the first ``size`` bytes of a file.

    :attr:`buffer` is what numpy views are made on (read-only when the map is). :meth:`flush` is
    ``msync(MS_SYNC)`` and raises :class:`OSError` on failure, like :meth:`mmap.mmap.flush`.
    """

    def __init__(self, fd: int, size: int, *, writable: bool) -> None:
        if size <= 0:
            raise ValueError(f"cannot map {size} bytes")
        self.size = size
        self.writable = writable
        self._mm: mmap.mmap | None = None
        if _libc is None:
            self._mm = mmap.mmap(fd, size, access=mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ)
            self.buffer: memoryview | mmap.mmap = self._mm
            self._addr = 0
            return
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        addr = _libc.mmap(None, size, prot, mmap.MAP_SHARED, fd, 0)
        if addr is None or addr == _MAP_FAILED:
            _raise_errno("mmap")
        self._addr = addr
        region = (ctypes.c_char * size).from_address(addr)
        # Unmapped when the last view of it is gone, and never at interpreter exit: finalizers'
        # exit hook would run before the engine's own (which still flushes the maps).
        weakref.finalize(region, _unmap, addr, size).atexit = False
        view = memoryview(region).cast("B")
        self.buffer = view if writable else view.toreadonly()

    def advise_random(self) -> None:
        """Range reads are small slices of a large file: don't let a page fault read megabytes ahead."""
        if self._mm is not None:
            if hasattr(self._mm, "madvise") and hasattr(mmap, "MADV_RANDOM"):
                self._mm.madvise(mmap.MADV_RANDOM)
        elif self._addr:
            _libc.madvise(self._addr, self.size, _MADV_RANDOM)

    def flush(self, offset: int = 0, size: int | None = None) -> None:
        """Write dirty pages in ``[offset, offset + size)`` (the whole map by default) to the file
        and wait (``offset`` page aligned)."""
        n = self.size - offset if size is None else size
        if self._mm is not None:
            self._mm.flush(offset, n)
            return
        if not self._addr:
            raise ValueError("flush of a closed map")
        if _libc.msync(self._addr + offset, n, _MS_SYNC) != 0:
            _raise_errno("msync")

    def close(self) -> None:
        """Drop this map's reference: the region is unmapped now, or when the last view of it goes."""
        self._addr = 0
        if self._mm is not None:
            with contextlib.suppress(BufferError):  # a view is still referenced: the GC will unmap it
                self._mm.close()
        self.buffer = None  # type: ignore[assignment]


def map_file(fd: int, size: int, *, writable: bool) -> FileMap:
    """Map ``size`` bytes of the open file ``fd`` (shared); the caller may close ``fd`` at once."""
    return FileMap(fd, size, writable=writable)
