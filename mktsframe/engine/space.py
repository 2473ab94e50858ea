"""Disk space for writes through memory maps: reserved first, so a full disk is an error, not a signal.

Year files and tick partitions are created at full size with ``ftruncate``: *sparse*, their
unwritten regions hold no disk blocks (a 1Sec year file is ~380 MB, mostly holes). A store
through the mapping into a hole makes the kernel allocate a block at the page fault; when the
file system has none left the only way it can say so is ``SIGBUS``, which kills the process —
before this module, a bulk write that filled the disk did exactly that, and so did reopening the
root, replaying the same write. ``posix_fallocate`` of the pages about to be written (never of the
whole file) turns that into ``ENOSPC`` from a system call, raised as
:class:`~mktsframe.errors.NoSpaceError` before anything is logged or stored.

Clearing slots (deletes, roll-backs) never needs space: :func:`zero_nonzero` writes only bytes
that are not zero already, and a byte in a hole reads as zero, so no hole is ever touched.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from mktsframe.errors import NoSpaceError

__all__ = ["PAGE", "no_space", "reserve", "zero_nonzero"]

PAGE = 4096
#: Whether this process's file systems support ``fallocate`` (cleared at the first that does not:
#: then writes through maps go unreserved, as before).
_supported = True


def no_space(path: Path | str, detail: str = "") -> NoSpaceError:
    """The error for a write that does not fit on the file system holding ``path``."""
    more = f" ({detail})" if detail else ""
    return NoSpaceError(
        errno.ENOSPC,
        f"no space left on the device holding {path}{more}: the write was refused and nothing of it was "
        "stored; earlier writes are intact and readable. Free space (destroy a bucket, delete files, "
        "grow the file system) and write again",
    )


def reserve(fd: int, ranges: Iterable[tuple[int, int]], path: Path | str) -> None:
    """Allocate disk blocks for the pages of ``fd`` covering each ``(offset, nbytes)`` range (bytes
    already allocated keep their contents). Raises :class:`NoSpaceError` if the file system is full."""
    global _supported
    if not _supported:
        return
    for offset, nbytes in ranges:
        if nbytes <= 0:
            continue
        start = offset // PAGE * PAGE
        stop = -(-(offset + nbytes) // PAGE) * PAGE
        try:
            os.posix_fallocate(fd, start, stop - start)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise no_space(path) from None
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                _supported = False
                return
            raise


def zero_nonzero(region: np.ndarray) -> None:
    """Set every byte of ``region`` (a writable, contiguous view into a mapping) to zero, storing
    only to bytes that are not zero: pages that are holes are read (as zeros) but never written,
    so clearing needs no disk space, even on a full file system."""
    raw = region.reshape(-1).view(np.uint8)
    n = raw.size
    head = min(n, -raw.ctypes.data % PAGE)  # mappings are page-aligned: this finds the file's pages
    body = head + (n - head) // PAGE * PAGE
    if head and raw[:head].any():
        raw[:head] = 0
    if body < n and raw[body:].any():
        raw[body:] = 0
    if body > head:  # one flag per page (no per-byte index: a year of 1Sec bars is 250 MB a column)
        dirty = np.flatnonzero(raw[head:body].reshape(-1, PAGE).any(axis=1))
        if dirty.size:
            cuts = np.flatnonzero(np.diff(dirty) > 1)
            firsts, lasts = dirty[np.r_[0, cuts + 1]].tolist(), dirty[np.r_[cuts, dirty.size - 1]].tolist()
            for first, last in zip(firsts, lasts, strict=True):  # runs of pages holding data
                raw[head + first * PAGE : head + (last + 1) * PAGE] = 0
