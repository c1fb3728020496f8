"""The same-host lane: messages between processes of one machine over Unix sockets,
driven by the threads that send and read them, without libzmq's I/O threads.

Over ZeroMQ every message crosses an I/O thread on each side: the sender's
thread wakes its I/O thread, which writes the socket; the receiver's I/O thread
reads it and wakes the reading thread. Four thread wake-ups a round trip, each
~25 µs on a busy 2-core VM. On the lane the sending thread writes the Unix
socket itself and the reading thread, waiting in ``epoll`` on it, reads it
itself: one wake-up a message.

Shape, mirroring the ZeroMQ transport (:mod:`zactor.transport.zeromq`) so the
endpoint above does not notice:

- an ``ipc://.../name.sock`` inbox also listens at ``.../name.sock.lane`` (a
  Unix stream socket in the same 0700 session directory);
- a connection to an ``ipc://`` peer whose lane is listening is a
  :class:`LaneConnection`: a Unix socket the sending thread writes, opened
  with a hello naming the sender's own inbox address (its identity, as a
  ZeroMQ routing id is). A peer with no lane (not started yet, or started
  with ``ZACTOR_TRANSPORT=zmq``) gets a ZeroMQ connection, for as long as the
  connection lives: one peer's messages never take two roads, so they keep
  their order;
- :meth:`LaneInbox.receive` returns the next message of the ZeroMQ inbox or of
  any lane connection, waiting in one ``epoll`` on the ZeroMQ socket's
  descriptor, the listener and every accepted connection.

A message on the lane is a header, then its frames back to back: magic
``b"ZL"``, reserved (u16), frame count (u32), then one u64 length per frame,
little-endian. The frames are exactly the ZeroMQ message's frames (the wire
format's frame 0 and out-of-band buffers), so batching, ordering and the
wire's own checks are the same on both roads.

Sends never block: what the socket does not take is queued on its connection
and written by a flusher thread (started the first time a socket is full),
as a ZeroMQ DEALER with an unbounded send queue behaves. Two processes each
writing to the other while neither reads can therefore not deadlock.

A connection that sends something that is not a lane message (a bad header,
a frame over ``max_message_bytes``), or that ends in the middle of one, is
closed: what it sent before stays delivered, the rest is dropped and logged
once per kind; the inbox keeps serving everyone else. A peer that dies loses
only what it had in flight.
"""

from __future__ import annotations

import collections
import errno
import itertools
import logging
import os
import select
import socket
import struct
import threading
import time

import zmq

from zactor.transport.addresses import LANE_SUFFIX, socket_file
from zactor.transport.keys import Curve
from zactor.transport.zeromq import LINGER_MS, TransportError, ZmqInbox, ZmqTransport
from zactor.wire import hotpath, limits

log = logging.getLogger("zactor")

#: Set ``ZACTOR_TRANSPORT=zmq`` (or ``zactor.init(transport="zmq")``) to use ZeroMQ only.
TRANSPORT_ENV = "ZACTOR_TRANSPORT"
#: The longest Unix socket path Linux accepts (``sun_path`` less its NUL).
MAX_SOCKET_PATH = 107
#: Most frames a lane message may have: more is garbage, not a message.
MAX_FRAMES = 1 << 20
#: Bytes read from a connection at once; a message larger than this is read into its own buffer.
READ_CHUNK = 64 * 1024
#: Messages parsed from one connection that wait to be returned; past it, the
#: connection is not read until they are (backpressure, as ZeroMQ's per-peer limit).
MAX_READY_PER_PEER = limits.INBOX_MESSAGES_PER_PEER

_perf_counter_ns = time.perf_counter_ns
_sched_yield = os.sched_yield

_HEADER = struct.Struct("<2sHI")  # magic, reserved, frame count
_MAGIC = b"ZL"
_HELLO = struct.Struct("<2sH")
_HELLO_MAGIC = b"ZH"
_LENGTH = struct.Struct("<Q")
_ONE_FRAME = _HEADER.pack(_MAGIC, 0, 1)
_FIRST = struct.Struct("<2sHIQ")  # the header and the first frame's length
#: Most buffers one sendmsg takes (the kernel refuses more with EMSGSIZE).
IOV_MAX = os.sysconf("SC_IOV_MAX")
#: The errors that mean the peer closed its end or died: its messages go over ZeroMQ.
_PEER_GONE = frozenset({errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ECONNREFUSED})
_NOSIGNAL = socket.MSG_NOSIGNAL  # a gone peer is an error, never a SIGPIPE
_preamble_flags = hotpath.preamble_flags
_SHARED = hotpath.SHARED_BUFFERS
_EPOLLIN = select.EPOLLIN
_EPOLLOUT = select.EPOLLOUT
_ZMQ_POLLIN = zmq.POLLIN
_ZMQ_EVENTS = zmq.EVENTS


def same_host_lane_enabled() -> bool:
    """True unless ``$ZACTOR_TRANSPORT`` is ``zmq``: processes on one machine then talk
    over the lane (this module) and send large buffers through shared memory
    (:mod:`zactor.transport.shared_memory`); else over ZeroMQ alone, as between hosts."""
    return os.environ.get(TRANSPORT_ENV, "") != "zmq"


def lane_path(address: str) -> str | None:
    """The lane socket file of the inbox at ``address`` (``ipc://`` only), or None when
    it would not fit a Unix socket address."""
    path = socket_file(address)
    if path is None:
        return None
    path += LANE_SUFFIX
    return path if len(path.encode()) <= MAX_SOCKET_PATH else None


def pack_header(frames: list) -> tuple[bytes, int]:
    """The lane header of a message of ``frames``, and the message's size without it."""
    sizes = [len(f) if type(f) is bytes else memoryview(f).nbytes for f in frames]
    n = len(sizes)
    return _HEADER.pack(_MAGIC, 0, n) + struct.pack(f"<{n}Q", *sizes), sum(sizes)


def _log_drop(kind: str, identity: bytes, message: str) -> None:
    """What a lane inbox does with a bad connection when nobody set its ``on_drop``."""
    log.warning("zactor lane: closed a connection from %r (%s): %s", identity[:64], kind, message)


class _Peer:
    """One accepted lane connection: its socket, what was read of the message being
    read, and the messages read whole."""

    __slots__ = ("sock", "fd", "identity", "buf", "body", "got", "sizes", "ready", "queued")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.identity: bytes | None = None  # until its hello is read
        self.buf = b""  # bytes read and not yet parsed (the start of a message)
        self.body: bytearray | None = None  # a large message being read into its own buffer
        self.got = 0
        self.sizes: tuple = ()
        self.ready: collections.deque = collections.deque()  # messages read whole
        self.queued = False  # in its inbox's queue of peers with messages ready


class LaneInbox:
    """A ZeroMQ inbox and a lane listener read as one: :meth:`receive` returns the
    next message of either, ``(identity, frame0, buffers)`` as :class:`ZmqInbox` does.

    Frames read from the lane are read-only memoryviews; a message's frames share
    one buffer, which lives as long as any of them (or an array made from one).
    """

    def __init__(self, zinbox: ZmqInbox, listener: socket.socket, path: str) -> None:
        self.zinbox = zinbox
        #: The address peers use to reach it: the ZeroMQ inbox's.
        self.address = zinbox.address
        #: The lane's socket file.
        self.path = path
        self.listener = listener
        self._zsock = zinbox.sock
        self._zfd = self._zsock.getsockopt(zmq.FD)
        self._lfd = listener.fileno()
        self._epoll = select.epoll()
        self._epoll.register(self._zfd, _EPOLLIN)
        self._epoll.register(self._lfd, _EPOLLIN)
        self._peers: dict[int, _Peer] = {}
        self._ready: collections.deque = collections.deque()  # peers with messages read
        self._zmq_maybe = True  # the ZeroMQ socket may hold messages: look before waiting
        self._zmq_turn = False  # ZeroMQ and the lane take turns when both have messages
        self._closed = False
        #: ``on_drop(kind, identity, message)`` hears of every connection closed for what it
        #: sent; the endpoint counts them with its other drops (``Runtime.drop``).
        self.on_drop = _log_drop
        self._shared = None

    def receive(self, timeout_ms: int):
        """Wait up to ``timeout_ms`` (-1: for ever) for one message; None if none came."""
        message = self._next()
        if message is not None:
            return message
        deadline = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1e3
        wait = -1.0 if timeout_ms < 0 else timeout_ms / 1e3
        poll = self._epoll.poll
        while not self._closed:
            self._take(poll(wait))
            message = self._next()
            if message is not None:
                return message
            if deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    return None
        return None

    def poll_for(self, budget_ns: int):
        """:meth:`receive`, looking for up to ``budget_ns`` instead of sleeping (and
        yielding the core between looks): the message, or None if none came."""
        message = self._next()
        if message is not None:
            return message
        clock, poll = _perf_counter_ns, self._epoll.poll
        end = clock() + budget_ns
        while not self._closed:
            events = poll(0)
            if events:
                self._take(events)
                message = self._next()
                if message is not None:
                    return message
            if clock() >= end:
                return None
            _sched_yield()
        return None

    def _take(self, events: list) -> None:
        """Act on what ``epoll`` reported: note ZeroMQ's signal, accept, read peers."""
        for fd, _ in events:
            if fd == self._zfd:
                self._zmq_maybe = True
            elif fd == self._lfd:
                self._accept()
            else:
                peer = self._peers.get(fd)
                if peer is not None and not peer.ready:
                    self._read(peer)

    def _next(self):
        """A message already read (lane or ZeroMQ, taking turns), or None."""
        ready = self._ready
        while self._zmq_maybe and (self._zmq_turn or not ready):
            self._zmq_turn = False
            # ZeroMQ's descriptor only says something changed: its EVENTS say what.
            if not self._zsock.getsockopt(_ZMQ_EVENTS) & _ZMQ_POLLIN:
                self._zmq_maybe = False
                break
            message = self.zinbox.receive(0)
            if message is not None:
                return message
        while ready:
            self._zmq_turn = True
            peer = ready[0]
            message = peer.ready.popleft()
            if not peer.ready:
                ready.popleft()
                peer.queued = False
            identity, frame0, buffers = message
            if buffers and self._shared is not None and _preamble_flags(frame0) & _SHARED:
                buffers = self._shared.take(identity, frame0, buffers)
                if buffers is None:  # a malformed table: dropped and logged
                    continue
                return identity, frame0, buffers
            return message
        return None

    @property
    def shared(self):
        """The shared-memory step that takes buffers sent through it (None: off);
        set by :class:`zactor.transport.Transports`, for both roads into this inbox."""
        return self._shared

    @shared.setter
    def shared(self, shared) -> None:
        self._shared = self.zinbox.shared = shared

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors: it waits in the backlog
                log.warning("zactor lane %s: cannot accept a connection: %s", self.path, exc)
                return
            sock.setblocking(False)
            peer = _Peer(sock)
            self._peers[peer.fd] = peer
            self._epoll.register(peer.fd, _EPOLLIN)

    def _read(self, peer: _Peer) -> None:
        """Read what ``peer`` sent, until its socket is empty or enough messages wait."""
        sock = peer.sock
        while len(peer.ready) < MAX_READY_PER_PEER:
            try:
                body = peer.body
                if body is not None:  # a large message: straight into its own buffer
                    n = sock.recv_into(memoryview(body)[peer.got :])
                    if n:
                        peer.got += n
                        if peer.got < len(body):
                            return
                        peer.body, peer.got = None, 0
                        self._deliver(peer, _frames(peer.identity, body, peer.sizes))
                        continue
                else:
                    chunk = sock.recv(READ_CHUNK)
                    n = len(chunk)
                    if n:
                        if not self._parse(peer, peer.buf + chunk if peer.buf else chunk):
                            return
                        if n < READ_CHUNK:  # the socket is empty: epoll says when it is not
                            return
                        continue
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                n = 0
            # The peer closed its end, or died.
            if peer.buf or peer.body is not None:
                self._dropped(peer, "lane-truncated", "the peer left in the middle of a message")
            self._drop(peer)
            return

    def _parse(self, peer: _Peer, data: bytes) -> bool:
        """Take the whole messages off the front of ``data``, keep the rest in ``peer.buf``
        (or a large message's own buffer); False if the connection was dropped."""
        view = memoryview(data)
        size = len(data)
        pos = 0
        if peer.identity is None:
            if size < _HELLO.size:
                peer.buf = data
                return True
            magic, length = _HELLO.unpack_from(data)
            if magic != _HELLO_MAGIC or length == 0:
                return self._garbage(peer, "it did not open with a lane hello")
            pos = _HELLO.size + length
            if size < pos:
                peer.buf = data
                return True
            peer.identity = bytes(view[_HELLO.size : pos])
        identity = peer.identity
        ready = peer.ready
        largest = limits.max_message_bytes
        while size - pos >= _FIRST.size:
            magic, _, count, first = _FIRST.unpack_from(data, pos)
            if magic != _MAGIC or not 0 < count <= MAX_FRAMES:
                return self._garbage(peer, "it sent bytes that are not a lane message")
            if count == 1:  # the common message: frame 0 alone
                if first > largest:
                    return self._too_large(peer, first)
                start = pos + _FIRST.size
                end = start + first
                if end > size:
                    sizes = (first,)
                    total = first
                else:
                    ready.append((identity, view[start:end], ()))
                    pos = end
                    continue
            else:
                start = pos + _HEADER.size + 8 * count
                if size < start:
                    break
                sizes = struct.unpack_from(f"<{count}Q", data, pos + _HEADER.size)
                total = sum(sizes)
                if max(sizes) > largest or total > 2 * largest:
                    return self._too_large(peer, max(max(sizes), total))
                if size - start >= total:
                    ready.append(_frames(identity, view[start : start + total], sizes))
                    pos = start + total
                    continue
            if total > READ_CHUNK:  # read the rest straight into the message's own buffer
                body = bytearray(total)
                body[: size - start] = view[start:]
                peer.body, peer.got, peer.sizes = body, size - start, sizes
                pos = size
            break
        if ready and not peer.queued:
            peer.queued = True
            self._ready.append(peer)
        peer.buf = bytes(view[pos:]) if pos < size else b""
        return True

    def _deliver(self, peer: _Peer, message: tuple) -> None:
        peer.ready.append(message)
        if not peer.queued:
            peer.queued = True
            self._ready.append(peer)

    def _garbage(self, peer: _Peer, why: str) -> bool:
        self._dropped(peer, "lane-garbage", f"{why}; its connection is closed")
        self._drop(peer)
        return False

    def _too_large(self, peer: _Peer, size: int) -> bool:
        self._dropped(
            peer,
            "lane-too-large",
            f"a message of {size} bytes, over max_message_bytes={limits.max_message_bytes} "
            "(the processes of a cluster must agree on it); its connection is closed",
        )
        self._drop(peer)
        return False

    def _dropped(self, peer: _Peer, kind: str, message: str) -> None:
        self.on_drop(kind, peer.identity or b"(a lane peer before its hello)", message)

    def _drop(self, peer: _Peer) -> None:
        """Close ``peer``'s connection; the messages it sent whole are still returned."""
        if self._peers.pop(peer.fd, None) is not None:
            self._epoll.unregister(peer.fd)
        peer.sock.close()
        peer.buf, peer.body = b"", None
        if peer.ready and not peer.queued:  # read in the same pass as what ended it
            peer.queued = True
            self._ready.append(peer)

    def peers(self) -> int:
        """How many lane connections this inbox has open."""
        return len(self._peers)

    def close(self) -> None:
        """Close the listener and every accepted connection, and remove the lane's file."""
        if self._closed:
            return
        self._closed = True
        for peer in list(self._peers.values()):
            peer.sock.close()
        self._peers.clear()
        self._epoll.close()
        self.listener.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _frames(identity: bytes, message, sizes: tuple) -> tuple:
    """``(identity, frame0, buffers)`` of a message read whole: read-only views of it."""
    view = memoryview(message)
    if not view.readonly:
        view = view.toreadonly()
    if len(sizes) == 1:
        return identity, view, ()
    first = sizes[0]
    buffers = []
    offset = first
    for s in sizes[1:]:
        buffers.append(view[offset : offset + s])
        offset += s
    return identity, view[:first], buffers


class LaneConnection:
    """A Unix socket to a same-host peer's lane; :meth:`send` writes from the calling
    thread, and queues for the flusher what the socket does not take at once."""

    __slots__ = (
        "sock",
        "fd",
        "lock",
        "queue",
        "transport",
        "address",
        "identity",
        "fallback",
        "export",
    )

    def __init__(self, transport: LaneTransport, sock: socket.socket, address: str, identity: str):
        self.sock = sock
        self.fd = sock.fileno()
        self.lock = threading.Lock()
        self.queue: collections.deque = collections.deque()  # memoryviews not yet written
        self.transport = transport
        self.address = address
        self.identity = identity
        #: Set once the peer is gone: later messages go over ZeroMQ, which delivers them
        #: to a process that binds the address again, as ZeroMQ alone would.
        self.fallback = None
        #: ``export(frames) -> frames``: moves large buffers into shared memory
        #: (zactor.transport.shared_memory; set by Transports, None: off).
        self.export = None

    def send(self, frames: list) -> None:
        """Send one message (a list of frames); never blocks."""
        if len(frames) == 1 and type(frames[0]) is bytes:
            frame = frames[0]
            total = len(frame) + _FIRST.size
            parts = [_ONE_FRAME + _LENGTH.pack(len(frame)), frame]
        else:
            if self.export is not None:
                frames = self.export(frames)
            header, size = pack_header(frames)
            total = len(header) + size
            parts = [header, *frames]
        with self.lock:
            if self.fallback is not None:
                self.fallback.send(frames)
                return
            if self.queue:  # earlier messages wait: this one goes after them
                self._enqueue(parts, 0)
                return
            if self.transport.closed:
                raise TransportError(errno.ENOTSOCK, "the lane was closed: zactor is shut down")
            try:
                sent = self.sock.sendmsg(parts[:IOV_MAX], (), _NOSIGNAL)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                if exc.errno not in _PEER_GONE:
                    raise
                self._lost()
                self.fallback.send(frames)
                return
            if sent != total:
                self._enqueue(parts, sent)

    def _enqueue(self, parts: list, sent: int) -> None:
        """Queue what of ``parts`` is left after ``sent`` bytes were written (lock held)."""
        queue = self.queue
        was_empty = not queue
        for part in parts:
            view = memoryview(part)
            if view.format != "B" or view.ndim != 1:
                view = view.cast("B")
            size = view.nbytes
            if sent >= size:
                sent -= size
                continue
            queue.append(view[sent:] if sent else view)
            sent = 0
        if queue and was_empty:
            self.transport.flusher().watch(self)

    def flush_some(self) -> bool:
        """Write what is queued until the socket is full; True once all is written.
        Call with :attr:`lock` held."""
        queue = self.queue
        while queue:
            try:
                sent = self.sock.sendmsg(list(itertools.islice(queue, 64)), (), _NOSIGNAL)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError as exc:
                if exc.errno not in _PEER_GONE:
                    log.warning("zactor lane to %s: cannot write (%s); retrying", self.address, exc)
                    return False
                self._lost()
                return True
            while sent:
                head = queue[0]
                if sent >= head.nbytes:
                    sent -= head.nbytes
                    queue.popleft()
                else:
                    queue[0] = head[sent:]
                    sent = 0
        return True

    def _lost(self) -> None:
        """The peer is gone: drop what was queued for it, send over ZeroMQ from now on."""
        self.queue.clear()
        self.transport.unwatch(self)  # before the descriptor's number can be reused
        self.sock.close()
        self.fallback = self.transport.zmq.connect(self.address, self.identity)

    def drain(self, timeout_s: float) -> None:
        """Write what is queued, waiting up to ``timeout_s`` for the peer to read it."""
        deadline = time.monotonic() + timeout_s
        poller = select.poll()  # not select(): descriptors may be past 1024
        poller.register(self.fd, select.POLLOUT)
        while True:
            with self.lock:
                if not self.queue or self.fallback is not None or self.flush_some():
                    return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            poller.poll(left * 1e3)

    def close(self) -> None:
        """Close the socket (queued messages are lost: :meth:`drain` first)."""
        with self.lock:
            self.queue.clear()
            if self.fallback is None:
                self.transport.unwatch(self)
                self.sock.close()


class _Flusher(threading.Thread):
    """Writes the queued messages of full lane connections once their sockets drain."""

    def __init__(self) -> None:
        super().__init__(name="zactor-lane-flusher", daemon=True)
        self._epoll = select.epoll()
        self._conns: dict[int, LaneConnection] = {}
        self._lock = threading.Lock()
        self._stop_r, self._stop_w = os.pipe()
        self._epoll.register(self._stop_r, _EPOLLIN)

    def watch(self, conn: LaneConnection) -> None:
        """Write ``conn``'s queue when its socket can take more."""
        with self._lock:
            if conn.fd in self._conns:
                return
            self._conns[conn.fd] = conn
            self._epoll.register(conn.fd, _EPOLLOUT)

    def unwatch(self, conn: LaneConnection) -> None:
        """Stop watching ``conn`` (its queue is empty, or its peer gone)."""
        with self._lock:
            if self._conns.get(conn.fd) is conn:
                del self._conns[conn.fd]
                try:
                    self._epoll.unregister(conn.fd)
                except OSError:  # closed already: epoll dropped it with its last reference
                    pass

    def run(self) -> None:
        while True:
            for fd, _ in self._epoll.poll():
                if fd == self._stop_r:
                    return
                with self._lock:
                    conn = self._conns.get(fd)
                if conn is None:
                    continue
                # Under the connection's lock: a send queueing meanwhile finds it watched.
                with conn.lock:
                    if conn.flush_some():
                        self.unwatch(conn)

    def stop(self) -> None:
        os.write(self._stop_w, b"x")
        self.join(timeout=2)
        self._epoll.close()
        os.close(self._stop_r)
        os.close(self._stop_w)


class LaneTransport:
    """ZeroMQ for every address, and the lane for ``ipc://`` peers whose lane listens.

    Registered for both schemes (:mod:`zactor.transport`), so a process has one
    ZeroMQ context (one I/O thread) whatever mix of peers it talks to. With
    :func:`same_host_lane_enabled` false it is ZeroMQ alone, exactly.
    """

    def __init__(self, curve: Curve | None = None) -> None:
        self.zmq = ZmqTransport(curve)
        self._lock = threading.Lock()
        self._inboxes: list[LaneInbox] = []
        self._conns: list[LaneConnection] = []
        self._flusher: _Flusher | None = None
        #: Set by :meth:`close`: a send raises ``TransportError`` as on a closed ZeroMQ socket.
        self.closed = False

    @property
    def refused(self) -> dict:
        """CURVE handshakes refused so far, per peer address (see :class:`ZmqTransport`)."""
        return self.zmq.refused

    def bind(self, address: str):
        """Bind a ZeroMQ inbox at ``address``; for ``ipc://``, a lane listener beside it."""
        zinbox = self.zmq.bind(address)
        path = lane_path(zinbox.address) if same_host_lane_enabled() else None
        if path is None:
            return zinbox
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                os.unlink(path)  # a dead process's, at an address bound again
            except FileNotFoundError:
                pass
            listener.bind(path)
            listener.listen(512)
        except OSError:
            listener.close()
            zinbox.sock.close(linger=0)
            raise
        listener.setblocking(False)
        inbox = LaneInbox(zinbox, listener, path)
        with self._lock:
            self._inboxes.append(inbox)
        return inbox

    def connect(self, address: str, identity: str):
        """A lane connection to ``address`` if it is a same-host peer whose lane listens,
        else a ZeroMQ connection."""
        path = lane_path(address) if same_host_lane_enabled() else None
        if path is None or not identity.startswith("ipc://"):
            return self.zmq.connect(address, identity)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)  # a peer not accepting (its backlog full) must not block us
        hello = identity.encode()
        hello = _HELLO.pack(_HELLO_MAGIC, len(hello)) + hello
        try:
            sock.connect(path)
            if sock.send(hello, _NOSIGNAL) != len(hello):
                raise BlockingIOError
        except OSError:  # no lane there (yet): ZeroMQ, for this connection's whole life
            sock.close()
            return self.zmq.connect(address, identity)
        conn = LaneConnection(self, sock, address, identity)
        with self._lock:
            self._conns.append(conn)
        return conn

    def flusher(self) -> _Flusher:
        """The thread that writes full connections' queues (started on first use)."""
        with self._lock:
            if self.closed:
                raise TransportError(errno.ENOTSOCK, "the lane was closed: zactor is shut down")
            if self._flusher is None:
                self._flusher = _Flusher()
                self._flusher.start()
            return self._flusher

    def unwatch(self, conn: LaneConnection) -> None:
        """``conn`` is closing: the flusher must not write to its descriptor any more."""
        flusher = self._flusher
        if flusher is not None:
            flusher.unwatch(conn)

    def close(self) -> None:
        """Deliver what is queued (for up to ZeroMQ's linger), close everything."""
        with self._lock:
            if self.closed:
                return
            conns, self._conns = self._conns, []
            inboxes, self._inboxes = self._inboxes, []
        deadline = time.monotonic() + LINGER_MS / 1e3
        for conn in conns:
            conn.drain(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self.closed = True  # sends from now on raise; no flusher starts again
            flusher, self._flusher = self._flusher, None
        if flusher is not None:  # after the drain: a peer dying meanwhile is unwatched
            flusher.stop()
        for conn in conns:
            conn.close()
        for inbox in inboxes:
            inbox.close()
        self.zmq.close()
