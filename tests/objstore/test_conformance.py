"""The conformance suite (mktsframe.testing.conformance) on every backend: local, HTTP, object storage."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import mktsframe
from mktsframe.backend.base import Backend
from mktsframe.backend.local import LocalBackend
from mktsframe.publish import sync
from mktsframe.server.launch import ServerProcess
from mktsframe.testing.conformance import BackendConformance
from mktsframe.testing.s3 import S3Server


class TestLocal(BackendConformance):
    @pytest.fixture
    def backend(self, populated: LocalBackend) -> LocalBackend:
        return populated


class TestLocalCopyReadOnly(BackendConformance):
    """A root copied without its engine state, opened read-only (the bucket cache must hold)."""

    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, populated: LocalBackend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
        populated.engine.checkpoint()
        copy = tmp_path_factory.mktemp("copy") / "data"
        shutil.copytree(populated.root, copy, ignore=shutil.ignore_patterns("generation", "lock", "wal"))
        db = mktsframe.connect(copy, read_only=True)
        yield db
        db.close()


@pytest.mark.server
class TestHTTP(BackendConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
        root = tmp_path_factory.mktemp("served") / "data"
        with ServerProcess(root, timeout=60) as server:
            db = mktsframe.connect(server.url)
            from mktsframe.testing.conformance import populate

            populate(db)
            yield db
            db.close()


class TestMemoryStore(BackendConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, populated: LocalBackend) -> Iterator[Backend]:
        url = "memory://conformance"
        sync(populated, url)
        db = mktsframe.connect(url)
        yield db
        db.close()


class TestFileStore(BackendConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, populated: LocalBackend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
        folder: Path = tmp_path_factory.mktemp("published")
        sync(populated, folder.as_uri())
        db = mktsframe.connect(folder.as_uri())
        assert type(db).__name__ == "ObjectStoreBackend"
        yield db
        db.close()


class TestS3(BackendConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, populated: LocalBackend, s3: S3Server) -> Iterator[Backend]:
        url = "s3://mkts/conformance"
        sync(populated, url, storage_options=s3.storage_options)
        db = mktsframe.connect(url, storage_options=s3.storage_options)
        yield db
        db.close()
