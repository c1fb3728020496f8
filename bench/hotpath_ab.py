"""The per-call paths in one process, without sockets: compare two checkouts' CPU a call.

Run with::

    python bench/hotpath_ab.py                           # this checkout
    PYTHONPATH=/path/to/other/checkout python bench/hotpath_ab.py --repeats 15

End-to-end figures on a shared 2-core VM swing by 20 % between runs of the
same code, which hides a change of a few hundred nanoseconds a call. This
script runs the three Python paths a pipelined call takes, in the calling
thread, with the sockets' send replaced by a no-op, and reports the minimum
over ``--repeats`` of the time per call (the minimum is the run least
disturbed by the machine):

- ``caller``: ``h.inc.remote()`` on a live handle: serializing, the pending
  table, the outbox's batching (the driver's loop in ``zactor bench``'s
  pipelined row); ``tell``: ``h.inc.tell()``, the same without a reply;
- ``worker``: a worker host routing a batch of 512 calls and running them,
  replies queued and batched (``ActorHost._on_calls`` then its ready queue);
  ``worker tells``: the same for a batch of tells;
- ``replies``: the caller dispatching a batch of 512 replies to their futures
  (``Runtime._dispatch``).

It runs against zactor 0.1's module layout too, so the same script measures
the checkout before a structural change and after it.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import threading
import time

if __name__ == "__main__" and "PYTHONPATH" not in os.environ:  # this checkout's zactor
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import zactor

try:  # the layered package
    from zactor.endpoint import runtime as runtime_mod
    from zactor.transport.zeromq import ZmqConnection as _Sender
    from zactor.wire import hotpath, serialization
    from zactor.wire.protocol import method_names
    from zactor.worker.host import ActorHost

    _SEND = "send"
except ImportError:  # zactor 0.1
    from zactor import _hotpath as hotpath
    from zactor import runtime as runtime_mod
    from zactor import serialization
    from zactor.actor import method_names
    from zactor.worker import ActorHost

    _Sender, _SEND = runtime_mod.Outbox, "_send"


def _mute_sends(muted: bool) -> None:
    """Replace the sockets' send by a no-op (a Python call, as the real one starts with)."""
    if muted:
        _Sender._real_send = getattr(_Sender, _SEND)
        setattr(_Sender, _SEND, lambda self, frames: None)
    else:
        setattr(_Sender, _SEND, _Sender._real_send)


BATCH = 512


@zactor.remote
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def inc(self) -> int:
        self.n += 1
        return self.n


class Plain:
    def __init__(self) -> None:
        self.n = 0

    def inc(self) -> int:
        self.n += 1
        return self.n


def caller_ns(h, calls: int, how: str = "remote") -> float:
    """ns a call of ``h.inc.remote()`` (or ``.tell()``) with the outbox's sends muted."""
    runtime = runtime_mod.current()
    remote = getattr(h.inc, how)
    gc.disable()
    try:
        started = time.perf_counter()
        for _ in range(calls):
            remote()
        elapsed = time.perf_counter() - started
    finally:
        gc.enable()
    runtime.flush()
    for _future in runtime.pending.drain():  # never answered: sends are muted
        pass
    h._target.gate.inflight = 0
    h._target.outbox.inflight = 0
    return elapsed / calls * 1e9


def make_host():
    """A worker host in this process, not serving: its call path is driven by hand.

    Its runtime's background thread is running; the host's own threads are not."""
    d = f"/tmp/zab-{os.getpid()}"
    os.makedirs(d, exist_ok=True)
    runtime = runtime_mod.Runtime(f"ipc://{d}/w.sock", role="worker", head_address=None)
    host = ActorHost(runtime)
    actor = host.reserve(1, "Plain", None)
    actor.bind(Plain(), method_names(Plain))
    host.release(actor)
    host._leader = threading.get_ident()
    return runtime, host, actor


def worker_ns(host, actor, rounds: int, kind: int = 1) -> float:
    """ns a call for a batch of calls (``kind`` 2: tells) routed, run and answered
    (replies muted)."""
    index = actor.method_names.index("inc")
    payload = serialization.dumps_call((), {})[0]
    writer = hotpath.BatchWriter()
    for call_id in range(1, BATCH + 1):
        # A tell carries its handle's token (credits for tells), a call its call id.
        writer.add(kind, 0, index, call_id if kind == 1 else 7, actor.actor_id, payload, ())
    frames = writer.take()
    records = hotpath.parse_frame(frames[0], 0)
    identity = f"ipc:///tmp/zab-{os.getpid()}/caller.sock".encode()
    me = threading.get_ident()
    started = time.perf_counter()
    for _ in range(rounds):
        host._on_calls(identity, records, ())
        host._run_ready(me)
        host._send_replies()
    return (time.perf_counter() - started) / (rounds * BATCH) * 1e9


def replies_ns(rounds: int) -> float:
    """ns a reply for a batch of replies dispatched to their futures."""
    runtime = runtime_mod.current()
    payload = serialization.dumps(1)[0]
    total = 0.0
    for _ in range(rounds):
        futures = [zactor.Future(runtime, None, None) for _ in range(BATCH)]
        writer = hotpath.BatchWriter()
        for future in futures:
            writer.add(3, 0, 0, runtime.pending.add(future), 0, payload, ())
        frame0 = writer.take()[0]
        started = time.perf_counter()
        runtime._dispatch(b"ipc:///nowhere", frame0, ())
        total += time.perf_counter() - started
    return total / (rounds * BATCH) * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args()
    zactor.init(num_workers=1)
    runtime, host, actor = make_host()
    try:
        h = Counter.options(max_pending_calls=10**8).remote()
        assert zactor.get(h.inc.remote()) == 1
        _mute_sends(True)
        figures = {"caller": [], "tell": [], "worker": [], "worker tells": [], "replies": []}
        for _ in range(args.repeats):
            figures["caller"].append(caller_ns(h, args.calls))
            figures["tell"].append(caller_ns(h, args.calls, "tell"))
            figures["worker"].append(worker_ns(host, actor, args.calls // BATCH))
            figures["worker tells"].append(worker_ns(host, actor, args.calls // BATCH, 2))
            figures["replies"].append(replies_ns(args.calls // BATCH))
        print(f"zactor from {os.path.dirname(zactor.__file__)}")
        print(f"{'path':<14}{'min ns/call':>12}{'median':>10}")
        for name, values in figures.items():
            print(f"{name:<14}{min(values):>12.0f}{statistics.median(values):>10.0f}")
    finally:
        _mute_sends(False)
        runtime.close()
        os.rmdir(f"/tmp/zab-{os.getpid()}")
        zactor.shutdown()


if __name__ == "__main__":
    main()
