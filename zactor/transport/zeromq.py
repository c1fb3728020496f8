"""The ZeroMQ transport: one ROUTER inbox per process, one DEALER connection per peer.

Every zactor process binds one ROUTER *inbox* that receives everything sent to
it (calls for the actors it hosts, replies to the calls it made) and opens one
DEALER connection per peer it sends to. A connection's routing id is the
sending process's own inbox address, so a receiver knows where to send replies
without any registration step. Splitting receive and send sockets makes both
thread-safe by construction: only the thread holding the reader role touches
the inbox, and each connection is guarded by its owner's lock.

It serves ``ipc://`` (inside a machine) and ``tcp://`` (between machines);
TCP binds to loopback unless told otherwise.

Given a cluster's keys (a :class:`zactor.transport.keys.Curve`), every
``tcp://`` socket speaks CURVE: an inbox is a CURVE server whose handshakes
pyzmq's ``ThreadAuthenticator`` checks, accepting exactly the cluster's role
keys and naming the role as the connection's ZAP User-Id; a connection is a
CURVE client presenting its process's role key. A peer without a cluster key
never completes a handshake, so not one of its bytes reaches zactor. ``ipc://``
sockets stay as they are: their files live in 0700 directories. Without keys,
a tcp inbox may only bind loopback.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import time

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from zactor.transport.addresses import is_loopback, parse_address
from zactor.transport.keys import ZAP_DOMAIN, Curve, insecure_bind_error
from zactor.wire import hotpath, limits

log = logging.getLogger("zactor")

#: How long a closing socket keeps trying to deliver queued messages (ms).
LINGER_MS = 200

#: The most sockets one process's ZeroMQ context may open: its inbox and one DEALER per
#: peer it sends to. ZeroMQ's default, 1023, would stop a head at about 1000 workers and
#: node agents (docs/scaling.md) long before the process runs out of descriptors; past
#: 16384 every process would pay for socket slots (8 bytes each, twice) it never uses.
MAX_SOCKETS = 16384

#: What the ZeroMQ transport raises (a ``zmq.ZMQError``): an address in use, a closed socket.
TransportError = zmq.ZMQError


_preamble_flags = hotpath.preamble_flags
_SHARED = hotpath.SHARED_BUFFERS
_NOBLOCK = zmq.NOBLOCK
_perf_counter_ns = time.perf_counter_ns
_sched_yield = os.sched_yield


class ZmqInbox:
    """A bound ROUTER: :meth:`receive` returns one message at a time."""

    __slots__ = ("sock", "address", "_timeout", "shared")

    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock
        #: The address peers use to reach it (the real port when bound to port 0).
        self.address: str = sock.last_endpoint.decode()
        self._timeout = -1
        #: Set on a same-host inbox: takes buffers sent through shared memory
        #: (:class:`zactor.transport.shared_memory.SharedMemory`).
        self.shared = None

    def receive(self, timeout_ms: int):
        """Wait up to ``timeout_ms`` (-1: for ever) for one message.

        Returns ``(identity, frame0, buffers)``, or None when none came in time.
        ``frame0`` supports the buffer protocol; ``buffers`` are the frames after it.
        """
        # recv with a receive timeout and Frame.more, not Socket.poll or getsockopt:
        # those build Poller objects or make enums, microseconds a message.
        identity = self._routing_id(timeout_ms)  # a ROUTER always has a frame after it
        if identity is None:
            return None
        return self._rest(identity)

    def poll_for(self, budget_ns: int):
        """:meth:`receive`, looking for up to ``budget_ns`` instead of sleeping (and
        yielding the core between looks): the message, or None if none came."""
        clock, routing_id = _perf_counter_ns, self._routing_id
        end = clock() + budget_ns
        while True:
            identity = routing_id(0)
            if identity is not None:
                return self._rest(identity)
            if clock() >= end:
                return None
            _sched_yield()

    def _routing_id(self, timeout_ms: int) -> bytes | None:
        """The next message's first frame (its sender's routing id), waiting up to
        ``timeout_ms``; None if none came."""
        sock = self.sock
        try:
            if timeout_ms == 0:  # without touching rcvtimeo: a polling reader asks often
                return sock.recv(_NOBLOCK)
            if timeout_ms != self._timeout:
                sock.rcvtimeo = self._timeout = timeout_ms
            return sock.recv()
        except zmq.Again:
            return None

    def _rest(self, identity: bytes):
        """The message whose routing id was just read: ``(identity, frame0, buffers)``,
        or None if it was malformed (dropped and logged)."""
        sock = self.sock
        frame0 = sock.recv(copy=False)
        if not frame0.more:
            return identity, frame0, ()
        buffers = sock.recv_multipart(copy=False)
        if self.shared is not None and _preamble_flags(frame0) & _SHARED:
            buffers = self.shared.take(identity, frame0, buffers)
            if buffers is None:  # malformed, dropped and logged
                return None
        return identity, frame0, buffers

    def fileno(self) -> int:
        """A file descriptor that becomes readable when messages may be waiting
        (ZeroMQ's ``FD``: edge-triggered, so read until :meth:`receive` returns None)."""
        return self.sock.getsockopt(zmq.FD)


class _AuthenticatedFrames(list):
    """The frames after frame 0 of a message read from a CURVE inbox, holding frame 0
    too: the ZAP User-Id (the sender's role) is a property of the message's frames,
    and is read only for the few calls that need it (:meth:`CurveInbox.peer_role`)."""

    __slots__ = ("first",)


class CurveInbox(ZmqInbox):
    """A ROUTER that is a CURVE server: every sender passed the cluster's authenticator,
    and :meth:`peer_role` says which role's key it presented."""

    __slots__ = ()

    def _rest(self, identity: bytes):
        """:meth:`ZmqInbox._rest`; ``buffers`` also carries what :meth:`peer_role` reads."""
        sock = self.sock
        frame0 = sock.recv(copy=False)
        buffers = _AuthenticatedFrames(sock.recv_multipart(copy=False) if frame0.more else ())
        buffers.first = frame0
        return identity, frame0, buffers

    @staticmethod
    def peer_role(buffers) -> str | None:
        """The role whose key sent the message whose ``buffers`` :meth:`receive` returned."""
        first = getattr(buffers, "first", None)
        return None if first is None else first.get("User-Id")


class _RoleAuthenticator(ThreadAuthenticator):
    """pyzmq's ZAP authenticator, accepting exactly the cluster's role keys.

    The ZAP User-Id of an accepted connection is its key's role. A refused
    handshake is logged once per peer address; later ones (a peer retrying
    every few milliseconds) are only counted, in :attr:`refused`.
    """

    def __init__(self, context: zmq.Context, roles: dict, inbox: str) -> None:
        # pyzmq's own log says every handshake at DEBUG: keep it apart from zactor's.
        super().__init__(context, log=logging.getLogger("zactor.zap"))
        self._roles = roles
        #: The inbox it serves, named in its log.
        self.inbox = inbox
        self._peer = ""
        #: Refused handshakes per peer address.
        self.refused: dict[str, int] = {}
        self.configure_curve_callback(ZAP_DOMAIN, credentials_provider=self)

    def callback(self, domain: str, key: bytes) -> bool:
        """Accept a client key that is one of the cluster's role keys."""
        if domain == ZAP_DOMAIN and key in self._roles:
            return True
        count = self.refused.get(self._peer, 0)
        self.refused[self._peer] = count + 1
        if count == 0:
            log.warning(
                "zactor inbox %s refused a CURVE connection from %s: its key is not one of "
                "this cluster's keys (a peer without the cluster's key bundle, or of another "
                "cluster); further refusals from that address are counted, not logged",
                self.inbox,
                self._peer,
            )
        return False

    def curve_user_id(self, client_public_key: bytes) -> str:
        """The role of an accepted key: what :meth:`CurveInbox.peer_role` reads."""
        return self._roles[z85.encode(client_public_key)]

    async def handle_zap_message(self, msg: list) -> None:
        """Remember the peer's address for :meth:`callback` (one thread runs both)."""
        if len(msg) > 3:
            self._peer = msg[3].decode("utf-8", "replace")
        await super().handle_zap_message(msg)


class ZmqConnection:
    """A connected DEALER; :meth:`send` sends one message (a list of frames)."""

    __slots__ = ("sock", "export")

    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock
        #: Set on a connection to a same-host peer: ``export(frames) -> frames`` moves
        #: large buffers into shared memory (:mod:`zactor.transport.shared_memory`).
        self.export = None

    def send(self, frames: list) -> None:
        """Send one message; large frames are sent without copying."""
        if len(frames) == 1:
            self.sock.send(frames[0])
        else:
            if self.export is not None:
                frames = self.export(frames)
            self.sock.send_multipart(frames, copy=False)


class ZmqTransport:
    """Owns a ZeroMQ context (one I/O thread) and makes inboxes and connections.

    With ``curve`` (the cluster's keys for this process's role) every tcp
    socket speaks CURVE; the authenticator's thread starts with the first tcp
    inbox and ends in :meth:`close`.
    """

    def __init__(self, curve: Curve | None = None) -> None:
        self.context = zmq.Context(io_threads=1)
        self.curve = curve
        self._auth: _RoleAuthenticator | None = None
        self.context.set(zmq.MAX_SOCKETS, socket_budget(self.context.get(zmq.MAX_SOCKETS)))

    def bind(self, address: str) -> ZmqInbox:
        """Bind a ROUTER at ``address`` (``tcp://host:0`` picks a free port).

        A tcp inbox without keys may only bind loopback:
        :class:`zactor.transport.keys.KeysError` otherwise.
        """
        curve = self.curve if address.startswith("tcp://") else None
        if curve is None and address.startswith("tcp://"):
            if not is_loopback(parse_address(address).host):
                raise insecure_bind_error(address)
        if curve is not None and self._auth is None:
            # Before the bind: a CURVE socket with no ZAP handler accepts any client key.
            self._auth = _RoleAuthenticator(self.context, curve.roles, address)
            self._auth.start()
        sock = self.context.socket(zmq.ROUTER)
        if curve is not None:
            sock.curve_server = 1
            sock.curve_publickey = curve.server_public
            sock.curve_secretkey = curve.server_secret
            sock.zap_domain = ZAP_DOMAIN.encode()
        # Per peer: past it, libzmq stops reading that peer (a ROUTER drops nothing
        # inbound), so a flood fills the sender's queue, not this process.
        sock.rcvhwm = limits.INBOX_MESSAGES_PER_PEER
        sock.maxmsgsize = limits.max_message_bytes  # a larger frame: sender disconnected
        sock.sndhwm = 0
        sock.linger = 0
        sock.router_handover = 1  # a restarted peer with the same address takes over
        try:
            if address.startswith("tcp://") and address.endswith(":0"):
                sock.bind_to_random_port(address[: address.rindex(":")])
            else:
                sock.bind(address)
        except BaseException:
            sock.close(linger=0)
            raise
        if curve is None:
            return ZmqInbox(sock)
        inbox = CurveInbox(sock)
        self._auth.inbox = inbox.address  # the real port, when bound to port 0
        return inbox

    def connect(self, address: str, identity: str) -> ZmqConnection:
        """Connect a DEALER to ``address`` whose routing id is our inbox ``identity``."""
        try:
            sock = self.context.socket(zmq.DEALER)
        except zmq.ZMQError as exc:
            if exc.errno != errno.EMFILE:
                raise
            raise TransportError(errno.EMFILE, _out_of_sockets(self.context, address)) from None
        sock.identity = identity.encode()
        sock.sndhwm = 0
        sock.rcvhwm = 0
        sock.linger = LINGER_MS
        sock.reconnect_ivl = 10  # ms: a peer still starting up is reached quickly
        curve = self.curve
        if curve is not None and address.startswith("tcp://"):
            sock.curve_serverkey = curve.server_public
            sock.curve_publickey = curve.client_public
            sock.curve_secretkey = curve.client_secret
        sock.connect(address)
        return ZmqConnection(sock)

    @property
    def refused(self) -> dict:
        """CURVE handshakes refused so far, per peer address (empty without keys)."""
        return dict(self._auth.refused) if self._auth is not None else {}

    def close(self) -> None:
        """Close every socket and end the context, its I/O thread and the authenticator's."""
        if self._auth is not None:
            self._auth.stop()  # while the context lives: it talks to its thread through it
            self._auth = None
        self.context.destroy(linger=LINGER_MS)


#: Handshake outcomes :func:`handshake_failure` reports, and what each means.
_FAILURES = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "refused this process's key",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "speaks another security mechanism",
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "could not complete the handshake",
}


def handshake_failure(address: str, curve: Curve | None, timeout_s: float) -> str | None:
    """Try one handshake with the tcp inbox at ``address`` as a client with ``curve``'s
    keys (None: without CURVE); say why it failed, or None if it succeeded or nothing
    answered within ``timeout_s``.

    A refused CURVE handshake never delivers and never raises: without this a
    peer with the wrong keys would only learn it from a call's timeout.
    """
    context = zmq.Context(io_threads=1)
    try:
        sock = context.socket(zmq.DEALER)
        sock.linger = 0
        if curve is not None:
            sock.curve_serverkey = curve.server_public
            sock.curve_publickey = curve.client_public
            sock.curve_secretkey = curve.client_secret
        monitor = sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | sum(_FAILURES)  # the flags are distinct bits
        )
        sock.connect(address)
        deadline = time.monotonic() + timeout_s
        while True:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0 or not monitor.poll(left_ms):
                return None
            event = recv_monitor_message(monitor)["event"]
            if event in _FAILURES:
                return _FAILURES[event]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                return None
    finally:
        context.destroy(linger=0)


def socket_budget(default: int) -> int:
    """How many sockets a context may open: as many as the process may hold descriptors
    (``RLIMIT_NOFILE``, each socket needs at least one), within ``default`` and
    :data:`MAX_SOCKETS`."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_SOCKETS
    return max(default, min(soft, MAX_SOCKETS))


def _out_of_sockets(context: zmq.Context, address: str) -> str:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return (
        f"cannot open a connection to {address}: this process is out of descriptors (its "
        f"limit, ulimit -n, is {soft}) or of ZeroMQ sockets (its context may open "
        f"{context.get(zmq.MAX_SOCKETS)}). A process holds one connection per peer it sends "
        "to (a head: every worker, node agent and driver; docs/scaling.md): raise the limit "
        "(ulimit -n, or LimitNOFILE= in a systemd unit) before starting zactor"
    )
