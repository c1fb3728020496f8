"""Pools of actors: Ray's :class:`ActorPool` and the consistent-hash :class:`HashPool`.

* :class:`ActorPool` spreads *stateless* work (every actor can do every call)
  over a fixed set of actors, Ray's ``ray.util.ActorPool`` semantics: submit
  ``fn(actor, value)`` calls, get results back in submit order or as they
  complete; work waits in a queue while every actor is busy.
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


def _is_done(ref: Any) -> bool:
    if type(ref) is Future:
        return ref.done()
    if type(ref) is _Failed:
        return True
    return all(f.done() for f in ref)


def _pending_futures(ref: Any) -> list:
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


def _noop(_: Future) -> None:
    pass


def _check_ref(ref: Any) -> Any:
    """What ``fn(actor, value)`` returned: a Future, or a list/tuple of Futures.

    Each future gets a no-op done-callback: that makes the runtime read its
    reply as soon as it arrives (a future is otherwise read only when some
    thread waits), so ``has_free()`` and ``submit()`` see actors free up.
    """
    if type(ref) is Future:
        ref.add_done_callback(_noop)
        return ref
    if isinstance(ref, (list, tuple)) and all(isinstance(f, Future) for f in ref):
        for f in ref:
            f.add_done_callback(_noop)
        return list(ref)
    raise TypeError(
        "ActorPool.submit: fn(actor, value) must return the zactor.Future of a call, "
        f"e.g. lambda a, v: a.method.remote(v); it returned {type(ref).__name__}: {ref!r}"
    )


class ActorPool:
    """A fixed set of interchangeable actors that work is spread over (Ray's ``ActorPool``).

    ``submit(fn, value)`` runs ``fn(actor, value)`` (which calls a method and
    returns its Future) on an idle actor, or queues it while every actor is
    busy; queued work is dispatched as actors free up, whenever the pool is
    used (``get_next``, ``submit``, ``has_free`` ...; there is no thread behind
    it). ``get_next()`` returns results in submit order, ``get_next_unordered()``
    in completion order. An error raised by one call is raised by the
    ``get_next`` that returns that call's result, and by nothing else.

    An idle pool (nothing submitted and not yet returned) is picklable: pass it
    to an actor, as the seeds do. The pool is not thread-safe: use it from one
    thread at a time.

    Example::

        pool = ActorPool([Worker.remote(), Worker.remote()])
        pool.submit(lambda a, v: a.double.remote(v), 1)
        pool.submit(lambda a, v: a.double.remote(v), 2)
        pool.get_next(), pool.get_next()             # (2, 4)
    """

    def __init__(self, actors: Iterable[ActorHandle]) -> None:
        self._idle: list = []
        self._busy: dict[int, tuple[Any, Any]] = {}  # index -> (actor, ref), until done
        self._results: dict[int, Any] = {}  # index -> ref, dispatched, not yet returned
        self._queued: deque = deque()  # (index, fn, value), not yet dispatched
        self._order: deque = deque()  # indexes in submit order, some already returned
        self._next_index = 0
        for actor in actors:
            self.push(actor)

    # -- bookkeeping --------------------------------------------------------------------------

    def _harvest(self) -> None:
        """Free the actors whose calls are done; dispatch queued work to idle actors."""
        busy = self._busy
        if busy:
            finished = [i for i, (_, ref) in busy.items() if _is_done(ref)]
            for i in finished:
                self._idle.append(busy.pop(i)[0])
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
            self._busy[index] = (actor, ref)

    def _actors(self) -> list:
        return self._idle + [actor for actor, _ in self._busy.values()]

    def _wait_any(self, deadline: float | None) -> bool:
        """Wait until some busy call finishes; False on timeout.

        Returns True at once when a busy call has finished since the caller
        looked. Collecting the futures to wait on reads the replies already
        waiting (``Future.done``), and a reply read then must not be left out
        of the wait: waiting on the other calls only would miss it (a
        ``get_next_unordered`` then timed out holding a finished result).
        """
        if self._queued and not self._busy:
            raise ValueError(
                "ActorPool has queued work but no actor to run it: push() an actor first"
            )
        pending = []
        for _, ref in self._busy.values():
            futures = _pending_futures(ref)
            if not futures:  # finished meanwhile: the caller harvests it
                return True
            pending += futures
        if not pending:
            return True
        remaining = None if deadline is None else max(0.0, deadline - _monotonic())
        ready, _ = wait(pending, num_returns=1, timeout=remaining)
        return bool(ready)

    def _take(self, index: int) -> Any:
        ref = self._results.pop(index)
        if index in self._busy and _is_done(ref):
            self._idle.append(self._busy.pop(index)[0])
            self._dispatch()
        return _value(ref)

    # -- Ray's API ----------------------------------------------------------------------------

    def submit(self, fn: Callable[[ActorHandle, Any], Future], value: Any) -> None:
        """Run ``fn(actor, value)`` on an idle actor, or queue it until one frees up.

        ``fn`` must call one method and return its Future, e.g.
        ``lambda a, v: a.double.remote(v)``. If ``fn`` raises here, the error
        is raised at once and nothing is submitted.
        """
        self._harvest()
        index = self._next_index
        if self._idle and not self._queued:
            actor = self._idle.pop()
            try:
                ref = _check_ref(fn(actor, value))
            except BaseException:
                self._idle.append(actor)
                raise
            self._results[index] = ref
            self._busy[index] = (actor, ref)
        else:
            self._queued.append((index, fn, value))
        self._next_index = index + 1
        self._order.append(index)

    def has_next(self) -> bool:
        """Whether some submitted work's result has not been returned yet."""
        return bool(self._results or self._queued)

    def _oldest(self) -> int:
        order, results = self._order, self._results
        queued_first = self._queued[0][0] if self._queued else None
        while order:
            index = order[0]
            if index in results or index == queued_first:
                return index
            order.popleft()  # already returned by get_next_unordered
        raise StopIteration("No more results to get")

    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """The result of the oldest submission not returned yet (submit order).

        Raises what that call raised, ``StopIteration`` if nothing is pending,
        and :class:`zactor.GetTimeoutError` (a ``TimeoutError``) if the result
        is not ready within ``timeout`` seconds: the pool stays as it was and
        the same result is returned by the next ``get_next``. With
        ``ignore_if_timedout=True`` (Ray's flag) a timed-out result is dropped
        instead.
        """
        self._harvest()
        if not self.has_next():
            raise StopIteration("No more results to get")
        index = self._oldest()
        deadline = None if timeout is None else _monotonic() + timeout
        while True:
            ref = self._results.get(index)
            if ref is not None and _is_done(ref):
                return self._take(index)
            if not self._wait_any(deadline):
                if ignore_if_timedout:
                    self._drop(index)
                raise GetTimeoutError(
                    f"ActorPool.get_next: timed out after {timeout} s waiting for result "
                    f"#{index}" + (" (ignored)" if ignore_if_timedout else "")
                )
            self._harvest()

    def _drop(self, index: int) -> None:
        self._results.pop(index, None)
        for i, item in enumerate(self._queued):
            if item[0] == index:
                del self._queued[i]
                break

    def get_next_unordered(
        self, timeout: float | None = None, ignore_if_timedout: bool = False
    ) -> Any:
        """The result of any finished submission not returned yet (completion order).

        Raises like :meth:`get_next`. With ``ignore_if_timedout=True`` a
        timeout drops the oldest pending result.
        """
        self._harvest()
        if not self.has_next():
            raise StopIteration("No more results to get")
        deadline = None if timeout is None else _monotonic() + timeout
        while True:
            for index, ref in self._results.items():
                if _is_done(ref):
                    return self._take(index)
            if not self._wait_any(deadline):
                if ignore_if_timedout:
                    self._drop(self._oldest())
                raise GetTimeoutError(
                    f"ActorPool.get_next_unordered: timed out after {timeout} s"
                    + (" (oldest result ignored)" if ignore_if_timedout else "")
                )
            self._harvest()

    def map(self, fn: Callable[[ActorHandle, Any], Future], values: Iterable) -> Iterator:
        """Submit ``fn(actor, v)`` for every value; yield the results in order.

        As in Ray, results still pending from earlier submissions are dropped
        first. Everything is submitted at once (queued past the idle actors);
        results are fetched as the generator is consumed.
        """
        self._discard_pending()
        for v in values:
            self.submit(fn, v)

        def results():
            while self.has_next():
                yield self.get_next()

        return results()

    def map_unordered(self, fn: Callable[[ActorHandle, Any], Future], values: Iterable) -> Iterator:
        """Like :meth:`map`, yielding the results in completion order."""
        self._discard_pending()
        for v in values:
            self.submit(fn, v)

        def results():
            while self.has_next():
                yield self.get_next_unordered()

        return results()

    def _discard_pending(self) -> None:
        self._results.clear()
        self._queued.clear()
        self._order.clear()
        self._harvest()

    def has_free(self) -> bool:
        """Whether an actor is idle and no work is queued (a submit would start at once)."""
        self._harvest()
        return bool(self._idle) and not self._queued

    def pop_idle(self) -> ActorHandle | None:
        """Remove an idle actor from the pool and return it; ``None`` if none is free."""
        if self.has_free():
            return self._idle.pop()
        return None

    def push(self, actor: ActorHandle) -> None:
        """Add an actor to the pool (it picks up queued work at once).

        Raises ``ValueError`` if the actor is already in the pool.
        """
        if not isinstance(actor, ActorHandle):
            raise TypeError(f"ActorPool takes actor handles, got {type(actor).__name__}")
        if actor in self._actors():
            raise ValueError(f"{actor!r} already belongs to this ActorPool")
        self._idle.append(actor)
        self._harvest()

    # -- extras -------------------------------------------------------------------------------

    @property
    def actors(self) -> list:
        """Every actor of the pool, idle or busy (a new list)."""
        return self._actors()

    def __len__(self) -> int:
        return len(self._idle) + len(self._busy)

    def __reduce__(self):
        self._harvest()
        if self._results or self._queued or self._busy:
            raise TypeError(
                f"an ActorPool with work in flight cannot be pickled ({len(self._results)} "
                f"results not returned, {len(self._queued)} queued, {len(self._busy)} calls "
                "running): its results are futures, which stay in this process. Fetch them "
                "with get_next() (or wait for them) before passing the pool on"
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
