"""Reply batching: replies wait per caller and go out together.

A mixin of :class:`zactor.worker.host.ActorHost`. A thread queues the replies
of the calls it runs into the outbox of each caller (:meth:`ReplyBatching._queue_reply`)
and sends its batches when it goes back to the inbox, or sooner (see
:meth:`zactor.worker.threads.LeaderFollower._run_ready`); the watchdog sends
batches a thread left behind (:meth:`ReplyBatching._send_held_replies`).
"""

from __future__ import annotations

import logging

from zactor.transport import is_zactor_address
from zactor.wire import records as wire
from zactor.wire import serialization
from zactor.worker.hosted import AnnouncedDeath

log = logging.getLogger("zactor")

_dumps = serialization.dumps
_dumps_call = serialization.dumps_call
_CALL, _TELL, _DIED, _ACK = wire.CALL, wire.TELL, wire.DIED, wire.ACK
_NOTICE_FOLLOWS = wire.DIED_NOTICE_FOLLOWS
#: Credits for one caller's tells are sent once this many are owed (or sooner, when
#: the thread goes idle): under a flood of tells, one small record per batch of them.
CREDIT_BATCH = 256


class ReplyBatching:
    """Queueing replies per caller and sending the batches (see the module docstring)."""

    def _reply_box(self, identity: bytes):
        """The outbox to the caller whose routing id (= inbox address) is ``identity``."""
        box = self._reply_boxes.get(identity)
        if box is None:
            address = identity.decode()
            if not is_zactor_address(address):
                raise ValueError(f"routing id {identity[:64]!r} is not a zactor inbox address")
            box = self._reply_boxes[identity] = self.runtime.outbox(address)
        return box

    def _queue_reply(
        self,
        identity: bytes,
        kind: int,
        call_id: int,
        actor_id: int,
        payload,
        buffers,
        flags=0,
        method=0,
    ):
        """Batch a reply (or a record of another ``kind``); this thread sends its batches
        in :meth:`_send_replies`."""
        box = self._reply_boxes.get(identity)
        if box is None:
            try:
                box = self._reply_box(identity)
            except Exception as exc:  # a foreign peer: nobody to answer, keep serving
                self.runtime.drop("bad-identity", identity, f"cannot reply: {exc}")
                return
        if box.add(kind, flags, method, call_id, actor_id, payload, buffers):  # a new batch
            local = self._local
            try:
                local.boxes.append(box)
            except AttributeError:
                local.boxes = [box]

    def _queue_tell(self, address: str, method: int, *args) -> None:
        """Batch a tell of ``method`` to the system actor at ``address`` (a report to the
        head) with this thread's replies: a worker creating actors in a burst sends
        its reports in one message, not one each."""
        identity = address.encode()
        payload, buffers = _dumps_call(args, {})
        # Call id 0: a system actor's tell wants no credit back. Its role flags, unlike a
        # reply's: the head checks who sent a system call.
        flags = self._reply_box(identity).flags
        self._queue_reply(identity, _TELL, 0, wire.SYSTEM_ACTOR_ID, payload, buffers, flags, method)

    def _send_replies(self) -> None:
        """Send the reply batches this thread queued."""
        boxes = getattr(self._local, "boxes", None)
        if boxes:
            self._local.boxes = []
            for box in boxes:
                box.flush()

    def _reply_died(self, identity: bytes, record: tuple, reason: str) -> None:
        if record[0] != _CALL:
            self._credit(identity, record[3])  # a tell: no reply, but its credit
            return
        if type(reason) is AnnouncedDeath:  # the caller follows the head's verdict on it
            payload, buffers = _dumps([str(reason), reason.incarnation])
            flags = _NOTICE_FOLLOWS
        else:
            payload, buffers = _dumps(str(reason))
            flags = 0
        self._queue_reply(identity, _DIED, record[3], record[4], payload, buffers, flags)

    # -- credits for tells -----------------------------------------------------------------

    def _credit(self, identity: bytes, token: int, count: int = 1) -> None:
        """``count`` tells from ``identity`` carrying ``token`` left their actor's
        mailbox (ran, failed, or met a dead actor): owe its caller the credits
        (``max_pending_calls``).

        Credits wait on this thread, and go out as one ACK record per caller and
        token when :data:`CREDIT_BATCH` of them are owed, or by
        :meth:`_send_credits` when the thread stops running calls for a while.
        A sync actor's tells count on the actor first (see :meth:`_settle`).
        """
        if not token:  # the head's and runtime's own tells want no credit
            return
        local = self._local
        try:
            credits = local.credits
        except AttributeError:
            credits = local.credits = {}
        key = (identity, token)
        count += credits.get(key, 0)
        if count < CREDIT_BATCH:
            credits[key] = count
        else:
            credits.pop(key, None)
            self._queue_reply(identity, _ACK, token, count, b"", ())

    def _settle(self, actor, identity: bytes | None = None, token: int = 0) -> None:
        """Owe, on this thread, the credits counted on ``actor`` (see ``_execute``),
        and count on for the caller ``identity`` and its ``token`` (none: stop)."""
        if actor.credit_count:
            self._credit(actor.credit_identity, actor.credit_token, actor.credit_count)
        actor.credit_identity, actor.credit_token = identity, token
        actor.credit_count = 1 if token else 0

    def _queue_credits(self) -> None:
        """Put every credit this thread owes into its caller's reply batch, unsent.

        Called when a run of an actor's calls ends: the credits then leave with
        the next reply to that caller, at the thread's next idle moment, or by the
        watchdog (:meth:`_send_held_replies`) if the thread runs long in another
        actor's call meanwhile, so they never wait behind it.
        """
        local = self._local
        credits = getattr(local, "credits", None)
        if not credits:
            return
        local.credits = {}
        try:
            held = local.ack_boxes
        except AttributeError:
            held = local.ack_boxes = []
        for (identity, token), count in credits.items():
            box = self._reply_boxes.get(identity)
            if box is None:  # never answered before: queue (and send) as a reply
                self._queue_reply(identity, _ACK, token, count, b"", ())
                continue
            box.add(_ACK, 0, 0, token, count, b"", ())
            if box not in held:
                held.append(box)

    def _owes_credits(self) -> bool:
        """True if this thread holds credits not yet sent."""
        local = self._local
        return bool(getattr(local, "credits", None) or getattr(local, "ack_boxes", None))

    def _send_credits(self) -> None:
        """Send every credit this thread owes, with its replies."""
        local = self._local
        credits = getattr(local, "credits", None)
        if credits:
            local.credits = {}
            for (identity, token), count in credits.items():
                self._queue_reply(identity, _ACK, token, count, b"", ())
        held = getattr(local, "ack_boxes", None)
        if held:
            local.ack_boxes = []
            for box in held:
                box.flush()
        self._send_replies()

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
            if box.count:
                try:
                    box.flush()
                except Exception:  # e.g. the socket closed at shutdown: keep watching
                    log.exception("zactor: sending held replies to %s failed", box.address)
        return [box for box in boxes if box.count]
