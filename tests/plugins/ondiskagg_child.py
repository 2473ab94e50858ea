"""Child for the SIGKILL tests: ``python ondiskagg_child.py ROOT MODE``.

``between``: aggregate a first chunk, then commit more source writes (a tail append, an
overwritten bar in the middle, a late bar, a delete, a new symbol) and SIGKILL itself before the
trigger hears of them: a kill between the source write and the aggregate write.
``during``: write chunks forever while another thread fires the trigger; the parent kills it.
``unjournaled``: SIGKILL itself inside the commit of a late overwrite, before the trigger's own
listener journals it (a listener registered first kills the process): the change is durable, the
journal never heard of it.
Prints ``READY`` once the first aggregation is done.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import numpy as np

import mktsframe
from mktsframe.plugins.ondiskagg import new_trigger

sys.path.insert(0, os.path.dirname(__file__))
from agg_helpers import DESTS, Dispatcher, minute_bars


def main() -> None:
    root, mode = sys.argv[1], sys.argv[2]
    db = mktsframe.connect(root, read_only=False)
    armed = threading.Event()

    def kill_on_commit(ev: object) -> None:
        if armed.is_set():
            os.kill(os.getpid(), signal.SIGKILL)

    if mode == "unjournaled":
        db.on_commit(kill_on_commit)  # registered before the trigger's listener, so heard first
    trig = new_trigger({"destinations": DESTS})
    trig.start(db)
    disp = Dispatcher(db, trig)
    minute_bars(0, 3000, seed=1).to_mkts("AAA/1Min/OHLCV", backend=db)
    disp.flush()
    print("READY", flush=True)
    if mode == "between":
        minute_bars(3000, 200, seed=2).to_mkts("AAA/1Min/OHLCV", backend=db)  # tail append
        late = minute_bars(1000, 1, seed=3)
        late["High"] = np.float32(10_000)  # an overwritten bar in the middle
        late.to_mkts("AAA/1Min/OHLCV", backend=db)
        db.delete("AAA/1Min/OHLCV", start="2024-01-01 05:00", end="2024-01-01 05:59")  # a whole hour
        minute_bars(60 * 30, 10, seed=4).to_mkts("BBB/1Min/OHLCV", backend=db)  # a symbol never aggregated
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "unjournaled":
        late = minute_bars(1000, 3, seed=3)
        late["Low"] = np.float32(-10_000)
        armed.set()
        late.to_mkts("AAA/1Min/OHLCV", backend=db)  # killed inside this call, after the WAL commit
    stop = threading.Event()

    def pump() -> None:
        while not stop.is_set():
            disp.flush()
            time.sleep(0.001)

    threading.Thread(target=pump, daemon=True).start()
    rng = np.random.default_rng(int(time.time()))
    i = 0
    while True:
        i += 1
        if i % 3 == 0:  # late overwrite somewhere in the past
            minute_bars(int(rng.integers(0, 3000)), 5, seed=i).to_mkts("AAA/1Min/OHLCV", backend=db)
        else:
            minute_bars(3000 + i * 7, 7, seed=i).to_mkts("AAA/1Min/OHLCV", backend=db)


if __name__ == "__main__":
    main()
