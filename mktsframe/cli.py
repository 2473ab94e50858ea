"""The ``mktsframe`` / ``marketstore`` command line: ``init``, ``start``, ``connect``, ``load``, ``sql``, ``check``…

``mktsframe init`` writes the commented default ``mkts.yml`` here; ``mktsframe start`` runs the
server exactly like ``python -m mktsframe.server`` (same flags), as MarketStore's
``marketstore init`` / ``marketstore start`` did. ``connect --dir PATH | --url HOST:PORT`` opens
the interactive shell (or runs a script from stdin); ``load`` and ``sql`` run one CSV load or one
statement without the shell. See ``docs/cli.md``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mktsframe.backend.base import Backend
from mktsframe.config import DEFAULT_CONFIG_TEXT

__all__ = ["main"]


def _init(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if path.exists() and not args.force:
        print(f"{path} already exists; use --force to overwrite it", file=sys.stderr)
        return 1
    path.write_text(DEFAULT_CONFIG_TEXT, encoding="utf-8")
    print(f"wrote {path}")
    return 0


def _start(args: argparse.Namespace) -> int:
    from mktsframe.server.settings import config_from_args, serve

    serve(config_from_args(args))
    return 0


def _target(args: argparse.Namespace) -> str:
    if args.url:
        url = args.url
        return url if "://" in url else f"http://{url}"
    return str(args.dir) if args.dir else ""


def _open(args: argparse.Namespace) -> Backend:
    from mktsframe.backend import connect

    target = _target(args)
    return connect(target or None)


def _replication(args: argparse.Namespace) -> int:
    """Print a server's replication state (its ``/heartbeat``): role, positions, lag, replicas."""
    import json
    import urllib.request

    url = args.url if "://" in args.url else f"http://{args.url}"
    with urllib.request.urlopen(f"{url.rstrip('/')}/heartbeat", timeout=10) as reply:
        state = json.load(reply).get("replication")
    if state is None:
        print("replication: off")
        return 1
    replicas = state.pop("replicas", None)
    for k, v in state.items():
        print(f"{k}: {v}")
    for r in replicas or ():
        print("replica " + " ".join(f"{k}={v}" for k, v in r.items()))
    return 0


def _connect(args: argparse.Namespace) -> int:
    from mktsframe.backend.http import redact_url
    from mktsframe.shell import run

    backend = _open(args)
    try:
        return run(backend, redact_url(_target(args)) or "the default root")
    finally:
        backend.close()


def _load(args: argparse.Namespace) -> int:
    from mktsframe.io.csv_loader import load_csv
    from mktsframe.shell.output import go_time

    backend = _open(args)
    try:
        r = load_csv(
            args.key, args.csv, args.description, backend=backend, create=not args.no_create,
            chunk_rows=args.chunk_rows, truncate_strings=True if args.truncate_strings else None,
        )  # fmt: skip
    finally:
        backend.close()
    span = f" from {go_time(r.first)} to {go_time(r.last)}" if r.first is not None and r.last is not None else ""
    print(f"{r.rows} rows written to {r.key}{span} in {r.seconds:.2f} s")
    if r.truncated:
        print(f"{r.truncated} string values longer than 16 characters were cut to 16")
    return 0


def _sql(args: argparse.Namespace) -> int:
    from mktsframe.shell.output import format_table, write_csv
    from mktsframe.sql import execute

    backend = _open(args)
    try:
        df = execute(args.statement, backend)
    finally:
        backend.close()
    if args.csv:
        write_csv(df, sys.stdout, header=True)
    else:
        print(format_table(df) if len(df) else "No results")
    return 0


def _check(args: argparse.Namespace) -> int:
    from mktsframe.engine.check import main as check

    return check(args.root, as_json=args.json, wal=not args.no_wal)


def _add_target(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--dir", "-d", type=Path, help="data root directory (local engine)")
    g.add_argument("--url", "-u", help="server, as host:port or http://host:port")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mktsframe`` and ``marketstore`` console scripts; returns the exit code."""
    from mktsframe import __version__

    parser = argparse.ArgumentParser(prog=Path(sys.argv[0]).name or "mktsframe", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mktsframe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p_init = sub.add_parser("init", help="write a commented default mkts.yml in the current directory")
    p_init.add_argument("--path", default="mkts.yml", help="where to write it (default: ./mkts.yml)")
    p_init.add_argument("--force", action="store_true", help="overwrite an existing file")
    p_init.set_defaults(func=_init)
    p_start = sub.add_parser("start", help="run the server (like python -m mktsframe.server)")
    from mktsframe.server.settings import add_arguments

    add_arguments(p_start)
    p_start.set_defaults(func=_start)
    p_conn = sub.add_parser("connect", help="interactive shell (MarketStore's commands and SQL) on a root or server")
    _add_target(p_conn)
    p_conn.add_argument(
        "-c",
        "--disable-variable-compression",
        action="store_true",
        help="accepted for MarketStore compatibility; has no effect",
    )
    p_conn.set_defaults(func=_connect)
    p_load = sub.add_parser("load", help="load a CSV file into a bucket (all or nothing)")
    p_load.add_argument("key", help="SYMBOL/TIMEFRAME/ATTRGROUP")
    p_load.add_argument("csv", type=Path, help="the CSV file")
    p_load.add_argument("description", nargs="?", type=Path, help="MarketStore loader control file (YAML)")
    p_load.add_argument("--no-create", action="store_true", help="fail if the bucket does not exist")
    p_load.add_argument("--chunk-rows", type=int, default=1_000_000, help="lines parsed at a time")
    p_load.add_argument("--truncate-strings", action="store_true",
                        help="cut string16 values longer than 16 characters (as MarketStore did) instead of refusing "
                             "the load; the count is reported")  # fmt: skip
    _add_target(p_load)
    p_load.set_defaults(func=_load)
    p_sql = sub.add_parser("sql", help="run one SQL statement and print the result")
    p_sql.add_argument("statement")
    p_sql.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    _add_target(p_sql)
    p_sql.set_defaults(func=_sql)
    from mktsframe.token_cli import add_token_commands

    add_token_commands(sub)
    from mktsframe.cli_publish import add_commands as add_publish_commands

    add_publish_commands(sub)  # sync, snapshots
    p_repl = sub.add_parser("replication", help="show a server's replication state (role, positions, lag)")
    p_repl.add_argument("--url", "-u", required=True, help="server, as host:port or http://host:port")
    p_repl.set_defaults(func=_replication)
    p_check = sub.add_parser("check", help="verify a data root offline; each problem with its file and offset")
    p_check.add_argument("root", type=Path, help="the data root")
    p_check.add_argument("--json", action="store_true", help="print the problems as JSON")
    p_check.add_argument("--no-wal", action="store_true", help="check the buckets only, not the write-ahead log")
    p_check.set_defaults(func=_check)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except Exception as exc:  # show a one-line reason, not a traceback, for config/lock errors
        from mktsframe.errors import MktsError

        if isinstance(exc, MktsError):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    raise SystemExit(main())
