"""Maps without descriptors (``engine/mapping.py``): no descriptor held, never unmapped under a
view, flushed by the engine at interpreter exit."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mktsframe.engine.mapping import HOLDS_DESCRIPTOR, map_file
from mktsframe.engine.open_files import count_open_data_files

pytestmark = pytest.mark.skipif(HOLDS_DESCRIPTOR, reason="direct mmap(2) is used on Linux and macOS only")


def test_a_map_holds_no_descriptor_and_outlives_close_while_viewed(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"\0" * (1 << 16))
    fd = os.open(path, os.O_RDWR)
    m = map_file(fd, 1 << 16, writable=True)
    os.close(fd)
    assert count_open_data_files(tmp_path) == (0, 1)  # (descriptors, maps)
    view = np.ndarray((8,), np.int64, buffer=m.buffer, offset=4096)
    view[:] = 42
    m.flush()
    m.close()
    gc.collect()
    assert count_open_data_files(tmp_path)[1] == 1  # a view remains: still mapped, still readable
    assert view.sum() == 42 * 8
    del view
    gc.collect()
    assert count_open_data_files(tmp_path)[1] == 0  # the last view went: unmapped
    assert np.fromfile(path, np.int64, 8, offset=4096).tolist() == [42] * 8
    with pytest.raises(ValueError, match="closed"):
        m.flush()


def test_a_read_only_map_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"\1" * 4096)
    fd = os.open(path, os.O_RDONLY)
    m = map_file(fd, 4096, writable=False)
    os.close(fd)
    view = np.ndarray((4096,), np.uint8, buffer=m.buffer)
    assert not view.flags.writeable
    assert view[0] == 1
    with pytest.raises(ValueError, match="read-only"):
        view[0] = 2


def test_the_engine_flushes_its_maps_at_exit(tmp_path: Path) -> None:
    """A script that never closes its backend: the engine's exit hook checkpoints while the maps
    are still there (a finalizer's exit hook that unmapped them first made msync fail with ENOMEM)."""
    script = textwrap.dedent(f"""
        import numpy as np
        import mktsframe
        from mktsframe.records import Batch
        be = mktsframe.connect({str(tmp_path / "root")!r})
        for i in range(50):
            be.write(f"S{{i}}/1Min/X", Batch(np.array([1704067200 * 10**9]), {{"Close": np.array([float(i)])}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Exception" not in out.stderr, out.stderr
    assert "Error" not in out.stderr, out.stderr
    check = subprocess.run(
        [sys.executable, "-c", f"import mktsframe; be = mktsframe.connect({str(tmp_path / 'root')!r}); "
         "print(sum(len(b) for b in be.query('*/1Min/X').values()))"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert check.stdout.strip() == "50", check.stderr
    assert "replayed" not in check.stderr  # closed cleanly: nothing left to recover
