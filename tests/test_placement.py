"""Placement by ``num_cpus`` and ``resources`` (issue 4), on a cluster of its own.

The session's shared cluster hosts other tests' actors, so whole-worker placement is
checked in a subprocess that starts its own 2-worker cluster with one GPU; the rules
themselves are also checked on :class:`zactor.control.placement.Placement` directly.
"""

from __future__ import annotations

import textwrap

import pytest
from scenario import run_scenario

from zactor.control.placement import Placement
from zactor.errors import ClusterError

pytestmark = pytest.mark.timeout(120)

SCENARIO = textwrap.dedent(
    """
    import json, time
    import zactor

    zactor.init(num_workers=2, resources={"GPU": 1})

    @zactor.remote
    class Where:
        def worker(self):
            return zactor.get_runtime_context().worker_id

    def where(handle):
        return zactor.get(handle.worker.remote(), timeout=30)

    def refused(**options):
        # Created without waiting for the head: a refusal comes with the first call.
        handle = Where.options(**options).remote()
        try:
            where(handle)
        except zactor.ClusterError as e:
            return str(e)
        return None

    out = {}
    solo = Where.options(num_cpus=1).remote()
    out["solo"] = where(solo)
    others = [Where.remote() for _ in range(4)]
    out["others"] = [where(o) for o in others]
    out["second_solo"] = refused(num_cpus=1)
    gpu = Where.options(resources={"GPU": 1}).remote()
    out["gpu"] = where(gpu)
    out["second_gpu"] = refused(resources={"GPU": 1})
    zactor.kill(gpu)
    deadline = time.monotonic() + 30
    while refused(resources={"GPU": 0.5}) and time.monotonic() < deadline:
        time.sleep(0.05)  # the head frees the GPU once the worker reports the end
    out["gpu_after_kill"] = refused(resources={"GPU": 0.5})
    zactor.kill(solo)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        again = Where.remote()
        if where(again) == out["solo"]:
            break
        time.sleep(0.05)
    out["reused_after_solo"] = where(again) == out["solo"]
    zactor.shutdown()
    print("RESULT " + json.dumps(out))
    """
)


def test_num_cpus_and_resources_on_a_cluster_of_its_own():
    out = run_scenario(SCENARIO)
    # num_cpus=1 got a worker to itself: every other actor went to the other worker.
    assert out["others"] and all(w != out["solo"] for w in out["others"])
    assert "num_cpus=1 needs a worker with no other actor" in out["second_solo"]
    # One GPU on the node: the second GPU actor is refused, with what is free and what to do.
    assert out["gpu"] != out["solo"]
    assert "GPU=0 free" in out["second_gpu"] or "GPU=0" in out["second_gpu"]
    assert "asking for num_cpus=0, GPU=1" in out["second_gpu"]
    assert out["gpu_after_kill"] is None  # the GPU came back when its actor ended
    assert out["reused_after_solo"]  # the whole worker came back too


def test_placement_rules():
    p = Placement()
    p.add_worker("w0", "n0", {"GPU": 2})
    p.add_worker("w1", "n0", {"GPU": 2})  # same node: its resources are shared, not added
    assert p.nodes["n0"]["total"] == {"GPU": 2.0}
    w = p.choose("A", 0.5, {})
    assert w == "w0"  # ties go to the first worker id
    p.reserve(1, w, 0.5, {})
    assert p.choose("B", 0.5, {}) == "w1"  # the fewest actors wins
    p.reserve(2, w, 0.5, {})  # w is now fully reserved by two halves
    assert p.choose("C", 0.0, {}) != w
    p.reserve(3, "w1", 0, {})  # now no worker is empty
    with pytest.raises(ClusterError, match="needs a worker with no other actor"):
        p.choose("D", 1.0, {})
    p.reserve(4, "w1", 0, {"GPU": 2})
    with pytest.raises(ClusterError, match="GPU=0"):
        p.choose("E", 0, {"GPU": 1})
    with pytest.raises(ClusterError, match="no node of this cluster offers that much TPU"):
        p.choose("F", 0, {"TPU": 1})
    p.release(4)
    assert p.nodes["n0"]["free"]["GPU"] == 2.0
    p.remove_worker(w)
    assert 1 not in p.reserved and 2 not in p.reserved


def test_what_a_worker_about_to_join_could_take():
    p = Placement()
    assert p.fits_new_worker("n0", {"GPU": 1}, 1.0, {"GPU": 1})  # no worker yet: the totals
    p.add_worker("w0", "n0", {"GPU": 1})
    p.reserve(1, "w0", 1.0, {"GPU": 1})
    assert p.fits_new_worker("n0", {"GPU": 1}, 1.0, {})  # its own whole CPU
    assert not p.fits_new_worker("n0", {"GPU": 1}, 0, {"GPU": 1})  # the node's GPU is taken
    assert not p.fits_new_worker("n0", {"GPU": 1}, 0, {"TPU": 1})  # no node has one
    p.remove_worker("w0")  # its actor's reservations go with it
    assert p.fits_new_worker("n0", {"GPU": 1}, 0, {"GPU": 1})
