"""Running one trigger: commit events matched by its ``on:`` glob, queued, fired on its own thread.

The engine announces commits on the writer's thread while it holds the write lock, so the
listener here only matches the key and enqueues. The trigger's thread takes what is queued (up to
``max_batch`` events at a time, in commit order) and calls ``fire``; an exception is logged and
the next batch is still delivered. A slow or hung trigger therefore never delays a write.

**Overflow policy.** Each trigger has a bounded queue (``queue_size`` events, default 10,000).
When it is full, new events for that trigger are *dropped* (never waited for: waiting would block
every writer behind one broken plugin), counted in :attr:`TriggerRunner.dropped`, and logged at
most every 10 seconds. Other triggers are unaffected. A trigger that must not miss changes keeps
its own record of them (ondiskagg journals every commit and repairs at its next start).
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from mktsframe.backend.base import Backend
from mktsframe.changes import CommitEvent

__all__ = ["TriggerRunner", "glob_regex"]

log = logging.getLogger("mktsframe.plugins")

DEFAULT_QUEUE_SIZE = 10_000
DEFAULT_MAX_BATCH = 1_000
#: Seconds between two "queue full" warnings of one trigger.
DROP_LOG_INTERVAL = 10.0


def glob_regex(pattern: str) -> re.Pattern[str]:
    """MarketStore's ``on:`` pattern as a regex: ``*`` is one or more characters of one key part
    (``[^/]+``), ``?`` one character. Unlike MarketStore (an unanchored search, so
    ``*/1Min/OHLCV`` also matched ``X/11Min/OHLCVX``) the whole key must match; a trailing
    fourth part (MarketStore matched file paths ``SYM/TF/AG/YYYY.bin``) is ignored."""
    parts = pattern.strip().split("/")
    pattern = "/".join(parts[:3]) if len(parts) == 4 else "/".join(parts)
    out = "".join("[^/]+" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in pattern)
    return re.compile(out)


class TriggerRunner:
    """One configured trigger: its glob, queue, thread and counters."""

    def __init__(self, name: str, trigger: Any, backend: Backend, entry: Mapping[str, Any]) -> None:
        self.name = name
        self.trigger = trigger
        self.backend = backend
        on = entry.get("on")
        self.on = str(on) if on else "*/*/*"
        self._match = glob_regex(self.on).fullmatch
        self._queue: queue.Queue[CommitEvent] = queue.Queue(int(entry.get("queue_size") or DEFAULT_QUEUE_SIZE))
        self.max_batch = int(entry.get("max_batch") or DEFAULT_MAX_BATCH)
        self.fired = 0
        """Events handed to ``fire`` (including those of batches that raised)."""
        self.errors = 0
        """``fire`` calls that raised."""
        self.dropped = 0
        """Events not queued because the queue was full."""
        self.failed: str | None = None
        """Why the trigger was disabled (its ``start`` raised), else ``None``."""
        self._last_drop_log = 0.0
        self._closing = threading.Event()
        self._unlisten: Callable[[], None] | None = None
        self._thread = threading.Thread(target=self._run, name=f"mkts-trigger-{name}", daemon=True)

    def __repr__(self) -> str:
        return f"<TriggerRunner {self.name} on {self.on!r} fired={self.fired} dropped={self.dropped}>"

    def start(self) -> None:
        """Subscribe to commits, then start the thread (which calls the trigger's ``start``)."""
        self._unlisten = self.backend.on_commit(self._listen)  # type: ignore[attr-defined]
        self._thread.start()

    def _listen(self, event: CommitEvent) -> None:
        """On the writer's thread with the write lock held: match and enqueue, nothing more."""
        if not self._match(event.key):
            return
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            now = time.monotonic()
            if now - self._last_drop_log >= DROP_LOG_INTERVAL:
                self._last_drop_log = now
                log.warning("trigger %s: queue full (%d events), %d event(s) dropped so far (latest %s %s)",
                            self.name, self._queue.maxsize, self.dropped, event.op, event.key)  # fmt: skip

    def _run(self) -> None:
        start = getattr(self.trigger, "start", None)
        if start is not None:
            try:
                start(self.backend)
            except Exception as exc:
                self.failed = f"start failed: {exc!r}"
                log.exception("trigger %s: start failed; the trigger is disabled", self.name)
                self._unsubscribe()
                return
        while True:
            try:
                first = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._closing.is_set():
                    return
                continue
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self.trigger.fire(self.backend, batch)
            except Exception:
                self.errors += 1
                log.exception("trigger %s: fire failed on %d event(s) (%s…)", self.name, len(batch), batch[0].key)
            self.fired += len(batch)

    def _unsubscribe(self) -> None:
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None

    def stop(self, timeout: float) -> bool:
        """Stop listening, fire what is queued (waiting at most ``timeout`` seconds), then call the
        trigger's ``stop``. Returns ``False`` if the thread was still busy (a hung ``fire``); it is
        a daemon thread and is abandoned."""
        self._unsubscribe()
        self._closing.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        finished = not self._thread.is_alive()
        if not finished:
            log.warning("trigger %s: still running after %.1f s at shutdown; abandoned with %d event(s) unfired",
                        self.name, timeout, self._queue.qsize())  # fmt: skip
        stop = getattr(self.trigger, "stop", None)
        if stop is not None and self.failed is None:
            try:
                stop()
            except Exception:
                log.exception("trigger %s: stop failed", self.name)
        return finished

    def status(self) -> dict[str, Any]:
        """Counters for logs and tests."""
        return {"name": self.name, "on": self.on, "fired": self.fired, "errors": self.errors,
                "dropped": self.dropped, "queued": self._queue.qsize(), "failed": self.failed}  # fmt: skip
