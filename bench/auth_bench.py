"""What access control costs a request: the same server with ``auth`` off and on, side by side.

Starts two ``python -m mktsframe.server`` processes on loopback (temporary roots; one with
``auth: true`` and a write token), then, alternating between them for ``--rounds`` rounds, times
``--calls`` sequential calls of each kind through mktsframe's ``HTTPBackend`` (keep-alive):
a 1-row write (durable: fsync'd before the reply) and a 10-row query. Also times
:meth:`Authenticator.authenticate` alone (Bearer and Basic) in this process. Prints medians per
call and the auth-on/auth-off ratio; the machine is shared, so read ratios, not absolutes.

Usage: ``.venv/bin/python bench/auth_bench.py [--rounds 5] [--calls 300]``.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

import mktsframe
from mktsframe.backend.base import Batch
from mktsframe.server.auth import Authenticator, Role, TokenStore
from mktsframe.server.launch import ServerProcess

NS = 1_000_000_000


def per_call(fn, calls: int) -> float:
    t0 = time.perf_counter()
    for i in range(calls):
        fn(i)
    return (time.perf_counter() - t0) / calls


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=300)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        token = TokenStore(work / "on").add("bench", Role.WRITE)
        auth = Authenticator(TokenStore(work / "on"))
        basic = "Basic " + base64.b64encode(f"bench:{token}".encode()).decode()
        n = 100_000
        check = {"Bearer": per_call(lambda _: auth.authenticate(f"Bearer {token}"), n),
                 "Basic": per_call(lambda _: auth.authenticate(basic), n)}  # fmt: skip
        (work / "on.yml").write_text(yaml.safe_dump({"auth": True}))
        servers = {"off": ServerProcess(work / "off"),
                   "on": ServerProcess(work / "on", args=["--config", str(work / "on.yml")])}  # fmt: skip
        try:
            backends = {k: mktsframe.connect(s.url, token=token if k == "on" else None) for k, s in servers.items()}
            for be in backends.values():
                be.write("B/1Min/X", Batch(np.arange(10, dtype=np.int64) * 60 * NS, {"V": np.ones(10)}))
            times: dict[tuple[str, str], list[float]] = {}
            for r in range(args.rounds):
                for name in (("off", "on") if r % 2 == 0 else ("on", "off")):
                    be = backends[name]
                    base = (r + 1) * 10**6

                    def write(i: int, be=be, base=base) -> None:
                        be.write("B/1Min/X", Batch(np.array([(base + i) * 60 * NS]), {"V": np.ones(1)}))

                    def query(i: int, be=be) -> None:
                        be.query("B/1Min/X", limit=10)

                    times.setdefault((name, "write"), []).append(per_call(write, args.calls))
                    times.setdefault((name, "query"), []).append(per_call(query, args.calls))
            for be in backends.values():
                be.close()
        finally:
            for s in servers.values():
                s.stop()
    print(f"Authenticator.authenticate: Bearer {check['Bearer'] * 1e6:.1f} µs, Basic {check['Basic'] * 1e6:.1f} µs "
          "per call (one token file stat, SHA-256, constant-time compare)")  # fmt: skip
    print(f"{args.rounds} rounds × {args.calls} sequential calls, medians per call (order alternated):")
    for kind in ("write", "query"):
        off, on = statistics.median(times[("off", kind)]), statistics.median(times[("on", kind)])
        print(f"  {kind:5}  auth off {off * 1e3:.3f} ms   auth on {on * 1e3:.3f} ms   ratio on/off {on / off:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
