"""A hand-written ``multiprocessing.Pipe`` actor: the second yardstick of issue 12.

What a user writes instead of an actor framework when both ends are on one
machine: a child process that holds an object, receives ``(method, args)``
tuples over a ``multiprocessing.Pipe`` (``send``/``recv``: pickle over a Unix
socketpair), calls the method and sends back its result. No batching, no
framing of its own, no I/O thread: each call is a pickle, a ``write`` and a
``read`` on each side.

Both ``zactor bench`` (its sync-latency row, interleaved with raw pyzmq and
zactor) and ``bench/compare_frameworks.py`` (a phase of its own) measure it
through :class:`PipeActor`.
"""

from __future__ import annotations

import importlib
import multiprocessing
import multiprocessing.connection
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np

from zactor.control import spawn

#: Seconds to wait for the child to start and answer its first call.
START_TIMEOUT_S = 60.0
#: Seconds to wait for the child to exit once told to stop (then it is killed).
STOP_TIMEOUT_S = 5.0


def serve(conn: multiprocessing.connection.Connection, cls: type) -> None:
    """The child's loop: build ``cls()``, answer ``(method, args)`` until ``None``.

    A closed pipe (the parent is gone, even SIGKILLed: its end of the socketpair
    closes with it) ends the loop too, so the child never outlives its parent.
    """
    obj = cls()
    recv, send = conn.recv, conn.send
    send("ready")
    while True:
        try:
            msg = recv()
        except (EOFError, OSError):
            return
        if msg is None:
            send(None)
            return
        method, margs = msg
        send(getattr(obj, method)(*margs))


def serve_entry() -> None:
    """Entry point of the child process: ``sys.argv[1:]`` is its end of the pipe (a
    descriptor), then the module and name of the class it hosts."""
    fd, module, name = sys.argv[1:]
    serve(
        multiprocessing.connection.Connection(int(fd)),
        getattr(importlib.import_module(module), name),
    )


def round_trips_ns(send, recv, message, n: int, time_cap_s: float | None = None) -> np.ndarray:
    """Round-trip times (ns) of up to ``n`` exchanges ``send(message); recv()`` one at a
    time, stopping after ``time_cap_s`` seconds if given: the lockstep loop of the
    bench's yardsticks (bound methods passed in, so the loop does no look-ups)."""
    lat = np.empty(n, np.int64)
    clock = time.perf_counter_ns
    deadline = None if time_cap_s is None else clock() + int(time_cap_s * 1e9)
    i = 0
    while i < n:
        t0 = clock()
        send(message)
        recv()
        t1 = clock()
        lat[i] = t1 - t0
        i += 1
        if deadline is not None and t1 > deadline:
            break
    return lat[:i]


class PipeActor:
    """``cls()`` in a child process, called over a ``multiprocessing.Pipe``.

    ``cls`` is a module-level class the child imports by name (its module's
    top level runs there; never ``__main__``'s). ``method`` is the method the
    measurements call (without arguments): the counter's increment. The child
    is started as zactor starts its own processes (:mod:`zactor.control.spawn`:
    the same zactor, no re-import of the caller's ``__main__``, as
    ``multiprocessing``'s spawn would do) and inherits only its end of the
    pipe. :meth:`close` stops it; nothing is left behind.
    """

    name = "multiprocessing.Pipe actor"

    def __init__(self, cls: type, method: str = "inc") -> None:
        if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
            raise ValueError(
                f"the pipe actor's child imports its class by name: define {cls.__qualname__} "
                "at the top level of an importable module, not in __main__ or a function"
            )
        self.conn, child = multiprocessing.Pipe(duplex=True)
        self.message = (method, ())
        try:
            self.process = spawn.start(
                "zactor.benchmark.pipe_actor",
                [str(child.fileno()), cls.__module__, cls.__qualname__],
                entry="serve_entry",
                pass_fds=(child.fileno(),),
            )
        finally:
            child.close()  # our copy: the child's end must close when the child exits
        if not self.conn.poll(START_TIMEOUT_S) or self.conn.recv() != "ready":
            self._kill()
            raise RuntimeError(
                f"the multiprocessing.Pipe actor did not start within {START_TIMEOUT_S:g} s "
                f"(exit code {self.process.returncode}; see its error output above)"
            )

    @property
    def pid(self) -> int | None:
        """The child process's id."""
        return self.process.pid

    def call(self, method: str, *args: Any) -> Any:
        """One synchronous call: send ``(method, args)``, wait for the reply."""
        self.conn.send((method, args))
        return self.conn.recv()

    def latency_ns(self, n: int, time_cap_s: float | None = None) -> np.ndarray:
        """Round-trip times (ns) of up to ``n`` calls sent one at a time, within
        ``time_cap_s`` seconds if given."""
        return round_trips_ns(self.conn.send, self.conn.recv, self.message, n, time_cap_s)

    def pipelined_rate(self, n: int) -> float:
        """Calls per second: ``n`` calls sent by a thread while this one reads the replies.

        One thread cannot send them all first, as the raw pyzmq yardstick does:
        a pipe holds a few hundred small messages, so the child would block
        sending replies nobody reads, and then we would block sending to it.
        """
        send, recv, msg = self.conn.send, self.conn.recv, self.message
        failed: list = []

        def send_all() -> None:
            try:
                for _ in range(n):
                    send(msg)
            except BaseException as exc:  # reported below, in the measuring thread
                failed.append(exc)

        sender = threading.Thread(target=send_all, name="zactor-bench-pipe-sender", daemon=True)
        t0 = time.perf_counter()
        sender.start()
        for _ in range(n):
            recv()
        rate = n / (time.perf_counter() - t0)
        sender.join()
        if failed:
            raise RuntimeError(f"sending to the multiprocessing.Pipe actor failed: {failed[0]!r}")
        return rate

    def close(self) -> None:
        """Stop the child (told to, then killed if it does not exit); close our end."""
        try:
            if self.process.poll() is None:
                self.conn.send(None)
                if self.conn.poll(STOP_TIMEOUT_S):
                    self.conn.recv()
        except (EOFError, OSError):
            pass  # already gone
        finally:
            self._kill()

    def _kill(self) -> None:
        self.conn.close()  # a child still reading sees the pipe closed and exits
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
