"""The ``zactor`` command line (``zactor ...`` or ``python -m zactor ...``).

Subcommands:

- ``zactor start --head [--port P] [--host H] [--num-workers N] [--resources JSON]
  [--metrics-port P [--metrics-max-actors N]] [--recover]``: start a standing cluster on
  this machine, as a daemon that outlives the terminal; drivers join it with
  ``zactor.init(address="auto")``. With ``--metrics-port`` the head serves
  Prometheus metrics and a status page over HTTP (docs/observability.md).
- ``zactor status``: its nodes, workers, drivers and actors (calls served,
  queue depth, service-time percentiles).
- ``zactor stop``: end it and everything it started.
- ``zactor bench [--quick] [--smoke] [--json PATH] [--plot PATH] [--rounds N] [--workers N]``:
  latency and throughput of zactor beside a raw pyzmq DEALER/ROUTER yardstick
  measured in the same run (see :mod:`zactor.benchmark.runner`); ``--plot``
  draws them (:mod:`zactor.benchmark.plot`, ``pip install "zactor[plot]"``).

``start``, ``status`` and ``stop`` take ``--json`` for scripts: one JSON object
on standard output, also on failure (``{"error": "..."}``, exit code 1). See
docs/cli.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

#: Exit code of a command that failed for a reason the message explains.
EXIT_ERROR = 1


def build_parser() -> argparse.ArgumentParser:
    """The ``zactor`` argument parser with one subparser per command."""
    from zactor.benchmark import nodes as bench_nodes
    from zactor.benchmark import runner as bench
    from zactor.control import cluster

    parser = argparse.ArgumentParser(
        prog="zactor", description="zactor: Python actors over ZeroMQ with a Cython hot path."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    where = (
        f"The cluster file lives in ${cluster.CLUSTER_DIR_ENV} if set, else in /tmp/zactor-<uid>."
    )

    start = commands.add_parser(
        "start",
        help="start a standing cluster on this machine (a daemon that outlives the terminal)",
        description=(
            "Start a standing zactor cluster on this machine: a head and its worker "
            "processes, run as a daemon (a new session, no terminal; output goes to a log "
            "file beside the cluster file) until `zactor stop`. Drivers join it with "
            'zactor.init(address="auto"), or with zactor.init(address="tcp://HOST:PORT") '
            "when it listens on a port. " + where
        ),
    )
    start.add_argument(
        "--head", action="store_true", help="start the head of a new cluster on this machine"
    )
    start.add_argument(
        "--address",
        metavar="tcp://HOST:PORT",
        help="join the cluster whose head listens there as a node: a node agent that starts "
        "and supervises this machine's workers (docs/cluster.md)",
    )
    start.add_argument(
        "--node-id",
        help="with --address: this node's name in the cluster (default: host name and a "
        "random suffix)",
    )
    start.add_argument(
        "--keys",
        metavar="PATH",
        help="with --address: the cluster's node key bundle, copied from the head's "
        "machine (default: $ZACTOR_CLUSTER_KEYS, else keys/node.keys in the cluster "
        "directory); see docs/cluster.md",
    )
    start.add_argument(
        "--node-timeout",
        type=float,
        metavar="SECONDS",
        help="with --head: declare a node dead after this long without a heartbeat (default 5)",
    )
    start.add_argument(
        "--port",
        type=int,
        help="listen on tcp://HOST:PORT (0: any free port); default: a socket file",
    )
    start.add_argument(
        "--host",
        help="the address to listen on with --port (default 127.0.0.1, this machine only); "
        "a non-loopback address puts the workers on tcp too, for drivers on other machines",
    )
    start.add_argument(
        "--num-workers", type=int, help="worker processes to start (default: one per CPU)"
    )
    start.add_argument(
        "--resources",
        default="{}",
        help="custom resources this node offers to actors (shared by its workers), as a "
        "JSON object, e.g. '{\"GPU\": 1}'",
    )
    start.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics (/metrics) and a live status page (/) over HTTP on "
        "this port of HOST (0: any free port); default: no HTTP server",
    )
    start.add_argument(
        "--metrics-max-actors",
        type=int,
        metavar="N",
        help="with --metrics-port: give per-actor series to at most N actors, the first to "
        "come (default 100); the others count in their class's series",
    )
    start.add_argument(
        "--recover",
        action="store_true",
        help="restart a head that died: reload its registry (head.sqlite3 beside the cluster "
        "file), listen at its address again and take back its workers, whose actors kept "
        "running; a cluster that may need this should be started with --port",
    )
    start.add_argument("--json", action="store_true", help="print the cluster file as JSON")
    start.set_defaults(handler=_start)

    status = commands.add_parser(
        "status",
        help="nodes, workers, drivers and actors of the running cluster",
        description=(
            "Show the standing cluster on this machine: its nodes, workers, connected "
            "drivers, and each actor's name, class, worker, state, calls served, errors, "
            "queue depth and p50/p99 service time. " + where
        ),
    )
    status.add_argument("--json", action="store_true", help="print everything as one JSON object")
    status.set_defaults(handler=_status)

    stop = commands.add_parser(
        "stop",
        help="stop the running cluster and everything it started",
        description=(
            "Stop the standing cluster on this machine: its actors, workers and head, and "
            "remove its socket files and cluster file. A head that does not stop within "
            "--timeout seconds is killed, and so are workers it leaves. " + where
        ),
    )
    stop.add_argument(
        "--timeout",
        type=float,
        default=cluster.STOP_TIMEOUT_S,
        help=f"seconds to wait before killing (default {cluster.STOP_TIMEOUT_S:.0f})",
    )
    stop.add_argument("--json", action="store_true", help="print what was stopped as JSON")
    stop.set_defaults(handler=_stop)

    bench_parser = commands.add_parser(
        "bench",
        help="latency and throughput beside a raw pyzmq yardstick measured in the same run",
        description=(
            "Measure zactor's sync call latency, pipelined and tell call rates and numpy "
            "update bandwidth, each beside raw pyzmq over the same transport (ipc) in the "
            "same run, plus actor isolation and cluster start-up time."
        ),
    )
    bench.add_arguments(bench_parser)
    bench_nodes.add_arguments(bench_parser)
    bench_parser.set_defaults(handler=_bench)
    return parser


class CommandError(Exception):
    """A command's failure, with a message that says what to do."""


# -- start ----------------------------------------------------------------------------------


def _start(args: argparse.Namespace) -> int:
    from zactor.control import cluster
    from zactor.endpoint.spinning import spin_budget_ns

    try:
        spin_budget_ns()  # every process of the cluster reads it: a bad one fails here
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if args.head == (args.address is not None):
        raise CommandError(
            "pass --head to start a cluster whose head runs on this machine "
            "(`zactor start --head`), or --address to join one as a node "
            "(`zactor start --address tcp://HOST:PORT`); see `zactor start --help`"
        )
    if args.address is not None:
        return _start_node(args)
    for flag, value in (("--node-id", args.node_id), ("--keys", args.keys)):
        if value is not None:
            raise CommandError(f"{flag} is for a node that joins: use it with --address")
    if args.host is not None and args.port is None:
        raise CommandError(
            "--host needs --port: e.g. `zactor start --head --host HOST --port 6380`"
        )
    resources = _resources(args)
    if args.node_timeout is not None and not args.node_timeout > 0:
        raise CommandError(f"--node-timeout must be more than 0 seconds, got {args.node_timeout}")
    if args.metrics_max_actors is not None and args.metrics_port is None:
        raise CommandError(
            "--metrics-max-actors needs --metrics-port: e.g. "
            "`zactor start --head --metrics-port 9100 --metrics-max-actors 500`"
        )
    record = cluster.start_head(
        port=args.port,
        host=args.host,
        num_workers=args.num_workers,
        resources=resources,
        metrics_port=args.metrics_port,
        metrics_max_actors=args.metrics_max_actors,
        node_timeout=args.node_timeout,
        recover=args.recover,
    )
    if args.json:
        _print_json(record)
        return 0
    joined_by = "auto" if record["address"].startswith("ipc://") else record["address"]
    print(
        f"started a zactor cluster: head pid {record['pid']} at {record['address']}, "
        f"{record['num_workers']} workers"
    )
    print(f"  cluster file: {record['cluster_file']}")
    print(f"  log:          {record['log']}")
    if record.get("metrics_url"):
        print(f"  status page:  {record['metrics_url']}  (metrics: {record['metrics_url']}metrics)")
    print(f'  join it from Python with zactor.init(address="{joined_by}")')
    if record["address"].startswith("tcp://"):
        print(f"  add a machine to it with: zactor start --address {record['address']}")
    print("  see it with `zactor status`; stop it with `zactor stop`")
    return 0


def _resources(args: argparse.Namespace) -> dict:
    try:
        resources = json.loads(args.resources)
    except ValueError:
        resources = None
    if not isinstance(resources, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in resources.values()
    ):
        raise CommandError(
            f"--resources must be a JSON object of names to numbers, such as "
            f"'{{\"GPU\": 1}}'; got {args.resources!r}"
        )
    return resources


def _start_node(args: argparse.Namespace) -> int:
    from zactor.control import cluster

    for flag, value in (
        ("--port", args.port),
        ("--metrics-port", args.metrics_port),
        ("--node-timeout", args.node_timeout),
    ):
        if value is not None:
            raise CommandError(f"{flag} is the head's: a node (--address) does not take it")
    record = cluster.start_node(
        args.address,
        num_workers=args.num_workers,
        resources=_resources(args),
        host=args.host,
        node_id=args.node_id,
        keys_path=args.keys,
    )
    if args.json:
        _print_json(record)
        return 0
    print(
        f"started zactor node {record['node_id']}: agent pid {record['pid']} with "
        f"{record['num_workers']} workers, joined the head at {record['head']}"
    )
    print(f"  log: {record['log']}")
    print("  see the cluster with `zactor status`; stop this node with `zactor stop`")
    return 0


# -- status ---------------------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    from zactor.control import cluster

    report = cluster.status()
    if args.json:
        _print_json(report)
    else:
        print(format_status(report))
    return 0


def format_status(report: dict) -> str:
    """``zactor status``'s text: a heading, then one table each of nodes, workers,
    drivers and actors. Absent counters show as ``-``."""
    head, info = report["head"], report["cluster"]
    lines = [
        f"zactor cluster: head pid {head['pid']} at {head['address']}, "
        f"up {_duration(time.time() - (head.get('started_at') or time.time()))}",
        f"cluster file: {info['cluster_file']}",
        f"log:          {info.get('log', '-')}",
    ]
    if head.get("metrics_url"):
        lines.append(
            f"status page:  {head['metrics_url']}  (metrics: {head['metrics_url']}metrics)"
        )
    lines.append("")
    lines += _table(
        ["NODE", "HOST", "STATE", "WORKERS", "DRIVERS", "RESOURCES", "HEARTBEAT", "ADDRESS"],
        [
            [
                n["node_id"] + (" (head)" if n.get("head") else ""),
                n.get("host"),
                n.get("state", "alive"),
                n["workers"],
                n["drivers"],
                json.dumps(n["resources"], sort_keys=True) if n.get("resources") else None,
                f"{n['heartbeat_age_s']:.1f} s ago" if "heartbeat_age_s" in n else None,
                n.get("address"),
            ]
            for n in report["nodes"]
        ],
    )
    lines.append("")
    lines += _table(
        ["WORKER", "PID", "ACTORS", "DROPPED", "ADDRESS"],
        [
            [
                w["worker_id"],
                w.get("pid"),
                w.get("actors"),
                sum((w.get("dropped") or {}).values()),
                w.get("address") + (f"  ({w['error']})" if w.get("error") else ""),
            ]
            for w in report["workers"]
        ],
    )
    lines.append("")
    if report["drivers"]:
        lines += _table(
            ["DRIVER PID", "NODE", "ADDRESS"],
            [[d["pid"], d["node_id"], d["address"]] for d in report["drivers"]],
        )
    else:
        lines.append("no drivers connected")
    lines.append("")
    if report["actors"]:
        lines += _table(
            [
                "ID",
                "NAME",
                "NAMESPACE",
                "CLASS",
                "KIND",
                "CONC",
                "WORKER",
                "STATE",
                "CALLS",
                "ERRORS",
                "QUEUED",
                "P50",
                "P99",
            ],
            [
                [
                    a["actor_id"],
                    a.get("name"),
                    _namespace_cell(a),
                    a.get("class_name"),
                    a.get("kind"),
                    a.get("max_concurrency"),
                    a.get("worker_id"),
                    a.get("state"),
                    a.get("calls"),
                    a.get("errors"),
                    a.get("queued"),
                    _micros(a.get("p50_us")),
                    _micros(a.get("p99_us")),
                ]
                for a in report["actors"]
            ],
        )
    else:
        lines.append("no actors")
    return "\n".join(lines)


def _namespace_cell(actor: dict) -> str | None:
    """A named actor's namespace for the table: an anonymous one (a driver that gave
    none) cut to its first 8 hex digits, which tell drivers apart; ``--json`` has it
    whole. None (``-``) for an unnamed actor, which no name look-up finds."""
    from zactor.endpoint.runtime import ANONYMOUS_NAMESPACE_PREFIX, is_anonymous_namespace

    namespace = actor.get("namespace")
    if actor.get("name") is None:
        return None
    if is_anonymous_namespace(namespace):
        return namespace[: len(ANONYMOUS_NAMESPACE_PREFIX) + 8]
    return namespace


def _table(header: list[str], rows: list[list]) -> list[str]:
    cells = [header] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]


def _micros(value) -> str | None:
    if value is None:
        return None
    if value >= 10_000:
        return f"{value / 1000:.1f} ms"
    return f"{value:.0f} us" if value >= 10 else f"{value:.1f} us"


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {seconds}s" if minutes else f"{seconds}s"


# -- stop -----------------------------------------------------------------------------------


def _stop(args: argparse.Namespace) -> int:
    from zactor.control import cluster

    if cluster.running_cluster() is None and cluster.running_nodes():
        nodes = cluster.stop_nodes(timeout=args.timeout)
        if args.json:
            _print_json({"stopped": True, "nodes": nodes})
            return 0
        for node in nodes:
            how = " (it had to be killed)" if node["forced"] else ""
            print(
                f"stopped zactor node {node['node_id']} of the cluster at {node['head']}: "
                f"agent pid {node['pid']} and {len(node['worker_pids'])} workers{how}"
            )
        return 0
    result = cluster.stop(timeout=args.timeout)
    if args.json:
        _print_json(result)
        return 0
    how = " (some had to be killed)" if result["forced"] else ""
    print(
        f"stopped the zactor cluster at {result['address']}: head pid {result['head_pid']} and "
        f"{len(result['worker_pids'])} workers{how}"
    )
    return 0


# -- bench ----------------------------------------------------------------------------------


def _bench(args: argparse.Namespace) -> int:
    from zactor.benchmark import nodes as bench_nodes
    from zactor.benchmark import plot
    from zactor.benchmark import runner as bench

    try:
        (bench_nodes.run if args.nodes else bench.run)(args)
    except (plot.PlotError, bench.UsageError) as exc:  # before the bench ran: no traceback
        raise CommandError(str(exc)) from None
    return 0


# -- running a command ----------------------------------------------------------------------


def _print_json(value: dict) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) and run the chosen command.

    Returns the exit code: 0, or 1 with a message on standard error (and, with
    ``--json``, ``{"error": message}`` on standard output) when it failed.
    """
    from zactor.errors import ClusterError

    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print(f"zactor {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `zactor status | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (CommandError, ClusterError, ValueError) as exc:
        if args.command == "bench" and not isinstance(exc, CommandError):
            raise  # the benchmark's own failures keep their traceback
        if args.json and args.command != "bench":  # bench's --json is a file, not a format
            _print_json({"error": str(exc)})
        print(f"zactor {args.command}: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
