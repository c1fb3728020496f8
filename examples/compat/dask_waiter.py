"""Seed 003 (Dask's documentation, "Actors"), "Coroutines and async/await on the
Actor": the ``Waiter``, through ``zactor.compat.dask``.

``wait()`` awaits a ``tornado.locks.Event`` that ``set()`` sets. Both are
``async def``, so the actor is an async actor: a waiting ``wait()`` holds no
thread, and ``set()`` runs meanwhile.

Changed from the seed: the import line, and one fix the seed needs to run at
all: it writes ``def Waiter(object):``, a typo for ``class Waiter(object):``.
Scaffolding, marked: the client, ``import tornado.locks`` (which the seed
leaves out; tornado is a test dependency), and calling ``set()``: run as
written, the seed's last line waits forever, as nothing sets the event. The
scaffolding starts a ``wait()``, calls ``set()``, and then runs the seed's
line, which returns at once, as does the earlier ``wait()``.

Run it: ``python examples/compat/dask_waiter.py``.
"""

import tornado.locks  # scaffolding: the seed uses tornado without importing it

from zactor.compat.dask import Client  # was: from dask.distributed import Client

client = Client()  # scaffolding

# -- seed 003, "Coroutines and async/await on the Actor" ------------------------------------

class Waiter(object):  # the seed: `def Waiter(object):`, a typo
    def __init__(self):
        self.event = tornado.locks.Event()

    async def set(self):
        self.event.set()

    async def wait(self):
        await self.event.wait()

waiter = client.submit(Waiter, actor=True).result()

# -- scaffolding: a wait started before set() ---------------------------------------------------
pending = waiter.wait()
waiter.set().result()

waiter.wait().result()  # waits until set, without consuming a worker thread

print(f"waits returned after set(): {pending.result(timeout=30)}")  # scaffolding
client.close()  # scaffolding
