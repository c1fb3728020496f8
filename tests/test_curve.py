"""CURVE on tcp: peers without the cluster's keys can neither call nor create.

A standing cluster runs on tcp (on this machine's non-loopback address when it
has one, so that its workers listen on tcp too; else on 127.0.0.1, where only
the head does). Raw pyzmq clients, without keys and with a wrong key, send the
frames zactor's own encoders make for a creation and a call whose arguments
unpickle into a marker file: no marker appears, and their handshakes fail. A
driver key cannot forge another role; the honest driver path works.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading

import cloudpickle
import pytest
import zmq
from gates import poll
from test_cli import Standing
from zmq.utils.monitor import recv_monitor_message

from zactor.transport import keys as cluster_keys
from zactor.transport import parse_address
from zactor.transport.zeromq import ZmqTransport
from zactor.wire import hotpath, serialization
from zactor.wire import records as wire
from zactor.wire.protocol import HEAD_TABLE, ROLE_FLAGS, WORKER_TABLE

pytestmark = pytest.mark.timeout(120)


class Marker:
    """Unpickles by opening (creating) ``path``: code a peer would run in the receiver."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def lan_address() -> str | None:
    """This machine's non-loopback IPv4 address, or None (a UDP connect sends nothing)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.254", 9))
        host = probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()
    return None if host.startswith("127.") else host


@pytest.fixture(scope="module")
def tcp_cluster(tmp_path_factory):
    """A standing cluster on tcp; yields ``(standing, status)``; stopped at the end."""
    standing = Standing(tmp_path_factory.mktemp("curve") / "cluster-dir")
    try:
        record = standing.start("--host", lan_address() or "127.0.0.1", "--port", "0")
        assert record["address"].startswith("tcp://")
        yield standing, standing.status()
    finally:
        standing.teardown()


def attack_frames(marker_dir: str, target: str) -> list:
    """What a peer sends to ``target`` ("head" or "worker") to run code there: a call of
    a method every role may call, with an argument that unpickles into a marker file,
    and for a worker a creation whose class blob does too. Built by zactor's encoders."""
    frames = []
    if target == "worker":
        # The constructor's blob, and the spec too: decoding the arguments runs it.
        marker = Marker(os.path.join(marker_dir, "created"))
        spec = {"incarnation": 0, "class_name": marker}
        payload, buffers = serialization.dumps_call((7777, cloudpickle.dumps(marker), spec), {})
        index = WORKER_TABLE.index["create"]
        frames.append(hotpath.pack_one(wire.TELL, ROLE_FLAGS["driver"], index, 0, 0, payload))
    table = WORKER_TABLE if target == "worker" else HEAD_TABLE
    method = table.index["stats" if target == "worker" else "lookup"]
    payload, buffers = serialization.dumps_call((Marker(os.path.join(marker_dir, "called")),), {})
    frames.append(hotpath.pack_one(wire.CALL, ROLE_FLAGS["driver"], method, 1, 0, payload))
    return frames


def handshake_events(address: str, curve: tuple | None, frames: list) -> list[str]:
    """Connect a raw DEALER to ``address`` (``curve``: (server public key, client public
    key, client secret key), or None for no CURVE), send ``frames``, and return its
    monitor's events up to the handshake's outcome."""
    context = zmq.Context()
    try:
        sock = context.socket(zmq.DEALER)
        sock.linger = 0
        sock.identity = b"tcp://127.0.0.1:9"  # a zactor address: replies would go there
        if curve is not None:
            sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = curve
        monitor = sock.get_monitor_socket()
        sock.connect(address)
        for frame in frames:
            sock.send_multipart(frame if isinstance(frame, list) else [frame])
        events = []
        while not any(e.startswith("HANDSHAKE_") for e in events):
            assert monitor.poll(30_000), f"no handshake outcome with {address}: {events}"
            events.append(zmq.Event(recv_monitor_message(monitor)["event"]).name)
        sock.disable_monitor()
        monitor.close()
        sock.close(linger=10_000 if events[-1] == "HANDSHAKE_SUCCEEDED" else 0)  # deliver them
        return events
    finally:
        context.destroy(linger=0)


def targets(status: dict) -> list[tuple[str, str]]:
    """``(kind, tcp address)`` of the head and of every worker that listens on tcp."""
    found = [("head", status["cluster"]["address"])]
    found += [("worker", w["address"]) for w in status["workers"] if w["address"][:6] == "tcp://"]
    return found


def read_keys(standing: Standing, bundle: str) -> cluster_keys.ClusterKeys:
    directory = cluster_keys.keys_dir(str(standing.directory))
    return cluster_keys.load_bundle(cluster_keys.bundle_path(directory, bundle))


@pytest.mark.parametrize("client", ["no keys", "wrong key", "wrong server key"])
def test_a_peer_without_the_cluster_key_can_neither_create_nor_call(tcp_cluster, tmp_path, client):
    standing, status = tcp_cluster
    server = read_keys(standing, "driver").server_public
    public, secret = zmq.curve_keypair()
    curve = {
        "no keys": None,
        "wrong key": (server, public, secret),
        "wrong server key": (zmq.curve_keypair()[0], public, secret),
    }[client]
    for kind, address in targets(status):
        events = handshake_events(address, curve, attack_frames(str(tmp_path), kind))
        assert "HANDSHAKE_SUCCEEDED" not in events, (kind, events)
        assert events[-1].startswith("HANDSHAKE_FAILED"), (kind, events)
    # The honest path still works (and every earlier message on those sockets was read).
    driver_creates_and_calls(standing)
    assert os.listdir(tmp_path) == [], "a peer without the cluster's key ran code"


def test_the_same_frames_with_the_driver_key_do_run(tcp_cluster, tmp_path):
    """The control: what the refused peers sent is a working attack for a key holder."""
    standing, status = tcp_cluster
    keys = read_keys(standing, "driver")
    curve = (keys.server_public, keys.public["driver"], keys.secret["driver"])
    for kind, address in targets(status):
        events = handshake_events(address, curve, attack_frames(str(tmp_path), kind))
        assert events[-1] == "HANDSHAKE_SUCCEEDED", events
    expected = {"called"} | ({"created"} if len(targets(status)) > 1 else set())
    poll(lambda: set(os.listdir(tmp_path)) == expected, timeout=30)


def test_a_refused_peer_is_logged_once_however_often_it_tries(tcp_cluster):
    standing, status = tcp_cluster
    server = read_keys(standing, "driver").server_public
    for _ in range(5):
        public, secret = zmq.curve_keypair()
        events = handshake_events(status["cluster"]["address"], (server, public, secret), [])
        assert events[-1] == "HANDSHAKE_FAILED_AUTH", events
    log = standing.directory / "zactor.log"
    head = status["cluster"]["address"]
    lines = poll(lambda: [ln for ln in log.read_text().splitlines() if f"{head} refused" in ln])
    assert len(lines) == 1, lines
    assert "further refusals from that address are counted" in lines[0]


def driver_creates_and_calls(standing: Standing) -> None:
    reports = standing.driver(
        """
        zactor.init(address="auto")
        c = Counter.remote(41)
        report(value=zactor.get(c.increment.remote(), timeout=60))
        """
    )
    assert reports == [{"value": 42}]


def test_the_honest_driver_path_works(tcp_cluster):
    driver_creates_and_calls(tcp_cluster[0])


def test_a_driver_key_cannot_claim_another_role_or_call_control_methods(tcp_cluster):
    standing, status = tcp_cluster
    reports = standing.driver(
        """
        from zactor.caller.handle import head_handle, worker_service_handle
        from zactor.endpoint.runtime import current
        from zactor.wire.protocol import ROLE_FLAGS

        zactor.init(address="auto")
        head = head_handle()
        workers = head.cluster_info.remote().result(30)["workers"]
        worker = worker_service_handle(workers[0]["address"])

        def refused(future):
            try:
                future.result(timeout=30)
            except PermissionError as exc:
                return str(exc)
            return None

        report(kill=refused(worker.kill.remote(12345)))
        report(died=refused(head.worker_died.remote("worker-0", 1)))
        # The driver's own key, sent with the worker role's flags: refused by its key.
        current().outbox(current().head_address).flags = ROLE_FLAGS["worker"]
        report(forged=refused(head.register_worker.remote("w-x", "tcp://127.0.0.1:9", 1, "n", {})))
        """
    )
    kill, died, forged = (r[k] for r, k in zip(reports, ("kill", "died", "forged")))
    assert kill and "WorkerService.kill may only be called by head" in kill
    assert died and "Head.worker_died may only be called by head" in died
    assert forged and "key is the driver key but claims the worker role" in forged


def test_key_files_are_private(tcp_cluster):
    standing, _ = tcp_cluster
    directory = cluster_keys.keys_dir(str(standing.directory))
    assert stat.S_IMODE(os.stat(standing.directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    names = sorted(os.listdir(directory))
    assert names == ["driver.keys", "head.keys", "node.keys"]
    for name in names:
        assert stat.S_IMODE(os.stat(os.path.join(directory, name)).st_mode) == 0o600
    for name in ("zactor.log", "head.sqlite3", "cluster.json"):  # the cluster's own files
        assert stat.S_IMODE(os.stat(standing.directory / name).st_mode) == 0o600, name
    # Each bundle holds only its roles' secrets, and every role's public key.
    for bundle, roles in cluster_keys.BUNDLES.items():
        keys = read_keys(standing, bundle)
        assert set(keys.secret) == set(roles)
        assert set(keys.public) == set(cluster_keys.ROLES)


def test_a_bundle_others_can_read_or_without_the_role_is_refused(tmp_path):
    paths = cluster_keys.create_cluster_keys(str(tmp_path / "keys"))
    assert cluster_keys.load_bundle(paths["node"]).for_role("worker")  # a node starts workers
    with pytest.raises(cluster_keys.KeysError, match="has no worker key"):
        cluster_keys.load_bundle(paths["driver"]).for_role("worker")
    os.chmod(paths["driver"], 0o644)
    with pytest.raises(cluster_keys.KeysError, match="chmod 600"):
        cluster_keys.load_bundle(paths["driver"])


def test_a_non_loopback_address_without_keys_is_refused(tmp_path):
    host = lan_address()
    if host is None:
        pytest.skip("this machine has no non-loopback IPv4 address to bind")
    transport = ZmqTransport()
    try:
        with pytest.raises(cluster_keys.KeysError, match="without CURVE keys") as caught:
            transport.bind(f"tcp://{host}:0")
        assert cluster_keys.KEYS_ENV in str(caught.value)
    finally:
        transport.close()
    # A worker process told to listen there without keys exits saying so.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    env.pop(cluster_keys.KEYS_ENV, None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "zactor.worker.main",
            "--head",
            f"tcp://{host}:9",
            "--address",
            f"tcp://{host}:0",
            "--worker-id",
            "w-test",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode != 0
    assert "refusing to listen on" in proc.stderr and "without CURVE keys" in proc.stderr


def test_a_transport_with_keys_leaves_no_thread_behind():
    keys_pair = zmq.curve_keypair()
    client = zmq.curve_keypair()
    curve = cluster_keys.Curve(*keys_pair, *client, {client[0]: "driver"})
    transport = ZmqTransport(curve)
    inbox = transport.bind("tcp://127.0.0.1:0")
    assert parse_address(inbox.address).port
    transport.close()
    assert [t for t in threading.enumerate() if "Authentication" in type(t).__name__] == []


@pytest.mark.parametrize("keys", ["another cluster's", "none"])
def test_a_driver_with_wrong_keys_or_none_is_told_at_once(tcp_cluster, tmp_path, keys):
    standing, status = tcp_cluster
    env = dict(standing.env)
    # A cluster directory of its own: no driver bundle to fall back on.
    env["ZACTOR_CLUSTER_DIR"] = str(tmp_path / "elsewhere")
    if keys == "none":
        env.pop(cluster_keys.KEYS_ENV, None)
    else:
        env[cluster_keys.KEYS_ENV] = cluster_keys.create_cluster_keys(str(tmp_path / "k"))["driver"]
    address = status["cluster"]["address"]
    proc = subprocess.run(
        [sys.executable, "-c", f"import zactor; zactor.init(address={address!r})"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode != 0
    assert f"the zactor head at {address}" in proc.stderr, proc.stderr
    assert cluster_keys.KEYS_ENV in proc.stderr
