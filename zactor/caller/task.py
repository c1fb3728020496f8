"""Stateless tasks: ``@zactor.remote`` on a function.

Example::

    @zactor.remote
    def square(x):
        return x * x

    f = square.remote(3)                            # a zactor.Future, at once
    zactor.get(f)                                   # 9
    square.options(num_cpus=0.5, max_retries=1).remote(4)

How a task travels. Each process that calls tasks keeps a :class:`TaskPool`:
its view of the cluster's workers (the head's ``cluster_info``) and, on each
of them, a *task runner* of its own (``zactor.worker.tasks.TaskRunner``), an
ordinary threaded actor that it creates on first use. A task is one call to
its runner, a frame sent straight to the worker, never through the head. The
function is pickled once per :class:`RemoteFunction` and shipped once per
runner (``define``, named by a digest of its bytes); every call then names it
by that digest (``run``).

Which worker. A task goes to a worker that fits it (``num_cpus`` no more than
the CPU the worker's actors leave free, ``resources`` offered by its node),
the one running the fewest of this process's tasks (by CPU share, then by
count, then the one used least recently). ``num_cpus`` (default 1, as in Ray)
is the share of its worker's one CPU the task counts for while it runs: in a
driver, a worker runs this driver's tasks up to a whole CPU at once (one
default task, two of ``num_cpus=0.5``, any number of ``num_cpus=0``), and the
rest wait in the driver, which sends each as an earlier one finishes, to the
worker that frees up. Nothing is reserved at the head: actors are placed as if
no task ran, and tasks of different drivers do not count against each other.
A task that calls tasks (and an actor that does) sends them at once, without
waiting for a share: the calling task holds its own, and its children waiting
behind it could never start.

Failures. When the worker running a task dies (or its runner ends), the task is
sent again, to a live worker, up to ``max_retries`` times (default 3, as in
Ray; -1: no limit); then its future raises :class:`~zactor.errors.WorkerCrashedError`.
An exception the function raises reaches the caller as an actor method's does
(an instance of :class:`~zactor.errors.ActorError` and of its own class), and
is not retried unless ``retry_exceptions`` names it.

Futures as arguments. ``g.remote(f.remote(1))`` waits, in the caller, for
``f``'s result and sends ``g`` with it (Ray resolves them on the cluster
without waiting); if ``f`` failed, ``g``'s future raises ``f``'s exception.
Only arguments themselves are resolved, as in Ray: a future inside a list
cannot travel, and sending it raises ``TypeError``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import sys
import threading
import time
from collections import deque
from itertools import count
from typing import Any, Callable

import cloudpickle

from zactor.caller.arguments import check_bindable, resolve_arguments
from zactor.caller.creation import (
    CONTROL_TIMEOUT_S,
    ByName,
    creation_spec,
    import_by_name,
    lookup,
    start_actor,
)
from zactor.caller.future import Future
from zactor.caller.handle import ActorHandle, handle_from_info, head_handle
from zactor.caller.options import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TASK_NUM_CPUS,
    check_task_options,
)
from zactor.endpoint import runtime as _runtime_mod
from zactor.errors import ActorDiedError, ClusterError, WorkerCrashedError, remote_exception
from zactor.wire import records as wire
from zactor.wire import serialization
from zactor.wire.protocol import TASK_RUNNER_CLASS, TASK_RUNNER_METHODS

log = logging.getLogger("zactor")

#: Calls a task runner runs at once, on its worker's threads. A driver sends it at
#: most a CPU's worth of tasks; tasks and actors send theirs without waiting, so
#: that a task waiting for the tasks it called never holds them back.
RUNNER_CONCURRENCY = 256
#: A view of the workers older than this is asked for again when a task is sent
#: (seconds), so that workers that joined since get tasks too.
VIEW_TTL_S = 1.0
#: While tasks wait for a worker the head is starting (a dead one's replacement),
#: the view is asked for again after these many seconds, doubling up to the second.
STARTING_POLL_S = (0.05, 1.0)
#: How often a process with tasks in flight reads the messages waiting for it when
#: none of its threads does (seconds): a task whose worker died is then sent again
#: within about this long, even if its caller is not waiting on anything.
READ_EVERY_S = 0.1
#: Sums of CPU shares below this are zero (float sums of fractions).
EPSILON = 1e-9

_CALL, _TELL, _ERROR, _DIED = wire.CALL, wire.TELL, wire.ERROR, wire.DIED
_DEFINE = TASK_RUNNER_METHODS.index("define")
_RUN = TASK_RUNNER_METHODS.index("run")
_dumps_call = serialization.dumps_call
#: What builds a task runner on a worker: its class, by name (a caller must not
#: import the worker layer), and no arguments.
_RUNNER_BLOB = cloudpickle.dumps((ByName(*TASK_RUNNER_CLASS), (), {}))


# -- what the user holds -----------------------------------------------------------------


class RemoteFunction:
    """A function made into a task by :func:`zactor.remote`.

    ``f.remote(*args, **kwargs)`` runs it on a worker and returns a
    :class:`~zactor.caller.future.Future` at once; ``f.options(...)`` gives the
    same function with other options: ``num_cpus`` (0 to 1, default 1: the
    share of a worker's CPU it counts for while it runs), ``resources`` (only
    workers of nodes that offer that much; it holds none of it),
    ``max_retries`` (times it is sent again when its worker dies, default 3,
    -1 for no limit) and ``retry_exceptions`` (True, or a list of exception
    classes its function may raise to be sent again, under ``max_retries``).
    Calling it directly is an error.
    """

    def __init__(self, fn: Callable, options: dict, shipment: _Shipment | None = None) -> None:
        if isinstance(fn, type) or not callable(fn):
            raise TypeError(f"a task is made of a function, got {type(fn).__name__} {fn!r}")
        self._fn = fn
        self._options = check_task_options(dict(options))
        self._shipment = shipment if shipment is not None else _Shipment(fn)
        for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
            setattr(self, attr, getattr(fn, attr, None))

    def remote(self, *args: Any, **kwargs: Any) -> Future:
        """Run the function on a worker; return its :class:`Future` at once.

        An argument that is a future of this process is waited for here and
        replaced by its value (if it failed, the returned future raises its
        exception). Arguments the function would refuse raise ``TypeError`` now.
        """
        return _submit(self, args, kwargs)

    def options(self, **options: Any) -> RemoteFunction:
        """This function with these options for its calls (see the class's docstring).

        Example::

            square.options(num_cpus=0.5, max_retries=0).remote(4)
        """
        merged = dict(self._options)
        merged.update(check_task_options(options))
        return RemoteFunction(self._fn, merged, self._shipment)

    def __call__(self, *args, **kwargs):
        raise TypeError(
            f"{self.__name__} is a zactor task: run it with {self.__name__}.remote(...) "
            f"(and zactor.get the result), not {self.__name__}(...)"
        )

    def __repr__(self) -> str:
        return f"<zactor.RemoteFunction {self._shipment.name}>"

    def __reduce__(self):
        # By reference when its module names this very object (a module-level
        # ``@zactor.remote``), as ``ActorClass`` does; else by value.
        module = sys.modules.get(self.__module__ or "")
        if self.__module__ != "__main__" and lookup(module, self.__qualname__ or "") is self:
            return (import_by_name, (self.__module__, self.__qualname__))
        return (RemoteFunction, (self._fn, self._options))


class _Shipment:
    """A task function as it travels: pickled once, named by the digest of its bytes."""

    __slots__ = ("fn", "name", "lock", "blob", "digest")

    def __init__(self, fn: Callable) -> None:
        self.fn = fn
        self.name = f"{getattr(fn, '__module__', None)}.{getattr(fn, '__qualname__', fn)}"
        self.lock = threading.Lock()
        self.blob: bytes | None = None
        self.digest: bytes | None = None

    def pack(self) -> bytes:
        """The function's digest, pickling it on first use."""
        digest = self.digest
        if digest is None:
            with self.lock:
                if self.digest is None:
                    self.blob = cloudpickle.dumps(self.fn)
                    self.digest = hashlib.blake2b(self.blob, digest_size=16).digest()
                digest = self.digest
        return digest

    def check(self, args: tuple, kwargs: dict) -> None:
        """Raise ``TypeError`` now for arguments the function would refuse (as Ray does)."""
        name = getattr(self.fn, "__name__", self.name)
        check_bindable(self.fn, args, kwargs, name, "the function takes")


class _Task:
    """One call of a task function, from its submission until its future resolves."""

    __slots__ = (
        "pool",
        "name",
        "digest",
        "blob",
        "payload",
        "buffers",
        "num_cpus",
        "resources",
        "left",
        "max_retries",
        "retry_on",
        "deaths",
        "future",
        "runner",
        "_target",
    )

    def __init__(self, pool: TaskPool, shipment: _Shipment, options: dict, payload, buffers):
        self.pool = pool
        self.name = shipment.name
        self.digest = shipment.digest
        self.blob = shipment.blob
        self.payload = payload
        self.buffers = buffers
        num_cpus = options.get("num_cpus")
        self.num_cpus = DEFAULT_TASK_NUM_CPUS if num_cpus is None else num_cpus
        self.resources = options.get("resources") or {}
        retries = options.get("max_retries")
        self.max_retries = DEFAULT_MAX_RETRIES if retries is None else retries
        self.left = self.max_retries  # sends again still allowed; -1: no limit
        self.retry_on = options.get("retry_exceptions")  # None, True or a tuple of classes
        self.deaths = 0
        self.future: TaskFuture | None = None
        self.runner: _Runner | None = None
        #: The runner's target while the task is in flight: what Recovery looks at to
        #: fail it when the runner dies (``future._origin._target``).
        self._target = None

    def demand(self) -> str:
        asked = [f"num_cpus={self.num_cpus:g}"] + [f"{k}={v:g}" for k, v in self.resources.items()]
        return ", ".join(asked)

    def __str__(self) -> str:
        return f"task {self.name}"


class TaskFuture(Future):
    """The future of a task: a :class:`Future` whose call its pool may send again
    (its worker died) before it resolves."""

    __slots__ = ()

    def _arrive(self, kind: int, payload, buffers) -> None:
        outcome = self._origin.pool.finished(self._origin, kind, payload, buffers)
        if outcome is None:
            Future._arrive(self, kind, payload, buffers)
        elif outcome is not _SENT_AGAIN:
            Future._fail(self, outcome)

    def _fail(self, exc: BaseException) -> None:
        if isinstance(exc, ActorDiedError):  # its runner died (Recovery): send it again?
            outcome = self._origin.pool.died(self._origin, str(exc))
            if outcome is _SENT_AGAIN:
                return
            exc = outcome
        Future._fail(self, exc)


#: What :meth:`TaskPool.finished` answers for a task it sends again.
_SENT_AGAIN = object()


def _submit(function: RemoteFunction, args: tuple, kwargs: dict) -> Future:
    runtime = _runtime_mod.current()
    shipment = function._shipment
    shipment.check(args, kwargs)
    digest = shipment.pack()
    try:
        args, kwargs = _resolve(args, kwargs)
    except Exception as exc:  # a future it depends on failed: so does this task
        failed, payload, buffers = exc, None, ()
    else:
        failed = None
        payload, buffers = _dumps_call((digest, *args), kwargs)
    pool = _pool(runtime)
    task = _Task(pool, shipment, function._options, payload, buffers)
    future = task.future = TaskFuture(runtime, None, task)
    if failed is not None:
        Future._fail(future, failed)
    else:
        pool.submit(task)
    return future


def _resolve(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """``args`` and ``kwargs`` with each future among them replaced by its value (waited for)."""
    return resolve_arguments(args, kwargs, (Future,), Future.result)


# -- where tasks go ------------------------------------------------------------------------


class _Runner:
    """This process's task runner on one worker: being placed, ready, or dead."""

    __slots__ = ("worker_id", "handle", "target", "defined", "load", "running", "used")

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self.handle: ActorHandle | None = None  # None while the head places it
        self.target = None
        self.defined: set[bytes] = set()  # digests of the functions sent to it
        self.load = 0.0  # CPU shares of this process's tasks running there
        self.running = 0  # this process's tasks sent there and not finished
        self.used = 0  # when it last got a task (a count): the least recent wins ties

    def ready(self, handle: ActorHandle) -> None:
        self.handle = handle
        self.target = handle._target


class _Work:
    """What a pool's locked section leaves for after the lock: futures to hook up
    (``add_done_callback`` may run its function at once) and futures to fail."""

    __slots__ = ("callbacks", "failures")

    def __init__(self) -> None:
        self.callbacks: list = []
        self.failures: list = []


class TaskPool:
    """One process's task runners and view of the workers; sends its tasks (see the
    module docstring for where and when).

    Its state changes under :attr:`lock`, from the threads that send tasks and the
    thread that reads replies; nothing waits while holding it, and sending (which
    never waits) happens under it, so a function's definition always precedes its
    first call on a runner.
    """

    def __init__(self, runtime) -> None:
        self.runtime = runtime
        self.head = head_handle(runtime)
        self.lock = threading.Lock()
        #: The view: worker id -> the head's row for it (address, node's resources, cpu_free).
        self.workers: dict[str, dict] = {}
        #: Workers the head is starting to replace dead ones, as of the view.
        self.starting: list = []
        self.view_at: float | None = None  # when the view arrived (monotonic); None: never
        self.refreshing = False
        self.runners: dict[str, _Runner] = {}  # by worker id
        self.placing = 0  # runners the head is placing
        #: Tasks waiting for a runner with room for their CPU share (a driver's tasks
        #: with num_cpus > 0), and tasks waiting only for a runner to be ready.
        self.queue: deque[_Task] = deque()
        self.free: deque[_Task] = deque()
        #: Whether tasks wait for a CPU share (a driver's), or go at once (tasks' and
        #: actors' calls: see the module docstring).
        self.holds_back = runtime.role == "driver"
        self.watching = False
        self.in_flight = 0  # tasks sent and not finished
        self.reading = False  # a read is scheduled (call_later): see READ_EVERY_S
        self.timed = False  # a refresh is scheduled (call_later)
        self.poll_s = STARTING_POLL_S[0]
        self._uses = count(1)

    # -- from the caller's thread ------------------------------------------------------------

    def submit(self, task: _Task) -> None:
        """Send ``task`` (or queue it until a runner has room); ``ClusterError`` now if no
        worker of the cluster could ever take it."""
        if self.view_at is None:
            self._load_view()  # first use: where to send must be known
        work = _Work()
        with self.lock:
            fits = self._fits_somewhere(task)
            if fits:
                if time.monotonic() - self.view_at > VIEW_TTL_S:
                    self._refresh_locked(work)
                self._enqueue(task)
                self._dispatch(work)
        self._finish(work)
        if fits:
            return
        self._load_view()  # the view may be stale: ask before refusing
        work = _Work()
        with self.lock:
            if not self._fits_somewhere(task) and not self.starting:
                raise ClusterError(self._explain(task))
            self._enqueue(task)
            self._settle_unplaceable(work)  # it waits for a worker being started
            self._dispatch(work)
        self._finish(work)

    def _load_view(self) -> None:
        info = self.head.cluster_info.remote().result(timeout=CONTROL_TIMEOUT_S)
        work = _Work()
        with self.lock:
            self._apply_view(info, work)
            self._dispatch(work)
        self._finish(work)

    # -- from the thread that reads replies ---------------------------------------------------

    def finished(self, task: _Task, kind: int, payload, buffers):
        """A reply to ``task`` came: None to resolve its future with it, an exception to
        fail it with, or :data:`_SENT_AGAIN`."""
        work = _Work()
        with self.lock:
            runner = task.runner
            self._release(task)
            outcome = None
            if kind == _DIED:  # its runner ended (killed, or its task called sys.exit)
                self._runner_gone(runner, work)
                outcome = self._again_or_error(task, _reason(payload, buffers))
            elif kind == _ERROR and task.retry_on is not None and task.left != 0:
                try:
                    exc = remote_exception(serialization.loads(payload, buffers))
                except Exception:  # undecodable: the future reports it
                    exc = None
                if exc is not None and (task.retry_on is True or isinstance(exc, task.retry_on)):
                    if task.left > 0:
                        task.left -= 1
                    self._enqueue(task, first=True)
                    outcome = _SENT_AGAIN
            self._dispatch(work)
        self._finish(work)
        return outcome

    def died(self, task: _Task, reason: str):
        """``task``'s runner died while the task was in flight (the head's notice):
        :data:`_SENT_AGAIN`, or the exception to fail its future with."""
        work = _Work()
        with self.lock:
            runner = task.runner
            self._release(task)
            self._runner_gone(runner, work)
            outcome = self._again_or_error(task, reason)
            self._dispatch(work)
        self._finish(work)
        return outcome

    def _placed(self, runner: _Runner, spec: dict, future: Future) -> None:
        """The head placed (or could not place) ``runner``."""
        try:
            info, error = future.result(), None
        except Exception as exc:
            info, error = None, exc
        work = _Work()
        with self.lock:
            self.placing -= 1
            current = self.runners.get(runner.worker_id) is runner
            if error is None:
                # Started even if no longer wanted (its worker left the view meanwhile):
                # one the head placed that never starts would stay in its registry, and
                # one whose only handle is dropped at once ends.
                start_actor(self.head, info, _RUNNER_BLOB, spec, {})
                handle = handle_from_info(info)
                if current:
                    runner.ready(handle)
            elif current:
                del self.runners[runner.worker_id]
                self.workers.pop(runner.worker_id, None)
                if isinstance(error, ClusterError):  # the worker is gone: look again
                    self._refresh_locked(work)
                else:  # not a passing state: the tasks waiting fail with it
                    log.warning("zactor: could not start a task runner: %r", error)
                    self._fail_waiting(
                        work,
                        lambda task: ClusterError(
                            f"{task} could not start: zactor could not create its task "
                            f"runner on worker {runner.worker_id} ({error!r}); call it again"
                        ),
                    )
            self._dispatch(work)
        self._finish(work)

    def _viewed(self, future: Future) -> None:
        """The head's ``cluster_info`` came (:meth:`_refresh_locked`)."""
        try:
            info = future.result()
        except Exception as exc:  # the head did not answer: try again later
            log.warning("zactor: asking the head for its workers failed: %r", exc)
            info = None
        work = _Work()
        with self.lock:
            self.refreshing = False
            if info is None:
                self._refresh_later()
            else:
                self._apply_view(info, work)
            self._dispatch(work)
        self._finish(work)

    def _read(self) -> None:
        """:meth:`Runtime.call_later`'s function while tasks are in flight: read what
        came (the head's notice of a worker's death, say) if no thread is reading."""
        self.runtime.poll()
        with self.lock:
            self.reading = False
            self._read_later()

    def _read_later(self) -> None:
        if not self.reading and self.in_flight:
            self.reading = True
            self.runtime.call_later(READ_EVERY_S, self._read)

    def _timed_refresh(self) -> None:
        """:meth:`Runtime.call_later`'s function: ask for the view again."""
        work = _Work()
        with self.lock:
            self.timed = False
            self._refresh_locked(work)
        self._finish(work)

    # -- under the lock ---------------------------------------------------------------------

    def _apply_view(self, info: dict, work: _Work) -> None:
        rows = {row["worker_id"]: row for row in info["workers"]}
        for worker_id in [w for w in self.workers if w not in rows]:
            # Gone since: its tasks in flight hear of its death from the head.
            self.workers.pop(worker_id)
            self.runners.pop(worker_id, None)
        self.workers.update(rows)
        self.starting = list(info.get("starting") or ())
        self.view_at = time.monotonic()
        for worker_id in rows:
            if worker_id not in self.runners:
                self._place(worker_id, work)
        self._settle_unplaceable(work)

    def _place(self, worker_id: str, work: _Work) -> None:
        """Ask the head to place a runner on ``worker_id``; :meth:`_placed` follows."""
        runner = self.runners[worker_id] = _Runner(worker_id)
        options = {"max_concurrency": RUNNER_CONCURRENCY}
        spec = creation_spec("TaskRunner", TASK_RUNNER_METHODS, options, self.runtime)
        spec.update(worker_id=worker_id, task_runner=True)
        self.placing += 1
        future = self.head.place.remote(spec)
        work.callbacks.append((future, functools.partial(self._placed, runner, spec)))

    def _refresh_locked(self, work: _Work) -> None:
        if not self.refreshing:
            self.refreshing = True
            work.callbacks.append((self.head.cluster_info.remote(), self._viewed))

    def _refresh_later(self) -> None:
        if not self.timed:
            self.timed = True
            self.runtime.call_later(self.poll_s, self._timed_refresh)
            self.poll_s = min(2 * self.poll_s, STARTING_POLL_S[1])

    def _settle_unplaceable(self, work: _Work) -> None:
        """After a new view: tasks that no worker in it can take wait for the workers
        being started, or fail if none is."""
        if all(self._fits_somewhere(task) for task in (*self.free, *self.queue)):
            self.poll_s = STARTING_POLL_S[0]
            return
        if self.starting:
            self._refresh_later()
            return
        self._fail_waiting(
            work,
            lambda task: None if self._fits_somewhere(task) else ClusterError(self._explain(task)),
        )

    def _fail_waiting(self, work: _Work, error_of: Callable[[_Task], BaseException | None]):
        for queue in (self.free, self.queue):
            for _ in range(len(queue)):
                task = queue.popleft()
                error = error_of(task)
                if error is None:
                    queue.append(task)
                else:
                    work.failures.append((task.future, error))

    def _enqueue(self, task: _Task, first: bool = False) -> None:
        """Queue ``task`` to be sent (``first``: before the others, as a retry is)."""
        queue = self.queue if self.holds_back and task.num_cpus > EPSILON else self.free
        if first:
            queue.appendleft(task)
        else:
            queue.append(task)

    def _dispatch(self, work: _Work) -> None:
        """Send the queued tasks that a ready runner has room for, oldest first.

        Nothing goes while runners are being placed: the first of them to be ready
        would get every task that does not wait for a share.
        """
        if not self.placing:
            for queue in (self.free, self.queue):
                kept = []
                while queue:
                    task = queue[0]
                    runner = self._pick(task, work)
                    if runner is None:
                        kept.append(queue.popleft())
                        if queue is self.queue and not self._room():
                            break  # every runner is full: the rest wait too
                        continue
                    if self._send(task, runner, work):
                        queue.popleft()
                queue.extendleft(reversed(kept))
        watch = bool(self.free or self.queue)
        if watch != self.watching:
            # Someone must read replies while tasks wait for them, so that they go out
            # even if the caller waits on nothing (the background thread does).
            self.watching = watch
            runtime = self.runtime
            if watch:
                with runtime.lock:
                    runtime.watch()
            else:
                runtime.unwatch()

    def _pick(self, task: _Task, work: _Work) -> _Runner | None:
        """The ready runner with the most room that fits ``task``, or None."""
        best, best_key = None, None
        down = self.runtime.down
        gone = []
        for worker_id, runner in self.runners.items():
            target = runner.target
            if target is None:
                continue
            if down and target.actor_id in down:  # died, and no task of ours was there
                gone.append(runner)
                continue
            row = self.workers.get(worker_id)
            if row is None or not _fits(row, task):
                continue
            if self.holds_back and runner.load + task.num_cpus > _capacity(row) + EPSILON:
                continue
            key = (runner.load, runner.running, runner.used)
            if best_key is None or key < best_key:
                best, best_key = runner, key
        for runner in gone:
            self._runner_gone(runner, work)
        return best

    def _room(self) -> bool:
        """Whether some ready runner has CPU share left for this process's tasks."""
        for worker_id, runner in self.runners.items():
            row = self.workers.get(worker_id)
            if runner.target is not None and row is not None:
                if runner.load < _capacity(row) - EPSILON:
                    return True
        return False

    def _send(self, task: _Task, runner: _Runner, work: _Work) -> bool:
        """Send ``task`` to ``runner``, its function's definition first if it has not
        had it; False if the runner turned out to be dead (the task stays queued)."""
        target = runner.target
        try:
            runtime, box = target.box()
        except ActorDiedError:
            box = None
        if box is None:
            self._runner_gone(runner, work)
            return False
        if task.digest not in runner.defined:
            # A tell with no credit wanted (call id 0): it needs no reply, and counts
            # against no handle's bound, so sending it never waits.
            payload, buffers = _dumps_call((task.digest, task.blob), {})
            box.put(_TELL, _DEFINE, 0, target.actor_id, payload, buffers)
            runner.defined.add(task.digest)
        task.runner = runner
        task._target = target  # before it is pending, where Recovery may look for it
        runner.load += task.num_cpus
        runner.running += 1
        runner.used = next(self._uses)
        self.in_flight += 1
        self._read_later()
        call_id = runtime.pending.add(task.future)
        box.put(_CALL, _RUN, call_id, target.actor_id, task.payload, task.buffers)
        if target.actor_id in runtime.down and runtime.pending.pop(call_id) is task.future:
            # Its death was noticed as it was sent: the runner never had it.
            self._release(task)
            self._runner_gone(runner, work)
            return False
        return True

    def _release(self, task: _Task) -> None:
        """``task`` is no longer in flight: its share of its runner is free."""
        runner = task.runner
        if runner is not None:
            runner.load = max(0.0, runner.load - task.num_cpus)
            runner.running -= 1
            self.in_flight -= 1
            task.runner = None
        task._target = None

    def _runner_gone(self, runner: _Runner | None, work: _Work) -> None:
        """``runner`` died: forget it and its worker until the head's view says more."""
        if runner is None or self.runners.get(runner.worker_id) is not runner:
            return
        del self.runners[runner.worker_id]
        self.workers.pop(runner.worker_id, None)
        self._refresh_locked(work)

    def _again_or_error(self, task: _Task, reason: str):
        """``task``'s runner died with it: queue it again if ``max_retries`` allows
        (:data:`_SENT_AGAIN`), else the error its future raises."""
        task.deaths += 1
        if task.left != 0:
            if task.left > 0:
                task.left -= 1
            self._enqueue(task, first=True)
            return _SENT_AGAIN
        if task.max_retries == 0:
            tail = "it is not retried (max_retries=0): pass .options(max_retries=N) to retry it"
        else:
            tail = (
                f"it ran {task.deaths} times and max_retries={task.max_retries} is used up: "
                "pass .options(max_retries=N) for more, or -1 for no limit"
            )
        return WorkerCrashedError(f"{task} failed: the worker running it died ({reason}); {tail}")

    def _fits_somewhere(self, task: _Task) -> bool:
        return any(_fits(row, task) for row in self.workers.values())

    def _explain(self, task: _Task) -> str:
        if not self.workers:
            seen = "the cluster has no live worker"
        else:
            seen = "; ".join(
                f"{worker_id} has CPU free {_capacity(row):g} (its actors reserve the rest) "
                f"on a node offering {_offer(row)}"
                for worker_id, row in sorted(self.workers.items())
            )
        return (
            f"cannot run {task} asking for {task.demand()}: no worker can take it ({seen}). "
            "Ask for less (num_cpus=0 runs beside actors that reserve their worker's CPU), "
            "end the actors that reserve CPU, or start the cluster with the resources the "
            "task needs (zactor.init(resources={...}) or zactor start --head --resources)"
        )

    # -- after the lock ---------------------------------------------------------------------

    def _finish(self, work: _Work) -> None:
        for future, fn in work.callbacks:
            future.add_done_callback(fn)
        for future, error in work.failures:
            Future._fail(future, error)


def _capacity(row: dict) -> float:
    """The CPU a worker's actors leave free: what this process's tasks may share there."""
    return min(1.0, row.get("cpu_free", 1.0))


def _fits(row: dict, task: _Task) -> bool:
    """Whether the worker of ``row`` can run ``task`` at all (now or once it has room)."""
    if task.num_cpus > _capacity(row) + EPSILON:
        return False
    offered = row.get("resources") or {}
    return all(offered.get(k, 0.0) + EPSILON >= v for k, v in task.resources.items())


def _offer(row: dict) -> str:
    offered = row.get("resources") or {}
    return ", ".join(f"{k}={v:g}" for k, v in sorted(offered.items())) or "no custom resources"


def _reason(payload, buffers) -> str:
    try:
        return str(serialization.loads(payload, buffers))
    except Exception:  # undecodable: say so rather than fail the reader
        return "its task runner ended"


def _pool(runtime) -> TaskPool:
    """This process's :class:`TaskPool` (made on first use)."""
    return runtime.made_once("task_pool", lambda: TaskPool(runtime))
