"""The ``%mkts`` magic, driven through a real IPython InteractiveShell (no notebook, no browser)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

pytest.importorskip("IPython")
from IPython.core.completer import provisionalcompleter
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import mktsframe
from mktsframe.backend import set_default_backend

from .helpers import assert_epoch_index, ipython_shell, ohlcv


@pytest.fixture
def ip(tmp_path: Path) -> Iterator[InteractiveShell]:
    shell = ipython_shell()
    shell.run_line_magic("load_ext", "mktsframe")
    yield shell
    shell.run_line_magic("unload_ext", "mktsframe")
    set_default_backend(None)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    with mktsframe.connect(path) as db:
        mktsframe.write_mkts(ohlcv("2024-01-02", 600, seed=1), "BTC/1Min/OHLCV", backend=db)
        mktsframe.write_mkts(ohlcv("2024-01-02", 600, seed=2), "ETH/1Min/OHLCV", backend=db)
        mktsframe.write_mkts(ohlcv("2024-01-01", 30, freq="1D", seed=3), "BTC/1D/OHLCV", backend=db)
    return path


def run(ip: InteractiveShell, code: str) -> Any:
    result = ip.run_cell(code)
    if result.error_in_exec is not None:
        raise result.error_in_exec
    if result.error_before_exec is not None:
        raise result.error_before_exec
    return result.result


def test_connect_ls_info_read(ip: InteractiveShell, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(ip, f"%mkts connect {root}")
    assert "3 buckets" in capsys.readouterr().out
    assert run(ip, "%mkts ls") == ["BTC/1D/OHLCV", "BTC/1Min/OHLCV", "ETH/1Min/OHLCV"]
    assert run(ip, "%mkts ls */1Min/OHLCV") == ["BTC/1Min/OHLCV", "ETH/1Min/OHLCV"]
    info = run(ip, "%mkts info BTC/1Min/OHLCV")
    assert info.name == "BTC/1Min/OHLCV"
    assert info["rows"] == 600
    assert info["first"] == pd.Timestamp("2024-01-02", tz="UTC")
    assert info["last"] == pd.Timestamp("2024-01-02 09:59", tz="UTC")

    run(ip, 'df = %mkts read BTC/1Min/OHLCV --start "2024-01-02 01:00" --end "2024-01-02 02:00" --limit 10')
    df = ip.user_ns["df"]
    assert_epoch_index(df)
    want = mktsframe.read_mkts("BTC/1Min/OHLCV", "2024-01-02 01:00", "2024-01-02 02:00", limit=10, backend=None)
    pd.testing.assert_frame_equal(df, want)  # connect made the magic's backend the default
    assert df.index[-1] == pd.Timestamp("2024-01-02 02:00", tz="UTC")
    first = run(ip, "%mkts read BTC/1Min/OHLCV --limit 3 --first --columns Close,Volume")
    assert list(first.columns) == ["Close", "Volume"]
    assert first.index[0] == pd.Timestamp("2024-01-02", tz="UTC")
    both = run(ip, "%mkts read BTC,ETH/1Min/OHLCV --limit 2")
    assert list(both["Symbol"]) == ["BTC", "ETH", "BTC", "ETH"]


def test_connect_replaces_and_unload_restores_the_default_backend(ip: InteractiveShell, root: Path) -> None:
    mine = mktsframe.connect(root / "other")
    set_default_backend(mine)
    try:
        run(ip, f"%mkts connect {root}")
        run(ip, f"%mkts connect {root}")  # reconnecting keeps what was there before the first connect
        assert len(mktsframe.read_mkts("BTC/1D/OHLCV")) == 30
        ip.run_line_magic("unload_ext", "mktsframe")
        with pytest.raises(mktsframe.BucketNotFoundError):
            mktsframe.read_mkts("BTC/1D/OHLCV")  # the notebook's own default again
        ip.run_line_magic("load_ext", "mktsframe")
    finally:
        set_default_backend(None)
        mine.close()


def test_cell_query(ip: InteractiveShell, root: Path) -> None:
    run(ip, f"%mkts connect {root}")
    df = run(ip, "%%mkts\n# the last hour\nETH/1Min/OHLCV --start '2024-01-02 09:00'\n")
    assert len(df) == 60
    assert run(ip, "%%mkts -o bars\nBTC/1D/OHLCV --limit 5\n") is None
    assert len(ip.user_ns["bars"]) == 5
    assert ip.user_ns["bars"].attrs["mkts_key"] == "BTC/1D/OHLCV"


def test_line_expands_python_variables_but_the_cell_body_does_not(ip: InteractiveShell, root: Path) -> None:
    ip.user_ns["where"] = str(root)
    run(ip, "%mkts connect {where}")
    ip.user_ns["n"] = 2
    assert len(run(ip, "%mkts read BTC/1D/OHLCV --limit $n")) == 2
    with pytest.raises(UsageError, match="invalid int value: '\\$n'"):
        run(ip, "%%mkts\nBTC/1D/OHLCV --limit $n\n")


def test_cell_sql(ip: InteractiveShell, root: Path) -> None:
    run(ip, f"%mkts connect {root}")
    cell = "%%mkts\nSELECT Close FROM `BTC/1D/OHLCV` LIMIT 3\n"
    if importlib.util.find_spec("mktsframe.sql") is None:
        with pytest.raises(UsageError, match="SQL not available yet"):
            run(ip, cell)
    else:
        df = run(ip, cell)
        assert len(df) == 3
        assert list(df.columns) == ["Close"]


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("%mkts ls", "not connected: run %mkts connect"),
        ("%mkts frobnicate", "unknown %mkts command 'frobnicate'"),
        ("%mkts connect", "usage: %mkts connect"),
        ("%mkts connect nosuch://x/y", "unsupported backend URL scheme"),
    ],
)
def test_errors_before_connecting(ip: InteractiveShell, code: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        run(ip, code)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("%mkts read NOPE/1Min/OHLCV", "BucketNotFoundError"),
        ("%mkts read BTC/1Min/OHLCV --limit ten", "invalid int value"),
        ("%mkts read BTC/1Min/OHLCV --start yesterday-ish", "cannot parse"),
        ("%mkts read BTC/1Min/OHLCV --columns Bid", "no column"),
        ("%mkts read BTC/1Min/OHLCV --first", "--first only makes sense with --limit"),
        ("%mkts read ../etc/1Min/OHLCV", "InvalidKeyError"),
        ("%mkts info", "usage: %mkts info KEY"),
        ("%%mkts\n\n", "cell is empty"),
        ("%%mkts\nBTC/1D/OHLCV\nETH/1Min/OHLCV\n", "holds one query"),
        ("%%mkts --bogus\nBTC/1D/OHLCV\n", "unrecognized arguments"),
    ],
)
def test_helpful_errors(ip: InteractiveShell, root: Path, code: str, message: str) -> None:
    run(ip, f"%mkts connect {root}")
    with pytest.raises(UsageError, match=message):
        run(ip, code)


def complete(ip: InteractiveShell, line: str) -> set[str]:
    """What Jupyter's Tab offers with the cursor at the end of ``line``."""
    with provisionalcompleter():
        return {c.text for c in ip.Completer.completions(line, len(line))}


def test_tab_completion_of_commands_and_keys(ip: InteractiveShell, root: Path) -> None:
    run(ip, f"%mkts connect {root}")
    assert complete(ip, "%mkts re") == {"read"}
    assert complete(ip, "%mkts read BTC/1") == {"BTC/1D/OHLCV", "BTC/1Min/OHLCV"}
    assert complete(ip, "%mkts info ET") == {"ETH/1Min/OHLCV"}
    with mktsframe.connect(root) as db:  # a bucket created later shows up after %mkts ls
        mktsframe.write_mkts(ohlcv("2024-01-02", 2, seed=4), "EOS/1Min/OHLCV", backend=db)
    assert "EOS/1Min/OHLCV" in run(ip, "%mkts ls")
    assert complete(ip, "%mkts read E") == {"EOS/1Min/OHLCV", "ETH/1Min/OHLCV"}
