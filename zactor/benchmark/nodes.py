"""``zactor bench --nodes 2``: calls across nodes over tcp, beside raw pyzmq over tcp
with and without CURVE, measured in the same run.

The bench starts, in a private cluster directory (``$ZACTOR_CLUSTER_DIR`` of
a fresh temporary directory), a standing cluster on this machine as two
"machines" would run it: a head listening on tcp on 127.0.0.1 with one
worker, and a node agent (:mod:`zactor.control.node`) that joins it with one
worker listening on tcp on 127.0.0.1 (``zactor start --address ... --host
127.0.0.1``). This process joins as a driver whose inbox is a tcp port too
(``zactor.init(address=..., host="127.0.0.1")``; without ``host`` a driver on
the head's machine gets a socket file), and calls a counter actor pinned to the
node (``resources={"node:<id>": 1}``): every call and every reply crosses tcp,
as between machines, only without a wire between them.

Beside it, two raw pyzmq yardsticks, each a DEALER here and an echo ROUTER in
a process of its own on 127.0.0.1 (:class:`zactor.benchmark.runner.RawYardstick`):
plain tcp, and tcp with CURVE, whose server runs pyzmq's
``ThreadAuthenticator`` admitting one client key, as zactor's tcp transport
does (the authenticator only acts at each connection's handshake; the
measured messages are encrypted and decrypted, never re-authenticated).

Rows (each a median over the rounds; ratios are zactor's over each yardstick's):

1. sync latency p50/p90/p99: one call (or message) at a time, waiting for its
   reply; the three sides alternate in blocks of
   :data:`~zactor.benchmark.runner.LATENCY_BLOCK`, their order rotating.
2. lockstep rate: the sync loop's messages per second (calls over the loop's
   total time), the yardsticks' "one message per exchange" rate.
3. pipelined calls/s: N calls then all replies; each side twice a round in
   mirrored order (rotated every round), the mean of the two.

Targets (issue 11): sync p50 at most 1.3x raw tcp with CURVE; pipelined calls/s
at least 2x the raw CURVE yardstick's lockstep rate (what sending one message
per exchange gets over the same secured connection).

Whether zactor's own tcp sockets use CURVE is read from the driver's socket to
the node's worker (:func:`zactor_mechanism`) and printed: the bench measures
zactor's tcp transport as it is, and picks up CURVE once the transport has it.
Everything the bench starts is stopped at the end, on an error or Ctrl-C too
(a stall guard kills it all if a reply never comes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from zactor.benchmark import runner
from zactor.benchmark.progress import Progress
from zactor.caller.handle import head_handle
from zactor.control import cluster
from zactor.endpoint import runtime as runtime_mod

#: The node agent's id: the counter is pinned to it with ``resources={"node:<id>": 1}``.
NODE_ID = "bench-node-1"
#: Where every process of the bench listens: loopback, tcp.
LOOPBACK = "127.0.0.1"
#: The sides, in the order printed: zactor, then the two yardsticks.
SIDES = ("zactor", "raw_tcp", "raw_curve")
#: The targets: sync p50 over raw CURVE's, and pipelined over raw CURVE's lockstep rate.
P50_TARGET = 1.3
PIPELINED_TARGET = 2.0
#: How long starting the cluster, and one non-measured call, may take (seconds).
START_TIMEOUT_S = 60.0


@dataclass
class NodesConfig:
    """How much work one ``--nodes`` run does."""

    nodes: int
    rounds: int
    latency_calls: int
    pipelined_calls: int
    smoke: bool
    quick: bool
    warmup_fraction: float = 0.2


def make_config(nodes: int, quick: bool, rounds: int | None, smoke: bool) -> NodesConfig:
    """The work of a ``--smoke`` (one round of a few calls: checks that the bench works;
    its figures mean nothing), ``--quick`` or full run; ``rounds`` overrides."""
    if nodes != 2:
        raise ValueError(
            f"--nodes {nodes}: the cross-node bench runs a head and one node agent (--nodes 2)"
        )
    if smoke:
        return NodesConfig(nodes, rounds or 1, 2 * runner.LATENCY_BLOCK, 2_000, True, True)
    if quick:
        return NodesConfig(nodes, rounds or 3, 3_000, 20_000, False, True)
    return NodesConfig(nodes, rounds or 5, 15_000, 20_000, False, False)


# -- the cluster: a head, a node agent, this driver, all on tcp ------------------------------


def zactor_mechanism(address: str) -> str:
    """The security mechanism of this driver's zactor socket to the inbox at ``address``
    (``"NULL"``, ``"CURVE"``), read from the socket's ``ZMQ_MECHANISM`` option.

    This is the bench's CURVE hook: zactor's tcp transport decides, the bench
    only reports what the socket does. ``"unknown"`` if the transport serving
    ``address`` is not a ZeroMQ socket.
    """
    sock = getattr(runtime_mod.current().outbox(address).conn, "sock", None)
    return runner.socket_mechanism(sock) if sock is not None else "unknown"


class CrossNodeCluster:
    """A head and a node agent on tcp loopback, in a private cluster directory, with
    this process joined as a driver on tcp; :meth:`close` stops it all.

    Each step records what it started, so :meth:`close` (and :meth:`kill`, the
    stall guard's) ends whatever exists when a later step fails or is interrupted.
    """

    def __init__(self, directory: str) -> None:
        import zactor

        self.zactor = zactor
        self.cluster_dir = os.path.join(directory, "cluster")
        self._saved_env = os.environ.get(cluster.CLUSTER_DIR_ENV)
        os.environ[cluster.CLUSTER_DIR_ENV] = self.cluster_dir
        self.head: dict | None = None
        self.node: dict | None = None
        #: Every process the bench started (head, node agent, their workers), by pid.
        self.pids: dict[int, int | None] = {}
        self.left: list[int] = []

    def start(self) -> None:
        """Start the head, the node agent, and join; raises if any step fails."""
        self.head = cluster.start_head(host=LOOPBACK, port=0, num_workers=1)
        self._track(self.head["pid"])
        self.node = cluster.start_node(
            self.head["address"], num_workers=1, host=LOOPBACK, node_id=NODE_ID
        )
        self._track(self.node["pid"])
        self.zactor.init(address=self.head["address"], host=LOOPBACK)

    def _track(self, pid: int) -> None:
        for p in [pid, *cluster.child_pids(pid)]:
            self.pids[p] = cluster.process_start_time(p)

    def workers(self) -> list[dict]:
        """The cluster's workers as the head lists them (id, node, address)."""
        info = head_handle().cluster_info.remote().result(timeout=START_TIMEOUT_S)
        return [{k: w[k] for k in ("worker_id", "node_id", "address")} for w in info["workers"]]

    def close(self) -> list[int]:
        """Disconnect, stop the cluster (the head stops its node), kill what is left;
        remove the cluster directory's files and restore ``$ZACTOR_CLUSTER_DIR``.
        Returns the pids that were still running and had to be killed."""
        try:
            self.zactor.shutdown()
            if self.head is not None:
                for p in cluster.child_pids(self.head["pid"]):  # workers started since
                    self.pids.setdefault(p, cluster.process_start_time(p))
                with contextlib.suppress(cluster.NoClusterError):
                    cluster.stop()
            # The head tells its nodes to stop; a node that did not is stopped here.
            if cluster._wait_gone(list(self.pids), cluster.STOP_TIMEOUT_S, self.pids):
                with contextlib.suppress(cluster.NoClusterError):
                    cluster.stop_nodes()
        finally:
            self.left = self.kill()
            if self._saved_env is None:
                os.environ.pop(cluster.CLUSTER_DIR_ENV, None)
            else:
                os.environ[cluster.CLUSTER_DIR_ENV] = self._saved_env
        return self.left

    def kill(self) -> list[int]:
        """SIGKILL every process the bench started that still runs; returns their pids."""
        left = [p for p, t in self.pids.items() if cluster.process_alive(p, t)]
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        cluster._wait_gone(left, 5.0, self.pids)
        for record in (self.head, self.node):
            if record is not None and record.get("session_dir"):
                shutil.rmtree(record["session_dir"], ignore_errors=True)
        return left


class CrossNodeSide(runner.CounterCalls):
    """The counter on the node agent's worker, called from this driver over tcp."""

    def __init__(self, bench: CrossNodeCluster) -> None:
        import zactor

        pinned = {f"node:{NODE_ID}": 1}
        counter = (
            zactor.remote(runner._PoolCounter)
            .options(resources=pinned, max_pending_calls=100_000)
            .remote()
        )
        counter.inc.remote().result(timeout=START_TIMEOUT_S)
        super().__init__(counter, expected_count=1)
        worker_id = counter.where.remote().result(timeout=START_TIMEOUT_S)
        self.worker = next(w for w in bench.workers() if w["worker_id"] == worker_id)
        if self.worker["node_id"] != NODE_ID or not self.worker["address"].startswith("tcp://"):
            raise RuntimeError(
                f"the bench's counter runs on {self.worker}, not on a tcp worker of node "
                f"{NODE_ID}: the cross-node bench would not cross tcp"
            )


# -- measuring --------------------------------------------------------------------------------


def _rotated(names: tuple, k: int) -> list:
    k %= len(names)
    return list(names[k:] + names[:k])


def latency_round(r: int, calls: int, sides: dict) -> dict:
    """``calls`` round trips on every side, in blocks of LATENCY_BLOCK, the order of the
    sides rotating block by block; ns a call, by side."""
    blocks = max(len(sides), -(-calls // runner.LATENCY_BLOCK))
    size = max(1, calls // blocks)
    parts: dict = {name: [] for name in sides}
    for b in range(blocks):
        runner._pet()
        for name in _rotated(tuple(sides), b + r):
            parts[name].append(sides[name].latency_ns(size))
    return {name: np.concatenate(p) for name, p in parts.items()}


def pipelined_round(r: int, calls: int, sides: dict) -> dict:
    """Pipelined calls/s of every side: each twice, in an order rotated by round and then
    mirrored (A B C C B A), so a drift in the machine's speed hits all alike; the mean."""
    order = _rotated(tuple(sides), r)
    rates: dict = {name: [] for name in sides}
    for name in order + order[::-1]:
        rates[name].append(runner._timed(lambda side=sides[name]: side.pipelined_rate(calls)))
    return {name: statistics.fmean(v) for name, v in rates.items()}


def measure_round(r: int, cfg: NodesConfig, sides: dict, scale: float = 1.0) -> dict:
    """One round: latency (percentiles and lockstep rate) and pipelined rate, by side."""
    lat = latency_round(r, max(len(sides), int(cfg.latency_calls * scale)), sides)
    rates = pipelined_round(r, max(1, int(cfg.pipelined_calls * scale)), sides)
    out: dict = {}
    for name in sides:
        p50, p90, p99 = np.percentile(lat[name], [50, 90, 99]) / 1e3
        out[name] = {
            "p50_us": float(p50),
            "p90_us": float(p90),
            "p99_us": float(p99),
            "lockstep_per_s": len(lat[name]) / (float(lat[name].sum()) / 1e9),
            "pipelined_per_s": rates[name],
        }
    return out


#: The metrics of a round, printed in this order: (key, label, unit, lower is better).
METRICS = (
    ("p50_us", "sync latency p50 (µs)", "us", True),
    ("p90_us", "sync latency p90 (µs)", "us", True),
    ("p99_us", "sync latency p99 (µs)", "us", True),
    ("lockstep_per_s", "lockstep msgs/s (one per exchange)", "per_s", False),
    ("pipelined_per_s", "pipelined calls/s", "per_s", False),
)


def summarize(rounds: list) -> dict:
    """Medians over the rounds of every metric and side, zactor's ratio to each
    yardstick (of the medians, and per round), and the two targets."""
    results: dict[str, Any] = {}
    for key, label, unit, _ in METRICS:
        row: dict[str, Any] = {"label": label, "unit": unit}
        for side in SIDES:
            values = [res[side][key] for res in rounds]
            row[side] = {"rounds": values, "median": statistics.median(values)}
        for raw in SIDES[1:]:
            row[f"ratio_{raw}"] = row["zactor"]["median"] / row[raw]["median"]
            row[f"ratio_{raw}_rounds"] = [
                res["zactor"][key] / res[raw][key] for res in rounds if res[raw][key]
            ]
        results[key] = row
    p50 = results["p50_us"]["ratio_raw_curve"]
    pipelined = results["pipelined_per_s"]["zactor"]["median"]
    lockstep = results["lockstep_per_s"]["raw_curve"]["median"]
    targets = {
        "sync_p50": {
            "what": "zactor sync p50 / raw pyzmq tcp+CURVE sync p50",
            "ratio": p50,
            "target": f"<= {P50_TARGET}",
            "met": p50 <= P50_TARGET,
        },
        "pipelined": {
            "what": "zactor pipelined calls/s / raw pyzmq tcp+CURVE lockstep msgs/s",
            "ratio": pipelined / lockstep,
            "target": f">= {PIPELINED_TARGET}",
            "met": pipelined / lockstep >= PIPELINED_TARGET,
        },
    }
    return {"results": results, "targets": targets}


# -- printing ---------------------------------------------------------------------------------


def _fmt(value: float, unit: str) -> str:
    return f"{value:,.1f}" if unit == "us" else f"{value:,.0f}"


def format_table(summary: dict, security: dict) -> str:
    """The printed table: zactor, raw tcp, raw tcp+CURVE, zactor's ratios, and the targets."""
    zac = f"zactor tcp/{security['zactor']}"
    head = (
        f"{'metric':<36}{zac:>16}{'raw tcp':>12}{'raw CURVE':>12}"
        f"{'x raw tcp':>11}{'x CURVE':>9}  {'x CURVE per round':<17}"
    )
    lines = [head, "-" * len(head)]
    for key, label, unit, _ in METRICS:
        row = summary["results"][key]
        rr = row["ratio_raw_curve_rounds"]
        lines.append(
            f"{label:<36}{_fmt(row['zactor']['median'], unit):>16}"
            f"{_fmt(row['raw_tcp']['median'], unit):>12}"
            f"{_fmt(row['raw_curve']['median'], unit):>12}"
            f"{row['ratio_raw_tcp']:>10.2f}x{row['ratio_raw_curve']:>8.2f}x"
            f"  {min(rr):.2f}-{max(rr):.2f}"
        )
    lines.append("")
    lines.append("targets (issue 11):")
    for target in summary["targets"].values():
        lines.append(
            f"  {target['what']:<66}{target['ratio']:>7.2f}x  target {target['target']}x: "
            f"{'ok' if target['met'] else 'MISS'}"
        )
    if security["zactor"] != "CURVE":
        lines.append(
            f"  (zactor's tcp sockets use {security['zactor']}, not CURVE: its transport does "
            "not encrypt yet, so its ratios to raw CURVE leave out what CURVE will cost it)"
        )
    return "\n".join(lines)


# -- the command ------------------------------------------------------------------------------


def _node_count(text: str) -> int:
    value = runner._positive_int(text)
    if value != 2:
        raise argparse.ArgumentTypeError(
            f"the cross-node bench runs a head and one node agent: --nodes 2, not {value}"
        )
    return value


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--nodes``, added to ``zactor bench``'s options (:func:`runner.add_arguments`)."""
    parser.add_argument(
        "--nodes",
        type=_node_count,
        default=None,
        metavar="2",
        help="instead: calls across nodes over tcp, a head and a node agent on this machine, "
        "beside raw pyzmq over tcp with and without CURVE (zactor.benchmark.nodes)",
    )
    return parser


def run(args: argparse.Namespace, out=None) -> dict:
    """Run the cross-node bench as ``args`` say (``--nodes``, ``--quick``, ``--smoke``,
    ``--rounds``, ``--json``); print the table to ``out``; return the report.

    The report (what ``--json`` writes) has ``metadata``, ``cluster`` (the
    workers, the pids started and those that had to be killed at the end, the
    directories it made, all removed by then),
    ``security`` (each side's mechanism), ``rounds``, ``results`` and ``targets``.
    """
    import zactor

    unused = [f"--{name}" for name in ("plot", "workers") if getattr(args, name, None)]
    if unused:
        raise runner.UsageError(
            f"{' and '.join(unused)} apply to the one-machine bench; the cross-node bench "
            "(--nodes) has one worker a node and draws no plot: leave them out"
        )
    if zactor.is_initialized():
        raise RuntimeError("zactor bench starts its own cluster: call it before zactor.init()")
    out = out or sys.stdout
    cfg = make_config(args.nodes, args.quick, args.rounds, args.smoke)
    meta = dict(runner.metadata(runner.make_config(cfg.quick, smoke=cfg.smoke)))
    meta.update(transport="tcp", config=asdict(cfg))
    progress = Progress()

    def say(text: str = "") -> None:
        with progress.above():
            print(text, file=out, flush=True)

    say(f"zactor bench: {meta['command_line']}")
    say(
        f"implementation: {meta['implementation']}   python {meta['python']}   "
        f"cpus: {meta['cpu_count']}   rounds: {cfg.rounds}"
        f"{' (smoke: too few calls to mean anything)' if cfg.smoke else ''}"
        f"{' (quick)' if cfg.quick and not cfg.smoke else ''}   transport: tcp on {LOOPBACK}   "
        f"pyzmq {meta['pyzmq']} (libzmq {meta['libzmq']})"
    )
    say(
        f"cross-node: a head and node agent {NODE_ID} (one worker each, tcp); this driver "
        "(tcp inbox) calls a counter pinned to the node"
    )
    say(
        "yardsticks: raw pyzmq DEALER -> echo ROUTER in another process, tcp, and tcp with "
        "CURVE (ThreadAuthenticator on the server), measured in this run, interleaved"
    )
    say()

    directory = tempfile.mkdtemp(prefix="zactor-bench-nodes-")
    bench = CrossNodeCluster(directory)
    yardsticks: list = []
    rounds: list = []
    guard = runner._guard = runner._StallGuard(runner.STALL_LIMIT_S)
    guard.cleanups.append(lambda: shutil.rmtree(directory, ignore_errors=True))
    guard.cleanups.append(bench.kill)
    restore = runner._terminate_on_sigterm()
    try:
        progress.phase("starting the raw yardsticks")
        for curve in (False, True):
            certs = runner.make_curve_certificates(directory) if curve else ""
            yardsticks.append(runner.RawYardstick(directory, transport="tcp", curve_certs=certs))
            guard.cleanups.append(yardsticks[-1].process.kill)
        progress.phase("starting a head and a node agent on tcp")
        t0 = time.perf_counter()
        bench.start()
        started_s = time.perf_counter() - t0
        zac = CrossNodeSide(bench)
        sides = {"zactor": zac, "raw_tcp": yardsticks[0], "raw_curve": yardsticks[1]}
        security = {
            "zactor": zactor_mechanism(zac.worker["address"]),
            "raw_tcp": yardsticks[0].mechanism(),
            "raw_curve": yardsticks[1].mechanism(),
        }
        say(
            f"  zactor's counter on {zac.worker['worker_id']} at {zac.worker['address']}; "
            f"driver at {runtime_mod.current().address}; sockets: zactor "
            f"{security['zactor']}, raw tcp {security['raw_tcp']}, raw CURVE "
            f"{security['raw_curve']}; cluster up in {started_s:.2f} s"
        )
        progress.phase("warm-up round")
        measure_round(1, cfg, sides, scale=cfg.warmup_fraction)
        for r in range(cfg.rounds):
            progress.phase(f"round {r + 1}/{cfg.rounds}")
            res = measure_round(r, cfg, sides)
            rounds.append(res)
            say(
                f"  round {r + 1}/{cfg.rounds}: p50 {res['zactor']['p50_us']:.1f} µs "
                f"(raw tcp {res['raw_tcp']['p50_us']:.1f}, CURVE "
                f"{res['raw_curve']['p50_us']:.1f}), pipelined "
                f"{res['zactor']['pipelined_per_s']:,.0f}/s (raw tcp "
                f"{res['raw_tcp']['pipelined_per_s']:,.0f}, CURVE "
                f"{res['raw_curve']['pipelined_per_s']:,.0f})"
            )
        workers = bench.workers()
        driver = runtime_mod.current().address
    finally:
        try:
            progress.close()
            for yardstick in yardsticks:
                yardstick.close()
            left = bench.close()
            shutil.rmtree(directory, ignore_errors=True)
        finally:
            guard.stop()
            runner._guard = None
            restore()
    summary = summarize(rounds)
    say()
    say("medians over rounds; x = zactor's figure over the yardstick's (latency: lower is better)")
    say(format_table(summary, security))
    say(
        f"stopped: {len(bench.pids)} processes started (head, node agent, workers), "
        f"{len(left)} had to be killed"
    )
    report = {
        "metadata": meta,
        "cluster": {
            "head": bench.head["address"],
            "node_id": NODE_ID,
            "driver": driver,
            "workers": workers,
            "started_s": started_s,
            "pids": sorted(bench.pids),
            "directories": [directory]
            + [r["session_dir"] for r in (bench.head, bench.node) if r and r.get("session_dir")],
            "killed_at_end": left,
        },
        "security": security,
        "rounds": rounds,
        **summary,
    }
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
        say(f"\nwrote {args.json}")
    return report
