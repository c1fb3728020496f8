"""Arrays and bytes between processes on one machine go through shared memory.

See :mod:`zactor.transport.shared_memory`: buffers of at least ``MIN_BYTES`` sent to
a same-host peer travel in a slot of a shared-memory pool, the receiver gets a
read-only copy, and no segment of the cluster is left in ``/dev/shm`` after a
shutdown, a SIGKILLed worker or a SIGKILLed driver.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import zmq
from gates import alive, first_report, poll
from scenario import run_scenario

import zactor
from zactor.caller.handle import worker_service_handle
from zactor.control.spawn import child_environment
from zactor.endpoint import runtime as runtime_mod
from zactor.transport import same_host_lane_enabled, shared_memory
from zactor.wire import hotpath, serialization

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not shared_memory.available(), reason="no /dev/shm on this machine"),
]

MIB = 1 << 20

#: Tests of a cluster's use of it; under ZACTOR_TRANSPORT=zmq (the suite's other run) it is off.
on = pytest.mark.skipif(
    not same_host_lane_enabled(), reason="ZACTOR_TRANSPORT=zmq turns shared memory off"
)


@zactor.remote
class Store:
    def __init__(self):
        self.kept = None

    def echo(self, value):
        return value

    def describe(self, value):
        """What the actor received: its type, whether it is writeable, a checksum."""
        if isinstance(value, np.ndarray):
            return ["ndarray", bool(value.flags.writeable), float(value.sum()), value.shape]
        return [type(value).__name__, None, len(value), value[:4]]

    def make(self, n):
        return np.arange(n, dtype=np.float32)

    def counters(self):
        """This worker's shared-memory counters: ``[exported, taken]``."""
        shared = runtime_mod.current().transports.shared
        return [shared.exported, shared.taken]

    def where(self):
        """This worker's inbox address and pid."""
        return [runtime_mod.current().address, os.getpid()]


def _driver_counters():
    shared = runtime_mod.current().transports.shared
    return [shared.exported, shared.taken]


@pytest.fixture(scope="module")
def store(cluster):
    handle = Store.remote()
    handle.where.remote().result(timeout=30)
    return handle


def _head():
    return runtime_mod.current().head_address


@on
def test_an_array_argument_and_result_go_through_shared_memory(store):
    sent = np.arange(MIB // 4, dtype=np.float32).reshape(512, 512)
    before, worker_before = _driver_counters(), store.counters.remote().result(timeout=30)
    kind, writeable, total, shape = store.describe.remote(sent).result(timeout=30)
    assert (kind, writeable, tuple(shape)) == ("ndarray", False, (512, 512))
    assert total == float(sent.sum())
    back = store.echo.remote(sent).result(timeout=30)
    assert back.dtype == sent.dtype and back.shape == sent.shape and (back == sent).all()
    after, worker_after = _driver_counters(), store.counters.remote().result(timeout=30)
    assert after[0] - before[0] == 2  # the two arguments
    assert after[1] - before[1] == 1  # the echoed result
    assert worker_after[1] - worker_before[1] == 2 and worker_after[0] - worker_before[0] == 1
    poll(lambda: shared_memory.segments(_head()) == [])  # every name was taken


@on
def test_a_received_array_is_read_only_and_stays_valid_while_held(store):
    """Held arrays pin their slots: past the pool's size the rest go through the socket."""
    count = shared_memory.POOL_SLOTS + 4
    before = _driver_counters()[1]
    held = [store.make.remote(MIB // 4 + i).result(timeout=30) for i in range(count)]
    assert _driver_counters()[1] - before == shared_memory.POOL_SLOTS
    for i, array in enumerate(held):
        assert not array.flags.writeable
        with pytest.raises(ValueError):
            array[0] = 1.0
        if i < shared_memory.POOL_SLOTS:  # a slot: the flag cannot be turned back on
            with pytest.raises(ValueError):
                array.flags.writeable = True
    for _ in range(3):  # and traffic since reuses slots without touching the held ones
        assert store.make.remote(MIB // 4).result(timeout=30)[-1] == MIB // 4 - 1
    held.append(store.make.remote(MIB // 4).result(timeout=30))
    for i, array in enumerate(held[:count]):
        assert array.shape == (MIB // 4 + i,) and array[-1] == MIB // 4 + i - 1
        assert (array[:1000] == np.arange(1000, dtype=np.float32)).all()
    del held, array
    before = _driver_counters()[1]  # the slots are free again
    assert store.make.remote(MIB // 4).result(timeout=30)[0] == 0
    assert _driver_counters()[1] == before + 1


@on
def test_bytes_go_through_shared_memory_both_ways(store):
    blob = os.urandom(3 * MIB)
    before = _driver_counters()
    assert store.describe.remote(blob).result(timeout=30) == ["bytes", None, len(blob), blob[:4]]
    back = store.echo.remote(blob).result(timeout=30)
    assert type(back) is bytes and back == blob
    after = _driver_counters()
    assert after[0] - before[0] == 2 and after[1] - before[1] == 1


@on
def test_buffers_below_the_threshold_travel_as_frames(store):
    small = np.ones(shared_memory.MIN_BYTES // 8 - 1, np.float64)  # one element short
    assert serialization.OUT_OF_BAND_BYTES <= small.nbytes < shared_memory.MIN_BYTES
    before = _driver_counters()
    worker_before = store.counters.remote().result(timeout=30)
    back = store.echo.remote(small).result(timeout=30)
    assert (back == small).all() and not back.flags.writeable
    assert store.echo.remote(b"x" * (shared_memory.MIN_BYTES - 1)).result(timeout=30)
    assert _driver_counters() == before
    assert store.counters.remote().result(timeout=30) == worker_before
    at_threshold = np.ones(shared_memory.MIN_BYTES // 8, np.float64)
    assert (store.echo.remote(at_threshold).result(timeout=30) == 1.0).all()
    assert _driver_counters()[0] == before[0] + 1


def test_arrays_inside_containers_and_pickles(store):
    class Box:  # pickled by value: its array is an out-of-band buffer of the pickle
        def __init__(self, array):
            self.array = array

    arrays = [np.full(MIB // 8, i, np.float64) for i in range(3)]
    back = store.echo.remote({"a": arrays, "t": (arrays[0], 1)}).result(timeout=30)
    assert [float(a[0]) for a in back["a"]] == [0.0, 1.0, 2.0] and back["t"][1] == 1
    box = store.echo.remote(Box(arrays[2])).result(timeout=30)
    assert (box.array == 2.0).all()


# -- one process's two ends, without a cluster ------------------------------------------------


@pytest.fixture
def ends():
    """Two endpoints' shared-memory steps (``a`` sends to ``b``) and the drops ``b`` saw."""
    head = f"ipc:///nowhere/{os.getpid()}-{id(object())}/head.sock"
    drops = []
    a = shared_memory.SharedMemory(head, "ipc:///nowhere/a.sock", lambda *d: drops.append(d))
    b = shared_memory.SharedMemory(head, "ipc:///nowhere/b.sock", lambda *d: drops.append(d))
    yield a, b, drops
    a.close()
    b.close()
    assert shared_memory.segments(head) == []


def _send(a, b, *buffers, peer="ipc:///nowhere/b.sock"):
    frames = hotpath.pack_one(1, 0, 0, 1, 0, b"p", list(buffers))
    out = a.exporter(peer)(frames)
    got = b.take(b"ipc:///nowhere/a.sock", out[0], out[1:]) if len(out) > len(frames) else None
    return out, got


def test_slots_are_reused_and_pinned_by_held_views(ends):
    a, b, drops = ends
    data = np.arange(MIB // 8, dtype=np.float64)
    out, got = _send(a, b, data)
    assert out[1] == b"" and hotpath.preamble_flags(out[0]) == hotpath.SHARED_BUFFERS
    held = np.frombuffer(got[0], np.float64)
    assert (held == data).all() and not held.flags.writeable
    _send(a, b, data + 1)  # the first slot is held: a second one
    assert a.exported == 2 and len(a._exporters["ipc:///nowhere/b.sock"].slots) == 2
    del got, out
    _, again = _send(a, b, data + 2)  # the second slot was free: reused
    assert len(a._exporters["ipc:///nowhere/b.sock"].slots) == 2
    assert (held == data).all()  # the held view never saw the later sends
    assert (np.frombuffer(again[0], np.float64) == data + 2).all() and drops == []


def test_a_full_pool_sends_through_the_socket(ends, monkeypatch):
    a, b, drops = ends
    monkeypatch.setattr(shared_memory, "POOL_SLOTS", 2)
    views = [_send(a, b, np.full(MIB // 8, i, np.float64))[1] for i in range(2)]
    out, got = _send(a, b, np.zeros(MIB // 8))
    assert got is None and memoryview(out[1]).nbytes == MIB  # no free slot: the frame itself
    views.clear()  # the slots are free again: a bigger buffer retires one for its own
    out, got = _send(a, b, np.zeros(MIB // 2))
    assert got is not None and len(got[0]) == MIB * 4 and drops == []
    assert len(a._exporters["ipc:///nowhere/b.sock"].slots) == 2


def test_a_dead_senders_slots_are_unmapped_when_a_new_slot_comes(ends, tmp_path):
    a, b, drops = ends
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    a._own = f"{a.prefix}{int(finished.stdout)}-"  # as if a's process had died since
    assert _send(a, b, np.zeros(MIB // 8))[1] is not None
    assert b"ipc:///nowhere/a.sock" in b._mapped  # its own message never unmaps it
    c = shared_memory.SharedMemory(a.head_address, "ipc:///nowhere/c.sock", None)
    frames = hotpath.pack_one(1, 0, 0, 1, 0, b"p", [np.zeros(MIB // 8)])
    out = c.exporter("ipc:///nowhere/b.sock")(frames)
    assert b.take(b"ipc:///nowhere/c.sock", out[0], out[1:]) is not None
    assert b"ipc:///nowhere/a.sock" not in b._mapped and b"ipc:///nowhere/c.sock" in b._mapped
    c.close()


def test_a_closing_sender_unlinks_what_was_never_taken(ends):
    a, _b, _ = ends
    frames = hotpath.pack_one(1, 0, 0, 1, 0, b"p", [np.zeros(MIB // 8)])
    a.exporter("ipc:///nowhere/b.sock")(frames)
    assert len(shared_memory.segments(a.head_address)) == 1  # b never reads it
    a.close()  # waits LINGER_S for b, then unlinks it (the fixture checks none is left)


# -- malformed references -------------------------------------------------------------------


def _entry(index, nbytes, op, name):
    encoded = name.encode()
    return struct.pack("<IQBB", index, nbytes, op, len(encoded)) + encoded


@on
def test_malformed_references_are_dropped_and_the_worker_keeps_serving(store, tmp_path):
    address, _ = store.where.remote().result(timeout=30)
    token, tag = shared_memory.cluster_token(_head()), shared_memory.address_tag(address)
    ours = f"zactor-{token}-{os.getpid()}-{tag}"
    frame = hotpath.with_preamble_flags(
        hotpath.pack_one(1, 0, 0, 1, store._actor_id, b"\x91\x91\xc4\x00", [b""])[0],
        hotpath.SHARED_BUFFERS,
    )

    def segment(name, size, state):
        path = os.path.join(shared_memory.SHM_DIR, name)
        with open(path, "wb") as f:
            f.write(bytes([state]) + bytes(size - 1))
        return path

    short = segment(f"{ours}-f001", shared_memory.HEADER + 10, 1)
    empty = segment(f"{ours}-f002", shared_memory.HEADER + MIB, 0)
    after_bad = segment(f"{ours}-f006", shared_memory.HEADER + MIB, 1)
    out_of_range = segment(f"{ours}-f004", shared_memory.HEADER + MIB, 1)
    tables = [
        _entry(0, MIB, 0, f"{ours}-f000") + _entry(0, MIB, 0, f"{ours}-f006"),  # no such one
        _entry(0, MIB, 0, f"zactor-{'0' * 12}-{os.getpid()}-{tag}-f003"),  # another cluster's
        _entry(0, MIB, 0, f"{ours}-f001"),  # longer than the segment
        _entry(0, MIB, 0, f"{ours}-f002"),  # a slot nothing was put in
        _entry(5, MIB, 0, f"{ours}-f004"),  # a buffer the message does not have
        _entry(0, MIB, 1, f"{ours}-f005"),  # a slot never sent to this inbox
        b"\x00\x01",  # a cut table
    ]
    before = _dropped(address).get("shared-memory", 0)
    context = zmq.Context()
    try:
        dealer = context.socket(zmq.DEALER)
        dealer.linger = 0
        dealer.identity = f"ipc://{tmp_path}/peer.sock".encode()
        dealer.connect(address)
        for table in tables:
            dealer.send_multipart([frame, b"", table])
        dealer.send_multipart([frame])  # the flag and no table: read as a plain message
    finally:
        context.destroy(linger=1000)
    poll(lambda: _dropped(address).get("shared-memory", 0) >= before + len(tables), timeout=30)
    assert store.echo.remote(np.ones(MIB, np.uint8)).result(timeout=30).sum() == MIB
    for path in (short, empty, after_bad, out_of_range):  # made for it: unlinked all the same
        assert not os.path.exists(path)


def _dropped(address):
    return dict(worker_service_handle(address).stats.remote().result(timeout=30)["dropped"])


# -- what is left in /dev/shm after a SIGKILL -------------------------------------------------


def test_zactor_transport_zmq_turns_it_off():
    out = run_scenario(
        """
        import json, os
        os.environ["ZACTOR_TRANSPORT"] = "zmq"
        import numpy as np, zactor
        from zactor.endpoint import runtime
        zactor.init(num_workers=1)

        @zactor.remote
        class A:
            def echo(self, x):
                return x

            def shared(self):
                return runtime.current().transports.shared is None

        a = A.remote()
        x = np.ones(1 << 20, np.float32)
        same = bool((a.echo.remote(x).result(timeout=30) == x).all())
        result = [same, runtime.current().transports.shared is None, a.shared.remote().result()]
        zactor.shutdown()
        print("RESULT " + json.dumps(result))
        """
    )
    assert out == [True, True, True]


#: The start of the scenarios below: a driver with its own 2-worker cluster and an actor
#: class that reports its pid, echoes, and makes arrays.
CLUSTER_WITH_A = """
import json, os, signal, time
import numpy as np, zactor
from zactor.endpoint import runtime
from zactor.transport import same_host_lane_enabled, shared_memory
zactor.init(num_workers=2)

@zactor.remote
class A:
    def pid(self):
        return os.getpid()

    def echo(self, x):
        return x

    def make(self, n):
        return np.ones(n, np.float32)

"""


@on
def test_a_sigkilled_worker_leaves_no_segment(tmp_path):
    out = run_scenario(
        CLUSTER_WITH_A
        + textwrap.dedent(
            """
        a = A.remote()
        pid = a.pid.remote().result(timeout=30)
        head = runtime.current().head_address
        x = np.ones(1 << 20, np.float32)
        replies = [a.make.remote(1 << 20) for _ in range(3)]  # not read yet: names wait
        deadline = time.monotonic() + 30
        while sum(f"-{pid}-" in n for n in shared_memory.segments(head)) < 3:
            assert time.monotonic() < deadline, "the worker never sent its 3 replies"
            time.sleep(0.01)
        os.kill(pid, signal.SIGSTOP)  # it reads nothing more: what is sent to it waits
        sent = [a.echo.remote(x) for _ in range(3)]
        runtime.current().flush()
        deadline = time.monotonic() + 30
        while not any(f"-{os.getpid()}-" in n for n in shared_memory.segments(head)):
            assert time.monotonic() < deadline, "the driver never sent through shared memory"
            time.sleep(0.01)
        waiting = shared_memory.segments(head)
        os.kill(pid, signal.SIGKILL)
        outcomes = []
        for f in replies + sent:
            try:
                outcomes.append(float(f.result(timeout=60).sum()))
            except zactor.ActorDiedError:
                outcomes.append("died")
        deadline = time.monotonic() + 30  # the names it made go a grace period after
        while shared_memory.segments(head) and time.monotonic() < deadline:
            time.sleep(0.01)
        left_running = shared_memory.segments(head)
        zactor.shutdown()
        left_after = shared_memory.segments(head)
        print("RESULT " + json.dumps([waiting, outcomes, left_running, left_after]))
        """
        )
    )
    waiting, outcomes, left_running, left_after = out
    assert len(waiting) >= 2, waiting  # names each way were waiting when it was killed
    # A reply arrives if ZeroMQ delivered it before the SIGSTOP; it never is half there.
    assert set(outcomes[:3]) <= {float(1 << 20), "died"}, outcomes
    assert outcomes[3:] == ["died"] * 3
    assert left_running == [] and left_after == []


KILLED_DRIVER = (
    CLUSTER_WITH_A
    + """
talker, stopped = A.remote(), A.remote()
x = np.ones(1 << 20, np.float32)
stopped_pid = stopped.pid.remote().result(timeout=30)
talker_pid = talker.pid.remote().result(timeout=30)
head = runtime.current().head_address

def names_of(pid):
    return sum(f"-{pid}-" in n for n in shared_memory.segments(head))

def wait_for(pid, count):
    deadline = time.monotonic() + 30
    while names_of(pid) < count:
        assert time.monotonic() < deadline, f"{pid} never sent {count} through shared memory"
        time.sleep(0.01)

replies = [talker.make.remote(1 << 20) for _ in range(3)]  # never read: names wait for us
os.kill(stopped_pid, signal.SIGSTOP)
sent = [stopped.echo.remote(x) for _ in range(3)]  # never read: names wait for it
runtime.current().flush()
wait_for(os.getpid(), 3)
wait_for(talker_pid, 3)
print("REPORT " + json.dumps({"head": head, "session_dir": zactor.api._session.session_dir,
      "head_pid": zactor.api._session.head_process.pid,
      "segments": shared_memory.segments(head)}), flush=True)
time.sleep(600)
"""
)


@on
def test_a_sigkilled_driver_leaves_no_segment(tmp_path):
    path = tmp_path / "driver.py"
    path.write_text(textwrap.dedent(KILLED_DRIVER))
    proc = subprocess.Popen(
        [sys.executable, str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_environment(),
    )
    try:
        report = first_report(proc, "REPORT ")
        assert len(report["segments"]) >= 6  # both ways, waiting when the driver dies
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        poll(lambda: not alive(report["head_pid"]), timeout=60)
        poll(lambda: not os.path.exists(report["session_dir"]), timeout=30)
        assert shared_memory.segments(report["head"]) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
