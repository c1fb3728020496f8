"""``zactor.kill`` ends an actor now, as ``ray.kill`` does, and handles keep no public names."""

from __future__ import annotations

import os
import time

import pytest
from gates import wait_for_file

import zactor
import zactor.endpoint.runtime
from zactor.caller.handle import ActorHandle

pytestmark = pytest.mark.timeout(60)


@zactor.remote
class Sleeper:
    """Runs a call that loops until a gate file appears (or an interruption)."""

    def __init__(self) -> None:
        self.reached = 0

    def block(self, started: str, gate: str, left: str) -> str:
        open(started, "w").close()
        try:
            while not os.path.exists(gate):  # Python bytecode: interruptible
                time.sleep(0.001)
            return "finished"
        finally:
            open(left, "w").close()

    def nap(self, started: str, seconds: float, left: str) -> str:
        open(started, "w").close()
        try:
            time.sleep(seconds)  # C: finishes first, the interruption lands after it
            return "woke"
        finally:
            open(left, "w").close()

    def ping(self) -> str:
        return "pong"


@zactor.remote
class NamesLikeAHandle:
    """Methods named like handle attributes a Ray user might expect."""

    def actor_id(self) -> str:
        return "the actor's own actor_id()"

    def options(self) -> str:
        return "the actor's own options()"


def test_a_method_named_like_a_handle_attribute_is_reachable(cluster):
    h = NamesLikeAHandle.remote()
    assert zactor.get(h.actor_id.remote()) == "the actor's own actor_id()"
    assert zactor.get(h.options.remote()) == "the actor's own options()"
    assert isinstance(h._actor_id, int)  # the id, as Ray's handle._actor_id


def test_handles_keep_no_public_non_method_names():
    assert [name for name in dir(ActorHandle) if not name.startswith("_")] == []


def test_kill_fails_the_running_and_queued_calls_at_once(cluster, tmp_path):
    """The running call's future and the queued ones fail with ActorDiedError as soon
    as zactor.kill returns, though the method's thread is still in its loop."""
    s = Sleeper.remote()
    started, gate = str(tmp_path / "started"), str(tmp_path / "gate")
    running = s.block.remote(started, gate, str(tmp_path / "left"))
    wait_for_file(started)
    queued = [s.ping.remote() for _ in range(3)]
    zactor.kill(s)
    for future in [running, *queued]:
        assert future.done(), "kill returned before the call's future failed"
        with pytest.raises(zactor.ActorDiedError, match="killed by zactor.kill"):
            future.result(timeout=0)
    with pytest.raises(zactor.ActorDiedError, match="killed by zactor.kill"):
        zactor.get(s.ping.remote(), timeout=30)


def test_kill_interrupts_a_method_running_python_code(cluster, tmp_path):
    """The loop in ``block`` is interrupted (its ``finally`` runs) though its gate never
    opens; without the interruption it would loop for ever."""
    s = Sleeper.remote()
    started, gate, left = (str(tmp_path / n) for n in ("started", "gate", "left"))
    s.block.remote(started, gate, left)
    wait_for_file(started)
    zactor.kill(s)
    wait_for_file(left)
    assert not os.path.exists(gate)


def test_kill_during_a_sleep_discards_its_result(cluster, tmp_path):
    """A call in ``time.sleep`` (C) is not cut short; its late answer is dropped quietly."""
    runtime = zactor.endpoint.runtime.current()
    before = dict(runtime.dropped)
    s = Sleeper.remote()
    started, left = str(tmp_path / "started"), str(tmp_path / "left")
    napping = s.nap.remote(started, 0.3, left)
    wait_for_file(started)
    zactor.kill(s)
    with pytest.raises(zactor.ActorDiedError, match="killed by zactor.kill"):
        napping.result(timeout=0)
    wait_for_file(left)
    assert zactor.get(Sleeper.remote().ping.remote(), timeout=30) == "pong"
    with pytest.raises(zactor.ActorDiedError):
        napping.result(timeout=0)
    assert runtime.dropped == before


def test_kill_takes_a_handle(cluster):
    with pytest.raises(ValueError, match="needs an actor handle"):
        zactor.kill("x")
