"""The ``%mkts`` IPython magic: ``%load_ext mktsframe``.

Line magic::

    %mkts connect data/                # a data root, file://…, http://host:5993 or s3://bucket/prefix
                                       # (a server with auth: the token from $MKTS_TOKEN)
    %mkts ls [PATTERN]                 # bucket keys (globs allowed: */1Min/OHLCV)
    %mkts info KEY                     # schema, extent and size as a Series
    df = %mkts read KEY --start 2024-01-02 --end 2024-01-03 --limit 100 [--columns Open,Close] [--first]

Cell magic: the body is a query and the result is the cell's value (or stored with ``-o NAME``)::

    %%mkts -o bars
    BTC/1Min/OHLCV --start 2024-01-02 --limit 100

A body that starts with ``SELECT``/``INSERT``/``WITH`` is SQL, run by :func:`mktsframe.sql.execute`
when that module is installed. ``connect`` also makes the connection the default backend, so
``pd.read_mkts`` in the same notebook reads from it. Keys complete with Tab.
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any

import pandas as pd
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class

from mktsframe.backend import Backend, connect, set_default_backend
from mktsframe.errors import MktsError
from mktsframe.io.pandas import read_mkts

__all__ = ["MktsMagics", "load_ipython_extension", "unload_ipython_extension"]

COMMANDS = ("connect", "ls", "info", "read")
_SQL_WORDS = ("select", "insert", "with")


class _Parser(argparse.ArgumentParser):
    """argparse that reports mistakes as :class:`UsageError` instead of exiting the kernel."""

    def error(self, message: str) -> Any:
        raise UsageError(f"{self.prog}: {message}\n{self.format_usage()}")

    def exit(self, status: int = 0, message: str | None = None) -> Any:
        raise UsageError(message or self.format_help())


def _read_parser() -> _Parser:
    p = _Parser(prog="%mkts read", add_help=False)
    p.add_argument("key", help="SYMBOL/TIMEFRAME/ATTRGROUP (comma lists and * allowed)")
    p.add_argument("--start", help="inclusive start; zone-less times are UTC")
    p.add_argument("--end", help="inclusive end")
    p.add_argument("--limit", type=int, help="keep the last N rows (the first N with --first)")
    p.add_argument("--first", action="store_true", help="with --limit: keep the first rows")
    p.add_argument("--columns", help="comma-separated column names")
    return p


def _cell_parser() -> _Parser:
    p = _Parser(prog="%%mkts", add_help=False)
    p.add_argument("-o", "--output", help="store the result in this variable instead of showing it")
    return p


@magics_class
class MktsMagics(Magics):
    """``%mkts`` / ``%%mkts``: the connection lives on this object (one per IPython shell)."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.backend: Backend | None = None
        self.target: str | None = None
        self._keys: list[str] | None = None
        self._previous_default: Backend | None = None

    # -- dispatch -------------------------------------------------------------------------------
    @line_cell_magic
    def mkts(self, line: str, cell: str | None = None) -> Any:
        """Work with a mktsframe store; ``%mkts`` alone shows the commands."""
        if cell is not None:
            return self._cell(line, cell)
        words = _split(line)
        if not words:
            return self._usage()
        cmd, args = words[0], words[1:]
        if cmd not in COMMANDS:
            raise UsageError(f"unknown %mkts command {cmd!r}; use one of {', '.join(COMMANDS)}\n{__doc__}")
        return _friendly(getattr(self, f"_{cmd}"), args)

    def _usage(self) -> None:
        where = f"connected to {self.target}" if self.target else "not connected (%mkts connect data/)"
        print(f"%mkts: {where}\ncommands: {', '.join(COMMANDS)}; %%mkts runs a query cell")

    # -- commands -------------------------------------------------------------------------------
    def _connect(self, args: list[str]) -> None:
        if len(args) != 1:
            raise UsageError("usage: %mkts connect <data root | file://path | http://host:port | s3://bucket/prefix>")
        backend = connect(args[0])
        try:
            keys = backend.list_keys()  # fail here, before dropping a working connection
        except BaseException:
            backend.close()
            raise
        self.close()
        from mktsframe.backend.http import redact_url

        shown = redact_url(args[0])  # a token in the URL is never printed (nor kept)
        self.backend, self.target, self._keys = backend, shown, keys
        self._previous_default = set_default_backend(backend)
        print(f"connected to {shown} ({len(keys)} buckets)")

    def _ls(self, args: list[str]) -> list[str]:
        if len(args) > 1:
            raise UsageError("usage: %mkts ls [PATTERN]")
        self._keys = None
        keys = self.keys()
        if args:
            from mktsframe.keys import parse_key, parse_key_pattern

            pattern = parse_key_pattern(args[0])
            keys = [k for k in keys if pattern.matches(parse_key(k))]
        return keys

    def _info(self, args: list[str]) -> pd.Series:
        if len(args) != 1:
            raise UsageError("usage: %mkts info KEY")
        info = self._require().info(args[0])
        first = None if info.first is None else pd.Timestamp(info.first, tz="UTC")
        last = None if info.last is None else pd.Timestamp(info.last, tz="UTC")
        return pd.Series(
            {
                "timeframe": info.timeframe,
                "columns": ", ".join(f"{n}:{t}" for n, t in info.columns),
                "rows": info.rows,
                "first": first,
                "last": last,
                "years": ", ".join(map(str, info.years)),
                "disk_bytes": info.disk_bytes,
            },
            name=info.key,
            dtype=object,
        )

    def _read(self, args: list[str]) -> pd.DataFrame:
        ns = _read_parser().parse_args(args)
        if ns.first and ns.limit is None:
            raise UsageError("--first only makes sense with --limit N")
        return read_mkts(
            ns.key,
            ns.start,
            ns.end,
            columns=ns.columns.split(",") if ns.columns else None,
            limit=ns.limit,
            limit_from_start=ns.first,
            backend=self._require(),
        )

    def _cell(self, line: str, cell: str) -> pd.DataFrame | None:
        ns = _cell_parser().parse_args(_split(line))
        body = cell.strip()
        if not body:
            raise UsageError("the %%mkts cell is empty: write a query such as 'BTC/1Min/OHLCV --limit 10'")
        if body.split(None, 1)[0].lower() in _SQL_WORDS:
            df = _friendly(lambda _: run_sql(body, self._require()), [])
        else:
            lines = [x for x in body.splitlines() if x.strip() and not x.lstrip().startswith("#")]
            if len(lines) != 1:
                raise UsageError("a %%mkts query cell holds one query: KEY [--start T] [--end T] [--limit N]")
            df = _friendly(self._read, _split(lines[0]))
        if ns.output:
            self.shell.user_ns[ns.output] = df
            return None
        return df

    # -- helpers --------------------------------------------------------------------------------
    def _require(self) -> Backend:
        if self.backend is None:
            raise UsageError("not connected: run %mkts connect data/ (a data root) or %mkts connect http://host:5993")
        return self.backend

    def keys(self) -> list[str]:
        """Bucket keys of the connection (cached for Tab completion until the next ``ls``/``connect``)."""
        if self._keys is None:
            self._keys = self._require().list_keys()
        return self._keys

    def complete(self, event: Any) -> list[str]:
        """IPython completer for ``%mkts``: commands first, then keys."""
        words = event.line.split()
        prefix = "" if event.line.endswith(" ") else (words[-1] if words else "")
        if len(words) <= 1 or (len(words) == 2 and prefix):
            options = list(COMMANDS)
        elif words[1] in ("ls", "info", "read"):
            try:
                options = self.keys()
            except (UsageError, MktsError, OSError):
                return []
        else:
            return []
        return [o for o in options if o.startswith(prefix)]

    def close(self) -> None:
        """Drop the connection (the completer hook stays installed but then offers nothing)."""
        self._keys = None
        if self.backend is not None:
            set_default_backend(self._previous_default)  # what the notebook used before connect
            self.backend.close()
            self.backend = self.target = self._previous_default = None


def run_sql(sql: str, backend: Backend) -> pd.DataFrame:
    """Run SQL through :mod:`mktsframe.sql` (the hook the ``%%mkts`` cell uses)."""
    try:
        from mktsframe.sql import execute
    except ImportError:
        raise UsageError(
            "SQL not available yet in this mktsframe (no mktsframe.sql module); "
            "query a key instead: KEY --start T --end T --limit N"
        ) from None
    return execute(sql, backend)


def _split(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"cannot parse {text!r}: {exc}") from None


def _friendly(fn: Any, args: list[str]) -> Any:
    """Turn the library's input errors into one-line messages (no traceback in the notebook)."""
    try:
        return fn(args)
    except (MktsError, ValueError, TypeError) as exc:
        raise UsageError(f"{type(exc).__name__}: {exc}") from exc


_loaded: dict[int, MktsMagics] = {}


def load_ipython_extension(ip: Any) -> None:
    """``%load_ext mktsframe``: register ``%mkts`` and its Tab completion."""
    magics = MktsMagics(ip)
    ip.register_magics(magics)
    # IPython binds hooks to the shell: the completer is called as hook(shell, event).
    ip.set_hook("complete_command", lambda _shell, event: magics.complete(event), str_key="%mkts")
    _loaded[id(ip)] = magics


def unload_ipython_extension(ip: Any) -> None:
    magics = _loaded.pop(id(ip), None)
    if magics is not None:
        magics.close()
