"""The worker process: an inbox, an actor host and the worker's service, until told to stop.

The head starts it (``zactor.control.spawn``) with the head's address and its
own; the worker registers with the head and serves until the head says
``shutdown`` or dies.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from zactor.caller.handle import head_handle
from zactor.endpoint.runtime import Runtime, set_current
from zactor.transport import keys
from zactor.wire.protocol import WORKER_TABLE
from zactor.worker.host import ActorHost
from zactor.worker.service import WorkerService


def main(argv: list[str] | None = None) -> None:
    """Entry point of a worker process (started by the head)."""
    parser = argparse.ArgumentParser(prog="python -m zactor.worker.main")
    parser.add_argument("--head", required=True, help="the head's address")
    parser.add_argument("--address", required=True, help="address to bind this worker's inbox")
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--node-id", default="node-0")
    parser.add_argument("--resources", default="{}", help="JSON resources this worker offers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("ZACTOR_LOG_LEVEL", "WARNING"))
    parent = os.getppid()
    runtime = Runtime(
        args.address,
        role="worker",
        head_address=args.head,
        node_id=args.node_id,
        worker_id=args.worker_id,
        # A tcp cluster's keys come from whoever started us (the head or a node agent),
        # through the environment; a cluster on socket files has none.
        keys=keys.from_environment() if args.head.startswith("tcp://") else None,
    )
    set_current(runtime)
    host = ActorHost(runtime)
    head = head_handle(runtime)
    host.add_system_actor(WorkerService(host, head, args.worker_id), WORKER_TABLE)

    head.register_worker.tell(
        args.worker_id, runtime.address, os.getpid(), args.node_id, json.loads(args.resources)
    )
    runtime.flush()

    def orphaned() -> None:  # the head is gone: so is the cluster; calls in progress too
        runtime.remove_socket_file()
        os._exit(1)

    try:
        host.serve(parent_pid=parent, on_orphaned=orphaned)
    finally:
        runtime.close()
    sys.stdout.flush()
    os._exit(0)  # threads still inside user code must not keep the process alive


if __name__ == "__main__":
    main()
