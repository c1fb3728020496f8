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
import subprocess
import time

from zactor import spawn
from zactor.errors import ClusterError
from zactor.runtime import Runtime, set_current
from zactor.transport import ipc_address
from zactor.worker import ActorHost

log = logging.getLogger("zactor")

#: How long the head waits for workers to exit on their own at shutdown (seconds).
STOP_GRACE_S = 2.0


class Supervisor:
    """Starts this machine's worker processes and stops them."""

    def __init__(self, session_dir: str, head_address: str, node_id: str = "node-0") -> None:
        self.session_dir = session_dir
        self.head_address = head_address
        self.node_id = node_id
        self.processes: dict[str, subprocess.Popen] = {}

    def start_workers(self, count: int, resources: dict | None = None) -> None:
        """Start ``count`` worker processes (they register with the head themselves)."""
        for i in range(count):
            worker_id = f"worker-{i}"
            address = ipc_address(self.session_dir, f"{worker_id}.sock")
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


class Head:
    """The registry: workers, actors, names; placement of new actors."""

    def __init__(self, supervisor: Supervisor | None = None) -> None:
        self._supervisor = supervisor
        self._host: ActorHost | None = None
        self.workers: dict[str, dict] = {}
        self.actors: dict[int, dict] = {}
        self.names: dict[tuple, int] = {}
        self._next_actor_id = 1

    def register_worker(
        self, worker_id: str, address: str, pid: int, node_id: str, resources: dict
    ) -> None:
        """A worker process announces itself."""
        self.workers[worker_id] = {
            "worker_id": worker_id,
            "address": address,
            "pid": pid,
            "node_id": node_id,
            "resources": resources,
            "actors": 0,
        }

    def cluster_info(self) -> dict:
        """Workers known to the head, and how many actors it placed."""
        return {"workers": list(self.workers.values()), "num_actors": len(self.actors)}

    def place(self, spec: dict) -> dict:
        """Choose a worker for a new actor and reserve its id (and name).

        Raises ``ValueError`` when the name is taken (unless ``get_if_exists``).
        """
        name, namespace = spec.get("name"), spec.get("namespace")
        if name is not None:
            existing = self.names.get((namespace, name))
            if existing is not None:
                if spec.get("get_if_exists"):
                    return dict(self.actors[existing], existing=True)
                raise ValueError(
                    f"an actor named {name!r} already exists in namespace {namespace!r}: "
                    "choose another name, or pass get_if_exists=True to get a handle to it"
                )
        if not self.workers:
            raise ClusterError("the cluster has no live worker to place an actor on")
        worker = min(self.workers.values(), key=lambda w: (w["actors"], w["worker_id"]))
        actor_id = self._next_actor_id
        self._next_actor_id += 1
        worker["actors"] += 1
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
            "state": "starting",
        }
        self.actors[actor_id] = info
        if name is not None:
            self.names[(namespace, name)] = actor_id
        return info

    def actor_started(self, actor_id: int, ok: bool, error: str | None) -> None:
        """A worker reports that an actor's constructor finished (or raised)."""
        info = self.actors.get(actor_id)
        if info is not None:
            info["state"] = "alive" if ok else "failed"
            info["error"] = error

    def actor_ended(self, actor_id: int, reason: str | None) -> None:
        """A worker reports an actor's end: its name becomes free."""
        info = self.actors.pop(actor_id, None)
        if info is None:
            return
        if info.get("name") is not None:
            self.names.pop((info.get("namespace"), info["name"]), None)
        worker = self.workers.get(info["worker_id"])
        if worker is not None:
            worker["actors"] -= 1

    def lookup(self, name: str, namespace: str | None) -> dict | None:
        """The actor named ``name`` in ``namespace``, or None."""
        actor_id = self.names.get((namespace, name))
        return None if actor_id is None else self.actors.get(actor_id)

    def list_actors(self) -> list:
        """Every actor the head knows of."""
        return list(self.actors.values())

    def shutdown(self) -> None:
        """Stop the cluster: workers first, then the head itself."""
        if self._host is not None:
            self._host.stop()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the head process."""
    parser = argparse.ArgumentParser(prog="python -m zactor.head")
    parser.add_argument("--session-dir", required=True)
    parser.add_argument("--address", required=True, help="address to bind the head's inbox")
    parser.add_argument("--num-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--resources", default="{}")
    parser.add_argument(
        "--watch-parent", action="store_true", help="stop the cluster when the parent process dies"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("ZACTOR_LOG_LEVEL", "WARNING"))
    parent = os.getppid() if args.watch_parent else None
    signal.signal(signal.SIGTERM, lambda *_: host.stop())
    runtime = Runtime(args.address, role="head", head_address=args.address)
    set_current(runtime)
    host = ActorHost(runtime)
    supervisor = Supervisor(args.session_dir, runtime.address)
    head = Head(supervisor)
    head._host = host
    host.add_system_actor(head)
    supervisor.start_workers(args.num_workers, json.loads(args.resources))
    try:
        host.serve(parent_pid=parent)
    finally:
        supervisor.stop_workers(head)
        runtime.close()
        shutil.rmtree(args.session_dir, ignore_errors=True)
    os._exit(0)


if __name__ == "__main__":
    main()
