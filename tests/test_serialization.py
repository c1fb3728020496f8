"""Unit tests of ``zactor.serialization`` (no cluster): dumps/loads, dumps_call/loads_call.

Values must come back with their exact types (tuples stay tuples, bools stay bools),
numpy arrays and large bytes travel as out-of-band buffers, anything else is pickled.
"""

from __future__ import annotations

import collections
import datetime
import decimal
import fractions
import math
import pickle

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zactor.wire import serialization
from zactor.wire.serialization import OUT_OF_BAND_BYTES, dumps, dumps_call, loads, loads_call

pytestmark = pytest.mark.timeout(60)

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def same(a, b) -> bool:
    """Equal with the exact same types all the way down (``1 == 1.0 == True`` is not enough)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(
            same(k1, k2) and same(a[k1], b[k2]) for k1, k2 in zip(a, b)
        )
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def transmitted(buffers):
    """The buffers as the receiver gets them: separate read-only byte frames."""
    return [memoryview(bytes(memoryview(b).cast("B"))) for b in buffers]


def roundtrip(value):
    payload, buffers = dumps(value)
    assert isinstance(payload, bytes)
    return loads(payload, transmitted(buffers))


def roundtrip_call(args, kwargs):
    payload, buffers = dumps_call(args, kwargs)
    return loads_call(payload, transmitted(buffers))


# -- strategies ----------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.integers()  # includes ints wider than 64 bits
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.binary(max_size=40)
)
hashable = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.tuples(inner, inner) | st.tuples(inner),
    max_leaves=5,
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.lists(inner, max_size=5).map(tuple)
        | st.dictionaries(st.text(max_size=8), inner, max_size=5)
        | st.dictionaries(hashable, inner, max_size=4)
    ),
    max_leaves=30,
)


# -- plain values ------------------------------------------------------------------------------


@SETTINGS
@given(values)
def test_roundtrip_nested_values_keep_types(value):
    assert same(roundtrip(value), value)


@SETTINGS
@given(
    st.lists(values, max_size=4).map(tuple),
    st.dictionaries(st.text(max_size=6), values, max_size=4),
)
def test_roundtrip_call_arguments(args, kwargs):
    got_args, got_kwargs = roundtrip_call(args, kwargs)
    assert same(tuple(got_args), args)
    assert same(got_kwargs, kwargs)


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -1,
        2**63 - 1,
        -(2**63),
        2**64 - 1,
        2**64,
        -(2**63) - 1,
        2**1000,
        -(7**300),
        0.0,
        -0.0,
        1.5,
        float("inf"),
        "",
        "ünïcødé ✓",
        b"",
        b"\x00\xff",
        [],
        (),
        {},
        (1,),
        ((),),
        [(1, 2), [3, (4,)]],
        {"a": (1, 2), "b": [()]},
        {(1, 2): "tuple key", 3: "int key", None: "none key"},
        [2**100, (2**70, -(2**65))],
        {"big": 2**90},
    ],
    ids=repr,
)
def test_examples_roundtrip_exactly(value):
    assert same(roundtrip(value), value)
    args, kwargs = roundtrip_call((value,), {"k": value})
    assert same(args[0], value) and same(kwargs["k"], value)


def test_nan_roundtrips():
    assert math.isnan(roundtrip(float("nan")))


def test_objects_msgpack_cannot_hold_are_pickled_and_come_back_equal():
    values = [
        {1, 2, 3},
        frozenset({"a"}),
        complex(1, 2),
        decimal.Decimal("1.25"),
        fractions.Fraction(1, 3),
        datetime.datetime(2024, 1, 2, 3, 4, 5),
        collections.OrderedDict(a=1, b=2),
        collections.defaultdict(int, a=1),
        collections.Counter("hello"),
        np.float64(2.5),
        np.int32(7),
        range(3, 10),
        ValueError("an exception"),
    ]
    for v in values:
        back = roundtrip(v)
        assert type(back) is type(v), v
        if isinstance(v, BaseException):
            assert back.args == v.args
        else:
            assert back == v


class Point:
    """A plain class: pickled by reference (this module is importable)."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return type(other) is Point and (self.x, self.y) == (other.x, other.y)


def test_custom_objects_and_functions():
    assert roundtrip(Point(1, (2, 3))) == Point(1, (2, 3))
    assert roundtrip([Point(0, 0), {"p": Point(5, 6)}]) == [Point(0, 0), {"p": Point(5, 6)}]
    square = roundtrip(lambda x: x * x)  # cloudpickle carries lambdas
    assert square(7) == 49


def test_subclasses_of_native_types_keep_their_class():
    class MyInt(int):
        pass

    class MyStr(str):
        pass

    class MyList(list):
        pass

    for v in (MyInt(5), MyStr("s"), MyList([1, (2,)])):
        back = roundtrip(v)
        assert type(back).__name__ == type(v).__name__ and back == v


def test_no_args_call_is_cheap_and_roundtrips():
    payload, buffers = dumps_call((), {})
    assert buffers == []
    assert loads_call(payload, []) == ([], {})
    assert len(payload) <= 4


def test_loads_call_returns_a_list_and_a_dict():
    args, kwargs = roundtrip_call((1, (2,)), {"x": [3]})
    assert isinstance(args, list) and isinstance(kwargs, dict)
    assert same(args, [1, (2,)]) and same(kwargs, {"x": [3]})


def test_call_with_a_big_int_and_arrays_falls_back_whole():
    a = np.arange(10_000, dtype=np.float64)
    args, kwargs = roundtrip_call((2**80, a), {"k": (2**70,), "arr": a})
    assert args[0] == 2**80
    np.testing.assert_array_equal(args[1], a)
    assert same(kwargs["k"], (2**70,))
    np.testing.assert_array_equal(kwargs["arr"], a)


def test_unknown_extension_code_is_an_error():
    payload = msgpack.packb(msgpack.ExtType(99, b"x"))
    with pytest.raises(ValueError, match="extension"):
        loads(payload, [])


# -- numpy and large bytes -------------------------------------------------------------------------


def test_large_array_is_out_of_band_without_copy():
    a = np.arange(256 * 1024, dtype=np.float32)  # 1 MiB
    payload, buffers = dumps(a)
    assert len(buffers) == 1
    assert len(payload) < 200  # only the metadata is in the payload
    view = np.frombuffer(buffers[0], dtype=np.uint8)
    assert np.shares_memory(view, a), "the buffer should be the array's memory, not a copy"
    back = loads(payload, transmitted(buffers))
    assert back.dtype == a.dtype and back.shape == a.shape
    np.testing.assert_array_equal(back, a)
    assert not back.flags.writeable  # received frames are read-only


def test_small_array_is_inline_and_exact():
    a = np.arange(12, dtype=np.int16).reshape(3, 4)
    payload, buffers = dumps(a)
    assert buffers == []
    back = loads(payload, [])
    assert back.dtype == a.dtype and back.shape == a.shape
    np.testing.assert_array_equal(back, a)


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((0,), dtype=np.float64),
        np.zeros((3000, 0), dtype=np.float32),
        np.array(3.25),
        np.array(7, dtype=np.int64),
        np.arange(20_000, dtype=">i4"),  # big-endian
        np.arange(20_000, dtype=np.complex128),
        np.arange(20_000, dtype=np.uint8) % 2 == 0,  # bool
        np.arange(5_000).astype("datetime64[s]"),
        np.array(["abc", "de"] * 2_000),  # unicode
        np.asfortranarray(np.arange(40_000.0).reshape(200, 200)),  # Fortran order
        np.arange(60_000, dtype=np.int32)[::3],  # strided view
        np.arange(24.0).reshape(2, 3, 4).transpose(2, 0, 1),  # small, not contiguous
        np.ones((64, 64, 4), dtype=np.float16),
    ],
    ids=lambda a: f"{a.dtype}-{a.shape}",
)
def test_arrays_of_many_kinds_roundtrip(array):
    back = roundtrip(array)
    assert isinstance(back, np.ndarray)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_object_arrays_are_pickled():
    a = np.array([1, "two", (3,)], dtype=object)
    back = roundtrip(a)
    assert back.dtype == object and list(back) == [1, "two", (3,)]


def test_arrays_nested_in_containers_and_arguments():
    big = np.arange(100_000, dtype=np.float32)
    small = np.arange(5, dtype=np.int8)
    value = {"w": [big, small], "t": (big[:10], {"deep": big})}
    back = roundtrip(value)
    np.testing.assert_array_equal(back["w"][0], big)
    np.testing.assert_array_equal(back["w"][1], small)
    assert type(back["t"]) is tuple
    np.testing.assert_array_equal(back["t"][1]["deep"], big)
    payload, buffers = dumps(value)
    assert len(buffers) == 2  # the two large arrays, each in its own frame
    args, kwargs = roundtrip_call((big,), {"s": small, "b": big})
    np.testing.assert_array_equal(args[0], big)
    np.testing.assert_array_equal(kwargs["b"], big)


def test_array_subclass_and_array_inside_a_custom_object():
    m = np.ma.masked_array(np.arange(4), mask=[0, 1, 0, 0])
    back = roundtrip(m)
    assert isinstance(back, np.ma.MaskedArray) and back.mask.tolist() == m.mask.tolist()
    p = Point(np.arange(50_000, dtype=np.float64), 1)
    payload, buffers = dumps(p)
    assert buffers, "the array inside a pickled object should still travel out of band"
    back = loads(payload, transmitted(buffers))
    np.testing.assert_array_equal(back.x, p.x)


@SETTINGS
@given(
    st.sampled_from(["<f4", "<f8", "<i2", "<i8", "|u1", ">f8", "<c8"]),
    st.lists(st.integers(0, 40), min_size=0, max_size=3),
)
def test_arrays_hypothesis(dtype, shape):
    a = (np.arange(int(np.prod(shape)) if shape else 1) % 97).astype(dtype).reshape(shape)
    back = roundtrip(a)
    assert back.dtype == a.dtype and back.shape == a.shape
    np.testing.assert_array_equal(back, a)


def test_large_bytes_travel_as_frames_and_come_back_as_bytes():
    big = bytes(range(256)) * 4096  # 1 MiB
    payload, buffers = dumps(big)
    assert len(buffers) == 1 and len(payload) < 100
    back = loads(payload, transmitted(buffers))
    assert type(back) is bytes and back == big
    args, kwargs = roundtrip_call((big,), {"b": big})
    assert type(args[0]) is bytes and args[0] == big and kwargs["b"] == big
    small = b"x" * (OUT_OF_BAND_BYTES - 1)
    assert dumps(small)[1] == []
    assert roundtrip(small) == small
    nested = [big, (big,)]
    assert same(roundtrip(nested), nested)  # deeper inside: copied, still exact


def test_payload_is_plain_bytes_and_loads_accepts_memoryviews():
    payload, _ = dumps({"a": [1, (2, 3)]})
    assert isinstance(payload, bytes)
    assert same(loads(memoryview(payload), []), {"a": [1, (2, 3)]})
    assert same(loads(bytearray(payload)), {"a": [1, (2, 3)]})


def test_out_of_band_threshold_is_documented_value():
    assert serialization.OUT_OF_BAND_BYTES == 8 * 1024


def test_arrays_over_received_zmq_frames_are_read_only():
    import zmq

    a = np.arange(50_000, dtype=np.float64)
    payload, buffers = dumps(a)
    frames = [zmq.Frame(bytes(memoryview(b).cast("B"))) for b in buffers]
    back = loads(payload, frames)
    np.testing.assert_array_equal(back, a)
    assert not back.flags.writeable


@pytest.mark.parametrize("n", [3, 5_000], ids=["inline", "out-of-band"])
def test_structured_arrays_keep_their_fields(n):
    a = np.zeros(n, dtype=[("id", "<i4"), ("value", "<f8")])
    a["id"] = np.arange(n)
    a["value"] = np.arange(n) / 2
    back = roundtrip(a)
    assert back.dtype == a.dtype
    np.testing.assert_array_equal(back["id"], a["id"])


@pytest.mark.parametrize("n", [3, 3 * OUT_OF_BAND_BYTES], ids=["small", "large"])
def test_bytearray_and_memoryview_travel_as_bytes(n):
    """Documented in zactor.serialization: msgpack packs them natively, as bin."""
    for value in (bytearray(b"z" * n), memoryview(b"z" * n)):
        back = roundtrip(value)
        assert type(back) is bytes and back == bytes(value)
        args, _ = roundtrip_call((value,), {})
        assert type(args[0]) is bytes and args[0] == bytes(value)


def test_a_value_pickle_itself_refuses_raises_on_dumps():
    class Unpicklable:
        def __reduce__(self):
            raise TypeError("not today")

    with pytest.raises(TypeError, match="not today"):
        dumps(Unpicklable())
    with pytest.raises(TypeError, match="not today"):
        dumps_call((1, Unpicklable()), {})
    import threading

    with pytest.raises(TypeError):
        dumps(threading.Lock())


def test_pickle_fallback_payload_is_not_confused_with_arguments():
    """A call whose single argument is a tuple is not taken for the pickled fallback."""
    args, kwargs = roundtrip_call(((1, 2),), {})
    assert same(args, [(1, 2)]) and kwargs == {}
    args, kwargs = roundtrip_call(((2**70, 1),), {})
    assert same(args, [(2**70, 1)]) and kwargs == {}


def test_serialization_is_deterministic_for_plain_values():
    value = {"a": [1, 2, (3,)], "b": {"c": b"x"}}
    assert dumps(value)[0] == dumps(value)[0]
    assert pickle.loads(pickle.dumps(value)) == value


# -- the reused Packers of scalars and scalar arguments ------------------------------------------


def test_scalar_arguments_from_many_threads_stay_their_own():
    """Threads pack scalar arguments at once, some failing half-way (an int too wide
    for msgpack), and every payload still decodes to its own thread's arguments."""
    import threading

    failures = []

    def work(t: int) -> None:
        for i in range(2_000):
            args = (t, i, f"thread-{t}", float(i)) if i % 7 else (t, 2**70 + i)
            payload, buffers = dumps_call(args, {})
            got, _ = loads_call(payload, buffers)
            if got != list(args):
                failures.append((args, got))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


@pytest.mark.skipif(not serialization._PACKER_SHARABLE, reason="msgpack's pure-Python Packer")
def test_a_large_payload_does_not_stay_in_a_reused_packer():
    """A reused Packer keeps a buffer the size of the largest payload it packed: after
    a large one it is replaced, so the memory goes with it."""
    large = "x" * (serialization._REUSED_PACKER_MAX + 1)
    before = serialization._pack_scalar
    assert loads(*dumps(large)) == large
    assert serialization._pack_scalar is not before
    kept = serialization._pack_scalar
    assert loads(*dumps("small")) == "small"
    assert serialization._pack_scalar is kept
    assert loads_call(*dumps_call((large, 1), {})) == ([large, 1], {})
