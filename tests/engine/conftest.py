"""Fixtures for engine tests: a fresh data root per test, engines always closed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import mktsframe
from mktsframe.backend.local import LocalBackend


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def db(root: Path) -> Iterator[LocalBackend]:
    backend = mktsframe.connect(root, read_only=False)
    assert isinstance(backend, LocalBackend)
    yield backend
    backend.close()
