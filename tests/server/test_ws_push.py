"""``binary_frames``: the bytes the server writes straight to ``/ws`` transports, read back with
``websockets``' own frame parser (every header length form RFC 6455 has)."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from mktsframe.server.ws_push import binary_frames


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
