"""Backpressure: a caller that outruns a slow actor blocks once ``max_pending_calls``
calls are in flight on that handle, so memory stays bounded.

The actor is held by a method that polls for a file (the ``gate`` fixture) until the
test opens it, so "in flight" is exact and nothing depends on timing: a thread submits
calls and appends each future to a list; while the actor is held the list stops at N.
"""

from __future__ import annotations

import pickle
import threading
import time

import pytest
from gates import wait_for_file as _wait_for_file

import zactor
from zactor.caller.options import DEFAULT_MAX_PENDING_CALLS

pytestmark = pytest.mark.timeout(60)


@zactor.remote
class Slow:
    def __init__(self):
        self.n = 0

    def work(self, path, i):
        _wait_for_file(path)
        self.n += 1
        return i

    def ready(self):
        return True

    def fail(self, i):
        raise ValueError(f"failure {i}")

    def count(self):
        return self.n


class Submitter(threading.Thread):
    """Submits ``total`` calls, appending each future as ``remote()`` returns it."""

    def __init__(self, call, total):
        super().__init__(daemon=True)
        self.call = call
        self.total = total
        self.futures = []
        self.error = None

    def run(self):
        try:
            for i in range(self.total):
                self.futures.append(self.call(i))
        except BaseException as e:  # reported by the test
            self.error = e


def _settled_count(submitter, expected, observe_s=0.5):
    """Wait for ``expected`` futures, then watch that no more appear for a while.

    Watching for ``observe_s`` cannot make a correct engine fail; it gives a broken
    one time to overrun the bound.
    """
    deadline = time.monotonic() + 30
    while len(submitter.futures) < expected and submitter.is_alive():
        assert time.monotonic() < deadline, f"only {len(submitter.futures)} calls were sent"
        time.sleep(0.005)
    end = time.monotonic() + observe_s
    while time.monotonic() < end:
        assert len(submitter.futures) <= expected, (
            f"{len(submitter.futures)} calls in flight, bound is {expected}"
        )
        time.sleep(0.01)
    return len(submitter.futures)


@pytest.mark.parametrize("limit", [1, 4])
def test_caller_blocks_once_max_pending_calls_are_in_flight(cluster, gate, limit):
    slow = Slow.options(max_pending_calls=limit).remote()
    assert slow.ready.remote().result(timeout=30)
    total = 3 * limit + 5
    submitter = Submitter(lambda i: slow.work.remote(gate.path, i), total)
    submitter.start()
    assert _settled_count(submitter, limit) == limit
    assert submitter.is_alive(), "the submitting thread did not block"
    assert not any(f.done() for f in submitter.futures)
    gate.open()
    submitter.join(timeout=30)
    assert not submitter.is_alive() and submitter.error is None
    assert len(submitter.futures) == total
    assert zactor.get(submitter.futures, timeout=30) == list(range(total))
    assert slow._gate.inflight == 0
    assert slow.count.remote().result(timeout=30) == total


def test_bound_is_per_handle(cluster, gate):
    """Another handle to the same actor has its own bound (as documented: per handle)."""
    slow = Slow.options(max_pending_calls=2).remote()
    assert slow.ready.remote().result(timeout=30)
    copy = pickle.loads(pickle.dumps(slow))
    assert copy._gate is not slow._gate and copy._gate.limit == 2
    first = Submitter(lambda i: slow.work.remote(gate.path, i), 6)
    first.start()
    assert _settled_count(first, 2, observe_s=0.2) == 2
    second = Submitter(lambda i: copy.work.remote(gate.path, 100 + i), 6)
    second.start()
    assert _settled_count(second, 2, observe_s=0.2) == 2
    gate.open()
    first.join(timeout=30)
    second.join(timeout=30)
    assert sorted(zactor.get(first.futures + second.futures, timeout=30)) == sorted(
        list(range(6)) + [100 + i for i in range(6)]
    )


def test_errors_release_the_bound(cluster):
    """Calls that raise count as answered: many failing calls never wedge the caller."""
    slow = Slow.options(max_pending_calls=2).remote()
    futures = [slow.fail.remote(i) for i in range(200)]
    for i, f in enumerate(futures):
        with pytest.raises(ValueError, match=f"failure {i}$"):
            f.result(timeout=30)
    assert slow._gate.inflight == 0


def test_a_dead_actor_releases_the_bound(cluster):
    """Calls to a killed actor are answered with ActorDiedError and free their slot."""
    slow = Slow.options(max_pending_calls=2).remote()
    assert slow.ready.remote().result(timeout=30)
    zactor.kill(slow)
    futures = [slow.ready.remote() for _ in range(50)]
    for f in futures:
        with pytest.raises(zactor.ActorDiedError):
            f.result(timeout=30)
    assert slow._gate.inflight == 0


def test_a_timed_out_get_keeps_the_slot_until_the_reply(cluster, gate):
    slow = Slow.options(max_pending_calls=1).remote()
    assert slow.ready.remote().result(timeout=30)
    f = slow.work.remote(gate.path, 0)
    with pytest.raises(zactor.GetTimeoutError):
        f.result(timeout=0.1)
    assert slow._gate.inflight == 1
    gate.open()
    assert f.result(timeout=30) == 0
    assert slow._gate.inflight == 0
    assert slow.work.remote(gate.path, 1).result(timeout=30) == 1


def test_default_bound_and_named_handles_keep_the_bound(cluster, unique_name):
    plain = Slow.remote()
    assert plain._gate.limit == DEFAULT_MAX_PENDING_CALLS
    assert 0 < DEFAULT_MAX_PENDING_CALLS < 10**6  # bounded by default
    name = unique_name("bounded")
    named = Slow.options(name=name, max_pending_calls=3).remote()  # held: dropped ones end
    assert zactor.get_actor(name)._gate.limit == 3 == named._gate.limit


def test_invalid_bounds_are_rejected():
    for bad in (0, -1, 1.5, "3"):
        with pytest.raises(ValueError, match="max_pending_calls"):
            Slow.options(max_pending_calls=bad)
