"""Making file-system changes durable: the primitives every engine module needs.

A rename or a new file is only durable once its *directory* is ``fsync``'d, and a file is only
replaced atomically by writing a temporary file, ``fsync``'ing it and renaming it over the old one.
Large writes that must be durable go through :func:`pwrite_durable`, which keeps the disk busy
while the rest is still being copied.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "SyncError",
    "fdatasync",
    "fsync",
    "fsync_dir",
    "msync",
    "pwrite_durable",
    "start_writeback",
    "sync_filesystem",
    "sync_path",
    "write_atomic",
]


class SyncError(OSError):
    """A flush to the disk (``fsync``, ``fdatasync``, ``msync``, ``syncfs``) failed.

    Distinct from other ``OSError`` exceptions because it is not retryable: after a failed flush Linux may
    drop the dirty pages and mark them clean, so a second ``fsync`` can succeed over lost data
    (PostgreSQL's "fsyncgate", 2018). The engine stops writing when it sees one (see
    ``docs/format.md``, *Sync failures*). Every flush of the engine goes through the functions
    below, which is also where a test injects a failure (in a child process).
    """


def _failed(exc: OSError, what: str) -> SyncError:
    return SyncError(exc.errno, f"{what} failed: {exc.strerror or exc}")


def fsync(fd: int, what: str = "fsync") -> None:
    """``os.fsync``, raising :class:`SyncError` on failure."""
    try:
        os.fsync(fd)
    except OSError as exc:
        raise _failed(exc, what) from exc


def fdatasync(fd: int, what: str = "fdatasync") -> None:
    """``os.fdatasync``, raising :class:`SyncError` on failure."""
    try:
        os.fdatasync(fd)
    except OSError as exc:
        raise _failed(exc, what) from exc


def _mmap_flush(mm: Any, offset: int | None, size: int | None) -> None:
    """The ``msync`` system call (a separate name so that a test can make it fail in a child)."""
    if offset is None:
        mm.flush()
    else:
        mm.flush(offset, size)


def msync(mm: Any, offset: int | None = None, size: int | None = None, what: str = "msync") -> None:
    """``mmap.flush`` (``msync(MS_SYNC)``) of the whole mapping or ``size`` bytes at ``offset``,
    raising :class:`SyncError` on failure."""
    try:
        _mmap_flush(mm, offset, size)
    except OSError as exc:
        raise _failed(exc, what) from exc

#: Bytes copied per ``pwrite`` before write-back of that piece is started (see :func:`pwrite_durable`).
WRITEBACK_CHUNK = 1 << 20
_SYNC_FILE_RANGE_WRITE = 2


def _load_sync_file_range() -> Any:
    """Linux's ``sync_file_range(2)`` from the C library, or ``None`` where there is none."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _load_sync_file_range()


def start_writeback(fd: int, offset: int = 0, nbytes: int = 0) -> None:
    """Start writing ``fd``'s dirty pages in ``[offset, offset + nbytes)`` (``nbytes=0``: to the
    end) to the disk and return at once (``sync_file_range(SYNC_FILE_RANGE_WRITE)``), so that a
    later ``fdatasync`` finds the write already in flight. Durability still rests on that
    ``fdatasync``; without ``sync_file_range`` (not Linux) this does nothing."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE)


def fsync_dir(path: Path) -> None:
    """``fsync`` a directory so that entries created, renamed or removed in it survive a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fsync(fd, f"fsync({path})")
    finally:
        os.close(fd)


def sync_path(path: Path) -> None:
    """``fdatasync`` a file by name: its dirty pages, written through a mapping since closed, reach
    the disk. A file removed meanwhile (its bucket destroyed) needs nothing."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        fdatasync(fd, f"fdatasync({path})")
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data``: readers see the old content or the new, never a mix.

    ``durable=False`` skips the two ``fsync`` calls, for callers that create many files and then
    make them all durable at once with :func:`sync_filesystem`.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        if durable:
            fsync(fd, f"fsync({tmp})")
    except BaseException:
        tmp.unlink(missing_ok=True)  # e.g. a full disk: leave nothing behind
        raise
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)


def _load_syncfs() -> Any:
    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_syncfs = _load_syncfs()


def sync_filesystem(path: Path) -> None:
    """Make every file and directory created or written on ``path``'s file system durable: one
    ``syncfs(2)`` instead of an ``fsync`` per file and directory (a bucket costs six when created
    one by one: thousands created at once took seconds). ``os.sync()`` where there is no ``syncfs``.
    Raises ``OSError`` if the file system reports a write-back error."""
    if _syncfs is None:
        os.sync()  # reports no errors: nothing better exists there
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if _syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise SyncError(err, f"syncfs({path}) failed: {os.strerror(err)}")
    finally:
        os.close(fd)


def pwrite_durable(fd: int, parts: Sequence[tuple[int, memoryview]]) -> None:
    """Write each ``(offset, bytes)`` part at its offset in ``fd`` and ``fdatasync``: durable on return.

    Why not one ``pwrite`` then ``fdatasync``: the copy into the page cache (~14 ms for 32 MB) and
    the disk write (~40 ms) would run one after the other. Here every ``WRITEBACK_CHUNK`` bytes
    copied are handed to the disk at once (``sync_file_range(SYNC_FILE_RANGE_WRITE)``, which only
    *starts* write-back and does not wait), so the disk works while the next chunk is copied; the
    final ``fdatasync`` waits for the rest and flushes the metadata and the device cache, and is
    what durability rests on. Without ``sync_file_range`` (not Linux) it is plain pwrite + fdatasync.
    """
    for offset, buf in parts:
        done, size = 0, len(buf)
        while done < size:
            n = os.pwrite(fd, buf[done : done + WRITEBACK_CHUNK], offset + done)
            start_writeback(fd, offset + done, n)
            done += n
    fdatasync(fd)
