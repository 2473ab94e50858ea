"""Restart after a process crash on the same boot: the applied mark (``mktsframe/engine/applied.py``).

A writer killed between two writes left every record it applied in the page cache; the next open
takes the files as they are (milliseconds) instead of replaying the log (seconds for a universe),
and the next checkpoint syncs the file system before the log forgets those records. Every case
where the page cache cannot be trusted to hold the log (another boot, a copied root, a record
logged but not applied, tick partitions changed, a torn direct write) still replays.
Crashes are real: a child process writes and dies with ``os._exit`` or ``SIGKILL``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mktsframe.backend.base import Batch
from mktsframe.engine import Engine, applied
from mktsframe.engine import engine as engine_module

REPO = Path(__file__).resolve().parents[1]
NS = 1_000_000_000
T0 = 1_704_153_600 * NS  # 2024-01-02 00:00 UTC
SYMS = 300


def _die_after(root: Path, body: str) -> None:
    """Run ``body`` in a child with ``e`` an Engine on ``root`` (plus ``Batch``, ``np``, ``T0``,
    ``NS``, ``minute(k)``, ``SYMS``), then kill it without any close."""
    code = textwrap.dedent("""
        import os, signal, sys, numpy as np
        from mktsframe.backend.base import Batch
        from mktsframe.engine import Engine
        NS, T0, SYMS = {NS}, {T0}, {SYMS}
        def minute(k, value=1.0):
            return {{f"S{{i:03d}}/1Min/OHLCV": Batch(np.array([T0 + k * 60 * NS]),
                     {{"Close": np.full(1, value + i), "Volume": np.ones(1, np.int64)}}) for i in range(SYMS)}}
        e = Engine(sys.argv[1])
    """).format(NS=NS, T0=T0, SYMS=SYMS) + textwrap.dedent(body) + "\nos.kill(os.getpid(), signal.SIGKILL)\n"
    proc = subprocess.run([sys.executable, "-c", code, str(root)], env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode in (-9, 3), proc.stderr


def _bar(ns: int) -> Batch:
    return Batch(np.array([ns]), {"Close": np.ones(1), "Volume": np.ones(1, np.int64)})


def _closes(root: Path) -> list[float]:
    """The Close of every symbol's bars, in key order then time."""
    with Engine(root, read_only=True) as e:
        return [float(v) for _, b in sorted(e.query("*/1Min/OHLCV").items()) for v in b.columns["Close"]]


def test_a_writer_killed_between_writes_is_taken_as_it_is_and_a_copy_replays_the_same(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _die_after(root, "e.write_many(minute(0)); e.checkpoint(); e.write_many(minute(1, 10.0)); "
                     "e.write_many(minute(2, 20.0))")
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)  # new inodes: the copy's mark is not its own, so it replays
    with Engine(root) as e:
        report = e.recovery
        assert (report.records, report.applied_before, report.problems) == (0, 2, [])
        adopted = list(report.changes)
    with Engine(copy) as e:
        assert (e.recovery.records, e.recovery.applied_before) == (2, 0)
        assert list(e.recovery.changes) == adopted  # what ondiskagg recomputes is the same either way
    assert len(adopted) == 2 * SYMS
    assert adopted[0] == ("write", "S000/1Min/OHLCV", T0 + 60 * NS, T0 + 60 * NS)
    assert _closes(root) == _closes(copy) == [v for i in range(SYMS) for v in (1.0 + i, 10.0 + i, 20.0 + i)]


def test_after_adopting_the_next_checkpoint_syncs_the_file_system(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dead writer's dirty files are unknown to the new one: its first checkpoint must sync the
    whole file system before the log forgets their records, even with few files of its own dirty."""
    root = tmp_path / "root"
    _die_after(root, "e.write_many(minute(0))")
    synced: list[Path] = []
    real = engine_module.sync_filesystem

    def counting(path: Path) -> None:
        synced.append(path)
        real(path)

    monkeypatch.setattr(engine_module, "sync_filesystem", counting)
    with Engine(root) as e:
        assert e.recovery.applied_before == 1
        e.write("S000/1Min/OHLCV", _bar(T0 + 120 * NS))
        e.checkpoint()
        assert synced == [e.root]
        e.write("S000/1Min/OHLCV", _bar(T0 + 180 * NS))
        e.checkpoint()  # one file dirty, nothing inherited: msync'd alone
        assert synced == [e.root]
    with Engine(root) as e:
        assert (e.recovery.records, e.recovery.applied_before) == (0, 0)


@pytest.mark.parametrize("boot", ["none", "another"])
def test_another_boot_or_no_boot_id_replays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, boot: str) -> None:
    root = tmp_path / "root"
    _die_after(root, "e.write_many(minute(0)); e.write_many(minute(1))")
    this = applied.boot_id()
    assert this is not None  # Linux: the case that matters
    monkeypatch.setattr(applied, "boot_id", lambda: None if boot == "none" else (this[0] ^ 1, this[1]))
    with Engine(root) as e:
        assert (e.recovery.records, e.recovery.applied_before) == (2, 0)
    assert len(_closes(root)) == 2 * SYMS


def test_a_record_logged_but_not_applied_is_replayed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _die_after(root, """
        e.write_many(minute(0))
        import mktsframe.engine.engine as m
        m.Engine._apply_write = lambda *a: os._exit(3)  # dies after the log's sync, before the apply
        e.write("S001/1Min/OHLCV", minute(1, 6.0)["S001/1Min/OHLCV"])
    """)
    with Engine(root) as e:
        assert (e.recovery.records, e.recovery.applied_before) == (2, 0)
        assert list(e.query("S001/1Min/OHLCV")["S001/1Min/OHLCV"].columns["Close"]) == [2.0, 7.0]


def test_tick_changes_since_the_checkpoint_are_replayed_and_a_checkpoint_clears_them(tmp_path: Path) -> None:
    """A tick partition's durable state moves only at checkpoints, and replay rolls back to it: a log
    with tick changes since the checkpoint is always replayed."""
    ticks = "Batch(np.array([T0 + 5, T0 + 9]), {'Bid': np.ones(2)}, True)"
    root = tmp_path / "ticks"
    _die_after(root, f"e.write('EUR/1Sec/TICK', {ticks}, variable_length=True); e.write_many(minute(0))")
    with Engine(root) as e:
        assert (e.recovery.records, e.recovery.applied_before) == (3, 0)  # create, ticks, bars
        assert e.query("EUR/1Sec/TICK")["EUR/1Sec/TICK"].index.tolist() == [T0 + 5, T0 + 9]
    root = tmp_path / "after-checkpoint"
    _die_after(root, f"e.write('EUR/1Sec/TICK', {ticks}, variable_length=True); e.checkpoint(); "
                     "e.write_many(minute(0))")
    with Engine(root) as e:
        assert (e.recovery.records, e.recovery.applied_before) == (0, 1)
        assert e.query("EUR/1Sec/TICK")["EUR/1Sec/TICK"].index.tolist() == [T0 + 5, T0 + 9]
