"""The head: the cluster's control plane, never on the call path.

The head process hosts one actor, :class:`Head` (actor 0 of its inbox), that
keeps the registry of workers, actors and names and places new actors; and a
:class:`Supervisor` that starts the worker processes and stops them. Drivers
and workers talk to the head with ordinary actor calls.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import zmq

from zactor import cluster, spawn
from zactor.ownership import RefLedger
from zactor.placement import Placement
from zactor.runtime import Runtime, set_current
from zactor.transport import ipc_address
from zactor.worker import ActorHost

log = logging.getLogger("zactor")

#: How long the head waits for workers to exit on their own at shutdown (seconds).
STOP_GRACE_S = 2.0
#: How often the head looks whether the drivers on its machine still run (seconds).
DRIVER_CHECK_S = 0.5
#: How long ``Head.status()`` waits for the workers' counters (seconds).
STATUS_TIMEOUT_S = 5.0


class Supervisor:
    """Starts this machine's worker processes and stops them; watches its drivers.

    Workers listen on socket files in ``session_dir``, or, given
    ``worker_host``, on tcp ports of that host (so that drivers on other
    machines reach them).
    """

    def __init__(
        self,
        session_dir: str,
        head_address: str,
        node_id: str = "node-0",
        worker_host: str | None = None,
    ) -> None:
        self.session_dir = session_dir
        self.head_address = head_address
        self.node_id = node_id
        self.worker_host = worker_host
        self.started_at = time.time()
        self.processes: dict[str, subprocess.Popen] = {}
        self._watch_stop = threading.Event()
        self._watch: threading.Thread | None = None

    def start_workers(self, count: int, resources: dict | None = None) -> None:
        """Start ``count`` worker processes (they register with the head themselves)."""
        for i in range(count):
            worker_id = f"worker-{i}"
            if self.worker_host is None:
                address = ipc_address(self.session_dir, f"{worker_id}.sock")
            else:
                address = f"tcp://{self.worker_host}:0"
            self.processes[worker_id] = spawn.start(
                "zactor.worker",
                [
                    "--head",
                    self.head_address,
                    "--address",
                    address,
                    "--worker-id",
                    worker_id,
                    "--node-id",
                    self.node_id,
                    "--resources",
                    json.dumps(resources or {}),
                ],
            )

    def stop_workers(self, head: Head) -> None:
        """Ask each worker to stop, then kill the ones that do not within the grace period."""
        from zactor.actor import worker_service_handle

        for info in head.workers.values():
            try:
                worker_service_handle(info["address"]).shutdown.tell()
            except Exception:  # the runtime may already be closing
                pass
        try:
            from zactor.runtime import current

            current().flush()
        except Exception:
            pass
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self.processes.values():
            try:
                proc.wait(timeout=max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def watch_drivers(self, head: Head, runtime: Runtime) -> None:
        """Start a thread that tells ``head`` about drivers on this machine that died
        without ``zactor.shutdown()`` (killed, crashed), as ``driver_exited`` calls."""
        self._watch = threading.Thread(
            target=self._watch_drivers, args=(head, runtime), name="zactor-drivers", daemon=True
        )
        self._watch.start()

    def stop_watching(self) -> None:
        """Stop the thread :meth:`watch_drivers` started."""
        self._watch_stop.set()
        if self._watch is not None:
            self._watch.join(timeout=2 * DRIVER_CHECK_S + 1)

    def _watch_drivers(self, head: Head, runtime: Runtime) -> None:
        from zactor.actor import head_handle

        # The registry belongs to the thread running the head's calls, so a dead driver
        # is reported through the head's own inbox rather than by touching it here.
        to_head = head_handle(runtime)
        reported: set[str] = set()
        while not self._watch_stop.wait(DRIVER_CHECK_S):
            drivers = dict(head.drivers)  # one C-level copy: safe beside the head's thread
            reported &= drivers.keys()
            for address, info in drivers.items():
                if address in reported or not info["local"]:
                    continue  # reported already, or its pid means nothing on this machine
                if not cluster.process_alive(info["pid"], info["start_time"]):
                    reported.add(address)
                    cluster.remove_dead_inbox(address)
                    try:
                        to_head.driver_exited.tell(address)
                        runtime.flush()
                    except Exception:  # the head is closing: nobody left to tell
                        return


class Head:
    """The registry: workers, actors, names; placement of new actors; who holds which actor.

    Lifetime: a non-detached actor is counted (:mod:`zactor.ownership`) from
    its placement on; when no process holds a handle to it, or when the
    process that created it (its owner) goes away, the head asks its worker
    to *retire* it: the calls already sent to it run, then it ends. A detached
    actor is never counted; it lives until killed or until the cluster stops.
    """

    def __init__(self, supervisor: Supervisor | None = None) -> None:
        self._supervisor = supervisor
        self._host: ActorHost | None = None
        self.workers: dict[str, dict] = {}
        self.actors: dict[int, dict] = {}
        self.names: dict[tuple, int] = {}
        self.ledger = RefLedger()
        self.placement = Placement()
        self.drivers: dict[str, dict] = {}  # by inbox address; the supervisor's thread reads it
        self._next_actor_id = 1

    def register_worker(
        self, worker_id: str, address: str, pid: int, node_id: str, resources: dict
    ) -> None:
        """A worker process announces itself, with its node's ``resources``."""
        self.placement.add_worker(worker_id, node_id, resources)
        self.workers[worker_id] = {
            "worker_id": worker_id,
            "address": address,
            "pid": pid,
            "node_id": node_id,
            "resources": resources,
        }

    def cluster_info(self) -> dict:
        """Workers known to the head (with how many actors each hosts), and the actor count."""
        workers = [
            dict(info, actors=self.placement.workers[worker_id]["actors"])
            for worker_id, info in self.workers.items()
        ]
        return {"workers": workers, "num_actors": len(self.actors)}

    def place(self, spec: dict) -> dict:
        """Choose a worker for a new actor and reserve its id (and name).

        Raises ``ValueError`` when the name is taken (unless ``get_if_exists``).
        """
        name, namespace = spec.get("name"), spec.get("namespace")
        if name is not None:
            existing = self.names.get((namespace, name))
            if existing is not None:
                if spec.get("get_if_exists"):
                    self._hold(existing, spec.get("owner"))
                    return dict(self.actors[existing], existing=True)
                raise ValueError(
                    f"an actor named {name!r} already exists in namespace {namespace!r}: "
                    "choose another name, or pass get_if_exists=True to get a handle to it"
                )
        num_cpus, resources = spec.get("num_cpus") or 0.0, spec.get("resources") or {}
        worker = self.workers[self.placement.choose(spec["class_name"], num_cpus, resources)]
        actor_id = self._next_actor_id
        self._next_actor_id += 1
        self.placement.reserve(actor_id, worker["worker_id"], num_cpus, resources)
        detached = spec.get("lifetime") == "detached"
        info = {
            "actor_id": actor_id,
            "address": worker["address"],
            "worker_id": worker["worker_id"],
            "class_name": spec["class_name"],
            "methods": spec["methods"],
            "name": name,
            "namespace": namespace,
            "lifetime": spec.get("lifetime"),
            "max_pending_calls": spec.get("max_pending_calls"),
            "num_cpus": num_cpus,
            "resources": resources,
            "owner": None if detached else spec.get("owner"),
            "state": "starting",
        }
        self.actors[actor_id] = info
        if name is not None:
            self.names[(namespace, name)] = actor_id
        if not detached:
            self.ledger.track(actor_id, spec.get("owner"))
        return info

    def actor_started(self, actor_id: int, ok: bool, error: str | None) -> None:
        """A worker reports that an actor's constructor finished (or raised)."""
        info = self.actors.get(actor_id)
        if info is not None:
            retiring = info["state"] == "retire-when-started"
            info["state"] = "alive" if ok else "failed"
            info["error"] = error
            if retiring:
                self._retire(actor_id)

    def actor_ended(self, actor_id: int, reason: str | None) -> None:
        """A worker reports an actor's end: its name becomes free."""
        info = self.actors.pop(actor_id, None)
        if info is None:
            return
        self._unname(info)
        self.ledger.forget(actor_id)
        self.placement.release(actor_id)

    def _unname(self, info: dict) -> None:
        key = (info.get("namespace"), info.get("name"))
        if info.get("name") is not None and self.names.get(key) == info["actor_id"]:
            del self.names[key]

    # -- lifetime (zactor.ownership) ------------------------------------------------------

    def refs(self, address: str, report: list) -> None:
        """A process reports the actors whose handles it started or stopped holding."""
        self.ledger.apply(address, report, self._retire)

    def owner_gone(self, address: str) -> None:
        """The process at ``address`` (a driver) ended its job: end the actors it owned.

        It also stops holding whatever handles it had.
        """
        for actor_id, info in list(self.actors.items()):
            if info.get("owner") == address:
                self._retire(actor_id, f"its owner {address} ended its job")
        self.ledger.drop_process(address, self._retire)

    def _retire(self, actor_id: int, why: str = "no handle to it remains") -> None:
        """Ask the actor's worker to end it once the calls already sent to it have run."""
        from zactor.actor import worker_service_handle

        info = self.actors.get(actor_id)
        if info is None or info["state"] in ("retiring", "retire-when-started"):
            return
        self._unname(info)  # a name being retired can be taken again at once
        self.ledger.forget(actor_id)
        if info["state"] == "starting":  # its worker may not have seen the creation yet
            info["state"] = "retire-when-started"
            return
        info["state"] = "retiring"
        reason = (
            f"actor {info['class_name']}(id={actor_id}) went out of scope ({why}); it ended "
            "after running the calls already sent to it, and will not restart. Keep a handle "
            "to an actor for as long as you use it, or create it with lifetime='detached'"
        )
        worker_service_handle(info["address"]).retire.tell(actor_id, reason)

    def lookup(self, name: str, namespace: str | None, holder: str | None = None) -> dict | None:
        """The actor named ``name`` in ``namespace``, or None.

        ``holder`` (the caller's address) is counted as holding the actor from
        now on, so the actor cannot end before the caller's own report arrives.
        """
        actor_id = self.names.get((namespace, name))
        if actor_id is None:
            return None
        self._hold(actor_id, holder)
        return self.actors.get(actor_id)

    def _hold(self, actor_id: int, holder: str | None) -> None:
        if holder is not None:
            self.ledger.hold(actor_id, holder)

    def list_actors(self) -> list:
        """Every actor the head knows of."""
        return list(self.actors.values())

    def shutdown(self) -> None:
        """Stop the cluster: workers first, then the head itself."""
        if self._host is not None:
            self._host.stop()

    # -- drivers and `zactor status` --------------------------------------------------------

    def register_driver(self, address: str, pid: int, node_id: str) -> dict:
        """A driver joined the cluster from ``address`` (its inbox), as process ``pid``.

        ``node_id`` names the driver's machine (:func:`zactor.cluster.node_identity`).
        A driver on the head's machine is watched: if its process ends without
        ``driver_exited`` (killed, crashed), the head notices within about a
        second and ends the actors it owned. Returns the node id the driver is
        on, as the cluster names it.
        """
        local = address.startswith("ipc://") or node_id == cluster.node_identity()
        node = self._node_id() if local else node_id
        self.drivers[address] = {
            "address": address,
            "pid": pid,
            "node_id": node,
            "local": local,
            "start_time": cluster.process_start_time(pid) if local else None,
            "joined_at": time.time(),
        }
        return {"node_id": node}

    def driver_exited(self, address: str) -> None:
        """The driver at ``address`` is gone (``zactor.shutdown()``, or its process died):
        end the non-detached actors it owned and drop the handles it held."""
        if self.drivers.pop(address, None) is not None:
            self.owner_gone(address)

    def status(self) -> dict:
        """The cluster as ``zactor status`` shows it: head, nodes, workers, drivers, actors.

        Each actor row joins the registry (name, class, worker, state) with its
        worker's counters from ``WorkerService.stats()`` (calls, errors, queue
        depth, and service-time percentiles where the worker reports them). A
        worker that does not answer within :data:`STATUS_TIMEOUT_S` is shown
        with ``"error"`` and its actors without counters.
        """
        from zactor.actor import worker_service_handle

        workers = sorted(self.cluster_info()["workers"], key=lambda w: w["worker_id"])
        asked = {}
        for worker in workers:
            try:
                asked[worker["worker_id"]] = worker_service_handle(worker["address"]).stats.remote()
            except Exception as exc:  # reported in the worker's row
                asked[worker["worker_id"]] = exc
        deadline = time.monotonic() + STATUS_TIMEOUT_S
        stats: dict[str, dict] = {}
        for worker_id, future in asked.items():
            try:
                if isinstance(future, Exception):
                    raise future
                stats[worker_id] = future.result(timeout=max(0.01, deadline - time.monotonic()))
            except Exception as exc:  # a stuck or dead worker: say so in its row
                stats[worker_id] = {"error": f"{type(exc).__name__}: {exc}"}
        counters = {
            row["actor_id"]: row
            for worker_stats in stats.values()
            for row in worker_stats.get("actors", ())
        }
        actors = []
        for actor_id, info in sorted(self.actors.items()):
            row = {
                "actor_id": actor_id,
                "name": info.get("name"),
                "namespace": info.get("namespace"),
                "class_name": info.get("class_name"),
                "worker_id": info.get("worker_id"),
                "state": info.get("state"),
                "lifetime": info.get("lifetime"),
                "owner": info.get("owner"),
            }
            for key, value in counters.get(actor_id, {}).items():
                row.setdefault(key, value)
            actors.append(row)
        worker_rows = []
        for worker in workers:
            worker_stats = stats.get(worker["worker_id"], {})
            row = dict(worker)
            row["dropped"] = worker_stats.get("dropped", {})
            if "error" in worker_stats:
                row["error"] = worker_stats["error"]
            worker_rows.append(row)
        drivers = [
            {k: v for k, v in info.items() if k != "start_time"} for info in self.drivers.values()
        ]
        head_node = self._node_id()
        node_ids = [head_node]
        for row in worker_rows + drivers:
            if row["node_id"] not in node_ids:
                node_ids.append(row["node_id"])
        nodes = [
            {
                "node_id": node_id,
                "host": socket.gethostname() if node_id == head_node else None,
                "head": node_id == head_node,
                "workers": sum(1 for w in worker_rows if w["node_id"] == node_id),
                "drivers": sum(1 for d in drivers if d["node_id"] == node_id),
            }
            for node_id in node_ids
        ]
        runtime = self._host.runtime if self._host is not None else None
        supervisor = self._supervisor
        return {
            "head": {
                "address": runtime.address if runtime is not None else None,
                "pid": os.getpid(),
                "node_id": head_node,
                "session_dir": supervisor.session_dir if supervisor is not None else None,
                "started_at": supervisor.started_at if supervisor is not None else None,
            },
            "nodes": nodes,
            "workers": worker_rows,
            "drivers": drivers,
            "actors": actors,
        }

    def _node_id(self) -> str:
        return self._supervisor.node_id if self._supervisor is not None else "node-0"


def main(argv: list[str] | None = None) -> None:
    """Entry point of the head process (an embedded cluster's, or ``zactor start --head``'s)."""
    parser = argparse.ArgumentParser(prog="python -m zactor.head")
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("ZACTOR_LOG_LEVEL", "WARNING"))
    parent = os.getppid() if args.watch_parent else None
    try:
        runtime = Runtime(args.address, role="head", head_address=args.address)
    except zmq.ZMQError as exc:
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
    supervisor = Supervisor(
        args.session_dir, runtime.address, worker_host=cluster.worker_host(runtime.address)
    )
    head = Head(supervisor)
    head._host = host
    host.add_system_actor(head)
    supervisor.start_workers(args.num_workers, json.loads(args.resources))
    supervisor.watch_drivers(head, runtime)
    if args.address_file:
        cluster.write_json_atomically(args.address_file, runtime.address)
    if args.cluster_file:
        print(f"zactor head pid {os.getpid()} listening at {runtime.address}", flush=True)
    try:
        host.serve(parent_pid=parent)
    finally:
        supervisor.stop_watching()
        supervisor.stop_workers(head)
        runtime.close()
        shutil.rmtree(args.session_dir, ignore_errors=True)
        if args.cluster_file:
            cluster.remove_cluster_file(args.cluster_file, os.getpid())
            print(f"zactor head pid {os.getpid()} stopped", flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
