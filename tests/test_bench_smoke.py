"""The benchmark harness still runs (on 2,000 rows, our engine only): benchmarks are not tests, but
the bench code must not rot. Nothing here is timed or compared."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_bench_harness_runs_on_small_data(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Server\n\nkept as is\n")
    cmd = [sys.executable, str(REPO / "bench" / "run.py"), "--systems", "mktsframe,mktsframe-bg",
           "--rows", "2000", "--rounds", "1", "--repeats", "1", "--single-appends", "5", "--chunk-appends", "2",
           "--chunk-rows", "100", "--warm-min", "3", "--warm-max", "5", "--tenyear-years", "1",
           "--tenyear-reads", "1", "--workdir", str(tmp_path / "work"), "--out", str(out), "--doc", str(doc)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    for name in ("mktsframe", "mktsframe-bg"):
        r = res["systems"][name]
        assert r.get("verified") is True, r
        assert r["range_rows"] == 1440
        for key in ("bulk_write_s", "range_s", "tail100_s", "full_read_s", "append1_s", "append_chunk_s"):
            assert r[key] > 0, key
    assert res["fsync"]["write_fdatasync_32b_s"] > 0
    assert res["tenyear"]["verified"] is True
    assert {t["status"] for t in res["targets"]} <= {"PASS", "FAIL", "n/a"}
    text = doc.read_text()
    assert "## Local engine" in text
    assert "## Server\n\nkept as is" in text
    assert "PASS" in text or "FAIL" in text


def test_tick_bench_runs_on_small_data(tmp_path: Path) -> None:
    out = tmp_path / "ticks.json"
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Server\n\nkept as is\n")
    cmd = [sys.executable, str(REPO / "bench" / "tick_run.py"), "--systems", "mktsframe", "--ticks", "20000",
           "--appends", "3", "--rounds", "1", "--warm-min", "2", "--warm-max", "3", "--workdir", str(tmp_path / "w"),
           "--out", str(out), "--doc", str(doc)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())["systems"]["mktsframe"]
    assert r["verified"] is True, r
    for key in ("day_write_s", "hour_read_s", "append_batch_s"):
        assert r[key] > 0, key
    text = doc.read_text()
    assert "## Ticks" in text
    assert "## Server\n\nkept as is" in text


def test_candle_bench_runs_on_small_data(tmp_path: Path) -> None:
    out = tmp_path / "candles.json"
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Server\n\nkept as is\n")
    cmd = [sys.executable, str(REPO / "bench" / "candles_bench.py"), "--systems",
           "mktsframe-batch,mktsframe-frame,pandas,mktsframe-read", "--rows", "3000", "--rounds", "1",
           "--repeats", "1", "--out", str(out), "--doc", str(doc)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    systems = json.loads(out.read_text())["systems"]
    assert all(s["verified"] is True and s["1H"] > 0 for s in systems.values()), systems
    text = doc.read_text()
    assert "## Candles" in text
    assert "## Server\n\nkept as is" in text


def test_server_systems_run_in_the_local_bench(tmp_path: Path) -> None:
    """server-pymarketstore (HTTP and gRPC) and server-http go through the same worker protocol beside a
    local peer, the issue-3 and issue-14 targets table is written, and no server process outlives the run."""
    out = tmp_path / "bench.json"
    doc = tmp_path / "benchmarks.md"
    work = tmp_path / "work"
    cmd = [sys.executable, str(REPO / "bench" / "run.py"), "--systems",
           "mktsframe,server-pymarketstore,server-pymarketstore-grpc,server-http",
           "--rows", "3000", "--rounds", "1", "--repeats", "1", "--single-appends", "3", "--chunk-appends", "2",
           "--chunk-rows", "100", "--warm-min", "3", "--warm-max", "5", "--tenyear-years", "1",
           "--tenyear-reads", "1", "--workdir", str(work), "--out", str(out), "--doc", str(doc)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    for name in ("server-pymarketstore", "server-pymarketstore-grpc", "server-http"):
        r = res["systems"][name]
        assert r.get("verified") is True, r
        assert r["range_rows"] == 1440
        assert r["qps"] > 0
        assert r["rows_written"] == 3000
        assert r["server_peak_rss_bytes"] > 0
    serve = res["tenyear"]["serve"]
    assert serve["pymarketstore"]["verified"] is True, serve
    assert serve["http"]["verified"] is True, serve
    assert serve["pymarketstore-grpc"]["verified"] is True, serve
    statuses = {t["what"].split(" ")[0]: t["status"] for t in res["server_targets"]}
    assert statuses.keys() >= {"pymarketstore", "HTTP", "server"}
    assert any(t["what"].startswith("pymarketstore (gRPC) ingest ÷") for t in res["server_targets"])
    assert "### Targets (issues 3 and 14)" in doc.read_text()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(work) not in ps, "a server process outlived the benchmark"


def test_stream_bench_runs_on_small_data(tmp_path: Path) -> None:
    out = tmp_path / "stream.json"
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Server\n\nkept as is\n")
    cmd = [sys.executable, str(REPO / "bench" / "stream_bench.py"), "--rounds", "1", "--subscribers", "3",
           "--procs", "2", "--latency-writes", "10", "--pace-ms", "2", "--pace-many-ms", "2",
           "--throughput-writes", "20", "--burst-rows", "200", "--burst-batch", "50",
           "--out", str(out), "--doc", str(doc)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    med = json.loads(out.read_text())["median"]
    for k in ("p50_1_ms", "p99_3_ms", "storm_p99_3_ms", "pushed_msgs_per_s", "writes_per_s_0", "writes_per_s_0_after",
              "writes_per_s_3", "writes_per_s_3_nice", "throughput_ratio", "throughput_ratio_nice"):
        assert med[k] > 0, k
    text = doc.read_text()
    assert "## Streaming" in text
    assert "## Server\n\nkept as is" in text
    assert "PASS" in text or "FAIL" in text
