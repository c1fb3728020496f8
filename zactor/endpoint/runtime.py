"""This process's endpoint in a cluster: one inbox, outboxes, pending calls.

A :class:`Runtime` exists in every zactor process (driver, worker, head). It

- sends calls through one :class:`Outbox` per peer, coalescing calls that are
  made faster than they can be sent into one frame (Nagle's idea with a
  timer instead of acknowledgements: a call to an idle peer goes out at once,
  calls that follow within :data:`LINGER_S` join a batch that is sent when it
  is full, when somebody waits, or by the background flusher);
- keeps the table of calls awaiting replies (``zactor.wire._fast.PendingTable``);
- reads its inbox with a *reader role* that one thread at a time holds. In a
  driver the thread that waits on a future takes the role and reads the
  socket itself, so a synchronous call involves no other thread; other
  waiting threads sleep until the reader wakes them. In a worker the actor
  host's leader thread holds the role for good (see :mod:`zactor.worker`).
  The reader polls for a message briefly before it sleeps on the inbox
  (:mod:`zactor.endpoint.spinning`).

It moves messages through :mod:`zactor.transport` and never names a socket
library; what a frame means comes from :mod:`zactor.wire`.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
import uuid
import weakref
from typing import Any, Callable

from zactor.endpoint.recovery import Notices, Recovery
from zactor.endpoint.refs import HandleRefs
from zactor.endpoint.spinning import SpinWait, spin_budget_ns
from zactor.errors import ClusterError, FrameError
from zactor.transport import ClusterKeys, TransportError, Transports, inbox_files
from zactor.wire import hotpath as _hotpath
from zactor.wire import records as wire
from zactor.wire import serialization
from zactor.wire.protocol import DRIVER_TABLE, HEAD, HEAD_TABLE, ROLE_FLAGS

log = logging.getLogger("zactor")

#: A call to a peer sent to less than this long ago joins a batch instead.
LINGER_S = 50e-6
#: A batch is sent once it holds this many calls ...
MAX_BATCH = 512
#: ... or this many bytes.
MAX_BATCH_BYTES = 1 << 20
#: Longest a reader blocks in one poll, so it notices shutdown and dead peers.
POLL_SLICE_MS = 200
#: How often the background thread reports handles made and dropped to the head (s).
REF_REPORT_S = 0.1

_parse_frame = _hotpath.parse_frame
_sort_records = _hotpath.sort_records
#: The connection to one peer with its batch (``zactor.wire._fast.Outbox``).
Outbox = _hotpath.Outbox
_TELL = wire.TELL
_SHUT_DOWN_WHILE_WAITING = (
    "zactor was shut down while a call was waiting for its reply: call zactor.init() again"
)
_monotonic = time.monotonic


class Runtime:
    """One process's inbox, outboxes and pending calls (see the module docstring)."""

    def __init__(
        self,
        inbox_address: str,
        *,
        role: str,
        head_address: str | None = None,
        node_id: str = "",
        worker_id: str = "",
        keys: ClusterKeys | None = None,
    ) -> None:
        """Bind this process's inbox at ``inbox_address``; with the cluster's ``keys``
        (:mod:`zactor.transport.keys`) every tcp socket speaks CURVE with ``role``'s key."""
        self.role = role
        self.head_address = head_address
        self.node_id = node_id
        self.worker_id = worker_id
        #: A driver's namespace for names (``init(namespace=)``, else an anonymous one);
        #: None in workers and the head, whose names come from the actor running a call.
        self.namespace: str | None = None
        self.log = log
        self.transports = Transports(keys.for_role(role) if keys is not None else None)
        try:
            inbox = self.transports.bind(inbox_address, head_address, self.drop)
        except BaseException:
            self.transports.close()
            raise
        self.address = inbox.address
        self._receive = inbox.receive
        self._poll_for = inbox.poll_for
        #: How long the reader polls before it sleeps (zactor.endpoint.spinning).
        self._spin = SpinWait(spin_budget_ns())
        #: On an inbox that authenticates senders (CURVE), ``peer_role(buffers)`` is the
        #: role whose key sent a message; None on one that does not (ipc). Read for
        #: system calls only, never on the path of ordinary calls.
        self.peer_role: Callable | None = getattr(inbox, "peer_role", None)
        self.pending = _hotpath.PendingTable()
        #: Live actor handles in this process, reported to the head (zactor.endpoint.refs).
        self.refs = HandleRefs()
        #: Dead and restarting actors, and the calls waiting for them (zactor.endpoint.recovery).
        self.recovery = Recovery(self)
        self.down = self.recovery.down  # read by every handle's slow path
        self._notices = Notices(self.recovery)
        self.lock = threading.Lock()
        self._cv = threading.Condition(self.lock)  # waiters for replies or the reader role
        self._bg_cv = threading.Condition(self.lock)  # the background thread's wake-up
        self._outboxes: dict[str, Outbox] = {}
        self._outbox_by_identity: dict[bytes, Outbox] = {}  # a peer's routing id is its address
        self._dirty: list[Outbox] = []
        self._armed = False
        self._reading = False
        self._reader: int | None = None  # thread id of the driver thread reading now
        self._waiters = 0
        self._watched = 0  # pending futures with callbacks: someone must read for them
        self._closed = False
        self.dropped: dict[str, int] = {}
        #: The gates of this process's handles that sent tells, by token (credits).
        self.gates: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self._gate_tokens = itertools.count(1)
        #: Set by an actor host: ``handler(identity, records, buffers)`` runs calls.
        self.call_handler: Callable | None = None
        #: Set by an actor host: called before a thread blocks waiting on a reply.
        self.before_block: Callable[[], None] | None = None
        #: Set by an actor host: the id of the actor whose call this thread runs.
        self.running_actor: Callable[[], int | None] | None = None
        #: Set by an actor host: the namespace of the job whose actor's call this thread
        #: runs (None outside an actor's call). See :meth:`default_namespace`.
        self.running_namespace: Callable[[], str | None] | None = None
        #: Set by :mod:`zactor.caller.task` on first use: this process's tasks and runners.
        self.task_pool = None
        #: Set by :mod:`zactor.caller.creation` on first use: ids leased, placements asked.
        self.creations = None
        self._made_lock = threading.RLock()  # see made_once; re-entrant: one may make another
        #: ``(when, seq, fn)`` heap of :meth:`call_later`'s functions (``self.lock``).
        self._timers: list = []
        self._timer_seq = itertools.count()
        self._background = threading.Thread(
            target=self._background_loop, name="zactor-background", daemon=True
        )
        self._background.start()

    def made_once(self, attribute: str, make: Callable[[], Any]) -> Any:
        """``self.<attribute>`` (one of the attributes above that start as None), set to
        ``make()`` on first use: made once, whichever threads ask at the same time.

        For what the layers above keep per runtime (``task_pool``, ``creations``)
        without the endpoint importing them.
        """
        made = getattr(self, attribute)
        if made is None:
            with self._made_lock:
                made = getattr(self, attribute)
                if made is None:
                    made = make()
                    setattr(self, attribute, made)
        return made

    # -- sending -------------------------------------------------------------------------

    def outbox(self, address: str) -> Outbox:
        """The outbox to ``address`` (made on first use)."""
        box = self._outboxes.get(address)
        if box is None:
            with self.lock:
                if self._closed:
                    raise ClusterError("zactor is shut down: call zactor.init() again")
                box = self._outboxes.get(address)
                if box is None:
                    box = self._outboxes[address] = Outbox(
                        address,
                        self.transports.connect(address, self.address),
                        ROLE_FLAGS.get(self.role, 0),  # every record says who sent it
                        self.mark_dirty,
                        LINGER_S,
                        MAX_BATCH,
                        MAX_BATCH_BYTES,
                    )
                    self._outbox_by_identity[address.encode()] = box
        return box

    def forget_outbox(self, address: str) -> None:
        """Stop sending to ``address`` (its process died); a later send makes a new outbox."""
        with self.lock:
            self._outboxes.pop(address, None)
            self._outbox_by_identity.pop(address.encode(), None)
        self.transports.peer_gone(address)

    def mark_dirty(self, box: Outbox) -> None:
        """``box`` holds a batch: remember to flush it, and wake the flusher."""
        with self.lock:
            self._dirty.append(box)
            if not self._armed:
                self._armed = True
                self._bg_cv.notify()

    def flush(self) -> None:
        """Send every batched call and reply now."""
        if self._dirty:
            with self.lock:
                dirty, self._dirty = self._dirty, []
                self._armed = False
            for box in dirty:
                box.flush()

    # -- receiving -----------------------------------------------------------------------

    def receive(self, timeout_ms: int) -> bool:
        """Wait up to ``timeout_ms`` for one message, then dispatch it.

        Replies resolve their futures; calls go to the actor host, which runs
        them before it reads the next message (so an actor's creation is done
        before the calls that follow it are read). Only the holder of the
        reader role may call this. Returns True if a message was handled.
        """
        message = None
        if timeout_ms and self._spin.budget_ns:
            message = self._poll_briefly()
        if message is None:
            message = self._receive(timeout_ms)
            if message is None:
                return False
        identity, frame0, buffers = message
        self._dispatch(identity, frame0, buffers)
        if self._waiters:
            with self.lock:
                self._cv.notify_all()
        return True

    def _poll_briefly(self):
        """Poll the inbox for up to the spin budget before sleeping on it: a message
        or None (:mod:`zactor.endpoint.spinning`)."""
        spin = self._spin
        budget = spin.budget()
        if not budget:
            return None
        message = self._poll_for(budget)
        if message is None:
            spin.missed()
        else:
            spin.caught()
        return message

    def _dispatch(self, identity: bytes, frame0, buffers) -> None:
        """Resolve the replies in one message and hand its calls to the host."""
        try:
            records = _parse_frame(frame0, len(buffers))
        except FrameError as exc:
            self.drop(exc.kind, identity, str(exc))
            return
        self._spin.received(len(records))  # after a batch, the next wait sleeps at once
        calls, replies, acks, unknown = _sort_records(records)
        for ack in acks:
            self._credit(ack[3], ack[4])
        if unknown:
            self.drop("kind", identity, "a record of unknown kind")
        if replies:
            box = self._outbox_by_identity.get(identity)
            if box is not None:
                box.replies_arrived(len(replies))
            # A call that may be sent again decides what an error or a death means.
            taken = self.pending.resolve(replies, buffers)
            if taken < len(replies) and taken + self.recovery.take_voided(replies) < len(replies):
                self.drop("unknown-call", identity, "a reply to no call awaiting one")
        if calls:
            if self.call_handler is not None:
                self.call_handler(identity, calls, buffers)
            elif self.head_address is not None and identity == self.head_address.encode():
                self._on_notices(calls, buffers)
            else:
                self.drop("not-a-host", identity, "calls sent to a process that hosts no actors")

    def _credit(self, token: int, count: int) -> None:
        """A worker took ``count`` tells of the handle whose gate has ``token`` off
        its actor's mailbox: they no longer count against ``max_pending_calls``."""
        gate = self.gates.get(token)
        if gate is not None:
            gate.inflight -= count

    def runs_actor(self, actor_id: int) -> bool:
        """True if this thread is running a call of actor ``actor_id`` (hosted here)."""
        hook = self.running_actor
        return hook is not None and hook() == actor_id

    def default_namespace(self) -> str | None:
        """The namespace a name means here when none is given (``get_actor``, ``options``).

        In a driver, the driver's (its job's) namespace. Inside an actor's call, the
        namespace of the job that created the actor, as in Ray: an actor created by an
        actor, and a name looked up there, stay in the namespace of the driver at
        the root of the tree. None in a worker's thread that runs no actor's call.
        """
        hook = self.running_namespace
        if hook is not None:
            namespace = hook()
            if namespace is not None:
                return namespace
        return self.namespace

    def gate_token(self, gate) -> int:
        """The token ``gate``'s tells carry, so that their credits find it (made once
        per gate and runtime, when a handle first sends through this runtime)."""
        if gate.runtime is self:
            return gate.token
        token = next(self._gate_tokens)
        self.gates[token] = gate
        gate.token, gate.runtime = token, self
        return token

    def _on_notices(self, calls: list, buffers) -> None:
        """Run the head's notices to this driver (:class:`zactor.endpoint.recovery.Notices`).

        Only the head's inbox reaches here (see :meth:`_dispatch`); a notice this
        version does not declare is dropped and logged.
        """
        names = DRIVER_TABLE.names
        if self.peer_role is not None and self.peer_role(buffers) != HEAD:
            self.drop("wrong-role", self.head_address.encode(), "notices without the head key")
            return
        for _kind, _flags, method, _call_id, _actor_id, payload, start, count in calls:
            if not 0 <= method < len(names):
                self.drop("unknown-notice", self.head_address.encode(), f"notice #{method}")
                continue
            args, kwargs = serialization.loads_call(
                payload, buffers[start : start + count] if count else ()
            )
            try:
                getattr(self._notices, names[method])(*args, **kwargs)
            except Exception:  # a notice must never take the reader down
                log.exception("zactor: handling the head's notice %s failed", names[method])

    def drop(self, kind: str, identity: bytes, message: str) -> None:
        """Count a bad message; log the first of each kind, then stay quiet."""
        count = self.dropped.get(kind, 0)
        self.dropped[kind] = count + 1
        if count == 0:
            log.warning(
                "zactor %s %s: dropped a bad message from %r (%s); further %r drops are counted "
                "but not logged",
                self.role,
                self.address,
                identity[:64],
                message,
                kind,
            )

    # -- waiting -------------------------------------------------------------------------

    def wait_until(self, ready: Callable[[], bool], timeout: float | None) -> bool:
        """Block until ``ready()`` is true (True) or ``timeout`` seconds pass (False).

        The caller takes the reader role if nobody holds it, and reads the inbox
        itself; otherwise it sleeps until the reader dispatches something or
        leaves the role.
        """
        self.flush()
        if ready():
            return True
        if self.before_block is not None:
            self.before_block()
        deadline = None if timeout is None else _monotonic() + timeout
        if self._reader == threading.get_ident():  # a done-callback waiting: keep reading
            return self._read_until(ready, deadline)
        while True:
            with self.lock:
                if ready():
                    return True
                if self._closed:
                    raise ClusterError(_SHUT_DOWN_WHILE_WAITING)
                if self._reading:
                    remaining = None if deadline is None else deadline - _monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._waiters += 1
                    try:
                        self._cv.wait(remaining if remaining is not None else POLL_SLICE_MS / 1e3)
                    finally:
                        self._waiters -= 1
                    continue
                self._take_reader_role()
            try:
                return self._read_until(ready, deadline)
            finally:
                self._leave_reader_role()

    def poll(self) -> None:
        """Send what is batched and dispatch the replies already waiting, without blocking.

        Does nothing when another thread holds the reader role (it dispatches them).
        """
        self.flush()
        with self.lock:
            if self._reading or self._closed:
                return
            self._take_reader_role()
        try:
            while self.receive(0):
                pass
        finally:
            self._leave_reader_role()

    def wait_for(self, future, timeout: float | None) -> bool:
        """:meth:`wait_until` ``future`` is done: the synchronous call's lean path.

        With no timeout, nothing batched and no other reader, this thread takes
        the reader role and reads until the future resolves, with none of the
        general path's predicate calls and deadline arithmetic.
        """
        if timeout is not None or self.before_block is not None or self._dirty:
            return self.wait_until(future._arrived, timeout)
        lock = self.lock
        with lock:
            if future._state:
                return True
            lead = not (self._reading or self._closed)
            if lead:
                self._take_reader_role()
        if not lead:
            return self.wait_until(future._arrived, None)
        try:
            receive = self.receive
            while not future._state:
                if self._closed:
                    raise ClusterError(_SHUT_DOWN_WHILE_WAITING)
                receive(POLL_SLICE_MS)
            return True
        finally:
            self._leave_reader_role()

    def _take_reader_role(self) -> None:
        """This thread reads the inbox from now on (``self.lock`` held, role free)."""
        self._reading = True
        self._reader = threading.get_ident()

    def _leave_reader_role(self) -> None:
        """Give the reader role up; wake a waiting thread, or the background thread
        if futures with callbacks still need a reader."""
        with self.lock:
            self._reading = False
            self._reader = None
            if self._waiters:
                self._cv.notify_all()
            elif self._watched:
                self._bg_cv.notify()

    def _read_until(self, ready: Callable[[], bool], deadline: float | None) -> bool:
        """Read the inbox (holding the reader role) until ``ready()`` or the deadline."""
        while not ready():
            if deadline is None:
                slice_ms = POLL_SLICE_MS
            else:
                remaining = deadline - _monotonic()
                if remaining <= 0:
                    return False
                slice_ms = min(POLL_SLICE_MS, max(1, int(remaining * 1e3 + 0.999)))
            if self._closed:
                raise ClusterError(_SHUT_DOWN_WHILE_WAITING)
            self.receive(slice_ms)
        return True

    def hold_reader_role(self) -> None:
        """Make this process's reads the actor host's job for good (workers, head)."""
        with self.lock:
            self._reading = True

    def watch(self) -> None:
        """A future got a callback: make sure some thread reads until it resolves.

        Call with ``self.lock`` held.
        """
        self._watched += 1
        if self._watched == 1:
            self._bg_cv.notify()

    def unwatch(self) -> None:
        """A watched future resolved."""
        with self.lock:
            self._watched -= 1

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn()`` on the background thread ``delay`` seconds from now, or a little
        later (up to :data:`POLL_SLICE_MS` while it reads for futures with callbacks).

        ``fn`` must not block: it may send calls and add done-callbacks to their
        futures, not wait for them. Functions still waiting when the runtime closes
        never run.
        """
        with self.lock:
            heapq.heappush(self._timers, (_monotonic() + delay, next(self._timer_seq), fn))
            self._bg_cv.notify()

    def _timer_due(self) -> bool:
        """True if a :meth:`call_later` function is due (read by the background thread)."""
        timers = self._timers
        return bool(timers) and timers[0][0] <= _monotonic()

    def _run_timers(self) -> None:
        """Run the :meth:`call_later` functions that are due (background thread)."""
        while True:
            with self.lock:
                if not self._timer_due() or self._closed:
                    return
                _when, _seq, fn = heapq.heappop(self._timers)
            try:
                fn()
            except Exception:  # a timer must not take the background thread down
                log.exception("zactor: a function scheduled with call_later raised")

    def _background_loop(self) -> None:
        """Flush batches nobody flushed, report handle counts, read for futures with
        callbacks, run :meth:`call_later` functions."""
        refs = self.refs
        while True:
            with self.lock:
                while not (
                    self._closed
                    or self._armed
                    or (self._watched and not self._reading)
                    or refs.pending()
                    or self._timer_due()
                ):
                    # Handles cannot wake us (their __del__ must not lock): look now and then.
                    wait = REF_REPORT_S
                    if self._timers:
                        wait = min(wait, max(0.0, self._timers[0][0] - _monotonic()))
                    self._bg_cv.wait(wait)
                if self._closed:
                    return
                armed = self._armed
            if armed:
                time.sleep(LINGER_S)  # let the caller finish the batch it is building
            try:
                self.flush()
                if refs.pending():
                    self._report_refs()
                self._run_timers()
            except TransportError:
                if self._closed:
                    return
                raise
            if self._watched and self.call_handler is None:
                try:
                    self.wait_until(
                        lambda: (
                            not self._watched
                            or self._armed
                            or self._closed
                            or refs.pending()
                            or self._timer_due()
                        ),
                        None,
                    )
                except ClusterError:
                    return

    def _report_refs(self) -> None:
        """Tell the head which actors this process started or stopped holding.

        Sent after :meth:`flush`, so calls made before a handle was dropped are on
        their way to the actor before the head can decide to end it.
        """
        report = self.refs.take_report()
        if report and self.head_address is not None:
            self.tell_system(self.head_address, HEAD_TABLE.index["refs"], self.address, report)
            self.flush()

    def tell_system(self, address: str, method: int, *args) -> None:
        """Send a one-way call of method index ``method`` (from a table of
        :mod:`zactor.wire.protocol`) to the system actor at ``address``."""
        payload, buffers = serialization.dumps_call(args, {})
        self.outbox(address).put(_TELL, method, 0, wire.SYSTEM_ACTOR_ID, payload, buffers)

    # -- shutdown ------------------------------------------------------------------------

    def close(self) -> None:
        """Close every socket, stop the background thread, remove our socket file."""
        with self.lock:
            if self._closed:
                return
            self._closed = True
            self._bg_cv.notify_all()
            self._cv.notify_all()
        if threading.current_thread() is not self._background:
            self._background.join(timeout=2)
        with self.lock:  # a driver thread reading the inbox leaves within one poll slice
            deadline = _monotonic() + 2 * POLL_SLICE_MS / 1e3
            while (
                self._reader is not None
                and self._reader != threading.get_ident()
                and _monotonic() < deadline
            ):
                self._cv.wait(0.01)
        for fut in self.pending.drain():
            fut._fail(ClusterError("zactor was shut down before this call's reply arrived"))
        self.transports.close()
        self.remove_socket_file()

    def remove_socket_file(self) -> None:
        """Remove the inbox's socket files (``ipc://`` addresses only)."""
        for path in inbox_files(self.address):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


#: How an anonymous namespace's name starts (see :func:`anonymous_namespace`).
ANONYMOUS_NAMESPACE_PREFIX = "anonymous-"


def anonymous_namespace() -> str:
    """A fresh anonymous namespace: what a driver that gives none gets, as a Ray job does.

    Its name is unique to the driver, so two drivers that each create
    ``name="Pinger"`` do not collide; named actors meant to be shared use an
    explicit namespace. The prefix lets the head tell it apart
    (:func:`is_anonymous_namespace`): it keys checkpoints without it.
    """
    return f"{ANONYMOUS_NAMESPACE_PREFIX}{uuid.uuid4().hex}"


def is_anonymous_namespace(namespace: str | None) -> bool:
    """True for a namespace :func:`anonymous_namespace` made (its exact shape, so that a
    namespace a user chose, ``"anonymous-team"`` say, is not taken for one)."""
    if namespace is None or not namespace.startswith(ANONYMOUS_NAMESPACE_PREFIX):
        return False
    tail = namespace[len(ANONYMOUS_NAMESPACE_PREFIX) :]
    return len(tail) == 32 and all(c in "0123456789abcdef" for c in tail)


_current: Runtime | None = None


def current() -> Runtime:
    """This process's runtime; a clear error if zactor is not initialised."""
    runtime = _current
    if runtime is None:
        raise ClusterError(
            "zactor is not initialised in this process: call zactor.init() first "
            "(or zactor.init(address='auto') to join a running cluster)"
        )
    return runtime


def set_current(runtime: Runtime | None) -> None:
    """Install (or clear) this process's runtime."""
    global _current
    _current = runtime
