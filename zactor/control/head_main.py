"""The head process: the registry actor, the supervisor of the workers, until stopped.

Started by :func:`zactor.control.spawn.start_head`, for an embedded cluster
(``zactor.init()``) or a standing one (``zactor start --head``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys

from zactor.control import cluster
from zactor.control.head import NODE_TIMEOUT_S, Head
from zactor.control.head_store import HeadStore, HeadStoreError, remove_store
from zactor.control.metrics import MAX_ACTOR_SERIES, ClusterMetrics
from zactor.control.status_page import StatusServer
from zactor.control.supervisor import Supervisor
from zactor.endpoint.runtime import Runtime, set_current
from zactor.transport import ClusterKeys, KeysError, TransportError, shared_memory
from zactor.transport import keys as cluster_keys
from zactor.wire.protocol import HEAD, HEAD_TABLE
from zactor.worker.host import ActorHost


def main(argv: list[str] | None = None) -> None:
    """Entry point of the head process (an embedded cluster's, or ``zactor start --head``'s)."""
    parser = argparse.ArgumentParser(prog="python -m zactor.control.head_main")
    parser.add_argument("--session-dir", required=True)
    parser.add_argument("--address", required=True, help="address to bind the head's inbox")
    parser.add_argument("--num-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--resources", default="{}")
    parser.add_argument(
        "--watch-parent", action="store_true", help="stop the cluster when the parent process dies"
    )
    parser.add_argument(
        "--cluster-file", help="a standing cluster's discovery file: removed when the head exits"
    )
    parser.add_argument(
        "--address-file", help="write the address the head bound here, once it listens"
    )
    parser.add_argument(
        "--metrics-port", type=int, help="serve metrics and the status page on this port"
    )
    parser.add_argument("--metrics-host", default="127.0.0.1", help="... on this address")
    parser.add_argument("--metrics-max-actors", type=int, default=MAX_ACTOR_SERIES)
    parser.add_argument(
        "--node-timeout", type=float, default=NODE_TIMEOUT_S, help="declare a silent node dead"
    )
    parser.add_argument("--store", help="keep the registry in this SQLite file (head_store)")
    parser.add_argument(
        "--recover", action="store_true", help="reload the registry --store holds, if any"
    )
    parser.add_argument(
        "--head-grace", type=float, default=0.0, help="how long workers wait for a dead head"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("ZACTOR_LOG_LEVEL", "WARNING"))
    parent = os.getppid() if args.watch_parent else None
    store = _open_store(args)
    try:
        runtime = Runtime(args.address, role="head", head_address=args.address, keys=_keys(args))
    except KeysError as exc:
        print(f"zactor head: {exc}", file=sys.stderr, flush=True)
        shutil.rmtree(args.session_dir, ignore_errors=True)
        os._exit(1)
    except TransportError as exc:
        print(
            f"zactor head: cannot listen on {args.address}: {exc}; choose another --port, "
            "or stop what listens there",
            file=sys.stderr,
            flush=True,
        )
        shutil.rmtree(args.session_dir, ignore_errors=True)
        os._exit(1)  # the half-made ZeroMQ context must not hold the exit up
    runtime.head_address = runtime.address  # the real port when asked for port 0
    set_current(runtime)
    host = ActorHost(runtime)
    signal.signal(signal.SIGTERM, lambda *_: host.stop())
    # A standing cluster's head (and so its workers) writes to the log beside its
    # cluster file (zactor.control.cluster.start_head); an embedded one's, to its driver's.
    log_path = None
    if args.cluster_file:
        log_path = os.path.join(os.path.dirname(args.cluster_file), cluster.LOG_FILE)
    supervisor = Supervisor(
        args.session_dir,
        runtime.address,
        worker_host=cluster.worker_host(runtime.address),
        log_path=log_path,
    )
    supervisor.head_grace = args.head_grace
    head = Head(supervisor, store, node_timeout_s=args.node_timeout)
    head._host = host
    host.add_system_actor(head, HEAD_TABLE)
    server = None
    if args.metrics_port is not None:
        server = _serve_metrics(head, args, runtime)
    num_workers = args.num_workers
    snapshot = store.load() if store is not None and args.recover else None
    if snapshot is not None and not snapshot.empty():
        head.recover(snapshot)  # its workers rejoin; only the ones missing are started
        num_workers = max(0, num_workers - len(snapshot.workers))
    elif store is not None:
        head._save_cluster()
    if store is not None:
        store.set_meta("address", runtime.address)
        store.set_meta("session_dir", args.session_dir)
        store.commit()
    supervisor.start_workers(num_workers, json.loads(args.resources))
    supervisor.watch(head, runtime)
    if args.address_file:
        cluster.write_json_atomically(args.address_file, runtime.address)
    if args.cluster_file:
        print(f"zactor head pid {os.getpid()} listening at {runtime.address}", flush=True)
    try:
        host.serve(parent_pid=parent)
    finally:
        if server is not None:
            server.close()
        supervisor.stop_watching()
        supervisor.stop_workers([worker["address"] for worker in head.workers.values()])
        runtime.close()
        shared_memory.sweep(runtime.head_address)  # the cluster's, killed processes' too
        if store is not None:  # stopped on purpose: nothing is left to recover
            store.close()
            remove_store(args.store)
        shutil.rmtree(args.session_dir, ignore_errors=True)
        if args.cluster_file:
            cluster.remove_cluster_file(args.cluster_file, os.getpid())
            print(f"zactor head pid {os.getpid()} stopped", flush=True)
    os._exit(0)


def _keys(args: argparse.Namespace) -> ClusterKeys | None:
    """The head's key bundle for a tcp head: the one ``zactor start --head`` wrote beside
    the cluster file, else ``$ZACTOR_CLUSTER_KEYS``; None for a head on a socket file.

    The bundle's path goes into our environment, which the workers we start inherit.
    """
    if not args.address.startswith("tcp://"):
        return None
    found = None
    if args.cluster_file:
        directory = cluster_keys.keys_dir(os.path.dirname(args.cluster_file))
        path = cluster_keys.bundle_path(directory, HEAD)
        if os.path.exists(path):
            found = cluster_keys.load_bundle(path)
    if found is None:
        found = cluster_keys.from_environment()
    if found is not None:
        found.for_role(HEAD)  # a bundle without the head key: say so before binding
        os.environ[cluster_keys.KEYS_ENV] = found.path
    return found


def _open_store(args: argparse.Namespace) -> HeadStore | None:
    """The registry's store (``--store``): a new one, or with ``--recover`` the one a dead
    head left. One that cannot be read ends the head at once, saying what to do."""
    if args.store is None:
        return None
    if not args.recover:
        remove_store(args.store)  # a new cluster: the last one's registry means nothing
    try:
        return HeadStore.open(args.store)
    except HeadStoreError as exc:
        print(f"zactor head: {exc}", file=sys.stderr, flush=True)
        if not args.recover:
            shutil.rmtree(args.session_dir, ignore_errors=True)
        os._exit(1)


def _serve_metrics(head: Head, args: argparse.Namespace, runtime: Runtime) -> StatusServer:
    """Start the HTTP server of metrics and the status page, before any worker: a port
    that is taken ends the head at once, with a message saying so."""
    metrics = ClusterMetrics(head, max_actor_series=args.metrics_max_actors)
    try:
        server = StatusServer(metrics, args.metrics_host, args.metrics_port)
    except OSError as exc:
        print(
            f"zactor head: cannot serve metrics on {args.metrics_host}:{args.metrics_port}: "
            f"{exc.strerror or exc}; choose another metrics port (0 takes any free one), or "
            "stop what listens there",
            file=sys.stderr,
            flush=True,
        )
        runtime.close()
        shutil.rmtree(args.session_dir, ignore_errors=True)
        os._exit(1)
    server.start()
    head.metrics_url = server.url
    return server


if __name__ == "__main__":
    main()
