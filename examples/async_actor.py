"""Ray's ``AsyncActor`` (seed 002, Example 4-12), on zactor.

The seed defines an actor with an ``async def`` method, which makes it an
async actor: its calls run as coroutines on the actor's own event loop, and
``max_concurrency=5`` lets five of them run at once. Five calls of
``computation(3)``, each awaiting ``asyncio.sleep(1)`` three times, finish
together after about 3 seconds, not 15.

How zactor spells it:

* ``@ray.remote`` → ``@zactor.remote``; the class body is the seed's.
* ``AsyncActor.options(max_concurrency=5).remote()`` is the same. Without
  ``max_concurrency`` an async actor runs up to 1000 calls at once, as in Ray.
* ``ray.get([...])`` → ``zactor.get([...])``. Callers need nothing special:
  calling an async actor looks exactly like calling any other actor.
* The actor's ``print`` runs in a worker process; zactor's workers write to
  the terminal that started the cluster, so its lines show up here too
  (``flush=True`` so they show as they happen).

Run it: ``python examples/async_actor.py [seconds]`` (default 3).
"""

from __future__ import annotations

import asyncio
import sys
import time

import zactor

#: How many calls run at once (the seed's ``max_concurrency=5``).
CONCURRENCY = 5


@zactor.remote
class AsyncActor:
    """The seed's actor: ``computation(num)`` sleeps ``num`` seconds, one second at a time."""

    async def computation(self, num):
        print(f"Actor waiting for {num} sec", flush=True)
        for x in range(num):
            await asyncio.sleep(1)
            print(f"Actor slept for {x + 1} sec", flush=True)
        return num


def main(num: int = 3) -> dict:
    """Five concurrent ``computation(num)`` calls on one actor; returns results and timing."""
    zactor.init(num_workers=2)
    try:
        actor = AsyncActor.options(max_concurrency=CONCURRENCY).remote()
        start = time.monotonic()
        results = zactor.get([actor.computation.remote(num) for _ in range(CONCURRENCY)])
        elapsed = time.monotonic() - start
        print(f"results: {results}")
        print(
            f"{CONCURRENCY} calls of computation({num}) took {elapsed:.1f} s "
            f"(one after another they would take {CONCURRENCY * num} s)"
        )
        return {"results": results, "elapsed": elapsed, "serial": CONCURRENCY * num}
    finally:
        zactor.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
