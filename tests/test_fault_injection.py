"""Fault injection (issue 5): workers SIGKILLed at random points under load.

For plain, threaded and async actors, with and without restarts and retries, every
future must end resolved or with ``ActorDiedError``; none may hang or fail any other
way, and an actor with restarts and retries must lose no call. Each run has its own
cluster (``scenario.py``), a fixed random seed, and a bounded number of kills.
"""

from __future__ import annotations

import textwrap

import pytest
from scenario import run_scenario

pytestmark = pytest.mark.timeout(200)

SCENARIO = """
import asyncio, json, os, random, signal, time
import zactor

KIND, SEED, KILLS, CALLS_PER_ROUND = {kind!r}, {seed}, 3, 150
rng = random.Random(SEED)
zactor.init(num_workers=2)

@zactor.remote
class Plain:
    def __init__(self):
        self.seen = 0
    def record(self, i):
        self.seen += 1
        return i

@zactor.remote(max_concurrency=4)
class Threaded:
    def record(self, i):
        time.sleep(0.0005)
        return i

@zactor.remote
class Async:
    async def record(self, i):
        await asyncio.sleep(0.0005)
        return i

cls = {{"plain": Plain, "threaded": Threaded, "async": Async}}[KIND]
actors = {{
    "retried": cls.options(max_restarts=-1, max_task_retries=-1).remote(),
    "restarted": cls.options(max_restarts=-1).remote(),
    "mortal": cls.remote(),
}}

def workers():
    return zactor.api._cluster_info()["workers"]

calls = []  # (actor label, argument, future)
n = 0
for kill in range(KILLS):
    for _ in range(CALLS_PER_ROUND):
        label = rng.choice(sorted(actors))
        calls.append((label, n, actors[label].record.remote(n)))
        n += 1
    time.sleep(rng.uniform(0, 0.05))
    victim = rng.choice(workers())
    os.kill(victim["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the head replaces the worker
        alive = workers()
        if len(alive) == 2 and victim["worker_id"] not in {{w["worker_id"] for w in alive}}:
            break
        time.sleep(0.05)
for label in sorted(actors):  # and some calls after the last kill
    calls.append((label, n, actors[label].record.remote(n)))
    n += 1

outcomes = {{}}
wrong = []
for label, i, future in calls:
    try:
        value = future.result(timeout=90)
        kind = "ok" if value == i else "wrong-value"
    except zactor.ActorDiedError:
        kind = "died"
    except zactor.GetTimeoutError:
        kind = "hung"
    except Exception as e:
        kind = "other: " + type(e).__name__ + ": " + str(e)[:200]
    outcomes.setdefault(label, {{}}).setdefault(kind, 0)
    outcomes[label][kind] += 1
zactor.shutdown()
print("RESULT " + json.dumps(outcomes))
"""


@pytest.mark.parametrize("kind", ["plain", "threaded", "async"])
def test_random_worker_kills_under_load(kind):
    outcomes = run_scenario(textwrap.dedent(SCENARIO).format(kind=kind, seed=1234), timeout=190)
    for label, counts in outcomes.items():
        assert set(counts) <= {"ok", "died"}, f"{label}: {counts}"  # nothing hung or wrong
    # Restarts plus retries: no call is lost, whatever the kills hit.
    assert set(outcomes["retried"]) == {"ok"}, outcomes["retried"]
    # A restartable actor serves again after each kill: its last call succeeds.
    assert outcomes["restarted"].get("ok", 0) > 0
