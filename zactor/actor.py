"""Actor classes, handles and methods: what a user touches.

Example::

    @zactor.remote
    class Counter:
        def __init__(self, start=0):
            self.n = start

        def increment(self):
            self.n += 1
            return self.n

    c = Counter.remote(10)            # an ActorHandle, at once
    zactor.get(c.increment.remote())  # 11
    c.increment.tell()                # one-way: no reply
"""

from __future__ import annotations

import importlib
import inspect
import sys
from typing import Any

import cloudpickle

from zactor import runtime as _runtime_mod
from zactor import serialization, wire
from zactor.checkpoint import open_store
from zactor.errors import ActorDiedError
from zactor.future import CallGate, Future
from zactor.placement import check_demand

#: Options ``remote(...)`` and ``.options(...)`` accept.
ACTOR_OPTIONS = frozenset(
    {
        "name",
        "namespace",
        "lifetime",
        "get_if_exists",
        "max_restarts",
        "max_task_retries",
        "max_concurrency",
        "num_cpus",
        "resources",
        "checkpoint",
        "checkpoint_every",
        "max_pending_calls",
    }
)
#: Calls one handle may have awaiting replies before ``remote()`` blocks.
DEFAULT_MAX_PENDING_CALLS = 10_000
#: How long creating an actor may wait for the head to place it (seconds).
CONTROL_TIMEOUT_S = 60.0

_dumps_call = serialization.dumps_call
_CALL, _TELL = wire.CALL, wire.TELL


def method_names(cls: type) -> tuple[str, ...]:
    """The callable attributes of ``cls`` a handle may call, sorted (the wire's method table).

    Dunder methods are left out; everything else callable, including
    ``staticmethod`` and ``classmethod`` members, is in.
    """
    names = []
    for name in dir(cls):
        if name.startswith("__") and name.endswith("__"):
            continue
        attr = inspect.getattr_static(cls, name)
        if isinstance(attr, (staticmethod, classmethod)) or (
            callable(attr) and not isinstance(attr, type)
        ):
            names.append(name)
    return tuple(sorted(names))


def check_options(options: dict) -> dict:
    """Reject unknown options and bad values with a message that says what to pass."""
    unknown = set(options) - ACTOR_OPTIONS
    if unknown:
        raise TypeError(
            f"unknown actor option(s) {sorted(unknown)}; valid options are {sorted(ACTOR_OPTIONS)}"
        )
    lifetime = options.get("lifetime")
    if lifetime not in (None, "detached"):
        raise ValueError(f"lifetime must be None or 'detached', got {lifetime!r}")
    limit = options.get("max_pending_calls")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"max_pending_calls must be a positive int, got {limit!r}")
    if "num_cpus" in options or "resources" in options:
        check_demand(options.get("num_cpus"), options.get("resources"))
    concurrency = options.get("max_concurrency")
    if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
        raise ValueError(f"max_concurrency must be a positive int, got {concurrency!r}")
    for key in ("max_restarts", "max_task_retries"):
        value = options.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < -1
        ):
            raise ValueError(f"{key} must be an int >= 0, or -1 for no limit; got {value!r}")
    every = options.get("checkpoint_every")
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        raise ValueError(f"checkpoint_every must be a positive int, got {every!r}")
    if every is not None and options.get("checkpoint") is None:
        raise ValueError(
            "checkpoint_every needs a store: pass checkpoint=zactor.FileStore(dir) too"
        )
    if options.get("checkpoint") is not None:
        open_store(options["checkpoint"])  # a clear error now, not in the worker later
    return options


class ActorClass:
    """A class made into an actor class by :func:`remote`.

    ``ActorClass.remote(*args, **kwargs)`` creates an actor and returns its
    :class:`ActorHandle`; ``.options(**options).remote(...)`` does so with
    per-actor options. Calling the class directly is an error.
    """

    def __init__(self, cls: type, options: dict) -> None:
        if not isinstance(cls, type):
            raise TypeError(f"zactor.remote takes a class, got {type(cls).__name__}")
        self._cls = cls
        self._options = check_options(dict(options))
        self._methods = method_names(cls)
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__module__ = cls.__module__
        self.__doc__ = cls.__doc__

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle:
        """Create an actor of this class with the class's default options."""
        return _create(self, self._options, args, kwargs)

    def options(self, **options: Any) -> ActorOptions:
        """Per-actor options for the next ``.remote(...)`` (see DESIGN: name, lifetime, ...)."""
        merged = dict(self._options)
        merged.update(check_options(options))
        return ActorOptions(self, merged)

    def __call__(self, *args, **kwargs):
        raise TypeError(
            f"{self.__name__} is a zactor actor class: create an actor with "
            f"{self.__name__}.remote(...), not {self.__name__}(...)"
        )

    def __repr__(self) -> str:
        return f"<zactor.ActorClass {self.__qualname__}>"

    def __reduce__(self):
        # By reference when the module names this very object (``@zactor.remote`` at
        # module level): the worker imports it, so every actor shares one class and
        # tracebacks show real source lines. Else by value (``__main__``, closures).
        module = sys.modules.get(self.__module__)
        if self.__module__ != "__main__" and _lookup(module, self.__qualname__) is self:
            return (_import_actor_class, (self.__module__, self.__qualname__))
        return (ActorClass, (self._cls, self._options))


def _lookup(module, qualname: str):
    obj = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj


def _import_actor_class(module: str, qualname: str) -> ActorClass:
    """Unpickle an :class:`ActorClass` shipped by reference."""
    return _lookup(importlib.import_module(module), qualname)


class ActorOptions:
    """An actor class with options bound; ``.remote(...)`` creates the actor."""

    def __init__(self, actor_class: ActorClass, options: dict) -> None:
        self._actor_class = actor_class
        self._options = options

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle:
        """Create the actor with these options."""
        return _create(self._actor_class, self._options, args, kwargs)


def remote(*args: Any, **options: Any):
    """Make a class an actor class: ``@zactor.remote``, ``@zactor.remote(**options)``
    or ``zactor.remote(PlainClass)``.

    Example::

        Account = zactor.remote(Account)
        a = Account.options(name="acct").remote(100.0)
    """
    if len(args) == 1 and not options:
        target = args[0]
        if isinstance(target, type):
            return ActorClass(target, {})
        if callable(target):
            raise NotImplementedError(
                "zactor.remote on a function (a stateless task) is not supported yet: "
                "decorate a class to make an actor"
            )
    if args:
        raise TypeError("use @zactor.remote or @zactor.remote(option=value, ...)")
    check_options(options)
    return lambda cls: ActorClass(cls, options)


class _Target:
    """Where one actor's calls go, shared by its handle and the handle's bound methods.

    Methods point here rather than at the handle, and the handle caches its
    methods: were the methods to point back at the handle, every handle would
    sit in a reference cycle and outlive its last use until the cyclic garbage
    collector ran, keeping its actor alive (see :mod:`zactor.ownership`). This
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
    ):
        self.actor_id = actor_id
        self.address = address
        self.class_name = class_name
        self.gate = CallGate(limit)
        self.runtime = None
        self.outbox = None
        self.refs = None
        self.retries = retries  # max_task_retries: calls keep what a re-send needs
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
                    raise ActorDiedError(reason)
                return runtime, None
        if runtime is not self.runtime:
            self.outbox = runtime.outbox(self.address)
            self.runtime = runtime
        return runtime, self.outbox

    def __del__(self) -> None:
        if self.refs is not None:
            self.refs.release(self.actor_id)


class ActorHandle:
    """A reference to one actor; call its methods with ``handle.method.remote(...)``.

    Handles are picklable: pass them to other actors, which then call the actor
    directly. Two handles are equal when they name the same actor.

    A non-detached actor lives while some handle to it does, in any process
    (see :mod:`zactor.ownership`): when the last one is garbage-collected the
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
    ) -> None:
        self._actor_id = actor_id
        self._address = address
        self._class_name = class_name
        self._methods = tuple(methods)
        self._index = {m: i for i, m in enumerate(self._methods)}
        self._name = name
        self._namespace = namespace
        self._target = _Target(
            actor_id, address, class_name, max_pending_calls, counted, max_task_retries
        )
        self._gate = self._target.gate

    def __getattr__(self, name: str) -> ActorMethod:
        index = self.__dict__.get("_index")
        if index is None or name not in index:
            if name.startswith("__") or index is None:
                raise AttributeError(name)
            raise AttributeError(
                f"actor class {self._class_name} has no method {name!r}; "
                f"its methods are: {', '.join(self._methods) or '(none)'}"
            )
        method = ActorMethod(self._target, name, index[name])
        self.__dict__[name] = method  # later look-ups skip __getattr__
        return method

    @property
    def actor_id(self) -> int:
        """The actor's cluster-wide id."""
        return self._actor_id

    def __reduce__(self):
        # A copy in transit keeps the actor alive until the receiver holds it (ownership.py).
        runtime = _runtime_mod._current
        token = None
        if self._actor_id != wire.SYSTEM_ACTOR_ID and runtime is not None:
            token = runtime.refs.sent(self._actor_id)
        return (
            _unpickle_handle,
            (
                self._actor_id,
                self._address,
                self._class_name,
                self._methods,
                self._name,
                self._namespace,
                self._gate.limit,
                token,
                self._target.retries,
            ),
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self) -> int:
        return hash(("zactor.actor", self._actor_id))

    def __repr__(self) -> str:
        named = f", name={self._name!r}" if self._name else ""
        return f"ActorHandle({self._class_name}, id={self._actor_id}{named})"


def _unpickle_handle(
    actor_id, address, class_name, methods, name, namespace, limit, token, retries=0
):
    handle = ActorHandle(
        actor_id, address, class_name, methods, name, namespace, limit, max_task_retries=retries
    )
    runtime = _runtime_mod._current
    if token is not None and runtime is not None:
        runtime.refs.claimed(actor_id, token)  # after the handle's hold: see ownership.py
    return handle


class ActorMethod:
    """One method of one actor: ``.remote(...)`` returns a Future, ``.tell(...)`` nothing."""

    __slots__ = ("_target", "_name", "_index")

    def __init__(self, target: _Target, name: str, index: int) -> None:
        self._target = target  # keeps the actor alive while the method is held
        self._name = name
        self._index = index

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
        if box is None:
            try:
                runtime, box = target.box()
            except ActorDiedError as exc:  # gone for good: the future says so, at once
                future = Future(_runtime_mod._current, None, self)
                future._fail(exc)
                return future
        gate = target.gate
        if gate.inflight >= gate.limit:
            runtime.wait_until(lambda: gate.inflight < gate.limit, None)
        payload, buffers = _dumps_call(args, kwargs)
        future = Future(runtime, gate, self)
        gate.inflight += 1
        call_id = runtime.pending.add(future)
        if target.retries:
            future._retry = [self._index, payload, buffers, target.retries]
        if box is None:  # the actor is restarting: the call goes out once it is back
            runtime.recovery.hold(target.actor_id, _CALL, self._index, call_id, payload, buffers)
        else:
            box.put(_CALL, self._index, call_id, target.actor_id, payload, buffers)
        return future

    def tell(self, *args: Any, **kwargs: Any) -> None:
        """Send the call and expect no reply (the highest call rate).

        Errors it raises are logged and counted on the actor's side. Raises
        :class:`ActorDiedError` at once if the actor is gone for good.
        """
        target = self._target
        runtime, box = target.box()
        payload, buffers = _dumps_call(args, kwargs)
        if box is None:  # the actor is restarting: the tell goes out once it is back
            runtime.recovery.hold(target.actor_id, _TELL, self._index, 0, payload, buffers)
        else:
            box.put(_TELL, self._index, 0, target.actor_id, payload, buffers)

    def __call__(self, *args, **kwargs):
        raise TypeError(
            f"actor methods are called with .remote(...) or .tell(...): "
            f"use {self._target.class_name}.{self._name}.remote(...)"
        )

    def __str__(self) -> str:
        return f"{self._target.class_name}(id={self._target.actor_id}).{self._name}"

    __repr__ = __str__


# -- creating actors -----------------------------------------------------------------------


def head_handle(runtime=None) -> ActorHandle:
    """A handle to the cluster head's registry (actor 0 of the head process)."""
    from zactor.head import Head

    runtime = runtime or _runtime_mod.current()
    return ActorHandle(wire.SYSTEM_ACTOR_ID, runtime.head_address, "Head", method_names(Head))


def worker_service_handle(address: str) -> ActorHandle:
    """A handle to the service actor (actor 0) of the worker at ``address``."""
    from zactor.worker import WorkerService

    return ActorHandle(wire.SYSTEM_ACTOR_ID, address, "WorkerService", method_names(WorkerService))


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
    )


def _create(actor_class: ActorClass, options: dict, args: tuple, kwargs: dict) -> ActorHandle:
    runtime = _runtime_mod.current()
    cls = actor_class._cls
    num_cpus, resources = check_demand(options.get("num_cpus"), options.get("resources"))
    spec = {
        "class_name": cls.__qualname__,
        "methods": list(actor_class._methods),
        "name": options.get("name"),
        "namespace": options.get("namespace", runtime.namespace),
        "get_if_exists": bool(options.get("get_if_exists", False)),
        "lifetime": options.get("lifetime"),
        "num_cpus": num_cpus,
        "resources": resources,
        "max_concurrency": options.get("max_concurrency"),
        "max_pending_calls": options.get("max_pending_calls") or DEFAULT_MAX_PENDING_CALLS,
        "max_restarts": options.get("max_restarts") or 0,
        "max_task_retries": options.get("max_task_retries") or 0,
        "checkpoint": options.get("checkpoint") is not None,
        "owner": runtime.address,
    }
    head = head_handle(runtime)
    info = head.place.remote(spec).result(timeout=CONTROL_TIMEOUT_S)
    handle = handle_from_info(info)
    if info.get("existing"):
        return handle
    blob = cloudpickle.dumps((actor_class, args, kwargs))
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
    worker_service_handle(info["address"]).create.tell(info["actor_id"], blob, creation)
    if spec["max_restarts"]:
        head.remember_creation.tell(info["actor_id"], blob, creation)  # to re-create it
    runtime.flush()
    return handle
