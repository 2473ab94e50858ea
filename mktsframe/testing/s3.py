"""A real S3 endpoint on loopback for tests and benchmarks: moto's server mode (``moto[server]``).

Not a mock of fsspec or boto: s3fs, ArcticDB or any S3 client talk HTTP to it on a free port, so
ranged ``GET``s, ``PUT``s and listings go through the same client code as against a cloud store.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["S3Server", "s3_server"]

ACCESS_KEY = "testing"
SECRET_KEY = "testing"


@dataclass(frozen=True)
class S3Server:
    """A running endpoint: ``endpoint`` (``http://127.0.0.1:PORT``) and the options s3fs needs."""

    host: str
    port: int
    storage_options: dict[str, Any] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def make_bucket(self, name: str) -> None:
        import s3fs

        fs = s3fs.S3FileSystem(**self.storage_options, skip_instance_cache=True)
        fs.mkdir(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """Start moto's S3 server on a free loopback port for the block (stopped after)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Server(
            "127.0.0.1",
            port,
            {
                "key": ACCESS_KEY,
                "secret": SECRET_KEY,
                "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"},
            },
        )
    finally:
        server.stop()
