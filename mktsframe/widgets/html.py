"""HTML the widgets show: the rows table (pandas' own ``Styler``) and a one-line error."""

from __future__ import annotations

from html import escape

import ipywidgets as widgets
import numpy as np
import pandas as pd

__all__ = ["TABLE_CLASSES", "error_html", "table_html", "table_widget"]

#: Rows a table shows at most (newest first); the frame behind it may hold more.
TABLE_ROWS = 50
#: CSS classes of the widgets holding a table: JupyterLab's own rendered-output style (theme
#: colours, right-aligned cells under right-aligned headers) plus ours.
TABLE_CLASSES = ("jp-RenderedHTMLCommon", "mkts-table")

# One header row (the time is a column, not an index with its name on a second header row), every
# cell right-aligned with tabular digits, so each header sits over its column in any front end.
_STYLES = [
    {"selector": "", "props": "border-collapse:collapse; font-variant-numeric:tabular-nums; font-size:12px; margin:0"},
    {"selector": "th, td", "props": "text-align: right; padding: 2px 8px; white-space: nowrap;"},
    {"selector": "caption", "props": "caption-side: top; text-align: left; opacity: 0.75;"},
]


def table_html(df: pd.DataFrame) -> str:
    """The newest rows first as an HTML table (at most :data:`TABLE_ROWS`), by ``pandas.io.formats.style.Styler``.

    Times are shown in UTC to the second (to the nanosecond when a row has a fraction).
    """
    rows = df.iloc[::-1].iloc[:TABLE_ROWS]
    if isinstance(rows.index, pd.DatetimeIndex) and rows.index.tz is not None:
        rows = rows.tz_convert("UTC")
    flat = rows.reset_index()
    time_col = flat.columns[0] if isinstance(df.index, pd.DatetimeIndex) else None
    styler = flat.style.hide(axis="index").set_table_styles(_STYLES)
    for col in flat.columns:
        if pd.api.types.is_float_dtype(flat[col]):
            styler = styler.format(precision=decimals(flat[col].to_numpy()), subset=[col])
    if time_col is not None:
        fine = bool((rows.index.as_unit("ns").asi8 % 1_000_000_000).any()) if len(rows) else False
        pattern = "%Y-%m-%d %H:%M:%S.%f" if fine else "%Y-%m-%d %H:%M:%S"
        styler = styler.format(lambda t: f"{t:{pattern}}", subset=[time_col])  # (a dict would reset the others)
        label = f"{df.index.name or 'Epoch'} (UTC)"  # an unnamed index is the time, as reads name it
        styler = styler.relabel_index([label, *map(str, flat.columns[1:])], axis="columns")
    if len(df) > TABLE_ROWS:
        styler = styler.set_caption(f"newest {TABLE_ROWS} of {len(df):,} rows")
    return styler.to_html()


def decimals(values: np.ndarray, most: int = 6) -> int:
    """The fewest decimals (up to ``most``) that show every value as stored: a volume of whole
    numbers shows ``447``, a price ``101.125``, a float32 price ``73.48865`` (the digits float32 holds)."""
    v = values[np.isfinite(values)].astype("f8")
    tol = 4 * np.finfo(values.dtype).eps * np.maximum(np.abs(v), 1.0)
    for d in range(most):
        if (np.abs(np.round(v, d) - v) <= tol).all():
            return d
    return most


def table_widget() -> widgets.HTML:
    """The widget a :func:`table_html` goes in: JupyterLab's table style, scrolling past 320 px."""
    table = widgets.HTML(layout=widgets.Layout(max_height="320px", overflow="auto"))
    for c in TABLE_CLASSES:
        table.add_class(c)
    return table


def error_html(exc: BaseException) -> str:
    """``ErrorClass: message`` in red."""
    return f'<span style="color:#c62828">{escape(type(exc).__name__)}: {escape(str(exc))}</span>'
