"""The worker's side of tasks: :class:`TaskRunner`, which runs the tasks of one caller.

A process that calls a task function (``f.remote(...)``, see
:mod:`zactor.caller.task`) creates one ``TaskRunner`` actor on each worker it
sends tasks to, as an ordinary threaded actor: its calls travel as frames
straight from the caller, like any actor's. The caller ships each function
once per runner (``define``, a one-way call carrying it cloudpickled and named
by a digest of those bytes) and then calls it by that digest (``run``), so a
function is neither pickled nor sent again with every call.
"""

from __future__ import annotations

import threading
from typing import Any

import cloudpickle

from zactor.errors import ActorExit

#: How long ``run`` waits for the ``define`` sent before it to finish unpickling its
#: function (seconds). Calls start in the order they arrived, so that is a matter of
#: microseconds; reaching the limit means the definition never came.
DEFINE_WAIT_S = 60.0


class _Undefinable:
    """What ``define`` keeps when a function does not unpickle here: its ``run``\\s raise it."""

    __slots__ = ("error", "traceback")

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.traceback = error.__traceback__


class TaskRunner:
    """Runs the tasks one process sends to this worker, several at once on the
    worker's threads (it is created with ``max_concurrency``).

    Its functions are kept by digest for as long as it lives, which is as long
    as the process that created it holds it.
    """

    def __init__(self) -> None:
        self._functions: dict[bytes, Any] = {}
        self._defined = threading.Condition()

    def define(self, digest: bytes, blob: bytes) -> None:
        """Unpickle the function ``blob`` and keep it as ``digest``. A function that does
        not unpickle here (its module is missing on this machine) is kept as the error,
        which every ``run`` of it raises."""
        try:
            fn = cloudpickle.loads(blob)
        except Exception as exc:
            fn = _Undefinable(exc)
        with self._defined:
            self._functions[digest] = fn
            self._defined.notify_all()

    def run(self, digest: bytes, /, *args: Any, **kwargs: Any) -> Any:
        """Call the function defined as ``digest`` with ``args`` and ``kwargs``."""
        fn = self._functions.get(digest)
        if fn is None:
            fn = _wait_for(self, digest)
        if type(fn) is _Undefinable:
            raise fn.error.with_traceback(fn.traceback)
        try:
            return fn(*args, **kwargs)
        except ActorExit:
            raise RuntimeError(
                "zactor.exit_actor() ends an actor, and a task is not one: return from the "
                "task instead, or raise an exception for its caller"
            ) from None


def _wait_for(runner: TaskRunner, digest: bytes) -> Any:
    """The function ``digest`` of ``runner`` once its ``define`` has run.

    The caller sends ``define`` before the first ``run`` of a function, and calls
    start in arrival order, but on several threads: the definition may still be
    unpickling on another one. (A function, not a method: every method of the
    class is on the wire, in ``TASK_RUNNER_METHODS``.)
    """
    defined = runner._defined
    with defined:
        if not defined.wait_for(lambda: digest in runner._functions, DEFINE_WAIT_S):
            raise RuntimeError(
                f"the task function {digest.hex()} was never defined on this worker within "
                f"{DEFINE_WAIT_S:.0f} s of its call: its caller runs another zactor release, "
                "or its definition was lost; call the task again"
            )
        return runner._functions[digest]
