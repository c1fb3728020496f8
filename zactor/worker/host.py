"""The worker side: hosting actors behind one inbox, and the worker process.

How calls run (the core design problem: actors never wait on each other, and a
short call costs no thread hand-off):

- One *leader* thread reads the inbox, puts each call in its actor's mailbox,
  and then runs the ready actors' calls itself, inline. Replies are batched per
  caller, across the actors it runs one after another, and sent when the
  leader goes back to the inbox, or sooner: every :data:`REPLY_LINGER_S`
  between actors, before a slow actor's run, before a call blocks, and by
  the watchdog when a call runs long (see :meth:`ActorHost._run_ready`).
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
  host threads run its calls at once (:class:`~zactor.worker.runners.ThreadedRunner`).
  Calls start in arrival order and may finish in any order.
- ``async`` (at least one ``async def`` method): the actor's own event loop on
  its own thread runs everything of it, up to ``max_concurrency`` calls at
  once, default :data:`~zactor.worker.runners.DEFAULT_ASYNC_CONCURRENCY`
  (:class:`~zactor.worker.runners.AsyncRunner`).

:class:`ActorHost` is put together from one mixin per role, each in its own
module of this package:

- :mod:`~zactor.worker.registry`: adding, starting, ending and retiring actors;
- :mod:`~zactor.worker.callpath`: routing calls, running one, what its outcome sends;
- :mod:`~zactor.worker.durable_calls`: the call path of actors with a checkpoint;
- :mod:`~zactor.worker.replies`: reply batching per caller;
- :mod:`~zactor.worker.threads`: the leader, followers and watchdog.

Beside them: :mod:`~zactor.worker.hosted` (one hosted actor),
:mod:`~zactor.worker.runners` (how threaded and async actors run),
:mod:`~zactor.worker.checkpointer` (what an actor with a checkpoint does around
each call), :mod:`~zactor.worker.stats` (the figures of ``zactor status``),
:mod:`~zactor.worker.service` (the worker's own actor 0) and
:mod:`~zactor.worker.main` (the worker process).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from zactor.endpoint.runtime import Runtime
from zactor.wire.protocol import SystemTable
from zactor.worker.callpath import CallPath
from zactor.worker.durable_calls import DurableCalls
from zactor.worker.hosted import HostedActor
from zactor.worker.registry import ActorRegistry
from zactor.worker.replies import ReplyBatching
from zactor.worker.threads import LeaderFollower


class ActorHost(ActorRegistry, CallPath, DurableCalls, ReplyBatching, LeaderFollower):
    """Runs the actors of one process; its leader thread holds the runtime's reader role.

    Example (what a worker process does, see :mod:`zactor.worker.main`)::

        host = ActorHost(runtime)
        host.add_system_actor(WorkerService(host, head, worker_id), WORKER_TABLE)
        host.serve()
    """

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
        # Calls waiting in the system actor's mailbox behind a creation, by actor id
        # (``_mu`` held): later calls to the actor wait behind them, to keep its order.
        self._parked: dict[int, int] = {}
        self._local = threading.local()
        self._parent_pid: int | None = None
        self._on_orphaned = self.stop
        #: The methods actor 0 answers (set by :meth:`add_system_actor`).
        self.system_table: SystemTable | None = None
        runtime.call_handler = self._on_calls
        runtime.before_block = self._step_down
        runtime.running_actor = self._running_actor_id
        runtime.running_namespace = self._running_namespace
        runtime.hold_reader_role()
