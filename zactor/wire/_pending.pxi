# Included by _fast.pyx: the table of calls awaiting replies.

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
        return self._add(obj)

    cdef object _add(self, obj):
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

    def restore(self, call_id, obj):
        """Store ``obj`` under ``call_id`` again: an id :meth:`add` returned whose
        reply was taken but turned out not to be the answer (the call still waits)."""
        key = _call_id_key(call_id)
        if not 1 <= key < self._next:
            raise ValueError(f"call id {key} was never handed out by this table")
        self._d[key] = obj

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

    def register(self, cls, runtime, CallGate gate, origin):
        """A new call's future and its call id, ``(future, call_id)``.

        The future, of ``cls`` (a :class:`FutureCore` class whose ``__init__``
        adds nothing), is left out of the cyclic collector's lists (nothing it
        holds yet leads back to it), counted on ``gate`` and pending here under
        the next call id.
        """
        cdef FutureCore future = FutureCore.__new__(cls)
        return future, self._register(future, runtime, gate, origin)

    def call(self, cls, runtime, CallGate gate, origin, Outbox box, method, actor_id,
             payload, buffers):
        """:meth:`register` a call and put its CALL record in ``box``: the future
        (``ActorMethod.remote``'s common path)."""
        cdef FutureCore future = FutureCore.__new__(cls)
        call_id = self._register(future, runtime, gate, origin)
        box._put(_CALL_KIND, method, call_id, actor_id, payload, buffers)
        return future

    cdef object _register(self, FutureCore future, runtime, CallGate gate, origin):
        """Fill in a new ``future``, untrack it, count it on ``gate``; its call id."""
        future._runtime = runtime
        future._gate = gate
        future._origin = origin
        _untrack(future)
        gate._inflight += 1
        return self._add(future)

    def resolve(self, records, buffers):
        """Hand each reply in ``records`` (from :func:`parse_frame`) to the future
        of its pending call: the runtime reader's loop. Returns how many were
        pending (the others are skipped, as in :meth:`take_replies`).

        A reply other than a result, to a call that may be sent again, goes
        first to ``future._origin._retry_reply(future, kind, flags, payload,
        buffers)``, which answers True if it is not the answer (the call went
        again, or waits for the head's word); the others arrive with
        ``future._arrive(kind, payload, buffers)``, ``buffers`` being the
        record's own frames.
        """
        cdef list taken = self.take_replies(records)
        cdef tuple item
        cdef Py_ssize_t start, count
        cdef int kind
        for item in taken:
            future = item[0]
            kind = item[1]
            payload = item[3]
            start = item[4]
            count = item[5]
            bufs = buffers[start:start + count] if count else ()
            if (kind != _RESULT_KIND and future._retry is not None
                    and future._origin._retry_reply(future, kind, item[2], payload, bufs)):
                continue
            if isinstance(future, FutureCore):
                (<FutureCore>future)._arrive(kind, payload, bufs)
            else:
                future._arrive(kind, payload, bufs)
        return len(taken)

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
        return sorted(self._d.items())  # restore() may put an old id after newer ones

    def drain(self):
        """Remove every pending call and return the stored objects in call-id order."""
        cdef dict fresh = {}
        cdef dict old = self._d
        self._d = fresh
        return [old[k] for k in sorted(old)]
