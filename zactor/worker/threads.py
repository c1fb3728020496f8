"""The host's threads: one leader reads and runs, followers wait, a watchdog watches.

A mixin of :class:`zactor.worker.host.ActorHost`; the module docstring of
:mod:`zactor.worker.host` tells the design. :meth:`LeaderFollower.serve` runs
the host on the calling thread until :meth:`LeaderFollower.stop`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from threading import get_ident as _get_ident

from zactor.endpoint.runtime import POLL_SLICE_MS
from zactor.errors import _ActorKilled
from zactor.worker.hosted import HostedActor
from zactor.worker.runners import ASYNC_STOP_GRACE_S

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

_monotonic = time.monotonic


class LeaderFollower:
    """Leader, followers and watchdog (see the module docstring)."""

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
            except _ActorKilled:
                # zactor.kill's interruption landed just after the call it meant had
                # returned (see ActorRegistry.interrupt): nothing to undo, lead on.
                log.warning("zactor: an actor's interruption arrived after its call ended")
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
            if self._leader != me:  # demoted: what it owes goes out before it follows
                self._send_credits()
                runtime.flush()
                return
            self._turn += 1
            if runtime._dirty:
                runtime.flush()  # calls the actors made, batched in outboxes
            if self._owes_credits():  # before blocking, unless more is waiting already
                if runtime.receive(0):
                    continue
                self._send_credits()
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
                self._send_credits()
                since = now

    def _drain(self, actor: HostedActor) -> None:
        if actor.runner is not None:
            actor.runner.drain()
            return
        execute = actor.execute
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
            actor.running = me
            try:
                for identity, record, buffers in items:
                    if record[4] != actor.actor_id:
                        if identity is None:  # RETIRE_MARK: every call before it has run
                            self.finish_retiring(actor)
                        else:  # parked behind a creation: route it now
                            self._on_calls(identity, [record], buffers, unparking=True)
                        local.actor = actor  # both may have run calls of another actor
                        if self._leader == me:
                            self._busy = me
                    else:
                        execute(actor, identity, record, buffers)
            finally:
                self._end_run(actor)
            if self._busy == me:
                self._busy = None
            actor.slow = _monotonic() - started >= REPLY_LINGER_S
            if self._leader != me:
                # Demoted: it may drain for as long as the new leader refills the
                # mailbox, so it sends after each run (the leader, in _run_ready).
                self._send_credits()

    def _end_run(self, actor: HostedActor) -> None:
        """A run of ``actor``'s calls on this thread ended: it is no longer the
        thread's current actor, and the credits its tells earned are queued for
        their callers (sent soon, even if the thread now runs long elsewhere)."""
        self._local.actor = None
        actor.running = None
        if actor.credit_count:
            self._settle(actor)
        self._queue_credits()

    def _step_down(self) -> None:
        """Called before this thread blocks on a reply: send its replies and credits
        (its actor's run included: the run may not end before the reply comes), let
        another lead."""
        actor = getattr(self._local, "actor", None)
        if actor is not None and actor.runner is None and actor.credit_count:
            self._settle(actor, actor.credit_identity, actor.credit_token)
            actor.credit_count = 0  # settled: the run counts on from none
        self._send_credits()
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
