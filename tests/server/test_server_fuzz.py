"""Hypothesis sends over 10,000 malformed requests to a live server (loopback only).

Every reply must be a well-formed error or result naming the problem (never an internal error),
the process must keep serving, and a bucket written before the storm must be unchanged after it.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import msgpack
import numpy as np
import pymarketstore as pymkts
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = [pytest.mark.server, pytest.mark.slow, pytest.mark.timeout(300)]

METHODS = ["DataService.Query", "DataService.Write", "DataService.Create", "DataService.Destroy",
           "DataService.ListSymbols", "DataService.GetInfo", "DataService.Delete"]
KEEP = "KEEP/1Min/OHLCV"
FUZZ_KEY = "FUZZ/1Min/OHLCV"

keys = st.one_of(
    st.sampled_from([FUZZ_KEY, "FUZZ/1Min/OHLCV:Symbol/Timeframe/AttributeGroup", "../../etc/1Min/x", "a/b",
                     "a/b/c/d", "/1Min/x", "A/1W/X", "A/0Min/X", "A/1Min/.x", "A\x00/1Min/X", "*/*/*",
                     "A/1Min/X:Other", "A,B/1Min/FUZZ", "x" * 600 + "/1Min/X", "A/99999999999D/X", "A/1Min/ OHLCV"]),
    st.text(max_size=40),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
                    st.floats(), st.text(max_size=20), st.binary(max_size=40))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                      max_leaves=8)
types = st.one_of(st.sampled_from(["i8", "f4", "f8", "i4", "U16", "b1", "bool", "u8", "i1", "c16", "O", "<f8", "",
                                   "U", "S8"]), values)


@st.composite
def datasets(draw: st.DrawFn) -> dict[str, Any]:
    """A NumpyMultiDataset that is close to valid, with any part possibly broken."""
    n = draw(st.integers(0, 5))
    names = ["Epoch", *draw(st.lists(st.sampled_from(["Open", "Close", "Nanoseconds", "Epoch", "", "V"]), max_size=3))]
    tps = [draw(types) for _ in names]
    epochs = np.array(draw(st.lists(st.integers(1_500_000_000, 1_800_000_000), min_size=n, max_size=n)), "<i8")
    data: list[Any] = [epochs.tobytes()]
    data += [draw(st.one_of(st.binary(min_size=n * 8, max_size=n * 8), st.binary(max_size=70), values))
             for _ in names[1:]]
    ds: dict[str, Any] = {"names": names, "types": tps, "data": data, "length": n,
                          "startindex": {draw(keys): 0}, "lengths": {FUZZ_KEY: n}}
    for field in draw(st.lists(st.sampled_from(list(ds)), max_size=2)):
        ds[field] = draw(values)
    if draw(st.booleans()):
        ds["length"] = draw(st.one_of(st.integers(-(2**63), 2**63 - 1), st.just(10**15)))
    if draw(st.booleans()):
        ds["lengths"] = dict.fromkeys(ds["startindex"] if isinstance(ds["startindex"], dict) else [FUZZ_KEY], n)
    return ds


@st.composite
def params(draw: st.DrawFn, method: str) -> Any:
    req: dict[str, Any]
    if method == "DataService.Query":
        req = {"destination": draw(keys)}
        for k in draw(st.lists(st.sampled_from(["epoch_start", "epoch_end", "epoch_start_nanos", "epoch_end_nanos",
                                                  "limit_record_count", "limit_from_start", "columns", "functions",
                                                  "is_sqlstatement", "sql_statement", "key_category", "mkts_start",
                                                  "mkts_end", "mkts_native"]), max_size=4)):
            req[k] = draw(st.one_of(values, st.integers(-(2**63), 2**63 - 1), st.lists(st.text(max_size=8))))
    elif method == "DataService.Write":
        req = {"dataset": draw(st.one_of(datasets(), values)), "is_variable_length": draw(st.one_of(st.booleans(),
                                                                                                      values))}
    elif method in ("DataService.Create",):
        req = {"key": draw(keys), "column_names": draw(st.one_of(st.lists(st.text(max_size=6), max_size=4), values)),
               "column_types": draw(st.one_of(st.lists(types, max_size=4), values)),
               "row_type": draw(st.one_of(st.sampled_from(["fixed", "variable"]), values))}
    elif method == "DataService.ListSymbols":
        return draw(st.one_of(st.fixed_dictionaries({"format": values}), values))
    else:
        req = {"key": draw(keys), "epoch_start": draw(values)}
    reqs: Any = [req] * draw(st.integers(0, 3))
    return draw(st.one_of(st.just({"requests": reqs}), st.just([{"requests": reqs}]), values,
                          st.fixed_dictionaries({"requests": values})))


@st.composite
def envelopes(draw: st.DrawFn) -> dict[str, Any]:
    method = draw(st.one_of(st.sampled_from(METHODS), st.text(max_size=30), values))
    env: dict[str, Any] = {"jsonrpc": draw(st.sampled_from(["2.0", "2.0", "2.0", "1.0", 2.0])),
                           "method": method, "id": draw(st.one_of(st.just("1"), values)),
                           "params": draw(params(method)) if isinstance(method, str) else draw(values)}
    for field in draw(st.lists(st.sampled_from(list(env)), max_size=1)):
        del env[field]
    return env


class Storm:
    """Sends requests and checks every reply is a named error or a result."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = httpx.Client(timeout=30)
        self.sent = 0
        self.internal: list[str] = []

    def send(self, body: bytes, content_type: str = "application/x-msgpack") -> None:
        r = self.client.post(self.url, content=body, headers={"Content-Type": content_type})
        self.sent += 1
        if content_type.split(";")[0] not in ("application/x-msgpack", "application/json"):
            assert r.status_code == 415
            return
        assert r.status_code == 200, r.text
        if not r.content:
            return  # a notification (no id) that was valid: no body, as MarketStore
        reply = json.loads(r.content) if content_type == "application/json" else msgpack.unpackb(r.content)
        assert isinstance(reply, dict)
        assert reply["jsonrpc"] == "2.0"
        if "error" in reply:
            err = reply["error"]
            assert isinstance(err["message"], str)
            assert err["message"]
            if err["code"] == -32603:
                self.internal.append(err["message"])
        else:
            assert "result" in reply


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def test_malformed_request_storm(server_factory) -> None:
    server = server_factory()
    client = pymkts.Client(server.rpc)
    keep = np.array([(1_704_153_600 + 60 * i, float(i), i) for i in range(100)],
                    dtype=[("Epoch", "i8"), ("Close", "f8"), ("Volume", "i8")])
    assert client.write(keep, KEEP) == {"responses": None}
    storm = Storm(server.rpc)

    def common(n: int) -> settings:
        return settings(max_examples=n, deadline=None, database=None, derandomize=True,
                        suppress_health_check=list(HealthCheck))

    @common(3000)
    @given(st.binary(max_size=300), st.sampled_from(["application/x-msgpack", "application/json", "text/plain"]))
    def raw_bytes(body: bytes, ct: str) -> None:
        storm.send(body, ct)

    @common(3500)
    @given(envelopes())
    def structured(env: dict[str, Any]) -> None:
        try:
            body = pack(env)
        except (TypeError, ValueError, OverflowError):
            return
        storm.send(body)

    @common(1000)
    @given(envelopes())
    def as_json(env: dict[str, Any]) -> None:
        try:
            body = json.dumps(env, default=lambda b: b.hex()).encode()
        except (TypeError, ValueError):
            return
        storm.send(body, "application/json")

    @common(2600)
    @given(st.binary(min_size=1, max_size=200), st.integers(0, 200))
    def truncated_and_spliced(junk: bytes, cut: int) -> None:
        good = pack({"jsonrpc": "2.0", "method": "DataService.Query", "id": "1",
                     "params": {"requests": [{"destination": KEEP}]}})
        storm.send(good[:cut] + junk)

    raw_bytes()
    structured()
    as_json()
    truncated_and_spliced()
    storm.client.close()

    assert storm.sent >= 10_000, storm.sent
    assert not storm.internal, storm.internal[:5]
    assert server.proc.poll() is None, server.output()
    after = client.query(pymkts.Params("KEEP", "1Min", "OHLCV")).first().array
    np.testing.assert_array_equal(after, keep)
    assert KEEP in client.list_symbols(pymkts.ListSymbolsFormat.TBK)
    assert httpx.get(f"{server.url}/heartbeat").json()["status"] == "queryable"
    assert "Traceback" not in server.output()
