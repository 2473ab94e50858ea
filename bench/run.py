#!/usr/bin/env python3
"""Benchmark mktsframe's local engine beside its peers, in one run: ``make bench`` or ``python bench/run.py``.

Systems (see ``bench/systems/``): mktsframe durable and with ``background_sync``, a raw
``numpy.memmap`` baseline, an in-memory DataFrame (``pd.concat``), ArcticDB (LMDB), pandas
HDFStore (``format='table'``) and Parquet (pyarrow); and mktsframe's server over loopback with the
pymarketstore client and with the HTTP backend (``bench/systems/server.py``, issue 3's targets). Each system and round runs in its own process
(:mod:`bench.worker`); ArcticDB needs pandas < 3, so the peers run from ``bench/.venv-peers``
(``make bench-peers`` creates it from ``bench/requirements-peers.txt``) and their JSON is merged here.
The run also measures a 32-byte write + ``fdatasync`` on the same disk each round and the RSS of
reading one day from a 10-year bucket. It prints the table and the issue's targets (PASS/FAIL),
saves the raw JSON under ``bench/results/`` and rewrites the ``## Local engine`` section of
``docs/benchmarks.md`` and, when the server systems ran, its ``## Server`` section (others are kept).

Method as in the shared anchors: medians over repeats, rounds with the system order rotated,
every result verified against the source data. Times are seconds, sizes bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make ``bench`` importable as a package
    sys.path.insert(0, str(REPO))

from bench import report  # noqa: E402
from bench.common import Params, med  # noqa: E402
from bench.systems import DEFAULT_SYSTEMS, SYSTEMS  # noqa: E402

PEERS_PYTHON = REPO / "bench" / ".venv-peers" / "bin" / "python"


def _interpreter(venv: str, peers_python: Path) -> Path | None:
    if venv == "main":
        return Path(sys.executable)
    return peers_python if peers_python.exists() else None


def _worker(python: Path, args: list[str], out: Path, timeout: float, log: Any) -> dict[str, Any]:
    """Run ``python -m bench.worker ARGS --out OUT`` from the repo root and load its JSON."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [str(python), "-m", "bench.worker", *args, "--out", str(out)]
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if not out.exists():
        return {"error": f"worker exited {proc.returncode} without a result: {proc.stderr.strip()[-500:]}"}
    res: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    if "error" in res:
        log(f"    error: {res['error']}\n{proc.stderr.strip()[-2000:]}")
    return res


def _versions(peers_python: Path) -> dict[str, str]:
    """Library versions in both interpreters (what the numbers were measured with)."""
    code = ("import importlib.metadata as m, json, sys; out={'python': sys.version.split()[0]}\n"
            "for p in ('numpy','pandas','arcticdb','tables','pyarrow'):\n"
            "    try: out[p]=m.version(p)\n    except Exception: pass\n"
            "print(json.dumps(out))")
    out: dict[str, str] = {}
    for label, py in (("", Path(sys.executable)), ("peers ", peers_python)):
        if not py.exists():
            continue
        try:
            vs = json.loads(subprocess.run([str(py), "-c", code], capture_output=True, text=True, check=True).stdout)
        except (subprocess.CalledProcessError, json.JSONDecodeError):
            continue
        for k, v in vs.items():
            if label and k in ("python", "numpy", "pandas"):
                out[f"peers {k}"] = v
            elif not label and k in ("arcticdb", "tables", "pyarrow"):
                continue
            else:
                out[k] = v
    try:
        from importlib.metadata import version

        out["mktsframe"] = version("mktsframe")
    except Exception:  # not installed: running from a checkout
        pass
    return out


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} CPUs, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}"


def run_meta(argv: list[str] | None, out_json: Path, peers_python: Path) -> dict[str, Any]:
    """Date, the exact command (from the repository root), machine, library versions and the JSON path."""
    try:
        cmd_path = Path(sys.executable).relative_to(REPO)
    except ValueError:
        cmd_path = Path(sys.executable)
    script = Path(sys.argv[0]).resolve()
    script_s = str(script.relative_to(REPO)) if script.is_relative_to(REPO) else str(script)
    command = " ".join([str(cmd_path), script_s, *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    try:
        json_rel = str(out_json.resolve().relative_to(REPO))
    except ValueError:
        json_rel = str(out_json)
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": f"cd <repo> && {command}",
            "machine": _machine(), "versions": _versions(peers_python), "json": json_rel}


def parse_args(
    argv: list[str] | None, doc: str, params_cls: type, systems: Sequence[str], default: Sequence[str],
    extra: Callable[[argparse.ArgumentParser], None] = lambda ap: None,
) -> tuple[argparse.Namespace, Any, list[str]]:
    """The command line every harness shares: systems, rounds, one option per field of ``params_cls``,
    peers interpreter, scratch and output paths, worker timeout. Returns (args, params, system names)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = params_cls()
    ap.add_argument("--systems", default=",".join(default), help=f"comma list of {', '.join(systems)}")
    ap.add_argument("--rounds", type=int, default=3, help="whole-suite repetitions, system order rotated")
    for fld in fields(params_cls):
        ap.add_argument("--" + fld.name.replace("_", "-"), type=type(getattr(d, fld.name)),
                        default=getattr(d, fld.name))
    extra(ap)
    ap.add_argument("--peers-python", type=Path, default=PEERS_PYTHON)
    ap.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: a new temp dir)")
    ap.add_argument("--out", type=Path, default=None, help="JSON file (default: bench/results/<kind>-<date>.json)")
    ap.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks.md")
    ap.add_argument("--no-doc", action="store_true", help="do not touch docs/benchmarks.md")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per worker process")
    a = ap.parse_args(argv)
    params = params_cls(**{f.name: getattr(a, f.name) for f in fields(params_cls)})
    names = [s.strip() for s in a.systems.split(",") if s.strip()]
    unknown = [n for n in names if n not in systems]
    if unknown:
        ap.error(f"unknown system(s) {unknown}; known: {list(systems)}")
    return a, params, names


def runnable_systems(
    names: list[str], venv_of: Callable[[str], str], peers_python: Path, log: Callable[[str], None]
) -> list[str]:
    """``names`` without the peers whose venv is missing (each skip is logged)."""
    out = []
    for n in names:
        if _interpreter(venv_of(n), peers_python) is None:
            log(f"skipping {n}: {peers_python} is missing (create it with `make bench-peers`)")
        else:
            out.append(n)
    return out


def round_orders(runnable: list[str], rounds: int, log: Callable[[str], None]) -> Iterator[list[str]]:
    """The systems in each round's order, rotated by one every round (logged)."""
    for rnd in range(rounds):
        k = rnd % max(len(runnable), 1)
        order = runnable[k:] + runnable[:k]
        log(f"=== round {rnd + 1}/{rounds}: {', '.join(order)}")
        yield order


def start_run(a: argparse.Namespace, kind: str) -> tuple[Callable[[str], None], Path, Path]:
    """A logger with elapsed time, the scratch directory and the JSON path (``bench/results/<kind>-<date>.json``)."""
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.1f}s] {msg}", flush=True)

    workdir = a.workdir or Path(tempfile.mkdtemp(prefix=f"mkts-{kind}-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    out_json = a.out or REPO / "bench" / "results" / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out_json.parent.mkdir(parents=True, exist_ok=True)
    return log, workdir, out_json


def finish_run(a: argparse.Namespace, log: Callable[[str], None], workdir: Path, out_json: Path,
               res: dict[str, Any], section: str, title: str) -> None:  # fmt: skip
    """Write the raw results, print the Markdown ``section`` and put it in place of ``title`` in
    ``a.doc`` (unless ``--no-doc``), then remove the scratch directory if :func:`start_run` made it."""
    out_json.write_text(json.dumps(res, indent=1))
    print(section)
    if not a.no_doc:
        a.doc.parent.mkdir(parents=True, exist_ok=True)
        old = a.doc.read_text() if a.doc.exists() else ""
        a.doc.write_text(report.update_doc(old, section, title=title))
        log(f"wrote {a.doc}")
    log(f"wrote {out_json}")
    if a.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    def tenyear_args(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--tenyear-years", type=int, default=10, help="years in the RSS probe's bucket (0: skip it)")
        ap.add_argument("--tenyear-reads", type=int, default=5, help="fresh processes reading one day from it")

    a, params, names = parse_args(argv, __doc__ or "", Params, list(SYSTEMS), DEFAULT_SYSTEMS, tenyear_args)
    t_start = time.perf_counter()
    log, workdir, out_json = start_run(a, "local")
    tmp_out = workdir / "worker.json"

    runnable = runnable_systems(names, lambda n: SYSTEMS[n][2], a.peers_python, log)
    rounds: list[dict[str, dict[str, Any]]] = []
    fsyncs: list[dict[str, Any]] = []
    for order in round_orders(runnable, a.rounds, log):
        this: dict[str, dict[str, Any]] = {}
        fs = _worker(Path(sys.executable), ["fsync", "--root", str(workdir / "fsync")], tmp_out, 120, log)
        fsyncs.append(fs)
        log(f"32-byte write+fdatasync {report.fmt_t(fs.get('write_fdatasync_32b_s'))}")
        for n in order:
            py = _interpreter(SYSTEMS[n][2], a.peers_python)
            assert py is not None
            root = workdir / n
            shutil.rmtree(root, ignore_errors=True)
            t0 = time.perf_counter()
            r = _worker(py, ["system", n, "--root", str(root), "--params", json.dumps(asdict(params))], tmp_out,
                        a.timeout, log)
            shutil.rmtree(root, ignore_errors=True)
            this[n] = r
            log(f"{n:<17} {time.perf_counter() - t0:5.1f}s  range {report.fmt_t(r.get('range_s'))}  tail100 "
                f"{report.fmt_t(r.get('tail100_s'))}  full {report.fmt_t(r.get('full_read_s'))}  1-row "
                f"{report.fmt_t(r.get('append1_s'))}  1k-row {report.fmt_t(r.get('append_chunk_s'))}  bulk "
                f"{report.fmt_t(r.get('bulk_write_s'))}" + (f"  ERROR {r['error']}" if "error" in r else ""))
        rounds.append(this)

    tenyear: dict[str, Any] = {}
    if a.tenyear_years > 0:
        root = workdir / "tenyear"
        log(f"10-year bucket: building {a.tenyear_years} years of 1Min bars")
        build = _worker(Path(sys.executable), ["tenyear-build", "--root", str(root), "--years",
                                               str(a.tenyear_years)], tmp_out, a.timeout, log)
        if "error" in build:
            tenyear = build
        else:
            tenyear = {k: v for k, v in build.items() if k != "params"}
            tenyear["rows_total"] = build.get("rows")
            keys = ("rows", "read_s", "rss_delta_bytes", "peak_rss_delta_bytes", "rss_file_delta_bytes",
                    "rss_anon_delta_bytes", "vm_size_delta_bytes")
            for mode in ("cold", "warm"):
                flag = ["--cold"] if mode == "cold" else []
                reads = [_worker(Path(sys.executable), ["tenyear-read", "--root", str(root), "--years",
                                                        str(a.tenyear_years), *flag], tmp_out, 120, log)
                         for _ in range(a.tenyear_reads)]
                ok = [r for r in reads if "error" not in r]
                # cold (archive) figures at the top level: they are what the target is judged on
                dst = tenyear if mode == "cold" else tenyear.setdefault("warm", {})
                dst["reads"] = len(ok)
                for key in keys:
                    dst[key] = med([r[key] for r in ok])
                dst["verified"] = bool(ok) and all(r.get("verified") for r in ok)
                dst["all_reads"] = reads
            tenyear["verified"] = tenyear["verified"] and tenyear["warm"]["verified"]
            if not tenyear["verified"]:
                tenyear["error"] = "one-day read from the 10-year bucket returned wrong rows"
            if any(n in report.SERVER_SYSTEMS for n in runnable):
                tenyear["serve"] = _worker(Path(sys.executable), ["tenyear-serve", "--root", str(root), "--rows",
                                                                  str(build["rows"])], tmp_out, a.timeout, log)
                tenyear["serve"]["years"] = a.tenyear_years
                log("  served whole, server peak RSS growth: " + ", ".join(
                    f"{k} +{report.fmt_b(v.get('peak_rss_delta_bytes'))}" for k, v in tenyear["serve"].items()
                    if isinstance(v, dict)))
            log(f"  one day: peak RSS +{report.fmt_b(tenyear['peak_rss_delta_bytes'])} cold, "
                f"+{report.fmt_b(tenyear['warm']['peak_rss_delta_bytes'])} warm "
                f"(year file {report.fmt_b(tenyear.get('year_file_apparent_bytes'))}, bucket on disk "
                f"{report.fmt_b(tenyear.get('bucket_bytes'))})")
        shutil.rmtree(root, ignore_errors=True)

    agg = report.aggregate(rounds, runnable)
    fs_ok = [f for f in fsyncs if "error" not in f]
    fsync = {k: med([f[k] for f in fs_ok]) for k in ("write_fdatasync_32b_s", "write_fdatasync_32b_p99_s",
                                                     "write_32b_s")} if fs_ok else {}
    fsync["per_round"] = fsyncs
    ts = report.targets(agg, fsync, tenyear if "error" not in tenyear else {})
    server_ts = report.server_targets(agg, tenyear.get("serve", {}))
    res: dict[str, Any] = {
        "meta": {**run_meta(argv, out_json, a.peers_python), "params": asdict(params),
                 "rounds": a.rounds, "systems": runnable, "elapsed_s": time.perf_counter() - t_start},
        "systems": agg, "targets": report.targets_json(ts),
        "server_targets": report.targets_json(server_ts), "fsync": fsync, "tenyear": tenyear, "rounds": rounds,
    }
    out_json.write_text(json.dumps(res, indent=1))

    print()
    print(report.text_table(report.table_rows(agg, runnable)))
    print()
    print(f"32-byte write+fdatasync: {report.fmt_t(fsync.get('write_fdatasync_32b_s'))}")
    print()
    print(report.text_table(report.target_rows(ts)))
    print()
    if server_ts:
        print(report.text_table(report.target_rows(server_ts)))
        print()
    if not a.no_doc:
        a.doc.parent.mkdir(parents=True, exist_ok=True)
        old = a.doc.read_text() if a.doc.exists() else ""
        text = report.update_doc(old, report.section(res))
        if server_ts:
            text = report.update_doc(text, report.server_section(res), "## Server")
        a.doc.write_text(text)
        log(f"wrote {a.doc}")
    log(f"wrote {out_json}")
    if a.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    verified = all(r.get("verified") for rr in rounds for r in rr.values())
    return 0 if verified else 1


if __name__ == "__main__":
    sys.exit(main())
