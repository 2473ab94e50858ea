"""Fixtures for the object-storage and Dask tests: a populated root, moto's S3 server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import mktsframe
from mktsframe.backend.local import LocalBackend
from mktsframe.testing.conformance import populate
from mktsframe.testing.s3 import S3Server, s3_server


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """One S3 endpoint for the session (each test uses its own bucket or prefix)."""
    with s3_server() as server:
        server.make_bucket("mkts")
        yield server


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBackend]:
    """A writable local root holding the conformance data (closed after the module)."""
    db = mktsframe.connect(tmp_path_factory.mktemp("root") / "data", read_only=False)
    assert isinstance(db, LocalBackend)
    populate(db)
    yield db
    db.close()


def root_of(db: LocalBackend) -> Path:
    return db.root
