"""The ``connect`` shell: driven through its cmd object, as a piped script, and on a terminal."""

from __future__ import annotations

import io
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mktsframe
from mktsframe.shell import MktsShell, parse_shape
from mktsframe.shell.output import format_table, go_time

KEY = "TSLA/1Min/OHLCV"
TABLE = """\
=============================  ==========  ==========  
                        Epoch  Open        Volume      
=============================  ==========  ==========  
2024-01-02 09:30:00 +0000 UTC  1.5         100         
2024-01-02 09:31:00 +0000 UTC  1.625       200         
=============================  ==========  ==========  """


def run_lines(db, *lines: str) -> tuple[str, str, MktsShell]:
    out, err = io.StringIO(), io.StringIO()
    shell = MktsShell(db, "test", stdin=io.StringIO("\n".join(lines) + "\n"), stdout=out, stderr=err)
    shell.cmdloop()
    return out.getvalue(), err.getvalue(), shell


def csv_file(tmp_path: Path) -> Path:
    path = tmp_path / "bars.csv"
    path.write_text("Epoch,Open,Volume\n2024-01-02 09:30:00,1.5,100\n2024-01-02 09:31:00,1.625,200\n")
    return path


def test_marketstore_table_layout() -> None:
    idx = pd.DatetimeIndex(["2024-01-02 09:30", "2024-01-02 09:31"], tz="UTC", name="Epoch").as_unit("ns")
    df = pd.DataFrame({"Open": np.array([1.5, 1.625], "f4"), "Volume": [100, 200]}, index=idx)
    assert format_table(df) == TABLE
    assert go_time(pd.Timestamp("2017-01-03 00:00:00.25", tz="UTC").value) == "2017-01-03 00:00:00.25 +0000 UTC"
    wide = pd.DataFrame({"LongColumnName_SUM": [0.1 + 0.2]}, index=idx[:1])
    lines = format_table(wide).splitlines()
    assert lines[3].endswith("0.30000000000000004  ")  # float64 keeps its precision
    assert len({len(line) for line in lines}) == 1  # the rule widens with the values


def test_create_load_show_getinfo_trim_destroy(db, tmp_path) -> None:
    out, err, shell = run_lines(
        db,
        f"\\create {KEY}:Symbol/Timeframe/AttributeGroup Open/float32:Volume/int64 fixed",
        f"\\load {KEY} {csv_file(tmp_path)}",
        f"\\show {KEY} 2024-01-02",
        f"\\getinfo {KEY}",
        "\\create TICKS/1Sec/TICK Bid,Ask/float64 variable",
        "\\getinfo TICKS/1Sec/TICK",
        f"\\trim {KEY} 2024-01-02T09:31",
        f"\\sh {KEY} between 2024-01-01 and 2024-01-03",
        f"\\destroy {KEY}",
    )
    assert err == ""
    assert shell.failures == 0
    assert out.startswith(
        f"Successfully created a new catalog entry: {KEY}\n2 new lines written\n"
        "New data written from 2024-01-02 09:30:00 +0000 UTC to 2024-01-02 09:31:00 +0000 UTC\n" + TABLE + "\n"
    )
    assert "Latest Year: 2024\nRecord Type: fixed\nTimeframe: 1Min (60 s)\n" in out
    assert "Columns: Epoch:int64, Open:float32, Volume:int64\nRows: 2\n" in out
    assert "Removed 1 rows from TSLA/1Min/OHLCV\n" in out
    assert "Key: TICKS/1Sec/TICK\nLatest Year" in out
    assert "Record Type: variable" in out
    assert out.count("2024-01-02 09:31:00 +0000 UTC  1.625") == 1  # gone after \trim
    assert out.endswith(f"Successfully removed catalog entry: {KEY}\n")
    assert db.list_keys() == ["TICKS/1Sec/TICK"]


def test_sql_lines_and_output_redirect(db, tmp_path) -> None:
    db.create(KEY, [("Open", "f4"), ("Volume", "i8")])
    target = tmp_path / "out.csv"
    out, err, _ = run_lines(
        db,
        f"\\load {KEY} {csv_file(tmp_path)}",
        f"SELECT Open, Volume FROM `{KEY}` WHERE Volume > 150;",
        f"\\o {target}",
        f"select * from `{KEY}`",
        f"SELECT count(*) FROM `{KEY}`",
        "\\o",
        f'select Volume from "{KEY}" limit 1',
    )
    assert err == ""
    assert "2024-01-02 09:31:00 +0000 UTC  1.625       200         " in out
    assert out.endswith("2024-01-02 09:30:00 +0000 UTC  100         \n" + "=" * 29 + "  " + "=" * 10 + "  \n")
    lines = target.read_text().splitlines()
    assert lines[:3] == ["Epoch,Open,Volume", "2024-01-02 09:30:00,1.5,100", "2024-01-02 09:31:00,1.625,200"]
    assert lines[3].endswith(",2")  # the count, appended under the first header
    # What \o wrote loads back unchanged.
    db.create("COPY/1Min/OHLCV", [("Open", "f4"), ("Volume", "i8")])
    (tmp_path / "rows.csv").write_text("\n".join(lines[:3]) + "\n")
    _, err, _ = run_lines(db, f"\\load COPY/1Min/OHLCV {tmp_path / 'rows.csv'}")
    assert err == ""
    pd.testing.assert_frame_equal(
        mktsframe.read_mkts("COPY/1Min/OHLCV", backend=db), mktsframe.read_mkts(KEY, backend=db)
    )


def test_output_in_marketstores_show_layout(db, tmp_path) -> None:
    """``\\o FILE show``: no header, Go times, and a trailing Nanoseconds field for tick buckets."""
    db.create(KEY, [("Open", "f4"), ("Volume", "i8")])
    db.create("TICKS/1Sec/TICK", [("Bid", "f8")], variable_length=True)
    ticks = pd.DataFrame({"Bid": [1.25, 2.5]}, index=pd.DatetimeIndex(
        ["2016-12-30 21:37:57.000000250", "2016-12-30 21:37:58.5"], tz="UTC").as_unit("ns"))  # fmt: skip
    mktsframe.write_mkts(ticks, "TICKS/1Sec/TICK", backend=db)
    target = tmp_path / "show.csv"
    _, err, _ = run_lines(
        db,
        f"\\load {KEY} {csv_file(tmp_path)}",
        f"\\o {target} show",
        f"\\show {KEY} 2024-01-02",
        "\\show TICKS/1Sec/TICK 2016-12-30",
        "SELECT Bid FROM `TICKS/1Sec/TICK`",
        "\\o",
    )
    assert err == ""
    assert target.read_text().splitlines() == [
        "2024-01-02 09:30:00 +0000 UTC,1.5,100",
        "2024-01-02 09:31:00 +0000 UTC,1.625,200",
        "2016-12-30 21:37:57 +0000 UTC,1.25,250",
        "2016-12-30 21:37:58 +0000 UTC,2.5,500000000",
        "2016-12-30 21:37:57 +0000 UTC,1.25,250",
        "2016-12-30 21:37:58 +0000 UTC,2.5,500000000",
    ]
    _, err, _ = run_lines(db, f"\\o {target} shown")
    assert "usage: \\o [FILE [show]]" in err


def test_errors_go_to_stderr_and_the_session_goes_on(db, tmp_path) -> None:
    out, err, shell = run_lines(
        db,
        "\\create X/1Min/T Bid/float32 sometimes",
        "\\create X/1Min/T Bid/float99 fixed",
        "SELEC 1",
        "select * from `NOPE/1Min/X`",
        f"\\load {KEY} {csv_file(tmp_path)}",
        "\\frobnicate",
        "\\t",
        "\\create OK/1Min/T Bid/float32 fixed",
        "\\q",
        "\\create NEVER/1Min/T Bid/float32 fixed",
    )
    assert shell.failures == 7
    errors = err.splitlines()
    assert 'Error: Record type "sometimes" is not one of fixed or variable' in errors
    assert "Error: 'Bid/float99': unknown type 'float99'" in err
    assert "SQL syntax error" in err
    assert "line 1, column 7" in err
    assert "no files returned from query parse" in err
    assert f"Error: no bucket '{KEY}'" in err  # \\load needs an existing bucket, as in MarketStore
    assert "Error: unknown command \\frobnicate; try \\help" in errors
    assert "Error: unknown command \\t (did you mean timing, trim?)" in errors
    assert out == "Successfully created a new catalog entry: OK/1Min/T\n"
    assert db.list_keys() == ["OK/1Min/T"]


def test_help_and_shape_parsing(db) -> None:
    out, _, _ = run_lines(db, "help", "\\help create", "\\? load")
    assert "\\create KEY SHAPE fixed|variable" in out
    assert "Open,High,Low,Close/float32:Volume/int64" in out
    assert "columnNameMap" in out
    assert parse_shape("Open,High/float32:Volume/int64:Name/string16:Epoch/int64") == [
        ("Open", "f4"), ("High", "f4"), ("Volume", "i8"), ("Name", "U16")
    ]  # fmt: skip
    with pytest.raises(ValueError, match="names, '/', and a type"):
        parse_shape("Open")


def test_completion_of_commands_and_keys(db) -> None:
    db.create("AAPL/1Min/OHLCV", [("Close", "f4")])
    db.create("AAPL/1D/OHLCV", [("Close", "f4")])
    shell = MktsShell(db, "test", stdin=io.StringIO(""), stdout=io.StringIO())
    assert shell.completions("\\sh", "\\sh") == ["\\show"]
    assert shell.completions("\\t", "\\t") == ["\\timing", "\\trim"]
    assert shell.completions("\\show AAPL/1", "AAPL/1") == ["AAPL/1D/OHLCV", "AAPL/1Min/OHLCV"]
    assert shell.completions("select * from `AAPL/1M", "AAPL/1M") == ["AAPL/1Min/OHLCV"]


def mkts(*args: str, stdin: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mktsframe.cli", *args], input=stdin, capture_output=True,
                          text=True, timeout=120, cwd=cwd)  # fmt: skip


def test_piped_script_through_a_subprocess(tmp_path) -> None:
    script = "\n".join([
        f"\\create {KEY} Open/float32:Volume/int64 fixed",
        f"\\load {KEY} {csv_file(tmp_path)}",
        f"\\show {KEY} 2024-01-02",
        f"\\show {KEY} 2024-01-01 csv",
    ]) + "\n"  # fmt: skip
    r = mkts("connect", "--dir", str(tmp_path / "root"), stdin=script, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert TABLE in r.stdout
    assert "Wrote 2 rows to mstore-csv-output.csv" in r.stdout
    assert (tmp_path / "mstore-csv-output.csv").read_text().startswith("Epoch,Open,Volume\n2024-01-02 09:30:00,1.5,100")
    r = mkts("connect", "-d", str(tmp_path / "root"), stdin="select * from `NOPE/1Min/X`\n", cwd=tmp_path)
    assert r.returncode == 1
    assert "no files returned from query parse" in r.stderr
    r = mkts("sql", f"SELECT count(*) FROM `{KEY}`", "--dir", str(tmp_path / "root"), "--csv", stdin="", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "Epoch,Count"
    assert r.stdout.splitlines()[1].endswith(",2")


def test_interactive_terminal_has_completion_and_history(tmp_path) -> None:
    root = tmp_path / "root"
    with mktsframe.connect(root) as db:
        db.create(KEY, [("Open", "f4")])
    history = tmp_path / "history"
    master, slave = os.openpty()
    env = {**os.environ, "MKTS_HISTORY": str(history), "TERM": "dumb"}
    proc = subprocess.Popen([sys.executable, "-m", "mktsframe.cli", "connect", "--dir", str(root)], stdin=slave,
                            stdout=slave, stderr=slave, env=env, close_fds=True)  # fmt: skip
    os.close(slave)
    seen = b""

    def read_until(token: bytes, timeout: float = 30.0) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while token not in seen:
            left = deadline - time.monotonic()
            assert left > 0, f"timed out waiting for {token!r}; saw {seen!r}"
            ready, _, _ = select.select([master], [], [], left)
            if ready:
                try:
                    seen += os.read(master, 4096)
                except OSError:
                    break

    try:
        read_until("» ".encode())
        os.write(master, b"\\sh\t")
        read_until(b"\\show")
        os.write(master, b" TS\t")
        read_until(KEY.encode())
        os.write(master, b" 2024-01-01\r")
        read_until(b"No results")
        os.write(master, b"\\q\r")
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(master)
    assert proc.returncode == 0
    assert f"\\show {KEY} 2024-01-01" in history.read_text()
