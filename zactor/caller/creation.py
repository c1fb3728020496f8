"""Creating an actor, in two steps any caller takes: what the head is asked to place
(:func:`creation_spec`, sent to ``Head.place``), then what the chosen worker is told
to build (:func:`start_actor`).

An unnamed actor is created without waiting for the head (:func:`create_unplaced`):
its id comes from a lease of ids this process holds (:class:`Creations`), its handle
returns at once, and its calls are held (``Recovery.placing``) until the head's
placement arrives; the placement's done-callback then sends the creation and, behind
it on the same connection, the held calls. Task runners (:mod:`zactor.caller.task`)
are placed from a done-callback too. A named actor waits for the head
(:func:`place_now`): its name may be taken, or ``get_if_exists`` may find another
actor, and either must be known when ``.remote()`` returns.
"""

from __future__ import annotations

import collections
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
#: Placements (``Head.place_many`` calls) a process keeps in flight at most, and the
#: most creations one of them carries (see :class:`Creations`).
PLACE_WINDOW = 4
PLACE_BATCH = 64
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
    ``actor_id``, ``address`` and ``checkpoint_key`` are used) to build the actor from
    ``blob``, the cloudpickle of ``(class, args, kwargs)``; a restartable actor's
    creation is also left with the head, which re-creates it."""
    creation = _creation(spec, options)
    creation["checkpoint_key"] = info["checkpoint_key"]
    # Same outbox as the calls that follow, so the worker sees the creation first.
    _service(info["address"], "create").tell(info["actor_id"], blob, creation)
    if spec["max_restarts"]:
        head.remember_creation.tell(info["actor_id"], blob, creation)  # to re-create it


def start_actors(head: ActorHandle, address: str, blob, spec, options, placed: list) -> None:
    """:func:`start_actor` for actors of one ``spec`` and ``blob`` placed on the worker at
    ``address``: ``placed`` is their ``[actor_id, checkpoint_key]``, told in one message."""
    creation = _creation(spec, options)
    _service(address, "create_many").tell(blob, creation, placed)
    if spec["max_restarts"]:
        for actor_id, key in placed:
            head.remember_creation.tell(actor_id, blob, dict(creation, checkpoint_key=key))


def _creation(spec: dict, options: dict) -> dict:
    """What the worker builds an actor of ``spec`` from, but its checkpoint key."""
    return dict(
        spec,
        checkpoint=options.get("checkpoint"),
        checkpoint_every=options.get("checkpoint_every") or 1,
        incarnation=0,
    )


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
    :class:`~zactor.errors.ActorCreationError` giving the head's reason. ``spec``
    is not changed (a class's creations share it).
    """
    ids = creations(runtime)
    actor_id = ids.take()
    # Held by its creation until the head has placed it: were its handle dropped first,
    # the release must not reach the head before the placement does (it would be lost).
    runtime.refs.acquire(actor_id)
    runtime.recovery.placing(actor_id)  # before the handle: its first call is held
    handle = handle_from_info(dict(spec, actor_id=actor_id, address=None))
    handle._target.created_here = True
    ids.place(spec, blob, options, actor_id)
    return handle


def _ask(runtime, head, spec, blob, options, deadline: float, pause: float) -> None:
    """Send ``Head.place`` for ``spec`` (one actor, its id leased); :func:`_placed`
    follows, on the reading thread."""
    future = head.place.remote(spec)
    future.add_done_callback(
        functools.partial(_placed, runtime, head, spec, blob, options, deadline, pause)
    )


def _placed(runtime, head, spec, blob, options, deadline, pause, future: Future) -> None:
    """The head answered the placement of one actor (:func:`_ask`)."""
    try:
        info = future.result()
    except Exception as exc:  # the head refused, or did not answer
        _refused(runtime, head, spec, blob, options, deadline, pause, exc)
    else:
        _start(
            runtime,
            head,
            spec,
            blob,
            options,
            info["address"],
            [[spec["actor_id"], info["checkpoint_key"]]],
        )


def _start(runtime, head, spec, blob, options, address: str, placed: list) -> None:
    """Start the actors ``placed`` (``[actor_id, checkpoint_key]``) at ``address``, then
    send the calls held for them, behind their creation on the same connection."""
    # Started even if every handle is gone already (the head retires it once it is
    # built): one the head placed that never starts would stay in its registry.
    if len(placed) == 1:
        actor_id, key = placed[0]
        start_actor(
            head,
            {"actor_id": actor_id, "address": address, "checkpoint_key": key},
            blob,
            spec,
            options,
        )
    else:
        start_actors(head, address, blob, spec, options, placed)
    recovery, refs = runtime.recovery, runtime.refs
    for actor_id, _key in placed:
        recovery.placed(actor_id, address)
        refs.release(actor_id)  # the creation's hold (create_unplaced): placed now


def _refused(runtime, head, spec, blob, options, deadline, pause, exc: BaseException) -> None:
    """The head did not place the actor ``spec`` names (``spec["actor_id"]``): ask again
    soon if a replacement worker is starting (:class:`WorkerStartingError`), else its
    calls fail with the head's reason."""
    actor_id = spec["actor_id"]
    if isinstance(exc, WorkerStartingError):
        if time.monotonic() + pause <= deadline:
            next_pause = min(2 * pause, PLACE_PAUSE_S[1])
            again = functools.partial(
                _ask, runtime, head, spec, blob, options, deadline, next_pause
            )
            runtime.call_later(pause, again)
            return
        reason = _gave_up(spec, exc)
    else:  # refused (resources, a lost lease) or the head is gone
        reason = str(exc.args[0]) if exc.args else repr(exc)  # the head's text, no traceback
    runtime.recovery.placement_failed(
        actor_id, f"actor {spec['class_name']}(id={actor_id}) could not be created: {reason}"
    )
    runtime.refs.release(actor_id)  # the creation's hold (create_unplaced): never placed


class Creations:
    """This process's creations without waiting for the head: the actor ids it leased
    (``Head.lease_actor_ids``), and its placements in flight.

    Ids: the next lease is asked for, without waiting, once half of the current one
    is used. Placements: a creation asks the head at once while fewer than
    :data:`PLACE_WINDOW` of this process's placements are in flight; creations made
    meanwhile wait for an answer and then go together, up to :data:`PLACE_BATCH` in
    one ``Head.place_many`` per class and arguments (Nagle's idea: a lone creation
    pays no delay, a burst goes in few messages, and the head, this process and the
    workers each work on a part of the burst at the same time).
    """

    def __init__(self, runtime, head: ActorHandle) -> None:
        self._runtime = runtime
        #: The head's registry, for this process's creations.
        self.head = head
        self._lock = threading.Lock()
        #: [next, end) ranges of unused ids, oldest first, and how many ids they hold.
        self._ranges: list[list[int]] = []
        self._left = 0
        self._size = LEASE_IDS[0]
        self._asking: Future | None = None
        #: Creations waiting to be placed: (spec, blob, options, actor_id), oldest first.
        self._waiting: collections.deque = collections.deque()
        self._in_flight = 0  # place_many calls not answered yet

    # -- ids -------------------------------------------------------------------------------

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
                    self._left -= 1
                    if self._asking is None and self._left < self._size // 2:
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
                self._left += size

    # -- placements ------------------------------------------------------------------------

    def place(self, spec: dict, blob: bytes, options: dict, actor_id: int) -> None:
        """Have the head place actor ``actor_id`` of ``spec`` (built from ``blob``); its
        creation and held calls follow the answer (see the class docstring)."""
        with self._lock:
            self._waiting.append((spec, blob, options, actor_id))
            if self._in_flight >= PLACE_WINDOW:
                return
            groups = self._take_locked()
        self._send(groups)

    def _take_locked(self) -> list:
        """The oldest :data:`PLACE_BATCH` waiting creations, in groups of one spec and blob."""
        groups: dict[tuple, tuple] = {}
        waiting = self._waiting
        for _ in range(min(len(waiting), PLACE_BATCH)):
            spec, blob, options, actor_id = waiting.popleft()
            key = (id(spec), id(blob))  # both held by the group: the ids stay theirs
            group = groups.get(key)
            if group is None:
                group = groups[key] = (spec, blob, options, [])
            group[3].append(actor_id)
        self._in_flight += len(groups)
        return list(groups.values())

    def _send(self, groups: list) -> None:
        deadline = time.monotonic() + PLACE_WAIT_S
        for spec, blob, options, ids in groups:
            future = self.head.place_many.remote(spec, ids)
            future.add_done_callback(
                functools.partial(self._placed, spec, blob, options, ids, deadline)
            )

    def _placed(self, spec, blob, options, ids: list, deadline: float, future: Future) -> None:
        """The head answered a ``place_many`` (on the reading thread)."""
        runtime, head = self._runtime, self.head
        try:
            try:
                answers = future.result()
            except Exception as exc:  # the head did not answer: none of them is placed
                answers = [exc] * len(ids)
            started: dict[str, list] = {}
            for actor_id, answer in zip(ids, answers):
                if isinstance(answer, BaseException):
                    refusal = answer
                else:
                    address, detail, starting = answer
                    if address is not None:
                        started.setdefault(address, []).append([actor_id, detail])
                        continue
                    refusal = (WorkerStartingError if starting else ClusterError)(detail)
                one = dict(spec, actor_id=actor_id)
                _refused(runtime, head, one, blob, options, deadline, PLACE_PAUSE_S[0], refusal)
            for address, placed in started.items():
                _start(runtime, head, spec, blob, options, address, placed)
        finally:
            with self._lock:
                self._in_flight -= 1
                more = self._waiting and self._in_flight < PLACE_WINDOW
                groups = self._take_locked() if more else []
            if groups:
                self._send(groups)


def creations(runtime) -> Creations:
    """This process's :class:`Creations` (made on first use)."""
    return runtime.made_once("creations", lambda: Creations(runtime, head_handle(runtime)))


#: Methods of each worker's service, by (address, name): one handle for many creations.
_services: dict[tuple, Any] = {}
#: Most methods :data:`_services` keeps (beyond, it starts again: dead workers' go too).
_SERVICES_KEPT = 512


def _service(address: str, name: str):
    """Method ``name`` of the service of the worker at ``address``, as an actor method."""
    method = _services.get((address, name))
    if method is None:
        if len(_services) >= _SERVICES_KEPT:
            _services.clear()
        method = _services[address, name] = getattr(worker_service_handle(address), name)
    return method


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
