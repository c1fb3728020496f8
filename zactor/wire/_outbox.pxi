# Included by _fast.pyx: the batching outbox to one peer.

from cpython.pythread cimport (
    NOWAIT_LOCK,
    WAIT_LOCK,
    PyThread_acquire_lock,
    PyThread_allocate_lock,
    PyThread_free_lock,
    PyThread_release_lock,
    PyThread_type_lock,
)
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec


cdef inline double _monotonic_s() noexcept nogil:
    """``time.monotonic()`` (the same clock), without a Python call."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef inline void _lock(PyThread_type_lock lock) noexcept:
    # Taken without the GIL only when another thread holds it: that thread may be in
    # a send that released the GIL and needs it back before it lets go.
    if not PyThread_acquire_lock(lock, NOWAIT_LOCK):
        with nogil:
            PyThread_acquire_lock(lock, WAIT_LOCK)


cdef class Outbox:
    """The connection to one peer, with the batch of records not yet sent to it.

    ``Outbox(address, conn, flags, on_first, linger_s, max_batch, max_batch_bytes)``:
    records go out through ``conn.send(frames)``, each carrying the sender's role
    ``flags``. :meth:`put` sends a record at once when the peer is idle and
    batches it otherwise; ``on_first(outbox)`` hears when a batch gets its first
    record that way (the runtime arms its flusher), and a batch is sent as soon
    as it holds ``max_batch`` records or ``max_batch_bytes`` bytes. Safe to use
    from several threads: one lock guards the batch and the send.

    Example::

        box = Outbox("ipc:///tmp/x.sock", conn, 0, runtime.mark_dirty, 50e-6, 512, 1 << 20)
        box.put(CALL, method, call_id, actor_id, payload, [])   # idle peer: sent now
    """

    cdef object _address
    cdef object _conn
    cdef int _flags
    cdef Py_ssize_t _inflight
    cdef object _on_first
    cdef BatchWriter _writer
    cdef PyThread_type_lock _mutex
    cdef double _last_send
    cdef double _linger
    cdef Py_ssize_t _max_batch
    cdef Py_ssize_t _max_batch_bytes

    def __cinit__(self, address, conn, int flags, on_first, double linger_s,
                  Py_ssize_t max_batch, Py_ssize_t max_batch_bytes):
        self._mutex = PyThread_allocate_lock()
        if self._mutex == NULL:
            raise MemoryError()
        self._address = address
        self._conn = conn
        self._flags = flags
        self._on_first = on_first
        self._writer = BatchWriter()
        self._last_send = 0.0
        self._linger = linger_s
        self._max_batch = max_batch
        self._max_batch_bytes = max_batch_bytes
        self._inflight = 0

    def __dealloc__(self):
        if self._mutex != NULL:
            PyThread_free_lock(self._mutex)

    @property
    def address(self):
        """The peer's inbox address."""
        return self._address

    @property
    def conn(self):
        """The connection the batches go out through (``send(frames)``)."""
        return self._conn

    @conn.setter
    def conn(self, conn):
        self._conn = conn

    @property
    def flags(self):
        """The flags every record :meth:`put` sends carries (the sender's role)."""
        return self._flags

    @flags.setter
    def flags(self, int flags):
        self._flags = flags

    @property
    def inflight(self):
        """Calls sent whose replies have not come back (see :meth:`replies_arrived`)."""
        return self._inflight

    @inflight.setter
    def inflight(self, Py_ssize_t n):
        self._inflight = n

    @property
    def count(self):
        """Records batched and not sent yet."""
        return self._writer._count

    def put(self, int kind, method, call_id, actor_id, payload, buffers):
        """Send now if the peer is idle, else add to the batch (``on_first`` hears
        of a new batch; a full one is sent at once).

        Idle means: for a call, no earlier call awaits its reply (so a
        synchronous call never waits); for a tell or another kind, nothing was
        sent within ``linger_s``.
        """
        self._put(kind, method, call_id, actor_id, payload, buffers)

    cdef int _put(self, int kind, method, call_id, actor_id, payload, buffers) except -1:
        cdef BatchWriter writer = self._writer
        cdef bint idle, first
        _lock(self._mutex)
        try:
            if kind == _CALL_KIND:
                self._inflight += 1
                idle = self._inflight == 1
            else:
                idle = _monotonic_s() - self._last_send > self._linger
            if writer._count == 0 and idle:
                self._last_send = _monotonic_s()
                self._conn.send(
                    pack_one(kind, self._flags, method, call_id, actor_id, payload, buffers)
                )
                return 0
            writer._add(kind, self._flags, method, call_id, actor_id, payload, buffers)
            if (writer._count >= self._max_batch
                    or writer._pay_len + writer._buf_bytes >= self._max_batch_bytes):
                self._last_send = _monotonic_s()
                self._conn.send(writer._take())
                return 0
            first = writer._count == 1
        finally:
            PyThread_release_lock(self._mutex)
        if first:
            self._on_first(self)
        return 0

    def add(self, kind, flags, method, call_id, actor_id, payload, buffers):
        """Add a record with its own ``flags`` to the batch, never sending (a worker's
        replies, sent when its thread calls :meth:`flush`); True if it is the
        batch's first record."""
        _lock(self._mutex)
        try:
            self._writer._add(kind, flags, method, call_id, actor_id, payload, buffers)
            return self._writer._count == 1
        finally:
            PyThread_release_lock(self._mutex)

    def flush(self):
        """Send whatever is batched."""
        _lock(self._mutex)
        try:
            if self._writer._count:
                self._last_send = _monotonic_s()
                self._conn.send(self._writer._take())
        finally:
            PyThread_release_lock(self._mutex)

    def replies_arrived(self, Py_ssize_t n):
        """``n`` replies to calls sent through this outbox came back."""
        _lock(self._mutex)
        self._inflight -= n
        PyThread_release_lock(self._mutex)
