"""The seeds' Ray and Dask actor examples run through ``zactor.compat`` (``examples/compat/``).

Each file is the seeds' code with only its import line changed, plus marked
scaffolding (examples/compat/README.md lists which seed and section each
holds). Each runs as a script in its own process, with its own cluster, and
prints what the seeds print or compute; these tests check that output.
"""

from __future__ import annotations

import pytest
from examples_runner import script_lines
from gates import needs_tasks


def run(name: str) -> list[str]:
    return script_lines(f"compat/{name}")


# -- Dask ---------------------------------------------------------------------------------------


@pytest.mark.timeout(150)
def test_dask_bank_account():
    lines = run("dask_bank_account")
    # print(e) of the failed withdrawal: the seed's message, then the remote traceback.
    assert lines[0] == "Exception: Please deposit more money first."
    assert lines[-3:] == [
        "balance: 42.0",
        "after deposit(100): 142.0",
        "after withdrawal(100): 42.0",
    ]


@needs_tasks
@pytest.mark.timeout(150)
def test_dask_actor_futures_in_tasks():
    # Three tasks add 0.1, 0.2 and 0.3 to one counter, in some order.
    assert run("dask_actor_futures") == ["tasks: 3, the last add saw 0.6", "counter.n: 0.6"]


@pytest.mark.timeout(150)
def test_dask_sketchy_bank():
    assert run("dask_sketchy_bank") == ["branches: 10", "timbit's balance: 42.0"]


@pytest.mark.timeout(150)
def test_dask_counter_doc_examples_and_doctests():
    assert run("dask_counter") == [
        "increment: 1",
        "add: 11",
        "doctest create-an-actor: 0 failed of 3",
        "doctest call-remote-methods: 0 failed of 2",
        "doctest access-attributes: 0 failed of 1",
        "f() ran: awaited submit, increment() and counter.n",
    ]


@pytest.mark.timeout(150)
def test_dask_waiter():
    assert run("dask_waiter") == ["waits returned after set(): None"]


# -- Ray ----------------------------------------------------------------------------------------


@pytest.mark.timeout(150)
def test_ray_account():
    lines = run("ray_account")
    assert lines[:3] == ["Current balance 100.0", "New balance 60.0", "New balance 90.0"]
    # The seed's f"Oops! \{e} occurred." keeps its backslash; e's text starts with the message.
    assert lines[3] == "Oops! \\Exception: Cannot withdraw negative amount"
    assert lines[-4:] == [
        "4-3 balance 100.0",
        "named actor found: True, balance 105.0",
        "detached actor balance 100.0",
        "refused: Starting balance is less than minimal balance",
    ]


@pytest.mark.timeout(150)
def test_ray_persistence_restores_state():
    assert run("ray_persistence") == ["4-7 restored balance 150.0", "4-10 restored balance 70.0"]


@pytest.mark.timeout(150)
def test_ray_account_pool():
    assert run("ray_account_pool") == [
        "balance 100.0",
        "after deposit(50) 150.0",
        "after withdraw(30) 120.0",
        "the seed's save fails: FilePersistence.save() missing 1 required positional "
        "argument: 'data'",
    ]


@pytest.mark.timeout(150)
def test_ray_concurrency():
    lines = run("ray_concurrency")
    assert "async results: [1, 1, 1, 1, 1]" in lines
    assert "threaded results: [1, 1, 1]" in lines
    # The actors' own prints reach the terminal, 4-13's with the seed's backslash.
    assert lines.count("Actor waiting for 1 sec") == 5
    assert lines.count("Actor slept for 1 sec") == 5
    assert lines.count("Actor waiting for \\1 sec") == 3
    assert lines.count("Actor slept for \\1 sec") == 3


@pytest.mark.timeout(150)
def test_ray_counter():
    assert run("ray_counter") == [
        "a1, a2: [2, 2]",
        "[1, 1, 1, 1, 1, 1, 1, 1, 1, 1]",
        "[2, 3, 4, 5, 6]",
    ]


@pytest.mark.timeout(150)
def test_ray_gym_environment_keeps_its_state_in_the_actor():
    assert run("ray_gym") == [
        "step(1): (6, 0.0, False, {'steps': 2})",
        "after reset, step(0): (5, 1.0, False, {'steps': 1})",
    ]


@needs_tasks
@pytest.mark.timeout(150)
def test_ray_passing_handles_to_tasks():
    values = [int(v) for v in run("ray_passing_handles")]
    assert len(values) == 10
    assert values == sorted(values)  # four tasks keep incrementing the one counter
