"""Durable identities and positions: which master log a replica follows, and how far it applied.

``root/.mkts/replication-id`` (master): 16 random bytes naming this root's log. A replica that
followed another log (a different master, or this root wiped and started again) is re-seeded.

``root/.mkts/replica-position`` (replica): the master's log id, the WAL sequence number of the
last master record applied, and whether a re-seed is under way, with a CRC. It is rewritten in
place after every applied record (``pwrite``, no ``fsync``: a killed process loses nothing the
page cache holds) and ``fsync``'d before the replica's own log forgets records at a checkpoint
and at close. A torn or missing file means "unknown": the replica is re-seeded.
"""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path

import crc32c

from mktsframe.engine.durable import fsync_dir, write_atomic

__all__ = ["PositionFile", "forget_master", "log_id"]

_FMT = struct.Struct("<8s16sQB")
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


class PositionFile:
    """A replica's applied position (thread-safe)."""

    def __init__(self, meta_dir: Path) -> None:
        meta_dir.mkdir(parents=True, exist_ok=True)
        self.path = meta_dir / _NAME
        self._lock = threading.Lock()
        self.log_id: bytes | None = None
        self.seq = 0
        self.seeding = False
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raw = b""
        if len(raw) == _FMT.size + 4 and crc32c.crc32c(raw[:-4]) == struct.unpack("<I", raw[-4:])[0]:
            magic, lid, seq, seeding = _FMT.unpack(raw[:-4])
            if magic == _MAGIC and not seeding:
                self.log_id, self.seq = lid, int(seq)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fsync_dir(meta_dir)

    def save(self, log_id: bytes | None, seq: int, *, seeding: bool = False, durable: bool = False) -> None:
        body = _FMT.pack(_MAGIC, log_id or bytes(16), seq, seeding)
        with self._lock:
            self.log_id, self.seq, self.seeding = log_id, seq, seeding
            os.pwrite(self._fd, body + struct.pack("<I", crc32c.crc32c(body)), 0)
            if durable:
                os.fdatasync(self._fd)

    def sync(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.fdatasync(self._fd)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.fdatasync(self._fd)
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
