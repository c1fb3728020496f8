"""Counters from the seeds, on zactor.

Mirrors three seed examples:

* Dask's ``Counter`` (seed 003, "Example", and its async/await section): an
  actor with ``increment`` and ``add``; ``increment()`` gives 1, ``add(10)``
  gives 11.
* Ray's ``Counter`` (seed 004, "使用actor"): ten counters incremented once
  each, in parallel (``[1, 1, 1, 1, 1, 1, 1, 1, 1, 1]``), then the first one
  five times in a row (``[2, 3, 4, 5, 6]``).
* Ray's "passing actor handles" (seed 004, "传递actor句柄"): other code
  receives the counter's handle and increments it directly. The seed uses a
  remote *function* ``f`` with ``while True``; zactor has no stateless tasks
  yet, so a small ``Incrementer`` actor receives the handle and increments a
  bounded number of times.

How zactor spells it:

* ``client.submit(Counter, actor=True).result()`` (Dask) and
  ``Counter.remote()`` (Ray) → ``Counter.remote()`` on a class decorated with
  ``@zactor.remote``; the handle comes back at once.
* ``counter.increment()`` (Dask, returns an ``ActorFuture``) →
  ``counter.increment.remote()`` (returns a ``zactor.Future``);
  ``future.result()`` and ``zactor.get(...)`` (Ray's ``ray.get``) both work.
* Dask's blocking attribute access ``counter.n`` → a method,
  ``counter.value.remote()``: a zactor handle only exposes methods.
* ``await counter.increment()`` (Dask in a coroutine) →
  ``await counter.increment.remote()``: a ``zactor.Future`` is awaitable from
  any asyncio loop.
* ``f.remote(counter)`` with ``counter.inc.remote()`` inside (Ray) →
  ``incrementer.run.remote(counter, times)`` whose method calls
  ``counter.inc.tell()`` (a one-way call, like Ray's ignored ``.remote()``).

Run it: ``python examples/counter.py``.
"""

from __future__ import annotations

import asyncio

import zactor

#: How many increments each Incrementer sends in the handle-passing example.
INCREMENTS_PER_TASK = 1000
#: How many Incrementer actors share the one counter (the seed starts 4 tasks).
NUM_INCREMENTERS = 4


@zactor.remote
class Counter:
    """A simple class to manage an incrementing counter (Dask's ``Counter``)."""

    n = 0

    def __init__(self):
        self.n = 0

    def increment(self):
        self.n += 1
        return self.n

    def add(self, x):
        self.n += x
        return self.n

    def value(self):
        """Dask reads ``counter.n`` as an attribute; zactor calls a method."""
        return self.n


@zactor.remote
class RayCounter:
    """Ray's first ``Counter``: ``increment`` returns the new value."""

    def __init__(self):
        self.value = 0

    def increment(self):
        self.value += 1
        return self.value


@zactor.remote
class SharedCounter:
    """Ray's ``Counter`` from "passing actor handles": ``inc`` and ``get_counter``."""

    def __init__(self):
        self.counter = 0

    def inc(self):
        self.counter += 1

    def get_counter(self):
        return self.counter


@zactor.remote
class Incrementer:
    """Stands in for the seed's remote function ``f(counter)``."""

    def run(self, counter, times):
        """Increment ``counter`` (a handle passed in by the driver) ``times`` times."""
        for _ in range(times):
            counter.inc.tell()
        # Calls from one caller run in the order sent, so once this call
        # returns every ``inc`` above has run.
        zactor.get(counter.get_counter.remote(), timeout=60)
        return times


def dask_counter() -> dict:
    """Seed 003: ``increment()`` → 1, ``add(10)`` → 11, then the async spelling."""
    counter = Counter.remote()  # Dask: client.submit(Counter, actor=True).result()
    print(counter)

    future = counter.increment.remote()  # Dask: counter.increment()
    incremented = future.result()
    print(incremented)  # 1

    future = counter.add.remote(10)  # Dask: counter.add(10)
    added = future.result()
    print(added)  # 11

    n = zactor.get(counter.value.remote())  # Dask: counter.n
    print(n)  # 11

    async def f():
        await counter.increment.remote()  # Dask: await counter.increment()
        return await counter.value.remote()  # Dask: await counter.n

    awaited = asyncio.run(f())
    print(awaited)  # 12
    return {"increment": incremented, "add": added, "n": n, "awaited": awaited}


def ray_counters() -> dict:
    """Seed 004: ten counters in parallel, then one counter five times in a row."""
    counters = [RayCounter.remote() for _ in range(10)]

    # Increment each counter once and get the results; these calls run in parallel.
    parallel = zactor.get([c.increment.remote() for c in counters])
    print(parallel)  # [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]

    # Increment the first counter five times; these calls run in order and share state.
    serial = zactor.get([counters[0].increment.remote() for _ in range(5)])
    print(serial)  # [2, 3, 4, 5, 6]
    return {"parallel": parallel, "serial": serial}


def passing_handles() -> dict:
    """Seed 004: pass the counter's handle to others, who increment it directly."""
    counter = SharedCounter.remote()
    incrementers = [Incrementer.remote() for _ in range(NUM_INCREMENTERS)]

    # Start some tasks that use the actor (the seed: [f.remote(counter) for _ in range(4)]).
    runs = [i.run.remote(counter, INCREMENTS_PER_TASK) for i in incrementers]

    # Print the counter's value while they run.
    samples = []
    for _ in range(10):
        value = zactor.get(counter.get_counter.remote())
        samples.append(value)
        print(value)

    done = zactor.get(runs, timeout=120)
    total = zactor.get(counter.get_counter.remote())
    print(f"total after {len(done)} incrementers: {total}")  # 4000
    return {"samples": samples, "total": total, "expected": sum(done)}


def main() -> dict:
    zactor.init(num_workers=2)
    try:
        return {
            "dask": dask_counter(),
            "ray": ray_counters(),
            "handles": passing_handles(),
        }
    finally:
        zactor.shutdown()


if __name__ == "__main__":
    main()
