"""Ray's ``ThreadedActor`` (seed 002, Example 4-13), on zactor.

The seed's actor has only plain methods, and ``max_concurrency=3`` makes it a
threaded actor: up to three of its calls run at once, each on its own thread.
``computation`` blocks in ``time.sleep``, which releases the GIL, so three
calls of ``computation(3)`` finish together after about 3 seconds, not 9.

How zactor spells it:

* ``@ray.remote`` → ``@zactor.remote``; the class body is the seed's (with
  ``time.sleep`` for its bare ``sleep``).
* ``ThreadedActor.options(max_concurrency=3).remote()`` is the same.
* The calls start in the order they were sent, but finish in any order, and
  their code runs on several threads at once: state they share needs a lock,
  as the seed warns.
* The actor's ``print`` runs in a worker process; zactor's workers write to
  the terminal that started the cluster, so its lines show up here too.

Run it: ``python examples/threaded_actor.py [seconds]`` (default 3).
"""

from __future__ import annotations

import sys
import time

import zactor

#: How many calls run at once (the seed's ``max_concurrency=3``).
CONCURRENCY = 3


@zactor.remote
class ThreadedActor:
    """The seed's actor: ``computation(num)`` sleeps ``num`` seconds, one second at a time."""

    def computation(self, num):
        print(f"Actor waiting for {num} sec", flush=True)
        for x in range(num):
            time.sleep(1)
            print(f"Actor slept for {x + 1} sec", flush=True)
        return num


def main(num: int = 3) -> dict:
    """Three concurrent ``computation(num)`` calls on one actor; returns results and timing."""
    zactor.init(num_workers=2)
    try:
        actor = ThreadedActor.options(max_concurrency=CONCURRENCY).remote()
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
