"""Many node agents on one head: what each node and each actor costs the head.

Run with::

    python bench/scale_nodes.py --nodes 24 --actors 2000
    python bench/scale_nodes.py --nodes 24 --actors 2000 --json /tmp/scale.json

It starts, on this machine, a standing head listening on tcp 127.0.0.1 with
one worker of its own (the fewest it allows), then ``--nodes`` node agents
(``zactor start --address``, one worker each, all started at once), each in a
cluster directory of its own as if on its own machine. This process then joins
as a driver, creates ``--actors`` actors (placement spreads them over the
workers), calls each once, and drops them. Throughout it reads the head
process's CPU time (``/proc/<pid>/stat``: user + system), resident memory
(``VmRSS``) and open descriptors (``/proc/<pid>/fd``):

==================  ===========================================================
alone               the head with its own worker, nothing joined
joined              after every node joined: the difference, divided by the
                    nodes, is what a node costs the head
created             after the actors were created and each answered a call:
                    the difference from *joined*, divided by the actors, is
                    what an actor costs the head (registry, ledger, placement)
released            after the driver dropped its handles and the head ended
                    every actor
==================  ===========================================================

Beside those: the head's idle CPU per second alone and with the nodes sending
heartbeats (their difference per node is a heartbeat's cost), the creation
rate, and the descriptors one node worker and one node agent hold. It checks
what it measures on: every node joined (``zactor status --json``), every actor
answered from the node the head placed it on, every node hosts actors, and no
process is left after ``zactor stop`` on the head (leftovers are killed and
reported). It prints a JSON report (``--json`` writes it to a file too) and a
short table. docs/scaling.md models 100 nodes x 10,000 actors from its figures.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import gc
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time

if __name__ == "__main__":  # run from a source checkout: import this checkout's zactor
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import zactor
from zactor.caller.handle import head_handle
from zactor.control.cluster import child_pids, process_alive

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TICK = os.sysconf("SC_CLK_TCK")
#: How long the bench waits for one ``zactor`` command (seconds): a node start on a
#: loaded 2-core machine, with every other node starting too, takes a while.
COMMAND_TIMEOUT_S = 180.0
#: How long the processes get to end after ``zactor stop`` before leftovers are killed.
GONE_WITHIN_S = 30.0


class Probe:
    """The actor: it says where it runs."""

    def where(self) -> list:
        """``[node id, worker id]`` of the process hosting this actor."""
        context = zactor.get_runtime_context()
        return [context.node_id, context.worker_id]


# -- reading a process from /proc ------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def rss_bytes(pid: int) -> int:
    """``VmRSS`` of ``pid``, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line: is {pid} a zombie?")


def _tcp_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f)
            inodes.update(line.split()[9] for line in f)
    return inodes


def descriptors(pid: int) -> dict:
    """What ``pid`` holds open: ``fds`` in all, ``sockets`` (tcp, unix, netlink),
    of which ``tcp`` (connections and listeners), and ``eventfds`` (ZeroMQ gives
    every socket and I/O thread a mailbox, each an eventfd)."""
    links = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    tcp = _tcp_inodes()
    sockets = [link[len("socket:[") : -1] for link in links if link.startswith("socket:[")]
    return {
        "fds": len(links),
        "sockets": len(sockets),
        "tcp": sum(1 for inode in sockets if inode in tcp),
        "eventfds": sum(1 for link in links if "eventfd" in link),
    }


def snapshot(pid: int) -> dict:
    """CPU seconds, RSS and descriptors of ``pid`` now."""
    return {"cpu_s": cpu_seconds(pid), "rss_bytes": rss_bytes(pid), **descriptors(pid)}


def idle_cpu_per_s(pid: int, seconds: float) -> float:
    """The CPU seconds ``pid`` spends per second over ``seconds`` of waiting."""
    before, start = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - start)


# -- the machines ----------------------------------------------------------------------------


class Machine:
    """One cluster directory (``ZACTOR_CLUSTER_DIR``): a "machine" of the bench."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.env = dict(os.environ, ZACTOR_CLUSTER_DIR=directory)
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (REPO, os.environ.get("PYTHONPATH", "")) if p
        )

    def zactor(self, *args: str) -> dict:
        """``python -m zactor ARGS --json``; its parsed output (RuntimeError if it failed)."""
        proc = subprocess.run(
            [sys.executable, "-m", "zactor", *args, "--json"],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=COMMAND_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"`zactor {' '.join(args)}` (ZACTOR_CLUSTER_DIR={self.directory}) failed with "
                f"code {proc.returncode}:\n{proc.stdout}{proc.stderr}"
            )
        return json.loads(proc.stdout)

    def has_node_file(self) -> bool:
        return any(
            n.startswith("node-") and n.endswith(".json") for n in os.listdir(self.directory)
        )


class Scale:
    """The head, the nodes, and every process they started (for the teardown)."""

    def __init__(self, root: str, nodes: int) -> None:
        self.root = root
        self.head = Machine(os.path.join(root, "head"))
        self.nodes = {f"n{i:03d}": Machine(os.path.join(root, f"n{i:03d}")) for i in range(nodes)}
        self.address: str | None = None
        self.head_pid: int | None = None
        #: Every process seen (pid -> start time): none may outlive the bench.
        self.pids: dict[int, int | None] = {}

    def remember(self, pids) -> None:
        for pid in pids:
            if pid and pid not in self.pids:
                with open(f"/proc/{pid}/stat") as f:
                    self.pids[pid] = int(f.read().rsplit(")", 1)[1].split()[19])

    def start_head(self) -> dict:
        record = self.head.zactor("start", "--head", "--port", "0", "--num-workers", "1")
        self.address, self.head_pid = record["address"], record["pid"]
        self.remember([self.head_pid, *child_pids(self.head_pid)])
        return record

    def start_nodes(self, parallel: int) -> list[dict]:
        """Start every node agent, ``parallel`` at a time; their records."""

        def start(item) -> dict:
            node_id, machine = item
            began = time.monotonic()
            keys = os.path.join(self.head.directory, "keys", "node.keys")  # copied, in life
            record = machine.zactor(
                "start", "--address", self.address, "--node-id", node_id, "--num-workers", "1",
                "--keys", keys,
            )  # fmt: skip
            return dict(record, start_s=time.monotonic() - began)

        with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
            futures = [pool.submit(start, item) for item in self.nodes.items()]
            records = []
            for future in futures:
                # Every start is waited for, failed or not, so that each node that
                # did start is known to the teardown.
                with contextlib.suppress(Exception):
                    record = future.result()
                    records.append(record)
                    self.remember([record["pid"], *child_pids(record["pid"])])
            for future in futures:
                future.result()  # raises the first failure
        return records

    def status(self) -> dict:
        status = self.head.zactor("status")
        self.remember(w["pid"] for w in status["workers"])
        return status

    def teardown(self) -> dict:
        """``zactor stop`` on the head (which stops the nodes), then on any node still
        running; then kill whatever is left. Returns what it found."""
        start = time.monotonic()
        errors = []
        if self.head_pid is not None and process_alive(self.head_pid, self.pids[self.head_pid]):
            try:
                self.head.zactor("stop")
            except Exception as exc:  # reported; the leftovers are killed below
                errors.append(str(exc))
        deadline = time.monotonic() + GONE_WITHIN_S
        while time.monotonic() < deadline and self._alive():
            time.sleep(0.1)
        for machine in self.nodes.values():  # a node the head's stop did not reach
            if os.path.isdir(machine.directory) and machine.has_node_file():
                try:
                    machine.zactor("stop")
                except Exception as exc:
                    errors.append(str(exc))
        leftovers = self._alive()
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return {
            "seconds": time.monotonic() - start,
            "processes": len(self.pids),
            "pids": sorted(self.pids),
            "leftovers": leftovers,
            "errors": errors,
        }

    def _alive(self) -> list[int]:
        return sorted(pid for pid, started in self.pids.items() if process_alive(pid, started))


# -- the run ---------------------------------------------------------------------------------


def run(args: argparse.Namespace, scale: Scale) -> dict:
    report: dict = {
        "command": " ".join(["python", "bench/scale_nodes.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {
            "cpus": os.cpu_count(),
            "mem_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
            "python": platform.python_version(),
        },
        "nodes": args.nodes,
        "actors": args.actors,
        "head": {},
    }
    head = report["head"]
    scale.start_head()
    pid = scale.head_pid
    time.sleep(1.0)  # let the head's start-up settle before the baseline
    head["alone"] = snapshot(pid)
    report["idle"] = {"alone_cpu_per_s": idle_cpu_per_s(pid, args.idle_seconds)}

    start = time.monotonic()
    records = scale.start_nodes(args.parallel)
    took = sorted(record["start_s"] for record in records)
    report["join"] = {
        "seconds": time.monotonic() - start,
        "node_start_s": {"min": took[0], "median": took[len(took) // 2], "max": took[-1]},
    }
    time.sleep(1.0)  # the join's own work done: what is left is the nodes' steady cost
    head["joined"] = snapshot(pid)
    report["idle"]["joined_cpu_per_s"] = idle_cpu_per_s(pid, args.idle_seconds)
    status = scale.status()
    alive = [n for n in status["nodes"] if not n["head"] and n["state"] == "alive"]
    report["join"]["nodes_alive"] = sorted(n["node_id"] for n in alive)
    report["join"]["workers_by_node"] = {n["node_id"]: n["workers"] for n in status["nodes"]}
    missing = set(scale.nodes) - {n["node_id"] for n in alive}
    if missing:
        raise RuntimeError(f"nodes {sorted(missing)} did not join: see their logs in {scale.root}")

    os.environ["ZACTOR_CLUSTER_DIR"] = scale.head.directory  # never the user's own cluster
    zactor.init(address=scale.address)
    try:
        report["control_call"] = control_call_cost(pid, args.control_calls)
        probe = zactor.remote(Probe)
        cpu0, start = cpu_seconds(pid), time.monotonic()
        handles = [probe.remote() for _ in range(args.actors)]
        created_s, create_cpu = time.monotonic() - start, cpu_seconds(pid) - cpu0
        start = time.monotonic()
        answers = zactor.get([h.where.remote() for h in handles], timeout=300)
        report["call"] = {"seconds": time.monotonic() - start, "answered": len(answers)}
        report["create"] = {
            "seconds": created_s,
            "per_s": args.actors / created_s,
            "head_cpu_s": create_cpu,
        }
        time.sleep(1.0)  # the workers' start reports and the driver's holds are in
        head["created"] = snapshot(pid)
        status = scale.status()
        report.update(check_placement(handles, answers, status))
        node_worker = next(w for w in status["workers"] if w["node_id"] in scale.nodes)
        agent = next(n for n in status["nodes"] if n["node_id"] == node_worker["node_id"])
        report["fds"] = {
            "head": descriptors(pid),
            "node_worker": descriptors(node_worker["pid"]),
            "node_agent": descriptors(agent["pid"]),
            "driver": descriptors(os.getpid()),
        }

        # Lifetime: dropping the handles reports releases; the head retires each actor.
        cpu0, start = cpu_seconds(pid), time.monotonic()
        del handles, answers  # the driver's only handles: each actor is now unheld
        gc.collect()
        info = head_handle().cluster_info
        deadline = time.monotonic() + 300
        while info.remote().result(timeout=60)["num_actors"] and time.monotonic() < deadline:
            time.sleep(0.05)
        left = info.remote().result(timeout=60)["num_actors"]
        report["release"] = {
            "seconds": time.monotonic() - start,
            "head_cpu_s": cpu_seconds(pid) - cpu0,
            "actors_left": left,
        }
        time.sleep(1.0)
        head["released"] = snapshot(pid)
    finally:
        zactor.shutdown()
    return report


def control_call_cost(pid: int, calls: int) -> dict:
    """The head's CPU per control call, from ``calls`` look-ups of a name nobody holds,
    one at a time (so each arrives alone, as a node's heartbeat does: a driver may not
    send heartbeats). Each is read, run (a dict look-up) and answered: what a heartbeat
    costs the head, without the idle measurement's noise."""
    lookup = head_handle().lookup
    cpu0, start = cpu_seconds(pid), time.monotonic()
    for _ in range(calls):
        if lookup.remote("scale-bench-nobody", None).result(timeout=60) is not None:
            raise RuntimeError("the head found an actor named scale-bench-nobody: use a fresh head")
    seconds, cpu = time.monotonic() - start, cpu_seconds(pid) - cpu0
    return {"calls": calls, "per_s": calls / seconds, "head_cpu_us": 1e6 * cpu / calls}


def check_placement(handles: list, answers: list, status: dict) -> dict:
    """Where the actors answered from against where the head placed them: ``spread``
    (actors by node) and ``misplaced`` (how many answered from another worker)."""
    registry = head_handle().list_actors.remote().result(timeout=60)
    placed = {info["actor_id"]: info["worker_id"] for info in registry}
    node_of = {w["worker_id"]: w["node_id"] for w in status["workers"]}
    spread: dict[str, int] = {}
    misplaced = 0
    for handle, (node_id, worker_id) in zip(handles, answers):
        spread[node_id] = spread.get(node_id, 0) + 1
        if placed.get(handle._actor_id) != worker_id or node_of.get(worker_id) != node_id:
            misplaced += 1
    return {
        "spread": dict(sorted(spread.items())),
        "misplaced": misplaced,
        "registry_actors": len(registry),
        "status_actors": len(status["actors"]),
    }


def derive(report: dict) -> None:
    """The per-node and per-actor figures, from the snapshots."""
    head, nodes, actors = report["head"], report["nodes"], report["actors"]
    alone, joined, created = head["alone"], head["joined"], head["created"]
    report["per_node"] = {
        "head_rss_bytes": (joined["rss_bytes"] - alone["rss_bytes"]) / nodes,
        "head_cpu_ms_to_join": 1e3 * (joined["cpu_s"] - alone["cpu_s"]) / nodes,
        "head_fds": (joined["fds"] - alone["fds"]) / nodes,
        "heartbeat_cpu_ms_per_s": 1e3
        * (report["idle"]["joined_cpu_per_s"] - report["idle"]["alone_cpu_per_s"])
        / nodes,
    }
    report["per_actor"] = {
        "head_rss_bytes": (created["rss_bytes"] - joined["rss_bytes"]) / actors,
        "head_cpu_ms_to_create": 1e3 * report["create"]["head_cpu_s"] / actors,
        "head_cpu_ms_to_release": 1e3 * report["release"]["head_cpu_s"] / actors,
    }


def table(report: dict) -> str:
    """The report's main figures, as a few lines of text."""
    mib = 1 << 20
    head, per_node, per_actor = report["head"], report["per_node"], report["per_actor"]
    rows = [
        ("head RSS alone / joined / created / released (MiB)",
         " / ".join(f"{head[k]['rss_bytes'] / mib:.1f}"
                    for k in ("alone", "joined", "created", "released"))),
        ("head fds alone / joined / created",
         " / ".join(str(head[k]["fds"]) for k in ("alone", "joined", "created"))),
        (f"nodes joined (in {report['join']['seconds']:.1f} s)",
         f"{len(report['join']['nodes_alive'])} of {report['nodes']}"),
        ("per node: head RSS (KiB), CPU to join (ms), fds",
         f"{per_node['head_rss_bytes'] / 1024:.0f}, {per_node['head_cpu_ms_to_join']:.1f}, "
         f"{per_node['head_fds']:.1f}"),
        ("head idle CPU alone / with nodes (ms/s)",
         f"{1e3 * report['idle']['alone_cpu_per_s']:.1f} / "
         f"{1e3 * report['idle']['joined_cpu_per_s']:.1f}"),
        ("per node heartbeating: head CPU (ms/s)", f"{per_node['heartbeat_cpu_ms_per_s']:.2f}"),
        ("head CPU per control call (us), calls/s",
         f"{report['control_call']['head_cpu_us']:.0f}, {report['control_call']['per_s']:.0f}"),
        ("actors created, answered, misplaced",
         f"{report['actors']}, {report['call']['answered']}, {report['misplaced']}"),
        ("creation rate (actors/s)", f"{report['create']['per_s']:.0f}"),
        ("per actor: head RSS (B), CPU create / release (ms)",
         f"{per_actor['head_rss_bytes']:.0f}, {per_actor['head_cpu_ms_to_create']:.2f} / "
         f"{per_actor['head_cpu_ms_to_release']:.2f}"),
        ("actors per node min / max",
         f"{min(report['spread'].values())} / {max(report['spread'].values())}"),
        ("sockets (tcp) head / node worker / node agent / driver",
         " / ".join(f"{report['fds'][k]['sockets']} ({report['fds'][k]['tcp']})"
                    for k in ("head", "node_worker", "node_agent", "driver"))),
        ("teardown: processes, leftovers",
         f"{report['teardown']['processes']}, {len(report['teardown']['leftovers'])}"),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=24, help="node agents (one worker each)")
    parser.add_argument("--actors", type=int, default=2000, help="actors to create")
    parser.add_argument(
        "--parallel", type=int, default=24, help="node agents started at once (default 24)"
    )
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=10.0,
        help="how long the head's idle CPU is measured, alone and with the nodes",
    )
    parser.add_argument(
        "--control-calls",
        type=int,
        default=5000,
        help="control calls sent to measure the head's CPU per call",
    )
    parser.add_argument("--json", help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    if args.nodes < 1 or args.actors < args.nodes:
        parser.error("--nodes must be at least 1, and --actors at least --nodes")
    root = tempfile.mkdtemp(prefix="zactor-scale-")
    scale = Scale(root, args.nodes)
    # SIGTERM ends the run as Ctrl-C does: through the teardown below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(f"{parser.prog}: stopped by SIGTERM"))
    report = None
    try:
        report = run(args, scale)
    finally:
        teardown = scale.teardown()
        shutil.rmtree(root, ignore_errors=True)
        if report is None:  # failed or interrupted: say what was cleaned up
            print(f"teardown: {json.dumps(teardown)}", file=sys.stderr)
    report["teardown"] = teardown
    derive(report)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print(table(report), file=sys.stderr)
    problems = []
    if report["call"]["answered"] != args.actors or report["misplaced"]:
        problems.append("not every actor answered from where the head placed it")
    idle = sorted(set(scale.nodes) - set(report["spread"]))
    if idle:
        problems.append(f"nodes {idle} host no actor")
    if report["release"]["actors_left"]:
        problems.append("the head did not end every dropped actor")
    if teardown["leftovers"] or teardown["errors"]:
        problems.append(f"the teardown left processes or failed: {teardown}")
    for problem in problems:
        print(f"{parser.prog}: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
