"""Ray-faithful actor semantics (issue 14): retries per method and per call, ``sys.exit()``
in a method, failures while an actor restarts, and the ways an actor ends
(``exit_actor``, ``__zactor_terminate__``, the ``__zactor_exit__`` hook).

Each test reproduces what a Ray user's code relies on; scenarios that SIGKILL a
worker run on a cluster of their own (``scenario.py``).
"""

from __future__ import annotations

import gc
import os
import sys
import textwrap
import threading
import time

import cloudpickle
import pytest
from gates import alive, poll, wait_for_file
from scenario import run_scenario

import zactor

pytestmark = pytest.mark.timeout(120)


def _bump_file(path: str) -> int:
    """Append a line to ``path``; how many lines it has now (state that survives restarts)."""
    with open(path, "a") as f:
        f.write("x\n")
    with open(path) as f:
        return len(f.readlines())


@zactor.remote
class Flaky:
    """Fails the first ``failures`` calls of each method, then succeeds."""

    def __init__(self, failures: int = 2, exc: type = ValueError) -> None:
        self.failures = failures
        self.exc = exc
        self.attempts = 0

    def work(self) -> int:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise self.exc(f"attempt {self.attempts} fails")
        return self.attempts

    @zactor.method(max_task_retries=5, retry_exceptions=[ValueError])
    def patient(self) -> int:
        return self.work()

    @zactor.method(max_task_retries=5, retry_exceptions=True)
    def retries_anything(self) -> int:
        return self.work()

    def count(self) -> int:
        return self.attempts


@zactor.remote(max_restarts=1)
class Exiting:
    def __init__(self) -> None:
        self.n = 0
        self.pid = os.getpid()

    def inc(self) -> int:
        self.n += 1
        return self.n

    def quit(self, code=0):
        sys.exit(code)

    def quit_once(self, path: str) -> str:
        """``sys.exit()`` the first time (``path`` records it), return "done" after."""
        if _bump_file(path) == 1:
            sys.exit(3)
        return "done"

    def worker_pid(self) -> int:
        return self.pid


@zactor.remote
class Slow:
    """A sync actor whose calls can be held on a gate file."""

    def __init__(self, marks: str | None = None) -> None:
        self.n = 0
        self.marks = marks

    def hold(self, marker: str, gate: str) -> str:
        with open(marker, "w"):
            pass
        while not os.path.exists(gate):
            time.sleep(0.005)
        return "held"

    def inc(self) -> int:
        self.n += 1
        return self.n

    def leave(self) -> None:
        zactor.exit_actor()

    def quit(self) -> None:
        sys.exit(0)

    def hold_then_quit(self, marker: str, gate: str) -> None:
        self.hold(marker, gate)
        sys.exit(0)

    def where(self) -> int:
        return os.getpid()

    def ping(self, payload=None) -> str:
        return "pong"

    def __zactor_exit__(self) -> None:
        if self.marks is not None:
            _bump_file(self.marks)


@zactor.remote(max_concurrency=4)
class ThreadedSlow(Slow.__dict__["_cls"]):  # the same methods, run on up to 4 threads
    pass


@zactor.remote
class AsyncSlow:
    def __init__(self, marks: str | None = None) -> None:
        self.n = 0
        self.marks = marks

    async def inc(self) -> int:
        import asyncio

        await asyncio.sleep(0.01)
        self.n += 1
        return self.n

    def __zactor_exit__(self) -> None:
        if self.marks is not None:
            _bump_file(self.marks)


# -- retries and options per method and per call ----------------------------------------------


def test_a_call_retries_the_exceptions_its_options_name(cluster):
    f = Flaky.remote(failures=2)
    call = f.work.options(max_task_retries=3, retry_exceptions=[ValueError])
    assert zactor.get(call.remote(), timeout=30) == 3  # two failures, then the third attempt
    assert zactor.get(f.count.remote(), timeout=30) == 3  # on the same actor


def test_without_retry_exceptions_a_user_error_is_never_retried(cluster):
    f = Flaky.remote(failures=1)
    with pytest.raises(ValueError, match="attempt 1 fails"):
        zactor.get(f.work.options(max_task_retries=3).remote(), timeout=30)
    assert zactor.get(f.count.remote(), timeout=30) == 1


def test_retries_stop_at_max_task_retries_and_raise_the_last_error(cluster):
    f = Flaky.remote(failures=5)
    call = f.work.options(max_task_retries=2, retry_exceptions=True)
    with pytest.raises(ValueError, match="attempt 3 fails"):
        zactor.get(call.remote(), timeout=30)
    assert zactor.get(f.count.remote(), timeout=30) == 3


def test_an_exception_not_named_is_not_retried(cluster):
    f = Flaky.remote(failures=1, exc=KeyError)
    call = f.work.options(max_task_retries=3, retry_exceptions=[ValueError])
    with pytest.raises(KeyError):
        zactor.get(call.remote(), timeout=30)
    assert zactor.get(f.count.remote(), timeout=30) == 1


def test_method_decorator_gives_per_method_defaults(cluster):
    f = Flaky.remote(failures=2)
    assert zactor.get(f.patient.remote(), timeout=30) == 3
    g = Flaky.remote(failures=2, exc=KeyError)
    assert zactor.get(g.retries_anything.remote(), timeout=30) == 3
    with pytest.raises(KeyError):  # patient() retries ValueError only
        zactor.get(Flaky.remote(failures=1, exc=KeyError).patient.remote(), timeout=30)


def test_per_call_options_override_the_method_defaults(cluster):
    f = Flaky.remote(failures=2)
    with pytest.raises(ValueError, match="attempt 1 fails"):
        zactor.get(f.patient.options(max_task_retries=0).remote(), timeout=30)


def test_method_defaults_travel_with_handles(cluster):
    name = f"flaky-{os.getpid()}-{time.monotonic_ns()}"
    Flaky.options(name=name).remote(failures=2)
    again = zactor.get_actor(name)
    assert zactor.get(again.patient.remote(), timeout=30) == 3
    zactor.kill(again)


def test_bad_method_options_fail_at_once_saying_what_to_pass(cluster):
    f = Flaky.remote()
    with pytest.raises(TypeError, match="unknown method option"):
        f.work.options(retries=3)
    with pytest.raises(ValueError, match="max_task_retries must be an int"):
        f.work.options(max_task_retries="3")
    with pytest.raises(TypeError, match="retry_exceptions must be"):
        f.work.options(max_task_retries=1, retry_exceptions=["ValueError"])
    with pytest.raises(TypeError, match="unknown method option"):
        zactor.method(max_retries=1)


# -- sys.exit() in a method ---------------------------------------------------------------------


def test_sys_exit_ends_the_actor_which_restarts_under_max_restarts(cluster):
    a = Exiting.remote()
    assert zactor.get(a.inc.remote(), timeout=30) == 1
    with pytest.raises(zactor.ActorDiedError, match=r"sys.exit\(7\)"):
        zactor.get(a.quit.remote(7), timeout=30)
    # Restarted (max_restarts=1): the constructor ran again, so the count starts over.
    assert zactor.get(a.inc.remote(), timeout=30) == 1
    with pytest.raises(zactor.ActorDiedError, match="restarts are used up"):
        zactor.get(a.quit.remote(), timeout=30)
    with pytest.raises(zactor.ActorDiedError):
        zactor.get(a.inc.remote(), timeout=30)


def test_sys_exit_retries_the_call_under_max_task_retries(cluster, tmp_path):
    a = Exiting.options(max_task_retries=1).remote()
    path = str(tmp_path / "exits")
    assert zactor.get(a.quit_once.remote(path), timeout=30) == "done"
    assert open(path).read().count("x") == 2  # ran, exited, ran again on the new incarnation


def test_sys_exit_without_max_restarts_ends_the_actor_for_good(cluster):
    a = Slow.remote()
    assert zactor.get(a.inc.remote(), timeout=30) == 1
    with pytest.raises(zactor.ActorDiedError, match=r"sys.exit\(0\)"):
        zactor.get(a.quit.remote(), timeout=30)

    def settled() -> bool:
        # A call the worker answers before the head's verdict hears only of the exit;
        # once the head has decided, every call hears that it will not come back.
        error = a.inc.remote().exception(timeout=30)
        assert isinstance(error, zactor.ActorDiedError), error
        return "will not restart" in str(error)

    poll(settled, timeout=30)


def test_sys_exit_leaves_the_worker_and_its_other_actors_running(cluster):
    a = Exiting.options(max_restarts=0).remote()
    pid = zactor.get(a.worker_pid.remote(), timeout=30)
    neighbours = [Exiting.remote() for _ in range(4)]
    with pytest.raises(zactor.ActorDiedError):
        zactor.get(a.quit.remote(), timeout=30)
    assert alive(pid)  # one actor ended, not its worker process
    assert zactor.get([n.inc.remote() for n in neighbours], timeout=30) == [1, 1, 1, 1]


# -- failures while an actor restarts -----------------------------------------------------------


def test_kill_that_restarts_sends_calls_in_flight_again(cluster, gate, tmp_path):
    a = Slow.options(max_restarts=1, max_task_retries=-1).remote()
    marker = str(tmp_path / "running")
    held = a.hold.remote(marker, gate.path)
    wait_for_file(marker)
    queued = [a.inc.remote() for _ in range(3)]
    zactor.kill(a, no_restart=False)
    gate.open()
    # Each call ran once, on the new incarnation: the old one ran none of the incs.
    assert zactor.get(held, timeout=60) == "held"
    assert zactor.get(queued, timeout=60) == [1, 2, 3]
    assert zactor.get(a.inc.remote(), timeout=30) == 4


def test_kill_that_restarts_fails_calls_without_retries(cluster, gate, tmp_path):
    a = Slow.options(max_restarts=1).remote()
    marker = str(tmp_path / "running")
    held = a.hold.remote(marker, gate.path)
    wait_for_file(marker)
    queued = a.inc.remote()
    zactor.kill(a, no_restart=False)
    gate.open()
    for f in (held, queued):
        with pytest.raises(zactor.ActorDiedError, match="not sent again"):
            zactor.get(f, timeout=60)
    assert zactor.get(a.inc.remote(), timeout=30) == 1


def test_calls_made_while_a_restarting_kill_is_handled_all_resolve(cluster):
    """A thread keeps calling while kill(no_restart=False) is handled: every call either
    runs (it was made after the notice, or was sent again) or fails with ActorDiedError
    (it was in flight, without retries). None may wait for a notice already handled."""
    big = list(range(100_000))  # serializing takes a while: remote() spans the notice
    for _ in range(4):
        a = Slow.options(max_restarts=-1).remote()
        assert zactor.get(a.ping.remote(), timeout=30) == "pong"
        futures: list = []
        stop = threading.Event()

        def call(actor=a, made=futures, done=stop):
            while not done.is_set():
                made.append(actor.ping.remote(big))

        def made_at_least(n: int, made=futures) -> bool:
            return len(made) >= n

        caller = threading.Thread(target=call)
        caller.start()
        poll(lambda: made_at_least(3), timeout=30)
        zactor.kill(a, no_restart=False)
        later = len(futures) + 3
        poll(lambda n=later: made_at_least(n), timeout=30)
        stop.set()
        caller.join(timeout=30)
        for f in futures:
            error = f.exception(timeout=60)  # GetTimeoutError here: a call never resolved
            assert error is None or isinstance(error, zactor.ActorDiedError), error
        assert zactor.get(a.ping.remote(), timeout=30) == "pong"
        zactor.kill(a)


def test_a_handle_sent_after_a_restart_reaches_the_new_incarnation(cluster):
    """A handle pickled after its actor restarted elsewhere carries the new address; a
    driver that joined after the restart (so it never heard of it) can call it."""
    from zactor.endpoint import runtime as runtime_mod

    a = Slow.options(max_restarts=-1).remote()
    assert zactor.get(a.inc.remote(), timeout=30) == 1
    zactor.kill(a, no_restart=False)
    assert zactor.get(a.inc.remote(), timeout=30) == 1  # a fresh incarnation
    blob = cloudpickle.dumps(a)
    head = runtime_mod.current().head_address
    out = run_scenario(
        textwrap.dedent(
            f"""
            import json, cloudpickle, zactor
            zactor.init(address={head!r})
            h = cloudpickle.loads({blob!r})
            value = zactor.get(h.inc.remote(), timeout=60)
            zactor.shutdown()
            print("RESULT " + json.dumps(value))
            """
        )
    )
    assert out == 2


PRELUDE = """
import json, os, signal, time
import zactor

zactor.init(num_workers=2)

@zactor.remote(max_restarts=1)
class Restartable:
    def __init__(self):
        self.n = 0

    def pid(self):
        return os.getpid()

    def inc(self):
        self.n += 1
        return self.n

def gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False

def report(**values):
    zactor.shutdown()
    print("RESULT " + json.dumps(values))
"""


def test_a_call_made_after_the_worker_died_waits_for_the_restart():
    out = run_scenario(
        PRELUDE
        + textwrap.dedent(
            """
            r = Restartable.remote()
            pid = zactor.get(r.pid.remote(), timeout=30)
            assert zactor.get(r.inc.remote(), timeout=30) == 1
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while not gone(pid) and time.monotonic() < deadline:
                time.sleep(0.001)
            # Made once the worker is gone (reaped), whether or not this driver has heard:
            # it never reached the dead process, so it runs on the restarted actor.
            value = zactor.get(r.inc.remote(), timeout=60)
            new_pid = zactor.get(r.pid.remote(), timeout=30)
            report(value=value, moved=new_pid != pid)
            """
        )
    )
    assert out == {"value": 1, "moved": True}


# -- ending actors -------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [Slow, ThreadedSlow], ids=["sync", "threaded"])
def test_terminate_finishes_the_calls_sent_before_then_ends(cluster, gate, tmp_path, cls):
    a = cls.remote()
    marker = str(tmp_path / "running")
    held = a.hold.remote(marker, gate.path)
    wait_for_file(marker)
    before = [a.inc.remote() for _ in range(3)]
    bye = a.__zactor_terminate__.remote()
    gate.open()
    assert zactor.get(held, timeout=30) == "held"
    assert sorted(zactor.get(before, timeout=30)) == [1, 2, 3]
    assert zactor.get(bye, timeout=30) is None  # resolves once the actor is gone
    with pytest.raises(zactor.ActorDiedError, match="__zactor_terminate__"):
        zactor.get(a.inc.remote(), timeout=30)


def test_sys_exit_beside_a_terminate_does_not_bring_the_actor_back(cluster, gate, tmp_path):
    a = ThreadedSlow.options(max_restarts=-1).remote()
    marker = str(tmp_path / "running")
    exiting = a.hold_then_quit.remote(marker, gate.path)
    wait_for_file(marker)
    bye = a.__zactor_terminate__.remote()

    def terminating() -> bool:  # new calls are refused once the terminate has run
        error = a.ping.remote().exception(timeout=30)
        return isinstance(error, zactor.ActorDiedError) and "terminate" in str(error)

    poll(terminating, timeout=30)
    gate.open()
    assert isinstance(exiting.exception(timeout=30), zactor.ActorDiedError)
    assert zactor.get(bye, timeout=30) is None
    with pytest.raises(zactor.ActorDiedError, match="will not restart"):
        zactor.get(a.ping.remote(), timeout=30)


def test_terminate_an_async_actor(cluster):
    a = AsyncSlow.remote()
    before = [a.inc.remote() for _ in range(5)]
    assert zactor.get(a.__zactor_terminate__.remote(), timeout=30) is None
    assert sorted(zactor.get(before, timeout=30)) == [1, 2, 3, 4, 5]
    with pytest.raises(zactor.ActorDiedError, match="__zactor_terminate__"):
        zactor.get(a.inc.remote(), timeout=30)


def test_terminate_frees_the_name_and_does_not_restart(cluster):
    name = f"terminated-{os.getpid()}-{time.monotonic_ns()}"
    a = Slow.options(name=name, max_restarts=-1).remote()
    assert zactor.get(a.inc.remote(), timeout=30) == 1
    zactor.get(a.__zactor_terminate__.remote(), timeout=30)

    def name_free():
        try:
            zactor.get_actor(name)
        except ValueError:
            return True
        return False

    poll(name_free, timeout=30)
    with pytest.raises(zactor.ActorDiedError):
        zactor.get(a.inc.remote(), timeout=30)


def _ends_with_hook(tmp_path, end) -> None:
    marks = str(tmp_path / "exit-hook")
    a = Slow.remote(marks)
    assert zactor.get(a.inc.remote(), timeout=30) == 1
    end(a)
    del a
    gc.collect()
    wait_for_file(marks)
    # The hook creates the file, then writes its line: wait for the line, not the file.
    poll(lambda: open(marks).read().endswith("\n"), timeout=30)
    assert open(marks).read() == "x\n"


@pytest.mark.parametrize(
    "end",
    [
        lambda a: zactor.kill(a),
        lambda a: a.leave.remote().exception(timeout=30),
        lambda a: a.quit.remote().exception(timeout=30),
        lambda a: zactor.get(a.__zactor_terminate__.remote(), timeout=30),
        lambda a: None,  # its last handle goes: its lifetime ends
    ],
    ids=["kill", "exit_actor", "sys.exit", "terminate", "out-of-scope"],
)
def test_exit_hook_runs_once_whatever_ends_the_actor(cluster, tmp_path, end):
    _ends_with_hook(tmp_path, end)


def test_exit_hook_of_an_async_actor(cluster, tmp_path):
    marks = str(tmp_path / "exit-hook")
    a = AsyncSlow.remote(marks)
    assert zactor.get(a.inc.remote(), timeout=30) == 1
    zactor.kill(a)
    wait_for_file(marks)
