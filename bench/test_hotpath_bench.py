"""Micro-benchmarks of the hot path: compiled ``zactor._fast`` against ``zactor._fallback``.

Run with::

    python -m pytest bench/test_hotpath_bench.py --benchmark-only

Each operation is one benchmark group, so the two implementations appear side
by side in the table.
"""

from __future__ import annotations

import pytest

from zactor.wire import _fallback

try:
    from zactor.wire import _fast
except ImportError as exc:  # pragma: no cover - depends on the build
    _fast = None
    _REASON = f"zactor._fast is not built ({exc})"
else:
    _REASON = ""

IMPLS = [
    pytest.param(_fast, id="fast", marks=pytest.mark.skipif(_fast is None, reason=_REASON)),
    pytest.param(_fallback, id="fallback"),
]

CALL, RESULT = 1, 3
PAYLOAD = bytes(range(64))  # a typical small msgpack payload
N = 100


@pytest.fixture(params=IMPLS)
def impl(request):
    """The module under test."""
    return request.param


def frame_of(mod, n, kind=CALL):
    """Frame 0 holding ``n`` records with call ids 1..n."""
    w = mod.BatchWriter()
    for i in range(n):
        w.add(kind, 0, i % 7, i + 1, 42, PAYLOAD[: 16 + i % 48])
    return w.take()[0]


@pytest.mark.benchmark(group="pack_one")
def test_pack_one(benchmark, impl):
    frames = benchmark(impl.pack_one, CALL, 0, 3, 123456, 42, PAYLOAD)
    assert len(frames) == 1


@pytest.mark.benchmark(group="batch_writer_100")
def test_batch_writer_add100_take(benchmark, impl):
    w = impl.BatchWriter()
    payloads = [PAYLOAD[: 16 + i % 48] for i in range(N)]

    def run():
        add = w.add
        for i in range(N):
            add(CALL, 0, 3, i + 1, 42, payloads[i])
        return w.take()

    frames = benchmark(run)
    assert len(impl.parse_frame(frames[0], 0)) == N


@pytest.mark.benchmark(group="parse_frame_100")
def test_parse_frame_100(benchmark, impl):
    frame0 = frame_of(impl, N)
    records = benchmark(impl.parse_frame, frame0, 0)
    assert len(records) == N


@pytest.mark.benchmark(group="pending_100")
def test_pending_add100_take_replies(benchmark, impl):
    records = impl.parse_frame(frame_of(impl, N, kind=RESULT), 0)
    futures = [object() for _ in range(N)]

    def run():
        table = impl.PendingTable()  # fresh, so the call ids are 1..N every round
        add = table.add
        for f in futures:
            add(f)
        return table.take_replies(records)

    replies = benchmark(run)
    assert len(replies) == N


class _Sink:
    """A connection that drops what it is sent."""

    def send(self, frames):
        pass


@pytest.mark.benchmark(group="call_resolve_100")
def test_call100_resolve(benchmark, impl):
    """100 calls made as ``ActorMethod.remote`` makes them, then their 100 replies
    handed to their futures as the runtime's reader does."""
    records = impl.parse_frame(frame_of(impl, N, kind=RESULT), 0)
    for i, rec in enumerate(records):  # a one-byte int result each: decoded on arrival
        records[i] = rec[:5] + (b"\x07",) + rec[6:]
    gate = impl.CallGate(10 * N)

    class Future(impl.FutureCore):
        __slots__ = ()

    def run():
        table = impl.PendingTable()  # fresh, so the call ids are 1..N every round
        box = impl.Outbox("ipc:///bench", _Sink(), 0, lambda box: None, 1.0, 512, 1 << 20)
        futures = [table.call(Future, None, gate, None, box, 3, 42, PAYLOAD, ()) for _ in range(N)]
        table.resolve(records, ())
        return futures

    futures = benchmark(run)
    assert [f._value for f in futures] == [7] * N and gate.inflight == 0
