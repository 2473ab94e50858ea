"""The plugin framework on a real local engine, with plugins found through real entry points of a
package written to ``tmp_path`` (its own ``*.dist-info``), as a third party would ship them."""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from thirdparty import make_package

from mktsframe.backend.base import Batch
from mktsframe.plugins import PluginError, start_plugins
from mktsframe.plugins.discovery import find_factory, plugin_name
from mktsframe.plugins.triggers import glob_regex

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def pkg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    name = make_package(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    yield importlib.import_module(name)
    sys.modules.pop(name, None)


def bar(minute: int, close: float = 1.0) -> Batch:
    idx = np.array([pd.Timestamp("2024-01-01", tz="UTC").value + minute * 60 * 10**9], np.int64)
    return Batch(idx, {"Close": np.array([close])})


def wait_for(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return bool(cond())


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize(
    ("pattern", "key", "hit"),
    [
        ("*/1Min/OHLCV", "AAPL/1Min/OHLCV", True),
        ("*/1Min/OHLCV", "AAPL/11Min/OHLCV", False),  # MarketStore's unanchored search matched this
        ("*/1Min/OHLCV", "AAPL/1Min/OHLCVX", False),
        ("*/1Min/OHLCV/*.bin", "AAPL/1Min/OHLCV", True),  # a MarketStore file-path pattern
        ("AAPL/*/*", "AAPL/1D/TRADE", True),
        ("AAPL/*/*", "MSFT/1D/TRADE", False),
        ("A?PL/1D/*", "AAPL/1D/X", True),
        ("*/1Min/OHLCV", "a/b/1Min/OHLCV", False),
    ],
)
def test_on_glob_matches_whole_keys(pattern: str, key: str, hit: bool) -> None:
    assert bool(glob_regex(pattern).fullmatch(key)) is hit


def test_module_names_map_to_entry_points(pkg) -> None:
    assert plugin_name("ondiskagg.so") == plugin_name("/opt/go/bin/ondiskagg.so") == "ondiskagg"
    from mktsframe.plugins.ondiskagg import new_trigger

    assert find_factory("ondiskagg.so", "mktsframe.triggers") is new_trigger
    assert find_factory("recorder", "mktsframe.triggers") is pkg.Recorder
    assert find_factory(f"{pkg.__name__}:Ticker", "mktsframe.bgworkers") is pkg.Ticker
    with pytest.raises(PluginError, match=r"no plugin 'nope'.*recorder"):
        find_factory("nope.so", "mktsframe.triggers")


def test_builtins_are_declared_as_entry_points() -> None:
    """pyproject.toml declares what discovery.BUILTINS falls back to (for uninstalled trees)."""
    import tomllib

    from mktsframe.plugins.discovery import BUILTINS

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    assert {g: dict(v) for g, v in project["entry-points"].items() if g.startswith("mktsframe.")} == BUILTINS
    for group, names in BUILTINS.items():
        for name in names:
            assert callable(find_factory(f"{name}.so", group))


def test_triggers_fire_after_commits_on_matching_keys_in_order(db, pkg, tmp_path: Path) -> None:
    out = tmp_path / "rec.txt"
    cfg = {"triggers": [{"module": "recorder.so", "on": "*/1Min/OHLCV", "config": {"path": str(out)}},
                        {"module": "copier", "on": "*/1Min/OHLCV"}]}  # fmt: skip
    with start_plugins(db, cfg) as plugins:
        for m in range(50):
            db.write("AAA/1Min/OHLCV", bar(m, float(m)))
        db.write("AAA/5Min/OHLCV", bar(0))  # not matched
        db.delete("AAA/1Min/OHLCV", start="2024-01-01 00:00", end="2024-01-01 00:01")
        assert wait_for(lambda: len(lines(out)) == 53)
        assert wait_for(lambda: len(pd.read_mkts("AAA/1Min/COPY", backend=db)) == 50)
        assert plugins.status()["triggers"][0]["fired"] == 52
    got = lines(out)
    assert got[:2] == ["started", "create AAA/1Min/OHLCV 0"]
    assert got[2:52] == ["write AAA/1Min/OHLCV 1"] * 50
    assert got[52:] == ["delete AAA/1Min/OHLCV 0", "stopped"]
    np.testing.assert_array_equal(pd.read_mkts("AAA/1Min/COPY", backend=db)["Close"], np.arange(50.0))


def test_failing_and_hanging_triggers_never_block_writes_or_other_triggers(db, pkg, tmp_path: Path) -> None:
    out = tmp_path / "rec.txt"
    cfg = {"triggers": [
        {"module": "boom", "on": "*/*/*"},
        {"module": "hang", "on": "*/*/*", "queue_size": 5},
        {"module": "badstart", "on": "*/*/*"},
        {"module": "badfactory", "on": "*/*/*"},
        {"module": "missing.so", "on": "*/*/*"},
        {"module": "recorder", "on": "*/*/*", "config": {"path": str(out)}},
    ]}  # fmt: skip
    plugins = start_plugins(db, cfg)
    try:
        began = time.monotonic()
        for m in range(200):
            db.write("BBB/1Min/OHLCV", bar(m))
        assert time.monotonic() - began < 30  # nothing waited for the hung trigger (which waits 60 s)
        assert wait_for(lambda: len(lines(out)) == 202)  # started, create, 200 writes
        assert wait_for(lambda: plugins.triggers["boom"].fired == 201)
        st = {t["name"]: t for t in plugins.status()["triggers"]}
        assert st["boom"]["errors"] >= 1
        assert st["hang"]["dropped"] > 150  # a queue of 5: nearly everything dropped
        assert st["badstart"]["failed"].startswith("start failed")
        assert len(plugins.skipped) == 2
        assert "bad config for this plugin" in plugins.skipped[0]
        assert "no plugin 'missing'" in plugins.skipped[1]
        assert len(pd.read_mkts("BBB/1Min/OHLCV", backend=db)) == 200  # the data is all there
        began = time.monotonic()
        assert plugins.stop(timeout=0.5) is False  # the hung one is abandoned
        assert time.monotonic() - began < 5
    finally:
        pkg.RELEASE.set()
        plugins.stop()
    assert lines(out)[-1] == "stopped"


def test_bgworkers_run_until_stopped_and_crashes_restart_with_backoff(db, pkg, tmp_path: Path) -> None:
    runs = tmp_path / "runs.txt"
    cfg = {"bgworkers": [
        {"module": "ticker.so", "name": "tick", "config": {"key": "TCK/1Min/OHLCV", "every": 0.01}},
        {"module": "crasher", "name": "crash", "config": {"path": str(runs)}, "restart_delay": 0.1,
         "max_restart_delay": 0.4},
        {"module": "crasher", "name": "once", "config": {"path": str(tmp_path / "once.txt")}, "restart": False},
    ]}  # fmt: skip
    plugins = start_plugins(db, cfg)
    try:
        assert wait_for(lambda: len(lines(runs)) >= 5)
        assert wait_for(lambda: "TCK/1Min/OHLCV" in db.list_keys())
    finally:
        assert plugins.stop(timeout=5) is True
    st = {w["name"]: w for w in plugins.status()["bgworkers"]}
    assert not any(w["alive"] for w in st.values())
    assert st["once"]["runs"] == st["once"]["crashes"] == 1
    times = [float(x) for x in lines(runs)]
    gaps = np.diff(times)
    np.testing.assert_array_less([0.09, 0.19, 0.39], gaps[:3])  # backoff 0.1, 0.2, 0.4 s
    assert all(g < 2.0 for g in gaps[3:])  # capped at max_restart_delay
    n = len(pd.read_mkts("TCK/1Min/OHLCV", backend=db))
    time.sleep(0.1)
    assert len(pd.read_mkts("TCK/1Min/OHLCV", backend=db)) == n  # stopped means stopped


def test_triggers_need_a_backend_that_announces_commits(pkg) -> None:
    from mktsframe.backend.http import HTTPBackend

    remote = HTTPBackend("http://127.0.0.1:9")
    try:
        with pytest.raises(PluginError, match="local backend"):
            start_plugins(remote, {"triggers": [{"module": "recorder", "config": {"path": "x"}}]})
    finally:
        remote.close()
