# Included by _fast.pyx: little-endian loads and stores, parsing and packing frames.

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


# -- the preamble's flags ------------------------------------------------------------------

cdef object _byte_view(object frame0):
    """A one-dimensional view of unsigned bytes over ``frame0``."""
    cdef object mv = PyMemoryView_FromObject(frame0)
    cdef Py_buffer* view = PyMemoryView_GET_BUFFER(mv)
    if (view.ndim != 1 or view.format == NULL or view.format[0] != b'B' or view.format[1] != 0
            or not PyBuffer_IsContiguous(view, b'C')):
        mv = mv.cast("B")
    return mv


def preamble_flags(frame0):
    """The flags byte of frame 0's preamble (0 for a frame shorter than the preamble)."""
    cdef object mv = _byte_view(frame0)
    cdef Py_buffer* view = PyMemoryView_GET_BUFFER(mv)
    if view.len < _PREAMBLE:
        return 0
    return (<const unsigned char*>view.buf)[3]


def with_preamble_flags(frame0, flags):
    """A copy of frame 0 (``bytes``) whose preamble carries ``flags`` (0..255)."""
    cdef uint8_t f = <uint8_t>_field(flags, _U8_MAX, "flags")
    cdef object mv = _byte_view(frame0)
    cdef Py_buffer* view = PyMemoryView_GET_BUFFER(mv)
    if view.len < _PREAMBLE:
        raise ValueError(
            f"frame of {view.len} bytes has no {_PREAMBLE}-byte preamble to set flags in; "
            "pass frame 0 as pack_one() or BatchWriter.take() built it"
        )
    cdef bytes out = PyBytes_FromStringAndSize(<const char*>view.buf, view.len)
    (<unsigned char*>PyBytes_AS_STRING(out))[3] = f
    return out


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
    # The texts are shared word for word with zactor.wire._fallback.
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

def sort_records(list records):
    """Sort ``parse_frame``'s records by kind, each list in message order:
    ``(requests, replies, acks, unknown)``: CALL and TELL records; RESULT, ERROR
    and DIED records; ACK records; and how many are of a kind this version does
    not know (0, or above ACK).
    """
    cdef list requests = []
    cdef list replies = []
    cdef list acks = []
    cdef Py_ssize_t unknown = 0
    cdef long kind
    for record in records:
        kind = record[0]
        if _RESULT_KIND <= kind <= _DIED_KIND:
            replies.append(record)
        elif _CALL_KIND <= kind < _RESULT_KIND:
            requests.append(record)
        elif kind == _ACK_KIND:
            acks.append(record)
        else:
            unknown += 1
    return requests, replies, acks, unknown


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
        self._add(kind, flags, method, call_id, actor_id, payload, buffers)

    cdef int _add(self, kind, flags, method, call_id, actor_id, payload, buffers) except -1:
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
        return 0

    def take(self):
        """Return the message built so far as ``[frame0, *buffers]`` and empty the writer.

        Returns ``[]`` when no record was added.
        """
        return self._take()

    cdef list _take(self):
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
