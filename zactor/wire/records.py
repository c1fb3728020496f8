"""The wire format: what one record of a frame means.

A message is one ZeroMQ multipart message. Frame 0 holds an 8-byte preamble
(magic ``b"ZA"``, protocol version, record count), then one fixed 32-byte
record per call or reply, then the records' msgpack payloads back to back.
Frames after it carry numpy arrays and large bytes without copying. Packing
and parsing live in ``zactor.wire._fast`` (and its twin ``zactor.wire._fallback``);
this module names the record kinds and flags.

Record fields: ``kind``, ``flags``, ``method`` (index into the actor class's
sorted method table), ``call_id`` (the caller's, echoed in the reply),
``actor_id``, ``payload_len``, ``nbuffers``.
"""

from __future__ import annotations

#: A call that wants a reply (``handle.m.remote``).
CALL = 1
#: A one-way call (``handle.m.tell``): no reply is sent.
TELL = 2
#: The reply to a CALL: the payload is the return value.
RESULT = 3
#: The reply to a CALL: the payload describes the exception the method raised.
ERROR = 4
#: The reply to a CALL whose actor is gone: the payload is the reason (str).
DIED = 5
#: Credits for tells: ``call_id`` is the token a caller put in its tells (their
#: ``call_id``), ``actor_id`` how many of them left the actor's mailbox. A tell
#: with token 0 wants none (the head's and runtime's own tells).
ACK = 6

KIND_NAMES = {
    CALL: "call",
    TELL: "tell",
    RESULT: "result",
    ERROR: "error",
    DIED: "died",
    ACK: "ack",
}
REPLY_KINDS = frozenset((RESULT, ERROR, DIED))

#: ``flags`` of a DIED reply whose actor's death the head announces to every process
#: (``actor_died``: a kill that restarts it, a ``sys.exit()`` in a method): a caller
#: that may send the call again (``max_task_retries``) waits for that notice instead
#: of failing the call on this reply.
DIED_NOTICE_FOLLOWS = 1
REQUEST_KINDS = frozenset((CALL, TELL))

#: Actor id 0 on every process is its system actor (the head's registry, or
#: a worker's service that creates and kills actors).
SYSTEM_ACTOR_ID = 0
