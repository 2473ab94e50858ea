"""Access control on a real server: tokens with roles on /rpc, /heartbeat, /ws and gRPC, over plain
HTTP and TLS, with the unmodified pymarketstore client (see docs/security.md)."""

from __future__ import annotations

import base64
import contextlib
import io
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import msgpack
import numpy as np
import pandas as pd
import pymarketstore as pymkts
import pymarketstore.proto.marketstore_pb2_grpc as gp
import pytest
import requests
import websocket
from live_helpers import ServerProcess, replies, start_server

import mktsframe
from mktsframe.cli import main as cli
from mktsframe.errors import AccessDeniedError
from mktsframe.server.auth import Authenticator, AuthFailure, Role, TokenStore

pytestmark = pytest.mark.server

ROLES = ("read", "write", "admin")


def add_token(root: Path, name: str, role: str) -> str:
    """``mktsframe token add NAME --role ROLE --root ROOT`` (the real command); returns the token."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert cli(["token", "add", name, "--role", role, "--root", str(root)]) == 0
    return out.getvalue().strip()


def bars(n: int = 3, start: int = 1_700_000_000) -> np.ndarray:
    a = np.zeros(n, dtype=[("Epoch", "i8"), ("Open", "f4"), ("Close", "f4")])
    a["Epoch"] = start + 60 * np.arange(n)
    a["Open"], a["Close"] = 1.0, 2.0
    return a


def stop(server: ServerProcess) -> None:
    rc = server.stop()
    assert rc in (0, -signal.SIGTERM, 128 + signal.SIGTERM), server.output()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    """A server with ``auth: true`` and one token per role."""
    work = tmp_path_factory.mktemp("auth")
    tokens = {role: add_token(work / "data", role + "er", role) for role in ROLES}
    server = start_server(work, config={"auth": True})
    yield server, tokens
    stop(server)
    log = server.output()
    assert not any(t in log for t in tokens.values()), "a token reached the server's log"


def url_with(server: ServerProcess, role: str, token: str) -> str:
    return f"http://{role}er:{token}@127.0.0.1:{server.port}/rpc"


# -- the token file and the authenticator, in process ---------------------------------------------
def test_tokens_hashed_revocable_and_only_their_own_name(tmp_path: Path) -> None:
    token = add_token(tmp_path, "alice", "write")
    assert token.startswith("mkts_")
    assert len(token) > 40
    text = (tmp_path / ".mkts-auth" / "tokens.json").read_text()
    assert token not in text
    assert "sha256" in text
    assert (tmp_path / ".mkts-auth" / "tokens.json").stat().st_mode & 0o077 == 0
    auth = Authenticator(TokenStore(tmp_path))
    basic = "Basic " + base64.b64encode(f"alice:{token}".encode()).decode()
    assert auth.authenticate(basic).role is Role.WRITE
    assert auth.authenticate(f"Bearer {token}").name == "alice"
    for bad in (None, "", f"Bearer {token}x", "Basic " + base64.b64encode(f"bob:{token}".encode()).decode(),
                "Basic !!!", f"Token {token}"):
        with pytest.raises(AuthFailure) as e:
            auth.authenticate(bad)
        assert token not in str(e.value)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli(["token", "list", "--root", str(tmp_path)]) == 0
        assert cli(["token", "revoke", "alice", "--root", str(tmp_path)]) == 0
    assert "alice  " in out.getvalue()
    assert token not in out.getvalue()
    with pytest.raises(AuthFailure):
        auth.authenticate(f"Bearer {token}")  # seen without a restart
    with contextlib.redirect_stderr(io.StringIO()):
        assert cli(["token", "add", "bad:name", "--role", "read", "--root", str(tmp_path)]) == 2


# -- HTTP with the unmodified pymarketstore client --------------------------------------------------
def test_pymarketstore_basic_auth_roles(secured: tuple[ServerProcess, dict[str, str]]) -> None:
    server, tokens = secured
    writer = pymkts.Client(url_with(server, "write", tokens["write"]))
    assert replies(writer.write(bars(), "AUTH/1Min/OHLC")) is None
    assert writer.server_version().startswith("mktsframe")
    reader = pymkts.Client(url_with(server, "read", tokens["read"]))
    assert reader.query(pymkts.Params("AUTH", "1Min", "OHLC")).first().df()["Close"].tolist() == [2.0] * 3
    assert "AUTH" in reader.list_symbols()
    with pytest.raises(requests.HTTPError) as e:
        reader.write(bars(), "AUTH/1Min/OHLC")
    assert e.value.response.status_code == 403
    err = msgpack.unpackb(e.value.response.content)["error"]
    assert "permission denied: DataService.Write needs the write role; token 'reader' has read" in err["message"]
    with pytest.raises(requests.HTTPError) as e:  # SQL INSERT is a write too
        reader.sql("INSERT INTO `AUTH/1Min/OHLC` SELECT Epoch, Open, Close FROM `AUTH/1Min/OHLC`")
    assert e.value.response.status_code == 403
    with pytest.raises(requests.HTTPError) as e:
        writer.destroy("AUTH/1Min/OHLC")
    assert e.value.response.status_code == 403
    admin = pymkts.Client(url_with(server, "admin", tokens["admin"]))
    assert admin.destroy("AUTH/1Min/OHLC")["responses"][0]["error"] == ""


@pytest.mark.parametrize("auth", [None, "Bearer mkts_wrong", "Basic " + base64.b64encode(b"writer:nope").decode()])
def test_missing_or_wrong_token_is_401_before_any_work(secured: tuple[ServerProcess, dict[str, str]],
                                                       auth: str | None) -> None:
    server, _ = secured
    headers = {"Content-Type": "application/x-msgpack", **({"Authorization": auth} if auth else {})}
    body = msgpack.packb({"jsonrpc": "2.0", "id": "1", "method": "DataService.Write", "params": {
        "requests": [{"dataset": {}}]}})  # fmt: skip
    r = httpx.post(server.rpc, content=body, headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Basic")
    err = msgpack.unpackb(r.content)["error"]
    assert err["message"].startswith("authentication "), err
    assert err["mkts_error"] == "AccessDeniedError"
    assert httpx.get(f"{server.url}/heartbeat", headers=headers).status_code == 401
    with pytest.raises(requests.HTTPError) as e:  # pymarketstore without credentials
        pymkts.Client(server.rpc).list_symbols()
    assert e.value.response.status_code == 401


def test_revoked_token_refused_by_the_running_server(secured: tuple[ServerProcess, dict[str, str]]) -> None:
    server, _ = secured
    token = add_token(server.root, "temp", "read")
    client = pymkts.Client(f"http://temp:{token}@127.0.0.1:{server.port}/rpc")
    client.list_symbols()
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli(["token", "revoke", "temp", "--root", str(server.root)]) == 0
    with pytest.raises(requests.HTTPError) as e:
        client.list_symbols()
    assert e.value.response.status_code == 401


# -- our client, the stream ---------------------------------------------------------------------------
def test_mktsframe_client_token_env_and_stream(secured: tuple[ServerProcess, dict[str, str]],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    server, tokens = secured
    be = mktsframe.connect(server.url, token=tokens["write"])
    assert tokens["write"] not in repr(be)
    with be.subscribe("OURS/1Min/OHLC") as sub:
        df = pd.DataFrame({"Open": [1.0], "Close": [2.0]}, index=pd.to_datetime(["2024-01-02 10:00"], utc=True))
        df.mkts.write("OURS/1Min/OHLC", backend=be)
        msg = sub.get(timeout=10)
        assert msg["key"] == "OURS/1Min/OHLC"
    be.close()
    monkeypatch.setenv("MKTS_TOKEN", tokens["read"])
    with mktsframe.connect(server.url) as reader:
        assert "OURS" in reader.list_symbols()
        with pytest.raises(AccessDeniedError, match="needs the write role"):
            df.mkts.write("OURS/1Min/OHLC", backend=reader)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # the CLI sends $MKTS_TOKEN too
        assert cli(["sql", "SELECT count(*) AS n FROM `OURS/1Min/OHLC`", "--url", server.url, "--csv"]) == 0
    assert out.getvalue().strip().endswith(",1")
    monkeypatch.delenv("MKTS_TOKEN")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert cli(["sql", "SELECT * FROM `OURS/1Min/OHLC`", "--url", server.url]) == 2
    assert "authentication required" in err.getvalue()
    with mktsframe.connect(url_with(server, "read", tokens["read"])) as via_url:  # Basic, as pymarketstore
        assert tokens["read"] not in via_url.url
        assert "OURS" in via_url.list_symbols()
    with mktsframe.connect(server.url) as anonymous:
        with pytest.raises(AccessDeniedError, match="authentication required"):
            anonymous.list_keys()
        with pytest.raises(AccessDeniedError, match="401"):
            anonymous.subscribe("OURS/1Min/OHLC")


def test_pymarketstore_stream_with_a_header(secured: tuple[ServerProcess, dict[str, str]]) -> None:
    """docs/security.md's recipe: pymarketstore's StreamConn connects with an Authorization header."""
    server, tokens = secured
    url = f"ws://127.0.0.1:{server.port}/ws"

    class AuthStreamConn(pymkts.StreamConn):
        def _connect(self) -> websocket.WebSocket:
            ws = websocket.WebSocket()
            ws.connect(self.endpoint, header=["Authorization: Bearer " + tokens["read"]], timeout=10)
            return ws

    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        pymkts.StreamConn(url)._connect()
    assert e.value.status_code == 401
    ws = AuthStreamConn(url)._connect()
    try:
        AuthStreamConn(url)._subscribe(ws, ["STREAM/1Min/OHLC"])
        assert msgpack.unpackb(ws.recv()) == {"streams": ["STREAM/1Min/OHLC"]}
        writer = pymkts.Client(url_with(server, "write", tokens["write"]))
        assert replies(writer.write(bars(1), "STREAM/1Min/OHLC")) is None
        assert msgpack.unpackb(ws.recv())["key"] == "STREAM/1Min/OHLC"
    finally:
        ws.close()


# -- gRPC: metadata ----------------------------------------------------------------------------------
class _Metadata(grpc.UnaryUnaryClientInterceptor):
    """Adds ``authorization`` metadata to every call (what a pymarketstore user wraps its channel with)."""

    def __init__(self, value: str) -> None:
        self.value = value

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = [*(details.metadata or ()), ("authorization", self.value)]
        return continuation(details._replace(metadata=metadata), request)


def grpc_client(address: str, channel: grpc.Channel) -> pymkts.Client:
    """pymarketstore's gRPC client, unmodified, with its stub on ``channel``."""
    client = pymkts.Client(address, grpc=True)
    client.client.channel = channel
    client.client.stub = gp.MarketstoreStub(channel)
    return client


def test_grpc_metadata_roles(secured: tuple[ServerProcess, dict[str, str]]) -> None:
    server, tokens = secured
    plain = pymkts.Client(server.grpc, grpc=True)
    with pytest.raises(grpc.RpcError) as e:
        plain.list_symbols()
    assert e.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "authentication required" in e.value.details()

    def client(role: str) -> pymkts.Client:
        channel = grpc.intercept_channel(grpc.insecure_channel(server.grpc), _Metadata(f"Bearer {tokens[role]}"))
        return grpc_client(server.grpc, channel)

    writer, reader = client("write"), client("read")
    assert replies(writer.write(bars(), "GRPCAUTH/1Min/OHLC")) is None
    assert len(reader.query(pymkts.Params("GRPCAUTH", "1Min", "OHLC")).first().df()) == 3
    with pytest.raises(grpc.RpcError) as e:
        reader.write(bars(), "GRPCAUTH/1Min/OHLC")
    assert e.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "needs the write role" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        client("write").destroy("GRPCAUTH/1Min/OHLC")
    assert e.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert client("admin").destroy("GRPCAUTH/1Min/OHLC").responses[0].error == ""


# -- TLS -----------------------------------------------------------------------------------------------
def test_tls_https_wss_and_grpc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trustme = pytest.importorskip("trustme", reason="trustme is in the test extra")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    token = add_token(tmp_path / "data", "tls", "write")
    server = start_server(tmp_path, config={"auth": True, "tls_cert_file": "server.pem", "tls_key_file": "key.pem"},
                          tls_ca=str(tmp_path / "ca.pem"))
    try:
        https = f"https://tls:{token}@127.0.0.1:{server.port}/rpc"
        with pytest.raises(requests.exceptions.SSLError):  # not trusted without the CA
            pymkts.Client(https).list_symbols()
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "ca.pem"))
        client = pymkts.Client(https)
        assert replies(client.write(bars(), "TLS/1Min/OHLC")) is None
        assert len(client.query(pymkts.Params("TLS", "1Min", "OHLC")).first().df()) == 3
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not served on the TLS port
            httpx.get(f"http://127.0.0.1:{server.port}/heartbeat", timeout=5)
        with mktsframe.connect(server.url, token=token, ca_file=tmp_path / "ca.pem") as be:
            assert "TLS/1Min/OHLC" in be.list_keys()
            with be.subscribe("TLS/1Min/OHLC") as sub:  # wss://
                client.write(bars(1, 1_700_100_000), "TLS/1Min/OHLC")
                assert sub.get(timeout=10)["key"] == "TLS/1Min/OHLC"
        creds = grpc.composite_channel_credentials(grpc.ssl_channel_credentials((tmp_path / "ca.pem").read_bytes()),
                                                   grpc.access_token_call_credentials(token))
        secure = grpc_client(server.grpc, grpc.secure_channel(server.grpc, creds))
        assert "TLS" in secure.list_symbols()
        with pytest.raises(grpc.RpcError) as e:  # the unmodified client's plain channel
            pymkts.Client(server.grpc, grpc=True).list_symbols()
        assert e.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        stop(server)
    assert token not in server.output()
