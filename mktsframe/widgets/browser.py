"""``SymbolBrowser``: pick a bucket and a date range, see the bars as a table and a chart.

Works with any backend (a local root or a server URL), since it only calls the
:class:`~mktsframe.backend.base.Backend` protocol through :func:`mktsframe.read_mkts`. The chart
is :class:`~mktsframe.widgets.chart.CandleChart` (candles when the bucket has
Open/High/Low/Close, else a line; volume below; zoom, pan, hover); the table is pandas' own HTML.
"""

from __future__ import annotations

import datetime as dt
from html import escape
from typing import Any

import ipywidgets as widgets
import pandas as pd

from mktsframe.backend import Backend, connect
from mktsframe.errors import MktsError
from mktsframe.io.pandas import read_mkts
from mktsframe.widgets.chart import CandleChart
from mktsframe.widgets.html import error_html, table_html, table_widget

__all__ = ["SymbolBrowser"]


class SymbolBrowser(widgets.VBox):
    """A key picker, a date range, a table and a chart.

    Parameters
    ----------
    backend : Backend or str
        An open backend, or a data root / server URL to connect to.
    max_rows : int
        The most recent bars read from the range (the chart coarsens them to fit its width;
        the table shows the newest 50).

    Attributes
    ----------
    frame : pandas.DataFrame or None
        The bars currently shown (UTC ``DatetimeIndex``).
    """

    def __init__(self, backend: Backend | str, *, max_rows: int = 5000) -> None:
        self.backend = connect(backend) if isinstance(backend, str) else backend
        self.frame: pd.DataFrame | None = None
        self.key = widgets.Dropdown(options=self.backend.list_keys(), description="Key")
        self.start = widgets.DatePicker(description="From")
        self.end = widgets.DatePicker(description="To (incl.)")
        self.chart_kind = widgets.ToggleButtons(options=["candles", "line"], value="candles")
        self.max_rows = widgets.BoundedIntText(value=max_rows, min=1, max=100_000, description="Rows")
        self.status = widgets.HTML()
        self.chart = CandleChart()
        self.table = table_widget()
        self._quiet = False
        super().__init__(
            [
                widgets.HBox([self.key, self.max_rows]),
                widgets.HBox([self.start, self.end, self.chart_kind]),
                self.status,
                self.chart,
                self.table,
            ]
        )
        self.add_class("mkts-browser")
        self.key.observe(self._key_changed, names="value")
        self.chart_kind.observe(self._kind_changed, names="value")
        for w in (self.start, self.end, self.max_rows):
            w.observe(lambda _change: self.refresh(), names="value")
        if self.key.value is not None:
            self._key_changed({"new": self.key.value})
        else:
            self.status.value = "<i>no buckets yet</i>"

    def refresh_keys(self) -> None:
        """Reload the key list (buckets written since the browser was made)."""
        current = self.key.value
        self.key.options = self.backend.list_keys()
        if current in self.key.options:
            self.key.value = current

    def _key_changed(self, change: dict[str, Any]) -> None:
        """A new key shows its last day of data."""
        try:
            info = self.backend.info(change["new"])
        except (MktsError, ValueError, OSError) as exc:
            self._error(exc)
            return
        self._quiet = True
        try:
            if info.last is not None:
                last = pd.Timestamp(info.last, tz="UTC").date()
                self.start.value, self.end.value = last, last
        finally:
            self._quiet = False
        self.refresh()

    def _kind_changed(self, change: dict[str, Any]) -> None:
        """Candles or line: the same rows, drawn again (no new query)."""
        if self.frame is not None:
            self.chart.show(self.frame, kind=change["new"])

    def refresh(self) -> None:
        """Query the selected key and range, then redraw the table and the chart."""
        if self._quiet or self.key.value is None:
            return
        start, end = self.start.value, self.end.value
        if start is not None and end is not None and end < start:
            self._error(ValueError(f"the range ends ({end}) before it starts ({start})"))
            return
        try:
            df = read_mkts(
                self.key.value,
                start=_day_start(start),
                end=_day_end(end),
                limit=int(self.max_rows.value),
                backend=self.backend,
            )
        except (MktsError, ValueError, OSError) as exc:
            self._error(exc)
            return
        self.frame = df
        title = f"{self.key.value}: {len(df)} bars"
        if len(df):
            title += f" from {df.index[0]:%Y-%m-%d %H:%M:%S} to {df.index[-1]:%Y-%m-%d %H:%M:%S} UTC"
        self.status.value = escape(title)
        self.chart.show(df, self.key.value, self.chart_kind.value)
        self.table.value = table_html(df)

    def _error(self, exc: Exception) -> None:
        self.frame = None
        self.chart.show(pd.DataFrame(index=pd.DatetimeIndex([], tz="UTC")), "")
        self.table.value = ""
        self.status.value = error_html(exc)


def _day_start(day: dt.date | None) -> pd.Timestamp | None:
    return None if day is None else pd.Timestamp(day, tz="UTC")


def _day_end(day: dt.date | None) -> pd.Timestamp | None:
    """The last nanosecond of ``day`` (UTC): the picker's "To" date is inclusive."""
    return None if day is None else pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=1) - pd.Timedelta(1, "ns")
