"""CSV load benchmark: ``mktsframe.io.csv_loader.load_csv`` beside ``pandas.read_csv`` + ``to_mkts``.

Writes a CSV of ``--rows`` 1Min OHLCV bars (``Epoch`` as ``2024-01-02 09:30:00``, five numeric
columns, about 60 bytes a line), then loads it ``--rounds`` times into a fresh root with each
method and reports the median seconds, rows/s and the ratio. The pandas baseline is the idiom a
user would write: ``pd.read_csv(path, index_col="Epoch", parse_dates=True)`` then
``df.to_mkts(key)`` (same dtypes: f8 prices, i8 volume, into an existing bucket).

Usage: ``.venv/bin/python bench/csv_bench.py [--rows 1000000] [--rounds 5] [--markdown FILE]``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import mktsframe
from mktsframe.io.csv_loader import load_csv

KEY = "BENCH/1Min/OHLCV"
COLUMNS = [("Open", "f8"), ("High", "f8"), ("Low", "f8"), ("Close", "f8"), ("Volume", "i8")]


def write_csv(path: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    close = np.round(100 + rng.standard_normal(rows).cumsum() * 0.01, 4)
    idx = pd.date_range("2020-01-01", periods=rows, freq="1min")
    df = pd.DataFrame(
        {"Open": close, "High": close + 0.5, "Low": close - 0.5, "Close": close,
         "Volume": rng.integers(1, 10_000, rows)},
        index=idx.rename("Epoch"),
    )  # fmt: skip
    df.to_csv(path, date_format="%Y-%m-%d %H:%M:%S")


def run_ours(csv: Path, root: Path) -> float:
    be = mktsframe.connect(root)
    be.create(KEY, COLUMNS)
    t0 = time.perf_counter()
    result = load_csv(KEY, csv, backend=be, progress=False)
    dt = time.perf_counter() - t0
    assert result.rows > 0
    be.close()
    return dt


def run_pandas(csv: Path, root: Path) -> float:
    be = mktsframe.connect(root)
    be.create(KEY, COLUMNS)
    t0 = time.perf_counter()
    df = pd.read_csv(csv, index_col="Epoch", parse_dates=True)
    df.to_mkts(KEY, backend=be)
    dt = time.perf_counter() - t0
    be.close()
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--markdown", type=Path, help="write the result table here")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mkts-csv-bench-"))
    try:
        csv = work / "bars.csv"
        write_csv(csv, args.rows)
        size_mb = csv.stat().st_size / 1e6
        times: dict[str, list[float]] = {"mktsframe load_csv": [], "pandas.read_csv + to_mkts": []}
        for r in range(args.rounds):  # alternate so machine noise hits both alike
            for name, fn in (("mktsframe load_csv", run_ours), ("pandas.read_csv + to_mkts", run_pandas)):
                root = work / f"root-{r}-{len(times[name])}-{name[:6]}"
                times[name].append(fn(csv, root))
                shutil.rmtree(root, ignore_errors=True)
        ours = statistics.median(times["mktsframe load_csv"])
        base = statistics.median(times["pandas.read_csv + to_mkts"])
        lines = [
            f"{args.rows:,} rows, {size_mb:.1f} MB CSV, median of {args.rounds} rounds "
            f"(pandas {pd.__version__}, numpy {np.__version__}):",
            "",
            "| method | median s | rows/s | vs pandas |",
            "|---|---:|---:|---:|",
        ]
        for name, t in (("mktsframe load_csv", ours), ("pandas.read_csv + to_mkts", base)):
            lines.append(f"| {name} | {t:.3f} | {args.rows / t:,.0f} | {t / base:.2f}x |")
        text = "\n".join(lines)
        print(text)
        if args.markdown:
            args.markdown.write_text(text + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
