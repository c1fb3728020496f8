"""The narrow interface to the network: one inbox per process, one outbox per peer.

Every zactor process binds one ROUTER *inbox* that receives everything sent to
it (calls for the actors it hosts, replies to the calls it made) and opens one
DEALER *outbox* per peer it sends to. An outbox's routing id is the sending
process's own inbox address, so a receiver knows where to send replies without
any registration step. Splitting receive and send sockets makes both
thread-safe by construction: only the thread holding the reader role touches
the inbox, and each outbox is guarded by its own short lock.

Addresses are ``ipc://`` inside a machine and ``tcp://`` between machines;
TCP binds to loopback unless told otherwise.
"""

from __future__ import annotations

import os
import tempfile

import zmq

#: How long a closing socket keeps trying to deliver queued messages (ms).
LINGER_MS = 200


class Transport:
    """Owns the ZeroMQ context and makes inbox and outbox sockets."""

    def __init__(self) -> None:
        self.context = zmq.Context(io_threads=1)

    def inbox(self, address: str) -> tuple[zmq.Socket, str]:
        """Bind a ROUTER at ``address`` (``tcp://host:0`` picks a free port).

        Returns the socket and the address peers should use to reach it.
        """
        sock = self.context.socket(zmq.ROUTER)
        sock.rcvhwm = 0  # bounded by max_pending_calls, not by silent drops
        sock.sndhwm = 0
        sock.linger = 0
        sock.router_handover = 1  # a restarted peer with the same address takes over
        if address.startswith("tcp://") and address.endswith(":0"):
            sock.bind_to_random_port(address[: address.rindex(":")])
        else:
            sock.bind(address)
        return sock, sock.last_endpoint.decode()

    def outbox(self, address: str, identity: str) -> zmq.Socket:
        """Connect a DEALER to ``address`` whose routing id is our inbox ``identity``."""
        sock = self.context.socket(zmq.DEALER)
        sock.identity = identity.encode()
        sock.sndhwm = 0
        sock.rcvhwm = 0
        sock.linger = LINGER_MS
        sock.reconnect_ivl = 10  # ms: a peer still starting up is reached quickly
        sock.connect(address)
        return sock

    def close(self) -> None:
        """Close every socket and end the context (and its I/O thread)."""
        self.context.destroy(linger=LINGER_MS)


def ipc_address(session_dir: str, name: str) -> str:
    """The ``ipc://`` address of the socket file ``name`` inside ``session_dir``."""
    return f"ipc://{os.path.join(session_dir, name)}"


def make_session_dir() -> str:
    """A fresh private directory for one cluster's socket files."""
    return tempfile.mkdtemp(prefix="zactor-")


def socket_file(address: str) -> str | None:
    """The filesystem path behind an ``ipc://`` address, else ``None``."""
    return address[len("ipc://") :] if address.startswith("ipc://") else None
