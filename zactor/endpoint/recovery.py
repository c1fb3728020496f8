"""The caller's side of actor failure: failing or holding calls, and re-routing them.

When a worker process dies (or an actor is killed so that it can restart),
the head tells every process (:meth:`Recovery.actor_died`): which actors
died, why, and whether each one restarts. Each process then

* fails, with :class:`~zactor.errors.ActorDiedError`, the calls it had in
  flight to them, except the calls of actors with ``max_task_retries``,
  which it keeps to send again;
* makes new calls to an actor that is gone for good fail at once, and holds
  new calls to an actor that restarts;
* once the head says the actor is back (:meth:`Recovery.actor_restarted`),
  points every handle at its new process and sends the kept calls, in the
  order they were first made, with their original call ids (so an actor
  with a checkpoint can tell a retried call it already applied).

Handles learn of all this without any check on the fast path: the
:class:`~zactor.caller.handle._Target` objects behind them are tracked here, and their
cached outbox is cleared when the actor dies or moves, which sends the next
call down the slow path (``_Target.box``) that looks at :attr:`Recovery.down`.

A driver, which hosts no actors, receives the head's notices through
:class:`Notices`; a worker through its ``WorkerService``.
"""

from __future__ import annotations

import threading
import time
import weakref

from zactor.errors import ActorCreationError, ActorDiedError
from zactor.wire import records as wire

_CALL = wire.CALL
#: Why calls to a new actor wait: the head has not placed it yet (a ``down`` reason).
PLACING = "the head is placing it"
#: Voided call ids kept at most (call ids grow, so the oldest are the smallest).
VOIDED_MAX = 1 << 16


def _read_boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:  # not Linux: no stamp compares across processes
        return None


_BOOT_ID = _read_boot_id()


def clock_stamp() -> list | None:
    """``[boot id, time.monotonic()]``: a moment every process of this machine can
    compare with its own monotonic clock (one clock per boot), or None where the
    boot cannot be identified."""
    return None if _BOOT_ID is None else [_BOOT_ID, time.monotonic()]


def died_error(reason) -> ActorDiedError:
    """The error a call to an actor that is down for good raises: ``reason`` is a ``down``
    entry's (a text, or the :class:`ActorCreationError` of an actor never created)."""
    if isinstance(reason, ActorDiedError):
        return type(reason)(*reason.args)  # a new one each time: tracebacks do not pile up
    return ActorDiedError(reason)


def _sent_after(sent_at: float, stamp: list | None) -> bool:
    """True if a call sent at ``sent_at`` (this process's monotonic clock) left after
    the moment ``stamp`` (:func:`clock_stamp`) names; False when they cannot compare."""
    return stamp is not None and stamp[0] == _BOOT_ID and sent_at > stamp[1]


class Recovery:
    """One process's view of dead and restarting actors (see the module docstring)."""

    def __init__(self, runtime) -> None:
        self._runtime = runtime
        self._lock = threading.Lock()
        #: actor id -> (reason, restarting) while it restarts, and for good once dead.
        self.down: dict[int, tuple] = {}
        #: actor id -> its address after a restart (handles made later start there).
        self.routes: dict[int, str] = {}
        #: actor id -> calls to send once it is back: (kind, method, call_id, payload, buffers).
        self.held: dict[int, list] = {}
        self._targets: dict[int, weakref.WeakSet] = {}
        self._prune_at = 1024
        #: Call ids failed here while their actor's process lives on (zactor.kill): its
        #: answers to them still come, and are dropped without a warning.
        self.voided: set[int] = set()
        #: actor id -> the latest incarnation whose death the head told this process of.
        self.died_incarnation: dict[int, int] = {}
        #: actor id -> (incarnation, reason): calls wait for the head's word on that death.
        self._awaiting: dict[int, tuple] = {}

    def track(self, target) -> str:
        """Remember ``target`` so a restart can re-route it; returns the actor's address now."""
        with self._lock:
            targets = self._targets.get(target.actor_id)
            if targets is None:
                if len(self._targets) >= self._prune_at:  # actors whose handles are all gone
                    self._targets = {k: v for k, v in self._targets.items() if len(v)}
                    self._prune_at = 2 * max(1024, len(self._targets))
                targets = self._targets[target.actor_id] = weakref.WeakSet()
            targets.add(target)
            return self.routes.get(target.actor_id, target.address)

    def _reroute(self, actor_id: int, address: str | None = None) -> None:
        """Clear the cached outbox of every handle of ``actor_id`` (and move them). Locked."""
        for target in list(self._targets.get(actor_id, ())):
            if address is not None:
                target.address = address
            target.runtime = None
            target.outbox = None

    # -- what the head tells us ---------------------------------------------------------------

    def fail_calls_to(self, address: str, error: BaseException) -> None:
        """Fail now, with ``error``, every call waiting for the system actor at
        ``address`` (a head that has gone silent: see ``zactor.caller.head_watch``)."""
        runtime = self._runtime
        failed = []
        for call_id, future in runtime.pending.items():
            target = getattr(future._origin, "_target", None)
            if (
                target is not None
                and target.actor_id == wire.SYSTEM_ACTOR_ID
                and target.address == address
                and runtime.pending.pop(call_id) is not None
            ):
                failed.append(future)
        for future in failed:
            future._fail(error)

    def actor_died(
        self, address: str, entries: list, process_died: bool = True, died_at=None
    ) -> None:
        """The actors in ``entries`` (``[actor_id, reason, restarting]``) at ``address`` died.

        Their calls in flight fail, or wait to be sent again (``max_task_retries``).
        If the whole process at ``address`` died, calls to its worker service
        (actor 0) fail too and its outbox is dropped. ``died_at``
        (:func:`clock_stamp`), when given, is a moment the process was already
        gone: a call sent after it never reached the actor, and waits for the
        restart like a call made after this notice, retries or not.
        """
        runtime = self._runtime
        dead = {}
        held_tells: dict = {}  # gate -> tells held for a restart (no credit yet)
        with self._lock:
            for actor_id, reason, restarting, *incarnation in entries:
                dead[actor_id] = (reason, bool(restarting), incarnation[0] if incarnation else None)
                if incarnation:
                    seen = self.died_incarnation.get(actor_id, -1)
                    self.died_incarnation[actor_id] = max(seen, incarnation[0])
                    if self._awaiting.get(actor_id, (None,))[0] == incarnation[0]:
                        del self._awaiting[actor_id]
                if process_died or restarting or actor_id in self.down:
                    # Remembered, so new calls wait or fail here. An actor killed for
                    # good in a live process is not: its tombstone there answers them.
                    self.down[actor_id] = dead[actor_id][:2]
                    self._reroute(actor_id)
            held_ids = {
                e[2] for actor_id in dead for e in self.held.get(actor_id, ()) if e[0] == _CALL
            }
            for actor_id in dead:  # tells held for a restart stay counted on their gates
                for kind, _method, token, _payload, _buffers in self.held.get(actor_id, ()):
                    gate = runtime.gates.get(token) if kind != _CALL else None
                    if gate is not None:
                        held_tells[gate] = held_tells.get(gate, 0) + 1
        if process_died:
            runtime.forget_outbox(address)
        retried: dict[int, list] = {}
        failed = []
        kept: dict = {}  # gate -> its calls to the dead actors that stay pending
        for call_id, future in runtime.pending.items():
            target = getattr(future._origin, "_target", None)
            if target is None:
                continue
            if call_id in held_ids:
                if dead[target.actor_id][1]:  # held for a restart: still counted
                    kept[future._gate] = kept.get(future._gate, 0) + 1
                continue
            actor_id = target.actor_id
            if actor_id in dead:
                reason, restarting, incarnation = dead[actor_id]
            elif process_died and actor_id == wire.SYSTEM_ACTOR_ID and target.address == address:
                reason, restarting, incarnation = f"the process at {address} died", False, None
            else:
                continue
            retry = future._retry
            if retry is not None and not self._claim(retry, incarnation):
                if restarting:  # its DIED reply came first and held it: still counted
                    kept[future._gate] = kept.get(future._gate, 0) + 1
                continue
            if restarting and retry is not None:
                unsent = process_died and _sent_after(retry.sent_at, died_at)
                if unsent or retry.left != 0:
                    if not unsent and retry.left > 0:
                        retry.left -= 1
                    if not process_died:  # the live process may still answer the old send
                        self._void(call_id)
                    retried.setdefault(actor_id, []).append(
                        (_CALL, retry.method, call_id, retry.payload, retry.buffers)
                    )
                    kept[future._gate] = kept.get(future._gate, 0) + 1
                    continue
            if runtime.pending.pop(call_id) is not None:
                if not process_died:
                    self._void(call_id)
                if restarting:
                    reason += (
                        "; this call was in flight and is not sent again "
                        "(max_task_retries is 0 or used up)"
                    )
                failed.append((future, reason))
        with self._lock:
            for actor_id, calls in retried.items():
                # In flight before the death, so before every call held since.
                self.held[actor_id] = calls + self.held.get(actor_id, [])
            for actor_id, (_, restarting, _) in dead.items():
                if not restarting and actor_id in self.held:  # held while it restarted
                    failed.extend(self._take_held_calls(actor_id))
        for future, reason in failed:
            future._fail(died_error(reason))
        if process_died:
            # Its tells in flight died with it: no credits will come for them, so each
            # handle now counts only its calls that stay pending (held or retried).
            with self._lock:
                gates = [t.gate for actor_id in dead for t in self._targets.get(actor_id, ())]
            for gate in gates:
                gate.inflight = kept.get(gate, 0) + held_tells.get(gate, 0)

    def announced_death(self, future, target, reason: str, incarnation: int) -> bool | None:
        """A call that may be sent again got a DIED reply from incarnation ``incarnation``
        of its actor, whose death the head announces (DIED_NOTICE_FOLLOWS).

        If the head's notice on that death came already, the call follows it now:
        held for the restart or sent to the actor where it is back (if
        ``max_task_retries`` allows; returns True), or it fails on the reply
        (False). If not, it waits for the notice (None: the caller also asks the
        head, in case this process missed it, see :meth:`head_answered`).
        """
        runtime = self._runtime
        actor_id = target.actor_id
        retry = future._retry
        with self._lock:
            if self.died_incarnation.get(actor_id, -1) < incarnation:
                runtime.pending.restore(retry.call_id, future)  # actor_died takes it
                asked = actor_id in self._awaiting
                self._awaiting[actor_id] = (incarnation, reason)
                return True if asked else None
            if retry.handled >= incarnation:  # the notice held it already: wait for that
                runtime.pending.restore(retry.call_id, future)
                return True
            retry.handled = incarnation
            down = self.down.get(actor_id)
            address = self.routes.get(actor_id)
        restarting = down is not None and down[1]
        if not (restarting or (down is None and address is not None)) or retry.left == 0:
            return False
        if retry.left > 0:
            retry.left -= 1
        runtime.pending.restore(retry.call_id, future)
        self.hold(actor_id, _CALL, retry.method, retry.call_id, retry.payload, retry.buffers)
        runtime.flush()
        return True

    def _claim(self, retry, incarnation: int | None) -> bool:
        """True if the death of ``incarnation`` is this call's to act on now; False if its
        DIED reply acted on it already (:meth:`announced_death`)."""
        if incarnation is None:
            return True
        with self._lock:
            if retry.handled >= incarnation:
                return False
            retry.handled = incarnation
            return True

    def head_answered(self, actor_id: int, incarnation: int, actors: list | None) -> None:
        """The head's ``list_actors``, asked because a call waits for its notice on the
        death of ``incarnation`` of ``actor_id`` (:meth:`announced_death`).

        A process that joined after that notice went out, or that holds a handle
        older than the actor's restart, never gets it: if the head has moved on
        (the actor is gone, or a later incarnation runs or starts), this process
        takes the notice it missed from the answer. Otherwise the notice is on
        its way. ``actors`` is None if the head did not answer.
        """
        if actors is None:
            return
        with self._lock:
            awaited = self._awaiting.get(actor_id)
            if awaited is None or awaited[0] != incarnation:
                return  # the notice came meanwhile
        info = next((a for a in actors if a.get("actor_id") == actor_id), None)
        if info is not None and info.get("incarnation", 0) <= incarnation:
            return  # the head has not dealt with the death yet: its notice will come
        restarting = info is not None
        self.actor_died("", [[actor_id, awaited[1], restarting, incarnation]], False)
        if restarting and info.get("state") == "alive":
            self.actor_restarted(actor_id, info["address"], info["incarnation"])

    def _void(self, call_id: int) -> None:
        if len(self.voided) >= VOIDED_MAX:  # answers that never came: forget the oldest half
            self.voided = set(sorted(self.voided)[VOIDED_MAX // 2 :])
        self.voided.add(call_id)

    def take_voided(self, replies: list) -> int:
        """How many of ``replies`` (reply records) answer voided calls; forgets them."""
        voided = self.voided
        count = 0
        for record in replies:
            if record[3] in voided:
                voided.discard(record[3])
                count += 1
        return count

    def actor_restarted(self, actor_id: int, address: str, incarnation: int) -> None:
        """Actor ``actor_id`` is back at ``address``: re-route its handles, send what waited."""
        with self._lock:
            self.routes[actor_id] = address
        self._release(actor_id, address)
        self._runtime.flush()

    def _release(self, actor_id: int, address: str) -> None:
        """Send the calls held for ``actor_id`` to ``address``, in order, and point its
        handles there; calls made meanwhile are held behind them until none is left.
        What is batched goes out with the next flush (the caller's, or the flusher's)."""
        runtime = self._runtime
        while True:
            with self._lock:
                calls = self.held.pop(actor_id, None)
                if not calls:  # nothing more waits: new calls may go straight out now
                    # Moved first: a handle that finds the actor up (``_Target.box``
                    # reads ``down`` unlocked) must find its address too.
                    self._reroute(actor_id, address)
                    self.down.pop(actor_id, None)
                    break
            box = runtime.outbox(address)
            for kind, method, call_id, payload, buffers in calls:
                if kind == _CALL and call_id not in runtime.pending:
                    continue  # failed meanwhile
                box.put(kind, method, call_id, actor_id, payload, buffers)

    # -- actors the head is placing (zactor.caller.creation) ---------------------------------

    def placing(self, actor_id: int) -> None:
        """A new actor's handle exists before the head has placed it: its calls are held
        (as for a restart) until :meth:`placed` or :meth:`placement_failed`."""
        with self._lock:
            self.down[actor_id] = (PLACING, True)

    def placed(self, actor_id: int, address: str) -> None:
        """The new actor lives at ``address`` (its creation is on its way there): send the
        calls held for it, in order, and point its handles there."""
        self._release(actor_id, address)

    def placement_failed(self, actor_id: int, reason: str) -> None:
        """The new actor could not be created: its held calls, and every later one, fail
        with :class:`ActorCreationError` (``reason``)."""
        with self._lock:
            self.down[actor_id] = (ActorCreationError(reason), False)
            failed = self._take_held_calls(actor_id)
        for future, why in failed:
            future._fail(died_error(why))

    def unplaced(self, actor_id: int) -> bool:
        """True while the head has not answered the placement of ``actor_id``."""
        return self.down.get(actor_id, (None,))[0] is PLACING

    # -- calls made while the actor is down ------------------------------------------------------

    def hold(self, actor_id: int, kind: int, method: int, call_id: int, payload, buffers) -> None:
        """Keep a call to a restarting actor until it is back (``_Target.box`` said so).

        If it came back meanwhile, the call goes out now; if it died for good, the
        call fails (a tell raises :class:`ActorDiedError`).
        """
        with self._lock:
            down = self.down.get(actor_id)
            if down is not None and down[1]:
                self.held.setdefault(actor_id, []).append((kind, method, call_id, payload, buffers))
                return
            address = self.routes.get(actor_id)
            if address is None and down is None:  # placed since the caller looked
                address = next((t.address for t in self._targets.get(actor_id, ())), None)
        if down is None and address is not None:
            self._runtime.outbox(address).put(kind, method, call_id, actor_id, payload, buffers)
            return
        reason = down[0] if down is not None else f"actor {actor_id} is gone"
        future = self._runtime.pending.pop(call_id) if kind == _CALL else None
        if future is None:
            raise died_error(reason)
        future._fail(died_error(reason))

    def _take_held_calls(self, actor_id: int) -> list:
        """The held calls of an actor that will not come back, as (future, reason). Locked."""
        reason = self.down[actor_id][0]
        out = []
        for kind, _method, call_id, _payload, _buffers in self.held.pop(actor_id, ()):
            future = self._runtime.pending.pop(call_id) if kind == _CALL else None
            if future is not None:
                out.append((future, reason))
        return out


class Notices:
    """The head's notices to a driver (a process that hosts no actors), as actor 0's methods.

    Only the head may send them; the runtime drops calls from anyone else.
    """

    def __init__(self, recovery: Recovery) -> None:
        self._recovery = recovery

    def actor_died(
        self, address: str, entries: list, process_died: bool = True, died_at=None
    ) -> None:
        """The head tells every process that actors at ``address`` died (see Recovery)."""
        self._recovery.actor_died(address, entries, process_died, died_at)

    def actor_restarted(self, actor_id: int, address: str, incarnation: int) -> None:
        """The head tells every process that an actor is back at ``address``."""
        self._recovery.actor_restarted(actor_id, address, incarnation)
