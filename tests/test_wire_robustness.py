"""A worker drops malformed and foreign frames, counts them by kind, and keeps serving.

The test plays a foreign peer: a ``zmq.DEALER`` whose routing id is a throwaway
``ipc://`` address on which the test binds a ``zmq.ROUTER`` (so the worker can answer
it), connected straight to a worker's inbox. Frames are built by hand with ``struct``
from the documented layout (``zactor/wire.py``): an 8-byte preamble ``<2sBBI`` (magic
``b"ZA"``, version, reserved, record count), 32-byte records ``<BBHIQQII`` (kind,
flags, reserved, method, call_id, actor_id, payload_len, nbuffers), the payloads, then
one frame per out-of-band buffer.

``WorkerService.stats`` (actor 0 of every worker) reports the drops in ``dropped``.
The cluster is shared, so the tests compare counts before and after.
"""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
import pytest
import zmq

import zactor
from zactor.caller.handle import head_handle, worker_service_handle
from zactor.wire import records as wire
from zactor.wire import serialization

pytestmark = pytest.mark.timeout(60)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREAMBLE = struct.Struct("<2sBBI")
RECORD = struct.Struct("<BBHIQQII")
VERSION = 8  # the wire protocol version (zactor.wire.protocol)
NO_ARGS = serialization.dumps_call((), {})[0]


def frame0(records, magic=b"ZA", version=VERSION, count=None):
    """Frame 0 from ``(kind, method, call_id, actor_id, payload, nbuffers)`` records."""
    head = PREAMBLE.pack(magic, version, 0, len(records) if count is None else count)
    recs = b"".join(
        RECORD.pack(kind, 0, 0, method, call_id, actor_id, len(payload), nbuf)
        for kind, method, call_id, actor_id, payload, nbuf in records
    )
    return head + recs + b"".join(r[4] for r in records)


def parse_reply(frames):
    """``[(kind, call_id, actor_id, value)]`` from a reply message (after the routing id)."""
    data = bytes(frames[0])
    magic, version, _, count = PREAMBLE.unpack_from(data)
    assert magic == b"ZA" and version == VERSION
    off = PREAMBLE.size + count * RECORD.size
    buffers = [memoryview(f) for f in frames[1:]]
    out = []
    first_buffer = 0
    for i in range(count):
        kind, _f, _r, _m, call_id, actor_id, plen, nbuf = RECORD.unpack_from(
            data, PREAMBLE.size + i * RECORD.size
        )
        payload = data[off : off + plen]
        off += plen
        value = serialization.loads(payload, buffers[first_buffer : first_buffer + nbuf])
        first_buffer += nbuf
        out.append((kind, call_id, actor_id, value))
    return out


class ForeignPeer:
    """A DEALER talking to a worker's inbox, and a ROUTER that receives its answers."""

    def __init__(self, worker_address: str, identity: bytes | None = None) -> None:
        self.context = zmq.Context()
        self.dir = tempfile.mkdtemp(prefix="zactor-test-peer-")
        self.address = f"ipc://{os.path.join(self.dir, 'peer.sock')}"
        self.router = self.context.socket(zmq.ROUTER)
        self.router.linger = 0
        self.router.bind(self.address)
        self.dealer = self.context.socket(zmq.DEALER)
        self.dealer.linger = 0
        self.dealer.identity = identity if identity is not None else self.address.encode()
        self.dealer.connect(worker_address)

    def send(self, *frames) -> None:
        self.dealer.send_multipart(list(frames), copy=True)

    def receive(self, timeout_s: float = 10.0):
        """The next message the worker sent us (without its routing id), or fail."""
        if not self.router.poll(int(timeout_s * 1000)):
            raise AssertionError(f"no answer from the worker within {timeout_s} s")
        identity, *frames = self.router.recv_multipart(copy=False)
        return frames

    def close(self) -> None:
        self.context.destroy(linger=0)
        try:
            os.unlink(os.path.join(self.dir, "peer.sock"))
        except FileNotFoundError:
            pass
        os.rmdir(self.dir)


@zactor.remote
class Echo:
    def __init__(self):
        self.n = 0

    def bump(self):
        self.n += 1
        return self.n

    def count(self):
        return self.n

    def same(self, value):
        return value

    def double(self, a):
        return a * 2


def _stats(address):
    return worker_service_handle(address).stats.remote().result(timeout=30)


def _dropped(address):
    return dict(_stats(address)["dropped"])


def _wait_for_drops(address, before, expected, timeout=15.0):
    """Poll the worker's stats until every expected drop (kind -> at least n more) shows."""
    deadline = time.monotonic() + timeout
    while True:
        now = _dropped(address)
        delta = {k: now.get(k, 0) - before.get(k, 0) for k in set(now) | set(before)}
        if all(delta.get(k, 0) >= n for k, n in expected.items()):
            return delta
        if time.monotonic() > deadline:
            raise AssertionError(f"drops seen {delta}, expected at least {expected}")
        time.sleep(0.02)


@pytest.fixture
def echo_on_worker(cluster):
    """``(handle, worker_address)`` of a fresh Echo actor."""
    h = Echo.remote()
    assert h.bump.remote().result(timeout=30) == 1
    return h, h._address


@pytest.fixture
def peer(echo_on_worker):
    p = ForeignPeer(echo_on_worker[1])
    try:
        yield p
    finally:
        p.close()


def test_cluster_info_lists_the_workers(cluster):
    info = head_handle().cluster_info.remote().result(timeout=30)
    assert len(info["workers"]) == 2
    for w in info["workers"]:
        assert w["address"].startswith("ipc://")
        assert (
            worker_service_handle(w["address"]).ping.remote().result(timeout=30) == w["worker_id"]
        )
        assert isinstance(_stats(w["address"])["dropped"], dict)


def test_a_hand_built_call_gets_a_result(echo_on_worker, peer):
    """The documented layout is what the worker speaks: a foreign client can call."""
    h, _ = echo_on_worker
    method = h._methods.index("bump")
    peer.send(frame0([(wire.CALL, method, 4242, h._actor_id, NO_ARGS, 0)]))
    ((kind, call_id, actor_id, value),) = parse_reply(peer.receive())
    assert (kind, call_id, actor_id, value) == (wire.RESULT, 4242, h._actor_id, 2)
    # A numpy argument as an out-of-band frame; the reply's array comes back the same way
    # (below shared_memory.MIN_BYTES: a larger one would come in a slot of shared memory).
    a = np.arange(8 * 1024, dtype=np.float32)
    payload, buffers = serialization.dumps_call((a,), {})
    assert len(buffers) == 1
    method = h._methods.index("double")
    peer.send(
        frame0([(wire.CALL, method, 4243, h._actor_id, payload, 1)]), *[bytes(b) for b in buffers]
    )
    reply = peer.receive()
    assert len(reply) == 2 and len(reply[1]) == a.nbytes  # the array in its own frame
    ((kind, call_id, _, value),) = parse_reply(reply)
    assert (kind, call_id) == (wire.RESULT, 4243)
    np.testing.assert_array_equal(value, a * 2)
    # Two calls batched in one frame: two replies, in order.
    bump = h._methods.index("bump")
    peer.send(
        frame0(
            [
                (wire.CALL, bump, 1, h._actor_id, NO_ARGS, 0),
                (wire.CALL, bump, 2, h._actor_id, NO_ARGS, 0),
            ]
        )
    )
    replies = []
    while len(replies) < 2:
        replies.extend(parse_reply(peer.receive()))
    assert [(r[1], r[3]) for r in replies] == [(1, 3), (2, 4)]


def test_bad_frames_are_dropped_counted_by_kind_and_the_worker_keeps_serving(echo_on_worker, peer):
    h, address = echo_on_worker
    before = _dropped(address)
    bump = h._methods.index("bump")
    good = frame0([(wire.CALL, bump, 1, h._actor_id, NO_ARGS, 0)])
    one_tell = (wire.TELL, bump, 0, h._actor_id, NO_ARGS, 0)

    peer.send(os.urandom(5))  # random bytes, shorter than the preamble
    peer.send(b"")  # an empty frame
    peer.send(b"\x00\xff" + os.urandom(60))  # random bytes of a reasonable length
    peer.send(good[:6])  # a truncated preamble
    peer.send(good[:20])  # a preamble, then half a record
    peer.send(frame0([one_tell], count=3))  # says 3 records, holds 1
    peer.send(good[:-1])  # payload cut short
    peer.send(good + b"extra")  # bytes left over after the payloads
    peer.send(frame0([one_tell], version=VERSION + 1))  # another protocol version
    peer.send(frame0([one_tell], version=0))
    peer.send(frame0([one_tell], magic=b"XY"))  # a foreign magic
    peer.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # a foreign protocol
    peer.send(frame0([], count=0))  # no records
    peer.send(frame0([(wire.TELL, bump, 0, h._actor_id, NO_ARGS, 2)]))  # 2 buffers announced
    peer.send(frame0([one_tell]), b"unannounced buffer")  # a buffer nobody owns
    expected = {"short": 3, "magic": 3, "version": 2, "truncated": 4, "empty": 1, "buffers": 2}
    delta = _wait_for_drops(address, before, expected)
    assert h.count.remote().result(timeout=30) == 1  # none of the tells ran
    assert {k: delta.get(k, 0) for k in expected} == expected

    # A call for an actor id nobody has: dropped, counted, and answered as a dead actor.
    peer.send(frame0([(wire.CALL, 0, 777, 987_654_321, NO_ARGS, 0)]))
    ((kind, call_id, actor_id, reason),) = parse_reply(peer.receive())
    assert (kind, call_id, actor_id) == (wire.DIED, 777, 987_654_321)
    assert "987654321" in reason
    peer.send(frame0([(wire.TELL, 0, 0, 987_654_322, NO_ARGS, 0)]))  # a tell: no answer
    _wait_for_drops(address, before, dict(expected, **{"unknown-actor": 2}))

    # The worker still serves normal calls, from the driver and from the foreign peer.
    assert h.bump.remote().result(timeout=30) == 2
    assert zactor.get([h.bump.remote() for _ in range(10)], timeout=30) == list(range(3, 13))
    peer.send(good)
    ((kind, call_id, _, value),) = parse_reply(peer.receive())
    assert (kind, call_id, value) == (wire.RESULT, 1, 13)


def test_random_frames_are_all_dropped(echo_on_worker, peer):
    h, address = echo_on_worker
    before = _dropped(address)
    rng = random.Random(20240601)
    sent = 0
    for i in range(300):
        n = rng.randrange(0, 200)
        body = bytes(rng.getrandbits(8) for _ in range(n))
        if i % 3 == 1:  # a valid preamble, random records: exercises the record checks
            body = PREAMBLE.pack(b"ZA", VERSION, 0, rng.randrange(1, 5)) + body
        elif i % 3 == 2:  # a right preamble and record count, random fields and payloads
            body = (
                PREAMBLE.pack(b"ZA", VERSION, 0, 1)
                + struct.pack(
                    "<BBHIQQII",
                    rng.choice([wire.CALL, wire.TELL]),
                    0,
                    0,
                    rng.randrange(0, 50),
                    rng.randrange(1, 2**64),
                    rng.randrange(0, 2**64),
                    rng.randrange(n + 1, 2**32),  # payload_len beyond the end: never valid
                    rng.randrange(0, 4),
                )
                + body
            )
        extra = [os.urandom(rng.randrange(0, 64)) for _ in range(rng.randrange(0, 3))]
        peer.send(body, *extra)
        sent += 1
    deadline = time.monotonic() + 15
    while True:
        now = _dropped(address)
        total = sum(now.values()) - sum(before.values())
        if total >= sent or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert total == sent
    assert h.bump.remote().result(timeout=30) == 2


def test_calls_to_a_worker_from_many_callers_survive_bad_frames(echo_on_worker, peer):
    """Bad frames interleaved with good calls from the driver: every good call answers."""
    h, _ = echo_on_worker
    futures = []
    for _ in range(50):
        peer.send(os.urandom(16))
        futures.append(h.bump.remote())
    assert zactor.get(futures, timeout=30) == list(range(2, 52))


def test_a_record_of_unknown_request_kind_is_dropped(echo_on_worker, peer):
    """Kind 0 is neither CALL (1) nor TELL (2): it must not run the method."""
    h, address = echo_on_worker
    before = _dropped(address)
    bump = h._methods.index("bump")
    peer.send(frame0([(0, bump, 5, h._actor_id, NO_ARGS, 0)]))
    peer.send(frame0([(wire.CALL, 0, 6, 987_000_001, NO_ARGS, 0)]))  # a marker: DIED reply
    parse_reply(peer.receive())  # the kind-0 record was handled before the marker
    assert h.count.remote().result(timeout=30) == 1, "the kind-0 record ran the method"
    now = _dropped(address)
    extra = sum(now.values()) - sum(before.values())
    assert extra >= 2, f"only the marker was counted: {before} -> {now}"


def test_a_record_of_unknown_reply_kind_is_counted(echo_on_worker, peer):
    h, address = echo_on_worker
    before = _dropped(address)
    peer.send(frame0([(9, 0, 5, h._actor_id, NO_ARGS, 0)]))
    peer.send(frame0([(wire.CALL, 0, 6, 987_000_002, NO_ARGS, 0)]))  # a marker: DIED reply
    parse_reply(peer.receive())
    now = _dropped(address)
    extra = sum(now.values()) - sum(before.values())
    assert extra >= 2, f"only the marker was counted: {before} -> {now}"


LOG_ONCE_SCRIPT = textwrap.dedent(
    """
    import os, struct, sys, tempfile, time
    import zmq
    import zactor
    from zactor.caller.handle import head_handle, worker_service_handle

    zactor.init(num_workers=1)
    try:
        (worker,) = head_handle().cluster_info.remote().result(timeout=30)["workers"]
        ctx = zmq.Context()
        d = tempfile.mkdtemp()
        me = "ipc://" + os.path.join(d, "me.sock")
        router = ctx.socket(zmq.ROUTER); router.bind(me)
        dealer = ctx.socket(zmq.DEALER); dealer.identity = me.encode()
        dealer.connect(worker["address"])
        for _ in range(5):
            dealer.send(b"XY" + bytes(40))
        for _ in range(3):
            dealer.send(struct.pack("<2sBBI", b"ZA", 77, 0, 1) + bytes(32))
        service = worker_service_handle(worker["address"])
        deadline = time.monotonic() + 15
        while True:
            dropped = service.stats.remote().result(timeout=30)["dropped"]
            if dropped.get("magic") == 5 and dropped.get("version") == 3:
                break
            assert time.monotonic() < deadline, dropped
            time.sleep(0.02)
        print("DROPPED", dropped, flush=True)
        ctx.destroy(linger=0)
    finally:
        zactor.shutdown()
    """
)


@pytest.mark.timeout(60)
def test_each_kind_of_drop_is_logged_once(tmp_path):
    """In its own cluster, so the worker's log (stderr) can be read."""
    script = tmp_path / "log_once.py"
    script.write_text(LOG_ONCE_SCRIPT)
    proc = _run_script(script, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "DROPPED" in proc.stdout
    lines = proc.stderr.splitlines()
    magic = [line for line in lines if "dropped a bad message" in line and "'magic'" in line]
    version = [line for line in lines if "dropped a bad message" in line and "'version'" in line]
    assert len(magic) == 1, proc.stderr[-3000:]
    assert len(version) == 1, proc.stderr[-3000:]
    assert "XY" in magic[0]
    assert "77" in version[0]


BAD_IDENTITY_SCRIPT = textwrap.dedent(
    """
    import os, struct, sys, time
    import zmq
    import zactor
    from zactor.wire import records as wire
    from zactor.wire import hotpath, serialization
    from zactor.caller.handle import worker_service_handle

    @zactor.remote
    class C:
        def __init__(self):
            self.n = 0
        def bump(self):
            self.n += 1
            return self.n

    zactor.init(num_workers=1)
    try:
        c = C.remote()
        assert c.bump.remote().result(timeout=30) == 1
        service = worker_service_handle(c._address)
        before = sum(service.stats.remote().result(timeout=30)["dropped"].values())
        payload = serialization.dumps_call((), {})[0]
        frame = struct.pack("<2sBBI", b"ZA", hotpath.PROTOCOL_VERSION, 0, 1) + struct.pack(
            "<BBHIQQII", wire.CALL, 0, 0, c._methods.index("bump"), 1, c._actor_id,
            len(payload), 0) + payload
        ctx = zmq.Context()
        dealers = []  # kept referenced: a collected socket is closed, its queue dropped
        for identity in (b"not-an-address", b"\\xff\\xfe-not-utf8"):
            dealer = ctx.socket(zmq.DEALER)
            dealer.linger = 1000
            dealer.identity = identity
            dealer.connect(c._address)
            dealer.send(frame)
            dealers.append(dealer)
        try:
            deadline = time.monotonic() + 15
            while True:  # both bad calls handled (and counted as drops)
                dropped = service.stats.remote().result(timeout=10)["dropped"]
                if sum(dropped.values()) - before >= 2:
                    break
                if time.monotonic() > deadline:
                    print(f"NOT COUNTED: {dropped}", flush=True)
                    sys.exit(1)
                time.sleep(0.02)
            value = c.bump.remote().result(timeout=10)
        except Exception as e:
            print(f"AFTER: {type(e).__name__}: {e}", flush=True)
            sys.exit(1)
        print("AFTER", value, flush=True)
        ctx.destroy(linger=0)
    finally:
        zactor.shutdown()
    """
)


@pytest.mark.timeout(60)
def test_a_call_from_a_peer_that_is_no_address_does_not_kill_the_worker(tmp_path):
    """A valid call from a peer whose routing id is no inbox address (or not UTF-8).

    The worker cannot answer it; it must drop (and count) the reply or the call and keep
    serving. Before the fix, creating the reply's outbox raised out of the serving
    thread and the whole worker process died. Runs in its own cluster for that reason.
    """
    script = tmp_path / "bad_identity.py"
    script.write_text(BAD_IDENTITY_SCRIPT)
    proc = _run_script(script, tmp_path)
    detail = f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, detail
    # The bad calls may have run (the reply is what gets dropped) or not: 2, 3 or 4.
    assert any(f"AFTER {n}" in proc.stdout for n in (2, 3, 4)), detail


def _run_script(script, cwd):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    env.pop("ZACTOR_LOG_LEVEL", None)
    return subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=50,
        cwd=str(cwd),
        env=env,
    )
