"""The call path: routing calls to mailboxes, running one, and what its outcome sends.

A mixin of :class:`zactor.worker.host.ActorHost`. :meth:`CallPath._on_calls`
is the runtime's call handler; each actor's calls run through its
``execute`` (:meth:`CallPath._execute`, the durable variant in
:mod:`zactor.worker.durable_calls`, or :meth:`CallPath._execute_system` for
actor 0), and every outcome goes through :meth:`CallPath._raised` or
:meth:`CallPath._returned` (the hot path inlines the latter).
"""

from __future__ import annotations

import logging
from threading import get_ident as _get_ident
from time import perf_counter as _perf_counter
from typing import Any

from zactor.errors import ActorExit, _InitFailed, _Terminate, describe_exception
from zactor.wire import records as wire
from zactor.wire import serialization
from zactor.wire.protocol import HEAD, PROTOCOL_VERSION, ROLE_OF_FLAGS
from zactor.wire.serialization import NestingError
from zactor.worker.hosted import AnnouncedDeath, HostedActor
from zactor.worker.stats import SAMPLE_EVERY, SAMPLE_WARMUP

log = logging.getLogger("zactor")

_loads_call = serialization.loads_call
_dumps = serialization.dumps
_NO_ARGS = serialization.NO_ARGS
_NO_KWARGS: dict = {}  # never written: only ever unpacked with **
_CALL, _RESULT, _ERROR = wire.CALL, wire.RESULT, wire.ERROR


class CallPath:
    """Routing and running calls (see the module docstring)."""

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
                    self._local.actor = actor
                    actor.running = me
                    try:
                        actor.execute(actor, identity, record, buffers)
                    finally:
                        self._end_run(actor)
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
                args, kwargs = None, _NO_KWARGS
            else:
                args, kwargs = _loads_call(payload, buffers[start : start + count] if count else ())
            calls = actor.calls
            if calls < actor.next_sample:
                if args is None:  # a plain call: cheaper than unpacking empty arguments
                    result = actor.methods[method]()
                else:
                    result = actor.methods[method](*args, **kwargs)
            else:  # a sampled call: its service time goes into the ring stats() reads
                started = _perf_counter()
                result = actor.methods[method](*(args or ()), **kwargs)
                actor.samples.append(_perf_counter() - started)
                actor.sampled += 1
                actor.next_sample = calls + (1 if calls < SAMPLE_WARMUP else SAMPLE_EVERY)
        except BaseException as exc:
            self._raised(actor, identity, record, exc)
            return
        actor.calls += 1  # _returned, inline: the hot path
        if kind == _CALL:
            self._reply_result(actor, identity, record, result)
        elif call_id:  # a tell that wants its credit
            if call_id == actor.credit_token and identity == actor.credit_identity:
                actor.credit_count += 1  # one thread runs a sync actor: count on it
            elif actor.runner is None:
                self._settle(actor, identity, call_id)
            else:  # threaded: several threads run its calls, so count on each thread
                self._credit(identity, call_id)

    def _execute_system(self, actor: HostedActor, identity: bytes, record: tuple, buffers) -> None:
        """:meth:`_execute` for actor 0, once the call passes the protocol's checks:
        its method is declared in the host's :class:`SystemTable` and the caller's
        role may call it (see :mod:`zactor.wire.protocol`). On a CURVE inbox the
        role is the sender's key's, and flags claiming another role count as none.
        A refused call is logged (the first of each kind) and gets an error reply."""
        table = self.system_table
        method = record[2]
        role = ROLE_OF_FLAGS.get(record[1])
        keyed = None
        peer_role = self.runtime.peer_role
        if peer_role is not None:  # a CURVE inbox: the sender's key says its role
            keyed = peer_role(buffers)
            if role != keyed:
                role = None  # claims a role its key does not hold
        if role == HEAD and identity != (self.runtime.head_address or "").encode():
            role = None  # claims to be the head, but does not send from its inbox
        if table.allows(method, role):
            self._execute(actor, identity, record, buffers)
            return
        claimed = ROLE_OF_FLAGS.get(record[1])
        if not 0 <= method < len(table.names):
            what = f"a call to undeclared {table.service} method #{method}"
            self.runtime.drop("undeclared-method", identity, what)
            error: Exception = AttributeError(
                f"{table.service} has no method #{method} in zactor protocol version "
                f"{PROTOCOL_VERSION}: the caller runs another zactor release; run the same "
                "release in every process of a cluster"
            )
        else:
            name = table.names[method]
            sender = role or "peer of no role"
            if keyed is not None and claimed != keyed:
                sender = f"peer whose key is the {keyed} key but claims the {claimed} role"
            self.runtime.drop("wrong-role", identity, f"{table.service}.{name} refused to {sender}")
            allowed = " or ".join(sorted(table.roles[method]))
            error = PermissionError(
                f"{table.service}.{name} may only be called by {allowed}, not by a {sender}: "
                "it is the cluster's own control message; use the public API (zactor.kill, "
                "zactor.get_actor, ...) instead"
            )
        if record[0] == _CALL:
            description = describe_exception(error, f"{table.service} of {self.runtime.address})")
            self._reply(identity, _ERROR, record[3], record[4], description)
        else:
            self._credit(identity, record[3])

    def _raised(self, actor: HostedActor, identity: bytes, record: tuple, exc: BaseException):
        """A call of ``actor`` raised ``exc``: the one place that decides what follows.

        ``zactor.exit_actor()`` ends the actor; a failed constructor's error is
        replied; any other exception is counted and replied (for an actor with a
        checkpoint, recorded first, as a successful call's result is).
        """
        if isinstance(exc, NestingError):  # only a foreign peer sends that: count it, log once
            self.runtime.drop("too-deep", identity, str(exc))
        if actor.dead is not None:  # killed while it ran (perhaps interrupted): void
            if actor.durable is not None and record[0] == _CALL:
                actor.durable.forget_running(identity, record[3])  # nothing was recorded
            self._reply_died(identity, record, actor.dead)  # a tell's credit too
            return
        if record[0] != _CALL:
            self._credit(identity, record[3])
        if isinstance(exc, ActorExit):
            self._exited(actor, identity, record)
        elif isinstance(exc, _Terminate):
            self._terminating(actor, identity, record)
        elif isinstance(exc, SystemExit):
            self._crashed(actor, identity, record, exc)
        elif isinstance(exc, _InitFailed):
            self._reply_init_error(actor, identity, record)
        elif actor.durable is not None:
            description = self._failure(actor, record, exc)
            self._complete_durable(actor, identity, record, False, description)
        else:
            self._failed(actor, identity, record, exc)

    def _returned(self, actor: HostedActor, identity: bytes, record: tuple, result: Any) -> None:
        """A call of ``actor`` returned ``result``: count it, then record and save it
        (with a checkpoint) and reply it (for a CALL)."""
        actor.calls += 1
        if record[0] != _CALL:
            self._credit(identity, record[3])
        if actor.durable is not None:
            self._complete_durable(actor, identity, record, True, result)
        elif record[0] == _CALL:
            self._reply_result(actor, identity, record, result)

    def _reply_result(self, actor: HostedActor, identity: bytes, record: tuple, result: Any):
        """Reply a CALL's return value, unless the actor was killed while it ran:
        then the result is void and the caller hears that the actor died."""
        if actor.dead is not None:
            self._reply_died(identity, record, actor.dead)
            return
        kind = _RESULT
        try:  # dumps without _encode_reply's frame: a call's result is the hot path
            payload, buffers = _dumps(result)
        except Exception:  # it does not serialize: _encode_reply makes the caller's error
            kind, payload, buffers = _encode_reply(_RESULT, record[4], result)
        self._queue_reply(identity, kind, record[3], record[4], payload, buffers)

    def _exited(self, actor: HostedActor, identity: bytes, record: tuple) -> None:
        """The call raised ActorExit (``zactor.exit_actor()``): the actor ends, and this
        call and the ones queued behind it raise ActorDiedError, as in Ray.

        With a checkpoint the call counts as applied (saved like a tell) before the
        actor ends.
        """
        reason = f"actor {actor} exited by calling zactor.exit_actor(); it will not restart"
        if actor.durable is not None:
            if record[0] == _CALL:
                actor.durable.forget_running(identity, record[3])
            error = actor.durable.tell_done(actor)
            if error is not None:
                self._failure(actor, record, error)
            self._final_checkpoint(actor)
        if record[0] == _CALL:
            self._reply_died(identity, record, reason)
        if self.end(actor, reason):
            self._notify_ended(actor)

    def _terminating(self, actor: HostedActor, identity: bytes, record: tuple) -> None:
        """The call was ``__zactor_terminate__``: the actor ends once the calls it has
        received run (as a retired actor does); the call is answered then."""
        if record[0] == _CALL:
            if actor.durable is not None:
                actor.durable.forget_running(identity, record[3])
            actor.farewells.append((identity, record[3]))
        reason = (
            f"actor {actor} was terminated by __zactor_terminate__ after running the calls "
            "sent to it before; it will not restart"
        )
        if not self.retire(actor, reason):  # it ended meanwhile (killed): answer now
            farewell = (identity, record[3])
            if record[0] == _CALL and farewell in actor.farewells:  # else its end answered
                actor.farewells.remove(farewell)
                self._reply_died(identity, record, actor.dead or reason)

    def _crashed(self, actor: HostedActor, identity: bytes, record: tuple, exc: SystemExit):
        """The call raised SystemExit (``sys.exit()`` in a method): the actor ends as if
        its process had, and the head decides whether it restarts (``max_restarts``)
        and tells every process, whose calls are then retried (``max_task_retries``)
        or fail."""
        cause = f"its method {_method_name(actor, record[2])} called sys.exit({exc.code!r})"
        retiring = actor.retiring is not None  # ending anyway (terminate, lifetime): no restart
        if retiring:
            reason = f"actor {actor} died: {cause}, while it was ending; it will not restart"
        else:
            reason = AnnouncedDeath(
                f"actor {actor} died: {cause}; it comes back if its max_restarts allow",
                actor.incarnation,
            )
        if record[0] == _CALL:
            if actor.durable is not None:  # not recorded: a retry runs it again
                actor.durable.forget_running(identity, record[3])
            self._reply_died(identity, record, reason)
        if self.end(actor, reason):
            hook = getattr(self, "on_actor_failed", None)
            if retiring or hook is None:
                self._notify_ended(actor)
            else:
                hook(actor, cause)

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
