"""The seeds' examples (``examples/*.py``) run and print what the seeds print.

Each example starts and stops its own embedded cluster, so each runs in a
subprocess: its ``init()``/``shutdown()`` stays apart from any cluster the
test session runs. Two ways are checked: the file run as a script (what a
user types), and the module imported and its ``main()`` called (the returned
values; the actor classes then travel to the workers by reference).
"""

from __future__ import annotations

import subprocess

import pytest
from examples_runner import run_main, run_script


def _lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [ln.strip() for ln in proc.stdout.splitlines()]


# -- counter.py ---------------------------------------------------------------------------


def _check_samples(samples: list[int], total: int) -> None:
    assert len(samples) == 10
    assert all(0 <= s <= total for s in samples), samples
    assert samples == sorted(samples), f"the counter went backwards: {samples}"


@pytest.mark.timeout(150)
def test_counter_script_prints_the_seeds_results():
    lines = _lines(run_script("counter"))
    # Dask's Counter: increment() -> 1, add(10) -> 11, counter.n -> 11, then the async part.
    assert lines[0].startswith("ActorHandle(Counter")
    assert lines[1:5] == ["1", "11", "11", "12"]
    # Ray's Counter, printed exactly as the seed's comments say.
    assert "[1, 1, 1, 1, 1, 1, 1, 1, 1, 1]" in lines
    assert "[2, 3, 4, 5, 6]" in lines
    assert lines.index("[2, 3, 4, 5, 6]") == lines.index("[1, 1, 1, 1, 1, 1, 1, 1, 1, 1]") + 1
    # Passing handles: ten samples while the incrementers run, then the exact total.
    start = lines.index("[2, 3, 4, 5, 6]") + 1
    samples = [int(v) for v in lines[start : start + 10]]
    assert lines[start + 10] == "total after 4 incrementers: 4000"
    _check_samples(samples, 4000)


@pytest.mark.timeout(150)
def test_counter_main_returns_the_seeds_results():
    result = run_main("counter")
    assert result["dask"] == {"increment": 1, "add": 11, "n": 11, "awaited": 12}
    assert result["ray"] == {"parallel": [1] * 10, "serial": [2, 3, 4, 5, 6]}
    handles = result["handles"]
    assert handles["expected"] == 4000
    assert handles["total"] == 4000
    _check_samples(handles["samples"], 4000)


# -- bank_account.py ----------------------------------------------------------------------


@pytest.mark.timeout(150)
def test_bank_account_script_prints_the_seeds_results():
    lines = _lines(run_script("bank_account"))
    assert lines == [
        "balance: 42.0",
        "Please deposit more money first.",
        "after deposit(100): 142.0",
        "after withdrawal(100): 42.0",
        "Cannot deposit negative amount",
        "final balance: 42.0",
    ]


@pytest.mark.timeout(150)
def test_bank_account_main_returns_the_seeds_results():
    assert run_main("bank_account") == {
        "balance": 42.0,
        "error": "Please deposit more money first.",
        "after_deposit": 142.0,
        "after_withdrawal": 42.0,
        "negative": "Cannot deposit negative amount",
        "final": 42.0,
    }


# -- ray_account.py -----------------------------------------------------------------------


@pytest.mark.timeout(150)
def test_ray_account_script_prints_the_seeds_results():
    lines = _lines(run_script("ray_account"))
    assert lines == [
        "Oops! Starting balance is less than minimal balance occurred.",
        "Current balance 100.0",
        "New balance 60.0",
        "New balance 90.0",
        "Oops! Cannot withdraw negative amount occurred.",
        "Named actor found: True, balance 90.0",
        "Detached actor found: True, balance 105.0",
    ]


@pytest.mark.timeout(150)
def test_ray_account_main_returns_the_seeds_results():
    assert run_main("ray_account") == {
        "rejected": "Starting balance is less than minimal balance",
        "current": 100.0,
        "after_withdraw": 60.0,
        "after_deposit": 90.0,
        "negative": "Cannot withdraw negative amount",
        "named_found": True,
        "named_balance": 90.0,
        "detached_found": True,
        "detached_balance": 105.0,
    }


# -- async_actor.py, threaded_actor.py, dask_waiter.py ----------------------------------------
# The seeds' calls take 3 s each; these runs pass 1 (async) and 2 (threaded). The bounds
# fail only if the calls clearly ran one after another (5 s and 6 s).


def _timing_line(lines: list[str]) -> str:
    (line,) = [ln for ln in lines if " calls of computation(" in ln]
    return line


@pytest.mark.timeout(150)
def test_async_actor_script_runs_the_five_calls_at_once():
    lines = _lines(run_script("async_actor", "1"))
    assert "results: [1, 1, 1, 1, 1]" in lines
    # The actor's own prints reach the terminal: five waits, then five naps.
    assert lines.count("Actor waiting for 1 sec") == 5
    assert lines.count("Actor slept for 1 sec") == 5
    seconds = float(_timing_line(lines).split(" took ")[1].split(" s ")[0])
    assert seconds < 4.0, lines


@pytest.mark.timeout(150)
def test_async_actor_main_returns_results_and_timing():
    result = run_main("async_actor", "main(1)")
    assert result["results"] == [1] * 5
    assert result["serial"] == 5
    assert result["elapsed"] < 4.0


@pytest.mark.timeout(150)
def test_threaded_actor_script_runs_the_three_calls_at_once():
    lines = _lines(run_script("threaded_actor", "2"))
    assert "results: [2, 2, 2]" in lines
    assert lines.count("Actor waiting for 2 sec") == 3
    assert lines.count("Actor slept for 2 sec") == 3
    seconds = float(_timing_line(lines).split(" took ")[1].split(" s ")[0])
    assert seconds < 4.5, lines


@pytest.mark.timeout(150)
def test_threaded_actor_main_returns_results_and_timing():
    result = run_main("threaded_actor", "main(2)")
    assert result["results"] == [2] * 3
    assert result["serial"] == 6
    assert result["elapsed"] < 4.5


@pytest.mark.timeout(150)
def test_dask_waiter_script_waits_until_set():
    lines = _lines(run_script("dask_waiter"))
    assert lines == [
        "event set: False; waits done before set(): [False, False, False]",
        "waits returned after set(): [None, None, None]",
    ]


@pytest.mark.timeout(150)
def test_dask_waiter_main_returns_after_set():
    assert run_main("dask_waiter") == {
        "is_set_before": False,
        "done_before": [False, False, False],
        "returned": [None, None, None],
    }
