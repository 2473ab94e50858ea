"""The server's start-up log tells the truth about mkts.yml settings.

Every setting it lists as unsupported must change nothing: two real servers, one with defaults
and one with every unsupported setting set, get the same pymarketstore session and must answer
it identically and leave byte-identical data files. Honoured settings (``wal_bypass``, plugins)
must never be listed as unsupported; ``wal_bypass`` is logged with what it really does.
"""

from __future__ import annotations

import signal
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pymarketstore as pymkts
import pytest
from live_helpers import ServerProcess, free_port, start_server

from mktsframe.config import load_config
from mktsframe.server.settings import setting_notes, unsupported_settings

pytestmark = [pytest.mark.server, pytest.mark.timeout(120)]

_UTIL_PORT = free_port()
#: A value for each setting the server lists as unsupported (the keys must match that list).
UNSUPPORTED_VALUES: dict[str, Any] = {
    "utilities_url": f"127.0.0.1:{_UTIL_PORT}",
    "init_catalog": False,
    "enable_last_known": True,
    "stale_threshold": 5,
}


def test_the_list_of_unsupported_settings_is_the_tested_one() -> None:
    assert unsupported_settings(load_config(None)) == []
    for key, value in UNSUPPORTED_VALUES.items():
        listed = unsupported_settings(load_config(None, **{key: value}))
        assert [line.split(":")[0] for line in listed] == [key]
    everything = load_config(None, **UNSUPPORTED_VALUES)
    assert [line.split(":")[0] for line in unsupported_settings(everything)] == list(UNSUPPORTED_VALUES)
    honoured = load_config(None, wal_bypass=True, triggers=[{"module": "ondiskagg.so", "on": "*/1Min/OHLCV",
                                                              "config": {"destinations": ["5Min"]}}],
                           bgworkers=[{"module": "gdaxfeeder.so", "name": "feed", "config": {}}])  # fmt: skip
    assert unsupported_settings(honoured) == []
    assert [n.split(":")[0] for n in setting_notes(honoured)] == ["wal_bypass"]


def _session(server: ServerProcess) -> list[Any]:
    """A pymarketstore session: bars and ticks written, queried, listed, one bucket destroyed."""
    client = pymkts.Client(server.rpc)
    bars = np.zeros(120, dtype=[("Epoch", "i8"), ("Open", "f4"), ("Close", "f4"), ("Volume", "i8")])
    bars["Epoch"] = 1_704_067_200 + 60 * np.arange(120)
    bars["Open"], bars["Close"], bars["Volume"] = np.arange(120), np.arange(120) + 0.5, 100
    ticks = np.zeros(5, dtype=[("Epoch", "i8"), ("Nanoseconds", "i4"), ("Bid", "f8")])
    ticks["Epoch"], ticks["Nanoseconds"], ticks["Bid"] = 1_704_067_200, [5, 1, 9, 3, 7], np.arange(5.0)
    out: list[Any] = []
    out.append(client.write(bars, "AAA/1Min/OHLCV")["responses"])
    out.append(client.write(bars[:10], "BBB/1Min/OHLCV")["responses"])
    out.append(client.write(ticks, "AAA/1Sec/TICK", isvariablelength=True)["responses"])
    out.append(client.query(pymkts.Params("AAA", "1Min", "OHLCV", start=1_704_067_200 + 600)).first().df())
    out.append(client.query(pymkts.Params("AAA", "1Sec", "TICK")).first().df())
    out.append(client.destroy("BBB/1Min/OHLCV")["responses"])
    out.append(sorted(client.list_symbols()))
    return out


def _data_files(root: Path) -> dict[str, bytes]:
    """Every data file under ``root`` (not the write-ahead log, nor the lock, which holds the pid, nor
    the log's applied mark, which holds the boot id and its own inode)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "wal" not in p.name.lower() and p.name not in ("lock", "applied")}  # fmt: skip


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_unsupported_settings_have_no_effect(tmp_path: Path) -> None:
    plain = start_server(tmp_path / "plain")
    try:
        expected = _session(plain)
    finally:
        assert plain.stop() in (0, -signal.SIGTERM, 128 + signal.SIGTERM), plain.output()
    config = dict(UNSUPPORTED_VALUES, wal_bypass=False)
    loaded = start_server(tmp_path / "loaded", config=config)
    try:
        got = _session(loaded)
        assert not _listening(_UTIL_PORT)
    finally:
        assert loaded.stop() in (0, -signal.SIGTERM, 128 + signal.SIGTERM), loaded.output()
    for a, b in zip(expected, got, strict=True):
        if hasattr(a, "equals"):
            assert a.equals(b)
        else:
            assert a == b
    assert _data_files(plain.root) == _data_files(loaded.root)
    assert _data_files(plain.root)  # the comparison covered real files
    log = loaded.output()
    warned = [line for line in log.splitlines() if "(not supported)" in line]
    assert [line.split("mkts.yml ")[1].split(":")[0] for line in warned] == list(UNSUPPORTED_VALUES), log[-2000:]
    assert "not implemented yet" not in log


def test_log_lists_only_what_is_unsupported(tmp_path: Path) -> None:
    """Honoured settings are not called unsupported; wal_bypass's warning says what it really does."""
    config = {
        "wal_bypass": True,
        "triggers": [{"module": "ondiskagg.so", "on": "*/1Min/OHLCV", "config": {"destinations": ["5Min"]}}],
    }
    server = start_server(tmp_path / "srv", config=config)
    try:
        client = pymkts.Client(server.rpc)
        bars = np.zeros(10, dtype=[("Epoch", "i8"), ("Close", "f8")])
        bars["Epoch"], bars["Close"] = 1_704_067_200 + 60 * np.arange(10), np.arange(10.0)
        client.write(bars, "AAA/1Min/OHLCV")
        assert client.query(pymkts.Params("AAA", "1Min", "OHLCV")).first().df()["Close"].tolist() == list(range(10))
    finally:
        server.stop()
    log = server.output()
    assert "(not supported)" not in log
    assert "not implemented" not in log
    assert "mkts.yml wal_bypass: writes skip the write-ahead log" in log
    wal_bytes = sum(p.stat().st_size for p in server.root.rglob("*") if "wal" in p.name.lower() and p.is_file())
    assert wal_bytes < 200, "wal_bypass must keep the write off the log"  # at most an empty segment's header
