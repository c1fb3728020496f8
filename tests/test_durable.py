"""Durable state on the worker side (issue 5): checkpoints, restores, exactly-once calls.

What a user relies on:

- ``checkpoint=store`` saves the actor's state (``__getstate__`` or ``__dict__``)
  after every ``checkpoint_every``-th successful call, and with
  ``checkpoint_every=1`` before the call's reply: whatever a caller has seen is
  in the store. A new actor's constructed state is saved at once.
- A named actor created again (after ``zactor.kill``), or any actor restarted,
  comes back from its checkpoint instead of its constructor, with any store:
  ``FileStore``, ``SQLiteStore``, a ``file://`` / ``sqlite://`` URL, the seeds'
  ``FilePersistence``.
- Two actors never write over each other's checkpoint.
- A retried call (same caller, same call id) that the actor already applied
  gets its recorded reply and does not run again, even after a restart; one
  older than the record's window does not run either and says so.
- A failed save makes the call fail with a clear error instead of returning a
  result that is not durable; a checkpoint that cannot be restored stops the
  actor from starting rather than being overwritten.
- Threaded and async actors are durable too; ``WorkerService.stats`` shows the
  store, the number of saves and the last save's duration.

Retries are driven here with a :class:`RawCaller`, a caller made of bare
sockets that picks its call ids, because the retrying caller (the lead's
``zactor.recovery``) re-sends calls exactly so: same caller inbox, same id.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import tempfile
import threading
import time
import uuid

import cloudpickle
import msgpack
import pytest
import zmq
from seed_stores import FilePersistence

import zactor
from zactor import CheckpointError, CheckpointSaveError
from zactor.caller.handle import head_handle, worker_service_handle
from zactor.checkpoint import FileStore, SQLiteStore, pack_checkpoint, unpack_checkpoint
from zactor.endpoint.runtime import Runtime
from zactor.errors import ActorDiedError, remote_exception
from zactor.wire import records as wire
from zactor.wire import serialization
from zactor.wire.hotpath import pack_one, parse_frame
from zactor.wire.protocol import ROLE_FLAGS, WORKER_TABLE
from zactor.worker.checkpointer import (
    _FORGOTTEN,
    _RUNNING,
    APPLIED_CALLERS,
    APPLIED_WINDOW,
    APPLIED_WINDOW_BYTES,
    Checkpointer,
    _CallerRecord,
)
from zactor.worker.host import ActorHost
from zactor.worker.hosted import HostedActor
from zactor.worker.service import WorkerService

pytestmark = pytest.mark.timeout(120)


# -- actor classes (module level: the workers import them by name) -------------------------


class Counter:
    def __init__(self, start=0):
        self.n = start

    def inc(self, by=1):
        self.n += by
        return self.n

    def value(self):
        return self.n

    def fail(self):
        self.n += 100  # changed, then raised: the change stays in memory
        raise ValueError("boom")

    def leave(self):
        zactor.exit_actor()


class Ledger:
    """State with a lock that does not pickle: ``__getstate__`` leaves it out."""

    def __init__(self):
        self.entries = []
        self.lock = threading.Lock()
        self.restored = False

    def __getstate__(self):
        with self.lock:
            return {"entries": list(self.entries)}

    def __setstate__(self, state):
        self.entries = state["entries"]
        self.lock = threading.Lock()
        self.restored = True

    def add(self, item):
        time.sleep(0.001)  # long enough for calls of a threaded ledger to overlap
        with self.lock:
            self.entries.append(item)
            return len(self.entries)

    def info(self):
        with self.lock:
            return {"entries": list(self.entries), "restored": self.restored}


class AsyncCounter:
    def __init__(self):
        self.n = 0
        self.built_on = threading.current_thread().name
        self.restored_on = None

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.restored_on = threading.current_thread().name

    async def inc(self):
        await asyncio.sleep(0)
        self.n += 1  # after the last await: recorded with the state it changed
        return self.n

    async def info(self):
        return {"n": self.n, "built_on": self.built_on, "restored_on": self.restored_on}


CounterActor = zactor.remote(Counter)
LedgerActor = zactor.remote(Ledger)
AsyncCounterActor = zactor.remote(AsyncCounter)


class FlakyStore:
    """A FileStore whose saves fail while its flag file exists (it runs in the worker)."""

    def __init__(self, directory: str, flag: str) -> None:
        self.inner = FileStore(directory)
        self.flag = flag

    def __repr__(self) -> str:
        return f"FlakyStore({self.inner.directory!r})"

    def exists(self, key):
        return self.inner.exists(key)

    def save(self, key, data):
        if os.path.exists(self.flag):
            raise OSError(28, "No space left on device (simulated)")
        self.inner.save(key, data)

    def restore(self, key):
        return self.inner.restore(key)


# -- helpers ---------------------------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def make_store(kind: str, directory):
    directory = str(directory)
    if kind == "file":
        return FileStore(os.path.join(directory, "store"))
    if kind == "sqlite":
        return SQLiteStore(os.path.join(directory, "store.db"))
    if kind == "file-url":
        return f"file://{os.path.join(directory, 'store')}"
    if kind == "sqlite-url":
        return f"sqlite://{os.path.join(directory, 'store.db')}"
    if kind == "seed":
        return FilePersistence(directory)
    raise ValueError(kind)


def local_store(given):
    """The test process's own view of ``given`` (a store object, or a URL)."""
    return zactor.open_store(given)


def stats_row(handle) -> dict:
    stats = worker_service_handle(handle._address).stats.remote().result(timeout=30)
    rows = [row for row in stats["actors"] if row["actor_id"] == handle._actor_id]
    assert rows, f"actor {handle} is not hosted at {handle._address}"
    return rows[0]


def saved(store, key: str):
    """``(state, applied)`` of the checkpoint under ``key``: the state unpickled."""
    state, applied = unpack_checkpoint(local_store(store).restore(key))
    return cloudpickle.loads(state), applied


def poll(predicate, timeout: float = 30.0, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(interval)


def kill_and_wait_for_name(handle, name: str) -> None:
    """``zactor.kill`` a named actor and wait until its name is free again."""
    zactor.kill(handle)

    def free() -> bool:
        try:
            zactor.get_actor(name)
        except ValueError:
            return True
        return False

    poll(free)


class RawCaller:
    """A caller made of bare sockets that chooses its call ids, as a retrying caller does.

    Its inbox address is its routing id, so actors reply to it like to any caller.
    """

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="zd-")  # short: ipc paths are limited to ~100 chars
        self.address = f"ipc://{self.dir}/caller.sock"
        self.context = zmq.Context()
        self.inbox = self.context.socket(zmq.ROUTER)
        self.inbox.linger = 0
        self.inbox.bind(self.address)
        self.outboxes: dict[str, zmq.Socket] = {}
        self.replies: dict[int, list] = {}
        self.created: set[int] = set()

    def send(self, handle, method: str, call_id: int, *args) -> None:
        """Send ``handle.method(*args)`` as a CALL with ``call_id``."""
        if handle._actor_id not in self.created:
            # This socket is not ordered with the driver's outbox, which carried the
            # actor's creation: wait until the worker has run it (its service answers
            # a ping only after the creation sent before it).
            worker_service_handle(handle._address).ping.remote().result(timeout=30)
            self.created.add(handle._actor_id)
        sock = self._outbox(handle._address)
        payload, buffers = serialization.dumps_call(args, {})
        index = handle._index[method]
        sock.send_multipart(
            pack_one(wire.CALL, 0, index, call_id, handle._actor_id, payload, buffers)
        )

    def order(self, address: str, method: str, call_id: int, *args) -> None:
        """Call ``WorkerService.method(*args)`` at ``address`` as the head does (its
        role in the record's flags): the worker must take this caller for its head."""
        payload, buffers = serialization.dumps_call(args, {})
        index = WORKER_TABLE.index[method]
        self._outbox(address).send_multipart(
            pack_one(wire.CALL, ROLE_FLAGS["head"], index, call_id, 0, payload, buffers)
        )

    def _outbox(self, address: str) -> zmq.Socket:
        sock = self.outboxes.get(address)
        if sock is None:
            sock = self.context.socket(zmq.DEALER)
            sock.identity = self.address.encode()
            sock.linger = 0
            sock.connect(address)
            self.outboxes[address] = sock
        return sock

    def result(self, call_id: int, timeout: float = 30.0):
        """The next reply to ``call_id``: its value, or the exception it carries, raised."""
        deadline = time.monotonic() + timeout
        while not self.replies.get(call_id):
            left = deadline - time.monotonic()
            assert left > 0, f"no reply to call {call_id} within {timeout} s"
            if self.inbox.poll(int(left * 1000) + 1):
                _identity, frame0, *buffers = self.inbox.recv_multipart()
                for kind, _f, _m, cid, _a, payload, start, count in parse_frame(
                    frame0, len(buffers)
                ):
                    reply = (kind, bytes(payload), buffers[start : start + count])
                    self.replies.setdefault(cid, []).append(reply)
        kind, payload, buffers = self.replies[call_id].pop(0)
        value = serialization.loads(payload, buffers)
        if kind == wire.RESULT:
            return value
        if kind == wire.ERROR:
            raise remote_exception(value)
        raise ActorDiedError(value)

    def close(self) -> None:
        for sock in self.outboxes.values():
            sock.close()
        self.inbox.close()
        self.context.term()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def raw():
    caller = RawCaller()
    try:
        yield caller
    finally:
        caller.close()


@pytest.fixture
def headed_worker(cluster, raw):
    """A worker host in this process whose head is ``raw``: only the head may kill or
    re-create an actor (zactor.wire.protocol), so a test that orders a restart by hand
    plays the head of a worker of its own. Returns the worker's address."""
    runtime = Runtime(f"ipc://{raw.dir}/worker.sock", role="worker", head_address=raw.address)
    host = ActorHost(runtime)
    host.add_system_actor(WorkerService(host, head_handle(runtime), "test-worker"), WORKER_TABLE)
    thread = threading.Thread(target=host.serve, name="test-worker", daemon=True)
    thread.start()
    try:
        yield runtime.address
    finally:
        host.stop()
        thread.join(timeout=10)
        runtime.close()


# -- saving ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["file", "sqlite", "seed"])
def test_every_call_is_saved_before_its_reply(cluster, tmp_path, kind):
    store = make_store(kind, tmp_path)
    counter = CounterActor.options(name=unique("every1"), checkpoint=store).remote(10)
    key = stats_row(counter)["checkpoint_key"]
    assert saved(store, key)[0] == {"n": 10}  # the constructed state, saved at once
    for expected in range(11, 16):
        assert zactor.get(counter.inc.remote()) == expected
        # The reply came after the save: the store already holds what the caller saw.
        assert saved(store, key)[0] == {"n": expected}
    zactor.kill(counter)


def test_checkpoint_every_3_counts_successful_calls_and_tells(cluster, tmp_path):
    store = FileStore(tmp_path)
    counter = CounterActor.options(checkpoint=store, checkpoint_every=3).remote(0)
    key = stats_row(counter)["checkpoint_key"]

    def stored() -> int:
        return saved(store, key)[0]["n"]

    assert zactor.get(counter.inc.remote()) == 1
    assert zactor.get(counter.inc.remote()) == 2
    assert stored() == 0  # two calls: no save yet
    assert zactor.get(counter.inc.remote()) == 3
    assert stored() == 3  # the third: saved before its reply
    counter.inc.tell()  # a tell counts too (4)
    assert zactor.get(counter.inc.remote()) == 5  # runs after the tell (same caller)
    with pytest.raises(ValueError, match="boom"):
        zactor.get(counter.fail.remote())  # n is 105 now, but an error does not count
    assert stored() == 3
    assert zactor.get(counter.inc.remote()) == 106  # the third successful one: saved
    assert stored() == 106
    row = stats_row(counter)
    assert row["checkpoints"] == 3  # after construction, after 3, after 106
    zactor.kill(counter)


def test_a_graceful_end_saves_the_calls_not_saved_yet(cluster, tmp_path):
    store = FileStore(tmp_path)
    name = unique("leaving")
    counter = CounterActor.options(name=name, checkpoint=store, checkpoint_every=10).remote()
    key = stats_row(counter)["checkpoint_key"]
    assert zactor.get([counter.inc.remote() for _ in range(2)]) == [1, 2]
    assert saved(store, key)[0] == {"n": 0}
    with pytest.raises(zactor.ActorDiedError, match="exit_actor"):
        zactor.get(counter.leave.remote())  # zactor.exit_actor()
    assert saved(store, key)[0] == {"n": 2}

    # Retired because its last handle is gone: its unsaved calls are saved too.
    other = CounterActor.options(name=unique("dropped"), checkpoint=store, checkpoint_every=10)
    other = other.remote()
    other_key = stats_row(other)["checkpoint_key"]
    assert zactor.get(other.inc.remote(5)) == 5
    del other
    gc.collect()
    poll(lambda: saved(store, other_key)[0] == {"n": 5})


# -- restoring ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["file", "sqlite", "file-url", "sqlite-url", "seed"])
def test_a_named_actor_created_again_restores_its_state(cluster, tmp_path, kind):
    store = make_store(kind, tmp_path)
    name = unique("restore")
    counter = CounterActor.options(name=name, checkpoint=store).remote(0)
    assert zactor.get([counter.inc.remote() for _ in range(3)]) == [1, 2, 3]
    kill_and_wait_for_name(counter, name)

    again = CounterActor.options(name=name, checkpoint=store).remote(1000)
    assert zactor.get(again.value.remote()) == 3  # from the checkpoint: no constructor ran
    assert zactor.get(again.inc.remote()) == 4
    assert stats_row(again)["checkpoints"] == 2  # a restore saves nothing; the two calls do
    zactor.kill(again)


def test_getstate_and_setstate_decide_what_is_saved(cluster, tmp_path):
    store = FileStore(tmp_path)
    name = unique("ledger")
    ledger = LedgerActor.options(name=name, checkpoint=store).remote()
    assert zactor.get([ledger.add.remote(x) for x in "abc"]) == [1, 2, 3]
    key = stats_row(ledger)["checkpoint_key"]
    assert saved(store, key)[0] == {"entries": ["a", "b", "c"]}  # __getstate__: no lock
    kill_and_wait_for_name(ledger, name)

    again = LedgerActor.options(name=name, checkpoint=store).remote()
    assert zactor.get(again.info.remote()) == {"entries": ["a", "b", "c"], "restored": True}
    assert zactor.get(again.add.remote("d")) == 4  # __setstate__ made a new lock
    zactor.kill(again)


def test_an_unnamed_actor_restarts_from_its_checkpoint(cluster, tmp_path):
    store = FileStore(tmp_path)
    counter = CounterActor.options(checkpoint=store, max_restarts=1, max_task_retries=-1)
    counter = counter.remote(0)
    assert zactor.get([counter.inc.remote() for _ in range(3)]) == [1, 2, 3]
    zactor.kill(counter, no_restart=False)  # comes back as incarnation 1
    assert zactor.get(counter.inc.remote(), timeout=60) == 4
    zactor.kill(counter)


def test_two_actors_never_overwrite_each_other(cluster, tmp_path):
    store = FileStore(tmp_path)
    unnamed = [CounterActor.options(checkpoint=store).remote(0) for _ in range(2)]
    named = [
        CounterActor.options(name=unique("twin"), checkpoint=store).remote(0) for _ in range(2)
    ]
    actors = unnamed + named
    for i, actor in enumerate(actors):
        assert zactor.get(actor.inc.remote(10 * (i + 1))) == 10 * (i + 1)
    keys = [stats_row(actor)["checkpoint_key"] for actor in actors]
    assert len(set(keys)) == 4
    for i, key in enumerate(keys):
        assert saved(store, key)[0] == {"n": 10 * (i + 1)}
    for actor in actors:
        zactor.kill(actor)


def test_a_damaged_checkpoint_stops_the_actor_and_is_left_intact(cluster, tmp_path):
    store = FileStore(tmp_path)
    name = unique("damaged")
    counter = CounterActor.options(name=name, checkpoint=store).remote(0)
    key = stats_row(counter)["checkpoint_key"]
    kill_and_wait_for_name(counter, name)
    store.save(key, b"not a checkpoint")
    counter = CounterActor.options(name=name, checkpoint=store).remote(0)
    with pytest.raises(CheckpointError, match="cannot restore.*delete that key"):
        zactor.get(counter.value.remote())
    assert store.restore(key) == b"not a checkpoint"  # never overwritten
    zactor.kill(counter)


# -- exactly once: retried calls --------------------------------------------------------------


def test_a_retried_call_gets_its_recorded_reply_and_does_not_run_again(cluster, tmp_path, raw):
    store = FileStore(tmp_path)
    name = unique("dedup")
    counter = CounterActor.options(name=name, checkpoint=store).remote(0)
    raw.send(counter, "inc", 7, 5)
    assert raw.result(7) == 5
    raw.send(counter, "inc", 7, 5)  # the same call again: a retry
    assert raw.result(7) == 5
    raw.send(counter, "fail", 8)
    with pytest.raises(ValueError, match="boom"):
        raw.result(8)
    raw.send(counter, "fail", 8)  # an error is recorded too: the same error, not run again
    with pytest.raises(ValueError, match="boom"):
        raw.result(8)
    assert zactor.get(counter.value.remote()) == 105
    assert stats_row(counter)["replayed"] == 2
    key = stats_row(counter)["checkpoint_key"]
    _state, applied = saved(store, key)
    assert raw.address.encode() in applied  # the record travels in the checkpoint

    # The record survives the actor's end: the same call to it created again is not re-run.
    kill_and_wait_for_name(counter, name)
    again = CounterActor.options(name=name, checkpoint=store).remote(0)
    raw.send(again, "inc", 7, 5)
    assert raw.result(7) == 5
    assert zactor.get(again.value.remote()) == 105
    raw.send(again, "inc", 9, 1)  # a new call runs
    assert raw.result(9) == 106
    zactor.kill(again)


def test_a_call_older_than_the_window_never_runs_again(cluster, tmp_path, raw):
    store = FileStore(tmp_path, fsync=False)  # 1030 saves: fast enough without fsync
    counter = CounterActor.options(checkpoint=store).remote(0)
    ids = range(1, APPLIED_WINDOW + 7)
    for call_id in ids:
        raw.send(counter, "inc", call_id)
    assert [raw.result(call_id) for call_id in ids] == list(ids)
    raw.send(counter, "inc", 1)  # dropped from the window: applied, result not recorded
    with pytest.raises(ActorDiedError, match="already applied.*no longer recorded"):
        raw.result(1)
    raw.send(counter, "inc", ids[-1])  # still in the window
    assert raw.result(ids[-1]) == ids[-1]
    assert zactor.get(counter.value.remote()) == ids[-1]
    zactor.kill(counter)


def _counter_spec(store, key: str, incarnation: int) -> dict:
    return {
        "class_name": "Counter",
        "methods": list(CounterActor._methods),
        "checkpoint": store,
        "checkpoint_key": key,
        "incarnation": incarnation,
    }


def _raw_target(address: str, actor_id: int):
    """What ``RawCaller.send`` needs of a handle, for an actor created by hand."""
    import types

    index = {m: i for i, m in enumerate(CounterActor._methods)}
    return types.SimpleNamespace(_address=address, _actor_id=actor_id, _index=index)


def test_a_restarted_incarnation_replaces_the_tombstone(tmp_path, raw, headed_worker):
    """``WorkerService.recreate`` of a killed id (a restart on the same worker) hosts it again."""
    store = FileStore(tmp_path)
    actor_id = 7001
    target = _raw_target(headed_worker, actor_id)
    blob = cloudpickle.dumps((CounterActor, (0,), {}))
    raw.order(headed_worker, "create", 100, actor_id, blob, _counter_spec(store, "tomb", 0))
    raw.result(100)
    raw.send(target, "inc", 1, 2)
    assert raw.result(1) == 2
    raw.order(headed_worker, "kill", 101, actor_id, "killed by the test")
    assert raw.result(101)
    raw.send(target, "inc", 2, 1)
    with pytest.raises(ActorDiedError, match="killed by the test"):
        raw.result(2)
    blob = cloudpickle.dumps((CounterActor, (1000,), {}))
    raw.order(headed_worker, "recreate", 102, actor_id, blob, _counter_spec(store, "tomb", 1))
    raw.result(102)
    raw.send(target, "inc", 1, 2)  # the retry of call 1: applied before, not run again
    assert raw.result(1) == 2
    raw.send(target, "inc", 3, 1)
    assert raw.result(3) == 3  # restored (2), not constructed (1000)
    raw.order(headed_worker, "kill", 103, actor_id, "done")
    raw.result(103)


def test_a_new_incarnation_ends_one_still_hosted_under_its_id(tmp_path, raw, headed_worker):
    """A restart sent while the old incarnation still lives here replaces it."""
    actor_id = 7002
    target = _raw_target(headed_worker, actor_id)
    store = FileStore(tmp_path)
    blob = cloudpickle.dumps((CounterActor, (0,), {}))
    raw.order(headed_worker, "create", 100, actor_id, blob, _counter_spec(store, "still", 0))
    raw.result(100)
    raw.send(target, "inc", 1, 5)
    assert raw.result(1) == 5
    raw.order(headed_worker, "recreate", 101, actor_id, blob, _counter_spec(store, "still", 1))
    raw.result(101)
    raw.send(target, "inc", 2, 1)
    assert raw.result(2) == 6  # the new incarnation, restored from the old one's checkpoint
    raw.order(headed_worker, "stats", 102)
    rows = raw.result(102)["actors"]
    assert [r["actor_id"] for r in rows].count(actor_id) == 1
    raw.order(headed_worker, "kill", 103, actor_id, "done")
    raw.result(103)


def test_only_the_head_may_restart_or_kill_on_a_worker(cluster, tmp_path, raw):
    """A driver (or any peer not sending from the head's inbox) is refused the head's
    orders; the actor is untouched and the worker keeps serving."""
    counter = CounterActor.options(checkpoint=FileStore(tmp_path)).remote(0)
    assert zactor.get(counter.inc.remote()) == 1
    service = worker_service_handle(counter._address)
    with pytest.raises(PermissionError, match="WorkerService.kill may only be called by head"):
        service.kill.remote(counter._actor_id, "by a driver").result(timeout=30)
    spec = _counter_spec(FileStore(tmp_path), "x", 1)
    blob = cloudpickle.dumps((CounterActor, (0,), {}))
    with pytest.raises(PermissionError, match="recreate may only be called by head"):
        service.recreate.remote(counter._actor_id, blob, spec).result(timeout=30)
    with pytest.raises(PermissionError, match="only the head orders"):
        service.create.remote(counter._actor_id, blob, spec).result(timeout=30)
    # Claiming the head's role from another inbox does not help.
    raw.order(counter._address, "kill", 200, counter._actor_id, "by an impostor")
    with pytest.raises(PermissionError, match="not by a peer of no role"):
        raw.result(200)
    assert zactor.get(counter.inc.remote()) == 2
    assert stats_row(counter)["calls"] == 2
    zactor.kill(counter)


# -- failing saves --------------------------------------------------------------------------


def test_a_failed_save_fails_the_call_instead_of_claiming_durability(cluster, tmp_path):
    flag = str(tmp_path / "full")
    store = FlakyStore(str(tmp_path / "store"), flag)
    counter = CounterActor.options(checkpoint=store).remote(0)
    key = stats_row(counter)["checkpoint_key"]
    assert zactor.get(counter.inc.remote()) == 1
    open(flag, "w").close()
    with pytest.raises(CheckpointSaveError) as info:
        zactor.get(counter.inc.remote())
    assert isinstance(info.value, zactor.ActorError)
    text = str(info.value)
    assert "not durable" in text and "No space left on device" in text and key in text
    counter.inc.tell()  # a tell's failed save is logged and counted
    poll(lambda: stats_row(counter)["tell_errors"] == 1)
    assert saved(store, key)[0] == {"n": 1}  # nothing newer reached the store
    os.remove(flag)
    assert zactor.get(counter.inc.remote()) == 4  # the failed calls' effects were kept ...
    assert saved(store, key)[0] == {"n": 4}  # ... and are durable from this save on
    zactor.kill(counter)


def test_a_failing_first_save_stops_the_actor(cluster, tmp_path):
    flag = str(tmp_path / "full")
    open(flag, "w").close()
    counter = CounterActor.options(checkpoint=FlakyStore(str(tmp_path / "s"), flag)).remote()
    with pytest.raises(CheckpointError, match="first checkpoint.*did not start"):
        zactor.get(counter.value.remote())
    zactor.kill(counter)


# -- threaded and async actors ----------------------------------------------------------------


def test_a_threaded_actor_saves_and_restores(cluster, tmp_path):
    store = FileStore(tmp_path)
    name = unique("threaded")
    ledger = LedgerActor.options(name=name, checkpoint=store, max_concurrency=4).remote()
    assert stats_row(ledger)["kind"] == "threaded"
    counts = zactor.get([ledger.add.remote(i) for i in range(20)])
    assert sorted(counts) == list(range(1, 21))
    key = stats_row(ledger)["checkpoint_key"]
    assert sorted(saved(store, key)[0]["entries"]) == list(range(20))
    kill_and_wait_for_name(ledger, name)
    again = LedgerActor.options(name=name, checkpoint=store, max_concurrency=4).remote()
    info = zactor.get(again.info.remote())
    assert info["restored"] and sorted(info["entries"]) == list(range(20))
    zactor.kill(again)


def test_an_async_actor_saves_dedups_and_restores_on_its_loop(cluster, tmp_path, raw):
    store = FileStore(tmp_path)
    name = unique("async")
    counter = AsyncCounterActor.options(name=name, checkpoint=store).remote()
    assert stats_row(counter)["kind"] == "async"
    assert zactor.get([counter.inc.remote() for _ in range(3)]) == [1, 2, 3]
    key = stats_row(counter)["checkpoint_key"]
    assert saved(store, key)[0]["n"] == 3
    raw.send(counter, "inc", 11)
    assert raw.result(11) == 4
    raw.send(counter, "inc", 11)
    assert raw.result(11) == 4
    kill_and_wait_for_name(counter, name)

    again = AsyncCounterActor.options(name=name, checkpoint=store).remote()
    info = zactor.get(again.info.remote())
    assert info["n"] == 4
    assert info["restored_on"].startswith("zactor-async")  # restored on the actor's loop
    raw.send(again, "inc", 11)
    assert raw.result(11) == 4
    assert zactor.get(again.inc.remote()) == 5
    zactor.kill(again)


# -- stats ----------------------------------------------------------------------------------


def test_stats_show_the_store_the_saves_and_their_duration(cluster, tmp_path):
    plain = CounterActor.remote()
    zactor.get(plain.inc.remote())
    row = stats_row(plain)
    assert row["checkpoint"] is None and row["checkpoints"] == 0
    assert row["last_checkpoint_us"] is None
    store = FileStore(tmp_path)
    durable = CounterActor.options(checkpoint=store).remote()
    zactor.get([durable.inc.remote() for _ in range(4)])
    row = stats_row(durable)
    assert row["checkpoint"] == repr(store)
    assert row["checkpoints"] == 5  # the constructed state, then each call
    assert row["last_checkpoint_us"] > 0
    assert row["checkpoint_key"].startswith(f"actor-{durable._actor_id}-")
    zactor.kill(plain)
    zactor.kill(durable)


# -- the record of applied calls (no cluster) --------------------------------------------------


def _entry(call_id: int, value) -> bytes:
    """A recorded reply as Checkpointer.finish packs it (large bytes travel out of band)."""
    payload, buffers = serialization.dumps(value)
    return msgpack.packb([call_id, wire.RESULT, payload, [bytes(b) for b in buffers]])


def _finished(record: _CallerRecord, call_id: int, value=None) -> None:
    record.running.discard(call_id)
    record.record(call_id, _entry(call_id, value if value is not None else call_id))


def test_the_window_keeps_the_last_calls_and_the_floor_covers_the_rest():
    record = _CallerRecord()
    for call_id in range(1, APPLIED_WINDOW + 11):
        _finished(record, call_id)
    assert len(record.replies) == APPLIED_WINDOW
    assert record.floor == 10  # the ids dropped from the window never run again
    assert min(record.replies) == 11 and not record.forgotten


def test_the_floor_stays_below_a_call_still_running():
    record = _CallerRecord()
    record.running.add(5)  # a long call of a threaded actor
    for call_id in range(1, APPLIED_WINDOW + 20):
        if call_id != 5:
            _finished(record, call_id)
    assert record.floor == 4  # 5 has not been applied: a retry of it must run
    assert record.forgotten and min(record.forgotten) > 5
    _finished(record, 5)  # applied now: the next drop lifts the floor past it
    assert record.floor > 5 and not record.forgotten
    assert 5 in record.replies  # and its reply is still recorded


def test_the_window_holds_a_bounded_number_of_bytes_but_always_the_newest():
    record = _CallerRecord()
    chunk = APPLIED_WINDOW_BYTES // 4
    for call_id in range(1, 10):
        _finished(record, call_id, b"x" * chunk)
    assert record.nbytes <= APPLIED_WINDOW_BYTES and len(record.replies) < 4
    _finished(record, 10, b"x" * (2 * APPLIED_WINDOW_BYTES))
    assert list(record.replies) == [10] and record.floor == 9


def test_the_packed_window_always_matches_the_recorded_replies():
    """The window is kept packed incrementally; it must equal the entries joined anew."""
    import random

    rng = random.Random(5)
    record = _CallerRecord()
    for call_id in range(1, 3 * APPLIED_WINDOW):
        if rng.random() < 0.05:
            record.running.add(call_id)  # finishes later, out of order
            continue
        _finished(record, call_id, b"y" * rng.choice([1, 100, 20_000]))
        if rng.random() < 0.1 and record.running:
            _finished(record, min(record.running))
        if rng.random() < 0.02:  # a reply replaced (what a failed save does)
            _finished(record, call_id, "replaced")
        if call_id % 97 == 0:
            forgotten = [msgpack.packb((c,)) for c in sorted(record.forgotten)]
            assert record.pack() == b"".join(forgotten + list(record.replies.values()))
            loaded = _CallerRecord.load(record.floor, record.pack())
            assert loaded.replies == record.replies and loaded.forgotten == record.forgotten
            assert loaded.pack() == record.pack()


class _Plain:
    def __init__(self):
        self.n = 1


class _DictStore:
    def __init__(self):
        self.blobs = {}

    def exists(self, key):
        return key in self.blobs

    def save(self, key, data):
        self.blobs[key] = bytes(data)

    def restore(self, key):
        return self.blobs[key]


def _checkpointer(store, restore=False) -> tuple[Checkpointer, HostedActor]:
    durable = Checkpointer(store, unique("unit"), every=1, restore=restore)
    actor = HostedActor(7, "_Plain")
    actor.instance = durable.open(_Plain, (), {})
    return durable, actor


def test_the_record_is_saved_with_the_state_and_answers_after_a_restore():
    store = _DictStore()
    durable, actor = _checkpointer(store)
    caller = b"ipc:///tmp/caller.sock"
    assert durable.begin(caller, 1) is None
    payload, _ = serialization.dumps(41)
    reply = durable.finish(actor, caller, 1, wire.RESULT, payload, [], True)
    assert reply[0] == wire.RESULT
    assert durable.begin(caller, 2) is None  # running when the "crash" comes
    assert durable.begin(caller, 2) is _RUNNING
    assert durable.saves == 2  # construction, call 1

    restored = Checkpointer(store, durable.key, every=1, restore=True)
    instance = restored.open(_Plain, (), {})
    assert instance.n == 1 and restored.restored
    entry = restored.begin(caller, 1)
    assert msgpack.unpackb(entry)[2] == payload  # call 1: its recorded reply
    assert restored.begin(caller, 2) is None  # call 2 was never applied: it runs
    assert restored.begin(b"ipc:///tmp/other.sock", 1) is None  # ids are per caller


def test_a_forgotten_call_is_reported_not_run():
    store = _DictStore()
    durable, actor = _checkpointer(store)
    caller = b"ipc:///tmp/caller.sock"
    payload, _ = serialization.dumps(None)
    for call_id in range(1, APPLIED_WINDOW + 3):
        assert durable.begin(caller, call_id) is None
        durable.finish(actor, caller, call_id, wire.RESULT, payload, [], True)
    assert durable.begin(caller, 1) is _FORGOTTEN
    restored = Checkpointer(store, durable.key, restore=True)
    restored.open(_Plain, (), {})
    assert restored.begin(caller, 2) is _FORGOTTEN  # the floor travels in the checkpoint


def test_the_callers_remembered_are_bounded():
    durable, actor = _checkpointer(_DictStore())
    payload, _ = serialization.dumps(None)
    for i in range(APPLIED_CALLERS + 5):
        caller = f"ipc:///tmp/caller-{i}.sock".encode()
        durable.begin(caller, 1)
        durable.finish(actor, caller, 1, wire.RESULT, payload, [], True)
    assert len(durable.callers) == APPLIED_CALLERS
    assert b"ipc:///tmp/caller-0.sock" not in durable.callers  # heard from least recently


def test_a_killed_actor_saves_nothing_more():
    store = _DictStore()
    durable, actor = _checkpointer(store)
    before = store.blobs[durable.key]
    caller = b"ipc:///tmp/caller.sock"
    durable.begin(caller, 1)
    actor.dead = "killed"
    payload, _ = serialization.dumps(1)
    assert durable.finish(actor, caller, 1, wire.RESULT, payload, [], True) is None
    assert store.blobs[durable.key] == before
    assert durable.tell_done(actor) is None and store.blobs[durable.key] == before


def test_a_checkpoint_written_by_hand_restores():
    """The envelope is checkpoint.py's: a state and an empty record restore as they are."""
    store = _DictStore()
    key = unique("by-hand")
    store.save(key, pack_checkpoint(cloudpickle.dumps({"n": 9}), {}))
    durable = Checkpointer(store, key, restore=True)
    assert durable.open(_Plain, (), {}).n == 9


# -- the example ------------------------------------------------------------------------------


@pytest.mark.timeout(150)
def test_the_durable_account_example_restores_the_balance():
    from examples_runner import run_main, script_lines

    expected = {"deposited": 150.0, "withdrawn": 120.0, "restored": 120.0}
    assert run_main("durable_account") == {"filestore": expected, "seed": expected}
    lines = script_lines("durable_account")
    assert "acct: after kill and re-creation, balance -> 120.0" in lines
    assert "seed-acct: after kill and re-creation, balance -> 120.0" in lines


# -- the promise: a SIGKILL loses no acknowledged increment and applies none twice -------------

PROMISE = """
import asyncio, json, os, signal, tempfile
import zactor

zactor.init(num_workers=2)

class Counter:
    def __init__(self):
        self.n = 0
    def pid(self):
        return os.getpid()
    def increment(self):
        self.n += 1
        return self.n
    def value(self):
        return self.n

class AsyncCounter(Counter):
    async def increment(self):
        await asyncio.sleep(0)
        self.n += 1  # after the last await: changed and recorded with nothing in between
        return self.n

cls = zactor.remote({{"sync": Counter, "async": AsyncCounter}}[{kind!r}])
# fsync=False: still atomic, and a killed process (not a power cut) loses nothing.
store = zactor.FileStore(tempfile.mkdtemp(), fsync=False)
counter = cls.options(
    checkpoint=store, checkpoint_every=1, max_restarts=-1, max_task_retries=-1
).remote()
pid = zactor.get(counter.pid.remote(), timeout=30)
futures = [counter.increment.remote() for _ in range({calls})]
futures[{kill_after}].result(timeout=60)  # part of them applied and acknowledged ...
os.kill(pid, signal.SIGKILL)              # ... the rest in flight, queued or not yet sent
values = [f.result(timeout=120) for f in futures]
final = zactor.get(counter.value.remote(), timeout=60)
restarted_elsewhere = zactor.get(counter.pid.remote(), timeout=30) != pid
zactor.shutdown()
print("RESULT " + json.dumps({{
    "values_are_1_to_n": sorted(values) == list(range(1, {calls} + 1)),
    "final": final,
    "restarted_elsewhere": restarted_elsewhere,
}}))
"""


@pytest.mark.timeout(200)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_sigkill_under_load_loses_no_acknowledged_increment_and_applies_none_twice(kind):
    """The issue's promise: 10,000 pipelined increments, the worker SIGKILLed midway.

    Every future resolves (retries, restarts); each increment ran exactly once, so
    the values returned are exactly 1..10000 (a retried call already applied got
    its recorded value) and the counter ends at 10000. (A threaded actor promises
    less: see Checkpointer, "Concurrent actors".)
    """
    from scenario import run_scenario

    calls = 10_000
    script = PROMISE.format(kind=kind, calls=calls, kill_after=1999)
    result = run_scenario(script, timeout=180)
    assert result == {"values_are_1_to_n": True, "final": calls, "restarted_elsewhere": True}
