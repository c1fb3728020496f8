"""The worker side: hosting actors behind one inbox, and the worker process.

How calls run (the core design problem: actors never wait on each other, and a
short call costs no thread hand-off):

- One *leader* thread reads the inbox, puts each call in its actor's mailbox,
  and then runs the ready actors' calls itself, inline. Replies are batched per
  caller, across the actors it runs one after another, and sent when the
  leader goes back to the inbox, or sooner: every :data:`REPLY_LINGER_S`
  between actors, before a slow actor's run, before a call blocks, and by
  the watchdog when a call runs long (see :meth:`ActorHost._run_ready`).
- A *watchdog* thread looks every :data:`WATCHDOG_S` seconds. If the leader has
  been inside user code since its last look, the leader is *demoted*: an idle
  follower thread (or a new one) becomes leader and serves everyone else,
  while the old thread finishes its actor's calls and then becomes a follower.
  A method that blocks waiting on another actor's reply demotes itself at once.

So a short call runs on the thread that read it, and only a call that runs long
pays for a hand-off, once.

An actor runs its calls in one of three ways, its *kind*, fixed at creation:

- ``sync`` (a class without ``async def`` methods, ``max_concurrency`` 1, the
  default): one call at a time, in arrival order, on whichever host thread
  takes the actor, as above.
- ``threaded`` (``max_concurrency=k > 1``, no ``async def`` methods): up to k
  host threads run its calls at once (:class:`~zactor.concurrency.ThreadedRunner`).
  Calls start in arrival order and may finish in any order.
- ``async`` (at least one ``async def`` method): the actor's own event loop on
  its own thread runs everything of it, up to ``max_concurrency`` calls at
  once, default :data:`~zactor.concurrency.DEFAULT_ASYNC_CONCURRENCY`
  (:class:`~zactor.concurrency.AsyncRunner`).

This module holds the host (:class:`HostedActor`, :class:`ActorHost`: the
call path and the threads above), the worker's own service actor
(:class:`WorkerService`) and the worker process's :func:`main`. Beside it:
:mod:`zactor.concurrency` (how threaded and async actors run),
:mod:`zactor.durable` (what an actor with a checkpoint does around each call)
and :mod:`zactor.actor_stats` (the per-actor figures of ``zactor status``).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import threading
import time
from collections import deque
from typing import Any

import cloudpickle
import msgpack

from zactor import serialization, wire
from zactor.actor_stats import SAMPLE_EVERY, SAMPLE_RING, SAMPLE_WARMUP, _actor_stats
from zactor.concurrency import ASYNC_STOP_GRACE_S, AsyncRunner, ThreadedRunner, execution_of
from zactor.durable import _FORGOTTEN, _RUNNING, APPLIED_WINDOW, APPLIED_WINDOW_BYTES, Checkpointer
from zactor.errors import ActorDiedError, ActorExit, _InitFailed, describe_exception
from zactor.runtime import POLL_SLICE_MS, Runtime, set_current

log = logging.getLogger("zactor")

#: How often the watchdog looks at the leader (seconds).
WATCHDOG_S = 0.005
#: Most threads one host runs calls on (leader, followers, demoted threads).
MAX_THREADS = 256
#: Between two actors' runs of calls, replies queued this long ago are sent; until
#: then the replies of the actors run one after another share a message per caller,
#: as one actor's replies to a batch of calls do. They are sent before the run of an
#: actor whose last run took this long; behind a call that runs long unforeseen, the
#: watchdog sends them within one or two of its periods.
REPLY_LINGER_S = 1e-3

_loads_call = serialization.loads_call
_NO_ARGS = serialization.NO_ARGS
_NO_KWARGS: dict = {}  # never written: only ever unpacked with **
_dumps = serialization.dumps
_get_ident = threading.get_ident
_perf_counter = time.perf_counter
_monotonic = time.monotonic
_CALL, _RESULT, _ERROR, _DIED = wire.CALL, wire.RESULT, wire.ERROR, wire.DIED
#: What :meth:`ActorHost.retire` puts at the end of a busy sync actor's mailbox: the
#: actor ends when the thread running its calls gets there. Its actor id (-1) differs
#: from every actor's, which routes it down the drain's rare branch, off the hot path.
_RETIRE_MARK = (None, (-1, 0, 0, 0, -1, None, 0, 0), ())


class HostedActor:
    """One actor living in this process: its instance, mailbox and counters."""

    __slots__ = (
        "actor_id",
        "class_name",
        "name",
        "methods",
        "method_names",
        "instance",
        "mailbox",
        "scheduled",
        "dead",
        "init_error",
        "calls",
        "errors",
        "tell_errors",
        "handle",
        "kind",
        "max_concurrency",
        "runner",
        "retiring",
        "samples",
        "next_sample",
        "durable",
        "slow",
    )

    def __init__(self, actor_id: int, class_name: str, name: str | None = None) -> None:
        self.actor_id = actor_id
        self.class_name = class_name
        self.name = name
        self.methods: list = []
        self.method_names: tuple = ()
        self.instance: Any = None
        self.mailbox: deque = deque()
        self.scheduled = False
        self.dead: str | None = None  # the reason, once dead
        self.init_error: bytes | None = None  # encoded exception the constructor raised
        self.calls = 0
        self.errors = 0
        self.tell_errors = 0
        self.handle = None
        self.kind = "sync"
        self.max_concurrency = 1
        # A ThreadedRunner or AsyncRunner; None for a sync actor. An actor with a runner
        # stays ``scheduled`` for good, so the inline fast path never takes its calls.
        self.runner: ThreadedRunner | AsyncRunner | None = None
        self.retiring: str | None = None  # the reason, while it finishes its queued calls
        self.samples: deque = deque(maxlen=SAMPLE_RING)  # service times (s), for stats()
        self.next_sample = 0  # the value of ``calls`` at which the next call is timed
        # A Checkpointer when the actor has a checkpoint store; its calls then take
        # ActorHost._execute_durable (this attribute is the hot path's one check).
        self.durable: Checkpointer | None = None
        # Its last run of calls took REPLY_LINGER_S or more: replies other actors' calls
        # queued are sent before its next run rather than held behind it.
        self.slow = False

    def bind(self, instance: Any, names: tuple) -> None:
        """Bind the class's methods to ``instance``, looked up on the class.

        Looking them up on the class means an instance attribute with a
        method's name (the seeds' ``Account`` sets ``self.balance`` beside its
        ``balance()`` method) does not hide the method.
        """
        import inspect

        cls = type(instance)
        self.methods = [inspect.getattr_static(cls, n).__get__(instance, cls) for n in names]
        self.method_names = names
        self.instance = instance

    def construct(self, host: ActorHost, cls: type, args: tuple, kwargs: dict) -> str | None:
        """Build the instance of ``cls`` and bind it; None, or what the constructor raised.

        With a checkpoint store the instance may instead be restored from its
        checkpoint (see :meth:`Checkpointer.open`). If building it raised, every
        call to the actor raises that error (its original type).
        """
        from zactor.actor import method_names

        local = host._local
        previous = getattr(local, "actor", None)
        local.actor = self  # get_runtime_context() works in __init__ (and __setstate__)
        try:
            if self.durable is None:
                instance = cls(*args, **kwargs)
            else:
                instance = self.durable.open(cls, args, kwargs)
            self.bind(instance, method_names(cls))
        except BaseException as exc:
            return self.fail_init(exc)
        finally:
            local.actor = previous
        return None

    def fail_init(self, exc: BaseException) -> str:
        """Record a failed construction: the actor's calls raise ``exc``. Returns its text."""
        description = describe_exception(exc, f"constructor of actor {self})")
        self.init_error = _dumps(description)[0]
        return f"{type(exc).__name__}: {exc}"

    def __repr__(self) -> str:
        return f"{self.class_name}(id={self.actor_id})"


class ActorHost:
    """Runs the actors of one process; its leader thread holds the runtime's reader role."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.actors: dict[int, HostedActor] = {}
        self.tombstones: dict[int, str] = {}
        self._retiring: dict[int, HostedActor] = {}  # out of ``actors``, finishing their calls
        self._mu = threading.Lock()
        self._followers = threading.Condition(self._mu)
        self._ready: deque = deque()
        self._leader: int | None = None
        self._busy: int | None = None  # the thread running user code, while it leads
        self._turn = 0  # bumped each time the leader goes back to the inbox
        self._idle = 0
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._reply_boxes: dict[bytes, Any] = {}
        # Calls waiting in the system actor's mailbox behind a creation, by actor id
        # (``_mu`` held): later calls to the actor wait behind them, to keep its order.
        self._parked: dict[int, int] = {}
        self._local = threading.local()
        self._parent_pid: int | None = None
        self._on_orphaned = self.stop
        runtime.call_handler = self._on_calls
        runtime.before_block = self._step_down
        runtime.hold_reader_role()

    # -- actors ---------------------------------------------------------------------------

    def add_system_actor(self, instance: Any) -> HostedActor:
        """Host ``instance`` as actor 0 (the head's registry or a worker's service)."""
        from zactor.actor import method_names

        actor = HostedActor(wire.SYSTEM_ACTOR_ID, type(instance).__name__)
        actor.bind(instance, method_names(type(instance)))
        self.actors[wire.SYSTEM_ACTOR_ID] = actor
        return actor

    def reserve(self, actor_id: int, class_name: str, name: str | None) -> HostedActor:
        """Register an actor about to be constructed; its calls queue until it is.

        An actor restarting here (a new incarnation of an id that ended here)
        replaces its tombstone: calls for the id reach the new incarnation.
        """
        actor = HostedActor(actor_id, class_name, name)
        actor.scheduled = True  # owned by the constructing thread
        with self._mu:
            self.tombstones.pop(actor_id, None)
            self.actors[actor_id] = actor
        return actor

    def release(self, actor: HostedActor, runner: ThreadedRunner | None = None) -> None:
        """The constructing thread is done with ``actor``: let its queued calls run.

        ``runner`` (a threaded actor's) runs its calls from now on. An async
        actor's :class:`AsyncRunner` releases the actor itself, on its loop.
        """
        with self._mu:
            if runner is not None:
                actor.runner = runner  # ``scheduled`` stays True for good
                for _ in range(len(actor.mailbox)):
                    runner.queued(self._ready)
            elif actor.mailbox:
                self._ready.append(actor)
            else:
                actor.scheduled = False

    def end(self, actor: HostedActor, reason: str) -> bool:
        """Mark ``actor`` dead: queued and later calls get ActorDiedError with ``reason``.

        Stops its runner (an async actor's coroutines are cancelled; calls running
        on threads cannot be interrupted, and their results are discarded). Returns
        False if it had already ended.
        """
        with self._mu:
            queued = self._end_locked(actor, reason)
        if queued is None:
            return False
        self._after_end(actor, queued, reason)
        return True

    def _end_locked(self, actor: HostedActor, reason: str) -> list | None:
        if actor.dead is not None:
            return None
        actor.dead = reason
        self.actors.pop(actor.actor_id, None)
        self._retiring.pop(actor.actor_id, None)
        self.tombstones[actor.actor_id] = reason
        queued = list(actor.mailbox)
        actor.mailbox.clear()
        return queued

    def _after_end(self, actor: HostedActor, queued: list, reason: str) -> None:
        for identity, record, _buffers in queued:
            self._reply_died(identity, record, reason)
        runner = actor.runner
        if runner is not None:
            runner.stop(reason)
        self._send_replies()

    def retire(self, actor: HostedActor, reason: str) -> bool:
        """End ``actor`` gracefully: the calls it already received run and get their
        replies, then it ends with ``reason``; calls arriving from now on get
        ActorDiedError with ``reason`` at once. The end is reported through
        ``on_actor_ended``, as for :meth:`end`. Returns False if it had already ended.
        """
        with self._mu:
            if actor.dead is not None:
                return False
            if actor.retiring is not None:
                return True
            actor.retiring = reason
            # Out of ``actors``: later calls find the tombstone and get ``reason``.
            self.actors.pop(actor.actor_id, None)
            self.tombstones[actor.actor_id] = reason
            self._retiring[actor.actor_id] = actor
            runner = actor.runner
            if runner is not None:
                idle = runner.idle()  # else its runner ends it when its last call is done
            elif actor.scheduled:  # a thread owns it: it ends it on reaching the mark
                idle = False
                actor.mailbox.append(_RETIRE_MARK)
            else:
                idle = True
            queued = self._end_locked(actor, reason) if idle else None
        if queued is not None:
            self._final_checkpoint(actor)  # idle: no call of it runs now
            self._after_end(actor, queued, reason)
            self._notify_ended(actor)
        return True

    def finish_retiring(self, actor: HostedActor) -> None:
        """A retiring actor ran its last call: end it now (after saving its last
        calls, if it has a checkpoint)."""
        if actor.dead is None:
            self._final_checkpoint(actor)
        if self.end(actor, actor.retiring):
            self._notify_ended(actor)

    def runners(self) -> list:
        """The runners of the actors hosted here (including retiring ones)."""
        with self._mu:
            actors = list(self.actors.values()) + list(self._retiring.values())
        return [a.runner for a in actors if a.runner is not None]

    def current_actor(self) -> HostedActor | None:
        """The actor whose call this thread is running, if any."""
        return getattr(self._local, "actor", None)

    # -- the call path --------------------------------------------------------------------

    def _on_calls(self, identity: bytes, records: list, buffers, unparking: bool = False) -> None:
        """Route calls to their actors' mailboxes, or run a lone one at once.

        A call to an actor that does not exist yet while the system actor is busy
        (perhaps creating it) is *parked* behind the system actor's calls, and so
        is every later call to that actor while any is parked; the system actor's
        drain routes them again, oldest first, with ``unparking``.
        """
        if (
            len(records) == 1
            and not self._ready
            and not self._parked
            and self._leader == _get_ident()
        ):
            # The common synchronous call: run it right here, reply at once.
            record = records[0]
            actor = self.actors.get(record[4])
            if actor is not None:
                with self._mu:
                    idle = not actor.scheduled
                    if idle:
                        actor.scheduled = True
                if idle:
                    me = self._leader
                    self._busy = me
                    local = self._local
                    local.actor = actor
                    try:
                        if actor.durable is None:
                            self._execute(actor, identity, record, buffers)
                        else:
                            self._execute_durable(actor, identity, record, buffers)
                    finally:
                        local.actor = None
                    if self._busy == me:
                        self._busy = None
                    self._send_replies()
                    with self._mu:
                        if actor.mailbox:
                            self._ready.append(actor)
                        else:
                            actor.scheduled = False
                    return
        actors = self.actors
        missing = None
        system = actors.get(wire.SYSTEM_ACTOR_ID)
        parked = self._parked
        with self._mu:
            ready = self._ready
            for record in records:
                actor_id = record[4]
                actor = actors.get(actor_id)
                if unparking:  # the oldest parked call of its actor
                    left = parked.pop(actor_id, 1) - 1
                    if left:
                        parked[actor_id] = left
                elif (actor is None and system is not None and system.scheduled) or (
                    parked and actor_id in parked
                ):
                    # Perhaps created by a call queued before it: wait behind that call.
                    system.mailbox.append((identity, record, buffers))
                    parked[actor_id] = parked.get(actor_id, 0) + 1
                    continue
                if actor is None:
                    if missing is None:
                        missing = []
                    missing.append(record)
                    continue
                actor.mailbox.append((identity, record, buffers))
                if not actor.scheduled:
                    actor.scheduled = True
                    ready.append(actor)
                elif actor.runner is not None:
                    actor.runner.queued(ready)
        if missing:
            for record in missing:
                self._on_missing(identity, record)
            self._send_replies()

    def _on_missing(self, identity: bytes, record: tuple) -> None:
        actor_id = record[4]
        reason = self.tombstones.get(actor_id)
        if reason is None:
            reason = (
                f"no actor with id {actor_id} lives in {self.runtime.role} "
                f"{self.runtime.address}; the handle may be stale (its actor ended, or the "
                "cluster restarted): create the actor again or look it up with zactor.get_actor"
            )
            self.runtime.drop("unknown-actor", identity, f"call for unknown actor id {actor_id}")
        self._reply_died(identity, record, reason)

    def _reply_box(self, identity: bytes):
        """The outbox to the caller whose routing id (= inbox address) is ``identity``."""
        box = self._reply_boxes.get(identity)
        if box is None:
            address = identity.decode()
            if not address.startswith(("ipc://", "tcp://")):
                raise ValueError(f"routing id {identity[:64]!r} is not a zactor inbox address")
            box = self._reply_boxes[identity] = self.runtime.outbox(address)
        return box

    def _queue_reply(
        self, identity: bytes, kind: int, call_id: int, actor_id: int, payload, buffers
    ):
        """Batch a reply; this thread sends its batches in :meth:`_send_replies`."""
        box = self._reply_boxes.get(identity)
        if box is None:
            try:
                box = self._reply_box(identity)
            except Exception as exc:  # a foreign peer: nobody to answer, keep serving
                self.runtime.drop("bad-identity", identity, f"cannot reply: {exc}")
                return
        lock = box.lock
        lock.acquire()  # not ``with``: its special-method look-ups cost more than the add
        try:
            writer = box.writer
            writer.add(kind, 0, 0, call_id, actor_id, payload, buffers)
            first = writer.count == 1
        finally:
            lock.release()
        if first:
            local = self._local
            try:
                local.boxes.append(box)
            except AttributeError:
                local.boxes = [box]

    def _send_replies(self) -> None:
        """Send the reply batches this thread queued."""
        boxes = getattr(self._local, "boxes", None)
        if boxes:
            self._local.boxes = []
            for box in boxes:
                box.flush()

    def _reply_died(self, identity: bytes, record: tuple, reason: str) -> None:
        if record[0] != _CALL:
            return
        payload, buffers = _dumps(reason)
        self._queue_reply(identity, _DIED, record[3], record[4], payload, buffers)

    def _execute(self, actor: HostedActor, identity: bytes, record: tuple, buffers) -> None:
        """Run one call of ``actor`` and queue its reply.

        The caller has made ``actor`` this thread's current actor
        (``self._local.actor``, what ``get_runtime_context`` reads), once for
        all the calls it runs in a row: setting a ``threading.local`` costs
        more than anything else here.
        """
        kind, _flags, method, call_id, actor_id, payload, start, count = record
        if actor.dead is not None:
            self._reply_died(identity, record, actor.dead)
            return
        try:
            if actor.init_error is not None:
                raise _InitFailed()
            if count == 0 and payload == _NO_ARGS:  # the common call without arguments
                args, kwargs = (), _NO_KWARGS
            else:
                args, kwargs = _loads_call(payload, buffers[start : start + count] if count else ())
            calls = actor.calls
            if calls < actor.next_sample:
                result = actor.methods[method](*args, **kwargs)
            else:  # a sampled call: its service time goes into the ring stats() reads
                started = _perf_counter()
                result = actor.methods[method](*args, **kwargs)
                actor.samples.append(_perf_counter() - started)
                actor.next_sample = calls + (1 if calls < SAMPLE_WARMUP else SAMPLE_EVERY)
        except ActorExit:
            self._exited(actor, identity, record)
            return
        except _InitFailed:
            self._reply_init_error(actor, identity, record)
            return
        except BaseException as exc:
            self._failed(actor, identity, record, exc)
            return
        actor.calls += 1
        if kind == _CALL:
            if actor.dead is not None:  # killed while this call ran: its result is void
                self._reply_died(identity, record, actor.dead)
            else:
                self._reply(identity, _RESULT, call_id, actor_id, result)

    def _exited(self, actor: HostedActor, identity: bytes, record: tuple) -> None:
        """The call raised ActorExit (zactor.exit_actor()): it returns None, the actor ends.

        With a checkpoint the call counts as a successful one (recorded, and saved
        when due) before the actor ends.
        """
        if actor.durable is not None:
            self._complete_durable(actor, identity, record, True, None)
            self._final_checkpoint(actor)
        elif record[0] == _CALL:
            self._reply(identity, _RESULT, record[3], record[4], None)
        reason = f"actor {actor} exited by calling zactor.exit_actor(); it will not restart"
        if self.end(actor, reason):
            self._notify_ended(actor)

    def _reply_init_error(self, actor: HostedActor, identity: bytes, record: tuple) -> None:
        if record[0] == _CALL:
            self._queue_reply(identity, _ERROR, record[3], record[4], actor.init_error, ())

    def _failed(self, actor: HostedActor, identity: bytes, record: tuple, exc: BaseException):
        """The method raised ``exc``: the caller gets it, or a tell's error is counted."""
        description = self._failure(actor, record, exc)
        if description is not None:
            self._reply(identity, _ERROR, record[3], record[4], description)

    def _failure(self, actor: HostedActor, record: tuple, exc: BaseException) -> list | None:
        """Count the error ``exc`` a call raised; for a CALL, the description to reply
        (:func:`describe_exception`), for a tell None (it is logged: the first, then
        every 1000th)."""
        kind, method = record[0], record[2]
        actor.errors += 1
        if isinstance(exc, IndexError) and method >= len(actor.methods):
            exc = AttributeError(f"actor class {actor.class_name} has no method #{method}")
        if kind == _CALL:
            return describe_exception(exc, f"actor {actor}.{_method_name(actor, method)})")
        actor.tell_errors += 1
        if actor.tell_errors == 1 or actor.tell_errors % 1000 == 0:
            log.error(
                "zactor: tell %s.%s raised (%d tell errors so far on this actor): %r",
                actor,
                _method_name(actor, method),
                actor.tell_errors,
                exc,
            )
        return None

    def _reply(self, identity: bytes, kind: int, call_id: int, actor_id: int, value: Any) -> None:
        kind, payload, buffers = _encode_reply(kind, actor_id, value)
        self._queue_reply(identity, kind, call_id, actor_id, payload, buffers)

    # -- actors with a checkpoint ---------------------------------------------------------

    def _execute_durable(self, actor: HostedActor, identity: bytes, record: tuple, buffers) -> None:
        """:meth:`_execute` for an actor with a checkpoint (see :class:`Checkpointer`).

        A CALL the actor already applied (a retry) gets its recorded reply and does
        not run again. Otherwise the method runs, its reply is recorded, and when a
        save is due (every ``checkpoint_every``-th successful call or tell) the
        checkpoint is saved before the reply is queued; a failed save turns the
        reply into a :class:`CheckpointSaveError`.
        """
        kind, _flags, method, call_id, actor_id, payload, start, count = record
        if actor.dead is not None or actor.init_error is not None:
            self._execute(actor, identity, record, buffers)  # replies the death or init error
            return
        if kind == _CALL:
            seen = actor.durable.begin(identity, call_id)
            if seen is not None:
                self._reply_seen(actor, identity, record, seen)
                return
        started = _perf_counter()
        try:
            args, kwargs = _loads_call(payload, buffers[start : start + count] if count else ())
            result = actor.methods[method](*args, **kwargs)
        except ActorExit:
            self._exited(actor, identity, record)
            return
        except BaseException as exc:
            description = self._failure(actor, record, exc)
            self._complete_durable(actor, identity, record, False, description)
            return
        actor.calls += 1
        self._complete_durable(actor, identity, record, True, result)
        actor.samples.append(_perf_counter() - started)  # a save is part of the service

    def _complete_durable(
        self, actor: HostedActor, identity: bytes, record: tuple, ok: bool, value: Any
    ) -> None:
        """A call of an actor with a checkpoint finished: record it, save if due, reply.

        ``ok`` tells a return value from an error description (``value``; None
        for a tell, whose error :meth:`_failure` already logged).
        """
        kind, call_id, actor_id = record[0], record[3], record[4]
        durable = actor.durable
        if kind != _CALL:
            if ok:
                error = durable.tell_done(actor)
                if error is not None:
                    self._failure(actor, record, error)
            return
        reply_kind, payload, buffers = _encode_reply(_RESULT if ok else _ERROR, actor_id, value)
        saves = durable.saves
        reply = durable.finish(actor, identity, call_id, reply_kind, payload, buffers, ok)
        if reply is None:  # killed while it ran: its result is void, and nothing was saved
            self._reply_died(identity, record, actor.dead)
            return
        self._queue_reply(identity, reply[0], call_id, actor_id, reply[1], reply[2])
        if durable.saves != saves:
            # Send what is saved now, not at the end of a batch of calls: the calls applied
            # but not yet answered are the ones a crash makes callers retry, and only the
            # last APPLIED_WINDOW of them get their recorded replies back. A send costs a
            # few microseconds; the save before it, tens to hundreds.
            self._send_replies()

    def _reply_seen(self, actor: HostedActor, identity: bytes, record: tuple, seen) -> None:
        """Answer a CALL that :meth:`Checkpointer.begin` found already applied (or running)."""
        call_id, actor_id = record[3], record[4]
        if seen is _RUNNING:  # delivered twice: the running original answers this call id
            self.runtime.drop(
                "duplicate-call", identity, f"call {call_id} to actor {actor} is already running"
            )
            return
        actor.durable.replayed += 1
        if seen is _FORGOTTEN:
            error = ActorDiedError(
                f"call {call_id} to actor {actor} was already applied (before a restart of "
                f"the actor or a retry of the call), so it was not run again, but its result "
                f"is no longer recorded: an actor with a checkpoint keeps the replies of the "
                f"last {APPLIED_WINDOW} calls of each caller (up to {APPLIED_WINDOW_BYTES} "
                "bytes of them). Read the actor's state to learn the call's effect."
            )
            payload, buffers = _dumps(describe_exception(error, f"actor {actor})"))
            self._queue_reply(identity, _ERROR, call_id, actor_id, payload, buffers)
            return
        _, reply_kind, payload, buffers = msgpack.unpackb(seen, use_list=True)
        self._queue_reply(identity, reply_kind, call_id, actor_id, payload, buffers)

    def _final_checkpoint(self, actor: HostedActor) -> None:
        """Before a graceful end (retire, exit_actor), save calls not saved yet
        (``checkpoint_every`` > 1), so a named actor created again loses none of them."""
        durable = actor.durable
        if durable is None or actor.init_error is not None or actor.instance is None:
            return
        error = durable.save_pending(actor)
        if error is not None:
            log.error(
                "zactor: saving the last checkpoint of actor %s before it ended failed: %r",
                actor,
                error,
            )

    def _notify_ended(self, actor: HostedActor) -> None:
        hook = getattr(self, "on_actor_ended", None)
        if hook is not None:
            hook(actor)

    # -- threads: leader, followers, watchdog ------------------------------------------------

    def serve(self, parent_pid: int | None = None, on_orphaned=None) -> None:
        """Run the host on this thread until :meth:`stop`.

        If ``parent_pid`` is given and that process dies, ``on_orphaned()`` is
        called from the watchdog thread (default: :meth:`stop`). When this
        returns, no host thread is reading the inbox any more, so the runtime
        may be closed; threads still inside user code are left to the caller.
        """
        self._parent_pid = parent_pid
        self._on_orphaned = on_orphaned or self.stop
        watchdog = threading.Thread(target=self._watchdog, name="zactor-watchdog", daemon=True)
        watchdog.start()
        self._thread_main()
        deadline = time.monotonic() + 2 * POLL_SLICE_MS / 1e3
        with self._mu:  # wait for the thread that leads now to leave the inbox
            while self._leader is not None and time.monotonic() < deadline:
                self._followers.wait(0.01)
        watchdog.join(timeout=1)
        deadline = time.monotonic() + ASYNC_STOP_GRACE_S
        for runner in self.runners():  # async actors' loops, stopped by stop()
            runner.join(max(0.0, deadline - time.monotonic()))

    def stop(self) -> None:
        """Ask every host thread to finish, and stop the async actors' event loops;
        :meth:`serve` then returns."""
        with self._mu:
            self._stopping = True
            self._followers.notify_all()
        for runner in self.runners():
            runner.stop(f"the {self.runtime.role} process {self.runtime.address} is shutting down")

    def _thread_main(self) -> None:
        me = threading.get_ident()
        while True:
            with self._mu:
                while self._leader is not None and self._leader != me and not self._stopping:
                    self._idle += 1
                    self._followers.wait()
                    self._idle -= 1
                if self._stopping:
                    return
                self._leader = me
            try:
                self._lead(me)
            except Exception:
                if not self._stopping:
                    raise
            if self._stopping:
                with self._mu:
                    if self._leader == me:
                        self._leader = None
                        self._followers.notify_all()
                return

    def _lead(self, me: int) -> None:
        runtime = self.runtime
        while not self._stopping:
            if self._ready:
                self._run_ready(me)
                self._send_replies()
            if self._leader != me:
                runtime.flush()
                return
            self._turn += 1
            if runtime._dirty:
                runtime.flush()  # calls the actors made, batched in outboxes
            runtime.receive(POLL_SLICE_MS)

    def _run_ready(self, me: int) -> None:
        """Run the ready actors' calls; their replies go out together.

        The replies of the actors run so far are sent once they have waited
        :data:`REPLY_LINGER_S`, at the latest when the ready queue is empty (the
        caller, :meth:`_lead`, sends them): a caller of several actors of this
        process gets one message, not one per actor. An actor whose last run of
        calls took that long has the replies queued before it sent first; replies
        held behind a call that runs long all the same are sent by the watchdog
        (:meth:`_send_held_replies`).
        """
        ready = self._ready
        since = _monotonic()
        while ready:
            with self._mu:
                if self._leader != me or not ready:
                    return
                actor = ready.popleft()
            self._drain(actor)
            now = _monotonic()
            if now - since >= REPLY_LINGER_S:
                self._send_replies()
                since = now

    def _drain(self, actor: HostedActor) -> None:
        if actor.runner is not None:
            actor.runner.drain()
            return
        execute = self._execute if actor.durable is None else self._execute_durable
        me = _get_ident()
        local = self._local
        while True:
            with self._mu:
                items = actor.mailbox
                if not items or actor.dead is not None:
                    actor.scheduled = False
                    return
                actor.mailbox = deque()
            if self._leader == me:  # a demoted thread must not hide the leader's state
                self._busy = me
            if actor.slow:
                self._send_replies()
            started = _monotonic()
            local.actor = actor  # the current actor of all these calls (see _execute)
            try:
                for identity, record, buffers in items:
                    if record[4] != actor.actor_id:
                        if identity is None:  # _RETIRE_MARK: every call before it has run
                            self.finish_retiring(actor)
                        else:  # parked behind a creation: route it now
                            self._on_calls(identity, [record], buffers, unparking=True)
                        local.actor = actor  # both may have run calls of another actor
                        if self._leader == me:
                            self._busy = me
                    else:
                        execute(actor, identity, record, buffers)
            finally:
                local.actor = None
            if self._busy == me:
                self._busy = None
            actor.slow = _monotonic() - started >= REPLY_LINGER_S
            if self._leader != me:
                # Demoted: it may drain for as long as the new leader refills the
                # mailbox, so it sends after each run (the leader, in _run_ready).
                self._send_replies()

    def _step_down(self) -> None:
        """Called before this thread blocks on a reply: send its replies, let another lead."""
        self._send_replies()
        me = _get_ident()
        if self._leader == me:
            self._demote(me)

    def _demote(self, leader: int) -> None:
        """Take the lead from ``leader`` (if it still leads) and give it to another thread."""
        with self._mu:
            if self._stopping or self._leader != leader:
                return
            self._leader = None
            if self._idle:
                self._followers.notify()
                return
            if len(self._threads) >= MAX_THREADS:
                log.warning(
                    "zactor: %d host threads busy; calls to idle actors now wait", MAX_THREADS
                )
                return
            thread = threading.Thread(target=self._thread_main, name="zactor-host", daemon=True)
            self._threads.append(thread)
        thread.start()

    def _watchdog(self) -> None:
        seen = -1
        held: list = []
        while not self._stopping:
            time.sleep(WATCHDOG_S)
            if self._parent_pid is not None and os.getppid() != self._parent_pid:
                log.warning("zactor %s: parent process died; exiting", self.runtime.role)
                self._on_orphaned()
                return
            turn = self._turn
            busy = self._busy
            stuck = busy is not None and busy == self._leader and turn == seen
            held = self._send_held_replies(None if stuck else held)
            if stuck:
                self._demote(busy)  # the leader is stuck in user code: let another lead
            seen = turn

    def _send_held_replies(self, held: list | None) -> list:
        """Send the reply batches that were already waiting at the last look (all of
        them if ``held`` is None: the leader is stuck in a call); return the ones
        waiting now.

        A thread sends the replies it queued itself, but it may be in a call that
        runs long, and a reply another thread adds to a caller's batch joins that
        batch: this bounds every reply's wait to one watchdog period once a call
        runs long, two otherwise.
        """
        boxes = list(self._reply_boxes.values())
        for box in boxes if held is None else held:
            if box.writer.count:
                try:
                    box.flush()
                except Exception:  # e.g. the socket closed at shutdown: keep watching
                    log.exception("zactor: sending held replies to %s failed", box.address)
        return [box for box in boxes if box.writer.count]


def _encode_reply(kind: int, actor_id: int, value: Any) -> tuple[int, bytes, list]:
    """``(kind, payload, buffers)`` of a reply; a value that does not serialize becomes an error."""
    try:
        payload, buffers = _dumps(value)
    except Exception as exc:
        kind = _ERROR
        payload, buffers = _dumps(
            describe_exception(
                TypeError(f"the method's return value could not be sent back: {exc}"),
                f"serializing a reply of actor {actor_id})",
            )
        )
    return kind, payload, buffers


def _method_name(actor: HostedActor, index: int) -> str:
    names = actor.method_names
    return names[index] if 0 <= index < len(names) else f"<method #{index}>"


class WorkerService:
    """Actor 0 of every worker: creates, kills and reports on the actors hosted here."""

    def __init__(self, host: ActorHost, head, worker_id: str) -> None:
        self._host = host
        self._head = head
        self._worker_id = worker_id
        host.on_actor_ended = self._ended

    def create(self, actor_id: int, blob: bytes, spec: dict) -> None:
        """Construct an actor from ``blob`` = cloudpickle of ``(cls, args, kwargs)``.

        ``spec["max_concurrency"]`` (None when not given) and whether the class
        has ``async def`` methods decide how its calls run (see
        :func:`execution_of`). The head hears ``actor_started`` once the
        constructor has run; calls that arrive before then wait.

        ``spec["checkpoint"]`` (a store or URL), ``checkpoint_every``,
        ``checkpoint_key`` and ``incarnation`` make the actor durable: it may be
        restored from its checkpoint instead of constructed (see
        :class:`Checkpointer`). A restart (``incarnation`` > 0) may come to the
        worker where the actor was killed: the new incarnation replaces the
        tombstone, and an incarnation still here (not yet killed) is ended first.
        """
        from zactor.actor import ActorClass, handle_from_info

        host = self._host
        old = host.actors.get(actor_id) or host._retiring.get(actor_id)
        if old is not None and actor_id != wire.SYSTEM_ACTOR_ID:
            # Not reported as ended: the head is bringing this very actor back.
            host.end(old, f"actor {old} was replaced by incarnation {spec.get('incarnation')}")
        actor = host.reserve(actor_id, spec.get("class_name", "?"), spec.get("name"))
        info = dict(spec, actor_id=actor_id, address=host.runtime.address)
        actor.handle = handle_from_info(info, counted=False)  # must not keep itself alive
        started = functools.partial(self._started, actor_id)
        try:
            actor.durable = Checkpointer.from_spec(actor_id, spec)
            cls, args, kwargs = cloudpickle.loads(blob)
            if isinstance(cls, ActorClass):
                cls = cls._cls
            actor.kind, actor.max_concurrency = execution_of(cls, spec.get("max_concurrency"))
            if actor.kind == "async":
                runner = AsyncRunner(host, actor, actor.max_concurrency)
                actor.runner = runner  # inert until its loop has constructed the actor
                try:
                    runner.start(cls, args, kwargs, started)
                except BaseException:
                    actor.runner = None
                    raise
                return
        except BaseException as exc:  # the first call raises it, with its original type
            error = actor.fail_init(exc)
            host.release(actor)
            started(error)
            return
        error = actor.construct(host, cls, args, kwargs)
        runner = None
        if actor.kind == "threaded" and error is None:
            runner = ThreadedRunner(host, actor, actor.max_concurrency)
        host.release(actor, runner)
        started(error)

    def _started(self, actor_id: int, error: str | None) -> None:
        self._head.actor_started.tell(actor_id, error is None, error)

    def kill(self, actor_id: int, reason: str) -> bool:
        """End actor ``actor_id`` now; its queued and later calls raise ActorDiedError.

        A retiring actor (see :meth:`retire`) is ended at once too.
        """
        host = self._host
        actor = host.actors.get(actor_id) or host._retiring.get(actor_id)
        if actor is None:
            return False
        if host.end(actor, reason):
            self._ended(actor)
        return True

    def retire(self, actor_id: int, reason: str) -> bool:
        """End actor ``actor_id`` gracefully: the calls it has received (queued, or
        running now) complete and get their replies, then it ends with ``reason``.

        Calls arriving from now on get ActorDiedError with ``reason``; the head
        hears of the end through ``actor_ended``. Returns True if the actor
        existed (and had not ended); retiring it twice keeps the first reason.
        """
        if actor_id == wire.SYSTEM_ACTOR_ID:
            raise ValueError(
                "actor 0 is the worker's own service and cannot be retired: "
                "stop the worker with shutdown() instead"
            )
        host = self._host
        actor = host.actors.get(actor_id) or host._retiring.get(actor_id)
        if actor is None:
            return False
        return host.retire(actor, reason)

    def _ended(self, actor: HostedActor) -> None:
        self._head.actor_ended.tell(actor.actor_id, actor.dead)

    def stats(self) -> dict:
        """Per-actor counters for ``zactor status``.

        Each actor's row: ``calls`` (completed), ``errors``, ``tell_errors``,
        ``queued`` (received, not started), ``running``, ``kind`` (``"sync"``,
        ``"threaded"`` or ``"async"``), ``max_concurrency``, ``retiring``, and
        ``p50_us``/``p99_us``: percentiles of the service time of its recent
        calls (a sample of them, see :data:`SAMPLE_EVERY`), in microseconds,
        None before its first call completes. An async call's service time
        includes the time it spends awaiting; with a checkpoint, every call is
        timed and the time includes its save.

        Checkpoints: ``checkpoint`` (the store's repr, None without one),
        ``checkpoint_key`` (the key it saves under), ``checkpoints`` (saves
        done by this incarnation, the first one after construction included),
        ``last_checkpoint_us`` (how long the last save took, capturing the
        state included; None before the first) and
        ``replayed`` (retried calls answered from the record of applied calls
        without running again).
        """
        host = self._host
        with host._mu:  # the mailboxes' lengths, without a retire mark
            queued = [
                (a, len(a.mailbox) - (1 if a.mailbox and a.mailbox[-1] is _RETIRE_MARK else 0))
                for a in [*host.actors.values(), *host._retiring.values()]
                if a.actor_id != wire.SYSTEM_ACTOR_ID
            ]
        return {
            "worker_id": self._worker_id,
            "pid": os.getpid(),
            "dropped": dict(host.runtime.dropped),
            "actors": [_actor_stats(actor, count) for actor, count in queued],
        }

    def ping(self) -> str:
        """Liveness check: returns this worker's id."""
        return self._worker_id

    def actor_died(self, address: str, entries: list, process_died: bool = True) -> None:
        """The head tells every process that actors at ``address`` died (zactor.recovery)."""
        self._host.runtime.recovery.actor_died(address, entries, process_died)

    def actor_restarted(self, actor_id: int, address: str, incarnation: int) -> None:
        """The head tells every process that an actor is back at ``address``."""
        self._host.runtime.recovery.actor_restarted(actor_id, address, incarnation)

    def shutdown(self) -> None:
        """Stop serving; the worker process then exits."""
        self._host.stop()


def main(argv: list[str] | None = None) -> None:
    """Entry point of a worker process (started by the head)."""
    from zactor.actor import head_handle

    parser = argparse.ArgumentParser(prog="python -m zactor.worker")
    parser.add_argument("--head", required=True, help="the head's address")
    parser.add_argument("--address", required=True, help="address to bind this worker's inbox")
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--node-id", default="node-0")
    parser.add_argument("--resources", default="{}", help="JSON resources this worker offers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("ZACTOR_LOG_LEVEL", "WARNING"))
    parent = os.getppid()
    runtime = Runtime(
        args.address,
        role="worker",
        head_address=args.head,
        node_id=args.node_id,
        worker_id=args.worker_id,
    )
    set_current(runtime)
    host = ActorHost(runtime)
    head = head_handle(runtime)
    host.add_system_actor(WorkerService(host, head, args.worker_id))
    import json

    head.register_worker.tell(
        args.worker_id, runtime.address, os.getpid(), args.node_id, json.loads(args.resources)
    )
    runtime.flush()

    def orphaned() -> None:  # the head is gone: so is the cluster; calls in progress too
        runtime.remove_socket_file()
        os._exit(1)

    try:
        host.serve(parent_pid=parent, on_orphaned=orphaned)
    finally:
        runtime.close()
    sys.stdout.flush()
    os._exit(0)  # threads still inside user code must not keep the process alive


if __name__ == "__main__":
    main()
