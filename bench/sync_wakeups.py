"""Where a same-host sync call's time goes: wake-ups, read from the kernel's own counters.

Run with::

    python bench/sync_wakeups.py                    # polling as configured (default 200 µs)
    ZACTOR_SPIN_US=0 python bench/sync_wakeups.py   # every wait sleeps at once

Two parts, on an embedded cluster of ``--workers`` workers and a
``multiprocessing.Pipe`` actor (zactor.benchmark.pipe_actor):

1. **Interleaved p50s**: ``--rounds`` rounds of ``--block`` sync calls each of
   zactor ``h.inc.remote().result()`` and the Pipe actor, taking turns, so
   both see the same machine.
2. **CPU and run-queue wait a call, per thread**, from
   ``/proc/<pid>/task/<tid>/schedstat`` (ns on CPU, ns waiting to run, time
   slices) around two 2-second loops of zactor calls: one continuous, one
   pausing 50 ms after each block. On this project's 2-core VM the kernel put
   a continuously calling driver and its worker on separate cores (each
   wake-up an inter-processor interrupt, ~40 µs of CPU a side a call) and a
   pausing one on one core (the woken side waits for the other to sleep,
   ~27 µs a side): the p50 flipped between ~35 and ~130 µs with no change in
   zactor's own code. Polling before sleeping (zactor.endpoint.spinning)
   takes the wake-up out of both.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

if __name__ == "__main__" and "PYTHONPATH" not in os.environ:  # this checkout's zactor
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pool_routing import PlacedCounter  # noqa: E402  (bench/, beside this script)

import zactor  # noqa: E402
from zactor.benchmark.pipe_actor import PipeActor  # noqa: E402
from zactor.benchmark.runner import _Counter  # noqa: E402


def sync_ns(inc, n: int) -> np.ndarray:
    """Round-trip times (ns) of ``n`` ``inc.remote().result()``."""
    lat = np.empty(n, np.int64)
    remote, clock = inc.remote, time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        remote().result()
        lat[i] = clock() - t0
    return lat


def schedstat(pids: list[int]) -> dict:
    """``{(pid, tid): [ns on CPU, ns waiting to run, slices]}`` of every thread of ``pids``."""
    out = {}
    for pid in pids:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    out[(pid, int(tid))] = [int(x) for x in f.read().split()]
            except FileNotFoundError:  # the thread ended meanwhile
                pass
    return out


def per_call(inc, pids: dict, block: int, pause_s: float, seconds: float = 2.0) -> str:
    """A loop of sync calls for ``seconds``: p50 and, per busy thread, CPU and wait a call."""
    before = schedstat(list(pids.values()))
    lat, calls = [], 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        lat.append(sync_ns(inc, block))
        calls += block
        if pause_s:
            time.sleep(pause_s)
    after = schedstat(list(pids.values()))
    names = {pid: name for name, pid in pids.items()}
    lines = [f"p50 {np.median(np.concatenate(lat)) / 1e3:.1f} µs over {calls} calls"]
    for key in sorted(after):
        if key not in before:
            continue
        cpu, wait, slices = (b - a for a, b in zip(before[key], after[key]))
        if cpu > 1e7:  # threads that did the work, not the ones asleep throughout
            lines.append(
                f"    {names[key[0]]:<7} thread {key[1]}: on CPU {cpu / calls / 1e3:5.1f} µs, "
                f"waiting to run {wait / calls / 1e3:5.1f} µs, {slices / calls:.2f} slices a call"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--block", type=int, default=500)
    args = parser.parse_args()
    spin = os.environ.get("ZACTOR_SPIN_US", "default")
    print(f"zactor from {os.path.dirname(zactor.__file__)}; ZACTOR_SPIN_US={spin}")
    zactor.init(num_workers=args.workers)
    pipe = PipeActor(_Counter)
    try:
        counter = zactor.remote(PlacedCounter).remote()
        pids = {"driver": os.getpid(), "worker": counter.pid.remote().result(timeout=60)}
        sides = {
            "zactor": lambda: sync_ns(counter.inc, args.block),
            "Pipe": lambda: pipe.latency_ns(args.block),
        }
        p50s: dict[str, list] = {name: [] for name in sides}
        for r in range(args.rounds):
            order = list(sides) if r % 2 == 0 else list(sides)[::-1]
            for name in order:
                p50s[name].append(float(np.median(sides[name]())) / 1e3)
        print("interleaved sync p50, µs (median of rounds; each round):")
        for name, values in p50s.items():
            rounds = ", ".join(f"{v:.1f}" for v in values)
            print(f"  {name:<7} {statistics.median(values):6.1f}   [{rounds}]")
        print("zactor, calling without a pause:")
        print("  " + per_call(counter.inc, pids, args.block, 0.0))
        print("zactor, pausing 50 ms after each block:")
        print("  " + per_call(counter.inc, pids, args.block, 0.05))
    finally:
        pipe.close()
        zactor.shutdown()


if __name__ == "__main__":
    main()
