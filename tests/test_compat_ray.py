"""``import zactor.compat.ray as ray``: Ray code runs on zactor unchanged.

Most tests use the session's cluster (the shim finds it already started, as
Ray's automatic start does). ``ray.init`` itself, and the automatic start,
run in subprocesses with clusters of their own. Held calls wait on a gate
file (``gate`` fixture), never on time.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import textwrap

import pytest
from gates import needs_tasks, poll, wait_for_file

import zactor
import zactor.compat.ray as ray
from zactor.caller.handle import head_handle
from zactor.compat.ray import _options
from zactor.compat.ray.util import ActorPool, list_named_actors


@ray.remote
class Counter:
    LIMIT = 100

    def __init__(self, start=0):
        self.value = start

    def increment(self):
        self.value += 1
        return self.value

    def add(self, x):
        self.value += x
        return self.value

    def fail(self, message):
        raise ValueError(message)

    def hold(self, path, value=None):
        wait_for_file(path)
        return value

    def context(self):
        ctx = ray.get_runtime_context()
        me = ctx.current_actor
        return {
            "actor_id": ctx.get_actor_id(),
            "self_id": me._actor_id,
            "self_type": type(me).__name__,
            "initialized": ray.is_initialized(),
        }

    def call_other(self, other):
        """Uses a handle it was given, and says which kind of handle arrived."""
        return type(other).__module__, ray.get(other.increment.remote())

    def read_ref(self, refs):
        """A list holding a ray.put ref: the ref travels, ray.get reads it here."""
        return ray.get(refs[0])

    def leave(self):
        ray.actor.exit_actor()

    def keep_self(self):
        """Keeps a Ray handle to itself, which must not keep the actor alive."""
        self.me = ray.get_runtime_context().current_actor
        return self.me._actor_id


class Plain:
    def __init__(self, x):
        self.x = x

    def get(self):
        return self.x


@ray.remote
class Flaky:
    def __init__(self):
        self.attempts = 0

    @ray.method(max_task_retries=3, retry_exceptions=[ConnectionError])
    def sometimes(self):
        self.attempts += 1
        if self.attempts < 3:
            raise ConnectionError(f"attempt {self.attempts}")
        return self.attempts


@ray.remote
class Persister:
    """Uses an ActorPool passed to its constructor, as the seeds' Account does."""

    def __init__(self, pool):
        self.pool = pool

    def double_all(self, values):
        return list(self.pool.map(lambda a, v: a.add.remote(v), values))


# -- actors ----------------------------------------------------------------------------------


def test_actor_class_calls_and_get(cluster):
    c = Counter.remote(10)
    assert isinstance(c, ray.actor.ActorHandle)
    assert isinstance(c, zactor.ActorHandle)  # zactor's own functions take it
    assert ray.get(c.increment.remote()) == 11
    assert ray.get([c.increment.remote() for _ in range(3)]) == [12, 13, 14]
    assert Counter.LIMIT == 100  # the class's attributes, as on Ray's actor classes


def test_ray_remote_on_a_plain_class_and_options(cluster, unique_name):
    Remote = ray.remote(Plain)
    name = unique_name("plain")
    p = Remote.options(name=name, max_concurrency=2).remote(7)
    assert ray.get(p.get.remote()) == 7
    found = ray.get_actor(name)
    assert isinstance(found, ray.actor.ActorHandle)
    assert found == p
    assert ray.get(found.get.remote()) == 7
    assert name in list_named_actors()
    ray.kill(found)


def test_calling_directly_raises_rays_errors(cluster):
    with pytest.raises(TypeError, match=r"use 'Counter.remote\(\)'"):
        Counter()
    c = Counter.remote()
    with pytest.raises(TypeError, match=r"try 'object.increment.remote\(\)'"):
        c.increment()


def test_handles_travel_as_ray_handles(cluster):
    a, b = Counter.remote(), Counter.remote(5)
    module, value = ray.get(a.call_other.remote(b))
    assert module == "zactor.compat.ray._handles"
    assert value == 6


def test_lifetime_follows_the_handles(cluster):
    """Ray handles count as zactor's do: dropping the last ends the actor, and an
    actor's handle to itself (``current_actor``) does not count."""
    c = Counter.remote()
    actor_id = c._actor_id
    assert ray.get(c.keep_self.remote()) == actor_id
    del c
    gc.collect()

    def ended() -> bool:
        live = head_handle().list_actors.remote().result(timeout=30)
        return all(info["actor_id"] != actor_id for info in live)

    poll(ended, timeout=30)


def test_runtime_context_inside_and_outside_an_actor(cluster):
    c = Counter.remote()
    ctx = ray.get(c.context.remote())
    assert ctx == {
        "actor_id": c._actor_id,
        "self_id": c._actor_id,
        "self_type": "ActorHandle",
        "initialized": True,
    }
    outside = ray.get_runtime_context()
    assert outside.get_actor_id() is None
    assert outside.namespace == zactor.get_runtime_context().namespace
    with pytest.raises(RuntimeError, match="only available inside an actor"):
        _ = outside.current_actor


def test_exceptions_map_onto_zactors(cluster):
    c = Counter.remote()
    with pytest.raises(ray.exceptions.RayTaskError) as info:
        ray.get(c.fail.remote("bad input"))
    assert isinstance(info.value, ValueError)  # also the class the method raised
    assert info.value.args == ("bad input",)
    assert issubclass(ray.exceptions.RayTaskError, ray.exceptions.RayError)

    ray.kill(c)
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(c.increment.remote())
    assert ray.exceptions.ActorDiedError is ray.exceptions.RayActorError


def test_exit_actor_and_ray_terminate(cluster):
    c = Counter.remote()
    with pytest.raises(ray.exceptions.ActorDiedError):
        ray.get(c.leave.remote())
    d = Counter.remote()
    assert ray.get(d.increment.remote()) == 1
    ray.get(d.__ray_terminate__.remote(), timeout=30)
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(d.increment.remote())


def test_get_timeout_raises_get_timeout_error(cluster, gate):
    c = Counter.remote()
    held = c.hold.remote(gate.path, "late")
    with pytest.raises(ray.exceptions.GetTimeoutError) as info:
        ray.get(held, timeout=0.05)
    assert isinstance(info.value, TimeoutError)
    gate.open()
    assert ray.get(held, timeout=30) == "late"


def test_wait_splits_ready_from_pending(cluster, gate):
    c, d = Counter.remote(), Counter.remote()
    held = c.hold.remote(gate.path)
    quick = d.increment.remote()
    ref = ray.put("here")
    ready, not_ready = ray.wait([held, quick, ref], num_returns=2, timeout=30)
    assert ready == [quick, ref]
    assert not_ready == [held]
    gate.open()
    ready, not_ready = ray.wait([held], num_returns=1, timeout=30)
    assert ready == [held] and not_ready == []


def test_wait_and_get_refuse_what_is_not_a_ref(cluster):
    with pytest.raises(ValueError, match="ObjectRef"):
        ray.get(3)
    with pytest.raises(TypeError, match="list"):
        ray.wait(ray.put(1))


def test_put_refs_and_futures_as_arguments(cluster):
    c, d = Counter.remote(), Counter.remote()
    ref = ray.put(5)
    assert isinstance(ref, ray.ObjectRef)
    assert isinstance(d.increment.remote(), ray.ObjectRef)
    assert ray.get(ref) == 5
    assert ray.get([ref, c.increment.remote()]) == [5, 1]
    # A ref given directly arrives as its value, in Ray and here (put or a call's result).
    assert ray.get(c.add.remote(ref)) == 6
    assert ray.get(d.add.remote(c.increment.remote())) == 8
    assert ray.get(Counter.remote(ref).increment.remote()) == 6
    # Nested inside a list it travels as a ref, which the actor reads with ray.get.
    assert ray.get(c.read_ref.remote([ray.put({"k": [1, 2]})])) == {"k": [1, 2]}


def test_method_retry_options_through_ray_method(cluster):
    f = Flaky.remote()
    assert ray.get(f.sometimes.remote(), timeout=30) == 3


def test_actor_pool_from_ray_util(cluster):
    pool = ActorPool([Counter.remote(), Counter.remote()])
    assert list(pool.map(lambda a, v: a.add.remote(v), [1, 2, 3, 4])) == [1, 2, 4, 6]
    # An idle pool is passed to an actor's constructor, as seed 002's Example 4-11 does.
    keeper = Persister.remote(ActorPool([Counter.remote(), Counter.remote()]))
    assert ray.get(keeper.double_all.remote([10, 20])) == [10, 20]


def test_zactor_functions_take_ray_handles(cluster):
    c = Counter.remote()
    pool = zactor.ActorPool([c])
    pool.submit(lambda a, v: a.add.remote(v), 3)
    assert pool.get_next(timeout=30) == 3
    zactor.kill(c)
    with pytest.raises(zactor.ActorDiedError):
        ray.get(c.increment.remote())


# -- options ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, named",
    [
        ({"memory": 1 << 30}, "memory=1073741824"),
        ({"scheduling_strategy": "SPREAD"}, "scheduling_strategy='SPREAD'"),
        ({"runtime_env": {"pip": ["requests"]}}, "runtime_env="),
        ({"placement_group": object()}, "placement_group="),
        ({"concurrency_groups": {"io": 2}}, "concurrency_groups="),
    ],
)
def test_actor_options_zactor_lacks_raise_not_implemented(cluster, options, named):
    with pytest.raises(NotImplementedError, match=named):
        Counter.options(**options)
    with pytest.raises(NotImplementedError, match=named):
        ray.remote(**options)(Plain)


def test_actor_options_at_rays_defaults_are_accepted(cluster):
    c = Counter.options(
        memory=None,
        scheduling_strategy="DEFAULT",
        runtime_env=None,
        num_gpus=0,
        lifetime="non_detached",
        max_pending_calls=-1,
        enable_task_events=False,
    ).remote(1)
    assert ray.get(c.increment.remote()) == 2


def test_method_options(cluster):
    c = Counter.remote()
    with pytest.raises(NotImplementedError, match="num_returns=2"):
        c.increment.options(num_returns=2)
    with pytest.raises(NotImplementedError, match="concurrency_group='io'"):
        c.increment.options(concurrency_group="io")
    # num_returns=1 is what zactor does; a call's name only labels it in Ray's dashboard.
    assert ray.get(c.increment.options(num_returns=1, name="inc").remote()) == 1
    with pytest.raises(NotImplementedError, match="num_returns=3"):
        ray.method(num_returns=3)
    assert ray.method(num_returns=1)(len) is len


def test_translations():
    assert _options.actor_options({"num_gpus": 2, "resources": {"disk": 1}}) == {
        "resources": {"disk": 1, "GPU": 2}
    }
    assert _options.actor_options({"lifetime": "detached", "name": "x"}) == {
        "lifetime": "detached",
        "name": "x",
    }
    assert _options.init_options(None, {"num_cpus": 3, "num_gpus": 1}) == (
        None,
        {"num_workers": 3, "resources": {"GPU": 1}},
    )
    assert _options.init_options("10.0.0.5:6379", {})[0] == "tcp://10.0.0.5:6379"
    assert _options.init_options("auto", {"log_to_driver": False})[0] == "auto"
    assert _options.init_options("local", {})[0] is None
    with pytest.raises(NotImplementedError, match="Ray Client"):
        _options.init_options("ray://head:10001", {})
    with pytest.raises(NotImplementedError, match="local_mode=True"):
        _options.init_options(None, {"local_mode": True})
    with pytest.raises(ValueError, match="whole number"):
        _options.init_options(None, {"num_cpus": 1.5})
    with pytest.raises(NotImplementedError, match="max_calls=5"):
        _options.task_options({"max_calls": 5})
    assert _options.task_options({"num_gpus": 1, "name": "t", "max_retries": 2}) == {
        "resources": {"GPU": 1},
        "max_retries": 2,
    }


def test_gpu_ids_are_refused_with_a_reason(cluster):
    with pytest.raises(NotImplementedError, match="assigns no device ids"):
        ray.get_gpu_ids()


# -- init, shutdown, the automatic start (own clusters, in subprocesses) -------------------------

INIT_SCRIPT = textwrap.dedent(
    """
    import json
    import zactor.compat.ray as ray

    @ray.remote
    class Counter:
        def __init__(self):
            self.value = 0
        def increment(self):
            self.value += 1
            return self.value

    out = {"before": ray.is_initialized()}
    c = Counter.remote()                       # Ray starts a cluster on the first .remote()
    out["auto"] = [ray.is_initialized(), ray.get(c.increment.remote())]
    ray.shutdown()
    out["after_shutdown"] = ray.is_initialized()

    with ray.init(num_cpus=2, num_gpus=1, namespace="bank", log_to_driver=False,
                  include_dashboard=False) as context:
        out["context_is_dict"] = isinstance(context, dict)
        out["resources"] = ray.cluster_resources()
        out["namespace"] = ray.get_runtime_context().namespace
        gpu = Counter.options(num_gpus=1).remote()
        out["gpu_actor"] = ray.get(gpu.increment.remote())
        out["available"] = ray.available_resources()
        try:
            ray.init()
        except RuntimeError as exc:
            out["reinit"] = "already" in str(exc)
        ray.init(ignore_reinit_error=True)
    out["after_with"] = ray.is_initialized()
    try:
        ray.init(object_store_memory=10**9)
    except NotImplementedError as exc:
        out["refused"] = str(exc)
    out["after_refusal"] = ray.is_initialized()
    print("RESULT " + json.dumps(out))
    """
)


@pytest.mark.timeout(150)
def test_init_shutdown_and_the_automatic_start():
    proc = subprocess.run(
        [sys.executable, "-c", INIT_SCRIPT], capture_output=True, text=True, timeout=140
    )
    assert proc.returncode == 0, proc.stderr
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    out = json.loads(line[len("RESULT ") :])
    assert out["before"] is False
    assert out["auto"] == [True, 1]
    assert out["after_shutdown"] is False
    assert out["context_is_dict"] is True
    assert out["resources"] == {"CPU": 2.0, "GPU": 1.0}
    assert out["namespace"] == "bank"
    assert out["gpu_actor"] == 1
    assert out["available"]["GPU"] == 0.0
    assert out["reinit"] is True
    assert out["after_with"] is False
    assert "object_store_memory=1000000000" in out["refused"]
    assert "no object store" in out["refused"]
    assert out["after_refusal"] is False  # refused before anything started


# -- tasks (zactor.remote on a function) ---------------------------------------------------------


@needs_tasks
def test_remote_functions(cluster):
    @ray.remote
    def add(a, b=0):
        return a + b

    assert ray.get(add.remote(1, b=2)) == 3
    assert ray.get([add.remote(i) for i in range(3)]) == [0, 1, 2]
    ref = ray.put(10)
    assert ray.get(add.remote(ref, b=add.remote(1, 1))) == 12  # refs arrive as values
    assert ray.get(add.options(num_cpus=1, name="adder").remote(4)) == 4
    with pytest.raises(NotImplementedError, match="num_returns=2"):
        add.options(num_returns=2)
    with pytest.raises(TypeError, match=r"try 'add.remote\(\)'"):
        add(1)


@needs_tasks
def test_a_task_uses_an_actor_handle(cluster):
    @ray.remote
    def bump(counter, times):
        for _ in range(times):
            counter.increment.remote()
        return ray.get(counter.increment.remote())

    c = Counter.remote()
    assert ray.get(bump.remote(c, 4), timeout=60) == 5
