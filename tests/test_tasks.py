"""Stateless tasks (issue 13): ``@zactor.remote`` on a function.

Tasks that kill workers run in a subprocess with a cluster of their own
(``scenario.py``); the rest use the session's 2-worker cluster. The task
functions live at module level: the workers import this module by name.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading

import numpy as np
import pytest
from gates import poll
from gates import wait_for_file as _wait_for_file
from scenario import run_scenario

import zactor
from zactor.caller.handle import head_handle
from zactor.endpoint import runtime as runtime_mod
from zactor.wire.protocol import TASK_RUNNER_METHODS, actor_method_table
from zactor.worker.tasks import TaskRunner

pytestmark = pytest.mark.timeout(60)


@zactor.remote
def square(x):
    return x * x


@zactor.remote
def describe(a, b=0, *, scale=1):
    return {"a": a, "b": b, "scale": scale, "pid": os.getpid()}


@zactor.remote
def total(array):
    return float(array.sum()), array.flags.writeable


@zactor.remote
def fail(message):
    raise ValueError(message)


@zactor.remote
def add(a, b):
    return a + b


@zactor.remote
def held(started_dir, index, gate_path):
    """Mark ``index`` as running on this worker, wait for the gate, then unmark it.

    Returns this worker's pid and how many of these tasks were running on this
    worker (itself included) when it started.
    """
    pid = os.getpid()
    mark = os.path.join(started_dir, f"{index}-{pid}")
    with open(mark, "w"):
        pass
    beside = sum(1 for name in os.listdir(started_dir) if name.endswith(f"-{pid}"))
    _wait_for_file(gate_path)
    os.unlink(mark)
    return {"pid": pid, "beside": beside}


@zactor.remote
def fib(n):
    if n < 2:
        return n
    return sum(zactor.get([fib.remote(n - 1), fib.remote(n - 2)], timeout=50))


@zactor.remote
def flaky(path, failures):
    """Raise ConnectionError the first ``failures`` times (counted in the file at ``path``)."""
    with open(path, "a") as f:
        f.write("x")
    with open(path) as f:
        attempt = len(f.read())
    if attempt <= failures:
        raise ConnectionError(f"attempt {attempt} fails")
    return attempt


@zactor.remote
def exits_once(path):
    """Call sys.exit() the first time (its runner ends as its worker would), then return."""
    if not os.path.exists(path):
        with open(path, "w"):
            pass
        sys.exit(3)
    return "second run"


@zactor.remote
def exits_actor():
    zactor.exit_actor()


@zactor.remote
class Holder:
    def take(self, value):
        return value


def running(directory) -> list:
    return sorted(os.listdir(directory))


# -- calling tasks ---------------------------------------------------------------------------


def test_a_task_runs_and_returns_its_value(cluster):
    f = square.remote(7)
    assert isinstance(f, zactor.Future)
    assert zactor.get(f, timeout=30) == 49
    assert zactor.get([square.remote(i) for i in range(20)], timeout=30) == [
        i * i for i in range(20)
    ]


def test_arguments_keywords_and_arrays_travel(cluster):
    out = zactor.get(describe.remote(1, b=2, scale=3), timeout=30)
    assert (out["a"], out["b"], out["scale"]) == (1, 2, 3)
    assert out["pid"] != os.getpid()
    array = np.arange(100_000, dtype=np.float64)  # out of band
    assert zactor.get(total.remote(array), timeout=30) == (float(array.sum()), False)


def test_a_task_exception_reaches_the_caller_with_its_class(cluster):
    with pytest.raises(ValueError, match="bad input") as info:
        zactor.get(fail.remote("bad input"), timeout=30)
    assert isinstance(info.value, zactor.ActorError)
    assert "Remote traceback" in str(info.value)
    # The next task on the same runners still runs.
    assert zactor.get(square.remote(3), timeout=30) == 9


def test_a_task_future_can_be_awaited(cluster):
    async def main():
        return await square.remote(6)

    assert asyncio.run(asyncio.wait_for(main(), 30)) == 36


def test_calling_a_task_directly_or_with_wrong_arguments_fails_at_once(cluster):
    with pytest.raises(TypeError, match=r"square\.remote\("):
        square(3)
    with pytest.raises(TypeError, match=r"square\.remote\(\).*square\(x\)"):
        square.remote(1, 2)
    with pytest.raises(TypeError, match="unexpected keyword"):
        describe.remote(1, colour="red")


def test_the_task_runner_table_is_its_class_table():
    assert actor_method_table(TaskRunner) == TASK_RUNNER_METHODS


# -- options ---------------------------------------------------------------------------------


def test_options_are_checked_like_actor_options():
    with pytest.raises(TypeError, match="unknown task option.*valid options are") as info:
        square.options(max_restarts=1)
    for name in ("num_cpus", "resources", "max_retries", "retry_exceptions"):
        assert name in str(info.value)
    with pytest.raises(ValueError, match="num_cpus"):
        square.options(num_cpus=2)
    with pytest.raises(ValueError, match="num_cpus"):
        square.options(num_cpus=-1)
    with pytest.raises(ValueError, match="max_retries"):
        square.options(max_retries=-2)
    with pytest.raises(ValueError, match="max_retries"):
        square.options(max_retries=1.5)
    with pytest.raises(ValueError, match="resource"):
        square.options(resources={"GPU": -1})
    with pytest.raises(ValueError, match="num_cpus=..."):
        square.options(resources={"CPU": 1})
    with pytest.raises(TypeError, match="retry_exceptions"):
        square.options(retry_exceptions=[42])


def test_the_decorator_takes_options_for_functions_and_classes():
    @zactor.remote(num_cpus=0.5, max_retries=0)
    def half(x):
        return x

    assert isinstance(half, zactor.RemoteFunction)
    assert half._options == {"num_cpus": 0.5, "max_retries": 0}
    with pytest.raises(TypeError, match="unknown task option"):
        zactor.remote(max_restarts=1)(lambda: None)
    with pytest.raises(TypeError, match="unknown actor option"):
        zactor.remote(max_retries=1)(type("Plain", (), {}))
    with pytest.raises(TypeError, match="unknown option.*actor class.*task function"):
        zactor.remote(colour="red")
    with pytest.raises(TypeError, match="class, or a task of a function"):
        zactor.remote(max_retries=1)(42)


def test_a_demand_no_worker_meets_fails_at_once(cluster):
    with pytest.raises(zactor.ClusterError, match=r"cannot run task .*GPU=1.*no worker"):
        square.options(resources={"GPU": 1}).remote(2)


# -- where tasks run -------------------------------------------------------------------------


def _workers_with_whole_cpus() -> int:
    workers = head_handle().cluster_info.remote().result(timeout=30)["workers"]
    return sum(1 for w in workers if w["cpu_free"] >= 1)


def test_tasks_spread_over_the_workers_and_run_at_once(cluster, gate, tmp_path):
    started = tmp_path / "started"
    started.mkdir()
    futures = [held.options(num_cpus=0).remote(str(started), i, gate.path) for i in range(6)]
    # Six tasks running at once, held: on both workers, three each.
    poll(lambda: len(running(started)) == 6, timeout=30)
    pids = {name.split("-")[1] for name in running(started)}
    assert len(pids) == 2
    gate.open()
    assert len({out["pid"] for out in zactor.get(futures, timeout=30)}) == 2


def test_num_cpus_is_the_share_of_a_worker_a_task_holds_while_it_runs(cluster, make_gate, tmp_path):
    assert _workers_with_whole_cpus() == 2, "an earlier test left an actor reserving a CPU"
    started = tmp_path / "started"
    started.mkdir()
    # num_cpus=0.5: two at once on each worker.
    gate = make_gate()
    halves = [held.options(num_cpus=0.5).remote(str(started), i, gate.path) for i in range(4)]
    poll(lambda: len(running(started)) == 4, timeout=30)
    assert len({name.split("-")[1] for name in running(started)}) == 2
    gate.open()
    zactor.get(halves, timeout=30)
    # num_cpus=1 (the default): one at a time on each worker; the rest wait in the driver.
    gates = [make_gate() for _ in range(4)]
    wholes = [held.remote(str(started), 10 + i, gates[i].path) for i in range(4)]
    poll(lambda: len(running(started)) == 2, timeout=30)
    assert {name.split("-")[0] for name in running(started)} == {"10", "11"}
    # A task that holds no share does not wait behind them.
    assert zactor.get(square.options(num_cpus=0).remote(5), timeout=30) == 25
    gates[0].open()
    poll(lambda: "12" in {name.split("-")[0] for name in running(started)}, timeout=30)
    for g in gates:
        g.open()
    assert [out["beside"] for out in zactor.get(wholes, timeout=30)] == [1, 1, 1, 1]


def test_a_function_is_shipped_once_per_runner(cluster):
    @zactor.remote
    def fresh(x):
        return x + 1

    def runner_calls() -> dict:
        status = head_handle().status.remote().result(timeout=30)
        me = runtime_mod.current().address
        return {
            row["actor_id"]: row.get("calls") or 0
            for row in status["actors"]
            if row["class_name"] == "TaskRunner" and row["owner"] == me
        }

    before = runner_calls()
    assert zactor.get([fresh.remote(i) for i in range(30)], timeout=30) == list(range(1, 31))

    def shipped_once() -> bool:
        # Each runner that ran it had one definition, then only calls by digest. (A
        # definition is counted once it returns, which may follow the calls' replies.)
        after = runner_calls()
        grown = [n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)]
        return bool(grown) and sum(grown) == 30 + len(grown)

    poll(shipped_once, timeout=10)


def test_tasks_called_from_tasks_do_not_wait_behind_their_caller(cluster):
    assert zactor.get(fib.remote(6), timeout=50) == 8


# -- futures as arguments --------------------------------------------------------------------


def test_futures_as_arguments_are_resolved_before_sending(cluster):
    assert zactor.get(square.remote(square.remote(3)), timeout=30) == 81
    assert zactor.get(add.remote(square.remote(2), b=square.remote(3)), timeout=30) == 13
    counter = Holder.remote()
    assert zactor.get(add.remote(counter.take.remote(5), 1), timeout=30) == 6


def test_a_failed_dependency_fails_the_task_that_takes_it(cluster):
    f = add.remote(fail.remote("upstream"), 1)
    with pytest.raises(ValueError, match="upstream"):
        zactor.get(f, timeout=30)


def test_a_future_that_would_travel_still_raises_type_error(cluster):
    with pytest.raises(TypeError, match="cannot be sent to another process"):
        add.remote([square.remote(2)], [])
    holder = Holder.remote()
    with pytest.raises(TypeError, match="cannot be sent to another process"):
        holder.take.remote(square.remote(2))


# -- retries ---------------------------------------------------------------------------------


def test_retry_exceptions_sends_a_task_again_under_max_retries(cluster, tmp_path):
    path = str(tmp_path / "attempts")
    f = flaky.options(retry_exceptions=[ConnectionError], max_retries=2).remote(path, 2)
    assert zactor.get(f, timeout=30) == 3
    path = str(tmp_path / "attempts-2")
    with pytest.raises(ConnectionError, match="attempt 2"):
        zactor.get(flaky.options(retry_exceptions=True, max_retries=1).remote(path, 5), timeout=30)
    path = str(tmp_path / "attempts-3")
    with pytest.raises(ConnectionError, match="attempt 1"):  # not named: not retried
        zactor.get(flaky.options(retry_exceptions=[KeyError]).remote(path, 5), timeout=30)


def test_a_task_that_calls_sys_exit_is_retried_on_a_new_runner(cluster, tmp_path):
    path = str(tmp_path / "exited")
    assert zactor.get(exits_once.remote(path), timeout=30) == "second run"
    with pytest.raises(zactor.WorkerCrashedError, match=r"sys\.exit\(3\).*max_retries=0"):
        zactor.get(exits_once.options(max_retries=0).remote(str(tmp_path / "again")), timeout=30)
    assert zactor.get(square.remote(5), timeout=30) == 25


def test_exit_actor_in_a_task_is_an_error(cluster):
    with pytest.raises(RuntimeError, match="a task is not one"):
        zactor.get(exits_actor.remote(), timeout=30)


def test_call_later_runs_a_function_on_the_background_thread(cluster):
    ran = threading.Event()
    runtime_mod.current().call_later(0.01, ran.set)
    assert ran.wait(10)


KILL_PRELUDE = """
import atexit, json, os, shutil, signal, tempfile, time
import zactor

zactor.init(num_workers={workers})

@zactor.remote
def attempt(directory, gate):
    # Record this attempt's pid, then wait for the gate (the test kills us meanwhile).
    with open(os.path.join(directory, f"{{os.getpid()}}-{{time.monotonic_ns()}}"), "w"):
        pass
    deadline = time.monotonic() + 90
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.005)
    return os.getpid()

def attempts(directory):
    return sorted(os.listdir(directory), key=lambda n: int(n.split("-")[1]))

def wait_attempts(directory, n):
    deadline = time.monotonic() + 60
    while len(attempts(directory)) < n:
        assert time.monotonic() < deadline, attempts(directory)
        time.sleep(0.01)
    return int(attempts(directory)[n - 1].split("-")[0])

def kill(pid):
    os.kill(pid, signal.SIGKILL)

def outcome(future):
    try:
        return ["ok", future.result(timeout=90)]
    except zactor.WorkerCrashedError as e:
        return ["crashed", str(e), isinstance(e, zactor.ActorDiedError)]

ROOT = tempfile.mkdtemp(prefix="zactor-test-tasks-")
atexit.register(shutil.rmtree, ROOT, True)  # also if the scenario fails

def fresh_dir(name):
    path = os.path.join(ROOT, name)
    os.makedirs(path)
    return path
"""


@pytest.mark.timeout(150)
def test_a_task_whose_worker_dies_is_retried_then_fails_clearly():
    out = run_scenario(
        KILL_PRELUDE.format(workers=2)
        + """
never = fresh_dir("never")
gate = os.path.join(never, "gate")

# Killed once: runs again on a live worker, and returns from there.
d1 = fresh_dir("once")
f = attempt.remote(d1, gate)
first = wait_attempts(d1, 1)
kill(first)
second = wait_attempts(d1, 2)
open(gate, "w").close()
retried = outcome(f)
os.unlink(gate)

# max_retries=0: the first death fails it.
d2 = fresh_dir("zero")
f = attempt.options(max_retries=0).remote(d2, gate)
kill(wait_attempts(d2, 1))
no_retry = outcome(f)

# max_retries=1, killed twice.
d3 = fresh_dir("twice")
f = attempt.options(max_retries=1).remote(d3, gate)
kill(wait_attempts(d3, 1))
kill(wait_attempts(d3, 2))
used_up = outcome(f)

# Tasks still run afterwards.
open(never + "-open", "w").close()
later = zactor.get(attempt.remote(fresh_dir("later"), never + "-open"), timeout=60)
zactor.shutdown()
print("RESULT " + json.dumps(dict(first=first, second=second, retried=retried,
      no_retry=no_retry, used_up=used_up, later=later)))
"""
    )
    assert out["second"] != out["first"]
    assert out["retried"] == ["ok", out["second"]]
    kind, message, is_died = out["no_retry"]
    assert kind == "crashed" and is_died
    assert "task __main__.attempt failed" in message and "SIGKILL" in message
    assert "max_retries=0" in message
    kind, message, _ = out["used_up"]
    assert kind == "crashed" and "ran 2 times" in message and "max_retries=1" in message
    assert isinstance(out["later"], int)


@pytest.mark.timeout(150)
def test_a_task_waits_for_the_replacement_of_the_only_worker():
    out = run_scenario(
        KILL_PRELUDE.format(workers=1)
        + """
d = fresh_dir("only")
gate = os.path.join(d, "gate")
f = attempt.remote(d, gate)
first = wait_attempts(d, 1)
kill(first)
second = wait_attempts(d, 2)
open(gate, "w").close()
result = outcome(f)
zactor.shutdown()
print("RESULT " + json.dumps(dict(first=first, second=second, result=result)))
"""
    )
    assert out["second"] != out["first"]
    assert out["result"] == ["ok", out["second"]]


@pytest.mark.timeout(150)
def test_tasks_keep_off_a_worker_an_actor_holds_and_do_not_count_as_its_actors():
    out = run_scenario(
        """
import json, os
import zactor

zactor.init(num_workers=2)

@zactor.remote
def pid():
    return os.getpid()

@zactor.remote
class Owner:
    def pid(self):
        return os.getpid()

first = Owner.options(num_cpus=1).remote()
owned = zactor.get(first.pid.remote(), timeout=30)
# Default tasks (num_cpus=1) keep off the worker the actor holds; num_cpus=0 ones do not.
whole = sorted(set(zactor.get([pid.remote() for _ in range(20)], timeout=30)))
zero = sorted(set(zactor.get([pid.options(num_cpus=0).remote() for _ in range(20)])))
# Both workers have a task runner now, and another num_cpus=1 actor still finds a
# worker of its own: runners are not actors to placement.
second = Owner.options(num_cpus=1).remote()
other = zactor.get(second.pid.remote(), timeout=30)
zactor.shutdown()
print("RESULT " + json.dumps(dict(owned=owned, whole=whole, zero=zero, other=other)))
"""
    )
    assert len(out["whole"]) == 1 and out["whole"][0] != out["owned"]
    assert sorted(out["zero"]) == sorted([out["owned"], out["whole"][0]])
    assert out["other"] == out["whole"][0]
