"""Running one background worker on its own thread, restarting it after a crash.

MarketStore started each bgworker in a goroutine and did not catch its panics (one broken feeder
took the server down). Here ``run`` raising is logged; with ``restart: true`` (the default) it is
called again after a backoff of ``restart_delay`` seconds (default 1), doubled after each crash up
to ``max_restart_delay`` (default 60) and reset once a run lasted longer than that maximum.
A ``run`` that returns while the server is still up is finished and not restarted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from mktsframe.backend.base import Backend

__all__ = ["WorkerRunner"]

log = logging.getLogger("mktsframe.plugins")


class WorkerRunner:
    """One configured bgworker: its thread, stop event and crash counter."""

    def __init__(self, name: str, worker: Any, backend: Backend, entry: Mapping[str, Any]) -> None:
        self.name = name
        self.worker = worker
        self.backend = backend
        self.restart = _flag(entry.get("restart", True))
        self.restart_delay = float(entry.get("restart_delay", 1.0))
        self.max_restart_delay = float(entry.get("max_restart_delay", 60.0))
        self.crashes = 0
        """How many times ``run`` raised."""
        self.runs = 0
        """How many times ``run`` was called."""
        self.stop_event = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"mkts-bgworker-{name}", daemon=True)

    def __repr__(self) -> str:
        return f"<WorkerRunner {self.name} runs={self.runs} crashes={self.crashes}>"

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        delay = self.restart_delay
        while not self.stop_event.is_set():
            began = time.monotonic()
            self.runs += 1
            try:
                self.worker.run(self.backend, self.stop_event)
            except Exception:
                self.crashes += 1
                if not self.restart:
                    log.exception("bgworker %s crashed; not restarted (restart: false)", self.name)
                    return
                if time.monotonic() - began > self.max_restart_delay:
                    delay = self.restart_delay
                log.exception("bgworker %s crashed (%d so far); restarting in %.1f s", self.name, self.crashes, delay)
                if self.stop_event.wait(delay):
                    return
                delay = min(delay * 2, self.max_restart_delay)
                continue
            if not self.stop_event.is_set():
                log.info("bgworker %s finished", self.name)
            return

    def stop(self, timeout: float) -> bool:
        """Set the stop event and wait at most ``timeout`` seconds; ``False`` if it did not return
        (a daemon thread, abandoned)."""
        self.stop_event.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("bgworker %s: still running %.1f s after stop was requested; abandoned", self.name, timeout)
            return False
        return True

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "alive": self.alive, "runs": self.runs, "crashes": self.crashes}


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "t", "true", "yes", "on"}
    return bool(value)
