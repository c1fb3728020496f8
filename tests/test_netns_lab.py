"""The separate-hosts harness (tests/netns.py): hosts reach each other over real TCP
on their own addresses, a partition cuts one off until healed, and nothing a lab
made (namespace, veth, bridge, process) outlives it, even when its owner dies."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys

import netns
import pytest
from gates import poll

pytestmark = pytest.mark.timeout(120)

#: Echo server: binds ADDRESS:0, prints its port, answers each connection with
#: "<peer address> <what it sent>".
SERVER = """
import socket, sys
server = socket.create_server((sys.argv[1], 0))
print(server.getsockname()[1], flush=True)
while True:
    conn, peer = server.accept()
    with conn:
        conn.settimeout(10)
        conn.sendall(peer[0].encode() + b" " + conn.recv(1024))
"""

#: Client: from SOURCE, sends MESSAGE to ADDRESS:PORT, prints the answer; exits 1
#: with the error if it cannot connect within 3 s.
CLIENT = """
import socket, sys
source, address, port, message = sys.argv[1:]
try:
    with socket.create_connection((address, int(port)), 3, (source, 0)) as s:
        s.settimeout(10)
        s.sendall(message.encode())
        print(s.recv(1024).decode(), flush=True)
except OSError as exc:
    print(f"error {exc!r}", flush=True)
    sys.exit(1)
"""

#: A ROUTER on ADDRESS that prints its endpoint and echoes three messages back.
ROUTER = """
import sys, zmq
router = zmq.Context.instance().socket(zmq.ROUTER)
router.setsockopt(zmq.LINGER, 0)
router.bind(f"tcp://{sys.argv[1]}:*")
print(router.last_endpoint.decode(), flush=True)
for _ in range(3):
    identity, body = router.recv_multipart()
    router.send_multipart([identity, b"echo " + body])
"""

#: A DEALER that sends three messages to ENDPOINT and prints the answers as JSON.
DEALER = """
import json, sys, zmq
dealer = zmq.Context.instance().socket(zmq.DEALER)
dealer.setsockopt(zmq.LINGER, 0)
dealer.setsockopt(zmq.RCVTIMEO, 20000)
dealer.connect(sys.argv[1])
for i in range(3):
    dealer.send(b"call %d" % i)
print(json.dumps([dealer.recv().decode() for _ in range(3)]), flush=True)
"""


def serve(host: netns.Host) -> int:
    """Start an echo server on ``host``; its port."""
    proc = host.popen([sys.executable, "-c", SERVER, host.address], stdout=subprocess.PIPE)
    return int(proc.stdout.readline())  # bounded by the test's timeout mark


@contextlib.contextmanager
def root_server(address: str):
    """An echo server in the root namespace (where a head runs); yields its port."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, address], stdout=subprocess.PIPE, text=True
    )
    try:
        yield int(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def ask(host: netns.Host, address: str, port: int, message: str) -> tuple[int, str]:
    """Run the client on ``host`` against ``address:port``: (exit code, what it printed)."""
    proc = host.popen(
        [sys.executable, "-c", CLIENT, host.address, address, str(port), message],
        stdout=subprocess.PIPE,
    )
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, out.strip()


def ask_from_root(address: str, port: int, message: str) -> str:
    """Send ``message`` from the test's own process; the answer (OSError if unreachable)."""
    with socket.create_connection((address, port), timeout=3) as s:
        s.settimeout(10)
        s.sendall(message.encode())
        return s.recv(1024).decode()


def lab_leftovers(record: dict) -> dict:
    """What of a lab's record still exists on the machine."""
    return {
        "namespaces": sorted(set(record["namespaces"]) & netns.namespaces()),
        "links": sorted(set([*record["links"], record["bridge"]]) & netns.links()),
    }


@pytest.mark.network_lab(hosts=3)
def test_hosts_reach_each_other_and_the_root_over_tcp_from_their_own_addresses(network_lab):
    lab = network_lab
    addresses = [h.address for h in lab.hosts]
    assert len(set(addresses + [lab.root_address])) == 4
    port = serve(lab.host(0))
    with root_server(lab.root_address) as root_port:
        # Each answer names the address the server saw the client come from.
        assert ask(lab.host(1), addresses[0], port, "hi") == (0, f"{addresses[1]} hi")
        assert ask(lab.host(2), addresses[0], port, "yo") == (0, f"{addresses[2]} yo")
        assert ask(lab.host(1), lab.root_address, root_port, "up") == (0, f"{addresses[1]} up")
        assert ask_from_root(addresses[0], port, "down").endswith(" down")


@pytest.mark.network_lab(hosts=2)
def test_zmq_dealer_router_over_tcp_between_hosts(network_lab):
    router = network_lab.host(0).popen(
        [sys.executable, "-c", ROUTER, network_lab.host(0).address], stdout=subprocess.PIPE
    )
    endpoint = router.stdout.readline().strip()
    assert endpoint.startswith(f"tcp://{network_lab.host(0).address}:")
    dealer = network_lab.host(1).popen(
        [sys.executable, "-c", DEALER, endpoint], stdout=subprocess.PIPE
    )
    out, _ = dealer.communicate(timeout=60)
    assert dealer.returncode == 0, out
    assert json.loads(out) == ["echo call 0", "echo call 1", "echo call 2"]
    assert router.wait(timeout=30) == 0


@pytest.mark.network_lab(hosts=2, needs_partition=True)
def test_a_partitioned_host_is_unreachable_until_healed(network_lab):
    lab = network_lab
    cut, other = lab.host(0), lab.host(1)
    port = serve(cut)
    with root_server(lab.root_address) as root_port:
        assert ask_from_root(cut.address, port, "before").endswith("before")
        cut.partition()
        with pytest.raises(OSError):
            ask_from_root(cut.address, port, "during")
        code, out = ask(other, cut.address, port, "during")
        assert code == 1 and out.startswith("error"), out
        code, out = ask(cut, lab.root_address, root_port, "out")
        assert code == 1 and out.startswith("error"), out
        # The server kept running through the partition: it answers once healed.
        cut.heal()

        def reachable():
            with contextlib.suppress(OSError):
                return ask_from_root(cut.address, port, "after")

        assert poll(reachable, timeout=30).endswith("after")
        assert ask(other, cut.address, port, "again") == (0, f"{other.address} again")
        assert ask(cut, lab.root_address, root_port, "out") == (0, f"{cut.address} out")


@pytest.mark.network_lab(hosts=2, loopback=False)
def test_killing_a_host_ends_every_process_on_it_and_only_there(network_lab):
    doomed, kept = network_lab.host(0), network_lab.host(1)
    shell = doomed.popen(["sh", "-c", "sleep 600 & sleep 600 & wait"])
    survivor = kept.popen(["sleep", "600"])
    poll(lambda: len(netns.namespace_pids(doomed.namespace)) == 3)
    pids = netns.namespace_pids(doomed.namespace)
    doomed.kill()
    assert shell.returncode == -signal.SIGKILL
    assert netns.namespace_pids(doomed.namespace) == []
    poll(lambda: all(netns.start_time(pid) is None for pid in pids))
    assert survivor.poll() is None
    assert netns.namespace_pids(kept.namespace) == [survivor.pid]


def _lab_with_processes() -> tuple[netns.NetnsLab, list[subprocess.Popen]]:
    lab = netns.NetnsLab(2).open()
    procs = [host.popen(["sh", "-c", "sleep 600 & wait"]) for host in lab.hosts]
    poll(lambda: all(len(netns.namespace_pids(h.namespace)) == 2 for h in lab.hosts))
    return lab, procs


@pytest.mark.parametrize("how", ["closed", "test failed inside"])
def test_closing_a_lab_leaves_no_namespace_link_or_process(how):
    reason = netns.netns_unavailable()
    if reason:
        pytest.skip(reason)
    lab, procs = _lab_with_processes()
    record = dict(lab._record)
    pids = [pid for h in lab.hosts for pid in netns.namespace_pids(h.namespace)]
    assert lab_leftovers(record) == {
        "namespaces": sorted(record["namespaces"]),
        "links": sorted([*record["links"], record["bridge"]]),
    }
    if how == "closed":
        lab.close()
    else:
        with pytest.raises(RuntimeError, match="the test's own failure"):
            with lab:
                raise RuntimeError("the test's own failure")
    assert lab_leftovers(record) == {"namespaces": [], "links": []}
    assert all(proc.returncode == -signal.SIGKILL for proc in procs)
    poll(lambda: all(netns.start_time(pid) is None for pid in pids))
    assert not os.path.exists(os.path.join(netns.RECORDS, f"{record['subnet'].split('.')[2]}.json"))


#: Opens a lab, starts a process in it, prints the lab's record, and waits to be killed.
CRASHING_OWNER = """
import json, subprocess, time, netns
lab = netns.NetnsLab(2).open()
sleeper = lab.host(1).popen(["sleep", "600"])
print(json.dumps({"record": lab._record, "sleeper": sleeper.pid}), flush=True)
time.sleep(600)
"""


def test_a_lab_whose_owner_died_is_swept_by_the_next():
    reason = netns.netns_unavailable()
    if reason:
        pytest.skip(reason)
    owner = subprocess.Popen(
        [sys.executable, "-c", CRASHING_OWNER],
        stdout=subprocess.PIPE,
        text=True,
        env=netns.child_environment(),
    )
    try:
        left = json.loads(owner.stdout.readline())
        record = left["record"]
        # The owner dies under the lock, so that no lab opening in a parallel test run
        # sweeps its leftovers before they are seen.
        with netns.records_locked():
            owner.kill()
            owner.wait(timeout=30)
            assert lab_leftovers(record) == {
                "namespaces": sorted(record["namespaces"]),
                "links": sorted([*record["links"], record["bridge"]]),
            }
            assert netns.start_time(left["sleeper"]) is not None
    finally:
        owner.kill()
        owner.wait(timeout=30)
        owner.stdout.close()
    with netns.NetnsLab(1):  # opening a lab sweeps (as may one in a parallel run)
        assert lab_leftovers(record) == {"namespaces": [], "links": []}
    poll(lambda: netns.start_time(left["sleeper"]) is None)


def test_a_lab_of_a_running_process_is_not_swept():
    reason = netns.netns_unavailable()
    if reason:
        pytest.skip(reason)
    with netns.NetnsLab(1) as mine:
        assert mine._record["subnet"] not in netns.sweep_stale()
        assert lab_leftovers(mine._record)["namespaces"] == mine._record["namespaces"]
        assert mine.host(0).popen(["true"]).wait(timeout=30) == 0


def test_loopback_lab_gives_hosts_their_own_addresses_and_no_partition():
    reason = netns.loopback_unavailable()
    if reason:
        pytest.skip(reason)
    with netns.LoopbackLab(2) as lab:
        assert [h.address for h in lab.hosts] == ["127.0.0.2", "127.0.0.3"]
        port = serve(lab.host(0))
        assert ask(lab.host(1), lab.host(0).address, port, "hi") == (0, "127.0.0.3 hi")
        with pytest.raises(netns.LabError, match="needs_partition=True"):
            lab.host(0).partition()
        sleeper = lab.host(1).popen(["sh", "-c", "sleep 600 & wait"])
    assert sleeper.returncode == -signal.SIGKILL


def test_open_lab_falls_back_to_loopback_or_says_why_it_cannot(monkeypatch):
    monkeypatch.setattr(netns, "_probed", ["not root: network namespaces need root"])
    monkeypatch.delenv(netns.MODE_VARIABLE, raising=False)
    with pytest.raises(netns.LabUnavailable, match="cuts a host off.*not root"):
        netns.open_lab(2, needs_partition=True)
    with pytest.raises(netns.LabUnavailable, match="namespace per host: not root"):
        netns.open_lab(2, loopback=False)
    if netns.loopback_unavailable() is None:
        with netns.open_lab(3) as lab:
            assert lab.kind == "loopback" and lab.fallback_reason.startswith("not root")
            assert len(lab.hosts) == 3
    monkeypatch.setenv(netns.MODE_VARIABLE, "netns")
    with pytest.raises(netns.LabUnavailable, match="ZACTOR_TEST_HOSTS=netns but not root"):
        netns.open_lab(2)
    monkeypatch.setenv(netns.MODE_VARIABLE, "bogus")
    with pytest.raises(netns.LabUnavailable, match="set it to `loopback`, `netns` or unset"):
        netns.open_lab(2)


def test_the_probe_says_what_is_missing(monkeypatch):
    monkeypatch.setattr(netns, "_probed", [])
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    assert netns.netns_unavailable().startswith("not root")
    monkeypatch.setattr(netns, "_probed", [])
    monkeypatch.setattr(netns.os, "geteuid", lambda: 0)
    monkeypatch.setattr(netns.shutil, "which", lambda name: None)
    assert "`ip` not installed: `apt-get install iproute2`" in netns.netns_unavailable()


#: A driver that joins the head at ADDRESS, calls an actor and prints, as JSON, its own
#: network namespace and the one the actor's worker runs in.
REMOTE_DRIVER = """
import json, os, sys, zactor

@zactor.remote
class Probe:
    def network(self):
        return os.readlink("/proc/self/ns/net")

    def add(self, a, b):
        return a + b

zactor.init(address=sys.argv[1])
probe = Probe.remote()
print(json.dumps({
    "sum": probe.add.remote(2, 3).result(timeout=60),
    "worker": probe.network.remote().result(timeout=60),
    "driver": os.readlink("/proc/self/ns/net"),
}), flush=True)
zactor.shutdown()
"""


@pytest.mark.network_lab(hosts=1, loopback=False)
def test_a_driver_on_another_host_calls_actors_of_a_head_over_tcp(network_lab, tmp_path):
    # The head and its workers run in the root namespace on the bridge's address (as
    # `zactor start --head --host` on one machine); the driver on a host of the lab.
    env = dict(netns.child_environment(), ZACTOR_CLUSTER_DIR=str(tmp_path))
    zactor_cli = [sys.executable, "-m", "zactor"]
    start = subprocess.run(
        [*zactor_cli, "start", "--head", "--host", network_lab.root_address, "--port", "0"]
        + ["--num-workers", "1", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=90,
        stdin=subprocess.DEVNULL,
    )
    assert start.returncode == 0, start.stderr
    record = json.loads(start.stdout)
    try:
        assert record["address"].startswith(f"tcp://{network_lab.root_address}:")
        driver = network_lab.host(0).popen(
            [sys.executable, "-c", REMOTE_DRIVER, record["address"]],
            env={"ZACTOR_CLUSTER_DIR": str(tmp_path)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = driver.communicate(timeout=90)
        assert driver.returncode == 0, err
        seen = json.loads(out)
        assert seen["sum"] == 5
        assert seen["worker"] == os.readlink("/proc/self/ns/net") != seen["driver"]
    finally:
        stop = subprocess.run(
            [*zactor_cli, "stop"], capture_output=True, text=True, env=env, timeout=90
        )
        if netns.start_time(record["pid"]) is not None:
            os.kill(record["pid"], signal.SIGKILL)
    assert stop.returncode == 0, stop.stderr
