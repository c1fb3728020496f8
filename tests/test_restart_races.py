"""Creating and restarting actors while a dead worker's replacement starts (issue 14).

Each scenario kills the only worker of a cluster of its own (``scenario.py``). To
hold the replacement worker at its start, or make it fail there, a scenario puts
a ``sitecustomize`` module on the path the cluster's processes inherit, after
they started: only the replacement, started later, runs it. Nothing of zactor's
is replaced; the replacement worker really is slow, or really exits.
"""

from __future__ import annotations

import textwrap
import time

import pytest
from gates import EXIT_AT_START, HOLD_AT_START
from scenario import run_scenario

import zactor.caller.actor_class
from zactor.control import supervisor
from zactor.control.supervisor import Supervisor
from zactor.transport import ipc_address

pytestmark = pytest.mark.timeout(150)

PRELUDE = """
import json, os, sys, threading, time
import zactor
from gates import poll
from zactor.caller.handle import head_handle
from zactor.errors import WorkerStartingError

HOOKS = HOOKS_DIR
sys.path.insert(0, HOOKS)  # inherited by the cluster's processes, the replacement too

zactor.init(num_workers=1)

@zactor.remote
class Dies:
    def __init__(self):
        os._exit(0)  # takes its worker process down, before anything else runs there

@zactor.remote
class Ok:
    def ping(self):
        return "ok"

    def worker(self):
        return zactor.get_runtime_context().worker_id

def only_worker():
    return zactor.api._cluster_info()["workers"][0]

def exited(pid):
    # From then on the head's waitpid() sees the exit: the process is gone, or a zombie
    # with no thread left. (Its main thread is a zombie a few ms before the last of its
    # other threads ends; gates.alive reads a process still exiting as gone.)
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return fields[0] in (b"Z", b"X") and fields[17] == b"1"

def kill_only_worker():
    pid = only_worker()["pid"]
    Dies.remote()
    poll(lambda: exited(pid), timeout=60)

def state_of_id(actor_id):
    for info in head_handle().list_actors.remote().result(timeout=30):
        if info["actor_id"] == actor_id:
            return info["state"]

def state_of(handle):
    return state_of_id(handle._actor_id)

def replacements(how):
    # From here on, a new Python process with HOOKS on its path runs this first.
    with open(os.path.join(HOOKS, "sitecustomize.py"), "w") as f:
        f.write(how)

def outcome(future, timeout=60):
    try:
        return ["ok", future.result(timeout=timeout)]
    except zactor.ActorDiedError as e:
        return ["died", str(e)]

def report(**values):
    zactor.shutdown()
    print("RESULT " + json.dumps(values))
"""


def scenario(tmp_path, body: str) -> dict:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    return run_scenario(PRELUDE.replace("HOOKS_DIR", repr(str(hooks))) + textwrap.dedent(body))


def test_an_actor_created_right_after_the_only_worker_died_waits_for_its_replacement(tmp_path):
    out = scenario(
        tmp_path,
        """
        first = only_worker()["worker_id"]
        kill_only_worker()
        ok = Ok.remote()   # the head may not know of the death yet; no worker is live
        report(first=first, ping=zactor.get(ok.ping.remote(), timeout=60),
               worker=zactor.get(ok.worker.remote(), timeout=60))
        """,
    )
    assert out["ping"] == "ok"
    assert out["worker"] != out["first"]  # on the replacement


def test_creations_and_restarts_wait_while_the_replacement_starts(tmp_path):
    gate = str(tmp_path / "gate")
    out = scenario(
        tmp_path,
        f"""
        again = Ok.options(max_restarts=1, max_task_retries=-1).remote()
        dropped = Ok.options(max_restarts=1).remote()
        zactor.get([again.ping.remote(), dropped.ping.remote()], timeout=60)
        replacements({HOLD_AT_START.format(gate=gate)!r})
        kill_only_worker()
        poll(lambda: state_of(again) == "restarting", timeout=60)  # the head saw the death
        # Its last handle goes while its restart waits: once restarted, it retires.
        dropped_id, dropped = dropped._actor_id, None
        poll(lambda: state_of_id(dropped_id) == "retire-when-started", timeout=60)
        made = Ok.remote()   # at once: its placement waits for the replacement, not the caller
        first = made.ping.remote()
        ready, _ = zactor.wait([first], timeout=1.0)
        waiting = not ready   # the replacement is held: it can neither succeed nor fail
        # No replacement could take it: its first call fails, without waiting for one.
        refused = outcome(Ok.options(resources={{"TPU": 1}}).remote().ping.remote())
        call = again.ping.remote()   # held until the restart, itself waiting for the worker
        restarting = state_of(again)
        open({gate!r}, "w").close()
        poll(lambda: state_of_id(dropped_id) is None, timeout=60)  # restarted, then ended
        report(waiting=waiting, refused=refused,
               restarting=restarting, call=outcome(call),
               ping=zactor.get(first, timeout=60),
               state=state_of(again))
        """,
    )
    assert out["waiting"]
    assert out["ping"] == "ok"
    kind, refused = out["refused"]
    assert kind == "died" and "no node of this cluster offers that much TPU" in refused
    assert out["restarting"] == "restarting"
    assert out["call"] == ["ok", "ok"] and out["state"] == "alive"


def test_a_replacement_that_cannot_start_fails_the_creations_and_restarts_waiting(tmp_path):
    out = scenario(
        tmp_path,
        f"""
        again = Ok.options(max_restarts=1, max_task_retries=-1).remote()
        zactor.get(again.ping.remote(), timeout=60)
        replacements({EXIT_AT_START!r})
        kill_only_worker()
        created = Ok.remote()   # at once; its placement gives up when the replacement does
        try:
            zactor.get(created.ping.remote(), timeout=120)
            error = still_waiting = None
        except zactor.ClusterError as e:
            error, still_waiting = e.args[0], isinstance(e, WorkerStartingError)
        report(error=error, still_waiting=still_waiting, call=outcome(again.ping.remote()))
        """,
    )
    error = out["error"]
    assert out["still_waiting"] is False  # a plain ClusterError: the creation stopped waiting
    assert "the cluster has no live worker" in error
    assert "Replacement worker worker-1" in error and "exited with code 3" in error
    assert "standard error of the process that started the cluster" in error
    assert "zactor.init()" in error
    kind, message = out["call"]
    assert kind == "died" and "could not be placed again" in message
    assert "worker-1" in message and "exited with code 3" in message


def test_the_supervisor_kills_a_replacement_that_does_not_register_in_time(tmp_path):
    # A real worker process told of a head that does not exist: it never registers.
    sup = Supervisor(str(tmp_path), ipc_address(str(tmp_path), "no-head.sock"))
    sup.replace_worker("worker-dead")
    (worker_id,) = sup.replacing
    proc = sup.processes[worker_id]
    try:
        sup._give_up_on_late_starts(time.monotonic())
        assert sup.exit_cause(worker_id) is None  # not late yet: left alone
        sup._give_up_on_late_starts(time.monotonic() + supervisor.WORKER_START_TIMEOUT_S + 1)
        proc.wait(timeout=30)
        cause = sup.exit_cause(worker_id)
        assert cause and "did not register with the head within 60 s" in cause
        assert "killed it" in cause
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_creation_outwaits_the_heads_limit_on_a_replacement():
    # The head's error, which names the replacement worker, must come before the
    # creating process's own, which cannot.
    assert zactor.caller.creation.PLACE_WAIT_S > supervisor.WORKER_START_TIMEOUT_S + 5
