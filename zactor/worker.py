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
- Each actor has at most one thread running its calls, in arrival order.

So a short call runs on the thread that read it, and only a call that runs long
pays for a hand-off, once.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from collections import deque
from typing import Any

import cloudpickle

from zactor import serialization, wire
from zactor.errors import describe_exception
from zactor.runtime import POLL_SLICE_MS, Runtime, set_current

log = logging.getLogger("zactor")

#: How often the watchdog looks at the leader (seconds).
WATCHDOG_S = 0.005
#: Most threads one host runs calls on (leader, followers, demoted threads).
MAX_THREADS = 256

_loads_call = serialization.loads_call
_dumps = serialization.dumps
_get_ident = threading.get_ident
_CALL, _RESULT, _ERROR, _DIED = wire.CALL, wire.RESULT, wire.ERROR, wire.DIED


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

    def __repr__(self) -> str:
        return f"{self.class_name}(id={self.actor_id})"


class ActorHost:
    """Runs the actors of one process; its leader thread holds the runtime's reader role."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.actors: dict[int, HostedActor] = {}
        self.tombstones: dict[int, str] = {}
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
        """Register an actor about to be constructed; its calls queue until it is."""
        actor = HostedActor(actor_id, class_name, name)
        actor.scheduled = True  # owned by the constructing thread
        with self._mu:
            self.actors[actor_id] = actor
        return actor

    def release(self, actor: HostedActor) -> None:
        """The constructing thread is done with ``actor``: let its queued calls run."""
        with self._mu:
            if actor.mailbox:
                self._ready.append(actor)
            else:
                actor.scheduled = False

    def end(self, actor: HostedActor, reason: str) -> None:
        """Mark ``actor`` dead: queued and later calls get ActorDiedError with ``reason``."""
        with self._mu:
            if actor.dead is not None:
                return
            actor.dead = reason
            self.actors.pop(actor.actor_id, None)
            self.tombstones[actor.actor_id] = reason
            queued = list(actor.mailbox)
            actor.mailbox.clear()
        for identity, record, _buffers in queued:
            self._reply_died(identity, record, reason)
        self._send_replies()

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
                    self._execute(actor, identity, record, buffers)
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
            result = actor.methods[method](*args, **kwargs)
        except ActorExit:
            local.actor = None
            if kind == _CALL:
                self._reply(identity, _RESULT, call_id, actor_id, None)
            self.end(
                actor, f"actor {actor} exited by calling zactor.exit_actor(); it will not restart"
            )
            self._notify_ended(actor)
            return
        except _InitFailed:
            if kind == _CALL:
                self._queue_reply(identity, _ERROR, call_id, actor_id, actor.init_error, ())
            return
        except BaseException as exc:
            local.actor = None
            actor.errors += 1
            if isinstance(exc, IndexError) and method >= len(actor.methods):
                exc = AttributeError(f"actor class {actor.class_name} has no method #{method}")
            if kind == _CALL:
                where = f"actor {actor}.{_method_name(actor, method)})"
                self._reply(identity, _ERROR, call_id, actor_id, describe_exception(exc, where))
            else:
                actor.tell_errors += 1
                if actor.tell_errors == 1 or actor.tell_errors % 1000 == 0:
                    log.error(
                        "zactor: tell %s.%s raised (%d tell errors so far on this actor): %r",
                        actor,
                        _method_name(actor, method),
                        actor.tell_errors,
                        exc,
                    )
            return
        local.actor = None
        actor.calls += 1
        if kind == _CALL:
            if actor.dead is not None:  # killed while this call ran: its result is void
                self._reply_died(identity, record, actor.dead)
            else:
                self._reply(identity, _RESULT, call_id, actor_id, result)

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

    def stop(self) -> None:
        """Ask every host thread to finish; :meth:`serve` then returns."""
        with self._mu:
            self._stopping = True
            self._followers.notify_all()

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
        execute = self._execute
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
                if record[4] != actor.actor_id:  # queued behind a creation: route it now
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


class _InitFailed(Exception):
    """Internal: the actor's constructor raised; its calls raise that error."""


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
        """Construct an actor from ``blob`` = cloudpickle of ``(cls, args, kwargs)``."""
        from zactor.actor import ActorClass, handle_from_info, method_names

        host = self._host
        actor = host.reserve(actor_id, spec.get("class_name", "?"), spec.get("name"))
        info = dict(spec, actor_id=actor_id, address=host.runtime.address)
        actor.handle = handle_from_info(info)
        ok, error = True, None
        try:
            cls, args, kwargs = cloudpickle.loads(blob)
            if isinstance(cls, ActorClass):
                cls = cls._cls
            host._local.actor = actor
            try:
                instance = cls(*args, **kwargs)
            finally:
                host._local.actor = None
            actor.bind(instance, method_names(cls))
        except BaseException as exc:  # the first call raises it, with its original type
            ok = False
            description = describe_exception(exc, f"constructor of actor {actor})")
            actor.init_error = _dumps(description)[0]
            error = f"{type(exc).__name__}: {exc}"
        finally:
            host.release(actor)
        self._head.actor_started.tell(actor_id, ok, error)

    def kill(self, actor_id: int, reason: str) -> bool:
        """End actor ``actor_id``; its queued and later calls raise ActorDiedError."""
        actor = self._host.actors.get(actor_id)
        if actor is None:
            return False
        self._host.end(actor, reason)
        self._ended(actor)
        return True

    def _ended(self, actor: HostedActor) -> None:
        self._head.actor_ended.tell(actor.actor_id, actor.dead)

    def stats(self) -> dict:
        """Per-actor counters for ``zactor status``."""
        host = self._host
        return {
            "worker_id": self._worker_id,
            "pid": os.getpid(),
            "dropped": dict(host.runtime.dropped),
            "actors": [
                {
                    "actor_id": a.actor_id,
                    "class_name": a.class_name,
                    "name": a.name,
                    "calls": a.calls,
                    "errors": a.errors,
                    "tell_errors": a.tell_errors,
                    "queued": len(a.mailbox),
                }
                for a in list(host.actors.values())
                if a.actor_id != wire.SYSTEM_ACTOR_ID
            ],
        }

    def ping(self) -> str:
        """Liveness check: returns this worker's id."""
        return self._worker_id

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
