"""Compare zactor's actor calls with Dask and Ray actors, beside a raw pyzmq yardstick.

Run it: ``PYTHONPATH=. python bench/compare_frameworks.py`` (from the repo root).

What it measures, in one run, on a local cluster of 2 worker processes on
this machine, one caller and one ``Counter`` actor per framework:

(a) sync call latency p50/p99 of a trivial ``Counter.increment`` call, each
    call awaited before the next is sent;
(b) pipelined rate: 5,000 ``increment`` calls issued, then all awaited, in
    calls/s.

A second yardstick (issue 12) is a hand-written actor over a
``multiprocessing.Pipe`` (:mod:`zactor.benchmark.pipe_actor`, the one
``zactor bench`` measures too): the same counter in a child process,
``(method, args)`` tuples sent and the result sent back with
``Connection.send``/``recv`` (pickle over a Unix socketpair); pipelined: a
second thread sends while the caller reads the replies (a pipe holds too
few messages to send them all first).

Each system is set up in its own phase (the Pipe actor, then zactor, Dask and
Ray), torn down before the next one starts, so each is measured alone. Within
a phase, every round measures the raw yardstick and the system back to back
(their order alternates), so machine noise hits both; a figure is the
median over the rounds (3 by default). The raw yardstick is a pyzmq DEALER in this process sending a
50-byte message to a ROUTER echo server in another process over ``ipc://``
(sndhwm = rcvhwm = 0 on both sockets): its round-trip p50/p99, and its
pipelined rate with one message per exchange (5,000 sends, then the 5,000
replies).

The main table gives each framework's absolute figures and each divided by
the raw yardstick's (the median over every raw round of the run): a latency
ratio of 20x is 20 times the raw round trip; a rate ratio of 0.05x is 5% of
the raw rate. Its last column divides each p50 by the Pipe actor's (measured
in its own phase). A second table gives the raw yardstick measured during each
framework's phase, and the framework's ratios to that phase's raw figures:
a framework's idle runtime (threads polling, heartbeats) changes how fast
this machine's round trips are, in either direction (on a VM, busy vCPUs
wake up faster than idle ones).

How the frameworks are called:

* zactor: ``zactor.init(num_workers=2)``, ``h = zactor.remote(Counter).remote()``,
  ``h.increment.remote().result()``; pipelined: ``zactor.get(futures)``.
* Dask (``dask.distributed``): ``Client(n_workers=2, threads_per_worker=1,
  processes=True)``, ``client.submit(Counter, actor=True).result()``,
  ``counter.increment().result()``; pipelined: ``.result()`` of each future.
* Ray: ``ray.init(num_cpus=2, include_dashboard=False)`` on 127.0.0.1 with
  usage stats off, ``ray.remote(Counter).remote()``,
  ``ray.get(h.increment.remote())``; pipelined: ``ray.get(refs)``.

Dask and Ray are NOT zactor dependencies: they are optional extras, installed
by hand for this comparison (``pip install distributed ray``). A framework
that is not importable is skipped with a printed note. Every loop is bounded
in count and in time, all traffic stays on this machine (ipc sockets and
127.0.0.1), and every process the script starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import gc
import logging
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field

# Ray reports usage statistics over the network unless told not to; this must be
# set before ``ray`` is imported (also in the worker processes, which inherit it).
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import zmq  # noqa: E402

from zactor.benchmark.pipe_actor import (  # noqa: E402  (zactor bench's, too)
    PipeActor,
    round_trips_ns,
)
from zactor.benchmark.runner import (  # noqa: E402  (the same yardstick)
    STOP,
    _Counter,
    echo_loop,
    raw_socket,
)

#: The raw yardstick's request: about the size of a small actor-call frame.
RAW_MESSAGE = b"z" * 50
#: Upper bound on the time one latency measurement may take, in seconds.
LATENCY_TIME_CAP_S = 20.0
#: Upper bound on the time one pipelined batch may take, in seconds.
PIPELINED_TIMEOUT_S = 120.0
#: Upper bound on the start-up of one framework's cluster, in seconds.
START_TIMEOUT_S = 120.0


class Counter:
    """The actor every framework hosts: a trivial counter."""

    def __init__(self) -> None:
        self.n = 0

    def increment(self) -> int:
        self.n += 1
        return self.n


# -- the raw pyzmq yardstick -------------------------------------------------------------


def raw_echo_server(address: str, ready) -> None:
    """The yardstick's server process: a ROUTER that echoes, until told to stop.

    The echo loop runs on a thread; the main thread only watches for the death
    of its parent (then it exits at once), so nothing outlives the benchmark.
    """
    parent = os.getppid()
    context = zmq.Context(io_threads=1)
    sock = raw_socket(context, zmq.ROUTER)
    sock.bind(address)
    loop = threading.Thread(target=echo_loop, args=(sock,), daemon=True)
    loop.start()
    ready.set()
    while loop.is_alive():
        if os.getppid() != parent:
            os._exit(0)
        loop.join(timeout=0.25)
    sock.close()
    context.term()


class RawYardstick:
    """A DEALER here, a ROUTER echo server in another process, over ``ipc://``."""

    name = "raw pyzmq (yardstick)"

    def __init__(self, directory: str) -> None:
        self.address = f"ipc://{os.path.join(directory, 'raw-echo.sock')}"
        ctx = multiprocessing.get_context("spawn")
        ready = ctx.Event()
        self.process = ctx.Process(
            target=raw_echo_server,
            args=(self.address, ready),
            name="compare-frameworks-raw-echo",
            daemon=True,
        )
        self.process.start()
        if not ready.wait(60):
            self.process.kill()
            self.process.join(5)
            raise RuntimeError("the raw pyzmq echo server did not start within 60 s")
        self.context = zmq.Context(io_threads=1)
        self.sock = raw_socket(self.context, zmq.DEALER)
        self.sock.connect(self.address)
        self.sock.send(RAW_MESSAGE)
        if not self.sock.poll(10_000):
            raise RuntimeError("the raw pyzmq echo server does not answer")
        self.sock.recv()

    def latency_ns(self, n: int, time_cap_s: float) -> np.ndarray:
        """Round-trip times (ns) of up to ``n`` requests sent one at a time."""
        return round_trips_ns(self.sock.send, self.sock.recv, RAW_MESSAGE, n, time_cap_s)

    def pipelined_rate(self, n: int) -> float:
        """Messages per second: ``n`` sends, then the ``n`` echoed replies."""
        send, recv, msg = self.sock.send, self.sock.recv, RAW_MESSAGE
        t0 = time.perf_counter()
        for _ in range(n):
            send(msg)
        for _ in range(n):
            if not self.sock.poll(int(PIPELINED_TIMEOUT_S * 1000)):
                raise RuntimeError("the raw echo server stopped answering")
            recv()
        return n / (time.perf_counter() - t0)

    def close(self) -> None:
        """Stop the server process and close the socket."""
        try:
            self.sock.send(STOP)
            if self.sock.poll(2000):
                self.sock.recv()
        finally:
            self.sock.close()
            self.context.term()
            self.process.join(timeout=5)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(timeout=5)


# -- the frameworks ---------------------------------------------------------------------------


class Framework:
    """One framework's side: start a cluster, host a Counter, call it, stop."""

    name = "?"
    module = "?"

    def version(self) -> str:
        raise NotImplementedError

    def start(self, workers: int, directory: str) -> None:
        """Start a local cluster of ``workers`` processes; scratch files go in ``directory``."""
        raise NotImplementedError

    def call(self) -> int:
        """One synchronous ``increment`` call; returns the counter's new value."""
        raise NotImplementedError

    def pipelined(self, n: int) -> list:
        """``n`` calls issued, then all awaited; returns their values."""
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def latency_ns(self, n: int, time_cap_s: float) -> np.ndarray:
        lat = np.empty(n, np.int64)
        call, clock = self.call, time.perf_counter_ns
        deadline = clock() + int(time_cap_s * 1e9)
        i = 0
        while i < n:
            t0 = clock()
            call()
            t1 = clock()
            lat[i] = t1 - t0
            i += 1
            if t1 > deadline:
                break
        self.expected += i
        return lat[:i]

    def pipelined_rate(self, n: int) -> float:
        t0 = time.perf_counter()
        values = self.pipelined(n)
        rate = n / (time.perf_counter() - t0)
        self.expected += n
        if len(values) != n or max(values) != self.expected:
            raise RuntimeError(
                f"{self.name}: counter reached {max(values)}, expected {self.expected}"
            )
        return rate


class ZactorFramework(Framework):
    name = "zactor"
    module = "zactor"

    def version(self) -> str:
        import zactor

        return getattr(zactor, "__version__", "source tree")

    def start(self, workers: int, directory: str) -> None:
        import zactor

        self.zactor = zactor
        zactor.init(num_workers=workers)
        self.handle = zactor.remote(Counter).remote()
        self.expected = self.handle.increment.remote().result(timeout=START_TIMEOUT_S)

    def call(self) -> int:
        return self.handle.increment.remote().result()

    def pipelined(self, n: int) -> list:
        remote = self.handle.increment.remote
        futures = [remote() for _ in range(n)]
        return self.zactor.get(futures, timeout=PIPELINED_TIMEOUT_S)

    def stop(self) -> None:
        self.handle = None
        self.zactor.shutdown()


class DaskFramework(Framework):
    name = "dask.distributed"
    module = "distributed"

    def version(self) -> str:
        import dask
        import distributed

        return f"dask {dask.__version__}, distributed {distributed.__version__}"

    def start(self, workers: int, directory: str) -> None:
        import dask
        from distributed import Client

        # Scratch space (and its lock files) of the scheduler and the workers.
        dask.config.set({"temporary-directory": directory})

        self.client = Client(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            local_directory=directory,
            silence_logs=logging.ERROR,
        )
        self.counter = self.client.submit(Counter, actor=True).result(timeout=START_TIMEOUT_S)
        self.expected = self.counter.increment().result(timeout=START_TIMEOUT_S)

    def call(self) -> int:
        return self.counter.increment().result()

    def pipelined(self, n: int) -> list:
        increment = self.counter.increment
        futures = [increment() for _ in range(n)]
        deadline = time.monotonic() + PIPELINED_TIMEOUT_S
        return [f.result(timeout=max(0.001, deadline - time.monotonic())) for f in futures]

    def stop(self) -> None:
        self.counter = None
        client, self.client = self.client, None
        cluster = client.cluster
        client.close(timeout=30)
        if cluster is not None:
            cluster.close(timeout=30)


class RayFramework(Framework):
    name = "ray"
    module = "ray"

    def version(self) -> str:
        import ray

        return f"ray {ray.__version__}"

    def start(self, workers: int, directory: str) -> None:
        import ray

        self.ray = ray
        ray.init(
            num_cpus=workers,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            logging_level=logging.WARNING,
            log_to_driver=False,
            _temp_dir=directory,
        )
        self.handle = ray.remote(Counter).remote()
        self.expected = ray.get(self.handle.increment.remote(), timeout=START_TIMEOUT_S)

    def call(self) -> int:
        return self.ray.get(self.handle.increment.remote())

    def pipelined(self, n: int) -> list:
        remote = self.handle.increment.remote
        refs = [remote() for _ in range(n)]
        return self.ray.get(refs, timeout=PIPELINED_TIMEOUT_S)

    def stop(self) -> None:
        if self.handle is not None:
            self.ray.kill(self.handle)
        self.handle = None
        self.ray.shutdown()


class PipeYardstick(Framework):
    """The second yardstick: a :class:`PipeActor` hosting ``zactor bench``'s counter
    (the same code as :class:`Counter`; the child imports its class by name, and
    this script's are in ``__main__``)."""

    name = "multiprocessing.Pipe actor"
    module = "multiprocessing"

    def version(self) -> str:
        return f"python {platform.python_version()}"

    def start(self, workers: int, directory: str) -> None:
        self.actor = PipeActor(_Counter, method="inc")
        self.expected = self.actor.call("inc")

    def latency_ns(self, n: int, time_cap_s: float) -> np.ndarray:
        lat = self.actor.latency_ns(n, time_cap_s)
        self.expected += len(lat)
        return lat

    def pipelined_rate(self, n: int) -> float:
        rate = self.actor.pipelined_rate(n)
        self.expected += n + 1
        value = self.actor.call("inc")  # after the clock: every call was counted
        if value != self.expected:
            raise RuntimeError(f"{self.name}: counter reached {value}, expected {self.expected}")
        return rate

    def stop(self) -> None:
        self.actor.close()


FRAMEWORKS = {"zactor": ZactorFramework, "dask": DaskFramework, "ray": RayFramework}


# -- measurement --------------------------------------------------------------------------------


@dataclass
class Rounds:
    """Per-round figures of one side (raw or a framework) in one phase."""

    p50_us: list = field(default_factory=list)
    p99_us: list = field(default_factory=list)
    calls: list = field(default_factory=list)
    rate: list = field(default_factory=list)

    def add_latency(self, lat_ns: np.ndarray) -> None:
        p50, p99 = np.percentile(lat_ns, [50, 99])
        self.p50_us.append(p50 / 1e3)
        self.p99_us.append(p99 / 1e3)
        self.calls.append(len(lat_ns))

    def extend(self, other: Rounds) -> None:
        self.p50_us += other.p50_us
        self.p99_us += other.p99_us
        self.calls += other.calls
        self.rate += other.rate

    def median(self, attr: str) -> float:
        values = getattr(self, attr)
        return statistics.median(values) if values else float("nan")


def measure_round(side, rounds: Rounds, latency_calls: int, pipelined_calls: int) -> None:
    gc.collect()
    rounds.add_latency(side.latency_ns(latency_calls, LATENCY_TIME_CAP_S))
    gc.collect()
    rounds.rate.append(side.pipelined_rate(pipelined_calls))


def run_phase(fw: Framework, raw: RawYardstick, args, directory: str) -> tuple[Rounds, Rounds]:
    """Start ``fw``, measure it and the raw yardstick round by round, stop it."""
    t0 = time.perf_counter()
    os.makedirs(directory, exist_ok=True)
    fw.start(args.workers, directory)
    print(f"  {fw.name}: cluster up in {time.perf_counter() - t0:.1f} s", flush=True)
    try:
        # Warm-up, not recorded: both sides' code paths and connections.
        fw.latency_ns(args.warmup_calls, LATENCY_TIME_CAP_S)
        fw.pipelined_rate(min(args.pipelined_calls, 1000))
        raw.latency_ns(args.warmup_calls, LATENCY_TIME_CAP_S)
        raw.pipelined_rate(min(args.pipelined_calls, 1000))
        fw_rounds, raw_rounds = Rounds(), Rounds()
        for r in range(args.rounds):
            order = [(raw, raw_rounds), (fw, fw_rounds)]
            if r % 2:
                order.reverse()
            for side, rounds in order:
                measure_round(side, rounds, args.latency_calls, args.pipelined_calls)
            print(
                f"  {fw.name} round {r + 1}/{args.rounds}: "
                f"p50 {fw_rounds.p50_us[-1]:.1f} us, p99 {fw_rounds.p99_us[-1]:.1f} us, "
                f"{fw_rounds.rate[-1]:,.0f} calls/s ({fw_rounds.calls[-1]} sync calls) | "
                f"raw p50 {raw_rounds.p50_us[-1]:.1f} us, {raw_rounds.rate[-1]:,.0f} msg/s",
                flush=True,
            )
    finally:
        _note_children()  # a framework's processes may be re-parented once it stops
        t0 = time.perf_counter()
        fw.stop()
        print(f"  {fw.name}: stopped in {time.perf_counter() - t0:.1f} s", flush=True)
    return fw_rounds, raw_rounds


# -- report --------------------------------------------------------------------------------------


def _fmt_ratio(x: float) -> str:
    if x != x:  # nan
        return "-"
    return f"{x:.1f}x" if x >= 1 else f"{x:.3f}x"


def print_tables(
    results: dict, pipe: Rounds | None, raw_by_phase: dict, raw_all: Rounds, args
) -> None:
    raw50, raw99 = raw_all.median("p50_us"), raw_all.median("p99_us")
    rawrate = raw_all.median("rate")
    pipe50 = pipe.median("p50_us") if pipe is not None else float("nan")
    header = (
        f"{'':26} {'p50 us':>9} {'p99 us':>9} {'p50/raw':>8} {'p99/raw':>8} "
        f"{'pipelined/s':>12} {'rate/raw':>9} {'p50/Pipe':>9}"
    )
    print()
    print(
        f"Counter.increment, 1 caller, 1 actor, {args.workers} worker processes; "
        f"median of {args.rounds} rounds; sync: {args.latency_calls} calls/round; "
        f"pipelined: {args.pipelined_calls} calls issued then awaited"
    )
    print(header)
    print("-" * len(header))
    rows = {RawYardstick.name: raw_all}
    if pipe is not None:
        rows["Pipe actor (yardstick)"] = pipe
    rows.update(results)
    for name, rounds in rows.items():
        p50, p99, rate = rounds.median("p50_us"), rounds.median("p99_us"), rounds.median("rate")
        print(
            f"{name:26} {p50:9.1f} {p99:9.1f} {_fmt_ratio(p50 / raw50):>8} "
            f"{_fmt_ratio(p99 / raw99):>8} {rate:12,.0f} {_fmt_ratio(rate / rawrate):>9} "
            f"{_fmt_ratio(p50 / pipe50):>9}"
        )
    print()
    print("raw yardstick measured during each framework's phase, and that framework over it:")
    for name, raw_rounds in raw_by_phase.items():
        r50, r99, rrate = (raw_rounds.median(a) for a in ("p50_us", "p99_us", "rate"))
        fw = results[name] if name in results else pipe
        print(
            f"  during {name:17} raw p50 {r50:6.1f} us, p99 {r99:7.1f} us, {rrate:9,.0f} msg/s"
            f" | {name} p50 {_fmt_ratio(fw.median('p50_us') / r50)},"
            f" p99 {_fmt_ratio(fw.median('p99_us') / r99)},"
            f" rate {_fmt_ratio(fw.median('rate') / rrate)}"
        )


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


#: Every process seen below this one while a framework ran (psutil.Process objects).
_SEEN_CHILDREN: dict = {}


def _note_children() -> None:
    try:
        import psutil
    except ImportError:
        return
    try:
        for p in psutil.Process().children(recursive=True):
            _SEEN_CHILDREN[p.pid] = p
    except psutil.Error:
        pass


def leftover_children() -> list:
    """Processes this script started that are still alive (psutil, if installed).

    Both the current descendants and those seen while a framework ran (which
    may have been re-parented since) are checked; psutil's ``is_running`` also
    checks the creation time, so a recycled pid is not mistaken for ours.
    multiprocessing's resource tracker is left out: it ends with this interpreter.
    """
    try:
        import psutil
    except ImportError:
        return []
    _note_children()
    left = []
    for p in _SEEN_CHILDREN.values():
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                if "multiprocessing.resource_tracker" not in " ".join(p.cmdline()):
                    left.append(p)
        except psutil.Error:
            pass
    return left


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--frameworks",
        default="zactor,dask,ray",
        help="comma-separated subset of zactor,dask,ray (default: all)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--latency-calls", type=int, default=2000)
    parser.add_argument("--pipelined-calls", type=int, default=5000)
    parser.add_argument("--warmup-calls", type=int, default=200)
    args = parser.parse_args(argv)
    for opt in ("rounds", "workers", "latency_calls", "pipelined_calls", "warmup_calls"):
        if getattr(args, opt) < 1:
            parser.error(f"--{opt.replace('_', '-')} must be at least 1")
    wanted = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    unknown = [f for f in wanted if f not in FRAMEWORKS]
    if unknown:
        parser.error(f"unknown framework(s) {unknown}; choose from {sorted(FRAMEWORKS)}")

    print(f"load average at start: {_loadavg()}")
    print(
        f"python {platform.python_version()}, {platform.platform()}, "
        f"{os.cpu_count()} CPUs, pyzmq {zmq.__version__} (libzmq {zmq.zmq_version()}), "
        f"numpy {np.__version__}"
    )
    frameworks: list[Framework] = []
    for key in wanted:
        fw = FRAMEWORKS[key]()
        try:
            __import__(fw.module)
            print(f"{fw.name}: {fw.version()}")
        except Exception as exc:  # ImportError, or a broken install
            print(f"NOTE: skipping {fw.name}: cannot import {fw.module!r} ({exc!r})")
            continue
        frameworks.append(fw)

    directory = tempfile.mkdtemp(prefix="zactor-compare-")
    raw = None
    pipe: Rounds | None = None
    results: dict[str, Rounds] = {}
    raw_by_phase: dict[str, Rounds] = {}
    raw_all = Rounds()
    failed = []
    started = time.perf_counter()
    try:
        raw = RawYardstick(directory)
        for fw in [PipeYardstick(), *frameworks]:
            print(f"phase {fw.name}:", flush=True)
            try:
                scratch = os.path.join(directory, fw.module)
                fw_rounds, raw_rounds = run_phase(fw, raw, args, scratch)
            except Exception:
                print(f"NOTE: {fw.name} failed; its row is left out:", flush=True)
                traceback.print_exc(file=sys.stdout)
                failed.append(fw.name)
                continue
            if isinstance(fw, PipeYardstick):
                pipe = fw_rounds
            else:
                results[fw.name] = fw_rounds
            raw_by_phase[fw.name] = raw_rounds
            raw_all.extend(raw_rounds)
        if not raw_all.p50_us:  # still give the raw yardstick's own figures
            raw_rounds = Rounds()
            for _ in range(args.rounds):
                measure_round(raw, raw_rounds, args.latency_calls, args.pipelined_calls)
            raw_all.extend(raw_rounds)
    finally:
        if raw is not None:
            raw.close()
        shutil.rmtree(directory, ignore_errors=True)

    print_tables(results, pipe, raw_by_phase, raw_all, args)
    wall = time.perf_counter() - started
    print(f"\ntotal wall time {wall:.0f} s; load average at end: {_loadavg()}")

    deadline = time.monotonic() + 15
    left = leftover_children()
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = leftover_children()
    if left:
        print("NOTE: processes still running after shutdown; killing them:")
        for p in left:
            try:
                print(f"  pid {p.pid}: {' '.join(p.cmdline())[:120]}")
                p.kill()
            except Exception:
                pass
    else:
        print("all child processes stopped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
