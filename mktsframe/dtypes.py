"""Column types: MarketStore's wire type strings, their numpy dtypes, and safe coercion.

Every column of a bucket has one of :data:`WIRE_TYPES`. On disk and on the wire values are
little-endian and never carry a byte-order prefix (``f4``, not ``<f4``), as pymarketstore sends
them. ``U16`` is sixteen UTF-32 code points (64 bytes, numpy ``<U16``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mktsframe.errors import SchemaMismatchError

__all__ = ["WIRE_TYPES", "Schema", "coerce_column", "dtype_of", "nanoseconds_part", "validate_schema", "wire_type"]

#: Wire type string → numpy dtype. ``bool`` is storable here (MarketStore could not return it).
WIRE_TYPES: dict[str, np.dtype] = {
    "i1": np.dtype("<i1"), "i2": np.dtype("<i2"), "i4": np.dtype("<i4"), "i8": np.dtype("<i8"),
    "u1": np.dtype("<u1"), "u2": np.dtype("<u2"), "u4": np.dtype("<u4"), "u8": np.dtype("<u8"),
    "f4": np.dtype("<f4"), "f8": np.dtype("<f8"), "U16": np.dtype("<U16"), "bool": np.dtype("?"),
}  # fmt: skip

#: Longest accepted column name, in UTF-8 bytes, and most columns per bucket (MarketStore's limits,
#: but enforced with an error instead of silent truncation).
MAX_NAME_BYTES = 64
MAX_COLUMNS = 1024
#: Names the engine owns: the time index. ``Nanoseconds`` is an ordinary column in fixed buckets.
RESERVED_NAMES = frozenset({"Epoch"})

Schema = tuple[tuple[str, str], ...]
"""A bucket schema: ``((name, wire_type), ...)`` in storage order, ``Epoch`` excluded."""


def wire_type(dtype: np.dtype | str) -> str:
    """The wire type string of a numpy dtype, or raise naming the dtype."""
    dt = np.dtype(dtype)
    if dt.kind == "U":
        if dt.itemsize // 4 > 16:
            raise SchemaMismatchError(f"string dtype {dt} is wider than U16")
        return "U16"
    if dt.kind == "b":
        return "bool"
    if dt.kind in "iuf" and dt.itemsize in (1, 2, 4, 8):
        name = f"{dt.kind}{dt.itemsize}"
        if name in WIRE_TYPES:
            return name
    raise SchemaMismatchError(f"unsupported column dtype {dt} (supported: {', '.join(WIRE_TYPES)})")


def dtype_of(type_string: str) -> np.dtype:
    """Numpy dtype for a wire type string; accepts a ``<``/``|`` prefix as numpy prints it."""
    key = type_string.lstrip("<|=") if isinstance(type_string, str) else type_string
    try:
        return WIRE_TYPES[key]
    except (KeyError, TypeError):
        raise SchemaMismatchError(
            f"unsupported type string {type_string!r} (supported: {', '.join(WIRE_TYPES)})"
        ) from None


def validate_schema(columns: Sequence[tuple[str, str]]) -> Schema:
    """Check names and types of a new bucket's columns and return the canonical schema."""
    if len(columns) > MAX_COLUMNS:
        raise SchemaMismatchError(f"too many columns ({len(columns)} > {MAX_COLUMNS})")
    seen: set[str] = set()
    out = []
    for name, tstr in columns:
        if not isinstance(name, str) or not name:
            raise SchemaMismatchError(f"column names must be non-empty strings, got {name!r}")
        if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise SchemaMismatchError(f"column name {name!r} is longer than {MAX_NAME_BYTES} bytes")
        if "\x00" in name:
            raise SchemaMismatchError(f"column name {name!r} contains NUL")
        if name in RESERVED_NAMES:
            raise SchemaMismatchError(f"column name {name!r} is reserved for the time index")
        if name in seen:
            raise SchemaMismatchError(f"duplicate column name {name!r}")
        seen.add(name)
        out.append((name, wire_type(dtype_of(tstr))))
    return tuple(out)


def coerce_column(name: str, values: np.ndarray, target: str) -> np.ndarray:
    """Return ``values`` as the bucket's type, or raise if that would lose information.

    Allowed: any numeric value to a float column (``f8`` → ``f4`` rounds, as MarketStore does),
    integers to a wider-or-equal integer column, or to a narrower one when every value fits, and
    strings of at most 16 characters to ``U16``. Refused: floats into integer columns,
    anything to/from ``bool`` except ``bool``, and over-long strings — never silent truncation.
    """
    dt = WIRE_TYPES[target]
    src = values.dtype
    if src == dt:
        return values
    kind = src.kind
    if dt.kind == "f" and kind in "iuf":
        return values.astype(dt)
    if dt.kind in "iu" and kind in "iu":
        if np.can_cast(src, dt, "safe"):
            return values.astype(dt)
        info = np.iinfo(dt)
        if values.size == 0 or (values.min() >= info.min and values.max() <= info.max):
            return values.astype(dt)
        raise SchemaMismatchError(f"column {name!r}: values out of range for the bucket's {target} column")
    if dt.kind == "U" and kind in "UO":
        arr = np.asarray(values, dtype=str) if kind == "O" else values
        if arr.size and np.char.str_len(arr).max() > 16:
            raise SchemaMismatchError(f"column {name!r}: strings longer than 16 characters do not fit U16")
        return arr.astype(dt)
    raise SchemaMismatchError(f"column {name!r}: cannot store {src} values in the bucket's {target} column")


_NS = 1_000_000_000


def nanoseconds_part(values: np.ndarray, column: str = "Nanoseconds") -> np.ndarray:
    """``values`` as int64 nanoseconds within a second, checked: any integer dtype, each in [0, 10⁹).

    MarketStore's tick writes carry the sub-second part of each time in a ``Nanoseconds`` column
    (``int32`` in pymarketstore's day; pandas >= 2 keeps ``int64``). An out-of-range value raises
    :class:`SchemaMismatchError` naming the column, the first bad row and its value.
    """
    arr = np.asarray(values)
    if arr.dtype.kind not in "iu":
        raise SchemaMismatchError(f"column {column!r} must hold integers (nanoseconds in [0, 999999999]), "
                                  f"not {arr.dtype}")  # fmt: skip
    if arr.size and (arr.min() < 0 or arr.max() >= _NS):
        row = int(np.flatnonzero((arr < 0) | (arr >= _NS))[0])
        raise SchemaMismatchError(f"column {column!r}, row {row}: {arr[row]} is not in [0, 999999999] "
                                  "(the nanoseconds within the second of Epoch)")  # fmt: skip
    return arr.astype(np.int64)
