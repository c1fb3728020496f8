"""Tells count against ``max_pending_calls`` until the worker credits them.

A caller that tells a slow actor faster than it works blocks instead of
filling the worker's memory; nothing is lost and the order is kept.
"""

from __future__ import annotations

import os
import textwrap
import threading

import pytest
from gates import poll
from scenario import run_scenario

import zactor
from zactor.endpoint import runtime as runtime_mod

pytestmark = pytest.mark.timeout(60)


@zactor.remote
class Slow:
    def __init__(self) -> None:
        self.seen: list = []

    def hold(self, gate: str) -> None:
        while not os.path.exists(gate):
            os.sched_yield()

    def add(self, i: int) -> None:
        self.seen.append(i)

    def fail(self) -> None:
        raise ValueError("a tell that fails still frees its place")

    def get(self) -> list:
        return self.seen


def drain_credits(h) -> None:
    """Read replies and credits until every tell of ``h`` is credited."""
    gate = h._target.gate
    runtime = runtime_mod.current()

    def credited() -> bool:
        runtime.poll()
        return gate.inflight == 0

    poll(credited, timeout=30)


def test_a_fast_teller_waits_for_a_slow_actor_and_loses_nothing(cluster, tmp_path):
    limit = 5
    h = Slow.options(max_pending_calls=limit).remote()
    gate_file = str(tmp_path / "gate")
    teller = threading.Thread(
        target=lambda: [h.hold.tell(gate_file)] + [h.add.tell(i) for i in range(20)],
        daemon=True,
    )
    teller.start()
    poll(lambda: h._target.gate.inflight == limit, timeout=30)
    teller.join(timeout=2)
    # Without credits the 21 tells would all be sent at once and the thread done.
    assert teller.is_alive(), "the teller was not held back at max_pending_calls"
    assert h._target.gate.inflight == limit
    open(gate_file, "w").close()
    teller.join(timeout=30)
    assert not teller.is_alive()
    assert zactor.get(h.get.remote()) == list(range(20))  # all applied, in order
    drain_credits(h)
    assert h._target.gate.inflight == 0


def test_tells_that_fail_or_meet_a_dead_actor_are_credited_too(cluster, tmp_path):
    h = Slow.options(max_pending_calls=3).remote()
    for _ in range(10):  # more than the limit: each failure must give its place back
        h.fail.tell()
    assert zactor.get(h.get.remote()) == []
    drain_credits(h)
    gate_file = str(tmp_path / "gate")
    h.hold.tell(gate_file)
    h.add.tell(1)
    h.add.tell(2)
    zactor.kill(h)  # the running tell and the queued ones die with it: credited
    drain_credits(h)
    assert h._target.gate.inflight == 0
    open(gate_file, "w").close()


def test_many_tells_are_credited_in_batches(cluster):
    h = Slow.options(max_pending_calls=1000).remote()
    for i in range(5000):
        h.add.tell(i)
    assert zactor.get(h.get.remote()) == list(range(5000))
    drain_credits(h)
    assert h._target.gate.inflight == 0


ONE_WORKER = """
import json, os, time
import zactor

zactor.init(num_workers=1)

@zactor.remote
class Worker:
    def __init__(self):
        self.n = 0
    def work(self):
        self.n += 1
    def block(self, gate):
        while not os.path.exists(gate):
            time.sleep(0.001)
        return "ok"
    def ask(self, other):
        return zactor.get(other.state.remote())
    def state(self):
        return self.n
    def fan(self, me, k):
        for _ in range(k):
            me.work.tell()
        return "sent"
    def relay(self, a, c, me):
        for _ in range(3):
            c.work.tell()                 # the outbox is busy: what follows is batched
        a.work.tell(); a.work.tell()
        a.ask.tell(me)                    # a blocks in it until this actor answers state()
        a.work.tell()                     # 3 in flight, limit 3: needs a credit
        return "done"

def report(**values):
    zactor.shutdown()
    print("RESULT " + json.dumps(values))
"""


def test_credits_are_not_held_behind_another_actors_long_call(tmp_path):
    """b's tells ran long ago; the thread that ran them is in a's long call now."""
    out = run_scenario(
        ONE_WORKER
        + textwrap.dedent(
            f"""
            gate = {str(tmp_path / "gate")!r}
            b = Worker.options(max_pending_calls=4).remote()
            a, c = Worker.remote(), Worker.remote()
            zactor.get([b.work.remote(), a.state.remote(), c.work.remote()])
            for _ in range(3):
                c.work.tell()
            for _ in range(4):
                b.work.tell()
            long_call = a.block.remote(gate)   # same frame as b's tells, same thread
            b.work.tell()                      # needs a credit of b's first four
            blocked_meanwhile = not long_call.done()
            open(gate, "w").close()
            report(blocked=blocked_meanwhile, result=zactor.get(long_call),
                   n=zactor.get(b.state.remote()))
            """
        )
    )
    assert out == {"blocked": True, "result": "ok", "n": 6}


def test_an_actor_blocked_in_a_call_sends_the_credits_counted_on_it():
    out = run_scenario(
        ONE_WORKER
        + textwrap.dedent(
            """
            a = Worker.options(max_pending_calls=3).remote()
            c, p = Worker.remote(), Worker.remote()
            zactor.get([a.work.remote(), c.work.remote(), p.work.remote()])
            report(result=p.relay.remote(a, c, p).result(timeout=60))
            """
        )
    )
    assert out == {"result": "done"}


def test_an_actor_telling_itself_past_the_bound_does_not_wait_for_itself():
    out = run_scenario(
        ONE_WORKER
        + textwrap.dedent(
            """
            x = Worker.options(max_pending_calls=3).remote()
            sent = x.fan.remote(x, 20).result(timeout=60)
            # The self-tells and this driver's calls are not ordered with each other.
            deadline = time.monotonic() + 60
            while zactor.get(x.state.remote(), timeout=60) < 20 and time.monotonic() < deadline:
                time.sleep(0.01)
            report(sent=sent, n=zactor.get(x.state.remote(), timeout=60))
            """
        )
    )
    assert out == {"sent": "sent", "n": 20}
