"""The ``zactor`` command line (``zactor ...`` or ``python -m zactor ...``).

Subcommands:

- ``zactor bench [--quick] [--json PATH] [--rounds N] [--workers N]``: latency
  and throughput of zactor beside a raw pyzmq DEALER/ROUTER yardstick measured
  in the same run (see :mod:`zactor.bench`).
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    """The ``zactor`` argument parser with one subparser per command."""
    from zactor import bench

    parser = argparse.ArgumentParser(
        prog="zactor", description="zactor: Python actors over ZeroMQ with a Cython hot path."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
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
    bench_parser.set_defaults(handler=_bench)
    return parser


def _bench(args: argparse.Namespace) -> int:
    from zactor import bench

    bench.run(args)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) and run the chosen command."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print(f"zactor {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
