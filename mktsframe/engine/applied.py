"""The applied mark: how far the page cache already holds the log, so that a restart after a
process crash on the same boot need not replay it.

Replay after a crash re-applies every record after the last checkpoint and then syncs: for a log
holding one write to 5,000 buckets, about 2 s (each bucket's metadata and year file opened, then a
``syncfs``). When only the *process* died (``kill -9``, a segfault, the OOM killer), every store it
made into its shared maps is still in the kernel's page cache, dirty or already written back: the
files hold every record it applied. Only a machine restart can lose those pages, and a restart
changes the kernel's boot id.

``root/.mkts/wal/applied`` is one small file of little-endian 64-bit words::

    magic b"MKAPPL01" | boot id (2 words) | st_dev | st_ino | applied seq | tick changes

The writer stamps the first five (this boot, this very file) when it opens the root, then writes
the sequence number of each record once it is applied: one 8-byte ``pwrite``, no sync (the mark
only has to survive the process, not the machine). Not a store into a shared map: on a full disk a
write fault into a page the file system must allocate (or copy, on btrfs) kills the process with
``SIGBUS``, where ``pwrite`` returns ``ENOSPC``; a mark that cannot be written is simply not
advanced, and the next open replays.

Opening the root again, the log need not be replayed if

* the boot id is this boot's: the page cache is the one the dead process wrote into;
* ``st_dev``/``st_ino`` are the file's own: a copied or restored root (new inodes, whose contents
  may predate the mark) is replayed in full;
* the mark is at or past the last intact record: nothing logged was left unapplied (a kill between
  the log and the apply leaves the mark behind);
* no tick partition changed since the last checkpoint: a partition keeps its own *durable* state,
  which only a checkpoint of that partition advances, and replay must roll back to it (see
  :mod:`.tick_file`);
* every direct write has its commit record: an interrupted one must be rolled back by replay.

Otherwise, and on systems without a boot id (``/proc/sys/kernel/random/boot_id``), the log is
replayed as before. The records adopted this way are still after the checkpoint, so the next
checkpoint must sync the whole file system (the dead process's dirty files are not known here)
before it lets the log forget them. A machine that loses power before that replays them then.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import uuid
from pathlib import Path

__all__ = ["AppliedMark", "boot_id", "forget"]

log = logging.getLogger("mktsframe.engine")

MAGIC = b"MKAPPL01"
_LAYOUT = struct.Struct("<8sQQQQQQ")  # magic, boot id (2), st_dev, st_ino, applied seq, tick changes
_WORD = struct.Struct("<Q")
_APPLIED_AT, _TICKS_AT = 40, 48
NAME = "applied"


def boot_id() -> tuple[int, int] | None:
    """This boot's id as two 64-bit words (Linux), or ``None`` where the system has none."""
    try:
        raw = uuid.UUID(Path("/proc/sys/kernel/random/boot_id").read_text().strip()).bytes
    except (OSError, ValueError):
        return None
    return int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little")


class AppliedMark:
    """The writer's mark in ``wal_dir / "applied"``: read at open (:attr:`inherited`), then kept.

    Call :meth:`stamp` once recovery is done, :meth:`applied` after each record is applied,
    :meth:`ticks_changing` before a tick partition changes, :meth:`checkpointed` after a checkpoint.
    """

    def __init__(self, wal_dir: Path) -> None:
        self.path = wal_dir / NAME
        self._boot = boot_id()
        self.inherited: int | None = None
        """The sequence number up to which the last writer's records are in the page cache, or
        ``None`` if nothing can be assumed (another boot, another file, tick changes, no mark)."""
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        self._ticks = -1  # the tick-changes word as last written (-1: unknown)
        st = os.fstat(self._fd)
        self._identity = (st.st_dev, st.st_ino)
        old = os.pread(self._fd, _LAYOUT.size, 0)
        if len(old) == _LAYOUT.size and self._boot is not None:
            magic, b0, b1, dev, ino, seq, ticks = _LAYOUT.unpack(old)
            if (magic, b0, b1, dev, ino) == (MAGIC, *self._boot, *self._identity) and ticks == 0:
                self.inherited = seq

    def covers(self, last_seq: int) -> bool:
        """Whether the page cache holds every record up to ``last_seq`` (see the module docstring)."""
        return self.inherited is not None and self.inherited >= last_seq

    def _write(self, data: bytes, at: int) -> None:
        if self._fd is None:
            return
        try:
            os.pwrite(self._fd, data, at)
        except OSError as exc:  # a full disk: the mark stays behind (or zeroed), so the next open replays
            log.warning("%s: the applied mark could not be written (%s); a restart will replay the log", self.path, exc)
            self._stop()

    def _stop(self) -> None:
        """No more marks from this process: zero the applied word if possible, then close."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.pwrite(fd, _WORD.pack(0), _APPLIED_AT)
            os.close(fd)

    def forget(self) -> None:
        """Before a replay: a kill part way through must replay again."""
        self._write(_WORD.pack(0), _APPLIED_AT)
        self.inherited = None

    def stamp(self, seq: int) -> None:
        """Recovery is done and every record up to ``seq`` is applied: this process's mark from now on."""
        self._write(_WORD.pack(0), _APPLIED_AT)  # a torn stamp below covers nothing
        if self._boot is None:
            self._stop()  # nothing to compare a mark with at the next open
            return
        self._write(_LAYOUT.pack(MAGIC, *self._boot, *self._identity, 0, 0), 0)  # applied still 0, no ticks
        self._ticks = 0
        self._write(_WORD.pack(seq), _APPLIED_AT)

    def applied(self, seq: int) -> None:
        """Every record up to ``seq`` is applied (records are applied in sequence order)."""
        self._write(_WORD.pack(seq), _APPLIED_AT)

    def ticks_changing(self) -> None:
        """A tick partition is about to change: until the next checkpoint, replay must not be skipped."""
        if self._ticks != 1:
            self._write(_WORD.pack(1), _TICKS_AT)
            self._ticks = 1

    def checkpointed(self) -> None:
        """A checkpoint made every tick partition's durable state current."""
        if self._ticks != 0:
            self._write(_WORD.pack(0), _TICKS_AT)
            self._ticks = 0

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def forget(root: str | os.PathLike[str]) -> None:
    """Make the next writer that opens ``root`` replay its whole log since the checkpoint, as after
    a machine restart (for tests, and for an operator who distrusts the page cache, e.g. after an
    I/O error was reported on the disk). The root must not be open for writing."""
    path = Path(root) / ".mkts" / "wal" / NAME
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
