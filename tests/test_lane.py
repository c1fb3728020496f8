"""The same-host lane (zactor.transport.lane): calls between processes of one machine
over Unix sockets, and what a worker does with a bad or dying lane peer.

The test plays a foreign lane peer with a plain ``socket.AF_UNIX`` connected to a
worker's lane file (its inbox's socket file plus ``.lane``), speaking the
documented format: a hello (``<2sH`` magic ``b"ZH"``, length, then the sender's
inbox address), then messages (``<2sHI`` magic ``b"ZL"``, reserved, frame count;
one u64 length per frame; the frames). Frames are the wire format's, built as
tests/test_wire_robustness.py builds them.

Under ``ZACTOR_TRANSPORT=zmq`` (CI runs the whole suite so too) there is no lane:
the tests that need one skip, saying why, and one test checks ZeroMQ is used.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest
import zmq
from gates import poll
from test_wire_robustness import frame0, parse_reply

import zactor
from zactor.caller.handle import worker_service_handle
from zactor.endpoint import runtime as runtime_mod
from zactor.transport import same_host_lane_enabled
from zactor.transport.lane import LaneConnection, lane_path
from zactor.transport.zeromq import ZmqConnection
from zactor.wire import records as wire
from zactor.wire import serialization

pytestmark = pytest.mark.timeout(120)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELLO = struct.Struct("<2sH")
HEADER = struct.Struct("<2sHI")

needs_lane = pytest.mark.skipif(
    not same_host_lane_enabled(), reason="ZACTOR_TRANSPORT=zmq: this run has no same-host lane"
)


@zactor.remote
class Echo:
    def __init__(self) -> None:
        self.seen: list = []

    def echo(self, value):
        return value

    def record(self, i: int) -> None:
        self.seen.append(i)

    def seen_in_order(self) -> bool:
        return self.seen == sorted(self.seen) and len(self.seen) == len(set(self.seen))

    def count(self) -> int:
        return len(self.seen)

    def where(self) -> str:
        return runtime_mod.current().address

    def call_other(self, other, n: int, size: int) -> int:
        """Send ``n`` calls of ``size`` bytes to ``other`` at once, then await them all."""
        blob = b"y" * size
        return sum(len(r) for r in zactor.get([other.echo.remote(blob) for _ in range(n)]))


def lane_message(frames: list) -> bytes:
    sizes = [len(f) for f in frames]
    return (
        HEADER.pack(b"ZL", 0, len(frames))
        + struct.pack(f"<{len(frames)}Q", *sizes)
        + b"".join(frames)
    )


def hello(identity: str) -> bytes:
    raw = identity.encode()
    return HELLO.pack(b"ZH", len(raw)) + raw


@pytest.fixture
def echo(cluster):
    handle = Echo.remote()
    assert handle.echo.remote(1).result(timeout=30) == 1
    yield handle
    zactor.kill(handle)


def dropped(address: str) -> dict:
    return worker_service_handle(address).stats.remote().result(timeout=30)["dropped"]


def outbox_connection(address: str):
    return runtime_mod.current().outbox(address).conn


def test_calls_to_a_worker_on_this_machine_take_the_lane(echo):
    address = echo.where.remote().result(timeout=30)
    conn = outbox_connection(address)
    if same_host_lane_enabled():
        assert isinstance(conn, LaneConnection)
        assert os.path.exists(lane_path(address))
    else:
        assert isinstance(conn, ZmqConnection)
        assert not os.path.exists(lane_path(address))
    # Arguments and results of every shape arrive whole, arrays read-only.
    arr = np.arange(300_000, dtype=np.float32)
    back = echo.echo.remote(arr).result(timeout=30)
    assert np.array_equal(back, arr) and not back.flags.writeable
    assert echo.echo.remote({"k": [1, "two", b"3"]}).result(timeout=30) == {"k": [1, "two", b"3"]}


def test_calls_and_tells_keep_their_order(echo):
    futures = []
    for i in range(3000):
        if i % 3:
            echo.record.tell(i)
        else:
            futures.append(echo.record.remote(i))
    zactor.get(futures, timeout=60)
    assert echo.seen_in_order.remote().result(timeout=30)
    assert echo.count.remote().result(timeout=30) == 3000


def test_a_flood_both_ways_does_not_deadlock(echo):
    """Large calls pipelined while the replies come back just as large: neither side
    may block writing while the other does (the sockets' buffers are far smaller)."""
    blob = b"x" * 50_000
    futures = [echo.echo.remote(blob) for _ in range(400)]
    assert all(len(v) == len(blob) for v in zactor.get(futures, timeout=90))
    other = Echo.remote()
    try:
        # Actor to actor, across the two workers or within one.
        assert echo.call_other.remote(other, 300, 40_000).result(timeout=90) == 300 * 40_000
    finally:
        zactor.kill(other)


@needs_lane
@pytest.mark.parametrize(
    "junk, kind",
    [
        (b"GET / HTTP/1.1\r\n\r\n", "lane-garbage"),  # no hello
        (hello("ipc:///nonexistent/peer.sock") + b"\x00" * 64, "lane-garbage"),  # bad magic
        (
            hello("ipc:///nonexistent/peer.sock")
            + HEADER.pack(b"ZL", 0, 1)
            + struct.pack("<Q", 1 << 62),
            "lane-too-large",
        ),
        (
            hello("ipc:///nonexistent/peer.sock")
            + HEADER.pack(b"ZL", 0, 1)
            + struct.pack("<Q", 1000)
            + b"z" * 10,
            "lane-truncated",
        ),
    ],
    ids=["no-hello", "bad-magic", "too-large", "truncated"],
)
def test_a_bad_lane_peer_is_dropped_and_the_worker_keeps_serving(echo, junk, kind):
    address = echo.where.remote().result(timeout=30)
    before = dropped(address).get(kind, 0)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(lane_path(address))
        sock.sendall(junk)
        sock.shutdown(socket.SHUT_WR)  # the end of what it says: a truncated message ends here
        sock.settimeout(30)
        assert sock.recv(1) == b""  # the worker closed it
    poll(lambda: dropped(address).get(kind, 0) == before + 1, timeout=30)
    assert echo.echo.remote("still here").result(timeout=30) == "still here"


@needs_lane
def test_a_foreign_lane_peer_that_speaks_the_format_is_answered(echo):
    """A call written on the lane by hand gets its reply; the caller has no lane of its
    own, so the reply comes over ZeroMQ to its inbox (the lane's fallback)."""
    address = echo.where.remote().result(timeout=30)
    actor_id = echo._actor_id
    with tempfile.TemporaryDirectory(prefix="zactor-lane-test-") as directory:
        identity = f"ipc://{directory}/peer.sock"
        ctx = zmq.Context()
        try:
            inbox = ctx.socket(zmq.ROUTER)
            inbox.linger = 0
            inbox.bind(identity)
            payload = serialization.dumps_call(("over the lane",), {})[0]
            frame = frame0([(wire.CALL, echo.echo._index, 7, actor_id, payload, 0)])
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.connect(lane_path(address))
                sock.sendall(hello(identity) + lane_message([frame]))
                assert inbox.poll(30_000), "no reply came"
                _, *frames = inbox.recv_multipart()
            [(kind, call_id, got_actor, value)] = parse_reply(frames)
            assert (kind, call_id, got_actor, value) == (wire.RESULT, 7, actor_id, "over the lane")
        finally:
            ctx.destroy(linger=0)


@needs_lane
def test_a_peer_killed_mid_message_fails_only_itself(echo, tmp_path):
    address = echo.where.remote().result(timeout=30)
    before = dropped(address).get("lane-truncated", 0)
    script = textwrap.dedent(
        f"""
        import socket, struct, sys, time
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect({lane_path(address)!r})
        ident = b"ipc:///nonexistent/killed.sock"
        sock.sendall(struct.pack("<2sH", b"ZH", len(ident)) + ident)
        sock.sendall(struct.pack("<2sHI", b"ZL", 0, 1) + struct.pack("<Q", 4096) + b"a" * 100)
        print("sent", flush=True)
        time.sleep(600)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"sent\n"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
    poll(lambda: dropped(address).get("lane-truncated", 0) == before + 1, timeout=30)
    assert echo.echo.remote(5).result(timeout=30) == 5


def test_zactor_transport_zmq_turns_the_lane_off(tmp_path):
    """A driver and cluster started with ZACTOR_TRANSPORT=zmq make no lane file and send
    over ZeroMQ; the calls work the same."""
    script = textwrap.dedent(
        """
        import glob, os, zactor
        from zactor.endpoint import runtime as runtime_mod

        @zactor.remote
        class A:
            def f(self, x):
                return x + 1

        zactor.init(num_workers=1)
        a = A.remote()
        assert zactor.get([a.f.remote(i) for i in range(100)]) == list(range(1, 101))
        rt = runtime_mod.current()
        kinds = {type(box.conn).__name__ for box in rt._outboxes.values()}
        session = os.path.dirname(rt.address[len("ipc://"):])
        print(sorted(kinds), glob.glob(os.path.join(session, "*.lane")))
        zactor.shutdown()
        """
    )
    env = dict(os.environ, ZACTOR_TRANSPORT="zmq", PYTHONPATH=REPO)
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=90
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['ZmqConnection'] []", out.stdout


@needs_lane
def test_sends_never_block_and_arrive_in_order_once_read(tmp_path):
    """The transport alone: 40 MB sent to an inbox nobody reads yet returns at once (what
    the socket does not take waits in the connection's queue, for the flusher); read
    later, every message arrives whole and in order, and closing removes the lane file."""
    from zactor.transport import LaneTransport, ipc_address

    server, client = LaneTransport(), LaneTransport()
    try:
        inbox = server.bind(ipc_address(str(tmp_path), "inbox.sock"))
        conn = client.connect(inbox.address, ipc_address(str(tmp_path), "client.sock"))
        assert isinstance(conn, LaneConnection)
        blob = np.arange(1 << 18, dtype=np.float32)  # 1 MiB
        for i in range(40):
            conn.send([struct.pack("<I", i), blob])
        assert conn.queue  # the socket could not take it all: the rest waits
        for i in range(40):
            message = inbox.receive(30_000)
            assert message is not None
            identity, first, buffers = message
            assert identity == ipc_address(str(tmp_path), "client.sock").encode()
            assert struct.unpack("<I", first)[0] == i
            assert np.array_equal(np.frombuffer(buffers[0], np.float32), blob)
        assert inbox.receive(0) is None
        path = inbox.path
    finally:
        client.close()
        server.close()
    assert not os.path.exists(path)


@pytest.fixture
def lane_pair(tmp_path):
    """A lane inbox and a transport to connect to it, in this process, closed after."""
    from zactor.transport import LaneTransport, ipc_address

    if not same_host_lane_enabled():
        pytest.skip("ZACTOR_TRANSPORT=zmq: this run has no same-host lane")
    server, client = LaneTransport(), LaneTransport()
    inbox = server.bind(ipc_address(str(tmp_path), "inbox.sock"))
    try:
        yield inbox, client, ipc_address(str(tmp_path), "client.sock")
    finally:
        client.close()
        server.close()


def test_what_a_peer_sent_whole_before_its_garbage_is_delivered(lane_pair):
    inbox, _, identity = lane_pair
    drops = []
    inbox.on_drop = lambda kind, who, message: drops.append(kind)
    good = hello(identity) + lane_message([b"first"]) + lane_message([b"second"])
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(inbox.path)
        sock.sendall(good + b"XXjunk" * 4)  # one write: all read in the same pass
        got = [inbox.receive(10_000), inbox.receive(10_000)]
    assert [bytes(m[1]) for m in got] == [b"first", b"second"]
    assert drops == ["lane-garbage"]


def test_a_message_of_more_buffers_than_one_sendmsg_takes_keeps_its_place(lane_pair):
    """Past IOV_MAX buffers the kernel refuses a sendmsg outright: the connection writes
    it in parts instead, on the lane, in order with the messages around it."""
    inbox, client, identity = lane_pair
    conn = client.connect(inbox.address, identity)
    many = [b"%d" % i for i in range(1100)]
    for seq in range(5):
        conn.send([struct.pack("<I", seq), *(many if seq == 3 else [])])
    assert conn.fallback is None
    order = []
    for _ in range(5):
        _, first, buffers = inbox.receive(10_000)
        order.append((struct.unpack("<I", first)[0], len(buffers)))
    assert order == [(0, 0), (1, 0), (2, 0), (3, 1100), (4, 0)]
    # The flusher pops what it wrote only after sendmsg returns, and the peer may read
    # those bytes first: its lock says that pass is over.
    with conn.lock:
        assert not conn.queue
