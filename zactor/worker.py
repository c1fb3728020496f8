"""The worker side: hosting actors behind one inbox, and the worker process.

How calls run (the core design problem: actors never wait on each other, and a
short call costs no thread hand-off):

- One *leader* thread reads the inbox, puts each call in its actor's mailbox,
  and then runs the ready actors' calls itself, inline. Replies are batched per
  caller and sent when the leader goes back to the inbox.
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
  host threads run its calls at once (:class:`ThreadedRunner`). Calls start in
  arrival order and may finish in any order.
- ``async`` (at least one ``async def`` method): the actor's own event loop on
  its own thread runs everything of it, up to ``max_concurrency`` calls at
  once, default :data:`DEFAULT_ASYNC_CONCURRENCY` (:class:`AsyncRunner`).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import inspect
import logging
import os
import sys
import threading
import time
import weakref
from collections import OrderedDict, deque
from typing import Any

import cloudpickle
import msgpack

from zactor import serialization, wire
from zactor.checkpoint import (
    capture_state,
    open_store,
    pack_checkpoint,
    restore_state,
    unpack_checkpoint,
)
from zactor.errors import (
    ActorDiedError,
    CheckpointError,
    CheckpointSaveError,
    describe_exception,
)
from zactor.runtime import POLL_SLICE_MS, Runtime, set_current

log = logging.getLogger("zactor")

#: How often the watchdog looks at the leader (seconds).
WATCHDOG_S = 0.005
#: Most threads one host runs calls on (leader, followers, demoted threads).
MAX_THREADS = 256
#: Calls an async actor runs at once when it was not given ``max_concurrency`` (Ray's default).
DEFAULT_ASYNC_CONCURRENCY = 1000
#: Service times each actor keeps for the percentiles of :meth:`WorkerService.stats`.
SAMPLE_RING = 256
#: An actor's first calls are all timed, so that a few calls already give percentiles ...
SAMPLE_WARMUP = 64
#: ... and after those one call in this many, so timing costs the hot path next to nothing.
SAMPLE_EVERY = 16
#: How long an ending async actor's coroutines get to finish after being cancelled (seconds).
ASYNC_STOP_GRACE_S = 2.0
#: Applied calls an actor with a checkpoint remembers per caller, with their replies, so
#: that a retried call it already applied gets its recorded reply instead of running
#: twice. The record is saved inside every checkpoint, so this bounds what each save
#: writes (and the memory it holds) however long the actor lives. Only calls in flight
#: when an actor's worker died are ever retried, and one caller rarely has more than a
#: few hundred of those, so 1024 is ample.
APPLIED_WINDOW = 1024
#: ... and at most this many bytes of recorded replies per caller (the newest reply is
#: always kept), so an actor returning large arrays does not write 1024 of them into
#: each checkpoint.
APPLIED_WINDOW_BYTES = 1 << 20
#: Callers an actor with a checkpoint keeps a record for; beyond this, the record of the
#: caller heard from least recently is dropped (it bounds the checkpoint the same way).
APPLIED_CALLERS = 1024

_loads_call = serialization.loads_call
_dumps = serialization.dumps
_get_ident = threading.get_ident
_perf_counter = time.perf_counter
_CALL, _RESULT, _ERROR, _DIED = wire.CALL, wire.RESULT, wire.ERROR, wire.DIED
#: What :meth:`ActorHost.retire` puts at the end of a busy sync actor's mailbox: the
#: actor ends when the thread running its calls gets there. Its actor id (-1) differs
#: from every actor's, which routes it down the drain's rare branch, off the hot path.
_RETIRE_MARK = (None, (-1, 0, 0, 0, -1, None, 0, 0), ())


class ActorExit(BaseException):
    """Raised by :func:`zactor.exit_actor` to end the actor after the current call."""


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

    def _on_calls(self, identity: bytes, records: list, buffers) -> None:
        if len(records) == 1 and not self._ready and self._leader == _get_ident():
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
                    if actor.durable is None:
                        self._execute(actor, identity, record, buffers)
                    else:
                        self._execute_durable(actor, identity, record, buffers)
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
        with self._mu:
            ready = self._ready
            for record in records:
                actor = actors.get(record[4])
                if actor is None and system is not None and system.scheduled:
                    # Perhaps created by a call queued before it: wait behind that call.
                    system.mailbox.append((identity, record, buffers))
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
        with box.lock:
            box.writer.add(kind, 0, 0, call_id, actor_id, payload, buffers)
            first = box.writer.count == 1
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
        kind, _flags, method, call_id, actor_id, payload, start, count = record
        if actor.dead is not None:
            self._reply_died(identity, record, actor.dead)
            return
        local = self._local
        try:
            if actor.init_error is not None:
                raise _InitFailed()
            args, kwargs = _loads_call(payload, buffers[start : start + count] if count else ())
            local.actor = actor
            calls = actor.calls
            if calls < actor.next_sample:
                result = actor.methods[method](*args, **kwargs)
            else:  # a sampled call: its service time goes into the ring stats() reads
                started = _perf_counter()
                result = actor.methods[method](*args, **kwargs)
                actor.samples.append(_perf_counter() - started)
                actor.next_sample = calls + (1 if calls < SAMPLE_WARMUP else SAMPLE_EVERY)
        except ActorExit:
            local.actor = None
            self._exited(actor, identity, record)
            return
        except _InitFailed:
            self._reply_init_error(actor, identity, record)
            return
        except BaseException as exc:
            local.actor = None
            self._failed(actor, identity, record, exc)
            return
        local.actor = None
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
        local = self._local
        started = _perf_counter()
        try:
            args, kwargs = _loads_call(payload, buffers[start : start + count] if count else ())
            local.actor = actor
            result = actor.methods[method](*args, **kwargs)
        except ActorExit:
            local.actor = None
            self._exited(actor, identity, record)
            return
        except BaseException as exc:
            local.actor = None
            description = self._failure(actor, record, exc)
            self._complete_durable(actor, identity, record, False, description)
            return
        local.actor = None
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
        ready = self._ready
        while ready:
            with self._mu:
                if self._leader != me or not ready:
                    return
                actor = ready.popleft()
            self._drain(actor)

    def _drain(self, actor: HostedActor) -> None:
        if actor.runner is not None:
            actor.runner.drain()
            return
        execute = self._execute if actor.durable is None else self._execute_durable
        me = _get_ident()
        while True:
            with self._mu:
                items = actor.mailbox
                if not items or actor.dead is not None:
                    actor.scheduled = False
                    return
                actor.mailbox = deque()
            if self._leader == me:  # a demoted thread must not hide the leader's state
                self._busy = me
            for identity, record, buffers in items:
                if record[4] != actor.actor_id:
                    if identity is None:  # _RETIRE_MARK: every call before it has run
                        self.finish_retiring(actor)
                    else:  # queued behind a creation: route it now
                        self._on_calls(identity, [record], buffers)
                else:
                    execute(actor, identity, record, buffers)
            if self._busy == me:
                self._busy = None
            self._send_replies()

    def _step_down(self) -> None:
        """Called before this thread blocks on a reply: let another thread lead."""
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
        while not self._stopping:
            time.sleep(WATCHDOG_S)
            if self._parent_pid is not None and os.getppid() != self._parent_pid:
                log.warning("zactor %s: parent process died; exiting", self.runtime.role)
                self._on_orphaned()
                return
            turn = self._turn
            busy = self._busy
            if busy is not None and busy == self._leader and turn == seen:
                self._demote(busy)  # the leader is stuck in user code: let another lead
            seen = turn


# --------------------------------------------------------------------------- durable state


#: :meth:`Checkpointer.begin`'s answer for a call that is running now (delivered twice).
_RUNNING = object()
#: ... and for a call applied before whose reply the record no longer holds.
_FORGOTTEN = object()
_packb = msgpack.packb

# One lock per checkpoint key in this process, shared by the incarnations of an actor
# hosted here: a call of a killed incarnation still finishing on a thread then either
# saves before the next incarnation restores, or sees that it is dead and saves nothing.
_key_locks: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_key_locks_mu = threading.Lock()


def _key_lock(key: str) -> threading.Lock:
    with _key_locks_mu:
        lock = _key_locks.get(key)
        if lock is None:
            lock = _key_locks[key] = threading.Lock()
        return lock


def _as_bytes(buffer) -> bytes:
    """An out-of-band buffer of a reply (bytes, an array, a pickle buffer) as plain bytes."""
    return buffer if type(buffer) is bytes else memoryview(buffer).tobytes()


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


class _CallerRecord:
    """What an actor with a checkpoint remembers of one caller's calls.

    - ``replies``: call id -> the recorded reply (msgpack ``[call_id, kind,
      payload, [buffer bytes, ...]]``), oldest first; at most
      :data:`APPLIED_WINDOW` of them and :data:`APPLIED_WINDOW_BYTES` bytes.
    - ``floor``: the caller's calls with an id at or below it count as
      applied and never run again. It rises to the id of each reply dropped
      from ``replies`` to keep them within bounds, never past a call still
      running.
    - ``forgotten``: ids of dropped replies that the floor could not cover
      because an older call of the caller was still running (threaded and
      async actors finish calls out of order); they never run again either.
    - ``running``: ids of calls started and not finished (not saved: after a
      restart nothing runs).

    A call id is a caller's own counter: it strictly increases over all the
    calls one process makes, to any actor, so ids missing between two recorded
    ones are calls to other actors. A caller sends its calls to an actor in id
    order, and re-sends the calls to retry, in id order, before any newer
    one (``zactor.recovery``), so a call at or below the floor that was never
    applied would have to be older than the last :data:`APPLIED_WINDOW`
    calls the actor applied for that caller.
    """

    __slots__ = ("replies", "nbytes", "floor", "forgotten", "running", "blob", "start", "packed")

    def __init__(self, floor: int = 0) -> None:
        self.replies: dict[int, bytes] = {}
        self.nbytes = 0
        self.floor = floor
        self.forgotten: set[int] = set()
        self.running: set[int] = set()
        # The entries of ``replies`` back to back from ``blob[start:]``, kept as they
        # come and go so that a save does not join up to APPLIED_WINDOW pieces (~20 us);
        # None when it must be rebuilt (an entry replaced, a record loaded).
        self.blob: bytearray | None = bytearray()
        self.start = 0
        self.packed: bytes | None = None  # the window as last packed, while unchanged

    def record(self, call_id: int, entry: bytes) -> None:
        """Record ``call_id``'s reply ``entry``, dropping the oldest beyond the bounds."""
        replies = self.replies
        old = replies.pop(call_id, None)
        if old is not None:  # replaced (a failed save's error): rebuild the blob
            self.nbytes -= len(old)
            self.blob = None
        replies[call_id] = entry
        self.nbytes += len(entry)
        self.packed = None
        blob = self.blob
        if blob is not None:
            blob += entry
        while len(replies) > 1 and (
            len(replies) > APPLIED_WINDOW or self.nbytes > APPLIED_WINDOW_BYTES
        ):
            oldest = next(iter(replies))
            size = len(replies.pop(oldest))
            self.nbytes -= size
            if blob is not None:
                self.start += size  # the oldest entry is the first in the blob
            running = self.running
            if running and oldest > min(running):
                self.forgotten.add(oldest)  # the floor must stay below the running call
            elif oldest > self.floor:
                self.floor = oldest
                if self.forgotten:
                    self.forgotten = {c for c in self.forgotten if c > oldest}
        if blob is not None and self.start > len(blob) // 2:
            del blob[: self.start]  # amortised: each byte moves about once
            self.start = 0

    def pack(self) -> bytes:
        """The window for :func:`pack_checkpoint`: msgpack entries back to back, a
        forgotten id as a one-element ``[call_id]``."""
        if self.packed is None:
            if self.blob is None:
                self.blob, self.start = bytearray(b"".join(self.replies.values())), 0
            window = bytes(self.blob[self.start :])
            if self.forgotten:
                window = b"".join(_packb((c,)) for c in sorted(self.forgotten)) + window
            self.packed = window
        return self.packed

    @classmethod
    def load(cls, floor: int, window: bytes) -> _CallerRecord:
        """The record :meth:`pack` saved."""
        record = cls(floor)
        record.blob = None  # built from ``replies`` at the first pack
        unpacker = msgpack.Unpacker(raw=False, use_list=True)
        unpacker.feed(window)
        for entry in unpacker:
            if len(entry) == 1:
                record.forgotten.add(entry[0])
            else:
                packed = _packb(entry)
                record.replies[entry[0]] = packed
                record.nbytes += len(packed)
        return record


class Checkpointer:
    """The durable side of one actor: its store, when it saves, and the calls it applied.

    Built from the creation spec (:meth:`from_spec`): ``checkpoint`` (a store or
    a URL, see :func:`zactor.checkpoint.open_store`), ``checkpoint_every``
    (n >= 1, default 1), ``checkpoint_key`` (default ``actor-<id>``) and
    ``incarnation`` (0 at creation, k at the k-th restart).

    **Restore or construct** (:meth:`open`): a named actor, or any actor after
    a restart, whose key exists in the store is rebuilt from its checkpoint
    (:func:`~zactor.checkpoint.restore_state`; the constructor does not run).
    Otherwise the constructor runs and its state is saved at once, so a crash
    before the first call still restores the constructed state.

    **When it saves**: after every ``checkpoint_every``-th successful call or
    tell, before that call's reply is queued (with ``checkpoint_every=1`` no
    caller ever sees the result of a call that is not saved), and when the
    actor ends gracefully (retired, or ``zactor.exit_actor()``) with calls not
    yet saved. A call that raised is recorded but neither counts nor saves:
    its changes, if any, are saved with the next one. A save that fails makes
    that call's reply a :class:`CheckpointSaveError`; a killed actor saves
    nothing more.

    **Exactly once** (see :class:`_CallerRecord`): each CALL comes with its
    caller's call id. Per caller, the replies of the last
    :data:`APPLIED_WINDOW` applied calls (and at most
    :data:`APPLIED_WINDOW_BYTES` of them) are kept and saved with the state, in
    the same atomic write. A CALL whose id is recorded gets the recorded reply
    and does not run; one older than the window (at or below the caller's
    floor) does not run either, and gets an ``ActorDiedError``-type error
    saying it was applied but its result is no longer recorded. TELLs (no
    call id) are not deduplicated. At most :data:`APPLIED_CALLERS` callers are
    remembered (the least recently heard from is dropped).

    **Concurrent actors**: a threaded or async actor finishes calls in any
    order, so the record is a set of ids, and the floor never rises past a
    call still running. A checkpoint captures the state as it is when a call
    finishes: another call still running may already have changed it without
    being recorded as applied yet. If the worker dies before that call is
    recorded and saved, its retry runs again on a state that holds its
    change. So exactly-once holds for every call of a sync actor; for an async
    actor whose methods change the state only after their last ``await`` (the
    change and its record then happen with no other coroutine in between);
    and for a threaded actor only for the calls that were not running when
    its worker died: the calls running at that moment are applied at least
    once. (``__getstate__`` taking the actor's own lock makes each snapshot
    consistent, not the calls exactly-once.)

    All of it runs under a lock per key, held during saves (which are store
    writes: an ``fsync`` with :class:`~zactor.FileStore`).
    """

    __slots__ = (
        "store",
        "key",
        "every",
        "restore",
        "lock",
        "callers",
        "since",
        "saves",
        "last_save_us",
        "replayed",
        "restored",
    )

    def __init__(self, store, key: str, every: int = 1, restore: bool = False) -> None:
        self.store = store
        self.key = key
        self.every = every
        self.restore = restore  # whether open() restores an existing checkpoint
        self.lock = _key_lock(key)
        self.callers: OrderedDict[bytes, _CallerRecord] = OrderedDict()
        self.since = 0  # successful calls and tells since the last save
        self.saves = 0
        self.last_save_us: float | None = None
        self.replayed = 0  # retried calls answered from the record
        self.restored = False

    @classmethod
    def from_spec(cls, actor_id: int, spec: dict) -> Checkpointer | None:
        """The checkpointer a creation spec asks for, or None without ``checkpoint``."""
        given = spec.get("checkpoint")
        if given is None:
            return None
        every = spec.get("checkpoint_every") or 1
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"checkpoint_every must be a positive int, got {every!r}")
        key = spec.get("checkpoint_key") or f"actor-{actor_id}"
        restore = (spec.get("incarnation") or 0) > 0 or spec.get("name") is not None
        return cls(open_store(given), key, every, restore)

    def open(self, cls: type, args: tuple, kwargs: dict) -> Any:
        """The actor's instance: restored from its checkpoint, or constructed and saved."""
        store, key = self.store, self.key
        data = None
        if self.restore:
            try:
                with self.lock:
                    if store.exists(key):
                        data = store.restore(key)
            except Exception as exc:
                raise CheckpointError(
                    f"cannot read the checkpoint of actor {cls.__qualname__} under key {key!r} "
                    f"in {store!r} ({type(exc).__name__}: {exc}); the actor did not start. "
                    "Make the store reachable and readable, then create the actor again"
                ) from exc
        if data is not None:
            return self._restored(cls, data)
        instance = cls(*args, **kwargs)
        with self.lock:
            try:
                self._save(instance)
            except Exception as exc:
                raise CheckpointError(
                    f"actor {cls.__qualname__} was constructed, but saving its first "
                    f"checkpoint under key {key!r} in {store!r} failed "
                    f"({type(exc).__name__}: {exc}); the actor did not start. Make the "
                    "store writable and the state picklable, then create the actor again"
                ) from exc
        return instance

    def _restored(self, cls: type, data: bytes) -> Any:
        try:
            state, applied = unpack_checkpoint(data)
            instance = restore_state(cls, state)
            callers = OrderedDict(
                (caller, _CallerRecord.load(floor, window))
                for caller, (floor, window) in applied.items()
            )
        except Exception as exc:
            raise CheckpointError(
                f"cannot restore actor {cls.__qualname__} from its checkpoint under key "
                f"{self.key!r} in {self.store!r} ({type(exc).__name__}: {exc}); the actor "
                "did not start and the checkpoint was left as it is. Fix the class (its "
                "__setstate__, or attributes it no longer has), or delete that key from "
                "the store to start afresh"
            ) from exc
        self.callers = callers
        self.restored = True
        return instance

    def _save(self, instance: Any) -> None:
        """Save ``instance``'s state and the applied calls (``lock`` held)."""
        started = _perf_counter()
        applied = {caller: (rec.floor, rec.pack()) for caller, rec in self.callers.items()}
        self.store.save(self.key, pack_checkpoint(capture_state(instance), applied))
        self.last_save_us = (_perf_counter() - started) * 1e6
        self.saves += 1
        self.since = 0

    def begin(self, identity: bytes, call_id: int):
        """A CALL from ``identity`` is about to run: None to run it, else the
        recorded reply (bytes), :data:`_FORGOTTEN` or :data:`_RUNNING`."""
        with self.lock:
            callers = self.callers
            rec = callers.get(identity)
            if rec is None:
                rec = callers[identity] = _CallerRecord()
                if len(callers) > APPLIED_CALLERS:
                    callers.popitem(last=False)
            else:
                callers.move_to_end(identity)
                entry = rec.replies.get(call_id)
                if entry is not None:
                    return entry
                if call_id <= rec.floor or call_id in rec.forgotten:
                    return _FORGOTTEN
                if call_id in rec.running:
                    return _RUNNING
            rec.running.add(call_id)
            return None

    def finish(
        self,
        actor: HostedActor,
        identity: bytes,
        call_id: int,
        kind: int,
        payload: bytes,
        buffers: list,
        ok: bool,
    ) -> tuple | None:
        """A CALL finished with the reply ``(kind, payload, buffers)``: record it and
        save if due. Returns the reply to send (a :class:`CheckpointSaveError` if the
        save failed), or None if the actor was killed meanwhile (nothing recorded)."""
        entry = _packb([call_id, kind, payload, [_as_bytes(b) for b in buffers]])
        with self.lock:
            rec = self.callers.get(identity)
            if rec is None:  # dropped meanwhile (APPLIED_CALLERS): start afresh
                rec = self.callers[identity] = _CallerRecord()
            rec.running.discard(call_id)
            if actor.dead is not None:  # its result is void, its key may be another's now
                return None
            rec.record(call_id, entry)
            if not ok:
                return kind, payload, buffers
            self.since += 1
            if self.since < self.every:
                return kind, payload, buffers
            try:
                self._save(actor.instance)
            except Exception as exc:
                error = self._save_failed(actor, f"call {call_id}", exc)
                payload = _dumps(describe_exception(error, f"checkpoint of actor {actor})"))[0]
                rec.record(call_id, _packb([call_id, _ERROR, payload, []]))
                return _ERROR, payload, []
        return kind, payload, buffers

    def forget_running(self, identity: bytes, call_id: int) -> None:
        """A started CALL ended without being applied (its actor was killed)."""
        with self.lock:
            rec = self.callers.get(identity)
            if rec is not None:
                rec.running.discard(call_id)

    def tell_done(self, actor: HostedActor) -> BaseException | None:
        """A tell ran: count it and save if due; the save's error, if it failed."""
        with self.lock:
            if actor.dead is not None:
                return None
            self.since += 1
            if self.since < self.every:
                return None
            try:
                self._save(actor.instance)
            except Exception as exc:
                return self._save_failed(actor, "a tell", exc)
        return None

    def save_pending(self, actor: HostedActor) -> BaseException | None:
        """Save if calls ran since the last save; the save's error, if it failed."""
        with self.lock:
            if self.since == 0:
                return None
            try:
                self._save(actor.instance)
            except Exception as exc:
                return self._save_failed(actor, "its last calls", exc)
        return None

    def _save_failed(self, actor: HostedActor, what: str, exc: Exception) -> CheckpointSaveError:
        try:
            raise CheckpointSaveError(
                f"{what} to actor {actor} ran, but saving its checkpoint under key "
                f"{self.key!r} in {self.store!r} failed ({type(exc).__name__}: {exc}). The "
                "change is in the actor's memory but not durable: it is lost if the actor's "
                "worker dies before a later save succeeds (the actor saves again after its "
                "next successful call). Fix the store (space, permissions) or the state "
                "(picklable), and read the actor's state before repeating the call"
            ) from exc
        except CheckpointSaveError as error:
            return error

    def stats(self) -> dict:
        """The actor's checkpoint figures for :meth:`WorkerService.stats`."""
        try:
            store = repr(self.store)
        except Exception:
            store = f"<{type(self.store).__name__}>"
        last = self.last_save_us
        return {
            "checkpoint": store,
            "checkpoint_key": self.key,
            "checkpoints": self.saves,
            "last_checkpoint_us": None if last is None else round(last, 1),
            "replayed": self.replayed,
        }


class _InitFailed(Exception):
    """Internal: the actor's constructor raised; its calls raise that error."""


def _method_name(actor: HostedActor, index: int) -> str:
    names = actor.method_names
    return names[index] if 0 <= index < len(names) else f"<method #{index}>"


def execution_of(cls: type, max_concurrency: int | None) -> tuple[str, int]:
    """The kind (``"sync"``, ``"threaded"`` or ``"async"``) and concurrency of actors of ``cls``.

    ``max_concurrency`` is the actor's option, None when not given: then 1 for a
    class without ``async def`` methods and :data:`DEFAULT_ASYNC_CONCURRENCY`
    for a class with one (as in Ray).
    """
    from zactor.actor import method_names

    for name in method_names(cls):
        attr = inspect.getattr_static(cls, name)
        fn = getattr(attr, "__func__", attr)  # staticmethod, classmethod
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            return "async", max_concurrency or DEFAULT_ASYNC_CONCURRENCY
    limit = max_concurrency or 1
    return ("threaded" if limit > 1 else "sync"), limit


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
        execute = host._execute if actor.durable is None else host._execute_durable
        took = False
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
            host._send_replies()
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
                self.host._send_replies()
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
        except ActorExit:
            host._exited(actor, identity, record)
            return
        except _InitFailed:
            host._reply_init_error(actor, identity, record)
            return
        except asyncio.CancelledError as exc:
            reason = actor.dead or self.stopping
            if reason is not None:  # the actor was killed or ended while this call ran
                if durable is not None:  # nothing recorded: a retry runs it again
                    durable.forget_running(identity, call_id)
                host._reply_died(identity, record, reason)
            elif durable is not None:  # the method's own code cancelled it
                description = host._failure(actor, record, exc)
                host._complete_durable(actor, identity, record, False, description)
            else:
                host._failed(actor, identity, record, exc)
            return
        except BaseException as exc:
            if durable is not None:
                description = host._failure(actor, record, exc)
                host._complete_durable(actor, identity, record, False, description)
            else:
                host._failed(actor, identity, record, exc)
            return
        actor.calls += 1
        if durable is not None:
            # Recorded and saved (when due) on the loop, before any other coroutine runs.
            host._complete_durable(actor, identity, record, True, result)
            actor.samples.append(_perf_counter() - started)
            return
        actor.samples.append(_perf_counter() - started)
        if kind == _CALL:
            if actor.dead is not None:  # killed while this call ran: its result is void
                host._reply_died(identity, record, actor.dead)
            else:
                host._reply(identity, _RESULT, call_id, actor_id, result)

    def _flush_soon(self) -> None:
        """Send the replies queued on this thread once the loop's current round is done,
        so calls finishing together share a message."""
        if not self._flush_armed:
            self._flush_armed = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_armed = False
        self.host._send_replies()

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
        self.host._send_replies()
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


def _actor_stats(actor: HostedActor, queued: int) -> dict:
    samples = sorted(actor.samples)  # copied in one step: other threads append meanwhile
    runner = actor.runner
    queued += runner.waiting() if runner is not None else 0
    if runner is not None:
        running = runner.running
    else:  # a sync actor is scheduled while a thread runs its calls (or is about to)
        running = int(actor.scheduled and actor.instance is not None and actor.dead is None)
    return {
        "actor_id": actor.actor_id,
        "class_name": actor.class_name,
        "name": actor.name,
        "kind": actor.kind,
        "max_concurrency": actor.max_concurrency,
        "calls": actor.calls,
        "errors": actor.errors,
        "tell_errors": actor.tell_errors,
        "queued": queued,
        "running": running,
        "retiring": actor.retiring is not None,
        "p50_us": _percentile_us(samples, 0.50),
        "p99_us": _percentile_us(samples, 0.99),
        **(actor.durable.stats() if actor.durable is not None else _NO_CHECKPOINT),
    }


#: The checkpoint figures of an actor without a checkpoint store.
_NO_CHECKPOINT = {
    "checkpoint": None,
    "checkpoint_key": None,
    "checkpoints": 0,
    "last_checkpoint_us": None,
    "replayed": 0,
}


def _percentile_us(ordered: list, q: float) -> float | None:
    """The ``q`` quantile (nearest rank) of ``ordered`` seconds, in microseconds."""
    if not ordered:
        return None
    rank = min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))
    return round(ordered[rank] * 1e6, 1)


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
        self._host.runtime.actor_died(address, entries, process_died)

    def actor_restarted(self, actor_id: int, address: str, incarnation: int) -> None:
        """The head tells every process that an actor is back at ``address``."""
        self._host.runtime.actor_restarted(actor_id, address, incarnation)

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
