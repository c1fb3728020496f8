"""The standing cluster and its command line: ``zactor start --head``, ``status``, ``stop``,
and drivers that join it with ``zactor.init(address=...)``.

Everything runs as subprocesses (``python -m zactor ...``, and drivers as
``python -c`` scripts): the test process already runs the session's embedded
cluster, and a process initialises zactor once. Each test points
``ZACTOR_CLUSTER_DIR`` at its own ``tmp_path``, so no test touches a user's
real cluster, and the ``standing`` fixture stops whatever a test started, even
when the test fails. Bounds are generous (seconds); nothing asserts timing.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from gates import alive, first_report, poll

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parent.parent
MARK = "ZACTOR-CLI "
NO_CLUSTER = "no zactor cluster is running on this machine"
#: How long a test waits for the cluster to notice something (seconds).
NOTICE_WITHIN_S = 20.0


def poll_cluster(predicate):
    """:func:`gates.poll` with the time a cluster gets to notice something."""
    return poll(predicate, timeout=NOTICE_WITHIN_S, interval=0.1)


DRIVER_PRELUDE = f"""
import json, os, sys, threading, time
import zactor
import zactor.api

def report(**values):
    print({MARK!r} + json.dumps(values), flush=True)

@zactor.remote
class Counter:
    def __init__(self, start=0):
        self.n = start

    def increment(self):
        self.n += 1
        return self.n

    def value(self):
        return self.n
"""


def reports(stdout: str) -> list[dict]:
    return [json.loads(ln[len(MARK) :]) for ln in stdout.splitlines() if ln.startswith(MARK)]


class Standing:
    """One test's private cluster directory, and the commands and drivers that use it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.env = dict(os.environ)
        self.env["ZACTOR_CLUSTER_DIR"] = str(directory)
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
        )
        self.pids: set[int] = set()  # every cluster process seen, killed at teardown if left

    @property
    def cluster_file(self) -> Path:
        return self.directory / "cluster.json"

    def run(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
        """``python -m zactor ARGS``, to its end."""
        return subprocess.run(
            [sys.executable, "-m", "zactor", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def json(self, *args: str) -> dict:
        """``python -m zactor ARGS --json``, which must succeed; its parsed output."""
        proc = self.run(*args, "--json")
        assert proc.returncode == 0, f"zactor {args} failed:\n{proc.stdout}\n{proc.stderr}"
        value = json.loads(proc.stdout)
        self.remember(value)
        return value

    def start(self, *args: str) -> dict:
        record = self.json("start", "--head", *args)
        self.pids.add(record["pid"])
        return record

    def status(self) -> dict:
        return self.json("status")

    def remember(self, value: dict) -> None:
        for worker in value.get("workers", ()):
            if isinstance(worker, dict) and worker.get("pid"):
                self.pids.add(worker["pid"])
        if isinstance(value.get("head"), dict):
            self.pids.add(value["head"]["pid"])

    def driver(self, body: str, timeout: float = 90) -> list[dict]:
        """Run a driver script (the prelude, then ``body``) to its end; its reports."""
        proc = subprocess.run(
            [sys.executable, "-c", DRIVER_PRELUDE + textwrap.dedent(body)],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 0, f"driver failed:\n{proc.stdout}\n{proc.stderr}"
        return reports(proc.stdout)

    def start_driver(self, body: str) -> tuple[subprocess.Popen, dict]:
        """Start a driver script that keeps running; returns it and its first report."""
        proc = subprocess.Popen(
            [sys.executable, "-c", DRIVER_PRELUDE + textwrap.dedent(body)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=self.env,
        )
        return proc, first_report(proc, MARK)

    def teardown(self) -> None:
        if self.cluster_file.exists():
            try:
                record = json.loads(self.cluster_file.read_text())
                self.pids.add(record["pid"])
            except (OSError, ValueError, KeyError):
                pass
            self.run("stop", timeout=60)
        for pid in self.pids:
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture
def standing(tmp_path):
    """A :class:`Standing` whose cluster is always stopped (and its processes killed)."""
    s = Standing(tmp_path / "cluster-dir")
    try:
        yield s
    finally:
        s.teardown()


def _proc_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


# -- help and errors ------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["start", "status", "stop", "bench"])
def test_every_command_has_help(standing, command):
    proc = standing.run(command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert f"usage: zactor {command}" in proc.stdout
    if command != "bench":
        assert "--json" in proc.stdout
        assert "ZACTOR_CLUSTER_DIR" in proc.stdout  # says where the cluster file is


def test_commands_without_a_cluster_say_how_to_start_one(standing):
    for command in ("status", "stop"):
        proc = standing.run(command)
        assert proc.returncode == 1, proc
        assert NO_CLUSTER in proc.stderr and "zactor start --head" in proc.stderr, proc.stderr
        proc = standing.run(command, "--json")
        assert proc.returncode == 1, proc
        assert NO_CLUSTER in json.loads(proc.stdout)["error"]
    got = standing.driver(
        """
        try:
            zactor.init(address="auto")
        except zactor.ClusterError as exc:
            report(error=str(exc), initialized=zactor.is_initialized())
        """
    )
    assert got and NO_CLUSTER in got[0]["error"] and "zactor start --head" in got[0]["error"]
    assert got[0]["initialized"] is False


def test_bad_start_arguments_say_what_to_pass(standing):
    proc = standing.run("start")
    assert proc.returncode == 1 and "--head" in proc.stderr, proc.stderr
    proc = standing.run("start", "--head", "--resources", "GPU=1")
    assert proc.returncode == 1 and "--resources must be a JSON object" in proc.stderr
    assert not standing.cluster_file.exists()


def _write_stale_cluster_file(standing: Standing, tmp_path: Path) -> Path:
    """A cluster file naming a head that has exited, and its leftover session dir."""
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    session_dir = tmp_path / "zactor-deadhead"
    session_dir.mkdir()
    (session_dir / "head.sock").write_text("")  # what a SIGKILLed head leaves
    standing.directory.mkdir(mode=0o700)
    standing.cluster_file.write_text(
        json.dumps(
            {
                "address": f"ipc://{session_dir}/head.sock",
                "pid": int(gone.stdout),
                "start_time": 0,  # no process started at boot: stale even if the pid is reused
                "session_dir": str(session_dir),
            }
        )
    )
    return session_dir


def test_a_stale_cluster_file_is_reported_and_removed(standing, tmp_path):
    session_dir = _write_stale_cluster_file(standing, tmp_path)
    proc = standing.run("status")
    assert proc.returncode == 1
    assert NO_CLUSTER in proc.stderr and "no longer running" in proc.stderr, proc.stderr
    assert not standing.cluster_file.exists()
    assert not session_dir.exists()


def test_start_replaces_a_stale_cluster_file(standing, tmp_path):
    session_dir = _write_stale_cluster_file(standing, tmp_path)
    record = standing.start("--num-workers", "1")
    assert json.loads(standing.cluster_file.read_text())["pid"] == record["pid"]
    assert not session_dir.exists()


def test_start_on_a_port_in_use_fails_clearly_and_leaves_nothing(standing):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = standing.run("start", "--head", "--port", str(port), "--num-workers", "1")
    assert proc.returncode == 1, proc
    assert "choose another --port" in proc.stderr, proc.stderr
    assert not standing.cluster_file.exists()


# -- the standing cluster's life ------------------------------------------------------------


def test_start_status_stop(standing):
    record = standing.start("--num-workers", "2")
    head = record["pid"]
    assert standing.cluster_file.exists()
    assert json.loads(standing.cluster_file.read_text())["pid"] == head
    assert alive(head)

    # A daemon: its own session, no terminal, stdin from /dev/null, output to the log.
    fields = _proc_fields(head)
    assert int(fields[3]) == head, "the head leads a new session"
    assert int(fields[4]) == 0, "the head has no controlling terminal"
    assert os.readlink(f"/proc/{head}/fd/0") == "/dev/null"
    assert os.readlink(f"/proc/{head}/fd/1") == record["log"]
    assert Path(record["log"]).parent == standing.directory

    again = standing.run("start", "--head")
    assert again.returncode == 1
    assert "already running" in again.stderr and "zactor stop" in again.stderr, again.stderr
    assert json.loads(standing.cluster_file.read_text())["pid"] == head  # left alone

    status = standing.status()
    assert status["head"]["pid"] == head
    assert status["head"]["address"] == record["address"]
    assert [n["workers"] for n in status["nodes"]] == [2]
    workers = {w["worker_id"]: w for w in status["workers"]}
    assert len(workers) == 2 and all(alive(w["pid"]) for w in workers.values())
    assert status["actors"] == [] and status["drivers"] == []

    got = standing.driver(
        """
        info = zactor.init(address="auto")
        c = Counter.options(name="hits", lifetime="detached").remote(100)
        values = [zactor.get(c.increment.remote(), timeout=30) for _ in range(7)]
        report(values=values, workers=len(info["workers"]),
               node=zactor.get_runtime_context().node_id)
        zactor.shutdown()
        """
    )
    assert got == [{"values": list(range(101, 108)), "workers": 2, "node": "node-0"}]

    status = standing.status()
    (actor,) = [a for a in status["actors"] if a["name"] == "hits"]
    assert actor["class_name"] == "Counter"
    assert actor["worker_id"] in workers
    assert actor["calls"] == 7  # the constructor is not a call
    assert actor["queued"] == 0

    text = standing.run("status")
    assert text.returncode == 0, text.stderr
    for expected in ("hits", "Counter", actor["worker_id"], "P50", "P99", "QUEUED", "CALLS"):
        assert expected in text.stdout, text.stdout

    session_dir = status["head"]["session_dir"]
    assert any(name.endswith(".sock") for name in os.listdir(session_dir))
    pids = [head] + [w["pid"] for w in workers.values()]

    stopped = standing.json("stop")
    assert stopped["stopped"] is True and stopped["head_pid"] == head
    assert sorted(stopped["worker_pids"]) == sorted(w["pid"] for w in workers.values())
    assert [p for p in pids if alive(p)] == [], "stop returned with cluster processes running"
    assert not os.path.exists(session_dir), "socket files left after stop"
    assert not standing.cluster_file.exists()

    after = standing.run("status")
    assert after.returncode == 1 and NO_CLUSTER in after.stderr


def test_join_by_tcp_address(standing):
    record = standing.start("--port", "0", "--num-workers", "1")
    address = record["address"]
    assert address.startswith("tcp://127.0.0.1:"), address  # loopback unless told otherwise
    got = standing.driver(
        f"""
        zactor.init(address={address!r})
        c = Counter.remote(1)
        report(value=zactor.get(c.increment.remote(), timeout=30),
               inbox=zactor.get_runtime_context().address,
               inbox_dir=zactor.api._session.session_dir)
        zactor.shutdown()
        """
    )
    assert got[0]["value"] == 2
    assert not os.path.exists(got[0]["inbox_dir"]), "the driver's inbox socket file was left"


def test_joined_driver_shutdown_disconnects_only(standing):
    standing.start("--num-workers", "2")
    got = standing.driver(
        """
        zactor.init(address="auto")
        # An explicit namespace: the next driver, in an anonymous one of its own, finds it.
        kept = Counter.options(name="kept", namespace="shared", lifetime="detached").remote()
        owned = Counter.options(name="owned").remote()
        zactor.get([kept.increment.remote(), owned.increment.remote()], timeout=30)
        inbox_dir = zactor.api._session.session_dir
        zactor.shutdown()
        report(
            inbox_dir=inbox_dir,
            inbox_dir_left=os.path.exists(inbox_dir),
            threads=[t.name for t in threading.enumerate()],
            initialized=zactor.is_initialized(),
        )
        """
    )
    assert got[0]["threads"] == ["MainThread"], "threads left after a joined shutdown()"
    assert got[0]["inbox_dir_left"] is False, "the driver's socket file was left"
    assert got[0]["initialized"] is False

    # The cluster runs on: the detached actor keeps its state for the next driver ...
    got = standing.driver(
        """
        zactor.init(address="auto")
        kept = zactor.get_actor("kept", namespace="shared")
        report(value=zactor.get(kept.increment.remote(), timeout=30))
        zactor.shutdown()
        """
    )
    assert got == [{"value": 2}]
    # ... while the actor the first driver owned ended with its job.
    poll_cluster(lambda: "owned" not in {a["name"] for a in standing.status()["actors"]})
    assert standing.status()["drivers"] == []


def test_a_killed_driver_is_noticed_and_its_actors_end(standing):
    standing.start("--num-workers", "1")
    proc, r = standing.start_driver(
        """
        zactor.init(address="auto")
        owned = Counter.options(name="orphan").remote()
        zactor.get(owned.increment.remote(), timeout=30)
        report(pid=os.getpid(), inbox=zactor.get_runtime_context().address,
               inbox_dir=zactor.api._session.session_dir)
        time.sleep(600)
        """
    )
    try:
        status = standing.status()
        assert [(d["pid"], d["address"]) for d in status["drivers"]] == [(r["pid"], r["inbox"])]
        assert "orphan" in {a["name"] for a in status["actors"]}
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        poll_cluster(lambda: standing.status()["drivers"] == [])
        poll_cluster(lambda: "orphan" not in {a["name"] for a in standing.status()["actors"]})
        # The driver could not remove its inbox's socket file; the head did.
        poll_cluster(lambda: not os.path.exists(r["inbox_dir"]))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_init_namespace_is_each_drivers_default_for_names(standing):
    standing.start("--num-workers", "1")
    standing.driver(
        """
        zactor.init(address="auto", namespace="team-a")
        Counter.options(name="acct", lifetime="detached").remote(10)
        zactor.shutdown()
        """
    )
    got = standing.driver(
        """
        zactor.init(address="auto", namespace="team-b")
        try:
            zactor.get_actor("acct")
            missing = None
        except ValueError as e:
            missing = str(e)
        explicit = zactor.get_actor("acct", namespace="team-a")
        mine = Counter.options(name="acct", lifetime="detached").remote(500)  # free in team-b
        report(missing=missing, a=zactor.get(explicit.increment.remote(), timeout=30),
               b=zactor.get(mine.increment.remote(), timeout=30))
        zactor.shutdown()
        """
    )
    assert got[0]["a"] == 11 and got[0]["b"] == 501
    assert "'acct'" in got[0]["missing"] and "'team-b'" in got[0]["missing"]
    got = standing.driver(
        """
        zactor.init(address="auto", namespace="team-a")
        report(value=zactor.get(zactor.get_actor("acct").value.remote(), timeout=30))
        zactor.shutdown()
        """
    )
    assert got == [{"value": 11}]
