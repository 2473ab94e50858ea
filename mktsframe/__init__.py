"""mktsframe: a financial time-series database for pandas, xarray and Jupyter.

``import mktsframe`` registers ``pd.read_mkts``, ``DataFrame.to_mkts`` and the ``DataFrame.mkts``
accessor.
"""

from mktsframe.backend import Backend, Batch, BucketInfo, connect, set_default_backend
from mktsframe.config import Config, load_config
from mktsframe.errors import (
    AccessDeniedError,
    BucketExistsError,
    BucketNotFoundError,
    CorruptFileError,
    InvalidKeyError,
    LockedError,
    MktsError,
    ReadOnlyError,
    SchemaMismatchError,
    SQLError,
)
from mktsframe.io import read_mkts, write_many, write_mkts
from mktsframe.io.accessor import register as _register
from mktsframe.io.dask import read_dask
from mktsframe.publish import list_snapshots, sync

__version__ = "0.1.0"

__all__ = [
    "AccessDeniedError",
    "Backend",
    "Batch",
    "BucketExistsError",
    "BucketInfo",
    "BucketNotFoundError",
    "Config",
    "CorruptFileError",
    "InvalidKeyError",
    "LockedError",
    "MktsError",
    "ReadOnlyError",
    "SQLError",
    "SchemaMismatchError",
    "__version__",
    "connect",
    "list_snapshots",
    "load_config",
    "load_ipython_extension",
    "read_dask",
    "read_mkts",
    "set_default_backend",
    "sync",
    "write_many",
    "write_mkts",
]



def load_ipython_extension(ip: object) -> None:
    """``%load_ext mktsframe``: the ``%mkts`` magic (see :mod:`mktsframe.magics`)."""
    from mktsframe.magics import load_ipython_extension as load

    load(ip)


def unload_ipython_extension(ip: object) -> None:
    from mktsframe.magics import unload_ipython_extension as unload

    unload(ip)


_register()
