"""Shared fixtures: a fresh data root per test, and engines/backends that are always closed."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import mktsframe
from mktsframe.backend.local import LocalBackend
from mktsframe.engine import Engine


@pytest.fixture
def tmp_root(tmp_path: Path) -> Path:
    """A data root that does not exist yet, inside the test's own temporary directory."""
    return tmp_path / "data"


@pytest.fixture
def open_engine(tmp_root: Path) -> Iterator[Callable[..., Engine]]:
    """Open engines (default: ``tmp_root``, read-write); every one is closed after the test."""
    opened: list[Engine] = []

    def make(root: Path | None = None, **options: Any) -> Engine:
        options.setdefault("read_only", False)
        engine = Engine(root if root is not None else tmp_root, **options)
        opened.append(engine)
        return engine

    yield make
    for engine in reversed(opened):
        engine.close()
    gc.collect()


@pytest.fixture
def engine(open_engine: Callable[..., Engine]) -> Engine:
    """A read-write engine on ``tmp_root``."""
    return open_engine()


@pytest.fixture
def open_db(tmp_root: Path) -> Iterator[Callable[..., LocalBackend]]:
    """Open backends with :func:`mktsframe.connect`; all are closed after the test."""
    opened: list[LocalBackend] = []

    def make(root: Path | None = None, **options: Any) -> LocalBackend:
        db = mktsframe.connect(root if root is not None else tmp_root, **options)
        assert isinstance(db, LocalBackend)
        opened.append(db)
        return db

    yield make
    for db in reversed(opened):
        db.close()


@pytest.fixture
def db(open_db: Callable[..., LocalBackend]) -> LocalBackend:
    """A read-write local backend on ``tmp_root``."""
    return open_db(read_only=False)


@pytest.fixture(params=["numpy", "compiled"])
def kernel_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """A test that uses this runs twice: on the numpy/Python loops, and on the compiled kernels
    (numba, the ``fast`` extra) even for a handful of files. Both must give the same results.
    Subprocesses inherit ``MKTS_NO_NUMBA``; a module opts in with
    ``pytestmark = pytest.mark.usefixtures("kernel_path")``."""
    from mktsframe.engine import kernels

    if request.param == "numpy":
        monkeypatch.setenv("MKTS_NO_NUMBA", "1")
    else:
        monkeypatch.delenv("MKTS_NO_NUMBA", raising=False)
        assert kernels.available(), "numba is part of the test install ('fast' extra)"
        monkeypatch.setattr(kernels, "MIN_FILES", 1)
    return request.param
