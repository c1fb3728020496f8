"""The wire layer: what travels between zactor processes, and nothing about sockets.

- :mod:`~zactor.wire.records`: the record kinds of a frame (call, tell, replies).
- :mod:`~zactor.wire.hotpath`: packing and parsing frames, the pending-call
  table and key hashing, from the compiled ``_fast`` or its pure-Python twin
  ``_fallback`` (``ZACTOR_PURE_PYTHON=1``), as msgpack keeps ``_cmsgpack``
  beside ``fallback``.
- :mod:`~zactor.wire.serialization`: payloads (msgpack, out-of-band buffers,
  cloudpickle for the rest).
- :mod:`~zactor.wire.protocol`: the system actors' method tables and roles.

The record kinds are re-exported here: ``from zactor import wire; wire.CALL``.
"""

from zactor.wire.records import (
    ACK,
    CALL,
    DIED,
    ERROR,
    KIND_NAMES,
    REPLY_KINDS,
    REQUEST_KINDS,
    RESULT,
    SYSTEM_ACTOR_ID,
    TELL,
)

__all__ = [
    "ACK",
    "CALL",
    "DIED",
    "ERROR",
    "KIND_NAMES",
    "REPLY_KINDS",
    "REQUEST_KINDS",
    "RESULT",
    "SYSTEM_ACTOR_ID",
    "TELL",
]
