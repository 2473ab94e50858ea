"""Fixtures that run the real server as a subprocess on a free loopback port.

Every server gets its own temporary data root; the fixtures stop it (SIGTERM, then SIGKILL if it
does not exit) and pytest removes the directory. Tests use unique keys (``sym``) so one
session-wide server can be shared.
"""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymarketstore as pymkts
import pytest
from live_helpers import TRANSPORTS, ServerProcess, mkts_client, start_server


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the whole session (tests use distinct keys)."""
    server = start_server(tmp_path_factory.mktemp("live-server"))
    yield server
    rc = server.stop()
    assert rc in (0, -signal.SIGTERM, 128 + signal.SIGTERM), server.output()


@pytest.fixture(scope="session")
def live_server_ny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A session server whose ``timezone`` is America/New_York: results must not depend on it."""
    server = start_server(tmp_path_factory.mktemp("live-server-ny"), config={"timezone": "America/New_York"})
    yield server
    rc = server.stop()
    assert rc in (0, -signal.SIGTERM, 128 + signal.SIGTERM), server.output()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers with their own config and root; all are stopped after the test."""
    started: list[ServerProcess] = []
    counter = itertools.count()

    def make(
        config: dict[str, Any] | None = None, root: Path | None = None, nofile: int | None = None
    ) -> ServerProcess:
        s = start_server(tmp_path / f"srv{next(counter)}", root=root, config=config, nofile=nofile)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop(timeout=15)


_ids = itertools.count()


@pytest.fixture
def sym() -> str:
    """A symbol no other test uses (the session server is shared)."""
    return f"S{os.getpid()}X{next(_ids)}"


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """``"http"`` (msgpack ``/rpc``) or ``"grpc"``: tests taking it run over both APIs."""
    return str(request.param)


@pytest.fixture
def client(live_server: ServerProcess, transport: str) -> pymkts.Client:
    """The unmodified pymarketstore client of the session server, over each API in turn."""
    return mkts_client(live_server, transport)
