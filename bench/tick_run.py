#!/usr/bin/env python3
"""Tick benchmark: mktsframe tick buckets beside ArcticDB, in one run: ``python bench/tick_run.py``.

Protocol per system and round, each in its own process (:mod:`bench.worker` mode ``ticks``): write
one UTC day of 5,000,000 ticks (random nanosecond times, 10 % repeated; Price float64, Size int32),
read one hour back (each of the 24 hours verified once, then warm timed reads cycling the hours),
append 200 batches of 1,000 ticks after the day, and check that everything reads back exactly.
ArcticDB runs from ``bench/.venv-peers`` (pandas < 3; ``make bench-peers``). Prints the table, saves
the raw JSON under ``bench/results/`` and rewrites the ``## Ticks`` section of ``docs/benchmarks.md``
(other sections are kept). Times are seconds, sizes bytes; figures are medians of per-round medians.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import report  # noqa: E402
from bench.common import med  # noqa: E402
from bench.run import (  # noqa: E402
    _interpreter,
    _worker,
    finish_run,
    parse_args,
    round_orders,
    run_meta,
    runnable_systems,
    start_run,
)
from bench.systems.ticks import TICK_SYSTEMS  # noqa: E402
from bench.tick_data import TickParams  # noqa: E402

TITLE = "## Ticks"
KEYS = ("day_write_s", "day_write_close_s", "hour_read_s", "hour_read_p99_s", "append_batch_s", "append_batch_p99_s",
        "size_bytes", "after_size_bytes", "hour_rows")


def aggregate(rounds: list[dict[str, dict[str, Any]]], names: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for n in names:
        ok = [r[n] for r in rounds if n in r and "error" not in r[n]]
        agg: dict[str, Any] = {k: med([r[k] for r in ok if r.get(k) is not None]) for k in KEYS}
        agg["verified"] = bool(ok) and all(r.get("verified") for r in ok)
        agg["rounds"] = len(ok)
        agg["notes"] = ok[0]["notes"] if ok else ""
        agg["pandas"] = ok[0].get("pandas") if ok else None
        errors = [r[n]["error"] for r in rounds if n in r and "error" in r[n]]
        if errors:
            agg["error"] = errors[0]
        out[n] = agg
    return out


def section(res: dict[str, Any]) -> str:
    m, agg, p = res["meta"], res["systems"], res["meta"]["params"]
    names = [n for n in m["systems"] if n in agg]
    rows = [["system", f"write the day ({p['ticks']:,} ticks)", "read one hour (median / p99)", "append 1,000 ticks (median / p99)",
             "size on disk"]]
    for n in names:
        a = agg[n]
        rows.append([n, report.fmt_t(a["day_write_s"]),
                     f"{report.fmt_t(a['hour_read_s'])} / {report.fmt_t(a['hour_read_p99_s'])}",
                     f"{report.fmt_t(a['append_batch_s'])} / {report.fmt_t(a['append_batch_p99_s'])}",
                     report.fmt_b(a["after_size_bytes"]) + ("" if a["verified"] else " (NOT VERIFIED)")])
    ratio_lines = []
    ours, arctic = agg.get("mktsframe"), agg.get("arcticdb-lmdb")
    if ours and arctic and ours.get("hour_read_s") and arctic.get("hour_read_s"):
        for label, key in (("read one hour", "hour_read_s"), ("append 1,000 ticks", "append_batch_s"),
                           ("write the day", "day_write_s")):
            if ours.get(key) and arctic.get(key):
                ratio_lines.append(f"| {label} | {arctic[key] / ours[key]:.3g}× |")
    bg = agg.get("mktsframe-bg")
    if bg and arctic and bg.get("append_batch_s") and arctic.get("append_batch_s"):
        ratio_lines.append(f"| append 1,000 ticks, mktsframe-bg | {arctic['append_batch_s'] / bg['append_batch_s']:.3g}× |")
    out = [TITLE, "",
           f"Measured {m['date']} on {m['machine']} in {m['elapsed_s']:.0f} s with:", "",
           "```sh", m["command"], "```", "",
           f"One UTC day of {p['ticks']:,} ticks (random nanosecond times, {p['dup_share']:.0%} of them repeating the "
           f"previous tick's timestamp; Price float64, Size int32), {m['rounds']} rounds with the system order rotated, "
           "every system in its own process. Per round: write the day in one call, read one hour "
           f"(about {int(agg[names[0]]['hour_rows'] or 0):,} ticks; each of the 24 hours is first checked against the "
           f"source, then {p['warm_min']}–{p['warm_max']} warm timed reads cycle through them), append {p['appends']} "
           f"batches of {p['batch']:,} ticks after the day, then read everything back and check it (times to the "
           "nanosecond, values, dtypes, order of equal timestamps). Figures are medians of the per-round medians.", "",
           "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".", "",
           report.markdown_table(rows), ""]
    if ratio_lines:
        out += ["How many times longer ArcticDB takes than mktsframe (durable) for the same operation:", "",
                "| operation | ArcticDB ÷ mktsframe |", "|---|---|", *ratio_lines, ""]
    out += ["How each system was used:", ""]
    out += [f"- **{n}**: {agg[n]['notes']} (pandas {agg[n]['pandas']})" for n in names]
    out += ["", "Caveats: a shared 2-core VM, so differences under ~1.5× are noise (per-round values are in the "
            "JSON). mktsframe (durable) fdatasyncs its WAL on every write, mktsframe-bg every 0.5 s; LMDB commits its "
            "own transactions. ArcticDB runs under pandas 2 in `bench/.venv-peers`, mktsframe under pandas 3. "
            "mktsframe writes the day twice: into the write-ahead log (`fdatasync`'d before the call "
            "returns) and into the day's partition file (made durable by the next checkpoint, as year files are).",
            f"Raw results: `{m['json']}`.", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    a, params, names = parse_args(argv, __doc__ or "", TickParams, list(TICK_SYSTEMS), list(TICK_SYSTEMS))
    t_start = time.perf_counter()
    log, workdir, out_json = start_run(a, "ticks")
    runnable = runnable_systems(names, lambda n: TICK_SYSTEMS[n][1], a.peers_python, log)
    rounds: list[dict[str, dict[str, Any]]] = []
    for order in round_orders(runnable, a.rounds, log):
        this: dict[str, dict[str, Any]] = {}
        for n in order:
            py = _interpreter(TICK_SYSTEMS[n][1], a.peers_python)
            assert py is not None
            root = workdir / n
            shutil.rmtree(root, ignore_errors=True)
            t0 = time.perf_counter()
            r = _worker(py, ["ticks", n, "--root", str(root), "--params", json.dumps(asdict(params))],
                        workdir / "worker.json", a.timeout, log)
            shutil.rmtree(root, ignore_errors=True)
            this[n] = r
            log(f"{n:<14} {time.perf_counter() - t0:5.1f}s  day write {report.fmt_t(r.get('day_write_s'))}  hour "
                f"{report.fmt_t(r.get('hour_read_s'))}  1k append {report.fmt_t(r.get('append_batch_s'))}"
                + (f"  ERROR {r['error']}" if "error" in r else ""))
        rounds.append(this)
    agg = aggregate(rounds, runnable)
    res: dict[str, Any] = {
        "meta": {**run_meta(argv, out_json, a.peers_python), "params": asdict(params),
                 "rounds": a.rounds, "systems": runnable, "elapsed_s": time.perf_counter() - t_start},
        "systems": agg, "rounds": rounds,
    }
    finish_run(a, log, workdir, out_json, res, section(res), TITLE)
    return 0 if all(v["verified"] for v in agg.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
