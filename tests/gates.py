"""Helpers shared by the tests and by the actors they define (workers import it too)."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

import zactor

#: A ``sitecustomize`` module for a worker that must be held at its start: it waits
#: until the file ``gate`` exists (or its parent is gone: it must not outlive a failed
#: test). Written onto a path the cluster's processes inherit after they started, only
#: the replacement worker started later runs it: ``HOLD_AT_START.format(gate=path)``.
HOLD_AT_START = """
import os, time
parent = os.getppid()
while not os.path.exists({gate!r}) and os.getppid() == parent:
    time.sleep(0.01)
"""

#: The same for a worker that cannot start: its interpreter exits at once.
EXIT_AT_START = """
import os
os._exit(3)
"""


def wait_for_file(path: str, limit: float = 30.0) -> None:
    """Block until ``path`` exists (a gate a test opens); TimeoutError after ``limit`` s."""
    deadline = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.005)


def alive(pid: int) -> bool:
    """True while ``pid`` runs and is a zactor process (zombies count as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in (b"Z", b"X") and b"zactor" in cmdline


def poll(predicate, timeout: float = 10.0, interval: float = 0.01):
    """Wait until ``predicate()`` is truthy (returns it) or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        time.sleep(interval)


def first_report(proc: subprocess.Popen, mark: str) -> dict:
    """The first ``mark {json}`` line a driver process prints; fails the test (with the
    driver's output) if its first line is anything else."""
    line = proc.stdout.readline()  # bounded by the test's timeout mark
    if not line.startswith(mark):
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"driver did not report: {line}{out}\n--- stderr\n{err}")
    return json.loads(line[len(mark) :])


def tasks_available() -> bool:
    """Whether this build runs stateless tasks (``zactor.remote`` on a function)."""
    try:
        zactor.remote(lambda: None)
    except NotImplementedError:
        return False
    return True


#: Skips a test that runs a task while ``zactor.remote(fn)`` raises NotImplementedError.
needs_tasks = pytest.mark.skipif(
    not tasks_available(),
    reason="zactor.remote(fn) (stateless tasks) is not in this build: it raises "
    "NotImplementedError, so this test's task cannot run",
)
