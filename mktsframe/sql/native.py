"""Running MarketStore-subset plans (see :mod:`mktsframe.sql.parse`) against any backend.

The scan pushes down what it safely can: the Epoch range (as inclusive bounds, which select whole
bars), the columns needed, and ``LIMIT`` when nothing filters or aggregates the rows. Every
predicate is then applied exactly to the rows read, so pushed-down bounds never change results.

MarketStore's functions in select lists (``count``/``avg``/``min``/``max``, ``candlecandler``,
``tickcandler``, ``gap``) are computed by :mod:`mktsframe.functions`, the one implementation the
server's ``functions`` query field uses too; several aggregates in one select list give one row.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from mktsframe.backend.base import Backend, Batch
from mktsframe.errors import SQLError
from mktsframe.functions import FUNCTIONS, Call
from mktsframe.io.frames import batch_to_frame, frame_to_batch
from mktsframe.io.pandas import read_mkts, write_mkts
from mktsframe.sql.parse import Aggregate, InsertPlan, Predicate, SelectPlan

__all__ = ["run_insert", "run_select"]

_CMP: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}  # fmt: skip
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


def run_select(p: SelectPlan, backend: Backend) -> pd.DataFrame:
    """The result frame of a SELECT plan, indexed by ``Epoch`` (UTC)."""
    df = _scan(p, backend) if isinstance(p.source, str) else run_select(p.source, backend)
    df = _filter(df, p.where)
    if p.function is not None:
        f = p.function
        call = Call(f.name, f.literals, f.columns, f.named, f.text)
        df = batch_to_frame(FUNCTIONS[f.name](frame_to_batch(df), call))
    elif p.aggregates:
        df = _aggregates(df, p.aggregates)
    elif p.columns is not None:
        picked = [_match(list(df.columns), c) for c, _ in p.columns]
        df = df[picked]
        renames = {old: alias for old, (_, alias) in zip(picked, p.columns, strict=True) if alias}
        if renames:
            df = df.set_axis([renames.get(c, c) for c in picked], axis=1)
    if p.limit is not None:
        df = df.iloc[: p.limit]
    return df


def _aggregates(df: pd.DataFrame, aggs: list[Aggregate]) -> pd.DataFrame:
    """One row at ``Epoch`` = now holding every aggregate (``Count``, ``Avg``, ``Min``, ``Max`` or aliases).

    Over no rows ``count`` is 0 and the others are NaN (the functions return no row for them).
    """
    batch = frame_to_batch(df)
    out: dict[str, np.ndarray] = {}
    index = None
    for a in aggs:
        call = Call(a.name, (), ("*",) if a.column is None else (a.column,), (), a.text)
        res = FUNCTIONS[a.name](batch, call)
        ((label, values),) = res.columns.items()
        label = a.alias or label
        if label in out:
            raise SQLError(f"two results would be named {label!r}; name them with AS")
        if len(res):
            index = res.index
        out[label] = np.asarray(values)
    if index is None:
        return batch_to_frame(Batch(np.empty(0, np.int64), out))
    out = {k: v if len(v) else np.full(1, np.nan) for k, v in out.items()}
    return batch_to_frame(Batch(index, out))


def _now_row(columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """A one-row result at ``Epoch`` = now (whole seconds), as MarketStore stamps computed rows."""
    now = time.time_ns() // 1_000_000_000 * 1_000_000_000
    return batch_to_frame(Batch(np.array([now], np.int64), columns))


def _scan(p: SelectPlan, backend: Backend) -> pd.DataFrame:
    key = str(p.source)
    start, end = _I64_MIN, _I64_MAX
    for pred in p.where:
        if pred.column.lower() != "epoch":
            continue
        v = int(pred.value)
        if pred.op in (">=", "="):
            start = max(start, v)
        if pred.op == ">":
            start = max(start, v + 1)
        if pred.op in ("<=", "="):
            end = min(end, v)
        if pred.op == "<":
            end = min(end, v - 1)
    columns = None
    if p.columns is not None:
        schema = next(iter(backend.query(key, limit=0).values())).columns
        names = list(schema)
        wanted = [c for c, _ in p.columns] + [w.column for w in p.where if w.column.lower() != "epoch"]
        columns = list(dict.fromkeys(_match(names, c) for c in wanted))
    pushed_limit = p.limit if not p.where and p.function is None and not p.aggregates else None
    bounds = {
        "start": None if start == _I64_MIN else np.datetime64(start, "ns"),
        "end": None if end == _I64_MAX else np.datetime64(end, "ns"),
    }
    if start > end:  # contradictory bounds: no rows, but the bucket's columns
        return read_mkts(key, columns=columns, limit=0, backend=backend)
    return read_mkts(key, **bounds, columns=columns, limit=pushed_limit, limit_from_start=True, backend=backend)


def _match(names: list[str], name: str) -> str:
    """The column ``name`` refers to: exact match first, then the one equal ignoring case."""
    if name in names:
        return name
    folded = [n for n in names if n.lower() == name.lower()]
    if len(folded) == 1:
        return folded[0]
    raise SQLError(f"unknown column {name!r} (columns: Epoch, {', '.join(names)})")


def _filter(df: pd.DataFrame, preds: list[Predicate]) -> pd.DataFrame:
    if not preds:
        return df
    mask = np.ones(len(df), bool)
    for pred in preds:
        if pred.column.lower() == "epoch":
            values: Any = df.index.asi8
            literal: Any = int(pred.value)
        else:
            values = df[_match(list(df.columns), pred.column)].to_numpy()
            literal = _literal_for(pred, values)
        mask &= np.asarray(_CMP[pred.op](values, literal), dtype=bool)
    return df[mask]


def _literal_for(pred: Predicate, values: np.ndarray) -> Any:
    if values.dtype.kind in "iuf" and isinstance(pred.value, str):
        try:
            return float(pred.value)
        except ValueError:
            raise SQLError(f"cannot compare numeric column {pred.column!r} with {pred.value!r}") from None
    if values.dtype.kind in "UO" and not isinstance(pred.value, str):
        raise SQLError(f"cannot compare text column {pred.column!r} with {pred.value!r}; quote the value")
    return pred.value


def run_insert(p: InsertPlan, rows: pd.DataFrame, backend: Backend) -> pd.DataFrame:
    """Write ``rows`` (the SELECT's result) into the existing bucket ``p.target``.

    A column list renames the result's columns by position (``Epoch`` in it stands for the time
    index). Returns one row at ``Epoch`` = now with ``Rows Written`` (i8).
    """
    backend.query(p.target, limit=0)  # must exist, as in MarketStore: raises BucketNotFoundError
    if p.columns is not None:
        names = [c for c in p.columns if c.lower() != "epoch"]
        if len(names) != rows.shape[1]:
            raise SQLError(
                f"INSERT INTO {p.target} names {len(names)} columns but the SELECT returns {rows.shape[1]} "
                f"({', '.join(map(str, rows.columns))})"
            )
        rows = rows.set_axis(names, axis=1)
    if not isinstance(rows.index, pd.DatetimeIndex):
        raise SQLError("INSERT INTO needs an Epoch time column in the SELECT result")
    if len(rows):
        write_mkts(rows, p.target, backend=backend)
    return _now_row({"Rows Written": np.array([len(rows)], np.int64)})
