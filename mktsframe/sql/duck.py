"""Full SQL (joins across symbols, window functions, GROUP BY...) through DuckDB.

Optional: needs ``pip install 'mktsframe[sql]'`` (duckdb + pyarrow). Every table reference that
looks like a bucket key (``"AAPL/1Min/OHLCV"``, also comma lists and ``*`` symbols) is read once
through the backend and handed to DuckDB as an Arrow table: the numpy column buffers are wrapped,
not copied (strings excepted). ``Epoch`` is a ``TIMESTAMP_NS`` column (UTC); multi-bucket keys add
a ``Symbol`` column. References are renamed to the registered tables and aliased back to the key,
so ``"AAPL/1Min/OHLCV".Close`` still resolves. The whole bucket is read (no range push-down yet).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mktsframe.backend.base import Backend, Batch
from mktsframe.errors import SQLError
from mktsframe.sql.parse import marketstore_time_to_iso, table_name

__all__ = ["available", "run"]

_INSTALL = "full SQL needs DuckDB: pip install 'mktsframe[sql]'"


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
        for table in list(tree.find_all(exp.Table)):
            name = table_name(table)
            if not isinstance(table.this, exp.Identifier) or name in ctes or name.count("/") != 2:
                continue
            if name not in registered:
                registered[name] = f"mkts_{len(registered)}"
                con.register(registered[name], _arrow_table(backend.query(name)))
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


def _indexed(df: pd.DataFrame) -> pd.DataFrame:
    if "Epoch" in df.columns and pd.api.types.is_datetime64_any_dtype(df["Epoch"]):
        idx = pd.DatetimeIndex(df["Epoch"])
        idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
        df = df.drop(columns="Epoch").set_axis(idx.as_unit("ns").rename("Epoch"), axis=0)
    return df
