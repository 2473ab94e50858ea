"""SQL over mktsframe buckets: MarketStore's dialect natively, full SQL through DuckDB.

:func:`execute` is the one entry point (the shell, the server's ``is_sqlstatement`` queries and
the ``%%mkts`` cell magic all call it)::

    import mktsframe.sql
    df = mktsframe.sql.execute('SELECT Close FROM `AAPL/1Min/OHLCV` WHERE Epoch >= \\'2024-01-02\\' LIMIT 10')

MarketStore's subset (``SELECT cols | count/avg/min/max | candlecandler/tickcandler/gap FROM
`SYM/TF/AG` WHERE ... LIMIT n``, sub-queries in FROM, ``INSERT INTO `KEY` SELECT ...``) runs
here with only sqlglot installed. Anything else (joins across symbols, GROUP BY, window
functions, OR/IN predicates) goes to DuckDB when ``mktsframe[sql]`` is installed.
"""

from __future__ import annotations

from typing import Literal

import pandas as pd

from mktsframe.backend import Backend, default_backend
from mktsframe.errors import SQLError

__all__ = ["SQLError", "execute"]

Engine = Literal["auto", "marketstore", "duckdb"]


def execute(sql: str, backend: Backend | None = None, *, engine: Engine = "auto") -> pd.DataFrame:
    """Run one SQL statement and return its rows.

    Parameters
    ----------
    sql : str
        One statement; bucket keys are quoted identifiers: ```AAPL/1Min/OHLCV``` or
        ``"AAPL/1Min/OHLCV"``. Epoch literals: ``'2024-01-02'``, ``'2024-01-02-15:04:05'``, ISO 8601
        strings (UTC unless they carry an offset) or integers (epoch seconds; nanoseconds above
        32503680000).
    backend : Backend, optional
        Where the buckets live (default: the default backend).
    engine : {"auto", "marketstore", "duckdb"}
        ``auto`` runs MarketStore's subset natively and anything else through DuckDB.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``Epoch`` (UTC ``DatetimeIndex``) when the result has a time; computed rows
        (``count(*)``, ``INSERT``'s ``Rows Written``) are stamped with the current time.

    Raises
    ------
    SQLError
        Syntax errors (with ``line``/``col`` of the offending token), unknown columns,
        statements outside MarketStore's SQL when DuckDB is not installed.
    BucketNotFoundError
        A named bucket does not exist.
    """
    from mktsframe.sql import duck, native
    from mktsframe.sql.parse import InsertPlan, NotNative, insert_parts, parse_statement, plan

    if engine not in ("auto", "marketstore", "duckdb"):
        raise ValueError(f"engine must be 'auto', 'marketstore' or 'duckdb', got {engine!r}")
    if not isinstance(sql, str):
        raise TypeError(f"sql must be a string, got {type(sql).__name__}")
    be = backend if backend is not None else default_backend()
    tree = parse_statement(sql)
    if engine == "duckdb":
        from sqlglot import exp

        if isinstance(tree, exp.Insert):
            target, columns, select = insert_parts(tree)
            return native.run_insert(InsertPlan(target, columns, select), duck.run(select, be), be)
        return duck.run(tree, be)
    try:
        p = plan(tree)
    except NotNative as exc:
        if engine == "marketstore" or not duck.available():
            hint = "" if engine == "marketstore" else " (install mktsframe[sql] to run it through DuckDB)"
            raise SQLError(f"{exc}{hint}") from None
        return duck.run(tree, be)
    if isinstance(p, InsertPlan):
        rows = native.run_select(p.select, be) if not hasattr(p.select, "sql") else duck.run(p.select, be)
        return native.run_insert(p, rows, be)
    return native.run_select(p, be)
