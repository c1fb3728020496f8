# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled hot path of zactor: wire framing and the table of pending calls.

``zactor._fallback`` is the pure-Python twin of this module: same public names,
same behaviour, same bytes on the wire, same exceptions.

A message is a list of ZeroMQ frames. Frame 0 holds an 8-byte preamble
(struct ``<2sBBI``: magic ``b"ZA"``, protocol version, reserved 0, record
count), then ``count`` 32-byte records (struct ``<BBHIQQII``: kind, flags,
reserved 0, method, call_id, actor_id, payload_len, nbuffers), then every
record's payload back to back in record order. Frames 1.. are out-of-band
buffers, handed to the records in order (record ``i`` owns ``nbuffers`` of
them, starting after those of the records before it).

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
    "parse_frame",
    "pack_record",
    "pack_one",
    "BatchWriter",
    "PendingTable",
]

#: First two bytes of every frame 0.
MAGIC = b"ZA"
#: Version of the wire format spoken by this module.
PROTOCOL_VERSION = 1
#: Size of the preamble at the start of frame 0.
PREAMBLE_SIZE = 8
#: Size of one record.
RECORD_SIZE = 32
#: ``parse_frame`` copies payloads up to this size into ``bytes`` (cheaper than a view).
COPY_PAYLOAD_MAX = 256

cdef enum:
    _PREAMBLE = 8
    _RECORD = 32
    _VERSION = 1
    _COPY_PAYLOAD_MAX = 256
    # Capacities above these are given back to the allocator by take().
    _KEEP_RECORDS = 64 * 1024
    _KEEP_PAYLOADS = 1024 * 1024

cdef Py_ssize_t _U32_MAX = 0xFFFFFFFF


# -- little-endian loads and stores --------------------------------------------------------

cdef inline uint32_t _ld32(const unsigned char* p) noexcept nogil:
    return (<uint32_t>p[0]) | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef inline uint64_t _ld64(const unsigned char* p) noexcept nogil:
    return (<uint64_t>_ld32(p)) | ((<uint64_t>_ld32(p + 4)) << 32)


cdef inline void _st32(unsigned char* p, uint32_t v) noexcept nogil:
    p[0] = <unsigned char>v
    p[1] = <unsigned char>(v >> 8)
    p[2] = <unsigned char>(v >> 16)
    p[3] = <unsigned char>(v >> 24)


cdef inline void _st64(unsigned char* p, uint64_t v) noexcept nogil:
    _st32(p, <uint32_t>v)
    _st32(p + 4, <uint32_t>(v >> 32))


cdef inline void _write_preamble(unsigned char* p, uint32_t count) noexcept nogil:
    p[0] = 0x5A  # 'Z'
    p[1] = 0x41  # 'A'
    p[2] = _VERSION
    p[3] = 0
    _st32(p + 4, count)


cdef inline void _write_record(unsigned char* p, uint8_t kind, uint8_t flags, uint32_t method,
                               uint64_t call_id, uint64_t actor_id, uint32_t payload_len,
                               uint32_t nbuffers) noexcept nogil:
    p[0] = kind
    p[1] = flags
    p[2] = 0
    p[3] = 0
    _st32(p + 4, method)
    _st64(p + 8, call_id)
    _st64(p + 16, actor_id)
    _st32(p + 24, payload_len)
    _st32(p + 28, nbuffers)


# -- parsing -------------------------------------------------------------------------------

cdef enum _Status:
    _OK = 0
    _E_SHORT
    _E_MAGIC
    _E_VERSION
    _E_EMPTY
    _E_RECORDS
    _E_PAYLOAD
    _E_LEFTOVER
    _E_BUFFERS


cdef struct _Check:
    uint64_t count    # records declared by the preamble
    uint64_t index    # record whose payload overran the frame
    uint64_t total    # payload bytes (or buffer frames) declared
    uint64_t avail    # payload bytes available after the records


cdef _Status _validate(const unsigned char* p, Py_ssize_t n, Py_ssize_t nbuffer_frames,
                       _Check* c) noexcept nogil:
    """Check frame 0 completely before anything is built from it."""
    cdef uint64_t count, i, end, plen
    cdef uint64_t total = 0
    cdef uint64_t nbuf = 0
    cdef const unsigned char* q
    if n < _PREAMBLE:
        return _E_SHORT
    if p[0] != 0x5A or p[1] != 0x41:
        return _E_MAGIC
    if p[2] != _VERSION:
        return _E_VERSION
    count = _ld32(p + 4)
    c.count = count
    if count == 0:
        return _E_EMPTY
    end = _PREAMBLE + count * _RECORD  # < 2**38: cannot overflow
    if end > <uint64_t>n:
        return _E_RECORDS
    c.avail = <uint64_t>n - end
    q = p + _PREAMBLE
    for i in range(count):
        total += _ld32(q + 24)  # <= count * 2**32 < 2**64
        if total > c.avail:
            c.index = i
            c.total = total
            return _E_PAYLOAD
        nbuf += _ld32(q + 28)
        q += _RECORD
    c.total = total
    if total != c.avail:
        return _E_LEFTOVER
    c.total = nbuf
    if nbuffer_frames < 0 or nbuf != <uint64_t>nbuffer_frames:
        return _E_BUFFERS
    return _OK


cdef int _raise_frame_error(_Status status, _Check* c, const unsigned char* p, Py_ssize_t n,
                            Py_ssize_t nbuffer_frames) except -1:
    # The texts are shared word for word with zactor._fallback.
    if status == _E_SHORT:
        raise FrameError(
            "short",
            f"frame of {n} bytes is shorter than the {_PREAMBLE}-byte zactor preamble; "
            "the sender must start frame 0 with the preamble (magic b'ZA', version, count)",
        )
    if status == _E_MAGIC:
        raise FrameError(
            "magic",
            f"frame starts with {bytes(p[:2])!r}, not the zactor magic b'ZA': the peer does "
            "not speak the zactor protocol; check that the address belongs to a zactor process",
        )
    if status == _E_VERSION:
        raise FrameError(
            "version",
            f"frame uses zactor protocol version {p[2]} but this process speaks version "
            f"{_VERSION}; run the same zactor release on both sides",
        )
    if status == _E_EMPTY:
        raise FrameError(
            "empty",
            "frame declares 0 records; the sender must not send empty batches "
            "(BatchWriter.take() returns [] when there is nothing to send)",
        )
    if status == _E_RECORDS:
        raise FrameError(
            "truncated",
            f"frame declares {c.count} records ({_PREAMBLE + c.count * _RECORD} bytes with the "
            f"preamble) but holds only {n} bytes; the sender must send frame 0 whole, "
            "as BatchWriter.take() or pack_one() built it",
        )
    if status == _E_PAYLOAD:
        raise FrameError(
            "truncated",
            f"record {c.index}'s payload runs past the end of the frame (records 0..{c.index} "
            f"declare {c.total} payload bytes, {c.avail} follow the records); the sender must "
            "send frame 0 whole, with payload_len matching each payload",
        )
    if status == _E_LEFTOVER:
        raise FrameError(
            "truncated",
            f"{c.avail - c.total} bytes are left over after the {c.count} records' payloads "
            f"({c.total} declared, {c.avail} present); the sender's payload_len fields must add "
            "up exactly to the rest of frame 0",
        )
    raise FrameError(
        "buffers",
        f"the records own {c.total} out-of-band buffer frames but {nbuffer_frames} arrived; "
        "the sender must send every buffer frame its records count in nbuffers, after frame 0",
    )


def parse_frame(frame0, Py_ssize_t nbuffer_frames):
    """Split frame 0 of a message into its records, copying only small payloads.

    ``frame0`` is any bytes-like object (``bytes``, ``bytearray``, ``memoryview``,
    ``zmq.Frame``, ...); ``nbuffer_frames`` is the number of frames that came after
    it. Returns one tuple per record::

        (kind, flags, method, call_id, actor_id, payload, buf_start, nbuf)

    where ``payload`` is ``bytes`` when it is at most :data:`COPY_PAYLOAD_MAX`
    bytes long (copying a few bytes costs less than making a view), else a
    read-only ``memoryview`` slice of ``frame0``; the record's buffers are
    ``frames[1 + buf_start : 1 + buf_start + nbuf]``.

    Raises :class:`zactor.errors.FrameError` whose ``kind`` is ``"short"``,
    ``"magic"``, ``"version"``, ``"empty"``, ``"truncated"`` or ``"buffers"``.
    The whole frame is checked before anything is returned, and no input reads
    outside ``frame0``.
    """
    cdef object mv = PyMemoryView_FromObject(frame0)
    cdef Py_buffer* view = PyMemoryView_GET_BUFFER(mv)
    if (view.ndim != 1 or view.format == NULL or view.format[0] != b'B' or view.format[1] != 0
            or not PyBuffer_IsContiguous(view, b'C')):
        mv = mv.cast("B")
        view = PyMemoryView_GET_BUFFER(mv)
    if not view.readonly:
        mv = mv.toreadonly()
        view = PyMemoryView_GET_BUFFER(mv)

    cdef const unsigned char* p = <const unsigned char*>view.buf
    cdef Py_ssize_t n = view.len
    cdef _Check c
    cdef _Status status = _validate(p, n, nbuffer_frames, &c)
    if status != _OK:
        _raise_frame_error(status, &c, p, n, nbuffer_frames)

    cdef list out = []
    cdef uint64_t i
    cdef uint32_t plen, nbuf
    cdef Py_ssize_t off = _PREAMBLE + <Py_ssize_t>c.count * _RECORD
    cdef uint64_t buf_start = 0
    cdef object payload
    cdef const unsigned char* q = p + _PREAMBLE
    for i in range(c.count):
        plen = _ld32(q + 24)
        nbuf = _ld32(q + 28)
        if plen <= _COPY_PAYLOAD_MAX:
            payload = PyBytes_FromStringAndSize(<const char*>p + off, plen)
        else:
            payload = mv[off:off + plen]
        out.append((q[0], q[1], _ld32(q + 4), _ld64(q + 8), _ld64(q + 16),
                    payload, buf_start, nbuf))
        off += plen
        buf_start += nbuf
        q += _RECORD
    return out


# -- packing -------------------------------------------------------------------------------

cdef uint64_t _U8_MAX = 0xFF
cdef uint64_t _U32_FIELD_MAX = 0xFFFFFFFF
cdef uint64_t _U64_MAX = 0xFFFFFFFFFFFFFFFF


cdef int _field_error(object value, uint64_t maxv, str name) except -1:
    raise OverflowError(f"{name}={value} is out of range: it must fit in 0..{maxv}")


cdef inline uint64_t _field(object value, uint64_t maxv, str name) except? 0xFFFFFFFFFFFFFFFF:
    """An unsigned record field from a Python integer (anything with ``__index__``)."""
    cdef int overflow = 0
    cdef long long x
    if not PyLong_CheckExact(value):
        value = operator.index(value)  # TypeError for floats, None, ...
    x = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow == 0:
        if x < 0 or <uint64_t>x > maxv:
            _field_error(value, maxv, name)
        return <uint64_t>x
    if overflow < 0 or maxv != _U64_MAX or value > 0xFFFFFFFFFFFFFFFF:
        _field_error(value, maxv, name)
    return PyLong_AsUnsignedLongLong(value)

def pack_record(kind, flags, method, call_id, actor_id, payload_len, nbuffers):
    """Return one 32-byte record (struct ``<BBHIQQII``, reserved field 0).

    Fields are integers (anything with ``__index__``); a non-integer raises
    ``TypeError`` and a value outside its field's unsigned range raises
    ``OverflowError``.
    """
    cdef uint8_t k = <uint8_t>_field(kind, _U8_MAX, "kind")
    cdef uint8_t f = <uint8_t>_field(flags, _U8_MAX, "flags")
    cdef uint32_t m = <uint32_t>_field(method, _U32_FIELD_MAX, "method")
    cdef uint64_t c = _field(call_id, _U64_MAX, "call_id")
    cdef uint64_t a = _field(actor_id, _U64_MAX, "actor_id")
    cdef uint32_t pl = <uint32_t>_field(payload_len, _U32_FIELD_MAX, "payload_len")
    cdef uint32_t nb = <uint32_t>_field(nbuffers, _U32_FIELD_MAX, "nbuffers")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, _RECORD)
    _write_record(<unsigned char*>PyBytes_AS_STRING(out), k, f, m, c, a, pl, nb)
    return out


cdef object _as_buffer_seq(object buffers):
    """``buffers`` as a tuple or list, so that using it later runs no Python code."""
    if type(buffers) is tuple or type(buffers) is list:
        return buffers
    return tuple(buffers)


cdef Py_ssize_t _buffers_nbytes(object seq) except -1:
    """Total size of out-of-band buffers; every one must be contiguous."""
    cdef Py_buffer v
    cdef Py_ssize_t total = 0
    cdef Py_ssize_t i = 0
    cdef bint ok
    for b in seq:
        PyObject_GetBuffer(b, &v, PyBUF_FULL_RO)
        ok = v.len == 0 or PyBuffer_IsContiguous(&v, b'A')
        total += v.len
        PyBuffer_Release(&v)
        if not ok:
            raise BufferError(
                f"out-of-band buffer {i} is not contiguous; pass a contiguous copy "
                "(numpy.ascontiguousarray) so it can be sent without copying"
            )
        i += 1
    return total


cdef int _get_payload(object payload, Py_buffer* view) except -1:
    """Acquire ``payload``'s buffer, which must be C-contiguous (the caller releases it)."""
    PyObject_GetBuffer(payload, view, PyBUF_FULL_RO)
    if view.len != 0 and not PyBuffer_IsContiguous(view, b'C'):
        PyBuffer_Release(view)
        raise BufferError(
            "payload is not C-contiguous; pass bytes (or a C-contiguous copy) as the payload"
        )
    return 0


cdef int _check_payload_len(Py_ssize_t n) except -1:
    if n > _U32_MAX:
        raise OverflowError(
            f"payload of {n} bytes exceeds the 4 GiB record limit; send large data as an "
            "out-of-band buffer instead"
        )
    return 0


cdef int _check_nbuffers(Py_ssize_t n) except -1:
    if n > _U32_MAX:
        raise OverflowError(f"{n} out-of-band buffers exceed the per-record limit of {_U32_MAX}")
    return 0


def pack_one(kind, flags, method, call_id, actor_id, payload, buffers=None):
    """Frames of a message holding one record: ``[frame0, *buffers]``.

    Same result as a fresh :class:`BatchWriter` with one :meth:`~BatchWriter.add`
    followed by :meth:`~BatchWriter.take`, built with a single allocation.
    """
    cdef uint8_t k = <uint8_t>_field(kind, _U8_MAX, "kind")
    cdef uint8_t f = <uint8_t>_field(flags, _U8_MAX, "flags")
    cdef uint32_t m = <uint32_t>_field(method, _U32_FIELD_MAX, "method")
    cdef uint64_t c = _field(call_id, _U64_MAX, "call_id")
    cdef uint64_t a = _field(actor_id, _U64_MAX, "actor_id")
    cdef object seq = None
    cdef Py_ssize_t nb = 0
    cdef Py_buffer pv
    cdef bint release = False
    cdef const char* src
    cdef Py_ssize_t plen
    cdef bytes frame0
    cdef unsigned char* d
    if buffers is not None:
        seq = _as_buffer_seq(buffers)
        nb = len(seq)
        _check_nbuffers(nb)
        if nb:
            _buffers_nbytes(seq)
    if PyBytes_CheckExact(payload):
        src = PyBytes_AS_STRING(payload)
        plen = PyBytes_GET_SIZE(payload)
    else:
        _get_payload(payload, &pv)
        release = True
        src = <const char*>pv.buf
        plen = pv.len
    try:
        _check_payload_len(plen)
        frame0 = PyBytes_FromStringAndSize(NULL, _PREAMBLE + _RECORD + plen)
        d = <unsigned char*>PyBytes_AS_STRING(frame0)
        _write_preamble(d, 1)
        _write_record(d + _PREAMBLE, k, f, m, c, a, <uint32_t>plen, <uint32_t>nb)
        memcpy(d + _PREAMBLE + _RECORD, src, plen)
    finally:
        if release:
            PyBuffer_Release(&pv)
    if nb:
        return [frame0, *seq]
    return [frame0]


cdef class BatchWriter:
    """Accumulates records bound for one destination into one message.

    Records and payloads are copied into C buffers as they are added; out-of-band
    buffers are kept by reference. :meth:`take` returns ``[frame0, *buffers]``,
    with frame 0 built in a single allocation, and empties the writer.
    """

    cdef unsigned char* _rec     # records, RECORD_SIZE bytes each
    cdef Py_ssize_t _rec_cap
    cdef unsigned char* _pay     # payloads back to back
    cdef Py_ssize_t _pay_len
    cdef Py_ssize_t _pay_cap
    cdef uint32_t _count
    cdef Py_ssize_t _buf_bytes
    cdef list _buffers           # None until a record brings buffers

    def __cinit__(self):
        self._rec = NULL
        self._rec_cap = 0
        self._pay = NULL
        self._pay_len = 0
        self._pay_cap = 0
        self._count = 0
        self._buf_bytes = 0
        self._buffers = None

    def __dealloc__(self):
        free(self._rec)
        free(self._pay)

    @property
    def count(self):
        """Number of records added since the last :meth:`take`."""
        return self._count

    @property
    def nbytes(self):
        """Payload bytes plus out-of-band buffer bytes added since the last :meth:`take`."""
        return self._pay_len + self._buf_bytes

    cdef int _reserve(self, Py_ssize_t plen) except -1:
        """Make room for one more record and ``plen`` payload bytes (state unchanged)."""
        cdef Py_ssize_t need, cap
        cdef void* mem
        need = (<Py_ssize_t>self._count + 1) * _RECORD
        if need > self._rec_cap:
            cap = self._rec_cap * 2
            if cap < need:
                cap = need
            if cap < 16 * _RECORD:
                cap = 16 * _RECORD
            mem = realloc(self._rec, cap)
            if mem == NULL:
                raise MemoryError()
            self._rec = <unsigned char*>mem
            self._rec_cap = cap
        need = self._pay_len + plen
        if need > self._pay_cap:
            cap = self._pay_cap * 2
            if cap < need:
                cap = need
            if cap < 4096:
                cap = 4096
            mem = realloc(self._pay, cap)
            if mem == NULL:
                raise MemoryError()
            self._pay = <unsigned char*>mem
            self._pay_cap = cap
        return 0

    def add(self, kind, flags, method, call_id, actor_id, payload, buffers=None):
        """Append one record.

        ``payload`` is any C-contiguous bytes-like object; it is copied. ``buffers``
        is a list or tuple of contiguous buffer objects (numpy arrays, bytes, ...)
        sent as their own frames after frame 0; they are kept by reference, so
        they must not change before the message is sent. On error the writer is
        left as it was.
        """
        cdef uint8_t k = <uint8_t>_field(kind, _U8_MAX, "kind")
        cdef uint8_t f = <uint8_t>_field(flags, _U8_MAX, "flags")
        cdef uint32_t m = <uint32_t>_field(method, _U32_FIELD_MAX, "method")
        cdef uint64_t c = _field(call_id, _U64_MAX, "call_id")
        cdef uint64_t a = _field(actor_id, _U64_MAX, "actor_id")
        cdef object seq = None
        cdef Py_ssize_t nb = 0
        cdef Py_ssize_t bbytes = 0
        cdef Py_buffer pv
        cdef bint release = False
        cdef const char* src
        cdef Py_ssize_t plen
        if buffers is not None:
            seq = _as_buffer_seq(buffers)
            nb = len(seq)
            _check_nbuffers(nb)
            if nb:
                bbytes = _buffers_nbytes(seq)
        if PyBytes_CheckExact(payload):
            src = PyBytes_AS_STRING(payload)
            plen = PyBytes_GET_SIZE(payload)
        else:
            _get_payload(payload, &pv)
            release = True
            src = <const char*>pv.buf
            plen = pv.len
        try:
            _check_payload_len(plen)
            if self._count == _U32_MAX:
                raise OverflowError(
                    f"a batch holds at most {_U32_MAX} records; call take() and send it first"
                )
            self._reserve(plen)
            if nb:
                if self._buffers is None:
                    self._buffers = list(seq)
                else:
                    self._buffers.extend(seq)
            # From here on nothing can fail or call back into Python.
            _write_record(self._rec + <Py_ssize_t>self._count * _RECORD, k, f, m, c, a,
                          <uint32_t>plen, <uint32_t>nb)
            memcpy(self._pay + self._pay_len, src, plen)
            self._pay_len += plen
            self._count += 1
            self._buf_bytes += bbytes
        finally:
            if release:
                PyBuffer_Release(&pv)

    def take(self):
        """Return the message built so far as ``[frame0, *buffers]`` and empty the writer.

        Returns ``[]`` when no record was added.
        """
        cdef Py_ssize_t rec_len, total
        cdef bytes frame0
        cdef unsigned char* d
        cdef list bufs
        if self._count == 0:
            return []
        rec_len = <Py_ssize_t>self._count * _RECORD
        total = _PREAMBLE + rec_len + self._pay_len
        frame0 = PyBytes_FromStringAndSize(NULL, total)
        d = <unsigned char*>PyBytes_AS_STRING(frame0)
        _write_preamble(d, self._count)
        memcpy(d + _PREAMBLE, self._rec, rec_len)
        memcpy(d + _PREAMBLE + rec_len, self._pay, self._pay_len)
        bufs = self._buffers
        self._buffers = None
        self._count = 0
        self._pay_len = 0
        self._buf_bytes = 0
        if self._rec_cap > _KEEP_RECORDS:
            free(self._rec)
            self._rec = NULL
            self._rec_cap = 0
        if self._pay_cap > _KEEP_PAYLOADS:
            free(self._pay)
            self._pay = NULL
            self._pay_cap = 0
        if bufs is None:
            return [frame0]
        bufs.insert(0, frame0)
        return bufs


# -- pending calls -------------------------------------------------------------------------

cdef object _MISSING = object()


cdef object _call_id_key(object call_id):
    """``call_id`` as an exact ``int``, so dict lookups cannot run Python code."""
    if PyLong_CheckExact(call_id):
        return call_id
    return int.__index__(operator.index(call_id))


cdef list _normalized_records(list records):
    """Validate records (as parse_frame returns them), converting call ids to exact ints."""
    cdef Py_ssize_t i
    cdef object rec
    for i in range(len(records)):
        rec = records[i]
        if not PyTuple_CheckExact(rec):
            rec = tuple(rec)
        if PyTuple_GET_SIZE(rec) != 8:
            raise ValueError(
                f"record {i} has {PyTuple_GET_SIZE(rec)} fields, expected 8 "
                "(kind, flags, method, call_id, actor_id, payload, buf_start, nbuf) "
                "as returned by parse_frame"
            )
        if not PyLong_CheckExact(<object>PyTuple_GET_ITEM(rec, 3)):
            rec = rec[:3] + (_call_id_key(rec[3]),) + rec[4:]
        records[i] = rec
    return records


cdef class PendingTable:
    """The caller's table of calls awaiting a reply, keyed by call id.

    Call ids start at 1 and strictly increase (unsigned 64-bit). Every method is
    atomic with respect to other Python threads: none releases the GIL or runs
    other Python code while the table is being changed.
    """

    cdef dict _d
    cdef uint64_t _next
    cdef uint64_t _unknown

    def __cinit__(self):
        self._d = {}
        self._next = 1
        self._unknown = 0

    @property
    def unknown(self):
        """Number of replies :meth:`take_replies` skipped because their call id was not pending."""
        return self._unknown

    def add(self, obj):
        """Store ``obj`` under the next call id and return that id."""
        cdef uint64_t cid = self._next
        if cid == 0:
            raise OverflowError("call ids exhausted (2**64 - 1 calls made)")
        self._next = cid + 1
        key = PyLong_FromUnsignedLongLong(cid)
        self._d[key] = obj
        return key

    def pop(self, call_id):
        """Remove and return the object stored under ``call_id``, or None if it is not pending."""
        key = _call_id_key(call_id)
        return self._d.pop(key, None)

    def __len__(self):
        """Number of pending calls."""
        return len(self._d)

    def __contains__(self, call_id):
        """Whether ``call_id`` is pending (False for anything that is not an integer)."""
        try:
            key = _call_id_key(call_id)
        except TypeError:
            return False
        return key in self._d

    def take_replies(self, records):
        """Claim the pending calls that ``records`` (from :func:`parse_frame`) answer.

        For each record whose call id is pending, removes it and appends
        ``(obj, kind, flags, payload, buf_start, nbuf)`` to the returned list, in
        record order. Records with unknown call ids are skipped and counted in
        :attr:`unknown`. Malformed records raise before anything is removed.
        """
        cdef list recs = list(records)  # private: nobody else can change it under us
        cdef Py_ssize_t i
        cdef object item
        cdef tuple rec
        cdef list out = []
        for i in range(len(recs)):
            item = recs[i]
            if (not PyTuple_CheckExact(item) or PyTuple_GET_SIZE(item) != 8
                    or not PyLong_CheckExact(<object>PyTuple_GET_ITEM(item, 3))):
                recs = _normalized_records(recs)
                break
        # recs is private, validated, and holds exact ints as call ids.
        for i in range(len(recs)):
            rec = <tuple>recs[i]
            obj = self._d.pop(<object>PyTuple_GET_ITEM(rec, 3), _MISSING)
            if obj is _MISSING:
                self._unknown += 1
                continue
            out.append((obj, <object>PyTuple_GET_ITEM(rec, 0), <object>PyTuple_GET_ITEM(rec, 1),
                        <object>PyTuple_GET_ITEM(rec, 5), <object>PyTuple_GET_ITEM(rec, 6),
                        <object>PyTuple_GET_ITEM(rec, 7)))
        return out

    def items(self):
        """A snapshot of the pending calls: ``[(call_id, obj), ...]`` in call-id order."""
        return list(self._d.items())

    def drain(self):
        """Remove every pending call and return the stored objects in call-id order."""
        cdef dict fresh = {}
        cdef dict old = self._d
        self._d = fresh
        return list(old.values())


# -- key hashing: which shard of a pool a key belongs to ------------------------------------
#
# A key's shard is ``jump_hash(hash_key(key), n)``:
#
# * ``hash_key`` is XXH64 (xxHash, 64-bit) of the key's canonical bytes, with the key's
#   type tag as the XXH64 seed: an ``int`` (or anything with ``__index__``: ``bool``,
#   numpy integers) in ``-2**63 .. 2**64 - 1`` is its value modulo ``2**64`` as 8 bytes
#   little-endian, tag 1 (so ``-1`` and ``2**64 - 1`` are the same key bits); a ``str``
#   is its UTF-8 bytes, tag 2; ``bytes`` (and ``bytearray``/``memoryview``) are
#   themselves, tag 3. ``7``, ``np.int64(7)`` and ``np.uint64(7)`` hash alike; ``"7"``
#   and ``b"7"`` hash differently from ``7`` and from each other. Other types raise
#   ``TypeError``.
# * ``jump_hash`` is Lamping and Veach's jump consistent hash ("A Fast, Minimal Memory,
#   Consistent Hash Algorithm", 2014): growing from n to n + 1 shards moves about
#   1/(n + 1) of the keys, all of them to the new shard.
#
# Nothing depends on the process, the machine or ``PYTHONHASHSEED``. The pure-Python
# twin in ``_fallback`` gives the same answers (tests/test_hashing.py).

from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE, PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF
from cpython.unicode cimport PyUnicode_CheckExact
from libc.stdint cimport int64_t

import numpy as _np

cdef extern from *:
    """
    #define ZA_XXH_P1 0x9E3779B185EBCA87ULL
    #define ZA_XXH_P2 0xC2B2AE3D27D4EB4FULL
    #define ZA_XXH_P3 0x165667B19E3779F9ULL
    #define ZA_XXH_P4 0x85EBCA77C2B2AE63ULL
    #define ZA_XXH_P5 0x27D4EB2F165667C5ULL
    #define ZA_JUMP_MUL 2862933555777941757ULL
    """
    const uint64_t ZA_XXH_P1
    const uint64_t ZA_XXH_P2
    const uint64_t ZA_XXH_P3
    const uint64_t ZA_XXH_P4
    const uint64_t ZA_XXH_P5
    const uint64_t ZA_JUMP_MUL

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object s, Py_ssize_t* size) except NULL

__all__ += [
    "KEY_TAG_INT",
    "KEY_TAG_STR",
    "KEY_TAG_BYTES",
    "MAX_SHARDS",
    "xxh64",
    "hash_key",
    "jump_hash",
    "shard_of_key",
    "shard_of",
    "KeyRouter",
]

#: XXH64 seed (the type tag) of integer keys.
KEY_TAG_INT = 1
#: XXH64 seed (the type tag) of ``str`` keys.
KEY_TAG_STR = 2
#: XXH64 seed (the type tag) of ``bytes`` keys.
KEY_TAG_BYTES = 3
#: The largest shard count ``shard_of`` accepts (jump hash's buckets are int32).
MAX_SHARDS = 2**31 - 1

cdef enum:
    _TAG_INT = 1
    _TAG_STR = 2
    _TAG_BYTES = 3

cdef long long _I64_MIN_PY = -9223372036854775807LL - 1


cdef inline uint64_t _rotl(uint64_t x, int r) noexcept nogil:
    return (x << r) | (x >> (64 - r))


cdef inline uint64_t _xround(uint64_t acc, uint64_t lane) noexcept nogil:
    acc += lane * ZA_XXH_P2
    acc = _rotl(acc, 31)
    return acc * ZA_XXH_P1


cdef inline uint64_t _xmerge(uint64_t acc, uint64_t val) noexcept nogil:
    acc ^= _xround(0, val)
    return acc * ZA_XXH_P1 + ZA_XXH_P4


cdef inline uint64_t _avalanche(uint64_t h) noexcept nogil:
    h ^= h >> 33
    h *= ZA_XXH_P2
    h ^= h >> 29
    h *= ZA_XXH_P3
    return h ^ (h >> 32)


cdef uint64_t _xxh64(const unsigned char* p, Py_ssize_t n, uint64_t seed) noexcept nogil:
    cdef const unsigned char* end = p + n
    cdef const unsigned char* limit
    cdef uint64_t v1, v2, v3, v4, h
    if n >= 32:
        v1 = seed + ZA_XXH_P1 + ZA_XXH_P2
        v2 = seed + ZA_XXH_P2
        v3 = seed
        v4 = seed - ZA_XXH_P1
        limit = end - 32
        while p <= limit:
            v1 = _xround(v1, _ld64(p))
            v2 = _xround(v2, _ld64(p + 8))
            v3 = _xround(v3, _ld64(p + 16))
            v4 = _xround(v4, _ld64(p + 24))
            p += 32
        h = _rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)
        h = _xmerge(h, v1)
        h = _xmerge(h, v2)
        h = _xmerge(h, v3)
        h = _xmerge(h, v4)
    else:
        h = seed + ZA_XXH_P5
    h += <uint64_t>n
    while p + 8 <= end:
        h ^= _xround(0, _ld64(p))
        h = _rotl(h, 27) * ZA_XXH_P1 + ZA_XXH_P4
        p += 8
    if p + 4 <= end:
        h ^= (<uint64_t>_ld32(p)) * ZA_XXH_P1
        h = _rotl(h, 23) * ZA_XXH_P2 + ZA_XXH_P3
        p += 4
    while p < end:
        h ^= (<uint64_t>p[0]) * ZA_XXH_P5
        h = _rotl(h, 11) * ZA_XXH_P1
        p += 1
    return _avalanche(h)


cdef inline uint64_t _hash_lane(uint64_t bits) noexcept nogil:
    """``_xxh64`` of ``bits`` as 8 little-endian bytes with seed ``_TAG_INT``, unrolled."""
    cdef uint64_t h = <uint64_t>_TAG_INT + ZA_XXH_P5 + 8
    h ^= _xround(0, bits)
    h = _rotl(h, 27) * ZA_XXH_P1 + ZA_XXH_P4
    return _avalanche(h)


cdef inline int64_t _jump(uint64_t key, int64_t n) noexcept nogil:
    cdef int64_t b = -1
    cdef int64_t j = 0
    while j < n:
        b = j
        key = key * ZA_JUMP_MUL + 1
        j = <int64_t>((b + 1) * (2147483648.0 / <double>((key >> 33) + 1)))
    return b


cdef int _int_range_error(object value) except -1:
    raise OverflowError(
        f"integer key {value} is out of range: integer keys must fit in -2**63..2**64-1"
    )


cdef uint64_t _int_bits(object value) except? 0:
    """The key bits of an exact int: its value modulo 2**64 (range-checked)."""
    cdef int overflow = 0
    cdef long long v = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow == 0:
        return <uint64_t>v
    if overflow < 0 or value > 0xFFFFFFFFFFFFFFFF:
        _int_range_error(value)
    return PyLong_AsUnsignedLongLong(value)


cdef int _type_error(object key) except -1:
    raise TypeError(
        f"a shard key must be an int, str or bytes, got {type(key).__name__}: {key!r} "
        "(convert it, e.g. with str(key))"
    )


cdef uint64_t _hash_other(object key) except? 0:
    """``hash_key`` for keys that are not an exact int, str or bytes."""
    cdef bytes data
    if isinstance(key, str):
        data = str.encode(key, "utf-8")
        return _xxh64(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), _TAG_STR)
    if isinstance(key, (bytes, bytearray, memoryview)):
        data = bytes(key)
        return _xxh64(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), _TAG_BYTES)
    if isinstance(key, float):
        _type_error(key)
    try:
        value = operator.index(key)
    except TypeError:
        value = None
    if value is None:
        _type_error(key)
    return _hash_lane(_int_bits(value))


cdef inline uint64_t _hash_obj(object key) except? 0:
    cdef Py_ssize_t size
    cdef const char* s
    if PyUnicode_CheckExact(key):
        s = PyUnicode_AsUTF8AndSize(key, &size)
        return _xxh64(<const unsigned char*>s, size, _TAG_STR)
    if PyLong_CheckExact(key):
        return _hash_lane(_int_bits(key))
    if PyBytes_CheckExact(key):
        return _xxh64(<const unsigned char*>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key), _TAG_BYTES)
    return _hash_other(key)


cdef int64_t _check_shards(object n) except -1:
    if not PyLong_CheckExact(n):
        n = operator.index(n)
    if n < 1 or n > MAX_SHARDS:
        raise ValueError(f"the number of shards must be in 1..{MAX_SHARDS}, got {n}")
    return <int64_t>n


def xxh64(data, seed=0):
    """XXH64 of ``data`` (bytes-like) with ``seed`` (0..2**64-1), as an unsigned int."""
    cdef bytes b = bytes(data)
    cdef uint64_t s = _field(seed, _U64_MAX, "seed")
    return PyLong_FromUnsignedLongLong(
        _xxh64(<const unsigned char*>PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b), s)
    )


def hash_key(key):
    """The 64-bit hash of one key (an int, str or bytes), as an unsigned int.

    Example::

        hash_key(7) == hash_key(np.int64(7)) != hash_key("7")
    """
    return PyLong_FromUnsignedLongLong(_hash_obj(key))


def jump_hash(h, n):
    """Lamping and Veach's jump consistent hash of the 64-bit ``h`` into ``n`` buckets."""
    cdef uint64_t key = _field(h, _U64_MAX, "h")
    cdef int64_t shards = _check_shards(n)
    return _jump(key, shards)


def shard_of_key(key, n):
    """The shard (0..n-1) of one key among ``n`` shards."""
    cdef int64_t shards = _check_shards(n)
    return _jump(_hash_obj(key), shards)


cdef void _shard_lanes(const uint64_t[::1] keys, int64_t[::1] out, int64_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(keys.shape[0]):
        out[i] = _jump(_hash_lane(keys[i]), n)


def shard_of(keys, n):
    """The shard (0..n-1) of each key: a numpy int64 array as long as ``keys``.

    ``keys`` is a sequence of int/str/bytes keys or a 1-d numpy array (integer
    dtypes hash like the same Python ints; ``U``/``S``/object arrays like their
    items). Integer arrays are hashed without the GIL.
    """
    cdef int64_t shards = _check_shards(n)
    cdef Py_ssize_t i, size
    cdef const uint64_t[::1] src
    cdef int64_t[::1] res
    cdef list items
    if isinstance(keys, _np.ndarray):
        if keys.ndim != 1:
            raise ValueError(f"shard_of takes a 1-d array of keys, got shape {keys.shape}")
        kind = keys.dtype.kind
        if kind in "iub":
            if kind == "u":
                lanes = _np.ascontiguousarray(keys, dtype=_np.uint64)
            else:
                lanes = _np.ascontiguousarray(keys, dtype=_np.int64).view(_np.uint64)
            out = _np.empty(lanes.shape[0], dtype=_np.int64)
            src = lanes
            res = out
            with nogil:
                _shard_lanes(src, res, shards)
            return out
        items = keys.tolist()
    elif isinstance(keys, (str, bytes, bytearray, memoryview)):
        raise TypeError("shard_of takes a sequence of keys; use shard_of_key for one key")
    else:
        items = list(keys)  # a private copy: hashing a key may run user code
    size = PyList_GET_SIZE(items)
    out = _np.empty(size, dtype=_np.int64)
    res = out
    for i in range(size):
        res[i] = _jump(_hash_obj(<object>PyList_GET_ITEM(items, i)), shards)
    return out


cdef class KeyRouter:
    """The target that owns a key, among a fixed list of them: the compiled core of HashPool.

    ``router.for_key(key)`` is ``targets[shard_of_key(key, len(targets))]``,
    hashed and picked in C with no Python frame in between, so that routing a
    call costs next to nothing beside the call. ``HashPool`` subclasses it (as
    ``zmq.Socket`` does its compiled backend) and sets the targets with
    ``_set_targets``; until then there is nothing to route to.

    Example::

        router = KeyRouter(["a", "b", "c"])
        router.for_key("timbit")            # one of "a", "b", "c", the same everywhere
        router.for_keys(["timbit", 7])      # a list, one target a key
    """

    # A private list, never changed: _set_targets replaces it whole, so a routing
    # call that took it stays consistent even if hashing a key runs code (a key's
    # __index__, another thread) that sets new targets.
    cdef list _targets

    def __init__(self, targets=None):
        if targets is not None:
            self._set_targets(targets)

    def _set_targets(self, targets):
        """Route to ``targets`` (1..MAX_SHARDS of them, shard 0 first) from now on."""
        cdef list items = list(targets)
        _check_shards(len(items))
        self._targets = items

    cdef int _no_targets(self) except -1:
        raise ValueError("this router has no targets yet: give it some with _set_targets")

    def for_key(self, key):
        """The target that owns ``key`` (an int, str or bytes).

        For a ``HashPool``, the owning actor's own handle: ``pool.for_key(k).m.remote()``
        sends the same one message as ``handle.m.remote()``.
        """
        cdef list targets = self._targets
        if targets is None:
            self._no_targets()
        cdef int64_t shard = _jump(_hash_obj(key), PyList_GET_SIZE(targets))
        return <object>PyList_GET_ITEM(targets, shard)

    def for_keys(self, keys):
        """The owning target of each key, in order: ``for_key`` for a batch of keys.

        One call for ``[router.for_key(k) for k in keys]``, for when the keys of
        many calls are known at once::

            for h, k in zip(pool.for_keys(keys), keys):
                h.deposit.remote(k, 1.0)


        ``keys`` is what ``shard_of`` takes (a sequence of keys or a 1-d numpy
        integer array, hashed without the GIL).
        """
        cdef list targets = self._targets
        if targets is None:
            self._no_targets()
        cdef const int64_t[::1] shards = shard_of(keys, PyList_GET_SIZE(targets))
        cdef Py_ssize_t i, size = shards.shape[0]
        cdef list out = PyList_New(size)
        cdef object target
        for i in range(size):
            target = <object>PyList_GET_ITEM(targets, shards[i])
            Py_INCREF(target)
            PyList_SET_ITEM(out, i, target)
        return out
