"""The host's register of its actors: adding, starting, ending and retiring them.

A mixin of :class:`zactor.worker.host.ActorHost`; it shares the host's state
(``actors``, ``tombstones``, ``_retiring``, the lock ``_mu``).
"""

from __future__ import annotations

import ctypes
import os
import sys
from threading import get_ident as _get_ident
from typing import TYPE_CHECKING, Any

from zactor.errors import _ActorKilled
from zactor.wire import records as wire
from zactor.wire.protocol import SystemTable
from zactor.worker.hosted import RETIRE_MARK, HostedActor

if TYPE_CHECKING:
    from zactor.worker.runners import ThreadedRunner


class ActorRegistry:
    """Adding, starting, ending and retiring the actors of a host."""

    def add_system_actor(self, instance: Any, table: SystemTable) -> HostedActor:
        """Host ``instance`` as actor 0 (the head's registry or a worker's service),
        answering the methods ``table`` declares, to the roles it allows."""
        actor = HostedActor(wire.SYSTEM_ACTOR_ID, table.service, execute=self._execute_system)
        actor.bind(instance, table.names)
        self.system_table = table
        self.actors[wire.SYSTEM_ACTOR_ID] = actor
        return actor

    def reserve(self, actor_id: int, class_name: str, name: str | None) -> HostedActor:
        """Register an actor about to be constructed; its calls queue until it is.

        An actor restarting here (a new incarnation of an id that ended here)
        replaces its tombstone: calls for the id reach the new incarnation.
        """
        actor = HostedActor(actor_id, class_name, name, self._execute)
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
        # Its callers hear of the end before the clean-up hook runs, however long that takes.
        self._send_replies()
        self._send_credits()
        actor.run_exit_hook(self)
        # Its __zactor_terminate__ calls resolve now that it is gone and cleaned up.
        for identity, call_id in actor.farewells:
            self._reply(identity, wire.RESULT, call_id, actor.actor_id, None)
        actor.farewells.clear()

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
                actor.mailbox.append(RETIRE_MARK)
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

    def interrupt(self, actor: HostedActor) -> bool:
        """Raise an exception in the thread running a method of ``actor`` (ended by
        ``zactor.kill``) at its next bytecode, as far as Python allows; True if sent.

        Only a sync actor's running call is interrupted, and only while its thread
        runs the actor's own Python code: a call blocked in C (``time.sleep``, a
        socket read, a numpy kernel) is interrupted when that returns; a call
        waiting inside zactor (``zactor.get`` on another actor) and a threaded
        actor's calls are not interrupted, and finish. Either way the caller has
        already had its ``ActorDiedError``, and the call's result is discarded.
        """
        thread = actor.running
        if thread is None or thread == _get_ident() or actor.instance is None:
            return False
        codes = {getattr(getattr(m, "__func__", m), "__code__", None) for m in actor.methods}
        if not _runs_code_of(thread, codes):
            return False
        send = ctypes.pythonapi.PyThreadState_SetAsyncExc
        if send(ctypes.c_ulong(thread), ctypes.py_object(_ActorKilled)) != 1:
            return False
        if actor.running != thread or not _runs_code_of(thread, codes):
            send(ctypes.c_ulong(thread), None)  # it left the method meanwhile: take it back
            return False
        return True

    def runners(self) -> list:
        """The runners of the actors hosted here (including retiring ones)."""
        with self._mu:
            actors = list(self.actors.values()) + list(self._retiring.values())
        return [a.runner for a in actors if a.runner is not None]

    def _running_actor_id(self) -> int | None:
        actor = getattr(self._local, "actor", None)
        return None if actor is None else actor.actor_id

    def _running_namespace(self) -> str | None:
        actor = getattr(self._local, "actor", None)
        return None if actor is None else actor.job_namespace

    def current_actor(self) -> HostedActor | None:
        """The actor whose call this thread is running, if any."""
        return getattr(self._local, "actor", None)

    def _notify_ended(self, actor: HostedActor) -> None:
        hook = getattr(self, "on_actor_ended", None)
        if hook is not None:
            hook(actor)


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _runs_code_of(thread: int, codes: set) -> bool:
    """True if ``thread`` is inside one of ``codes`` (an actor's methods) and not, at
    its innermost frame, inside zactor itself (where an exception could leave a lock
    or a reply half done)."""
    frame = sys._current_frames().get(thread)
    if frame is None or frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        return False
    while frame is not None:
        if frame.f_code in codes:
            return True
        frame = frame.f_back
    return False
