"""Self-contained SVG charts for the widgets: no JavaScript, no CDN, works offline and headless.

Prices run bottom (low) to top (high); time runs left to right in row order (gaps in trading
are not drawn as empty space, as in most candle charts).
"""

from __future__ import annotations

from html import escape

import numpy as np
import pandas as pd

__all__ = ["candles_svg", "chart_svg", "line_svg"]

OHLC = ("Open", "High", "Low", "Close")

WIDTH, HEIGHT, PAD = 720, 260, 24
UP, DOWN, LINE = "#26a69a", "#ef5350", "#1f77b4"


def _scale(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    span = hi - lo if hi > lo else 1.0
    return HEIGHT - PAD - (values - lo) / span * (HEIGHT - 2 * PAD)


def _frame(body: str, title: str, lo: float, hi: float) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img"><title>{escape(title)}</title>'
        f'<text x="4" y="14" font-size="11">{hi:.6g}</text>'
        f'<text x="4" y="{HEIGHT - 6}" font-size="11">{lo:.6g}</text>{body}</svg>'
    )


def _empty(title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="40"><title>{escape(title)}</title>'
        '<text x="4" y="24" font-size="12">no bars in this range</text></svg>'
    )


def candles_svg(df: pd.DataFrame, title: str = "") -> str:
    """One candle per row of a frame with ``Open``/``High``/``Low``/``Close`` columns."""
    if df.empty:
        return _empty(title)
    o, h, lo_, c = (df[k].to_numpy(dtype="f8") for k in ("Open", "High", "Low", "Close"))
    lo, hi = float(np.nanmin(lo_)), float(np.nanmax(h))
    n = len(df)
    step = (WIDTH - 2 * PAD) / n
    x = PAD + step * (np.arange(n) + 0.5)
    yo, yh, yl, yc = (_scale(v, lo, hi) for v in (o, h, lo_, c))
    w = max(step * 0.7, 1.0)
    parts = []
    for i in range(n):
        colour = UP if c[i] >= o[i] else DOWN
        top, bottom = min(yo[i], yc[i]), max(yo[i], yc[i])
        parts.append(
            f'<g class="candle" fill="{colour}" stroke="{colour}">'
            f'<line x1="{x[i]:.1f}" x2="{x[i]:.1f}" y1="{yh[i]:.1f}" y2="{yl[i]:.1f}"/>'
            f'<rect x="{x[i] - w / 2:.1f}" y="{top:.1f}" width="{w:.1f}" height="{max(bottom - top, 1):.1f}"/></g>'
        )
    return _frame("".join(parts), title, lo, hi)


def line_svg(series: pd.Series, title: str = "") -> str:
    """A polyline through a numeric series (NaNs break nothing: they are skipped)."""
    values = series.to_numpy(dtype="f8")
    ok = np.isfinite(values)
    if not ok.any():
        return _empty(title)
    lo, hi = float(values[ok].min()), float(values[ok].max())
    n = len(values)
    x = PAD + (WIDTH - 2 * PAD) * (np.arange(n) / max(n - 1, 1))
    y = _scale(values, lo, hi)
    points = " ".join(f"{x[i]:.1f},{y[i]:.1f}" for i in np.flatnonzero(ok))
    body = f'<polyline class="line" fill="none" stroke="{LINE}" stroke-width="1.5" points="{points}"/>'
    return _frame(body, title, lo, hi)


def chart_svg(df: pd.DataFrame, title: str = "", kind: str = "candles") -> str:
    """The widgets' chart of a frame: candles when ``kind`` is ``"candles"`` and the frame has
    Open/High/Low/Close, else a line of ``Close`` (or the first numeric column); ``""`` when no
    column is numeric."""
    if kind == "candles" and all(c in df.columns for c in OHLC):
        return candles_svg(df, title)
    numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])]
    column = "Close" if "Close" in numeric else (numeric[0] if numeric else None)
    if column is None:
        return ""
    return line_svg(df[column], f"{title} ({column})")
