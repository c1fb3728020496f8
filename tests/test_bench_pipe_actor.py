"""The bench's ``multiprocessing.Pipe`` actor yardstick (issue 12): it answers as an actor
would, and its process never outlives its owner, closed or killed.

Nothing here times anything: ``zactor bench`` and ``bench/compare_frameworks.py``
measure it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from gates import alive, poll

from zactor.benchmark.pipe_actor import PipeActor
from zactor.benchmark.runner import _Counter

pytestmark = pytest.mark.timeout(120)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_it_answers_calls_in_order_and_measures_with_every_call_answered():
    actor = PipeActor(_Counter)
    try:
        assert [actor.call("inc") for _ in range(3)] == [1, 2, 3]
        assert len(actor.latency_ns(50)) == 50
        assert actor.pipelined_rate(2_000) > 0  # a sender thread, the replies read here
        assert actor.call("inc") == 3 + 50 + 2_000 + 1  # nothing lost, nothing doubled
    finally:
        actor.close()
    assert not alive(actor.pid)


def test_a_class_the_child_cannot_import_is_refused_before_anything_starts():
    def make():
        class Inner:
            pass

        return Inner

    with pytest.raises(ValueError, match="top level of an importable module"):
        PipeActor(make())


CHILD = """
import sys
from zactor.benchmark.pipe_actor import PipeActor
from zactor.benchmark.runner import _Counter

actor = PipeActor(_Counter)
print(actor.pid, flush=True)
sys.stdin.read()  # until the test kills us
"""


def test_its_process_ends_when_its_owner_is_sigkilled():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    owner = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        pid = int(owner.stdout.readline())
        assert alive(pid)
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=30)
        poll(lambda: not alive(pid), timeout=30)  # the pipe closed with its owner
    finally:
        owner.kill()
        owner.wait()
        owner.stdin.close()
        owner.stdout.close()
