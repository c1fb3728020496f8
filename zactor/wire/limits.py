"""The size limits every message keeps, and the check a caller makes before sending.

A receiving inbox refuses a frame larger than :data:`max_message_bytes`
(ZeroMQ's ``MAXMSGSIZE``: the sender is disconnected and the frame lost), so a
caller checks its own calls first and raises a clear error instead. Each
process reads the limit from ``ZACTOR_MAX_MESSAGE_BYTES``, which
``zactor.init(max_message_bytes=...)`` sets for the cluster it starts; the
processes of one cluster must agree on it. See docs/limits.md.
"""

from __future__ import annotations

import os

#: The default: large enough for a parameter server's arrays (a 1 GiB frame).
DEFAULT_MAX_MESSAGE_BYTES = 1 << 30
#: The smallest limit allowed: a batch of calls alone may reach 1 MiB and more.
MIN_MAX_MESSAGE_BYTES = 4 << 20
#: Room kept in a frame for the batch a call may join (runtime.MAX_BATCH_BYTES and more).
BATCH_ROOM = 2 << 20
#: Messages one peer may have waiting in a process's inbox. Past it, ZeroMQ stops
#: reading that peer's connection (a ROUTER drops nothing inbound): a peer sending
#: faster than it is served fills its own send queue, not the receiver's memory.
INBOX_MESSAGES_PER_PEER = 1000

_ENV = "ZACTOR_MAX_MESSAGE_BYTES"


def _checked(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < MIN_MAX_MESSAGE_BYTES:
        raise ValueError(
            f"max_message_bytes must be an int of at least {MIN_MAX_MESSAGE_BYTES} "
            f"(4 MiB), got {value!r} ({where})"
        )
    return value


def _from_environment() -> int:
    raw = os.environ.get(_ENV)
    if raw is None:
        return DEFAULT_MAX_MESSAGE_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = raw
    return _checked(value, f"${_ENV}")


#: The largest frame this process sends or accepts, in bytes.
max_message_bytes = _from_environment()


def set_max_message_bytes(value: int) -> None:
    """Set the limit for this process and the processes it starts from now on."""
    global max_message_bytes
    max_message_bytes = _checked(value, "max_message_bytes")
    os.environ[_ENV] = str(value)


def check_message(payload, buffers) -> None:
    """Raise ``ValueError`` if a call or reply with ``payload`` and out-of-band
    ``buffers`` could not be sent within :data:`max_message_bytes`."""
    if len(payload) > max_message_bytes - BATCH_ROOM:
        raise ValueError(
            f"a message of {len(payload)} bytes is larger than this cluster accepts "
            f"({max_message_bytes - BATCH_ROOM} bytes inline, max_message_bytes="
            f"{max_message_bytes}): send large data as numpy arrays or bytes, which travel "
            "as frames of their own, split it, or raise zactor.init(max_message_bytes=...)"
        )
    for buffer in buffers:
        size = memoryview(buffer).nbytes
        if size > max_message_bytes:
            raise ValueError(
                f"an array or bytes of {size} bytes is larger than this cluster accepts "
                f"(max_message_bytes={max_message_bytes}): split it, or raise "
                "zactor.init(max_message_bytes=...)"
            )
