"""``LiveView``: a table and a chart that follow a subscription as writes are committed.

Works with any backend (a local root or a server URL): it only calls ``backend.subscribe`` (see
:mod:`mktsframe.streaming`). The chart and table are the symbol browser's
(:class:`~mktsframe.widgets.chart.CandleChart`, :func:`~mktsframe.widgets.html.table_html`):
a zoom the user chose is kept across redraws.

Threads: one daemon thread per started view drains the subscription (all pending messages at
once), updates the kept rows and redraws at most every ``interval`` seconds. Only that thread
changes the kept rows; the widgets' values and :attr:`LiveView.frame` are replaced whole, under
a lock, so a front end or another thread always sees one consistent redraw. A slow notebook never
slows writers: the subscription's queue is bounded (``drop_oldest``; the status line then says
how many rows were lost).
"""

from __future__ import annotations

import bisect
import threading
import time
from html import escape
from typing import Any

import ipywidgets as widgets
import pandas as pd

from mktsframe.backend import Backend, connect
from mktsframe.streaming import Subscription
from mktsframe.streaming.messages import NS, Message
from mktsframe.streaming.patterns import stream_list
from mktsframe.times import TimeLike, to_ns
from mktsframe.widgets.chart import CandleChart
from mktsframe.widgets.html import error_html, table_html, table_widget

__all__ = ["LiveView"]

#: Messages taken from the subscription before one redraw (bounds the work between redraws).
DRAIN_BATCH = 10_000


class KeptRows:
    """The newest ``max_rows`` rows of one bucket, in time order (owned by the view's thread).

    Fixed-interval buckets keep one row per timestamp (a re-written bar replaces the old one);
    tick buckets (messages with ``Nanoseconds``) keep every row, equal timestamps included.
    """

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self.times: list[int] = []  # ns UTC, ascending
        self.rows: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self.times)

    def add(self, data: dict[str, Any]) -> None:
        ticks = "Nanoseconds" in data
        t = int(data["Epoch"]) * NS + int(data.get("Nanoseconds", 0))
        row = {k: v for k, v in data.items() if k not in ("Epoch", "Nanoseconds")}
        times = self.times
        if not times or t > times[-1] or (ticks and t == times[-1]):
            times.append(t)
            self.rows.append(row)
        else:
            i = bisect.bisect_right(times, t) if ticks else bisect.bisect_left(times, t)
            if not ticks and i < len(times) and times[i] == t:
                self.rows[i] = row
            else:
                times.insert(i, t)
                self.rows.insert(i, row)
        if len(times) > self.max_rows:
            del times[: len(times) - self.max_rows], self.rows[: len(self.rows) - self.max_rows]

    def remove(self, start: int | None = None, end: int | None = None) -> None:
        """Forget the rows in ``[start, end]`` (ns, inclusive; ``None`` is open)."""
        lo = 0 if start is None else bisect.bisect_left(self.times, start)
        hi = len(self.times) if end is None else bisect.bisect_right(self.times, end)
        del self.times[lo:hi], self.rows[lo:hi]

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame on a UTC ``DatetimeIndex`` named ``Epoch`` (as reads return)."""
        index = pd.DatetimeIndex(pd.to_datetime(self.times, unit="ns", utc=True), name="Epoch")
        return pd.DataFrame.from_records(self.rows, index=index) if self.rows else pd.DataFrame(index=index)


class LiveView(widgets.VBox):
    """A bucket picker (the buckets heard so far), a table and a chart, updated live.

    Parameters
    ----------
    backend : Backend or str
        An open backend, or a data root / server URL to connect to.
    pattern : str or list of str
        Stream patterns to follow (``"BTC/1Min/*"``, ``"*/1Min/OHLCV"``; see ``subscribe``).
    since : time, optional
        Also show the rows stored at or after this time (replayed before live rows).
    max_rows : int
        Rows kept per bucket (the newest); the chart shows all of them, the table the newest 50.
    interval : float
        Seconds between two redraws at most (rows arriving meanwhile are drawn together).
    start : bool
        Subscribe now (else call :meth:`start`).

    Attributes
    ----------
    frame : pandas.DataFrame or None
        The rows shown for the selected bucket (``None`` before any row arrived).
    """

    def __init__(
        self,
        backend: Backend | str,
        pattern: str | list[str],
        *,
        since: TimeLike = None,
        max_rows: int = 500,
        interval: float = 0.25,
        start: bool = True,
    ) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        stream_list(pattern)  # a bad pattern fails here, before anything is opened
        self.backend = connect(backend) if isinstance(backend, str) else backend
        self.pattern = pattern
        self.max_rows = int(max_rows)
        self.interval = float(interval)
        self.frame: pd.DataFrame | None = None
        self.messages = 0
        """Row messages received so far (all buckets)."""
        self.dropped = 0
        """Rows the subscription lost because this view fell behind (see the status line)."""
        self._since = to_ns(since, name="since")
        self._kept: dict[str, KeptRows] = {}
        # Guards frame, the widget values and _kept across threads; re-entrant because setting a
        # widget value runs its observers (which may redraw) on the same thread.
        self._lock = threading.RLock()
        self._drawing: int | None = None  # the thread drawing now (its widget changes are its own)
        self._selected: str | None = None  # the bucket the user picked (or the first heard)
        self._sub: Subscription | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._dirty = False
        self.key = widgets.Dropdown(options=[], description="Key")
        self.chart_kind = widgets.ToggleButtons(options=["candles", "line"], value="candles")
        self.running = widgets.ToggleButton(value=False, description="Live", icon="play")
        self.status = widgets.HTML()
        self.chart = CandleChart()
        self.table = table_widget()
        super().__init__([widgets.HBox([self.key, self.chart_kind, self.running]), self.status, self.chart, self.table])
        self.add_class("mkts-live")
        self.key.observe(self._key_chosen, names="value")
        self.chart_kind.observe(lambda _change: self.redraw(), names="value")
        self.running.observe(self._toggled, names="value")
        if start:
            self.start()
        else:
            self._show_status()

    # -- start / stop -----------------------------------------------------------------------------
    @property
    def live(self) -> bool:
        """Whether the view is subscribed."""
        return self._sub is not None

    def start(self) -> None:
        """Subscribe (again). After a :meth:`stop`, the rows written meanwhile are replayed from
        storage first: from the oldest of the buckets' newest kept rows, which is re-read."""
        if self._sub is not None:
            return
        since = self._since
        with self._lock:
            lasts = [k.times[-1] for k in self._kept.values() if len(k)]
            if lasts:
                since = min(lasts)
                for kept in self._kept.values():  # the replay re-sends these with their latest values
                    kept.remove(since, None)
        try:
            self._sub = self.backend.subscribe(self.pattern, since=since, max_rows=max(10 * self.max_rows, 10_000))
        except Exception as exc:
            self._show_error(exc)
            raise
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(self._sub,), name="mkts-live-view", daemon=True)
        self._thread.start()
        self._set_running(True)
        self._show_status()

    def stop(self, timeout: float = 5.0) -> None:
        """Unsubscribe; the rows shown stay. Idempotent."""
        sub = getattr(self, "_sub", None)  # None too when __init__ failed (ipywidgets' __del__ closes)
        if sub is None:
            return
        self._sub = None
        self._stop.set()
        sub.close(timeout)
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)
        self._thread = None
        self._set_running(False)
        self._show_status()

    def close(self) -> None:
        """Stop and close the widgets."""
        self.stop()
        super().close()

    def _toggled(self, change: dict[str, Any]) -> None:
        if change["new"] and self._sub is None:
            self.start()
        elif not change["new"] and self._sub is not None:
            self.stop()

    def _set_running(self, on: bool) -> None:
        if self.running.value != on:
            self.running.value = on  # _toggled then sees the state it asks for and does nothing
        self.running.icon = "pause" if on else "play"

    # -- the subscription's thread ----------------------------------------------------------------
    def _run(self, sub: Subscription) -> None:
        last_draw = 0.0
        try:
            while not self._stop.is_set():
                msg = sub.get(timeout=self.interval if self._dirty else None)
                if msg is None and sub.closed:
                    break
                n = 0
                while msg is not None:
                    self._apply(msg)
                    n += 1
                    if n >= DRAIN_BATCH:
                        break
                    msg = sub.get(timeout=0)
                wait = last_draw + self.interval - time.monotonic()
                if self._dirty and (wait <= 0 or (msg is None and n == 0)):
                    self.redraw()
                    last_draw = time.monotonic()
        except Exception as exc:  # e.g. the server went away: say so, keep what is shown
            if not self._stop.is_set():
                self._sub = None
                sub.close()
                self._show_error(exc)

    def _apply(self, msg: Message) -> None:
        data = msg.get("data")
        with self._lock:
            if data is not None:
                kept = self._kept.get(msg["key"])
                if kept is None:
                    kept = self._kept[msg["key"]] = KeptRows(self.max_rows)
                kept.add(data)
                self.messages += 1
            elif msg.get("notice") == "dropped":
                self.dropped += int(msg.get("dropped", 0))
            elif msg.get("notice") == "deleted" and msg.get("bucket") in self._kept:
                self._kept[msg["bucket"]].remove(msg.get("start"), msg.get("end"))
            elif msg.get("notice") == "destroyed":
                self._kept.pop(msg.get("bucket", ""), None)
            else:
                return
            self._dirty = True

    # -- drawing ----------------------------------------------------------------------------------
    def redraw(self) -> None:
        """Redraw the table, the chart and the bucket list from the kept rows (thread-safe)."""
        with self._lock:
            if self._drawing == threading.get_ident():  # a widget change made by this redraw
                return
            self._drawing = threading.get_ident()
            try:
                self._draw()
            finally:
                self._drawing = None

    def _key_chosen(self, change: dict[str, Any]) -> None:
        if self._drawing != threading.get_ident():  # the user's choice, not a redraw's
            self._selected = change["new"]
            self.redraw()

    def _draw(self) -> None:
        self._dirty = False
        keys = sorted(self._kept)
        if list(self.key.options) != keys:
            self.key.options = keys  # (ipywidgets then selects the first)
        if self._selected not in keys:
            self._selected = keys[0] if keys else None
        key = self._selected
        if self.key.value != key:
            self.key.value = key
        if key is None:
            self.chart.show(KeptRows(1).frame(), "")
            self.table.value = ""
            self.frame = None
        else:
            df = self._kept[key].frame()
            title = f"{key}: last {len(df)} rows"
            if len(df):
                title += f" to {df.index[-1]:%Y-%m-%d %H:%M:%S} UTC"
            self.chart.show(df, title, self.chart_kind.value)
            self.table.value = table_html(df)
            self.frame = df  # last: whoever sees the new frame sees its table and chart too
        self._show_status()

    def _show_status(self) -> None:
        """``live · patterns · N rows received`` (and how many were dropped, if any)."""
        patterns = [self.pattern] if isinstance(self.pattern, str) else list(self.pattern)
        text = f"{'live' if self._sub is not None else 'stopped'} · {', '.join(patterns)} · "
        text += f"{self.messages:,} rows received"
        if self.dropped:
            text += f" · {self.dropped:,} dropped (the view fell behind)"
        with self._lock:
            self.status.value = escape(text)

    def _show_error(self, exc: BaseException) -> None:
        """The error in the status line; the view is stopped, the rows shown stay."""
        with self._lock:
            self.status.value = error_html(exc)
        self._set_running(False)
