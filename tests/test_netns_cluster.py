"""A cluster over separate network hosts: the head on one, node agents on others.

The head runs in the root namespace on the lab's bridge address (as
``zactor start --head --host ADDR`` on its machine); each node agent runs on a
host of the lab (tests/netns.py: its own network namespace and address), as
``zactor start --address`` on another machine; the driver joins from the root
namespace. Calls between them cross real TCP between distinct addresses, a
killed host loses every process on it at once, and a partition takes a host's
link down.

Without network namespaces (not root, no ``ip``) these tests skip, saying why:
tests/test_nodes.py runs the same cluster on loopback.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import netns
import pytest
from gates import first_report, poll
from test_cli import MARK, Standing, reports

pytestmark = pytest.mark.timeout(240)

#: Seconds without a heartbeat after which the head declares a node dead.
NODE_TIMEOUT_S = 2.0


class HostCluster(Standing):
    """A head on the lab's root address; nodes on the lab's hosts, one directory each."""

    def __init__(self, lab, root) -> None:
        super().__init__(root / "head")
        self.lab = lab
        self.root = root

    def start_head(self, workers: int = 1) -> str:
        record = self.start(
            "--host", self.lab.root_address, "--port", "0", "--num-workers", str(workers),
            "--node-timeout", str(NODE_TIMEOUT_S),
        )  # fmt: skip
        self.address = record["address"]
        return self.address

    def start_node(self, index: int, node_id: str, *args: str) -> dict:
        """``zactor start --address`` on host ``index``; the node's record."""
        directory = self.root / node_id
        proc = self.lab.host(index).popen(
            [sys.executable, "-m", "zactor", "start", "--address", self.address,
             "--node-id", node_id, "--num-workers", "1", "--json",
             "--keys", str(self.directory / "keys" / "node.keys"), *args],
            env={"ZACTOR_CLUSTER_DIR": str(directory)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"node {node_id} did not start:\n{out}\n{err}"
        record = json.loads(out)
        self.pids.add(record["pid"])
        return record

    def node_row(self, node_id: str) -> dict:
        return next(n for n in self.status()["nodes"] if n["node_id"] == node_id)


@pytest.fixture
def hosts(network_lab, tmp_path):
    cluster = HostCluster(network_lab, tmp_path)
    try:
        yield cluster
    finally:
        cluster.teardown()  # the lab kills what is left on its hosts as it closes


@pytest.mark.network_lab(hosts=2, loopback=False)
def test_nodes_on_separate_hosts_serve_calls_and_handles_across_them(hosts):
    address = hosts.start_head()
    hosts.start_node(0, "n1", "--resources", '{"GPU": 1}')
    hosts.start_node(1, "n2")
    workers = {w["node_id"]: w["address"] for w in hosts.status()["workers"]}
    # Each node's workers listen on its own host's address, where callers reach them.
    assert workers["n1"].startswith(f"tcp://{hosts.lab.host(0).address}:")
    assert workers["n2"].startswith(f"tcp://{hosts.lab.host(1).address}:")
    got = hosts.driver(
        f"""
        zactor.init(address={address!r})

        @zactor.remote
        class Where:
            def node(self):
                return zactor.get_runtime_context().node_id

            def relay(self, other):
                return zactor.get(other.increment.remote()), self.node()

        gpu = Where.options(resources={{"GPU": 1}}).remote()
        on_n2 = Where.options(resources={{"node:n2": 1}}).remote()
        on_n1 = Counter.options(resources={{"node:n1": 1}}).remote(40)
        report(
            gpu=zactor.get(gpu.node.remote()),
            relayed=zactor.get(on_n2.relay.remote(on_n1)),
            direct=zactor.get(on_n1.increment.remote()),
        )
        """
    )[0]
    assert got == {"gpu": "n1", "relayed": [41, "n2"], "direct": 42}


def _driver_with_a_movable_actor(hosts, gate) -> tuple:
    """A driver with an actor pinned to n1 running a long call, and a restartable one
    on n1 that may move; it waits for ``gate``, then reports how both fared."""
    return hosts.start_driver(
        f"""
        zactor.init(address={hosts.address!r})

        @zactor.remote
        class Sleeper:
            def node(self):
                return zactor.get_runtime_context().node_id

            def sleep(self, seconds):
                time.sleep(seconds)

        movable = Sleeper.options(
            resources={{"slot": 1}}, max_restarts=1, max_task_retries=-1
        ).remote()
        doomed = Sleeper.options(resources={{"node:n1": 1}}).remote()
        report(doomed=zactor.get(doomed.node.remote()), movable=zactor.get(movable.node.remote()))
        call = doomed.sleep.remote(120)
        while not os.path.exists({str(gate)!r}):
            time.sleep(0.01)
        try:
            call.result(timeout=120)
        except zactor.ActorDiedError as exc:
            died = str(exc)
        report(died=died, moved_to=zactor.get(movable.node.remote(), timeout=120))
        """
    )


@pytest.mark.network_lab(hosts=2, loopback=False)
def test_a_host_that_dies_fails_its_actors_naming_its_node_and_restartable_ones_move(
    hosts, tmp_path
):
    hosts.start_head()
    hosts.start_node(0, "n1", "--resources", '{"slot": 1}')
    hosts.start_node(1, "n2", "--resources", '{"slot": 1}')
    gate = tmp_path / "host-killed"
    proc, first = _driver_with_a_movable_actor(hosts, gate)
    assert first == {"doomed": "n1", "movable": "n1"}
    hosts.lab.host(0).kill()  # every process on the host, at once
    gate.touch()
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    got = reports(out)[-1]
    assert "node n1" in got["died"] and "declared dead" in got["died"], got
    assert got["moved_to"] == "n2"
    assert hosts.node_row("n1")["state"] == "dead"


@pytest.mark.network_lab(hosts=2, needs_partition=True, loopback=False)
def test_a_partitioned_node_is_declared_dead_and_ends_its_workers_when_it_comes_back(
    hosts, tmp_path
):
    hosts.start_head()
    record = hosts.start_node(0, "n1", "--resources", '{"slot": 1}')
    hosts.start_node(1, "n2", "--resources", '{"slot": 1}')
    n1_workers = [w["pid"] for w in hosts.status()["workers"] if w["node_id"] == "n1"]
    gate = tmp_path / "partitioned"
    proc, first = _driver_with_a_movable_actor(hosts, gate)
    assert first == {"doomed": "n1", "movable": "n1"}
    hosts.lab.partition(0)
    try:
        poll(lambda: hosts.node_row("n1")["state"] == "dead", timeout=60, interval=0.2)
        gate.touch()
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        got = reports(out)[-1]
        assert "node n1" in got["died"] and "declared dead" in got["died"], got
        assert got["moved_to"] == "n2"  # the restartable actor runs on n2 now...
        # ... while n1, cut off, still runs its old incarnation: until it hears.
        assert all(netns.start_time(pid) is not None for pid in [record["pid"], *n1_workers])
    finally:
        hosts.lab.heal(0)
    # Back, its next heartbeat is answered "dead": its workers end, then the agent.
    poll(
        lambda: all(netns.start_time(pid) is None for pid in [record["pid"], *n1_workers]),
        timeout=60,
        interval=0.2,
    )
    log = (tmp_path / "n1" / "node-n1.log").read_text()
    assert "declared node n1 dead" in log
    assert hosts.node_row("n2")["state"] == "alive"


#: A driver that creates an actor it owns, reports, and runs until killed.
OWNER = """
import json, sys, time
import zactor

@zactor.remote
class Counter:
    def __init__(self):
        self.n = 0

    def increment(self):
        self.n += 1
        return self.n

zactor.init(address=sys.argv[1])
counter = Counter.remote()
print(json.dumps({"value": zactor.get(counter.increment.remote())}), flush=True)
time.sleep(600)
"""


@pytest.mark.network_lab(hosts=1, loopback=False)
def test_the_actors_of_a_killed_driver_on_another_machine_end(hosts):
    hosts.start_head()
    # The same kernel, so its pid could be watched: the identity says another machine,
    # as for a driver in a container or on another host, whose heartbeats must tell.
    driver = hosts.lab.host(0).popen(
        [sys.executable, "-c", OWNER, hosts.address],
        env={
            "ZACTOR_NODE_IDENTITY": "a-laptop",
            "ZACTOR_CLUSTER_DIR": str(hosts.root / "d"),
            "ZACTOR_CLUSTER_KEYS": str(hosts.directory / "keys" / "driver.keys"),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert json.loads(driver.stdout.readline()) == {"value": 1}, driver.stderr.read()
        status = hosts.status()
        assert [d["node_id"] for d in status["drivers"]] == ["a-laptop"]
        assert len(status["actors"]) == 1
    finally:
        driver.kill()  # no zactor.shutdown(): only its silence tells the head
        driver.communicate()
    poll(lambda: not hosts.status()["actors"], timeout=60, interval=0.3)
    assert not hosts.status()["drivers"]


#: A peer on another host with no key or a wrong one: for each ``kind address`` given,
#: sends what would run code there (tests/test_curve.py) and prints the handshake's end.
INTRUDER = """
import json, sys, zmq
import test_curve
marker_dir, server_key, *targets = sys.argv[1:]
public, secret = zmq.curve_keypair()
outcomes = []
for curve in (None, (server_key.encode(), public, secret)):
    for kind, address in zip(targets[::2], targets[1::2]):
        frames = test_curve.attack_frames(marker_dir, kind)
        outcomes.append(test_curve.handshake_events(address, curve, frames)[-1])
print(json.dumps(outcomes), flush=True)
"""


@pytest.mark.network_lab(hosts=2, loopback=False)
def test_a_host_without_the_cluster_keys_can_neither_create_nor_call(hosts, tmp_path):
    hosts.start_head()
    hosts.start_node(0, "n1")
    status = hosts.status()
    targets = ["head", status["cluster"]["address"]]
    for worker in status["workers"]:
        targets += ["worker", worker["address"]]
    keys = json.loads((hosts.directory / "keys" / "driver.keys").read_text())
    markers = tmp_path / "markers"
    markers.mkdir()
    intruder = hosts.lab.host(1).popen(
        [sys.executable, "-c", INTRUDER, str(markers), keys["server"]["public"], *targets],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = intruder.communicate(timeout=120)
    assert intruder.returncode == 0, err
    outcomes = json.loads(out)
    assert len(outcomes) == len(targets)  # every target, without a key and with a wrong one
    assert all(o.startswith("HANDSHAKE_FAILED") for o in outcomes), outcomes
    # An honest driver, with the driver bundle, is served.
    got = hosts.driver(
        f"""
        zactor.init(address={hosts.address!r})
        report(value=zactor.get(Counter.options(resources={{"node:n1": 1}}).remote(1)
                                .increment.remote()))
        """
    )
    assert got == [{"value": 2}]
    assert not list(markers.iterdir()), "a peer without the cluster's key ran code"


@pytest.mark.network_lab(hosts=1, loopback=False)
def test_a_head_that_dies_comes_back_with_its_nodes_and_their_actors(hosts, tmp_path):
    with socket.socket() as s:  # a fixed port: a recovered head listens where it did
        s.bind((hosts.lab.root_address, 0))
        port = s.getsockname()[1]
    record = hosts.start(
        "--host", hosts.lab.root_address, "--port", str(port), "--num-workers", "1",
        "--node-timeout", str(NODE_TIMEOUT_S),
    )  # fmt: skip
    hosts.address = record["address"]
    hosts.start_node(0, "n1")
    gates = tmp_path / "gates"
    gates.mkdir()
    proc, first = hosts.start_driver(
        f"""
        def gate(name):
            while not os.path.exists(os.path.join({str(gates)!r}, name)):
                time.sleep(0.01)

        zactor.init(address={hosts.address!r}, namespace="kept")
        keeper = Counter.options(
            name="keeper", lifetime="detached", resources={{"node:n1": 1}}
        ).remote(10)
        report(value=zactor.get(keeper.increment.remote()))
        gate("head-killed")
        report(while_down=[zactor.get(keeper.increment.remote(), timeout=30) for _ in range(3)])
        gate("head-back")
        found = zactor.get_actor("keeper")
        fresh = Counter.options(resources={{"node:n1": 1}}).remote(1)
        report(
            found=zactor.get(found.increment.remote(), timeout=30),
            fresh=zactor.get(fresh.increment.remote(), timeout=60),
        )
        """
    )
    assert first == {"value": 11}
    os.kill(record["pid"], signal.SIGKILL)  # the head alone; n1 keeps running its actor
    (gates / "head-killed").touch()
    assert first_report(proc, MARK) == {"while_down": [12, 13, 14]}
    back = hosts.start(
        "--host", hosts.lab.root_address, "--port", str(port), "--num-workers", "1",
        "--node-timeout", str(NODE_TIMEOUT_S), "--recover",
    )  # fmt: skip
    assert back["address"] == hosts.address
    poll(lambda: hosts.node_row("n1")["state"] == "alive", timeout=60, interval=0.3)
    poll(lambda: hosts.node_row("n1")["heartbeat_age_s"] < NODE_TIMEOUT_S, timeout=60)
    (gates / "head-back").touch()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert reports(out)[-1] == {"found": 15, "fresh": 2}
