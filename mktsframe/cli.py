"""``mktsframe`` / ``marketstore`` command line: ``init`` and ``start`` (the full shell comes later).

``mktsframe init`` writes the commented default ``mkts.yml`` here; ``mktsframe start`` runs the
server exactly like ``python -m mktsframe.server`` (same flags), as MarketStore's
``marketstore init`` / ``marketstore start`` did.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

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
