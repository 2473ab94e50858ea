"""Result tables as MarketStore's ``connect`` shell prints them, and as CSV for ``\\o FILE``
(our re-loadable CSV, or with ``\\o FILE show`` MarketStore's own ``\\o`` layout).

MarketStore's layout: a rule of ``=`` per column (29 wide for ``Epoch``, 10 for the others, each
followed by two spaces), the column names (``Epoch`` right-aligned, others left-aligned), another
rule, one line per row, and a closing rule. ``Epoch`` is printed like Go's ``time.Time.String()``
in UTC (``2017-01-03 00:00:00 +0000 UTC``). Differences, on purpose: a column wider than 10
characters widens its rule instead of spilling, float64 values keep their full precision
(MarketStore rounded them to float32), and text/bool columns are shown (MarketStore skipped them).
"""

from __future__ import annotations

import csv
from typing import IO

import numpy as np
import pandas as pd

__all__ = ["format_table", "go_time", "write_csv", "write_show_csv"]

EPOCH_WIDTH = 29
MIN_WIDTH = 10


def go_time(ns: int) -> str:
    """Go's ``time.Time.String()`` of a UTC instant: ``2006-01-02 15:04:05[.fraction] +0000 UTC``."""
    ts = pd.Timestamp(int(ns), unit="ns")
    frac = int(ns) % 1_000_000_000
    text = ts.strftime("%Y-%m-%d %H:%M:%S")
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return f"{text} +0000 UTC"


def _cell(value: object, kind: str) -> str:
    if kind == "f":
        v = float(value)  # type: ignore[arg-type]
        if np.isnan(v):
            return "NaN"
        if np.isinf(v):
            return "+Inf" if v > 0 else "-Inf"
        text = np.format_float_positional(value, unique=True, trim="-")  # type: ignore[arg-type]
        return text
    if kind == "b":
        return "true" if value else "false"
    return str(value)


def _columns(df: pd.DataFrame) -> list[tuple[str, list[str]]]:
    out = []
    for i, name in enumerate(df.columns):
        values = df.iloc[:, i].to_numpy()
        kind = values.dtype.kind if isinstance(values.dtype, np.dtype) else "O"
        if kind == "M":
            cells = [go_time(v) for v in values.astype("M8[ns]").view(np.int64)]
        else:
            cells = ["" if v is None or v is pd.NA else _cell(v, kind) for v in values]
        out.append((str(name), cells))
    return out


def format_table(df: pd.DataFrame) -> str:
    """The frame as MarketStore prints query results (``Epoch`` first when the frame has it)."""
    columns = _columns(df)
    has_epoch = isinstance(df.index, pd.DatetimeIndex)
    if has_epoch:
        columns.insert(0, ("Epoch", [go_time(v) for v in df.index.as_unit("ns").asi8]))
    widths = []
    for j, (name, cells) in enumerate(columns):
        floor = EPOCH_WIDTH if (has_epoch and j == 0) else MIN_WIDTH
        widths.append(max([floor, len(name), *(len(c) for c in cells)]))
    rule = "".join("=" * w + "  " for w in widths)
    lines = [rule]
    head = []
    for j, ((name, _), w) in enumerate(zip(columns, widths, strict=True)):
        head.append(name.rjust(w) if (has_epoch and j == 0) else name.ljust(w))
    lines.append("  ".join(head) + "  ")
    lines.append(rule)
    for r in range(len(df)):
        cells = [cells[r] for _, cells in columns]
        lines.append(
            "  ".join(c.rjust(w) if (has_epoch and j == 0) else c.ljust(w)
                      for j, (c, w) in enumerate(zip(cells, widths, strict=True))) + "  "
        )  # fmt: skip
    lines.append(rule)
    return "\n".join(lines)


def write_csv(df: pd.DataFrame, out: IO[str], *, header: bool) -> None:
    """Rows as CSV that ``\\load`` reads back: ``Epoch`` as ``YYYY-MM-DD HH:MM:SS[.f]`` UTC first."""
    writer = csv.writer(out, lineterminator="\n")
    columns = _columns(df)
    has_epoch = isinstance(df.index, pd.DatetimeIndex)
    if header:
        writer.writerow((["Epoch"] if has_epoch else []) + [n for n, _ in columns])
    epochs = df.index.tz_convert("UTC").tz_localize(None) if has_epoch else None
    for r in range(len(df)):
        row = [str(epochs[r])] if epochs is not None else []
        row += [cells[r] for _, cells in columns]
        writer.writerow(row)


def write_show_csv(df: pd.DataFrame, out: IO[str], *, ticks: bool) -> None:
    """Rows in MarketStore's ``\\o`` layout, for scripts that diff its output: no header, ``Epoch``
    as Go prints it (``2016-12-30 21:37:57 +0000 UTC``, whole seconds), then the columns, and for
    tick buckets (``ticks``) a trailing ``Nanoseconds`` field: the sub-second part of each time."""
    writer = csv.writer(out, lineterminator="\n")
    columns = _columns(df)
    ns = df.index.as_unit("ns").asi8 if isinstance(df.index, pd.DatetimeIndex) else None
    for r in range(len(df)):
        row = []
        if ns is not None:
            secs, nanos = divmod(int(ns[r]), 1_000_000_000)
            row.append(go_time(secs * 1_000_000_000 if ticks else int(ns[r])))
        row += [cells[r] for _, cells in columns]
        if ns is not None and ticks:
            row.append(str(nanos))
        writer.writerow(row)
