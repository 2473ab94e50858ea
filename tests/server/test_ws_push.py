"""``binary_frames``: the bytes the server writes straight to ``/ws`` transports, read back with
``websockets``' own frame parser (every header length form RFC 6455 has); ``FrameCache``: those
bytes and the row count of one delivery pass's list, worked out once per list."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from mktsframe.backend.base import Batch
from mktsframe.server.ws_push import FrameCache, binary_frames
from mktsframe.streaming.messages import Chunk, Notice


def parse_all(data: bytes) -> list[Frame]:
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    frames = []
    while reader.buffer:
        parser = Frame.parse(reader.read_exact, mask=False)
        try:
            next(parser)
        except StopIteration as done:
            frames.append(done.value)
    return frames


@pytest.mark.parametrize("sizes", [[0, 1, 125], [126, 65_535], [65_536, 3], [200_000]])
def test_binary_frames_parse_back(sizes: list[int]) -> None:
    payloads = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
    frames = parse_all(binary_frames(payloads))
    assert [f.opcode for f in frames] == [Opcode.BINARY] * len(sizes)
    assert all(f.fin for f in frames)
    assert [bytes(f.data) for f in frames] == payloads


def chunk(seq: int, rows: int) -> Chunk:
    index = (np.arange(rows, dtype=np.int64) + seq * 100) * 60 * 1_000_000_000
    return Chunk(seq, "A/1Min/X", Batch(index, {"Close": np.arange(rows, dtype=np.float64)}))


def test_frame_cache_counts_and_encodes_a_list_once_and_a_new_list_afresh() -> None:
    cache = FrameCache()
    first = [chunk(1, 3), Notice({"notice": "deleted", "bucket": "A/1Min/X"}), chunk(2, 2)]
    assert cache.rows(first) == 5  # a notice counts no row
    data = cache.of(first)
    assert cache.of(first) is data  # the same list: the same bytes object, not encoded again
    got = [msgpack.unpackb(bytes(f.data)) for f in parse_all(data)]
    assert [m.get("notice") for m in got] == [None] * 3 + ["deleted"] + [None] * 2
    assert [m["data"]["Close"] for m in got if "data" in m] == [0.0, 1.0, 2.0, 0.0, 1.0]

    second = [chunk(3, 1)]  # another list, even of equal length, is worked out again
    assert cache.rows(second) == 1
    assert len(parse_all(cache.of(second))) == 1
    assert cache.rows(first) == 5
    assert cache.of(first) == data
