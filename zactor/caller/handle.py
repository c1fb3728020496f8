"""Handles and methods: how a caller reaches one actor.

Example::

    c = Counter.remote(10)            # an ActorHandle, at once
    zactor.get(c.increment.remote())  # 11
    c.increment.tell()                # one-way: no reply

A handle keeps no public attribute of its own, so every name a user's class
defines is a method of the handle (``h.actor_id.remote()`` calls the actor's
``actor_id`` method). Its actor id is ``handle._actor_id``, as in Ray.
"""

from __future__ import annotations

from time import monotonic as _monotonic
from typing import Any

import cloudpickle

from zactor.caller.future import CallGate, Future, Resend
from zactor.caller.options import DEFAULT_MAX_PENDING_CALLS, check_method_options
from zactor.endpoint import runtime as _runtime_mod
from zactor.endpoint.recovery import died_error
from zactor.errors import ActorDiedError, remote_exception
from zactor.wire import records as wire
from zactor.wire import serialization
from zactor.wire.protocol import HEAD_TABLE, NODE_TABLE, WORKER_TABLE

_dumps_call = serialization.dumps_call
#: ``_dumps_call((), {})``, made once: most calls carry no arguments.
_NO_ARGUMENTS = (serialization.NO_ARGS, ())
#: How long a handle leaving this process waits for the worker to confirm the actor's
#: creation (seconds): a live worker answers at once.
CREATED_WAIT_S = 60.0
_CALL, _TELL, _ERROR = wire.CALL, wire.TELL, wire.ERROR
_NOTICE_FOLLOWS = wire.DIED_NOTICE_FOLLOWS


class _Target:
    """Where one actor's calls go, shared by its handle and the handle's bound methods.

    Methods point here rather than at the handle, and the handle caches its
    methods: were the methods to point back at the handle, every handle would
    sit in a reference cycle and outlive its last use until the cyclic garbage
    collector ran, keeping its actor alive (see :mod:`zactor.endpoint.refs`). This
    object is freed as soon as the handle and its methods are, and reports that.
    """

    __slots__ = (
        "actor_id",
        "address",
        "class_name",
        "gate",
        "runtime",
        "outbox",
        "refs",
        "retries",
        "restartable",
        "created_here",
        "__weakref__",
    )

    def __init__(
        self,
        actor_id: int,
        address: str,
        class_name: str,
        limit: int,
        counted: bool,
        retries: int = 0,
        restartable: bool = False,
    ):
        self.actor_id = actor_id
        self.address = address
        self.class_name = class_name
        self.gate = CallGate(limit)
        self.runtime = None
        self.outbox = None
        self.refs = None
        self.retries = retries  # the actor's max_task_retries
        # Calls to it keep what sends them again (Resend): it may come back.
        self.restartable = restartable
        #: This process sent the actor's creation, and no handle has left it since
        #: (see :meth:`placed`).
        self.created_here = False
        runtime = _runtime_mod._current
        if actor_id != wire.SYSTEM_ACTOR_ID and runtime is not None:
            # Told where the actor lives now if it restarted elsewhere (see Recovery.routes).
            self.address = runtime.recovery.track(self)
            if counted:
                self.refs = runtime.refs  # released to this process's table, even after init()
                self.refs.acquire(actor_id)

    def box(self):
        """This process's outbox to the actor's process (cached per runtime).

        Returns ``(runtime, None)`` while the actor restarts (the call waits for
        it) and raises :class:`ActorDiedError` once it is gone for good. The
        runtime clears :attr:`runtime` when either happens, so the callers'
        fast path (``outbox`` while ``runtime`` is current) sends nothing to a
        dead process.
        """
        runtime = _runtime_mod._current
        if runtime is None:
            _runtime_mod.current()  # raises the "not initialised" error
        if runtime.down:
            down = runtime.down.get(self.actor_id)  # actor ids, never a system actor's 0
            if down is not None:
                reason, restarting = down
                if not restarting:
                    raise died_error(reason)
                return runtime, None
        if runtime is not self.runtime:
            self.outbox = runtime.outbox(self.address)
            self.runtime = runtime
        return runtime, self.outbox

    def placed(self, leaving: bool = False) -> str:
        """The actor's address: for an actor this process created without waiting for
        the head (``zactor.caller.creation``), once the head has placed it. Raises
        :class:`ActorDiedError` if it could not be. ``leaving``: a copy of the handle
        is about to leave this process; for an actor created here, wait until its
        worker has it."""
        runtime = _runtime_mod._current
        if self.address is None:
            runtime = _runtime_mod.current()
            recovery = runtime.recovery
            runtime.wait_until(lambda: not recovery.unplaced(self.actor_id), None)
            if self.address is None:
                raise died_error(runtime.down[self.actor_id][0])
        if runtime is not None:
            runtime.flush()  # its creation may wait in a batch
            if leaving and self.created_here:
                # The receiver's calls take its own connection to the worker, which
                # may read them before this process's creation: a round trip behind
                # the creation, on this process's connection, makes sure it has it.
                self.created_here = False
                try:
                    worker_service_handle(self.address).ping.remote().result(CREATED_WAIT_S)
                except Exception:  # the worker died: the receiver's calls will say so
                    pass
        return self.address

    def __del__(self) -> None:
        if self.refs is not None:
            self.refs.release(self.actor_id)


#: Method name -> index, by method table: handles of one class share one.
_indexes: dict[tuple, dict] = {}
#: Most method tables :data:`_indexes` keeps (beyond, it starts again).
_INDEXES_KEPT = 1024


class ActorHandle:
    """A reference to one actor; call its methods with ``handle.method.remote(...)``.

    Handles are picklable: pass them to other actors, which then call the actor
    directly. Two handles are equal when they name the same actor.

    A non-detached actor lives while some handle to it does, in any process
    (see :mod:`zactor.endpoint.refs`): when the last one is garbage-collected the
    actor finishes the calls already sent to it, then ends.
    """

    def __init__(
        self,
        actor_id: int,
        address: str,
        class_name: str,
        methods: tuple,
        name: str | None = None,
        namespace: str | None = None,
        max_pending_calls: int = DEFAULT_MAX_PENDING_CALLS,
        counted: bool = True,
        max_task_retries: int = 0,
        max_restarts: int = 0,
        method_options: dict | None = None,
    ) -> None:
        self._actor_id = actor_id
        self._class_name = class_name
        self._methods = methods = tuple(methods)
        index = _indexes.get(methods)
        if index is None:
            if len(_indexes) >= _INDEXES_KEPT:
                _indexes.clear()
            index = _indexes[methods] = {m: i for i, m in enumerate(methods)}
        self._index = index  # shared by the handles of one class: never changed
        self._name = name
        self._namespace = namespace
        #: Method name -> its options (``@zactor.method``), checked by the actor class.
        self._method_options = method_options or {}
        self._target = _Target(
            actor_id,
            address,
            class_name,
            max_pending_calls,
            counted,
            max_task_retries,
            bool(max_restarts),
        )
        self._gate = self._target.gate

    @property
    def _address(self) -> str:
        """The address of the actor's process: where it was placed, once the head has
        placed it (an actor this process created a moment ago may not be yet)."""
        return self._target.placed()

    def __getattr__(self, name: str) -> ActorMethod:
        index = self.__dict__.get("_index")
        if index is None or name not in index:
            if name.startswith("__") or index is None:
                raise AttributeError(name)
            raise AttributeError(
                f"actor class {self._class_name} has no method {name!r}; "
                f"its methods are: {', '.join(self._methods) or '(none)'}"
            )
        method = ActorMethod(self._target, name, index[name], self._method_options.get(name))
        self.__dict__[name] = method  # later look-ups skip __getattr__
        return method

    def __reduce__(self):
        # A copy in transit keeps the actor alive until the receiver holds it (ownership.py).
        runtime = _runtime_mod._current
        token = None
        if self._actor_id != wire.SYSTEM_ACTOR_ID and runtime is not None:
            token = runtime.refs.sent(self._actor_id)
        args = (
            self._actor_id,
            # Where it lives now (if it restarted elsewhere); once placed, if it was just
            # created: the receiver would not know where to send its calls.
            self._target.placed(leaving=True),
            self._class_name,
            self._methods,
            self._name,
            self._namespace,
            self._gate.limit,
            token,
            self._target.retries,
            self._target.restartable,
            self._method_options,
        )
        if type(self) is not ActorHandle:  # a subclass (zactor.compat's) arrives as itself
            args += (type(self),)
        return (_unpickle_handle, args)

    def _retyped(self, cls: type) -> ActorHandle:
        """A handle of ``cls`` (a subclass, such as zactor.compat.ray's) to the same
        actor, keeping it alive exactly when this one does."""
        target = self._target
        handle = cls(
            self._actor_id,
            target.placed(),  # rerouted only if made before the placement: wait for it
            self._class_name,
            self._methods,
            self._name,
            self._namespace,
            self._gate.limit,
            target.refs is not None,
            target.retries,
            int(target.restartable),
            self._method_options,
        )
        handle._target.created_here = target.created_here  # its copies leave as this one's
        return handle

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self) -> int:
        return hash(("zactor.actor", self._actor_id))

    def __repr__(self) -> str:
        named = f", name={self._name!r}" if self._name else ""
        return f"ActorHandle({self._class_name}, id={self._actor_id}{named})"


def _unpickle_handle(
    actor_id,
    address,
    class_name,
    methods,
    name,
    namespace,
    limit,
    token,
    retries=0,
    restartable=False,
    method_options=None,
    cls=None,
):
    handle = (cls or ActorHandle)(
        actor_id,
        address,
        class_name,
        methods,
        name,
        namespace,
        limit,
        max_task_retries=retries,
        max_restarts=int(restartable),
        method_options=method_options,
    )
    runtime = _runtime_mod._current
    if token is not None and runtime is not None:
        runtime.refs.claimed(actor_id, token)  # after the handle's hold: see zactor.endpoint.refs
    return handle


class ActorMethod:
    """One method of one actor: ``.remote(...)`` returns a Future, ``.tell(...)`` nothing.

    ``.options(max_task_retries=..., retry_exceptions=...)`` gives the same method
    with other retry options for the calls made through it (see :func:`zactor.method`).
    """

    __slots__ = ("_target", "_name", "_index", "_retries", "_retry_on", "_keep")

    def __init__(self, target: _Target, name: str, index: int, options: dict | None = None):
        self._target = target  # keeps the actor alive while the method is held
        self._name = name
        self._index = index
        options = options or {}
        retries = options.get("max_task_retries")
        #: Times a call may be sent again (-1: no limit); the actor's own by default.
        self._retries = target.retries if retries is None else retries
        #: Exceptions of the method that send a call again: None, True, or a tuple.
        self._retry_on = options.get("retry_exceptions")
        # Calls keep what sends them again only if that may ever happen.
        self._keep = bool(self._retries or target.restartable)

    def options(self, **options: Any) -> ActorMethod:
        """This method with other options for the calls made through the result:
        ``max_task_retries`` (how often a call is sent again to the restarted actor
        or, with ``retry_exceptions``, after its method raised; -1: no limit) and
        ``retry_exceptions`` (True, or a list of exception classes).

        Example::

            counter.flaky.options(max_task_retries=3, retry_exceptions=[IOError]).remote()
        """
        target = self._target
        merged = {"max_task_retries": self._retries, "retry_exceptions": self._retry_on}
        merged.update(check_method_options(options))
        return ActorMethod(target, self._name, self._index, merged)

    def remote(self, *args: Any, **kwargs: Any) -> Future:
        """Send the call; return its :class:`Future` at once.

        Blocks only when the handle already has ``max_pending_calls`` calls
        awaiting replies (backpressure), until some of them resolve. A call to
        an actor that is gone for good returns a future that raises
        :class:`ActorDiedError`; one to an actor that is restarting waits for it.
        """
        target = self._target
        runtime = _runtime_mod._current
        box = target.outbox if runtime is target.runtime and runtime is not None else None
        gate = target.gate
        if box is None or gate.inflight >= gate.limit:
            try:
                if box is not None:  # wait for replies or credits, then look again:
                    runtime.wait_until(lambda: gate.inflight < gate.limit, None)
                runtime, box = target.box()  # the actor may have died or moved meanwhile
            except ActorDiedError as exc:  # gone for good: the future says so, at once
                future = Future(_runtime_mod._current, None, self)
                future._fail(exc)
                return future
            if gate.inflight >= gate.limit:  # restarting: wait here, the call is held
                runtime.wait_until(lambda: gate.inflight < gate.limit, None)
        payload, buffers = _dumps_call(args, kwargs) if args or kwargs else _NO_ARGUMENTS
        if box is not None and not self._keep:  # the common call, compiled
            return runtime.pending.call(
                Future, runtime, gate, self, box, self._index, target.actor_id, payload, buffers
            )
        # The future is left to reference counting until it holds an error, a value
        # that is a container, or a callback (20% of a pipelining caller's time
        # otherwise: BENCHMARKS.md); Future tracks it again then.
        future, call_id = runtime.pending.register(Future, runtime, gate, self)
        if self._keep:
            future._retry = Resend(
                self._index, payload, buffers, self._retries, self._retry_on, call_id, _monotonic()
            )
        if box is None:  # the actor is restarting: the call goes out once it is back
            runtime.recovery.hold(target.actor_id, _CALL, self._index, call_id, payload, buffers)
        else:
            box.put(_CALL, self._index, call_id, target.actor_id, payload, buffers)
        return future

    def _retry_reply(self, future: Future, kind: int, flags: int, payload, buffers) -> bool:
        """A reply other than a result came for ``future``, a call that may be sent
        again: True if it is not the answer (the runtime then drops it).

        A DIED reply whose death the head announces waits for that notice, which
        says whether the call goes again (:meth:`Recovery.actor_died`). An error
        the method raised that ``retry_exceptions`` names sends the call again
        now, under a new call id (an actor with a checkpoint recorded the failed
        one), if ``max_task_retries`` allows.
        """
        retry = future._retry
        runtime = future._runtime
        target = self._target
        if flags & _NOTICE_FOLLOWS:
            try:
                reason, incarnation = serialization.loads(payload, buffers)
            except Exception:  # not [reason, incarnation]: the future reports what it is
                return False
            recovery = runtime.recovery
            verdict = recovery.announced_death(future, target, str(reason), incarnation)
            if verdict is None:  # this process has not heard the head on it yet: ask
                head = head_handle(runtime)
                head.list_actors.remote().add_done_callback(
                    lambda answer: recovery.head_answered(
                        target.actor_id, incarnation, _answer(answer)
                    )
                )
                return True
            return verdict
        if kind != _ERROR or retry.retry_on is None or retry.left == 0:
            return False
        try:
            exc = remote_exception(serialization.loads(payload, buffers))
        except Exception:  # undecodable: the future reports it
            return False
        if not retry.retries(exc):
            return False
        try:
            runtime, box = target.box()
        except ActorDiedError:  # gone for good meanwhile: the error stands
            return False
        if retry.left > 0:
            retry.left -= 1
        retry.call_id = call_id = runtime.pending.add(future)
        retry.sent_at = _monotonic()
        if box is None:  # restarting: sent once it is back
            runtime.recovery.hold(
                target.actor_id, _CALL, retry.method, call_id, retry.payload, retry.buffers
            )
        else:
            box.put(_CALL, retry.method, call_id, target.actor_id, retry.payload, retry.buffers)
            box.flush()
        return True

    def tell(self, *args: Any, **kwargs: Any) -> None:
        """Send the call and expect no reply (the highest call rate).

        Errors it raises are logged and counted on the actor's side. Raises
        :class:`ActorDiedError` at once if the actor is gone for good. Tells
        count against ``max_pending_calls`` with the calls, until the worker
        credits them (as it takes them from the actor's mailbox): a caller
        that tells faster than the actor works blocks, and the worker's memory
        stays bounded.
        """
        target = self._target
        runtime = _runtime_mod._current
        box = target.outbox if runtime is target.runtime and runtime is not None else None
        gate = target.gate
        if box is None or gate.inflight >= gate.limit:
            # An actor telling itself cannot wait for its own mailbox to drain: it
            # goes over the bound instead (its own calls hold the rest back).
            wait = not runtime.runs_actor(target.actor_id)
            if box is not None and wait:  # counted with the calls: wait, then look again
                runtime.wait_until(lambda: gate.inflight < gate.limit, None)
            runtime, box = target.box()  # raises at once if the actor is gone for good
            if wait and gate.inflight >= gate.limit:  # restarting: wait, the tell is held
                runtime.wait_until(lambda: gate.inflight < gate.limit, None)
        payload, buffers = _dumps_call(args, kwargs) if args or kwargs else _NO_ARGUMENTS
        if gate.runtime is not runtime:  # the first tell here: credits find the gate by it
            runtime.gate_token(gate)
        if box is not None:
            gate.tell(box, self._index, target.actor_id, payload, buffers)
            return
        gate.inflight += 1  # the actor is restarting: the tell goes out once it is back
        try:
            runtime.recovery.hold(target.actor_id, _TELL, self._index, gate.token, payload, buffers)
        except ActorDiedError:
            gate.inflight -= 1
            raise

    def __call__(self, *args, **kwargs):
        raise TypeError(
            f"actor methods are called with .remote(...) or .tell(...): "
            f"use {self._target.class_name}.{self._name}.remote(...)"
        )

    def __str__(self) -> str:
        return f"{self._target.class_name}(id={self._target.actor_id}).{self._name}"

    __repr__ = __str__


def _answer(future: Future):
    """A resolved future's value, or None if it raised (the head is gone or closing)."""
    try:
        return future.result(timeout=0)
    except Exception:
        return None


# -- handles the runtime makes ------------------------------------------------------------


def head_handle(runtime=None) -> ActorHandle:
    """A handle to the cluster head's registry (actor 0 of the head process)."""
    runtime = runtime or _runtime_mod.current()
    return ActorHandle(wire.SYSTEM_ACTOR_ID, runtime.head_address, "Head", HEAD_TABLE.names)


def worker_service_handle(address: str) -> ActorHandle:
    """A handle to the service actor (actor 0) of the worker at ``address``."""
    return ActorHandle(wire.SYSTEM_ACTOR_ID, address, "WorkerService", WORKER_TABLE.names)


def node_service_handle(address: str) -> ActorHandle:
    """A handle to the service actor (actor 0) of the node agent at ``address``."""
    return ActorHandle(wire.SYSTEM_ACTOR_ID, address, "NodeService", NODE_TABLE.names)


def handle_from_info(info: dict, counted: bool = True) -> ActorHandle:
    """A handle from the head's description of an actor.

    ``counted=False`` makes a handle that does not keep its actor alive (an
    actor's handle to itself).
    """
    return ActorHandle(
        info["actor_id"],
        info["address"],
        info["class_name"],
        tuple(info["methods"]),
        info.get("name"),
        info.get("namespace"),
        info.get("max_pending_calls") or DEFAULT_MAX_PENDING_CALLS,
        counted,
        info.get("max_task_retries") or 0,
        info.get("max_restarts") or 0,
        cloudpickle.loads(info["method_options"]) if info.get("method_options") else None,
    )
