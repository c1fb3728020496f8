"""Floods: malformed frames from a hostile peer, tells from a fast teller; the worker's memory.

:func:`malformed_frames` makes messages of :data:`KINDS` kinds, each aimed at a
real actor (its id and a read-only method) so that the worker must look at
them; none may change the actor's state. ``tests/test_limits.py`` sends
20,000 of them to a live worker. ``python -m zactor.benchmark.flood`` sends
100,000 from a raw pyzmq peer, then 1,000,000 tells of 200 bytes at an actor
that takes 50 us a call, and reports the worker's peak RSS before and after
each (see BENCHMARKS.md).
"""

from __future__ import annotations

import os
import pickle
import random
import struct
from typing import Iterator

import msgpack

from zactor.wire import records as wire
from zactor.wire.hotpath import PROTOCOL_VERSION
from zactor.wire.serialization import MAX_TUPLE_DEPTH, NO_ARGS

PREAMBLE = struct.Struct("<2sBBI")
RECORD = struct.Struct("<BBHIQQII")

#: The kinds of bad message :func:`malformed_frames` makes.
KINDS = (
    "random bytes",
    "empty frame",
    "short preamble",
    "truncated record",
    "truncated payload",
    "count lies",
    "wrong magic",
    "wrong version",
    "unknown record kind",
    "unknown actor",
    "lying payload length",
    "lying buffer count",
    "unannounced buffer",
    "a pickle",
    "many records",
    "foreign protocol",
    "too deep",
)


def frame0(records, magic=b"ZA", version=PROTOCOL_VERSION, count=None) -> bytes:
    """Frame 0 from ``(kind, method, call_id, actor_id, payload, nbuffers)`` records."""
    head = PREAMBLE.pack(magic, version, 0, len(records) if count is None else count)
    body = b"".join(
        RECORD.pack(kind, 0, 0, method, call_id, actor_id, len(payload), nbuf)
        for kind, method, call_id, actor_id, payload, nbuf in records
    )
    return head + body + b"".join(r[4] for r in records)


def _deep_tuple_payload() -> bytes:
    items = msgpack.packb([0])
    for _ in range(MAX_TUPLE_DEPTH + 1):
        items = msgpack.packb([msgpack.ExtType(1, items)])
    return b"\x91\x91" + msgpack.packb(msgpack.ExtType(1, items))  # [[too-deep tuple]]


def malformed_frames(actor_id: int, method: int, count: int, seed: int = 0) -> Iterator[list]:
    """``count`` bad messages (lists of frames), the kinds of :data:`KINDS` in turn.

    The receiving worker drops every one, counted by kind (see
    :func:`expected_drops`), and none runs ``method`` of ``actor_id``
    successfully: pass a method that changes nothing.
    """
    rng = random.Random(seed)
    tell = (wire.TELL, method, 0, actor_id, NO_ARGS, 0)
    good = frame0([tell])
    deep = frame0([(wire.TELL, method, 0, actor_id, _deep_tuple_payload(), 0)])
    stranger = 10**12 + rng.randrange(10**6)  # an actor id no cluster hands out
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        if kind == "random bytes":
            yield [os.urandom(rng.randrange(1, 200))]
        elif kind == "empty frame":
            yield [b""]
        elif kind == "short preamble":
            yield [good[: rng.randrange(1, PREAMBLE.size)]]
        elif kind == "truncated record":
            yield [good[: PREAMBLE.size + rng.randrange(1, RECORD.size)]]
        elif kind == "truncated payload":
            yield [good[:-1]]
        elif kind == "count lies":
            yield [frame0([tell], count=rng.randrange(2, 1000))]
        elif kind == "wrong magic":
            yield [frame0([tell], magic=b"XY")]
        elif kind == "wrong version":
            yield [frame0([tell], version=(PROTOCOL_VERSION + rng.randrange(1, 255)) % 256)]
        elif kind == "unknown record kind":
            yield [frame0([(rng.randrange(wire.ACK + 1, 256), method, 0, actor_id, NO_ARGS, 0)])]
        elif kind == "unknown actor":
            yield [frame0([(wire.TELL, method, 0, stranger, NO_ARGS, 0)])]
        elif kind == "lying payload length":
            data = bytearray(good)
            struct.pack_into("<I", data, PREAMBLE.size + 24, rng.randrange(2, 2**32))
            yield [bytes(data)]
        elif kind == "lying buffer count":
            yield [frame0([(wire.TELL, method, 0, actor_id, NO_ARGS, rng.randrange(1, 2**16))])]
        elif kind == "unannounced buffer":
            yield [good, os.urandom(rng.randrange(1, 64))]
        elif kind == "a pickle":
            yield [pickle.dumps({"not": "a zactor frame", "i": i})]
        elif kind == "many records":
            yield [frame0([(wire.TELL, method, 0, stranger, NO_ARGS, 0)] * MANY)]
        elif kind == "foreign protocol":
            yield [b"GET / HTTP/1.1\r\nHost: zactor\r\n\r\n"]
        else:  # too deep
            yield [deep]


#: Records in a "many records" message, each dropped on its own.
MANY = 200


def expected_drops(count: int) -> int:
    """How many drops the worker counts for ``malformed_frames(..., count)``: one a
    message, and one a record of the "many records" ones."""
    many = sum(1 for i in range(count) if KINDS[i % len(KINDS)] == "many records")
    return count + (MANY - 1) * many


def _tell_flood(h, pid: int, args) -> None:
    """Tell ``args.tells`` times as fast as the caller can; the actor takes its time."""
    import time

    import zactor

    before = _peak_rss_kib(pid)
    start_count = zactor.get(h.count.remote())
    data, seconds = b"x" * args.tell_bytes, args.call_us / 1e6
    work = h.work.tell
    started = time.perf_counter()
    for _ in range(args.tells):
        work(data, seconds)
    sent_s = time.perf_counter() - started
    applied = zactor.get(h.count.remote(), timeout=3600) - start_count
    done_s = time.perf_counter() - started
    peak = _peak_rss_kib(pid)
    print(
        f"{args.tells:,} tells of {args.tell_bytes} bytes at an actor taking "
        f"{args.call_us:g} us a call: {applied:,} applied; the caller sent the last after "
        f"{sent_s:.1f} s (held back by max_pending_calls), all ran after {done_s:.1f} s; "
        f"worker peak RSS {before / 1024:.0f} MB before, {peak / 1024:.0f} MB after "
        "(target <= 200 MB)"
    )


def _raw_receiver_peak_kib(context, directory: str, frames: int) -> int:
    """Flood the raw yardstick's sink (a bare pyzmq ROUTER, zactor.benchmark.runner)
    with the same malformed frames; its peak RSS once it has read them all."""
    import zmq

    from zactor.benchmark.runner import STOP, RawYardstick

    yardstick = RawYardstick(directory)
    try:
        pid = yardstick.process.pid
        peer = context.socket(zmq.DEALER)
        peer.sndhwm = peer.rcvhwm = 0  # its acks wait here, not in the sink
        peer.connect(yardstick.sink_address)
        for message in malformed_frames(1, 0, frames):
            peer.send_multipart(message)
        peer.send(STOP)  # the sink answers it after every frame before it
        while peer.poll(60_000) and peer.recv_multipart()[-1] != STOP:
            pass
        peak = _peak_rss_kib(pid)
        peer.close(linger=0)
        return peak
    finally:
        yardstick.close()


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for pid {pid}")


def main() -> None:
    """Flood a worker with malformed frames from a raw peer; print its peak RSS."""
    import argparse
    import shutil
    import tempfile
    import time

    import zmq

    import zactor
    from zactor.api import _cluster_info
    from zactor.caller.handle import worker_service_handle

    parser = argparse.ArgumentParser(prog="python -m zactor.benchmark.flood")
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--tells", type=int, default=1_000_000)
    parser.add_argument("--tell-bytes", type=int, default=200)
    parser.add_argument("--call-us", type=float, default=50.0)
    args = parser.parse_args()

    @zactor.remote
    class Target:
        def __init__(self) -> None:
            self.n = 0

        def bump(self) -> int:
            self.n += 1
            return self.n

        def count(self) -> int:
            return self.n

        def work(self, data: bytes, seconds: float) -> None:
            until = time.perf_counter() + seconds
            while time.perf_counter() < until:  # a call that takes its time on the CPU
                pass
            self.n += 1

    zactor.init(num_workers=1)
    try:
        h = Target.remote()
        assert zactor.get(h.bump.remote()) == 1
        worker = _cluster_info()["workers"][0]
        before = _peak_rss_kib(worker["pid"])
        context = zmq.Context()
        directory = tempfile.mkdtemp(prefix="zactor-flood-")
        peer = context.socket(zmq.DEALER)
        peer.sndhwm = 0  # it ignores every bound: its own queue takes the flood
        peer.identity = f"ipc://{directory}/peer.sock".encode()
        peer.connect(h._address)
        method = h._methods.index("count")
        started = time.perf_counter()
        for frames in malformed_frames(h._actor_id, method, args.frames):
            peer.send_multipart(frames)
        sent_s = time.perf_counter() - started
        service = worker_service_handle(h._address)
        dropped, expected = 0, expected_drops(args.frames)
        while dropped < expected:
            time.sleep(0.1)
            dropped = sum(service.stats.remote().result(timeout=60)["dropped"].values())
        drained_s = time.perf_counter() - started
        assert zactor.get(h.count.remote()) == 1, "a malformed frame changed the actor's state"
        peak = _peak_rss_kib(worker["pid"])
        print(
            f"{args.frames:,} malformed frames of {len(KINDS)} kinds from one raw peer: "
            f"sent in {sent_s:.1f} s, all dropped after {drained_s:.1f} s; worker peak RSS "
            f"{before / 1024:.0f} MB before, {peak / 1024:.0f} MB after (target <= 200 MB); "
            f"drops by kind: {service.stats.remote().result(timeout=60)['dropped']}"
        )
        peer.close(linger=0)
        raw_peak = _raw_receiver_peak_kib(context, directory, args.frames)
        print(
            f"  the raw yardstick, a bare pyzmq ROUTER that reads and drops (receive "
            f"high-water mark 0), under the same flood: peak RSS {raw_peak / 1024:.0f} MB"
        )
        context.term()
        shutil.rmtree(directory, ignore_errors=True)  # also the yardstick's socket files
        if args.tells:
            _tell_flood(h, worker["pid"], args)
    finally:
        zactor.shutdown()


if __name__ == "__main__":
    main()
