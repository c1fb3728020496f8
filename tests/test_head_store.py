"""The head's durable registry (zactor.control.head_store): round trips, a killed writer,
file mode, and a damaged file."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap

import pytest

from zactor.control.head_store import STORE_FILE, HeadStore, HeadStoreError

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / STORE_FILE)


def actor_info(actor_id: int, **fields) -> dict:
    info = {
        "actor_id": actor_id,
        "address": "ipc:///tmp/zactor-x/worker-0.sock",
        "worker_id": "worker-0",
        "class_name": "Counter",
        "methods": ("add", "get"),  # a tuple must come back a tuple
        "name": "ps",
        "namespace": None,
        "lifetime": "detached",
        "max_pending_calls": 10_000,
        "num_cpus": 0.5,
        "resources": {"GPU": 1.0},
        "owner": None,
        "max_restarts": -1,
        "max_task_retries": 2,
        "method_options": b"\x80\x05pickled",
        "restarts": 1,
        "incarnation": 1,
        "checkpoint_key": "ps",
        "state": "alive",
        "task_runner": False,
    }
    info.update(fields)
    return info


def test_every_kind_of_record_round_trips(path):
    store = HeadStore.open(path)
    node = {
        "node_id": "node-1",
        "address": "tcp://10.0.0.2:7000",
        "pid": 41,
        "resources": {"CPU": 2},
        "num_workers": 2,
        "state": "alive",
    }
    worker = {
        "worker_id": "worker-3",
        "node_id": "node-1",
        "address": "tcp://10.0.0.2:7001",
        "pid": 42,
        "resources": {"GPU": 1},
    }
    driver = {"address": "ipc:///tmp/d.sock", "pid": 7, "node_id": "node-0", "local": True}
    big = os.urandom(100_000)  # travels out of band on the wire: stored whole here
    creation = {"incarnation": 0, "checkpoint": None, "args": (1, 2), "big": big}
    store.set_cluster("abc123", 8)
    store.put_node(node)
    store.put_worker(worker)
    store.put_actor(actor_info(5))
    store.put_actor(actor_info(6, name=None, lifetime=None, owner="ipc:///tmp/d.sock"))
    store.put_name(None, "ps", 5)
    store.put_name("team", "ps", 6)
    store.put_durable_key("ps", 5)
    store.put_creation(5, b"class-blob", creation)
    store.put_refs(6, {"ipc:///tmp/d.sock", "tcp://10.0.0.2:7001"}, {b"tok": 2})
    store.put_driver(driver)
    store.close()

    store = HeadStore.open(path)
    snap = store.load()
    store.close()
    assert snap.cluster_id == "abc123" and snap.next_actor_id == 8 and not snap.empty()
    assert snap.nodes == {"node-1": node}
    assert snap.workers == {"worker-3": worker}
    assert snap.actors[5] == actor_info(5)
    assert type(snap.actors[5]["methods"]) is tuple
    assert snap.actors[6]["owner"] == "ipc:///tmp/d.sock"
    assert snap.names == {(None, "ps"): 5, ("team", "ps"): 6}
    assert snap.durable_keys == {"ps": 5}
    assert snap.creations == {5: (b"class-blob", creation)}
    assert snap.refs == {6: ({"ipc:///tmp/d.sock", "tcp://10.0.0.2:7001"}, {b"tok": 2})}
    assert snap.drivers == {driver["address"]: driver}


def test_deletes_remove_records(path):
    store = HeadStore.open(path)
    store.set_cluster("abc", 3)
    store.put_node({"node_id": "n", "address": "a", "pid": 1})
    store.put_worker({"worker_id": "w", "address": "a"})
    store.put_actor(actor_info(1))
    store.put_actor(actor_info(2))
    store.put_creation(1, b"blob", {})
    store.put_refs(1, {"x"}, {})
    store.put_name(None, "ps", 1)
    store.put_durable_key("ps", 1)
    store.put_driver({"address": "d"})
    store.delete_actor(1)  # its creation and ledger entry go with it
    store.delete_name(None, "ps")
    store.delete_durable_key("ps")
    store.delete_node("n")
    store.delete_worker("w")
    store.delete_driver("d")
    snap = store.load()
    store.close()
    assert list(snap.actors) == [2]
    assert not (snap.creations or snap.refs or snap.names or snap.durable_keys)
    assert not (snap.nodes or snap.workers or snap.drivers)


def test_a_new_store_is_empty_and_private(path):
    store = HeadStore.open(path)
    snap = store.load()
    store.put_actor(actor_info(1))
    store.commit()
    modes = {
        name: stat.S_IMODE(os.stat(os.path.join(os.path.dirname(path), name)).st_mode)
        for name in os.listdir(os.path.dirname(path))
    }
    store.close()
    assert snap.empty() and snap.next_actor_id == 1 and not snap.actors
    assert modes[STORE_FILE] == 0o600
    assert all(mode == 0o600 for mode in modes.values()), modes  # the -wal and -shm files too


_WRITER = textwrap.dedent(
    """
    import sys
    from zactor.control.head_store import HeadStore

    store = HeadStore.open(sys.argv[1])
    store.set_cluster("killed", 101)
    for i in range(1, 101):
        store.put_actor({"actor_id": i, "name": f"a{i}"})
        store.put_name(None, f"a{i}", i)
    store.commit()
    print("committed", flush=True)
    i = 1000
    while True:  # writes in flight, commits by the flusher, when the kill comes
        store.put_actor({"actor_id": i, "name": None, "pad": b"x" * 4000})
        i += 1
    """
)


def test_a_store_reopens_after_its_writer_was_killed(path):
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, path], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "committed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    store = HeadStore.open(path)  # runs SQLite's quick_check: a damaged file is refused
    snap = store.load()
    store.close()
    assert snap.cluster_id == "killed" and snap.next_actor_id == 101
    for i in range(1, 101):
        assert snap.actors[i] == {"actor_id": i, "name": f"a{i}"}
        assert snap.names[(None, f"a{i}")] == i


def test_a_file_that_is_not_a_store_is_refused_naming_it(path):
    with open(path, "wb") as f:
        f.write(b"this is not an SQLite database, but it is long enough to look like one " * 20)
    with pytest.raises(HeadStoreError) as info:
        HeadStore.open(path)
    message = str(info.value)
    assert path in message
    assert "move it aside" in message and "without --recover" in message


def test_a_damaged_store_is_refused_naming_it(path):
    store = HeadStore.open(path)
    for i in range(2000):
        store.put_actor(actor_info(i, pad=os.urandom(200)))
    store.close()
    size = os.path.getsize(path)
    with open(path, "r+b") as f:  # scribble over pages past the header
        f.seek(size // 2)
        f.write(b"\xff" * 8192)
    with pytest.raises(HeadStoreError) as info:
        HeadStore.open(path)  # SQLite's quick_check finds the damage
    assert path in str(info.value) and "move it aside" in str(info.value)


def test_writes_after_close_say_so(path):
    store = HeadStore.open(path)
    store.close()
    with pytest.raises(HeadStoreError, match="closed"):
        store.put_actor(actor_info(1))
