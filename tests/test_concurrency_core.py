"""Actors never wait on each other (DESIGN.md, Execution).

On the session's 2-worker cluster: four actors, two per worker, each run a method
that sleeps (or blocks until the test releases it); a short call to a fifth, idle
actor that lives on one of the busy workers still gets its reply while they are
all still running. Ordering is shown with timestamps taken inside the actors and
with marker files, never with tight timings; the only duration asserted is a
generous upper bound.

Actors are placed deterministically: the head puts each new actor on the worker
with the fewest actors, and ``spread`` (conftest) creates actors until the wanted
number sits on each worker, checked against ``get_runtime_context().worker_id``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest
from gates import wait_for_file as _wait_for_file

import zactor

pytestmark = pytest.mark.timeout(60)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@zactor.remote
class Napper:
    def __init__(self):
        self.active = 0
        self.most_active = 0

    def worker_id(self):
        return zactor.get_runtime_context().worker_id

    def nap(self, seconds, marker):
        start = time.monotonic()
        with open(marker, "w"):
            pass
        time.sleep(seconds)
        return start, time.monotonic()

    def hold(self, marker, gate):
        with open(marker, "w"):
            pass
        _wait_for_file(gate)
        return "released"

    def quick(self):
        return time.monotonic()

    def ask(self, other, method, *args):
        """Block on another actor's reply (the thread waits on a future)."""
        return getattr(other, method).remote(*args).result(timeout=30)

    def one_at_a_time(self, seconds):
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        time.sleep(seconds)
        self.active -= 1
        return self.most_active


def _check_placement(groups):
    """Every actor of a group runs on the same worker; groups on different workers."""
    ids = []
    for group in groups:
        where = {h.worker_id.remote().result(timeout=30) for h in group}
        assert len(where) == 1, f"a group spans workers: {where}"
        ids.append(where.pop())
    assert len(set(ids)) == len(ids)
    return ids


def test_four_sleeping_actors_and_a_quick_call_on_a_busy_worker(cluster, spread, tmp_path):
    on_a, on_b = spread(Napper, [3, 2])
    _check_placement([on_a, on_b])
    sleepers = [on_a[0], on_a[1], on_b[0], on_b[1]]
    idle = on_a[2]  # lives on a worker whose two other actors are sleeping
    markers = [str(tmp_path / f"started-{i}") for i in range(4)]

    t0 = time.monotonic()
    naps = [s.nap.remote(1.0, m) for s, m in zip(sleepers, markers)]
    deadline = time.monotonic() + 10
    while not all(os.path.exists(m) for m in markers):  # all four are sleeping now
        assert time.monotonic() < deadline, "the four naps did not all start"
        time.sleep(0.002)
    sent_at = time.monotonic()
    quick = idle.quick.remote()
    quick_at = quick.result(timeout=10)
    naps_done_first = [f.done() for f in naps]
    spans = zactor.get(naps, timeout=30)
    elapsed = time.monotonic() - t0

    starts = [s for s, _ in spans]
    ends = [e for _, e in spans]
    detail = (
        f"quick sent at +{sent_at - t0:.3f} s, ran at +{quick_at - t0:.3f} s; naps (start, end) "
        f"{[(round(s - t0, 3), round(e - t0, 3)) for s, e in spans]}"
    )
    assert not any(naps_done_first), f"the quick call waited for a nap: {detail}"
    # All four naps overlapped (none waited for another, not even on the same worker)...
    assert max(starts) < min(ends), detail
    # ... and the quick call ran while all four were sleeping.
    assert max(starts) < quick_at < min(ends), detail
    assert elapsed < 3.5  # generous: one nap is 1 s; serialised per worker would be 2 s+


def test_blocked_actors_do_not_hold_up_an_idle_actor_on_the_same_worker(
    cluster, spread, tmp_path, make_gate
):
    """The same without any timing: blocked until the test opens a gate."""
    on_a, on_b = spread(Napper, [3, 2])
    _check_placement([on_a, on_b])
    gate = make_gate()
    blocked = [on_a[0], on_a[1], on_b[0], on_b[1]]
    markers = [str(tmp_path / f"held-{i}") for i in range(4)]
    held = [h.hold.remote(m, gate.path) for h, m in zip(blocked, markers)]
    deadline = time.monotonic() + 10
    while not all(os.path.exists(m) for m in markers):
        assert time.monotonic() < deadline, "the four holds did not all start"
        time.sleep(0.002)
    # Several short calls to the idle actor on the busy worker, and to the busy ones'
    # worker service, all answer while every held call is still held.
    for _ in range(20):
        on_a[2].quick.remote().result(timeout=10)
    assert not any(f.done() for f in held)
    assert not gate.is_open
    gate.open()
    assert zactor.get(held, timeout=30) == ["released"] * 4


def test_an_actor_waiting_on_another_actors_reply_does_not_hold_up_its_worker(
    cluster, spread, tmp_path, make_gate
):
    """A waits on B (held, same worker); C on the same worker still answers."""
    (a, b, c), _ = spread(Napper, [3, 1])
    gate = make_gate()
    marker = str(tmp_path / "b-held")
    asking = a.ask.remote(b, "hold", marker, gate.path)
    deadline = time.monotonic() + 10
    while not os.path.exists(marker):
        assert time.monotonic() < deadline
        time.sleep(0.002)
    assert isinstance(c.quick.remote().result(timeout=10), float)
    assert not asking.done()
    gate.open()
    assert asking.result(timeout=30) == "released"


def test_replies_are_not_held_behind_another_actors_long_call(cluster, spread, tmp_path, make_gate):
    """Replies of calls that ran before a long call on the same worker reach the caller.

    The host sends the replies of the actors it runs one after another together,
    one message per caller; when one of those calls runs long (here: until the
    test opens a gate), the replies queued before it go out without it.
    """
    ((a, b),) = spread(Napper, [2])
    for trial in range(3):
        gate = make_gate()
        # A few pipelined calls then the hold: most reach the worker in one batch
        # (the first goes alone), and the hold starts right after quick calls
        # whose replies are queued, not yet sent.
        quick = [a.quick.remote() for _ in range(5)]
        held = b.hold.remote(str(tmp_path / f"b-held-{trial}"), gate.path)
        assert all(isinstance(t, float) for t in zactor.get(quick, timeout=20))
        assert not held.done()
        assert not gate.is_open
        gate.open()
        assert held.result(timeout=30) == "released"


def test_nested_calls_on_one_worker_do_not_deadlock(cluster, spread):
    """A calls B on its own worker, which answers at once; A's call returns B's value."""
    ((a, b),) = spread(Napper, [2])
    for _ in range(20):
        assert isinstance(a.ask.remote(b, "quick").result(timeout=10), float)
    # A chain through several actors of the same worker.
    (chain,) = spread(Napper, [4])
    first, second, third, _ = chain
    assert isinstance(first.ask.remote(second, "ask", third, "quick").result(timeout=10), float)


def test_each_actor_runs_one_call_at_a_time(cluster):
    """Calls from several callers to one actor never overlap (max_concurrency=1)."""
    import threading

    n = Napper.remote()
    results = []

    def caller():
        futures = [n.one_at_a_time.remote(0.002) for _ in range(10)]
        results.extend(zactor.get(futures, timeout=30))

    threads = [threading.Thread(target=caller) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 30
    assert max(results) == 1


CONCURRENT_READERS_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import zactor

    @zactor.remote
    class C:
        def inc(self):
            return 1
        def nap(self, s):
            time.sleep(s)
            return s

    zactor.init(num_workers=1)
    try:
        napper = C.remote()
        napper.inc.remote().result(timeout=30)
        idle = C.remote()
        idle.inc.remote().result(timeout=30)
        for i in range(25):
            nap = napper.nap.remote(0.35)
            time.sleep(0.15)  # nothing arrives at the worker while the nap runs
            try:
                fresh = C.remote()  # its creation, then a call to it at once
                fresh.inc.remote().result(timeout=5)
                idle.inc.remote().result(timeout=5)
                nap.result(timeout=5)
            except Exception as e:
                print(f"FAILED in round {i}: {type(e).__name__}: {e}", flush=True)
                sys.exit(1)
        print("OK", flush=True)
    finally:
        zactor.shutdown()
    """
)


@pytest.mark.timeout(90)
def test_calls_during_a_long_call_are_served_in_order(tmp_path):
    """Only one thread at a time may read a worker's inbox, even while a call runs long.

    Each round starts a 0.35 s call, leaves the worker's inbox idle for 0.15 s, then
    creates an actor and calls it at once. The bug this guards against: the watchdog
    demoted the leader while it was blocked in receive() (not in user code), every
    ~10 ms, so several threads read the inbox socket at once; calls were dispatched out
    of order ('no actor with id N'), multipart messages were split between threads
    (zmq.Again killed a host thread) and libzmq could abort. About one round in five
    failed, so 25 rounds catch it almost surely. Runs in its own process and cluster,
    because that bug could break the worker for good.
    """
    script = tmp_path / "concurrent_readers.py"
    script.write_text(CONCURRENT_READERS_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=80,
        cwd=str(tmp_path),
        env=env,
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr (tail):\n{proc.stderr[-3000:]}"
    )


CALLS_BEHIND_A_CREATION_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import zactor

    @zactor.remote
    class SlowStart:
        def __init__(self, seconds):
            time.sleep(seconds)  # the worker's service is busy while this runs
            self.n = 0
        def inc(self):
            self.n += 1
            return self.n

    zactor.init(num_workers=1)
    try:
        for i in range(3):
            first = SlowStart.remote(0.5)
            second = SlowStart.remote(0.5)  # its creation waits behind first's ...
            calls = [second.inc.remote()]  # ... and so does this call
            time.sleep(0.75)  # second is being constructed now
            calls += [second.inc.remote() for _ in range(3)]
            got = zactor.get(calls, timeout=30)
            if got != [1, 2, 3, 4]:
                print(f"FAILED in round {i}: the calls ran as {got}", flush=True)
                sys.exit(1)
            zactor.kill(first)
            zactor.kill(second)
        print("OK", flush=True)
    finally:
        zactor.shutdown()
    """
)


def test_calls_queued_behind_a_creation_keep_their_order(tmp_path):
    """A call that reaches the worker before its actor's creation has run waits behind
    the creation; calls sent later, once the actor exists, must still run after it.

    The second actor's creation (and a first call to it) wait while the worker's
    service constructs the first actor; the next calls arrive while the second is
    being constructed. They ran before the first call (results [4, 1, 2, 3]) until
    later calls to an actor waited behind its parked ones. In its own process, on
    a one-worker cluster, so that both actors share the worker.
    """
    script = tmp_path / "calls_behind_a_creation.py"
    script.write_text(CALLS_BEHIND_A_CREATION_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=50,
        cwd=str(tmp_path),
        env=env,
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr (tail):\n{proc.stderr[-3000:]}"
    )


def test_a_runtime_makes_what_a_layer_keeps_on_it_once_whatever_the_threads():
    import shutil
    import threading

    from zactor.endpoint.runtime import Runtime
    from zactor.transport import make_session_dir

    session = make_session_dir()
    runtime = Runtime(f"ipc://{session}/made-once.sock", role="worker", head_address=None)
    try:
        made = []
        start = threading.Barrier(8)

        def make():
            made.append(object())
            time.sleep(0.05)  # a slow maker: the other threads ask meanwhile
            return made[-1]

        def ask(results):
            start.wait()
            results.append(runtime.made_once("task_pool", make))

        results: list = []
        threads = [threading.Thread(target=ask, args=(results,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert len(made) == 1 and results == made * 8 and runtime.task_pool is made[0]
        # One maker may ask for another object not made yet: the lock is re-entrant.
        runtime.task_pool = None
        inner = runtime.made_once("creations", lambda: runtime.made_once("task_pool", make))
        assert inner is made[1] is runtime.creations is runtime.task_pool
        with pytest.raises(AttributeError):
            runtime.made_once("no_such_slot", object)  # only the attributes a runtime declares
    finally:
        runtime.close()
        shutil.rmtree(session, ignore_errors=True)
