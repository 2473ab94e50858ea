"""A bounded set of open data files: year files and tick partitions, least recently used closed first.

Every open year file or tick partition holds a memory map (and, only where
:mod:`mktsframe.engine.mapping` falls back to Python's ``mmap``, a file descriptor). A universe of
10,000 buckets × a few years would hold tens of thousands of them for the life of the process:
past ``vm.max_map_count`` (65,530) ``mmap`` fails, and with descriptors past ``ulimit -n`` (256 on
macOS, 1024 on Linux by default) a query fails with ``EMFILE``. So the engine keeps at most
:attr:`OpenFiles.capacity` of them open and closes the least recently used one when it opens
another.

Closing is only safe when nobody is copying out of the file. The rules that make it so:

* files are opened, touched and evicted under the engine's apply lock, and every reader holds that
  lock while it copies (so a file is never closed under a reader of another thread);
* a tick partition with changes that only a checkpoint may make durable (``background_sync``: the
  log may not hold them yet) is not closed until the next checkpoint has cleaned it;
* an operation that keeps several files while it opens more (a query over many years, a direct
  write, a write's staging step that runs outside the apply lock) *pins* them; a pinned file is
  never evicted, so the set may briefly exceed its capacity, never close a file in use.

The owner of a file (its :class:`~mktsframe.engine.catalog.Bucket` or tick store) is told when its
file is evicted, forgets it and closes it; a dirty year file's path is handed to ``on_dirty_close``
so the next checkpoint ``fdatasync``'s it before it advances (see ``Engine._checkpoint``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from mktsframe.engine.mapping import HOLDS_DESCRIPTOR

__all__ = ["OpenFiles", "count_open_data_files", "default_capacity", "raise_fd_limit"]

log = logging.getLogger("mktsframe.engine")

#: Never fewer open data files than this, whatever the limits say.
MIN_CAPACITY = 16
#: Never more than this: beyond a few thousand, more open maps buy little and cost kernel memory.
MAX_CAPACITY = 8192
#: Descriptors kept free of data files for everything else: sockets, the log, libraries, clients.
_FD_RESERVE_SHARE = 2  # data files get at most 1/2 of the soft limit …
_FD_RESERVE_MIN = 96  # … and leave at least this many descriptors free


class Evictable(Protocol):
    """What :class:`OpenFiles` needs of a file: its owner forgets and closes it on eviction, except
    while it is ``dirty`` and ``hold_while_dirty`` (changes it cannot make durable on its own)."""

    dirty: bool
    hold_while_dirty: bool

    def evicted(self) -> None: ...


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit (as databases do at start); returns the
    ``(soft, hard)`` limits now in force. Failing to raise it is not an error: the budget adapts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:  # e.g. a container that forbids it
            log.info("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
    return soft, hard


def _max_map_count() -> int:
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 65530  # Linux's default; other systems have no such limit


def default_capacity() -> int:
    """How many data files an engine may keep open (mapped): an eighth of ``vm.max_map_count`` and
    at most ``MAX_CAPACITY`` (8,191 with Linux's default count); ``MKTS_MAX_OPEN_FILES`` overrides it.

    Maps hold no file descriptor (:mod:`mktsframe.engine.mapping`), so ``ulimit -n`` does not bound
    them. Where the fallback to :class:`mmap.mmap` keeps one descriptor per map, the budget is also
    at most half of the soft ``RLIMIT_NOFILE`` (after trying to raise it), leaving at least
    ``_FD_RESERVE_MIN`` descriptors free: 128 under ``ulimit -n 256``."""
    env = os.environ.get("MKTS_MAX_OPEN_FILES")
    if env:
        return max(1, int(env))
    soft, _ = raise_fd_limit()  # sockets and clients want descriptors in any case
    cap = min(_max_map_count() // 8, MAX_CAPACITY)
    if HOLDS_DESCRIPTOR and soft != resource.RLIM_INFINITY:
        cap = min(cap, soft // _FD_RESERVE_SHARE, soft - _FD_RESERVE_MIN)
    return max(MIN_CAPACITY, cap)


class OpenFiles:
    """The engine's open data files, least recently used first (thread-safe)."""

    def __init__(self, capacity: int | None = None, on_dirty_close: Callable[[Any], None] | None = None) -> None:
        self.capacity = max(1, int(capacity)) if capacity is not None else default_capacity()
        self._lock = threading.Lock()
        self._files: OrderedDict[int, Evictable] = OrderedDict()
        self._pins: dict[int, int] = {}
        #: Most files open at once since the engine started (what the resource tests check).
        self.peak = 0
        #: Files closed to make room.
        self.evictions = 0
        #: Files closed for any reason (evicted or discarded by their owner): a caller that kept a
        #: list of open files knows they are all still open while this has not moved.
        self.closed = 0
        self._reordered = 0  # opens and touches so far (see touch_all)

    def __len__(self) -> int:
        return len(self._files)

    @property
    def full(self) -> bool:
        """Opening another file would close one (callers may then read or write by position instead)."""
        return len(self._files) >= self.capacity

    def reserve(self) -> None:
        """Close the least recently used unpinned file if the set is full, *before* opening another,
        so that the process never holds more than ``capacity`` maps, not even for a moment. Call
        under the engine's apply lock."""
        if len(self._files) >= self.capacity:
            self._make_room(None, extra=1)

    def add(self, f: Evictable) -> None:
        """Track a newly opened file (most recently used), closing least recently used unpinned
        files while over capacity. Call under the engine's apply lock."""
        self._make_room(f)

    def trim(self) -> None:
        """Close unpinned files while over capacity (after an operation that pinned more than fits
        has unpinned them). Call under the engine's apply lock."""
        if len(self._files) > self.capacity:
            self._make_room(None)

    def _make_room(self, f: Evictable | None, extra: int = 0) -> None:
        victims = []
        with self._lock:
            if f is not None:
                self._files[id(f)] = f
                self._reordered += 1
            over = len(self._files) + extra - self.capacity
            if over > 0:
                for fid, g in self._files.items():
                    if fid not in self._pins and g is not f and not (g.hold_while_dirty and g.dirty):
                        victims.append((fid, g))
                        if len(victims) == over:
                            break
                for fid, _ in victims:
                    del self._files[fid]
                self.evictions += len(victims)
                self.closed += len(victims)
            self.peak = max(self.peak, len(self._files))
        for _, g in victims:
            g.evicted()

    def touch(self, f: Evictable) -> None:
        """Mark ``f`` most recently used."""
        with self._lock, contextlib.suppress(KeyError):
            self._reordered += 1
            self._files.move_to_end(id(f))

    def touch_all(
        self, files: Iterable[Evictable], *, unless: int | None = None, ids: list[int] | None = None
    ) -> int:
        """Mark ``files`` most recently used, in order (one lock for a whole multi-bucket read).
        Returns a stamp of the order now; given back as ``unless``, it skips the work when no file
        was opened or touched since (``files`` are then still the most recent, in that order): a
        feed writing the same 5,000 files every minute, with no read between, pays ~1 ms less.
        ``ids``: the files' ``id()``s, if the caller keeps them (moved in one C loop when all are
        tracked: ~0.3 ms for 5,000 instead of ~1.3 ms)."""
        with self._lock:
            if unless is not None and unless == self._reordered:
                return unless
            tracked, move = self._files, self._files.move_to_end
            try:
                if ids is None:
                    raise KeyError
                deque(map(move, ids), maxlen=0)
            except KeyError:  # some file is not tracked (closed since): one by one
                for f in files:
                    if id(f) in tracked:
                        move(id(f))
            self._reordered += 1
            return self._reordered

    def discard(self, f: Evictable) -> None:
        """Stop tracking ``f`` (its owner closed it)."""
        with self._lock:
            if self._files.pop(id(f), None) is not None:
                self.closed += 1
            self._pins.pop(id(f), None)

    def pin(self, f: Evictable) -> bool:
        """Keep ``f`` open until :meth:`unpin`; ``False`` (nothing pinned) if it was closed already."""
        with self._lock:
            fid = id(f)
            if fid not in self._files:
                return False
            self._pins[fid] = self._pins.get(fid, 0) + 1
            return True

    def unpin(self, f: Evictable) -> None:
        with self._lock:
            fid = id(f)
            n = self._pins.get(fid, 0) - 1
            if n > 0:
                self._pins[fid] = n
            else:
                self._pins.pop(fid, None)


def count_open_data_files(root: str | os.PathLike[str], pid: int | str = "self") -> tuple[int, int]:
    """``(descriptors, memory maps)`` process ``pid`` (default: this one) holds on data files under
    ``root`` (the engine's own ``.mkts/`` folder excluded), read from ``/proc`` (Linux; ``(0, 0)``
    elsewhere). For tests and benchmarks that check the bound, and for operators wondering where
    descriptors went."""
    prefix = os.path.realpath(root).rstrip("/") + "/"
    own = prefix + ".mkts/"
    fds = 0
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0, 0
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:  # closed meanwhile (the listing's own descriptor, for one)
            continue
        if target.startswith(prefix) and not target.startswith(own):
            fds += 1
    maps = 0
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            path = line.split(maxsplit=5)[-1].strip() if line.count(" ") >= 5 else ""
            if path.startswith(prefix) and not path.startswith(own):
                maps += 1
    return fds, maps
