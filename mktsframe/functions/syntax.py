"""MarketStore's function-call syntax: ``name('literal', Col, Col, Param::Col)``.

This is what the ``functions`` list of a Query carries (pymarketstore's
``Params(..., functions=["candlecandler('5Min',Open,High,Low,Close,Sum::Volume)"])``) and what
SQL select lists use. Rules (MarketStore spec §6.2):

* names are case-insensitive (``AVG (Example)`` = ``avg(Example)``); spaces around tokens are ignored;
* literals are single-quoted (``'5Min'``); a double-quoted word is a column name, which lets a name
  hold commas or spaces;
* ``Param::Col`` maps a named parameter (``Sum``, ``Avg``, ``Open``…; case-insensitive) to a column;
* ``*`` is a positional argument (``count(*)``).

Column names are case-sensitive, as in the buckets; a name that matches no column exactly but
exactly one column ignoring case is taken to mean that column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from mktsframe.backend.base import Batch
from mktsframe.errors import FunctionError

__all__ = ["Call", "parse_call", "resolve_column"]

_NAME = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(")
#: Longest call text accepted (a request could otherwise make us parse megabytes).
MAX_CALL_CHARS = 4096


@dataclass(frozen=True)
class Call:
    """One parsed function call.

    Attributes
    ----------
    name : str
        Lower-case function name.
    literals : tuple of str
        Quoted arguments, in order (e.g. the candle duration).
    columns : tuple of str
        Positional column arguments, in order (``*`` kept as ``"*"``).
    named : tuple of (str, str)
        ``Param::Col`` pairs, parameter name as written.
    text : str
        The call as given (for error messages).
    """

    name: str
    literals: tuple[str, ...]
    columns: tuple[str, ...]
    named: tuple[tuple[str, str], ...]
    text: str

    def fail(self, reason: str) -> FunctionError:
        """An error naming this call."""
        return FunctionError(f"{self.text.strip()}: {reason}")


def parse_call(text: str) -> Call:
    """Parse one call string; raises :class:`FunctionError` saying what is wrong and where."""
    if not isinstance(text, str):
        raise FunctionError(f"a function must be a string like \"count(*)\", got {type(text).__name__}")
    if len(text) > MAX_CALL_CHARS:
        raise FunctionError(f"function call is longer than {MAX_CALL_CHARS} characters")
    m = _NAME.match(text)
    if m is None:
        raise FunctionError(f"cannot parse function call {text!r}: expected name(arguments)")
    body_start = m.end()
    close = _matching_paren(text, body_start)
    if text[close + 1 :].strip():
        raise FunctionError(f"cannot parse function call {text!r}: unexpected text after ')'")
    literals: list[str] = []
    columns: list[str] = []
    named: list[tuple[str, str]] = []
    for arg in _split_args(text, text[body_start:close]):
        if arg.startswith("'"):
            literals.append(arg[1:-1])
            continue
        param, sep, col = _split_named(arg)
        if sep:
            if not param or not col:
                raise FunctionError(f"cannot parse argument {arg!r} of {text!r}: expected Param::Column")
            named.append((param, col))
        else:
            columns.append(_unquote(arg))
    return Call(m.group(1).lower(), tuple(literals), tuple(columns), tuple(named), text)


def _matching_paren(text: str, i: int) -> int:
    quote = None
    while i < len(text):
        c = text[i]
        if quote:
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c == ")":
            return i
        elif c == "(":
            raise FunctionError(f"cannot parse function call {text!r}: nested calls are not supported")
        i += 1
    raise FunctionError(f"cannot parse function call {text!r}: missing ')'" + (" or a closing quote" if quote else ""))


def _split_args(text: str, body: str) -> list[str]:
    if not body.strip():
        return []
    args, cur, quote = [], [], None
    for c in body:
        if quote:
            cur.append(c)
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
            cur.append(c)
        elif c == ",":
            args.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
    args.append("".join(cur).strip())
    for a in args:
        if not a:
            raise FunctionError(f"cannot parse function call {text!r}: empty argument")
        if a.startswith("'") and (len(a) < 2 or not a.endswith("'") or "'" in a[1:-1]):
            raise FunctionError(f"cannot parse argument {a!r} of {text!r}: a literal is one quoted word like '5Min'")
    return args


def _split_named(arg: str) -> tuple[str, str, str]:
    if arg.startswith('"'):
        return "", "", arg
    param, sep, col = arg.partition("::")
    return param.strip(), sep, _unquote(col.strip()) if sep else ""


def _unquote(word: str) -> str:
    if len(word) >= 2 and word[0] == word[-1] == '"':
        return word[1:-1]
    if any(c in word for c in "\"' ()"):
        raise FunctionError(f"cannot parse column name {word!r} (quote unusual names with double quotes)")
    return word


def resolve_column(batch: Batch, name: str, call: Call | None = None) -> str:
    """The column of ``batch`` that ``name`` refers to (exact match, else the one equal ignoring case)."""
    if name in batch.columns:
        return name
    folded = [c for c in batch.columns if c.lower() == name.lower()]
    if len(folded) == 1:
        return folded[0]
    reason = f"no column {name!r} (columns: {', '.join(batch.columns) or 'none'})"
    raise call.fail(reason) if call is not None else FunctionError(reason)


def numeric(batch: Batch, name: str, call: Call | None = None) -> np.ndarray:
    """Column ``name`` of ``batch``, which must be numeric (integers, floats or bools)."""
    values = np.asarray(batch.columns[resolve_column(batch, name, call)])
    if values.dtype.kind not in "iufb":
        reason = f"column {name!r} holds {values.dtype}, not numbers"
        raise call.fail(reason) if call is not None else FunctionError(reason)
    return values
