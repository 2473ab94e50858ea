"""SQL text → a plan for MarketStore's SQL subset (parsed by sqlglot, never by hand).

MarketStore's dialect (spec §6.3): ``SELECT <* | columns | functions> FROM `SYM/TF/AG` [WHERE
conjunction of column-op-literal] [LIMIT n]``, sub-queries in ``FROM``, and ``INSERT INTO `KEY`
[(cols)] SELECT ...``. Table names may be quoted with backquotes (MarketStore) or double quotes
(standard SQL); both read as identifiers because we parse with sqlglot's SQLite dialect.

Statements outside that subset raise :class:`NotNative` with the reason, so the caller can hand
them to DuckDB (``mktsframe[sql]``) or report the reason. Syntax errors raise
:class:`~mktsframe.errors.SQLError` with the line and column of the offending token.

Deliberate differences from MarketStore (its behaviour is a documented quirk): ``BETWEEN`` is
inclusive on both ends, as in standard SQL; a trailing positional column in ``candlecandler`` is
summed (as ``Sum::Col``) instead of failing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from mktsframe.errors import SQLError

__all__ = [
    "Aggregate",
    "FunctionCall",
    "InsertPlan",
    "NotNative",
    "Predicate",
    "SelectPlan",
    "epoch_literal_ns",
    "parse_statement",
    "plan",
]

#: sqlglot dialect used to read statements: it accepts both `backquoted` and "double-quoted" identifiers.
READ_DIALECT = "sqlite"
#: Integer Epoch literals up to this are epoch seconds, larger ones nanoseconds (MarketStore's rule).
EPOCH_SECONDS_MAX = 32_503_680_000
_OPS = {"EQ": "=", "NEQ": "!=", "LT": "<", "LTE": "<=", "GT": ">", "GTE": ">="}
_FLIP = {"=": "=", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
#: MarketStore's table-valued and aggregate functions (spec §6.2), by lower-case name.
CANDLE_FUNCTIONS = frozenset({"candlecandler", "tickcandler", "gap"})
AGGREGATE_FUNCTIONS = frozenset({"count", "avg", "min", "max"})
_MS_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2})-(\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)(?: ([A-Za-z]{1,5}))?$")


class NotNative(Exception):
    """The statement is valid SQL but outside MarketStore's subset (reason in ``args[0]``)."""


@dataclass(frozen=True)
class Predicate:
    """``column <op> value``; Epoch values are int64 ns UTC."""

    column: str
    op: str
    value: Any


@dataclass(frozen=True)
class FunctionCall:
    """A MarketStore function call: positional args and ``Name::Column`` named args."""

    name: str
    literals: tuple[str, ...]
    columns: tuple[str, ...]
    named: tuple[tuple[str, str], ...]
    alias: str | None = None
    text: str = ""


@dataclass(frozen=True)
class Aggregate:
    """``count(*)``, ``avg(X)``, ``min(X)``, ``max(X)`` (``column`` is ``None`` for ``*``)."""

    name: str
    column: str | None
    alias: str | None = None
    text: str = ""


@dataclass
class SelectPlan:
    source: str | SelectPlan
    """A bucket key, or the plan of a sub-query."""
    columns: list[tuple[str, str | None]] | None = None
    """``[(column, alias)]``; ``None`` selects every column (``*``)."""
    aggregates: list[Aggregate] = field(default_factory=list)
    function: FunctionCall | None = None
    where: list[Predicate] = field(default_factory=list)
    limit: int | None = None


@dataclass
class InsertPlan:
    target: str
    columns: list[str] | None
    select: Any
    """A :class:`SelectPlan`, or a sqlglot expression to run through DuckDB."""


def parse_statement(sql: str) -> Any:
    """Parse one statement with sqlglot; syntax errors become :class:`SQLError` with a position."""
    try:
        import sqlglot
        from sqlglot.errors import ParseError, TokenError
    except ImportError:
        raise SQLError("SQL needs sqlglot: pip install 'mktsframe[sql]'") from None
    text = sql.strip().rstrip(";").strip()
    if not text:
        raise SQLError("empty SQL statement")
    try:
        statements = sqlglot.parse(text, read=READ_DIALECT)
    except ParseError as exc:
        err = exc.errors[0] if exc.errors else {}
        line, col = err.get("line"), err.get("col")
        if col and err.get("highlight"):  # sqlglot reports the token's last column; point at its first
            col = max(1, col - len(err["highlight"]) + 1)
        desc = err.get("description") or str(exc)
        m = re.match(r"Required keyword: '(\w+)' missing for <class '[\w.]*?(\w+)'>", desc)
        if m:  # sqlglot's wording names its classes; say what is incomplete instead
            desc = f"incomplete {m.group(2).upper()} ({m.group(1)} missing)"
        raise SQLError(_at(f"SQL syntax error: {desc}", text, line, col), line=line, col=col) from None
    except TokenError as exc:
        raise SQLError(f"SQL syntax error: {exc}") from None
    statements = [s for s in statements if s is not None]
    if len(statements) != 1:
        raise SQLError(f"expected one SQL statement, got {len(statements)}")
    return statements[0]


def _at(message: str, text: str, line: int | None, col: int | None) -> str:
    """``message`` plus the offending line with a caret under column ``col`` (1-based)."""
    if not line or not col:
        return message
    lines = text.splitlines() or [text]
    src = lines[min(line, len(lines)) - 1]
    return f"{message} at line {line}, column {col}\n  {src}\n  {' ' * max(col - 1, 0)}^"


def marketstore_time_to_iso(text: str) -> str | None:
    """``'2006-01-02-15:04[:05[.f]] [UTC]'`` (MarketStore's form) as ISO 8601, else ``None``."""
    m = _MS_TIME.match(text.strip())
    if not m or (m.group(3) or "UTC").upper() not in ("UTC", "GMT", "Z"):
        return None
    return f"{m.group(1)} {m.group(2)}"


def epoch_literal_ns(value: Any) -> int:
    """An Epoch literal as int64 ns UTC.

    Integers up to 32503680000 are epoch seconds, larger ones nanoseconds (MarketStore's rule);
    strings may be MarketStore's ``'2006-01-02-15:04[:05[.fff]] [UTC]'`` or anything pandas reads
    (zone-less means UTC).
    """
    import pandas as pd

    if isinstance(value, bool):
        raise SQLError(f"cannot compare Epoch with {value!r}")
    if isinstance(value, int):
        return value * 1_000_000_000 if abs(value) <= EPOCH_SECONDS_MAX else value
    if isinstance(value, float):
        return round(value * 1_000_000_000)
    text = str(value).strip()
    m = _MS_TIME.match(text)
    if m:
        zone = (m.group(3) or "UTC").upper()
        if zone not in ("UTC", "GMT", "Z"):
            raise SQLError(f"time zone {m.group(3)!r} in {text!r} is not supported (use UTC or an ISO offset)")
        text = f"{m.group(1)}T{m.group(2)}"
    try:
        ts = pd.Timestamp(text)
    except (ValueError, TypeError):
        raise SQLError(f"cannot read {value!r} as a time (try '2006-01-02-15:04:05' or ISO 8601)") from None
    if ts is pd.NaT:
        raise SQLError(f"cannot read {value!r} as a time")
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return int(ts.as_unit("ns").value)


def plan(tree: Any) -> SelectPlan | InsertPlan:
    """The plan of a parsed statement, or :class:`NotNative` if it needs a full SQL engine."""
    from sqlglot import exp

    if isinstance(tree, exp.Insert):
        return _insert(tree)
    if isinstance(tree, exp.Select):
        return _select(tree)
    raise NotNative(f"{tree.key.upper()} statements are not part of MarketStore's SQL")


def insert_parts(tree: Any) -> tuple[str, list[str] | None, Any]:
    """``(target key, column list or None, select expression)`` of an ``INSERT ... SELECT``."""
    from sqlglot import exp

    target = tree.this
    columns = None
    if isinstance(target, exp.Schema):
        columns = [c.name for c in target.expressions]
        target = target.this
    if not isinstance(target, exp.Table):
        raise SQLError("INSERT INTO needs a bucket key, e.g. INSERT INTO `AAPL/5Min/OHLCV` SELECT ...")
    select = tree.expression
    if not isinstance(select, exp.Query):
        raise SQLError("only INSERT INTO ... SELECT ... is supported (no VALUES)")
    return table_name(target), columns, select


def _insert(tree: Any) -> InsertPlan:
    target, columns, select = insert_parts(tree)
    try:
        sub: Any = plan(select)
    except NotNative:
        sub = select
    return InsertPlan(target, columns, sub)


def table_name(table: Any) -> str:
    """The text of a table reference (``a.b.c`` parts joined back with dots)."""
    parts = [p.name for p in (table.args.get("catalog"), table.args.get("db"), table.this) if p is not None]
    return ".".join(parts)


def _select(tree: Any) -> SelectPlan:
    from sqlglot import exp

    unsupported = [
        k
        for k in (
            "joins",
            "group",
            "having",
            "order",
            "qualify",
            "windows",
            "distinct",
            "with_",
            "with",
            "offset",
            "laterals",
            "pivots",
        )
        if tree.args.get(k)
    ]
    if unsupported:
        raise NotNative(f"{unsupported[0].rstrip('_').upper()} is beyond MarketStore's SQL")
    src = tree.args.get("from_") or tree.args.get("from")
    if src is None:
        raise NotNative("SELECT without FROM")
    node = src.this
    source: str | SelectPlan
    if isinstance(node, exp.Table) and isinstance(node.this, exp.Identifier):
        source = table_name(node)
    elif isinstance(node, exp.Subquery) and isinstance(node.this, exp.Select):
        source = _select(node.this)
    else:
        raise NotNative("FROM must name one bucket or hold one sub-query")
    p = SelectPlan(source)
    _items(tree.expressions, p)
    where = tree.args.get("where")
    if where is not None:
        p.where = _conjuncts(where.this)
    limit = tree.args.get("limit")
    if limit is not None:
        lit = limit.expression
        if not isinstance(lit, exp.Literal) or lit.is_string or not lit.this.isdigit():
            raise SQLError(f"LIMIT must be a non-negative integer, got {lit.sql()}")
        p.limit = int(lit.this)
    return p


def _items(expressions: list[Any], p: SelectPlan) -> None:
    from sqlglot import exp

    cols: list[tuple[str, str | None]] = []
    star = False
    for item in expressions:
        alias = None
        if isinstance(item, exp.Alias):
            alias = item.alias
            item = item.this
        if isinstance(item, exp.Star):
            star = True
        elif isinstance(item, exp.Column) and not item.table:
            if isinstance(item.this, exp.Star):
                star = True
            else:
                cols.append((item.name, alias))
        elif isinstance(item, (exp.Count, exp.Avg, exp.Min, exp.Max)):
            p.aggregates.append(_aggregate(item, alias))
        elif isinstance(item, exp.Anonymous) and item.name.lower() in CANDLE_FUNCTIONS:
            if p.function is not None:
                raise SQLError("only one of candlecandler/tickcandler/gap may appear in a select list")
            p.function = _function(item, alias)
        else:
            raise NotNative(f"select item {item.sql(dialect=READ_DIALECT)!r} is beyond MarketStore's SQL")
    kinds = sum(bool(x) for x in (star or cols, p.aggregates, p.function))
    if kinds > 1:
        raise NotNative("mixing columns, aggregates and candle functions needs GROUP BY")
    if not star and cols:
        p.columns = [(c, a) for c, a in cols if c.lower() != "epoch"]


def _aggregate(node: Any, alias: str | None) -> Aggregate:
    from sqlglot import exp

    name = type(node).__name__.lower()
    arg = node.this
    if isinstance(arg, exp.Star) or (isinstance(arg, exp.Column) and isinstance(arg.this, exp.Star)):
        if name != "count":
            raise SQLError(f"{name}(*) is not defined; name a column")
        return Aggregate(name, None, alias, node.sql(dialect=READ_DIALECT))
    if node.args.get("distinct") or isinstance(arg, exp.Distinct):
        raise NotNative(f"{name}(DISTINCT ...) is beyond MarketStore's SQL")
    if not isinstance(arg, exp.Column):
        raise NotNative(f"{name}() of an expression is beyond MarketStore's SQL")
    return Aggregate(name, arg.name, alias, node.sql(dialect=READ_DIALECT))


def _function(node: Any, alias: str | None) -> FunctionCall:
    from sqlglot import exp

    literals: list[str] = []
    columns: list[str] = []
    named: list[tuple[str, str]] = []
    for arg in node.expressions:
        if isinstance(arg, exp.Literal):
            literals.append(str(arg.this))
        elif isinstance(arg, exp.Column):
            columns.append(arg.name)
        elif isinstance(arg, exp.Cast) and isinstance(arg.this, exp.Column):  # Sum::Volume
            to = arg.to
            target = to.args.get("kind") if to.this == exp.DataType.Type.USERDEFINED else None
            named.append((arg.this.name, str(target) if target is not None else to.sql(dialect=READ_DIALECT)))
        else:
            raise SQLError(f"unexpected argument {arg.sql(dialect=READ_DIALECT)!r} to {node.name}()")
    text = node.sql(dialect=READ_DIALECT)
    return FunctionCall(node.name.lower(), tuple(literals), tuple(columns), tuple(named), alias, text)


def _conjuncts(node: Any) -> list[Predicate]:
    from sqlglot import exp

    if isinstance(node, exp.Paren):
        return _conjuncts(node.this)
    if isinstance(node, exp.And):
        return _conjuncts(node.this) + _conjuncts(node.expression)
    if isinstance(node, exp.Between):
        col = _column_of(node.this)
        low, high = _value(col, node.args["low"]), _value(col, node.args["high"])
        return [Predicate(col, ">=", low), Predicate(col, "<=", high)]
    op = _OPS.get(type(node).__name__.upper())
    if op is None:
        raise NotNative(f"predicate {node.sql(dialect=READ_DIALECT)!r} is beyond MarketStore's SQL")
    left, right = node.this, node.expression
    if isinstance(left, exp.Column) and not isinstance(right, exp.Column):
        col = _column_of(left)
        return [Predicate(col, op, _value(col, right))]
    if isinstance(right, exp.Column) and not isinstance(left, exp.Column):
        col = _column_of(right)
        return [Predicate(col, _FLIP[op], _value(col, left))]
    raise NotNative(f"predicate {node.sql(dialect=READ_DIALECT)!r} compares two columns")


def _column_of(node: Any) -> str:
    from sqlglot import exp

    if not isinstance(node, exp.Column) or node.table:
        raise NotNative(f"{node.sql(dialect=READ_DIALECT)!r} is not a plain column")
    return node.name


def _value(column: str, node: Any) -> Any:
    from sqlglot import exp

    neg = False
    if isinstance(node, exp.Neg):
        neg, node = True, node.this
    if isinstance(node, exp.Paren):
        node = node.this
    if not isinstance(node, exp.Literal):
        raise NotNative(f"{node.sql(dialect=READ_DIALECT)!r} is not a literal")
    if node.is_string:
        value: Any = str(node.this)
    else:
        text = str(node.this)
        try:
            value = int(text)
        except ValueError:
            value = float(text)
        value = -value if neg else value
    return epoch_literal_ns(value) if column.lower() == "epoch" else value
