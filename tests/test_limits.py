"""Limits that keep a worker's memory bounded: inbox per peer, message size, floods."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest
import zmq
from gates import poll

import zactor
from zactor.benchmark.flood import KINDS, expected_drops, malformed_frames
from zactor.caller.handle import worker_service_handle
from zactor.control.spawn import child_environment
from zactor.transport.zeromq import ZmqTransport
from zactor.wire import limits

pytestmark = pytest.mark.timeout(120)


@zactor.remote
class Tally:
    def __init__(self) -> None:
        self.n = 0

    def bump(self) -> int:
        self.n += 1
        return self.n

    def count(self) -> int:
        return self.n


def test_an_inbox_bounds_each_peer_and_the_message_size(tmp_path):
    transport = ZmqTransport()
    try:
        inbox = transport.bind(f"ipc://{tmp_path}/inbox.sock")
        assert inbox.sock.rcvhwm == limits.INBOX_MESSAGES_PER_PEER
        assert inbox.sock.maxmsgsize == limits.max_message_bytes == (1 << 30)
    finally:
        transport.close()


#: More peers than ZeroMQ's default socket limit (1023 a context) lets a process send to.
MANY_PEERS = 1100


@pytest.mark.skipif(
    0 < resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 3 * MANY_PEERS + 200,
    reason="the descriptor limit (ulimit -n) is too low to hold 1100 connections both ways",
)
def test_a_process_sends_to_more_peers_than_zeromqs_default_socket_limit(tmp_path):
    # A head sends to every worker, node agent and driver: 100 nodes of 10 workers
    # are more than 1023 peers (docs/scaling.md).
    transport = ZmqTransport()
    try:
        inbox = transport.bind(f"ipc://{tmp_path}/inbox.sock")
        connections = [transport.connect(inbox.address, f"peer-{i}") for i in range(MANY_PEERS)]
        for connection in connections:
            connection.send([b"x"])
        got = set()
        while len(got) < MANY_PEERS:  # bounded by the test's timeout
            message = inbox.receive(10_000)
            assert message is not None, f"only {len(got)} of {MANY_PEERS} peers were heard"
            got.add(message[0])
        assert len(got) == MANY_PEERS
    finally:
        transport.close()


OUT_OF_DESCRIPTORS = """
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
from zactor.transport.zeromq import TransportError, ZmqTransport
transport = ZmqTransport()
held = []  # a connection let go is closed, and its descriptor freed
try:
    for i in range(200):
        held.append(transport.connect(f"ipc://{sys.argv[1]}/nobody-{i}.sock", f"peer-{i}"))
except TransportError as exc:
    print(exc)
finally:
    transport.close()
"""


def test_a_process_out_of_descriptors_is_told_to_raise_the_limit(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", OUT_OF_DESCRIPTORS, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_environment(),
    )
    assert proc.returncode == 0, proc.stderr
    assert "out of descriptors (its limit, ulimit -n, is 128)" in proc.stdout
    assert "raise the limit" in proc.stdout


def test_twenty_thousand_malformed_frames_leave_the_actor_intact(cluster):
    assert len(KINDS) >= 15
    h = Tally.remote()
    assert zactor.get(h.bump.remote()) == 1
    service = worker_service_handle(h._address)
    before = sum(service.stats.remote().result(timeout=30)["dropped"].values())
    context = zmq.Context()
    directory = tempfile.mkdtemp(prefix="zactor-test-flood-")
    peer = context.socket(zmq.DEALER)
    peer.linger = 0
    peer.sndhwm = 0
    peer.identity = f"ipc://{directory}/peer.sock".encode()
    peer.connect(h._address)
    try:
        frames = 20_000
        for message in malformed_frames(h._actor_id, h._methods.index("count"), frames):
            peer.send_multipart(message)

        def dropped() -> int:
            return sum(service.stats.remote().result(timeout=30)["dropped"].values()) - before

        poll(lambda: dropped() >= expected_drops(frames), timeout=90)
        assert dropped() == expected_drops(frames)
        assert zactor.get(h.count.remote()) == 1  # no malformed frame changed it
        assert zactor.get(h.bump.remote()) == 2
    finally:
        peer.close()
        context.term()
        os.rmdir(directory)


SIZE_SCRIPT = """
import numpy as np
import zactor

@zactor.remote
class Sink:
    def size(self, value):
        return len(value) if isinstance(value, (bytes, str)) else value.nbytes

zactor.init(num_workers=1, max_message_bytes=4 << 20)
try:
    s = Sink.remote()
    assert zactor.get(s.size.remote(np.zeros(3 << 20, dtype=np.uint8))) == 3 << 20
    for value, what in ((np.zeros(5 << 20, dtype=np.uint8), "an array or bytes of 5242880"),
                        ("x" * (3 << 20), "a message of")):
        try:
            s.size.remote(value)
        except ValueError as exc:
            assert what in str(exc) and "max_message_bytes=4194304" in str(exc), exc
        else:
            raise AssertionError("an oversized call was sent")
    assert zactor.get(s.size.remote(b"ok")) == 2
    print("ok")
finally:
    zactor.shutdown()
"""


def test_a_call_larger_than_max_message_bytes_fails_before_it_is_sent(tmp_path):
    script = tmp_path / "sizes.py"
    script.write_text(textwrap.dedent(SIZE_SCRIPT))
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=100,
        env=child_environment(),
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def test_a_peer_sending_an_oversized_frame_is_cut_off_and_the_worker_serves_on(cluster):
    """The frame is refused as its size arrives: the worker never holds it."""
    h = Tally.remote()
    assert zactor.get(h.bump.remote()) == 1
    pid = next(w["pid"] for w in cluster["workers"] if w["address"] == h._address)
    peak = _peak_rss_kib(pid)
    context = zmq.Context()
    peer = context.socket(zmq.DEALER)
    peer.linger = 0
    peer.identity = b"ipc:///tmp/zactor-test-oversized.sock"
    monitor = peer.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    peer.connect(h._address)
    try:
        # calloc'd and never written: its pages stay shared zeros, costing no memory here.
        peer.send(np.zeros(limits.max_message_bytes + 1, dtype=np.uint8), copy=False)
        assert monitor.poll(60_000), "the worker did not cut the peer off"
        assert zactor.get(h.bump.remote()) == 2
        assert _peak_rss_kib(pid) - peak < 256 * 1024  # far from the frame's 1 GiB
    finally:
        peer.disable_monitor()
        monitor.close()
        peer.close()
        context.term()


@pytest.mark.parametrize("bad", [0, 1 << 20, "4M", True])
def test_max_message_bytes_must_be_a_sensible_int(bad):
    with pytest.raises(ValueError, match="max_message_bytes must be an int of at least"):
        limits.set_max_message_bytes(bad)


def test_a_pickle_with_a_lying_length_is_answered_as_an_error(cluster):
    """Found by scripts/fuzz-wire.sh: a BYTEARRAY8 claiming 2**62 bytes makes pickle
    raise MemoryError at once; the call fails, the worker and the actor live on."""
    import msgpack

    from zactor.benchmark.flood import frame0
    from zactor.wire import records as wire

    h = Tally.remote()
    assert zactor.get(h.bump.remote()) == 1
    blob = b"\x80\x05\x96" + (2**62).to_bytes(8, "little") + b"x."
    payload = b"\x91\x91" + msgpack.packb(msgpack.ExtType(5, msgpack.packb([0, 0, blob])))
    context = zmq.Context()
    directory = tempfile.mkdtemp(prefix="zactor-test-pickle-")
    inbox = context.socket(zmq.ROUTER)
    inbox.linger = 0
    inbox.bind(f"ipc://{directory}/peer.sock")
    peer = context.socket(zmq.DEALER)
    peer.linger = 0
    peer.identity = f"ipc://{directory}/peer.sock".encode()
    peer.connect(h._address)
    try:
        peer.send(frame0([(wire.CALL, h._methods.index("count"), 5, h._actor_id, payload, 0)]))
        assert inbox.poll(30_000), "no answer"
        _identity, reply = inbox.recv_multipart()
        assert reply[8] == wire.ERROR  # the record's kind, after the preamble
        assert b"MemoryError" in reply
        assert zactor.get(h.bump.remote()) == 2
    finally:
        peer.close()
        inbox.close()
        context.term()
        os.remove(f"{directory}/peer.sock")
        os.rmdir(directory)
