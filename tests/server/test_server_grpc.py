"""The gRPC API beyond what pymarketstore's calls cover (those run in the other test files with
``grpc=True``): the schema, status codes with ``/rpc``'s messages, message limits, deadlines, and a
storm of malformed protobufs that must never take the server down."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pymarketstore as pymkts
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from live_helpers import ServerProcess, mkts_client, replies
from pymarketstore.proto import marketstore_pb2 as pb

from mktsframe.backend import connect
from mktsframe.backend.base import Batch
from mktsframe.config import Config
from mktsframe.server.grpc_api import GrpcApi
from mktsframe.server.grpc_schema import METHODS, PACKAGE, SERVICE, messages
from mktsframe.server.service import CallContext, CallError, Service, Status

pytestmark = [pytest.mark.server, pytest.mark.timeout(300)]

KEEP = "KEEP/1Min/OHLCV"
NS = 1_000_000_000


def _fields(desc: Any) -> dict[str, tuple[Any, ...]]:
    return {f.name: (f.number, f.type, f.is_repeated, f.json_name,
                     f.message_type.full_name if f.message_type else None,
                     f.enum_type.full_name if f.enum_type else None) for f in desc.fields}  # fmt: skip


def test_our_descriptors_match_pymarketstores() -> None:
    """Field names, numbers, types and nesting are the wire: ours must equal the client's."""
    ours = messages()
    theirs = pb.DESCRIPTOR.message_types_by_name
    assert set(ours) == set(theirs)
    for name, cls in ours.items():
        assert _fields(cls.DESCRIPTOR) == _fields(theirs[name]), name
        for nested in theirs[name].nested_types:
            mine = cls.DESCRIPTOR.nested_types_by_name[nested.name]
            assert _fields(mine) == _fields(nested)
            assert mine.GetOptions().map_entry == nested.GetOptions().map_entry
    (service,) = pb.DESCRIPTOR.services_by_name.values()
    assert f"{service.full_name}" == f"{PACKAGE}.{SERVICE}"
    assert {m.name: (m.input_type.name, m.output_type.name) for m in service.methods} == METHODS


def rpc_error(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def http_error(call: Any) -> str:
    with pytest.raises(Exception) as info:  # noqa: PT011 (pymarketstore raises a bare Exception)
        call()
    return str(info.value).removesuffix(": None")  # pymarketstore appends the error's data


def test_status_codes_carry_the_http_message(live_server: ServerProcess, sym: str) -> None:
    g, h = mkts_client(live_server, "grpc"), mkts_client(live_server, "http")
    arr = np.array([(1_704_153_600, 1.0)], dtype=[("Epoch", "i8"), ("Close", "f8")])
    assert replies(g.write(arr, f"{sym}/1Min/OHLCV")) is None
    cases = [
        (pymkts.Params(f"{sym}NOPE", "1Min", "OHLCV"), grpc.StatusCode.NOT_FOUND),
        (pymkts.Params(sym, "1Min", "OHLCV", functions=["nosuch()"]), grpc.StatusCode.INVALID_ARGUMENT),
        (pymkts.Params(sym, "1Min", "OHLCV", limit=-1), grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for params, code in cases:
        err = rpc_error(lambda p=params: g.query(p))
        assert err.code() == code, err
        assert err.details() == http_error(lambda p=params: h.query(p))
    bad_key = pb.MultiQueryRequest(requests=[pb.QueryRequest(destination="nokey")])
    err = rpc_error(lambda: g.client.stub.Query(bad_key))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "destinations must have a Symbol, Timeframe and AttributeGroup" in err.details()
    sql = rpc_error(lambda: g.sql(f"SELECT * FRM `{sym}/1Min/OHLCV`"))
    assert sql.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sql.details() == http_error(lambda: h.sql(f"SELECT * FRM `{sym}/1Min/OHLCV`"))
    # Per-request failures stay in the responses, as in MarketStore, with the same text on both APIs.
    other = np.array([(1_704_153_600, 1)], dtype=[("Epoch", "i8"), ("Other", "i4")])
    (via_grpc,) = replies(g.write(other, f"{sym}/1Min/OHLCV"))
    (via_http,) = replies(h.write(other, f"{sym}/1Min/OHLCV"))
    assert via_grpc["error"] == via_http["error"]
    assert "unable to match data columns" in replies(g.write(other, f"{sym}/1Min/OHLCV"))[0]["error"]


def test_read_only_server_refuses_writes_with_permission_denied(server_factory, tmp_path: Path) -> None:
    with connect(tmp_path / "root") as db:
        db.write(KEEP, Batch(np.array([1_704_153_600 * NS]), {"Close": np.array([1.0])}))
    server = server_factory(config={"init_wal_cache": False}, root=tmp_path / "root")
    g, h = mkts_client(server, "grpc"), mkts_client(server, "http")
    arr = np.array([(1_704_153_660, 2.0)], dtype=[("Epoch", "i8"), ("Close", "f8")])
    for call in (lambda c: c.write(arr, KEEP), lambda c: c.destroy(KEEP),
                 lambda c: c.create("NEW/1Min/OHLCV", [("Epoch", "i8"), ("Close", "f8")])):
        err = rpc_error(lambda call=call: call(g))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert err.details() == http_error(lambda call=call: call(h))
        assert "read-only" in err.details()
    assert g.query(pymkts.Params("KEEP", "1Min", "OHLCV")).first().array["Close"].tolist() == [1.0]


def test_message_size_limits(server_factory) -> None:
    """``grpc_max_recv_msg_size`` / ``grpc_max_send_msg_size`` (MB): over either is RESOURCE_EXHAUSTED,
    and the server goes on serving."""
    server = server_factory(config={"grpc_max_send_msg_size": 1, "grpc_max_recv_msg_size": 1})
    g = mkts_client(server, "grpc")
    rows = 80_000  # 16 bytes a row: 1.3 MB
    big = np.zeros(rows, dtype=[("Epoch", "i8"), ("Close", "f8")])
    big["Epoch"] = 1_704_153_600 + 60 * np.arange(rows)
    err = rpc_error(lambda: g.write(big, "BIG/1Min/X"))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    half = rows // 2  # 0.65 MB per write, 1.3 MB to read back
    assert replies(g.write(big[:half], "BIG/1Min/X")) is None
    assert replies(g.write(big[half:], "BIG/1Min/X")) is None
    err = rpc_error(lambda: g.query(pymkts.Params("BIG", "1Min", "X")))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "over grpc_max_send_msg_size (1 MB); query less at once" in err.details()
    assert len(g.query(pymkts.Params("BIG", "1Min", "X", limit=1000)).first().array) == 1000


def test_query_replies_written_by_hand_parse_as_protobuf(tmp_path: Path) -> None:
    """The Query reply is written without protobuf objects: pymarketstore's own classes must read it
    field for field (several requests, several keys, ticks with Nanoseconds, an empty range)."""
    with connect(tmp_path) as db:
        t0 = 1_704_153_600 * NS
        for sym in ("A", "B"):
            db.write(f"{sym}/1Min/X", Batch(t0 + 60 * NS * np.arange(3), {"Close": np.arange(3.0)}))
        db.write("T/1Sec/TICK", Batch(np.array([t0 + 5, t0 + 5, t0 + 7 * NS + 999_999_999]),
                                      {"P": np.array([1, 2, 3], "i4")}), variable_length=True)
        api = GrpcApi(Service(db, Config(), "test"), 1 << 30)
        request = pb.MultiQueryRequest(requests=[
            pb.QueryRequest(destination="A,B/1Min/X"), pb.QueryRequest(destination="T/1Sec/TICK"),
            pb.QueryRequest(destination="A/1Min/X", epoch_start=1_800_000_000)])
        reply = pb.MultiQueryResponse.FromString(api.handle("Query", request.SerializeToString(), CallContext()))
    assert (reply.version, reply.timezone, len(reply.responses)) == ("test", "UTC", 3)
    bars, ticks, empty = (r.result for r in reply.responses)
    assert list(bars.data.column_names) == ["Epoch", "Close"]
    assert list(bars.data.column_types) == ["i8", "f8"]
    assert bars.data.length == 6
    assert {k: (bars.start_index[k], bars.lengths[k]) for k in bars.start_index} == {
        "A/1Min/X:Symbol/Timeframe/AttributeGroup": (0, 3), "B/1Min/X:Symbol/Timeframe/AttributeGroup": (3, 3)}
    epochs = np.frombuffer(bars.data.column_data[0], "<i8")
    assert epochs.tolist() == [1_704_153_600 + 60 * i for i in (0, 1, 2, 0, 1, 2)]
    assert np.frombuffer(bars.data.column_data[1], "<f8").tolist() == [0, 1, 2, 0, 1, 2]
    assert list(ticks.data.column_names) == ["Epoch", "P", "Nanoseconds"]
    assert np.frombuffer(ticks.data.column_data[2], "<i4").tolist() == [5, 5, 999_999_999]
    assert empty.data.length == 0
    assert list(empty.data.column_data) == [b"", b""]


def test_a_passed_deadline_is_refused_before_any_work(tmp_path: Path) -> None:
    with connect(tmp_path) as db:
        service = Service(db, Config(), "test")
        late = CallContext("grpc", "test", deadline=time.monotonic() - 1)
        with pytest.raises(CallError) as info:
            service.call("DataService.Write", {"requests": []}, late)
        assert info.value.status is Status.DEADLINE_EXCEEDED
        assert service.call("DataService.ListSymbols", {}, CallContext("grpc", "test", time.monotonic() + 60)) == {
            "Results": []}


# -- a storm of malformed protobufs ---------------------------------------------------------------
texts = st.one_of(st.sampled_from(["FUZZ/1Min/OHLCV", "FUZZ/1Min/OHLCV:Symbol/Timeframe/AttributeGroup",
                                   "../../x/1Min/y", "a/b", "*/*/*", "", "A/0Min/X", "A\x00/1Min/X",
                                   "x" * 600 + "/1Min/X"]), st.text(max_size=30))
i64 = st.integers(-(2**63), 2**63 - 1)
i32 = st.integers(-(2**31), 2**31 - 1)
wire_types = st.one_of(st.sampled_from(["i8", "f4", "f8", "i4", "U16", "b1", "bool", "c16", "", "<f8"]), texts)


@st.composite
def datasets(draw: st.DrawFn) -> pb.NumpyMultiDataset:
    n = draw(st.integers(0, 4))
    names = ["Epoch", *draw(st.lists(st.sampled_from(["Close", "Nanoseconds", "Epoch", "", "V"]), max_size=3))]
    data = [np.arange(1_700_000_000, 1_700_000_000 + n, dtype="<i8").tobytes()]
    data += [draw(st.one_of(st.binary(min_size=8 * n, max_size=8 * n), st.binary(max_size=40))) for _ in names[1:]]
    return pb.NumpyMultiDataset(
        data=pb.NumpyDataset(column_names=names, column_types=[draw(wire_types) for _ in names], column_data=data,
                             length=draw(st.one_of(st.just(n), i32))),
        start_index=draw(st.dictionaries(texts, i32, max_size=2)),
        lengths=draw(st.dictionaries(texts, i32, max_size=2)))


def requests(method: str) -> st.SearchStrategy[Any]:
    if method == "Query":
        one = st.builds(pb.QueryRequest, is_sql_statement=st.booleans(), sql_statement=texts, destination=texts,
                        key_category=texts, epoch_start=i64, epoch_start_nanos=i64, epoch_end=i64,
                        epoch_end_nanos=i64, limit_record_count=i32, limit_from_start=st.booleans(),
                        columns=st.lists(texts, max_size=3), functions=st.lists(texts, max_size=2))
        return st.builds(pb.MultiQueryRequest, requests=st.lists(one, max_size=3))
    if method == "Write":
        one = st.builds(pb.WriteRequest, data=datasets(), is_variable_length=st.booleans())
        return st.builds(pb.MultiWriteRequest, requests=st.lists(one, max_size=2))
    if method == "Create":
        shape = st.builds(pb.DataShape, name=texts, type=wire_types)
        one = st.builds(pb.CreateRequest, key=texts, data_shapes=st.lists(shape, max_size=3),
                        row_type=st.one_of(st.sampled_from(["fixed", "variable"]), texts))
        return st.builds(pb.MultiCreateRequest, requests=st.lists(one, max_size=2))
    if method == "Destroy":
        return st.builds(pb.MultiKeyRequest, requests=st.lists(st.builds(pb.KeyRequest, key=texts), max_size=2))
    if method == "ListSymbols":
        return st.builds(pb.ListSymbolsRequest, format=st.integers(-5, 5))
    return st.builds(pb.ServerVersionRequest)


@pytest.mark.slow
def test_malformed_protobuf_storm(server_factory) -> None:
    server = server_factory()
    client = mkts_client(server, "grpc")
    keep = np.array([(1_704_153_600 + 60 * i, float(i)) for i in range(50)], dtype=[("Epoch", "i8"), ("Close", "f8")])
    assert replies(client.write(keep, KEEP)) is None
    channel = grpc.insecure_channel(server.grpc)
    calls = {m: channel.unary_unary(f"/{PACKAGE}.{SERVICE}/{m}") for m in METHODS}  # raw bytes in and out
    seen: dict[str, int] = {}

    bad: list[str] = []

    def send(method: str, body: bytes) -> None:
        try:
            calls[method](body, timeout=30)
            seen["OK"] = seen.get("OK", 0) + 1
        except grpc.RpcError as exc:
            code, text = exc.code(), exc.details() or ""
            seen[code.name] = seen.get(code.name, 0) + 1
            if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE) or not text \
                    or text.startswith("Exception calling application"):
                bad.append(f"{method}: {code.name} {text}")

    def common(n: int) -> settings:
        return settings(max_examples=n, deadline=None, database=None, derandomize=True,
                        suppress_health_check=list(HealthCheck))

    @common(1000)
    @given(st.sampled_from(list(METHODS)), st.binary(max_size=200))
    def raw_bytes(method: str, body: bytes) -> None:
        send(method, body)

    @common(1600)
    @given(st.sampled_from(list(METHODS)).flatmap(lambda m: st.tuples(st.just(m), requests(m))))
    def structured(case: tuple[str, Any]) -> None:
        method, message = case
        send(method, message.SerializeToString())

    @common(600)
    @given(st.binary(min_size=1, max_size=100), st.integers(0, 100))
    def truncated_and_spliced(junk: bytes, cut: int) -> None:
        good = pb.MultiQueryRequest(requests=[pb.QueryRequest(destination=KEEP)]).SerializeToString()
        send("Query", good[:cut] + junk)

    raw_bytes()
    structured()
    truncated_and_spliced()
    channel.close()
    assert not bad, bad[:5]
    assert sum(seen.values()) >= 3000, seen
    assert seen.get("INVALID_ARGUMENT", 0) > 1000, seen  # most are refused, not quietly accepted
    assert server.proc.poll() is None, server.output()
    after = client.query(pymkts.Params("KEEP", "1Min", "OHLCV")).first().array
    np.testing.assert_array_equal(after, keep)
    assert "Traceback" not in server.output()
