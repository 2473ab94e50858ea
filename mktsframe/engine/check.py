"""Offline verification of a data root: ``mktsframe check ROOT``.

Reads every file the engine would trust and reports each problem with its file and byte offset,
without changing anything (so it is safe on a root a server has open, and on a copy or a backup):

- ``bucket.json``: parses, names the key of its directory, a valid schema and record type;
- year files (``YEAR.bin``): magic, version, header size, metadata CRC-32, size against the
  header, the metadata against ``bucket.json`` (key, timeframe, columns, year of the file name),
  watermarks in range (a bad one is only a hint the engine recomputes: reported as a warning);
- tick partitions (``YYYYMMDD.tick``): header and CRC, commit slots (CRC-32C, row counts within
  the capacity), size, and the time index: sorted and inside the file's UTC day;
- undo files: magic and CRC-32C (an undo file that fails them is ignored by recovery: a warning);
- the write-ahead log: every frame's header and CRC-32C (a damaged frame's offset, how many bytes
  up to the next good frame), sequence numbers increasing, and the ``checkpoint`` file's CRC.

The server runs :func:`check_buckets` at start and names damaged buckets in its log; it keeps
serving the others (a query that touches a damaged file gets an error naming the file).
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import crc32c
import numpy as np

from mktsframe.engine.catalog import META_NAME, read_bucket_meta
from mktsframe.engine.tick_file import DAY_NS, UNDO_MAGIC, TickPartition, _day_of_name, _read_undo
from mktsframe.engine.wal import _CKPT, _CKPT_MAGIC, scan_segment
from mktsframe.engine.year_file import _FIXED, _WATERMARK_OFFSET, read_header, year_bounds
from mktsframe.errors import CorruptFileError
from mktsframe.keys import parse_key

__all__ = ["Problem", "check_buckets", "check_root", "main", "report_damaged_buckets"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding: the file, the byte offset in it (``None``: the file as a whole), what is wrong,
    and whether the engine survives it on its own (``warning``) or refuses the file (``error``)."""

    path: Path
    offset: int | None
    message: str
    severity: str = "error"
    key: str | None = None

    def __str__(self) -> str:
        where = f"{self.path}" + (f" @ {self.offset}" if self.offset is not None else "")
        return f"{self.severity}: {where}: {self.message}"


def check_root(root: str | os.PathLike[str], *, wal: bool = True) -> list[Problem]:
    """Every problem found under ``root`` (an empty list: the root is sound)."""
    root = Path(root)
    if not root.is_dir():
        return [Problem(root, None, "not a directory")]
    problems = list(check_buckets(root))
    if wal:
        problems += _check_wal(root / ".mkts" / "wal")
    return problems


def check_buckets(root: Path) -> Iterator[Problem]:
    """The problems of every bucket directory under ``root`` (``SYMBOL/TIMEFRAME/ATTRGROUP``)."""
    for sym in _dirs(root):
        for tf in _dirs(sym):
            for grp in _dirs(tf):
                yield from _check_bucket(root, grp)


def _dirs(path: Path) -> list[Path]:
    try:
        return sorted(p for p in path.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []


def _check_bucket(root: Path, d: Path) -> Iterator[Problem]:
    rel = d.relative_to(root).as_posix()
    try:
        key = parse_key(rel).item_key
    except ValueError as exc:
        yield Problem(d, None, f"not a valid bucket key ({exc}): the engine ignores this directory", "warning")
        return
    try:
        meta = read_bucket_meta(d)
    except CorruptFileError as exc:
        yield Problem(d / META_NAME, None, str(exc).split(": ", 1)[-1], key=key)
        return
    if meta is None:
        if any(d.glob("*.bin")) or any(d.glob("*.tick")):
            yield Problem(d / META_NAME, None, "missing, but the directory holds data files", key=key)
        return
    if meta.get("key") not in (None, key) and parse_key(str(meta.get("key"))).item_key != key:
        yield Problem(d / META_NAME, None, f"names key {meta.get('key')!r}, but lies in {rel}", key=key)
    schema = tuple((str(n), str(t)) for n, t in meta.get("columns", []))
    if meta.get("record_type", "fixed") == "variable":
        for path in sorted(d.glob("*.tick")):
            yield from (_with_key(p, key) for p in _check_tick(path, schema))
    else:
        tf = parse_key(rel).timeframe.seconds
        for path in sorted(d.glob("*.bin")):
            yield from (_with_key(p, key) for p in _check_year(path, key, tf, schema))


def _with_key(p: Problem, key: str) -> Problem:
    return Problem(p.path, p.offset, p.message, p.severity, key)


def _check_year(path: Path, key: str, timeframe: int, schema: tuple[tuple[str, str], ...]) -> Iterator[Problem]:
    try:
        year = int(path.stem)
    except ValueError:
        yield Problem(path, None, "not a year file name (YEAR.bin): ignored by the engine", "warning")
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        yield Problem(path, None, f"cannot be opened: {exc.strerror}")
        return
    try:
        head = os.pread(fd, _FIXED.size, 0)
        try:
            meta, layout = read_header(fd, path, head)
        except (CorruptFileError, ValueError, KeyError, TypeError) as exc:
            offset = 20 if "checksum" in str(exc) else 0
            yield Problem(path, offset, str(exc).split(": ", 1)[-1])
            return
        cols = tuple((c["name"], c["type"]) for c in meta["columns"])
        if meta.get("year") != year or meta.get("year_start") != year_bounds(year)[0]:
            yield Problem(path, 64, f"header is for year {meta.get('year')}, the file name says {year}")
        if meta.get("timeframe_seconds") != timeframe or cols != schema:
            yield Problem(path, 64, f"header schema/timeframe disagrees with {META_NAME}")
        if parse_key(str(meta.get("key"))).item_key != key:
            yield Problem(path, 64, f"header names key {meta.get('key')!r}", "warning")
        lo, hi = struct.unpack_from("<qq", head, _WATERMARK_OFFSET)
        if not 0 <= lo <= hi <= layout.nslots:
            msg = f"watermarks ({lo}, {hi}) out of range: recomputed on open"
            yield Problem(path, _WATERMARK_OFFSET, msg, "warning")
    finally:
        os.close(fd)


def _check_tick(path: Path, schema: tuple[tuple[str, str], ...]) -> Iterator[Problem]:
    day = _day_of_name(path.name)
    if day is None:
        yield Problem(path, None, "not a partition file name (YYYYMMDD.tick): ignored by the engine", "warning")
        return
    try:
        p = TickPartition.open(path, writable=False)
    except (CorruptFileError, ValueError, KeyError, TypeError) as exc:
        msg = str(exc).split(": ", 1)[-1]
        yield Problem(path, 20 if "checksum" in msg else 64 if "slot" in msg else 0, msg)
        return
    except OSError as exc:
        yield Problem(path, None, f"cannot be opened: {exc.strerror}")
        return
    try:
        if p.schema != schema:
            yield Problem(path, 160, f"header schema disagrees with {META_NAME}")
        if p.day != day:
            yield Problem(path, 160, f"header is for day {p.day}, the file name says {day}")
        ns = p.ns[: p.nrows]
        bad = np.flatnonzero(ns[1:] < ns[:-1])
        if bad.size:
            row = int(bad[0]) + 1
            msg = f"time index not sorted at row {row} ({bad.size} places)"
            yield Problem(path, p.meta["ns_offset"] + 8 * row, msg)
        outside = np.flatnonzero((ns < day * DAY_NS) | (ns >= (day + 1) * DAY_NS))
        if outside.size:
            row = int(outside[0])
            yield Problem(path, p.meta["ns_offset"] + 8 * row, f"{outside.size} tick time(s) outside the file's day")
        undo = p.undo_path
        if undo.exists() and _read_undo(undo, schema) is None:
            magic_ok = undo.read_bytes()[:8] == UNDO_MAGIC
            yield Problem(undo, None if magic_ok else 0, "fails its checksum: recovery ignores it", "warning")
    finally:
        p.close()


def _check_wal(wal_dir: Path) -> Iterator[Problem]:
    ckpt = wal_dir / "checkpoint"
    if ckpt.exists():
        raw = ckpt.read_bytes()
        ok = len(raw) == _CKPT.size and raw[:8] == _CKPT_MAGIC
        if not ok or crc32c.crc32c(raw[:16]) != _CKPT.unpack(raw)[2]:
            yield Problem(ckpt, 0 if not ok else 16, "checkpoint fails its check: the whole log is replayed", "warning")
    segments = sorted(p for p in wal_dir.glob("*.wal") if p.stem.isdigit()) if wal_dir.is_dir() else []
    last_seq = 0
    for seg in segments:
        for pos, frame, damaged in scan_segment(seg.read_bytes()):
            if frame is None:
                what = "torn record at the end of the log" if damaged.torn else "corrupt record(s)"
                yield Problem(seg, pos, f"{what}: {damaged.length} bytes fail their CRC-32C; replay skips them")
                continue
            if frame[0] <= last_seq:
                yield Problem(seg, pos, f"sequence number {frame[0]} not above the previous {last_seq}")
            last_seq = max(last_seq, frame[0])


def report_damaged_buckets(root: Path, logger: logging.Logger) -> threading.Thread:
    """Check every bucket of ``root`` in a background thread (a server's start is not delayed) and
    log each damaged one by key and file; the others are served as usual. Returns the thread."""

    def run() -> None:
        damaged: dict[str, list[Problem]] = {}
        for p in check_buckets(root):
            if p.severity == "error":
                damaged.setdefault(p.key or str(p.path), []).append(p)
        for key, found in damaged.items():
            found_text = "; ".join(map(str, found))
            logger.error("damaged bucket %s (its queries fail; the other buckets are served): %s", key, found_text)
        if damaged:
            logger.error("%d damaged bucket(s): `mktsframe check %s` lists every problem", len(damaged), root)

    thread = threading.Thread(target=run, name="mktsframe-check", daemon=True)
    thread.start()
    return thread


def main(root: str, *, as_json: bool = False, wal: bool = True) -> int:
    """``mktsframe check``: print the problems of ``root``; exit status 1 if any is an error."""
    problems = check_root(root, wal=wal)
    if as_json:
        print(json.dumps([{**asdict(p), "path": str(p.path)} for p in problems], indent=1))
    else:
        for p in problems:
            print(p)
        errors = sum(p.severity == "error" for p in problems)
        print(f"{root}: {errors} error(s), {len(problems) - errors} warning(s)")
    return 1 if any(p.severity == "error" for p in problems) else 0
