"""Futures for actor calls, and the functions that wait on many of them.

A :class:`Future` is returned at once by ``handle.method.remote(...)``. Its
reply is decoded lazily, on the first ``result()``, and cached on the future.
A thread that waits on a future reads the process's inbox itself when no other
thread is doing so, so a synchronous call costs no thread hand-off.

Example::

    f = counter.increment.remote()
    f.result(timeout=5)          # or zactor.get(f), or `await f`
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

from zactor.errors import ActorDiedError, GetTimeoutError, remote_exception
from zactor.wire import hotpath, serialization
from zactor.wire import records as wire

_PENDING, _ARRIVED, _VALUE, _RAISED = 0, 1, 2, 3
_track = hotpath.track
_results = hotpath.results
_first_pending = hotpath.first_pending


#: Counts a handle's calls awaiting replies and its tells not yet credited
#: (``max_pending_calls``); compiled with the futures' per-reply work.
CallGate = hotpath.CallGate


class Resend:
    """What a call keeps so that it can be sent again: to a restarted actor
    (``max_task_retries``, or a call its dead process never received), or after
    its method raised one of ``retry_exceptions``."""

    __slots__ = (
        "method",
        "payload",
        "buffers",
        "left",
        "retry_on",
        "call_id",
        "sent_at",
        "handled",
    )

    def __init__(self, method, payload, buffers, left, retry_on, call_id, sent_at) -> None:
        self.method = method  # index in the actor's method table
        self.payload = payload
        self.buffers = buffers
        self.left = left  # sends again still allowed; -1: no limit
        self.retry_on = retry_on  # None, True (any Exception) or a tuple of types
        self.call_id = call_id  # the id it is pending under now
        self.sent_at = sent_at  # time.monotonic() when first sent
        #: The last incarnation whose death this call was held or sent again for, so
        #: that the head's notice and the dead incarnation's reply act on it once.
        self.handled = -1

    def retries(self, exc: BaseException) -> bool:
        """True if the method's exception ``exc`` is one to send the call again for."""
        retry_on = self.retry_on
        if retry_on is None or self.left == 0 or not isinstance(exc, Exception):
            return False
        return retry_on is True or isinstance(exc, retry_on)


class Future(hotpath.FutureCore):
    """The eventual result of one actor call.

    Futures are not meant to travel between processes: pickling one raises
    ``TypeError`` (pass the value, or the actor handle, instead).
    """

    # The state (``_state``, ``_value``, ``_callbacks``, ``_runtime``, ``_gate``,
    # ``_origin``, ``_retry``) and the reader's ``_arrive`` are compiled in
    # hotpath.FutureCore: ``Future(runtime, gate=None, origin=None)``.
    __slots__ = ()

    # -- called by the runtime's reader -------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        """Resolve with a locally made exception (a dead peer, a shutdown)."""
        _track(self)  # raised, its traceback will refer back to this future
        self._value = exc
        self._state = _RAISED
        gate = self._gate
        if gate is not None:
            gate.inflight -= 1
        if self._callbacks is not None:
            self._run_callbacks()

    def _run_callbacks(self) -> None:
        runtime = self._runtime
        with runtime.lock:
            callbacks, self._callbacks = self._callbacks, None
        if not callbacks:
            return
        runtime.unwatch()
        for fn in callbacks:
            try:
                fn(self)
            except Exception:  # a user's callback must not kill the reader
                runtime.log.exception("zactor: a done-callback of %r raised", self)

    def _decode(self) -> None:
        kind, payload, buffers = self._value
        if kind == wire.RESULT:
            self._decode_result(payload, buffers)
            return
        try:
            if kind == wire.ERROR:
                self._value = remote_exception(serialization.loads(payload, buffers))
            else:  # the reason, or [reason, incarnation] of a death the head announces
                reason = serialization.loads(payload, buffers)
                if type(reason) is list and reason:
                    reason = reason[0]
                self._value = ActorDiedError(str(reason))
        except Exception as exc:  # undecodable reply: report it on this future only
            self._value = exc
        _track(self)  # raised, its traceback will refer back to this future
        self._state = _RAISED

    # -- public ---------------------------------------------------------------------------

    def done(self) -> bool:
        """True once the reply (value or error) has arrived.

        If no thread is reading replies right now, this reads the ones already
        waiting (without blocking), so polling ``done()`` sees a reply arrive.
        """
        if self._state == _PENDING:
            self._runtime.poll()
        return self._state != _PENDING

    def _arrived(self) -> bool:
        """``done()`` without reading: the predicate of waits that read anyway."""
        return self._state != _PENDING

    def result(self, timeout: float | None = None) -> Any:
        """The call's return value; raises what the method raised.

        Waits up to ``timeout`` seconds (``None``: forever) and then raises
        :class:`GetTimeoutError`; the future stays usable.
        """
        if self._state == _PENDING and not self._runtime.wait_for(self, timeout):
            raise GetTimeoutError(f"timed out after {timeout} s waiting for {self._describe()}")
        if self._state == _ARRIVED:
            self._decode()
        if self._state == _VALUE:
            return self._value
        raise self._value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The exception the call raised, or ``None`` if it returned normally."""
        try:
            self.result(timeout)
        except GetTimeoutError:
            if self._state == _PENDING:
                raise
            return self._value
        except BaseException as exc:
            return exc
        return None

    def add_done_callback(self, fn: Callable[[Future], Any]) -> None:
        """Call ``fn(future)`` once the reply arrives (at once if it already has).

        The callback runs on whichever thread reads the reply: keep it short.
        """
        _track(self)  # the callback may refer to this future
        runtime = self._runtime
        added = False
        with runtime.lock:
            if self._state == _PENDING:
                if self._callbacks is None:
                    self._callbacks = []
                    runtime.watch()
                self._callbacks.append(fn)
                added = True
        if not added:
            fn(self)
        elif self._state != _PENDING:
            self._run_callbacks()  # raced with the arrival: whoever takes the list runs it

    def __await__(self):
        if self._state == _PENDING:
            loop = asyncio.get_running_loop()
            waiter = loop.create_future()

            def wake(_: Future) -> None:
                try:
                    loop.call_soon_threadsafe(_set_if_pending, waiter)
                except RuntimeError:  # the loop closed after its await gave up: nobody waits
                    pass

            self.add_done_callback(wake)
            yield from waiter.__await__()
        return self.result()

    def __reduce__(self):
        raise TypeError(
            "a zactor.Future cannot be sent to another process: pass its value "
            "(zactor.get(future)) or the actor handle instead"
        )

    def _describe(self) -> str:
        return f"{self._origin}" if self._origin is not None else "an actor call"

    def __repr__(self) -> str:
        state = ("pending", "done", "done", "failed")[self._state]
        return f"<zactor.Future {self._describe()} {state}>"


def _set_if_pending(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _as_futures(futures: Iterable[Future], what: str) -> list[Future]:
    futures = list(futures)
    for f in futures:
        if not isinstance(f, Future):
            raise TypeError(f"{what} takes zactor.Future objects, got {type(f).__name__}: {f!r}")
    return futures


def _runtime_of(futures: Sequence[Future]):
    return futures[0]._runtime


def get(refs: Future | Sequence[Future], timeout: float | None = None) -> Any:
    """The value of one future, or the list of values of a list of futures.

    Raises the first error among them (in list order), or
    :class:`GetTimeoutError` if they are not all done within ``timeout`` s.

    Example::

        zactor.get([c.increment.remote() for _ in range(3)])   # [1, 2, 3]
    """
    if isinstance(refs, Future):
        return refs.result(timeout)
    futures = _as_futures(refs, "zactor.get")
    if not futures:
        return []
    n = len(futures)
    scanned = [0]

    def all_done() -> bool:  # resumes where it stopped, so each check is cheap
        scanned[0] = i = _first_pending(futures, scanned[0])
        return i == n

    if not _runtime_of(futures).wait_until(all_done, timeout):
        left = n - sum(1 for f in futures if f._state != _PENDING)
        raise GetTimeoutError(f"timed out after {timeout} s: {left} of {n} calls still pending")
    return _results(futures)


def wait(
    futures: Sequence[Future], num_returns: int = 1, timeout: float | None = None
) -> tuple[list[Future], list[Future]]:
    """Wait until ``num_returns`` futures are done or ``timeout`` passes (Ray's ``wait``).

    Returns ``(ready, not_ready)``, each in the order given; ``ready`` holds at
    most ``num_returns`` futures.
    """
    futures = _as_futures(futures, "zactor.wait")
    if num_returns < 0 or num_returns > len(futures):
        raise ValueError(
            f"num_returns={num_returns} must be between 0 and the number of futures "
            f"({len(futures)})"
        )
    if futures and num_returns:
        _runtime_of(futures).wait_until(
            lambda: sum(1 for f in futures if f._state != _PENDING) >= num_returns, timeout
        )
    ready: list[Future] = []
    not_ready: list[Future] = []
    for f in futures:
        (ready if f._state != _PENDING and len(ready) < num_returns else not_ready).append(f)
    return ready, not_ready


def as_completed(futures: Iterable[Future], timeout: float | None = None) -> Iterator[Future]:
    """Yield futures as they complete (those completing in one wake-up in the order given).

    Raises :class:`GetTimeoutError` if the remaining ones are not done within
    ``timeout`` seconds of the first call to ``next``.
    """
    pending = _as_futures(futures, "zactor.as_completed")
    deadline = None if timeout is None else time.monotonic() + timeout
    while pending:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not _runtime_of(pending).wait_until(
            lambda waiting=pending: any(f._state != _PENDING for f in waiting), remaining
        ):
            raise GetTimeoutError(
                f"timed out after {timeout} s: {len(pending)} calls still pending"
            )
        still = []
        for f in pending:
            if f._state != _PENDING:
                yield f
            else:
                still.append(f)
        pending = still
