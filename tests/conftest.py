"""Shared fixtures: one embedded 2-worker cluster for the whole session, and helpers.

Tests that need a cluster take the ``cluster`` fixture. Actor classes are defined
at module level in the test files; the cluster's processes inherit the driver's
``sys.path``, so they import the test modules by name.

Helpers that are not fixtures (and may be used inside actors) live in the test
files themselves: importing ``conftest`` from a test module is not relied upon.
"""

from __future__ import annotations

import os
import uuid
import warnings

import netns
import pytest
from gates import poll

import zactor
from zactor.caller.handle import head_handle

NUM_WORKERS = 2


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "network_lab(hosts=2, needs_partition=False, loopback=True): what the network_lab "
        "fixture gives this test (tests/netns.py, open_lab)",
    )


@pytest.fixture(scope="session")
def cluster():
    """An embedded cluster of ``NUM_WORKERS`` workers, torn down at the end of the session.

    Yields the head's ``cluster_info()`` at start-up (``{"workers": [...], ...}``).
    """
    info = zactor.init(num_workers=NUM_WORKERS)
    try:
        yield info
    finally:
        zactor.shutdown()


class Gate:
    """A file that held actor methods poll for; :meth:`open` lets them all return.

    A file (not a ``threading.Event``) because the actors run in other processes.
    """

    def __init__(self, directory) -> None:
        self.path = os.path.join(str(directory), f"gate-{uuid.uuid4().hex}")

    def open(self) -> None:
        with open(self.path, "w"):
            pass

    @property
    def is_open(self) -> bool:
        return os.path.exists(self.path)


@pytest.fixture
def gate(tmp_path):
    """A :class:`Gate`; always opened at teardown so no actor stays held."""
    g = Gate(tmp_path)
    try:
        yield g
    finally:
        g.open()


@pytest.fixture
def make_gate(tmp_path):
    """A factory of :class:`Gate` objects, all opened at teardown."""
    made = []

    def make() -> Gate:
        g = Gate(tmp_path)
        made.append(g)
        return g

    try:
        yield make
    finally:
        for g in made:
            g.open()


@pytest.fixture
def unique_name():
    """A factory of actor names no other test uses (the cluster is shared)."""
    return lambda prefix="actor": f"{prefix}-{uuid.uuid4().hex[:12]}"


def worker_of(handle) -> str:
    """The worker id the head placed ``handle``'s actor on."""
    for info in head_handle().list_actors.remote().result(timeout=30):
        if info["actor_id"] == handle._actor_id:
            return info["worker_id"]
    raise LookupError(f"the head does not know actor {handle!r}")


@pytest.fixture
def placement(cluster):
    """``placement(handle)``: the worker id the head placed that actor on."""
    return worker_of


@pytest.fixture
def spread(cluster):
    """``spread(actor_class, counts)`` creates actors until each worker hosts enough.

    ``counts`` is a list of how many actors are wanted on distinct workers, e.g.
    ``[3, 2]``: one worker with at least 3 and another with at least 2 of them.
    Returns ``[handles_on_first_worker, handles_on_second_worker, ...]`` (each list
    exactly as long as asked), the workers being chosen so the counts fit. The head
    places each new actor on the worker with the fewest actors, so this takes about
    ``sum(counts)`` creations. Every actor it made is killed at teardown.
    """
    made = []

    def make(actor_class, counts, *args, **kwargs):
        by_worker: dict[str, list] = {}
        for _ in range(4 * sum(counts) + 8):
            handle = actor_class.remote(*args, **kwargs)
            made.append(handle)
            by_worker.setdefault(worker_of(handle), []).append(handle)
            ordered = sorted(by_worker.values(), key=len, reverse=True)
            if len(ordered) >= len(counts) and all(
                len(have) >= want for have, want in zip(ordered, sorted(counts, reverse=True))
            ):
                chosen = {}
                for want, have in zip(sorted(counts, reverse=True), ordered):
                    chosen.setdefault(want, []).append(have[:want])
                return [chosen[want].pop(0) for want in counts]
        raise AssertionError(f"could not place actors as {counts}: got {by_worker}")

    try:
        yield make
    finally:
        for handle in made:
            try:
                zactor.kill(handle)
            except Exception:  # already dead: fine
                pass


@pytest.fixture
def wait_for():
    """The :func:`poll` helper, as a fixture."""
    return poll


class NetworkLabFallback(UserWarning):
    """A test ran its hosts on loopback addresses: network namespaces were not available."""


@pytest.fixture
def network_lab(request):
    """An open lab of separate network hosts (``tests/netns.py``), closed at teardown.

    The test says what it needs with ``@pytest.mark.network_lab(hosts=3,
    needs_partition=True)``; ``loopback=False`` refuses the loopback fallback. Skips,
    saying why, when this machine cannot give it; a test that ran on the fallback is
    reported with a :class:`NetworkLabFallback` warning naming the reason.
    """
    marker = request.node.get_closest_marker("network_lab")
    try:
        lab = netns.open_lab(**(marker.kwargs if marker else {}))
    except netns.LabUnavailable as exc:
        pytest.skip(str(exc))
    if lab.kind == "loopback":
        warnings.warn(
            NetworkLabFallback(f"hosts on loopback addresses: {lab.fallback_reason}"),
            stacklevel=1,
        )
    with lab:
        yield lab
