"""The ``connect`` shell: MarketStore's interactive commands and SQL over any backend.

The shell speaks only the :class:`~mktsframe.backend.base.Backend` protocol (plus
:func:`mktsframe.sql.execute` and :func:`mktsframe.io.csv_loader.load_csv`, which do too), so it
behaves the same on a directory (``--dir``) and on a server (``--url``).

Lines starting with ``\\`` are commands, matched by prefix as MarketStore did (``\\sh`` is
``\\show``); ``help``, ``exit`` and ``quit`` work bare; anything else is one SQL statement.
Results go to stdout in MarketStore's table layout (or to a CSV file after ``\\o FILE``); errors
go to stderr, and a script run through ``connect ... < script`` exits with status 1 if any
line failed.
"""

from __future__ import annotations

import cmd
import contextlib
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from mktsframe.backend.base import Backend
from mktsframe.errors import MktsError
from mktsframe.shell.output import format_table, go_time, write_csv, write_show_csv
from mktsframe.times import to_ns

__all__ = ["MktsShell", "parse_shape"]

#: ``\create`` type names (MarketStore's, spec §1.3) and the wire types they stand for.
TYPE_NAMES = {
    "float32": "f4", "int32": "i4", "float64": "f8", "int64": "i8", "byte": "i1", "int8": "i1", "bool": "bool",
    "int16": "i2", "uint8": "u1", "uint16": "u2", "uint32": "u4", "uint64": "u8", "string16": "U16",
}  # fmt: skip
WIRE_NAMES = {v: k for k, v in TYPE_NAMES.items() if k != "int8"}
COMMANDS = ("create", "destroy", "getinfo", "help", "load", "o", "quit", "show", "stop", "timing", "trim", "q", "?")
_SHOW_WORDS = {"between", "and"}

HELP = {
    "help": """Commands (prefix matches, e.g. \\sh for \\show); any other line is SQL:
  \\create KEY SHAPE fixed|variable   create a bucket (\\help create)
  \\load KEY FILE.csv [DESC.yaml]    load a CSV file into an existing bucket (all or nothing; \\help load)
  \\show KEY START [END] [csv]       print rows from START (to END); csv writes mstore-csv-output.csv
  \\getinfo KEY                      schema, extent and size of a bucket
  \\trim KEY START [END]             delete rows from START (to END), inclusive
  \\destroy KEY                      remove a bucket and all its data
  \\o [FILE [show]]                  send results to FILE as CSV (show: MarketStore's layout; no FILE: terminal)
  \\timing                           toggle printing of elapsed time
  \\help [COMMAND], \\?               this help;  \\q, \\quit, \\stop, exit: leave
SQL: SELECT cols | count(*) | candlecandler('5Min', Open, High, Low, Close, Sum::Volume) FROM `SYM/TF/AG`
     WHERE Epoch BETWEEN '2024-01-02' AND '2024-01-03' LIMIT 10;   INSERT INTO `KEY` SELECT ...""",
    "create": """\\create KEY[:Symbol/Timeframe/AttributeGroup] SHAPE fixed|variable
  SHAPE is groups of comma-separated names and a type, joined by ':', e.g.
  Open,High,Low,Close/float32:Volume/int64
  Types: """
    + ", ".join(TYPE_NAMES),
    "load": """\\load KEY FILE.csv [DESC.yaml] [--truncate-strings]
  Loads into an existing bucket. Without DESC.yaml the first row must name the columns
  (Epoch, or Epoch-date and Epoch-time, plus the bucket's columns). DESC.yaml keys:
  firstRowHasColumnNames, timeFormat (Go layout such as "20060102 15:04:05", or "timestamp"),
  timeZone (e.g. "US/Eastern"), columnNameMap ([Epoch, Open, ...], names by position),
  truncateStrings (true: as --truncate-strings). string16 values longer than 16 characters
  stop the load unless --truncate-strings cuts them (the count is reported).""",
    "show": """\\show KEY START [END] [csv]
  Times: 2006-01-02, 2006-01-02T15:04, 2006-01-02 15:04:05 (quoted), or ISO 8601; UTC.
  The words 'between' and 'and' are ignored.""",
    "trim": "\\trim KEY START [END]\n  Deletes the rows of KEY from START (to END), inclusive.",
    "destroy": "\\destroy KEY\n  Removes the bucket and all its data.",
    "getinfo": "\\getinfo KEY\n  Latest year, record type, timeframe, columns, rows, first/last time, disk size.",
    "o": """\\o [FILE [show]]
  Sends the results of the following commands to FILE as CSV that \\load reads back (a header,
  then Epoch as 2006-01-02 15:04:05[.f] UTC); \\o alone returns to the terminal. With 'show',
  MarketStore's \\o layout instead: no header, Epoch as 2016-12-30 21:37:57 +0000 UTC, and for
  tick buckets a trailing Nanoseconds field.""",
    "timing": "\\timing\n  Toggles printing of the elapsed time of each command.",
}


def parse_shape(text: str) -> list[tuple[str, str]]:
    """``Open,High/float32:Volume/int64`` → ``[("Open", "f4"), ("High", "f4"), ("Volume", "i8")]``."""
    columns: list[tuple[str, str]] = []
    for group in text.split(":"):
        names, sep, tname = group.rpartition("/")
        if not sep or not names:
            raise ValueError(f"{group!r}: a shape group is comma-separated names, '/', and a type")
        wire = TYPE_NAMES.get(tname.lower(), tname if tname in WIRE_NAMES else None)
        if wire is None:
            raise ValueError(f"{group!r}: unknown type {tname!r} (types: {', '.join(TYPE_NAMES)})")
        for name in names.split(","):
            if name.strip() and name.strip() != "Epoch":
                columns.append((name.strip(), wire))
    return columns


class MktsShell(cmd.Cmd):
    """MarketStore's ``connect`` session over a backend.

    Parameters
    ----------
    backend : Backend
        Local or HTTP.
    target : str
        Shown in the banner (the directory or URL).
    stdin, stdout : file, optional
        Default: the process's. When ``stdin`` is not a terminal the shell prints no prompt.
    stderr : file, optional
        Where errors and progress go.
    """

    intro = None
    doc_header = ""

    def __init__(
        self,
        backend: Backend,
        target: str = "",
        *,
        stdin: IO[str] | None = None,
        stdout: IO[str] | None = None,
        stderr: IO[str] | None = None,
    ) -> None:
        super().__init__(stdin=stdin, stdout=stdout)
        self.backend = backend
        self.target = target
        self.err = stderr or sys.stderr
        self.interactive = bool(getattr(self.stdin, "isatty", lambda: False)())
        self.use_rawinput = self.interactive and stdin is None
        self.prompt = "» " if self.interactive else ""
        self.timing = False
        self.failures = 0
        self.output: Path | None = None
        self.output_show = False  # \o FILE show: MarketStore's layout instead of our re-loadable CSV
        self._keys: list[str] | None = None
        self._handlers: dict[str, Callable[[list[str]], bool | None]] = {
            "create": self.cmd_create, "destroy": self.cmd_destroy, "getinfo": self.cmd_getinfo,
            "help": self.cmd_help, "?": self.cmd_help, "load": self.cmd_load, "o": self.cmd_output,
            "show": self.cmd_show, "timing": self.cmd_timing, "trim": self.cmd_trim,
            "q": self.cmd_quit, "quit": self.cmd_quit, "stop": self.cmd_quit,
        }  # fmt: skip

    # -- plumbing -------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        self.stdout.write(text + "\n")

    def fail(self, text: str) -> None:
        self.failures += 1
        self.err.write(f"Error: {text}\n")
        self.err.flush()

    def emptyline(self) -> bool:
        return False

    def precmd(self, line: str) -> str:
        return line.strip()

    def onecmd(self, line: str) -> bool:
        """Run one line; returns True to leave the loop."""
        line = line.strip()
        if not line or line.startswith("--") or line.startswith("#"):
            return False
        if line in ("EOF", "exit", "quit"):
            return True
        if line == "help":
            line = "\\help"
        t0 = time.perf_counter()
        timed = self.timing and not line.startswith("\\t")
        try:
            if line.startswith("\\"):
                return bool(self._command(line))
            self.run_sql(line)
            return False
        except (MktsError, ValueError, KeyError, OSError, TypeError) as exc:
            self.fail(str(exc) or type(exc).__name__)
            return False
        finally:
            if timed:
                self.say(f"Elapsed query time: {1000 * (time.perf_counter() - t0):5.3f} ms")

    def _command(self, line: str) -> bool | None:
        try:
            words = shlex.split(line[1:])
        except ValueError as exc:
            raise ValueError(f"cannot split {line!r}: {exc}") from None
        if not words:
            raise ValueError("empty command; try \\help")
        name, args = words[0], words[1:]
        if name in self._handlers:
            return self._handlers[name](args)
        matches = sorted({c for c in self._handlers if c.startswith(name)})
        if len(matches) == 1:
            return self._handlers[matches[0]](args)
        raise ValueError(
            f"unknown command \\{name}" + (f" (did you mean {', '.join(matches)}?)" if matches else "; try \\help")
        )

    def _key(self, text: str) -> str:
        return text.split(":", 1)[0]

    def _ticks(self, df: pd.DataFrame) -> bool:
        """Whether ``df`` holds ticks: it was read from a tick bucket, or (a SQL result, which names
        no bucket) its times have a sub-second part."""
        keys = [k for k in str(df.attrs.get("mkts_key") or "").split(",") if k]
        try:
            if keys:
                return any(self.backend.info(k).record_type == "variable" for k in keys)
        except MktsError:
            pass
        return isinstance(df.index, pd.DatetimeIndex) and bool((df.index.as_unit("ns").asi8 % 1_000_000_000).any())

    def emit(self, df: pd.DataFrame) -> None:
        """Print a result, or append it to the ``\\o`` file as CSV."""
        if self.output is not None:
            new = not self.output.exists() or self.output.stat().st_size == 0
            with self.output.open("a", encoding="utf-8", newline="") as f:
                if self.output_show:
                    write_show_csv(df, f, ticks=self._ticks(df))
                else:
                    write_csv(df, f, header=new)
            return
        if len(df) == 0:
            self.say("No results")
            return
        self.say(format_table(df))

    # -- commands -------------------------------------------------------------------------------
    def run_sql(self, line: str) -> None:
        from mktsframe.sql import execute

        df = execute(line, self.backend)
        self._keys = None if line.lstrip()[:6].lower() == "insert" else self._keys
        self.emit(df)

    def cmd_create(self, args: list[str]) -> None:
        if len(args) != 3:
            raise ValueError('usage: \\create KEY SHAPE fixed|variable (see "\\help create")')
        key, shape, row_type = self._key(args[0]), args[1], args[2].lower()
        if row_type not in ("fixed", "variable"):
            raise ValueError(f'Record type "{args[2]}" is not one of fixed or variable')
        columns = parse_shape(shape)
        try:
            self.backend.create(key, columns, variable_length=row_type == "variable")
        except MktsError as exc:
            raise MktsError(f"Creation of new catalog entry failed: {exc}") from None
        self._keys = None
        self.say(f"Successfully created a new catalog entry: {key}")

    def cmd_destroy(self, args: list[str]) -> None:
        if len(args) != 1:
            raise ValueError("usage: \\destroy KEY")
        key = self._key(args[0])
        self.backend.destroy(key)
        self._keys = None
        self.say(f"Successfully removed catalog entry: {key}")

    def cmd_getinfo(self, args: list[str]) -> None:
        if len(args) != 1:
            raise ValueError("usage: \\getinfo KEY")
        info = self.backend.info(self._key(args[0]))
        names = ", ".join(f"{n}:{WIRE_NAMES.get(t, t)}" for n, t in (("Epoch", "i8"), *info.columns))
        self.say(f"Key: {info.key}")
        self.say(f"Latest Year: {max(info.years) if info.years else 'none'}")
        self.say(f"Record Type: {info.record_type}")
        self.say(f"Timeframe: {info.timeframe} ({info.timeframe_seconds} s)")
        self.say(f"Columns: {names}")
        self.say(f"Rows: {info.rows}")
        if info.first is not None and info.last is not None:
            self.say(f"First: {go_time(info.first)}")
            self.say(f"Last: {go_time(info.last)}")
        self.say(f"Disk bytes: {info.disk_bytes}")

    def cmd_load(self, args: list[str]) -> None:
        from mktsframe.io.csv_loader import load_csv

        truncate = "--truncate-strings" in args
        args = [a for a in args if a != "--truncate-strings"]
        if len(args) not in (2, 3):
            raise ValueError("usage: \\load KEY FILE.csv [DESC.yaml] [--truncate-strings]")
        key = self._key(args[0])
        result = load_csv(
            key, Path(args[1]).expanduser(), Path(args[2]).expanduser() if len(args) == 3 else None,
            backend=self.backend, create=False, progress=self.interactive, truncate_strings=True if truncate else None,
        )  # fmt: skip
        if result.truncated:
            self.say(f"{result.truncated} string values longer than 16 characters were cut to 16")
        if result.rows:
            self.say(f"{result.rows} new lines written")
            span = (go_time(t) if t is not None else "?" for t in (result.first, result.last))
            self.say("New data written from {} to {}".format(*span))
        else:
            self.say("No new data written")

    def _range(self, args: list[str], usage: str) -> tuple[str, int | None, int | None, bool]:
        if len(args) < 2:
            raise ValueError(f"not enough arguments: {usage}")
        key = self._key(args[0])
        times: list[int | None] = []
        csv = False
        for word in args[1:]:
            if word.lower() in _SHOW_WORDS:
                continue
            if word.lower() == "csv":
                csv = True
                continue
            times.append(parse_time(word))
        if not times or len(times) > 2:
            raise ValueError(f"expected a start and an optional end time: {usage}")
        return key, times[0], times[1] if len(times) > 1 else None, csv

    def cmd_show(self, args: list[str]) -> None:
        key, start, end, csv = self._range(args, "\\show KEY START [END]")
        df = self._read(key, start, end)
        if csv:
            path = Path("mstore-csv-output.csv")
            with path.open("w", encoding="utf-8", newline="") as f:
                write_csv(df, f, header=True)
            self.say(f"Wrote {len(df)} rows to {path}")
            return
        self.emit(df)

    def _read(self, key: str, start: int | None, end: int | None) -> pd.DataFrame:
        from mktsframe.io.pandas import read_mkts

        bounds = [None if t is None else np.datetime64(t, "ns") for t in (start, end)]
        return read_mkts(key, bounds[0], bounds[1], backend=self.backend)

    def cmd_trim(self, args: list[str]) -> None:
        key, start, end, _ = self._range(args, "\\trim KEY START [END]")
        bounds = [None if t is None else np.datetime64(t, "ns") for t in (start, end)]
        n = self.backend.delete(key, start=bounds[0], end=bounds[1])
        self.say(f"Removed {n} rows from {key}")

    def cmd_output(self, args: list[str]) -> None:
        if len(args) > 2 or (len(args) == 2 and args[1].lower() != "show"):
            raise ValueError("usage: \\o [FILE [show]]")
        if not args:
            self.output = None
            return
        path = Path(args[0]).expanduser()
        path.write_text("", encoding="utf-8")  # start the file afresh, fail now if it cannot be written
        self.output = path
        self.output_show = len(args) == 2

    def cmd_timing(self, args: list[str]) -> None:
        self.timing = not self.timing
        self.err.write(f"Timing is {'on' if self.timing else 'off'}.\n")

    def cmd_help(self, args: list[str]) -> None:
        topic = args[0].lstrip("\\") if args else "help"
        text = HELP.get(topic)
        if text is None:
            raise ValueError(f"no help for {topic!r}; topics: {', '.join(HELP)}")
        self.say(text)

    def cmd_quit(self, args: list[str]) -> bool:
        return True

    # -- completion -----------------------------------------------------------------------------
    def keys(self) -> list[str]:
        if self._keys is None:
            try:
                self._keys = self.backend.list_keys()
            except MktsError:
                self._keys = []
        return self._keys

    def completions(self, line: str, text: str) -> list[str]:
        """Candidates for the word ``text`` at the end of ``line``: commands first, then keys."""
        if line.lstrip() == text and text.startswith("\\"):
            return [f"\\{c}" for c in COMMANDS if f"\\{c}".startswith(text) and c != "?"]
        return [k for k in self.keys() if k.startswith(text)]

    def complete(self, text: str, state: int) -> str | None:
        import readline

        if state == 0:
            self._matches = self.completions(readline.get_line_buffer()[: readline.get_endidx()], text)
        return self._matches[state] if state < len(self._matches) else None

    def preloop(self) -> None:
        if self.interactive:
            self.err.write(f"Connected to {self.target}\nType `\\help` to see command options\n")
        if self.use_rawinput:
            _setup_readline()

    def postloop(self) -> None:
        if self.use_rawinput:
            _save_history()


def parse_time(word: str) -> int:
    """A ``\\show``/``\\trim`` time: MarketStore's forms (``2006-01-02``, ``2006-01-02T15:04``,
    ``20060102 150405999``) or anything :func:`mktsframe.times.to_ns` reads; zone-less is UTC."""
    w = word.strip()
    if len(w) == 18 and w[8] == " " and w.replace(" ", "").isdigit():  # 20060102 150405999 (ms)
        ts = pd.Timestamp(f"{w[:4]}-{w[4:6]}-{w[6:8]}T{w[9:11]}:{w[11:13]}:{w[13:15]}.{w[15:18]}", tz="UTC")
        return int(ts.value)
    if w.isdigit() and len(w) != 8:
        raise ValueError(f"ambiguous time {word!r}: use a date such as 2024-01-02")
    ns = to_ns(w, name="time")
    assert ns is not None
    return ns


def history_path() -> Path:
    """``$MKTS_HISTORY`` or ``~/.mktsframe_history``."""
    return Path(os.environ.get("MKTS_HISTORY") or Path.home() / ".mktsframe_history")


def _setup_readline() -> None:
    try:
        import readline
    except ImportError:  # pragma: no cover - Windows without pyreadline
        return
    readline.set_completer_delims(" \t\n`\"'(),;=")
    with contextlib.suppress(OSError):
        readline.read_history_file(history_path())
    readline.set_history_length(10_000)


def _save_history() -> None:
    try:
        import readline

        readline.write_history_file(history_path())
    except (ImportError, OSError):
        pass


def run(backend: Backend, target: str, stdin: IO[str] | None = None) -> int:
    """Run the loop until EOF or ``\\q``; returns the exit status (1 if a line failed without a terminal)."""
    shell = MktsShell(backend, target, stdin=stdin)
    try:
        shell.cmdloop()
    except KeyboardInterrupt:
        shell.stdout.write("\n")
    return 1 if shell.failures and not shell.interactive else 0
