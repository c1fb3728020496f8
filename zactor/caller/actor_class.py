"""Actor classes: ``@zactor.remote`` and creating actors (on a function, ``remote``
makes a task instead: see :mod:`zactor.caller.task`).

Example::

    @zactor.remote
    class Counter:
        def __init__(self, start=0):
            self.n = start

        def increment(self):
            self.n += 1
            return self.n

    c = Counter.remote(10)                         # an ActorHandle, at once
    d = Counter.options(name="d").remote()         # with per-actor options
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

import cloudpickle

from zactor.caller.arguments import check_bindable
from zactor.caller.creation import (
    create_unplaced,
    creation_spec,
    import_by_name,
    lookup,
    place_now,
    start_actor,
)
from zactor.caller.handle import ActorHandle, handle_from_info, head_handle
from zactor.caller.options import (
    ACTOR_OPTIONS,
    TASK_OPTIONS,
    check_method_options,
    check_options,
)
from zactor.caller.task import RemoteFunction
from zactor.endpoint import runtime as _runtime_mod
from zactor.wire.protocol import actor_method_table, method_names

#: Where :func:`method` leaves a method's options, on the function.
_METHOD_OPTIONS_ATTR = "__zactor_method_options__"


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
        self._methods = actor_method_table(cls)
        self._method_options = _method_options(cls)
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__module__ = cls.__module__
        self.__doc__ = cls.__doc__

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle:
        """Create an actor of this class with the class's default options."""
        return _create(self, self._options, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        # Only names ActorClass itself lacks get here: the user class's attributes
        # (class constants, static and class methods), as Ray's actor classes show them.
        cls = self.__dict__.get("_cls")
        if cls is None or (name.startswith("__") and name.endswith("__")):
            raise AttributeError(name)
        try:
            return getattr(cls, name)
        except AttributeError:
            raise AttributeError(
                f"actor class {cls.__qualname__} has no attribute {name!r}"
            ) from None

    def _check_arguments(self, args: tuple, kwargs: dict) -> None:
        """Raise ``TypeError`` now, at ``.remote()``, for arguments the constructor
        would refuse (as Ray does), not at the actor's first call."""
        if args or kwargs or not self.__dict__.get("_takes_none"):
            check_bindable(self._cls, args, kwargs, self.__qualname__, "its constructor takes")
            if not (args or kwargs):  # no arguments are fine: creating many, check once
                self._takes_none = True

    def _spec(self, options: dict, runtime) -> dict:
        """:func:`creation_spec` of an actor of this class with ``options``, made once
        while the options, the runtime and the namespace stay the same, as when
        creating many actors in a row: shared, so never changed."""
        namespace = runtime.default_namespace()
        cached = self.__dict__.get("_spec_cache")
        if cached is None or cached[0] is not options or cached[1] is not runtime:
            cached = None
        elif cached[2] != namespace:
            cached = None
        if cached is None:
            spec = creation_spec(
                self._cls.__qualname__, self._methods, options, runtime, self._method_options
            )
            cached = self._spec_cache = (options, runtime, namespace, spec)
        return cached[3]

    def _blob(self, args: tuple, kwargs: dict) -> bytes:
        """What the worker builds an actor from: the cloudpickle of ``(class, args,
        kwargs)``; made once for the class's actors created without arguments."""
        if args or kwargs:
            return cloudpickle.dumps((self, args, kwargs))
        blob = self.__dict__.get("_bare_blob")
        if blob is None:
            blob = self._bare_blob = cloudpickle.dumps((self, (), {}))
        return blob

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
        if self.__module__ != "__main__" and lookup(module, self.__qualname__) is self:
            return (_import_actor_class, (self.__module__, self.__qualname__))
        # Pickled once (cloudpickle of a class by value costs ~0.3 ms; creating many
        # actors of it would pay that each time), so later changes to the class itself
        # do not travel: as in Ray, which exports a class once.
        by_value = self.__dict__.get("_by_value")
        if by_value is None:
            by_value = self._by_value = cloudpickle.dumps((self._cls, self._options))
        return (_unpickle_by_value, (by_value,))


def _import_actor_class(module: str, qualname: str) -> ActorClass:
    """Unpickle an :class:`ActorClass` shipped by reference."""
    return import_by_name(module, qualname)


#: Actor classes unpickled by value, by their pickle: the actors of one class in a
#: process share it, and unpickling it again costs nothing.
_by_value_classes: dict[bytes, ActorClass] = {}
#: Most classes :data:`_by_value_classes` keeps (beyond, it starts again).
_BY_VALUE_KEPT = 256


def _unpickle_by_value(by_value: bytes) -> ActorClass:
    """Unpickle an :class:`ActorClass` shipped by value (see ``ActorClass.__reduce__``)."""
    actor_class = _by_value_classes.get(by_value)
    if actor_class is None:
        if len(_by_value_classes) >= _BY_VALUE_KEPT:
            _by_value_classes.clear()
        cls, options = cloudpickle.loads(by_value)
        actor_class = _by_value_classes[by_value] = ActorClass(cls, options)
    return actor_class


class ActorOptions:
    """An actor class with options bound; ``.remote(...)`` creates the actor."""

    def __init__(self, actor_class: ActorClass, options: dict) -> None:
        self._actor_class = actor_class
        self._options = options

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle:
        """Create the actor with these options."""
        return _create(self._actor_class, self._options, args, kwargs)


def method(**options: Any):
    """Per-method defaults for the calls of one actor method, as Ray's ``ray.method``:
    ``max_task_retries`` and ``retry_exceptions``. A call's own
    ``h.m.options(...)`` overrides them.

    Example::

        @zactor.remote(max_restarts=-1)
        class Fetcher:
            @zactor.method(max_task_retries=3, retry_exceptions=[ConnectionError])
            def fetch(self, url): ...
    """
    checked = check_method_options(options)

    def decorate(fn):
        target = getattr(fn, "__func__", fn)  # staticmethod, classmethod
        if not callable(target):
            raise TypeError(f"@zactor.method decorates a method, got {type(fn).__name__}")
        setattr(target, _METHOD_OPTIONS_ATTR, checked)
        return fn

    return decorate


def _method_options(cls: type) -> dict:
    """Method name -> the options :func:`method` gave it, for the methods of ``cls``."""
    out = {}
    for name in method_names(cls):
        attr = inspect.getattr_static(cls, name)
        options = getattr(getattr(attr, "__func__", attr), _METHOD_OPTIONS_ATTR, None)
        if options:
            out[name] = options
    return out


def remote(*args: Any, **options: Any):
    """Make a class an actor class, or a function a task: ``@zactor.remote``,
    ``@zactor.remote(**options)``, ``zactor.remote(PlainClass)`` or
    ``zactor.remote(function)``.

    A class takes actor options (see :meth:`ActorClass.options`), a function task
    options (see :class:`~zactor.caller.task.RemoteFunction`).

    Example::

        Account = zactor.remote(Account)
        a = Account.options(name="acct").remote(100.0)

        @zactor.remote(max_retries=1)
        def square(x):
            return x * x
    """
    if len(args) == 1 and not options:
        return _make_remote(args[0], {})
    if args:
        raise TypeError("use @zactor.remote or @zactor.remote(option=value, ...)")
    unknown = set(options) - ACTOR_OPTIONS - TASK_OPTIONS
    if unknown:  # fails now, before the decorator meets its class or function
        raise TypeError(
            f"unknown option(s) {sorted(unknown)}; valid options are {sorted(ACTOR_OPTIONS)} "
            f"for an actor class, {sorted(TASK_OPTIONS)} for a task function"
        )
    return lambda target: _make_remote(target, options)


def _make_remote(target: Any, options: dict) -> ActorClass | RemoteFunction:
    if isinstance(target, type):
        return ActorClass(target, options)
    if callable(target):
        return RemoteFunction(target, options)
    raise TypeError(
        f"zactor.remote makes an actor class of a class, or a task of a function; "
        f"got {type(target).__name__} {target!r}"
    )


# -- creating actors -----------------------------------------------------------------------


def _create(actor_class: ActorClass, options: dict, args: tuple, kwargs: dict) -> ActorHandle:
    runtime = _runtime_mod.current()
    actor_class._check_arguments(args, kwargs)
    spec = actor_class._spec(options, runtime)
    blob = actor_class._blob(args, kwargs)
    if spec["name"] is None:
        return create_unplaced(runtime, spec, blob, options)
    head = head_handle(runtime)
    info = place_now(head, spec)  # the name may be taken, or get_if_exists find another
    handle = handle_from_info(info)
    if info.get("existing"):
        return handle
    start_actor(head, info, blob, spec, options)
    handle._target.created_here = True
    runtime.flush()
    return handle
