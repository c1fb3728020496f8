"""Seed 000 (Dask, chapter 7), Example 7-3 ("ActorFutures 不可序列化"), through
``zactor.compat.dask``.

The seed's ``inc(x)`` is a task that calls an actor (``counter``, a global)
and returns the actor future's value, because the future itself cannot travel.
The proxy can: it is pickled into each task.

Changed from the seed: its import line (the chapter's earlier
``from dask.distributed import Client``). Scaffolding: the client, the
``Counter`` the seed's ``counter`` is (seed 003's), and running ``inc`` as
tasks. Needs zactor's stateless tasks (``zactor.remote(fn)``).

Run it: ``python examples/compat/dask_actor_futures.py``.
"""

from zactor.compat.dask import Client  # was: from dask.distributed import Client

client = Client()  # scaffolding: the chapter's client


class Counter:  # scaffolding: seed 003's Counter, which the seed's `counter` is
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


counter = client.submit(Counter, actor=True).result()  # scaffolding

# -- seed 000, Example 7-3 -------------------------------------------------------------------

def inc(x):
    import time
    time.sleep(x)
    f = counter.add(x)
    # Note: the actor (in this case `counter`) is serializable; 
    # however, the future we get back from it is not.
    # This is likely because the future contains a network connection 
    # to the actor, so need to get its concrete value here. If we don't
    # need the value, you can avoid blocking and it will still execute.
    return f.result()

# -- scaffolding: run inc as tasks -------------------------------------------------------------
results = client.gather(client.map(inc, [0.1, 0.2, 0.3]))  # each: the counter after its add
print(f"tasks: {len(results)}, the last add saw {round(max(results), 6)}")
print(f"counter.n: {round(counter.n, 6)}")
client.close()
