"""What durability costs, for ``zactor bench``: checkpointed calls, and noticing a death.

* **Checkpoint cost.** Synchronous calls to a counter saved after every call
  (``checkpoint_every=1``) in each store, beside the same counter without a
  checkpoint and the raw pyzmq round trip, all measured in the same rounds,
  in alternating blocks. A store's cost per call is its p50 minus the
  uncheckpointed p50 of the same round.
* **Failure detection.** A worker hosting an actor with a call in flight is
  SIGKILLed; the time until that call's future raises ``ActorDiedError`` is
  the detection latency (the design target is under 1 s). The head replaces
  the worker before the next trial. Run last: it changes the cluster.
"""

from __future__ import annotations

import os
import signal
import statistics
import time

import numpy as np

#: The stores measured, by label: (store factory given a directory, or None).
STORE_LABELS = (
    "none",
    "FileStore",
    "FileStore(fsync=False)",
    "SQLiteStore",
    "SQLiteStore(fsync=False)",
)
#: Calls in one block before the measurement moves to the next variant.
BLOCK = 50


class _Durable:
    """The counter measured: a plain counter whose state is one int."""

    def __init__(self) -> None:
        self.n = 0

    def increment(self) -> int:
        self.n += 1
        return self.n

    def pid(self) -> int:
        return os.getpid()

    def hold(self, seconds: float) -> None:
        time.sleep(seconds)


def _store(label: str, directory: str):
    import zactor

    if label == "none":
        return None
    fsync = "fsync=False" not in label
    if label.startswith("FileStore"):
        return zactor.FileStore(os.path.join(directory, f"files-{fsync}"), fsync=fsync)
    return zactor.SQLiteStore(os.path.join(directory, f"checkpoints-{fsync}.db"), fsync=fsync)


def make_counters(directory: str) -> dict:
    """One counter per store label (all on the bench's cluster)."""
    import zactor

    remote = zactor.remote(_Durable)
    counters = {}
    for label in STORE_LABELS:
        store = _store(label, directory)
        options = {} if store is None else {"checkpoint": store, "checkpoint_every": 1}
        counters[label] = remote.options(**options).remote()
        zactor.get(counters[label].increment.remote(), timeout=60)  # constructed and saved
    return counters


def _latency_ns(handle, n: int) -> np.ndarray:
    lat = np.empty(n, np.int64)
    call, clock = handle.increment.remote, time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        call().result(timeout=60)
        lat[i] = clock() - t0
    return lat


def checkpoint_round(r: int, calls: int, raw, counters: dict) -> dict:
    """p50 µs of ``calls`` sync calls per variant (and raw), in alternating blocks."""
    variants = ["raw", *counters]
    parts: dict = {v: [] for v in variants}
    blocks = max(1, calls // BLOCK)
    for b in range(blocks):
        order = variants if (b + r) % 2 == 0 else variants[::-1]
        for v in order:
            if v == "raw":
                parts[v].append(raw.latency_ns(BLOCK))
            else:
                parts[v].append(_latency_ns(counters[v], BLOCK))
    return {v: float(np.percentile(np.concatenate(p), 50)) / 1e3 for v, p in parts.items()}


def summarize_checkpoints(rounds: list) -> dict:
    """Medians over rounds: p50 per variant, its ratio to no checkpoint, and the cost a call."""
    out = {}
    for label in ["raw", *STORE_LABELS]:
        p50s = [rnd[label] for rnd in rounds]
        costs = [rnd[label] - rnd["none"] for rnd in rounds]
        out[label] = {
            "p50_us": statistics.median(p50s),
            "x_none": statistics.median(rnd[label] / rnd["none"] for rnd in rounds),
            "x_raw": statistics.median(rnd[label] / rnd["raw"] for rnd in rounds),
            "cost_us": statistics.median(costs),
            "per_round_p50_us": p50s,
        }
    return out


def format_checkpoints(summary: dict, calls: int, rounds: int) -> str:
    """The bench's table of checkpoint costs."""
    lines = [
        f"checkpoint_every=1 cost per sync call ({calls} calls a round per variant, "
        f"{rounds} rounds, interleaved in blocks of {BLOCK}; medians):",
        f"  {'':34}{'p50 µs':>9}{'x no ckpt':>11}{'x raw':>8}{'+µs a call':>12}",
    ]
    for label in ["raw", *STORE_LABELS]:
        row = summary[label]
        name = "raw pyzmq round trip (yardstick)" if label == "raw" else label
        if label == "none":
            name = "no checkpoint"
        cost = "" if label in ("raw", "none") else f"{row['cost_us']:>12,.1f}"
        lines.append(
            f"  {name:34}{row['p50_us']:>9,.1f}{row['x_none']:>10.2f}x{row['x_raw']:>7.2f}x{cost}"
        )
    return "\n".join(lines)


def detection_trials(trials: int, workers: int) -> dict:
    """SIGKILL a worker with a call in flight ``trials`` times; seconds until ActorDiedError."""
    import zactor
    from zactor.api import _cluster_info

    remote = zactor.remote(_Durable)
    seconds = []
    for _ in range(trials):
        victim = remote.remote()
        pid = zactor.get(victim.pid.remote(), timeout=60)
        in_flight = victim.hold.remote(60)
        t0 = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        try:
            in_flight.result(timeout=60)
            raise RuntimeError("a call to a SIGKILLed worker returned a result")
        except zactor.ActorDiedError:
            seconds.append(time.perf_counter() - t0)
        deadline = time.monotonic() + 60
        while len(_cluster_info()["workers"]) < workers and time.monotonic() < deadline:
            time.sleep(0.02)  # the replacement worker registers
    return {"seconds": seconds, "median_s": statistics.median(seconds)}


def format_detection(result: dict) -> str:
    """The bench's line on failure detection."""
    per = ", ".join(f"{s * 1e3:.0f}" for s in result["seconds"])
    return (
        f"failure detection: SIGKILL of a worker -> ActorDiedError of a call in flight: "
        f"median {result['median_s'] * 1e3:.0f} ms over {len(result['seconds'])} "
        f"(per trial ms: {per}); target < 1000 ms: "
        f"{'ok' if result['median_s'] < 1.0 else 'MISS'}"
    )
