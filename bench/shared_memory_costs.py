"""What same-host buffers cost through shared memory: the pieces, and where it pays.

Run with::

    python bench/shared_memory_costs.py            # both parts
    python bench/shared_memory_costs.py --parts    # the pieces only (no cluster)

Two parts, the figures behind the choices in ``zactor/transport/shared_memory.py``
(docs/internals.md, "Same-host buffers through shared memory"):

1. ``--parts``, in one process, medians of 20 (ms) for 1 MiB and 16 MiB: a fresh
   segment written and unlinked (tmpfs allocates and zeroes every page), a
   mapped segment read after ``mmap`` with ``MAP_POPULATE`` (the page-table
   walk of mapping a segment per message), a copy into a slot already mapped
   (what a pool costs a message), a copy out of it (what the receiver would pay
   instead of lending the slot), and numpy's ``w += a`` (the bench actor's work),
   as yardsticks of one pass over the bytes.
2. The crossover: on an embedded one-worker cluster, MB/s of streams of float32
   arrays of 32 KiB to 512 KiB (4 updates in flight, as ``zactor bench``'s
   numpy rows), with shared memory on and off in the driver (its
   ``MIN_BYTES``; the actor returns None), alternated 3 times; medians.
"""

from __future__ import annotations

import argparse
import collections
import mmap
import os
import statistics
import time

import numpy as np

SEGMENT = "/dev/shm/zactor-bench-costs"


def _median_ms(fn, n: int = 20) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _pieces(mib: int) -> list[float]:
    """The pieces' median costs (ms) for a ``mib`` MiB float32 array."""
    a = np.ones(mib << 18, np.float32)
    w = np.zeros_like(a)
    data = a.data.cast("B")

    def fresh():
        fd = os.open(SEGMENT, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, a)
        os.close(fd)
        os.unlink(SEGMENT)

    out = [_median_ms(fresh)]
    fd = os.open(SEGMENT, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, a)
    slot = mmap.mmap(fd, a.nbytes)

    def map_and_read():
        flags = mmap.MAP_SHARED | mmap.MAP_POPULATE
        m = mmap.mmap(fd, a.nbytes, flags=flags, prot=mmap.PROT_READ)
        view = np.frombuffer(m, np.float32)
        view.sum()
        del view
        m.close()

    def copy_in():
        slot[: a.nbytes] = data

    try:
        out.append(_median_ms(map_and_read))
        out.append(_median_ms(a.sum))
        out.append(_median_ms(copy_in))
        out.append(_median_ms(lambda: slot[: a.nbytes]))
        out.append(_median_ms(lambda: w.__iadd__(a)))
    finally:
        slot.close()
        os.close(fd)
        os.unlink(SEGMENT)
    return out


def parts() -> None:
    """Print the pieces' costs (part 1)."""
    print("pieces, one process, median of 20 (ms):")
    heads = ("fresh seg", "map+read", "read", "copy in", "copy out", "w += a")
    print(f"{'size':>8} " + " ".join(f"{h:>9}" for h in heads))
    for mib in (1, 16):
        print(f"{mib:>4} MiB " + " ".join(f"{ms:>9.2f}" for ms in _pieces(mib)))


class _Accumulator:
    def __init__(self, size: int) -> None:
        self.w = np.zeros(size, np.float32)

    def add(self, a) -> None:
        self.w += a


def crossover(rounds: int = 3, updates: int = 2000) -> None:
    """Print MB/s with shared memory on and off per array size (part 2)."""
    import zactor
    from zactor.transport import shared_memory

    default = shared_memory.MIN_BYTES
    zactor.init(num_workers=1)
    try:
        accumulator = zactor.remote(_Accumulator)
        print(
            f"\nMB/s, 4 in flight, {updates} updates a run, medians of {rounds} alternations "
            f"(MIN_BYTES now {default // 1024} KiB):"
        )
        print(f"{'size':>8} {'shm off':>9} {'shm on':>9} {'on/off':>7}")
        for kib in (32, 64, 128, 256, 512):
            a = np.ones(kib << 8, np.float32)
            h = accumulator.remote(a.size)
            h.add.remote(a).result(timeout=60)
            rates = {"off": [], "on": []}
            for _ in range(rounds):
                for side in ("off", "on"):
                    shared_memory.MIN_BYTES = 1 << 40 if side == "off" else 16 * 1024
                    window: collections.deque = collections.deque()
                    t0 = time.perf_counter()
                    for _ in range(updates):
                        if len(window) >= 4:
                            window.popleft().result(timeout=60)
                        window.append(h.add.remote(a))
                    for f in window:
                        f.result(timeout=60)
                    rates[side].append(a.nbytes * updates / (time.perf_counter() - t0) / 1e6)
            off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
            print(f"{kib:>4} KiB {off:>9,.0f} {on:>9,.0f} {on / off:>6.2f}x")
    finally:
        shared_memory.MIN_BYTES = default
        zactor.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", action="store_true", help="the pieces only (no cluster)")
    args = parser.parse_args()
    parts()
    if not args.parts:
        crossover()


if __name__ == "__main__":
    main()
