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
"""

from __future__ import annotations

import zmq

from zactor.wire import limits

#: How long a closing socket keeps trying to deliver queued messages (ms).
LINGER_MS = 200

#: What the ZeroMQ transport raises (a ``zmq.ZMQError``): an address in use, a closed socket.
TransportError = zmq.ZMQError


class ZmqInbox:
    """A bound ROUTER: :meth:`receive` returns one message at a time."""

    __slots__ = ("sock", "address", "_timeout")

    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock
        #: The address peers use to reach it (the real port when bound to port 0).
        self.address: str = sock.last_endpoint.decode()
        self._timeout = -1

    def receive(self, timeout_ms: int):
        """Wait up to ``timeout_ms`` (-1: for ever) for one message.

        Returns ``(identity, frame0, buffers)``, or None when none came in time.
        ``frame0`` supports the buffer protocol; ``buffers`` are the frames after it.
        """
        # recv with a receive timeout and Frame.more, not Socket.poll, recv(NOBLOCK) or
        # getsockopt: those build Poller objects, raise zmq.Again or make enums,
        # microseconds a message.
        sock = self.sock
        if timeout_ms != self._timeout:
            sock.rcvtimeo = self._timeout = timeout_ms
        try:
            identity = sock.recv()  # a ROUTER always has a frame after the routing id
        except zmq.Again:
            return None
        frame0 = sock.recv(copy=False)
        return identity, frame0, (sock.recv_multipart(copy=False) if frame0.more else ())

    def fileno(self) -> int:
        """A file descriptor that becomes readable when messages may be waiting
        (ZeroMQ's ``FD``: edge-triggered, so read until :meth:`receive` returns None)."""
        return self.sock.getsockopt(zmq.FD)


class ZmqConnection:
    """A connected DEALER; :meth:`send` sends one message (a list of frames)."""

    __slots__ = ("sock",)

    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock

    def send(self, frames: list) -> None:
        """Send one message; large frames are sent without copying."""
        if len(frames) == 1:
            self.sock.send(frames[0])
        else:
            self.sock.send_multipart(frames, copy=False)


class ZmqTransport:
    """Owns a ZeroMQ context (one I/O thread) and makes inboxes and connections."""

    def __init__(self) -> None:
        self.context = zmq.Context(io_threads=1)

    def bind(self, address: str) -> ZmqInbox:
        """Bind a ROUTER at ``address`` (``tcp://host:0`` picks a free port)."""
        sock = self.context.socket(zmq.ROUTER)
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
        return ZmqInbox(sock)

    def connect(self, address: str, identity: str) -> ZmqConnection:
        """Connect a DEALER to ``address`` whose routing id is our inbox ``identity``."""
        sock = self.context.socket(zmq.DEALER)
        sock.identity = identity.encode()
        sock.sndhwm = 0
        sock.rcvhwm = 0
        sock.linger = LINGER_MS
        sock.reconnect_ivl = 10  # ms: a peer still starting up is reached quickly
        sock.connect(address)
        return ZmqConnection(sock)

    def close(self) -> None:
        """Close every socket and end the context (and its I/O thread)."""
        self.context.destroy(linger=LINGER_MS)
