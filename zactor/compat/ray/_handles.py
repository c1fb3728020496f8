"""``@ray.remote`` on classes and functions, actor handles and methods, ``@ray.method``.

Each Ray object here wraps zactor's own: an :class:`ActorClass` wraps a
:class:`zactor.ActorClass`, an :class:`ActorHandle` a :class:`zactor.ActorHandle`,
a :class:`RemoteFunction` what ``zactor.remote(fn)`` makes. The wrappers add
what Ray code does that zactor spells differently: Ray's option names (see
:mod:`zactor.compat.ray._options`), refs as arguments (resolved to their
values), starting a cluster on the first ``.remote()``, and Ray's errors for
calling an actor class or a remote function directly.
"""

from __future__ import annotations

from typing import Any

import zactor
from zactor.caller.actor_class import ActorClass as _ZactorActorClass
from zactor.caller.future import Future
from zactor.caller.handle import ActorHandle as _ZactorHandle
from zactor.compat.ray import _options
from zactor.compat.ray._cluster import ensure_initialized
from zactor.compat.ray._refs import resolve
from zactor.wire.protocol import TERMINATE_METHOD

# -- actors ---------------------------------------------------------------------------------


class ActorHandle(_ZactorHandle):
    """Ray's actor handle: a :class:`zactor.ActorHandle` whose methods take Ray's options.

    ``handle.method.remote(...)`` returns a :class:`zactor.Future` (an
    ``ObjectRef``); ``handle.method.options(...)`` takes Ray's call options;
    ``handle.__ray_terminate__.remote()`` is zactor's ``__zactor_terminate__``.
    It is a zactor handle too, so zactor's own functions (``zactor.kill``,
    ``zactor.ActorPool``) take it; pickled, it arrives as a Ray handle.
    """

    def __getattr__(self, name: str) -> ActorMethod:
        zname = TERMINATE_METHOD if name == "__ray_terminate__" else name
        method = ActorMethod(super().__getattr__(zname))  # AttributeError names the methods
        self.__dict__[name] = method  # later look-ups skip __getattr__
        return method


class ActorMethod:
    """One method of one actor, as Ray's: ``.remote(...)`` returns a :class:`zactor.Future`."""

    __slots__ = ("_method",)

    def __init__(self, method) -> None:
        self._method = method

    def remote(self, *args: Any, **kwargs: Any) -> Future:
        """Send the call; refs among the arguments are sent as their values."""
        args, kwargs = resolve(args, kwargs)
        return self._method.remote(*args, **kwargs)

    def options(self, **options: Any) -> ActorMethod:
        """Ray's call options: ``max_task_retries``, ``retry_exceptions``; ``name`` is
        ignored; ``num_returns`` only 1; others raise ``NotImplementedError``."""
        zoptions = _options.method_options(options)
        return ActorMethod(self._method.options(**zoptions) if zoptions else self._method)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._method, name)  # zactor's extras, such as .tell()

    def __call__(self, *args: Any, **kwargs: Any):
        name = self._method._name
        raise TypeError(
            f"Actor methods cannot be called directly. Instead of running "
            f"'object.{name}()', try 'object.{name}.remote()'."
        )

    def __repr__(self) -> str:
        return f"ActorMethod({self._method!r})"


def _create(zclass: _ZactorActorClass, zoptions: dict, args: tuple, kwargs: dict) -> ActorHandle:
    ensure_initialized()
    args, kwargs = resolve(args, kwargs)
    target = zclass.options(**zoptions) if zoptions else zclass
    return target.remote(*args, **kwargs)._retyped(ActorHandle)


class ActorClass:
    """A class made an actor class by ``@ray.remote``: ``.remote(...)`` creates an actor,
    ``.options(...)`` takes Ray's actor options (see docs/migrating.md)."""

    def __init__(self, cls: type, options: dict) -> None:
        self._ray_options = dict(options)
        self._zoptions = _options.actor_options(dict(options))  # a bad option fails now
        self._zactor = zactor.remote(cls)
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__module__ = cls.__module__
        self.__doc__ = cls.__doc__

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle:
        """Create an actor (starting a local cluster first if ``ray.init`` was not called)."""
        return _create(self._zactor, self._zoptions, args, kwargs)

    def options(self, **options: Any) -> _ActorOptions:
        """This class with Ray's actor options merged over the decorator's."""
        merged = {**self._ray_options, **options}
        return _ActorOptions(self._zactor, _options.actor_options(merged))

    def __getattr__(self, name: str) -> Any:
        # The user class's attributes (constants, static and class methods), as Ray shows them.
        zclass = self.__dict__.get("_zactor")
        if zclass is None or (name.startswith("__") and name.endswith("__")):
            raise AttributeError(name)
        return getattr(zclass, name)

    def __call__(self, *args: Any, **kwargs: Any):
        raise TypeError(
            f"Actors cannot be instantiated directly. Instead of '{self.__name__}()', "
            f"use '{self.__name__}.remote()'."
        )

    def __reduce__(self):
        # By value: the class travels with its Ray options (actors are created from
        # zactor's own actor class, so this happens only when one is passed as an argument).
        return (ActorClass, (self._zactor._cls, self._ray_options))

    def __repr__(self) -> str:
        return f"<zactor.compat.ray.ActorClass {self.__qualname__}>"


class _ActorOptions:
    """An actor class with options bound: ``.remote(...)`` creates the actor."""

    def __init__(self, zclass: _ZactorActorClass, zoptions: dict) -> None:
        self._zactor = zclass
        self._zoptions = zoptions

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle:
        """Create the actor with these options."""
        return _create(self._zactor, self._zoptions, args, kwargs)


def method(*args: Any, **options: Any):
    """``@ray.method(...)``: per-method call options (``max_task_retries``,
    ``retry_exceptions``; ``num_returns`` only 1)."""
    if args:
        raise TypeError(
            "@ray.method takes keyword options only, e.g. @ray.method(max_task_retries=3)"
        )
    zoptions = _options.method_options(options)
    if not zoptions:
        return lambda fn: fn
    return zactor.method(**zoptions)


# -- tasks ----------------------------------------------------------------------------------


def _submit(task, zoptions: dict, args: tuple, kwargs: dict) -> Future:
    ensure_initialized()
    args, kwargs = resolve(args, kwargs)
    target = task.options(**zoptions) if zoptions else task
    return target.remote(*args, **kwargs)


class RemoteFunction:
    """A function made a task by ``@ray.remote``: ``.remote(...)`` runs it in a worker and
    returns a :class:`zactor.Future`; ``.options(...)`` takes Ray's task options."""

    def __init__(self, fn: Any, options: dict) -> None:
        self._ray_options = dict(options)
        self._zoptions = _options.task_options(dict(options))
        self._function = fn
        self._task = zactor.remote(fn)  # zactor's stateless task
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)
        self.__module__ = getattr(fn, "__module__", None)
        self.__doc__ = getattr(fn, "__doc__", None)

    def remote(self, *args: Any, **kwargs: Any) -> Future:
        """Run the function in a worker (starting a local cluster first if needed)."""
        return _submit(self._task, self._zoptions, args, kwargs)

    def options(self, **options: Any) -> _TaskOptions:
        """This function with Ray's task options merged over the decorator's."""
        merged = {**self._ray_options, **options}
        return _TaskOptions(self._task, _options.task_options(merged))

    def __call__(self, *args: Any, **kwargs: Any):
        raise TypeError(
            f"Remote functions cannot be called directly. Instead of running "
            f"'{self.__name__}()', try '{self.__name__}.remote()'."
        )

    def __reduce__(self):
        return (RemoteFunction, (self._function, self._ray_options))

    def __repr__(self) -> str:
        return f"<zactor.compat.ray.RemoteFunction {self.__qualname__}>"


class _TaskOptions:
    """A remote function with options bound: ``.remote(...)`` runs it."""

    def __init__(self, task, zoptions: dict) -> None:
        self._task = task
        self._zoptions = zoptions

    def remote(self, *args: Any, **kwargs: Any) -> Future:
        """Run the function with these options."""
        return _submit(self._task, self._zoptions, args, kwargs)


def remote(*args: Any, **options: Any):
    """``@ray.remote``, ``@ray.remote(**options)``, ``ray.remote(cls_or_function)``."""
    if len(args) == 1 and not options and callable(args[0]):
        return _make(args[0], {})
    if args:
        raise TypeError(
            "The @ray.remote decorator must be applied either with no arguments and no "
            "parentheses, for example '@ray.remote', or with keyword options only, for "
            "example '@ray.remote(num_cpus=1)'."
        )
    return lambda target: _make(target, options)


def _make(target: Any, options: dict):
    if isinstance(target, type):
        return ActorClass(target, options)
    if callable(target):
        return RemoteFunction(target, options)
    raise TypeError(
        f"@ray.remote decorates a class or a function, got {type(target).__name__}: {target!r}"
    )


def ray_handle(handle: _ZactorHandle) -> ActorHandle:
    """Ray's handle to the actor of a zactor handle."""
    return handle if isinstance(handle, ActorHandle) else handle._retyped(ActorHandle)
