"""Pools of actors: Ray's :class:`ActorPool` and the consistent-hash :class:`HashPool`.

* :class:`ActorPool` spreads *stateless* work (every actor can do every call)
  over a fixed set of actors, Ray's ``ray.util.ActorPool`` semantics: submit
  ``fn(actor, value)`` calls, get results back in submit order or as they
  complete. An actor is busy until its call's result has been taken; work
  waits in a queue while every actor is busy.
* :class:`HashPool` routes *keyed state* to the actor that owns the key (the
  seeds' ``HashActorPool``), with a mapping that is the same in every process,
  on every machine and run (never Python's salted ``hash()``), and that moves
  only about ``1/(n+1)`` of the keys when the pool grows from ``n`` to ``n+1``.

Example::

    pool = zactor.ActorPool([Doubler.remote(), Doubler.remote()])
    list(pool.map(lambda a, v: a.double.remote(v), [1, 2, 3]))      # [2, 4, 6]

    bank = zactor.HashPool(SketchyBank, size=10)
    bank.for_key("timbit").create_account.remote("timbit")
    bank.for_key("timbit").deposit.remote("timbit", 42.0).result()   # 42.0

See ``docs/pools.md`` for when to use which, how keys map and what ``resize`` does.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Iterable, Iterator

from zactor.caller.actor_class import ActorClass, ActorOptions, remote
from zactor.caller.future import Future, wait
from zactor.caller.handle import ActorHandle
from zactor.errors import GetTimeoutError
from zactor.wire import hotpath as _hotpath

__all__ = ["ActorPool", "HashPool", "shard_of", "shard_of_key"]

_monotonic = __import__("time").monotonic
# Bound once: ``for_key`` runs once per routed call.
_shard_of_key = _hotpath.shard_of_key
_shard_of = _hotpath.shard_of


# -- ActorPool ---------------------------------------------------------------------------------


class _Failed:
    """The result of a submission whose ``fn`` raised when it was dispatched."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _pending_futures(ref: Any) -> list:
    """The futures of one submission whose replies have not arrived (reading those waiting)."""
    if type(ref) is Future:
        return [] if ref.done() else [ref]
    if type(ref) is _Failed:
        return []
    return [f for f in ref if not f.done()]


def _value(ref: Any) -> Any:
    if type(ref) is Future:
        return ref.result()
    if type(ref) is _Failed:
        raise ref.exc
    return [f.result() for f in ref]


def _check_ref(ref: Any) -> Any:
    """What ``fn(actor, value)`` returned: a Future, or a list/tuple of Futures."""
    if type(ref) is Future:
        return ref
    if isinstance(ref, (list, tuple)) and all(isinstance(f, Future) for f in ref):
        return list(ref)
    raise TypeError(
        "ActorPool.submit: fn(actor, value) must return the zactor.Future of a call, "
        f"e.g. lambda a, v: a.method.remote(v); it returned {type(ref).__name__}: {ref!r}"
    )


def _no_actor_error() -> ValueError:
    return ValueError("ActorPool has queued work but no actor to run it: push() an actor first")


class ActorPool:
    """A fixed set of interchangeable actors that work is spread over (Ray's ``ActorPool``).

    ``submit(fn, value)`` runs ``fn(actor, value)`` (which calls a method and
    returns its Future) on an idle actor, or queues it while no actor is idle.
    ``get_next()`` returns results in submit order, ``get_next_unordered()``
    in completion order. An error raised by one call is raised by the
    ``get_next`` that returns that call's result, and by nothing else.

    As in Ray, an actor is busy from the moment a call is dispatched to it
    until ``get_next``/``get_next_unordered`` returns that call's result (or
    drops it, see ``ignore_if_timedout``), not merely until the call finishes:
    ``has_free()`` and ``pop_idle()`` count only actors whose results have been
    taken. Queued work starts, in submit order, at the moment a result taken
    that way frees an actor or ``push()`` adds one; nothing starts it in the
    background, so with every actor's result left untaken it stays queued.

    An idle pool (nothing submitted and not yet returned) is picklable: pass it
    to an actor, as the seeds do. The pool is not thread-safe: use it from one
    thread at a time.

    Example::

        pool = ActorPool([Worker.remote()])
        pool.submit(lambda a, v: a.double.remote(v), 1)
        pool.has_free()                               # False, even once the call is done
        pool.get_next()                               # 2
        pool.has_free()                               # True
    """

    def __init__(self, actors: Iterable[ActorHandle]) -> None:
        self._idle: list = []
        self._busy: dict[int, Any] = {}  # index -> actor, dispatched, result not taken yet
        self._results: dict[int, Any] = {}  # index -> ref, dispatched, not yet returned
        self._queued: deque = deque()  # (index, fn, value), not yet dispatched
        self._order: deque = deque()  # indexes in submit order, some already returned
        self._next_index = 0
        for actor in actors:
            self.push(actor)

    # -- bookkeeping --------------------------------------------------------------------------
    # Invariant after every public call: no actor is idle while work is queued. Work is
    # dispatched in submit order, so every queued submission is younger than every
    # dispatched one, and the oldest pending submission is queued only in a pool that has
    # no actor at all.

    def _free(self, index: int) -> None:
        """Return the actor of submission ``index`` to the idle ones (Ray's ``_return_actor``)."""
        actor = self._busy.pop(index, None)
        if actor is not None:
            self._idle.append(actor)
        self._dispatch()

    def _dispatch(self) -> None:
        queued = self._queued
        while queued and self._idle:
            index, fn, value = queued.popleft()
            actor = self._idle.pop()
            try:
                ref = _check_ref(fn(actor, value))
            except Exception as exc:  # this submission's error, raised by its get_next
                self._idle.append(actor)
                self._results[index] = _Failed(exc)
                continue
            self._results[index] = ref
            self._busy[index] = actor

    def _actors(self) -> list:
        return self._idle + list(self._busy.values())

    def _take(self, index: int) -> Any:
        """Return submission ``index``'s result (or raise its error), freeing its actor."""
        ref = self._results.pop(index)
        self._free(index)
        return _value(ref)

    def _drop(self, index: int) -> None:
        """Forget submission ``index``: its result is never returned.

        As in Ray, its actor is idle again at once, even if the call still
        runs; a call given to that actor next waits behind it on the actor.
        """
        if self._results.pop(index, None) is not None:
            self._free(index)
            return
        for i, item in enumerate(self._queued):
            if item[0] == index:
                del self._queued[i]
                break

    def _oldest(self) -> int:
        order, results = self._order, self._results
        queued_first = self._queued[0][0] if self._queued else None
        while order:
            index = order[0]
            if index in results or index == queued_first:
                return index
            order.popleft()  # already returned by get_next_unordered
        raise StopIteration("No more results to get")

    # -- Ray's API ----------------------------------------------------------------------------

    def submit(self, fn: Callable[[ActorHandle, Any], Future], value: Any) -> None:
        """Run ``fn(actor, value)`` on an idle actor, or queue it until one is freed.

        ``fn`` must call one method and return its Future, e.g.
        ``lambda a, v: a.double.remote(v)``. The actor stays busy until
        ``get_next``/``get_next_unordered`` returns this call's result. A
        queued ``fn`` is called when taking a result frees an actor (or
        ``push`` adds one). If ``fn`` raises here, the error is raised at once
        and nothing is submitted; if a queued ``fn`` raises, the ``get_next``
        that returns its result raises it.
        """
        index = self._next_index
        if self._idle and not self._queued:
            actor = self._idle.pop()
            try:
                ref = _check_ref(fn(actor, value))
            except BaseException:
                self._idle.append(actor)
                raise
            self._results[index] = ref
            self._busy[index] = actor
        else:
            self._queued.append((index, fn, value))
        self._next_index = index + 1
        self._order.append(index)

    def has_next(self) -> bool:
        """Whether some submitted work's result has not been returned yet."""
        return bool(self._results or self._queued)

    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """The result of the oldest submission not returned yet (submit order).

        Returning it frees the call's actor and starts the oldest queued
        submission, if any. Raises what that call raised, ``StopIteration`` if
        nothing is pending, ``ValueError`` if the oldest submission is queued
        in a pool with no actor, and :class:`zactor.GetTimeoutError` (a
        ``TimeoutError``) if the result is not ready within ``timeout``
        seconds: the pool then stays as it was and the next ``get_next``
        returns the same result. With ``ignore_if_timedout=True`` (Ray's flag)
        a timed-out result is dropped instead, and its actor freed at once
        although its call may still run.
        """
        if not self.has_next():
            raise StopIteration("No more results to get")
        index = self._oldest()
        ref = self._results.get(index)
        if ref is None:
            raise _no_actor_error()
        futures = _pending_futures(ref)
        if futures:
            ready, _ = wait(futures, num_returns=len(futures), timeout=timeout)
            if len(ready) < len(futures):
                if ignore_if_timedout:
                    self._drop(index)
                raise GetTimeoutError(
                    f"ActorPool.get_next: timed out after {timeout} s waiting for result "
                    f"#{index}" + (" (ignored)" if ignore_if_timedout else "")
                )
        return self._take(index)

    def get_next_unordered(
        self, timeout: float | None = None, ignore_if_timedout: bool = False
    ) -> Any:
        """The result of any finished submission not returned yet (completion order).

        Frees the call's actor and raises like :meth:`get_next`. With
        ``ignore_if_timedout=True`` a timeout drops the oldest pending result.
        """
        if not self.has_next():
            raise StopIteration("No more results to get")
        deadline = None if timeout is None else _monotonic() + timeout
        while True:
            # Whether a submission is finished and which futures to wait on are read in
            # one pass: Future.done() reads the replies already waiting, and a future
            # read here must be taken now, not left out of the wait below.
            finished = None
            pending: list = []
            for index, ref in self._results.items():
                futures = _pending_futures(ref)
                if not futures:
                    finished = index
                    break
                pending += futures
            if finished is not None:
                return self._take(finished)
            if not pending:
                raise _no_actor_error()
            remaining = None if deadline is None else max(0.0, deadline - _monotonic())
            ready, _ = wait(pending, num_returns=1, timeout=remaining)
            if not ready:
                if ignore_if_timedout:
                    self._drop(self._oldest())
                raise GetTimeoutError(
                    f"ActorPool.get_next_unordered: timed out after {timeout} s"
                    + (" (oldest result ignored)" if ignore_if_timedout else "")
                )

    def map(self, fn: Callable[[ActorHandle, Any], Future], values: Iterable) -> Iterator:
        """Submit ``fn(actor, v)`` for every value; yield the results in order.

        As in Ray, the results of earlier submissions not returned yet are
        dropped first, which frees their actors and so starts the earlier
        submissions still queued, whose results are dropped too (in a pool
        with no actor they are dropped unstarted). Unlike Ray's, it raises no
        earlier call's error: an error is raised only by the ``get_next``
        that returns that call's result. Everything is then submitted at
        once, past the idle actors into the queue; each result the generator
        yields frees an actor and starts the next queued value.
        """
        self._discard_pending()
        for v in values:
            self.submit(fn, v)

        def results():
            while self.has_next():
                yield self.get_next()

        return results()

    def map_unordered(self, fn: Callable[[ActorHandle, Any], Future], values: Iterable) -> Iterator:
        """Like :meth:`map`, yielding the results in completion order.

        Earlier results are dropped as :meth:`map` drops them. (Ray's
        ``map_unordered`` instead waits for each earlier result and raises its
        error, if any; here an error is raised only by a ``get_next`` that
        returns that call's result.)
        """
        self._discard_pending()
        for v in values:
            self.submit(fn, v)

        def results():
            while self.has_next():
                yield self.get_next_unordered()

        return results()

    def _discard_pending(self) -> None:
        """Drop every result not returned yet, starting the queued work first (Ray's map).

        Dropping the oldest result frees its actor, which starts the oldest
        queued submission, whose result is dropped in turn: submitted calls
        still run (before map's own, on the same actors); only their results
        are lost. Work still queued after that is in a pool with no actor,
        where nothing could run it: it is dropped unstarted.
        """
        results = self._results
        while results:
            self._drop(next(iter(results)))
        self._queued.clear()
        self._order.clear()

    def has_free(self) -> bool:
        """Whether an actor is idle and no work is queued (a submit would start at once).

        An actor is idle once the result of its last call has been returned by
        ``get_next``/``get_next_unordered`` (or dropped): a call that has
        finished but whose result has not been taken keeps its actor busy.
        """
        return bool(self._idle) and not self._queued

    def pop_idle(self) -> ActorHandle | None:
        """Remove an idle actor from the pool and return it; ``None`` unless :meth:`has_free`."""
        if self.has_free():
            return self._idle.pop()
        return None

    def push(self, actor: ActorHandle) -> None:
        """Add an actor to the pool; it starts the oldest queued work at once.

        Raises ``ValueError`` if the actor is already in the pool.
        """
        if not isinstance(actor, ActorHandle):
            raise TypeError(f"ActorPool takes actor handles, got {type(actor).__name__}")
        if actor in self._actors():
            raise ValueError(f"{actor!r} already belongs to this ActorPool")
        self._idle.append(actor)
        self._dispatch()

    # -- extras -------------------------------------------------------------------------------

    @property
    def actors(self) -> list:
        """Every actor of the pool, idle or busy (a new list)."""
        return self._actors()

    def __len__(self) -> int:
        return len(self._idle) + len(self._busy)

    def __reduce__(self):
        if self._results or self._queued:
            raise TypeError(
                f"an ActorPool with work in flight cannot be pickled ({len(self._results)} "
                f"results not returned, {len(self._queued)} queued): its results are "
                "futures, which stay in this process. Fetch them with get_next() before "
                "passing the pool on"
            )
        return (ActorPool, (list(self._idle),))

    def __repr__(self) -> str:
        return (
            f"<zactor.ActorPool {len(self)} actors: {len(self._idle)} idle, "
            f"{len(self._busy)} busy, {len(self._queued)} queued, "
            f"{len(self._results)} results pending>"
        )


# -- HashPool ----------------------------------------------------------------------------------


def shard_of_key(key: Any, n: int) -> int:
    """The shard (0..n-1) a key belongs to among ``n``: what ``HashPool.for_key`` uses.

    For code that has no pool at hand, e.g. an actor method that exports the
    keys that belong elsewhere after a resize.
    """
    return _hotpath.shard_of_key(key, n)


def shard_of(keys: Any, n: int):
    """The shard (0..n-1) of each key among ``n``: a numpy int64 array (see ``HashPool``)."""
    return _hotpath.shard_of(keys, n)


def _factory_of(target: Any):
    if isinstance(target, (ActorClass, ActorOptions)):
        return target
    if isinstance(target, type):
        return remote(target)  # a plain class, as the seed's HashActorPool takes
    return None


class HashPool(_hotpath.KeyRouter):
    """Actors that each own the keys that hash to them (the seeds' ``HashActorPool``).

    ``HashPool(ActorClass, size=N, *args, **kwargs)`` creates ``N`` actors with
    ``ActorClass.remote(*args, **kwargs)`` (an ``ActorClass.options(...)`` or
    a plain class work too); ``HashPool([handle, ...])`` wraps existing ones.

    A key (an ``int`` in -2**63..2**64-1, a ``str`` or ``bytes``; numpy
    integers count as ints) belongs to shard ``jump_hash(xxh64(key), N)``:
    the same in every process and run, whatever ``PYTHONHASHSEED`` is. ``7``,
    ``np.int64(7)`` and ``np.uint64(7)`` are the same key; ``"7"`` and ``b"7"``
    are two other keys. :meth:`for_key` returns the actor's own handle, so
    ``pool.for_key(k).m.remote(...)`` costs what ``handle.m.remote(...)`` does.

    A HashPool is picklable (its handles, and the class and arguments
    :meth:`resize` creates new actors with).

    Example::

        bank = HashPool(SketchyBank, size=10)
        bank.for_key("timbit").create_account.remote("timbit")
        bank.shard_of(["timbit", "holden"])          # array([s1, s2])
    """

    def __init__(self, cls_or_handles: Any, size: int | None = None, *args: Any, **kwargs: Any):
        factory = _factory_of(cls_or_handles)
        if factory is None:
            if isinstance(cls_or_handles, ActorHandle):
                raise TypeError("HashPool takes a list of handles, not one handle")
            handles = list(cls_or_handles)
            if size is not None or args or kwargs:
                raise TypeError("HashPool(list_of_handles) takes no size or constructor arguments")
            for h in handles:
                if not isinstance(h, ActorHandle):
                    raise TypeError(
                        f"HashPool takes an actor class or a list of actor handles; "
                        f"got a {type(h).__name__} in the list"
                    )
            args, kwargs = (), {}
        else:
            if size is None:
                raise TypeError("HashPool(ActorClass, size=N, ...): size is required")
            size = _check_size(size)
            handles = [factory.remote(*args, **kwargs) for _ in range(size)]
        if not handles:
            raise ValueError("a HashPool needs at least one actor")
        _check_size(len(handles))
        self._factory = factory
        self._args = tuple(args)
        self._kwargs = dict(kwargs)
        self._set_actors(handles)

    def _set_actors(self, handles: list) -> None:
        """Install the actor list, and route keys to it."""
        self._actors: list = handles
        self._set_targets(handles)

    # -- routing ------------------------------------------------------------------------------
    # for_key and for_keys are the compiled KeyRouter's: no Python frame between a
    # call and its actor's handle.

    #: The seeds' name for :meth:`for_key`.
    actor_for_key = _hotpath.KeyRouter.for_key

    def shard_of_key(self, key: Any) -> int:
        """The shard index (0..size-1) of one key."""
        return _shard_of_key(key, len(self._actors))

    def shard_of(self, keys: Any):
        """The shard index of each key: a numpy int64 array (vectorised in Cython).

        ``keys`` is a list of int/str/bytes keys or a 1-d numpy integer array.
        """
        return _shard_of(keys, len(self._actors))

    # -- membership ---------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """How many actors (shards) the pool has."""
        return len(self._actors)

    @property
    def actors(self) -> list:
        """The actors, shard 0 first (a new list)."""
        return list(self._actors)

    def __len__(self) -> int:
        return len(self._actors)

    def __getitem__(self, shard: int) -> ActorHandle:
        return self._actors[shard]

    def __iter__(self) -> Iterator[ActorHandle]:
        return iter(list(self._actors))

    def resize(self, n: int, handles: Iterable[ActorHandle] | None = None) -> list:
        """Grow or shrink the pool to ``n`` actors; return the actors removed.

        Growing creates ``n - size`` actors of the pool's class with the
        pool's constructor arguments (or appends ``handles``, which a pool
        made from handles needs). Shrinking removes the last actors and
        returns their handles: the pool never kills an actor. The keys that
        change shard (about ``|n - size| / max(n, size)`` of them, all to or
        from the added or removed actors) are the user's to move: see
        ``docs/pools.md`` for an ``export_keys`` method that does it.
        """
        n = _check_size(n)
        old = len(self._actors)
        if n > old:
            if handles is not None:
                extra = list(handles)
                if len(extra) != n - old or not all(isinstance(h, ActorHandle) for h in extra):
                    raise ValueError(f"resize({n}) of a pool of {old} needs {n - old} handles")
            elif self._factory is None:
                raise ValueError(
                    "this HashPool wraps existing handles and has no class to create actors "
                    f"from: call resize({n}, handles=[...]) with {n - old} new handles"
                )
            else:
                extra = [self._factory.remote(*self._args, **self._kwargs) for _ in range(n - old)]
            self._set_actors(self._actors + extra)
            return []
        if handles is not None:
            raise ValueError("handles are only taken when the pool grows")
        removed = self._actors[n:]
        self._set_actors(self._actors[:n])
        return removed

    def __reduce__(self):
        return (_rebuild_hash_pool, (list(self._actors), self._factory, self._args, self._kwargs))

    def __repr__(self) -> str:
        return f"<zactor.HashPool {len(self._actors)} actors>"


def _check_size(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"a pool size must be an int, got {type(n).__name__}: {n!r}")
    if n < 1 or n > _hotpath.MAX_SHARDS:
        raise ValueError(f"a pool size must be in 1..{_hotpath.MAX_SHARDS}, got {n}")
    return n


def _rebuild_hash_pool(actors, factory, args, kwargs) -> HashPool:
    pool = HashPool.__new__(HashPool)
    pool._set_actors(list(actors))
    pool._factory = factory
    pool._args = tuple(args)
    pool._kwargs = dict(kwargs)
    return pool
