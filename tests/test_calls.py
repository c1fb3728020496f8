"""Actors and calls: creating actors, options, names, ordering, tell, handles, kill,
exit_actor, the runtime context, and values that travel (numpy, tuples, big ints).

Everything runs against the session's 2-worker cluster (``cluster`` fixture).
"""

from __future__ import annotations

import os
import pickle
import time

import numpy as np
import pytest
from gates import wait_for_file as _wait_for_file

import zactor
import zactor.endpoint.runtime
from zactor.caller.handle import head_handle, worker_service_handle

pytestmark = pytest.mark.timeout(60)


# -- actor classes (module level: the workers import this module by name) ------------------


@zactor.remote
class Counter:
    def __init__(self, start=0):
        self.n = start

    def increment(self, by=1):
        self.n += by
        return self.n

    def value(self):
        return self.n

    def where(self):
        ctx = zactor.get_runtime_context()
        return {"actor_id": ctx.actor_id, "worker_id": ctx.worker_id, "pid": os.getpid()}


class PlainAccount:
    """The seeds' Ray Account: ``self.balance`` beside a ``balance()`` method."""

    def __init__(self, balance: float, minimal_balance: float):
        self.minimal = minimal_balance
        if balance < minimal_balance:
            raise Exception("Starting balance is less than minimal balance")
        self.balance = balance

    def balance(self) -> float:
        return self.balance

    def deposit(self, amount: float) -> float:
        if amount < 0:
            raise Exception("Cannot deposit negative amount")
        self.balance = self.balance + amount
        return self.balance

    def withdraw(self, amount: float) -> float:
        if amount < 0:
            raise Exception("Cannot withdraw negative amount")
        balance = self.balance - amount
        if balance < self.minimal:
            raise Exception("Withdrawal is not supported by current balance")
        self.balance = balance
        return balance


Account = zactor.remote(PlainAccount)


@zactor.remote(max_pending_calls=7)
class WithOptions:
    def ping(self):
        return "pong"


@zactor.remote
class Caller:
    """Calls other actors directly, with handles it received as arguments."""

    def __init__(self, other=None):
        self.other = other

    def call_other(self, handle, times=1):
        return [handle.increment.remote().result(timeout=30) for _ in range(times)]

    def call_stored(self):
        return self.other.increment.remote().result(timeout=30)

    def call_in_containers(self, handles: dict):
        return {
            k: [h.increment.remote().result(timeout=30) for h in hs] for k, hs in handles.items()
        }

    def tell_other(self, handle, times):
        for _ in range(times):
            handle.increment.tell()
        return handle.value.remote().result(timeout=30)

    def lookup(self, name, namespace=None):
        handle = zactor.get_actor(name, namespace=namespace)
        return handle, handle.increment.remote().result(timeout=30)

    def lookup_missing(self, name):
        try:
            zactor.get_actor(name)
        except ValueError as e:
            return ("ValueError", str(e))
        return ("found", None)


@zactor.remote
class SelfTeller:
    def __init__(self):
        self.pokes = 0

    def context(self):
        ctx = zactor.get_runtime_context()
        return {
            "actor_id": ctx.actor_id,
            "get_actor_id": ctx.get_actor_id(),
            "worker_id": ctx.worker_id,
            "node_id": ctx.node_id,
            "current_actor": ctx.current_actor,
        }

    def poke_self(self, times):
        me = zactor.get_runtime_context().current_actor
        for _ in range(times):
            me.poked.tell()
        return "sent"

    def poked(self):
        self.pokes += 1

    def count(self):
        return self.pokes


@zactor.remote
class Exiter:
    def __init__(self):
        self.n = 0

    def bump(self):
        self.n += 1
        return self.n

    def leave(self):
        zactor.exit_actor()
        return "not reached"


@zactor.remote
class Echo:
    def echo(self, *args, **kwargs):
        return args, kwargs

    def same(self, value):
        return value

    def types(self, value):
        return _type_tree(value)

    def array_info(self, a):
        return {
            "dtype": a.dtype.str,
            "shape": a.shape,
            "writeable": bool(a.flags.writeable),
            "sum": float(a.sum(dtype=np.float64)),
        }

    def add_one(self, a):
        return a + np.float32(1)

    def make_array(self, n):
        return np.arange(n, dtype=np.float32)

    def blob(self, n):
        return bytes(range(256)) * (n // 256)

    def blob_len(self, b):
        return type(b).__name__, len(b), b[:4], b[-4:]


def _type_tree(value):
    """The value's type structure, to compare exactly (tuple vs list, bool vs int)."""
    if isinstance(value, (list, tuple)):
        return [type(value).__name__, [_type_tree(v) for v in value]]
    if isinstance(value, dict):
        return ["dict", {k: _type_tree(v) for k, v in value.items()}]
    return type(value).__name__


# -- creating actors --------------------------------------------------------------------------


def test_decorator_creates_actor_and_calls_return_futures(cluster):
    c = Counter.remote(10)
    assert isinstance(c, zactor.ActorHandle)
    f = c.increment.remote()
    assert isinstance(f, zactor.Future)
    assert zactor.get(f) == 11
    assert zactor.get([c.increment.remote() for _ in range(3)]) == [12, 13, 14]
    assert c.increment.remote(by=6).result(timeout=30) == 20


def test_remote_on_a_plain_class(cluster):
    assert isinstance(Account, zactor.ActorClass)
    a = Account.remote(100.0, 10.0)
    assert a.deposit.remote(50.0).result(timeout=30) == 150.0
    assert a.withdraw.remote(40.0).result(timeout=30) == 110.0
    # The plain class itself is untouched and still usable locally.
    assert PlainAccount(5.0, 1.0).deposit(1.0) == 6.0


def test_methods_are_looked_up_on_the_class(cluster):
    """The seeds' Account sets ``self.balance`` beside its ``balance()`` method."""
    a = Account.remote(100.0, 10.0)
    assert a.balance.remote().result(timeout=30) == 100.0
    a.deposit.remote(5.0).result(timeout=30)
    assert a.balance.remote().result(timeout=30) == 105.0


def test_decorator_with_options_and_remote_with_options_call(cluster):
    h = WithOptions.remote()
    assert h.ping.remote().result(timeout=30) == "pong"
    assert h._gate.limit == 7
    Limited = zactor.remote(max_pending_calls=3)(PlainAccount)
    a = Limited.remote(1.0, 0.0)
    assert a._gate.limit == 3
    assert a.balance.remote().result(timeout=30) == 1.0


def test_actor_class_is_not_callable_and_methods_need_remote(cluster):
    with pytest.raises(TypeError, match=r"Counter\.remote"):
        Counter(1)
    c = Counter.remote()
    with pytest.raises(TypeError, match=r"\.remote\(|\.tell\("):
        c.increment()


def test_bad_options_are_rejected():
    with pytest.raises(TypeError, match="unknown actor option"):
        Counter.options(colour="red")
    with pytest.raises(ValueError, match="lifetime"):
        Counter.options(lifetime="forever")
    with pytest.raises(ValueError, match="max_pending_calls"):
        Counter.options(max_pending_calls=0)


def test_a_call_right_after_creation_always_finds_the_actor(cluster):
    """Plain sequence: create, call at once, many times, on both workers."""
    handles = [Counter.remote(i) for i in range(8)]
    assert zactor.get([h.increment.remote() for h in handles], timeout=30) == list(range(1, 9))


def test_a_call_batched_with_the_creation_finds_the_actor(cluster, monkeypatch):
    """An actor's creation and the first call to it coalesced into one frame.

    The driver's clock stands still, so every send after the first to a worker joins a
    batch (as it does under load), and a 50 ms linger keeps the background flusher from
    sending the creation on its own (longer would leave the flusher asleep into later
    tests, delaying their batched calls). The worker must run the creation before the call.
    (Before the fix the call got ActorDiedError 'no actor with id N'; without the
    monkeypatch that showed up when another thread kept the outbox to that worker busy.)
    """
    workers = head_handle().cluster_info.remote().result(timeout=30)["workers"]
    frozen = zactor.endpoint.runtime._monotonic()
    monkeypatch.setattr(zactor.endpoint.runtime, "LINGER_S", 0.05)
    monkeypatch.setattr(zactor.endpoint.runtime, "_monotonic", lambda: frozen)
    for w in workers:  # every outbox to a worker has sent "just now": the next puts batch
        worker_service_handle(w["address"]).ping.tell()
    h = Counter.remote(41)
    f = h.increment.remote()
    monkeypatch.undo()
    assert f.result(timeout=30) == 42


# -- names and namespaces ------------------------------------------------------------------------


def test_named_actor_found_by_get_actor(cluster, unique_name):
    name = unique_name("counter")
    c = Counter.options(name=name).remote(5)
    assert c.increment.remote().result(timeout=30) == 6
    same = zactor.get_actor(name)
    assert same == c
    assert same.increment.remote().result(timeout=30) == 7
    assert c.value.remote().result(timeout=30) == 7


def test_get_actor_from_inside_another_actor(cluster, unique_name):
    name = unique_name("target")
    target = Counter.options(name=name).remote(100)  # held: a dropped actor ends
    caller = Caller.remote()
    handle, value = caller.lookup.remote(name).result(timeout=30)
    assert value == 101
    assert isinstance(handle, zactor.ActorHandle)
    assert handle.value.remote().result(timeout=30) == 101
    assert handle == target
    kind, message = caller.lookup_missing.remote(unique_name("nobody")).result(timeout=30)
    assert kind == "ValueError"


def test_taken_name_raises_value_error_naming_it(cluster, unique_name):
    name = unique_name("taken")
    held = Counter.options(name=name).remote()
    with pytest.raises(ValueError, match=name):
        Counter.options(name=name).remote()
    assert held.value.remote().result(timeout=30) == 0


def test_get_actor_of_missing_name_raises_value_error_naming_it(cluster, unique_name):
    name = unique_name("missing")
    with pytest.raises(ValueError, match=name):
        zactor.get_actor(name)


def test_get_if_exists_returns_the_existing_actor(cluster, unique_name):
    name = unique_name("singleton")
    first = Counter.options(name=name, get_if_exists=True).remote(5)
    first.increment.remote().result(timeout=30)
    second = Counter.options(name=name, get_if_exists=True).remote(99)
    assert second == first
    assert second.value.remote().result(timeout=30) == 6  # not re-created with 99


def test_namespaces_separate_names(cluster, unique_name):
    name = unique_name("shared")
    a = Counter.options(name=name, namespace="ns-a").remote(1)
    b = Counter.options(name=name, namespace="ns-b").remote(2)
    assert a != b
    assert zactor.get_actor(name, namespace="ns-a").value.remote().result(timeout=30) == 1
    assert zactor.get_actor(name, namespace="ns-b").value.remote().result(timeout=30) == 2
    with pytest.raises(ValueError, match=name):
        zactor.get_actor(name)  # the default namespace has no such actor
    with pytest.raises(ValueError, match=name):
        Counter.options(name=name, namespace="ns-a").remote()


def test_get_actor_inside_actor_with_namespace(cluster, unique_name):
    name = unique_name("ns-target")
    target = Counter.options(name=name, namespace="ns-inner").remote(10)
    caller = Caller.remote()
    _, value = caller.lookup.remote(name, "ns-inner").result(timeout=30)
    assert value == 11
    assert target.value.remote().result(timeout=30) == 11


# -- ordering, tell, handles ----------------------------------------------------------------------


def test_pipelined_calls_from_one_caller_run_in_order(cluster):
    c = Counter.remote()
    futures = [c.increment.remote() for _ in range(1000)]
    assert zactor.get(futures, timeout=60) == list(range(1, 1001))


def test_tell_then_remote_observes_the_effect(cluster):
    c = Counter.remote()
    assert c.increment.tell() is None
    for _ in range(99):
        c.increment.tell(1)
    c.increment.tell(by=900)
    assert c.value.remote().result(timeout=30) == 1000


def test_handles_passed_as_arguments_are_called_directly(cluster):
    target = Counter.remote()
    caller = Caller.remote()
    assert caller.call_other.remote(target, 3).result(timeout=30) == [1, 2, 3]
    assert target.value.remote().result(timeout=30) == 3
    # A handle given to the constructor, kept, and used later.
    keeper = Caller.remote(target)
    assert keeper.call_stored.remote().result(timeout=30) == 4
    # Handles nested inside containers.
    other = Counter.remote(10)
    out = caller.call_in_containers.remote({"a": [target, other]}).result(timeout=30)
    assert out == {"a": [5, 11]}
    # Tells from an actor, then a call from it: its own calls are ordered too.
    assert caller.tell_other.remote(target, 50).result(timeout=30) == 55


def test_handles_pickle_and_compare(cluster):
    c = Counter.remote()
    copy = pickle.loads(pickle.dumps(c))
    assert copy == c and hash(copy) == hash(c)
    assert copy.increment.remote().result(timeout=30) == 1
    assert c.value.remote().result(timeout=30) == 1


def test_actors_call_each_other_on_the_same_and_on_other_workers(cluster, placement):
    """A method waiting on another actor's reply, its neighbour on one worker or not."""
    callers, targets, same, other = [], [], [], []
    for _ in range(12):  # the head balances actor counts: both kinds of pair appear soon
        callers.append(Caller.remote())
        targets.extend([Counter.remote(), Counter.remote()])  # not in step with callers
        pairs = [(c, t) for c in callers for t in targets]
        same = [(c, t) for c, t in pairs if placement(c) == placement(t)]
        other = [(c, t) for c, t in pairs if placement(c) != placement(t)]
        if same and other:
            break
    assert same and other
    for caller, target in (same[0], other[0]):
        before = target.value.remote().result(timeout=30)
        assert caller.call_other.remote(target, 3).result(timeout=30) == [
            before + 1,
            before + 2,
            before + 3,
        ]


# -- kill, exit_actor ---------------------------------------------------------------------------


def test_kill_then_calls_raise_actor_died_naming_the_actor(cluster):
    c = Counter.remote()
    assert c.increment.remote().result(timeout=30) == 1
    zactor.kill(c)
    with pytest.raises(zactor.ActorDiedError) as info:
        c.increment.remote().result(timeout=30)
    text = str(info.value)
    assert "Counter" in text and str(c._actor_id) in text
    assert "kill" in text
    # Again, and through zactor.get; a tell to the dead actor is silently dropped.
    c.increment.tell()
    with pytest.raises(zactor.ActorDiedError):
        zactor.get(c.value.remote(), timeout=30)


def test_kill_rejects_non_handles():
    with pytest.raises(ValueError, match="needs an actor handle"):
        zactor.kill("not a handle")


def test_kill_frees_the_name(cluster, unique_name, wait_for):
    name = unique_name("killed")
    c = Counter.options(name=name).remote()
    c.value.remote().result(timeout=30)
    zactor.kill(c)

    def gone():
        try:
            zactor.get_actor(name)
        except ValueError:
            return True
        return False

    wait_for(gone, timeout=10)
    fresh = Counter.options(name=name).remote(7)
    assert fresh != c
    assert zactor.get_actor(name).value.remote().result(timeout=30) == 7


def test_kill_with_calls_queued(cluster, gate):
    """Queued calls of a killed actor raise ActorDiedError; none is left hanging."""
    h = Holder.remote()
    running = h.hold.remote(gate.path)
    queued = [h.bump.remote() for _ in range(5)]
    time.sleep(0.05)  # let the first call start (not needed for correctness)
    zactor.kill(h)
    gate.open()
    for f in queued:
        with pytest.raises(zactor.ActorDiedError):
            f.result(timeout=30)
    # The running call cannot be interrupted; it must resolve either way.
    try:
        running.result(timeout=30)
    except zactor.ActorDiedError:
        pass


def test_exit_actor_inside_a_method(cluster):
    e = Exiter.remote()
    assert e.bump.remote().result(timeout=30) == 1
    # As in Ray, the call that exits raises ActorDiedError: the actor is gone.
    with pytest.raises(zactor.ActorDiedError, match="exit_actor"):
        e.leave.remote().result(timeout=30)
    with pytest.raises(zactor.ActorDiedError, match="exit_actor"):
        e.bump.remote().result(timeout=30)


def test_exit_actor_fails_calls_queued_behind_it(cluster):
    e = Exiter.remote()
    futures = [e.bump.remote(), e.leave.remote(), e.bump.remote(), e.bump.remote()]
    assert futures[0].result(timeout=30) == 1
    for f in futures[1:]:
        with pytest.raises(zactor.ActorDiedError, match="exit_actor"):
            f.result(timeout=30)


def test_exit_actor_frees_the_name(cluster, unique_name, wait_for):
    name = unique_name("exiter")
    e = Exiter.options(name=name).remote()
    assert isinstance(e.leave.remote().exception(timeout=30), zactor.ActorDiedError)

    def gone():
        try:
            zactor.get_actor(name)
        except ValueError:
            return True
        return False

    wait_for(gone, timeout=10)


def test_exit_actor_outside_an_actor_raises(cluster):
    with pytest.raises(RuntimeError, match="inside an actor"):
        zactor.exit_actor()


# -- runtime context ------------------------------------------------------------------------


def test_runtime_context_inside_an_actor(cluster, wait_for):
    h = SelfTeller.remote()
    ctx = h.context.remote().result(timeout=30)
    assert ctx["actor_id"] == h._actor_id == ctx["get_actor_id"]
    assert ctx["current_actor"] == h
    workers = head_handle().cluster_info.remote().result(timeout=30)["workers"]
    assert ctx["worker_id"] in {w["worker_id"] for w in workers}
    assert ctx["node_id"]
    # current_actor is usable: the actor tells itself.
    assert h.poke_self.remote(5).result(timeout=30) == "sent"
    wait_for(lambda: h.count.remote().result(timeout=30) == 5, timeout=10)


def test_runtime_context_worker_id_matches_the_placement(cluster, placement):
    handles = []
    for _ in range(16):  # the head balances actor counts, so both workers get some soon
        handles.append(Counter.remote())
        if len({placement(h) for h in handles}) == 2:
            break
    assert len({placement(h) for h in handles}) == 2
    for h in handles:
        where = h.where.remote().result(timeout=30)
        assert where["actor_id"] == h._actor_id
        assert where["worker_id"] == placement(h)
        assert where["pid"] != os.getpid()


def test_runtime_context_names_the_right_actor_in_pipelined_batches(cluster, spread):
    """Calls to several actors of one worker, batched together, each see their own actor.

    The host sets the thread's current actor once for each actor's run of
    calls: every call must still report its own actor, plain or threaded.
    """
    (plain,) = spread(Counter, [3])
    (threaded,) = spread(Counter.options(max_concurrency=2), [2])
    for actors in (plain, threaded, plain + threaded):
        calls = [(h, h.where.remote()) for _ in range(50) for h in actors]
        for h, future in calls:
            assert future.result(timeout=30)["actor_id"] == h._actor_id
    assert zactor.get_runtime_context().actor_id is None  # the driver is no actor


def test_runtime_context_in_the_driver(cluster):
    ctx = zactor.get_runtime_context()
    assert ctx.actor_id is None
    assert ctx.current_actor is None


# -- init ------------------------------------------------------------------------------------------


def test_init_twice_raises_runtime_error(cluster):
    assert zactor.is_initialized()
    with pytest.raises(RuntimeError, match="already"):
        zactor.init(num_workers=2)
    info = zactor.init(ignore_reinit_error=True)
    assert len(info["workers"]) == 2
    # The cluster still works.
    assert Counter.remote().increment.remote().result(timeout=30) == 1


# -- values that travel ------------------------------------------------------------------------


def test_numpy_arrays_round_trip(cluster):
    e = Echo.remote()
    a = np.random.default_rng(0).random(256 * 1024, dtype=np.float32)  # 1 MiB
    assert a.nbytes == 1 << 20
    info = e.array_info.remote(a).result(timeout=30)
    assert info["dtype"] == a.dtype.str and info["shape"] == a.shape
    assert info["sum"] == pytest.approx(float(a.sum(dtype=np.float64)))
    back = e.same.remote(a).result(timeout=30)
    assert isinstance(back, np.ndarray) and back.dtype == np.float32
    np.testing.assert_array_equal(back, a)
    plus = e.add_one.remote(a).result(timeout=30)
    np.testing.assert_array_equal(plus, a + np.float32(1))
    made = e.make_array.remote(256 * 1024).result(timeout=30)
    np.testing.assert_array_equal(made, np.arange(256 * 1024, dtype=np.float32))
    # Small arrays (inline in the payload) too.
    small = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(e.same.remote(small).result(timeout=30), small)
    assert not e.array_info.remote(small).result(timeout=30)["writeable"]


def test_numpy_arrays_arrive_read_only(cluster):
    e = Echo.remote()
    a = np.arange(256 * 1024, dtype=np.float32)  # 1 MiB: sent as its own frame
    back = e.same.remote(a).result(timeout=30)
    in_actor = e.array_info.remote(a).result(timeout=30)["writeable"]
    assert (in_actor, bool(back.flags.writeable)) == (False, False)


def test_numpy_arrays_of_various_shapes_and_dtypes(cluster):
    e = Echo.remote()
    values = [
        np.arange(12, dtype=np.int64).reshape(3, 4),  # small: inline
        np.asfortranarray(np.arange(40000, dtype=np.float64).reshape(200, 200)),
        np.arange(30000, dtype=np.int16)[::3],  # not contiguous
        np.zeros((0, 5), dtype=np.float32),
        np.array(3.5),
        np.arange(5000, dtype=">i4"),
    ]
    for v in values:
        back = e.same.remote(v).result(timeout=30)
        assert back.shape == v.shape and back.dtype == v.dtype
        np.testing.assert_array_equal(back, v)
    args, kwargs = e.echo.remote(values[0], k=values[1]).result(timeout=30)
    np.testing.assert_array_equal(args[0], values[0])
    np.testing.assert_array_equal(kwargs["k"], values[1])


def test_tuples_stay_tuples(cluster):
    e = Echo.remote()
    value = (1, (2, 3), [4, (5, [6])], {"k": (7,)}, ())
    back = e.same.remote(value).result(timeout=30)
    assert back == value
    assert _type_tree(back) == _type_tree(value)
    assert e.types.remote(value).result(timeout=30) == _type_tree(value)
    args, kwargs = e.echo.remote((1, 2), k=(3,)).result(timeout=30)
    assert type(args) is tuple and args == ((1, 2),)
    assert type(kwargs["k"]) is tuple


def test_big_ints(cluster):
    e = Echo.remote()
    for v in [2**64 - 1, -(2**63), 0, -1]:
        assert e.same.remote(v).result(timeout=30) == v
    nested = {"a": [1, 2**100, (3, -(2**90))]}
    back = e.same.remote(nested).result(timeout=30)
    assert back == nested and type(back["a"][2]) is tuple
    assert e.same.remote([2**64]).result(timeout=30) == [2**64]
    args, kwargs = e.echo.remote(2**70, k=2**80).result(timeout=30)
    assert args == (2**70,) and kwargs == {"k": 2**80}
    assert e.types.remote(2**200).result(timeout=30) == "int"  # as an argument


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, 2**200, -(3**100)])
def test_big_int_return_values(cluster, value):
    e = Echo.remote()
    assert e.same.remote(value).result(timeout=30) == value


def test_large_bytes(cluster):
    e = Echo.remote()
    big = os.urandom(3 << 20)
    assert e.same.remote(big).result(timeout=30) == big
    kind, n, head, tail = e.blob_len.remote(big).result(timeout=30)
    assert (kind, n, head, tail) == ("bytes", len(big), big[:4], big[-4:])
    made = e.blob.remote(4 << 20).result(timeout=30)
    assert type(made) is bytes and len(made) == 4 << 20
    assert e.same.remote([big[:20000], b"x"]).result(timeout=30) == [big[:20000], b"x"]


def test_plain_values_keep_their_types(cluster):
    e = Echo.remote()
    value = [None, True, False, 0, -1, 1.5, "text", "", b"bytes", {"x": 1, 2: "int key"}, {1, 2}]
    back = e.same.remote(value).result(timeout=30)
    assert back == value
    assert [type(v) for v in back] == [type(v) for v in value]


# -- helpers used above --------------------------------------------------------------------------


@zactor.remote
class Holder:
    def __init__(self):
        self.n = 0

    def hold(self, path):
        _wait_for_file(path)
        return "released"

    def bump(self):
        self.n += 1
        return self.n
