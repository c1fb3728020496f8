"""Properties, with hypothesis: every value of a supported kind round-trips, and the
compiled codec and its pure-Python twin write and accept the same bytes."""

from __future__ import annotations

import fractions
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from zactor.errors import FrameError
from zactor.wire import _fallback
from zactor.wire.serialization import OUT_OF_BAND_BYTES, dumps, dumps_call, loads, loads_call

pytestmark = pytest.mark.timeout(120)

fast = pytest.importorskip("zactor.wire._fast")

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def same(a, b) -> bool:
    """Equal values of the same types all the way down (arrays: dtype, shape, bytes)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, complex):
        return same(a.real, b.real) and same(a.imag, b.imag)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


# Array dtypes: every plain scalar kind numpy has (bool, ints, floats, complex,
# datetimes, timedeltas, bytes, str), in both byte orders where they have one.
dtypes = (
    hnp.scalar_dtypes()
    | hnp.byte_string_dtypes(max_len=4)
    | hnp.unicode_string_dtypes(max_len=4)
    | hnp.integer_dtypes(endianness=">")
    | hnp.floating_dtypes(endianness=">")
)


@st.composite
def arrays(draw, min_side=0, max_side=4):
    """An array of any plain dtype, C-ordered, Fortran-ordered, strided or 0-d."""
    array = draw(
        hnp.arrays(
            draw(dtypes),
            hnp.array_shapes(min_dims=0, max_dims=3, min_side=min_side, max_side=max_side),
        )
    )
    layout = draw(st.sampled_from(["c", "fortran", "strided", "transposed"]))
    if layout == "fortran":
        array = np.asfortranarray(array)
    elif layout == "strided" and array.ndim:
        array = array[::2]
    elif layout == "transposed":
        array = array.T
    return array


scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # any size: wider than 64 bits travels pickled
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
pickled = (
    st.frozensets(st.integers(), max_size=3)
    | st.complex_numbers()
    | st.fractions()
    | st.builds(fractions.Fraction, st.integers(), st.integers(min_value=1))
)
keys = st.text(max_size=5) | st.integers() | st.tuples(st.integers(), st.text(max_size=3))
values = st.recursive(
    scalars | pickled | arrays(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(keys, children, max_size=4)
    ),
    max_leaves=25,
)


@SETTINGS
@given(values)
def test_any_supported_value_round_trips(value):
    payload, buffers = dumps(value)
    assert same(loads(payload, [memoryview(b) for b in buffers]), value)


@SETTINGS
@given(st.lists(values, max_size=4), st.dictionaries(st.text(max_size=5), values, max_size=3))
def test_any_call_round_trips(args, kwargs):
    payload, buffers = dumps_call(tuple(args), kwargs)
    got_args, got_kwargs = loads_call(payload, [memoryview(b) for b in buffers])
    assert same(list(got_args), args) and same(got_kwargs, kwargs)


@settings(max_examples=40, deadline=None)
@given(arrays(min_side=40, max_side=60))
def test_large_arrays_travel_out_of_band_and_come_back_read_only(array):
    payload, buffers = dumps(array)
    back = loads(payload, [memoryview(b) for b in buffers])
    assert same(back, np.ascontiguousarray(array)) or same(back, array)
    assert not back.flags.writeable
    if array.nbytes >= OUT_OF_BAND_BYTES and not array.dtype.hasobject:
        assert buffers, "a large array must travel as its own frame"


# -- the frame codec: _fast and _fallback -------------------------------------------------

records = st.lists(
    st.tuples(
        st.integers(1, 255),  # kind
        st.integers(0, 255),  # flags
        st.integers(0, 2**32 - 1),  # method
        st.integers(0, 2**64 - 1),  # call id
        st.integers(0, 2**64 - 1),  # actor id
        st.binary(max_size=300),  # payload
        st.lists(st.binary(min_size=1, max_size=8), max_size=3),  # out-of-band buffers
    ),
    min_size=1,
    max_size=6,
)


def _frames(impl, recs) -> list[bytes]:
    writer = impl.BatchWriter()
    for kind, flags, method, call_id, actor_id, payload, buffers in recs:
        writer.add(kind, flags, method, call_id, actor_id, payload, buffers)
    return [bytes(f) for f in writer.take()]


def _parsed(impl, frames):
    try:
        out = impl.parse_frame(frames[0], len(frames) - 1)
    except FrameError as exc:
        return ("error", exc.kind)
    return [(*r[:5], bytes(r[5]), *r[6:]) for r in out]


@SETTINGS
@given(records)
def test_both_codecs_write_the_same_bytes_and_read_them_alike(recs):
    frames = _frames(fast, recs)
    assert frames == _frames(_fallback, recs)
    one = recs[0]
    assert [bytes(f) for f in fast.pack_one(*one)] == [bytes(f) for f in _fallback.pack_one(*one)]
    parsed = _parsed(fast, frames)
    assert parsed == _parsed(_fallback, frames)
    assert [r[:5] for r in parsed] == [r[:5] for r in recs]


@SETTINGS
@given(records, st.data())
def test_both_codecs_refuse_damaged_frames_alike(recs, data):
    frames = _frames(fast, recs)
    frame0 = bytearray(frames[0])
    how = data.draw(st.sampled_from(["flip", "cut", "extend", "buffers"]))
    if how == "flip":
        at = data.draw(st.integers(0, len(frame0) - 1))
        frame0[at] ^= data.draw(st.integers(1, 255))
    elif how == "cut":
        del frame0[data.draw(st.integers(0, len(frame0) - 1)) :]
    elif how == "extend":
        frame0 += data.draw(st.binary(min_size=1, max_size=8))
    damaged = [bytes(frame0), *frames[1:]]
    if how == "buffers":
        damaged = damaged + [b"extra"] if data.draw(st.booleans()) else damaged[:-1] or damaged
    assert _parsed(fast, damaged) == _parsed(_fallback, damaged)


@SETTINGS
@given(st.binary(max_size=200), st.integers(0, 4))
def test_both_codecs_treat_any_bytes_alike(frame0, nbuffers):
    assert _parsed(fast, [frame0] + [b"x"] * nbuffers) == _parsed(
        _fallback, [frame0] + [b"x"] * nbuffers
    )
