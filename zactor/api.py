"""The process-level API: starting or joining a cluster, finding and ending actors.

Example::

    import zactor
    zactor.init()                     # an embedded cluster on this machine
    ...
    zactor.shutdown()                 # or let the interpreter exit

    zactor.init(address="auto")       # join the cluster `zactor start --head` runs here
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass

from zactor.caller.handle import ActorHandle, handle_from_info, head_handle
from zactor.caller.head_watch import HeadWatch
from zactor.caller.options import check_options
from zactor.control import cluster, spawn
from zactor.endpoint import runtime as _runtime_mod
from zactor.endpoint.runtime import Runtime, anonymous_namespace
from zactor.endpoint.spinning import spin_budget_ns
from zactor.errors import ActorDiedError, ActorExit, ClusterError
from zactor.transport import (
    ClusterKeys,
    ipc_address,
    make_session_dir,
    same_host_lane_enabled,
    shared_memory,
    socket_file,
)
from zactor.transport.lane import lane_path
from zactor.wire import limits

#: How long ``init()`` waits for the embedded cluster's workers (seconds).
STARTUP_TIMEOUT_S = 60.0
#: How long ``shutdown()`` waits for the head to stop everything (seconds).
SHUTDOWN_TIMEOUT_S = 10.0
#: How long ``init(address=...)`` waits for a running cluster's head to answer (seconds).
JOIN_TIMEOUT_S = 15.0
#: How long a joined driver's ``shutdown()`` waits for the head to note its leaving: short,
#: because a head that stopped never answers, and a driver's exit must not hang on it.
GOODBYE_TIMEOUT_S = 2.0
#: How often a driver that joined a cluster on its machine tells the head it runs, and
#: learns the head does (seconds; a head on another machine says how often).
HEARTBEAT_S = 1.0


class _Session:
    """What ``init()`` started in this process, so ``shutdown()`` can undo it."""

    def __init__(self) -> None:
        self.runtime: Runtime | None = None
        self.head_process: subprocess.Popen | None = None
        #: The embedded cluster's session dir, or a joined driver's own inbox dir.
        self.session_dir: str | None = None
        #: True when the cluster is a standing one this process joined (not ours to stop).
        self.joined = False
        #: True once the head knows this driver (so shutdown() must say goodbye).
        self.registered = False
        self.lock = threading.Lock()


_session = _Session()


def init(
    address: str | None = None,
    *,
    num_workers: int | None = None,
    resources: dict | None = None,
    namespace: str | None = None,
    ignore_reinit_error: bool = False,
    max_message_bytes: int | None = None,
    metrics_port: int | None = None,
    keys: str | None = None,
    host: str | None = None,
) -> dict:
    """Start an embedded cluster, or join a running one; returns its workers.

    - ``address=None``: start an embedded cluster, a head and ``num_workers``
      worker processes (default: one per CPU) sharing the node's custom
      ``resources`` (``{"GPU": 2}``: see docs/lifetime.md), that
      :func:`shutdown` (or the interpreter's exit) stops.
    - ``address="auto"``: join the cluster ``zactor start --head`` runs on this
      machine, found through its cluster file (``$ZACTOR_CLUSTER_DIR``, see
      docs/cli.md); a ``ClusterError`` saying how to start one if none runs.
    - ``address="tcp://host:port"`` (or the ``ipc://`` address ``zactor status``
      shows): join the cluster whose head listens there.

    ``namespace``: where the names this driver's actors (and the actors they
    create) take and look up live. Without one the driver gets a fresh
    anonymous namespace of its own, as a Ray job does, so names never collide
    with another driver's; drivers that share named actors pass the same
    ``namespace`` (see docs/lifetime.md). ``get_runtime_context().namespace``
    tells which.

    ``keys``: the path of the cluster's driver key bundle, for a cluster whose
    head listens on tcp (every tcp socket speaks CURVE). Without it a driver
    uses ``$ZACTOR_CLUSTER_KEYS``, else the bundle ``zactor start --head``
    wrote on this machine (docs/cluster.md, "Keys and security").

    ``max_message_bytes`` (default 1 GiB, or ``$ZACTOR_MAX_MESSAGE_BYTES``):
    the largest frame a process of the cluster accepts; a call or reply that
    would not fit raises ``ValueError`` before it is sent. Give every process
    of a cluster the same value (see docs/limits.md).

    ``metrics_port``: the embedded cluster's head serves Prometheus metrics
    (``/metrics``) and a live status page (``/``) over HTTP on that port of
    127.0.0.1 (0: any free port); the returned dict's ``metrics_url`` says
    where (see docs/observability.md). A standing cluster gets them from
    ``zactor start --head --metrics-port P``.

    ``host`` (joining a cluster only): the address this driver's inbox listens
    on, a tcp port of it, where the workers running its calls send the
    replies. By default a driver on the head's machine uses a socket file and
    one elsewhere this machine's address on the route to the head; pass
    ``host`` when the workers must reach the driver by another address (a
    machine with several interfaces), or to keep a driver on the head's
    machine on tcp, as the node agents' ``zactor start --address --host``
    does for workers (``zactor bench --nodes`` measures calls that way).

    A joined cluster keeps running after :func:`shutdown`, which only
    disconnects (and ends the actors this process owned that are not
    detached). Calling ``init`` twice raises ``RuntimeError`` unless
    ``ignore_reinit_error=True``.
    """
    check_options({"namespace": namespace})  # a bad one fails before anything starts
    spin_budget_ns()  # so does a bad $ZACTOR_SPIN_US, which every process reads
    if host is not None:
        if address is None:
            raise ValueError(
                "host only applies to a driver joining a cluster (init(address=..., "
                "host=...)); an embedded cluster's processes talk over socket files"
            )
        cluster.check_listen_host(host, "host")
    with _session.lock:
        if _session.runtime is not None:
            if ignore_reinit_error:
                return _cluster_info()
            raise RuntimeError(
                "zactor.init() was already called in this process: call zactor.shutdown() "
                "first, or pass ignore_reinit_error=True"
            )
        if max_message_bytes is not None:
            limits.set_max_message_bytes(max_message_bytes)  # inherited by the cluster
        if address is None:
            if keys is not None:
                raise ValueError(
                    "keys only apply when joining a cluster (address='auto' or "
                    "'tcp://HOST:PORT'); an embedded cluster talks over socket files and "
                    "needs none: leave keys out"
                )
            if num_workers is None:
                num_workers = os.cpu_count() or 1
            if num_workers < 1:
                raise ValueError(f"num_workers must be at least 1, got {num_workers}")
            if metrics_port is not None and not 0 <= metrics_port <= 65535:
                raise ValueError(
                    f"metrics_port must be between 0 and 65535 (0: any free port), "
                    f"got {metrics_port}"
                )
            _start_embedded(num_workers, resources, metrics_port)
        else:
            if num_workers is not None or resources is not None or metrics_port is not None:
                raise ValueError(
                    "num_workers, resources and metrics_port only apply to a cluster that "
                    f"init() starts; the cluster at {address!r} has its own (see `zactor "
                    "start --head --num-workers N --resources JSON --metrics-port P`): leave "
                    "them out to join it"
                )
            head_address = cluster.resolve_address(address)
            cluster.probe_head(head_address)
            join_keys = cluster.driver_keys(head_address, keys)
            cluster.check_keys(head_address, join_keys)
            _join(head_address, join_keys, host)
        runtime = _session.runtime
        runtime.namespace = namespace if namespace is not None else anonymous_namespace()
        _runtime_mod.set_current(runtime)
    try:
        info = _wait_for_head(runtime) if _session.joined else _wait_for_workers(num_workers)
        reply = (
            head_handle(runtime)
            .register_driver.remote(runtime.address, os.getpid(), cluster.node_identity())
            .result(timeout=JOIN_TIMEOUT_S)
        )
        runtime.node_id = reply["node_id"]
        _session.registered = True
        if _session.joined:  # a standing cluster's head may stop while we run
            HeadWatch(runtime, reply.get("heartbeat_s") or HEARTBEAT_S).start()
    except BaseException:
        shutdown()
        raise
    return info


def _start_embedded(num_workers: int, resources: dict | None, metrics_port: int | None) -> None:
    """Start the head of an embedded cluster (it starts the workers); connect to it."""
    session_dir = make_session_dir()
    head_address = ipc_address(session_dir, "head.sock")
    head_process = spawn.start_head(
        session_dir,
        head_address,
        num_workers,
        resources,
        watch_parent=True,
        metrics_port=metrics_port,
    )
    # A peer's connection keeps the road it took first (zactor.transport.lane): wait for
    # the head's lane, or this driver's calls to it would go over ZeroMQ for good.
    lane = lane_path(head_address) if same_host_lane_enabled() else None
    if lane is not None:
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        while not os.path.exists(lane) and head_process.poll() is None:
            if time.monotonic() > deadline:
                break  # the head is slow: ZeroMQ gets there too, and _wait_for_workers says
            time.sleep(0.005)
    runtime = Runtime(
        ipc_address(session_dir, f"driver-{os.getpid()}.sock"),
        role="driver",
        head_address=head_address,
    )
    _session.runtime, _session.head_process, _session.session_dir = (
        runtime,
        head_process,
        session_dir,
    )


def _join(head_address: str, keys: ClusterKeys | None, host: str | None = None) -> None:
    """Connect to a running cluster's head, from an inbox of our own its workers can reach
    (a tcp port on ``host`` if given, see :func:`init`)."""
    address, inbox_dir = cluster.driver_inbox(head_address, host)
    try:
        runtime = Runtime(address, role="driver", head_address=head_address, keys=keys)
    except BaseException:
        if inbox_dir is not None:
            shutil.rmtree(inbox_dir, ignore_errors=True)
        raise
    _session.runtime, _session.session_dir, _session.joined = runtime, inbox_dir, True


def _wait_for_head(runtime: Runtime) -> dict:
    """The joined cluster's description, once its head answers."""
    try:
        return head_handle(runtime).cluster_info.remote().result(timeout=JOIN_TIMEOUT_S)
    except TimeoutError:
        raise ClusterError(
            f"no zactor head answered at {runtime.head_address} within {JOIN_TIMEOUT_S:.0f} s: "
            "check the address (`zactor status` on the cluster's machine prints it), or start "
            f"a cluster with `zactor start --head`{cluster.no_answer_hint(runtime.head_address)}"
        ) from None


def _wait_for_workers(count: int) -> dict:
    process = _session.head_process
    return cluster.wait_for_workers(
        head_handle(),
        process,
        count,
        time.monotonic() + STARTUP_TIMEOUT_S,
        exited=lambda: ClusterError(
            f"the zactor head process exited with code {process.returncode} "
            "during start-up: its message on this process's standard error says why "
            "(ZACTOR_LOG_LEVEL=INFO makes it say more)"
        ),
        late=lambda: ClusterError(
            f"only part of the {count} zactor workers started within {STARTUP_TIMEOUT_S} s"
        ),
    )


def _cluster_info() -> dict:
    return head_handle().cluster_info.remote().result(timeout=SHUTDOWN_TIMEOUT_S)


def shutdown() -> None:
    """Undo what ``init()`` did; leaves no process, socket file or thread behind.

    An embedded cluster is stopped: actors, workers, head. A joined cluster
    keeps running: this process only disconnects, and the head ends the
    actors it owned that are not detached. Safe to call twice, and called at
    interpreter exit.
    """
    with _session.lock:
        runtime, head_process, session_dir = (
            _session.runtime,
            _session.head_process,
            _session.session_dir,
        )
        joined, registered = _session.joined, _session.registered
        _session.runtime = _session.head_process = _session.session_dir = None
        _session.joined = _session.registered = False
        if runtime is None:
            return
        if joined:
            if registered and _head_may_be_up(runtime.head_address):
                try:
                    head_handle(runtime).driver_exited.remote(runtime.address).result(
                        timeout=GOODBYE_TIMEOUT_S
                    )
                except Exception:  # the cluster stopped or is unreachable: nobody to tell
                    pass
        elif head_process is not None and head_process.poll() is None:
            try:
                head_handle(runtime).shutdown.tell()
                runtime.flush()
            except Exception:
                pass
            try:
                head_process.wait(timeout=SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                head_process.kill()
                head_process.wait()
        _runtime_mod.set_current(None)
        runtime.close()
        if not joined:  # the cluster was ours: even a killed head leaves no segment behind
            shared_memory.sweep(runtime.head_address)
        if session_dir is not None:
            shutil.rmtree(session_dir, ignore_errors=True)


def _head_may_be_up(head_address: str) -> bool:
    """False when the head's socket file is gone (a stopped cluster): no goodbye to wait on."""
    path = socket_file(head_address)
    return path is None or os.path.exists(path)


atexit.register(shutdown)


def is_initialized() -> bool:
    """True between ``init()`` and ``shutdown()``."""
    return _session.runtime is not None


def get_actor(name: str, namespace: str | None = None) -> ActorHandle:
    """The handle of the actor named ``name``; ``ValueError`` naming it if there is none.

    Without ``namespace``, the name is looked up in this driver's namespace, or
    inside an actor in the namespace of the driver that created the actor (as
    in Ray). An actor another driver created is found only in an explicit
    namespace both use: ``get_actor(name, namespace="bank")``.
    """
    runtime = _runtime_mod.current()
    if namespace is None:
        namespace = runtime.default_namespace()
    info = (
        head_handle(runtime)
        .lookup.remote(name, namespace, runtime.address)
        .result(timeout=SHUTDOWN_TIMEOUT_S)
    )
    if info is None:
        if namespace is None:  # a worker's thread outside any actor's call
            raise ValueError(
                f"no actor named {name!r}: this thread runs no actor's call, so it has no "
                "namespace to look names up in; pass get_actor(name, namespace=...), or "
                "look the name up inside an actor method"
            )
        raise ValueError(
            f"no actor named {name!r} in namespace {namespace!r}: create it with "
            f"Cls.options(name={name!r}).remote(...) first, or check the namespace (a "
            "driver that gives none has an anonymous one of its own, so an actor another "
            "driver created needs an explicit namespace in both: see docs/lifetime.md)"
        )
    return handle_from_info(info)


def list_named_actors(all_namespaces: bool = False) -> list:
    """The names of the live named actors in this driver's namespace (inside an
    actor, its driver's: see :func:`get_actor`), as Ray's
    ``ray.util.list_named_actors``; with ``all_namespaces=True``, a
    ``{"name": ..., "namespace": ...}`` dict for every named actor of the cluster.

    Example::

        Counter.options(name="hits").remote()
        zactor.list_named_actors()   # ["hits"]
    """
    runtime = _runtime_mod.current()
    return (
        head_handle(runtime)
        .list_named.remote(runtime.default_namespace(), bool(all_namespaces))
        .result(timeout=SHUTDOWN_TIMEOUT_S)
    )


def cluster_resources() -> dict:
    """Every resource of the cluster: ``{"CPU": workers, "GPU": ..., ...}`` (as Ray's).

    Each worker process counts as one CPU; custom resources are the nodes'
    (``zactor.init(resources=...)``, ``zactor start --head --resources``).
    """
    return _resources()["total"]


def available_resources() -> dict:
    """The resources not held by actors now (``num_cpus``, ``resources`` options)."""
    return _resources()["available"]


def _resources() -> dict:
    runtime = _runtime_mod.current()
    return head_handle(runtime).resources.remote().result(timeout=SHUTDOWN_TIMEOUT_S)


def kill(handle: ActorHandle, *, no_restart: bool = True) -> None:
    """End the actor now, as ``ray.kill`` does.

    When this returns, the call running at that moment and the calls queued
    behind it have failed with ``ActorDiedError`` ("killed by zactor.kill"), in
    every process that made them; later calls fail the same way.

    The running method is interrupted where Python allows: an exception is
    raised in its thread at its next bytecode, so a loop in Python code stops.
    Its worker process hosts other actors and goes on. Not interrupted: a call
    blocked in C (``time.sleep``, I/O, a numpy kernel) finishes that first; a
    call waiting inside zactor (``zactor.get``) and a threaded actor's calls run
    to their end. Their results are discarded. An async actor's coroutines are
    cancelled.

    With ``no_restart=False``, an actor created with ``max_restarts`` comes
    back (its constructor runs again, or its checkpoint is restored) and
    existing handles keep working; calls made afterwards wait for the restart,
    and the calls in flight are sent again to the new incarnation if their
    ``max_task_retries`` allows (as after a worker's death), else fail.

    To let an actor finish the calls already sent to it first, call
    ``handle.__zactor_terminate__.remote()`` instead (docs/lifetime.md).
    """
    if not isinstance(handle, ActorHandle):
        raise ValueError(
            f"zactor.kill needs an actor handle (what Cls.remote() or zactor.get_actor() "
            f"returns), got {type(handle).__name__} {handle!r}"
        )
    runtime = _runtime_mod.current()
    try:
        # Created a moment ago without waiting for the head: its creation must be on its
        # way to the worker before the head's kill follows it.
        handle._target.placed()
    except ActorDiedError:  # never created: nothing to kill
        return
    head_handle(runtime).kill_actor.remote(handle._actor_id, no_restart).result(
        timeout=SHUTDOWN_TIMEOUT_S
    )


def exit_actor() -> None:
    """Inside an actor method: end this actor once the current call returns.

    As in Ray, the caller of the current call gets ``ActorDiedError`` (the
    actor is gone, not the call's result), and so do the calls queued behind
    it and every later call. The actor does not restart; its
    ``__zactor_exit__`` hook runs (docs/lifetime.md).
    """
    if _current_hosted_actor() is None:
        raise RuntimeError("zactor.exit_actor() can only be called inside an actor method")
    raise ActorExit()


def _current_hosted_actor():
    runtime = _runtime_mod._current
    host = getattr(getattr(runtime, "call_handler", None), "__self__", None)
    return None if host is None else host.current_actor()


@dataclass(frozen=True)
class RuntimeContext:
    """Where the calling code runs (see :func:`get_runtime_context`)."""

    node_id: str
    worker_id: str
    actor_id: int | None
    current_actor: ActorHandle | None
    address: str
    #: The namespace names mean here: the driver's (an anonymous one unless
    #: ``init(namespace=...)`` named it), or inside an actor its driver's.
    namespace: str | None = None

    def get_actor_id(self) -> int | None:
        """Ray-style accessor for :attr:`actor_id`."""
        return self.actor_id


def get_runtime_context() -> RuntimeContext:
    """The node, worker and (inside an actor) the actor running this code.

    ``current_actor`` is a handle to the actor itself, inside an actor method.
    ``namespace`` is where names given without one live (see :func:`init`).
    """
    runtime = _runtime_mod.current()
    actor = _current_hosted_actor()
    return RuntimeContext(
        node_id=runtime.node_id,
        worker_id=runtime.worker_id,
        actor_id=None if actor is None else actor.actor_id,
        current_actor=None if actor is None else actor.self_handle(),
        address=runtime.address,
        namespace=runtime.default_namespace(),
    )
