"""The embedded cluster's lifecycle: start, stop, restart, and dying drivers.

Every test runs its driver as a separate Python process (a script written to
``tmp_path``), so each cluster's lifetime is isolated from the test session
and from the other tests. Drivers report the pids of the head and the
workers and the session directory (which holds the ipc socket files) as one
JSON line; the test then checks that nothing is left behind.

A process counts as alive while ``/proc/<pid>`` exists, it is not a zombie and
its command line names zactor (so a reused pid is not mistaken for ours).
Bounds are generous (seconds), never timing assertions.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from gates import alive, first_report

REPO = Path(__file__).resolve().parent.parent
MARK = "ZACTOR-LIFECYCLE "
#: How long the test waits for processes and directories to go (seconds).
GONE_WITHIN_S = 15.0


# The driver scripts use the same check.
ALIVE_SOURCE = inspect.getsource(alive)

PRELUDE = (
    textwrap.dedent(
        """
        import json, os, sys, threading, time
        import zactor
        import zactor.api
        from zactor.caller.handle import head_handle

        MARK = %r

        def report(**values):
            print(MARK + json.dumps(values), flush=True)

        def cluster_pids():
            info = head_handle().cluster_info.remote().result(timeout=30)
            head = zactor.api._session.head_process.pid
            return head, sorted(w["pid"] for w in info["workers"])
        """
    )
    % MARK
    + ALIVE_SOURCE
)


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def write_driver(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "driver.py"
    path.write_text(PRELUDE + textwrap.dedent(body))
    return path


def run_driver(tmp_path: Path, body: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a driver script to its end; return the finished process."""
    return subprocess.run(
        [sys.executable, str(write_driver(tmp_path, body))],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
        cwd=str(tmp_path),
    )


def reports(stdout: str) -> list[dict]:
    return [json.loads(ln[len(MARK) :]) for ln in stdout.splitlines() if ln.startswith(MARK)]


def wait_gone(pids, session_dir: str | None = None, within: float = GONE_WITHIN_S):
    """Poll until every pid is gone (and the session dir removed); return what is left."""
    deadline = time.monotonic() + within
    while True:
        left = [p for p in pids if alive(p)]
        dir_left = session_dir is not None and os.path.exists(session_dir)
        if (not left and not dir_left) or time.monotonic() > deadline:
            return left, dir_left
        time.sleep(0.05)


def kill_leftovers(pids) -> None:
    """Clean up after a failed check: SIGKILL our cluster's processes that still run."""
    for pid in pids:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _describe(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


# -- init() / shutdown() -------------------------------------------------------------------


REPEAT_BODY = """
@zactor.remote
class Counter:
    def __init__(self):
        self.n = 0

    def increment(self):
        self.n += 1
        return self.n

for round_ in range(3):
    zactor.init(num_workers=2)
    c = Counter.remote()
    values = zactor.get([c.increment.remote() for _ in range(3)], timeout=30)
    head, workers = cluster_pids()
    session_dir = zactor.api._session.session_dir
    sockets = sorted(os.listdir(session_dir))
    zactor.shutdown()
    report(
        round=round_,
        values=values,
        head=head,
        workers=workers,
        session_dir=session_dir,
        sockets=sockets,
        initialized=zactor.is_initialized(),
        # checked at once: shutdown() has returned, so all of it must be gone
        alive=[p for p in [head] + workers if alive(p)],
        dir_exists=os.path.exists(session_dir),
        threads=[t.name for t in threading.enumerate()],
        main_only=threading.enumerate() == [threading.main_thread()],
    )
zactor.shutdown()  # a second shutdown is harmless
report(done=True)
"""


@pytest.mark.timeout(180)
def test_init_shutdown_three_times_leaves_nothing_behind(tmp_path):
    proc = run_driver(tmp_path, REPEAT_BODY, timeout=170)
    got = reports(proc.stdout)
    all_pids = [p for r in got if "head" in r for p in [r["head"]] + r["workers"]]
    try:
        assert proc.returncode == 0, _describe(proc)
        rounds, done = got[:-1], got[-1]
        assert done == {"done": True}
        assert [r["round"] for r in rounds] == [0, 1, 2]
        for r in rounds:
            assert r["values"] == [1, 2, 3], r  # a call succeeds each time
            assert len(r["workers"]) == 2, r
            assert r["sockets"], r  # the ipc socket files live in the session dir
            assert not r["initialized"], r
            assert r["alive"] == [], f"processes left after shutdown(): {r}"
            assert not r["dir_exists"], f"session dir left after shutdown(): {r}"
            assert r["main_only"], f"threads left after shutdown(): {r['threads']}"
        # each round is a fresh cluster
        assert len({r["session_dir"] for r in rounds}) == 3
        assert len({r["head"] for r in rounds}) == 3
        left, _ = wait_gone(all_pids, within=1)
        assert left == []
    finally:
        kill_leftovers(all_pids)


EXIT_BODIES = {
    "end_of_script": "",
    "sys_exit": "sys.exit(3)",
    "uncaught_exception": "raise RuntimeError('driver fails on purpose')",
}
EXIT_CODES = {"end_of_script": 0, "sys_exit": 3, "uncaught_exception": 1}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", sorted(EXIT_BODIES))
def test_interpreter_exit_without_shutdown_leaves_nothing_behind(tmp_path, how):
    body = f"""
@zactor.remote
class Echo:
    def echo(self, x):
        return x

zactor.init(num_workers=2)
assert zactor.get(Echo.remote().echo.remote(42), timeout=30) == 42
head, workers = cluster_pids()
report(head=head, workers=workers, session_dir=zactor.api._session.session_dir)
{EXIT_BODIES[how]}
"""
    proc = run_driver(tmp_path, body, timeout=110)
    got = reports(proc.stdout)
    assert len(got) == 1, _describe(proc)
    r = got[0]
    pids = [r["head"]] + r["workers"]
    try:
        assert proc.returncode == EXIT_CODES[how], _describe(proc)
        left, dir_left = wait_gone(pids, r["session_dir"])
        assert left == [], f"processes left after the driver exited: {left}"
        assert not dir_left, f"session dir {r['session_dir']} left after the driver exited"
    finally:
        kill_leftovers(pids)


# -- a driver killed with SIGKILL ----------------------------------------------------------


KILLED_BODY = """
@zactor.remote
class Sleeper:
    def ping(self):
        return "pong"

    def nap(self, seconds):
        time.sleep(seconds)

BUSY = {busy}
zactor.init(num_workers=2)
sleepers = [Sleeper.remote() for _ in range(4)]
assert zactor.get([s.ping.remote() for s in sleepers], timeout=30) == ["pong"] * 4
if BUSY:  # every actor is inside a long call when the driver dies
    naps = [s.nap.remote(600) for s in sleepers]
    time.sleep(0.5)
head, workers = cluster_pids()
report(head=head, workers=workers, session_dir=zactor.api._session.session_dir)
time.sleep(600)
"""


def _start_and_read_report(path: Path, stdin=subprocess.DEVNULL):
    proc = subprocess.Popen(
        [sys.executable, str(path)],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=str(path.parent),
    )
    return proc, first_report(proc, MARK)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("busy", [False, True], ids=["idle_actors", "busy_actors"])
def test_driver_killed_with_sigkill_leaves_nothing_behind(tmp_path, busy):
    path = write_driver(tmp_path, KILLED_BODY.format(busy=busy))
    proc, r = _start_and_read_report(path)
    pids = [r["head"]] + r["workers"]
    try:
        assert all(alive(p) for p in pids), r
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
        left, dir_left = wait_gone(pids, r["session_dir"])
        assert left == [], f"processes still running {GONE_WITHIN_S} s after SIGKILL: {left}"
        assert not dir_left, f"session dir {r['session_dir']} left after the driver was killed"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_leftovers(pids)


HEAD_KILLED_BODY = """
@zactor.remote
class Sleeper:
    def ping(self):
        return "pong"

    def nap(self, seconds):
        time.sleep(seconds)

zactor.init(num_workers=2)
sleepers = [Sleeper.remote() for _ in range(6)]
assert zactor.get([s.ping.remote() for s in sleepers], timeout=30) == ["pong"] * 6
naps = [s.nap.remote(600) for s in sleepers]
time.sleep(0.5)
head, workers = cluster_pids()
report(head=head, workers=workers, session_dir=zactor.api._session.session_dir)
sys.stdin.readline()  # the test kills the head, checks the workers, then lets us go
zactor.shutdown()
report(done=True)
"""


@pytest.mark.timeout(120)
def test_head_killed_while_actors_are_busy_workers_exit(tmp_path):
    path = write_driver(tmp_path, HEAD_KILLED_BODY)
    proc, r = _start_and_read_report(path, stdin=subprocess.PIPE)
    pids = r["workers"]
    try:
        os.kill(r["head"], signal.SIGKILL)
        left, _ = wait_gone(pids)
        assert left == [], f"workers still running {GONE_WITHIN_S} s after their head died: {left}"
    finally:
        kill_leftovers(pids + [r["head"]])
        try:
            proc.communicate("\n", timeout=30)  # the driver shuts down what is left
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


# -- num_workers and re-initialisation ----------------------------------------------------


NUM_WORKERS_BODY = """
errors = {}
for bad in (0, -1):
    try:
        zactor.init(num_workers=bad)
    except ValueError as exc:
        errors[bad] = str(exc)
info = zactor.init(num_workers=3)
try:
    zactor.init(num_workers=3)
    reinit = None
except RuntimeError as exc:
    reinit = str(exc)
again = zactor.init(num_workers=3, ignore_reinit_error=True)
head, workers = cluster_pids()
report(
    errors=errors,
    initialized_after_errors=True,
    info_workers=len(info["workers"]),
    info_pids=sorted(w["pid"] for w in info["workers"]),
    again_workers=len(again["workers"]),
    workers=workers,
    head=head,
    workers_alive=[alive(p) for p in workers],
    reinit=reinit,
    session_dir=zactor.api._session.session_dir,
)
zactor.shutdown()
"""


@pytest.mark.timeout(120)
def test_num_workers(tmp_path):
    proc = run_driver(tmp_path, NUM_WORKERS_BODY, timeout=110)
    got = reports(proc.stdout)
    assert proc.returncode == 0 and len(got) == 1, _describe(proc)
    r = got[0]
    try:
        # num_workers=0 (and below) is refused, naming the bad value
        assert sorted(r["errors"]) == ["-1", "0"], r
        assert "num_workers" in r["errors"]["0"], r
        # and a refused init() leaves nothing half-started: a good one works after it
        assert r["info_workers"] == 3, r
        assert len(r["workers"]) == 3 and len(set(r["workers"])) == 3, r
        assert r["info_pids"] == r["workers"], r
        assert r["workers_alive"] == [True, True, True], r
        # init() twice is an error, unless ignore_reinit_error=True
        assert r["reinit"] is not None and "ignore_reinit_error" in r["reinit"], r
        assert r["again_workers"] == 3, r
        left, dir_left = wait_gone([r["head"]] + r["workers"], r["session_dir"])
        assert left == [] and not dir_left
    finally:
        kill_leftovers([r["head"]] + r["workers"])


# -- shutdown is quiet ----------------------------------------------------------------------


QUIET_BODY = """
@zactor.remote
class Slow:
    def nap(self):
        time.sleep(0.2)  # long enough for the worker to hand its inbox to another thread
        return 1

zactor.init(num_workers=1)
s = Slow.remote()
assert zactor.get([s.nap.remote() for _ in range(3)], timeout=60) == [1, 1, 1]
zactor.shutdown()
report(done=True)
"""


@pytest.mark.timeout(300)
def test_shutdown_after_long_calls_prints_no_traceback(tmp_path):
    # The race shows in about half of the runs: try up to 20 times, fail on the first.
    for attempt in range(20):
        proc = run_driver(tmp_path, QUIET_BODY, timeout=60)
        assert proc.returncode == 0, _describe(proc)
        assert reports(proc.stdout) == [{"done": True}], _describe(proc)
        assert "Traceback" not in proc.stderr, f"attempt {attempt}:\n{proc.stderr}"
