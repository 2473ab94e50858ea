"""``CandleChart``: the widgets' interactive price chart, on plotly's ``FigureWidget``.

Why plotly: its ``FigureWidget`` is an ipywidget (an anywidget since plotly 6) whose JavaScript
ships inside the Python wheel, so it renders in JupyterLab 4 / Notebook 7 / VS Code with
ipywidgets 8, offline, with no front-end extension to build; candlesticks, dated axes, unified
hover, zoom/pan and linked subplots are built in, and it is among the most used and maintained
plotting libraries. bqplot (also an ipywidget) has OHLC marks but a far smaller user base,
fewer releases and no built-in hover read-out of all four prices.

What it draws: candles (or a line of ``Close``) on a dated UTC time axis, volume bars in a pane
below (when the frame has a ``Volume``/``Size``/``Qty`` column), hover values for every pane,
zoom (drag, scroll, double-click to reset) and pan. Colours follow the front end's theme: the
backgrounds are transparent and the labels take JupyterLab's ``--jp-ui-font-color1`` (a neutral
grey elsewhere), so the chart reads on light and dark themes alike. The chart fills the output
area's width (see :class:`_Fit`).

Downsampling: a browser cannot show more candles than the plot has pixels, so when the range on
screen holds more than ``max_candles`` rows the chart draws candles of a coarser timeframe
(the smallest of :data:`LADDER` that fits), made by :func:`mktsframe.functions.candles.candles`
(Open first, High max, Low min, Close last, Volume summed, windows aligned in UTC). Zooming in
re-draws the visible range at a finer timeframe, down to the rows themselves; the title says
which timeframe is shown. The full frame stays on the Python side.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import anywidget
import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import traitlets
from plotly.subplots import make_subplots

from mktsframe.backend.base import Batch
from mktsframe.functions.candles import TICK_PRICE_NAMES, TICK_SIZE_NAMES, aggregate, candles
from mktsframe.functions.windows import parse_window
from mktsframe.io.frames import frame_to_batch

__all__ = ["KINDS", "LADDER", "CandleChart", "pick_timeframe"]

#: Candle timeframes the chart coarsens to, finest first.
LADDER = (
    "1Sec", "2Sec", "5Sec", "10Sec", "15Sec", "30Sec", "1Min", "2Min", "5Min", "10Min", "15Min", "30Min",
    "1H", "2H", "4H", "6H", "12H", "1D", "1W", "1M", "1Y",
)  # fmt: skip
_SECONDS = {"W": 7 * 86_400, "M": 31 * 86_400, "Y": 366 * 86_400}  # calendar windows, at their longest
OHLC = ("Open", "High", "Low", "Close")
KINDS = ("candles", "line")
UP, DOWN, LINE = "#26a69a", "#ef5350", "#1f77b4"
NS = 1_000_000_000


class _Fit(anywidget.AnyWidget):
    """Theme-aware text and a chart that fills its output area (no Python-side state).

    CSS: plotly writes its text colours inline; a stylesheet rule with ``!important`` wins, so
    labels take JupyterLab's theme colour. JS: plotly.js sizes a plot when it is drawn, which in
    JupyterLab is before the output is attached (zero width, so plotly's default 700 px); its
    ``responsive`` option re-sizes on window resizes only. This widget (as wide as the chart)
    compares its width with the plot's whenever either may have changed (a ``ResizeObserver`` on
    itself, a ``MutationObserver`` on the chart box) and sends plotly a resize when they differ:
    at attach, when the user resizes the panel, and when plotly draws after our attach.
    """

    _css = traitlets.Unicode("""
.mkts-chart .main-svg g[class$="tick"] text, .mkts-chart .main-svg .gtitle,
.mkts-chart .main-svg g[class^="g-x"][class$="title"] text, .mkts-chart .main-svg g[class^="g-y"][class$="title"] text {
  fill: var(--jp-ui-font-color1, var(--vscode-editor-foreground, #777)) !important;
}
""").tag(sync=True)
    _esm = traitlets.Unicode("""
function render({ el }) {
  if (!window.ResizeObserver) return;
  // Re-size when the plot's width is off this widget's: at attach, when the panel is resized, and
  // when plotly draws after our attach (detached, so at its 700 px default). Once per pair of
  // widths, so a plot that cannot fit never loops.
  const tried = new Set();
  let queued = false, mo = null;
  const check = () => {
    queued = false;
    const root = el.closest(".mkts-chart");  // null until the box is attached
    if (root && !mo) { mo = new MutationObserver(soon); mo.observe(root, { childList: true, subtree: true }); }
    const w = Math.round(el.getBoundingClientRect().width);
    const svg = root?.querySelector(".main-svg");
    if (!(w > 0 && svg)) return;
    const s = Math.round(svg.getBoundingClientRect().width);
    const pair = w + "x" + s;
    if (Math.abs(s - w) > 2 && !tried.has(pair)) { tried.add(pair); window.dispatchEvent(new Event("resize")); }
  };
  const soon = () => { if (!queued) { queued = true; requestAnimationFrame(check); } };
  const ro = new ResizeObserver(soon);
  ro.observe(el);
  return () => { ro.disconnect(); mo?.disconnect(); };
}
export default { render };
""").tag(sync=True)


def _window_seconds(timeframe: str) -> int:
    w = parse_window(timeframe)
    return w.seconds if w.seconds else _SECONDS[w.unit]


def pick_timeframe(span_ns: int, max_candles: int) -> str:
    """The finest timeframe of :data:`LADDER` that cuts ``span_ns`` into at most ``max_candles``."""
    for tf in LADDER:
        if span_ns / (_window_seconds(tf) * NS) <= max_candles:
            return tf
    return LADDER[-1]


class CandleChart(widgets.VBox):
    """Candles (or a line) over a volume pane, interactive, downsampled to the plot's width.

    Parameters
    ----------
    df : pandas.DataFrame, optional
        Rows on a ``DatetimeIndex`` (zone-less means UTC): bars with Open/High/Low/Close, or any
        numeric columns (ticks with ``Price``, a ``Close`` series, ...).
    title : str
        Shown above the chart (the timeframe drawn is appended when the rows are coarsened).
    kind : {"candles", "line"}
        Candles need Open/High/Low/Close (or coarsened ticks); otherwise a line is drawn.
    max_candles : int
        The most candles (or line points) drawn for the visible range: about the plot's width in
        pixels divided by 1.5, so a candle stays visible.
    height : int
        Pixels.

    Attributes
    ----------
    figure : plotly.graph_objects.FigureWidget
        The chart itself (traces: candles, line, volume).
    timeframe : str or None
        The candle timeframe drawn, or ``None`` when the rows themselves are drawn.
    shown : pandas.DataFrame
        The rows drawn (after coarsening), for the visible range and one range either side.
    """

    def __init__(
        self,
        df: pd.DataFrame | None = None,
        *,
        title: str = "",
        kind: str = "candles",
        max_candles: int = 600,
        height: int = 460,
    ) -> None:
        if max_candles < 2:
            raise ValueError(f"max_candles must be at least 2, got {max_candles}")
        self.max_candles = int(max_candles)
        self.kind = _kind(kind)
        self.title = title
        self.timeframe: str | None = None
        self.shown = pd.DataFrame()
        self._batch = Batch(np.empty(0, np.int64))
        self._zoom: tuple[int, int] | None = None  # the user's x range (ns), None = whole frame
        self._drawing: int | None = None  # the thread drawing now (the layout changes it makes are its own)
        # A live view draws from its own thread while the user's zoom arrives on the kernel's.
        self._lock = threading.RLock()
        fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.76, 0.24], vertical_spacing=0.03)
        fig.add_trace(go.Candlestick(name="price", increasing_line_color=UP, decreasing_line_color=DOWN,
                                     increasing_fillcolor=UP, decreasing_fillcolor=DOWN), row=1, col=1)
        fig.add_trace(go.Scatter(name="price", mode="lines", line={"color": LINE, "width": 1.5}, visible=False),
                      row=1, col=1)  # fmt: skip
        fig.add_trace(go.Bar(name="volume", marker_line_width=0), row=2, col=1)
        grid = "rgba(128,128,128,0.25)"
        fig.update_layout(
            height=height, autosize=True, margin={"l": 60, "r": 20, "t": 40, "b": 30}, showlegend=False,
            paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)", font={"color": "#777"},
            hovermode="x unified", dragmode="zoom", bargap=0.1,
            modebar={"bgcolor": "rgba(0,0,0,0)", "color": "rgba(128,128,128,0.7)", "activecolor": LINE},
            hoverlabel={"bgcolor": "rgba(40,40,40,0.92)", "font": {"color": "#f5f5f5"}},
            title={"text": "", "x": 0.01, "font": {"size": 13}},
        )  # fmt: skip
        fig.update_xaxes(type="date", gridcolor=grid, linecolor=grid, rangeslider_visible=False, showspikes=True,
                         spikemode="across", spikethickness=1, spikecolor="rgba(128,128,128,0.6)")  # fmt: skip
        fig.update_xaxes(title_text="UTC", title_standoff=4, row=2, col=1)
        fig.update_yaxes(gridcolor=grid, linecolor=grid, zeroline=False)
        fig.update_yaxes(title_text="volume", row=2, col=1)
        self.figure = go.FigureWidget(fig)
        self.figure._config = {"scrollZoom": True, "displaylogo": False, "responsive": True}
        self.figure.layout.on_change(self._relayout, "xaxis.range", "xaxis.autorange")
        super().__init__([_Fit(), self.figure])
        self.add_class("mkts-chart")
        if df is not None:
            self.show(df, title)

    # -- data ---------------------------------------------------------------------------------------
    def show(self, df: pd.DataFrame, title: str | None = None, kind: str | None = None) -> None:
        """Draw ``df`` (replacing what is shown); a range the user zoomed to is kept."""
        if not isinstance(df.index, pd.DatetimeIndex):
            raise TypeError(f"the chart needs a DatetimeIndex, got {type(df.index).__name__}")
        if not df.index.is_monotonic_increasing:
            df = df.sort_index(kind="stable")  # equal times (ticks) keep their order
        if "Symbol" in df.columns and df["Symbol"].nunique() > 1:
            raise ValueError("the frame holds several symbols: chart one, e.g. df[df.Symbol == 'BTC']")
        numeric = df[[c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and not
                      pd.api.types.is_bool_dtype(df[c])]]  # fmt: skip
        if kind is not None:
            self.kind = _kind(kind)
        if title is not None:
            self.title = title
        self._batch = frame_to_batch(numeric) if len(numeric.columns) else Batch(frame_to_batch(df[[]]).index)
        self._draw()

    def _relayout(self, layout: Any, xrange: Any, autorange: Any) -> None:
        """The user zoomed, panned or reset (plotly.js reports the x range it shows)."""
        if self._drawing == threading.get_ident():
            return
        if autorange or xrange is None:
            zoom = None
        else:
            lo, hi = (pd.Timestamp(v).tz_localize(None).value for v in xrange)
            zoom = (lo, hi)
        if zoom != self._zoom:
            self._zoom = zoom
            self._draw()

    # -- drawing ------------------------------------------------------------------------------------
    def _columns(self) -> tuple[bool, str | None, str | None]:
        """(has OHLC bars, the line's column, the volume column), by MarketStore's names."""
        cols = self._batch.columns
        lower = {c.lower(): c for c in cols}
        bars = all(c.lower() in lower for c in OHLC)
        value = lower.get("close") or next((lower[n] for n in TICK_PRICE_NAMES if n in lower), None)
        if value is None:
            value = next(iter(cols), None)
        volume = next((lower[n] for n in TICK_SIZE_NAMES if n in lower and lower[n] != value), None)
        return bars, value, volume

    def _rows(self) -> tuple[Batch, str | None]:
        """The rows to draw: the visible range and one range either side, coarsened if too many."""
        b = self._batch
        index = b.index
        if self._zoom is None or not len(index):
            lo, hi, j0, j1 = (int(index[0]), int(index[-1]), 0, len(index)) if len(index) else (0, 0, 0, 0)
        else:
            lo, hi = self._zoom
            span = hi - lo
            j0, j1 = int(np.searchsorted(index, lo - span)), int(np.searchsorted(index, hi + span, "right"))
        visible = int(np.searchsorted(index, hi, "right") - np.searchsorted(index, lo)) if len(index) else 0
        part = b if (j0, j1) == (0, len(index)) else Batch(index[j0:j1], {c: v[j0:j1] for c, v in b.columns.items()},
                                                           b.variable_length)  # fmt: skip
        if visible <= self.max_candles:
            return part, None
        tf = pick_timeframe(hi - lo, self.max_candles)
        bars, value, volume = self._columns()
        if bars:
            return candles(part, tf), tf
        specs: list[tuple[str, np.ndarray, Any, Any]] = []
        if value is not None:
            v = np.asarray(part.columns[value], dtype="f8")
            specs += [("Open", v, "first", None), ("High", v, "max", None), ("Low", v, "min", None),
                      ("Close", v, "last", None)]  # fmt: skip
        if volume is not None:
            specs.append(("Volume", np.asarray(part.columns[volume], dtype="f8"), "sum", None))
        return aggregate(part.index, tf, specs), tf

    def _draw(self) -> None:
        with self._lock:
            self._draw_locked()

    def _draw_locked(self) -> None:
        rows, tf = self._rows()
        self.timeframe = tf
        bars, value, volume = self._columns()
        if tf is not None and value is not None:  # coarsened rows are named as bars
            bars, value, volume = True, "Close", ("Volume" if volume is not None else None)
        # Zone-less UTC strings to the millisecond: plotly.js has no time zones, and the widget sends
        # datetime64[ns] arrays as 9-digit fractions it cannot parse (every x became NaN in Chromium).
        x = np.datetime_as_string(np.asarray(rows.index, dtype="datetime64[ns]").astype("datetime64[ms]"))
        cols = {c: np.asarray(v) for c, v in rows.columns.items()}
        self.shown = pd.DataFrame(cols, index=pd.DatetimeIndex(pd.to_datetime(rows.index, unit="ns", utc=True),
                                                              name="Epoch"))  # fmt: skip
        candles_on = bars and self.kind == "candles"
        title = self.title + (f" · {tf} candles" if tf else "")
        if not len(rows):
            title += " · no rows in this range"
        fig = self.figure
        self._drawing = threading.get_ident()
        try:
            with fig.batch_update():
                c, line, vol = fig.data
                c.visible, line.visible = candles_on, not candles_on
                if candles_on:
                    c.x, c.open, c.high, c.low, c.close = x, *(cols[k] for k in _names(cols, OHLC))
                    line.x, line.y = [], []
                else:
                    c.x, c.open, c.high, c.low, c.close = [], [], [], [], []
                    line.x, line.y = x, (cols[value] if value is not None else [])
                    line.name = value or ""
                if volume is not None:
                    v = cols[volume]
                    up = _up(cols, bars, value)
                    vol.x, vol.y = x, v
                    vol.marker.color = np.where(up, UP, DOWN) if up is not None else LINE
                    vol.visible = True
                    fig.layout.yaxis.domain, fig.layout.yaxis2.domain = (0.27, 1.0), (0.0, 0.23)
                else:
                    vol.x, vol.y, vol.visible = [], [], False
                    fig.layout.yaxis.domain, fig.layout.yaxis2.domain = (0.04, 1.0), (0.0, 0.01)
                fig.layout.yaxis2.visible = volume is not None
                fig.layout.title.text = title
        finally:
            self._drawing = None


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return kind


def _names(cols: Mapping[str, np.ndarray], names: tuple[str, ...]) -> list[str]:
    lower = {c.lower(): c for c in cols}
    return [lower[n.lower()] for n in names]


def _up(cols: Mapping[str, np.ndarray], bars: bool, value: str | None) -> np.ndarray | None:
    """Whether each row closed up (volume bars take the candle's colour)."""
    if bars:
        o, c = (cols[k] for k in _names(cols, ("Open", "Close")))
        return np.asarray(c >= o)
    if value is None:
        return None
    v = np.asarray(cols[value], dtype="f8")
    return np.concatenate([[True], v[1:] >= v[:-1]]) if len(v) else np.empty(0, bool)
