"""Seed 003 (Dask's documentation, "Actors"): every code block but the Waiter's,
through ``zactor.compat.dask``.

Sections, in the seed's order: "Example" (the ``Counter``, a client,
``increment`` and ``add``), "Create an Actor", "Call Remote Methods",
"Access Attributes" and "Calling from coroutines and async/await". The
seed's ``>>>`` blocks run as doctests: their printed results (the proxy's
repr, ``dir(counter)``, the values) are checked against the seed's.

Changed from the seed: its import line, ``from dask.distributed import
Client`` → ``from zactor.compat.dask import Client``. Scaffolding, marked:
running the ``>>>`` blocks as doctests, printing what the "Example" block
only computes, and running the coroutine ``f()``, which (as in Dask) needs
an asynchronous client: ``Client(asynchronous=True)``, over the same cluster.

Run it: ``python examples/compat/dask_counter.py``.
"""

import asyncio  # scaffolding
import doctest  # scaffolding


def run_doctest(text, name):  # scaffolding: a ``>>>`` block of the seed, checked
    test = doctest.DocTestParser().get_doctest(text, globals(), name, __file__, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test, clear_globs=False)
    globals().update(test.globs)  # as one interactive session: later blocks see its names
    print(f"doctest {name}: {runner.failures} failed of {runner.tries}")


# -- seed 003, "Example" ---------------------------------------------------------------------

class Counter:
    """ A simple class to manage an incrementing counter """
    n = 0

    def __init__(self):
        self.n = 0

    def increment(self):
        self.n += 1
        return self.n

    def add(self, x):
        self.n += x
        return self.n

from zactor.compat.dask import Client        # Start a Dask Client  (was: dask.distributed)
client = Client()

future = client.submit(Counter, actor=True)  # Create a Counter on a worker
counter = future.result()                    # Get back a pointer to that object

counter
# <Actor: Counter, key=Counter-1234abcd>

future = counter.increment()                 # Call remote method
future.result()                              # Get back result
# 1

print(f"increment: {future.result()}")  # scaffolding

future = counter.add(10)                     # Call remote method
future.result()                              # Get back result
# 11

print(f"add: {future.result()}")  # scaffolding

# -- seed 003, "Create an Actor" -------------------------------------------------------------

future = client.submit(Counter, actors=True)

run_doctest(  # scaffolding around the seed's block
    """
>>> counter = future.result()
>>> counter
<Actor: Counter, key=...>

>>> dir(counter)
['add', 'increment', 'n']
""",
    "create-an-actor",
)

# -- seed 003, "Call Remote Methods" ---------------------------------------------------------

run_doctest(  # scaffolding around the seed's block
    """
>>> future = counter.increment()  # Immediately returns an ActorFuture
>>> future.result()               # Block until finished and result arrives
1
""",
    "call-remote-methods",
)

# -- seed 003, "Access Attributes" -----------------------------------------------------------

full_counter = Counter  # scaffolding: the block below elides the class's methods ("...")

class Counter:
    n = 0   # Recall that we defined our class with `n` as a class variable

    ...

run_doctest(  # scaffolding around the seed's block
    """
>>> counter.n                     # Blocks until finished
1
""",
    "access-attributes",
)

# -- seed 003, "Calling from coroutines and async/await" -------------------------------------

async def f():
    counter = await client.submit(Counter, actor=True)

    await counter.increment()
    n = await counter.n

# -- scaffolding: run f(), then close ---------------------------------------------------------
# The "Access Attributes" block's "..." stands for the rest of the class: f() gets it back.
Counter = full_counter


async def run_f():
    # As in Dask, awaiting an attribute needs an asynchronous client; it shares the cluster.
    global client
    sync_client = client
    async with Client(asynchronous=True) as client:
        await f()
    client = sync_client
    print("f() ran: awaited submit, increment() and counter.n")


asyncio.run(run_f())
client.close()
