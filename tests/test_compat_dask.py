"""``from zactor.compat.dask import Client``: Dask actor code runs on zactor unchanged.

Most tests use the session's cluster, which ``Client()`` then shares (and
``close()`` leaves running). Clusters a client or a ``LocalCluster`` start
and stop are tested in a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import subprocess
import sys
import textwrap

import pytest
from gates import needs_tasks, wait_for_file

import zactor
from zactor.compat.dask import Actor, ActorFuture, Client
from zactor.compat.dask.distributed import Future


class Counter:
    """Dask's documented Counter, plus a property and a held method."""

    n = 0

    def __init__(self, start=0):
        self.n = start
        self.note = "instance attribute"

    def increment(self):
        self.n += 1
        return self.n

    def add(self, x):
        self.n += x
        return self.n

    @property
    def doubled(self):
        return 2 * self.n

    def hold(self, path):
        wait_for_file(path)
        return self.n

    def _private(self):
        return "hidden"


class Broken:
    def __init__(self):
        raise ValueError("cannot open the account")


class User:
    """An actor that is handed a proxy and uses it, from a plain and an async method."""

    def use(self, counter):
        return counter.add(5).result(), counter.n  # attribute reads block in a thread

    async def use_async(self, counter):
        await counter.increment()
        return await counter.n  # inside a coroutine they are awaitable, as on Dask workers


@pytest.fixture
def client(cluster):
    c = Client()
    try:
        yield c
    finally:
        c.close()


def test_submit_actor_gives_a_proxy(client):
    future = client.submit(Counter, actor=True)
    assert isinstance(future, Future)
    counter = future.result(timeout=30)
    assert isinstance(counter, Actor)
    assert future.done() and future.status == "finished"
    assert repr(counter) == f"<Actor: Counter, key={future.key}>"
    assert future.key.startswith("Counter-")
    f = counter.increment()
    assert isinstance(f, ActorFuture)
    assert f.result() == 1
    assert counter.add(10).result() == 11


def test_attributes_are_read_in_the_actor(client):
    counter = client.submit(Counter, 4, actors=True).result()  # Dask's other spelling
    assert counter.n == 4
    counter.increment().result()
    assert counter.n == 5  # read again, remotely: not a cached copy
    assert counter.doubled == 10  # a property runs in the actor
    assert counter.note == "instance attribute"
    assert dir(counter) == ["add", "doubled", "hold", "increment", "n"]


def test_missing_and_private_names(client):
    counter = client.submit(Counter, actor=True).result()
    with pytest.raises(AttributeError, match="has no attribute 'missing'"):
        _ = counter.missing
    with pytest.raises(AttributeError, match="public names only"):
        _ = counter._private


def test_method_futures_do_not_block(client, gate):
    counter = client.submit(Counter, actor=True).result()
    held = counter.hold(gate.path)  # returns at once; the call waits for the gate
    queued = counter.increment()  # runs after hold(), one call at a time
    assert not held.done()
    gate.open()
    assert held.result(timeout=30) == 0
    assert queued.result(timeout=30) == 1


def test_constructor_error_is_raised_by_result(client):
    future = client.submit(Broken, actor=True)
    with pytest.raises(ValueError, match="cannot open the account"):
        future.result(timeout=30)
    assert future.status == "error"
    assert isinstance(future.exception(), ValueError)


def test_async_use(client):
    async def main():
        async with Client(asynchronous=True) as aclient:
            counter = await aclient.submit(Counter, actor=True)
            await counter.increment()
            n = await counter.n
            return n, await counter.add(2)

    assert asyncio.run(main()) == (1, 3)


def test_awaiting_an_asynchronous_client_and_close(cluster):
    async def main():
        aclient = await Client(asynchronous=True)
        counter = await aclient.submit(Counter, actor=True)
        pending = counter.n
        assert isinstance(pending, ActorFuture)  # not read yet: awaitable
        value = await pending
        await aclient.close()
        return value

    assert asyncio.run(main()) == 0
    assert zactor.is_initialized()  # the session's cluster: not this client's to stop


def test_proxies_travel_to_other_actors(client):
    counter = client.submit(Counter, actor=True).result()
    user = client.submit(User, actor=True).result()
    assert user.use(counter).result(timeout=30) == (5, 5)
    assert user.use_async(counter).result(timeout=30) == 6
    copy = pickle.loads(pickle.dumps(counter))
    assert copy == counter and copy.n == 6


def test_map_and_gather(client):
    futures = client.map(Counter, [1, 2, 3], actor=True)
    counters = client.gather(futures)
    assert [c.n for c in counters] == [1, 2, 3]
    assert client.gather(futures[0]) is counters[0]


def test_options_zactor_lacks_raise_not_implemented(client):
    with pytest.raises(NotImplementedError, match="workers=\\['w1'\\]"):
        client.submit(Counter, actor=True, workers=["w1"])
    with pytest.raises(NotImplementedError, match="retries=2"):
        client.submit(Counter, actor=True, retries=2)
    with pytest.raises(NotImplementedError, match="security="):
        Client(security=object())
    # Keywords that change nothing observable are accepted.
    quiet = Client(threads_per_worker=1, processes=True, dashboard_address=None)
    quiet.close()


def test_future_is_not_picklable(client):
    future = client.submit(Counter, actor=True)
    with pytest.raises(TypeError, match="cannot be sent to another process"):
        pickle.dumps(future)


@needs_tasks
def test_submit_function_runs_a_task(client):
    def inc(x, by=1):
        return x + by

    first = client.submit(inc, 1)
    assert first.result(timeout=60) == 2
    assert client.submit(inc, first, by=first).result(timeout=60) == 4  # futures as values
    assert client.gather(client.map(inc, [1, 2, 3])) == [2, 3, 4]


# -- clusters a client starts (own processes) -------------------------------------------------

LIFETIME_SCRIPT = textwrap.dedent(
    """
    import json
    import zactor
    from zactor.compat.dask import Client, LocalCluster

    class Counter:
        n = 0
        def increment(self):
            self.n += 1
            return self.n

    out = {}
    with LocalCluster(n_workers=1, threads_per_worker=2) as cluster:
        with Client(cluster) as client:
            counter = client.submit(Counter, actor=True).result()
            out["value"] = counter.increment().result()
            out["workers"] = zactor.cluster_resources()["CPU"]
        out["after_client"] = zactor.is_initialized()   # the cluster's, not the client's
    out["after_cluster"] = zactor.is_initialized()

    client = Client(n_workers=1)
    out["own"] = client.submit(Counter, actor=True).result().increment().result()
    client.close()
    out["after_own"] = zactor.is_initialized()
    print("RESULT " + json.dumps(out))
    """
)


@pytest.mark.timeout(150)
def test_clients_and_local_clusters_start_and_stop_zactor():
    proc = subprocess.run(
        [sys.executable, "-c", LIFETIME_SCRIPT], capture_output=True, text=True, timeout=140
    )
    assert proc.returncode == 0, proc.stderr
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert json.loads(line[len("RESULT ") :]) == {
        "value": 1,
        "workers": 1.0,
        "after_client": True,
        "after_cluster": False,
        "own": 1,
        "after_own": False,
    }
