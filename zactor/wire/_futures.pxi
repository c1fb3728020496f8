# Included by _fast.pyx: a handle's call gate, and the state of a call's future with
# what the reader does to it on every reply.

from zactor.wire.serialization import loads as _loads

cdef extern from "Python.h":
    void PyObject_GC_UnTrack(void* op)
    void PyObject_GC_Track(void* op)
    int PyObject_GC_IsTracked(object op)
    int PyObject_IS_GC(object op)

cdef enum:
    # A future's states (zactor.caller.future): no reply yet, a reply not decoded yet,
    # a value, an exception to raise.
    _PENDING = 0
    _ARRIVED = 1
    _VALUE = 2
    _RAISED = 3
    # A plain result of at most this many bytes is decoded when it arrives, not on
    # result().
    _DECODE_ON_ARRIVAL = 256

# Decoded values that can refer to nothing, so not to their future either.
cdef frozenset _ATOMIC = frozenset((int, float, bool, type(None), str, bytes, complex))


# -- futures the cyclic collector need not scan ---------------------------------------------


cdef inline void _untrack(obj) noexcept:
    if PyObject_IS_GC(obj) and PyObject_GC_IsTracked(obj):
        PyObject_GC_UnTrack(<void*>obj)


cdef inline void _track(obj) noexcept:
    if PyObject_IS_GC(obj) and not PyObject_GC_IsTracked(obj):
        PyObject_GC_Track(<void*>obj)


def untrack(obj):
    """Take ``obj`` out of the cyclic garbage collector's lists (reference counting
    still frees it). Only for an object that holds nothing that could lead back to
    it; :func:`track` it again before it may."""
    _untrack(obj)


def track(obj):
    """Put ``obj`` back in the cyclic collector's lists (no-op if it is there)."""
    _track(obj)


# -- a handle's gate and a call's future ----------------------------------------------------


cdef class CallGate:
    """Counts one handle's calls awaiting replies and tells not yet credited, for
    backpressure (``max_pending_calls`` bounds the two together).

    ``CallGate(limit)``: ``inflight`` counts up from 0 against ``limit``;
    ``token`` is what the handle's tells carry to be credited
    (``Runtime.gate_token``), ``runtime`` the runtime that token belongs to.
    """

    cdef Py_ssize_t _inflight
    cdef object _limit
    cdef object _token
    cdef object _runtime
    cdef object __weakref__

    def __init__(self, limit):
        self._inflight = 0
        self._limit = limit
        self._token = 0
        self._runtime = None

    @property
    def inflight(self):
        """Calls awaiting replies, and tells until credited."""
        return self._inflight

    @inflight.setter
    def inflight(self, Py_ssize_t n):
        self._inflight = n

    @property
    def limit(self):
        """The handle's ``max_pending_calls``."""
        return self._limit

    @limit.setter
    def limit(self, limit):
        self._limit = limit

    @property
    def token(self):
        """What the handle's tells carry, to be credited (``Runtime.gate_token``)."""
        return self._token

    @token.setter
    def token(self, token):
        self._token = token

    @property
    def runtime(self):
        """The runtime :attr:`token` belongs to."""
        return self._runtime

    @runtime.setter
    def runtime(self, runtime):
        self._runtime = runtime

    def tell(self, Outbox box, method, actor_id, payload, buffers):
        """Count a tell on this gate and put it in ``box``, carrying :attr:`token`
        (its credit comes back by it): ``ActorMethod.tell``'s common path."""
        self._inflight += 1
        box._put(_TELL_KIND, method, self._token, actor_id, payload, buffers)


cdef class FutureCore:
    """The state of one call's future, and what the runtime's reader does to it
    when its reply comes (:meth:`_arrive`).

    ``zactor.Future`` subclasses it with everything else (waiting, callbacks,
    errors, ``await``); the subclass provides ``_decode()`` and
    ``_run_callbacks()``, which :meth:`_arrive` calls when it must.
    ``FutureCore(runtime, gate=None, origin=None)``: ``gate`` is the handle's
    :class:`CallGate` the call counts on until it resolves, ``origin`` what was
    called (for messages).
    """

    cdef public int _state
    cdef public object _value
    cdef public object _callbacks
    cdef public object _runtime
    cdef public CallGate _gate
    cdef public object _origin
    #: What sends the call again, if it may be (zactor.caller.future.Resend).
    cdef public object _retry
    cdef object __weakref__

    def __init__(self, runtime, CallGate gate=None, origin=None):
        self._runtime = runtime
        self._gate = gate
        self._origin = origin

    cpdef _arrive(self, int kind, payload, buffers):
        """Its reply came: keep it, count the call off its gate, run its callbacks.

        A small plain result is decoded now, while the reader waits for the next
        reply anyway, rather than in ``result()`` after the last one came.
        """
        self._value = (kind, payload, buffers)
        self._state = _ARRIVED
        if kind == _RESULT_KIND and not buffers and len(payload) <= _DECODE_ON_ARRIVAL:
            self._decode_result(payload, buffers)
        if self._gate is not None:
            self._gate._inflight -= 1
        if self._callbacks is not None:
            self._run_callbacks()

    cpdef _decode_result(self, payload, buffers):
        """Decode a RESULT reply: the future holds its value, or the error decoding raised."""
        try:
            value = _loads(payload, buffers)
        except Exception as exc:  # undecodable reply: report it on this future only
            _track(self)  # raised, its traceback will refer back to this future
            self._value = exc
            self._state = _RAISED
            return
        if type(value) not in _ATOMIC:  # it may come to refer to this future
            _track(self)
        self._value = value
        self._state = _VALUE


def results(list futures):
    """``[f.result() for f in futures]``: a decoded value is taken as it is."""
    cdef list out = []
    for f in futures:
        if isinstance(f, FutureCore) and (<FutureCore>f)._state == _VALUE:
            out.append((<FutureCore>f)._value)
        else:
            out.append(f.result())
    return out


def first_pending(list futures, Py_ssize_t start):
    """The index of the first of ``futures`` from ``start`` on still waiting for its
    reply, or ``len(futures)`` if none is."""
    cdef Py_ssize_t i = start
    cdef Py_ssize_t n = len(futures)
    cdef int state
    while i < n:
        f = futures[i]
        state = (<FutureCore>f)._state if isinstance(f, FutureCore) else f._state
        if state == _PENDING:
            break
        i += 1
    return i
