"""Addresses: the one place that knows what an ``ipc://`` or ``tcp://`` address says.

An address is ``scheme://rest``. ``ipc://PATH`` names a socket file on this
machine; ``tcp://HOST:PORT`` a port (``HOST`` may be bracketed IPv6, and
port 0 asks for any free port when binding). :func:`parse_address` takes an
address apart or says what is wrong with it; the helpers below make the
addresses zactor binds.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile
from typing import NamedTuple

#: The schemes zactor's transports know (see :func:`zactor.transport.register_scheme`).
SCHEMES = ("ipc", "tcp")

_EXAMPLES = (
    "pass 'auto' to join the cluster started on this machine, or 'tcp://HOST:PORT' as "
    "`zactor start --head --port` printed"
)


class Address(NamedTuple):
    """An address taken apart: ``scheme`` and, by scheme, ``path`` or ``host`` and ``port``."""

    scheme: str
    path: str | None = None
    host: str | None = None
    port: int | None = None


def parse_address(address: str) -> Address:
    """Take ``address`` apart; ``ValueError`` saying what a valid one looks like.

    Example::

        parse_address("tcp://127.0.0.1:6380")   # Address('tcp', None, '127.0.0.1', 6380)
        parse_address("ipc:///tmp/zactor-x/head.sock").path   # '/tmp/zactor-x/head.sock'
    """
    if not isinstance(address, str):
        raise ValueError(f"not a zactor address: {address!r} is not a string; {_EXAMPLES}")
    scheme, sep, rest = address.partition("://")
    if sep and scheme == "ipc" and rest:
        return Address("ipc", path=rest)
    if sep and scheme == "tcp":
        host, colon, port = rest.rpartition(":")
        if colon and host and port.isdigit() and int(port) <= 65535:
            return Address("tcp", host=host.strip("[]"), port=int(port))
    raise ValueError(f"not a zactor address: {address!r}; {_EXAMPLES}")


def scheme_of(address: str) -> str:
    """The scheme of ``address`` (``"ipc"``, ``"tcp"``, ...), without checking the rest."""
    return address.partition("://")[0]


def same_host(address: str) -> bool:
    """True if ``address`` is certainly on this machine: a socket file (``ipc://``)."""
    return address.startswith("ipc://")


def is_zactor_address(address: str) -> bool:
    """True if ``address`` is well formed (a peer's routing id must be one)."""
    try:
        parse_address(address)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """True if ``host`` names this machine's loopback interface."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass  # a name, not a literal address
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def ipc_address(session_dir: str, name: str) -> str:
    """The ``ipc://`` address of the socket file ``name`` inside ``session_dir``."""
    return f"ipc://{os.path.join(session_dir, name)}"


def tcp_address(host: str, port: int = 0) -> str:
    """The ``tcp://`` address of ``port`` on ``host`` (0: any free port when binding)."""
    return f"tcp://{host}:{port}"


def make_session_dir() -> str:
    """A fresh private (0700) directory for one cluster's socket files."""
    return tempfile.mkdtemp(prefix="zactor-")


def socket_file(address: str) -> str | None:
    """The filesystem path behind an ``ipc://`` address, else ``None``."""
    return address[len("ipc://") :] if address.startswith("ipc://") else None


#: What a same-host lane's socket file adds to its inbox's (zactor.transport.lane).
LANE_SUFFIX = ".lane"


def inbox_files(address: str) -> list[str]:
    """The files an inbox at ``address`` makes: its socket file and its lane's
    (``ipc://`` only; none for ``tcp://``). A process that dies leaves them behind."""
    path = socket_file(address)
    return [] if path is None else [path, path + LANE_SUFFIX]
