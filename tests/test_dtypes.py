"""Column types: the wire type table, schema validation and lossless-only coercion."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mktsframe.dtypes import MAX_COLUMNS, WIRE_TYPES, coerce_column, dtype_of, validate_schema, wire_type
from mktsframe.errors import SchemaMismatchError

ALL_TYPES = ["i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f4", "f8", "U16", "bool"]


def test_the_wire_type_table_is_complete() -> None:
    assert sorted(WIRE_TYPES) == sorted(ALL_TYPES)
    assert dtype_of("U16").itemsize == 64
    for t in ALL_TYPES:
        assert wire_type(dtype_of(t)) == t


@pytest.mark.parametrize(("text", "expected"), [("<f4", "f4"), ("|u1", "u1"), ("<U16", "U16"), ("|b1", None)])
def test_numpy_prefixes_are_accepted(text: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(SchemaMismatchError):
            dtype_of(text)
    else:
        assert wire_type(dtype_of(text)) == expected


@pytest.mark.parametrize("bad", ["f2", "c16", "M8[ns]", "O", "S8", "U17", "i16", "float", "", None])
def test_unsupported_types_are_named(bad: str | None) -> None:
    with pytest.raises(SchemaMismatchError) as exc:
        dtype_of(bad)  # type: ignore[arg-type]
    assert repr(bad) in str(exc.value)


@pytest.mark.parametrize("dtype", ["f2", "c8", "M8[ns]", "m8[s]", "O", "S4", "U17", "V8"])
def test_unsupported_numpy_dtypes(dtype: str) -> None:
    with pytest.raises(SchemaMismatchError, match=r"dtype|wider"):
        wire_type(np.dtype(dtype))


def test_narrow_strings_are_u16() -> None:
    assert wire_type(np.dtype("<U1")) == "U16"
    assert wire_type(np.dtype(">f8")) == "f8"  # stored little-endian whatever the source order


@pytest.mark.parametrize(
    ("columns", "match"),
    [
        ([("a", "f4"), ("a", "f8")], "duplicate"),
        ([("Epoch", "i8")], "reserved"),
        ([("", "f4")], "non-empty"),
        ([(None, "f4")], "non-empty"),
        ([("x" * 65, "f4")], "longer"),
        ([("é" * 33, "f4")], "longer"),
        ([("a\x00b", "f4")], "NUL"),
        ([("a", "f16")], "unsupported"),
        ([(f"c{i}", "f4") for i in range(MAX_COLUMNS + 1)], "too many"),
    ],
)
def test_bad_schemas_are_refused(columns: list[tuple[str, str]], match: str) -> None:
    with pytest.raises(SchemaMismatchError, match=match):
        validate_schema(columns)


def test_valid_schema_is_canonical() -> None:
    schema = validate_schema([("Open", "<f4"), ("L1-Ask", "f8"), ("_ask", "|i1"), ("名", "U16"), ("x" * 64, "bool")])
    assert schema == (("Open", "f4"), ("L1-Ask", "f8"), ("_ask", "i1"), ("名", "U16"), ("x" * 64, "bool"))
    assert validate_schema([]) == ()
    assert len(validate_schema([(f"c{i}", "u1") for i in range(MAX_COLUMNS)])) == MAX_COLUMNS


def test_float_to_float_coercion_rounds_like_marketstore() -> None:
    got = coerce_column("x", np.array([0.1, 1e10, -2.5]), "f4")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.array([0.1, 1e10, -2.5], np.float32))
    assert coerce_column("x", np.array([1, 2], np.int64), "f8").tolist() == [1.0, 2.0]


@pytest.mark.parametrize(
    ("values", "target"),
    [
        (np.array([1.0, 2.0]), "i8"),  # floats are never truncated into integers
        (np.array([1.5]), "i4"),
        (np.array([1.0], np.float32), "u1"),
        (np.array([True]), "i1"),
        (np.array([1], np.int8), "bool"),
        (np.array([1.0]), "bool"),
        (np.array(["a"]), "f8"),
        (np.array([1]), "U16"),
        (np.array([300]), "u1"),
        (np.array([-1]), "u8"),
        (np.array([2**63], np.uint64), "i8"),
        (np.array([-129]), "i1"),
        (np.array(["x" * 17]), "U16"),
        (np.array(["ok", "y" * 20], object), "U16"),
    ],
)
def test_lossy_coercions_are_refused_naming_the_column(values: np.ndarray, target: str) -> None:
    with pytest.raises(SchemaMismatchError) as exc:
        coerce_column("Price", values, target)
    assert "'Price'" in str(exc.value)


def test_integers_that_fit_are_narrowed() -> None:
    got = coerce_column("x", np.array([0, 255], np.int64), "u1")
    assert got.dtype == np.uint8
    assert got.tolist() == [0, 255]
    assert coerce_column("x", np.array([], np.int64), "i1").dtype == np.int8
    assert coerce_column("x", np.array([5], np.uint8), "i8").tolist() == [5]


int_types = ["i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8"]


@settings(max_examples=300, deadline=None)
@given(
    data=st.sampled_from(int_types).flatmap(lambda t: hnp.arrays(WIRE_TYPES[t], st.integers(0, 20))),
    target=st.sampled_from([*int_types, "f8"]),
)
def test_integer_coercion_is_exact_or_refused(data: np.ndarray, target: str) -> None:
    try:
        got = coerce_column("x", data, target)
    except SchemaMismatchError:
        info = np.iinfo(WIRE_TYPES[target])
        assert data.size
        assert int(data.min()) < info.min or int(data.max()) > info.max
        return
    assert got.dtype == WIRE_TYPES[target]
    if target != "f8":
        assert [int(v) for v in got] == [int(v) for v in data]


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.dtype("U16"), st.integers(0, 10), elements=st.text(max_size=16).filter(lambda s: "\x00" not in s)))
def test_strings_up_to_sixteen_characters_are_kept(values: np.ndarray) -> None:
    got = coerce_column("s", values.astype(object), "U16")
    assert got.dtype == np.dtype("<U16")
    assert got.tolist() == values.tolist()
