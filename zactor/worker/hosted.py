"""One actor living in a worker (or the head): its instance, mailbox and counters."""

from __future__ import annotations

import inspect
import logging
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from zactor.caller.handle import handle_from_info
from zactor.errors import _Terminate, describe_exception
from zactor.wire import serialization
from zactor.wire.protocol import TERMINATE_METHOD, actor_method_table
from zactor.worker.stats import SAMPLE_RING

if TYPE_CHECKING:
    from zactor.worker.checkpointer import Checkpointer
    from zactor.worker.host import ActorHost
    from zactor.worker.runners import AsyncRunner, ThreadedRunner
    from zactor.worker.stats import ServiceHistogram

log = logging.getLogger("zactor")

_dumps = serialization.dumps
#: The hook an actor's class may define, run once when the actor ends (docs/lifetime.md).
EXIT_HOOK = "__zactor_exit__"
#: What :meth:`ActorHost.retire` puts at the end of a busy sync actor's mailbox: the
#: actor ends when the thread running its calls gets there. Its actor id (-1) differs
#: from every actor's, which routes it down the drain's rare branch, off the hot path.
RETIRE_MARK = (None, (-1, 0, 0, 0, -1, None, 0, 0), ())


class AnnouncedDeath(str):
    """The reason an incarnation of an actor died, when the head tells every process
    about that death (a kill that restarts it, a ``sys.exit()`` in one of its methods).

    The DIED replies of its calls carry :data:`~zactor.wire.records.DIED_NOTICE_FOLLOWS`
    and ``[reason, incarnation]``, so a caller that may send a call again follows the
    head's verdict on that incarnation (restart or not) instead of failing the call
    on the reply (see ``Recovery.announced_death``).
    """

    def __new__(cls, reason: str, incarnation: int) -> AnnouncedDeath:
        self = super().__new__(cls, reason)
        self.incarnation = incarnation
        return self


#: A class's methods as :meth:`HostedActor.bind` looks them up (on the class, so the
#: same for every instance), by class: ``(names, attributes)``.
_class_methods: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class HostedActor:
    """One actor living in this process: its instance, mailbox and counters."""

    __slots__ = (
        "actor_id",
        "class_name",
        "name",
        "job_namespace",
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
        "handle_info",
        "kind",
        "max_concurrency",
        "runner",
        "retiring",
        "samples",
        "sampled",
        "service",
        "next_sample",
        "incarnation",
        "durable",
        "slow",
        "execute",
        "running",
        "credit_identity",
        "credit_token",
        "credit_count",
        "farewells",
    )

    def __init__(
        self,
        actor_id: int,
        class_name: str,
        name: str | None = None,
        execute: Callable | None = None,
    ) -> None:
        self.actor_id = actor_id
        #: How its calls run: the host's ``_execute``, or ``_execute_durable`` once it
        #: has a checkpoint, or ``_execute_system`` for actor 0 (see :mod:`.host`).
        self.execute = execute
        #: The thread running a run of its calls (a sync actor's), for zactor.kill.
        self.running: int | None = None
        # Credits for the tells of the run of calls going on, while they come from
        # one caller and handle: counted here, settled with the thread at the run's
        # end (ReplyBatching._settle), so the common tell costs one increment.
        self.credit_identity: bytes | None = None
        self.credit_token = 0
        self.credit_count = 0
        self.class_name = class_name
        self.name = name
        #: The namespace of the job that created the actor (not the actor's own, which
        #: may be explicit): what names mean in its calls, as in Ray.
        self.job_namespace: str | None = None
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
        self.handle = None  # made on first use (self_handle)
        #: The head's description of this actor, which :meth:`self_handle` is made from.
        self.handle_info: dict | None = None
        self.kind = "sync"
        self.max_concurrency = 1
        # A ThreadedRunner or AsyncRunner; None for a sync actor. An actor with a runner
        # stays ``scheduled`` for good, so the inline fast path never takes its calls.
        self.runner: ThreadedRunner | AsyncRunner | None = None
        self.retiring: str | None = None  # the reason, while it finishes its queued calls
        self.samples: deque = deque(maxlen=SAMPLE_RING)  # service times (s), for stats()
        self.sampled = 0  # calls timed so far: tells stats() how many samples are new
        #: The service-time histogram stats() folds the new samples into (stats.py).
        self.service: ServiceHistogram | None = None
        self.next_sample = 0  # the value of ``calls`` at which the next call is timed
        #: 0 at creation, k at the k-th restart (the head counts): tells apart the
        #: counters of two incarnations in stats(), and which one a death was of.
        self.incarnation = 0
        # A Checkpointer when the actor has a checkpoint store; its calls then take
        # ActorHost._execute_durable (this attribute is the hot path's one check).
        self.durable: Checkpointer | None = None
        # Its last run of calls took REPLY_LINGER_S or more: replies other actors' calls
        # queued are sent before its next run rather than held behind it.
        self.slow = False
        #: (identity, call_id) of the ``__zactor_terminate__`` calls answered when it ends.
        self.farewells: list = []

    def self_handle(self):
        """A handle to this actor that does not keep it alive (``current_actor`` of
        ``zactor.get_runtime_context()``), made on first use: most actors never ask."""
        if self.handle is None and self.handle_info is not None:
            self.handle = handle_from_info(self.handle_info, counted=False)
        return self.handle

    def bind(self, instance: Any, names: tuple) -> None:
        """Bind the class's methods to ``instance``, looked up on the class.

        Looking them up on the class means an instance attribute with a
        method's name (the seeds' ``Account`` sets ``self.balance`` beside its
        ``balance()`` method) does not hide the method.
        """
        cls = type(instance)
        found = _class_methods.get(cls)
        if found is None or found[0] != names:
            static = [
                None if n == TERMINATE_METHOD else inspect.getattr_static(cls, n) for n in names
            ]
            found = _class_methods[cls] = (names, static)
        self.methods = [
            _terminate if attr is None else attr.__get__(instance, cls) for attr in found[1]
        ]
        self.method_names = names
        self.instance = instance

    def construct(self, host: ActorHost, cls: type, args: tuple, kwargs: dict) -> str | None:
        """Build the instance of ``cls`` and bind it; None, or what the constructor raised.

        With a checkpoint store the instance may instead be restored from its
        checkpoint (see :meth:`Checkpointer.open`). If building it raised, every
        call to the actor raises that error (its original type).
        """
        local = host._local
        previous = getattr(local, "actor", None)
        local.actor = self  # get_runtime_context() works in __init__ (and __setstate__)
        try:
            if self.durable is None:
                instance = cls(*args, **kwargs)
            else:
                instance = self.durable.open(cls, args, kwargs)
            self.bind(instance, actor_method_table(cls))
        except BaseException as exc:
            return self.fail_init(exc)
        finally:
            local.actor = previous
        return None

    def fail_init(self, exc: BaseException) -> str:
        """Record a failed construction: the actor's calls raise ``exc``. Returns its text."""
        description = describe_exception(exc, f"constructor of actor {self})")
        self.init_error = _dumps(description)[0]
        return f"{type(exc).__name__}: {exc}"

    def run_exit_hook(self, host: ActorHost) -> None:
        """Run the class's ``__zactor_exit__`` (if it has one) as the actor ends.

        Called once per incarnation, on the thread that ends the actor, whatever
        ended it (kill, ``exit_actor``, ``sys.exit``, ``__zactor_terminate__``, its
        lifetime). What the hook raises is logged: the actor is over either way.
        """
        if self.instance is None:  # its constructor failed: nothing to clean up
            return
        hook = getattr(self.instance, EXIT_HOOK, None)
        if hook is None:
            return
        local = host._local
        previous = getattr(local, "actor", None)
        local.actor = self  # get_runtime_context() works in the hook
        try:
            outcome = hook()
            if inspect.iscoroutine(outcome):
                outcome.close()
                raise TypeError(
                    f"{EXIT_HOOK} must be a plain method (def, not async def): it runs "
                    "as the actor ends, when its event loop may be gone"
                )
        except BaseException:
            log.exception("zactor: %s of actor %s raised", EXIT_HOOK, self)
        finally:
            local.actor = previous

    def __repr__(self) -> str:
        return f"{self.class_name}(id={self.actor_id})"


def _terminate() -> None:
    """An actor's ``__zactor_terminate__``: the call path ends the actor gracefully."""
    raise _Terminate()
