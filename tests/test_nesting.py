"""Deeply nested values: delivered, or refused with a clear error; never a dead worker.

Before the fix, a tuple nested 250 deep (about 1 KB) ended the worker with
SIGSEGV: each nested tuple was decoded by a msgpack call nested on the C stack.
"""

from __future__ import annotations

import msgpack
import pytest
from test_wire_robustness import Echo, ForeignPeer, frame0, parse_reply

import zactor
from zactor.caller.handle import worker_service_handle
from zactor.wire import records as wire
from zactor.wire.serialization import (
    MAX_TUPLE_DEPTH,
    NestingError,
    dumps,
    dumps_call,
    loads,
    loads_call,
)

pytestmark = pytest.mark.timeout(60)


def nested_tuple(depth: int, leaf=0):
    value = leaf
    for _ in range(depth):
        value = (value,)
    return value


def nested_list(depth: int):
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def depth_of(value) -> int:
    """How deep ``value`` nests (its first items), counted without recursion."""
    depth = 0
    while type(value) in (tuple, list) and value:
        value = value[0]
        depth += 1
    return depth


@pytest.mark.parametrize("depth", [1, 2, 250, 450, 800])
def test_deep_tuples_round_trip_in_process(depth):
    value = nested_tuple(depth, leaf="leaf")
    back = loads(*dumps(value))
    assert depth_of(back) == depth and type(back) is tuple
    args, kwargs = loads_call(*dumps_call((value,), {"k": value}))
    assert depth_of(args[0]) == depth and depth_of(kwargs["k"]) == depth


def test_deep_lists_fall_back_to_pickle():
    """msgpack packs lists about 500 deep; deeper ones travel pickled."""
    back = loads(*dumps(nested_list(800)))
    assert depth_of(back) == 800 and type(back) is list


@pytest.mark.parametrize("make", [nested_tuple, nested_list], ids=["tuple", "list"])
def test_a_value_deeper_than_pickle_goes_is_refused_naming_the_limit(make):
    with pytest.raises(NestingError, match="recursion limit"):
        dumps(make(5000))
    with pytest.raises(NestingError, match="recursion limit"):
        dumps_call((make(5000),), {})


def test_tuples_in_lists_and_dict_keys_inside_tuples():
    value = ((1, [2, (3, {(4, 5): (6,)})], {"k": ((7,),)}), [(8,)], {(9,): [10]})
    assert loads(*dumps(value)) == value
    assert loads(*dumps(nested_tuple(300, leaf={(1, (2,)): [(3,)]}))) is not None


def packed_nested_tuple(depth: int) -> bytes:
    """msgpack bytes of a tuple nested ``depth`` deep, built by hand as a peer would."""
    items = msgpack.packb([0])  # the innermost tuple's items
    for _ in range(depth - 1):
        items = msgpack.packb([msgpack.ExtType(1, items)])
    return msgpack.packb(msgpack.ExtType(1, items))


def test_a_foreign_payload_nesting_past_the_limit_is_refused():
    assert depth_of(loads(packed_nested_tuple(MAX_TUPLE_DEPTH))) == MAX_TUPLE_DEPTH
    with pytest.raises(NestingError, match=f"deeper than {MAX_TUPLE_DEPTH}"):
        loads(packed_nested_tuple(MAX_TUPLE_DEPTH + 1))


def test_a_deep_tuple_reaches_an_actor_and_back(cluster):
    h = Echo.remote()
    for depth in (250, 800):
        back = h.same.remote(nested_tuple(depth, leaf="x")).result(timeout=30)
        assert depth_of(back) == depth
    with pytest.raises(NestingError, match="recursion limit"):
        h.same.remote(nested_tuple(5000))
    assert h.bump.remote().result(timeout=30) == 1  # the worker lives on, state intact


def test_a_peer_frame_of_deep_tuples_does_not_kill_the_worker(cluster):
    h = Echo.remote()
    assert h.bump.remote().result(timeout=30) == 1
    service = worker_service_handle(h._address)
    before = service.stats.remote().result(timeout=30)["dropped"].get("too-deep", 0)
    peer = ForeignPeer(h._address)
    try:
        method = h._methods.index("same")
        for depth, ok in ((300, True), (MAX_TUPLE_DEPTH + 10, False)):
            payload = b"\x91\x91" + packed_nested_tuple(depth)  # [[arg]]: one argument
            peer.send(frame0([(wire.CALL, method, depth, h._actor_id, payload, 0)]))
            ((kind, call_id, _actor, value),) = parse_reply(peer.receive())
            assert call_id == depth
            if ok:
                assert kind == wire.RESULT, value
                assert depth_of(value) == depth
            else:
                assert kind == wire.ERROR and "deeper than" in str(value)
    finally:
        peer.close()
    assert h.bump.remote().result(timeout=30) == 2
    assert service.stats.remote().result(timeout=30)["dropped"]["too-deep"] == before + 1
    zactor.kill(h)
