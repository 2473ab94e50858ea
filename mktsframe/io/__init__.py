"""User-facing IO: pandas functions and accessors."""

from mktsframe.io.pandas import read_mkts, write_mkts

__all__ = ["read_mkts", "write_mkts"]
