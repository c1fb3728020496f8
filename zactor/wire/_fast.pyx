# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled hot path of zactor: wire framing, the batching outbox to a peer, the
table of pending calls and the state of their futures.

``zactor.wire._fallback`` is the pure-Python twin of this module: same public names,
same behaviour, same bytes on the wire, same exceptions.

A message is a list of ZeroMQ frames. Frame 0 holds an 8-byte preamble
(struct ``<2sBBI``: magic ``b"ZA"``, protocol version, flags, record
count), then ``count`` 32-byte records (struct ``<BBHIQQII``: kind, flags,
reserved 0, method, call_id, actor_id, payload_len, nbuffers), then every
record's payload back to back in record order. Frames 1.. are out-of-band
buffers, handed to the records in order (record ``i`` owns ``nbuffers`` of
them, starting after those of the records before it).

The preamble's flags byte is 0 but for :data:`SHARED_BUFFERS`: then the
message's last frame is not a buffer but a table of shared-memory segments
that hold some of the buffers (:mod:`zactor.transport.shared_memory`), and
those buffers' own frames are empty. A same-host inbox puts the segments in
their place before :func:`parse_frame` sees the message, so it ignores the byte.

All integers are little-endian. They are read and written byte by byte with
shifts, which is portable to any host byte order; C compilers turn these
patterns into single loads and stores on little-endian machines.
"""

from cpython.buffer cimport (
    PyBUF_FULL_RO,
    PyBuffer_IsContiguous,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport (
    PyLong_AsLongLongAndOverflow,
    PyLong_AsUnsignedLongLong,
    PyLong_CheckExact,
    PyLong_FromUnsignedLongLong,
)
from cpython.memoryview cimport PyMemoryView_FromObject, PyMemoryView_GET_BUFFER
from cpython.tuple cimport PyTuple_CheckExact, PyTuple_GET_ITEM, PyTuple_GET_SIZE
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy

import operator

from zactor.errors import FrameError

__all__ = [
    "MAGIC",
    "PROTOCOL_VERSION",
    "PREAMBLE_SIZE",
    "RECORD_SIZE",
    "COPY_PAYLOAD_MAX",
    "SHARED_BUFFERS",
    "preamble_flags",
    "with_preamble_flags",
    "parse_frame",
    "sort_records",
    "pack_record",
    "pack_one",
    "BatchWriter",
    "Outbox",
    "PendingTable",
    "CallGate",
    "FutureCore",
    "results",
    "first_pending",
    "untrack",
    "track",
]

#: First two bytes of every frame 0.
MAGIC = b"ZA"
#: Version of the wire format spoken by this module.
PROTOCOL_VERSION = 8
#: Size of the preamble at the start of frame 0.
PREAMBLE_SIZE = 8
#: Size of one record.
RECORD_SIZE = 32
#: ``parse_frame`` copies payloads up to this size into ``bytes`` (cheaper than a view).
COPY_PAYLOAD_MAX = 256
#: Preamble flag: the message's last frame is a table of shared-memory segments.
SHARED_BUFFERS = 0x01

cdef enum:
    _PREAMBLE = 8
    _RECORD = 32
    _VERSION = 8
    _COPY_PAYLOAD_MAX = 256
    # Capacities above these are given back to the allocator by take().
    _KEEP_RECORDS = 64 * 1024
    _KEEP_PAYLOADS = 1024 * 1024

cdef enum:
    # The record kinds the compiled code tells apart (zactor.wire.records).
    _CALL_KIND = 1
    _TELL_KIND = 2
    _RESULT_KIND = 3
    _DIED_KIND = 5
    _ACK_KIND = 6

cdef Py_ssize_t _U32_MAX = 0xFFFFFFFF

# The module is split by concern, as msgpack's _cmsgpack is; each include shares
# this module's namespace.
include "_frames.pxi"
include "_outbox.pxi"
include "_futures.pxi"
include "_pending.pxi"
include "_hashing.pxi"
