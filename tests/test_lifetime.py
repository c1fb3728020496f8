"""Names and reference-counted lifetime (issue 4): an actor lives while a handle to it
does, in any process; named actors, namespaces and ``get_if_exists``.

Actors here end on their own when their handles are dropped, so each test polls the
head's registry with a generous bound rather than expecting an exact moment.
"""

from __future__ import annotations

import gc

import pytest

import zactor
from zactor.caller.handle import head_handle
from zactor.control.ledger import RefLedger
from zactor.endpoint.refs import CLAIMED, HOLD, RELEASE, SENT, HandleRefs

pytestmark = pytest.mark.timeout(60)

#: How long an actor whose last handle is gone may take to end (reports go every 0.1 s).
END_WITHIN_S = 10.0


@zactor.remote
class Counter:
    def __init__(self, start=0):
        self.n = start

    def increment(self):
        self.n += 1
        return self.n

    def value(self):
        return self.n


@zactor.remote
class Holder:
    """Keeps handles it is given, and calls through them."""

    def __init__(self):
        self.kept = []

    def keep(self, handle):
        self.kept.append(handle)
        return len(self.kept)

    def call_through(self):
        return [h.increment.remote().result(timeout=30) for h in self.kept]

    def drop_all(self):
        self.kept.clear()
        return 0

    def look_at(self, handles):
        """Receives copies and lets them go when the call returns."""
        return [h._actor_id for h in handles]


@zactor.remote
class Appender:
    def append(self, path, line):
        with open(path, "a") as f:
            f.write(f"{line}\n")


def alive_ids() -> set:
    return {info["actor_id"] for info in head_handle().list_actors.remote().result(timeout=30)}


def wait_ended(actor_id: int, wait_for) -> None:
    gc.collect()
    wait_for(lambda: actor_id not in alive_ids(), timeout=END_WITHIN_S)


# -- reference counting ------------------------------------------------------------------


def test_dropping_the_last_handle_ends_the_actor(cluster, wait_for):
    c = Counter.remote()
    assert c.increment.remote().result(timeout=30) == 1
    actor_id = c._actor_id
    assert actor_id in alive_ids()
    del c
    wait_ended(actor_id, wait_for)


def test_a_copy_held_by_another_actor_keeps_it_alive_until_dropped(cluster, wait_for):
    holder = Holder.remote()
    c = Counter.remote(10)
    actor_id = c._actor_id
    assert holder.keep.remote(c).result(timeout=30) == 1
    del c
    gc.collect()
    # The driver's handle is gone; the holder's copy still works, however long we look.
    for expected in (11, 12, 13):
        assert holder.call_through.remote().result(timeout=30) == [expected]
        assert actor_id in alive_ids()
    holder.drop_all.remote().result(timeout=30)
    wait_ended(actor_id, wait_for)
    assert holder._actor_id in alive_ids()  # the holder itself is still held by us


def test_copies_that_a_call_lets_go_do_not_keep_it_alive(cluster, wait_for):
    holder = Holder.remote()
    c = Counter.remote()
    actor_id = c._actor_id
    assert holder.look_at.remote([c, c]).result(timeout=30) == [actor_id, actor_id]
    assert c.increment.remote().result(timeout=30) == 1  # our own handle still counts
    del c
    wait_ended(actor_id, wait_for)


def test_calls_sent_before_the_last_handle_went_still_run(cluster, tmp_path, wait_for):
    path = str(tmp_path / "lines.txt")
    a = Appender.remote()
    actor_id = a._actor_id
    for i in range(50):
        a.append.tell(path, i)
    del a
    wait_ended(actor_id, wait_for)
    with open(path) as f:
        assert f.read().split() == [str(i) for i in range(50)]


def test_a_future_keeps_its_actor_alive_until_it_resolves(cluster):
    future = Counter.remote(41).increment.remote()  # the handle itself is dropped at once
    gc.collect()
    assert future.result(timeout=30) == 42


def test_a_bound_method_keeps_its_actor_alive(cluster, wait_for):
    c = Counter.remote()
    actor_id = c._actor_id
    stale = c.increment  # an ActorMethod keeps the handle, and so the actor, alive
    del c
    gc.collect()
    assert stale.remote().result(timeout=30) == 1
    del stale
    wait_ended(actor_id, wait_for)


# -- names ---------------------------------------------------------------------------------


def test_get_actor_handle_keeps_a_named_actor_alive(cluster, unique_name, wait_for):
    name = unique_name("counter")
    first = Counter.options(name=name).remote(3)
    actor_id = first._actor_id
    second = zactor.get_actor(name)
    del first
    gc.collect()
    assert second.increment.remote().result(timeout=30) == 4
    assert actor_id in alive_ids()
    del second
    wait_ended(actor_id, wait_for)
    with pytest.raises(ValueError, match=name):
        zactor.get_actor(name)
    again = Counter.options(name=name).remote(100)  # the name is free again
    assert zactor.get_actor(name).value.remote().result(timeout=30) == 100
    assert again._actor_id != actor_id


def test_bad_placement_options_fail_at_once_with_what_to_do(cluster):
    with pytest.raises(ValueError, match="num_cpus"):
        Counter.options(num_cpus=2)
    with pytest.raises(ValueError, match="num_cpus=..."):
        Counter.options(resources={"CPU": 1})
    with pytest.raises(ValueError, match="non-negative"):
        Counter.options(resources={"GPU": -1})


def test_a_resource_no_node_offers_fails_at_the_first_call(cluster):
    # Created without waiting for the head: the refusal comes with the first call's result.
    handle = Counter.options(resources={"UNICORN": 1}).remote()
    with pytest.raises(zactor.ClusterError, match="UNICORN") as info:
        handle.value.remote().result(timeout=30)
    assert "start the cluster with it" in str(info.value)
    assert isinstance(info.value, zactor.ActorCreationError)
    with pytest.raises(zactor.ActorDiedError, match="UNICORN"):  # and every later call
        handle.value.remote().result(timeout=30)


# -- the two halves of the count, without a cluster ---------------------------------------


def test_handle_refs_report_only_zero_crossings_in_order():
    refs = HandleRefs()
    refs.acquire(7)
    refs.acquire(7)
    token = refs.sent(7)
    refs.release(7)
    refs.acquire(8)
    refs.claimed(8, 99)
    refs.release(7)
    assert refs.take_report() == [
        [HOLD, 7, None],
        [SENT, 7, token],
        [HOLD, 8, None],
        [CLAIMED, 8, 99],
        [RELEASE, 7, None],
    ]
    assert not refs.pending() and refs.take_report() == []


def test_ledger_keeps_an_actor_while_a_copy_is_in_transit_whatever_the_order():
    freed = []
    for claim_first in (False, True):
        freed.clear()
        ledger = RefLedger()
        ledger.track(1, "owner")
        sent = [SENT, 1, 5]
        receiver = [[HOLD, 1, None], [CLAIMED, 1, 5]]
        if claim_first:  # the receiver's report overtakes the sender's
            ledger.apply("receiver", receiver, freed.append)
            ledger.apply("owner", [sent, [RELEASE, 1, None]], freed.append)
        else:
            ledger.apply("owner", [sent, [RELEASE, 1, None]], freed.append)
            assert freed == [] and ledger.in_use(1)  # only the copy in transit holds it
            ledger.apply("receiver", receiver, freed.append)
        assert freed == [] and ledger.in_use(1)
        ledger.apply("receiver", [[RELEASE, 1, None]], freed.append)
        assert freed == [1]


def test_ledger_drops_a_gone_process_and_ignores_untracked_actors():
    freed = []
    ledger = RefLedger()
    ledger.track(1, "a")
    ledger.hold(1, "b")
    ledger.apply("a", [[HOLD, 2, None], [RELEASE, 2, None]], freed.append)  # detached: no-op
    ledger.drop_process("a", freed.append)
    assert freed == []
    ledger.drop_process("b", freed.append)
    assert freed == [1]
