#!/usr/bin/env python3
"""Candle benchmark: 1Min bars → 5Min / 1H / 1D candles, mktsframe beside pandas and ArcticDB.

``python bench/candles_bench.py [--rows 1000000] [--rounds 3] [--repeats 7]`` (or ``make bench-candles``)

Systems (each round runs every system in its own process, order rotated):

* ``mktsframe-batch``: :func:`mktsframe.functions.candles` on an in-memory Batch — what the
  server's ``candlecandler`` and the ``ondiskagg`` trigger run;
* ``mktsframe-frame``: ``df.mkts.candles(tf)``, DataFrame in, DataFrame out;
* ``pandas``: ``df.resample(tf).agg({...first/max/min/last/sum})`` in memory (project venv, pandas 3);
* ``pandas-pd2``: the same under pandas 2 in ``bench/.venv-peers``;
* ``mktsframe-read``: ``read_mkts(key, timeframe=tf)`` from a local engine holding the bars
  (read + aggregate), with a plain full read timed beside it;
* ``arcticdb-lmdb``: ``lib.read(sym, query_builder=QueryBuilder().resample(tf).agg({...}))`` from
  LMDB (read + aggregate; ArcticDB resamples while reading), with a plain ``lib.read`` beside it.

Every result is checked against pandas' ``resample`` (computed untimed in the same process) before
it is timed. Times are seconds: median of ``--repeats`` warm runs per round, then the median over
rounds. Writes ``bench/results/candles-<date>.json`` and the ``## Candles`` section of
``docs/benchmarks.md`` (other sections are kept).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.common import EPOCH0, make_bars, med  # noqa: E402

TITLE = "## Candles"
TIMEFRAMES = {"5Min": "5min", "1H": "1h", "1D": "1D"}  # ours → pandas / ArcticDB rule
AGG = {"Open": "first", "High": "max", "Low": "min", "Close": "last", "Volume": "sum"}
SYSTEMS = {  # name → venv
    "mktsframe-batch": "main", "mktsframe-frame": "main", "pandas": "main", "pandas-pd2": "peers",
    "mktsframe-read": "main", "arcticdb-lmdb": "peers",
}  # fmt: skip


# -- worker (``bench.worker candles``; either venv: imports only bench.common, numpy, pandas and the system's library)
def _reference(df: Any, rule: str) -> Any:
    r = df.resample(rule, closed="left", label="left")
    out = r.agg(AGG)
    return out[r.size() > 0]


def _pandas_candles(df: Any, rule: str) -> Any:
    return df.resample(rule, closed="left", label="left").agg(AGG)


def _check(got: Any, want: Any, what: str) -> None:
    import numpy as np

    gi = np.asarray(got.index.tz_localize(None) if getattr(got.index, "tz", None) else got.index, "M8[ns]")
    wi = np.asarray(want.index, "M8[ns]")
    if len(got) != len(want) or not np.array_equal(gi, wi):
        raise AssertionError(f"{what}: {len(got)} candles, want {len(want)} (or different times)")
    for c in AGG:
        if not np.allclose(np.asarray(got[c], "f8"), np.asarray(want[c], "f8"), rtol=1e-6):
            raise AssertionError(f"{what}: column {c} differs")


def _time(fn: Any, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def run_worker(name: str, root: str, p: CandleParams) -> dict[str, Any]:
    """One system's measurements (``python -m bench.worker candles NAME``): every result checked first."""
    import pandas as pd

    rows, repeats = p.rows, p.repeats

    df = make_bars(rows, EPOCH0, seed=42)
    res: dict[str, Any] = {"pandas": pd.__version__, "rows": rows}
    if name.startswith("mktsframe"):
        import mktsframe
        from mktsframe.functions import candles
        from mktsframe.io.frames import batch_to_frame, frame_to_batch

        batch = frame_to_batch(df)
        db = None
        if name == "mktsframe-read":
            db = mktsframe.connect(root, read_only=False)
            mktsframe.write_mkts(df, "BTC/1Min/OHLCV", backend=db)
            check = pd.read_mkts("BTC/1Min/OHLCV", backend=db)
            if len(check) != rows:
                raise AssertionError("stored bars differ")
            res["plain_read_s"] = med(_time(lambda: pd.read_mkts("BTC/1Min/OHLCV", backend=db), repeats))
        for tf, rule in TIMEFRAMES.items():
            want = _reference(df, rule)
            if name == "mktsframe-batch":
                fn = partial(candles, batch, tf)
                _check(batch_to_frame(fn()), want, f"{name} {tf}")
            elif name == "mktsframe-frame":
                fn = partial(df.mkts.candles, tf)
                _check(fn(), want, f"{name} {tf}")
            else:
                fn = partial(pd.read_mkts, "BTC/*/OHLCV", timeframe=tf, backend=db)
                _check(fn(), want, f"{name} {tf}")
            res[tf] = med(_time(fn, repeats))
        if db is not None:
            db.close()
    elif name.startswith("pandas"):
        for tf, rule in TIMEFRAMES.items():
            want = _reference(df, rule)
            fn = partial(_pandas_candles, df, rule)
            _check(fn().dropna(how="all"), want, f"{name} {tf}")
            res[tf] = med(_time(fn, repeats))
    elif name == "arcticdb-lmdb":
        import arcticdb as adb

        res["arcticdb"] = adb.__version__
        lib = adb.Arctic(f"lmdb://{root}").get_library("bars", create_if_missing=True)
        lib.write("BTC", df)
        res["plain_read_s"] = med(_time(lambda: lib.read("BTC").data, repeats))
        for tf, rule in TIMEFRAMES.items():
            want = _reference(df, rule)

            def fn(rule: str = rule) -> Any:
                q = adb.QueryBuilder().resample(rule).agg(AGG)
                return lib.read("BTC", query_builder=q).data

            _check(fn(), want, f"{name} {tf}")
            res[tf] = med(_time(fn, repeats))
    else:
        raise ValueError(f"unknown system {name}")
    res["verified"] = True
    return res


# -- orchestrator ----------------------------------------------------------------------------------
@dataclass
class CandleParams:
    rows: int = 1_000_000
    repeats: int = 7


def _fmt_ms(s: float | None) -> str:
    return "–" if s is None else f"{s * 1e3:.1f} ms"


def section(res: dict[str, Any]) -> str:
    m, agg = res["meta"], res["systems"]
    names = [n for n in SYSTEMS if n in agg]
    head = ["system", *[f"1Min → {tf}" for tf in TIMEFRAMES], "plain read of the bars"]
    rows = [head]
    for n in names:
        a = agg[n]
        mark = "" if a.get("verified") else " (NOT VERIFIED)"
        rows.append([n + mark, *[_fmt_ms(a.get(tf)) for tf in TIMEFRAMES], _fmt_ms(a.get("plain_read_s"))])
    ratios = [["ratio", *TIMEFRAMES]]
    for label, num, den in (("pandas ÷ mktsframe-batch (in memory)", "pandas", "mktsframe-batch"),
                            ("pandas ÷ mktsframe-frame (DataFrame in and out)", "pandas", "mktsframe-frame"),
                            ("ArcticDB read+resample ÷ mktsframe read_mkts(timeframe=)", "arcticdb-lmdb",
                             "mktsframe-read")):  # fmt: skip
        a, b = agg.get(num, {}), agg.get(den, {})
        ratios.append([label, *[f"{a[tf] / b[tf]:.2f}×" if a.get(tf) and b.get(tf) else "–" for tf in TIMEFRAMES]])
    lines = [TITLE, "",
             f"Measured {m['date']} on {m['machine']} in {m['elapsed_s']:.0f} s with:", "",
             "```sh", m["command"], "```", "",
             f"{m['rows']:,} gap-free 1Min OHLCV bars (Open/High/Low/Close float32, Volume float64) aggregated to "
             "5Min, 1H and 1D candles (Open first, High max, Low min, Close last, Volume sum). "
             f"{m['rounds']} rounds, every system in its own process, order rotated; each figure is the median over "
             f"rounds of the median of {m['repeats']} warm runs. Every result was checked against pandas' "
             "`resample` first.", "",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".", "",
             _table(rows), "", "Ratios (> 1: mktsframe is faster):", "", _table(ratios), "",
             "- **mktsframe-batch**: `mktsframe.functions.candles(batch, tf)` on numpy arrays — the code the "
             "server's `candlecandler` and the `ondiskagg` trigger run.",
             "- **mktsframe-frame**: `df.mkts.candles(tf)` (frame → arrays → candles → frame).",
             "- **pandas / pandas-pd2**: `df.resample(tf, closed='left', label='left').agg({...})` under pandas 3 "
             "(project venv) and pandas 2 (`bench/.venv-peers`).",
             "- **mktsframe-read**: `read_mkts('BTC/*/OHLCV', timeframe=tf)` on the local engine: reads the 1Min "
             "bucket and aggregates (plain read = `read_mkts` of all bars).",
             "- **arcticdb-lmdb**: `lib.read(sym, query_builder=QueryBuilder().resample(tf).agg({...}))` on LMDB, "
             "ArcticDB aggregating while it reads (plain read = `lib.read(sym)`), pandas 2.", "",
             "Caveats: a shared 2-core VM with other jobs running, so differences under ~1.5× are noise (per-round "
             "values are in the JSON). pandas emits a row for every window, ours and ArcticDB's only for windows "
             "with data (none are empty here).", f"Raw results: `{m['json']}`.", ""]
    return "\n".join(lines)


def _table(rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    from bench.run import (
        _interpreter,
        _worker,
        finish_run,
        parse_args,
        round_orders,
        run_meta,
        runnable_systems,
        start_run,
    )

    a, params, names = parse_args(argv, __doc__ or "", CandleParams, list(SYSTEMS), list(SYSTEMS))
    t_start = time.perf_counter()
    log, workdir, out_json = start_run(a, "candles")
    runnable = runnable_systems(names, SYSTEMS.__getitem__, a.peers_python, log)
    rounds: list[dict[str, Any]] = []
    for order in round_orders(runnable, a.rounds, log):
        this: dict[str, Any] = {}
        for n in order:
            py = _interpreter(SYSTEMS[n], a.peers_python)
            assert py is not None
            root = workdir / n
            shutil.rmtree(root, ignore_errors=True)
            r = _worker(py, ["candles", n, "--root", str(root), "--params", json.dumps(asdict(params))],
                        workdir / "worker.json", a.timeout, log)
            shutil.rmtree(root, ignore_errors=True)
            this[n] = r
            log(f"{n:<16} " + ("  ".join(f"{tf} {_fmt_ms(r.get(tf))}" for tf in TIMEFRAMES) if "error" not in r
                               else f"ERROR {r['error']}"))  # fmt: skip
        rounds.append(this)
    agg: dict[str, Any] = {}
    for n in runnable:
        ok = [r[n] for r in rounds if "error" not in r[n]]
        a_n: dict[str, Any] = {k: med([r[k] for r in ok if r.get(k) is not None]) for k in (*TIMEFRAMES, "plain_read_s")}
        a_n["verified"] = bool(ok) and all(r.get("verified") for r in ok)
        a_n["pandas"] = ok[0]["pandas"] if ok else None
        errors = [r[n]["error"] for r in rounds if "error" in r[n]]
        if errors:
            a_n["error"] = errors[0]
        agg[n] = a_n
    meta = run_meta(argv, out_json, a.peers_python)
    meta.update(rows=params.rows, rounds=a.rounds, repeats=params.repeats, elapsed_s=time.perf_counter() - t_start)
    res = {"meta": meta, "systems": agg, "rounds": rounds}
    finish_run(a, log, workdir, out_json, res, section(res), TITLE)
    return 0 if agg and all(v.get("verified") for v in agg.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
