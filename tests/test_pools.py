"""Tests of ``zactor.ActorPool`` (Ray's semantics) and ``zactor.HashPool`` (consistent hashing).

The pools run over the session's embedded cluster (the ``cluster`` fixture).
The pool examples (``examples/sketchy_bank.py``, ``examples/ray_account_pool.py``
and ``examples/parameter_server.py``) run in subprocesses, each with its own
cluster, as ``tests/test_examples.py`` runs the other examples.
"""

from __future__ import annotations

import os
import pickle
import time

import cloudpickle
import numpy as np
import pytest
from examples_runner import run_main
from examples_runner import script_lines as run_script

import zactor
from zactor.wire import hotpath as _hotpath

pytestmark = pytest.mark.timeout(120)

CALL_TIMEOUT = 30


@zactor.remote
class Doubler:
    """Stateless work for an ActorPool."""

    def double(self, v):
        if v < 0:
            raise ValueError(f"negative value {v}")
        return 2 * v

    def held(self, path, v):
        """Return ``v`` once the gate file at ``path`` exists (or after 30 s)."""
        deadline = time.monotonic() + 30
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.002)
        return v

    def pair(self, v):
        return (v, 2 * v)


@zactor.remote
class PoolUser:
    """An actor that receives an ActorPool or a HashPool, as the seeds pass pools to actors."""

    def run_map(self, pool, values):
        return list(pool.map(lambda a, v: a.double.remote(v), values))

    def route(self, pool, keys):
        shards = [pool.shard_of_key(k) for k in keys]
        stored = zactor.get([pool.for_key(k).put.remote(k, "from-actor") for k in keys])
        return shards, stored


@zactor.remote
class Store:
    """A shard of a key-value store: the state a HashPool partitions."""

    def __init__(self, label="store", start=0):
        self.label = label
        self.start = start
        self.data = {}

    def put(self, key, value):
        self.data[key] = value
        return len(self.data)

    def get(self, key):
        return self.data.get(key)

    def keys(self):
        return sorted(self.data, key=repr)

    def config(self):
        return (self.label, self.start)

    def export_keys(self, new_size, my_index):
        """Remove and return the items whose shard among ``new_size`` is not ``my_index``."""
        moving = {k: v for k, v in self.data.items() if zactor_shard(k, new_size) != my_index}
        for k in moving:
            del self.data[k]
        return moving

    def import_keys(self, items):
        self.data.update(items)
        return len(self.data)


def zactor_shard(key, n):
    """The shard of ``key`` among ``n`` (what HashPool.for_key uses)."""
    return _hotpath.shard_of_key(key, n)


# -- ActorPool --------------------------------------------------------------------------------


def _double(a, v):
    return a.double.remote(v)


@pytest.fixture
def doublers(cluster):
    handles = [Doubler.remote() for _ in range(3)]
    yield handles
    for h in handles:
        zactor.kill(h)


def test_map_returns_results_in_submit_order(doublers):
    pool = zactor.ActorPool(doublers)
    assert list(pool.map(_double, range(20))) == [2 * v for v in range(20)]
    assert not pool.has_next()
    assert sorted(pool.map_unordered(_double, range(20))) == [2 * v for v in range(20)]


def test_submit_queues_past_the_actors_and_get_next_keeps_submit_order(doublers, gate):
    pool = zactor.ActorPool(doublers[:2])
    pool.submit(lambda a, v: a.held.remote(gate.path, v), "first")  # both actors held
    pool.submit(lambda a, v: a.held.remote(gate.path, v), "second")
    for v in range(5):
        pool.submit(lambda a, v: a.double.remote(v), v)
    assert pool.has_next()
    assert not pool.has_free()  # work is queued
    gate.open()
    expected = ["first", "second", 0, 2, 4, 6, 8]
    assert [pool.get_next(timeout=CALL_TIMEOUT) for _ in range(7)] == expected
    assert not pool.has_next()
    assert pool.has_free()
    with pytest.raises(StopIteration):
        pool.get_next()
    with pytest.raises(StopIteration):
        pool.get_next_unordered()


class Recorder:
    """An ``fn`` for ``submit`` that keeps the futures it made, to see when the pool calls it."""

    def __init__(self) -> None:
        self.futures: list = []

    def __call__(self, actor, value):
        self.futures.append(actor.double.remote(value))
        return self.futures[-1]


def test_an_actor_stays_busy_until_get_next_takes_its_result(doublers):
    # Ray's has_free() example: the call is done, but its actor is free only once
    # get_next has returned the result.
    pool = zactor.ActorPool(doublers[:1])
    record = Recorder()
    pool.submit(record, 1)
    assert record.futures[0].result(timeout=CALL_TIMEOUT) == 2  # the call is done ...
    assert not pool.has_free()  # ... and its actor still busy
    assert pool.pop_idle() is None
    assert len(pool) == 1
    assert pool.get_next(timeout=CALL_TIMEOUT) == 2
    assert pool.has_free()
    assert pool.pop_idle() == doublers[0]
    assert len(pool) == 0


def test_get_next_unordered_frees_the_actor_of_the_result_it_takes(doublers):
    pool = zactor.ActorPool(doublers[:2])
    record = Recorder()
    pool.submit(record, 1)
    pool.submit(record, 2)
    zactor.get(record.futures, timeout=CALL_TIMEOUT)
    assert not pool.has_free()
    first = pool.get_next_unordered(timeout=CALL_TIMEOUT)
    assert first in (2, 4)
    assert pool.has_free()
    assert pool.pop_idle() is not None
    assert not pool.has_free()  # the other actor waits for its result to be taken
    assert pool.get_next_unordered(timeout=CALL_TIMEOUT) == 6 - first
    assert pool.has_free()


def test_work_queued_behind_a_finished_call_starts_when_its_result_is_taken(doublers):
    pool = zactor.ActorPool(doublers[:1])
    record = Recorder()
    pool.submit(record, 1)
    record.futures[0].result(timeout=CALL_TIMEOUT)
    pool.submit(record, 2)  # the only actor is still busy: queued, fn not called
    assert len(record.futures) == 1
    assert pool.has_next() and not pool.has_free()
    assert pool.get_next(timeout=CALL_TIMEOUT) == 2
    assert len(record.futures) == 2  # taking the first result started the queued call
    assert not pool.has_free()
    assert pool.get_next(timeout=CALL_TIMEOUT) == 4
    assert pool.has_free() and not pool.has_next()


def test_ignore_if_timedout_frees_the_actor_at_once(doublers, gate):
    # As in Ray, dropping a result frees its actor although the dropped call still
    # runs: work given to that actor waits behind the call on the actor itself.
    pool = zactor.ActorPool(doublers[:1])
    pool.submit(lambda a, v: a.held.remote(gate.path, v), "dropped")
    with pytest.raises(TimeoutError, match="ignored"):
        pool.get_next(timeout=0, ignore_if_timedout=True)
    assert pool.has_free() and not pool.has_next()
    record = Recorder()
    pool.submit(record, 3)
    assert len(record.futures) == 1  # started at once, on the actor still running "dropped"
    gate.open()
    assert pool.get_next(timeout=CALL_TIMEOUT) == 6


def test_map_still_starts_earlier_queued_work_and_drops_its_results(doublers, gate):
    # Ray's map drains earlier submissions by dropping their results, which frees
    # their actors and so starts the submissions still queued: they run, before
    # map's own calls on the same actors, and only their results are lost.
    pool = zactor.ActorPool(doublers[:1])
    pool.submit(lambda a, v: a.held.remote(gate.path, v), "earlier")
    record = Recorder()
    pool.submit(record, 5)  # queued behind the held call
    pool.submit(lambda a, v: a.double.remote(v), -1)  # its error is never raised
    results = pool.map(_double, [1, 2])
    assert len(record.futures) == 1
    gate.open()
    assert list(results) == [2, 4]
    assert record.futures[0].result(timeout=CALL_TIMEOUT) == 10
    assert pool.has_free() and not pool.has_next()


def test_map_drops_queued_work_of_a_pool_with_no_actor(doublers):
    pool = zactor.ActorPool([])
    record = Recorder()
    pool.submit(record, 1)
    assert list(pool.map_unordered(_double, [])) == []
    assert not pool.has_next()
    pool.push(doublers[0])
    assert not record.futures and pool.has_free()


def test_a_timeout_leaves_the_pool_usable(doublers, gate):
    pool = zactor.ActorPool(doublers[:1])
    pool.submit(lambda a, v: a.held.remote(gate.path, v), "slow")
    pool.submit(_double, 5)
    with pytest.raises(zactor.GetTimeoutError) as info:
        pool.get_next(timeout=0.05)
    assert isinstance(info.value, TimeoutError)
    with pytest.raises(TimeoutError):
        pool.get_next_unordered(timeout=0.05)
    assert pool.has_next()
    gate.open()
    assert pool.get_next(timeout=CALL_TIMEOUT) == "slow"
    assert pool.get_next(timeout=CALL_TIMEOUT) == 10
    assert list(pool.map(_double, [1, 2])) == [2, 4]


def test_ignore_if_timedout_drops_that_result(doublers, gate):
    pool = zactor.ActorPool(doublers[:1])
    pool.submit(lambda a, v: a.held.remote(gate.path, v), "dropped")
    pool.submit(_double, 3)
    with pytest.raises(TimeoutError):
        pool.get_next(timeout=0.05, ignore_if_timedout=True)
    gate.open()
    assert pool.get_next(timeout=CALL_TIMEOUT) == 6
    assert not pool.has_next()


def test_an_error_surfaces_on_its_own_result_only(doublers):
    pool = zactor.ActorPool(doublers)
    for v in [1, -1, 2, -2, 3]:
        pool.submit(_double, v)
    assert pool.get_next(timeout=CALL_TIMEOUT) == 2
    with pytest.raises(ValueError, match="negative value -1") as info:
        pool.get_next(timeout=CALL_TIMEOUT)
    assert isinstance(info.value, zactor.ActorError)
    assert pool.get_next(timeout=CALL_TIMEOUT) == 4
    with pytest.raises(ValueError, match="negative value -2"):
        pool.get_next(timeout=CALL_TIMEOUT)
    assert pool.get_next(timeout=CALL_TIMEOUT) == 6
    # The actors are all back and keep working.
    assert len(pool) == 3 and pool.has_free()
    assert list(pool.map(_double, [4, 5])) == [8, 10]


def test_fn_errors_at_submit_raise_at_once_and_queued_ones_on_their_result(doublers, gate):
    pool = zactor.ActorPool(doublers[:1])
    with pytest.raises(AttributeError, match="no method 'nope'"):
        pool.submit(lambda a, v: a.nope.remote(v), 1)
    assert pool.has_free() and not pool.has_next()
    with pytest.raises(TypeError, match="must return the zactor.Future"):
        pool.submit(lambda a, v: v, 1)
    pool.submit(lambda a, v: a.held.remote(gate.path, v), 1)  # holds the only actor
    pool.submit(lambda a, v: a.nope.remote(v), 2)  # queued: fails when dispatched
    pool.submit(_double, 3)
    gate.open()
    assert pool.get_next(timeout=CALL_TIMEOUT) == 1
    with pytest.raises(AttributeError, match="no method 'nope'"):
        pool.get_next(timeout=CALL_TIMEOUT)
    assert pool.get_next(timeout=CALL_TIMEOUT) == 6


def test_get_next_unordered_returns_what_finishes_first(doublers, gate):
    pool = zactor.ActorPool(doublers[:2])
    pool.submit(lambda a, v: a.held.remote(gate.path, v), "slow")
    pool.submit(_double, 21)
    assert pool.get_next_unordered(timeout=CALL_TIMEOUT) == 42
    gate.open()
    assert pool.get_next_unordered(timeout=CALL_TIMEOUT) == "slow"
    assert not pool.has_next()


def test_a_reply_read_while_the_pool_starts_waiting_is_not_missed(doublers, make_gate, monkeypatch):
    # The pool collects the futures to wait on with Future.done(), which reads the
    # replies already waiting. A reply read there (or by another thread just then)
    # was left out of the wait, so the pool waited for the other call only, and the
    # test above failed now and then with a GetTimeoutError. Make the second call
    # finish, and its reply be read, exactly while the pool collects.
    slow_gate, quick_gate = make_gate(), make_gate()
    pool = zactor.ActorPool(doublers[:2])
    futures = []

    def held(a, v):
        futures.append(a.held.remote((slow_gate if v == "slow" else quick_gate).path, v))
        return futures[-1]

    pool.submit(held, "slow")
    pool.submit(held, "quick")
    slow, quick = futures
    pending_futures = zactor.pool._pending_futures

    def reply_read_meanwhile(ref):
        if ref is slow and not quick_gate.is_open:
            quick_gate.open()
            quick.result(timeout=CALL_TIMEOUT)
        return pending_futures(ref)

    monkeypatch.setattr(zactor.pool, "_pending_futures", reply_read_meanwhile)
    assert pool.get_next_unordered(timeout=10) == "quick"
    slow_gate.open()
    assert pool.get_next_unordered(timeout=CALL_TIMEOUT) == "slow"


def test_mixing_ordered_and_unordered_gets(doublers, gate):
    pool = zactor.ActorPool(doublers[:2])
    pool.submit(lambda a, v: a.held.remote(gate.path, v), "slow")
    pool.submit(_double, 1)
    pool.submit(_double, 2)
    assert pool.get_next_unordered(timeout=CALL_TIMEOUT) in (2, 4)
    gate.open()
    rest = [pool.get_next(timeout=CALL_TIMEOUT), pool.get_next(timeout=CALL_TIMEOUT)]
    assert rest[0] == "slow" and rest[1] in (2, 4)
    assert not pool.has_next()


def test_fn_may_return_a_list_of_futures(doublers):
    pool = zactor.ActorPool(doublers[:1])
    pool.submit(lambda a, v: [a.double.remote(v), a.pair.remote(v)], 3)
    assert pool.get_next(timeout=CALL_TIMEOUT) == [6, (3, 6)]


def test_push_pop_idle_and_has_free(doublers, gate):
    pool = zactor.ActorPool(doublers[:1])
    assert pool.has_free()
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(doublers[0])
    pool.submit(lambda a, v: a.held.remote(gate.path, v), "x")
    assert not pool.has_free()
    assert pool.pop_idle() is None
    pool.submit(_double, 4)  # queued
    pool.push(doublers[1])  # picks up the queued call at once
    assert pool.get_next_unordered(timeout=CALL_TIMEOUT) == 8
    assert pool.has_free()
    popped = pool.pop_idle()
    assert popped == doublers[1]
    assert len(pool) == 1
    gate.open()
    assert pool.get_next(timeout=CALL_TIMEOUT) == "x"
    with pytest.raises(TypeError):
        pool.push("not a handle")


def test_queued_work_waits_for_an_actor_when_the_pool_is_empty(doublers):
    pool = zactor.ActorPool([])
    pool.submit(_double, 1)
    assert pool.has_next() and not pool.has_free()
    with pytest.raises(ValueError, match="no actor to run it"):
        pool.get_next(timeout=1)
    pool.push(doublers[0])
    assert pool.get_next(timeout=CALL_TIMEOUT) == 2


def test_an_idle_pool_pickles_and_a_busy_one_says_why_not(doublers, gate):
    pool = zactor.ActorPool(doublers)
    for dumps in (pickle.dumps, cloudpickle.dumps):
        copy = pickle.loads(dumps(pool))
        assert sorted(h._actor_id for h in copy.actors) == sorted(h._actor_id for h in doublers)
        assert list(copy.map(_double, [1, 2, 3])) == [2, 4, 6]
    pool.submit(lambda a, v: a.held.remote(gate.path, v), 1)
    with pytest.raises(TypeError, match="work in flight cannot be pickled"):
        pickle.dumps(pool)
    gate.open()
    assert pool.get_next(timeout=CALL_TIMEOUT) == 1
    pickle.dumps(pool)  # idle again


def test_a_pool_passed_to_an_actor_works_there(doublers):
    pool = zactor.ActorPool(doublers)
    user = PoolUser.remote()
    try:
        assert zactor.get(user.run_map.remote(pool, list(range(10))), timeout=CALL_TIMEOUT) == [
            2 * v for v in range(10)
        ]
    finally:
        zactor.kill(user)


# -- HashPool ---------------------------------------------------------------------------------


def test_hash_pool_creates_actors_with_the_given_arguments(cluster):
    pool = zactor.HashPool(Store, 4, "bank", start=7)
    assert len(pool) == pool.size == 4
    assert zactor.get([a.config.remote() for a in pool], timeout=CALL_TIMEOUT) == [("bank", 7)] * 4
    made = zactor.HashPool(Store, size=2)
    assert zactor.get([a.config.remote() for a in made], timeout=CALL_TIMEOUT) == [("store", 0)] * 2


def test_for_key_is_the_owning_actors_own_handle(cluster):
    pool = zactor.HashPool(Store, size=5)
    keys = [f"user-{i}" for i in range(200)] + list(range(100)) + [b"raw"]
    for k in keys:
        h = pool.for_key(k)
        assert h is pool.actors[pool.shard_of_key(k)]  # no wrapper: no extra hop
        assert pool.actor_for_key(k) is h
    zactor.get([pool.for_key(k).put.remote(k, 1) for k in keys], timeout=CALL_TIMEOUT)
    stored = zactor.get([a.keys.remote() for a in pool], timeout=CALL_TIMEOUT)
    assert sum(len(s) for s in stored) == len(keys)
    for shard, ks in enumerate(stored):
        assert all(pool.shard_of_key(k) == shard for k in ks)


def test_shard_of_matches_for_key_on_lists_and_arrays(cluster):
    pool = zactor.HashPool(Store, size=6)
    ints = np.arange(-50, 50, dtype=np.int64)
    assert pool.shard_of(ints).tolist() == [pool.shard_of_key(int(k)) for k in ints]
    assert pool.shard_of(ints).tolist() == pool.shard_of(ints.tolist()).tolist()
    assert pool.shard_of_key(np.int64(7)) == pool.shard_of_key(7)
    assert pool.for_key(np.uint64(7)) is pool.for_key(7)


def test_for_keys_routes_a_batch_like_for_key(cluster):
    pool = zactor.HashPool(Store, size=5)
    keys = [f"user-{i}" for i in range(200)] + list(range(-50, 50)) + [b"raw", np.int64(7)]
    routed = pool.for_keys(keys)
    assert len(routed) == len(keys)
    assert all(h is pool.for_key(k) for h, k in zip(routed, keys))  # the actors' own handles
    ints = np.arange(1000, dtype=np.uint64)
    assert pool.for_keys(ints) == [pool.for_key(int(k)) for k in ints]
    assert pool.for_keys([]) == []
    pool.resize(7)  # routing follows the new size
    assert pool.for_keys(keys) == [pool.for_key(k) for k in keys]
    copy = pickle.loads(pickle.dumps(pool))
    assert copy.for_keys(keys) == pool.for_keys(keys)
    plain = keys[:-1]  # the int64 7 is the key 7
    zactor.get([h.put.remote(k, 1) for h, k in zip(pool.for_keys(plain), plain)], timeout=30)
    stored = zactor.get([a.keys.remote() for a in pool], timeout=CALL_TIMEOUT)
    assert sorted(map(repr, (k for ks in stored for k in ks))) == sorted(map(repr, plain))
    assert all(pool.shard_of_key(k) == shard for shard, ks in enumerate(stored) for k in ks)
    with pytest.raises(TypeError):
        pool.for_keys([1.5])
    pool.resize(4)


def test_hash_pool_wraps_existing_handles(cluster):
    handles = [Store.remote("mine") for _ in range(3)]
    pool = zactor.HashPool(handles)
    assert pool.actors == handles
    assert pool.for_key("k") is handles[_hotpath.shard_of_key("k", 3)]
    with pytest.raises(ValueError, match="resize"):
        pool.resize(4)
    extra = Store.remote("extra")
    assert pool.resize(4, handles=[extra]) == []
    assert pool.actors[-1] is extra


def test_hash_pool_argument_errors(cluster):
    with pytest.raises(TypeError, match="size is required"):
        zactor.HashPool(Store)
    with pytest.raises(ValueError, match="at least one actor"):
        zactor.HashPool([])
    with pytest.raises(TypeError, match="list of handles"):
        zactor.HashPool(Store.remote())
    with pytest.raises(TypeError, match="actor handles"):
        zactor.HashPool(["x"])
    with pytest.raises(ValueError, match="pool size"):
        zactor.HashPool(Store, 0)
    with pytest.raises(TypeError, match="shard key"):
        zactor.HashPool(Store, 1).for_key(1.5)


def test_a_plain_class_is_made_remote(cluster):
    class Plain:
        def ping(self):
            return "pong"

    pool = zactor.HashPool(Plain, 2)
    assert zactor.get(pool.for_key("x").ping.remote(), timeout=CALL_TIMEOUT) == "pong"


def test_resize_grows_and_shrinks_and_export_keys_moves_the_state(cluster):
    pool = zactor.HashPool(Store, 3, "bank")
    keys = [f"acct-{i}" for i in range(600)]
    zactor.get([pool.for_key(k).put.remote(k, k.upper()) for k in keys], timeout=CALL_TIMEOUT)
    old = pool.size

    # Grow 3 -> 4: each old shard exports the keys that now belong elsewhere (to shard 3).
    assert pool.resize(4) == []
    assert zactor.get(pool.actors[3].config.remote(), timeout=CALL_TIMEOUT) == ("bank", 0)
    moving = zactor.get([a.export_keys.remote(4, i) for i, a in enumerate(pool.actors[:old])])
    moved = {}
    for part in moving:
        moved.update(part)
    assert all(pool.shard_of_key(k) == 3 for k in moved)
    assert 0 < len(moved) < len(keys) / 2  # about a quarter
    zactor.get([pool.for_key(k).import_keys.remote({k: v}) for k, v in moved.items()])
    values = zactor.get([pool.for_key(k).get.remote(k) for k in keys], timeout=CALL_TIMEOUT)
    assert values == [k.upper() for k in keys]

    # Shrink 4 -> 2: the removed actors export everything, the pool returns their handles.
    gone = pool.resize(2)
    assert len(gone) == 2 and pool.size == 2
    for i, a in zip((2, 3), gone):
        part = zactor.get(a.export_keys.remote(2, i), timeout=CALL_TIMEOUT)
        for k, v in part.items():
            zactor.get(pool.for_key(k).import_keys.remote({k: v}), timeout=CALL_TIMEOUT)
        zactor.kill(a)
    values = zactor.get([pool.for_key(k).get.remote(k) for k in keys], timeout=CALL_TIMEOUT)
    assert values == [k.upper() for k in keys]


def test_hash_pool_pickles_and_routes_the_same_in_an_actor(cluster):
    pool = zactor.HashPool(Store, 4, "p")
    copy = pickle.loads(cloudpickle.dumps(pool))
    assert copy.actors == pool.actors
    copy.resize(5)  # the copy keeps the class and arguments
    assert zactor.get(copy.actors[4].config.remote(), timeout=CALL_TIMEOUT) == ("p", 0)
    keys = [f"k{i}" for i in range(50)] + list(range(50))
    user = PoolUser.remote()
    try:
        shards, _ = zactor.get(user.route.remote(pool, keys), timeout=CALL_TIMEOUT)
    finally:
        zactor.kill(user)
    assert shards == pool.shard_of(keys).tolist()
    stored = zactor.get([a.keys.remote() for a in pool], timeout=CALL_TIMEOUT)
    for shard, ks in enumerate(stored):
        assert sorted(ks, key=repr) == sorted(
            [k for k in keys if pool.shard_of_key(k) == shard], key=repr
        )


# -- the pool examples, each in its own process and cluster ----------------------------------


@pytest.mark.timeout(180)
def test_sketchy_bank_script():
    lines = run_script("sketchy_bank")
    assert "timbit balance: 42.0" in lines
    assert "Please deposit more money first." in lines
    assert any(ln.startswith("accounts per branch:") for ln in lines)


@pytest.mark.timeout(180)
def test_sketchy_bank_main():
    result = run_main("sketchy_bank")
    assert result["timbit"] == 42.0
    assert result["overdraft"] == "Please deposit more money first."
    assert result["duplicate"] == "timbit is already an account."
    assert len(result["per_branch"]) == 10 and sum(result["per_branch"]) == result["accounts"]
    assert result["balances_ok"] is True
    # The same account lands on the same branch in the child process as here.
    assert result["timbit_branch"] == _hotpath.shard_of_key("timbit", 10)
    assert result["after_resize"]["balances_ok"] is True
    assert 0 < result["after_resize"]["moved"] < result["accounts"] / 4


@pytest.mark.timeout(180)
def test_ray_account_pool_script():
    lines = run_script("ray_account_pool")
    assert "Current balance 100.0" in lines
    assert "New balance 60.0" in lines
    assert "New balance 90.0" in lines
    assert "Oops! Cannot withdraw negative amount occurred." in lines
    assert "Persisted state {'balance': 90.0, 'minimal': 20.0}" in lines
    assert "Restored balance 90.0" in lines


@pytest.mark.timeout(180)
def test_ray_account_pool_main():
    result = run_main("ray_account_pool")
    assert result == {
        "rejected": "Starting balance is less than minimal balance",
        "current": 100.0,
        "after_withdraw": 60.0,
        "after_deposit": 90.0,
        "negative": "Cannot withdraw negative amount",
        "persisted": {"balance": 90.0, "minimal": 20.0},
        "restored": 90.0,
    }


@pytest.mark.timeout(180)
def test_parameter_server_loss_falls():
    result = run_main("parameter_server", "main(steps=60, quiet=True)")
    losses = result["losses"]
    assert len(losses) >= 5
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], losses
    assert result["shards"] == 2 and result["workers"] == 2
    assert result["param_mib"] >= 2
    assert result["updates"] > 0
