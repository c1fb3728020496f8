"""Creating an actor, in two steps any caller takes: what the head is asked to place
(:func:`creation_spec`, sent to ``Head.place``), then what the chosen worker is told
to build (:func:`start_actor`).

An unnamed actor is created without waiting for the head (:func:`create_unplaced`):
its id comes from a lease of ids this process holds (:class:`IdLease`), its handle
returns at once, and its calls are held (``Recovery.placing``) until the head's
placement arrives; the placement's done-callback then sends the creation and, behind
it on the same connection, the held calls. Task runners (:mod:`zactor.caller.task`)
are placed from a done-callback too. A named actor waits for the head
(:func:`place_now`): its name may be taken, or ``get_if_exists`` may find another
actor, and either must be known when ``.remote()`` returns.
"""

from __future__ import annotations

import functools
import importlib
import threading
import time
from typing import Any

import cloudpickle

from zactor.caller.future import Future
from zactor.caller.handle import (
    ActorHandle,
    handle_from_info,
    head_handle,
    worker_service_handle,
)
from zactor.caller.options import DEFAULT_MAX_PENDING_CALLS, check_demand
from zactor.errors import ClusterError, WorkerStartingError

#: How long a caller waits for the head to answer a placement or a query (seconds).
CONTROL_TIMEOUT_S = 60.0
#: How long creating an actor waits, in all, for a dead worker's replacement
#: (seconds). Longer than the head's own limit on a replacement's start
#: (``zactor.control.supervisor.WORKER_START_TIMEOUT_S``), so that the head's
#: error, which names the worker, comes first; this one holds if workers keep dying.
PLACE_WAIT_S = 90.0
#: Pauses between asking the head again while a replacement worker starts (seconds):
#: the first, and the most (the pause doubles). A worker starts in a fraction of a second.
PLACE_PAUSE_S = (0.005, 0.05)
#: Ids a process leases from the head at first, and at most: each lease doubles the
#: last, so that a process creating many actors asks rarely, and one creating few
#: leaves few ids unused.
LEASE_IDS = (64, 4096)


def creation_spec(
    class_name: str, methods, options: dict, runtime, method_options: dict | None = None
) -> dict:
    """What ``Head.place`` needs to place an actor of ``class_name`` with ``options``
    (checked already) for the process of ``runtime``; :func:`start_actor` sends it on."""
    num_cpus, resources = check_demand(options.get("num_cpus"), options.get("resources"))
    return {
        "class_name": class_name,
        "methods": list(methods),
        "name": options.get("name"),
        "namespace": options.get("namespace") or runtime.default_namespace(),
        "job_namespace": runtime.default_namespace(),  # names in its calls mean this one
        "get_if_exists": bool(options.get("get_if_exists", False)),
        "lifetime": options.get("lifetime"),
        "num_cpus": num_cpus,
        "resources": resources,
        "max_concurrency": options.get("max_concurrency"),
        "max_pending_calls": options.get("max_pending_calls") or DEFAULT_MAX_PENDING_CALLS,
        "max_restarts": options.get("max_restarts") or 0,
        "max_task_retries": options.get("max_task_retries") or 0,
        # Pickled: the head keeps it for handles without importing the user's classes.
        "method_options": cloudpickle.dumps(method_options) if method_options else None,
        "checkpoint": options.get("checkpoint") is not None,
        "owner": runtime.address,
    }


def start_actor(head: ActorHandle, info: dict, blob: bytes, spec: dict, options: dict) -> None:
    """Tell the worker the head chose (``info``, ``Head.place``'s answer to ``spec``: its
    ``actor_id``, ``address`` and ``checkpoint_key`` are used) to
    build the actor from ``blob``, the cloudpickle of ``(class, args, kwargs)``; a
    restartable actor's creation is also left with the head, which re-creates it."""
    creation = dict(
        spec,
        checkpoint=options.get("checkpoint"),
        checkpoint_every=options.get("checkpoint_every") or 1,
        checkpoint_key=info["checkpoint_key"],
        incarnation=0,
    )
    # Same outbox as the calls that follow, so the worker sees the creation first;
    # sent now, not batched, so it is on its way before the handle can reach
    # another process whose calls would otherwise overtake it.
    _service(info["address"]).tell(info["actor_id"], blob, creation)
    if spec["max_restarts"]:
        head.remember_creation.tell(info["actor_id"], blob, creation)  # to re-create it


# -- placing ------------------------------------------------------------------------------


def place_now(head: ActorHandle, spec: dict) -> dict:
    """The head's placement of a new actor (``Head.place``), waited for; asked again
    while the head answers that no live worker can take it but a replacement that
    could is starting (a worker died a moment ago): creating the actor waits for it."""
    # The head cannot hold its answer back (it runs one call at a time, and the
    # replacement's registration is one of them), so the caller asks again.
    deadline = time.monotonic() + PLACE_WAIT_S
    pause = PLACE_PAUSE_S[0]
    while True:
        try:
            return head.place.remote(spec).result(timeout=CONTROL_TIMEOUT_S)
        except WorkerStartingError as exc:
            if time.monotonic() + pause > deadline:
                raise ClusterError(_gave_up(spec, exc)) from None
        time.sleep(pause)
        pause = min(2 * pause, PLACE_PAUSE_S[1])


def _gave_up(spec: dict, exc: BaseException) -> str:
    return (
        f"actor {spec['class_name']} could not be placed within {PLACE_WAIT_S:.0f} s, as "
        f"workers kept dying and being replaced ({exc.args[0] if exc.args else exc}); the "
        "cluster's output says why its workers die"
    )


def create_unplaced(runtime, spec: dict, blob: bytes, options: dict) -> ActorHandle:
    """Create the unnamed actor ``spec`` describes (``blob``: its pickled class and
    arguments) without waiting for the head: its handle, at once.

    The actor gets an id of this process's lease; calls to it are held until the
    head's placement arrives, then go out behind the creation, in the order they
    were made. If the head cannot place it, they fail (and later ones too) with
    :class:`~zactor.errors.ActorDiedError` giving the head's reason.
    """
    ids = lease(runtime)
    head = ids.head
    actor_id = ids.take()
    spec["actor_id"] = actor_id
    runtime.recovery.placing(actor_id)  # before the handle: its first call is held
    handle = handle_from_info(dict(spec, address=None))
    _ask(runtime, head, spec, blob, options, time.monotonic() + PLACE_WAIT_S, PLACE_PAUSE_S[0])
    return handle


def _ask(runtime, head, spec, blob, options, deadline: float, pause: float) -> None:
    """Send ``Head.place`` for ``spec``; :func:`_placed` follows, on the reading thread."""
    future = head.place.remote(spec)
    future.add_done_callback(
        functools.partial(_placed, runtime, head, spec, blob, options, deadline, pause)
    )


def _placed(runtime, head, spec, blob, options, deadline, pause, future: Future) -> None:
    """The head answered the placement of an actor :func:`create_unplaced` made."""
    actor_id = spec["actor_id"]
    try:
        info = future.result()
    except WorkerStartingError as exc:  # a replacement worker starts: ask again soon
        if time.monotonic() + pause <= deadline:
            again = functools.partial(
                _ask, runtime, head, spec, blob, options, deadline, min(2 * pause, PLACE_PAUSE_S[1])
            )
            runtime.call_later(pause, again)
            return
        reason = _gave_up(spec, exc)
    except Exception as exc:  # refused (resources, a lost lease) or the head is gone
        reason = str(exc.args[0]) if exc.args else repr(exc)  # the head's text, no traceback
    else:
        # Started even if every handle is gone already (the head retires it once it is
        # built): one the head placed that never starts would stay in its registry.
        start_actor(head, info, blob, spec, options)
        runtime.recovery.placed(actor_id, info["address"])
        return
    runtime.recovery.placement_failed(
        actor_id, f"actor {spec['class_name']}(id={actor_id}) could not be created: {reason}"
    )


class IdLease:
    """Actor ids this process leased from the head (``Head.lease_actor_ids``), so that
    it names new actors without asking. The next lease is asked for, without waiting,
    once half of the current one is used."""

    def __init__(self, runtime, head: ActorHandle) -> None:
        self._runtime = runtime
        #: The head's registry, for this process's creations too.
        self.head = head
        self._lock = threading.Lock()
        #: [next, end) ranges of unused ids, oldest first.
        self._ranges: list[list[int]] = []
        self._size = LEASE_IDS[0]
        self._asking: Future | None = None

    def take(self) -> int:
        """An unused actor id (waits for the head only when the lease ran out)."""
        while True:
            with self._lock:
                ranges = self._ranges
                if ranges:
                    current = ranges[0]
                    actor_id = current[0]
                    current[0] += 1
                    if current[0] == current[1]:
                        del ranges[0]
                    if self._asking is None and sum(e - n for n, e in ranges) < self._size // 2:
                        self._ask_locked()
                    return actor_id
                asking = self._asking or self._ask_locked()
            asking.result(timeout=CONTROL_TIMEOUT_S)  # raises what the head raised

    def _ask_locked(self) -> Future:
        self._size = min(2 * self._size, LEASE_IDS[1]) if self._ranges else self._size
        size = self._size
        self._asking = future = self.head.lease_actor_ids.remote(size)
        future.add_done_callback(functools.partial(self._leased, size))
        return future

    def _leased(self, size: int, future: Future) -> None:
        try:
            first = future.result()
        except Exception:  # the waiting take() raises it; a later take() asks again
            first = None
        with self._lock:
            self._asking = None
            if first is not None:
                self._ranges.append([first, first + size])


_lease_lock = threading.Lock()


def lease(runtime) -> IdLease:
    """This process's :class:`IdLease` (made on first use)."""
    ids = runtime.actor_ids
    if ids is None:
        with _lease_lock:
            ids = runtime.actor_ids
            if ids is None:
                ids = runtime.actor_ids = IdLease(runtime, head_handle(runtime))
    return ids


#: ``create`` of each worker's service, by address: one handle for a burst of creations.
_services: dict[str, Any] = {}
#: Most workers :data:`_services` keeps (beyond, it starts again: dead workers' go too).
_SERVICES_KEPT = 256


def _service(address: str):
    """``WorkerService.create`` of the worker at ``address``, as an actor method."""
    create = _services.get(address)
    if create is None:
        if len(_services) >= _SERVICES_KEPT:
            _services.clear()
        create = _services[address] = worker_service_handle(address).create
    return create


def lookup(module: Any, qualname: str) -> Any:
    """The object named ``qualname`` (dotted) in ``module``, or None."""
    obj = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj


def import_by_name(module: str, qualname: str) -> Any:
    """Import ``module`` and return its object ``qualname``: how a class or function
    that its module names travels by reference (see ``ActorClass.__reduce__``)."""
    return lookup(importlib.import_module(module), qualname)


class ByName:
    """Pickles as a reference to ``module.qualname``, which unpickles as that object:
    how a caller ships a class of a layer it must not import (the task runner)."""

    __slots__ = ("module", "qualname")

    def __init__(self, module: str, qualname: str) -> None:
        self.module = module
        self.qualname = qualname

    def __reduce__(self):
        return (import_by_name, (self.module, self.qualname))
