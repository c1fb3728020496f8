"""Placement: which worker a new actor goes to, by the CPU and resources it asks for.

The model, chosen to be simple to reason about:

* Every worker process is one CPU (``CPU: 1``); an actor runs in one worker.
  ``num_cpus=c`` (0 ≤ c ≤ 1, default 0) reserves ``c`` of its worker's CPU.
  ``num_cpus=1`` gets a worker to itself: it goes only to a worker that hosts
  no other actor, and no actor is placed beside it afterwards (nor beside
  actors whose fractions add up to a whole CPU).
* Custom resources (``resources={"GPU": 1}``) belong to a node (a machine):
  ``zactor.init(resources={"GPU": 2})`` or ``zactor start --head --resources
  '{"GPU": 2}'``. An actor reserves its amounts from its node's pool until it
  ends.
* ``resources={"node:<node id>": 1}`` pins an actor to that node (as Ray's
  ``node:<ip>`` resource does): it is a constraint, not an amount, so any
  number of actors may ask for it. Every node has one, named by its id
  (``zactor status`` lists them; ``get_runtime_context().node_id`` in an actor).
* Among the workers that fit, the one hosting the fewest actors wins.
* A demand that no worker can meet *now* fails at creation with a
  :class:`~zactor.errors.ClusterError` that says what was asked, what is free
  and what to do. zactor does not queue actor creations: a creation that
  would wait silently is harder to debug than one that fails. The one
  exception is a worker that died a moment ago: while its replacement starts,
  a creation it could take waits for it (see :meth:`Placement.fits_new_worker`
  and ``Head.place``).
"""

from __future__ import annotations

from zactor.errors import ClusterError

#: Reservations below this are treated as zero (float sums of fractions).
EPSILON = 1e-9
#: A resource named ``node:<node id>`` pins an actor to that node (see the module docstring).
NODE_PREFIX = "node:"


def _amounts(resources: dict) -> dict:
    """``resources`` without its node pins: what is reserved from a node's pool."""
    return {k: v for k, v in resources.items() if not k.startswith(NODE_PREFIX)}


class Placement:
    """Nodes' resources, workers' CPU, and what each actor reserved."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict] = {}  # node_id -> {"total": {...}, "free": {...}}
        self.workers: dict[str, dict] = {}  # worker_id -> {"node_id", "cpu_free", "actors"}
        self.reserved: dict[int, tuple] = {}  # actor_id -> (worker_id, num_cpus, resources)

    def add_worker(self, worker_id: str, node_id: str, node_resources: dict) -> None:
        """A worker joined; the first worker of a node brings the node's resources."""
        if node_id not in self.nodes:
            total = {k: float(v) for k, v in (node_resources or {}).items()}
            self.nodes[node_id] = {"total": total, "free": dict(total)}
        self.workers[worker_id] = {"node_id": node_id, "cpu_free": 1.0, "actors": 0}

    def resources(self) -> dict:
        """``{"total": {...}, "available": {...}}`` of the cluster: ``CPU`` (one a
        worker process) and every node's custom resources, summed over nodes."""
        total = {"CPU": float(len(self.workers))}
        available = {"CPU": sum(w["cpu_free"] for w in self.workers.values())}
        for node in self.nodes.values():
            for key, amount in node["total"].items():
                total[key] = total.get(key, 0.0) + amount
            for key, amount in node["free"].items():
                available[key] = available.get(key, 0.0) + amount
        return {"total": total, "available": available}

    def remove_worker(self, worker_id: str) -> None:
        """A worker is gone; so are its actors' reservations."""
        for actor_id, (where, _, _) in list(self.reserved.items()):
            if where == worker_id:
                self.release(actor_id)
        self.workers.pop(worker_id, None)

    def remove_node(self, node_id: str) -> None:
        """A node left the cluster (its workers are removed first): its resources go."""
        self.nodes.pop(node_id, None)

    def choose(self, class_name: str, num_cpus: float, resources: dict) -> str:
        """The worker for an actor asking for ``num_cpus`` and ``resources``; raises if none."""
        if not self.workers:
            raise ClusterError("the cluster has no live worker to place an actor on")
        fits = [
            (info["actors"], worker_id)
            for worker_id, info in self.workers.items()
            if self._fits(info, num_cpus, resources)
        ]
        if not fits:
            raise ClusterError(self.explain(class_name, num_cpus, resources))
        return min(fits)[1]

    def fits_new_worker(
        self, node_id: str, node_resources: dict, num_cpus: float, resources: dict
    ) -> bool:
        """Whether a worker about to join node ``node_id`` could take this demand.

        A new worker has its whole CPU free; custom resources are the node's,
        so they must be free on the node now (``node_resources`` are its
        totals, for a node none of whose workers registered yet).
        """
        node = self.nodes.get(node_id)
        free = node["free"] if node is not None else node_resources or {}
        pins = [k[len(NODE_PREFIX) :] for k in resources if k.startswith(NODE_PREFIX)]
        return (
            num_cpus <= 1 + EPSILON
            and all(pin == node_id for pin in pins)
            and all(
                free.get(key, 0.0) + EPSILON >= amount
                for key, amount in _amounts(resources).items()
            )
        )

    def reserve(self, actor_id: int, worker_id: str, num_cpus: float, resources: dict) -> None:
        """Record that ``actor_id`` lives on ``worker_id`` with these reservations."""
        worker = self.workers[worker_id]
        worker["cpu_free"] -= num_cpus
        worker["actors"] += 1
        free = self.nodes[worker["node_id"]]["free"]
        amounts = _amounts(resources)
        for key, amount in amounts.items():
            free[key] -= amount
        self.reserved[actor_id] = (worker_id, num_cpus, amounts)

    def release(self, actor_id: int) -> None:
        """The actor ended: give back what it reserved."""
        entry = self.reserved.pop(actor_id, None)
        if entry is None:
            return
        worker_id, num_cpus, resources = entry
        worker = self.workers.get(worker_id)
        if worker is None:
            return
        worker["cpu_free"] += num_cpus
        worker["actors"] -= 1
        free = self.nodes[worker["node_id"]]["free"]
        for key, amount in resources.items():
            free[key] += amount

    def _fits(self, worker: dict, num_cpus: float, resources: dict) -> bool:
        if worker["cpu_free"] < EPSILON:  # a whole CPU is reserved: the worker is taken
            return False
        if num_cpus > worker["cpu_free"] + EPSILON:
            return False
        if num_cpus >= 1 - EPSILON and worker["actors"]:
            return False
        node_id = worker["node_id"]
        free = self.nodes[node_id]["free"]
        for key, amount in resources.items():
            if key.startswith(NODE_PREFIX):
                if key[len(NODE_PREFIX) :] != node_id:
                    return False
            elif free.get(key, 0.0) + EPSILON < amount:
                return False
        return True

    def explain(self, class_name: str, num_cpus: float, resources: dict) -> str:
        """Why no worker can take this demand now (what is free where), and what to do."""
        asked = [f"num_cpus={num_cpus:g}"] + [f"{k}={v:g}" for k, v in resources.items()]
        seen = []
        for node_id, node in sorted(self.nodes.items()):
            free = ", ".join(f"{k}={v:g}" for k, v in sorted(node["free"].items())) or "none"
            seen.append(f"node {node_id} has resources free: {free}")
        for worker_id, info in sorted(self.workers.items()):
            seen.append(
                f"{worker_id} hosts {info['actors']} actor(s), CPU free {info['cpu_free']:g}"
            )
        total = {}
        for node in self.nodes.values():
            for key, amount in node["total"].items():
                total[key] = max(total.get(key, 0.0), amount)
        never = [k for k, v in _amounts(resources).items() if total.get(k, 0.0) + EPSILON < v]
        pins = [k[len(NODE_PREFIX) :] for k in resources if k.startswith(NODE_PREFIX)]
        missing = [pin for pin in pins if pin not in self.nodes]
        if missing:
            advice = (
                f"no live node is named {', '.join(missing)}: `zactor status` lists the "
                f"nodes; pin with resources={{'node:<node id>': 1}}"
            )
        elif never:
            advice = (
                f"no node of this cluster offers that much {', '.join(never)}: start the "
                "cluster with it (zactor.init(resources={...}) or zactor start --head "
                "--resources '{...}') or ask for less"
            )
        elif num_cpus >= 1 - EPSILON:
            advice = (
                "num_cpus=1 needs a worker with no other actor: start the cluster with more "
                "workers (num_workers=...), end idle actors, or ask for less CPU"
            )
        else:
            advice = "end actors that hold these resources, start more workers, or ask for less"
        return (
            f"cannot place actor {class_name} asking for {', '.join(asked)}: no worker can "
            f"take it now ({'; '.join(seen)}). {advice}"
        )
