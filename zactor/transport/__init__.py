"""The transport layer: moving messages between processes, behind a small interface.

A *message* is a list of frames (``bytes`` or buffers); the wire layer decides
what they mean. A transport makes two things:

- an *inbox* (:meth:`Transport.bind`): ``receive(timeout_ms)`` returns
  ``(identity, frame0, buffers)`` or None, ``address`` is what peers connect
  to, ``fileno()`` a descriptor to poll;
- a *connection* to a peer's inbox (:meth:`Transport.connect`): ``send(frames)``.
  Its ``identity`` is the sender's own inbox address, which the receiver sees
  with each message and replies to.

Transports are chosen by the address's scheme through a registry
(:func:`register_scheme`); ``ipc`` and ``tcp`` are served by ZeroMQ
(:mod:`zactor.transport.zeromq`), with CURVE on tcp when the process has the
cluster's keys (:mod:`zactor.transport.keys`), and peers on this machine
(``ipc``) also by the same-host lane (:mod:`zactor.transport.lane`), which
bypasses libzmq's I/O threads; ``ZACTOR_TRANSPORT=zmq`` turns the lane off
(:func:`same_host_lane_enabled`). A transport is a class with ``bind``,
``connect`` and ``close``, registered for its schemes: the endpoint above
never names a socket library. Address parsing
lives in :mod:`zactor.transport.addresses`.
"""

from __future__ import annotations

from typing import Callable, Protocol

from zactor.transport import shared_memory
from zactor.transport.addresses import (
    Address,
    inbox_files,
    ipc_address,
    is_loopback,
    is_zactor_address,
    make_session_dir,
    parse_address,
    same_host,
    scheme_of,
    socket_file,
    tcp_address,
)
from zactor.transport.keys import ClusterKeys, Curve, KeysError
from zactor.transport.lane import LaneTransport, same_host_lane_enabled
from zactor.transport.zeromq import TransportError, ZmqTransport, handshake_failure


class Inbox(Protocol):
    """What :meth:`Transport.bind` returns."""

    address: str

    def receive(self, timeout_ms: int):  # -> tuple[bytes, buffer, sequence] | None
        """One message ``(identity, frame0, buffers)`` within ``timeout_ms``, else None."""

    def poll_for(self, budget_ns: int):  # -> tuple[bytes, buffer, sequence] | None
        """One message if one comes within ``budget_ns``, looking again and again
        (yielding the core between looks) instead of sleeping; else None."""

    def fileno(self) -> int:
        """A descriptor that becomes readable when messages may be waiting."""

    # An inbox that authenticates its peers also has ``peer_role(buffers)``: the role
    # whose key sent the message ``receive`` returned those ``buffers`` with.


class Connection(Protocol):
    """What :meth:`Transport.connect` returns."""

    def send(self, frames: list) -> None:
        """Send one message."""


class Transport(Protocol):
    """Makes inboxes and connections for the schemes it is registered for."""

    def bind(self, address: str) -> Inbox:
        """Listen at ``address``."""

    def connect(self, address: str, identity: str) -> Connection:
        """A connection to the inbox at ``address``, sending as ``identity``."""

    def close(self) -> None:
        """Close everything this transport made."""


_FACTORIES: dict[str, Callable[[Curve | None], Transport]] = {}


def register_scheme(scheme: str, factory: Callable[[Curve | None], Transport]) -> None:
    """Serve addresses ``scheme://...`` with transports made by ``factory(curve)``
    (``curve``: the process's :class:`Curve` keys, or None).

    Schemes registered with the same factory share one transport per endpoint.
    """
    _FACTORIES[scheme] = factory


# One factory for both: a process has one ZeroMQ context whatever its peers, and its
# ipc peers on this machine get the lane (zactor.transport.lane) unless told otherwise.
register_scheme("ipc", LaneTransport)
register_scheme("tcp", LaneTransport)


class Transports:
    """The transports one endpoint uses: one per factory, made on first use, each given
    the endpoint's keys (``curve``, None without).

    :meth:`bind` and :meth:`connect` also set up the same-host steps that work on
    frames whatever carries them: buffers through shared memory
    (:mod:`zactor.transport.shared_memory`).
    """

    def __init__(self, curve: Curve | None = None) -> None:
        self.curve = curve
        self._made: dict[Callable[[Curve | None], Transport], Transport] = {}
        #: This endpoint's shared-memory step (None: off, or not bound yet).
        self.shared: shared_memory.SharedMemory | None = None

    def bind(
        self, address: str, head_address: str | None, drop: Callable[[str, bytes, str], None]
    ) -> Inbox:
        """The endpoint's inbox at ``address``; ``drop(kind, identity, message)`` counts
        and logs a malformed message the transport layer finds (a bad shared-memory
        reference), ``head_address`` names the cluster (segment names carry it)."""
        inbox = self.for_address(address).bind(address)
        if hasattr(inbox, "on_drop"):  # a lane: connections closed for what they sent
            inbox.on_drop = drop
        if head_address is not None and same_host_lane_enabled() and shared_memory.available():
            self.shared = shared_memory.SharedMemory(head_address, inbox.address, drop)
            # An inbox that declares the hook (``shared = None``) takes shared buffers.
            if same_host(inbox.address) and hasattr(inbox, "shared"):
                inbox.shared = self.shared
        return inbox

    def connect(self, address: str, identity: str) -> Connection:
        """A connection to the inbox at ``address``, sending as ``identity``."""
        conn = self.for_address(address).connect(address, identity)
        # A connection that declares the hook (``export = None``) sends shared buffers.
        if self.shared is not None and same_host(address) and hasattr(conn, "export"):
            conn.export = self.shared.exporter(address)
        return conn

    def peer_gone(self, address: str) -> None:
        """The process at ``address`` died: free what was sent to it and never taken."""
        if self.shared is not None:
            self.shared.peer_gone(address)

    def for_address(self, address: str) -> Transport:
        """The transport serving ``address``'s scheme; ``ValueError`` for an unknown one."""
        factory = _FACTORIES.get(scheme_of(address))
        if factory is None:
            raise ValueError(
                f"no transport for address {address!r}: zactor speaks "
                f"{', '.join(sorted(_FACTORIES))}:// addresses"
            )
        transport = self._made.get(factory)
        if transport is None:
            transport = self._made[factory] = factory(self.curve)
        return transport

    def close(self) -> None:
        """Close every transport made so far."""
        made, self._made = self._made, {}
        for transport in made.values():
            transport.close()
        if self.shared is not None:  # after the sockets' linger delivered what they held
            self.shared.close()


__all__ = [
    "Address",
    "ClusterKeys",
    "Connection",
    "Curve",
    "Inbox",
    "KeysError",
    "LaneTransport",
    "Transport",
    "TransportError",
    "Transports",
    "ZmqTransport",
    "inbox_files",
    "ipc_address",
    "handshake_failure",
    "is_zactor_address",
    "is_loopback",
    "make_session_dir",
    "parse_address",
    "register_scheme",
    "same_host",
    "same_host_lane_enabled",
    "scheme_of",
    "socket_file",
    "tcp_address",
]
