"""Threaded and async actors, awaiting calls from asyncio, retiring actors, and stats.

What a user relies on (DESIGN.md, Execution; docs/concurrency.md):

- ``max_concurrency=k`` on a class without ``async def`` methods runs up to k
  calls at once on threads, and no more.
- A class with an ``async def`` method runs its calls as coroutines on one
  event loop, up to ``max_concurrency`` at once (1000 when not given), started
  in arrival order; its plain methods run on that loop too; it can await
  other actors' calls; a method that blocks its loop stalls no other actor.
- Errors, ``tell`` errors, ``exit_actor``, ``get_runtime_context`` and
  ``zactor.kill`` behave as for any actor; an ended async actor leaves no
  thread behind.
- Asyncio code in the driver can ``await handle.m.remote()`` and its loop keeps
  running meanwhile.
- ``WorkerService.retire`` lets queued calls finish, then ends the actor.
- ``WorkerService.stats`` reports kind, concurrency, queue depth, percentiles.

Calls are held with gate files (see conftest), never with tight timings; the
only durations asserted are generous upper bounds that fail only if calls
clearly ran one after another.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest
from gates import poll, wait_for_file

import zactor
from zactor.caller.handle import head_handle, worker_service_handle

pytestmark = pytest.mark.timeout(60)


def _touch(path: str) -> None:
    with open(path, "w"):
        pass


async def _await_file(path: str, limit: float = 30.0) -> None:
    """Like ``gates.wait_for_file``, but suspends the coroutine instead of its thread."""
    deadline = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        await asyncio.sleep(0.005)


def _wait_for_files(paths, timeout: float = 15.0) -> None:
    poll(lambda: all(os.path.exists(p) for p in paths), timeout=timeout)


@zactor.remote
class Threaded:
    """Plain methods only: threaded when created with ``max_concurrency > 1``."""

    def __init__(self):
        self.lock = threading.Lock()
        self.active = 0
        self.most = 0

    def hold(self, marker, gate):
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        _touch(marker)
        try:
            wait_for_file(gate)
        finally:
            with self.lock:
                self.active -= 1
        return threading.get_ident()

    def most_active(self):
        return self.most

    def echo(self, value):
        return value

    def context(self):
        ctx = zactor.get_runtime_context()
        return ctx.actor_id, ctx.current_actor._actor_id

    def fail(self):
        raise ValueError("threaded failure")

    def leave(self):
        zactor.exit_actor()

    def thread_names(self):
        return [t.name for t in threading.enumerate()]


@zactor.remote
class AsyncProbe:
    """An async actor (it has ``async def`` methods) with plain methods too."""

    def __init__(self):
        self.active = 0
        self.most = 0
        self.log = []
        self.init_loop = id(asyncio.get_running_loop())

    async def hold(self, marker, gate):
        self.active += 1
        self.most = max(self.most, self.active)
        _touch(marker)
        try:
            await _await_file(gate)
        finally:
            self.active -= 1
        return "released"

    async def nap(self, seconds):
        await asyncio.sleep(seconds)
        return seconds

    async def record(self, i, seconds):
        self.log.append(("start", i))
        await asyncio.sleep(seconds)
        self.log.append(("end", i))
        return i

    def history(self):
        return self.log

    def active_now(self):
        return self.active

    def most_active(self):
        return self.most

    def loop_ids(self):
        """A plain method: the thread it runs on, and its loop and the constructor's."""
        return threading.get_ident(), id(asyncio.get_running_loop()), self.init_loop

    async def async_thread(self):
        return threading.get_ident()

    async def echo(self, value):
        return value

    async def context(self):
        ctx = zactor.get_runtime_context()
        return ctx.actor_id, ctx.current_actor._actor_id

    async def fail(self):
        await asyncio.sleep(0)
        raise ValueError("async failure")

    async def leave(self):
        zactor.exit_actor()

    async def relay(self, other, method, *args):
        return await getattr(other, method).remote(*args)

    async def block(self, marker, gate):
        """Blocks its loop's thread (time.sleep polling), as careless async code does."""
        _touch(marker)
        wait_for_file(gate)
        return "unblocked"

    def thread_names(self):
        return [t.name for t in threading.enumerate()]


@zactor.remote
class BadAsync:
    def __init__(self):
        raise KeyError("no config")

    async def m(self):
        return 1


@zactor.remote
class Ticker:
    """Starts a background task in ``__init__``: the constructor runs on the actor's loop."""

    def __init__(self):
        self.ticks = 0
        self.task = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self):
        while True:
            await asyncio.sleep(0.005)
            self.ticks += 1

    async def count(self):
        return self.ticks

    def thread_names(self):
        return [t.name for t in threading.enumerate()]


@zactor.remote
class Plain:
    def echo(self, value):
        return value


@pytest.fixture
def made(cluster):
    """``made(cls, *args, **options)`` creates an actor; every one is killed at teardown."""
    handles = []

    def make(cls, *args, **options):
        handle = (cls.options(**options) if options else cls).remote(*args)
        handles.append(handle)
        return handle

    try:
        yield make
    finally:
        for handle in handles:
            try:
                zactor.kill(handle)
            except Exception:  # already ended
                pass


def _stats_row(handle) -> dict | None:
    stats = worker_service_handle(handle._address).stats.remote().result(timeout=30)
    rows = [row for row in stats["actors"] if row["actor_id"] == handle._actor_id]
    return rows[0] if rows else None


def _known_to_head(handle) -> bool:
    return any(
        info["actor_id"] == handle._actor_id
        for info in head_handle().list_actors.remote().result(timeout=30)
    )


def _retire(handle, reason: str) -> bool:
    service = worker_service_handle(handle._address)
    return service.retire.remote(handle._actor_id, reason).result(timeout=30)


def _async_thread_gone(probe, actor) -> bool:
    """True once no thread of ``actor``'s event loop is left in ``probe``'s worker."""
    names = probe.thread_names.remote().result(timeout=30)
    return f"zactor-async-{actor._actor_id}" not in names


# -- threaded actors ------------------------------------------------------------------------


def test_threaded_actor_runs_up_to_max_concurrency_calls_at_once(made, gate, tmp_path):
    actor = made(Threaded, max_concurrency=3)
    markers = [str(tmp_path / f"started-{i}") for i in range(5)]
    held = [actor.hold.remote(m, gate.path) for m in markers]
    _wait_for_files(markers[:3])  # three run at once ...
    time.sleep(0.3)
    assert not any(os.path.exists(m) for m in markers[3:]), "a 4th call ran beside 3 others"
    assert not any(f.done() for f in held)
    gate.open()
    threads = zactor.get(held, timeout=30)
    assert len(set(threads[:3])) == 3  # ... each on its own thread
    assert actor.most_active.remote().result(timeout=30) == 3


def test_threaded_actor_with_busy_threads_does_not_hold_up_its_neighbours(
    cluster, spread, gate, tmp_path
):
    ((busy, neighbour),) = spread(Threaded.options(max_concurrency=2), [2])
    markers = [str(tmp_path / f"held-{i}") for i in range(2)]
    held = [busy.hold.remote(m, gate.path) for m in markers]
    _wait_for_files(markers)
    for i in range(10):
        assert neighbour.echo.remote(i).result(timeout=10) == i
    assert not any(f.done() for f in held)
    gate.open()
    assert len(zactor.get(held, timeout=30)) == 2


def test_max_concurrency_1_runs_one_call_at_a_time(made, gate, tmp_path):
    actor = made(Threaded, max_concurrency=1)
    markers = [str(tmp_path / f"started-{i}") for i in range(2)]
    held = [actor.hold.remote(m, gate.path) for m in markers]
    _wait_for_files(markers[:1])
    time.sleep(0.3)
    assert not os.path.exists(markers[1])
    gate.open()
    zactor.get(held, timeout=30)
    assert actor.most_active.remote().result(timeout=30) == 1


# -- async actors ---------------------------------------------------------------------------


def test_async_actor_seed_five_naps_overlap(made):
    """Ray's AsyncActor with max_concurrency=5: five 1 s naps take about 1 s, not 5."""
    actor = made(AsyncProbe, max_concurrency=5)
    actor.echo.remote(0).result(timeout=30)  # constructed
    start = time.monotonic()
    assert zactor.get([actor.nap.remote(1.0) for _ in range(5)], timeout=30) == [1.0] * 5
    assert time.monotonic() - start < 4.0  # serial would be 5 s


def test_async_actor_default_runs_many_calls_at_once(made, gate, tmp_path):
    actor = made(AsyncProbe)  # no max_concurrency: 1000, as in Ray
    held = [actor.hold.remote(str(tmp_path / f"m-{i}"), gate.path) for i in range(50)]
    poll(lambda: actor.active_now.remote().result(timeout=10) == 50, timeout=30)
    assert not any(f.done() for f in held)
    gate.open()
    assert zactor.get(held, timeout=30) == ["released"] * 50
    row = _stats_row(actor)
    assert row["kind"] == "async" and row["max_concurrency"] == 1000


def test_async_actor_runs_at_most_max_concurrency_calls(made, gate, tmp_path):
    actor = made(AsyncProbe, max_concurrency=2)
    markers = [str(tmp_path / f"started-{i}") for i in range(4)]
    held = [actor.hold.remote(m, gate.path) for m in markers]
    _wait_for_files(markers[:2])
    time.sleep(0.3)
    assert not any(os.path.exists(m) for m in markers[2:]), "a 3rd call ran beside 2 others"
    assert _stats_row(actor)["queued"] == 2
    gate.open()
    assert zactor.get(held, timeout=30) == ["released"] * 4
    assert actor.most_active.remote().result(timeout=30) == 2


def test_async_actor_with_max_concurrency_1_runs_calls_in_order_one_at_a_time(made):
    actor = made(AsyncProbe, max_concurrency=1)
    assert zactor.get([actor.record.remote(i, 0.005) for i in range(10)], timeout=30) == list(
        range(10)
    )
    expected = [event for i in range(10) for event in (("start", i), ("end", i))]
    assert actor.history.remote().result(timeout=30) == expected


def test_async_actor_starts_calls_in_arrival_order(made):
    actor = made(AsyncProbe)
    zactor.get([actor.record.remote(i, 0.05) for i in range(20)], timeout=30)
    starts = [i for event, i in actor.history.remote().result(timeout=30) if event == "start"]
    assert starts == list(range(20))


def test_async_actor_plain_methods_and_constructor_run_on_its_loop(made):
    actor = made(AsyncProbe)
    thread, loop, init_loop = actor.loop_ids.remote().result(timeout=30)
    assert actor.async_thread.remote().result(timeout=30) == thread
    assert loop == init_loop  # __init__ ran on the loop its methods run on


def test_async_actor_constructor_error_is_raised_by_its_calls(made):
    actor = made(BadAsync)
    for _ in range(2):
        with pytest.raises(KeyError, match="no config"):
            actor.m.remote().result(timeout=30)


def test_async_actor_background_task_runs_until_the_actor_ends(cluster, spread):
    ((ticker, witness),) = spread(Ticker, [2])
    first = ticker.count.remote().result(timeout=30)
    poll(lambda: ticker.count.remote().result(timeout=10) > first, timeout=30)
    zactor.kill(ticker)  # cancels the task along with the loop
    poll(lambda: _async_thread_gone(witness, ticker), timeout=30)


def test_async_actor_awaits_other_actors_without_holding_up_its_own_calls(made, gate, tmp_path):
    relaying = made(AsyncProbe)
    target = made(AsyncProbe)
    plain = made(Plain)
    assert relaying.relay.remote(plain, "echo", 7).result(timeout=30) == 7
    assert relaying.relay.remote(target, "nap", 0.01).result(timeout=30) == 0.01
    marker = str(tmp_path / "target-held")
    relayed = relaying.relay.remote(target, "hold", marker, gate.path)
    _wait_for_files([marker])
    # The relay is suspended in `await`: the relaying actor still answers.
    for i in range(5):
        assert relaying.echo.remote(i).result(timeout=10) == i
    assert not relayed.done()
    gate.open()
    assert relayed.result(timeout=30) == "released"


def test_async_actor_awaits_an_actor_on_its_own_worker(cluster, spread):
    ((a, b),) = spread(AsyncProbe, [2])
    for i in range(10):
        assert a.relay.remote(b, "echo", i).result(timeout=10) == i


def test_blocking_async_actor_does_not_stall_other_actors_in_its_worker(
    cluster, spread, placement, gate, tmp_path
):
    ((blocking, other),) = spread(AsyncProbe, [2])
    where = placement(blocking)
    plain = [Plain.remote() for _ in range(6)]  # some of them land on the same worker
    try:
        neighbours = [p for p in plain if placement(p) == where]
        assert neighbours, "no Plain actor was placed on the blocked worker"
        marker = str(tmp_path / "blocking")
        blocked = blocking.block.remote(marker, gate.path)
        _wait_for_files([marker])
        stuck = blocking.echo.remote("behind the block")  # same actor: waits for its loop
        for i in range(5):
            assert other.echo.remote(i).result(timeout=10) == i
            assert other.nap.remote(0.001).result(timeout=10) == 0.001
            assert neighbours[0].echo.remote(i).result(timeout=10) == i
        assert not blocked.done() and not stuck.done()
        gate.open()
        assert blocked.result(timeout=30) == "unblocked"
        assert stuck.result(timeout=30) == "behind the block"
    finally:
        for p in plain:
            zactor.kill(p)


# -- the actor API, the same for every kind ----------------------------------------------


@pytest.fixture(params=["threaded", "async"])
def concurrent_actor(request, made):
    if request.param == "threaded":
        return made(Threaded, max_concurrency=3)
    return made(AsyncProbe)


def test_errors_reach_the_caller_and_the_actor_keeps_running(concurrent_actor):
    actor = concurrent_actor
    with pytest.raises(ValueError, match="failure") as info:
        actor.fail.remote().result(timeout=30)
    assert isinstance(info.value, zactor.ActorError)
    assert actor.echo.remote("still here").result(timeout=30) == "still here"


def test_tell_errors_are_counted(concurrent_actor):
    actor = concurrent_actor
    for _ in range(3):
        actor.fail.tell()
    poll(lambda: _stats_row(actor)["tell_errors"] == 3, timeout=30)
    assert _stats_row(actor)["errors"] == 3


def test_runtime_context_names_the_actor(concurrent_actor):
    actor = concurrent_actor
    assert actor.context.remote().result(timeout=30) == (actor._actor_id, actor._actor_id)


def test_exit_actor_ends_the_actor_after_the_call(concurrent_actor):
    actor = concurrent_actor
    with pytest.raises(zactor.ActorDiedError, match="exit_actor"):
        actor.leave.remote().result(timeout=30)
    with pytest.raises(zactor.ActorDiedError, match="exit_actor"):
        actor.echo.remote(1).result(timeout=30)


def test_kill_fails_running_and_queued_calls_of_an_async_actor(cluster, spread, gate, tmp_path):
    ((victim, witness),) = spread(AsyncProbe.options(max_concurrency=1), [2])
    marker = str(tmp_path / "held")
    running = victim.hold.remote(marker, gate.path)
    _wait_for_files([marker])
    queued = victim.echo.remote("queued")
    zactor.kill(victim)
    for future in (running, queued):
        with pytest.raises(zactor.ActorDiedError, match="killed"):
            future.result(timeout=30)
    with pytest.raises(zactor.ActorDiedError):
        victim.echo.remote("later").result(timeout=30)
    poll(lambda: _async_thread_gone(witness, victim), timeout=30)


def test_exit_actor_stops_the_async_actors_loop_thread(cluster, spread):
    ((leaving, witness),) = spread(AsyncProbe, [2])
    assert not _async_thread_gone(witness, leaving)
    assert isinstance(leaving.leave.remote().exception(timeout=30), zactor.ActorDiedError)
    poll(lambda: _async_thread_gone(witness, leaving), timeout=30)


# -- awaiting calls from asyncio code in the driver -----------------------------------------


def test_driver_loop_keeps_running_while_it_awaits_a_call(made, gate, tmp_path):
    """The gate opens only after the driver's ticker has ticked 20 times, so the
    awaited call can only return if the loop kept running while it awaited it."""
    actor = made(Threaded)
    marker = str(tmp_path / "held")

    async def scenario():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while ticks < 20:
                await asyncio.sleep(0.01)
                ticks += 1
            gate.open()

        call = actor.hold.remote(marker, gate.path)
        ticking = asyncio.ensure_future(ticker())
        result = await call
        await ticking
        return result, ticks

    result, ticks = asyncio.run(scenario())
    assert isinstance(result, int) and ticks == 20
    assert os.path.exists(marker)


def test_driver_awaits_many_calls_at_once(made):
    actor = made(AsyncProbe)

    async def scenario():
        return await asyncio.gather(*(actor.echo.remote(i) for i in range(100)))

    assert asyncio.run(scenario()) == list(range(100))


def test_a_reply_after_the_awaiting_loop_closed_is_dropped_quietly(made, caplog):
    """``asyncio.wait_for`` gave up and ``asyncio.run`` closed its loop; then the reply comes."""
    actor = made(AsyncProbe)
    futures = []

    async def scenario():
        futures.append(actor.nap.remote(0.3))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(futures[0], 0.01)

    asyncio.run(scenario())
    assert futures[0].result(timeout=30) == 0.3  # the reply arrived after the loop closed
    assert not [r for r in caplog.records if "done-callback" in r.getMessage()]


# -- retire: finish what was sent, then end -------------------------------------------------


@pytest.mark.parametrize(
    "cls, options, running",
    [
        (Threaded, {}, 1),
        (Threaded, {"max_concurrency": 2}, 2),
        (AsyncProbe, {"max_concurrency": 2}, 2),
    ],
    ids=["sync", "threaded", "async"],
)
def test_retire_finishes_queued_calls_then_ends(made, gate, tmp_path, cls, options, running):
    actor = made(cls, **options)
    markers = [str(tmp_path / f"held-{i}") for i in range(running)]
    held = [actor.hold.remote(m, gate.path) for m in markers]
    queued = [actor.echo.remote(i) for i in range(3)]
    _wait_for_files(markers)
    assert _retire(actor, "reason text") is True
    with pytest.raises(zactor.ActorDiedError, match="reason text"):
        actor.echo.remote("after").result(timeout=30)
    row = _stats_row(actor)
    assert row["retiring"] and row["queued"] == 3
    assert not any(f.done() for f in held + queued)
    gate.open()
    zactor.get(held, timeout=30)  # they complete normally ...
    assert zactor.get(queued, timeout=30) == [0, 1, 2]
    poll(lambda: not _known_to_head(actor), timeout=30)  # ... then the actor ends
    assert _stats_row(actor) is None
    with pytest.raises(zactor.ActorDiedError, match="reason text"):
        actor.echo.remote("later").result(timeout=30)


def test_retire_an_idle_actor_ends_it_at_once(made):
    actor = made(Threaded)
    assert actor.echo.remote(1).result(timeout=30) == 1
    assert _retire(actor, "idle and retired") is True
    with pytest.raises(zactor.ActorDiedError, match="idle and retired"):
        actor.echo.remote(2).result(timeout=30)
    poll(lambda: not _known_to_head(actor), timeout=30)
    assert _retire(actor, "again") is False  # ended: nothing to retire


def test_retire_an_async_actor_stops_its_loop(cluster, spread):
    ((retired, witness),) = spread(AsyncProbe, [2])
    assert retired.echo.remote(1).result(timeout=30) == 1
    assert _retire(retired, "done with it") is True
    poll(lambda: _async_thread_gone(witness, retired), timeout=30)


def test_retire_twice_keeps_the_first_reason_and_kill_still_ends_it(made, gate, tmp_path):
    actor = made(Threaded)
    marker = str(tmp_path / "held")
    held = actor.hold.remote(marker, gate.path)
    queued = actor.echo.remote("queued")
    _wait_for_files([marker])
    assert _retire(actor, "first reason") is True
    assert _retire(actor, "second reason") is True
    with pytest.raises(zactor.ActorDiedError, match="first reason"):
        actor.echo.remote("after").result(timeout=30)
    zactor.kill(actor)  # a retiring actor can still be killed: what is queued fails
    with pytest.raises(zactor.ActorDiedError, match="killed"):
        queued.result(timeout=30)
    gate.open()
    with pytest.raises(zactor.ActorDiedError):
        held.result(timeout=30)  # it ran to its end, but its actor was killed meanwhile


def test_retire_an_unknown_actor_returns_false(cluster):
    address = cluster["workers"][0]["address"]
    assert worker_service_handle(address).retire.remote(10**9, "nobody").result(timeout=30) is False


# -- stats for `zactor status` ----------------------------------------------------------------


def test_stats_report_kind_concurrency_and_percentiles(made):
    sync = made(Threaded)
    threaded = made(Threaded, max_concurrency=4)
    asynchronous = made(AsyncProbe, max_concurrency=7)
    for handle in (sync, threaded, asynchronous):
        handle.context.remote().result(timeout=30)  # constructed; one call done
    expected = {sync: ("sync", 1), threaded: ("threaded", 4), asynchronous: ("async", 7)}
    for handle, (kind, limit) in expected.items():
        zactor.get([handle.echo.remote(i) for i in range(20)], timeout=30)
        row = _stats_row(handle)
        assert (row["kind"], row["max_concurrency"]) == (kind, limit)
        assert row["calls"] == 21 and row["queued"] == 0
        assert 0 < row["p50_us"] <= row["p99_us"]


def test_stats_percentiles_are_none_before_the_first_call_and_track_slow_calls(made):
    actor = made(AsyncProbe)
    poll(lambda: _stats_row(actor) is not None, timeout=30)
    row = _stats_row(actor)
    assert row["calls"] == 0 and row["p50_us"] is None and row["p99_us"] is None
    zactor.get([actor.nap.remote(0.05) for _ in range(5)], timeout=30)
    row = _stats_row(actor)
    assert row["p50_us"] >= 40_000  # a nap of 50 ms is at least 40 ms of service time


def test_stats_count_calls_queued_behind_a_running_one(made, gate, tmp_path):
    actor = made(Threaded)
    marker = str(tmp_path / "held")
    held = actor.hold.remote(marker, gate.path)
    queued = [actor.echo.remote(i) for i in range(3)]
    _wait_for_files([marker])
    poll(lambda: _stats_row(actor)["queued"] == 3, timeout=30)
    gate.open()
    zactor.get([held, *queued], timeout=30)
    assert _stats_row(actor)["queued"] == 0
