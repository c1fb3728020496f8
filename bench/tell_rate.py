"""Tells/s and pipelined calls/s of one actor, from a plain loop: an end-to-end A/B probe.

Run it alone, alternating the checkouts to compare (ABBA order)::

    PYTHONPATH=/path/to/checkout python bench/tell_rate.py

Prints the medians over 5 passes of 200,000 tells and of 50,000 pipelined
calls, and the calling thread's CPU a tell (``time.thread_time``).
"""

import os
import statistics
import time

import zactor


@zactor.remote
class C:
    def __init__(self):
        self.n = 0

    def inc(self):
        self.n += 1
        return self.n

    def get(self):
        return self.n


zactor.init(num_workers=1)
h = C.remote()
zactor.get(h.inc.remote())
rates, cpus, prates = [], [], []
N = 200_000
for _pass in range(5):
    t = h.inc.tell
    c0, w0 = time.thread_time(), time.perf_counter()
    for _ in range(N):
        t()
    zactor.get(h.get.remote())
    w1, c1 = time.perf_counter(), time.thread_time()
    rates.append(N / (w1 - w0))
    cpus.append((c1 - c0) / N * 1e9)
    rm = h.inc.remote
    w0 = time.perf_counter()
    fs = [rm() for _ in range(50_000)]
    zactor.get(fs)
    prates.append(50_000 / (time.perf_counter() - w0))
print(
    f"{os.path.dirname(zactor.__file__)}: tell/s {statistics.median(rates):,.0f} "
    f"caller ns/tell {statistics.median(cpus):.0f}  "
    f"pipelined/s {statistics.median(prates):,.0f}"
)
zactor.shutdown()
