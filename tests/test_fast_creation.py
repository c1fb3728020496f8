"""Creating an actor without waiting for the head (issue 12): the handle returns at once,
its calls run after the constructor and in order, and what a Ray user relies on at
creation (errors, names, kill, restarts, handles passed on) keeps working.

The head is stalled with SIGSTOP where a test must know that it has not answered: a
``.remote()`` that waited for it would block until pytest-timeout fails the test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import uuid

import cloudpickle
import pytest
from gates import poll

import zactor
from zactor.caller.handle import head_handle
from zactor.control.head import MAX_ID_LEASE, Head
from zactor.endpoint import runtime as runtime_mod
from zactor.errors import ActorCreationError, ActorDiedError, ClusterError

pytestmark = pytest.mark.timeout(120)


@zactor.remote
class Log:
    """Records its constructor and every call, in the order they ran."""

    def __init__(self, tag="init"):
        self.seen = [tag]

    def add(self, item):
        self.seen.append(item)
        return len(self.seen)

    def log(self):
        return list(self.seen)


@zactor.remote
class Broken:
    def __init__(self):
        raise ValueError("the constructor refused")

    def ping(self):
        return "pong"


@zactor.remote
class User:
    """Calls an actor whose handle it was given."""

    def use(self, handle, item):
        return zactor.get(handle.add.remote(item), timeout=60)


def _head():
    return head_handle(runtime_mod.current())


@contextlib.contextmanager
def head_stopped():
    """The head process stopped (SIGSTOP) inside the block, running again after it."""
    pid = _head().status.remote().result(timeout=30)["head"]["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _known_to_head(actor_id: int) -> bool:
    actors = _head().list_actors.remote().result(timeout=30)
    return any(info["actor_id"] == actor_id for info in actors)


def test_remote_returns_while_the_head_cannot_answer(cluster):
    warm = Log.remote()  # the process's first creation leases its ids
    assert zactor.get(warm.log.remote(), timeout=30) == ["init"]
    with head_stopped():
        handles = [Log.remote(i) for i in range(5)]  # would block here if it waited
        futures = [h.add.remote("first") for h in handles]
        assert not any(f.done() for f in futures)  # held: nobody knows where they live
        assert len({h._actor_id for h in handles}) == 5  # ids known before placement
    assert zactor.get(futures, timeout=60) == [2] * 5
    assert zactor.get([h.log.remote() for h in handles], timeout=60) == [
        [i, "first"] for i in range(5)
    ]


def test_calls_made_right_after_creation_run_after_the_constructor_in_order(cluster):
    handles = [Log.remote() for _ in range(20)]
    futures = []
    for h in handles:
        for i in range(10):
            if i % 3 == 0:
                h.add.tell(i)  # tells and calls keep one order
            else:
                futures.append(h.add.remote(i))
    assert zactor.get(futures, timeout=60)  # all ran
    logs = zactor.get([h.log.remote() for h in handles], timeout=60)
    assert logs == [["init", *range(10)]] * 20


def test_a_constructor_that_raises_fails_the_first_call_with_its_error(cluster):
    broken = Broken.remote()
    with pytest.raises(ValueError, match="the constructor refused"):
        zactor.get(broken.ping.remote(), timeout=30)


def test_an_impossible_demand_fails_every_call_with_the_heads_reason(cluster):
    handle = Log.options(resources={"NO_SUCH_THING": 1}).remote()  # returns at once
    with pytest.raises(ActorCreationError, match="NO_SUCH_THING") as info:
        zactor.get(handle.add.remote(1), timeout=30)
    assert isinstance(info.value, ClusterError) and isinstance(info.value, ActorDiedError)
    assert "could not be created" in str(info.value)
    with pytest.raises(ActorCreationError, match="NO_SUCH_THING"):  # later calls too
        zactor.get(handle.log.remote(), timeout=30)
    with pytest.raises(ActorDiedError, match="NO_SUCH_THING"):  # tells raise at once
        handle.add.tell(2)
    user = User.remote()
    with pytest.raises(ActorCreationError):  # its handle cannot be passed on either
        user.use.remote(handle, 3)


def test_a_handle_passed_on_before_its_placement_is_known_works(cluster):
    user = User.remote()
    zactor.get(user.use.remote(Log.remote(), 0), timeout=30)  # both placed and leased
    out = []
    with head_stopped():
        target = Log.remote()
        assert target._target.address is None  # the head has not answered
        # Pickling the handle waits for the placement: on a thread of its own here,
        # since the head runs again only when this block ends.
        passing = threading.Thread(target=lambda: out.append(user.use.remote(target, "x")))
        passing.start()
    passing.join(60)
    assert zactor.get(out[0], timeout=60) == 2
    assert zactor.get(target.log.remote(), timeout=30) == ["init", "x"]


def test_a_new_actors_handle_leaves_only_once_its_worker_has_the_actor(cluster):
    # Another process's calls take that process's own connection to the worker, which
    # may be read before this process's, where the creation travels: pickling the
    # handle waits for a round trip to the worker behind the creation.
    target = Log.remote()
    poll(lambda: target._target.address is not None, timeout=30)  # placed, not pickled
    workers = _head().cluster_info.remote().result(timeout=30)["workers"]
    pid = next(w["pid"] for w in workers if w["address"] == target._target.address)
    out = []
    os.kill(pid, signal.SIGSTOP)
    try:
        pickling = threading.Thread(target=lambda: out.append(cloudpickle.dumps(target)))
        pickling.start()
        pickling.join(0.5)
        assert pickling.is_alive(), "the handle left before its worker answered"
    finally:
        os.kill(pid, signal.SIGCONT)
    pickling.join(60)
    assert out and zactor.get(User.remote().use.remote(target, "x"), timeout=60) == 2
    pickling = threading.Thread(target=lambda: out.append(cloudpickle.dumps(target)))
    os.kill(pid, signal.SIGSTOP)
    try:  # confirmed once: later copies leave at once
        pickling.start()
        pickling.join(30)
        assert not pickling.is_alive()
    finally:
        os.kill(pid, signal.SIGCONT)


def test_kill_right_after_creation_ends_the_actor(cluster):
    handle = Log.remote()
    actor_id = handle._actor_id
    zactor.kill(handle)
    with pytest.raises(ActorDiedError, match="zactor.kill"):
        zactor.get(handle.log.remote(), timeout=30)
    poll(lambda: not _known_to_head(actor_id), timeout=30)


def test_a_restartable_actor_killed_right_after_creation_comes_back(cluster):
    handle = Log.options(max_restarts=1).remote("again")
    zactor.kill(handle, no_restart=False)
    assert zactor.get(handle.log.remote(), timeout=60) == ["again"]


def test_actors_whose_handles_are_dropped_before_placement_end(cluster):
    ids = [Log.remote()._actor_id for _ in range(20)]  # each handle dropped at once
    poll(lambda: not any(_known_to_head(actor_id) for actor_id in ids), timeout=60)


def test_named_actors_still_check_their_name_at_creation(cluster):
    name = f"fast-{uuid.uuid4().hex[:8]}"
    first = Log.options(name=name).remote("named")
    with pytest.raises(ValueError, match="already exists"):
        Log.options(name=name).remote()
    same = Log.options(name=name, get_if_exists=True).remote()
    assert same == first
    assert zactor.get(same.log.remote(), timeout=30) == ["named"]


def test_the_head_leases_ids_it_never_gives_out_again():
    head = Head()
    first = head.lease_actor_ids(10)
    assert head.lease_actor_ids(5) == first + 10
    assert head._new_actor_id(None) == first + 15  # an unleased placement's id
    assert head._new_actor_id(first + 3) == first + 3
    with pytest.raises(ValueError, match="was not leased"):
        head._new_actor_id(first + 100)
    with pytest.raises(ValueError, match="count from 1"):
        head.lease_actor_ids(0)
    with pytest.raises(ValueError, match="count from 1"):
        head.lease_actor_ids(MAX_ID_LEASE + 1)


def test_a_burst_of_creations_with_arguments_and_restarts_keeps_every_actor_right(cluster):
    # Many at once: placed and created together, a few messages for the lot.
    handles = [Log.options(max_restarts=1).remote(i) for i in range(300)]
    assert zactor.get([h.add.remote("x") for h in handles], timeout=60) == [2] * 300
    restarted = handles[150]
    zactor.kill(restarted, no_restart=False)  # its creation was kept for the restart
    assert zactor.get(restarted.log.remote(), timeout=60) == [150]
    assert zactor.get(handles[299].log.remote(), timeout=60) == [299, "x"]
