"""mktsframe: a financial time-series database for pandas, xarray and Jupyter.

``import mktsframe`` registers ``pd.read_mkts``, ``DataFrame.to_mkts`` and the ``DataFrame.mkts``
accessor.
"""

from mktsframe.backend import Backend, Batch, BucketInfo, connect, set_default_backend
from mktsframe.config import Config, load_config
from mktsframe.errors import (
    BucketExistsError,
    BucketNotFoundError,
    CorruptFileError,
    InvalidKeyError,
    LockedError,
    MktsError,
    ReadOnlyError,
    SchemaMismatchError,
)
from mktsframe.io import read_mkts, write_mkts
from mktsframe.io.accessor import register as _register

__version__ = "0.1.0"

__all__ = [
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
    "SchemaMismatchError",
    "__version__",
    "connect",
    "load_config",
    "read_mkts",
    "set_default_backend",
    "write_mkts",
]

_register()
