"""The replication stream's messages: msgpack maps, one per gRPC message, in both directions.

Replica → master: ``{"t": "hello", "pos": P, "log_id": bytes | None, "name": str}`` once, then
``{"t": "ack", "pos": P}`` after each message it has applied.

Master → replica:

* ``{"t": "changes", "head": H, "recs": [[seq, [op, ...]], ...]}`` — log records after the
  replica's position, in log order; each is applied whole (a multi-bucket write all or nothing);
* ``{"t": "hb", "head": H}`` — nothing new; ``head`` is the master's last durable position;
* ``{"t": "seed_begin", "log_id": bytes}`` … ``{"t": "seed", "ops": [op, ...]}`` …
  ``{"t": "seed_end", "pos": P}`` — a consistent copy of every bucket, then following from ``P``.

An *op* is ``[meta, data]``: the log record's metadata (``op``, ``key``, ...) with
``arrays: [[dtype, count], ...]`` and the arrays' bytes one after another (the write-ahead log's
own layout, :mod:`mktsframe.engine.wal`), so numbers cross the wire exactly, nanoseconds included.

The master encodes each log record once (:func:`encode_record`) and builds every replica's
``changes`` message from those bytes (:func:`changes_message`): the message is the same msgpack
map :func:`pack` would make, so either side may be older or newer than the other.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

__all__ = ["changes_message", "decode_op", "encode_op", "encode_record", "pack", "unpack"]

Op = tuple[dict[str, Any], list[np.ndarray]]


def encode_op(meta: dict[str, Any], arrays: list[np.ndarray]) -> list[Any]:
    m = {k: v for k, v in meta.items() if k != "arrays"}
    m["arrays"] = [[a.dtype.str, int(a.size)] for a in arrays]
    return [m, b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)]


def encode_record(seq: int, ops: Any) -> bytes:
    """One log record (``seq`` and its ``(meta, arrays)`` ops) as a msgpack ``[seq, [op, ...]]``:
    an item of a ``changes`` message's ``recs``, encoded once and shared by every replica."""
    return msgpack.packb([seq, [encode_op(m, a) for m, a in ops]], use_bin_type=True)  # type: ignore[no-any-return]


def changes_message(head: int, records: list[bytes]) -> bytes:
    """``pack({"t": "changes", "head": head, "recs": [...]})`` from records already encoded by
    :func:`encode_record`, without decoding or copying them more than once."""
    n = len(records)
    if n < 16:
        header = bytes([0x90 | n])
    else:
        header = b"\xdc" + n.to_bytes(2, "big") if n < 1 << 16 else b"\xdd" + n.to_bytes(4, "big")
    return b"".join([_CHANGES_HEAD, msgpack.packb(int(head)), _RECS, header, *records])


_CHANGES_HEAD = b"\x83" + msgpack.packb("t") + msgpack.packb("changes") + msgpack.packb("head")
_RECS = msgpack.packb("recs")


def decode_op(op: list[Any]) -> Op:
    meta, data = op
    if not isinstance(meta, dict) or not isinstance(data, bytes) or not isinstance(meta.get("key"), str):
        raise ValueError("malformed replication op")
    arrays = []
    pos = 0
    for dtype, count in meta.pop("arrays", ()):
        dt = np.dtype(dtype)
        if dt.hasobject or pos + dt.itemsize * int(count) > len(data):
            raise ValueError(f"malformed replication op for {meta['key']!r}: arrays overrun the data")
        arrays.append(np.frombuffer(data, dt, int(count), pos).copy())
        pos += dt.itemsize * int(count)
    return meta, arrays


def pack(msg: dict[str, Any]) -> bytes:
    return msgpack.packb(msg, use_bin_type=True)  # type: ignore[no-any-return]


def unpack(raw: bytes) -> dict[str, Any]:
    """A message, or :class:`ValueError` for anything else (never another exception)."""
    try:
        msg = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several types for corrupt input
        raise ValueError(f"malformed replication message: {exc}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("t"), str):
        raise ValueError("malformed replication message")
    return msg
