"""Engine behaviours: MarketStore's asserted semantics (spec §6.1, §12) without its defects."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from engine_helpers import bars

import mktsframe
from mktsframe.backend.local import LocalBackend
from mktsframe.errors import (
    BucketExistsError,
    BucketNotFoundError,
    LockedError,
    ReadOnlyError,
    SchemaMismatchError,
)


def frame(times: list[str], values: list[float], col: str = "A") -> pd.DataFrame:
    return pd.DataFrame({col: np.array(values, "f8")}, index=pd.DatetimeIndex(times, tz="UTC"))


def read(db: LocalBackend, key: str = "K/1Min/T", **kw: object) -> pd.DataFrame:
    return pd.read_mkts(key, backend=db, **kw)


def test_year_boundaries_and_first_of_january_daily_bar(db: LocalBackend) -> None:
    frame(["2023-12-31 23:59", "2024-01-01 00:00"], [1, 2]).to_mkts("K/1Min/T", backend=db)
    frame(["2024-01-01", "2024-12-31", "2025-01-01"], [1, 2, 3]).to_mkts("K/1D/T", backend=db)  # MarketStore #109
    got = read(db)
    assert got.index.tolist() == list(pd.DatetimeIndex(["2023-12-31 23:59", "2024-01-01 00:00"], tz="UTC"))
    daily = read(db, "K/1D/T")
    assert daily["A"].tolist() == [1, 2, 3]
    assert daily.index[0] == pd.Timestamp("2024-01-01", tz="UTC")
    assert db.info("K/1D/T").years == (2024, 2025)


def test_leap_day_and_last_minute_of_a_leap_year(db: LocalBackend) -> None:
    frame(["2024-02-29 12:00", "2024-12-31 23:59"], [1, 2]).to_mkts("K/1Min/T", backend=db)
    assert read(db)["A"].tolist() == [1, 2]


def test_overwrite_out_of_order_and_last_wins(db: LocalBackend) -> None:
    frame(["2024-01-01 00:02", "2024-01-01 00:00"], [2, 0]).to_mkts("K/1Min/T", backend=db)
    frame(["2024-01-01 00:01", "2024-01-01 00:02", "2024-01-01 00:01"], [10, 20, 11]).to_mkts("K/1Min/T", backend=db)
    got = read(db)
    assert got["A"].tolist() == [0, 11, 20]


def test_timestamps_inside_a_bar_are_floored_to_its_start(db: LocalBackend) -> None:
    frame(["2024-01-01 12:00:30.123456789"], [1]).to_mkts("K/1Min/T", backend=db)
    assert read(db).index[0] == pd.Timestamp("2024-01-01 12:00", tz="UTC")


def test_multi_year_write_and_read(db: LocalBackend) -> None:
    df = bars("2021-12-31 22:00", 3 * 525_600 // 10, freq="10min")
    df.to_mkts("K/10Min/T", backend=db)
    got = read(db, "K/10Min/T")
    pd.testing.assert_frame_equal(got, df.rename_axis("Epoch"), check_freq=False)
    assert db.info("K/10Min/T").years == (2021, 2022, 2023, 2024)
    mid = read(db, "K/10Min/T", start="2022-12-31 23:00", end="2023-01-01 01:00")
    assert len(mid) == 13


def test_inclusive_bounds_at_bar_granularity(db: LocalBackend) -> None:
    # spec §6.1 (test_grpc_compat): 1Sec bars at 00:00, 01:00, 02:00, 03:00
    times = ["2024-01-01 00:00", "2024-01-01 01:00", "2024-01-01 02:00", "2024-01-01 03:00"]
    frame(times, [0, 1, 2, 3]).to_mkts("K/1Sec/T", backend=db)

    def vals(**kw: object) -> list[float]:
        return read(db, "K/1Sec/T", **kw)["A"].tolist()

    assert vals(start="2024-01-01 01:30") == [2, 3]
    assert vals(end="2024-01-01 01:30") == [0, 1]
    assert vals(start="2024-01-01 01:00", end="2024-01-01 02:00") == [1, 2]
    assert vals(limit=2) == [2, 3]
    assert vals(limit=2, limit_from_start=True) == [0, 1]
    assert vals(start="2024-01-01 01:00", end="2024-01-01 03:00", limit=2, limit_from_start=True) == [1, 2]
    assert vals(start="2024-01-01 01:00", end="2024-01-01 03:00", limit=2) == [2, 3]
    # a bound inside a coarser bar selects that bar
    frame(["2024-01-01 10:00"], [7]).to_mkts("K/1H/T", backend=db)
    assert read(db, "K/1H/T", start="2024-01-01 10:15")["A"].tolist() == [7]


def test_limits_across_year_files(db: LocalBackend) -> None:
    frame(["2017-01-01", "2018-01-01"], [1, 2]).to_mkts("K/1Min/T", backend=db)
    assert read(db, limit=1)["A"].tolist() == [2]
    assert read(db, limit=1, limit_from_start=True)["A"].tolist() == [1]
    assert read(db, limit=2)["A"].tolist() == [1, 2]  # test_bug_duplicated_limit
    assert read(db, limit=10)["A"].tolist() == [1, 2]
    empty = read(db, limit=0)
    assert empty.empty
    assert list(empty.columns) == ["A"]
    with pytest.raises(ValueError, match="limit"):
        read(db, limit=-1)


def test_limit_with_holes(db: LocalBackend) -> None:
    idx = pd.date_range("2024-01-01", periods=20_000, freq="1min", tz="UTC")[::7]
    pd.DataFrame({"A": np.arange(len(idx), dtype="f8")}, index=idx).to_mkts("K/1Min/T", backend=db)
    assert read(db, limit=5)["A"].tolist() == list(range(len(idx) - 5, len(idx)))
    assert read(db, limit=5, limit_from_start=True)["A"].tolist() == [0, 1, 2, 3, 4]
    got = read(db, start=idx[10], end=idx[20], limit=3)
    assert got["A"].tolist() == [18, 19, 20]


def test_empty_ranges_give_empty_frames_with_the_schema(db: LocalBackend) -> None:
    bars("2024-01-01", 100).to_mkts("K/1Min/OHLCV", backend=db)
    for kw in (
        {"start": "2023-01-01", "end": "2023-06-01"},  # before
        {"start": "2025-01-01"},  # after
        {"start": "2030-01-01", "end": "2031-01-01"},  # another year, no file
        {"start": "2024-01-01 05:00", "end": "2024-01-01 01:00"},  # inverted
    ):
        got = read(db, "K/1Min/OHLCV", **kw)
        assert got.empty
        assert got.dtypes.astype(str).tolist() == ["float32"] * 4 + ["float64"]
        assert str(got.index.dtype) == "datetime64[ns, UTC]"


def test_missing_bucket_names_the_key(db: LocalBackend) -> None:
    with pytest.raises(BucketNotFoundError, match=r"NOPE/1Min/T.*no files returned from query parse"):
        read(db, "NOPE/1Min/T")
    bars("2024-01-01", 10).to_mkts("A/1Min/OHLCV", backend=db)
    with pytest.raises(BucketNotFoundError, match="B/1Min/OHLCV"):
        read(db, "A,B/1Min/OHLCV")


def test_projection_and_multi_symbol(db: LocalBackend) -> None:
    bars("2024-01-01", 3, seed=1).to_mkts("AAPL/1Min/OHLCV", backend=db)
    bars("2024-01-01 00:01", 3, seed=2).to_mkts("MSFT/1Min/OHLCV", backend=db)
    close = read(db, "AAPL/1Min/OHLCV", columns=["Close"])
    assert list(close.columns) == ["Close"]
    both = read(db, "AAPL,MSFT/1Min/OHLCV")
    assert list(both.columns) == ["Symbol", "Open", "High", "Low", "Close", "Volume"]
    assert both["Symbol"].tolist() == ["AAPL", "AAPL", "MSFT", "AAPL", "MSFT", "MSFT"]
    assert both.index.is_monotonic_increasing
    star = read(db, "*/1Min/OHLCV")
    pd.testing.assert_frame_equal(star, both)
    assert read(db, "MSFT,AAPL/1Min/OHLCV")["Symbol"].tolist()[:2] == ["AAPL", "MSFT"]  # ties keep named order
    with pytest.raises(SchemaMismatchError, match="no column"):
        read(db, "AAPL/1Min/OHLCV", columns=["Nope"])


def test_multi_symbol_with_differing_schemas(db: LocalBackend) -> None:
    frame(["2024-01-01"], [1], col="Ask").to_mkts("A/1Min/Q", backend=db)
    pd.DataFrame({"Ask": [2.0], "Bid": [1.0]}, index=pd.DatetimeIndex(["2024-01-01"], tz="UTC")).to_mkts(
        "B/1Min/Q", backend=db
    )
    with pytest.raises(SchemaMismatchError, match="same columns"):
        read(db, "A,B/1Min/Q")
    assert read(db, "A,B/1Min/Q", columns=["Ask"])["Ask"].tolist() == [1.0, 2.0]


def test_schema_is_fixed_per_bucket(db: LocalBackend) -> None:
    frame(["2024-01-01"], [1.5]).to_mkts("K/1Min/T", backend=db)
    with pytest.raises(SchemaMismatchError, match=r"unexpected \['B'\]"):
        pd.DataFrame({"A": [1.0], "B": [2.0]}, index=pd.DatetimeIndex(["2024-01-02"], tz="UTC")).to_mkts(
            "K/1Min/T", backend=db
        )
    with pytest.raises(SchemaMismatchError, match=r"missing \['A'\]"):
        frame(["2024-01-02"], [1], col="B").to_mkts("K/1Min/T", backend=db)
    ints = pd.DataFrame({"I": np.array([1], "i4")}, index=pd.DatetimeIndex(["2024-01-01"], tz="UTC"))
    ints.to_mkts("K/1Min/I", backend=db)
    with pytest.raises(SchemaMismatchError, match="cannot store float64"):
        pd.DataFrame({"I": [1.5]}, index=pd.DatetimeIndex(["2024-01-02"], tz="UTC")).to_mkts("K/1Min/I", backend=db)
    with pytest.raises(SchemaMismatchError, match="out of range"):
        pd.DataFrame({"I": [2**40]}, index=pd.DatetimeIndex(["2024-01-02"], tz="UTC")).to_mkts("K/1Min/I", backend=db)
    # f8 → f4 is coerced, as MarketStore does (test_coerce_column); i8 in range → i4 is safe
    bars("2024-01-01", 2).to_mkts("K/1Min/OHLCV", backend=db)
    wide = bars("2024-01-02", 2).astype("f8")
    wide.to_mkts("K/1Min/OHLCV", backend=db)
    got = read(db, "K/1Min/OHLCV")
    assert got["Open"].dtype == np.float32
    assert got["Open"].iloc[-1] == np.float32(wide["Open"].iloc[-1])
    pd.DataFrame({"I": [7]}, index=pd.DatetimeIndex(["2024-01-03"], tz="UTC")).to_mkts("K/1Min/I", backend=db)
    assert read(db, "K/1Min/I")["I"].tolist() == [1, 7]
    # nothing half-written by the refused writes
    assert read(db)["A"].tolist() == [1.5]


def test_bad_frames_are_refused_clearly(db: LocalBackend) -> None:
    with pytest.raises(SchemaMismatchError, match="DatetimeIndex"):
        pd.DataFrame({"A": [1.0]}).to_mkts("K/1Min/T", backend=db)
    with pytest.raises(SchemaMismatchError, match="NaT"):
        pd.DataFrame({"A": [1.0]}, index=pd.DatetimeIndex([pd.NaT])).to_mkts("K/1Min/T", backend=db)
    with pytest.raises(SchemaMismatchError, match="longer than 16"):
        frame(["2024-01-01"], [1]).assign(S="x" * 17).to_mkts("K/1Min/S", backend=db)
    nullable = pd.array([1, None], dtype="Int64")
    with pytest.raises(SchemaMismatchError, match="missing values"):
        pd.DataFrame({"I": nullable}, index=pd.date_range("2024", periods=2, tz="UTC")).to_mkts("K/1Min/N", backend=db)
    assert db.list_keys() == []


def test_epoch_column_frames_as_pymarketstore_builds_them(db: LocalBackend) -> None:
    df = pd.DataFrame({"Epoch": [1704067200, 1704067260], "A": [1.0, 2.0]})
    df.to_mkts("K/1Min/T", backend=db)
    assert read(db).index[1] == pd.Timestamp("2024-01-01 00:01", tz="UTC")


def test_zone_aware_and_naive_times(db: LocalBackend) -> None:
    ny = pd.DatetimeIndex(["2024-01-01 09:30"], tz="America/New_York")
    pd.DataFrame({"A": [1.0]}, index=ny).to_mkts("K/1Min/T", backend=db)
    assert read(db).index[0] == pd.Timestamp("2024-01-01 14:30", tz="UTC")
    start = pd.Timestamp("2024-01-01 14:30", tz="UTC")
    for bound in (
        "2024-01-01 14:30",
        "2024-01-01T09:30-05:00",
        dt.datetime(2024, 1, 1, 14, 30),
        dt.datetime(2024, 1, 1, 14, 30, tzinfo=dt.UTC),
        start,
        start.value,
        start.value // 10**9,
        float(start.value // 10**9),
        np.datetime64("2024-01-01T14:30"),
    ):
        assert len(read(db, start=bound, end=bound)) == 1, bound
    with pytest.raises(ValueError, match="ambiguous"):
        read(db, start=start.value // 10**6)  # milliseconds


def test_delete_range_inclusive(db: LocalBackend) -> None:
    bars("2023-12-31 23:55", 10).to_mkts("K/1Min/OHLCV", backend=db)
    removed = db.delete("K/1Min/OHLCV", start="2023-12-31 23:58", end="2024-01-01 00:01")
    assert removed == 4
    got = read(db, "K/1Min/OHLCV")
    assert [t.strftime("%H:%M") for t in got.index] == ["23:55", "23:56", "23:57", "00:02", "00:03", "00:04"]
    assert db.delete("K/1Min/OHLCV") == 6
    assert read(db, "K/1Min/OHLCV").empty
    assert db.info("K/1Min/OHLCV").rows == 0


def test_destroy_removes_the_bucket_and_empty_parents(db: LocalBackend, root: Path) -> None:
    bars("2024-01-01", 10).to_mkts("A/1Min/OHLCV", backend=db)
    bars("2024-01-01", 10).to_mkts("A/5Min/OHLCV", backend=db)
    db.destroy("A/1Min/OHLCV")
    assert not (root / "A" / "1Min").exists()
    assert (root / "A" / "5Min" / "OHLCV").is_dir()
    db.destroy("A/5Min/OHLCV")
    assert not (root / "A").exists()
    assert db.list_symbols() == []
    with pytest.raises(BucketNotFoundError):
        db.destroy("A/5Min/OHLCV")
    bars("2024-01-01", 3).astype("f8").to_mkts("A/1Min/OHLCV", backend=db)  # recreated with a new schema
    assert read(db, "A/1Min/OHLCV")["Open"].dtype == np.float64


def test_create_info_and_listing(db: LocalBackend) -> None:
    db.create("E/1Min/T", [("Bid", "f4"), ("Size", "u4"), ("Venue", "U16"), ("Odd", "bool")])
    db.create("E/1Min/T", [("Bid", "f4"), ("Size", "u4"), ("Venue", "U16"), ("Odd", "bool")])  # idempotent
    with pytest.raises(BucketExistsError):
        db.create("E/1Min/T", [("Bid", "f8")])
    info = db.info("E/1Min/T")
    assert (info.rows, info.first, info.last, info.years) == (0, None, None, ())
    assert db.list_keys() == ["E/1Min/T"]
    assert read(db, "E/1Min/T").dtypes.astype(str).tolist() == ["float32", "uint32", "str", "bool"]
    bars("2024-03-01", 60).to_mkts("F/1Min/OHLCV", backend=db)
    info = db.info("F/1Min/OHLCV")
    assert info.rows == 60
    assert info.first == pd.Timestamp("2024-03-01", tz="UTC").value
    assert info.last == pd.Timestamp("2024-03-01 00:59", tz="UTC").value
    assert 0 < info.disk_bytes < 1_000_000  # sparse: a mostly empty 1Min year costs little
    assert db.list_symbols() == ["E", "F"]


def test_second_writer_process_is_refused_but_readers_share(db: LocalBackend, root: Path) -> None:
    bars("2024-01-01", 5).to_mkts("K/1Min/OHLCV", backend=db)
    code = (
        "import sys, mktsframe, pandas as pd\n"
        "from mktsframe.errors import LockedError\n"
        "try:\n"
        "    mktsframe.connect(sys.argv[1], read_only=False)\n"
        "except LockedError as e:\n"
        "    print('locked:', e)\n"
        "r = mktsframe.connect(sys.argv[1])\n"
        "print('readonly', r.read_only, len(pd.read_mkts('K/1Min/OHLCV', backend=r)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, check=True).stdout
    assert "locked:" in out
    assert "open for writing by another process" in out
    assert "readonly True 5" in out


def test_read_only_connection_refuses_writes(db: LocalBackend, root: Path) -> None:
    bars("2024-01-01", 5).to_mkts("K/1Min/OHLCV", backend=db)
    db.close()
    with mktsframe.connect(root, read_only=True) as ro:
        assert len(read(ro, "K/1Min/OHLCV")) == 5
        with pytest.raises(ReadOnlyError):
            bars("2024-01-02", 1).to_mkts("K/1Min/OHLCV", backend=ro)
        with pytest.raises(ReadOnlyError):
            ro.destroy("K/1Min/OHLCV")


def test_locked_error_when_write_lock_is_required(root: Path) -> None:
    code = (
        "import sys, time, mktsframe\n"
        "mktsframe.connect(sys.argv[1], read_only=False)\n"
        "print('ok', flush=True)\n"
        "time.sleep(30)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ok"
        with pytest.raises(LockedError, match=f"pid {proc.pid}"):
            mktsframe.connect(root, read_only=False)
    finally:
        proc.kill()
        proc.wait()


def test_concurrent_writer_and_reader_threads(db: LocalBackend) -> None:
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(sym: str) -> None:
        try:
            for i in range(60):
                idx = pd.date_range("2024-01-01", periods=50, freq="1min", tz="UTC") + pd.Timedelta(hours=i)
                df = pd.DataFrame({"V": np.full(50, i, "i8"), "W": np.full(50, -i, "i8")}, index=idx)
                df.to_mkts(f"{sym}/1Min/T", backend=db)
                df.to_mkts("SHARED/1Min/T", backend=db)
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            while not stop.is_set():
                for key in db.list_keys():
                    got = read(db, key)
                    assert (got["V"].to_numpy() == -got["W"].to_numpy()).all()  # never half a write
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"T{i}",)) for i in range(4)]
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads + readers:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert not errors, errors
    for i in range(4):
        assert len(read(db, f"T{i}/1Min/T")) == 60 * 50
    assert len(read(db, "SHARED/1Min/T")) == 60 * 50


def test_catalog_of_ten_thousand_buckets(db: LocalBackend) -> None:
    for i in range(10_000):
        db.create(f"S{i:05d}/1Min/OHLCV", [("Close", "f4")])
    t0 = time.perf_counter()
    keys = db.list_keys()
    elapsed = time.perf_counter() - t0
    assert len(keys) == 10_000
    assert keys[0] == "S00000/1Min/OHLCV"
    print(f"list_keys over 10,000 buckets: {elapsed * 1e3:.1f} ms")
    frame(["2024-01-01"], [1], col="Close").astype("f4").to_mkts("S09999/1Min/OHLCV", backend=db)
    assert read(db, "S09999/1Min/OHLCV")["Close"].tolist() == [1.0]
