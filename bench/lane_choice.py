"""The same-host lane's mechanism: Unix domain sockets or a shared-memory ring, measured.

Run with::

    python bench/lane_choice.py              # 5 rounds (about a minute)
    python bench/lane_choice.py --smoke      # every mechanism once, a few messages

Issue 12 asks to measure both before choosing. Between this process and one
server process per mechanism (no zactor cluster), two figures each:

* sync: a 64-byte request, its 64-byte reply, one at a time; p50 and p90 of
  the round trip (µs) in each round;
* pipelined: N 64-byte one-way messages, then one request whose reply ends
  the run; messages/s.

The mechanisms, every one driven by the thread that sends and the thread that
reads, with a one-frame message of 64 bytes:

``raw pyzmq``
    the yardstick: a DEALER here, a ROUTER there, over ``ipc://`` in a temp
    dir, ``sndhwm = rcvhwm = 0`` (:func:`zactor.benchmark.runner.raw_socket`).
``unix socket``
    what ``zactor/transport/lane.py`` does: a Unix stream socket pair; the
    sender writes the lane's header (magic, reserved, frame count, frame
    length: 16 bytes) and the payload with one ``sendmsg``; the reader waits
    in ``select.epoll.poll``, then ``recv`` and parses what it read. Sends
    block when the socket buffer is full (the kernel's backpressure; the lane
    queues instead).
``ring, wake if asleep``
    one ring per direction in a ``memfd`` both map (so no name in
    ``/dev/shm`` at all), head and tail counters and the reader's sleep flag
    in the segment, each on its own cache line. The writer copies a length
    and the message in, publishes the head, and writes the reader's eventfd
    only if its sleep flag is up (clearing it, so a burst wakes it once). The
    reader drains the ring, raises its flag, looks at the head again, and only
    then waits in ``epoll`` on its eventfd (as a worker that also waits on its
    ZeroMQ socket would), reads it and lowers the flag. A full ring makes the
    writer yield until the reader frees space (counted: it never happened in
    the runs below, the ring holds a whole pipelined run).
``ring, always wake``
    the same ring, but every message writes the eventfd (no flag).
``mp.Pipe``
    ``multiprocessing.Pipe``'s ``send_bytes``/``recv_bytes`` for reference
    (the issue's hand-written actor's mechanism).

The flag protocol is Dekker's (store my flag, load your counter), and x86 may
let a load pass an earlier store, so a wake-up could be lost; Python gives no
fence to prevent it. The reader's wait is therefore bounded (20 ms), and the
waits that timed out with a message in the ring are counted and printed as
lost wake-ups: a design relying on the flag would need a real fence (C) or
such a bound.

Each round runs every mechanism (sync, then pipelined), the order rotated
round by round so that noise from other processes on the machine hits all
alike; the figures are medians over rounds, each beside raw pyzmq's as a
ratio. Every server process dies with its parent (``PR_SET_PDEATHSIG``), is
stopped and reaped at the end, on error too; the temp dir is removed.

Results, 2026-12-04, the project's 2-core VM, Python 3.11.7, others' test
suites running beside; ``python bench/lane_choice.py`` (5 rounds, 5,000 round
trips and 50,000 pipelined messages a round), medians, x = over raw pyzmq's::

    run 1 (14:10)             p50 µs      x   p90 µs      x     msgs/s      x
    raw pyzmq                   50.1  1.00x     74.3  1.00x    239,238  1.00x
    unix socket                 16.9  0.34x     35.8  0.48x    218,044  0.91x
    ring, wake if asleep        15.4  0.31x     19.4  0.26x    415,120  1.74x
    ring, always wake           15.6  0.31x     22.7  0.31x    302,601  1.26x
    mp.Pipe                     18.6  0.37x     26.6  0.36x    157,481  0.66x

    run 2 (14:27, load 3-4)   p50 µs      x   p90 µs      x     msgs/s      x
    raw pyzmq                  156.9  1.00x    216.2  1.00x    273,160  1.00x
    unix socket                 64.6  0.41x    103.7  0.48x    374,960  1.37x
    ring, wake if asleep        83.8  0.53x    118.8  0.55x    859,749  3.15x
    ring, always wake           70.9  0.45x    108.9  0.50x    495,696  1.81x
    mp.Pipe                     50.4  0.32x     74.0  0.34x    241,285  0.88x

    (``--rounds 50``, 14:13)  p50 µs      x   p90 µs      x     msgs/s      x
    raw pyzmq                   64.3  1.00x     83.9  1.00x    201,954  1.00x
    unix socket                 18.5  0.29x     22.0  0.26x    187,070  0.93x
    ring, wake if asleep        17.1  0.27x     21.8  0.26x    451,754  2.24x
    ring, always wake           18.0  0.28x     24.8  0.29x    254,876  1.26x
    mp.Pipe                     22.1  0.34x     27.5  0.33x    134,766  0.67x

No ring ever filled and no wake-up was lost, on either side, in any run.
Single costs in one process (minimum of 5 × 20,000): a lane ``sendmsg`` of
header and 64 bytes 2.75 µs (with a reader draining every 50th), an
``eventfd_write`` nobody waits on 0.47 µs, ``epoll.poll(0)`` on a ready fd
0.80 µs, a ring put (copy, publish, look at the flag) 0.25 µs.

What the numbers say:

* sync latency: the Unix socket and both rings are the same within the noise
  (0.27-0.53x raw pyzmq, with round-to-round swings larger than their
  differences), and ``mp.Pipe`` as well. In a lockstep exchange the reader is
  asleep whenever a message comes, so each direction pays one cross-process
  wake-up (the write wakes the peer's ``epoll``, the scheduler runs it on the
  other core) whatever carries the bytes; that and the interpreter's work are
  the round trip. The ring saves the kernel copy of 80 bytes and pays it back
  in its own Python steps (flag, re-check, ``eventfd_read``). Raw pyzmq pays
  two more wake-ups a direction (its I/O threads): hence 3x slower.
* pipelined throughput: the ring that wakes only a sleeping reader is 1.7-3.2x
  raw pyzmq and 1.9-2.4x the Unix socket, because while the reader is awake
  and draining, the writer makes no system call (0.25 µs a message against
  2.75 µs for a ``sendmsg``). Waking on every message gives most of that back
  (1.26-1.81x). The Unix socket, one ``sendmsg`` a message, is 0.9-1.4x raw
  pyzmq (whose I/O thread batches the writes).
* choice: keep Unix sockets. The ring buys no latency, which is the issue's
  headline target, and its throughput gain on small messages is mostly what
  writing several messages with one ``sendmsg`` would recover on a socket
  (the lane's flusher already writes up to 64 queued buffers a call; its
  sending thread writes one message a call). Its price is real: a
  sleep flag needing a store-load fence Python lacks (the bounded wait above),
  a second flag-and-eventfd protocol for a full ring, segments per peer pair to
  size, map and free even when a peer is SIGKILLed, peer death to detect
  (a ``pidfd`` here; a socket just reads EOF), and no kernel-kept framing or
  ordering to lean on.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import errno
import mmap
import multiprocessing.connection
import os
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import zmq

from zactor.benchmark.runner import raw_socket

#: The mechanisms, in the order printed; the first is the yardstick.
MECHANISMS = ("raw pyzmq", "unix socket", "ring, wake if asleep", "ring, always wake", "mp.Pipe")
#: A message's first byte says what the server does with it.
REQUEST, TELL, QUIT, STATS = ord("R"), ord("T"), ord("Q"), ord("S")
SIZE = 64
REQ = bytes([REQUEST]) + bytes(SIZE - 1)
ONE_WAY = bytes([TELL]) + bytes(SIZE - 1)
BYE = bytes([QUIT]) + bytes(SIZE - 1)
ASK_STATS = bytes([STATS]) + bytes(SIZE - 1)
#: A ring server's answer to ASK_STATS: its full-ring waits and lost wake-ups.
_STATS = struct.Struct("<QQ")

#: The lane's header of a one-frame message (zactor/transport/lane.py's ``_FIRST``).
_FIRST = struct.Struct("<2sHIQ")
_MAGIC = b"ZL"
READ_CHUNK = 64 * 1024

# The ring segment: counters on separate cache lines (no false sharing), then the data.
_U64 = struct.Struct("<Q")
_LEN = struct.Struct("<I")
HEAD, TAIL, SLEEPING, DATA = 0, 64, 128, 192
RING_BYTES = 8 << 20  # holds a whole pipelined run of 64-byte messages
#: The bound on a ring reader's wait: the safety net for a wake-up lost to store-load
#: reordering (see the module's docstring). Seconds.
WAIT_BOUND = 0.02


# -- the channels: send(bytes), recv() -> bytes-like or None at the peer's end ----------


class ZmqChannel:
    """A DEALER (client) or a ROUTER (server, answering the last sender)."""

    def __init__(self, sock: zmq.Socket, router: bool) -> None:
        self.sock = sock
        self._peer = b""
        if router:
            self.send, self.recv = self._router_send, self._router_recv
        else:
            self.send, self.recv = sock.send, sock.recv

    def _router_recv(self) -> bytes:
        self._peer, message = self.sock.recv_multipart()
        return message

    def _router_send(self, message: bytes) -> None:
        self.sock.send_multipart([self._peer, message])


class SocketChannel:
    """A Unix stream socket carrying lane-framed messages, read after ``epoll``."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._sendmsg = sock.sendmsg
        self._epoll = select.epoll()
        self._epoll.register(sock.fileno(), select.EPOLLIN)
        self._buf = b""
        self._ready: collections.deque = collections.deque()

    def send(self, message: bytes) -> None:
        self._sendmsg([_FIRST.pack(_MAGIC, 0, 1, len(message)), message])

    def recv(self):
        ready = self._ready
        while not ready:
            self._epoll.poll()
            chunk = self.sock.recv(READ_CHUNK)
            if not chunk:
                return None
            self._parse(self._buf + chunk if self._buf else chunk)
        return ready.popleft()

    def _parse(self, data: bytes) -> None:
        end, at = len(data), 0
        while end - at >= _FIRST.size:
            magic, _, count, n = _FIRST.unpack_from(data, at)
            if magic != _MAGIC or count != 1:
                raise ValueError(
                    f"not a one-frame lane message at byte {at}: {data[at : at + 16]!r}"
                )
            start = at + _FIRST.size
            if end - start < n:
                break
            self._ready.append(data[start : start + n])
            at = start + n
        self._buf = data[at:]

    def close(self) -> None:
        self._epoll.close()
        self.sock.close()


class RingWriter:
    """The writing end of a ring: copies messages in and wakes the reader."""

    def __init__(self, memfd: int, eventfd: int, always_wake: bool) -> None:
        self.mm = mmap.mmap(memfd, DATA + RING_BYTES)
        self.buf = memoryview(self.mm)
        self.efd = eventfd
        self.always = always_wake
        self.head = _U64.unpack_from(self.buf, HEAD)[0]
        self._tail = _U64.unpack_from(self.buf, TAIL)[0]
        self.full_waits = 0
        #: While the ring is full: False once its reader is gone (then sends fail).
        self.reader_alive = lambda: True

    def send(self, message: bytes) -> None:
        record = _LEN.pack(len(message)) + message
        n, head, buf = len(record), self.head, self.buf
        while head + n - self._tail > RING_BYTES:
            self._tail = _U64.unpack_from(buf, TAIL)[0]
            if head + n - self._tail > RING_BYTES:
                if not self.reader_alive():
                    raise ConnectionError("the ring's reader process ended: see its error above")
                self.full_waits += 1
                time.sleep(0)
        at = head % RING_BYTES
        first = min(n, RING_BYTES - at)
        buf[DATA + at : DATA + at + first] = record[:first] if first < n else record
        if first < n:
            buf[DATA : DATA + n - first] = record[first:]
        self.head = head = head + n
        _U64.pack_into(buf, HEAD, head)  # published after the bytes: x86 keeps stores in order
        if self.always:
            os.eventfd_write(self.efd, 1)
        elif buf[SLEEPING]:
            buf[SLEEPING] = 0  # the rest of a burst does not wake it again
            os.eventfd_write(self.efd, 1)

    def close(self) -> None:
        self.buf.release()
        self.mm.close()


class RingReader:
    """The reading end of a ring: drains it, and sleeps on its eventfd when it is empty."""

    def __init__(self, memfd: int, eventfd: int, always_wake: bool) -> None:
        self.mm = mmap.mmap(memfd, DATA + RING_BYTES)
        self.buf = memoryview(self.mm)
        self.efd = eventfd
        self.always = always_wake
        self._epoll = select.epoll()
        self._epoll.register(eventfd, select.EPOLLIN)
        self._peer_fd = -1
        self.tail = _U64.unpack_from(self.buf, TAIL)[0]
        self._ready: collections.deque = collections.deque()
        self.lost_wakeups = 0

    def recv(self):
        ready = self._ready
        while not ready:
            if not self._drain():
                self._wait()
        return ready.popleft()

    def _drain(self) -> bool:
        buf, pos = self.buf, self.tail
        head = _U64.unpack_from(buf, HEAD)[0]
        if head == pos:
            return False
        while pos < head:
            n = _LEN.unpack(self._read(pos, _LEN.size))[0]
            self._ready.append(self._read(pos + _LEN.size, n))
            pos += _LEN.size + n
        self.tail = pos
        _U64.pack_into(buf, TAIL, pos)
        return True

    def _read(self, pos: int, n: int) -> bytes:
        at = pos % RING_BYTES
        if at + n <= RING_BYTES:
            return self.buf[DATA + at : DATA + at + n].tobytes()
        first = RING_BYTES - at
        return (
            self.buf[DATA + at : DATA + RING_BYTES].tobytes()
            + self.buf[DATA : DATA + n - first].tobytes()
        )

    def watch(self, pidfd: int) -> None:
        """Fail, rather than wait for ever, once the process of ``pidfd`` (the writer) ends."""
        self._peer_fd = pidfd
        self._epoll.register(pidfd, select.EPOLLIN)

    def _wait(self) -> None:
        buf = self.buf
        if self.always:
            events = self._epoll.poll()
        else:
            buf[SLEEPING] = 1
            if _U64.unpack_from(buf, HEAD)[0] != self.tail:
                buf[SLEEPING] = 0
                return
            events = self._epoll.poll(WAIT_BOUND)
            if not events and _U64.unpack_from(buf, HEAD)[0] != self.tail:
                self.lost_wakeups += 1
            buf[SLEEPING] = 0
        if any(fd == self._peer_fd for fd, _ in events) and not self._drain():
            raise ConnectionError("the ring's writer process ended: see its error above")
        try:
            os.eventfd_read(self.efd)
        except BlockingIOError:  # the bounded wait ran out, or the wake-up came meanwhile
            pass

    def close(self) -> None:
        self._epoll.close()
        self.buf.release()
        self.mm.close()


class RingChannel:
    """A ring each way: ``send`` writes one, ``recv`` reads the other."""

    def __init__(self, fds: list[int], client: bool, always_wake: bool) -> None:
        # fds: request ring, reply ring, request eventfd, reply eventfd
        out, into = (0, 1) if client else (1, 0)
        self.writer = RingWriter(fds[out], fds[2 + out], always_wake)
        self.reader = RingReader(fds[into], fds[2 + into], always_wake)
        self.send, self.recv = self.writer.send, self.reader.recv

    def close(self) -> None:
        self.writer.close()
        self.reader.close()


class PipeChannel:
    """One end of a ``multiprocessing.Pipe``."""

    def __init__(self, conn: multiprocessing.connection.Connection) -> None:
        self.conn = conn
        self.send = conn.send_bytes
        self._recv = conn.recv_bytes

    def recv(self):
        try:
            return self._recv()
        except EOFError:
            return None


# -- the server processes ---------------------------------------------------------------


def _die_with_parent(parent: int) -> None:
    """Be killed when the benchmark dies, however it dies (Linux's PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(1, signal.SIGKILL, 0, 0, 0) != 0:  # 1: PR_SET_PDEATHSIG
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # it died before the prctl took effect
        os._exit(0)


def serve(mechanism: str, parent: int, args: list[str]) -> None:
    """A server process: answer every request, take every one-way message, stop at QUIT
    (after answering it) or at the client's end."""
    _die_with_parent(parent)
    context = None
    if mechanism == "raw pyzmq":
        context = zmq.Context(io_threads=1)
        sock = raw_socket(context, zmq.ROUTER)
        sock.bind(args[0])
        channel = ZmqChannel(sock, router=True)
    elif mechanism == "unix socket":
        channel = SocketChannel(socket.socket(fileno=int(args[0])))
    elif mechanism.startswith("ring"):
        fds = [int(a) for a in args]
        channel = RingChannel(fds, client=False, always_wake=mechanism == "ring, always wake")
    else:
        channel = PipeChannel(multiprocessing.connection.Connection(int(args[0])))
    recv, send = channel.recv, channel.send
    while True:
        message = recv()
        if message is None:
            break
        kind = message[0]
        if kind == REQUEST:
            send(message)
        elif kind == QUIT:
            send(message)
            break
        elif kind == STATS:
            ring = isinstance(channel, RingChannel)
            counts = (channel.writer.full_waits, channel.reader.lost_wakeups) if ring else (0, 0)
            send(_STATS.pack(*counts))
    if context is not None:
        sock.close()
        context.term()


# -- the client side --------------------------------------------------------------------


class Side:
    """One mechanism's server process and this process's end of its channel."""

    def __init__(self, mechanism: str, directory: str, context: zmq.Context) -> None:
        self.mechanism = mechanism
        self.process: subprocess.Popen | None = None
        self._closers: list = []
        self.channel = None
        try:
            self._start(directory, context)
        except BaseException:
            self.close()
            raise

    def _start(self, directory: str, context: zmq.Context) -> None:
        mechanism = self.mechanism
        child_fds: list[int] = []
        if mechanism == "raw pyzmq":
            address = f"ipc://{os.path.join(directory, 'raw.sock')}"
            sock = raw_socket(context, zmq.DEALER)
            self._closers.append(sock.close)
            sock.connect(address)
            self.channel = ZmqChannel(sock, router=False)
            args = [address]
        elif mechanism == "unix socket":
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            self.channel = SocketChannel(mine)
            self._closers.append(self.channel.close)
            child_fds, args = [theirs.fileno()], [str(theirs.fileno())]
            self._closers.append(theirs.close)
        elif mechanism.startswith("ring"):
            fds = [os.memfd_create("lane-choice-ring") for _ in range(2)]
            fds += [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(2)]
            self._closers.extend(lambda fd=fd: os.close(fd) for fd in fds)
            for fd in fds[:2]:
                os.ftruncate(fd, DATA + RING_BYTES)
            always = mechanism == "ring, always wake"
            self.channel = RingChannel(fds, client=True, always_wake=always)
            self._closers.append(self.channel.close)
            child_fds, args = fds, [str(fd) for fd in fds]
        else:
            mine, theirs = multiprocessing.Pipe()
            self.channel = PipeChannel(mine)
            self._closers += [mine.close, theirs.close]
            child_fds, args = [theirs.fileno()], [str(theirs.fileno())]
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve", mechanism, str(os.getpid())]
            + args,
            pass_fds=child_fds,
        )
        if isinstance(self.channel, RingChannel):
            pidfd = os.pidfd_open(self.process.pid)
            self._closers.append(lambda: os.close(pidfd))
            self.channel.reader.watch(pidfd)
            self.channel.writer.reader_alive = lambda: self.process.poll() is None

    def round_trips(self, n: int) -> list[int]:
        """``n`` sync round trips, each timed (ns)."""
        send, recv, clock = self.channel.send, self.channel.recv, time.perf_counter_ns
        times = []
        for _ in range(n):
            t0 = clock()
            send(REQ)
            recv()
            times.append(clock() - t0)
        return times

    def pipelined(self, n: int) -> float:
        """Messages/s of ``n - 1`` one-way messages and a request, until its reply."""
        send, recv = self.channel.send, self.channel.recv
        t0 = time.perf_counter()
        for _ in range(n - 1):
            send(ONE_WAY)
        send(REQ)
        recv()
        return n / (time.perf_counter() - t0)

    def counts(self) -> str:
        """A ring's full-ring waits and lost wake-ups (see the module's docstring), on
        both sides; empty for the other mechanisms."""
        if not isinstance(self.channel, RingChannel):
            return ""
        self.channel.send(ASK_STATS)
        full, lost = _STATS.unpack(self.channel.recv())
        return (
            f"full-ring waits {self.channel.writer.full_waits} here, {full} there; "
            f"lost wake-ups {self.channel.reader.lost_wakeups} here, {lost} there"
        )

    def close(self) -> None:
        """Ask the server to stop, reap it (killing it if it does not stop), free the rest."""
        if self.process is not None and self.process.poll() is None:
            try:
                self.channel.send(BYE)
                self.process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        for close in reversed(self._closers):
            try:
                close()
            except OSError as e:
                if e.errno != errno.EBADF:
                    raise


def _p(times: list[int], q: float) -> float:
    """The ``q`` quantile of ``times`` (ns), in µs."""
    return statistics.quantiles(times, n=100)[int(q * 100) - 1] / 1e3


def run(rounds: int, trips: int, messages: int, warmup: int) -> None:
    """Measure every mechanism ``rounds`` times, interleaved, and print the medians."""
    directory = tempfile.mkdtemp(prefix="lane-choice-")
    context = zmq.Context(io_threads=1)
    sides: list[Side] = []
    try:
        for mechanism in MECHANISMS:
            sides.append(Side(mechanism, directory, context))
        pids = " ".join(str(s.process.pid) for s in sides)
        print(f"servers: {pids} dir: {directory}", flush=True)
        for side in sides:
            side.round_trips(warmup)
        results = {s.mechanism: {"p50": [], "p90": [], "rate": []} for s in sides}
        for r in range(rounds):
            order = sides[r % len(sides) :] + sides[: r % len(sides)]
            for side in order:
                times = side.round_trips(trips)
                figures = results[side.mechanism]
                figures["p50"].append(_p(times, 0.5))
                figures["p90"].append(_p(times, 0.9))
                figures["rate"].append(side.pipelined(messages))
            print(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
        report(results, rounds, trips, messages)
        for side in sides:
            counts = side.counts()
            if counts:
                print(f"{side.mechanism}: {counts}")
    finally:
        for side in sides:
            side.close()
        context.term()
        shutil.rmtree(directory, ignore_errors=True)
    print("stopped: all servers reaped, temp dir removed")


def report(results: dict, rounds: int, trips: int, messages: int) -> None:
    """The table: medians over rounds, each beside raw pyzmq's as a ratio."""
    med = {m: {k: statistics.median(v) for k, v in f.items()} for m, f in results.items()}
    raw = med[MECHANISMS[0]]
    print(
        f"\n64-byte messages, medians over {rounds} rounds ({trips} sync round trips, "
        f"{messages} pipelined messages a round); x = figure / raw pyzmq's"
    )
    print(
        f"{'mechanism':<22}{'p50 µs':>9}{'x':>7}{'p90 µs':>9}{'x':>7}"
        f"{'msgs/s':>11}{'x':>7}   p50 per round"
    )
    for m in MECHANISMS:
        f = med[m]
        per_round = " ".join(f"{v:.0f}" for v in results[m]["p50"])
        print(
            f"{m:<22}{f['p50']:>9.1f}{f['p50'] / raw['p50']:>6.2f}x"
            f"{f['p90']:>9.1f}{f['p90'] / raw['p90']:>6.2f}x"
            f"{f['rate']:>11,.0f}{f['rate'] / raw['rate']:>6.2f}x   {per_round}"
        )


def _terminated(signum: int, frame) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="1 round, a few messages")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        mechanism, parent, *rest = args.serve
        serve(mechanism, int(parent), rest)
        return
    # A SIGTERM (as a SIGINT does) unwinds through run's cleanup rather than ending at once.
    signal.signal(signal.SIGTERM, _terminated)
    if args.smoke:
        run(rounds=1, trips=20, messages=200, warmup=5)
    else:
        run(rounds=args.rounds, trips=5_000, messages=50_000, warmup=500)


if __name__ == "__main__":
    main()
