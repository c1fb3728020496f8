"""How threaded and async actors run their calls.

An actor's *kind* (see :func:`execution_of`) is fixed when it is created. A
``sync`` actor has no runner: the host's threads run its calls one at a time
(:mod:`zactor.worker.host`). A ``threaded`` actor's calls run on up to
``max_concurrency`` host threads at once (:class:`ThreadedRunner`); an
``async`` actor runs on its own event loop, on a thread of its own
(:class:`AsyncRunner`). A runner drives the calls through its host's call path
(:class:`~zactor.worker.host.ActorHost`), which it is given when it is built.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
import weakref
from collections import deque
from threading import get_ident as _get_ident
from time import perf_counter as _perf_counter
from typing import TYPE_CHECKING

from zactor.errors import _InitFailed
from zactor.wire.protocol import method_names
from zactor.wire.records import CALL as _CALL
from zactor.wire.serialization import loads_call as _loads_call

if TYPE_CHECKING:
    from zactor.worker.host import ActorHost
    from zactor.worker.hosted import HostedActor

log = logging.getLogger("zactor")

#: Calls an async actor runs at once when it was not given ``max_concurrency`` (Ray's default).
DEFAULT_ASYNC_CONCURRENCY = 1000
#: How long an ending async actor's coroutines get to finish after being cancelled (seconds).
ASYNC_STOP_GRACE_S = 2.0


def execution_of(cls: type, max_concurrency: int | None) -> tuple[str, int]:
    """The kind (``"sync"``, ``"threaded"`` or ``"async"``) and concurrency of actors of ``cls``.

    ``max_concurrency`` is the actor's option, None when not given: then 1 for a
    class without ``async def`` methods and :data:`DEFAULT_ASYNC_CONCURRENCY`
    for a class with one (as in Ray).
    """
    asynchronous = _asynchronous.get(cls)
    if asynchronous is None:
        asynchronous = _asynchronous[cls] = _has_async_methods(cls)
    if asynchronous:
        return "async", max_concurrency or DEFAULT_ASYNC_CONCURRENCY
    limit = max_concurrency or 1
    return ("threaded" if limit > 1 else "sync"), limit


#: Whether a class has ``async def`` methods, by class: looked at once per class, as
#: its method names are (``zactor.wire.protocol.method_names``).
_asynchronous: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _has_async_methods(cls: type) -> bool:
    for name in method_names(cls):
        attr = inspect.getattr_static(cls, name)
        fn = getattr(attr, "__func__", attr)  # staticmethod, classmethod
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            return True
    return False


class ThreadedRunner:
    """Runs a threaded actor's calls (``max_concurrency=k > 1``) on up to k host threads.

    It has no threads of its own: each call waiting in the mailbox, up to k,
    puts a *claim* on the actor in the host's ready queue, and the thread that
    takes a claim runs calls of the actor one by one, taking the oldest first,
    until the mailbox is empty. So a short call still runs on the leader that
    read it, with no hand-off; when a call runs long, the watchdog makes
    another thread leader, which takes the next claim and starts the next call
    beside it. Calls therefore start in arrival order, each within a watchdog
    period or so of the one before it running long, and finish in any order.
    """

    __slots__ = ("host", "actor", "limit", "claims", "running")

    def __init__(self, host: ActorHost, actor: HostedActor, limit: int) -> None:
        self.host = host
        self.actor = actor
        self.limit = limit
        self.claims = 0  # claims in the ready queue or held by threads (host._mu)
        self.running = 0  # calls running now (host._mu)

    def queued(self, ready: deque) -> None:
        """A call joined the mailbox (``host._mu`` held): claim another thread if allowed."""
        if self.claims < self.limit:
            self.claims += 1
            ready.append(self.actor)

    def drain(self) -> None:
        """Run the actor's calls on this thread (which holds a claim) until none is waiting."""
        host, actor = self.host, self.actor
        mu = host._mu
        me = _get_ident()
        execute = actor.execute
        took = False
        local = host._local
        local.actor = actor  # the current actor of the calls this thread runs (see _execute)
        try:
            while True:
                with mu:
                    if took:
                        self.running -= 1
                    mailbox = actor.mailbox
                    if not mailbox or actor.dead is not None:
                        self.claims -= 1
                        last = self.claims == 0 and actor.retiring is not None and not mailbox
                        break
                    identity, record, buffers = mailbox.popleft()
                    self.running += 1
                    took = True
                if identity is None:  # a retire mark queued before this runner took over
                    continue
                if host._leader == me:  # a demoted thread must not hide the leader's state
                    host._busy = me
                execute(actor, identity, record, buffers)
                if host._busy == me:
                    host._busy = None
                host._queue_credits()
                host._send_replies()
        finally:
            local.actor = None
        host._send_credits()  # this thread stops running the actor's calls
        if last and actor.dead is None:
            host.finish_retiring(actor)

    def idle(self) -> bool:
        """No call waiting or running (``host._mu`` held)."""
        return self.claims == 0 and not self.actor.mailbox

    def waiting(self) -> int:
        """Calls accepted but not started, beyond the mailbox (none: they wait there)."""
        return 0

    def stop(self, reason: str) -> None:
        """Nothing to stop: the calls running now finish on their host threads."""

    def join(self, timeout: float) -> None:
        """Nothing to wait for (see :meth:`stop`)."""


class AsyncRunner:
    """Runs an async actor on its own asyncio event loop, on a thread of its own.

    Everything of the actor runs on that loop: its constructor (so ``__init__``
    may start background tasks and make asyncio objects), its ``async def``
    methods, and its plain ``def`` methods too, as in Ray. One thread runs all
    of it, so the actor's state needs no locks, however many of its coroutines
    are suspended in an ``await``; a plain method holds up the actor's other
    calls while it runs. Up to ``limit`` calls run at once; the others wait and
    start in arrival order.

    Why a loop and a thread per async actor, not one loop for the whole worker:

    - Actors never wait on each other (DESIGN.md, Execution). A coroutine that
      blocks its loop (``time.sleep``, a blocking ``zactor.get``, a long
      computation) stalls its own actor only. On a shared loop it would stall
      every async actor of the process; that is Dask's design, the anti-example.
    - The host's threads never run async code, so the leader never waits on a
      loop, and the inline path of sync actors is untouched.
    - Ending the actor stops exactly its own loop: its coroutines and
      background tasks are cancelled, and the thread exits.

    The price: a call costs one hand-off to the loop's thread (the leader hands
    over all the calls it read together with one ``call_soon_threadsafe``), and
    each async actor has a thread, idle in ``epoll`` while it has nothing to do.

    A coroutine awaiting another actor's call (``await handle.m.remote()``)
    suspends without holding any thread: the host's leader reads the reply and
    wakes the loop.
    """

    def __init__(self, host: ActorHost, actor: HostedActor, limit: int) -> None:
        self.host = host
        self.actor = actor
        self.limit = limit
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self._main, name=f"zactor-async-{actor.actor_id}", daemon=True
        )
        # Guarded by host._mu:
        self.open = False  # constructed: calls may go to the loop
        self.armed = False  # the actor sits in the host's ready queue
        self.pending = 0  # calls handed to the loop and not finished
        # The loop's thread only:
        self.running = 0
        self._waiting: deque = deque()
        self._tasks: set = set()
        self._flush_armed = False
        self._shutting_down = False
        self.stopping: str | None = None  # why the loop is stopping, once it is

    # -- any thread ----------------------------------------------------------------------

    def start(self, cls: type, args: tuple, kwargs: dict, started) -> None:
        """Start the loop's thread and construct the actor on it; then ``started(error)``."""
        try:
            self.thread.start()
        except BaseException:  # out of threads: the loop never runs, free its sockets
            self.loop.close()
            raise
        self.loop.call_soon_threadsafe(self._open, cls, args, kwargs, started)

    def queued(self, ready: deque) -> None:
        """A call joined the mailbox (``host._mu`` held): have the leader hand it over."""
        if self.open and not self.armed:
            self.armed = True
            ready.append(self.actor)

    def drain(self) -> None:
        """Hand every call in the mailbox to the loop (the leader calls this)."""
        actor = self.actor
        with self.host._mu:
            self.armed = False
            items = actor.mailbox
            if not items or actor.dead is not None:
                return
            actor.mailbox = deque()
            self.pending += len(items)
        try:
            self.loop.call_soon_threadsafe(self._accept, items)
        except RuntimeError:  # the loop is closed: the actor ended meanwhile
            for identity, record, _buffers in items:
                self.host._reply_died(identity, record, actor.dead or self.stopping or "ended")

    def idle(self) -> bool:
        """No call waiting, handed over or running (``host._mu`` held)."""
        return self.pending == 0 and not self.armed and not self.actor.mailbox

    def waiting(self) -> int:
        """Calls handed to the loop that wait for a free slot (``max_concurrency``)."""
        return len(self._waiting)

    def stop(self, reason: str) -> None:
        """Cancel the actor's coroutines (their callers get ActorDiedError with
        ``reason``) and its background tasks, then stop the loop; the thread exits."""
        if self.stopping is not None:
            return
        self.stopping = reason
        try:
            self.loop.call_soon_threadsafe(self._shutdown)
        except RuntimeError:  # already closed
            pass

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for the loop's thread to exit (after :meth:`stop`)."""
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout)

    # -- the loop's thread ---------------------------------------------------------------

    def _main(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        self.host._local.actor = self.actor  # every call on this thread is this actor's
        try:
            loop.run_forever()
        finally:
            try:
                _cancel_all_tasks(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            except Exception:  # the actor is over: log and let the thread go
                log.exception("zactor: stopping the event loop of actor %s", self.actor)
            finally:
                self.host._send_credits()
                asyncio.set_event_loop(None)
                loop.close()
                self.host._local.actor = None

    def _open(self, cls: type, args: tuple, kwargs: dict, started) -> None:
        host, actor = self.host, self.actor
        error = actor.construct(host, cls, args, kwargs)
        with host._mu:
            self.open = True
            items = actor.mailbox  # calls that arrived while it was being constructed
            actor.mailbox = deque()
            self.pending += len(items)
            ended = actor.dead
        if ended is not None:  # killed before this runner was attached to it
            self.stop(ended)
        self._accept(items)
        started(error)

    def _accept(self, items) -> None:
        for item in items:
            if self.stopping is not None:
                self.host._reply_died(item[0], item[1], self.stopping)
                self._flush_soon()
            elif self.running < self.limit:
                self._start(item)
            else:
                self._waiting.append(item)

    def _start(self, item: tuple) -> None:
        self.running += 1
        task = self.loop.create_task(self._call(*item))
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._done, item))

    def _done(self, item: tuple, task: asyncio.Task) -> None:
        host, actor = self.host, self.actor
        self._tasks.discard(task)
        self.running -= 1
        if task.cancelled():  # cancelled before it began: _call never replied
            host._reply_died(item[0], item[1], actor.dead or self.stopping or "cancelled")
        if self._waiting and self.stopping is None:
            self._start(self._waiting.popleft())
        self._flush_soon()
        with host._mu:
            self.pending -= 1
            last = actor.retiring is not None and actor.dead is None and self.idle()
        if last:
            host.finish_retiring(actor)

    async def _call(self, identity: bytes, record: tuple, buffers) -> None:
        host, actor = self.host, self.actor
        kind, _flags, method, call_id, actor_id, payload, start, count = record
        reason = actor.dead or self.stopping
        if reason is not None:
            host._reply_died(identity, record, reason)
            return
        durable = actor.durable if actor.init_error is None else None
        if durable is not None and kind == _CALL:
            seen = durable.begin(identity, call_id)
            if seen is not None:  # a retried call already applied: its recorded reply
                host._reply_seen(actor, identity, record, seen)
                return
        started = _perf_counter()
        try:
            if actor.init_error is not None:
                raise _InitFailed()
            args, kwargs = _loads_call(payload, buffers[start : start + count] if count else ())
            result = actor.methods[method](*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
        except asyncio.CancelledError as exc:
            reason = actor.dead or self.stopping
            if reason is None:  # the method's own code cancelled it: an error like any
                host._raised(actor, identity, record, exc)
                return
            # The actor was killed or ended while this call ran.
            if durable is not None:  # nothing recorded: a retry runs it again
                durable.forget_running(identity, call_id)
            host._reply_died(identity, record, reason)
            return
        except BaseException as exc:
            host._raised(actor, identity, record, exc)
            return
        # Recorded and saved (when due) on the loop, before any other coroutine runs.
        host._returned(actor, identity, record, result)
        actor.samples.append(_perf_counter() - started)
        actor.sampled += 1

    def _flush_soon(self) -> None:
        """Send the replies queued on this thread once the loop's current round is done,
        so calls finishing together share a message."""
        if not self._flush_armed:
            self._flush_armed = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_armed = False
        self.host._send_credits()

    def _shutdown(self) -> None:
        if self._shutting_down:
            return
        self._shutting_down = True
        while self._waiting:
            identity, record, _buffers = self._waiting.popleft()
            self.host._reply_died(identity, record, self.stopping)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        self.loop.create_task(self._stop_when_done(tasks))

    async def _stop_when_done(self, tasks: list) -> None:
        if tasks:
            await asyncio.wait(tasks, timeout=ASYNC_STOP_GRACE_S)
        self.host._send_credits()
        self.loop.stop()


def _cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel the tasks still on ``loop`` (an ended actor's background tasks) and let
    them unwind, for at most :data:`ASYNC_STOP_GRACE_S`."""
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.wait(tasks, timeout=ASYNC_STOP_GRACE_S))
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.warning(
                "zactor: a task of ended actor %r raised while cancelled: %r",
                task,
                task.exception(),
            )
