"""Durable identities and positions: which master log a replica follows, and how far it applied.

``root/.mkts/replication-id`` (master): 16 random bytes naming this root's log. A replica that
followed another log (a different master, or this root wiped and started again) is re-seeded.

``root/.mkts/replica-position`` (replica): the master's log id, the WAL sequence number of the
last master record applied, whether a re-seed is under way, whether the replica closed cleanly,
and the machine's boot id, with a CRC. It is rewritten in place after every applied record
(``pwrite``, no ``fsync``: a killed process loses nothing the page cache holds). A torn or
missing file, or one left by a machine that stopped uncleanly, means "unknown": re-seed.
"""

from __future__ import annotations

import os
import struct
import threading
import uuid
from pathlib import Path

import crc32c

from mktsframe.engine.durable import fsync_dir, write_atomic

__all__ = ["PositionFile", "boot_id", "forget_master", "log_id"]

_FMT = struct.Struct("<8s16sQ??16s")
_MAGIC = b"MKREPL01"
_NAME = "replica-position"


def log_id(meta_dir: Path) -> bytes:
    """This root's log id, made (durably) the first time a master runs on it."""
    path = meta_dir / "replication-id"
    try:
        raw = path.read_bytes()
        if len(raw) == 16:
            return raw
    except FileNotFoundError:
        pass
    raw = os.urandom(16)
    write_atomic(path, raw)
    return raw


def boot_id() -> bytes:
    """This boot of the machine (Linux); a different value means the machine restarted since."""
    try:
        return uuid.UUID(Path("/proc/sys/kernel/random/boot_id").read_text().strip()).bytes
    except (OSError, ValueError):
        return bytes(16)  # unknown: assume the same boot


class PositionFile:
    """A replica's applied position (thread-safe).

    The replica's own log is synced in the background (see :mod:`.replica`), and this file is
    rewritten without ``fsync`` after every record: both live in the page cache, which survives
    the process being killed, so after a process crash they agree. After the *machine* stopped
    without a clean close (a different boot id, no clean mark), neither can be trusted: the
    position reads as unknown and the replica is re-seeded.
    """

    def __init__(self, meta_dir: Path) -> None:
        meta_dir.mkdir(parents=True, exist_ok=True)
        self.path = meta_dir / _NAME
        self._lock = threading.Lock()
        self._boot = boot_id()
        self.log_id: bytes | None = None
        self.seq = 0
        self.seeding = False
        self.lost_at_reboot = False
        """The file was left by a run that ended with the machine (not closed cleanly)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raw = b""
        if len(raw) == _FMT.size + 4 and crc32c.crc32c(raw[:-4]) == struct.unpack("<I", raw[-4:])[0]:
            magic, lid, seq, seeding, clean, boot = _FMT.unpack(raw[:-4])
            self.lost_at_reboot = not clean and boot != self._boot
            if magic == _MAGIC and not seeding and lid != bytes(16) and not self.lost_at_reboot:
                self.log_id, self.seq = lid, int(seq)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fsync_dir(meta_dir)

    def save(self, log_id: bytes | None, seq: int, *, seeding: bool = False, durable: bool = False) -> None:
        with self._lock:
            self.log_id, self.seq, self.seeding = log_id, seq, seeding
            self._write(clean=False, durable=durable)

    def _write(self, clean: bool, durable: bool) -> None:
        body = _FMT.pack(_MAGIC, self.log_id or bytes(16), self.seq, self.seeding, clean, self._boot)
        os.pwrite(self._fd, body + struct.pack("<I", crc32c.crc32c(body)), 0)
        if durable:
            os.fdatasync(self._fd)

    def close(self) -> None:
        """Mark the position clean and durable; call after the replica's own log is synced."""
        with self._lock:
            if self._fd >= 0:
                self._write(clean=True, durable=True)
                os.close(self._fd)
                self._fd = -1


def forget_master(meta_dir: Path) -> tuple[bytes, int] | None:
    """Promotion: a server started without ``master_host`` on a former replica's root drops the
    position (so that being made a replica again re-seeds it). Returns what it was, if any."""
    path = meta_dir / _NAME
    if not path.exists():
        return None
    pos = PositionFile(meta_dir)
    was = (pos.log_id, pos.seq) if pos.log_id is not None else (bytes(16), 0)
    pos.close()
    path.unlink()
    fsync_dir(meta_dir)
    return was
