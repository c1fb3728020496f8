"""A standing cluster's head that dies and is restarted with ``zactor start --head --recover``.

The head is SIGKILLed alone: its workers wait for it (``HEAD_GRACE_S``), a
driver's calls to their actors keep flowing meanwhile (they never touch the
head), and the restarted head reloads its registry from ``head.sqlite3``, so
the driver finds the same named actor, with its state, and creates new ones.
Runs as subprocesses in a private cluster directory, as tests/test_cli.py does.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest
from gates import alive, first_report, poll
from test_cli import MARK, standing  # noqa: F401  (the fixture)

from zactor.control.head_store import HeadStore
from zactor.control.supervisor import AdoptedProcess
from zactor.processes import process_start_time

pytestmark = pytest.mark.timeout(180)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DRIVER = """
def gate(name):
    path = os.path.join(GATES, name)
    while not os.path.exists(path):  # bounded by the test's timeout
        time.sleep(0.01)

zactor.init(address=ADDRESS, namespace="rec")
keeper = Counter.options(name="keeper", lifetime="detached").remote(10)
report(step="ready", value=zactor.get(keeper.increment.remote(), timeout=30))
gate("head-killed")
values = [zactor.get(keeper.increment.remote(), timeout=30) for _ in range(3)]
report(step="while-down", values=values)
gate("head-back")
found = zactor.get_actor("keeper")
fresh = Counter.remote(1)
report(
    step="after",
    value=zactor.get(found.increment.remote(), timeout=30),
    same=found._actor_id == keeper._actor_id,
    fresh=zactor.get(fresh.increment.remote(), timeout=30),
)
zactor.shutdown()
"""


def test_a_killed_head_restarts_and_its_actors_keep_their_state(standing, tmp_path):  # noqa: F811
    port = free_port()
    record = standing.start("--port", str(port), "--num-workers", "2")
    address = record["address"]
    assert address == f"tcp://127.0.0.1:{port}"
    assert oct(os.stat(standing.directory / "head.sqlite3").st_mode & 0o777) == "0o600"
    workers = sorted(w["pid"] for w in standing.status()["workers"])
    gates = tmp_path / "gates"
    gates.mkdir()
    body = f"ADDRESS = {address!r}\nGATES = {str(gates)!r}\n" + DRIVER
    driver, first = standing.start_driver(body)
    try:
        assert first == {"step": "ready", "value": 11}

        os.kill(record["pid"], signal.SIGKILL)
        poll(lambda: not alive(record["pid"]), timeout=20)
        assert all(alive(pid) for pid in workers), "a worker ended with its head"
        # What the restarted head adopts them by: pid, and the start time that tells them
        # from a process that takes a pid one of them leaves.
        store = HeadStore.open(str(standing.directory / "head.sqlite3"))
        try:
            left = store.load().workers.values()
        finally:
            store.close()
        assert sorted((w["pid"], w["start_time"]) for w in left) == [
            (pid, process_start_time(pid)) for pid in workers
        ]
        (gates / "head-killed").touch()
        assert first_report(driver, MARK) == {"step": "while-down", "values": [12, 13, 14]}

        back = standing.start("--port", str(port), "--num-workers", "2", "--recover")
        assert back["address"] == address and back["pid"] != record["pid"]
        status = standing.status()
        assert sorted(w["pid"] for w in status["workers"]) == workers  # the same processes
        keeper = [a for a in status["actors"] if a["name"] == "keeper"]
        assert len(keeper) == 1 and keeper[0]["lifetime"] == "detached"
        (gates / "head-back").touch()
        assert first_report(driver, MARK) == {
            "step": "after",
            "value": 15,
            "same": True,
            "fresh": 2,
        }
        assert driver.wait(timeout=60) == 0
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        driver.stdout.close()
        driver.stderr.close()

    stopped = standing.run("stop", "--json")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    poll(lambda: not any(alive(pid) for pid in workers), timeout=30)
    assert not (standing.directory / "head.sqlite3").exists()  # stopped: nothing to recover


def test_an_adopted_worker_is_told_from_a_process_that_took_its_pid(monkeypatch):
    """A recovered head watches the workers the dead head left by pid and the start time
    they registered with. A process that took a dead worker's pid is seen as that worker's
    exit, and is never killed in its place."""
    signalled = []
    send = os.kill
    monkeypatch.setattr(os, "kill", lambda pid, sig: (signalled.append(pid), send(pid, sig))[1])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = process_start_time(other.pid)
        gone = AdoptedProcess(other.pid, started - 1)  # the worker had this pid before
        assert gone.poll() == 0
        gone.kill()
        assert signalled == [], "a process that reused a worker's pid was killed"
        ours = AdoptedProcess(other.pid, started)
        assert ours.poll() is None
        ours.kill()
        assert ours.wait(timeout=30) == -signal.SIGKILL
    finally:
        other.kill()
        other.wait()
