"""``ondiskagg``: keep coarser buckets (5Min, 15Min, 1H, 1D…) up to date as bars or ticks arrive.

Configured as MarketStore's ``ondiskagg.so`` trigger (``mkts.yml``)::

    triggers:
      - module: ondiskagg.so          # or: ondiskagg
        on: "*/1Min/OHLCV"
        config:
          destinations: [5Min, 15Min, 1H, 1D]

For a write to ``SYM/1Min/GROUP`` it maintains ``SYM/5Min/GROUP``, ``SYM/15Min/GROUP``… with
Open = first, High = max, Low = min, Close = last and Volume = sum (types kept, other columns
dropped: :func:`mktsframe.functions.candles`, the one candle implementation). A tick source
(``Price``/``Size`` columns, e.g. ``*/1Sec/TRADE``) gives OHLCV bars in ``SYM/<dest>/OHLCV``
(``attribute_group`` in the config overrides the destination group).

**Correctness.** Every affected destination candle is *recomputed from the source* over whole
windows of the least common multiple of the destinations (at most a day), never patched
incrementally: late bars, overwritten bars and deletes all give the candle the source now
implies; a destination candle whose window lost all its source rows is deleted.

**Crash consistency** (a ``kill -9`` between the source write and the aggregate write is
repaired at the next :meth:`OnDiskAgg.start`):

* a journal (``<root>/.ondiskagg/<destinations>.journal``) gets a ``dirty`` line for every write
  or delete of a known source the moment it commits (a commit listener on the local engine, one
  ``write(2)`` — it survives the process being killed), and a ``done`` line once its candles are
  written; ``start`` recomputes every range still dirty;
* a kill after a source change is durable but before its ``dirty`` line is covered by the
  engine: such a change is always replayed from the write-ahead log at the next open
  (``LocalBackend.replayed_changes``), and ``start`` recomputes every replayed range;
* ``start`` also recomputes each destination's tail, from its last candle to the source's end;
* the first time a source key is seen, all of it is aggregated (so rows written before it was
  known — e.g. before a crash that preceded its first aggregation — are covered); with ``on``
  in the config, ``start`` does this for every matching bucket not yet aggregated, otherwise it
  happens at that bucket's next write.

The ``dirty`` lines are not ``fsync``'d one by one (a killed process loses nothing), but the
journal is ``fsync``'d before every checkpoint of the engine's write-ahead log (a
``before_checkpoint`` hook): a line a power cut loses belongs to a change after the last
checkpoint, which the engine replays and reports, so ``start`` recomputes it all the same.

Units: timestamps are int64 nanoseconds since the epoch, UTC; windows are aligned in UTC.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mktsframe.backend.base import Backend, Batch, capabilities
from mktsframe.changes import CommitEvent
from mktsframe.errors import BucketNotFoundError, InvalidKeyError, MktsError
from mktsframe.functions.candles import BAR_RULES, candles
from mktsframe.functions.windows import Window
from mktsframe.keys import TimeBucketKey, Timeframe, parse_key, parse_timeframe

__all__ = ["OnDiskAgg", "new_trigger"]

log = logging.getLogger("mktsframe.plugins.ondiskagg")

NS = 1_000_000_000
#: Journal size that triggers a rewrite keeping only the pending lines.
COMPACT_BYTES = 4 << 20


class ConfigError(MktsError, ValueError):
    """The trigger's ``config`` map is invalid."""


def new_trigger(config: Mapping[str, Any] | None) -> OnDiskAgg:
    """Entry point ``mktsframe.triggers: ondiskagg`` (MarketStore's ``NewTrigger``)."""
    return OnDiskAgg(dict(config or {}))


class OnDiskAgg:
    """The trigger. ``config``: ``destinations`` (required list of timeframes), optional
    ``attribute_group`` (destination group; default: the source's, ``OHLCV`` for ticks) and
    ``state_dir`` (journal directory; default ``<data root>/.ondiskagg``) and ``on`` (the
    trigger's key glob: lets :meth:`start` also aggregate matching buckets never seen before)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        dests = config.get("destinations")
        if isinstance(dests, str):
            dests = [d.strip() for d in dests.split(",") if d.strip()]
        if not isinstance(dests, list) or not dests:
            raise ConfigError("ondiskagg: config.destinations must be a non-empty list such as [5Min, 15Min, 1H, 1D]")
        try:
            self.destinations: list[Timeframe] = sorted({parse_timeframe(str(d)) for d in dests},
                                                        key=lambda t: t.seconds)  # fmt: skip
        except InvalidKeyError as exc:
            raise ConfigError(f"ondiskagg: bad destination: {exc}") from None
        if config.get("filter") not in (None, "", "none"):
            raise ConfigError(f"ondiskagg: filter {config.get('filter')!r} is not supported (no market calendars)")
        group = config.get("attribute_group")
        self.attribute_group: str | None = str(group) if group else None
        self.state_dir: Path | None = Path(config["state_dir"]) if config.get("state_dir") else None
        on = config.get("on")
        self.on: str | None = str(on) if on else None
        unit = math.lcm(*(t.seconds for t in self.destinations))  # divides a day: every timeframe does
        self._unit = Window(1, "s", unit)
        self._dest_seconds = {t.seconds for t in self.destinations}
        self._lock = threading.Lock()  # journal appends (commit listener) vs. compaction (fire/start)
        self._journal: Path | None = None
        self._fd: int | None = None
        self._known: set[str] = set()
        self._pending: dict[int, tuple[str, int | None, int | None]] = {}  # journaled, not yet fired
        self._unlisten: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"<ondiskagg {', '.join(t.name for t in self.destinations)}>"

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, backend: Backend) -> None:
        """Open the journal, repair what a crash left behind, and listen for commits."""
        state = self.state_dir or (Path(backend.root) / ".ondiskagg" if hasattr(backend, "root") else None)
        if state is None:
            log.warning("ondiskagg: no state_dir and the backend has no root; crash repair covers tails only")
        else:
            state.mkdir(parents=True, exist_ok=True)
            self._journal = state / ("_".join(t.name for t in self.destinations) + ".journal")
            pending, self._known = self._read_journal()
            for key, lo, hi in pending + self._replayed(backend):
                self._recompute_logged(backend, key, lo, hi)
            for key in sorted(self._known):
                self._repair_tail(backend, key)
            for key in self._unseen_sources(backend):
                self._remember(key)
                self._recompute_logged(backend, key, None, None)
            self._rewrite_journal([])  # sequence numbers restart with the engine: start afresh
            self._fd = os.open(self._journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        on_commit = backend.on_commit if capabilities(backend).commit_listeners else None  # type: ignore[attr-defined]
        if on_commit is not None and self._fd is not None:
            self._unlisten = on_commit(self._on_commit, before_checkpoint=self._sync_journal)

    def stop(self) -> None:
        """Stop listening and close the journal (pending lines stay for the next start)."""
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def fire(self, backend: Backend, events: Sequence[CommitEvent]) -> None:
        """Recompute the destination candles the ``events`` (in commit order) affect."""
        ranges: dict[str, list[tuple[int | None, int | None]]] = {}
        touched: dict[str, list[np.ndarray] | None] = {}  # written times; None once a delete is among them
        done: list[int] = []
        for ev in events:
            span = self._span(ev)
            if span is None:
                continue
            done.append(ev.seq)
            ranges.setdefault(ev.key, []).append(span)
            times = touched.setdefault(ev.key, [])
            if ev.op == "write" and ev.batch is not None and times is not None:
                times.append(np.asarray(ev.batch.index, np.int64))
            else:
                touched[ev.key] = None
        for key, spans in ranges.items():
            if key not in self._known:
                self._remember(key)
                self._recompute(backend, key, None, None)  # everything: rows may predate our knowing the key
                continue
            parts = touched.get(key)
            written = np.concatenate(parts) if parts else None
            for lo, hi in _merge(spans, self._unit):
                self._recompute(backend, key, lo, hi, written=written)
        done += self._recover_dropped(backend, done)
        self._append([f"done {seq}" for seq in done])
        self._maybe_compact()

    def _recover_dropped(self, backend: Backend, delivered: list[int]) -> list[int]:
        """Recompute changes the framework never delivered (its queue was full and dropped them).

        Events arrive in commit order, so a journaled change older than the newest delivered one
        will never come: it was dropped. Returns the sequence numbers it handled.
        """
        for seq in delivered:
            self._pending.pop(seq, None)
        newest = max(delivered, default=0)
        lost = sorted(seq for seq in list(self._pending) if seq < newest)
        if lost:
            log.warning("ondiskagg: %d change(s) were never delivered (queue overflow?); recomputing them", len(lost))
        for seq in lost:
            key, lo, hi = self._pending.pop(seq)
            self._recompute_logged(backend, key, lo, hi)
        return lost

    def _replayed(self, backend: Backend) -> list[tuple[str, int | None, int | None]]:
        """Known sources' ranges the engine replayed after a crash: changes that may have been
        acknowledged after the journal last heard of anything (a kill between the two)."""
        if not capabilities(backend).commit_listeners:
            return []
        replayed = backend.replayed_changes  # type: ignore[attr-defined]
        return [(key, lo, hi) for op, key, lo, hi in replayed()
                if op in ("write", "delete") and key in self._known and self._source(key) is not None]  # fmt: skip

    def _unseen_sources(self, backend: Backend) -> list[str]:
        """Stored keys matching ``on`` that were never aggregated (e.g. killed before their first fire)."""
        if self.on is None:
            return []
        on = self.on
        return [k for k in backend.list_keys()
                if k not in self._known and fnmatch.fnmatchcase(k, on) and self._source(k) is not None]  # fmt: skip

    # -- which events matter ---------------------------------------------------------------------
    def _source(self, key: str) -> TimeBucketKey | None:
        try:
            tbk = parse_key(key)
        except InvalidKeyError:
            return None
        if tbk.timeframe.seconds in self._dest_seconds:
            return None  # our own output (or a bucket at a destination timeframe): never a source
        return tbk

    def _span(self, ev: CommitEvent) -> tuple[int | None, int | None] | None:
        """Source time range an event touched (ns, inclusive), or ``None`` if it does not concern us."""
        if self._source(ev.key) is None:
            return None
        if ev.op == "write" and ev.batch is not None and len(ev.batch):
            idx = ev.batch.index
            return int(idx.min()), int(idx.max())
        if ev.op == "delete":
            return ev.start, ev.end
        return None  # create, destroy, empty writes: destinations are left as they are

    def _on_commit(self, ev: CommitEvent) -> None:
        """Commit listener (writer's thread, write lock held): journal the range, nothing else."""
        if ev.key not in self._known:
            return  # unknown keys get a full recompute when first fired
        span = self._span(ev)
        if span is not None:
            self._pending[ev.seq] = (ev.key, *span)
            self._append([f"dirty {ev.seq} {ev.key} {_num(span[0])} {_num(span[1])}"])

    # -- recomputation ---------------------------------------------------------------------------
    def _plan(self, src: TimeBucketKey) -> list[Timeframe]:
        s = src.timeframe.seconds
        return [t for t in self.destinations if t.seconds > s and t.seconds % s == 0]

    def _dest_key(self, src: TimeBucketKey, tf: Timeframe, batch: Batch) -> str:
        group = self.attribute_group
        if group is None:
            is_bars = any(c.lower() in BAR_RULES and BAR_RULES[c.lower()] != "sum" for c in batch.columns)
            group = src.attribute_group if is_bars else "OHLCV"
        return f"{src.symbol}/{tf.name}/{group}"

    def _recompute_logged(self, backend: Backend, key: str, lo: int | None, hi: int | None) -> None:
        try:
            self._recompute(backend, key, lo, hi)
        except BucketNotFoundError:
            pass  # the source is gone: nothing to aggregate
        except MktsError:
            log.exception("ondiskagg: repairing %s [%s, %s] failed", key, lo, hi)

    def _recompute(self, backend: Backend, key: str, lo: int | None, hi: int | None,
                   only: Iterable[Timeframe] | None = None, written: np.ndarray | None = None) -> None:  # fmt: skip
        """Rebuild every destination candle whose window meets source times ``[lo, hi]`` (None = all).

        ``written``: when the change was only writes, their times (ns); then each destination
        rewrites just the candles whose windows hold one of them (a new 1Min bar rewrites one 5Min
        candle, not the day's 288), so the destinations' own commit events stay small.
        """
        src = self._source(key)
        if src is None:
            return
        plan = [t for t in self._plan(src) if only is None or t in set(only)]
        if not plan:
            return
        if lo is None or hi is None:
            ext = self._extent(backend, key, src, plan)
            if ext is None:
                return
            lo = ext[0] if lo is None else lo
            hi = ext[1] if hi is None else hi
        a = int(self._unit.floor(np.array([lo], np.int64))[0])
        b = int(self._unit.floor(np.array([hi], np.int64))[0]) + self._unit.seconds * NS - 1
        (rows,) = backend.query(key, start=np.datetime64(a, "ns"), end=np.datetime64(b, "ns")).values()
        if written is not None:
            written = written[(written >= a) & (written <= b)]
        for tf in plan:
            window = Window(1, "s", tf.seconds)
            out = candles(rows, window) if len(rows) else None
            dest = self._dest_key(src, tf, rows) if len(rows) else None
            wins = None
            if written is not None:
                wins = np.unique(window.floor(written))
                if wins.size == 0:
                    continue
                if out is not None:
                    sel = np.isin(out.index, wins)
                    out = Batch(out.index[sel], {c: v[sel] for c, v in out.columns.items()})
            if out is not None and dest is not None and len(out):
                backend.write(dest, out)
            lo_d, hi_d = (a, b) if wins is None else (int(wins[0]), int(wins[-1]) + tf.nanoseconds - 1)
            self._drop_stale(backend, src, tf, lo_d, hi_d, out, dest, wins)

    def _drop_stale(self, backend: Backend, src: TimeBucketKey, tf: Timeframe, a: int, b: int,
                    out: Batch | None, dest: str | None, wins: np.ndarray | None) -> None:  # fmt: skip
        """Delete destination candles in ``[a, b]`` (and in ``wins``, if given) whose windows no longer
        hold source rows."""
        keys = [dest] if dest is not None else [f"{src.symbol}/{tf.name}/{g}" for g in
                                                dict.fromkeys([self.attribute_group or src.attribute_group, "OHLCV"])]
        for k in keys:
            try:
                found = backend.query(k, start=np.datetime64(a, "ns"), end=np.datetime64(b, "ns"), columns=[])
            except BucketNotFoundError:
                continue
            (have,) = found.values()
            keep = out.index if out is not None else np.empty(0, np.int64)
            stale = ~np.isin(have.index, keep)
            if wins is not None:
                stale &= np.isin(have.index, wins)
            if not stale.any():
                continue
            # contiguous runs of stale rows: one delete each (there are no kept rows inside a run)
            edges = np.flatnonzero(np.diff(np.concatenate(([0], stale.view(np.int8), [0]))))
            for s, e in zip(edges[::2], edges[1::2] - 1, strict=True):
                backend.delete(k, start=np.datetime64(int(have.index[s]), "ns"),
                               end=np.datetime64(int(have.index[e]), "ns"))  # fmt: skip

    def _extent(self, backend: Backend, key: str, src: TimeBucketKey, plan: list[Timeframe]
                ) -> tuple[int, int] | None:  # fmt: skip
        """First and last time of the source and of its destinations (what an unbounded change may touch)."""
        firsts, lasts = [], []
        for k in [key] + [f"{src.symbol}/{t.name}/{g}" for t in plan
                          for g in dict.fromkeys([self.attribute_group or src.attribute_group, "OHLCV"])]:
            try:
                info = backend.info(k)
            except BucketNotFoundError:
                continue
            if info.first is not None and info.last is not None:
                firsts.append(info.first)
                lasts.append(info.last)
        return (min(firsts), max(lasts)) if firsts else None

    def _repair_tail(self, backend: Backend, key: str) -> None:
        """Recompute each destination from its last candle to the end of the source."""
        src = self._source(key)
        if src is None:
            return
        try:
            src_info = backend.info(key)
        except BucketNotFoundError:
            return
        if src_info.last is None:
            return
        for tf in self._plan(src):
            last = None
            for g in dict.fromkeys([self.attribute_group or src.attribute_group, "OHLCV"]):
                try:
                    info = backend.info(f"{src.symbol}/{tf.name}/{g}")
                except BucketNotFoundError:
                    continue
                last = info.last if last is None or (info.last or 0) > last else last
            lo = src_info.first if last is None else last
            try:
                self._recompute(backend, key, lo, src_info.last, only=[tf])
            except MktsError:
                log.exception("ondiskagg: repairing the tail of %s for %s failed", key, tf.name)

    # -- journal -----------------------------------------------------------------------------------
    def _remember(self, key: str) -> None:
        self._known.add(key)
        self._append([f"source {key}"], sync=True)

    def _append(self, lines: list[str], sync: bool = False) -> None:
        if not lines:
            return
        data = "".join(line + "\n" for line in lines).encode()
        with self._lock:
            if self._fd is None:
                return
            os.write(self._fd, data)
            if sync:
                os.fsync(self._fd)

    def _sync_journal(self) -> None:
        """Before the engine checkpoints its log: the ``dirty`` lines written so far survive power loss."""
        with self._lock:
            if self._fd is not None:
                os.fsync(self._fd)

    def _read_journal(self) -> tuple[list[tuple[str, int | None, int | None]], set[str]]:
        """Ranges journaled dirty and not done (in commit order), and every source key ever seen."""
        assert self._journal is not None
        try:
            text = self._journal.read_text(errors="replace")
        except FileNotFoundError:
            return [], set()
        dirty, known = _parse_journal(text)
        return [dirty[seq] for seq in sorted(dirty)], known

    def _rewrite_journal(self, pending: list[tuple[int, str, int | None, int | None]]) -> None:
        """Atomically replace the journal with the known sources and the still-pending ranges."""
        assert self._journal is not None
        tmp = self._journal.with_suffix(".tmp")
        lines = [f"source {k}" for k in sorted(self._known)]
        lines += [f"dirty {seq} {k} {_num(lo)} {_num(hi)}" for seq, k, lo, hi in pending]
        tmp.write_text("".join(line + "\n" for line in lines))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._journal)

    def _maybe_compact(self) -> None:
        """Keep the journal small: once it passes :data:`COMPACT_BYTES`, rewrite it with what is pending."""
        with self._lock:
            if self._fd is None or self._journal is None or os.fstat(self._fd).st_size < COMPACT_BYTES:
                return
            dirty, _ = _parse_journal(self._journal.read_text(errors="replace"))
            self._rewrite_journal([(seq, *dirty[seq]) for seq in sorted(dirty)])
            os.close(self._fd)
            self._fd = os.open(self._journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


def _parse_journal(text: str) -> tuple[dict[int, tuple[str, int | None, int | None]], set[str]]:
    """``dirty`` ranges by commit sequence number without a ``done`` line, and the ``source`` keys."""
    known: set[str] = set()
    dirty: dict[int, tuple[str, int | None, int | None]] = {}
    for line in text.splitlines():
        parts = line.split(" ")
        try:
            if parts[0] == "source" and len(parts) == 2:
                known.add(parts[1])
            elif parts[0] == "dirty" and len(parts) == 5:
                dirty[int(parts[1])] = (parts[2], _parse_num(parts[3]), _parse_num(parts[4]))
            elif parts[0] == "done" and len(parts) == 2:
                dirty.pop(int(parts[1]), None)
        except ValueError:
            continue  # a torn last line: the tail repair covers it
    return dirty, known


def _num(v: int | None) -> str:
    return "-" if v is None else str(v)


def _parse_num(text: str) -> int | None:
    return None if text == "-" else int(text)


def _merge(spans: list[tuple[int | None, int | None]], unit: Window) -> list[tuple[int | None, int | None]]:
    """Union of ranges, widened to whole ``unit`` windows, so each region is read once."""
    if any(lo is None or hi is None for lo, hi in spans):
        lo = None if any(s[0] is None for s in spans) else min(s[0] for s in spans)  # type: ignore[type-var]
        hi = None if any(s[1] is None for s in spans) else max(s[1] for s in spans)  # type: ignore[type-var]
        return [(lo, hi)]
    d = unit.seconds * NS
    arr = np.array(spans, dtype=np.int64)
    starts = unit.floor(arr[:, 0])
    ends = unit.floor(arr[:, 1]) + d - 1
    order = np.argsort(starts, kind="stable")
    out: list[tuple[int | None, int | None]] = []
    for s, e in zip(starts[order].tolist(), ends[order].tolist(), strict=True):
        if out and s <= out[-1][1] + 1:  # type: ignore[operator]
            out[-1] = (out[-1][0], max(out[-1][1], e))  # type: ignore[type-var]
        else:
            out.append((s, e))
    return out
