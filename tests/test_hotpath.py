"""Tests of the hot path: wire framing, the batching outbox, the pending-call table,
the state of a call's future and untracking futures for the cyclic collector.

Every test runs against both the compiled ``zactor._fast`` and its pure-Python
twin ``zactor._fallback``; the hypothesis tests also check that the two agree
byte for byte, result for result and exception for exception.
"""

from __future__ import annotations

import gc
import inspect
import struct
import threading

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zactor.errors import FrameError
from zactor.wire import _fallback

try:
    from zactor.wire import _fast
except ImportError as exc:  # pragma: no cover - depends on the build
    _fast = None
    _FAST_MISSING = f"zactor._fast is not built ({exc}); run `python setup.py build_ext --inplace`"
else:
    _FAST_MISSING = ""

needs_fast = pytest.mark.skipif(_fast is None, reason=_FAST_MISSING or "built")

IMPLS = [
    pytest.param(_fast, id="fast", marks=needs_fast),
    pytest.param(_fallback, id="fallback"),
]

PREAMBLE = struct.Struct("<2sBBI")
RECORD = struct.Struct("<BBHIQQII")
U64 = 2**64 - 1

pytestmark = pytest.mark.timeout(60)

# Small example counts: the whole file runs in a few seconds.
FEW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOME = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module", params=IMPLS)
def impl(request):
    """The module under test: ``zactor._fast`` or ``zactor._fallback``."""
    return request.param


# -- helpers ------------------------------------------------------------------------------


def frame_bytes(records, nbuffer_frames=None):
    """Frame 0 built by hand with struct, independent of both implementations.

    ``records`` are ``(kind, flags, method, call_id, actor_id, payload, nbuffers)``.
    """
    head = PREAMBLE.pack(b"ZA", _fallback.PROTOCOL_VERSION, 0, len(records))
    recs = b"".join(RECORD.pack(k, f, 0, m, c, a, len(p), nb) for (k, f, m, c, a, p, nb) in records)
    return head + recs + b"".join(r[5] for r in records)


def plain(parsed):
    """parse_frame's result with payloads as bytes, for comparison."""
    return [(k, f, m, c, a, bytes(p), bs, nb) for (k, f, m, c, a, p, bs, nb) in parsed]


def outcome(fn, *args, exact_message=True, **kwargs):
    """What calling ``fn`` did: ("ok", value) or ("raised", type, kind, message)."""
    try:
        return ("ok", frames_key(fn(*args, **kwargs)))
    except FrameError as e:
        return ("raised", FrameError, e.kind, str(e))
    except Exception as e:  # noqa: BLE001 - the point is to compare any exception
        return ("raised", type(e), None, str(e) if exact_message else "")


def frames_key(value):
    """A list of frames made comparable: frame 0's bytes, then the buffers' identities."""
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [value[0], *map(id, value[1:])]
    return value


def parse_outcome(mod, data, nbuf):
    """parse_frame's outcome with payloads as bytes; only FrameError is allowed to escape."""
    try:
        return ("ok", plain(mod.parse_frame(data, nbuf)))
    except FrameError as e:
        return ("raised", e.kind, str(e))


class IndexLike:
    """An integer-like object that is not an int (has ``__index__`` only)."""

    def __init__(self, value):
        self.value = value

    def __index__(self):
        return self.value

    def __repr__(self):
        return f"IndexLike({self.value})"


# -- strategies ---------------------------------------------------------------------------

u8 = st.integers(0, 255)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, U64)
# Payloads that parse_frame copies (<= COPY_PAYLOAD_MAX bytes) and that it views.
payloads = st.one_of(st.binary(max_size=64), st.binary(min_size=250, max_size=400))
record = st.tuples(u8, u8, u32, u64, u64, payloads, st.integers(0, 3))
records = st.lists(record, min_size=1, max_size=12)


def buffers_for(nbuf, i):
    """Distinct little buffers (mixed types) for record ``i``."""
    out = []
    for j in range(nbuf):
        if j % 2:
            out.append(np.arange(i + j + 1, dtype=np.int32))
        else:
            out.append(bytes([i % 256, j]) * (j + 1))
    return out


def write(mod, recs):
    """Frames of ``recs`` built with ``mod.BatchWriter``, plus the buffers used."""
    w = mod.BatchWriter()
    all_buffers = []
    for i, (k, f, m, c, a, p, nb) in enumerate(recs):
        bufs = buffers_for(nb, i)
        all_buffers.extend(bufs)
        w.add(k, f, m, c, a, p, bufs if nb or i % 2 else None)
    return w.take(), all_buffers


# -- module surface -----------------------------------------------------------------------


@needs_fast
def test_same_public_names():
    assert _fast.__all__ == _fallback.__all__
    for name in _fast.__all__:
        assert hasattr(_fast, name) and hasattr(_fallback, name)
    for cls in ("BatchWriter", "PendingTable", "KeyRouter", "CallGate", "FutureCore"):
        public = {n for n in dir(getattr(_fallback, cls)) if not n.startswith("_")}
        assert public == {n for n in dir(getattr(_fast, cls)) if not n.startswith("_")}


def test_constants(impl):
    assert impl.MAGIC == b"ZA"
    assert impl.PROTOCOL_VERSION == 8
    assert impl.SHARED_BUFFERS == 0x01
    assert impl.PREAMBLE_SIZE == 8 == PREAMBLE.size
    assert impl.RECORD_SIZE == 32 == RECORD.size


def test_docstrings(impl):
    assert impl.__doc__
    for name in impl.__all__:
        obj = getattr(impl, name)
        if callable(obj):
            assert obj.__doc__, name
    for cls in (impl.BatchWriter, impl.Outbox, impl.PendingTable, impl.CallGate, impl.FutureCore):
        for name in dir(cls):
            if not name.startswith("_") or name in ("__len__", "__contains__"):
                assert inspect.getdoc(getattr(cls, name)), f"{cls.__name__}.{name}"


# -- round trips --------------------------------------------------------------------------


@FEW
@given(recs=records)
def test_batch_roundtrip(impl, recs):
    frames, all_buffers = write(impl, recs)
    assert len(frames) == 1 + len(all_buffers)
    for got, want in zip(frames[1:], all_buffers):
        assert got is want  # kept by reference, never copied
    assert frames[0] == frame_bytes(recs)
    parsed = impl.parse_frame(frames[0], len(frames) - 1)
    assert len(parsed) == len(recs)
    start = 0
    for (k, f, m, c, a, p, bs, nb), (k2, f2, m2, c2, a2, p2, nb2) in zip(parsed, recs):
        assert (k, f, m, c, a, bytes(p), nb) == (k2, f2, m2, c2, a2, p2, nb2)
        if len(p) <= impl.COPY_PAYLOAD_MAX:
            assert type(p) is bytes
        else:
            assert isinstance(p, memoryview) and p.readonly
        assert bs == start
        start += nb
    assert start == len(frames) - 1


@FEW
@given(rec=record)
def test_pack_one_matches_batch_writer(impl, rec):
    k, f, m, c, a, p, nb = rec
    bufs = buffers_for(nb, 0)
    one = impl.pack_one(k, f, m, c, a, p, bufs)
    w = impl.BatchWriter()
    w.add(k, f, m, c, a, p, bufs)
    assert one == w.take()
    assert one[0] == frame_bytes([rec])
    assert all(x is y for x, y in zip(one[1:], bufs))
    assert plain(impl.parse_frame(one[0], nb)) == [(k, f, m, c, a, p, 0, nb)]


@needs_fast
@SOME
@given(recs=records)
def test_implementations_agree_on_frames(recs):
    fast_frames, _ = write(_fast, recs)
    slow_frames, _ = write(_fallback, recs)
    assert fast_frames[0] == slow_frames[0]
    assert len(fast_frames) == len(slow_frames)
    k, f, m, c, a, p, nb = recs[0]
    assert _fast.pack_one(k, f, m, c, a, p) == _fallback.pack_one(k, f, m, c, a, p)
    assert _fast.pack_record(k, f, m, c, a, len(p), nb) == _fallback.pack_record(
        k, f, m, c, a, len(p), nb
    )
    nbuf = len(fast_frames) - 1
    assert plain(_fast.parse_frame(fast_frames[0], nbuf)) == plain(
        _fallback.parse_frame(fast_frames[0], nbuf)
    )


def test_writer_counts_and_resets(impl):
    w = impl.BatchWriter()
    assert (w.count, w.nbytes) == (0, 0)
    assert w.take() == []
    arr = np.zeros(10, dtype=np.float64)
    w.add(1, 0, 2, 3, 4, b"abc")
    w.add(1, 0, 2, 4, 4, bytearray(b"de"), [arr, b"xyz"])
    assert (w.count, w.nbytes) == (2, 3 + 2 + 80 + 3)
    frames = w.take()
    assert len(frames) == 3 and frames[1] is arr
    assert (w.count, w.nbytes) == (0, 0)
    assert w.take() == []
    w.add(5, 0, 0, 9, 0, b"z")
    frames = w.take()
    assert len(frames) == 1
    assert plain(impl.parse_frame(frames[0], 0)) == [(5, 0, 0, 9, 0, b"z", 0, 0)]


def test_writer_grows_past_initial_capacity(impl):
    w = impl.BatchWriter()
    big = bytes(range(256)) * 40  # 10 KiB
    for i in range(300):
        w.add(1, 0, i, i + 1, 7, big[: i * 31 % len(big)])
    frames = w.take()
    parsed = impl.parse_frame(frames[0], 0)
    assert [(m, bytes(p)) for (_, _, m, _, _, p, _, _) in parsed] == [
        (i, big[: i * 31 % len(big)]) for i in range(300)
    ]
    # Reused after a large batch: still correct.
    w.add(1, 0, 1, 1, 1, b"again")
    assert plain(impl.parse_frame(w.take()[0], 0)) == [(1, 0, 1, 1, 1, b"again", 0, 0)]


def test_extreme_field_values(impl):
    rec = (255, 255, 2**32 - 1, U64, U64, b"", 0)
    frames = impl.pack_one(*rec[:6])
    assert frames[0] == frame_bytes([rec])
    assert plain(impl.parse_frame(frames[0], 0)) == [(255, 255, 2**32 - 1, U64, U64, b"", 0, 0)]
    assert impl.pack_record(*rec[:5], 2**32 - 1, 2**32 - 1) == RECORD.pack(
        255, 255, 0, 2**32 - 1, U64, U64, 2**32 - 1, 2**32 - 1
    )


def test_payload_types(impl):
    arr = np.arange(4, dtype=np.int32)  # C-contiguous, format "i": copied as raw bytes
    for payload in (b"ab", bytearray(b"ab"), memoryview(b"xab")[1:], arr, zmq.Frame(b"ab")):
        frames = impl.pack_one(1, 0, 0, 1, 0, payload)
        assert bytes(impl.parse_frame(frames[0], 0)[0][5]) == bytes(memoryview(payload))
    for bad in (arr[::2], memoryview(b"abcd")[::2]):  # not C-contiguous
        with pytest.raises((BufferError, ValueError)):
            impl.pack_one(1, 0, 0, 1, 0, bad)
    for bad in ("text", None, 5):
        with pytest.raises(TypeError):
            impl.pack_one(1, 0, 0, 1, 0, bad)


def test_buffers_argument(impl):
    arr = np.ones((3, 4), dtype=np.float32)
    fortran = np.asfortranarray(np.ones((3, 4)))  # contiguous in memory, accepted
    gen_frames = impl.pack_one(1, 0, 0, 1, 0, b"", (b for b in [b"a", arr]))  # any iterable
    assert gen_frames[1] == b"a" and gen_frames[2] is arr
    frames = impl.pack_one(1, 0, 0, 1, 0, b"", (fortran,))
    assert frames[1] is fortran
    assert impl.pack_one(1, 0, 0, 1, 0, b"", []) == impl.pack_one(1, 0, 0, 1, 0, b"")
    with pytest.raises(BufferError, match="not contiguous"):
        impl.pack_one(1, 0, 0, 1, 0, b"", [arr[:, ::2]])
    with pytest.raises(TypeError):
        impl.pack_one(1, 0, 0, 1, 0, b"", ["not a buffer"])


def test_failed_add_leaves_writer_unchanged(impl):
    arr = np.ones((4, 4))
    w = impl.BatchWriter()
    w.add(1, 0, 0, 1, 0, b"first", [b"buf"])
    before = (w.count, w.nbytes)
    bad_calls = [
        (256, 0, 0, 2, 0, b"x", None),
        (1, 0, 0, -1, 0, b"x", None),
        (1, 0, 0.5, 2, 0, b"x", None),
        (1, 0, 0, 2, 0, "text", None),
        (1, 0, 0, 2, 0, memoryview(b"abcd")[::2], None),
        (1, 0, 0, 2, 0, b"x", [arr[::2, ::2]]),
        (1, 0, 0, 2, 0, b"x", [object()]),
    ]
    for args in bad_calls:
        with pytest.raises((TypeError, OverflowError, BufferError, ValueError)):
            w.add(*args)
        assert (w.count, w.nbytes) == before
    frames = w.take()
    assert plain(impl.parse_frame(frames[0], len(frames) - 1)) == [(1, 0, 0, 1, 0, b"first", 0, 1)]
    assert frames[1:] == [b"buf"]


def test_no_buffer_exports_left_behind(impl):
    payload, buf = bytearray(b"abc"), bytearray(b"buf")
    w = impl.BatchWriter()
    w.add(1, 0, 0, 1, 0, payload, [buf])
    impl.pack_one(1, 0, 0, 1, 0, payload, [buf])
    with pytest.raises(BufferError):
        w.add(1, 0, 0, 1, 0, payload, [np.ones((2, 2))[:, ::2]])
    with pytest.raises(OverflowError):
        impl.pack_one(1, 0, 0, -5, 0, payload, [buf])
    payload.extend(b"d")  # BufferError here if a view of it were still alive
    buf.extend(b"!")


def test_zmq_roundtrip(impl):
    ctx = zmq.Context.instance()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        a.bind("inproc://zactor-test-hotpath")
        b.connect("inproc://zactor-test-hotpath")
        arr = np.arange(1000, dtype=np.float64)
        w = impl.BatchWriter()
        w.add(1, 0, 5, 11, 3, b"first")
        w.add(1, 0, 6, 12, 3, b"second", [arr, b"raw"])
        a.send_multipart(w.take(), copy=False)
        assert b.poll(5000)
        frames = b.recv_multipart(copy=False)
        assert isinstance(frames[0], zmq.Frame)
        recs = impl.parse_frame(frames[0], len(frames) - 1)
        assert plain(recs) == [(1, 0, 5, 11, 3, b"first", 0, 0), (1, 0, 6, 12, 3, b"second", 0, 2)]
        _, _, _, _, _, _, start, n = recs[1]
        got = [memoryview(f) for f in frames[1 + start : 1 + start + n]]
        assert np.array_equal(np.frombuffer(got[0], dtype=np.float64), arr)
        assert bytes(got[1]) == b"raw"
    finally:
        a.close(linger=0)
        b.close(linger=0)


# -- parsing ------------------------------------------------------------------------------


def test_parse_frame_input_types(impl):
    recs = [(1, 2, 3, 4, 5, b"hell", 0), (3, 0, 0, 4, 5, b"", 1)]
    data = frame_bytes(recs)
    assert len(data) % 4 == 0
    want = [(1, 2, 3, 4, 5, b"hell", 0, 0), (3, 0, 0, 4, 5, b"", 0, 1)]
    for frame0 in (
        data,
        bytearray(data),
        memoryview(data),
        memoryview(b"junk" + data)[4:],
        zmq.Frame(data),
        np.frombuffer(data, dtype=np.uint8),
        np.frombuffer(data, dtype=np.uint8).reshape(1, -1),  # 2-D: viewed as bytes
        np.frombuffer(data, dtype=np.uint32),  # other item size: viewed as bytes
    ):
        assert plain(impl.parse_frame(frame0, 1)) == want, type(frame0)
    with pytest.raises(TypeError):
        impl.parse_frame(memoryview(data + data)[::2], 1)  # not contiguous
    with pytest.raises(TypeError):
        impl.parse_frame("ZA", 0)
    with pytest.raises(TypeError):
        impl.parse_frame(data, 1.0)


def test_large_payloads_are_zero_copy_and_read_only(impl):
    big = b"a" * (impl.COPY_PAYLOAD_MAX + 1)
    data = bytearray(frame_bytes([(1, 0, 0, 1, 0, big, 0)]))
    (rec,) = impl.parse_frame(data, 0)
    payload = rec[5]
    assert payload.readonly
    with pytest.raises(TypeError):
        payload[0] = 0
    data[-1] = ord("X")  # visible through the view: it was not copied
    assert bytes(payload) == big[:-1] + b"X"
    frozen = bytes(data)
    (rec,) = impl.parse_frame(frozen, 0)
    assert rec[5].obj is frozen


def test_small_payloads_are_copied_into_bytes(impl):
    for size in (0, 3, impl.COPY_PAYLOAD_MAX):
        small = b"b" * size
        data = bytearray(frame_bytes([(1, 0, 0, 1, 0, small, 0)]))
        (rec,) = impl.parse_frame(data, 0)
        assert type(rec[5]) is bytes and rec[5] == small
        if size:
            data[-1] = ord("X")  # the copy does not follow the frame
            assert rec[5] == small


def test_error_short(impl):
    for data in (b"", b"Z", b"ZA\x01\x00\x01\x00\x00"):
        with pytest.raises(FrameError) as e:
            impl.parse_frame(data, 0)
        assert e.value.kind == "short"
        assert f"{len(data)} bytes" in str(e.value)
        assert isinstance(e.value, ValueError)


def test_error_magic(impl):
    data = frame_bytes([(1, 0, 0, 1, 0, b"x", 0)])
    with pytest.raises(FrameError) as e:
        impl.parse_frame(b"GET / HTTP/1.1\r\n", 0)
    assert e.value.kind == "magic"
    assert "b'GE'" in str(e.value) and "zactor" in str(e.value)
    with pytest.raises(FrameError) as e:
        impl.parse_frame(b"ZB" + data[2:], 0)
    assert e.value.kind == "magic"


def test_error_version(impl):
    data = bytearray(frame_bytes([(1, 0, 0, 1, 0, b"x", 0)]))
    ours = _fallback.PROTOCOL_VERSION
    data[2] = ours - 1
    with pytest.raises(FrameError) as e:
        impl.parse_frame(data, 0)
    assert e.value.kind == "version"
    assert f"version {ours - 1}" in str(e.value) and f"version {ours}" in str(e.value)


def test_error_empty(impl):
    with pytest.raises(FrameError) as e:
        impl.parse_frame(PREAMBLE.pack(b"ZA", _fallback.PROTOCOL_VERSION, 0, 0), 0)
    assert e.value.kind == "empty"
    with pytest.raises(FrameError) as e:  # leftover bytes do not change the verdict
        impl.parse_frame(PREAMBLE.pack(b"ZA", _fallback.PROTOCOL_VERSION, 0, 0) + b"rest", 0)
    assert e.value.kind == "empty"


def test_error_truncated(impl):
    good = frame_bytes([(1, 0, 0, 1, 0, b"abc", 0), (1, 0, 0, 2, 0, b"defg", 0)])
    cases = {
        "records cut": good[:30],
        "payload cut": good[:-1],
        "leftover": good + b"!",
        "huge count": PREAMBLE.pack(b"ZA", _fallback.PROTOCOL_VERSION, 0, 2**32 - 1) + good[8:],
        "huge payload_len": good[:32] + struct.pack("<I", 2**32 - 1) + good[36:],
    }
    for name, data in cases.items():
        with pytest.raises(FrameError) as e:
            impl.parse_frame(data, 0)
        assert e.value.kind == "truncated", name
        assert "the sender" in str(e.value)
    # Reserved fields are not checked (room for compatible extensions).
    relaxed = bytearray(good)
    relaxed[3] = 7
    relaxed[10] = 9
    assert len(impl.parse_frame(relaxed, 0)) == 2


def test_preamble_flags_read_and_set(impl):
    """SHARED_BUFFERS rides in the preamble's flags byte; parse_frame ignores it."""
    frame = impl.pack_one(1, 0, 3, 9, 2, b"payload", [b"x" * 10])[0]
    assert impl.preamble_flags(frame) == 0
    flagged = impl.with_preamble_flags(frame, impl.SHARED_BUFFERS)
    assert type(flagged) is bytes and len(flagged) == len(frame)
    assert impl.preamble_flags(flagged) == impl.SHARED_BUFFERS == flagged[3]
    assert flagged[:3] == frame[:3] and flagged[4:] == frame[4:]
    assert impl.parse_frame(flagged, 1) == impl.parse_frame(frame, 1)
    for kind in (bytearray, memoryview, lambda b: np.frombuffer(b, np.uint8)):
        assert impl.preamble_flags(kind(flagged)) == 1
        assert impl.with_preamble_flags(kind(frame), 1) == flagged
    assert impl.preamble_flags(b"ZA") == 0  # shorter than a preamble: no flags
    with pytest.raises(ValueError, match="no 8-byte preamble"):
        impl.with_preamble_flags(b"ZA" + bytes([_fallback.PROTOCOL_VERSION]), 1)
    with pytest.raises(OverflowError, match="flags=256"):
        impl.with_preamble_flags(frame, 256)


def test_error_buffers(impl):
    data = frame_bytes([(1, 0, 0, 1, 0, b"a", 2), (1, 0, 0, 2, 0, b"b", 1)])
    assert [r[6:] for r in impl.parse_frame(data, 3)] == [(0, 2), (2, 1)]
    for n in (0, 2, 4, -1):
        with pytest.raises(FrameError) as e:
            impl.parse_frame(data, n)
        assert e.value.kind == "buffers"
        assert f"{n} arrived" in str(e.value) and "3 out-of-band" in str(e.value)


@st.composite
def damaged_frames(draw):
    """A valid frame 0, often damaged, and a (usually right) buffer frame count."""
    recs = draw(st.lists(record, min_size=1, max_size=6))
    data = bytearray(frame_bytes(recs))
    nbuf = sum(r[6] for r in recs)
    for _ in range(draw(st.integers(0, 3))):
        how = draw(st.sampled_from(["cut", "extend", "byte", "head", "u32", "nbuf"]))
        if how == "cut":
            del data[draw(st.integers(0, len(data))) :]
        elif how == "extend":
            data += draw(st.binary(min_size=1, max_size=40))
        elif how == "byte" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(u8)
        elif how == "head" and len(data) >= 8:
            data[draw(st.integers(0, 7))] = draw(st.sampled_from([0, 1, 2]) | u8)
        elif how == "u32" and len(data) >= 8:
            # Overwrite count, or a record's payload_len / nbuffers, with any u32.
            slots = [4] + [o for i in range(len(recs)) for o in (32 + 32 * i, 36 + 32 * i)]
            at = draw(st.sampled_from([s for s in slots if s + 4 <= len(data)] or [4]))
            data[at : at + 4] = struct.pack(
                "<I", draw(st.sampled_from([0, 1, 2**31, 2**32 - 1]) | u32)
            )
        elif how == "nbuf":
            nbuf = draw(st.integers(-2, nbuf + 3))
    return bytes(data), nbuf


def _check_agreement(data, nbuf):
    got = parse_outcome(_fallback, data, nbuf)
    if _fast is not None:
        assert parse_outcome(_fast, data, nbuf) == got
    return got


@SOME
@given(case=damaged_frames())
def test_damaged_frames_parse_identically(case):
    _check_agreement(*case)


@SOME
@given(data=st.binary(max_size=200), nbuf=st.integers(-1, 4))
def test_random_bytes_parse_identically(data, nbuf):
    _check_agreement(data, nbuf)
    _check_agreement(b"ZA\x01\x00" + data, nbuf)  # get past magic and version


@SOME
@given(
    version=st.sampled_from([1, 1, 1, 0, 2, 255]),
    count=st.integers(0, 4),
    data=st.binary(max_size=200),
    nbuf=st.integers(-1, 4),
)
def test_random_records_parse_identically(version, count, data, nbuf):
    _check_agreement(PREAMBLE.pack(b"ZA", version, 0, count) + data, nbuf)


# -- argument errors agree ----------------------------------------------------------------

weird_ints = st.one_of(
    u8,
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 255, 256, 2**32 - 1, 2**32, 2**63, U64, U64 + 1, -1]),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False, min_value=0, max_value=10),
    st.sampled_from([np.uint8(7), np.int64(-1), np.uint64(U64), np.float64(1.0)]),
    st.integers(-3, 300).map(IndexLike),
    st.just("1"),
)


@needs_fast
@SOME
@given(fields=st.lists(weird_ints, min_size=7, max_size=7))
def test_field_errors_agree(fields):
    for fn in ("pack_record",):
        assert outcome(getattr(_fast, fn), *fields) == outcome(getattr(_fallback, fn), *fields)
    five = fields[:5]
    assert outcome(_fast.pack_one, *five, b"p") == outcome(_fallback.pack_one, *five, b"p")
    wf, ws = _fast.BatchWriter(), _fallback.BatchWriter()
    assert outcome(wf.add, *five, b"p") == outcome(ws.add, *five, b"p")
    assert outcome(wf.take) == outcome(ws.take)


payload_objects = st.sampled_from(
    [
        b"bytes",
        bytearray(b"ba"),
        memoryview(b"mv"),
        memoryview(b"abcdef")[::2],
        np.arange(3, dtype=np.int16),
        np.arange(6, dtype=np.int16)[::2],
        np.asfortranarray(np.ones((2, 2), dtype=np.uint8)),
        "str",
        None,
        3,
        [1, 2],
    ]
)
buffer_lists = st.one_of(
    st.none(),
    st.lists(
        st.sampled_from(
            [b"x", np.ones(3), np.ones((4, 4))[:, ::2], np.ones((0, 3))[:, ::2], "s", 1]
        ),
        max_size=3,
    ),
)


@needs_fast
@SOME
@given(payload=payload_objects, buffers=buffer_lists)
def test_payload_and_buffer_errors_agree(payload, buffers):
    a = outcome(_fast.pack_one, 1, 0, 0, 1, 0, payload, buffers, exact_message=False)
    b = outcome(_fallback.pack_one, 1, 0, 0, 1, 0, payload, buffers, exact_message=False)
    assert a == b
    wf, ws = _fast.BatchWriter(), _fallback.BatchWriter()
    assert outcome(wf.add, 1, 0, 0, 1, 0, payload, buffers, exact_message=False) == outcome(
        ws.add, 1, 0, 0, 1, 0, payload, buffers, exact_message=False
    )
    assert (wf.count, wf.nbytes) == (ws.count, ws.nbytes)
    assert outcome(wf.take) == outcome(ws.take)


# -- pending table ------------------------------------------------------------------------


def reply(call_id, kind=3, payload=b"", buf_start=0, nbuf=0):
    """A record as parse_frame returns it."""
    return (kind, 0, 0, call_id, 0, memoryview(payload), buf_start, nbuf)


def test_pending_basics(impl):
    t = impl.PendingTable()
    assert len(t) == 0 and t.unknown == 0
    ids = [t.add(f"f{i}") for i in range(5)]
    assert ids == [1, 2, 3, 4, 5]
    assert len(t) == 5 and 3 in t and 6 not in t and 0 not in t
    assert "3" not in t and None not in t and 3.0 not in t
    assert np.uint64(3) in t and IndexLike(3) in t
    assert t.pop(3) == "f2"
    assert t.pop(3) is None and t.pop(99) is None and t.pop(-1) is None
    assert 3 not in t
    assert t.pop(np.int64(4)) == "f3"
    with pytest.raises(TypeError):
        t.pop("1")
    none_id = t.add(None)  # None can be stored; take_replies tells it apart
    assert none_id == 6
    frame0 = impl.pack_one(3, 1, 0, 2, 0, b"ok")[0]
    records = impl.parse_frame(frame0, 0) + [reply(77), reply(none_id, kind=4, nbuf=2)]
    got = t.take_replies(records)
    assert [(o, k, f, bytes(p), bs, nb) for (o, k, f, p, bs, nb) in got] == [
        ("f1", 3, 1, b"ok", 0, 0),
        (None, 4, 0, b"", 0, 2),
    ]
    assert t.unknown == 1
    assert t.take_replies([reply(2)]) == [] and t.unknown == 2
    assert t.items() == [(1, "f0"), (5, "f4")]
    assert t.drain() == ["f0", "f4"]
    assert len(t) == 0 and t.drain() == []
    assert t.add("next") == 7  # ids never restart


def test_pending_restore_puts_a_taken_call_back_under_its_id(impl):
    t = impl.PendingTable()
    first, second = t.add("a"), t.add("b")
    assert [o for o, *_ in t.take_replies([reply(first)])] == ["a"]
    t.restore(first, "a")  # its reply was not the answer: it waits again
    assert first in t and t.items() == [(first, "a"), (second, "b")]
    assert [o for o, *_ in t.take_replies([reply(first)])] == ["a"]
    with pytest.raises(ValueError, match="never handed out"):
        t.restore(second + 1, "c")  # ids only come from add()
    with pytest.raises(ValueError, match="never handed out"):
        t.restore(0, "c")
    assert t.add("c") == second + 1


def test_pending_take_replies_malformed(impl):
    t = impl.PendingTable()
    t.add("a")
    t.add("b")
    for bad in ([reply(1), (1, 2, 3)], [reply(1), None], [reply(1), reply("2")]):
        with pytest.raises((TypeError, ValueError)):
            t.take_replies(bad)
        assert len(t) == 2  # nothing was taken
    # Lists, tuples, generators and int-like call ids are accepted.
    assert [r[0] for r in t.take_replies(iter([list(reply(np.uint64(2)))]))] == ["b"]
    assert [r[0] for r in t.take_replies((reply(IndexLike(1)),))] == ["a"]
    assert t.unknown == 0


ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 5)),
        st.tuples(st.just("pop"), st.one_of(st.integers(-1, 25), st.just(U64 + 1))),
        st.tuples(st.just("contains"), st.one_of(st.integers(-1, 25), st.just("x"))),
        st.tuples(st.just("take"), st.lists(st.integers(0, 25), max_size=6)),
        st.tuples(st.just("drain"), st.none()),
        st.tuples(st.just("items"), st.none()),
        st.tuples(st.just("len"), st.none()),
    ),
    max_size=40,
)


def run_ops(mod, sequence):
    t = mod.PendingTable()
    log = []
    for op, arg in sequence:
        if op == "add":
            log.append(t.add(("obj", arg)))
        elif op == "pop":
            log.append(t.pop(arg))
        elif op == "contains":
            log.append(arg in t)
        elif op == "take":
            got = t.take_replies([reply(c, payload=bytes([c])) for c in arg])
            log.append([(o, k, f, bytes(p), bs, nb) for (o, k, f, p, bs, nb) in got])
        elif op == "drain":
            log.append(t.drain())
        elif op == "items":
            log.append(t.items())
        else:
            log.append(len(t))
        log.append(t.unknown)
    return log


@SOME
@given(sequence=ops)
def test_pending_tables_agree(sequence):
    slow = run_ops(_fallback, sequence)
    if _fast is not None:
        assert run_ops(_fast, sequence) == slow
    # And the fallback agrees with a plain model.
    pending, nxt, unknown, model = {}, 1, 0, []
    for op, arg in sequence:
        if op == "add":
            pending[nxt] = ("obj", arg)
            model.append(nxt)
            nxt += 1
        elif op == "pop":
            model.append(pending.pop(arg, None))
        elif op == "contains":
            model.append(arg in pending)
        elif op == "take":
            got = []
            for c in arg:
                if c in pending:
                    got.append((pending.pop(c), 3, 0, bytes([c]), 0, 0))
                else:
                    unknown += 1
            model.append(got)
        elif op == "drain":
            model.append([pending[k] for k in sorted(pending)])
            pending.clear()
        elif op == "items":
            model.append(sorted(pending.items()))
        else:
            model.append(len(pending))
        model.append(unknown)
    assert slow == model


def test_pending_threads(impl):
    t = impl.PendingTable()
    nthreads, per_thread = 4, 2000
    ids = [[] for _ in range(nthreads)]
    taken = [[] for _ in range(nthreads)]
    barrier = threading.Barrier(nthreads)

    def work(i):
        barrier.wait()
        for n in range(per_thread):
            cid = t.add((i, n))
            ids[i].append(cid)
            if n % 2:
                # Claim the previous call of this thread through take_replies.
                for obj, *_ in t.take_replies([reply(ids[i][-2])]):
                    taken[i].append(obj)
        barrier.wait()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(nthreads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    all_ids = [c for chunk in ids for c in chunk]
    assert sorted(all_ids) == list(range(1, nthreads * per_thread + 1))
    assert all(chunk == sorted(chunk) for chunk in ids)  # strictly increasing per thread
    assert sum(map(len, taken)) == nthreads * per_thread // 2
    assert t.unknown == 0
    rest = t.drain()
    assert len(rest) == nthreads * per_thread // 2
    assert len(set(rest)) == len(rest)


# -- the outbox to one peer -----------------------------------------------------------------

CALL, TELL, RESULT = 1, 2, 3  # zactor.wire.records


class Recorder:
    """A connection that keeps what it is sent, parsed."""

    def __init__(self, impl):
        self.impl = impl
        self.messages = []

    def send(self, frames):
        self.messages.append(self.impl.parse_frame(frames[0], len(frames) - 1))


def outbox(impl, linger_s=3600.0, max_batch=512, max_batch_bytes=1 << 20):
    """An outbox over a :class:`Recorder`; the list of batches ``on_first`` heard of.

    The default linger is an hour: a tell after a send always joins a batch, so no
    test depends on the clock (-1 makes every tell find the peer idle)."""
    firsts = []
    conn = Recorder(impl)
    box = impl.Outbox(
        "ipc:///p.sock", conn, 0x40, firsts.append, linger_s, max_batch, max_batch_bytes
    )
    return box, firsts


def test_outbox_sends_a_call_to_an_idle_peer_at_once_and_batches_the_rest(impl):
    box, firsts = outbox(impl)
    box.put(CALL, 3, 1, 9, b"\x90", [])
    assert [[r[:5] for r in m] for m in box.conn.messages] == [[(CALL, 0x40, 3, 1, 9)]]
    assert box.inflight == 1 and box.count == 0 and firsts == []
    box.put(CALL, 3, 2, 9, b"\x91\x01", [])  # a call awaits its reply: batched
    box.put(CALL, 3, 3, 9, b"\x91\x02", [b"x" * 10])
    assert box.count == 2 and box.inflight == 3 and firsts == [box]  # told once per batch
    assert len(box.conn.messages) == 1
    box.flush()
    batch = box.conn.messages[1]
    assert [r[3] for r in batch] == [2, 3]
    assert bytes(batch[1][5]) == b"\x91\x02" and batch[1][7] == 1  # its one buffer
    assert box.count == 0
    box.flush()  # nothing batched: nothing sent
    assert len(box.conn.messages) == 2
    box.replies_arrived(3)
    assert box.inflight == 0
    box.put(CALL, 3, 4, 9, b"\x90", [])  # idle again: at once
    assert len(box.conn.messages) == 3 and firsts == [box]


def test_outbox_tells_linger_then_go_out_with_a_full_batch(impl):
    box, firsts = outbox(impl, max_batch=3)
    box.put(TELL, 1, 7, 9, b"\x90", [])  # nothing sent before: the peer is idle
    assert len(box.conn.messages) == 1 and box.inflight == 0
    for token in range(3):  # sent within the linger: batched, until the batch is full
        box.put(TELL, 1, token, 9, b"\x90", [])
    assert len(box.conn.messages) == 2 and box.count == 0
    assert [r[0] for r in box.conn.messages[1]] == [TELL] * 3
    assert firsts == [box]
    eager, _ = outbox(impl, linger_s=-1.0)
    for token in range(3):
        eager.put(TELL, 1, token, 9, b"\x90", [])
    assert len(eager.conn.messages) == 3  # every tell finds the peer idle


def test_outbox_sends_a_batch_once_it_holds_max_batch_bytes(impl):
    box, _ = outbox(impl, max_batch_bytes=100)
    box.put(CALL, 1, 1, 9, b"\x90", [])
    box.put(CALL, 1, 2, 9, b"\x90", [b"y" * 60])
    assert len(box.conn.messages) == 1
    box.put(CALL, 1, 3, 9, b"\x90", [b"z" * 60])  # 120 bytes batched: sent
    assert len(box.conn.messages) == 2 and box.count == 0


def test_outbox_flags_can_be_changed(impl):
    # As a test playing a peer that claims another role does (tests/test_curve.py).
    box, _ = outbox(impl)
    box.flags = 0x20
    box.put(CALL, 1, 1, 9, b"\x90", [])
    assert box.flags == 0x20 and box.conn.messages[0][0][1] == 0x20


def test_outbox_add_batches_with_its_own_flags_and_never_sends(impl):
    box, firsts = outbox(impl)
    assert box.add(RESULT, 0, 0, 5, 9, b"\x01", ()) is True
    assert box.add(RESULT, 0, 0, 6, 9, b"\x02", ()) is False
    assert box.conn.messages == [] and firsts == [] and box.count == 2
    box.flush()
    assert [(r[0], r[1], r[3]) for r in box.conn.messages[0]] == [(RESULT, 0, 5), (RESULT, 0, 6)]


def test_outbox_bad_record_leaves_it_usable(impl):
    box, _ = outbox(impl)
    box.put(CALL, 1, 1, 9, b"\x90", [])
    with pytest.raises((OverflowError, ValueError, TypeError)):
        box.put(CALL, 1, -1, 9, b"\x90", [])  # a call id no record can hold
    with pytest.raises(TypeError):
        box.add(RESULT, 0, 0, 5, 9, "not bytes", ())
    box.put(CALL, 1, 2, 9, b"\x90", [])
    box.flush()
    assert [[r[3] for r in m] for m in box.conn.messages] == [[1], [2]]


def test_outbox_threads_lose_nothing(impl):
    box, _ = outbox(impl, max_batch=64)
    nthreads, per_thread = 4, 3000
    barrier = threading.Barrier(nthreads)

    def work(i):
        barrier.wait()
        for n in range(per_thread):
            if n % 3:
                box.put(CALL, i, i * per_thread + n + 1, 9, b"\x90", [])
            else:
                box.add(RESULT, 0, i, i * per_thread + n + 1, 9, b"\x90", ())
            if n % 97 == 0:
                box.flush()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(nthreads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    box.flush()
    ids = sorted(r[3] for m in box.conn.messages for r in m)
    assert ids == list(range(1, nthreads * per_thread + 1))
    calls_per_thread = sum(1 for n in range(per_thread) if n % 3)
    assert box.inflight == nthreads * calls_per_thread


# -- untracking for the cyclic collector ------------------------------------------------------


def test_untrack_and_track(impl):
    obj = [1, 2]
    impl.untrack(obj)
    # The compiled module takes it out of the collector's lists; Python code cannot.
    assert gc.is_tracked(obj) is (impl is _fallback)
    impl.untrack(obj)  # twice: no harm
    impl.track(obj)
    impl.track(obj)  # twice: no harm (CPython aborts on tracking a tracked object)
    assert gc.is_tracked(obj)
    for atomic in (7, "text", b"bytes", None):  # not collector objects: nothing to do
        impl.untrack(atomic)
        impl.track(atomic)


# -- a call's future: what remote() makes and what the reader does to it ----------------------

PENDING, ARRIVED, VALUE, RAISED = 0, 1, 2, 3  # zactor.caller.future
ERROR = 4


def future_class(impl):
    """A FutureCore subclass as zactor.Future is one: it adds ``_decode`` and
    ``_run_callbacks``, here recording that they ran."""

    class Fut(impl.FutureCore):
        __slots__ = ("ran",)

        def _decode(self):
            self.ran.append("decode")

        def _run_callbacks(self):
            self.ran.append("callbacks")

        def result(self):
            self.ran.append("result")
            return ("result of", self._value)

    return Fut


def test_call_makes_an_untracked_future_counts_it_and_sends_the_call(impl):
    Fut = future_class(impl)
    box, _ = outbox(impl)
    table, gate = impl.PendingTable(), impl.CallGate(10)
    first = table.call(Fut, "runtime", gate, "origin", box, 3, 9, b"\x90", [])
    second = table.call(Fut, "runtime", gate, "origin", box, 3, 9, b"\x91\x01", [])
    assert type(first) is Fut and first._state == PENDING and first._value is None
    assert (first._runtime, first._gate, first._origin) == ("runtime", gate, "origin")
    assert first._callbacks is None and first._retry is None
    assert gate.inflight == 2 and len(table) == 2
    assert table.pop(1) is first and table.pop(2) is second  # call ids 1 and 2
    # The first went out at once (idle peer), the second waits in the batch.
    assert [[r[:5] for r in m] for m in box.conn.messages] == [[(CALL, 0x40, 3, 1, 9)]]
    assert box.count == 1 and box.inflight == 2
    # Nothing it holds yet leads back to it: the compiled module untracks it.
    assert gc.is_tracked(first) is (impl is _fallback)


def test_call_that_cannot_be_sent_raises_and_stays_pending(impl):
    Fut = future_class(impl)
    box, _ = outbox(impl)
    table, gate = impl.PendingTable(), impl.CallGate(10)
    with pytest.raises(TypeError):
        table.call(Fut, None, gate, None, box, 3, 9, "not bytes", [])
    # As remote() did before it was compiled: counted and pending, then the error.
    assert gate.inflight == 1 and len(table) == 1


def test_arrive_decodes_a_small_result_at_once(impl):
    Fut = future_class(impl)
    gate = impl.CallGate(10)
    gate.inflight = 1
    f = Fut(None, gate, None)
    f.ran = []
    f._arrive(RESULT, b"\x2a", ())
    assert (f._state, f._value, gate.inflight, f.ran) == (VALUE, 42, 0, [])


def test_arrive_keeps_a_large_or_failed_reply_for_decode(impl):
    Fut = future_class(impl)
    big = Fut(None, None, None)
    big.ran = []
    payload = b"\xc5\x01\x2c" + b"x" * 300  # bin 16 of 300 bytes: too long to decode now
    big._arrive(RESULT, payload, ())
    assert big._state == ARRIVED and big._value == (RESULT, payload, ())
    error = Fut(None, None, None)
    error.ran = []
    error._arrive(ERROR, b"\x90", ())
    assert error._state == ARRIVED and error._value == (ERROR, b"\x90", ())
    with_buffers = Fut(None, None, None)
    with_buffers.ran = []
    with_buffers._arrive(RESULT, b"\x01", (b"frame",))
    assert with_buffers._state == ARRIVED


def test_arrive_runs_callbacks_and_tracks_a_container_value(impl):
    Fut = future_class(impl)
    f = Fut(None, None, None)
    f.ran = []
    impl.untrack(f)
    f._callbacks = ["someone waits"]
    f._arrive(RESULT, b"\x92\x01\x02", ())  # [1, 2]: it may come to refer to f
    assert f._value == [1, 2] and f._state == VALUE and f.ran == ["callbacks"]
    assert gc.is_tracked(f)


def test_an_undecodable_result_raises_on_its_future_only(impl):
    Fut = future_class(impl)
    f = Fut(None, None, None)
    f.ran = []
    f._arrive(RESULT, b"\xc1", ())  # 0xc1: never used by msgpack
    assert f._state == RAISED and isinstance(f._value, Exception)
    assert gc.is_tracked(f)


class Origin:
    """What was called, deciding whether a reply other than a result is the answer."""

    def __init__(self, not_the_answer):
        self.not_the_answer = not_the_answer
        self.asked = []

    def _retry_reply(self, future, kind, flags, payload, buffers):
        self.asked.append((kind, flags, bytes(payload), list(buffers)))
        return self.not_the_answer


def test_resolve_hands_replies_to_their_futures(impl):
    Fut = future_class(impl)
    table = impl.PendingTable()
    plain, retried, kept_waiting, error = (Fut(None, None, Origin(flag)) for flag in "aTFb")
    for f in (plain, retried, kept_waiting, error):
        f.ran = []
        table.add(f)
    retried._retry = kept_waiting._retry = "may go again"
    retried._origin.not_the_answer = False
    kept_waiting._origin.not_the_answer = True
    writer = impl.BatchWriter()
    writer.add(RESULT, 0, 0, 1, 9, b"\x07", ())
    writer.add(ERROR, 1, 0, 2, 9, b"\x90", [b"one frame"])
    writer.add(5, 1, 0, 3, 9, b"\xa4gone", ())
    writer.add(ERROR, 0, 0, 4, 9, b"\x91\x01", ())
    writer.add(RESULT, 0, 0, 99, 9, b"\x08", ())  # no call 99: skipped
    frames = writer.take()
    records = impl.parse_frame(frames[0], len(frames) - 1)
    assert table.resolve(records, frames[1:]) == 4
    assert table.unknown == 1 and len(table) == 0
    assert (plain._state, plain._value) == (VALUE, 7)
    assert retried._state == ARRIVED and retried._value[0] == ERROR
    assert [bytes(b) for b in retried._value[2]] == [b"one frame"]  # its own frames
    assert retried._origin.asked == [(ERROR, 1, b"\x90", [b"one frame"])]
    assert kept_waiting._state == PENDING  # its origin said: not the answer
    assert error._state == ARRIVED and error._origin.asked == []  # may not go again


def test_results_and_first_pending(impl):
    Fut = future_class(impl)
    futures = [Fut(None, None, None) for _ in range(4)]
    for f in futures:
        f.ran = []
    assert impl.first_pending(futures, 0) == 0
    futures[0]._arrive(RESULT, b"\x01", ())
    futures[1]._arrive(RESULT, b"\x02", ())
    assert impl.first_pending(futures, 0) == 2
    futures[3]._arrive(RESULT, b"\x04", ())
    assert impl.first_pending(futures, 2) == 2
    futures[2]._arrive(ERROR, b"\x90", ())
    assert impl.first_pending(futures, 2) == 4 == impl.first_pending(futures, 4)
    # A value is taken as it is; anything else is the future's result().
    assert impl.results(futures) == [1, 2, ("result of", (ERROR, b"\x90", ())), 4]
    assert [f.ran for f in futures] == [[], [], ["result"], []]


def test_call_gate(impl):
    gate = impl.CallGate(5)
    assert (gate.inflight, gate.limit, gate.token, gate.runtime) == (0, 5, 0, None)
    gate.inflight += 3
    gate.token, gate.runtime = 17, "runtime"
    assert (gate.inflight, gate.token, gate.runtime) == (3, 17, "runtime")
    assert {gate: 1}[gate] == 1  # a dict key, by identity (Recovery counts per gate)


def test_call_gate_tell_counts_the_tell_and_sends_it_with_the_token(impl):
    box, firsts = outbox(impl)
    gate = impl.CallGate(10)
    gate.token = 77
    gate.tell(box, 4, 9, b"\x90", [])  # nothing sent before: the peer is idle
    gate.tell(box, 4, 9, b"\x91\x01", [])  # within the linger: batched
    assert gate.inflight == 2 and box.inflight == 0  # a tell awaits a credit, not a reply
    box.flush()
    records = [r[:5] for m in box.conn.messages for r in m]
    assert records == [(TELL, 0x40, 4, 77, 9)] * 2 and firsts == [box]


# -- sorting a message's records by kind --------------------------------------------------------


def test_sort_records_splits_by_kind_in_message_order(impl):
    writer = impl.BatchWriter()
    kinds = [CALL, RESULT, 6, TELL, 4, 0, 5, 7, CALL, 200, 6, RESULT]  # 6 ACK, 4 ERROR, 5 DIED
    for call_id, kind in enumerate(kinds, 1):
        writer.add(kind, 0, 0, call_id, 9, b"\x90", ())
    records = impl.parse_frame(writer.take()[0], 0)
    requests, replies, acks, unknown = impl.sort_records(records)
    assert [r[3] for r in requests] == [1, 4, 9]  # CALL, TELL, CALL
    assert [r[3] for r in replies] == [2, 5, 7, 12]  # RESULT, ERROR, DIED, RESULT
    assert [r[3] for r in acks] == [3, 11]
    assert unknown == 3  # kinds 0, 7 and 200
    assert impl.sort_records([]) == ([], [], [], 0)


def test_register_makes_a_counted_pending_future_and_sends_nothing(impl):
    Fut = future_class(impl)
    table, gate = impl.PendingTable(), impl.CallGate(10)
    future, call_id = table.register(Fut, "runtime", gate, "origin")
    assert type(future) is Fut and future._state == PENDING and call_id == 1
    assert (future._runtime, future._gate, future._origin) == ("runtime", gate, "origin")
    assert gate.inflight == 1 and table.pop(call_id) is future
    assert gc.is_tracked(future) is (impl is _fallback)
