"""``mkts.yml``: every MarketStore key (spec §9), typed values, warnings and errors naming the key."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pandas as pd
import pytest

import mktsframe
from mktsframe.backend.local import LocalBackend
from mktsframe.config import DEFAULT_CONFIG_TEXT, Config, ConfigError, default_root, load_config

SPEC_KEYS = {
    "root_directory": "data",
    "listen_host": "",
    "listen_port": 5993,
    "grpc_listen_port": 5995,  # MarketStore's `init` file sets it (its built-in default is off)
    "grpc_max_send_msg_size": 1024,
    "grpc_max_recv_msg_size": 1024,
    "utilities_url": None,
    "timezone": "UTC",
    "log_level": "info",
    "stop_grace_period": 0,
    "wal_rotate_interval": 5,
    "disable_variable_compression": False,
    "init_catalog": True,
    "init_wal_cache": True,
    "background_sync": False,  # mktsframe's default is durable (MarketStore: true)
    "wal_bypass": False,
    "triggers": [],
    "bgworkers": [],
    "replication": {},
    # removed/never implemented in MarketStore, still accepted
    "queryable": True,
    "enable_add": True,
    "enable_remove": True,
    "enable_last_known": False,
    "stale_threshold": None,
}


def write(tmp_path: Path, text: str, name: str = "mkts.yml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_cover_every_spec_key() -> None:
    cfg = Config()
    for key, default in SPEC_KEYS.items():
        assert getattr(cfg, key) == default, key
    assert load_config() == Config()


def test_every_key_is_read_and_typed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
root_directory: /srv/mkts
listen_host: 127.0.0.1
listen_port: ":6000"
grpc_listen_port: 5995
grpc_max_send_msg_size: 64
grpc_max_recv_msg_size: "128"
utilities_url: localhost:5994
timezone: America/New_York
log_level: debug
stop_grace_period: 3s
wal_rotate_interval: 2
disable_variable_compression: "t"
init_catalog: 1
init_wal_cache: "false"
background_sync: "yes"
wal_bypass: false
queryable: off
enable_add: false
enable_remove: "0"
enable_last_known: true
stale_threshold: 7
triggers:
  - module: ondiskagg.so
    on: "*/1Min/OHLCV"
    config: {destinations: [5Min, 1H]}
bgworkers:
  - module: gdaxfeeder.so
    name: GdaxFetcher
    config: {symbols: [BTC]}
replication:
  enabled: true
  listen_port: 5996
checkpoint_interval: 60
sync_interval: 0.25
wal_max_bytes: 1048576
max_body_bytes: 1024
stream_max_wait: 0.02
""",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no key here is unknown
        cfg = load_config(path)
    assert cfg.root_directory == "/srv/mkts"
    assert (cfg.listen_host, cfg.listen_port, cfg.grpc_listen_port) == ("127.0.0.1", 6000, 5995)
    assert (cfg.grpc_max_send_msg_size, cfg.grpc_max_recv_msg_size) == (64, 128)
    assert cfg.utilities_url == "localhost:5994"
    assert (cfg.timezone, cfg.log_level, cfg.stop_grace_period) == ("America/New_York", "debug", 3.0)
    assert cfg.wal_rotate_interval == 2
    assert cfg.disable_variable_compression is True
    assert cfg.init_catalog is True
    assert cfg.init_wal_cache is False
    assert cfg.background_sync is True
    assert cfg.wal_bypass is False
    assert (cfg.queryable, cfg.enable_add, cfg.enable_remove, cfg.enable_last_known) == (False, False, False, True)
    assert cfg.stale_threshold == 7
    assert cfg.triggers == [
        {"module": "ondiskagg.so", "on": "*/1Min/OHLCV", "config": {"destinations": ["5Min", "1H"]}}
    ]
    assert cfg.bgworkers[0]["name"] == "GdaxFetcher"
    assert cfg.replication == {"enabled": True, "listen_port": 5996}
    assert (cfg.checkpoint_interval, cfg.sync_interval, cfg.wal_max_bytes, cfg.max_body_bytes) == (
        60,
        0.25,
        2**20,
        1024,
    )
    assert cfg.stream_max_wait == 0.02
    opts = cfg.engine_options()
    assert opts["read_only"] is True  # init_wal_cache: false → no writer
    assert opts["background_sync"] is True
    assert opts["wal_rotate_interval"] == 2
    assert opts["sync_interval"] == 0.25
    assert opts["max_open_files"] is None  # 0: sized from the process's limits
    assert load_config(None, max_open_files=64).engine_options()["max_open_files"] == 64


def test_relative_root_is_resolved_against_the_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    cfg = load_config(write(tmp_path / "conf", "root_directory: ./store\n"))
    assert Path(cfg.root_directory) == tmp_path / "conf" / "store"
    assert cfg.root_path() == tmp_path / "conf" / "store"


def test_unknown_keys_warn_naming_them(tmp_path: Path) -> None:
    path = write(tmp_path, "listen_port: 5993\nbackground_synk: true\npolling_interval: 5\n")
    with pytest.warns(UserWarning, match="background_synk") as rec:
        cfg = load_config(path)
    assert "polling_interval" in str(rec[0].message)
    assert cfg.background_sync is False  # the typo did not silently apply


def test_unknown_keys_of_mixed_yaml_types_still_warn(tmp_path: Path) -> None:
    # YAML 1.1 reads bare `yes:` as True and `1:` as an int; the warning must still name them.
    path = write(tmp_path, "listen_port: 5993\n1: one\nyes: x\nfoo: bar\n")
    with pytest.warns(UserWarning, match="foo"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("background_sync: maybe", "background_sync"),
        ("wal_bypass: 2", "wal_bypass"),
        ("init_wal_cache: [true]", "init_wal_cache"),
        ("listen_port: http", "listen_port"),
        ("listen_port: -1", "listen_port"),
        ("listen_port: true", "listen_port"),
        ("grpc_listen_port: 5.5", "grpc_listen_port"),
        ("wal_rotate_interval: 0", "wal_rotate_interval"),
        ("stale_threshold: soon", "stale_threshold"),
        ("stop_grace_period: 5m", "stop_grace_period"),
        ("checkpoint_interval: -1", "checkpoint_interval"),
        ("sync_interval: fast", "sync_interval"),
        ("stream_max_wait: -0.1", "stream_max_wait"),
        ("timezone: Mars/Olympus_Mons", "timezone"),
        ("log_level: chatty", "log_level"),
        ("triggers: ondiskagg", "triggers"),
        ("triggers: [ondiskagg]", "triggers"),
        ("bgworkers: {a: 1}", "bgworkers"),
        ("replication: [1, 2]", "replication"),
        ("root_directory: [a, b]", "root_directory"),
        ("listen_host: {a: 1}", "listen_host"),
    ],
)
def test_bad_values_raise_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_config(write(tmp_path, text + "\n"))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("- a\n- b\n", "mapping"),
        ("just a string\n", "mapping"),
        ("a: [unclosed\n", "invalid YAML"),
        ("!!python/object/apply:os.system ['echo pwned']\n", "invalid YAML"),  # safe_load only
        ("root_directory: !!python/name:os.system\n", "invalid YAML"),
    ],
)
def test_unreadable_files(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, text))


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yml")
    assert dataclasses.replace(load_config(write(tmp_path, "")), root_directory="data") == Config()
    assert load_config(write(tmp_path, "# only comments\n"), listen_port=7000).listen_port == 7000


def test_the_default_file_loads_cleanly(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = load_config(write(tmp_path, DEFAULT_CONFIG_TEXT))
    assert dataclasses.replace(cfg, root_directory="data") == Config()
    assert Path(cfg.root_directory) == tmp_path / "data"
    for key in SPEC_KEYS:
        if key not in ("utilities_url", "replication", "stale_threshold", "enable_last_known",
                       "disable_variable_compression",
                       "init_catalog", "wal_bypass"):  # fmt: skip
            assert f"{key}:" in DEFAULT_CONFIG_TEXT, key


def test_default_root_and_connect_use_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MKTS_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_root() == Path("data")
    write(tmp_path, "root_directory: here\nbackground_sync: true\ncheckpoint_interval: 42\n")
    assert default_root() == tmp_path / "here"
    db = mktsframe.connect()
    try:
        assert isinstance(db, LocalBackend)
        assert db.root == (tmp_path / "here").resolve()
        assert db.engine.background_sync is True
        df = pd.DataFrame({"x": [1.0]}, index=pd.DatetimeIndex(["2024-01-01"], tz="UTC"))
        df.to_mkts("CFG/1Min/T", backend=db)
        assert (tmp_path / "here" / "CFG" / "1Min" / "T" / "bucket.json").is_file()
    finally:
        db.close()
    monkeypatch.setenv("MKTS_ROOT", str(tmp_path / "env"))
    assert default_root() == tmp_path / "env"


def test_config_object_drives_the_engine(tmp_root: Path) -> None:
    cfg = load_config(None, background_sync=True, wal_bypass=True)
    db = mktsframe.connect(tmp_root, config=cfg)
    try:
        assert isinstance(db, LocalBackend)
        assert db.engine.background_sync
        assert db.engine.wal_bypass
    finally:
        db.close()
    ro = mktsframe.connect(tmp_root, config=load_config(None, init_wal_cache=False))
    try:
        assert ro.read_only
    finally:
        ro.close()
