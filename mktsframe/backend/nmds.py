"""NumpyMultiDataset (NMDS): MarketStore's column container, to and from :class:`Batch`.

Written once for both ends of the wire: the server decodes write requests and encodes query
results with it, :class:`~mktsframe.backend.http.HTTPBackend` encodes its writes and decodes
the results (both with :func:`encode` and :func:`decode`).

On the wire a dataset is a flat map ``{names, types, data, length, startindex, lengths}``: one
byte string per column holding every row of every key, little-endian, with ``startindex`` /
``lengths`` slicing it per key (see ``docs/server.md`` and the pymarketstore wire spec §2.2).

Units: the wire's ``Epoch`` column is int64 **seconds**; a :class:`Batch` index is int64
**nanoseconds**. Fixed buckets store bar starts, which are whole seconds, so the conversion is
exact in both directions; sub-second parts on writes are floored exactly as the engine does.

Decoding never trusts a size field: every column buffer must be exactly ``length * itemsize``
bytes *before* anything is allocated, so a hostile ``length`` cannot make us allocate memory the
request did not already bring.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mktsframe.backend.base import Batch, Stacked
from mktsframe.dtypes import MAX_COLUMNS, WIRE_TYPES, wire_type
from mktsframe.errors import SchemaMismatchError
from mktsframe.stacking import bucket_major

__all__ = [
    "CATEGORY_SUFFIX", "DecodedDataset", "EpochSeconds", "decode", "encode", "encode_stacked", "wire_type_of",
    "with_key_rows",
]

NS = 1_000_000_000
#: MarketStore appends the key category to result keys; pymarketstore keeps the part before ``:``.
CATEGORY_SUFFIX = ":Symbol/Timeframe/AttributeGroup"
#: Epoch seconds whose nanosecond value still fits in int64 (about ±292 years around 1970).
EPOCH_MIN_S = -(2**63) // NS + 1
EPOCH_MAX_S = (2**63 - 1) // NS - 1

# Type strings accepted on the wire → canonical wire type. ``b1`` is what numpy (and so
# pymarketstore) prints for bool once the ``|`` prefix is stripped.
_ALIASES = {"b1": "bool", "?": "bool"}


def wire_type_of(type_string: object) -> str:
    """Canonical wire type of a request's type string, or :class:`SchemaMismatchError` naming it."""
    if not isinstance(type_string, str):
        raise SchemaMismatchError(f"unsupported type string {type_string!r}: types must be strings like 'f4'")
    key = type_string.lstrip("<|=")
    key = _ALIASES.get(key, key)
    if key not in WIRE_TYPES:
        raise SchemaMismatchError(
            f"unsupported type string {type_string!r} (supported: {', '.join(WIRE_TYPES)})"
        )
    return key


@dataclass(frozen=True)
class DecodedDataset:
    """A validated NMDS: per-key row ranges over shared column arrays (zero-copy views)."""

    names: tuple[str, ...]
    types: tuple[str, ...]
    columns: dict[str, np.ndarray]
    length: int
    slices: dict[str, tuple[int, int]]
    """key as sent → (first row, row count), in the order sent."""

    def batch(self, key: str, *, epoch_required: bool = True) -> tuple[Batch, np.ndarray | None]:
        """The rows of ``key`` as a Batch (index in ns) plus its wire ``Epoch`` seconds."""
        start, count = self.slices[key]
        return self.rows(slice(start, start + count), key, epoch_required=epoch_required)

    def rows(self, sl: slice, what: str, *, epoch_required: bool = True) -> tuple[Batch, np.ndarray | None]:
        """The rows ``sl`` (of any keys) as a Batch plus their wire ``Epoch`` seconds; ``what``
        names them in an error."""
        epoch = self.columns.get("Epoch")
        if epoch is None:
            if epoch_required:
                raise SchemaMismatchError("the dataset has no Epoch column (int64 epoch seconds)")
            return Batch(np.empty(0, np.int64), {}), None
        secs = epoch[sl]
        if secs.size and (int(secs.min()) < EPOCH_MIN_S or int(secs.max()) > EPOCH_MAX_S):
            raise SchemaMismatchError(
                f"Epoch values for {what!r} are outside the representable range "
                f"[{EPOCH_MIN_S}, {EPOCH_MAX_S}] seconds"
            )
        index = secs.astype(np.int64) * NS
        cols = {n: v[sl] for n, v in self.columns.items() if n != "Epoch"}
        return Batch(index, cols), secs


def decode(ds: object, *, what: str = "dataset") -> DecodedDataset:
    """Validate and decode one wire NMDS map.

    Raises :class:`SchemaMismatchError` (or ``ValueError`` for structural problems) naming the
    first problem found; nothing is allocated beyond views over the request's own buffers.
    """
    if not isinstance(ds, Mapping):
        raise ValueError(f"{what} must be a map with names/types/data/length/startindex/lengths")
    names = _seq(ds, "names", what)
    types = _seq(ds, "types", what)
    data = _seq(ds, "data", what)
    length = ds.get("length")
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise ValueError(f"{what}.length must be a non-negative integer, got {_short(length)}")
    if not (len(names) == len(types) == len(data)):
        raise SchemaMismatchError(
            f"{what}: names ({len(names)}), types ({len(types)}) and data ({len(data)}) must have the same length"
        )
    if len(names) > MAX_COLUMNS + 2:
        raise SchemaMismatchError(f"{what}: too many columns ({len(names)})")
    seen: set[str] = set()
    columns: dict[str, np.ndarray] = {}
    canon_types: list[str] = []
    for name, tstr, buf in zip(names, types, data, strict=True):
        if not isinstance(name, str) or not name:
            raise SchemaMismatchError(f"{what}: column names must be non-empty strings, got {_short(name)}")
        if name in seen:
            raise SchemaMismatchError(f"{what}: duplicate column name {name!r}")
        seen.add(name)
        wt = wire_type_of(tstr)
        if name == "Epoch" and wt != "i8":
            raise SchemaMismatchError(f"unexpected data type for Epoch column: {tstr!r} (must be i8, epoch seconds)")
        if name == "Nanoseconds" and wt[0] not in "iu":  # i4 as MarketStore, or any integer (pandas >= 2: i8)
            raise SchemaMismatchError(f"unexpected data type for Nanoseconds column: {tstr!r} (want an integer type)")
        if not isinstance(buf, (bytes, bytearray, memoryview)):
            raise SchemaMismatchError(f"{what}: data for column {name!r} must be binary, got {type(buf).__name__}")
        dt = WIRE_TYPES[wt]
        if len(buf) != length * dt.itemsize:
            raise SchemaMismatchError(
                f"{what}: column {name!r} has {len(buf)} bytes; {length} rows of {wt} need {length * dt.itemsize}"
            )
        columns[name] = np.frombuffer(buf, dtype=dt)
        canon_types.append(wt)
    startindex = ds.get("startindex")
    lengths = ds.get("lengths")
    if not isinstance(startindex, Mapping) or not isinstance(lengths, Mapping):
        raise ValueError(f"{what}.startindex and {what}.lengths must be maps of key → row")
    if set(startindex) != set(lengths):
        raise ValueError(f"{what}: startindex and lengths must name the same keys")
    slices = _fast_slices(startindex, lengths, length)
    if slices is not None:
        return DecodedDataset(tuple(names), tuple(canon_types), columns, length, slices)
    slices = {}
    for key, first in startindex.items():
        count = lengths[key]
        if not isinstance(key, str):
            raise ValueError(f"{what}: keys must be strings, got {_short(key)}")
        for label, v in (("startindex", first), ("lengths", count)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{what}.{label}[{key!r}] must be a non-negative integer, got {_short(v)}")
        if first + count > length:
            raise ValueError(f"{what}: rows {first}..{first + count} of {key!r} exceed length {length}")
        slices[key] = (first, count)
    return DecodedDataset(tuple(names), tuple(canon_types), columns, length, slices)


def _fast_slices(
    startindex: Mapping[Any, Any], lengths: Mapping[Any, Any], length: int
) -> dict[str, tuple[int, int]] | None:
    """The key → (first row, row count) map when every entry is valid, checked in bulk (a universe
    names 5,000 keys: one by one that was 9 ms a request); ``None`` sends the caller to the
    one-by-one check, which names the first bad entry."""
    keys = list(startindex)
    firsts = [startindex[k] for k in keys]
    counts = [lengths[k] for k in keys]
    if not (all(type(k) is str for k in keys) and all(type(v) is int for v in firsts)
            and all(type(v) is int for v in counts)):  # fmt: skip
        return None
    try:
        f, c = np.array(firsts, np.int64), np.array(counts, np.int64)
    except OverflowError:
        return None
    if keys and ((f < 0).any() or (c < 0).any() or (f > length).any() or (c > length - f).any()):  # no overflow
        return None
    return dict(zip(keys, zip(firsts, counts, strict=True), strict=True))


def encode(
    parts: Iterable[tuple[str, Batch]],
    *,
    names: Sequence[str] | None = None,
    key_suffix: str = CATEGORY_SUFFIX,
) -> dict[str, Any]:
    """One NMDS holding the rows of every ``(key, batch)`` (all with the same columns and types).

    Tick batches (``variable_length``) get MarketStore's last column, ``Nanoseconds`` (int32): each
    row's time is ``Epoch`` seconds + ``Nanoseconds``, exactly.

    Column buffers are ``memoryview``\\ s (no copy when a single batch is sent) and ``Epoch`` is an
    :class:`EpochSeconds`, converted while it is sent; :func:`mktsframe.server.rpc.encode` packs
    them (``bytes()`` of it otherwise). ``names`` fixes the column order (default: the first batch's).
    """
    parts = list(parts)
    if names is None:
        names = list(parts[0][1].columns) if parts else []
    dtypes = [_wire_dtype(n, parts[0][1].columns[n]) if parts else None for n in names]
    startindex: dict[str, int] = {}
    lengths: dict[str, int] = {}
    row = 0
    for key, b in parts:
        startindex[key + key_suffix] = row
        lengths[key + key_suffix] = len(b)
        row += len(b)
    ticks = bool(parts) and parts[0][1].variable_length
    data: list[Any] = [EpochSeconds([b.index for _, b in parts])]
    types = ["i8"]
    for n, (wt, dt) in zip(names, dtypes, strict=True):  # type: ignore[misc]
        data.append(_join([b.columns[n] for _, b in parts], dt))
        types.append(wt)
    names = list(names)
    if ticks:  # MarketStore's trailing sub-second column
        data.append(_join([b.index - np.floor_divide(b.index, NS) * NS for _, b in parts], np.dtype("<i4")))
        types.append("i4")
        names.append("Nanoseconds")
    return {
        "names": ["Epoch", *names],
        "types": types,
        "data": data,
        "length": row,
        "startindex": startindex,
        "lengths": lengths,
    }


def encode_stacked(stacked: Stacked, *, key_suffix: str = CATEGORY_SUFFIX) -> dict[str, Any]:
    """:func:`encode` of the buckets of ``stacked`` (every one named, with zero rows where it has
    none): the same dataset, built from one array per column instead of a :class:`Batch` per
    bucket (a universe's cross-section is 5,000 of them)."""
    index, columns, counts = bucket_major(stacked)
    ds = encode([("", Batch(index, columns, stacked.variable_length))], key_suffix="")
    return with_key_rows(ds, stacked.keys, counts, key_suffix)


def with_key_rows(ds: dict[str, Any], keys: Sequence[str], counts: np.ndarray, key_suffix: str) -> dict[str, Any]:
    """``ds`` (its rows grouped by key, ``counts[j]`` rows of ``keys[j]`` in that order) with the
    ``startindex`` / ``lengths`` maps naming each key."""
    named = [k + key_suffix for k in keys]
    ds["startindex"] = dict(zip(named, (np.cumsum(counts) - counts).tolist(), strict=True))
    ds["lengths"] = dict(zip(named, counts.tolist(), strict=True))
    return ds


class EpochSeconds:
    """The wire ``Epoch`` column (int64 seconds, little-endian) of ns index arrays, computed a slice at
    a time as it is sent: a whole-bucket reply never holds a second copy of its timestamps.

    ``bytes(col)`` builds it whole (small replies, JSON).
    """

    #: Rows converted per slice (1 MiB of output).
    SLICE_ROWS = 1 << 17

    def __init__(self, index_ns: Sequence[np.ndarray]) -> None:
        self.index_ns = list(index_ns)
        self.nbytes = 8 * sum(len(a) for a in self.index_ns)

    def slices(self) -> Iterator[memoryview]:
        for a in self.index_ns:
            for i in range(0, len(a), self.SLICE_ROWS):
                sec = np.floor_divide(a[i : i + self.SLICE_ROWS], NS).astype("<i8", copy=False)
                yield memoryview(sec).cast("B")

    def __bytes__(self) -> bytes:
        return b"".join(self.slices())


def _wire_dtype(name: str, values: np.ndarray) -> tuple[str, np.dtype]:
    wt = wire_type(values.dtype)
    return ("bool" if wt == "bool" else wt), WIRE_TYPES[wt]


def _join(arrays: list[np.ndarray], dt: np.dtype) -> memoryview:
    if len(arrays) == 1:
        out = np.ascontiguousarray(arrays[0], dtype=dt)
    else:
        out = np.concatenate([np.asarray(a, dtype=dt) for a in arrays]) if arrays else np.empty(0, dt)
    return memoryview(out).cast("B")


def _seq(ds: Mapping[str, Any], field: str, what: str) -> list[Any]:
    v = ds.get(field)
    if not isinstance(v, (list, tuple)):
        raise ValueError(f"{what}.{field} must be a list, got {_short(v)}")
    return list(v)


def _short(v: object, limit: int = 60) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."
