"""Twenty node agents and two thousand actors on one head (``bench/scale_nodes.py``).

The bench starts a head on tcp loopback and the node agents, each in a cluster
directory of its own as if on its own machine, creates the actors from a driver,
calls each once, drops them, and stops everything; this test runs it at a size
a 2-core machine finishes in about a minute and asserts what it saw, not how
fast: every node joined, every actor answered from where the head placed it,
every node hosts actors, the head ended every dropped actor, and no process
is left. Its figures (docs/scaling.md) come from the same script.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import types
from pathlib import Path

import pytest
from gates import alive

from zactor.control import node as node_agent

REPO = Path(__file__).resolve().parent.parent
NODES = 20
ACTORS = 2000
#: How long the bench may run before it is stopped (it tears down on SIGTERM).
BENCH_LIMIT_S = 420


@pytest.mark.timeout(BENCH_LIMIT_S + 120)
def test_twenty_nodes_join_and_host_two_thousand_actors_and_leave_nothing(tmp_path):
    out = tmp_path / "scale.json"
    sizes = f"--nodes {NODES} --actors {ACTORS} --idle-seconds 1 --control-calls 100"
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "scale_nodes.py"), *sizes.split(), "--json", out],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        _, err = proc.communicate(timeout=BENCH_LIMIT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the bench stops its cluster on the way out
        _, err = proc.communicate(timeout=90)
        pytest.fail(f"the scale bench did not finish within {BENCH_LIMIT_S} s:\n{err}")
    assert proc.returncode == 0, err
    report = json.loads(out.read_text())

    node_ids = [f"n{i:03d}" for i in range(NODES)]
    assert report["join"]["nodes_alive"] == node_ids
    assert all(report["join"]["workers_by_node"][n] == 1 for n in node_ids)
    assert report["call"]["answered"] == ACTORS
    assert report["misplaced"] == 0  # each answered from the worker the head placed it on
    assert report["registry_actors"] == report["status_actors"] == ACTORS
    assert set(node_ids) <= set(report["spread"]) and sum(report["spread"].values()) == ACTORS
    assert min(report["spread"].values()) > 0
    assert report["release"]["actors_left"] == 0  # dropped handles ended every actor

    teardown = report["teardown"]
    assert teardown["errors"] == [] and teardown["leftovers"] == []
    # head + its worker + an agent and a worker per node
    assert teardown["processes"] == 2 + 2 * NODES
    assert not [pid for pid in teardown["pids"] if alive(pid)]


class FakeClock:
    """``time`` for :func:`node_agent.wait_for_own_workers`: sleeping advances it."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_starting_node_asks_the_head_less_and_less_often(monkeypatch):
    # Each question makes the head list every worker: a hundred nodes starting at
    # once must not ask fifty times a second each (docs/scaling.md).
    clock = FakeClock()
    monkeypatch.setattr(node_agent, "time", clock)
    registers_at = 30.0
    asked = []

    class Answer:
        def result(self, timeout):
            asked.append(clock.now)
            registered = clock.now >= registers_at
            return {"workers": [{"node_id": "n1"}] if registered else []}

    cluster_info = types.SimpleNamespace(remote=Answer)
    agent = types.SimpleNamespace(
        node_id="n1",
        stopping=lambda: False,
        head=types.SimpleNamespace(cluster_info=cluster_info),
        runtime=types.SimpleNamespace(head_address="tcp://127.0.0.1:1"),
    )
    node_agent.wait_for_own_workers(agent, 1, deadline=120.0)
    assert asked[-1] >= registers_at  # it returned once the worker registered
    gaps = [b - a for a, b in zip(asked, asked[1:])]
    assert gaps[0] < 0.1  # a worker starting at once is seen soon
    assert max(gaps) == pytest.approx(node_agent.OWN_WORKERS_POLL_MAX_S)
    assert len(asked) <= registers_at / node_agent.OWN_WORKERS_POLL_MAX_S + 10
