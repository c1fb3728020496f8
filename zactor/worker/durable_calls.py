"""Calls of an actor with a checkpoint: run once, record, save, then reply.

A mixin of :class:`zactor.worker.host.ActorHost`. An actor with a checkpoint
store runs its calls through :meth:`DurableCalls._execute_durable`, which asks
the actor's :class:`~zactor.worker.checkpointer.Checkpointer` before and after
each call (see docs/failures.md for what each store promises).
"""

from __future__ import annotations

import logging
from time import perf_counter as _perf_counter
from typing import Any

import msgpack

from zactor.errors import ActorDiedError, describe_exception
from zactor.wire import records as wire
from zactor.wire import serialization
from zactor.worker.callpath import _encode_reply
from zactor.worker.checkpointer import _FORGOTTEN, _RUNNING, APPLIED_WINDOW, APPLIED_WINDOW_BYTES
from zactor.worker.hosted import HostedActor

log = logging.getLogger("zactor")

_loads_call = serialization.loads_call
_dumps = serialization.dumps
_CALL, _RESULT, _ERROR = wire.CALL, wire.RESULT, wire.ERROR


class DurableCalls:
    """The call path of actors with a checkpoint (see the module docstring)."""

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
        except BaseException as exc:
            self._raised(actor, identity, record, exc)
            return
        self._returned(actor, identity, record, result)
        actor.samples.append(_perf_counter() - started)  # a save is part of the service
        actor.sampled += 1

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
