"""Dask's actor API on zactor: ``Client``, ``LocalCluster``, ``Actor``, ``ActorFuture``.

``from zactor.compat.dask.distributed import Client`` (or ``from
zactor.compat.dask import Client``) in place of ``from dask.distributed
import Client``::

    client = Client()                                   # starts zactor's cluster
    counter = client.submit(Counter, actor=True).result()
    counter.increment().result()                        # 1: methods return futures
    counter.n                                           # 1: attributes read remotely
    client.close()

* ``client.submit(Cls, *args, actor=True)`` creates a zactor actor of a
  subclass of ``Cls`` that can also answer attribute reads; the future's
  ``.result()`` is an :class:`Actor` proxy once the constructor has run (its
  error, if it raised).
* ``actor.method(...)`` sends the call and returns a :class:`zactor.Future`
  at once (Dask's ``ActorFuture``: ``.result()``, ``await``).
* ``actor.attribute`` reads the attribute in the actor, blocking; with an
  asynchronous client (``Client(asynchronous=True)``), or in an ``async def``
  method of an actor the proxy was passed to, it returns an awaitable
  instead, as Dask's does.
* ``client.submit(function, ...)`` runs a zactor task (``zactor.remote(fn)``).

What maps and what differs: docs/migrating.md.
"""

from __future__ import annotations

import inspect
import sys
import uuid
from typing import Any, Callable, Iterable

import zactor
from zactor.caller.actor_class import ActorClass
from zactor.caller.arguments import resolve_arguments
from zactor.caller.future import Future as ActorFuture
from zactor.caller.handle import ActorHandle
from zactor.endpoint import runtime as _runtime
from zactor.errors import ClusterError
from zactor.wire.protocol import method_names

# -- the actor side: attribute reads -----------------------------------------------------------


class _AttributeReads:
    """Mixed into each actor class made by ``submit(..., actor=True)``: what the proxy
    calls to read an attribute, and to learn that the constructor has run."""

    def _dask_getattr(self, name: str) -> Any:
        return getattr(self, name)

    def _dask_ready(self) -> None:
        return None


#: User class -> its zactor actor class (made once per class, so every actor of a class
#: shares one).
_actor_classes: dict[type, ActorClass] = {}


def _actor_class(cls: type) -> ActorClass:
    zclass = _actor_classes.get(cls)
    if zclass is None:
        # The user's class comes first in the MRO, so its own names always win; the
        # subclass keeps its name so errors and `zactor status` show the user's class.
        readable = type(
            cls.__name__,
            (cls, _AttributeReads),
            {
                "__module__": cls.__module__,
                "__qualname__": cls.__qualname__,
                "__doc__": cls.__doc__,
            },
        )
        zclass = _actor_classes[cls] = zactor.remote(readable)
    return zclass


# -- the caller side: the proxy ---------------------------------------------------------------


def _read_by_coroutine() -> bool:
    """True when the code reading an attribute (the caller of ``Actor.__getattr__``) is a
    coroutine: it can ``await`` the read. Dask decides by thread (a worker's event loop
    thread runs only its actors' coroutines); in a zactor async actor plain methods run
    on the loop's thread too, and they must get the value, so the reading code decides.
    """
    return bool(sys._getframe(2).f_code.co_flags & inspect.CO_COROUTINE)


class Actor:
    """A proxy to an actor (Dask's ``Actor``): what ``submit(Cls, actor=True).result()`` gives.

    ``proxy.method(*args)`` returns a :class:`zactor.Future` at once;
    ``proxy.name`` for anything that is not a method reads the actor's
    attribute, blocking (an awaitable in asynchronous use). Names starting
    with ``_`` are not forwarded, as in Dask. Picklable: pass it to tasks and
    other actors.
    """

    def __init__(
        self,
        handle: ActorHandle,
        key: str,
        methods: frozenset,
        names: tuple,
        asynchronous: bool | None = None,
    ) -> None:
        self._handle = handle
        self._key = key
        self._methods = methods  # the class's public methods
        self._names = names  # every public name of the class, for dir()
        # True/False: the client's mode; None (an unpickled proxy, in an actor or a
        # task): attribute reads in a coroutine are awaitable, elsewhere they block.
        self._asynchronous = asynchronous

    @property
    def key(self) -> str:
        """The actor's key (``ClassName-<hex>``), as Dask's."""
        return self._key

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(
                f"{name!r}: an actor proxy forwards public names only (as Dask's); call a "
                "public method that returns it instead"
            )
        handle = self.__dict__.get("_handle")
        if handle is None:
            raise AttributeError(name)
        if name in self._methods:
            call = getattr(handle, name).remote
            self.__dict__[name] = call  # later look-ups skip __getattr__
            return call
        future = handle._dask_getattr.remote(name)
        asynchronous = self._asynchronous
        if asynchronous is None:
            asynchronous = _read_by_coroutine()
        return future if asynchronous else future.result()

    def __dir__(self) -> list:
        return sorted(self._names)

    def __reduce__(self):
        return (Actor, (self._handle, self._key, self._methods, self._names))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Actor) and other._handle == self._handle

    def __hash__(self) -> int:
        return hash(self._handle)

    def __repr__(self) -> str:
        return f"<Actor: {self._handle._class_name}, key={self._key}>"


# -- futures of submit() ----------------------------------------------------------------------


class Future:
    """What ``client.submit`` returns (Dask's ``Future``).

    ``.result(timeout)`` is the task's value, or for ``actor=True`` the
    :class:`Actor` proxy once the actor's constructor has run (raising what it
    raised); ``await future`` gives the same. ``done()``, ``exception()``,
    ``add_done_callback(fn)``, ``status`` and ``key`` are Dask's.
    """

    def __init__(self, key: str, inner: ActorFuture, actor: Actor | None = None) -> None:
        self._key = key
        self._inner = inner
        self._actor = actor

    @property
    def key(self) -> str:
        """The key given to ``submit(key=...)``, else ``name-<hex>``."""
        return self._key

    @property
    def status(self) -> str:
        """``"pending"``, ``"finished"`` or ``"error"``."""
        if not self._inner.done():
            return "pending"
        return "error" if self._inner.exception() is not None else "finished"

    def result(self, timeout: float | None = None) -> Any:
        """The value (or the actor proxy); raises the error, or ``TimeoutError``."""
        value = self._inner.result(timeout)
        return self._actor if self._actor is not None else value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The error, or ``None`` if it succeeded."""
        return self._inner.exception(timeout)

    def done(self) -> bool:
        """True once it finished, either way."""
        return self._inner.done()

    def add_done_callback(self, fn: Callable[[Future], Any]) -> None:
        """Call ``fn(future)`` once it finished (on the thread that reads the reply)."""
        self._inner.add_done_callback(lambda _inner: fn(self))

    def __await__(self):
        yield from self._inner.__await__()
        return self.result()

    def __reduce__(self):
        raise TypeError(
            "a zactor.compat.dask Future cannot be sent to another process: pass its "
            "result() (an actor proxy can travel) instead"
        )

    def __repr__(self) -> str:
        kind = type(self._actor).__name__ if self._actor is not None else "task"
        return f"<Future: {self.status}, type: {kind}, key: {self._key}>"


def _resolve(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Futures given directly as arguments arrive as their results, as Dask's tasks see them."""
    return resolve_arguments(args, kwargs, (Future,), Future.result)


# -- clusters and clients ---------------------------------------------------------------------

#: Dask cluster and client keywords that change nothing a program observes on zactor.
_IGNORED_CLUSTER_OPTIONS = frozenset(
    {
        "threads_per_worker",  # a zactor worker runs its actors' calls on its own threads
        "processes",  # zactor always runs workers as processes
        "dashboard_address",
        "silence_logs",
        "memory_limit",
        "local_directory",
        "set_as_default",
        "timeout",
        "name",
        "heartbeat_interval",
        "direct_to_workers",  # zactor's calls always go straight to the actor's process
        "connection_limit",
    }
)


def _refuse(what: str, name: str, value: Any, why: str) -> NotImplementedError:
    return NotImplementedError(
        f"zactor.compat.dask: {what} option {name}={value!r} is not supported: {why}"
    )


def _check_cluster_options(what: str, options: dict) -> None:
    for name, value in options.items():
        if name not in _IGNORED_CLUSTER_OPTIONS:
            raise _refuse(
                what,
                name,
                value,
                "zactor's cluster takes n_workers (worker processes) and an address; leave it out",
            )


def _running() -> bool:
    try:
        _runtime.current()
    except ClusterError:
        return False
    return True


class _Done:
    """An awaitable that is already done (``await client.close()`` in asynchronous code)."""

    def __await__(self):
        return None
        yield


class _ClosedOnExit:
    """``with``/``async with`` close it, and ``await`` gives it back, as Dask's clusters
    and clients do (``await Client(asynchronous=True)``). Subclasses define ``close``."""

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()

    def __await__(self):
        return self
        yield


class LocalCluster(_ClosedOnExit):
    """Dask's ``LocalCluster``: zactor's embedded cluster of ``n_workers`` worker processes.

    ``Client(cluster)`` connects to it; ``cluster.close()`` (or leaving a
    ``with`` block) stops it. Dask keywords about threads, memory, logging and
    the dashboard are accepted and ignored; others raise ``NotImplementedError``.
    """

    def __init__(self, n_workers: int | None = None, *, asynchronous: bool = False, **options):
        _check_cluster_options("LocalCluster", options)
        zactor.init(num_workers=n_workers)
        self.asynchronous = asynchronous
        self._closed = False

    def close(self) -> Any:
        """Stop the cluster (every actor in it)."""
        if not self._closed:
            self._closed = True
            zactor.shutdown()
        return _Done() if self.asynchronous else None


class Client(_ClosedOnExit):
    """Dask's ``Client`` over zactor.

    ``Client()`` starts an embedded zactor cluster (``n_workers`` worker
    processes, default one per CPU) unless this process already has one,
    which it then shares; ``Client(cluster)`` uses a :class:`LocalCluster`;
    ``Client("tcp://host:port")`` or ``Client("host:port")`` joins the
    standing cluster listening there (``zactor start --head --port P``).
    ``close()`` stops only what this client started.

    ``asynchronous=True`` is Dask's asynchronous mode: actor attributes read
    through its proxies return awaitables, and ``await Client(asynchronous=True)``,
    ``async with`` and ``await client.close()`` work.
    """

    def __init__(
        self,
        address: str | LocalCluster | None = None,
        *,
        asynchronous: bool = False,
        n_workers: int | None = None,
        **options: Any,
    ) -> None:
        _check_cluster_options("Client", options)
        self.asynchronous = asynchronous
        self._owns = False
        if isinstance(address, LocalCluster):
            if n_workers is not None:
                raise ValueError("n_workers belongs to the LocalCluster, not to Client(cluster)")
        elif address is None:
            if not _running():
                zactor.init(num_workers=n_workers)
                self._owns = True
        else:
            if n_workers is not None:
                raise ValueError(
                    f"n_workers only applies to a cluster the client starts; the cluster at "
                    f"{address!r} has its own: leave n_workers out"
                )
            zactor.init(address if "://" in address or address == "auto" else f"tcp://{address}")
            self._owns = True
        self._closed = False

    # -- submitting ---------------------------------------------------------------------------

    def submit(
        self,
        func: Any,
        *args: Any,
        key: str | None = None,
        workers: Any = None,
        resources: dict | None = None,
        retries: int | None = None,
        priority: int = 0,
        fifo_timeout: Any = None,
        allow_other_workers: bool = False,
        actor: bool = False,
        actors: bool = False,
        pure: bool | None = None,
        **kwargs: Any,
    ) -> Future:
        """Create an actor (``actor=True``, or Dask's ``actors=True``) or run a task.

        ``resources`` reserves custom resources (``{"GPU": 1}``) for the actor or
        task; ``retries`` (tasks only) re-runs a task whose worker died.
        ``priority``, ``fifo_timeout`` and ``pure`` change nothing here;
        ``workers`` is not supported (zactor places work itself).
        """
        if workers is not None:
            raise _refuse(
                "submit",
                "workers",
                workers,
                "zactor places actors and tasks itself; ask for resources={...} instead",
            )
        args, kwargs = _resolve(args, kwargs)
        name = getattr(func, "__name__", type(func).__name__)
        key = key or f"{name}-{uuid.uuid4().hex}"
        if actor or actors:
            return self._create_actor(func, args, kwargs, key, resources, retries)
        options = {}
        if resources:
            options["resources"] = resources
        if retries:
            options["max_retries"] = retries
        task = zactor.remote(func)  # a stateless task
        target = task.options(**options) if options else task
        return Future(key, target.remote(*args, **kwargs))

    def _create_actor(self, cls, args, kwargs, key, resources, retries) -> Future:
        if not isinstance(cls, type):
            raise TypeError(
                f"submit(..., actor=True) takes a class, got {type(cls).__name__} {cls!r}"
            )
        if retries:
            raise _refuse(
                "submit",
                "retries",
                retries,
                "an actor is not re-run; to survive its worker's death create it as a "
                "zactor actor with max_restarts (see docs/failures.md)",
            )
        zclass = _actor_class(cls)
        target = zclass.options(resources=resources) if resources else zclass
        handle = target.remote(*args, **kwargs)
        names = tuple(n for n in dir(cls) if not n.startswith("_"))
        methods = frozenset(n for n in method_names(cls) if not n.startswith("_"))
        proxy = Actor(handle, key, methods, names, self.asynchronous)
        return Future(key, handle._dask_ready.remote(), proxy)

    def map(self, func: Any, *iterables: Iterable, key: Any = None, **kwargs: Any) -> list:
        """``submit(func, *values, **kwargs)`` for each tuple of values; the list of futures.

        ``key`` may be a list of keys, one a submission."""
        keys = key if isinstance(key, (list, tuple)) else None
        futures = []
        for i, values in enumerate(zip(*iterables)):
            one_key = keys[i] if keys is not None else None
            futures.append(self.submit(func, *values, key=one_key, **kwargs))
        return futures

    def gather(self, futures: Any, errors: str = "raise") -> Any:
        """The results of a future, or of a list of them (in order).

        ``errors="skip"`` leaves out the ones that failed."""
        if isinstance(futures, Future):
            return futures.result()
        if errors not in ("raise", "skip"):
            raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
        out = []
        for f in futures:
            if errors == "skip" and f.exception() is not None:
                continue
            out.append(f.result())
        return out

    # -- lifetime -----------------------------------------------------------------------------

    def close(self) -> Any:
        """Disconnect; stops the cluster if this client started it. Awaitable when asynchronous."""
        if not self._closed:
            self._closed = True
            if self._owns:
                zactor.shutdown()
        return _Done() if self.asynchronous else None

    def shutdown(self) -> Any:
        """Stop the cluster, whoever started it (Dask's ``Client.shutdown``)."""
        self._owns = True
        return self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("asynchronous" if self.asynchronous else "running")
        return f"<Client: zactor, {state}>"


__all__ = ["Actor", "ActorFuture", "Client", "Future", "LocalCluster"]
