"""The CSV loader: MarketStore control files, plain CSVs, bad rows by line, all or nothing."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mktsframe
from mktsframe.errors import BucketNotFoundError
from mktsframe.io.csv_loader import CsvDescription, CsvLoadError, go_layout_to_strptime, load_csv

KEY = "TSLA/1Min/OHLCV"
OHLCV = [("Open", "f4"), ("High", "f4"), ("Low", "f4"), ("Close", "f4"), ("Volume", "i8")]
HEADER = "Epoch,Open,High,Low,Close,Volume\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def rows(n: int, start: str = "2024-01-02 09:30") -> str:
    t0 = pd.Timestamp(start)
    return "".join(
        f"{(t0 + pd.Timedelta(minutes=i)).strftime('%Y-%m-%d %H:%M:%S')},{i}.5,{i + 1},{i - 1},{i}.25,{100 + i}\n"
        for i in range(n)
    )


def test_plain_csv_with_header_round_trips(db, tmp_path) -> None:
    db.create(KEY, OHLCV)
    path = write(tmp_path, "bars.csv", HEADER + rows(5))
    result = load_csv(KEY, path, backend=db, progress=False)
    assert result.rows == 5
    assert result.first == pd.Timestamp("2024-01-02 09:30", tz="UTC").value
    assert result.last == pd.Timestamp("2024-01-02 09:34", tz="UTC").value
    df = mktsframe.read_mkts(KEY, backend=db)
    assert df["Open"].tolist() == [0.5, 1.5, 2.5, 3.5, 4.5]
    assert df["Volume"].tolist() == [100, 101, 102, 103, 104]
    assert df["Volume"].dtype == np.int64
    assert df.index[0] == pd.Timestamp("2024-01-02 09:30", tz="UTC")


def test_header_matching_is_case_insensitive_and_ignores_extra_columns(db, tmp_path) -> None:
    db.create(KEY, [("Close", "f8")])
    path = write(
        tmp_path, "bars.csv", "epoch,Note,CLOSE\n2024-01-02T09:30:00Z,x,1.5\n2024-01-02T09:31:00+01:00,y,2.5\n"
    )
    load_csv(KEY, path, backend=db, progress=False)
    df = mktsframe.read_mkts(KEY, backend=db)
    assert df["Close"].tolist() == [2.5, 1.5]  # 09:31+01:00 is 08:31 UTC
    assert df.index.tolist() == [pd.Timestamp("2024-01-02 08:31", tz="UTC"), pd.Timestamp("2024-01-02 09:30", tz="UTC")]


def test_missing_bucket_is_created_from_the_csv_unless_refused(db, tmp_path) -> None:
    path = write(tmp_path, "bars.csv", "Epoch,Bid,Size\n1704187800,1.5,3\n1704187801.25,2,4\n")
    with pytest.raises(BucketNotFoundError):
        load_csv("Q/1Sec/QUOTE", path, backend=db, create=False, progress=False)
    load_csv("Q/1Sec/QUOTE", path, backend=db, progress=False)
    info = db.info("Q/1Sec/QUOTE")
    assert info.columns == (("Bid", "f8"), ("Size", "f8"))
    df = mktsframe.read_mkts("Q/1Sec/QUOTE", backend=db)
    assert df["Size"].tolist() == [3.0, 4.0]
    assert df.index[1] == pd.Timestamp("2024-01-02 09:30:01", tz="UTC")  # 1Sec bars floor the .25 s


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        (rows(3) + "2024-01-02 09:33:00,1,abc,1,1,1\n" + rows(2, "2024-01-02 10:00"), 5, "'abc' is not a number"),
        (rows(2) + "2024-13-02 09:32:00,1,2,1,1,1\n", 4, "cannot read time '2024-13-02 09:32:00'"),
        (rows(2) + "2024-01-02 09:32:00,1,2,1,1,1.5\n", 4, "'1.5' is not an integer"),
        (rows(2) + "2024-01-02 09:32:00,1,2,1,1\n", 4, "empty field"),
        (rows(1) + "2024-01-02 09:32:00,1,2,1,1,1,9\n", 3, "Expected 6 fields in line 3, saw 7"),
        (rows(1) + "\n" + "2024-01-02 09:32:00,1,,1,1,1\n", 4, "column 'High': empty field"),
    ],
)
def test_a_bad_row_is_reported_by_line_and_nothing_is_written(db, tmp_path, body, line, message) -> None:
    db.create(KEY, OHLCV)
    good = write(tmp_path, "good.csv", HEADER + rows(2, "2023-06-01"))
    load_csv(KEY, good, backend=db, progress=False)
    bad = write(tmp_path, "bad.csv", HEADER + body)
    with pytest.raises(CsvLoadError, match=message) as info:
        load_csv(KEY, bad, backend=db, progress=False)
    assert info.value.line == line
    assert f"line {line}" in str(info.value)
    df = mktsframe.read_mkts(KEY, backend=db)
    assert df.index.tolist() == [pd.Timestamp("2023-06-01 00:00", tz="UTC"), pd.Timestamp("2023-06-01 00:01", tz="UTC")]


def test_bad_row_in_a_later_chunk_writes_nothing(db, tmp_path) -> None:
    db.create(KEY, OHLCV)
    body = rows(250) + "2024-01-02 14:00:00,1,2,3,4,oops\n" + rows(10, "2024-01-03")
    path = write(tmp_path, "bars.csv", HEADER + body)
    with pytest.raises(CsvLoadError, match="line 252") as info:
        load_csv(KEY, path, backend=db, chunk_rows=100, progress=False)
    assert info.value.line == 252
    assert len(mktsframe.read_mkts(KEY, backend=db)) == 0


def test_chunked_load_matches_a_single_chunk(db, tmp_path) -> None:
    db.create(KEY, OHLCV)
    db.create("B/1Min/OHLCV", OHLCV)
    path = write(tmp_path, "bars.csv", HEADER + rows(1000))
    load_csv(KEY, path, backend=db, chunk_rows=77, progress=False)
    load_csv("B/1Min/OHLCV", path, backend=db, progress=False)
    a, b = mktsframe.read_mkts(KEY, backend=db), mktsframe.read_mkts("B/1Min/OHLCV", backend=db)
    assert len(a) == 1000
    pd.testing.assert_frame_equal(a, b, check_like=False)


def test_progress_bar_goes_to_stderr(db, tmp_path, capsys) -> None:
    db.create(KEY, OHLCV)
    path = write(tmp_path, "bars.csv", HEADER + rows(300))
    load_csv(KEY, path, backend=db, progress=True, chunk_rows=100)
    err = capsys.readouterr().err
    final = err.split("\r")[-1]  # tqdm redraws its line; the last state stays
    assert final.startswith("loading bars.csv: 100%|")
    assert "12.8k/12.8k" in final  # the whole file, in bytes
    assert final.rstrip().endswith("300 rows]")
    load_csv(KEY, path, backend=db, progress=False)
    assert capsys.readouterr().err == ""


STRINGS = [("Name", "U16"), ("Px", "f8")]
LONG = HEADER.split(",")[0] + ",Name,Px\n" + "2024-01-02 09:30:00,short,1\n2024-01-02 09:31:00,{},2\n" \
       "2024-01-02 09:32:00,{},3\n".format("x" * 17, "añ€😀" * 5)  # fmt: skip


def test_long_strings_are_refused_by_default(db, tmp_path) -> None:
    db.create(KEY, STRINGS)
    with pytest.raises(CsvLoadError, match=r"line 3: column 'Name': 'xxxxxxxxxxxxxxxxx' is longer than 16 characters"):
        load_csv(KEY, write(tmp_path, "s.csv", LONG), backend=db, progress=False)
    assert mktsframe.read_mkts(KEY, backend=db).empty  # nothing was written


def test_long_strings_are_cut_when_asked(db, tmp_path) -> None:
    db.create(KEY, STRINGS)
    result = load_csv(KEY, write(tmp_path, "s.csv", LONG), backend=db, progress=False, truncate_strings=True)
    assert (result.rows, result.truncated) == (3, 2)
    assert mktsframe.read_mkts(KEY, backend=db)["Name"].tolist() == ["short", "x" * 16, ("añ€😀" * 5)[:16]]
    # the same through the description file (MarketStore-style camelCase key)
    desc = write(tmp_path, "d.yaml", "firstRowHasColumnNames: true\ntruncateStrings: true\n")
    db.create("T2/1Min/OHLCV", STRINGS)
    assert load_csv("T2/1Min/OHLCV", tmp_path / "s.csv", desc, backend=db, progress=False).truncated == 2
    # an explicit False wins over the file
    with pytest.raises(CsvLoadError, match="longer than 16"):
        load_csv("T2/1Min/OHLCV", tmp_path / "s.csv", desc, backend=db, progress=False, truncate_strings=False)
    with pytest.raises(CsvLoadError, match="truncateStrings must be true or false"):
        CsvDescription.from_yaml(write(tmp_path, "bad.yaml", "truncateStrings: maybe\n"))


def test_marketstore_description_no_header_timezone_and_microsecond_suffix(db, tmp_path) -> None:
    db.create(KEY, OHLCV)
    desc = write(
        tmp_path,
        "desc.yaml",
        'firstRowHasColumnNames: false\ntimeFormat: "20060102 15:04:05"\n'
        'timeZone: "US/Eastern"\ncolumnNameMap: [Epoch, Open, High, Low, Close, Volume]\n',
    )
    data = write(tmp_path, "ticks.csv", "20161230 09:37:57 140000,1,2,3,4,5\n20160703 09:38:00 000000,6,7,8,9,10\n")
    db.create("T/1Sec/OHLCV", OHLCV)
    load_csv("T/1Sec/OHLCV", data, desc, backend=db, progress=False)
    df = mktsframe.read_mkts("T/1Sec/OHLCV", backend=db)
    # EDT in July (UTC-4), EST in December (UTC-5); the .14 s is floored by the 1Sec bucket.
    assert df.index.tolist() == [
        pd.Timestamp("2016-07-03 13:38:00", tz="UTC"),
        pd.Timestamp("2016-12-30 14:37:57", tz="UTC"),
    ]
    assert df["Volume"].tolist() == [10, 5]


def test_description_renames_header_and_joins_date_and_time(db, tmp_path) -> None:
    db.create(KEY, OHLCV)
    desc = write(
        tmp_path,
        "d.yaml",
        'firstRowHasColumnNames: true\ntimeFormat: "1/2/2006 3:04:05 PM"\n'
        "columnNameMap: [Epoch-date, Epoch-time, Open, High, Low, Close, Volume]\n",
    )
    data = write(
        tmp_path, "d.csv", "Date,Time,O,H,L,C,V\n1/2/2024,9:30:00 AM,1,2,3,4,5\n1/2/2024,1:05:00 PM,6,7,8,9,10\n"
    )
    load_csv(KEY, data, desc, backend=db, progress=False)
    df = mktsframe.read_mkts(KEY, backend=db)
    assert df.index.tolist() == [pd.Timestamp("2024-01-02 09:30", tz="UTC"), pd.Timestamp("2024-01-02 13:05", tz="UTC")]
    assert df["Close"].tolist() == [4.0, 9.0]


def test_unix_timestamp_format_keeps_fractions_exactly(db, tmp_path) -> None:
    desc = CsvDescription(time_format="timestamp")
    data = write(tmp_path, "t.csv", "Epoch,Bid\n1704187800.123456789,1\n1704187801,2\n")
    load_csv("N/1Sec/Q", data, desc, backend=db, progress=False)
    assert db.info("N/1Sec/Q").rows == 2


def test_bad_descriptions_are_refused(db, tmp_path) -> None:
    db.create(KEY, OHLCV)
    data = write(tmp_path, "d.csv", rows(1))
    cases = {
        "firstRowHasColumnNames: false\n": "not enough info",
        "firstRowHasColumnNames: true\ntimeZone: Mars/Olympus\n": "unknown timeZone",
        "firstRowHasColumnNames: true\ncolumnNames: [a]\n": "unknown keys",
        "- a\n- b\n": "must be a YAML mapping",
    }
    for text, message in cases.items():
        with pytest.raises(CsvLoadError, match=message):
            load_csv(KEY, data, write(tmp_path, "x.yaml", text), backend=db, progress=False)
    with pytest.raises(CsvLoadError, match="no CSV column for bucket column"):
        load_csv(KEY, write(tmp_path, "h.csv", "Epoch,Open\n2024-01-02,1\n"), backend=db, progress=False)
    assert db.info(KEY).rows == 0


def test_go_layouts() -> None:
    assert go_layout_to_strptime("20060102 15:04:05") == "%Y%m%d %H:%M:%S"
    assert go_layout_to_strptime("1/2/2006 3:04:05 PM") == "%m/%d/%Y %I:%M:%S %p"
    assert go_layout_to_strptime("2006-01-02T15:04:05.000Z07:00") == "%Y-%m-%dT%H:%M:%S.%f%z"
    assert go_layout_to_strptime("Jan _2 06 15:04") == "%b %d %y %H:%M"


def test_python_and_command_line_entry_points(tmp_path) -> None:
    import subprocess
    import sys

    path = write(tmp_path, "bars.csv", HEADER + rows(4))
    root = tmp_path / "root"
    out = subprocess.run(
        [sys.executable, "-m", "mktsframe.cli", "load", KEY, str(path), "--dir", str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "4 rows written to TSLA/1Min/OHLCV from 2024-01-02 09:30:00 +0000 UTC" in out.stdout
    bad = write(tmp_path, "bad.csv", HEADER + rows(1) + "x,1,2,3,4,5\n")
    out = subprocess.run(
        [sys.executable, "-m", "mktsframe.cli", "load", KEY, str(bad), "--dir", str(root)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "line 3: cannot read time 'x'" in out.stderr
    with mktsframe.connect(root) as db:
        assert db.info(KEY).rows == 4


def test_truncate_strings_flag_on_the_command_line_and_in_the_shell(tmp_path) -> None:
    import subprocess
    import sys

    from mktsframe.shell import MktsShell

    path = write(tmp_path, "s.csv", LONG)
    root = tmp_path / "root"
    with mktsframe.connect(root) as db:
        db.create(KEY, STRINGS)
    cmd = [sys.executable, "-m", "mktsframe.cli", "load", KEY, str(path), "--dir", str(root), "--no-create"]
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert "longer than 16 characters" in refused.stderr
    cut = subprocess.run([*cmd, "--truncate-strings"], capture_output=True, text=True, timeout=120, check=True)
    assert "3 rows written" in cut.stdout
    assert "2 string values longer than 16 characters were cut to 16" in cut.stdout
    with mktsframe.connect(root) as db:
        db.create("T2/1Min/OHLCV", STRINGS)
        out, err = io.StringIO(), io.StringIO()
        script = f"\\load T2/1Min/OHLCV {path}\n\\load T2/1Min/OHLCV {path} --truncate-strings\n"
        MktsShell(db, "test", stdin=io.StringIO(script), stdout=out, stderr=err).cmdloop()
        assert "longer than 16 characters" in err.getvalue()
        assert "2 string values longer than 16 characters were cut to 16\n3 new lines written" in out.getvalue()
        assert mktsframe.read_mkts("T2/1Min/OHLCV", backend=db)["Name"].str.len().max() == 16


@pytest.mark.timeout(120)
def test_progress_is_a_widget_in_a_notebook(tmp_path) -> None:
    """In a Jupyter kernel a load shows its progress by default, as tqdm.auto's widget."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    path = write(tmp_path, "bars.csv", HEADER + rows(50))
    code = (f"from mktsframe.io import load_csv\nr = load_csv({KEY!r}, {str(path)!r}, backend=__import__('mktsframe')"
            f".connect({str(tmp_path / 'root')!r}))\nprint(r.rows)")  # fmt: skip
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    nbclient.NotebookClient(nb, timeout=90, kernel_name="python3").execute()
    outputs = nb.cells[0].outputs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs), outputs
    assert any(o.get("text", "").strip() == "50" for o in outputs)
    models = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"].values()
    assert any(m["model_name"] == "FloatProgressModel" and m["state"]["value"] == m["state"]["max"] for m in models)
