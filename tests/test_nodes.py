"""Many machines on one: node agents (``zactor start --address``) joining a head over tcp.

Each "machine" is a cluster directory of its own (``ZACTOR_CLUSTER_DIR``), so
the head's and every node's files stay apart, as on separate hosts; the head
listens on tcp on loopback. ``tests/test_netns_cluster.py`` runs the same
cluster across network namespaces, with real addresses and a real partition.
A partition here is a SIGSTOPped node agent: its heartbeats stop, and it
hears on waking that it was declared dead.

Bounds are generous; nothing asserts timing.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.request

import pytest
from gates import EXIT_AT_START, HOLD_AT_START, alive, first_report, poll
from test_cli import MARK, Standing, reports

pytestmark = pytest.mark.timeout(180)

#: Seconds without a heartbeat after which the test heads declare a node dead.
NODE_TIMEOUT_S = 1.5


class Machines(Standing):
    """A head's cluster directory, plus one directory per node "machine"."""

    def __init__(self, root) -> None:
        super().__init__(root / "head")
        self.root = root
        self.nodes: dict[str, Standing] = {}

    def start_head(self, workers: int = 1, *args: str) -> str:
        record = self.start(
            "--port",
            "0",
            "--num-workers",
            str(workers),
            "--node-timeout",
            str(NODE_TIMEOUT_S),
            *args,
        )
        self.address = record["address"]
        return self.address

    def start_node(self, node_id: str, workers: int = 1, *args: str, machine: str = "") -> dict:
        """Start node ``node_id`` on the "machine" of the same name, or on ``machine``."""
        name = machine or node_id
        machine = self.nodes.setdefault(name, Standing(self.root / name))
        record = machine.json(
            "start", "--address", self.address, "--node-id", node_id,
            "--num-workers", str(workers), "--keys", str(self.node_keys), *args,
        )  # fmt: skip
        machine.pids.add(record["pid"])
        return record

    @property
    def node_keys(self):
        """The node bundle the head wrote: copied to a node's machine in real life."""
        return self.directory / "keys" / "node.keys"

    def node_record(self, node_id: str) -> dict:
        return json.loads((self.root / node_id / f"node-{node_id}.json").read_text())

    def node_row(self, node_id: str) -> dict:
        return next(n for n in self.status()["nodes"] if n["node_id"] == node_id)

    def teardown(self) -> None:
        for machine in self.nodes.values():
            if any(machine.directory.glob("node-*.json")):
                machine.run("stop", timeout=60)
        super().teardown()
        for machine in self.nodes.values():
            machine.teardown()


@pytest.fixture
def machines(tmp_path):
    m = Machines(tmp_path)
    try:
        yield m
    finally:
        m.teardown()


def worker_pids(pid: int) -> list[int]:
    from zactor.control.cluster import child_pids

    return child_pids(pid)


def node_up(metrics_url: str, node_id: str) -> float:
    """The ``zactor_node_up`` sample of ``node_id`` on the head's metrics page."""
    with urllib.request.urlopen(metrics_url + "metrics", timeout=30) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith(f'zactor_node_up{{node="{node_id}"}}'):
            return float(line.split()[-1])
    raise AssertionError(f"no zactor_node_up sample for {node_id} in:\n{text}")


def test_a_node_joins_shows_in_status_and_leaves(machines):
    machines.start_head(1, "--metrics-port", "0")
    metrics_url = machines.status()["head"]["metrics_url"]
    record = machines.start_node("n1", 2, "--resources", '{"GPU": 1}')
    assert node_up(metrics_url, "n1") == 1
    assert record["node_id"] == "n1" and record["head"] == machines.address
    row = machines.node_row("n1")
    assert row["state"] == "alive" and row["workers"] == 2
    assert row["resources"] == {"GPU": 1} and row["heartbeat_age_s"] >= 0
    head_row = machines.node_row("node-0")
    assert head_row["head"] and head_row["workers"] == 1
    workers = [w for w in machines.status()["workers"] if w["node_id"] == "n1"]
    assert sorted(w["worker_id"] for w in workers) == ["n1-worker-0", "n1-worker-1"]
    text = machines.run("status").stdout
    assert "n1" in text and "HEARTBEAT" in text

    # `zactor stop` on the node's machine stops that node only.
    node_pids = [record["pid"], *worker_pids(record["pid"])]
    stopped = machines.nodes["n1"].json("stop")
    assert [n["node_id"] for n in stopped["nodes"]] == ["n1"]
    poll(lambda: not any(alive(p) for p in node_pids), timeout=20)
    row = machines.node_row("n1")
    assert row["state"] == "stopped" and row["workers"] == 0
    assert not list(machines.nodes["n1"].directory.glob("node-*.json"))
    assert machines.node_row("node-0")["workers"] == 1  # the head's machine carries on
    poll(lambda: node_up(metrics_url, "n1") == 0, timeout=30, interval=0.5)


def test_calls_and_handles_cross_nodes_and_placement_follows_resources(machines):
    address = machines.start_head()
    machines.start_node("n1", 1, "--resources", '{"GPU": 1}')
    got = machines.driver(
        f"""
        zactor.init(address={address!r})

        @zactor.remote
        class Where:
            def node(self):
                return zactor.get_runtime_context().node_id

            def relay(self, other):
                return zactor.get(other.increment.remote()), self.node()

        gpu = Where.options(resources={{"GPU": 1}}).remote()
        here = Where.options(resources={{"node:node-0": 1}}).remote()
        there = Counter.options(resources={{"node:n1": 1}}).remote(10)
        # Refused placements fail the actors' first calls (creation does not wait).
        try:
            zactor.get(Where.options(resources={{"GPU": 1}}).remote().node.remote())
        except zactor.ClusterError as exc:
            full = str(exc)
        try:
            zactor.get(Where.options(resources={{"node:n9": 1}}).remote().node.remote())
        except zactor.ClusterError as exc:
            missing = str(exc)
        report(
            gpu=zactor.get(gpu.node.remote()),
            here=zactor.get(here.node.remote()),
            relayed=zactor.get(here.relay.remote(there)),
            direct=zactor.get(there.increment.remote()),
            full=full,
            missing=missing,
        )
        """
    )[0]
    assert got["gpu"] == "n1" and got["here"] == "node-0"
    assert got["relayed"] == [11, "node-0"]  # node-0's actor called n1's through its handle
    assert got["direct"] == 12
    assert "GPU=1" in got["full"] and "node n1 has resources free: GPU=0" in got["full"]
    assert "no live node is named n9" in got["missing"]


def test_a_killed_node_fails_its_actors_naming_it_and_restartable_ones_move(machines, tmp_path):
    address = machines.start_head()
    record = machines.start_node("n1", 1, "--resources", '{"slot": 1}')
    machines.start_node("n2", 1, "--resources", '{"slot": 1}')
    gate = tmp_path / "node-killed"
    proc, first = machines.start_driver(
        f"""
        zactor.init(address={address!r})

        @zactor.remote
        class Sleeper:
            def node(self):
                return zactor.get_runtime_context().node_id

            def sleep(self, seconds):
                time.sleep(seconds)

        # Both on n1: the slot goes to the first of the tied nodes, then the pin.
        movable = Sleeper.options(
            resources={{"slot": 1}}, max_restarts=1, max_task_retries=-1
        ).remote()
        doomed = Sleeper.options(resources={{"node:n1": 1}}).remote()
        report(doomed=zactor.get(doomed.node.remote()), movable=zactor.get(movable.node.remote()))
        call = doomed.sleep.remote(60)
        while not os.path.exists({str(gate)!r}):  # the test kills n1, then opens it
            time.sleep(0.01)
        try:
            call.result(timeout=60)
        except zactor.ActorDiedError as exc:
            died = str(exc)
        report(died=died, moved_to=zactor.get(movable.node.remote(), timeout=60))
        """
    )
    assert first == {"doomed": "n1", "movable": "n1"}
    for pid in [record["pid"], *worker_pids(record["pid"])]:
        os.kill(pid, signal.SIGKILL)
    gate.touch()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    got = reports(out)[-1]
    assert "node n1" in got["died"] and "declared dead" in got["died"], got
    assert "will not restart" in got["died"]
    assert got["moved_to"] == "n2"  # re-created on a live node, its call re-sent
    assert machines.node_row("n1")["state"] == "dead"


def joined_head():
    """A head (no process of its own) that node n1's agent at AGENT joined, with one
    worker, n1-worker-0 (pid 100)."""
    from zactor.control.head import Head

    head = Head()
    head.register_node("n1", AGENT, 1, "box", {"slot": 2}, 1)
    head.register_worker("n1-worker-0", "tcp://10.0.0.7:6000", 100, "n1", {"slot": 2})
    return head


AGENT = "tcp://10.0.0.7:5000"


def test_only_the_agent_that_joined_as_a_node_speaks_for_it():
    head = joined_head()
    assert head.node_heartbeat("n1", AGENT) == "alive"
    assert head.node_heartbeat("n1") == "alive"  # an agent older than the check
    assert head.node_heartbeat("n1", "tcp://10.0.0.8:5000") == "replaced"
    assert head.node_heartbeat("n9", AGENT) == "unknown"
    head.node_stopping("n1", "tcp://10.0.0.8:5000")
    assert head.nodes["n1"]["state"] == "alive"
    # A death reported for another process under a worker's id (a worker of the agent
    # that had this node id before) is not this worker's.
    head.worker_died("n1-worker-0", "was killed by signal 9", None, 4321)
    assert "n1-worker-0" in head.workers


def test_a_nodes_replacement_is_waited_for_until_it_registers_or_is_late():
    """What the head keeps of a replacement it asked n1's agent for (as ``_replace``
    leaves it): placement waits for it, until a worker of n1 registers or it is late."""
    from zactor.control.head import Head
    from zactor.errors import ClusterError, WorkerStartingError

    head = Head()
    head.register_node("n1", AGENT, 1, "box", {"slot": 2}, 1)
    refused = ClusterError("no worker can take it now")
    for end in ("registers", "late"):
        head._node_replacing["n1"] = {"n1-worker-0": time.monotonic()}
        waits = head._unplaceable(refused, "Slot", 0, {"slot": 1})
        assert isinstance(waits, WorkerStartingError) and "n1 for n1-worker-0" in str(waits)
        gpu = head._unplaceable(refused, "Slot", 0, {"GPU": 1})  # no new worker would help
        assert isinstance(gpu, ClusterError) and not isinstance(gpu, WorkerStartingError)
        assert head.cluster_info()["starting"] == ["n1 for n1-worker-0"]
        if end == "registers":
            head.register_worker("n1-worker-1", "tcp://10.0.0.7:6001", 101, "n1", {"slot": 2})
        else:
            head.node_replacement_late("n1", "n1-worker-0")
        assert head._unplaceable(refused, "Slot", 0, {"slot": 1}) is refused, end
        assert head.cluster_info()["starting"] == [], end


@pytest.mark.parametrize("replacement", ["starts", "fails"])
def test_actors_only_a_node_can_host_wait_for_its_replacement_worker(
    machines, tmp_path, replacement
):
    """A node's dead worker is replaced by the node's agent. Meanwhile a restartable actor
    that only that node can host waits to restart on the replacement, and one created
    then waits for it, as on the head's machine, rather than failing as unplaceable. A
    replacement that does not start ends the wait: both then fail, saying why."""
    hooks, ready, killed = tmp_path / "hooks", tmp_path / "may-start", tmp_path / "killed"
    hooks.mkdir()
    address = machines.start_head()
    n1 = machines.nodes["n1"] = Standing(machines.root / "n1")
    n1.env["PYTHONPATH"] += os.pathsep + str(hooks)
    machines.start_node("n1", 1, "--resources", '{"slot": 2}')
    proc, first = machines.start_driver(
        f"""
        zactor.init(address={address!r})

        @zactor.remote
        class Slot:
            def __init__(self, start):
                self.n = start

            def bump(self):
                self.n += 1
                return self.n

            def worker(self):
                return zactor.get_runtime_context().worker_id

        def outcome(future):
            try:
                return ["ok", zactor.get(future, timeout=60)]
            except (zactor.ActorDiedError, zactor.ClusterError) as exc:
                return [type(exc).__name__, str(exc)]

        kept = Slot.options(resources={{"slot": 1}}, max_restarts=1, max_task_retries=-1).remote(10)
        report(worker=zactor.get(kept.worker.remote()))
        while not os.path.exists({str(killed)!r}):  # the test kills kept's worker first
            time.sleep(0.01)
        fresh = Slot.options(resources={{"slot": 1}}).remote(0)
        calls = [kept.bump.remote(), fresh.bump.remote(), kept.worker.remote()]
        report(asked=True)
        report(got=[outcome(call) for call in calls])
        """
    )
    hook = hooks / "sitecustomize.py"
    try:
        worker = next(w for w in machines.status()["workers"] if w["worker_id"] == first["worker"])
        assert worker["node_id"] == "n1"
        # Only the replacement worker, started after this, runs it.
        hook.write_text(
            HOLD_AT_START.format(gate=str(ready)) if replacement == "starts" else EXIT_AT_START
        )
        os.kill(worker["pid"], signal.SIGKILL)
        # The head has dealt with the death (and asked n1 for a replacement) once the
        # worker leaves its list; a held replacement leaves n1 without a worker then.
        poll(
            lambda: first["worker"] not in [w["worker_id"] for w in machines.status()["workers"]],
            timeout=30,
            interval=0.1,
        )
        killed.touch()
        assert first_report(proc, MARK) == {"asked": True}
        ready.touch()
        # Read as the first report was: communicate() would miss a line already buffered.
        (kept_bump, fresh_bump, kept_worker) = got = first_report(proc, MARK)["got"]
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        ready.touch()
        hook.unlink(missing_ok=True)  # the node's `zactor stop` at teardown runs it too
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    if replacement == "starts":
        assert (kept_bump, fresh_bump) == (["ok", 11], ["ok", 1]), got  # restarted; created
        assert kept_worker[1].startswith("n1-") and kept_worker[1] != first["worker"]
    else:
        assert kept_bump[0] == "ActorDiedError" and "could not be placed again" in kept_bump[1]
        assert kept_worker[0] == "ActorDiedError"
        assert fresh_bump[0] == "ActorCreationError" and "slot=1" in fresh_bump[1], got


def test_a_node_cut_off_is_told_it_was_declared_dead_and_ends_its_workers(machines):
    machines.start_head()
    record = machines.start_node("n1", 1)
    workers = worker_pids(record["pid"])
    assert workers
    os.kill(record["pid"], signal.SIGSTOP)  # no heartbeat: as if cut off from the head
    try:
        poll(lambda: machines.node_row("n1")["state"] == "dead", timeout=30, interval=0.2)
    finally:
        os.kill(record["pid"], signal.SIGCONT)
    # Back, it hears it is dead: its workers (whose actors may run elsewhere now) end.
    poll(lambda: not any(alive(p) for p in [record["pid"], *workers]), timeout=30)
    log = (machines.root / "n1" / "node-n1.log").read_text()
    assert "declared node n1 dead" in log
    assert not list((machines.root / "n1").glob("node-*.json"))


def test_an_agent_back_after_another_took_its_node_id_ends_and_leaves_that_node_be(machines):
    """A node declared dead frees its id: a new agent may join under it. The old agent,
    back from its partition, must hear that it is dead, not "alive" from the node that
    took over; and its stopping must not stop that node."""
    machines.start_head()
    old = machines.start_node("n1", 1)
    old_workers = worker_pids(old["pid"])
    os.kill(old["pid"], signal.SIGSTOP)
    try:
        poll(lambda: machines.node_row("n1")["state"] == "dead", timeout=30, interval=0.2)
        new = machines.start_node("n1", 1, machine="n1-again")
    finally:
        os.kill(old["pid"], signal.SIGCONT)
    poll(lambda: not any(alive(p) for p in [old["pid"], *old_workers]), timeout=30)
    log = (machines.root / "n1" / "node-n1.log").read_text()
    assert "another agent joined as it" in log
    row = machines.node_row("n1")
    assert row["state"] == "alive" and row["pid"] == new["pid"]
    assert alive(new["pid"]) and all(alive(p) for p in worker_pids(new["pid"]))


def test_stopping_the_head_stops_every_node(machines):
    machines.start_head()
    record = machines.start_node("n1", 1)
    node_pids = [record["pid"], *worker_pids(record["pid"])]
    machines.json("stop")
    poll(lambda: not any(alive(p) for p in node_pids), timeout=30)
    assert "the cluster is stopping" in (machines.root / "n1" / "node-n1.log").read_text()


def test_joining_needs_a_tcp_head_that_runs(machines):
    node = Standing(machines.root / "lonely")
    proc = node.run("start", "--address", "ipc:///tmp/nothing.sock")
    assert proc.returncode == 1 and "a node joins a head over tcp" in proc.stderr
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = node.run("start", "--address", f"tcp://127.0.0.1:{port}")
    assert proc.returncode == 1 and "connection refused" in proc.stderr, proc.stderr
    proc = node.run("start", "--head", "--address", f"tcp://127.0.0.1:{port}")
    assert proc.returncode == 1 and "--head" in proc.stderr and "--address" in proc.stderr


def test_a_node_needs_the_clusters_node_keys(machines, tmp_path):
    from zactor.transport import keys as cluster_keys

    machines.start_head()
    node = Standing(machines.root / "keyless")
    proc = node.run("start", "--address", machines.address)  # no bundle anywhere
    assert proc.returncode == 1 and "node bundle" in proc.stderr, proc.stderr
    driver_bundle = machines.directory / "keys" / "driver.keys"
    proc = node.run("start", "--address", machines.address, "--keys", str(driver_bundle))
    assert proc.returncode == 1 and "node" in proc.stderr and "driver" in proc.stderr
    cluster_keys.create_cluster_keys(str(tmp_path / "other"))  # another cluster's keys
    other = tmp_path / "other" / "node.keys"
    proc = node.run("start", "--address", machines.address, "--keys", str(other))
    assert proc.returncode == 1 and "give it the cluster's node bundle" in proc.stderr
    assert [n["node_id"] for n in machines.status()["nodes"]] == ["node-0"]


def test_a_driver_on_another_machine_that_dies_loses_its_actors(machines):
    address = machines.start_head()
    machines.env["ZACTOR_NODE_IDENTITY"] = "another-machine"  # its pid is not watchable
    try:
        proc, first = machines.start_driver(
            f"""
            zactor.init(address={address!r}, host="127.0.0.1")
            counter = Counter.remote(1)
            report(value=zactor.get(counter.increment.remote()))
            time.sleep(600)  # until the test kills it
            """
        )
    finally:
        del machines.env["ZACTOR_NODE_IDENTITY"]
    assert first == {"value": 2}
    drivers = machines.status()["drivers"]
    assert [d["node_id"] for d in drivers] == ["another-machine"]
    assert len(machines.status()["actors"]) == 1
    proc.kill()  # no zactor.shutdown(): only its silence tells the head
    proc.communicate()
    poll(lambda: not machines.status()["actors"], timeout=30, interval=0.3)
    assert not machines.status()["drivers"]


def test_a_driver_whose_head_died_is_told_so_and_its_actor_calls_go_on(machines, tmp_path):
    with socket.socket() as s:  # a fixed port: the recovered head listens where it did
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    record = machines.start("--port", str(port), "--num-workers", "1")
    address = record["address"]
    gate, back = tmp_path / "head-killed", tmp_path / "head-back"
    proc, first = machines.start_driver(
        f"""
        zactor.init(address={address!r})
        counter = Counter.options(lifetime="detached").remote(0)
        report(value=zactor.get(counter.increment.remote()))
        while not os.path.exists({str(gate)!r}):
            time.sleep(0.01)
        after = zactor.get(counter.increment.remote(), timeout=30)  # never touches the head
        try:
            # Its placement needs the head: the first call waits a while, then says why.
            zactor.get(Counter.remote().increment.remote())
        except zactor.ClusterError as exc:
            error = str(exc)
        report(after=after, error=error)
        while not os.path.exists({str(back)!r}):
            time.sleep(0.01)
        fresh = Counter.remote(5)  # the head answers again: so do calls to it
        report(fresh=zactor.get(fresh.increment.remote(), timeout=60))
        """
    )
    assert first == {"value": 1}
    os.kill(record["pid"], signal.SIGKILL)
    gate.touch()
    got = first_report(proc, MARK)
    assert got["after"] == 2
    assert f"the zactor head at {address} has not answered" in got["error"], got
    assert "zactor start --head --recover" in got["error"]
    machines.start("--port", str(port), "--num-workers", "1", "--recover")
    back.touch()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert reports(out)[-1] == {"fresh": 6}


def test_a_head_held_up_by_a_stuck_worker_declares_no_healthy_node_dead(machines):
    machines.start_head()
    machines.start_node("n1", 1)
    machines.start_node("n2", 1)
    stuck = next(w["pid"] for w in machines.status()["workers"] if w["node_id"] == "n1")
    os.kill(stuck, signal.SIGSTOP)  # its agent still heartbeats; the worker answers nothing
    try:
        # The head waits for the stuck worker's counters longer than the node timeout,
        # its thread reading no heartbeat meanwhile.
        rows = {w["node_id"]: w for w in machines.status()["workers"]}
        assert "error" in rows["n1"] and "error" not in rows["n2"]
    finally:
        os.kill(stuck, signal.SIGCONT)
    states = {n["node_id"]: n["state"] for n in machines.status()["nodes"]}
    assert states == {"node-0": "alive", "n1": "alive", "n2": "alive"}


def test_stop_ends_the_workers_a_dead_head_left_waiting_and_its_store(machines):
    machines.start_head(1)
    record = json.loads(machines.cluster_file.read_text())
    workers = [w["pid"] for w in machines.status()["workers"]]
    os.kill(record["pid"], signal.SIGKILL)  # its workers wait for a --recover
    poll(lambda: not alive(record["pid"]), timeout=20)
    assert all(alive(pid) for pid in workers)
    stopped = machines.json("stop")
    assert stopped["worker_pids"] == workers and stopped["head_pid"] is None
    poll(lambda: not any(alive(pid) for pid in workers), timeout=20)
    assert not (machines.directory / "head.sqlite3").exists()
    assert not os.path.exists(record["session_dir"])
    assert machines.run("stop").returncode == 1  # nothing left to stop
