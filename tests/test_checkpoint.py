"""Checkpoint stores and actor-state capture (``zactor.checkpoint``); no cluster needed.

Every store (``FileStore``, ``SQLiteStore`` and the seeds' ``FilePersistence``
as a user writes it) goes through one parametrized suite; the key-mapping tests
run on zactor's two stores only, since the seed's store puts keys straight into
file paths. Crash tests kill a writing subprocess with SIGKILL after it has
reported a few saves (no sleeps, no timing assertions).
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse

import cloudpickle
import numpy as np
import pytest
from seed_stores import FilePersistence

import zactor
from zactor import checkpoint
from zactor.checkpoint import (
    FileStore,
    SQLiteStore,
    capture_state,
    open_store,
    pack_checkpoint,
    restore_state,
    unpack_checkpoint,
)

pytestmark = pytest.mark.timeout(60)


def make_store(kind: str, tmp_path):
    if kind == "file":
        return FileStore(tmp_path / "store")
    if kind == "sqlite":
        return SQLiteStore(tmp_path / "store.db")
    return FilePersistence(str(tmp_path))


@pytest.fixture(params=["file", "sqlite", "seed"])
def any_store(request, tmp_path):
    """Each of the three stores zactor accepts."""
    store = make_store(request.param, tmp_path)
    yield store
    if isinstance(store, SQLiteStore):
        store.close()


@pytest.fixture(params=["file", "sqlite"])
def store(request, tmp_path):
    """zactor's own stores."""
    store = make_store(request.param, tmp_path)
    yield store
    if isinstance(store, SQLiteStore):
        store.close()


# ------------------------------------------------------------------ every store


def test_round_trip(any_store):
    blobs = {"actor-17": bytes(range(256)), "big": os.urandom(1 << 20), "tiny": b"\x00"}
    for key, data in blobs.items():
        any_store.save(key, data)
    for key, data in blobs.items():
        assert any_store.exists(key)
        restored = any_store.restore(key)
        assert type(restored) is bytes and restored == data


def test_overwrite_keeps_only_the_last_value(any_store):
    any_store.save("k", b"first, and longer than the second")
    any_store.save("k", b"second")
    assert any_store.restore("k") == b"second"


def test_missing_key_does_not_exist(any_store):
    assert not any_store.exists("never-saved")


def test_unicode_keys(any_store):
    keys = ["Konto-ü", "名前", "emoji 🎉", "ελληνικά"]
    for i, key in enumerate(keys):
        any_store.save(key, f"value {i}".encode())
    for i, key in enumerate(keys):
        assert any_store.exists(key)
        assert any_store.restore(key) == f"value {i}".encode()


class Ledger:
    def __init__(self) -> None:
        self.balance = 100.0
        self.history = np.arange(1000, dtype=np.float64)


def test_a_full_checkpoint_round_trips_through_every_store(any_store):
    """What zactor will save: the seeds' store gets bytes and gives the same bytes back."""
    ledger = Ledger()
    ledger.balance = 90.0
    data = pack_checkpoint(capture_state(ledger), {b"caller-1": (41, b"\x92\x01")})
    any_store.save("1234567", data)
    assert any_store.restore("1234567") == data
    state, applied = unpack_checkpoint(any_store.restore("1234567"))
    back = restore_state(Ledger, state)
    assert back.balance == 90.0
    assert np.array_equal(back.history, ledger.history)
    assert applied == {b"caller-1": (41, b"\x92\x01")}


def test_open_store_takes_any_store_as_it_is(any_store):
    assert open_store(any_store) is any_store


# ------------------------------------------------------------------ zactor's stores


def test_restore_of_a_missing_key_raises_key_error_naming_key_and_store(store):
    with pytest.raises(KeyError, match="no checkpoint saved under key 'nope'") as info:
        store.restore("nope")
    assert repr(store) in str(info.value)


def test_delete(store):
    store.save("k", b"v")
    store.delete("k")
    assert not store.exists("k")
    store.delete("k")  # deleting a missing key is not an error
    store.save("k", b"again")
    assert store.restore("k") == b"again"


def test_keys_that_collide_when_escaped_naively_stay_apart(store, tmp_path):
    keys = [
        "a/b", "a_b", "a%2Fb", "a%252Fb", "a\\b", "a:b", "a b", "a/b/", "/a/b", "A/B", "A_B",
        "x" * 300, "x" * 300 + "y", "x" * 40 + "/", "x" * 40 + "_",
    ]  # fmt: skip
    for i, key in enumerate(keys):
        store.save(key, str(i).encode())
    for i, key in enumerate(keys):
        assert store.restore(key) == str(i).encode(), key
    if isinstance(store, FileStore):
        names = os.listdir(store.directory)
        assert len(names) == len(keys)
        assert all(os.path.isfile(os.path.join(store.directory, n)) for n in names)
        assert len({n.lower() for n in names}) == len(keys)  # case-insensitive disks too


def test_keys_with_dots_and_separators_stay_inside_the_store(store, tmp_path):
    before = sorted(os.listdir(tmp_path))
    keys = ["..", ".", "../escape", "../../etc/passwd", "/etc/passwd", ".hidden", "...", "a/../b"]
    for i, key in enumerate(keys):
        store.save(key, str(i).encode())
    for i, key in enumerate(keys):
        assert store.exists(key)
        assert store.restore(key) == str(i).encode()
    assert sorted(os.listdir(tmp_path)) == before  # nothing written beside the store
    if isinstance(store, FileStore):
        for name in os.listdir(store.directory):
            assert not name.startswith(".")
            assert os.path.dirname(store.path(name)) == store.directory


def test_bytes_like_data_is_stored_as_bytes(store):
    store.save("ba", bytearray(b"bytearray"))
    store.save("mv", memoryview(b"..memoryview..")[2:-2])
    assert store.restore("ba") == b"bytearray"
    assert store.restore("mv") == b"memoryview"


def test_bad_keys_and_data_are_refused_with_what_to_do(store):
    with pytest.raises(TypeError, match="key is a str"):
        store.save(17, b"v")
    with pytest.raises(ValueError, match="must not be empty"):
        store.exists("")
    with pytest.raises(TypeError, match=r"save\(\) stores bytes; got dict: serialize it first"):
        store.save("k", {"balance": 1.0})
    assert not store.exists("k")


def test_a_store_pickles_as_its_location(store):
    store.save("k", b"v")
    copy = pickle.loads(pickle.dumps(store))
    assert type(copy) is type(store) and repr(copy) == repr(store)
    assert copy.restore("k") == b"v"
    copy.save("k2", b"v2")
    assert store.restore("k2") == b"v2"


def test_many_threads_share_one_store(store):
    def work(t: int) -> None:
        for j in range(50):
            store.save(f"t{t}-{j}", f"{t}:{j}".encode())
            store.save("shared", f"{t}:{j}".encode() * 1000)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for t in range(8):
        for j in range(50):
            assert store.restore(f"t{t}-{j}") == f"{t}:{j}".encode()
    assert store.restore("shared") in {f"{t}:49".encode() * 1000 for t in range(8)}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_sqlite_store_after_fork_opens_its_own_connection(tmp_path):
    store = SQLiteStore(tmp_path / "x.db")
    store.save("parent", b"1")
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            assert store.restore("parent") == b"1"
            store.save("child", b"2")
            store.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.restore("child") == b"2"  # the parent's connection still works
    store.save("parent", b"3")
    assert SQLiteStore(tmp_path / "x.db").restore("parent") == b"3"
    store.close()


def test_relative_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert FileStore("rel").directory == str(tmp_path / "rel")
    sqlite_store = SQLiteStore("rel.db")
    assert sqlite_store.path == str(tmp_path / "rel.db")
    sqlite_store.close()


def test_sqlite_store_in_a_missing_directory_says_so(tmp_path):
    with pytest.raises(Exception, match="cannot open the checkpoint database .*directory exist"):
        SQLiteStore(tmp_path / "no" / "such" / "dir" / "x.db")


def test_sqlite_store_uses_wal(tmp_path):
    store = SQLiteStore(tmp_path / "x.db")
    store.save("k", b"v")
    store.close()
    import sqlite3

    conn = sqlite3.connect(tmp_path / "x.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


# ------------------------------------------------------------------ atomicity


class _CrashMidWrite:
    """A file whose ``write`` puts down half the data, then fails like a dying process."""

    def __init__(self, f) -> None:
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()

    def write(self, data) -> None:
        data = bytes(data)
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        raise OSError("simulated crash mid-write")


@pytest.mark.parametrize("fail_in", ["write", "fsync", "replace"])
def test_file_store_failure_mid_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, fail_in):
    store = FileStore(tmp_path)
    store.save("k", b"old" * 1000)

    def fail(*args, **kwargs):
        raise OSError(f"simulated crash in {fail_in}")

    if fail_in == "write":
        real_fdopen = os.fdopen
        monkeypatch.setattr(os, "fdopen", lambda fd, mode: _CrashMidWrite(real_fdopen(fd, mode)))
    else:
        monkeypatch.setattr(os, fail_in, fail)
    with pytest.raises(OSError, match="simulated crash"):
        store.save("k", b"new" * 2000)
    monkeypatch.undo()
    assert store.restore("k") == b"old" * 1000
    assert os.listdir(tmp_path) == [os.path.basename(store.path("k"))]  # temp file removed


_DIE_AT = textwrap.dedent(
    """
    import os, signal, sys
    from zactor.checkpoint import FileStore

    where, point = sys.argv[1], sys.argv[2]
    store = FileStore(where)
    store.save("k", b"old" * 1000)

    def die(*args):
        os.kill(os.getpid(), signal.SIGKILL)

    class HalfThenDie:
        def __init__(self, f):
            self.f = f
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            pass
        def write(self, data):
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            die()

    if point == "mid-write":
        real_fdopen = os.fdopen
        os.fdopen = lambda fd, mode: HalfThenDie(real_fdopen(fd, mode))
    elif point == "before-replace":
        os.replace = die
    elif point == "after-replace":
        real_replace = os.replace
        os.replace = lambda src, dst: (real_replace(src, dst), die())
    store.save("k", b"new" * 2000)
    """
)


@pytest.mark.parametrize(
    "point, survivor",
    [
        ("mid-write", b"old" * 1000),
        ("before-replace", b"old" * 1000),
        ("after-replace", b"new" * 2000),
    ],
)
def test_file_store_killed_inside_save_leaves_a_whole_checkpoint(tmp_path, point, survivor):
    """SIGKILL at a chosen point of one save: no cleanup code runs, and nothing is torn."""
    child = subprocess.run([sys.executable, "-c", _DIE_AT, str(tmp_path), point])
    assert child.returncode == -signal.SIGKILL
    store = FileStore(tmp_path)
    assert store.restore("k") == survivor
    leftovers = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert len(leftovers) == (0 if point == "after-replace" else 1)  # never read
    store.save("k", b"after the crash")
    assert store.restore("k") == b"after the crash"


_WRITER = textwrap.dedent(
    """
    import sys
    from zactor.checkpoint import FileStore, SQLiteStore

    kind, where, seq = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = FileStore(where) if kind == "file" else SQLiteStore(where)
    value = (seq + 1).to_bytes(8, "big") * 524288   # 4 MiB
    while True:
        seq += 1
        store.save("counter", value)
        value = (seq + 1).to_bytes(8, "big") * 524288   # ready before the ack, so that
        print(seq, flush=True)                          # the kill lands in the next save
    """
)


def _check_value(data: bytes) -> int:
    """The sequence number of a whole value; fails on a torn or mixed one."""
    assert len(data) == 8 * 524288, f"torn checkpoint: {len(data)} bytes"
    seq = int.from_bytes(data[:8], "big")
    assert data == seq.to_bytes(8, "big") * 524288, "checkpoint mixes two writes"
    return seq


@pytest.mark.parametrize("kind", ["file", "sqlite"])
def test_sigkill_while_saving_leaves_a_whole_checkpoint(tmp_path, kind):
    where = str(tmp_path / ("dir" if kind == "file" else "x.db"))
    seq = 0
    for round_ in range(8):
        child = subprocess.Popen(
            [sys.executable, "-c", _WRITER, kind, where, str(seq)],
            stdout=subprocess.PIPE,
            text=True,
        )
        acknowledged = [int(child.stdout.readline()) for _ in range(3)]
        # A pause of 0 to 14 ms spreads the kills over the phases of a save (a few ms
        # each: write, fsync, rename); the checks below hold wherever the kill lands.
        time.sleep(round_ * 0.002)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        acknowledged += [int(line) for line in child.stdout.read().split()]
        child.stdout.close()
        store = FileStore(where) if kind == "file" else SQLiteStore(where)
        seq = _check_value(store.restore("counter"))
        # Every save that returned is there; at most the one in progress went further.
        assert acknowledged[-1] <= seq <= acknowledged[-1] + 1
        if isinstance(store, SQLiteStore):
            store.close()


_TWO_PROCESSES = textwrap.dedent(
    """
    import sys
    from zactor.checkpoint import FileStore, SQLiteStore

    kind, where, me = sys.argv[1], sys.argv[2], sys.argv[3]
    store = FileStore(where) if kind == "file" else SQLiteStore(where)
    sys.stdin.readline()   # start together
    for j in range(200):
        store.save(f"p{me}-{j}", f"{me}:{j}".encode())
        store.save("shared", f"{me}:{j}".encode())
    """
)


@pytest.mark.parametrize("kind", ["file", "sqlite"])
def test_two_processes_write_one_store(tmp_path, kind):
    where = str(tmp_path / ("dir" if kind == "file" else "x.db"))
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _TWO_PROCESSES, kind, where, str(me)],
            stdin=subprocess.PIPE,
            text=True,
        )
        for me in range(2)
    ]
    for child in children:
        child.stdin.write("go\n")
        child.stdin.close()
    assert [child.wait() for child in children] == [0, 0]
    store = FileStore(where) if kind == "file" else SQLiteStore(where)
    for me in range(2):
        for j in range(200):
            assert store.restore(f"p{me}-{j}") == f"{me}:{j}".encode()
    assert store.restore("shared") in {b"0:199", b"1:199"}


# ------------------------------------------------------------------ URLs


def test_urls_open_the_stores(tmp_path):
    directory = tmp_path / "a dir"
    file_store = open_store("file://" + urllib.parse.quote(str(directory)))
    assert isinstance(file_store, FileStore) and file_store.directory == str(directory)
    assert directory.is_dir()
    assert open_store(f"file://localhost{tmp_path}/d").directory == str(tmp_path / "d")
    assert open_store(f"FILE://{tmp_path}/e").directory == str(tmp_path / "e")
    sqlite_store = open_store(f"sqlite://{tmp_path}/x.db")
    assert isinstance(sqlite_store, SQLiteStore) and sqlite_store.path == str(tmp_path / "x.db")
    sqlite_store.save("k", b"v")
    assert SQLiteStore(tmp_path / "x.db").restore("k") == b"v"


@pytest.mark.parametrize(
    "url, message",
    [
        ("/tmp/checkpoints", r"not a checkpoint store URL \(no scheme\).*'file:///absolute/dir'"),
        ("s3://bucket/dir", r"unknown scheme 's3'.*'sqlite:///absolute/path.db'"),
        ("file://otherhost/dir", r"names the host 'otherhost'.*file:///absolute/path"),
        ("sqlite://relative.db", r"names the host 'relative.db'.*sqlite:///absolute/path"),
        ("sqlite:relative.db", r"has no absolute path.*sqlite:///absolute/path"),
        ("file:", r"has no absolute path"),
        ("sqlite:///tmp/x.db?mode=ro", r"query or fragment.*SQLiteStore object"),
        ("", r"no scheme"),
    ],
)
def test_bad_urls_say_what_is_accepted(url, message):
    with pytest.raises(ValueError, match=message):
        open_store(url)


class HalfAStore:
    def exists(self, key):
        return False

    def save(self, key, data):
        pass


@pytest.mark.parametrize(
    "spec, message",
    [
        (42, r"int object is not a checkpoint store: it has no exists\(\), save\(\), restore\(\)"),
        (HalfAStore(), r"HalfAStore object .* has no restore\(\) method; pass a store object"),
        (b"file:///tmp", r"bytes object is not a checkpoint store.*'file:///absolute/dir'"),
        (None, r"NoneType object is not a checkpoint store"),
        (FileStore, r"got the class FileStore, not a store: pass an instance, such as FileStore"),
    ],
)
def test_objects_that_are_not_stores_are_refused(spec, message):
    with pytest.raises(TypeError, match=message):
        open_store(spec)


def test_the_seed_store_is_accepted_unchanged(tmp_path):
    seed = FilePersistence(str(tmp_path))
    assert open_store(seed) is seed
    seed.save("k", b"\x00bytes\xff")
    assert seed.restore("k") == b"\x00bytes\xff"
    assert seed.restore("missing") is None  # why zactor asks exists() before restore()


def test_public_names():
    assert zactor.FileStore is FileStore and zactor.SQLiteStore is SQLiteStore
    assert zactor.open_store is open_store


# ------------------------------------------------------------------ actor state


class Counter:
    inits = 0

    def __init__(self, start: int = 0) -> None:
        type(self).inits += 1
        self.n = start
        self.weights = np.linspace(0.0, 1.0, 11)
        self.tags = {"name": "c", "seen": [1, 2, 3]}

    def increment(self) -> int:
        self.n += 1
        return self.n


def test_state_without_getstate_is_the_instance_dict():
    c = Counter(10)
    c.increment()
    data = capture_state(c)
    inits = Counter.inits
    back = restore_state(Counter, data)
    assert Counter.inits == inits  # __init__ did not run
    assert type(back) is Counter and back.n == 11 and back.tags == c.tags
    assert np.array_equal(back.weights, c.weights) and back.weights.dtype == c.weights.dtype
    assert back.increment() == 12
    assert back.weights is not c.weights


class WithLock:
    def __init__(self) -> None:
        self.total = 0
        self.lock = threading.Lock()
        self.matrix = np.eye(3)

    def __getstate__(self):
        return {"total": self.total, "matrix": self.matrix}

    def __setstate__(self, state) -> None:
        self.__dict__.update(state)
        self.lock = threading.Lock()
        self.restored = True


class WithLockChild(WithLock):
    pass


@pytest.mark.parametrize("cls", [WithLock, WithLockChild])
def test_getstate_and_setstate_are_used_when_defined(cls):
    obj = cls()
    obj.total = 5
    back = restore_state(cls, capture_state(obj))
    assert type(back) is cls and back.total == 5 and back.restored
    assert np.array_equal(back.matrix, np.eye(3))
    assert back.lock is not obj.lock and back.lock.acquire(blocking=False)


class OnlyGetstate:
    def __init__(self) -> None:
        self.keep = 1
        self.cache = object()

    def __getstate__(self):
        return {"keep": self.keep}


def test_getstate_without_setstate_updates_the_dict():
    back = restore_state(OnlyGetstate, capture_state(OnlyGetstate()))
    assert vars(back) == {"keep": 1}


class TupleState:
    def __getstate__(self):
        return (1, 2)


def test_a_non_dict_state_without_setstate_says_to_define_it():
    with pytest.raises(TypeError, match="from a tuple state.*define __setstate__"):
        restore_state(TupleState, capture_state(TupleState()))


class Unpicklable:
    def __init__(self) -> None:
        self.fine = 1
        self.lock = threading.Lock()


def test_an_unpicklable_attribute_is_named():
    with pytest.raises(pickle.PicklingError, match="attribute 'lock' could not be pickled"):
        capture_state(Unpicklable())


class Slotted:
    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 1


def test_slots_without_getstate_say_what_to_define():
    with pytest.raises(TypeError, match="uses __slots__.*define __getstate__"):
        capture_state(Slotted())


# ------------------------------------------------------------------ envelope


def test_envelope_round_trip():
    applied = {b"\x00caller": (5, b"result"), "driver-2": (7, b""), 3: (1, b"\x01")}
    state, back = unpack_checkpoint(pack_checkpoint(b"state bytes", applied))
    assert state == b"state bytes"
    assert back == applied
    assert all(type(v) is tuple for v in back.values())
    assert unpack_checkpoint(pack_checkpoint(memoryview(b"s"), {})) == (b"s", {})


def _envelope(**entries) -> bytes:
    import msgpack

    return msgpack.packb(entries, use_bin_type=True)


@pytest.mark.parametrize(
    "data, message",
    [
        (_envelope(format=2, state=b"", applied={}), r"format 2: .*reads format 1.*upgrade"),
        (_envelope(format="one", state=b"", applied={}), r"format 'one'.*damaged"),
        (_envelope(format=1, state=b""), r"the 'applied' entry is missing"),
        (_envelope(balance=1.0), r"not a zactor checkpoint: expected a map with a 'format'"),
        (cloudpickle.dumps({"balance": 1.0}), r"not a zactor checkpoint"),
        (b"", r"not a zactor checkpoint"),
    ],
)
def test_unpack_refuses_what_it_cannot_read(data, message):
    with pytest.raises(ValueError, match=message):
        unpack_checkpoint(data)


def test_pack_takes_bytes():
    with pytest.raises(TypeError, match="the state must be bytes; got dict"):
        pack_checkpoint({"n": 1}, {})


def test_module_names_match_all():
    assert set(checkpoint.__all__) <= set(dir(checkpoint))


def test_a_checkpoint_written_by_the_0_1_layout_still_loads():
    """zactor 0.1 pickled handles through ``zactor.actor`` and pools through
    ``zactor.pool``; ``tests/data/keeper-*`` is a checkpoint it wrote (an actor
    named "keeper" holding a handle and a HashPool). The aliases keep it loading."""
    store = FileStore(os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))
    state, _applied = unpack_checkpoint(store.restore("keeper"))
    assert b"zactor.actor" in state and b"zactor.pool" in state  # the old paths
    restored = cloudpickle.loads(state)
    assert restored["n"] == 42
    friend, pool = restored["friend"], restored["pool"]
    assert isinstance(friend, zactor.ActorHandle) and friend._class_name == "Doubler"
    assert isinstance(pool, zactor.HashPool) and len(pool.actors) == 2
    assert all(isinstance(h, zactor.ActorHandle) for h in pool.actors)
