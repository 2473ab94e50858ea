"""One module per measured system; :data:`SYSTEMS` maps a system name to where and how it runs.

Each entry is ``(module, class name, venv)``: ``venv`` is ``"main"`` for the project venv (pandas 3,
mktsframe) or ``"peers"`` for ``bench/.venv-peers`` (pandas 2, ArcticDB, which needs pandas < 3).
Modules are imported lazily, so a worker only imports the libraries of the system it runs.
"""

from __future__ import annotations

import importlib

from bench.systems.base import System

SYSTEMS: dict[str, tuple[str, str, str]] = {
    "mktsframe": ("bench.systems.mkts", "MktsSystem", "main"),
    "mktsframe-bg": ("bench.systems.mkts", "MktsBackgroundSystem", "main"),
    "memmap": ("bench.systems.memmap", "MemmapSystem", "main"),
    "pandas-inmem": ("bench.systems.pandas_inmem", "PandasSystem", "main"),
    "arcticdb-lmdb": ("bench.systems.arcticdb", "ArcticSystem", "peers"),
    "hdf5-table": ("bench.systems.hdf5", "HDFSystem", "peers"),
    "parquet": ("bench.systems.parquet", "ParquetSystem", "peers"),
    # mktsframe's server over loopback (bench/systems/server.py): pymarketstore (HTTP, gRPC) and the HTTP backend
    "server-pymarketstore": ("bench.systems.server", "PymktsServerSystem", "main"),
    "server-pymarketstore-grpc": ("bench.systems.server", "PymktsGrpcServerSystem", "main"),
    "server-http": ("bench.systems.server", "HttpServerSystem", "main"),
    # the baselines again under the peers' pandas 2, for reference (DataFrame construction differs)
    "memmap-pd2": ("bench.systems.memmap", "MemmapSystem", "peers"),
    "pandas-inmem-pd2": ("bench.systems.pandas_inmem", "PandasSystem", "peers"),
}

DEFAULT_SYSTEMS = ["mktsframe", "mktsframe-bg", "memmap", "pandas-inmem", "arcticdb-lmdb", "hdf5-table", "parquet",
                   "memmap-pd2", "pandas-inmem-pd2", "server-pymarketstore", "server-pymarketstore-grpc", "server-http"]


def load(name: str, root: str) -> System:
    """Instantiate system ``name`` with its data directory ``root``."""
    module, cls, _venv = SYSTEMS[name]
    obj: System = getattr(importlib.import_module(module), cls)(root)
    obj.name = name
    return obj


__all__ = ["DEFAULT_SYSTEMS", "SYSTEMS", "System", "load"]
