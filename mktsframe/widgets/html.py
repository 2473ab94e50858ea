"""HTML fragments the widgets show: the rows table and a one-line error (shared by every widget)."""

from __future__ import annotations

from html import escape

import pandas as pd

__all__ = ["error_html", "table_html"]

#: Rows a table shows at most (newest first); the frame behind it may hold more.
TABLE_ROWS = 50


def table_html(df: pd.DataFrame) -> str:
    """The newest rows first, as an HTML table (at most :data:`TABLE_ROWS`, pandas' ellipsis between)."""
    return df.iloc[::-1].to_html(max_rows=TABLE_ROWS, classes="mkts-table", border=0)


def error_html(exc: BaseException) -> str:
    """``ErrorClass: message`` in red."""
    return f'<span style="color:#c62828">{escape(type(exc).__name__)}: {escape(str(exc))}</span>'
