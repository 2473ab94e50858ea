"""User-facing IO: pandas functions and accessors."""

from mktsframe.io.csv_loader import CsvDescription, CsvLoadError, LoadResult, load_csv
from mktsframe.io.pandas import read_mkts, write_many, write_mkts

__all__ = ["CsvDescription", "CsvLoadError", "LoadResult", "load_csv", "read_mkts", "write_many", "write_mkts"]
