"""Dask's ``Waiter`` (seed 003, "Coroutines and async/await on the Actor"), on zactor.

The seed's actor has two ``async def`` methods: ``wait()`` awaits an event and
``set()`` sets it. ``wait()`` is called first and does not return until
``set()`` is called, and while it waits it holds no thread, so the actor keeps
answering other calls, ``set()`` among them.

How zactor spells it:

* ``client.submit(Waiter, actor=True).result()`` → ``Waiter.remote()``.
* ``tornado.locks.Event()`` → ``asyncio.Event()``: a zactor async actor runs
  on an asyncio event loop. Its constructor runs on that loop too, so asyncio
  objects made in ``__init__`` belong to the loop its methods run on.
* ``waiter.wait()`` (a Dask ``ActorFuture``) → ``waiter.wait.remote()`` (a
  ``zactor.Future``); ``.result()`` is the same.
* The seed writes ``def Waiter(object):``, a typo for ``class``.

Run it: ``python examples/dask_waiter.py``.
"""

from __future__ import annotations

import asyncio

import zactor

#: How many callers wait on the event at once.
WAITERS = 3


@zactor.remote
class Waiter:
    """The seed's ``Waiter``: ``wait()`` returns once ``set()`` has been called."""

    def __init__(self):
        self.event = asyncio.Event()

    async def set(self):
        self.event.set()

    async def wait(self):
        await self.event.wait()

    async def is_set(self):
        """Not in the seed: answers at once, showing the waits hold no thread."""
        return self.event.is_set()


def main() -> dict:
    """Start ``WAITERS`` waits, check they wait, ``set()``, and collect what they return."""
    zactor.init(num_workers=2)
    try:
        waiter = Waiter.remote()
        waits = [waiter.wait.remote() for _ in range(WAITERS)]  # Dask: waiter.wait()

        # The waits are suspended on the event: the actor still answers other calls.
        is_set = waiter.is_set.remote().result(timeout=30)
        done_before = [w.done() for w in waits]
        print(f"event set: {is_set}; waits done before set(): {done_before}")

        waiter.set.remote().result(timeout=30)  # Dask: waiter.set()
        returned = [w.result(timeout=30) for w in waits]  # Dask: waiter.wait().result()
        print(f"waits returned after set(): {returned}")
        return {"is_set_before": is_set, "done_before": done_before, "returned": returned}
    finally:
        zactor.shutdown()


if __name__ == "__main__":
    main()
