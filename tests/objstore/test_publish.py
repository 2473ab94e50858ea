"""sync / snapshots / the object-store reader: what is uploaded, what readers see, what is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mktsframe
from mktsframe.backend.objstore import ObjectStoreBackend
from mktsframe.errors import CorruptFileError, LockedError, MktsError, ReadOnlyError
from mktsframe.publish import list_snapshots, sync
from mktsframe.testing.s3 import S3Server


def _bars(start: str, n: int, value: float) -> pd.DataFrame:
    idx = pd.date_range(start, periods=n, freq="1min", tz="UTC")
    return pd.DataFrame({"Close": np.full(n, value), "Volume": np.arange(n, dtype=np.int64)}, index=idx)


def test_sync_uploads_changes_only_and_old_snapshots_stay_readable(open_db, s3: S3Server) -> None:
    db = open_db(read_only=False)
    for sym in ("AAA", "BBB"):
        _bars("2023-12-31 23:00", 120, 1.0).to_mkts(f"{sym}/1Min/OHLCV", backend=db)  # two year files each
    url, so = "s3://mkts/publish-test", s3.storage_options
    first = sync(db, url, storage_options=so)
    assert (first.files, first.uploaded, first.reused) == (4, 4, 0)
    reader = mktsframe.connect(url, storage_options=so)
    assert isinstance(reader, ObjectStoreBackend)
    before = mktsframe.read_mkts("AAA/1Min/OHLCV", backend=reader)

    _bars("2024-01-01 05:00", 10, 2.0).to_mkts("AAA/1Min/OHLCV", backend=db)  # changes AAA's 2024 file only
    again = sync(db, url, storage_options=so)
    assert (again.uploaded, again.reused) == (1, 3)
    assert sync(db, url, storage_options=so).uploaded == 0  # nothing changed: nothing uploaded

    # The reader opened before stays on its snapshot; a new one sees the change; the old id still opens.
    pd.testing.assert_frame_equal(mktsframe.read_mkts("AAA/1Min/OHLCV", backend=reader), before)
    new = mktsframe.connect(url, storage_options=so)
    assert len(mktsframe.read_mkts("AAA/1Min/OHLCV", backend=new)) == 130
    old = mktsframe.connect(url, storage_options=so, snapshot=first.snapshot)
    pd.testing.assert_frame_equal(mktsframe.read_mkts("AAA/1Min/OHLCV", backend=old), before)
    snaps = list_snapshots(url, storage_options=so)
    assert reader.refresh() == snaps[-1]["id"]
    assert len(mktsframe.read_mkts("AAA/1Min/OHLCV", backend=reader)) == 130
    assert snaps[0]["id"] == first.snapshot
    assert [s["current"] for s in snaps] == [False, False, True]


def test_one_day_read_is_one_ranged_get_and_fetches_little_more_than_it_returns(
    open_db, s3: S3Server
) -> None:
    db = open_db(read_only=False)
    _bars("2024-03-01", 10 * 1440, 1.5).to_mkts("AAA/1Min/OHLCV", backend=db)
    sync(db, "s3://mkts/one-day", storage_options=s3.storage_options)
    store = mktsframe.connect("s3://mkts/one-day", storage_options=s3.storage_options)
    assert isinstance(store, ObjectStoreBackend)
    mktsframe.read_mkts("AAA/1Min/OHLCV", "2024-03-02", "2024-03-02 23:59", backend=store)  # caches the header
    r0, b0 = store.requests, store.bytes_fetched
    df = mktsframe.read_mkts("AAA/1Min/OHLCV", "2024-03-05", "2024-03-05 23:59", backend=store)
    assert len(df) == 1440
    returned = df.index.asi8.nbytes + sum(df[c].to_numpy().nbytes for c in df)
    assert store.requests - r0 == 1  # the day's block: presence and both columns in one ranged GET
    assert (store.bytes_fetched - b0) / returned <= 1.5
    # Days without bars are not uploaded: 10 days of a year, not the 6.9 MB sparse year file.
    (entry,) = store.snapshot.files.values()
    assert entry.size < 11 * 1440 * (1 + 8 + 8) + 8192
    limited = mktsframe.read_mkts("AAA/1Min/OHLCV", limit=3, backend=store)
    assert list(limited.index) == list(pd.date_range("2024-03-10 23:57", periods=3, freq="1min", tz="UTC"))


def test_object_store_refuses_writes_and_explains(open_db) -> None:
    db = open_db(read_only=False)
    _bars("2024-01-01", 5, 1.0).to_mkts("AAA/1Min/OHLCV", backend=db)
    sync(db, "memory://refuse")
    store = mktsframe.connect("memory://refuse")
    with pytest.raises(ReadOnlyError, match="mktsframe sync"):
        _bars("2024-01-02", 1, 1.0).to_mkts("AAA/1Min/OHLCV", backend=store)
    with pytest.raises(ReadOnlyError):
        store.destroy("AAA/1Min/OHLCV")
    with pytest.raises(ReadOnlyError):
        mktsframe.connect("memory://refuse", read_only=False)
    with pytest.raises(MktsError, match="nothing is published"):
        mktsframe.connect("memory://nothing-here")
    with pytest.raises(MktsError, match="no snapshot"):
        mktsframe.connect("memory://refuse", snapshot="20000101T000000Z-000000")
    fs = store.fs
    fs.pipe_file("/refuse-bad/manifest.json", b"{not json")
    with pytest.raises(CorruptFileError, match="manifest"):
        mktsframe.connect("memory://refuse-bad")


def test_sync_of_a_root_another_process_writes_says_where_to_run_it(tmp_path: Path) -> None:
    root = tmp_path / "live"
    code = (
        "import sys, mktsframe; db = mktsframe.connect(sys.argv[1], read_only=False); "
        "print('ready', flush=True); sys.stdin.read()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        with pytest.raises(LockedError, match="run sync in that process"):
            sync(root, "memory://locked")
    finally:
        proc.communicate(b"", timeout=30)


def test_cli_sync_and_snapshots(open_db, tmp_path: Path) -> None:
    db = open_db(read_only=False)
    _bars("2024-01-01", 5, 1.0).to_mkts("AAA/1Min/OHLCV", backend=db)
    root = db.root
    db.close()
    url = (tmp_path / "pub").as_uri()
    cli = [sys.executable, "-m", "mktsframe.cli"]
    out = subprocess.run([*cli, "sync", str(root), url], capture_output=True, text=True, check=True).stdout
    assert "1 uploaded" in out
    out = subprocess.run([*cli, "snapshots", url], capture_output=True, text=True, check=True).stdout
    assert out.startswith("* ")
    assert "1 files" in out
    manifest = json.loads((tmp_path / "pub" / "manifest.json").read_text())
    assert out.split()[1] == manifest["current"]
    bad = subprocess.run([*cli, "sync", str(root), url, "--storage-options", "[1]"], capture_output=True, text=True)
    assert bad.returncode != 0
    assert "JSON object" in bad.stderr


def test_magic_connects_to_a_published_root(open_db) -> None:
    pytest.importorskip("IPython")
    from mktsframe.backend import set_default_backend

    from ..helpers import ipython_shell

    db = open_db(read_only=False)
    _bars("2024-01-01", 50, 3.0).to_mkts("AAA/1Min/OHLCV", backend=db)
    sync(db, "memory://magic-pub")
    ip = ipython_shell()
    ip.run_line_magic("load_ext", "mktsframe")
    try:
        ip.run_line_magic("mkts", "connect memory://magic-pub")
        assert ip.run_line_magic("mkts", "ls") == ["AAA/1Min/OHLCV"]
        assert ip.run_line_magic("mkts", "info AAA/1Min/OHLCV")["rows"] == 50
        got = ip.run_line_magic("mkts", "read AAA/1Min/OHLCV --limit 3")
        assert list(got["Close"]) == [3.0, 3.0, 3.0]
    finally:
        ip.run_line_magic("unload_ext", "mktsframe")
        set_default_backend(None)


def test_prune_deletes_old_snapshots_and_only_their_objects(open_db, s3: S3Server) -> None:
    import s3fs

    from mktsframe.publish import prune_snapshots

    db = open_db(read_only=False)
    url, so = "s3://mkts/prune-test", s3.storage_options
    _bars("2023-12-31 23:00", 120, 1.0).to_mkts("AAA/1Min/OHLCV", backend=db)  # 2023 and 2024 files
    ids = [sync(db, url, storage_options=so).snapshot]
    for day, value in (("2024-01-02", 2.0), ("2024-01-03", 3.0), ("2024-01-04", 4.0)):
        _bars(day, 10, value).to_mkts("AAA/1Min/OHLCV", backend=db)  # changes the 2024 file only
        ids.append(sync(db, url, storage_options=so).snapshot)
    fs = s3fs.S3FileSystem(**so)
    assert len(fs.find("mkts/prune-test/objects")) == 5  # 2023 once, 2024 four times
    reader = mktsframe.connect(url, storage_options=so)  # on the current snapshot
    want = mktsframe.read_mkts("AAA/1Min/OHLCV", backend=reader)

    # all were replaced moments ago: the default grace keeps them (a reader may still be on one)
    assert prune_snapshots(url, 1, storage_options=so).deleted == []
    assert len(list_snapshots(url, storage_options=so)) == 4
    with pytest.raises(ValueError, match="at least 1"):
        prune_snapshots(url, 0, storage_options=so)

    r = prune_snapshots(url, 2, min_age=0, storage_options=so)
    assert r.deleted == ids[:2]
    assert r.kept == ids[2:]
    assert r.objects_deleted == 2  # the two old 2024 files; the 2023 one is shared by every snapshot
    assert r.bytes_deleted > 0
    assert [s["id"] for s in list_snapshots(url, storage_options=so)] == ids[2:]
    assert len(fs.find("mkts/prune-test/objects")) == 3
    assert not fs.exists(f"mkts/prune-test/snapshots/{ids[0]}.json")
    with pytest.raises(MktsError, match="no snapshot"):
        mktsframe.connect(url, storage_options=so, snapshot=ids[0])
    old = mktsframe.connect(url, storage_options=so, snapshot=ids[2])  # a kept one reads whole
    assert len(mktsframe.read_mkts("AAA/1Min/OHLCV", backend=old)) == 140
    pd.testing.assert_frame_equal(mktsframe.read_mkts("AAA/1Min/OHLCV", backend=reader), want)

    # the command line: prune to the current one
    cli = [sys.executable, "-m", "mktsframe.cli", "snapshots", url, "--storage-options", json.dumps(so)]
    out = subprocess.run([*cli, "--prune", "1", "--min-age", "0"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("deleted 1 snapshots (1 objects")
    assert out.splitlines()[1].startswith(f"* {ids[3]}")
    pd.testing.assert_frame_equal(mktsframe.read_mkts("AAA/1Min/OHLCV", backend=reader), want)
