"""The worker's own actor 0: creates, kills and reports on the actors hosted here.

Its methods are the worker's side of the protocol (``WORKER_TABLE`` in
:mod:`zactor.wire.protocol`): the head, drivers and actors call them with
ordinary actor calls.
"""

from __future__ import annotations

import functools
import os
import threading

import cloudpickle

from zactor.caller.actor_class import ActorClass
from zactor.wire import records as wire
from zactor.worker.checkpointer import Checkpointer
from zactor.worker.host import ActorHost
from zactor.worker.hosted import RETIRE_MARK, AnnouncedDeath, HostedActor
from zactor.worker.runners import AsyncRunner, ThreadedRunner, execution_of
from zactor.worker.stats import _actor_stats, process_figures


class WorkerService:
    """Actor 0 of every worker: creates, kills and reports on the actors hosted here."""

    def __init__(self, host: ActorHost, head, worker_id: str) -> None:
        self._host = host
        self._head = head
        self._worker_id = worker_id
        #: ``register_worker``'s arguments, sent again to a head that restarted (:meth:`rejoin`).
        self.registration: tuple | None = None
        #: Set when a restarted head asked this worker to rejoin; ``head_pid`` is its pid.
        self.rejoined = threading.Event()
        self.head_pid: int | None = None
        host.on_actor_ended = self._ended
        host.on_actor_failed = self._failed

    def create(self, actor_id: int, blob: bytes, spec: dict) -> None:
        """Construct a new actor (its first incarnation): see :meth:`recreate`.

        Sent by the process that creates the actor, on the connection its first
        calls will take, so the worker sees the creation before them.
        """
        if spec.get("incarnation"):
            raise PermissionError(
                f"create() builds an actor's first incarnation; incarnation "
                f"{spec.get('incarnation')} of actor {actor_id} is a restart, which only the "
                "head orders (recreate)"
            )
        self.recreate(actor_id, blob, spec)

    def create_many(self, blob: bytes, spec: dict, placed: list) -> None:
        """:meth:`create` for actors of one ``spec`` and ``blob`` (a burst of creations
        by one caller, in one message): ``placed`` is their ``[actor_id, checkpoint_key]``."""
        for actor_id, key in placed:
            self.create(actor_id, blob, dict(spec, checkpoint_key=key))

    def recreate(self, actor_id: int, blob: bytes, spec: dict) -> None:
        """Construct an actor from ``blob`` = cloudpickle of ``(cls, args, kwargs)``;
        the head calls it directly to restart an actor (``incarnation`` > 0).

        ``spec["max_concurrency"]`` (None when not given) and whether the class
        has ``async def`` methods decide how its calls run (see
        :func:`execution_of`). The head hears ``actor_started`` once the
        constructor has run; calls that arrive before then wait.

        ``spec["job_namespace"]`` is the namespace of the job that created the
        actor: names its constructor and methods create or look up without a
        namespace go there (see ``Runtime.default_namespace``).

        ``spec["checkpoint"]`` (a store or URL), ``checkpoint_every``,
        ``checkpoint_key`` and ``incarnation`` make the actor durable: it may be
        restored from its checkpoint instead of constructed (see
        :class:`Checkpointer`). A restart (``incarnation`` > 0) may come to the
        worker where the actor was killed: the new incarnation replaces the
        tombstone, and an incarnation still here (not yet killed) is ended first.
        """
        host = self._host
        old = host.actors.get(actor_id) or host._retiring.get(actor_id)
        if old is not None and actor_id != wire.SYSTEM_ACTOR_ID:
            # Not reported as ended: the head is bringing this very actor back.
            host.end(old, f"actor {old} was replaced by incarnation {spec.get('incarnation')}")
        actor = host.reserve(actor_id, spec.get("class_name", "?"), spec.get("name"))
        actor.incarnation = spec.get("incarnation") or 0
        # Set before the constructor runs: one that creates or looks up named actors
        # does so in its creator's job namespace too.
        actor.job_namespace = spec.get("job_namespace")
        info = dict(spec, actor_id=actor_id, address=host.runtime.address)
        actor.handle_info = info  # its handle to itself must not keep it alive: uncounted
        try:
            actor.durable = Checkpointer.from_spec(actor_id, spec)
            if actor.durable is not None:
                actor.execute = host._execute_durable
            cls, args, kwargs = cloudpickle.loads(blob)
            if isinstance(cls, ActorClass):
                cls = cls._cls
            actor.kind, actor.max_concurrency = execution_of(cls, spec.get("max_concurrency"))
            if actor.kind == "async":
                runner = AsyncRunner(host, actor, actor.max_concurrency)
                actor.runner = runner  # inert until its loop has constructed the actor
                try:
                    # Started on the loop's thread, which sends no reply batches.
                    runner.start(cls, args, kwargs, functools.partial(self._started, actor_id))
                except BaseException:
                    actor.runner = None
                    raise
                return
        except BaseException as exc:  # the first call raises it, with its original type
            error = actor.fail_init(exc)
            host.release(actor)
            self._started(actor_id, error, batched=True)
            return
        error = actor.construct(host, cls, args, kwargs)
        runner = None
        if actor.kind == "threaded" and error is None:
            runner = ThreadedRunner(host, actor, actor.max_concurrency)
        host.release(actor, runner)
        self._started(actor_id, error, batched=True)

    def _started(self, actor_id: int, error: str | None, batched: bool = False) -> None:
        """Tell the head the actor's constructor ran (``error``: what it raised, if it
        did); ``batched``, on a host thread: with the thread's replies, so that a burst
        of creations sends its reports together."""
        head = self._head
        if batched:
            method = head._index["actor_started"]
            self._host._queue_tell(head._address, method, actor_id, error is None, error)
        else:
            head.actor_started.tell(actor_id, error is None, error)

    def kill(self, actor_id: int, reason: str, restarting: bool = False) -> bool:
        """End actor ``actor_id`` now; its queued and later calls raise ActorDiedError.

        A retiring actor (see :meth:`retire`) is ended at once too. ``restarting``:
        the head restarts it and tells every process so, and a caller that would
        send a call again waits for that notice rather than fail on the DIED
        replies (:class:`AnnouncedDeath`). Returns False if the actor was not
        here; if it had already ended, ``reason`` becomes what its calls hear
        from now on (the head's verdict on a ``sys.exit()``).
        """
        host = self._host
        actor = host.actors.get(actor_id) or host._retiring.get(actor_id)
        if actor is None:
            with host._mu:
                if actor_id in host.tombstones:
                    host.tombstones[actor_id] = reason
            return False
        if restarting:
            reason = AnnouncedDeath(reason, actor.incarnation)
        if host.end(actor, reason):
            host.interrupt(actor)
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
        self._head.actor_ended.tell(actor.actor_id, str(actor.dead))

    def _failed(self, actor: HostedActor, cause: str) -> None:
        # Not an end the actor chose: the head decides whether it restarts.
        self._head.actor_failed.tell(actor.actor_id, cause, actor.incarnation)

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

        For the head's metrics (docs/observability.md): ``incarnation`` (0, or
        k after the k-th restart) and ``service``, the histogram of the timed
        calls' service times (:class:`~zactor.worker.stats.ServiceHistogram`:
        ``counts`` per bucket of ``SERVICE_BUCKETS``, ``sum`` in seconds,
        ``count``); and for the worker, ``cpu_seconds`` and ``rss_bytes``
        (:func:`~zactor.worker.stats.process_figures`).
        """
        host = self._host
        with host._mu:  # the mailboxes' lengths, without a retire mark
            queued = [
                (a, len(a.mailbox) - (1 if a.mailbox and a.mailbox[-1] is RETIRE_MARK else 0))
                for a in [*host.actors.values(), *host._retiring.values()]
                if a.actor_id != wire.SYSTEM_ACTOR_ID
            ]
        return {
            "worker_id": self._worker_id,
            "pid": os.getpid(),
            "dropped": dict(host.runtime.dropped),
            "actors": [_actor_stats(actor, count) for actor, count in queued],
            **process_figures(),
        }

    def rejoin(self, boot_id: str, head_pid: int) -> None:
        """A head that restarted from its store (``boot_id``; process ``head_pid``) asks
        this worker to register again, with the actors it still runs: the head keeps
        those and deals with the ones its store lists here that are gone."""
        if self.registration is None:
            return
        hosted = [
            [actor_id, actor.incarnation]
            for actor_id, actor in list(self._host.actors.items())
            if actor_id != wire.SYSTEM_ACTOR_ID
        ]
        self._head.register_worker.tell(*self.registration, hosted)
        self.head_pid = head_pid
        self.rejoined.set()

    def ping(self) -> str:
        """Liveness check: returns this worker's id."""
        return self._worker_id

    def actor_died(
        self, address: str, entries: list, process_died: bool = True, died_at=None
    ) -> None:
        """The head tells every process that actors at ``address`` died (see Recovery)."""
        self._host.runtime.recovery.actor_died(address, entries, process_died, died_at)

    def actor_restarted(self, actor_id: int, address: str, incarnation: int) -> None:
        """The head tells every process that an actor is back at ``address``."""
        self._host.runtime.recovery.actor_restarted(actor_id, address, incarnation)

    def shutdown(self) -> None:
        """Stop serving; the worker process then exits."""
        self._host.stop()
