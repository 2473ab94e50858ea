"""mkts.yml loading, and the write-ahead log's checkpoint/rotation lifecycle."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import mktsframe
from mktsframe.config import DEFAULT_CONFIG_TEXT, Config, ConfigError, load_config
from mktsframe.engine import Engine
from mktsframe.engine.wal import ReplayReport, WriteAheadLog

SPEC_KEYS = {
    "root_directory", "listen_host", "listen_port", "grpc_listen_port", "grpc_max_send_msg_size",
    "grpc_max_recv_msg_size", "utilities_url", "timezone", "log_level", "stop_grace_period",
    "wal_rotate_interval", "disable_variable_compression", "init_catalog", "init_wal_cache",
    "background_sync", "wal_bypass", "triggers", "bgworkers", "replication", "queryable",
    "enable_add", "enable_remove", "enable_last_known", "stale_threshold",
}  # fmt: skip


def test_config_knows_every_marketstore_key() -> None:
    assert {f.name for f in dataclasses.fields(Config)} >= SPEC_KEYS


def test_default_file_round_trips_and_paths_are_relative_to_it(tmp_path: Path) -> None:
    path = tmp_path / "mkts.yml"
    path.write_text(DEFAULT_CONFIG_TEXT)
    cfg = load_config(path)
    assert cfg.listen_port == 5993
    assert cfg.background_sync is False
    assert Path(cfg.root_directory) == tmp_path / "data"
    assert set(yaml.safe_load(DEFAULT_CONFIG_TEXT)) <= {f.name for f in dataclasses.fields(Config)}


def test_marketstore_style_values(tmp_path: Path) -> None:
    path = tmp_path / "mkts.yml"
    path.write_text(
        "root_directory: /srv/data\nlisten_port: ':5995'\nbackground_sync: 't'\nwal_rotate_interval: 3\n"
        "stop_grace_period: 5s\ntimezone: America/New_York\n"
        "triggers:\n  - module: ondiskagg.so\n    on: '*/1Min/OHLCV'\n"
    )
    cfg = load_config(path)
    assert (cfg.root_directory, cfg.listen_port, cfg.background_sync) == ("/srv/data", 5995, True)
    assert (cfg.wal_rotate_interval, cfg.stop_grace_period, cfg.timezone) == (3, 5.0, "America/New_York")
    assert cfg.triggers[0]["on"] == "*/1Min/OHLCV"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("background_sync: maybe", "background_sync"),
        ("listen_port: http", "listen_port"),
        ("wal_rotate_interval: 0", "wal_rotate_interval"),
        ("timezone: Mars/Olympus", "timezone"),
        ("log_level: loud", "log_level"),
        ("triggers: yes", "triggers"),
        ("- just\n- a list", "mapping"),
        ("key: [unclosed", "invalid YAML"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "mkts.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_unknown_keys_warn(tmp_path: Path) -> None:
    path = tmp_path / "mkts.yml"
    path.write_text("root_directory: d\nlisten_prot: 5993\n")
    with pytest.warns(UserWarning, match="listen_prot"):
        load_config(path)


def test_default_root_from_environment_and_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MKTS_ROOT", raising=False)
    from mktsframe.config import default_root

    assert default_root() == Path("data")
    (tmp_path / "mkts.yml").write_text("root_directory: elsewhere\n")
    assert default_root() == tmp_path / "elsewhere"
    monkeypatch.setenv("MKTS_ROOT", str(tmp_path / "env"))
    assert default_root() == tmp_path / "env"


def _one(i: int) -> pd.DataFrame:
    index = pd.DatetimeIndex([pd.Timestamp("2024-01-01", tz="UTC")]) + pd.Timedelta(minutes=i)
    return pd.DataFrame({"A": [float(i)]}, index=index)


def test_checkpoints_rotate_the_log(tmp_path: Path) -> None:
    root = tmp_path / "data"
    wal_dir = root / ".mkts" / "wal"
    with Engine(root, read_only=False, checkpoint_interval=0.2, wal_rotate_interval=2) as engine:
        be = mktsframe.backend.local.LocalBackend(engine)
        for i in range(5):
            _one(i).to_mkts("K/1Min/T", backend=be)
        first = sorted(wal_dir.glob("*.wal"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and WriteAheadLog(wal_dir).checkpoint_seq < 6:
            time.sleep(0.05)
        assert WriteAheadLog(wal_dir).checkpoint_seq == 6  # background checkpoint covered everything
        for i in range(5, 8):
            _one(i).to_mkts("K/1Min/T", backend=be)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sorted(wal_dir.glob("*.wal")) == first:
            time.sleep(0.05)
        assert sorted(wal_dir.glob("*.wal")) != first  # rotated: the checkpointed segment is gone
    assert not list(wal_dir.glob("*.wal"))  # a clean close leaves no log to replay
    with Engine(root, read_only=True) as engine:
        assert engine.query("K/1Min/T")["K/1Min/T"].columns["A"].tolist() == [float(i) for i in range(8)]


def test_large_logs_checkpoint_early(tmp_path: Path) -> None:
    root = tmp_path / "data"
    with Engine(root, read_only=False, wal_max_bytes=100_000) as engine:
        be = mktsframe.backend.local.LocalBackend(engine)
        for i in range(10):
            idx = pd.date_range("2024-01-01", periods=2000, freq="1min", tz="UTC") + pd.Timedelta(days=2 * i)
            pd.DataFrame({"A": np.arange(2000.0)}, index=idx).to_mkts("K/1Min/T", backend=be)
            assert engine._wal is not None
            assert engine._wal.bytes_since_checkpoint <= 100_000 + 20_000


def test_background_sync_mode_still_survives_a_killed_process(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = tmp_path / "data"
    code = (
        "import sys, os, mktsframe, pandas as pd\n"
        "db = mktsframe.connect(sys.argv[1], read_only=False, background_sync=True)\n"
        "for i in range(200):\n"
        "    pd.DataFrame({'A': [float(i)]}, index=pd.DatetimeIndex([pd.Timestamp('2024-01-01', tz='UTC')"
        " + pd.Timedelta(minutes=i)])).to_mkts('K/1Min/T', backend=db)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(root)], check=False)
    assert proc.returncode == -9
    with Engine(root, read_only=False) as engine:  # the page cache kept the unsynced log
        assert engine.recovery.records == 201
        assert len(engine.query("K/1Min/T")["K/1Min/T"]) == 200


def test_wal_frames_survive_a_reopen_byte_for_byte(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    wal.start_segment()
    arrays = [np.arange(5, dtype="<i8"), np.array(["a", "bé"], dtype="<U16"), np.array([True, False])]
    seq = wal.append({"op": "write", "key": "K/1Min/T"}, arrays)
    wal.sync()
    wal.close()
    fresh = WriteAheadLog(tmp_path)
    (rec,) = list(fresh.replay(ReplayReport()))
    assert rec.seq == seq
    assert rec.meta["op"] == "write"
    for a, b in zip(rec.arrays(), arrays, strict=True):
        np.testing.assert_array_equal(a, b)
    assert fresh.next_seq == seq + 1
    assert os.stat(tmp_path / f"{1:020d}.wal").st_size > 0
