"""``BucketKinds``: the per-key cache of column dtypes and record type that the server's write path
and the stream consult instead of querying storage on every write."""

from __future__ import annotations

from pathlib import Path

import msgpack
import numpy as np

from mktsframe.backend import connect
from mktsframe.backend.base import Batch
from mktsframe.backend.bucket_kinds import BucketKinds
from mktsframe.config import Config
from mktsframe.server.rpc import MSGPACK, JsonRpc
from mktsframe.server.service import Service

NS = 1_000_000_000
T0 = 1_704_067_200


def test_kinds_are_cached_until_forgotten(tmp_path: Path) -> None:
    with connect(tmp_path) as db:
        probes: list[str] = []

        def probe(key: str):
            probes.append(key)
            return db.query(key, limit=0)

        kinds = BucketKinds(probe)
        assert kinds.get("A/1Min/X") is None  # missing: not remembered
        assert kinds.get("A/1Min/X") is None
        db.write("A/1Min/X", Batch(np.array([T0 * NS]), {"Close": np.array([1.0])}))
        kind = kinds.get("A/1Min/X")
        assert kind is not None
        assert dict(kind.dtypes) == {"Close": np.dtype("<f8")}
        assert not kind.variable
        assert kinds.get("A/1Min/X") is kind
        assert probes == ["A/1Min/X"] * 3
        db.destroy("A/1Min/X")
        db.create("A/1Min/X", [("Close", "i4")], variable_length=True)
        assert kinds.get("A/1Min/X") is kind  # stale until told
        kinds.forget("A/1Min/X")
        assert dict(kinds.get("A/1Min/X").dtypes) == {"Close": np.dtype("<i4")}
        assert kinds.variable("A/1Min/X")
        assert not kinds.variable("B/1Min/X")


def test_a_probe_that_raced_with_a_forget_is_not_kept(tmp_path: Path) -> None:
    with connect(tmp_path) as db:
        db.write("A/1Min/X", Batch(np.array([T0 * NS]), {"Close": np.array([1.0])}))
        kinds: BucketKinds
        probes = []

        def probe(key: str):
            probes.append(key)
            out = db.query(key, limit=0)
            kinds.forget(key)  # a destroy heard while this probe ran
            return out

        kinds = BucketKinds(probe)
        kinds.get("A/1Min/X")
        kinds.get("A/1Min/X")
        assert len(probes) == 2
        uncached = BucketKinds(lambda key: db.query(key, limit=0), cache=False)
        first = uncached.get("A/1Min/X")
        assert uncached.get("A/1Min/X") is not first


def _write(svc: JsonRpc, key: str, column: str, values: np.ndarray) -> dict:
    ds = {"names": ["Epoch", column], "types": ["i8", values.dtype.str[1:]],
          "data": [np.array([T0], "<i8").tobytes(), values.tobytes()], "length": 1,
          "startindex": {key: 0}, "lengths": {key: 1}}
    body = msgpack.packb({"jsonrpc": "2.0", "id": "1", "method": "DataService.Write",
                          "params": {"requests": [{"dataset": ds, "is_variable_length": False}]}})
    return msgpack.unpackb(bytes(svc.handle(body, MSGPACK)))["result"]


def test_the_server_hears_a_bucket_recreated_behind_its_back(tmp_path: Path) -> None:
    """The write path caches the bucket's schema; a destroy and create made straight on the engine
    (a plugin, say) must reach it through the commit listener, or writes would be conformed to the
    old schema."""
    with connect(tmp_path) as db:
        svc = JsonRpc(Service(db, Config(), "test"))
        assert _write(svc, "A/1Min/X", "Close", np.array([1.5], "<f8"))["responses"] is None
        db.destroy("A/1Min/X")
        db.create("A/1Min/X", [("Size", "i4")])
        assert _write(svc, "A/1Min/X", "Size", np.array([7], "<i4"))["responses"] is None
        (batch,) = db.query("A/1Min/X").values()
        assert batch.columns["Size"].tolist() == [7]
        bad = _write(svc, "A/1Min/X", "Close", np.array([1.5], "<f8"))["responses"]
        assert bad
        assert bad[0]["mkts_error"] == "SchemaMismatchError"
