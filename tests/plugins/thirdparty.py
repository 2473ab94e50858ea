"""A third-party plugin package, written to a directory with its own ``*.dist-info`` entry points.

Putting the directory on ``sys.path`` (or ``PYTHONPATH`` for a server process) installs it as far
as :mod:`importlib.metadata` is concerned: discovery is exercised for real, not patched.
"""

from __future__ import annotations

import itertools
from pathlib import Path

__all__ = ["make_package"]

SOURCE = '''
"""Plugins of a package that is not mktsframe."""
import threading
import time

import numpy as np

from mktsframe.backend.base import Batch

RELEASE = threading.Event()  # lets a test un-hang the Hang trigger


class Recorder:
    """Appends one line per event: ``op key rows``; ``started`` once ``start`` ran."""

    def __init__(self, config):
        self.path = config["path"]
        self.delay = float(config.get("delay", 0))

    def start(self, backend):
        with open(self.path, "a") as f:
            f.write("started\\n")

    def fire(self, backend, events):
        time.sleep(self.delay)
        with open(self.path, "a") as f:
            for ev in events:
                f.write(f"{ev.op} {ev.key} {0 if ev.batch is None else len(ev.batch)}\\n")

    def stop(self):
        with open(self.path, "a") as f:
            f.write("stopped\\n")


class Boom:
    def __init__(self, config):
        pass

    def fire(self, backend, events):
        raise RuntimeError("boom: a broken trigger")


class Hang:
    def __init__(self, config):
        pass

    def fire(self, backend, events):
        RELEASE.wait(60)


class BadStart:
    def __init__(self, config):
        pass

    def start(self, backend):
        raise RuntimeError("cannot start")

    def fire(self, backend, events):
        raise AssertionError("fire after a failed start")


class Copier:
    """Writes the Close of each written 1Min bar to SYM/1Min/COPY (a trigger that writes)."""

    def __init__(self, config):
        pass

    def fire(self, backend, events):
        for ev in events:
            if ev.op == "write":
                sym = ev.key.split("/")[0]
                backend.write(f"{sym}/1Min/COPY", Batch(ev.batch.index, {"Close": ev.batch.columns["Close"]}))


def bad_factory(config):
    raise ValueError("bad config for this plugin")


class Ticker:
    """Writes one bar a tick to ``key`` until stopped."""

    def __init__(self, config):
        self.key = config["key"]
        self.every = float(config.get("every", 0.05))

    def run(self, backend, stop):
        minute = 0
        while not stop.wait(self.every):
            idx = np.array([1_700_000_000 + 60 * minute], np.int64) * 1_000_000_000
            backend.write(self.key, Batch(idx, {"Close": np.array([float(minute)])}))
            minute += 1


class Crasher:
    """Raises at once; appends a line to ``path`` per run."""

    def __init__(self, config):
        self.path = config["path"]

    def run(self, backend, stop):
        with open(self.path, "a") as f:
            f.write(f"{time.monotonic()}\\n")
        raise RuntimeError("crasher crashed")
'''

_names = itertools.count()


def make_package(directory: Path) -> str:
    """Write the package into ``directory``; returns its (unique) module name."""
    name = f"mkts_thirdparty_{next(_names)}_{abs(hash(str(directory))) % 10**8}"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.py").write_text(SOURCE)
    info = directory / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    triggers = ["recorder = {m}:Recorder", "boom = {m}:Boom", "hang = {m}:Hang", "badstart = {m}:BadStart",
                "copier = {m}:Copier", "badfactory = {m}:bad_factory"]  # fmt: skip
    workers = ["ticker = {m}:Ticker", "crasher = {m}:Crasher"]
    text = "[mktsframe.triggers]\n" + "\n".join(triggers) + "\n\n[mktsframe.bgworkers]\n" + "\n".join(workers) + "\n"
    (info / "entry_points.txt").write_text(text.format(m=name))
    return name
