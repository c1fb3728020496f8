"""Pure-Python twin of :mod:`zactor.wire._fast`: wire framing, the batching outbox to a
peer, the table of pending calls and the state of their futures.

Same public names, same behaviour, same bytes on the wire and same exceptions as
the compiled module; ``ZACTOR_PURE_PYTHON=1`` selects it (see
``zactor.wire.hotpath``), and the tests run both side by side.

A message is a list of ZeroMQ frames. Frame 0 holds an 8-byte preamble
(struct ``<2sBBI``: magic ``b"ZA"``, protocol version, flags, record
count), then ``count`` 32-byte records (struct ``<BBHIQQII``: kind, flags,
reserved 0, method, call_id, actor_id, payload_len, nbuffers), then every
record's payload back to back in record order. Frames 1.. are out-of-band
buffers, handed to the records in order (record ``i`` owns ``nbuffers`` of
them, starting after those of the records before it). All integers are
little-endian.

The preamble's flags byte is 0 but for :data:`SHARED_BUFFERS`: then the
message's last frame is not a buffer but a table of shared-memory segments
that hold some of the buffers (:mod:`zactor.transport.shared_memory`), and
those buffers' own frames are empty. A same-host inbox puts the segments in
their place before :func:`parse_frame` sees the message, so it ignores the byte.
"""

from __future__ import annotations

import operator
import struct
import threading
import time

from zactor.errors import FrameError
from zactor.wire.serialization import loads as _loads

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

_PREAMBLE = struct.Struct("<2sBBI")
_RECORD = struct.Struct("<BBHIQQII")
_HEAD = struct.Struct("<BBHIQQ")  # a record up to actor_id
_TAIL = struct.Struct("<II")  # payload_len, nbuffers
_ONE = _PREAMBLE.pack(MAGIC, PROTOCOL_VERSION, 0, 1)

_U8_MAX = 0xFF
_U32_MAX = 0xFFFFFFFF
_U64_MAX = 0xFFFFFFFFFFFFFFFF
_SSIZE_MAX = 2**63 - 1
_MISSING = object()
# The record kinds this module tells apart (zactor.wire.records).
_CALL_KIND, _TELL_KIND, _RESULT_KIND, _DIED_KIND, _ACK_KIND = 1, 2, 3, 5, 6

assert _PREAMBLE.size == PREAMBLE_SIZE and _RECORD.size == RECORD_SIZE


# -- integers, checked the way the compiled module checks them ------------------------------


def _field(value, maxv: int, name: str) -> int:
    """An unsigned record field from a Python integer (anything with ``__index__``)."""
    if type(value) is not int:
        value = operator.index(value)  # TypeError for floats, None, ...
    if value < 0 or value > maxv:
        raise OverflowError(f"{name}={value} is out of range: it must fit in 0..{maxv}")
    return value


def _check_fields(kind, flags, method, call_id, actor_id) -> None:
    """Raise the TypeError/OverflowError the compiled module raises for these fields."""
    _field(kind, _U8_MAX, "kind")
    _field(flags, _U8_MAX, "flags")
    _field(method, _U32_MAX, "method")
    _field(call_id, _U64_MAX, "call_id")
    _field(actor_id, _U64_MAX, "actor_id")


def _ssize(value) -> int:
    """``value`` as a C ``Py_ssize_t``, like the compiled module's typed argument."""
    value = int.__index__(operator.index(value))
    if value < -_SSIZE_MAX - 1 or value > _SSIZE_MAX:
        raise OverflowError("Python int too large to convert to C ssize_t")
    return value


# -- the preamble's flags -------------------------------------------------------------------


def preamble_flags(frame0):
    """The flags byte of frame 0's preamble (0 for a frame shorter than the preamble)."""
    mv = memoryview(frame0)
    if mv.ndim != 1 or mv.format != "B" or not mv.c_contiguous:
        mv = mv.cast("B")
    return mv[3] if mv.nbytes >= PREAMBLE_SIZE else 0


def with_preamble_flags(frame0, flags):
    """A copy of frame 0 (``bytes``) whose preamble carries ``flags`` (0..255)."""
    flags = _field(flags, _U8_MAX, "flags")
    data = bytearray(frame0)
    if len(data) < PREAMBLE_SIZE:
        raise ValueError(
            f"frame of {len(data)} bytes has no {PREAMBLE_SIZE}-byte preamble to set flags in; "
            "pass frame 0 as pack_one() or BatchWriter.take() built it"
        )
    data[3] = flags
    return bytes(data)


# -- parsing --------------------------------------------------------------------------------


def parse_frame(frame0, nbuffer_frames):
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
    nbuffer_frames = _ssize(nbuffer_frames)
    mv = memoryview(frame0)
    if mv.ndim != 1 or mv.format != "B" or not mv.c_contiguous:
        mv = mv.cast("B")
    if not mv.readonly:
        mv = mv.toreadonly()
    n = mv.nbytes
    # The texts are shared word for word with zactor.wire._fast.
    if n < PREAMBLE_SIZE:
        raise FrameError(
            "short",
            f"frame of {n} bytes is shorter than the {PREAMBLE_SIZE}-byte zactor preamble; "
            "the sender must start frame 0 with the preamble (magic b'ZA', version, count)",
        )
    if mv[0] != 0x5A or mv[1] != 0x41:
        raise FrameError(
            "magic",
            f"frame starts with {bytes(mv[:2])!r}, not the zactor magic b'ZA': the peer does "
            "not speak the zactor protocol; check that the address belongs to a zactor process",
        )
    if mv[2] != PROTOCOL_VERSION:
        raise FrameError(
            "version",
            f"frame uses zactor protocol version {mv[2]} but this process speaks version "
            f"{PROTOCOL_VERSION}; run the same zactor release on both sides",
        )
    count = _PREAMBLE.unpack_from(mv)[3]
    if count == 0:
        raise FrameError(
            "empty",
            "frame declares 0 records; the sender must not send empty batches "
            "(BatchWriter.take() returns [] when there is nothing to send)",
        )
    end = PREAMBLE_SIZE + count * RECORD_SIZE
    if end > n:
        raise FrameError(
            "truncated",
            f"frame declares {count} records ({end} bytes with the "
            f"preamble) but holds only {n} bytes; the sender must send frame 0 whole, "
            "as BatchWriter.take() or pack_one() built it",
        )
    avail = n - end
    out = []
    off = end
    total = 0
    buf_start = 0
    for i, (kind, flags, _, method, call_id, actor_id, plen, nbuf) in enumerate(
        _RECORD.iter_unpack(mv[PREAMBLE_SIZE:end])
    ):
        total += plen
        if total > avail:
            raise FrameError(
                "truncated",
                f"record {i}'s payload runs past the end of the frame (records 0..{i} "
                f"declare {total} payload bytes, {avail} follow the records); the sender must "
                "send frame 0 whole, with payload_len matching each payload",
            )
        payload = mv[off : off + plen]
        if plen <= COPY_PAYLOAD_MAX:
            payload = bytes(payload)
        out.append((kind, flags, method, call_id, actor_id, payload, buf_start, nbuf))
        off += plen
        buf_start += nbuf
    if total != avail:
        raise FrameError(
            "truncated",
            f"{avail - total} bytes are left over after the {count} records' payloads "
            f"({total} declared, {avail} present); the sender's payload_len fields must add "
            "up exactly to the rest of frame 0",
        )
    if nbuffer_frames < 0 or buf_start != nbuffer_frames:
        raise FrameError(
            "buffers",
            f"the records own {buf_start} out-of-band buffer frames but {nbuffer_frames} "
            "arrived; the sender must send every buffer frame its records count in nbuffers, "
            "after frame 0",
        )
    return out


# -- packing --------------------------------------------------------------------------------


def sort_records(records):
    """Sort ``parse_frame``'s records by kind, each list in message order:
    ``(requests, replies, acks, unknown)``: CALL and TELL records; RESULT, ERROR
    and DIED records; ACK records; and how many are of a kind this version does
    not know (0, or above ACK).
    """
    requests, replies, acks, unknown = [], [], [], 0
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
    try:
        return _RECORD.pack(kind, flags, 0, method, call_id, actor_id, payload_len, nbuffers)
    except struct.error:
        _check_fields(kind, flags, method, call_id, actor_id)
        _field(payload_len, _U32_MAX, "payload_len")
        _field(nbuffers, _U32_MAX, "nbuffers")
        raise


def _head(kind, flags, method, call_id, actor_id) -> bytes:
    """The first 24 bytes of a record, with the compiled module's errors."""
    try:
        return _HEAD.pack(kind, flags, 0, method, call_id, actor_id)
    except struct.error:
        _check_fields(kind, flags, method, call_id, actor_id)
        raise


def _as_buffer_seq(buffers):
    """``buffers`` as a tuple or list, so that using it later runs no Python code."""
    if type(buffers) is tuple or type(buffers) is list:
        return buffers
    return tuple(buffers)


def _buffers_nbytes(seq) -> int:
    """Total size of out-of-band buffers; every one must be contiguous."""
    total = 0
    for i, b in enumerate(seq):
        with memoryview(b) as m:
            n = m.nbytes
            ok = n == 0 or m.contiguous
        if not ok:
            raise BufferError(
                f"out-of-band buffer {i} is not contiguous; pass a contiguous copy "
                "(numpy.ascontiguousarray) so it can be sent without copying"
            )
        total += n
    return total


def _payload_view(payload) -> memoryview:
    """``payload`` as a memoryview that ``join`` and ``+=`` take as raw bytes."""
    m = memoryview(payload)
    if m.nbytes == 0:
        return memoryview(b"")
    if not m.c_contiguous:
        raise BufferError(
            "payload is not C-contiguous; pass bytes (or a C-contiguous copy) as the payload"
        )
    return m


def _check_payload_len(n: int) -> None:
    if n > _U32_MAX:
        raise OverflowError(
            f"payload of {n} bytes exceeds the 4 GiB record limit; send large data as an "
            "out-of-band buffer instead"
        )


def _check_nbuffers(n: int) -> None:
    if n > _U32_MAX:
        raise OverflowError(f"{n} out-of-band buffers exceed the per-record limit of {_U32_MAX}")


def pack_one(kind, flags, method, call_id, actor_id, payload, buffers=None):
    """Frames of a message holding one record: ``[frame0, *buffers]``.

    Same result as a fresh :class:`BatchWriter` with one :meth:`~BatchWriter.add`
    followed by :meth:`~BatchWriter.take`, built with a single allocation.
    """
    head = _head(kind, flags, method, call_id, actor_id)
    nb = 0
    if buffers is not None:
        buffers = _as_buffer_seq(buffers)
        nb = len(buffers)
        _check_nbuffers(nb)
        if nb:
            _buffers_nbytes(buffers)
    if type(payload) is bytes:
        plen = len(payload)
    else:
        payload = _payload_view(payload)
        plen = payload.nbytes
    _check_payload_len(plen)
    frame0 = b"".join((_ONE, head, _TAIL.pack(plen, nb), payload))
    if nb:
        return [frame0, *buffers]
    return [frame0]


class BatchWriter:
    """Accumulates records bound for one destination into one message.

    Records and payloads are copied into internal buffers as they are added; out-of-band
    buffers are kept by reference. :meth:`take` returns ``[frame0, *buffers]``,
    with frame 0 built in a single allocation, and empties the writer.
    """

    __slots__ = ("_records", "_payloads", "_buffers", "_count", "_buf_bytes")

    def __init__(self):
        self._records = bytearray()
        self._payloads = bytearray()
        self._buffers = []
        self._count = 0
        self._buf_bytes = 0

    @property
    def count(self):
        """Number of records added since the last :meth:`take`."""
        return self._count

    @property
    def nbytes(self):
        """Payload bytes plus out-of-band buffer bytes added since the last :meth:`take`."""
        return len(self._payloads) + self._buf_bytes

    def add(self, kind, flags, method, call_id, actor_id, payload, buffers=None):
        """Append one record.

        ``payload`` is any C-contiguous bytes-like object; it is copied. ``buffers``
        is a list or tuple of contiguous buffer objects (numpy arrays, bytes, ...)
        sent as their own frames after frame 0; they are kept by reference, so
        they must not change before the message is sent. On error the writer is
        left as it was.
        """
        head = _head(kind, flags, method, call_id, actor_id)
        nb = 0
        bbytes = 0
        if buffers is not None:
            buffers = _as_buffer_seq(buffers)
            nb = len(buffers)
            _check_nbuffers(nb)
            if nb:
                bbytes = _buffers_nbytes(buffers)
        if type(payload) is not bytes:
            payload = _payload_view(payload)
        payloads = self._payloads
        before = len(payloads)
        payloads += payload
        plen = len(payloads) - before
        try:
            _check_payload_len(plen)
            if self._count == _U32_MAX:
                raise OverflowError(
                    f"a batch holds at most {_U32_MAX} records; call take() and send it first"
                )
        except OverflowError:
            del payloads[before:]
            raise
        if nb:
            self._buffers.extend(buffers)
        self._records += head
        self._records += _TAIL.pack(plen, nb)
        self._count += 1
        self._buf_bytes += bbytes

    def take(self):
        """Return the message built so far as ``[frame0, *buffers]`` and empty the writer.

        Returns ``[]`` when no record was added.
        """
        if not self._count:
            return []
        frame0 = b"".join(
            (_PREAMBLE.pack(MAGIC, PROTOCOL_VERSION, 0, self._count), self._records, self._payloads)
        )
        out = [frame0, *self._buffers]
        self._records = bytearray()
        self._payloads = bytearray()
        self._buffers = []
        self._count = 0
        self._buf_bytes = 0
        return out


# -- the outbox to one peer -----------------------------------------------------------------

_monotonic = time.monotonic


class Outbox:
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

    __slots__ = {
        "address": "The peer's inbox address.",
        "conn": "The connection the batches go out through (``send(frames)``).",
        "flags": "The flags every record :meth:`put` sends carries (the sender's role).",
        "inflight": "Calls sent whose replies have not come back (see :meth:`replies_arrived`).",
        "_on_first": "",
        "_writer": "",
        "_mutex": "",
        "_last_send": "",
        "_linger": "",
        "_max_batch": "",
        "_max_batch_bytes": "",
    }

    def __init__(self, address, conn, flags, on_first, linger_s, max_batch, max_batch_bytes):
        self.address = address
        self.conn = conn
        self.flags = int(flags)
        self._on_first = on_first
        self._writer = BatchWriter()
        self._mutex = threading.Lock()
        self._last_send = 0.0
        self._linger = float(linger_s)
        self._max_batch = max_batch
        self._max_batch_bytes = max_batch_bytes
        self.inflight = 0

    @property
    def count(self):
        """Records batched and not sent yet."""
        return self._writer.count

    def put(self, kind, method, call_id, actor_id, payload, buffers):
        """Send now if the peer is idle, else add to the batch (``on_first`` hears
        of a new batch; a full one is sent at once).

        Idle means: for a call, no earlier call awaits its reply (so a
        synchronous call never waits); for a tell or another kind, nothing was
        sent within ``linger_s``.
        """
        lock = self._mutex
        lock.acquire()  # not ``with``: per call, its special-method look-ups cost more
        try:
            writer = self._writer
            if kind == _CALL_KIND:
                self.inflight += 1
                idle = self.inflight == 1
            else:
                idle = _monotonic() - self._last_send > self._linger
            if writer.count == 0 and idle:
                self._last_send = _monotonic()
                self.conn.send(
                    pack_one(kind, self.flags, method, call_id, actor_id, payload, buffers)
                )
                return
            writer.add(kind, self.flags, method, call_id, actor_id, payload, buffers)
            if writer.count >= self._max_batch or writer.nbytes >= self._max_batch_bytes:
                self._last_send = _monotonic()
                self.conn.send(writer.take())
                return
            first = writer.count == 1
        finally:
            lock.release()
        if first:
            self._on_first(self)

    def add(self, kind, flags, method, call_id, actor_id, payload, buffers):
        """Add a record with its own ``flags`` to the batch, never sending (a worker's
        replies, sent when its thread calls :meth:`flush`); True if it is the
        batch's first record."""
        with self._mutex:
            self._writer.add(kind, flags, method, call_id, actor_id, payload, buffers)
            return self._writer.count == 1

    def flush(self):
        """Send whatever is batched."""
        with self._mutex:
            if self._writer.count:
                self._last_send = _monotonic()
                self.conn.send(self._writer.take())

    def replies_arrived(self, n):
        """``n`` replies to calls sent through this outbox came back."""
        with self._mutex:
            self.inflight -= n


# -- pending calls ----------------------------------------------------------------------------


def _call_id_key(call_id) -> int:
    """``call_id`` as an exact ``int``, so dict lookups cannot run Python code."""
    if type(call_id) is not int:
        call_id = int.__index__(operator.index(call_id))
    return call_id


def _normalized_records(records: list) -> list:
    """Validate records (as parse_frame returns them), converting call ids to exact ints."""
    for i in range(len(records)):
        rec = records[i]
        if type(rec) is not tuple:
            rec = tuple(rec)
        if len(rec) != 8:
            raise ValueError(
                f"record {i} has {len(rec)} fields, expected 8 "
                "(kind, flags, method, call_id, actor_id, payload, buf_start, nbuf) "
                "as returned by parse_frame"
            )
        if type(rec[3]) is not int:
            rec = rec[:3] + (_call_id_key(rec[3]),) + rec[4:]
        records[i] = rec
    return records


class PendingTable:
    """The caller's table of calls awaiting a reply, keyed by call id.

    Call ids start at 1 and strictly increase (unsigned 64-bit). Every method is
    atomic with respect to other Python threads: none releases the GIL or runs
    other Python code while the table is being changed.
    """

    # Here a lock provides the atomicity; it is re-entrant so that a finalizer run by
    # the garbage collector in the middle of an update cannot deadlock on it.
    __slots__ = ("_d", "_next", "_unknown", "_lock")

    def __init__(self):
        self._d = {}
        self._next = 1
        self._unknown = 0
        self._lock = threading.RLock()

    @property
    def unknown(self):
        """Number of replies :meth:`take_replies` skipped because their call id was not pending."""
        return self._unknown

    def add(self, obj):
        """Store ``obj`` under the next call id and return that id."""
        with self._lock:
            cid = self._next
            if cid > _U64_MAX:
                raise OverflowError("call ids exhausted (2**64 - 1 calls made)")
            self._next = cid + 1
            self._d[cid] = obj
        return cid

    def pop(self, call_id):
        """Remove and return the object stored under ``call_id``, or None if it is not pending."""
        key = _call_id_key(call_id)
        with self._lock:
            return self._d.pop(key, None)

    def restore(self, call_id, obj):
        """Store ``obj`` under ``call_id`` again: an id :meth:`add` returned whose
        reply was taken but turned out not to be the answer (the call still waits)."""
        key = _call_id_key(call_id)
        with self._lock:
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

    def register(self, cls, runtime, gate, origin):
        """A new call's future and its call id, ``(future, call_id)``.

        The future, of ``cls`` (a :class:`FutureCore` class whose ``__init__``
        adds nothing), is left out of the cyclic collector's lists (nothing it
        holds yet leads back to it), counted on ``gate`` and pending here under
        the next call id.
        """
        future = cls(runtime, gate, origin)
        untrack(future)
        gate.inflight += 1
        return future, self.add(future)

    def call(self, cls, runtime, gate, origin, box, method, actor_id, payload, buffers):
        """:meth:`register` a call and put its CALL record in ``box``: the future
        (``ActorMethod.remote``'s common path)."""
        future, call_id = self.register(cls, runtime, gate, origin)
        box.put(_CALL_KIND, method, call_id, actor_id, payload, buffers)
        return future

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
        taken = self.take_replies(records)
        for future, kind, flags, payload, start, count in taken:
            bufs = buffers[start : start + count] if count else ()
            if (
                kind != _RESULT_KIND
                and future._retry is not None
                and future._origin._retry_reply(future, kind, flags, payload, bufs)
            ):
                continue
            future._arrive(kind, payload, bufs)
        return len(taken)

    def take_replies(self, records):
        """Claim the pending calls that ``records`` (from :func:`parse_frame`) answer.

        For each record whose call id is pending, removes it and appends
        ``(obj, kind, flags, payload, buf_start, nbuf)`` to the returned list, in
        record order. Records with unknown call ids are skipped and counted in
        :attr:`unknown`. Malformed records raise before anything is removed.
        """
        recs = list(records)
        for rec in recs:
            if type(rec) is not tuple or len(rec) != 8 or type(rec[3]) is not int:
                recs = _normalized_records(recs)
                break
        out = []
        with self._lock:
            pop = self._d.pop
            for rec in recs:
                obj = pop(rec[3], _MISSING)
                if obj is _MISSING:
                    self._unknown += 1
                else:
                    out.append((obj, rec[0], rec[1], rec[5], rec[6], rec[7]))
        return out

    def items(self):
        """A snapshot of the pending calls: ``[(call_id, obj), ...]`` in call-id order."""
        with self._lock:
            return sorted(self._d.items())  # restore() may put an old id after newer ones

    def drain(self):
        """Remove every pending call and return the stored objects in call-id order."""
        with self._lock:
            old = self._d
            self._d = {}
        return [old[k] for k in sorted(old)]


# -- futures the cyclic collector need not scan ---------------------------------------------


def untrack(obj):
    """Take ``obj`` out of the cyclic garbage collector's lists (reference counting
    still frees it). Only for an object that holds nothing that could lead back to
    it; :func:`track` it again before it may.

    Python code cannot untrack an object: here it stays tracked, which changes
    only how much work the collector does, not what it frees."""


def track(obj):
    """Put ``obj`` back in the cyclic collector's lists (no-op if it is there)."""


# -- a handle's gate and a call's future ----------------------------------------------------

# A future's states (zactor.caller.future): no reply yet, a reply not decoded yet, a
# value, an exception to raise.
_PENDING, _ARRIVED, _VALUE, _RAISED = 0, 1, 2, 3
# A plain result of at most this many bytes is decoded when it arrives, not on result().
_DECODE_ON_ARRIVAL = 256
# Decoded values that can refer to nothing, so not to their future either.
_ATOMIC = frozenset((int, float, bool, type(None), str, bytes, complex))


class CallGate:
    """Counts one handle's calls awaiting replies and tells not yet credited, for
    backpressure (``max_pending_calls`` bounds the two together).

    ``CallGate(limit)``: ``inflight`` counts up from 0 against ``limit``;
    ``token`` is what the handle's tells carry to be credited
    (``Runtime.gate_token``), ``runtime`` the runtime that token belongs to.
    """

    __slots__ = {
        "inflight": "Calls awaiting replies, and tells until credited.",
        "limit": "The handle's ``max_pending_calls``.",
        "token": "What the handle's tells carry, to be credited (``Runtime.gate_token``).",
        "runtime": "The runtime :attr:`token` belongs to.",
        "__weakref__": "",
    }

    def __init__(self, limit) -> None:
        self.inflight = 0
        self.limit = limit
        self.token = 0
        self.runtime = None

    def tell(self, box, method, actor_id, payload, buffers):
        """Count a tell on this gate and put it in ``box``, carrying :attr:`token`
        (its credit comes back by it): ``ActorMethod.tell``'s common path."""
        self.inflight += 1
        box.put(_TELL_KIND, method, self.token, actor_id, payload, buffers)


class FutureCore:
    """The state of one call's future, and what the runtime's reader does to it
    when its reply comes (:meth:`_arrive`).

    ``zactor.Future`` subclasses it with everything else (waiting, callbacks,
    errors, ``await``); the subclass provides ``_decode()`` and
    ``_run_callbacks()``, which :meth:`_arrive` calls when it must.
    ``FutureCore(runtime, gate=None, origin=None)``: ``gate`` is the handle's
    :class:`CallGate` the call counts on until it resolves, ``origin`` what was
    called (for messages).
    """

    __slots__ = (
        "_state",
        "_value",
        "_callbacks",
        "_runtime",
        "_gate",
        "_origin",
        "_retry",  # what sends the call again, if it may be (zactor.caller.future.Resend)
        "__weakref__",
    )

    def __init__(self, runtime, gate=None, origin=None) -> None:
        self._state = _PENDING
        self._value = None
        self._callbacks = None
        self._runtime = runtime
        self._gate = gate
        self._origin = origin
        self._retry = None

    def _arrive(self, kind, payload, buffers):
        """Its reply came: keep it, count the call off its gate, run its callbacks.

        A small plain result is decoded now, while the reader waits for the next
        reply anyway, rather than in ``result()`` after the last one came.
        """
        self._value = (kind, payload, buffers)
        self._state = _ARRIVED
        if kind == _RESULT_KIND and not buffers and len(payload) <= _DECODE_ON_ARRIVAL:
            self._decode_result(payload, buffers)
        gate = self._gate
        if gate is not None:
            gate.inflight -= 1
        if self._callbacks is not None:
            self._run_callbacks()

    def _decode_result(self, payload, buffers):
        """Decode a RESULT reply: the future holds its value, or the error decoding raised."""
        try:
            value = _loads(payload, buffers)
        except Exception as exc:  # undecodable reply: report it on this future only
            track(self)  # raised, its traceback will refer back to this future
            self._value = exc
            self._state = _RAISED
            return
        if type(value) not in _ATOMIC:  # it may come to refer to this future
            track(self)
        self._value = value
        self._state = _VALUE


def results(futures):
    """``[f.result() for f in futures]``: a decoded value is taken as it is."""
    return [f._value if f._state == _VALUE else f.result() for f in futures]


def first_pending(futures, start):
    """The index of the first of ``futures`` from ``start`` on still waiting for its
    reply, or ``len(futures)`` if none is."""
    i, n = start, len(futures)
    while i < n and futures[i]._state != _PENDING:
        i += 1
    return i


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
# Nothing depends on the process, the machine or ``PYTHONHASHSEED``.

import numpy as _np  # noqa: E402

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

_M64 = 0xFFFFFFFFFFFFFFFF
_P1 = 0x9E3779B185EBCA87
_P2 = 0xC2B2AE3D27D4EB4F
_P3 = 0x165667B19E3779F9
_P4 = 0x85EBCA77C2B2AE63
_P5 = 0x27D4EB2F165667C5
_JUMP_MUL = 2862933555777941757
_I64_MIN = -(2**63)
_LANE = struct.Struct("<Q")
_HALF = struct.Struct("<I")


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M64


def _xround(acc: int, lane: int) -> int:
    acc = (acc + lane * _P2) & _M64
    return (_rotl(acc, 31) * _P1) & _M64


def _merge(acc: int, val: int) -> int:
    acc ^= _xround(0, val)
    return (acc * _P1 + _P4) & _M64


def _avalanche(h: int) -> int:
    h ^= h >> 33
    h = (h * _P2) & _M64
    h ^= h >> 29
    h = (h * _P3) & _M64
    return h ^ (h >> 32)


def xxh64(data, seed: int = 0) -> int:
    """XXH64 of ``data`` (bytes-like) with ``seed`` (0..2**64-1), as an unsigned int."""
    data = bytes(data)
    seed = _field(seed, _M64, "seed")
    n = len(data)
    p = 0
    if n >= 32:
        v1 = (seed + _P1 + _P2) & _M64
        v2 = (seed + _P2) & _M64
        v3 = seed
        v4 = (seed - _P1) & _M64
        limit = n - 32
        unpack = _LANE.unpack_from
        while p <= limit:
            v1 = _xround(v1, unpack(data, p)[0])
            v2 = _xround(v2, unpack(data, p + 8)[0])
            v3 = _xround(v3, unpack(data, p + 16)[0])
            v4 = _xround(v4, unpack(data, p + 24)[0])
            p += 32
        h = (_rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)) & _M64
        h = _merge(h, v1)
        h = _merge(h, v2)
        h = _merge(h, v3)
        h = _merge(h, v4)
    else:
        h = (seed + _P5) & _M64
    h = (h + n) & _M64
    while p + 8 <= n:
        h ^= _xround(0, _LANE.unpack_from(data, p)[0])
        h = (_rotl(h, 27) * _P1 + _P4) & _M64
        p += 8
    if p + 4 <= n:
        h ^= (_HALF.unpack_from(data, p)[0] * _P1) & _M64
        h = (_rotl(h, 23) * _P2 + _P3) & _M64
        p += 4
    while p < n:
        h ^= (data[p] * _P5) & _M64
        h = (_rotl(h, 11) * _P1) & _M64
        p += 1
    return _avalanche(h)


def _hash_lane(bits: int) -> int:
    """``xxh64(bits.to_bytes(8, "little"), KEY_TAG_INT)``, unrolled."""
    h = (KEY_TAG_INT + _P5 + 8) & _M64
    h ^= _xround(0, bits)
    h = (_rotl(h, 27) * _P1 + _P4) & _M64
    return _avalanche(h)


def _int_bits(value: int) -> int:
    if value < _I64_MIN or value > _M64:
        raise OverflowError(
            f"integer key {value} is out of range: integer keys must fit in -2**63..2**64-1"
        )
    return value & _M64


def hash_key(key) -> int:
    """The 64-bit hash of one key (an int, str or bytes), as an unsigned int.

    Example::

        hash_key(7) == hash_key(np.int64(7)) != hash_key("7")
    """
    kind = type(key)
    if kind is int:
        return _hash_lane(_int_bits(key))
    if kind is str:
        return xxh64(key.encode("utf-8"), KEY_TAG_STR)
    if kind is bytes:
        return xxh64(key, KEY_TAG_BYTES)
    if isinstance(key, str):
        return xxh64(str.encode(key, "utf-8"), KEY_TAG_STR)
    if isinstance(key, (bytes, bytearray, memoryview)):
        return xxh64(key, KEY_TAG_BYTES)
    if isinstance(key, float):
        value = None
    else:
        try:
            value = operator.index(key)
        except TypeError:
            value = None
    if value is None:
        raise TypeError(
            f"a shard key must be an int, str or bytes, got {kind.__name__}: {key!r} "
            "(convert it, e.g. with str(key))"
        )
    return _hash_lane(_int_bits(value))


def _check_shards(n) -> int:
    if type(n) is not int:
        n = operator.index(n)
    if n < 1 or n > MAX_SHARDS:
        raise ValueError(f"the number of shards must be in 1..{MAX_SHARDS}, got {n}")
    return n


def jump_hash(h: int, n: int) -> int:
    """Lamping and Veach's jump consistent hash of the 64-bit ``h`` into ``n`` buckets."""
    h = _field(h, _M64, "h")
    n = _check_shards(n)
    b, j = -1, 0
    while j < n:
        b = j
        h = (h * _JUMP_MUL + 1) & _M64
        j = int((b + 1) * (2147483648.0 / ((h >> 33) + 1)))
    return b


def _jump(h: int, n: int) -> int:
    b, j = -1, 0
    while j < n:
        b = j
        h = (h * _JUMP_MUL + 1) & _M64
        j = int((b + 1) * (2147483648.0 / ((h >> 33) + 1)))
    return b


def shard_of_key(key, n: int) -> int:
    """The shard (0..n-1) of one key among ``n`` shards."""
    return _jump(hash_key(key), _check_shards(n))


def _key_list(keys) -> list:
    """The keys of ``shard_of`` as a list (numpy integer arrays as Python ints)."""
    if isinstance(keys, _np.ndarray):
        if keys.ndim != 1:
            raise ValueError(f"shard_of takes a 1-d array of keys, got shape {keys.shape}")
        return keys.tolist()
    if isinstance(keys, (str, bytes, bytearray, memoryview)):
        raise TypeError("shard_of takes a sequence of keys; use shard_of_key for one key")
    return list(keys)


def shard_of(keys, n: int):
    """The shard (0..n-1) of each key: a numpy int64 array as long as ``keys``.

    ``keys`` is a sequence of int/str/bytes keys or a 1-d numpy array (integer
    dtypes hash like the same Python ints; ``U``/``S``/object arrays like their
    items).
    """
    n = _check_shards(n)
    items = _key_list(keys)
    out = _np.empty(len(items), dtype=_np.int64)
    for i, key in enumerate(items):
        out[i] = _jump(hash_key(key), n)
    return out


class KeyRouter:
    """The target that owns a key, among a fixed list of them: the core of HashPool.

    ``router.for_key(key)`` is ``targets[shard_of_key(key, len(targets))]``.
    ``HashPool`` subclasses it and sets the targets with ``_set_targets``;
    until then there is nothing to route to.

    Example::

        router = KeyRouter(["a", "b", "c"])
        router.for_key("timbit")            # one of "a", "b", "c", the same everywhere
        router.for_keys(["timbit", 7])      # a list, one target a key
    """

    # A private list, never changed: _set_targets replaces it whole, so a routing
    # call that took it stays consistent even if hashing a key runs code (a key's
    # __index__, another thread) that sets new targets.
    _targets: list | None = None

    def __init__(self, targets=None) -> None:
        if targets is not None:
            self._set_targets(targets)

    def _set_targets(self, targets) -> None:
        """Route to ``targets`` (1..MAX_SHARDS of them, shard 0 first) from now on."""
        items = list(targets)
        _check_shards(len(items))
        self._targets = items

    def _no_targets(self):
        raise ValueError("this router has no targets yet: give it some with _set_targets")

    def for_key(self, key):
        """The target that owns ``key`` (an int, str or bytes).

        For a ``HashPool``, the owning actor's own handle: ``pool.for_key(k).m.remote()``
        sends the same one message as ``handle.m.remote()``.
        """
        targets = self._targets
        if targets is None:
            self._no_targets()
        return targets[_jump(hash_key(key), len(targets))]

    def for_keys(self, keys) -> list:
        """The owning target of each key, in order: ``for_key`` for a batch of keys.

        One call for ``[router.for_key(k) for k in keys]``, for when the keys of
        many calls are known at once::

            for h, k in zip(pool.for_keys(keys), keys):
                h.deposit.remote(k, 1.0)


        ``keys`` is what ``shard_of`` takes (a sequence of keys or a 1-d numpy
        integer array).
        """
        targets = self._targets
        if targets is None:
            self._no_targets()
        return [targets[s] for s in shard_of(keys, len(targets)).tolist()]
