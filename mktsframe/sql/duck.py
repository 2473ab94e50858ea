"""Full SQL (joins across symbols, window functions, GROUP BY...) through DuckDB.

Optional: needs ``pip install 'mktsframe[sql]'`` (duckdb + pyarrow). Every table reference that
looks like a bucket key (``"AAPL/1Min/OHLCV"``, also comma lists and ``*`` symbols) is read once
through the backend and handed to DuckDB as an Arrow table: the numpy column buffers are wrapped,
not copied (strings excepted). ``Epoch`` is a ``TIMESTAMP_NS`` column (UTC); multi-bucket keys add
a ``Symbol`` column. References are renamed to the registered tables and aliased back to the key,
so ``"AAPL/1Min/OHLCV".Close`` still resolves.

Range push-down: a bucket is read only over the ``Epoch`` range its ``SELECT``'s ``WHERE`` implies
(comparisons and ``BETWEEN`` with time literals, joined by ``AND`` at the top of the clause),
widened by a day on each side so that however DuckDB reads a literal (an offset, a zone) the rows
it keeps are all there. DuckDB still applies the whole ``WHERE``: the push-down only spares reading
the years and days no row can come from. Anything else (``OR``, functions of ``Epoch``, numbers)
reads the whole bucket.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mktsframe.backend.base import Backend, Batch
from mktsframe.errors import SQLError
from mktsframe.sql.parse import epoch_literal_ns, marketstore_time_to_iso, table_name

__all__ = ["available", "run"]

_INSTALL = "full SQL needs DuckDB: pip install 'mktsframe[sql]'"
_PAD_NS = 86_400 * 1_000_000_000  # push-down bounds are widened by a day (see the module docstring)


#: DuckDB settings for every connection: the SQL may come from a network client.
_SAFE_CONFIG = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "lock_configuration": True,
}


def available() -> bool:
    """Whether duckdb and pyarrow can be imported."""
    try:
        import duckdb  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def _arrow_table(results: dict[str, Batch]) -> Any:
    import pyarrow as pa

    tables = []
    for key, batch in results.items():
        arrays = {"Epoch": pa.array(np.asarray(batch.index, np.int64).view("M8[ns]"))}
        if len(results) > 1:
            arrays["Symbol"] = pa.array(np.full(len(batch), key.split("/")[0], dtype=object), pa.string())
        for name, values in batch.columns.items():
            v = np.asarray(values)
            arrays[name] = pa.array(v.astype(object) if v.dtype.kind == "U" else v)
        tables.append(pa.table(arrays))
    if len(tables) == 1:
        return tables[0]
    out = pa.concat_tables(tables)
    return out.sort_by([("Epoch", "ascending")])


def run(tree: Any, backend: Backend) -> pd.DataFrame:
    """Run a parsed statement (a sqlglot expression) and return its rows.

    A result with a timestamp column named ``Epoch`` is indexed by it (UTC), like every other
    mktsframe frame; otherwise the frame keeps a plain index.
    """
    try:
        import duckdb
    except ImportError:
        raise SQLError(_INSTALL) from None
    if not available():
        raise SQLError(_INSTALL)
    from sqlglot import exp

    if not isinstance(tree, exp.Query):
        raise SQLError(f"only SELECT queries run through DuckDB, not {tree.key.upper()}")
    tree = tree.copy()
    # Statements may come from the network: no files, no extensions, no settings changes.
    con = duckdb.connect(config=_SAFE_CONFIG)
    try:
        registered: dict[str, str] = {}
        ctes = {c.alias_or_name for c in tree.find_all(exp.CTE)}
        buckets = [
            t
            for t in tree.find_all(exp.Table)
            if isinstance(t.this, exp.Identifier) and table_name(t) not in ctes and table_name(t).count("/") == 2
        ]
        ranges: dict[str, tuple[int | None, int | None]] = {}
        for table in buckets:  # the union of what every reference to a bucket needs
            lo, hi = pushed_range(table)
            if table_name(table) in ranges:
                lo0, hi0 = ranges[table_name(table)]
                lo = None if lo is None or lo0 is None else min(lo, lo0)
                hi = None if hi is None or hi0 is None else max(hi, hi0)
            ranges[table_name(table)] = (lo, hi)
        for table in buckets:
            name = table_name(table)
            if name not in registered:
                registered[name] = f"mkts_{len(registered)}"
                lo, hi = ranges[name]
                con.register(registered[name], _arrow_table(backend.query(name, start=_at(lo), end=_at(hi))))
            alias = table.alias or name
            table.replace(
                exp.Table(
                    this=exp.to_identifier(registered[name]),
                    alias=exp.TableAlias(this=exp.to_identifier(alias, quoted=True)),
                )
            )
        for lit in list(tree.find_all(exp.Literal)):  # MarketStore's '2006-01-02-15:04' → ISO
            iso = marketstore_time_to_iso(str(lit.this)) if lit.is_string else None
            if iso is not None:
                lit.replace(exp.Literal.string(iso))
        try:
            df = con.execute(tree.sql(dialect="duckdb")).df()
        except duckdb.Error as exc:
            raise SQLError(f"DuckDB: {exc}") from None
    finally:
        con.close()
    return _indexed(df)


def _at(ns: int | None) -> np.datetime64 | None:
    return None if ns is None else np.datetime64(ns, "ns")


def pushed_range(table: Any) -> tuple[int | None, int | None]:
    """Inclusive ns bounds on ``table``'s ``Epoch`` implied by the ``WHERE`` of its own ``SELECT``
    (``None``: unbounded), widened by a day: a superset of the rows the statement can use."""
    from sqlglot import exp

    select = table.find_ancestor(exp.Select)
    where = select.args.get("where") if select is not None else None
    if where is None:
        return None, None
    own = [t for t in select.find_all(exp.Table) if t.find_ancestor(exp.Select) is select]
    qualifier = table.alias_or_name

    def is_epoch(e: Any) -> bool:
        if not isinstance(e, exp.Column) or e.name.lower() != "epoch":
            return False
        return e.table == qualifier if e.table else len(own) == 1

    def time_of(e: Any) -> int | None:
        if isinstance(e, exp.Cast) and e.to.is_type(*exp.DataType.TEMPORAL_TYPES):
            e = e.this
        if not isinstance(e, exp.Literal) or not e.is_string:
            return None  # numbers do not compare with a TIMESTAMP_NS in DuckDB; anything else: unknown
        try:
            return epoch_literal_ns(e.this)
        except (SQLError, ValueError, TypeError, OverflowError):
            return None

    lo: int | None = None
    hi: int | None = None

    def bound(low: int | None = None, high: int | None = None) -> None:
        nonlocal lo, hi
        if low is not None:
            lo = low if lo is None else max(lo, low)
        if high is not None:
            hi = high if hi is None else min(hi, high)

    flip = {exp.GT: exp.LT, exp.GTE: exp.LTE, exp.LT: exp.GT, exp.LTE: exp.GTE, exp.EQ: exp.EQ}
    for term in where.this.flatten() if isinstance(where.this, exp.And) else [where.this]:
        term = term.unnest()
        if isinstance(term, exp.Between) and is_epoch(term.this):
            bound(time_of(term.args["low"]), time_of(term.args["high"]))
            continue
        if type(term) not in flip:
            continue
        left, right, kind = term.this, term.expression, type(term)
        if is_epoch(right):
            left, right, kind = right, left, flip[kind]
        if not is_epoch(left):
            continue
        t = time_of(right)
        if kind in (exp.GT, exp.GTE, exp.EQ):
            bound(low=t)
        if kind in (exp.LT, exp.LTE, exp.EQ):
            bound(high=t)
    return (None if lo is None else lo - _PAD_NS), (None if hi is None else hi + _PAD_NS)


def _indexed(df: pd.DataFrame) -> pd.DataFrame:
    if "Epoch" in df.columns and pd.api.types.is_datetime64_any_dtype(df["Epoch"]):
        idx = pd.DatetimeIndex(df["Epoch"])
        idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
        df = df.drop(columns="Epoch").set_axis(idx.as_unit("ns").rename("Epoch"), axis=0)
    return df
