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
import threading
import time

from zactor.caller.handle import head_handle
from zactor.endpoint.runtime import Runtime, set_current
from zactor.processes import process_alive
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
    parser.add_argument(
        "--head-grace",
        type=float,
        default=0.0,
        help="when the head dies, wait this long (seconds) for a restarted head to ask this "
        "worker to rejoin before exiting (0: exit at once, an embedded cluster's worker)",
    )
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
    service = WorkerService(host, head, args.worker_id)
    host.add_system_actor(service, WORKER_TABLE)
    service.registration = (
        args.worker_id,
        runtime.address,
        os.getpid(),
        args.node_id,
        json.loads(args.resources),
    )
    head.register_worker.tell(*service.registration)
    runtime.flush()

    def orphaned() -> None:  # the head is gone: so is the cluster; calls in progress too
        runtime.remove_socket_file()
        os._exit(1)

    if args.head_grace > 0:  # a standing cluster's: its head may come back (--recover)
        watch = threading.Thread(
            target=_await_head,
            args=(parent, service, args.head_grace, orphaned),
            name="zactor-head-watch",
            daemon=True,
        )
        watch.start()
        parent = None
    try:
        host.serve(parent_pid=parent, on_orphaned=orphaned)
    finally:
        runtime.close()
    sys.stdout.flush()
    os._exit(0)  # threads still inside user code must not keep the process alive


#: How often a worker of a standing cluster looks whether its head still runs (seconds).
HEAD_CHECK_S = 0.1


def _await_head(parent: int, service: WorkerService, grace: float, orphaned) -> None:
    """Watch the head process (at first our parent, after a restart the head that asked
    us to rejoin); when it is gone, wait up to ``grace`` seconds for a restarted head to
    ask us to rejoin (:meth:`WorkerService.rejoin`), else call ``orphaned()``.

    Calls between drivers and our actors never touch the head, so they keep
    running meanwhile.
    """
    log = logging.getLogger("zactor")
    head_pid = parent
    while True:
        time.sleep(HEAD_CHECK_S)
        if service.rejoined.is_set():
            service.rejoined.clear()
            head_pid = service.head_pid or head_pid
        if os.getppid() == parent if head_pid == parent else process_alive(head_pid):
            continue
        log.warning(
            "zactor worker: the head (pid %s) is gone; waiting up to %.0f s for it to restart",
            head_pid,
            grace,
        )
        if not service.rejoined.wait(grace):
            log.warning("zactor worker: the head did not come back within %.0f s; exiting", grace)
            orphaned()
            return


if __name__ == "__main__":
    main()
