"""A year file as published to object storage: the same slots, stored in day blocks.

On disk a year file is laid out by column (``docs/format.md``): a one-day read touches the
presence bytes and each column in separate regions, megabytes apart. Locally that is one
``pread`` each; against object storage it would be one ``GET`` each, and a ``GET`` costs
milliseconds whatever its size. So ``sync`` publishes each year file *re-blocked*: the slots are
cut into blocks of whole UTC days (:func:`block_slots`), each block holding its presence bytes
and then each column's values for its slots, and blocks with no bar at all are left out (a
sparse year uploads only the days that hold data). A one-day read is then one ranged ``GET``.

The logical file is unchanged: :func:`BlockedHeader.fetcher` answers reads addressed to the
column-major layout (what :func:`mktsframe.engine.year_io.slots_from` asks for) from the blocks,
so the slot arithmetic, watermarks, presence filtering and limits are the local engine's own code.

Object layout (little-endian)::

    0   8  magic  MKTSBLK1
    8   4  u32 version (1)
    12  4  u32 header length H (this prefix + metadata + block table)
    16  4  u32 metadata length M
    20  4  u32 CRC-32 (zlib) of the metadata and the block table
    24  8  i64 low watermark  (first slot with a bar; exact)
    32  8  i64 high watermark (last slot with a bar + 1; exact)
    40  8  i64 rows (bars in the year)
    48  4  u32 slots per block B
    52  4  u32 blocks N
    56  M  the year file's own metadata JSON, verbatim
    …  8N  i64 offset of each block in this object, -1 if it holds no bar
    H   …  the blocks, in order: presence (n bytes), then each column (n × itemsize), n = slots in the block
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from mktsframe.dtypes import dtype_of
from mktsframe.engine.year_file import _FIXED, layout_of, parse_header
from mktsframe.errors import CorruptFileError

__all__ = ["BlockedHeader", "block_slots", "parse_blocked_header", "write_blocked"]

MAGIC = b"MKTSBLK1"
VERSION = 1
_PREFIX = struct.Struct("<8sIIIIqqqII")
#: Blocks hold whole days, at least this many bytes (a day of 5Min bars is ~7 KB: 3 days a block).
MIN_BLOCK_BYTES = 16 << 10
#: Bytes to fetch for a header on first use (the prefix, metadata and a year's block table fit).
HEAD_BYTES = 8192

Fetch = Callable[[list[tuple[int, int]]], list[Any]]


def block_slots(timeframe: int, row_bytes: int) -> int:
    """Slots per block: whole UTC days, enough of them for :data:`MIN_BLOCK_BYTES`."""
    per_day = 86_400 // timeframe
    days = max(1, -(-MIN_BLOCK_BYTES // (per_day * (1 + row_bytes))))
    return per_day * days


def write_blocked(path: Any, out: BinaryIO) -> None:
    """Write the year file at ``path`` (checked as the engine checks it) re-blocked to ``out``."""
    with open(path, "rb") as f:
        head = f.read(_FIXED.size)

        def read(offset: int, n: int) -> bytes:
            f.seek(offset)
            return f.read(n)

        meta, layout = parse_header(path, head, read, lambda: f.seek(0, 2))
        raw = np.memmap(path, np.uint8, mode="r")
    presence = raw[layout.presence_offset : layout.presence_offset + layout.nslots]
    present = np.flatnonzero(presence)
    cols = [(dtype_of(c["type"]), c["offset"]) for c in meta["columns"]]
    row_bytes = sum(dt.itemsize for dt, _ in cols)
    bs = block_slots(meta["timeframe_seconds"], row_bytes)
    nblocks = -(-layout.nslots // bs)
    meta_blob = json.dumps(meta, separators=(",", ":")).encode()
    table = np.full(nblocks, -1, np.int64)
    header_len = _PREFIX.size + len(meta_blob) + 8 * nblocks
    pos = header_len
    used = np.unique(present // bs) if present.size else np.empty(0, np.int64)
    for b in used.tolist():
        table[b] = pos
        pos += (min(bs, layout.nslots - b * bs)) * (1 + row_bytes)
    lo, hi = (int(present[0]), int(present[-1]) + 1) if present.size else (0, 0)
    crc = zlib.crc32(meta_blob + table.tobytes())
    out.write(_PREFIX.pack(MAGIC, VERSION, header_len, len(meta_blob), crc, lo, hi, int(present.size), bs, nblocks))
    out.write(meta_blob)
    out.write(table.tobytes())
    for b in used.tolist():
        a, z = b * bs, min(layout.nslots, (b + 1) * bs)
        out.write(presence[a:z].tobytes())
        for dt, off in cols:
            out.write(raw[off + a * dt.itemsize : off + z * dt.itemsize].tobytes())
    del raw


@dataclass(frozen=True)
class BlockedHeader:
    """A published year file's header: the logical year file's metadata and where its blocks are."""

    crc: int
    meta: dict[str, Any]
    lo: int
    hi: int
    rows: int
    block_slots: int
    table: np.ndarray
    size: int

    def regions(self) -> Iterator[tuple[int, int, int]]:
        """``(start, end, itemsize)`` of the presence and each column in the column-major layout."""
        nslots = self.meta["nslots"]
        yield self.meta["presence_offset"], self.meta["presence_offset"] + nslots, 1
        for c in self.meta["columns"]:
            size = dtype_of(c["type"]).itemsize
            yield c["offset"], c["offset"] + nslots * size, size

    def fetcher(self, fetch_object: Fetch) -> Fetch:
        """Reads addressed to the column-major year file, served from the blocks: every block the
        reads touch in one batch of ranged reads of the object (one per run of stored blocks)."""
        regions = list(self.regions())
        nslots, bs = self.meta["nslots"], self.block_slots
        row = [size for _, _, size in regions]  # bytes per slot of each region, in block order

        def fetch(ranges: list[tuple[int, int]]) -> list[Any]:
            wanted = []
            for off, n in ranges:
                for i, (start, end, size) in enumerate(regions):
                    if start <= off and off + n <= end and (off - start) % size == 0 and n % size == 0:
                        a = (off - start) // size
                        wanted.append((i, a, a + n // size))
                        break
                else:
                    raise CorruptFileError(f"read of {n} bytes at {off} is outside the year file's regions")
            lo = min(a for _, a, _ in wanted)
            hi = max(z for _, _, z in wanted)
            blocks = [b for b in range(lo // bs, -(-hi // bs)) if self.table[b] >= 0] if hi > lo else []
            runs: list[list[int]] = []
            for b in blocks:  # consecutive stored blocks are adjacent in the object: one range each run
                if runs and self.table[b] == self.table[runs[-1][-1]] + self._block_len(runs[-1][-1], row):
                    runs[-1].append(b)
                else:
                    runs.append([b])
            got = fetch_object([(int(self.table[r[0]]), sum(self._block_len(b, row) for b in r)) for r in runs])
            data: dict[int, memoryview] = {}
            for r, buf in zip(runs, got, strict=True):
                mv, pos = memoryview(buf), 0
                for b in r:
                    n = self._block_len(b, row)
                    data[b] = mv[pos : pos + n]
                    pos += n
            out = []
            for i, a, z in wanted:
                size = row[i]
                res = np.zeros((z - a) * size, np.uint8)  # slots of blocks not stored: no bar, zeros
                for b in range(a // bs, -(-z // bs)) if z > a else ():
                    blk = data.get(b)
                    if blk is None:
                        continue
                    n = min(bs, nslots - b * bs)
                    base = b * bs
                    s0, s1 = max(a, base), min(z, base + n)
                    region_start = n * sum(row[:i])
                    piece = blk[region_start + (s0 - base) * size : region_start + (s1 - base) * size]
                    res[(s0 - a) * size : (s1 - a) * size] = np.frombuffer(piece, np.uint8)
                out.append(res)
            return out

        return fetch

    def _block_len(self, b: int, row: list[int]) -> int:
        return min(self.block_slots, self.meta["nslots"] - b * self.block_slots) * sum(row)

    def layout(self) -> Any:
        return layout_of(self.meta, self.meta["presence_offset"])


def parse_blocked_header(where: str, head: bytes, read: Callable[[int, int], bytes], size: int) -> BlockedHeader:
    """Check and decode a published year file's header (``head``: its first bytes; ``read`` gets more)."""
    if len(head) < _PREFIX.size or head[:8] != MAGIC:
        raise CorruptFileError(f"{where}: not a published mktsframe year file (bad magic number)")
    _, version, header_len, meta_len, crc, lo, hi, rows, bs, nblocks = _PREFIX.unpack_from(head)
    if version != VERSION:
        raise CorruptFileError(f"{where}: unsupported published format version {version} (this build reads {VERSION})")
    if header_len != _PREFIX.size + meta_len + 8 * nblocks or header_len > size or bs <= 0:
        raise CorruptFileError(f"{where}: corrupt header")
    blob = bytes(head[_PREFIX.size : header_len])
    if len(blob) < header_len - _PREFIX.size:
        blob = read(_PREFIX.size, header_len - _PREFIX.size)
    if zlib.crc32(blob) != crc:
        raise CorruptFileError(f"{where}: header checksum mismatch; the object is corrupt and will not be served")
    meta = json.loads(blob[:meta_len])
    table = np.frombuffer(blob[meta_len:], np.int64)
    if table.shape[0] != nblocks or nblocks * bs < meta["nslots"] or not 0 <= lo <= hi <= meta["nslots"]:
        raise CorruptFileError(f"{where}: corrupt block table")
    return BlockedHeader(crc, meta, lo, hi, rows, bs, table, size)
