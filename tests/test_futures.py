"""Futures: result/exception/done/add_done_callback, await, get, wait, as_completed,
GetTimeoutError and a future that stays usable after a timeout.

Calls that must stay pending are held by an actor method that polls for a file
(``gate`` fixture) until the test opens it; nothing here depends on timing except
generous upper bounds. A held actor lives on one worker and the quick actor on the
other (``spread``), and nothing else is sent to the held actor's worker while it is held.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import textwrap
import threading
import weakref

import pytest
from gates import wait_for_file as _wait_for_file

import zactor
from zactor.wire import hotpath

pytestmark = pytest.mark.timeout(60)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@zactor.remote
class Worker:
    def __init__(self):
        self.n = 0

    def quick(self, value=None):
        self.n += 1
        return self.n if value is None else value

    def hold(self, path, value="released"):
        _wait_for_file(path)
        return value

    def hold_then_fail(self, path):
        _wait_for_file(path)
        raise ValueError("failed after the hold")

    def fail(self):
        raise KeyError("boom")


@pytest.fixture
def pair(spread):
    """``(held, quick)``: two fresh actors on different workers."""
    (held,), (quick,) = spread(Worker, [1, 1])
    return held, quick


# -- Future basics ------------------------------------------------------------------------------


def test_result_done_and_cached_value(cluster):
    w = Worker.remote()
    f = w.quick.remote([1, 2])
    value = f.result(timeout=30)
    assert value == [1, 2]
    assert f.done()
    assert f.result() is value  # cached on the future
    assert f.exception() is None
    assert zactor.get(f) is value
    assert "Worker" in repr(f)


def test_exception_returns_the_error_without_raising(cluster):
    w = Worker.remote()
    f = w.fail.remote()
    e = f.exception(timeout=30)
    assert isinstance(e, KeyError) and isinstance(e, zactor.ActorError)
    assert f.done()
    assert f.exception() is e
    with pytest.raises(KeyError):
        f.result()


def test_done_is_false_while_held(cluster, gate, pair):
    held, _ = pair
    f = held.hold.remote(gate.path)
    assert not f.done()
    with pytest.raises(zactor.GetTimeoutError):
        f.result(timeout=0.2)
    assert not f.done()
    gate.open()
    assert f.result(timeout=30) == "released"
    assert f.done()


def test_get_timeout_error_then_the_future_stays_usable(cluster, gate, pair):
    held, _ = pair
    f = held.hold.remote(gate.path, "late value")
    with pytest.raises(zactor.GetTimeoutError) as info:
        f.result(timeout=0.1)
    assert isinstance(info.value, TimeoutError)
    assert "hold" in str(info.value)
    with pytest.raises(TimeoutError):  # through the builtin class as well
        zactor.get(f, timeout=0.1)
    with pytest.raises(zactor.GetTimeoutError):
        f.exception(timeout=0.1)
    with pytest.raises(zactor.GetTimeoutError):
        zactor.get([f], timeout=0.1)
    gate.open()
    assert f.result(timeout=30) == "late value"
    assert zactor.get([f]) == ["late value"]
    assert f.exception() is None


def test_timeout_on_a_failing_call_then_its_error(cluster, gate, pair):
    held, _ = pair
    f = held.hold_then_fail.remote(gate.path)
    with pytest.raises(zactor.GetTimeoutError):
        f.result(timeout=0.1)
    gate.open()
    with pytest.raises(ValueError, match="failed after the hold"):
        f.result(timeout=30)
    assert isinstance(f.exception(), ValueError)


def test_futures_cannot_be_pickled(cluster):
    import pickle

    f = Worker.remote().quick.remote()
    with pytest.raises(TypeError, match="value|handle"):
        pickle.dumps(f)
    assert f.result(timeout=30) == 1


# -- callbacks ----------------------------------------------------------------------------------


def test_done_callback_runs_without_anybody_calling_result(cluster, gate, pair):
    held, _ = pair
    f = held.hold.remote(gate.path, 7)
    seen = []
    ran = threading.Event()

    def callback(fut):
        seen.append((fut is f, fut.result()))
        ran.set()

    f.add_done_callback(callback)
    assert not ran.is_set()
    gate.open()
    assert ran.wait(30), "the done-callback never ran"
    assert seen == [(True, 7)]


def test_done_callbacks_on_many_futures_and_on_a_done_future(cluster):
    w = Worker.remote()
    futures = [w.quick.remote(i) for i in range(50)]
    got = []
    lock = threading.Lock()
    all_ran = threading.Event()

    def callback(fut):
        with lock:
            got.append(fut.result())
            if len(got) == len(futures):
                all_ran.set()

    for f in futures:
        f.add_done_callback(callback)
    assert all_ran.wait(30)
    assert sorted(got) == list(range(50))
    # On a future that is already done, the callback runs at once, in this thread.
    here = []
    futures[0].add_done_callback(lambda fut: here.append(threading.current_thread()))
    assert here == [threading.current_thread()]


def test_a_raising_callback_does_not_break_later_calls(cluster):
    w = Worker.remote()
    f = w.quick.remote("x")
    ran = threading.Event()

    def bad(_):
        ran.set()
        raise RuntimeError("callback error")

    f.add_done_callback(bad)
    assert ran.wait(30)
    assert w.quick.remote("y").result(timeout=30) == "y"


def test_done_callback_on_a_failing_call(cluster):
    w = Worker.remote()
    errors = []
    ran = threading.Event()
    f = w.fail.remote()
    f.add_done_callback(lambda fut: (errors.append(fut.exception()), ran.set()))
    assert ran.wait(30)
    assert isinstance(errors[0], KeyError)


def test_done_callback_may_wait_on_another_future(cluster):
    w = Worker.remote()
    other = Worker.remote()
    out = []
    ran = threading.Event()

    def callback(_):
        out.append(other.quick.remote("from callback").result(timeout=30))
        ran.set()

    w.quick.remote().add_done_callback(callback)
    assert ran.wait(30)
    assert out == ["from callback"]


# -- asyncio -------------------------------------------------------------------------------------


def test_await_future_inside_asyncio_run(cluster, gate, pair):
    held, quick = pair

    async def main():
        first = await quick.quick.remote("a")
        pending = held.hold.remote(gate.path, "held value")
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, gate.open)  # the loop keeps running while awaiting
        second = await pending
        many = await asyncio.gather(*(quick.quick.remote(i) for i in range(10)))
        done_already = quick.quick.remote("b")
        done_already.result(timeout=30)
        third = await done_already
        return first, second, many, third

    first, second, many, third = asyncio.run(main())
    assert first == "a" and second == "held value" and many == list(range(10)) and third == "b"


def test_await_a_failing_future_raises(cluster):
    w = Worker.remote()

    async def main():
        try:
            await w.fail.remote()
        except KeyError as e:
            return e
        return None

    e = asyncio.run(main())
    assert isinstance(e, KeyError) and isinstance(e, zactor.ActorError)


def test_await_with_asyncio_wait_for(cluster):
    w = Worker.remote()

    async def main():
        return await asyncio.wait_for(w.quick.remote("ok"), timeout=30)

    assert asyncio.run(main()) == "ok"


# -- get -----------------------------------------------------------------------------------------


def test_get_single_and_list(cluster):
    w = Worker.remote()
    assert zactor.get(w.quick.remote("one")) == "one"
    assert zactor.get([w.quick.remote(i) for i in range(5)]) == [0, 1, 2, 3, 4]
    assert zactor.get([]) == []
    assert zactor.get((w.quick.remote("t"),)) == ["t"]


def test_get_list_timeout_then_usable(cluster, gate, pair):
    held, quick = pair
    futures = [quick.quick.remote("q"), held.hold.remote(gate.path, "h")]
    with pytest.raises(zactor.GetTimeoutError, match="1 of 2"):
        zactor.get(futures, timeout=0.2)
    gate.open()
    assert zactor.get(futures, timeout=30) == ["q", "h"]


# -- wait -----------------------------------------------------------------------------------------


def test_wait_num_returns_timeout_and_order(cluster, gate, pair):
    held, quick = pair
    slow = held.hold.remote(gate.path, "slow")
    fast1 = quick.quick.remote("f1")
    fast2 = quick.quick.remote("f2")
    futures = [slow, fast1, fast2]
    ready, not_ready = zactor.wait(futures, num_returns=2, timeout=30)
    assert ready == [fast1, fast2]
    assert not_ready == [slow]
    # Ask for all three with a short timeout: returns what is ready, in the order given.
    ready, not_ready = zactor.wait(futures, num_returns=3, timeout=0.2)
    assert ready == [fast1, fast2] and not_ready == [slow]
    # num_returns=1 returns at most one, the first done in list order.
    ready, not_ready = zactor.wait(futures, num_returns=1, timeout=30)
    assert ready == [fast1] and not_ready == [slow, fast2]
    # Default num_returns is 1.
    ready, not_ready = zactor.wait(futures)
    assert len(ready) == 1 and len(not_ready) == 2
    gate.open()
    ready, not_ready = zactor.wait(futures, num_returns=3, timeout=30)
    assert ready == futures and not_ready == []
    assert zactor.get(ready) == ["slow", "f1", "f2"]


def test_wait_keeps_the_given_order(cluster):
    w = Worker.remote()
    futures = [w.quick.remote(i) for i in range(20)]
    futures.reverse()
    ready, not_ready = zactor.wait(futures, num_returns=20, timeout=30)
    assert ready == futures and not_ready == []


def test_wait_rejects_bad_num_returns(cluster):
    w = Worker.remote()
    futures = [w.quick.remote() for _ in range(2)]
    with pytest.raises(ValueError, match="num_returns"):
        zactor.wait(futures, num_returns=3)
    with pytest.raises(ValueError, match="num_returns"):
        zactor.wait(futures, num_returns=-1)
    zactor.get(futures)


# -- as_completed --------------------------------------------------------------------------------


def test_as_completed_yields_in_completion_order(cluster, gate, pair):
    held, quick = pair
    slow = held.hold.remote(gate.path, "slow")
    fast = quick.quick.remote("fast")
    it = zactor.as_completed([slow, fast], timeout=30)
    first = next(it)
    assert first is fast and first.result() == "fast"
    assert not slow.done()
    gate.open()
    second = next(it)
    assert second is slow and second.result() == "slow"
    with pytest.raises(StopIteration):
        next(it)


def test_as_completed_yields_every_future_once(cluster):
    w = Worker.remote()
    futures = [w.quick.remote(i) for i in range(30)]
    seen = list(zactor.as_completed(futures, timeout=30))
    assert sorted(map(id, seen)) == sorted(map(id, futures))
    assert sorted(f.result() for f in seen) == list(range(30))


def test_as_completed_timeout(cluster, gate, pair):
    held, quick = pair
    slow = held.hold.remote(gate.path)
    fast = quick.quick.remote("fast")
    got = []
    with pytest.raises(zactor.GetTimeoutError):
        for f in zactor.as_completed([slow, fast], timeout=0.5):
            got.append(f)
    assert got == [fast]
    gate.open()
    assert slow.result(timeout=30) == "released"


# -- a waiting call when the cluster shuts down ----------------------------------------------

SHUTDOWN_WHILE_WAITING_SCRIPT = textwrap.dedent(
    """
    import threading, time
    import zactor

    @zactor.remote
    class C:
        def nap(self, s):
            time.sleep(s)
            return s

    zactor.init(num_workers=1)
    c = C.remote()
    outcome = []

    def waiter():
        try:
            outcome.append(c.nap.remote(5.0).result(timeout=30))
        except BaseException as e:
            outcome.append(type(e).__name__)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.5)  # the waiter is reading the inbox now
    zactor.shutdown()
    t.join(timeout=30)
    print("OUTCOME", outcome, flush=True)
    """
)


def test_shutdown_while_a_thread_waits_gives_it_cluster_error(tmp_path):
    """In its own process: closing the ZeroMQ context under a thread that is reading the
    inbox aborted the interpreter (libzmq assertion) or raised zmq.ContextTerminated."""
    script = tmp_path / "shutdown_while_waiting.py"
    script.write_text(SHUTDOWN_WHILE_WAITING_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=50,
        cwd=str(tmp_path),
        env=env,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-2000:]}"
    assert "OUTCOME ['ClusterError']" in proc.stdout, proc.stdout


# -- the cyclic collector and futures -------------------------------------------------------

compiled = pytest.mark.skipif(
    hotpath.IMPLEMENTATION != "cython",
    reason="ZACTOR_PURE_PYTHON=1: Python code cannot untrack a future, it stays tracked",
)


@compiled
def test_a_future_is_left_to_reference_counting_until_it_may_hold_a_cycle(cluster):
    w = Worker.remote()
    plain = w.quick.remote()
    assert not gc.is_tracked(plain)  # holds the call's bytes at most: nothing leads back
    assert isinstance(plain.result(timeout=30), int)
    assert not gc.is_tracked(plain)
    container = w.quick.remote([1, 2])
    assert container.result(timeout=30) == [1, 2] and gc.is_tracked(container)
    failed = w.fail.remote()
    assert isinstance(failed.exception(timeout=30), KeyError) and gc.is_tracked(failed)
    watched = w.quick.remote()
    watched.add_done_callback(lambda f: None)
    assert gc.is_tracked(watched)
    watched.result(timeout=30)


def _collected(make_garbage) -> bool:
    """True if the future ``make_garbage()`` returns a weak reference to is freed once
    everything else drops it and the cyclic collector runs."""
    ref = make_garbage()
    gc.collect()
    return ref() is None


def test_futures_in_cycles_are_still_collected(cluster):
    w = Worker.remote()

    def raised():  # future -> its error -> traceback -> result()'s frame -> future
        f = w.fail.remote()
        try:
            f.result(timeout=30)
        except KeyError:
            pass
        return weakref.ref(f)

    def holds_itself():  # future -> its value -> future
        f = w.quick.remote([1])
        f.result(timeout=30).append(f)
        return weakref.ref(f)

    def died():  # a locally made error, raised
        h = Worker.remote()
        zactor.kill(h)
        f = h.quick.remote()
        try:
            f.result(timeout=30)
        except zactor.ActorDiedError:
            pass
        return weakref.ref(f)

    for make_garbage in (raised, holds_itself, died):
        assert _collected(make_garbage), make_garbage.__name__
