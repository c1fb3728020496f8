"""Seed 002 (Ray, chapter 4), Examples 4-12 and 4-13, through ``zactor.compat.ray``:
an async actor (``AsyncActor``, ``max_concurrency=5``) and a threaded actor
(``ThreadedActor``, ``max_concurrency=3``).

Changed from the seed: its import line (``import ray``, earlier in the
chapter). 4-13's ``print(f'... \\{num} sec')`` keeps the seed's ``\\{``, a
rendering artefact of the translation: those lines print a backslash before
the number. Scaffolding, marked: the imports the seed leaves out
(``asyncio``, ``sleep``), ``ray.init()``, and calling each actor as many
times as it runs at once, with 1 s (the seed does not show its calls).

The actors' prints run in worker processes, whose output zactor sends to
the terminal that started the cluster.

Run it: ``python examples/compat/ray_concurrency.py``.
"""

import asyncio  # scaffolding: the seed's imports
from time import sleep  # scaffolding

import zactor.compat.ray as ray  # was: import ray

ray.init()  # scaffolding: the chapter's setup

# -- seed 002, Example 4-12 ------------------------------------------------------------------

@ray.remote
class AsyncActor:
    async def computation(self, num):
        print(f'Actor waiting for {num} sec')
        for x in range(num):
            await asyncio.sleep(1)
            print(f'Actor slept for {x+1} sec')
        return num

actor = AsyncActor.options(max_concurrency=5).remote()

print(f"async results: {ray.get([actor.computation.remote(1) for _ in range(5)])}")  # scaffolding

# -- seed 002, Example 4-13 ------------------------------------------------------------------

@ray.remote
class ThreadedActor:
  def computation(self, num):
    print(f'Actor waiting for \{num} sec')
    for x in range(num):
      sleep(1)
      print(f'Actor slept for \{x+1} sec')
    return num

actor = ThreadedActor.options(max_concurrency=3).remote()

print(f"threaded results: {ray.get([actor.computation.remote(1) for _ in range(3)])}")  # scaffolding
ray.shutdown()  # scaffolding
