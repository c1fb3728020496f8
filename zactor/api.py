"""The process-level API: joining a cluster, finding and ending actors.

Example::

    import zactor
    zactor.init()                     # an embedded cluster on this machine
    ...
    zactor.shutdown()                 # or let the interpreter exit
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass

from zactor import runtime as _runtime_mod
from zactor import spawn
from zactor.actor import ActorHandle, handle_from_info, head_handle, worker_service_handle
from zactor.errors import ClusterError
from zactor.runtime import Runtime
from zactor.transport import ipc_address, make_session_dir

#: How long ``init()`` waits for the embedded cluster's workers (seconds).
STARTUP_TIMEOUT_S = 60.0
#: How long ``shutdown()`` waits for the head to stop everything (seconds).
SHUTDOWN_TIMEOUT_S = 10.0


class _Session:
    """What ``init()`` started in this process, so ``shutdown()`` can undo it."""

    def __init__(self) -> None:
        self.runtime: Runtime | None = None
        self.head_process: subprocess.Popen | None = None
        self.session_dir: str | None = None
        self.lock = threading.Lock()


_session = _Session()


def init(
    address: str | None = None,
    *,
    num_workers: int | None = None,
    resources: dict | None = None,
    namespace: str | None = None,
    ignore_reinit_error: bool = False,
) -> dict:
    """Start an embedded cluster (``address=None``) or join a running one.

    ``num_workers`` worker processes are started (default: one per CPU). Calling
    ``init`` twice raises ``RuntimeError`` unless ``ignore_reinit_error=True``.
    Returns a description of the cluster (its workers).
    """
    with _session.lock:
        if _session.runtime is not None:
            if ignore_reinit_error:
                return _cluster_info()
            raise RuntimeError(
                "zactor.init() was already called in this process: call zactor.shutdown() "
                "first, or pass ignore_reinit_error=True"
            )
        if address is not None:
            raise ClusterError(
                f"joining a running cluster at {address!r} is not available yet: "
                "call zactor.init() without an address for an embedded cluster"
            )
        if num_workers is None:
            num_workers = os.cpu_count() or 1
        if num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, got {num_workers}")
        session_dir = make_session_dir()
        head_address = ipc_address(session_dir, "head.sock")
        import json

        head_process = spawn.start(
            "zactor.head",
            [
                "--session-dir",
                session_dir,
                "--address",
                head_address,
                "--num-workers",
                str(num_workers),
                "--resources",
                json.dumps(resources or {}),
                "--watch-parent",
            ],
        )
        runtime = Runtime(
            ipc_address(session_dir, f"driver-{os.getpid()}.sock"),
            role="driver",
            head_address=head_address,
        )
        runtime.namespace = namespace
        _session.runtime, _session.head_process, _session.session_dir = (
            runtime,
            head_process,
            session_dir,
        )
        _runtime_mod.set_current(runtime)
    try:
        info = _wait_for_workers(num_workers)
    except BaseException:
        shutdown()
        raise
    return info


def _wait_for_workers(count: int) -> dict:
    head = head_handle()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if _session.head_process.poll() is not None:
            raise ClusterError(
                f"the zactor head process exited with code {_session.head_process.returncode} "
                "during start-up; run with ZACTOR_LOG_LEVEL=INFO to see why"
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ClusterError(
                f"only part of the {count} zactor workers started within {STARTUP_TIMEOUT_S} s"
            )
        try:
            info = head.cluster_info.remote().result(timeout=min(1.0, remaining))
        except TimeoutError:
            continue
        if len(info["workers"]) >= count:
            return info
        time.sleep(0.005)


def _cluster_info() -> dict:
    return head_handle().cluster_info.remote().result(timeout=SHUTDOWN_TIMEOUT_S)


def shutdown() -> None:
    """Stop what ``init()`` started: actors, workers, head, sockets, threads.

    Safe to call twice, and called at interpreter exit.
    """
    with _session.lock:
        runtime, head_process, session_dir = (
            _session.runtime,
            _session.head_process,
            _session.session_dir,
        )
        _session.runtime = _session.head_process = _session.session_dir = None
        if runtime is None:
            return
        if head_process is not None and head_process.poll() is None:
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
        if session_dir is not None:
            shutil.rmtree(session_dir, ignore_errors=True)


atexit.register(shutdown)


def is_initialized() -> bool:
    """True between ``init()`` and ``shutdown()``."""
    return _session.runtime is not None


def get_actor(name: str, namespace: str | None = None) -> ActorHandle:
    """The handle of the actor named ``name``; ``ValueError`` naming it if there is none."""
    runtime = _runtime_mod.current()
    if namespace is None:
        namespace = getattr(runtime, "namespace", None)
    info = head_handle(runtime).lookup.remote(name, namespace).result(timeout=SHUTDOWN_TIMEOUT_S)
    if info is None:
        raise ValueError(
            f"no actor named {name!r} in namespace {namespace!r}: create it with "
            f"Cls.options(name={name!r}).remote(...) first, or check the namespace"
        )
    return handle_from_info(info)


def kill(handle: ActorHandle, *, no_restart: bool = True) -> None:
    """End the actor now; its queued and later calls raise ``ActorDiedError``.

    A method already running cannot be interrupted (actors share processes);
    its result is discarded.
    """
    if not isinstance(handle, ActorHandle):
        raise TypeError(f"zactor.kill takes an ActorHandle, got {type(handle).__name__}")
    reason = (
        f"actor {handle._class_name}(id={handle._actor_id}) was killed by zactor.kill(); "
        "no restart is under way"
    )
    worker_service_handle(handle._address).kill.remote(handle._actor_id, reason).result(
        timeout=SHUTDOWN_TIMEOUT_S
    )


def exit_actor() -> None:
    """Inside an actor method: end this actor once the current call returns.

    The current call returns ``None``; later calls raise ``ActorDiedError``.
    """
    from zactor.worker import ActorExit

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

    def get_actor_id(self) -> int | None:
        """Ray-style accessor for :attr:`actor_id`."""
        return self.actor_id


def get_runtime_context() -> RuntimeContext:
    """The node, worker and (inside an actor) the actor running this code.

    ``current_actor`` is a handle to the actor itself, inside an actor method.
    """
    runtime = _runtime_mod.current()
    actor = _current_hosted_actor()
    return RuntimeContext(
        node_id=runtime.node_id,
        worker_id=runtime.worker_id,
        actor_id=None if actor is None else actor.actor_id,
        current_actor=None if actor is None else actor.handle,
        address=runtime.address,
    )
