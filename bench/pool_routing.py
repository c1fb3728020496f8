"""Routed pipelined calls through a HashPool against one handle: where the difference goes.

Run with::

    python bench/pool_routing.py                 # 21 rounds of 20,000 calls a pass
    python bench/pool_routing.py --rounds 31 --json /tmp/routing.json

Issue 3 asks for routed pipelined calls/s through a HashPool of 8 actors to be
at least 0.9x pipelined calls/s on one handle. ``zactor bench`` prints that
ratio; this script takes it apart. Every pass sends ``--calls`` calls of the
same trivial ``inc`` (no arguments) and then ``zactor.get``\\ s them all:

===========================  ================================================
one handle                   ``r = h.inc.remote`` then ``r()`` per call (the
                             loop of ``zactor bench``'s pipelined row)
for_key                      ``pool.for_key(k).inc.remote()`` per key
for_keys                     ``for h in pool.for_keys(keys): h.inc.remote()``
pre-routed                   the same handles in the same order as for_key,
                             looked up before the clock starts: the routed
                             workload with the routing taken out
... pool on 1 worker         the same, with all 8 actors on the one handle's
                             worker (a plain HashPool spreads them 4 + 4 over
                             the 2 workers): placement taken out
raw pyzmq                    the yardstick: 50-byte messages to a bare echo
                             loop in another process, one reply per request
===========================  ================================================

Each round runs every pass once, in an order rotated (and reversed every other
round) so that no variant always runs first or after the same neighbour; each
ratio is taken against the one-handle pass of the same round, and the table
shows the median of the per-round ratios and their range. Beside the rates it
shows what each pass cost in CPU, read from the kernel: the driver's main
thread (``time.thread_time``; the driver's loop is the bottleneck of a
pipelined run) per call, the fraction of the wall time it was running, and
the worker processes' CPU (``/proc/<pid>/task/*/stat``) in cores.
``--count-messages`` adds one pass of each variant, after the timed rounds,
that counts the messages the driver sends and receives.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

if __name__ == "__main__":  # run from a source checkout: import this checkout's zactor
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import zactor
from zactor.benchmark.runner import RawYardstick

POOL_ACTORS = 8
_TICK = os.sysconf("SC_CLK_TCK")


class PlacedCounter:
    """``zactor.bench``'s counter, and the pid of the worker it lives in."""

    def __init__(self) -> None:
        self.n = 0

    def inc(self) -> int:
        """Count one call; return the count."""
        self.n += 1
        return self.n

    def pid(self) -> int:
        """The pid of the worker process hosting this actor."""
        return os.getpid()


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of every thread of ``pid`` so far."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _TICK


def place(counter, workers: int) -> tuple[dict, list]:
    """Create counters until one worker hosts 1 + 8 and another 8; ``{pid: [handles]}``."""
    by_pid: dict[int, list] = {}
    made = []
    while True:
        h = counter.remote()
        made.append(h)
        by_pid.setdefault(h.pid.remote().result(timeout=60), []).append(h)
        full = sorted((len(v) for v in by_pid.values()), reverse=True)
        if len(full) >= 2 and full[0] >= POOL_ACTORS + 1 and full[1] >= POOL_ACTORS:
            return by_pid, made
        if len(made) > (POOL_ACTORS + 1) * max(2, workers) * 2:
            raise RuntimeError(f"could not place the counters on 2 workers: {by_pid}")


def passes(single, pool_spread, pool_one, keys: list) -> dict:
    """The timed bodies: each issues one call per key and returns the futures."""
    pre_spread = pool_spread.for_keys(keys)
    pre_one = pool_one.for_keys(keys)

    def one_handle():
        r = single.inc.remote
        return [r() for _ in keys]

    def one_handle_per_call():
        h = single
        return [h.inc.remote() for _ in keys]

    def for_key(pool):
        def body():
            fk = pool.for_key
            return [fk(k).inc.remote() for k in keys]

        return body

    def for_keys():
        return [h.inc.remote() for h in pool_spread.for_keys(keys)]

    def pre_routed(handles):
        return lambda: [h.inc.remote() for h in handles]

    return {
        "one handle": one_handle,
        "one handle, h.inc per call": one_handle_per_call,
        "for_key": for_key(pool_spread),
        "for_keys": for_keys,
        "pre-routed": pre_routed(pre_spread),
        "for_key, pool on 1 worker": for_key(pool_one),
        "pre-routed, pool on 1 worker": pre_routed(pre_one),
    }


def timed_pass(body, n: int, worker_pids: list) -> dict:
    """One pass: wall time, the driver main thread's CPU, the workers' CPU."""
    gc.collect()
    w0 = [process_cpu_s(p) for p in worker_pids]
    c0 = time.thread_time()
    t0 = time.perf_counter()
    futures = body()
    c1 = time.thread_time()
    zactor.get(futures, timeout=300)
    wall = time.perf_counter() - t0
    c2 = time.thread_time()
    cpu = c2 - c0
    w1 = [process_cpu_s(p) for p in worker_pids]
    return {
        "rate": n / wall,
        "driver_us_per_call": cpu / n * 1e6,
        "send_us_per_call": (c1 - c0) / n * 1e6,
        "get_us_per_call": (c2 - c1) / n * 1e6,
        "driver_busy": cpu / wall,
        "workers_cores": sum(b - a for a, b in zip(w0, w1)) / wall,
    }


def count_messages(body) -> tuple[int, int]:
    """Messages the driver sends and receives during one pass of ``body``."""
    from zactor.endpoint import runtime as runtime_mod

    rt = runtime_mod.current()
    sent = received = 0
    dispatch = rt._dispatch

    def counting_dispatch(identity, frame0, buffers):
        nonlocal received
        received += 1
        return dispatch(identity, frame0, buffers)

    class CountingConnection:
        """An outbox's connection, counting what goes through it."""

        def __init__(self, conn):
            self.conn = conn

        def send(self, frames):
            nonlocal sent
            sent += 1
            return self.conn.send(frames)

    boxes = list(rt._outboxes.values())
    rt._dispatch = counting_dispatch
    for box in boxes:
        box.conn = CountingConnection(box.conn)
    try:
        zactor.get(body(), timeout=300)
    finally:
        del rt._dispatch
        for box in boxes:
            box.conn = box.conn.conn
    return sent, received


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--calls", type=int, default=20_000, help="calls a pass")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", default=None, help="write every pass's figures here")
    parser.add_argument("--count-messages", action="store_true")
    args = parser.parse_args(argv)
    n = args.calls
    print(f"python bench/pool_routing.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(
        f"cpus: {os.cpu_count()}   workers: {args.workers}   rounds: {args.rounds}   "
        f"calls a pass: {n:,}   load average at start: {os.getloadavg()[0]:.2f}"
    )
    directory = tempfile.mkdtemp(prefix="zactor-routing-")
    raw = None
    try:
        raw = RawYardstick(directory)
        zactor.init(num_workers=args.workers)
        counter = zactor.remote(PlacedCounter).options(max_pending_calls=4 * n)
        by_pid, made = place(counter, args.workers)
        (pid_a, on_a), (pid_b, on_b) = sorted(by_pid.items(), key=lambda kv: -len(kv[1]))[:2]
        single = on_a[0]
        pool_spread = zactor.HashPool(on_a[1:5] + on_b[:4])  # as HashPool(cls, 8) places them
        pool_one = zactor.HashPool(on_a[1 : 1 + POOL_ACTORS])
        keys = [f"user-{i:07d}" for i in range(n)]
        bodies = passes(single, pool_spread, pool_one, keys)
        names = list(bodies) + ["raw pyzmq"]
        worker_pids = [pid_a, pid_b]

        def run(name: str) -> dict:
            if name == "raw pyzmq":
                gc.collect()
                return {"rate": raw.pipelined_rate(n)}
            return timed_pass(bodies[name], n, worker_pids)

        for name in names:  # warm-up, not recorded
            run(name)
        per_round: list = []
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            if r % 2:
                order.reverse()
            per_round.append({name: run(name) for name in order})
            base = per_round[-1]["one handle"]["rate"]
            print(
                f"  round {r + 1:2}/{args.rounds}: one handle {base:9,.0f}/s   "
                + "   ".join(
                    f"{k} {per_round[-1][k]['rate'] / base:.2f}x"
                    for k in ("for_key", "for_keys", "pre-routed", "for_key, pool on 1 worker")
                ),
                flush=True,
            )
        messages = {}
        if args.count_messages:
            messages = {name: count_messages(bodies[name]) for name in bodies}
    finally:
        zactor.shutdown()
        if raw is not None:
            raw.close()
        shutil.rmtree(directory, ignore_errors=True)

    med = statistics.median
    summary = {}
    for name in names:
        rates = [res[name]["rate"] for res in per_round]
        ratios = [res[name]["rate"] / res["one handle"]["rate"] for res in per_round]
        row = {"rate": med(rates), "ratio": med(ratios), "ratios": ratios, "rates": rates}
        if name != "raw pyzmq":
            for k in (
                "driver_us_per_call",
                "send_us_per_call",
                "get_us_per_call",
                "driver_busy",
                "workers_cores",
            ):
                row[k] = med(res[name][k] for res in per_round)
        summary[name] = row
    print()
    print(
        "medians over rounds; x one handle = median of the per-round ratios; "
        "driver = the driver's main thread"
    )
    header = (
        f"{'':30}{'calls/s':>10}{'x one handle':>14}{'per round':>12}"
        f"{'driver µs/call':>16}{'driver busy':>13}{'worker cores':>14}"
    )
    print(header)
    print("-" * len(header))
    for name in names:
        row = summary[name]
        line = (
            f"{name:30}{row['rate']:10,.0f}{row['ratio']:13.2f}x"
            f"{min(row['ratios']):7.2f}-{max(row['ratios']):.2f}"
        )
        if "driver_us_per_call" in row:
            line += (
                f"{row['driver_us_per_call']:16.2f}{row['driver_busy']:13.2f}"
                f"{row['workers_cores']:14.2f}"
            )
        print(line)
    one = summary["one handle"]
    base_cpu = one["driver_us_per_call"]
    print()
    print(
        "driver CPU per call (µs) over the one-handle pass: while sending, while getting, "
        "in all; and the ratio that would leave if the driver's CPU were all that counted"
    )
    for name in bodies:
        row = summary[name]
        extra = row["driver_us_per_call"] - base_cpu
        print(
            f"  {name:30}{row['send_us_per_call'] - one['send_us_per_call']:+7.2f}"
            f"{row['get_us_per_call'] - one['get_us_per_call']:+7.2f}{extra:+7.2f}"
            f"   {base_cpu / (base_cpu + extra):.2f}x"
        )
    if messages:
        print()
        print("messages in one pass (driver sends / receives):")
        for name, (sent, received) in messages.items():
            print(f"  {name:30}{sent:6} / {received:<6} ({n / received:.0f} replies a message)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {"args": vars(args), "rounds": per_round, "summary": summary, "messages": messages},
                fh,
                indent=2,
            )
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
