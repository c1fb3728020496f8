"""The head: the cluster's control plane, never on the call path.

The head process hosts one actor, :class:`Head` (actor 0 of its inbox), that
keeps the registry of workers, actors and names and places new actors; and a
:class:`~zactor.control.supervisor.Supervisor` that starts the worker processes
and stops them. Drivers and workers talk to the head with ordinary actor calls,
of the methods ``HEAD_TABLE`` declares (:mod:`zactor.wire.protocol`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import urllib.parse
import uuid
from typing import TYPE_CHECKING

from zactor.caller.handle import (
    ActorHandle,
    head_handle,
    node_service_handle,
    worker_service_handle,
)
from zactor.control import cluster
from zactor.control.ledger import RefLedger
from zactor.control.placement import Placement
from zactor.endpoint.runtime import is_anonymous_namespace
from zactor.errors import ClusterError, GetTimeoutError, WorkerStartingError
from zactor.wire.protocol import DRIVER_TABLE
from zactor.worker.host import ActorHost

if TYPE_CHECKING:
    from zactor.control.head_store import HeadSnapshot, HeadStore
    from zactor.control.supervisor import Supervisor

log = logging.getLogger("zactor")

#: How long ``Head.status()`` waits for the workers' counters (seconds).
STATUS_TIMEOUT_S = 5.0
#: How long a node agent may go without a heartbeat before the head declares its
#: node dead (seconds; ``zactor start --head --node-timeout``). Nodes send one every
#: :data:`HEARTBEATS_PER_TIMEOUT` th of it.
NODE_TIMEOUT_S = 5.0
HEARTBEATS_PER_TIMEOUT = 5
#: Most actor ids one :meth:`Head.lease_actor_ids` gives out.
MAX_ID_LEASE = 1 << 16
#: How long a recovered head waits for the workers its store lists to rejoin (seconds);
#: the actors of one that does not are dealt with as after its death.
REJOIN_TIMEOUT_S = 10.0


def checkpoint_key(name: str | None, namespace: str | None, actor_id: int, cluster_id: str) -> str:
    """The key an actor's checkpoints are saved under (see docs/failures.md).

    A named actor's is its name (``"ns:name"`` in an explicit namespace, the
    namespace percent-encoded), so re-creating it by name, in any later run,
    finds its state; keys have no ``/``, so a store that uses them as file names
    (the seeds' FilePersistence) keeps them in one directory. In an anonymous
    namespace (a driver that gave none) the key is the name alone: that
    namespace is new in every run, and a key naming it would never be found
    again. :meth:`Head.place` keeps two live actors off one such key. An
    unnamed actor's key names this cluster too: its id means nothing to another
    cluster.
    """
    if name is None:
        return f"actor-{actor_id}-{cluster_id}"
    if namespace is None or is_anonymous_namespace(namespace):
        return name
    return f"{urllib.parse.quote(namespace, safe='')}:{name}"


class Head:
    """The registry: workers, actors, names; placement of new actors; who holds which actor.

    Lifetime: a non-detached actor is counted (:mod:`zactor.endpoint.refs`) from
    its placement on; when no process holds a handle to it, or when the
    process that created it (its owner) goes away, the head asks its worker
    to *retire* it: the calls already sent to it run, then it ends. A detached
    actor is never counted; it lives until killed or until the cluster stops.
    """

    def __init__(
        self,
        supervisor: Supervisor | None = None,
        store: HeadStore | None = None,
        node_timeout_s: float = NODE_TIMEOUT_S,
    ) -> None:
        self._supervisor = supervisor
        #: Where the registry is kept durably (a standing cluster's head); None: in memory only.
        self._store = store
        #: Workers a recovered head's store listed that have not rejoined yet, by id.
        self._rejoining: dict[str, dict] = {}
        #: Tells this head process from the one before it, for the workers that rejoin it.
        self.boot_id = uuid.uuid4().hex[:12]
        self._host: ActorHost | None = None
        #: Node agents (other machines) by node id; the supervisor's thread reads it.
        self.nodes: dict[str, dict] = {}
        self.node_timeout_s = node_timeout_s
        #: Seconds this head's thread spent waiting on workers (see :meth:`silence`), and
        #: when the wait under way began.
        self._stall_total = 0.0
        self._stall_start: float | None = None
        self.workers: dict[str, dict] = {}
        self.actors: dict[int, dict] = {}
        self.names: dict[tuple, int] = {}
        #: checkpoint key -> actor id, of the named actors with a checkpoint, while named.
        self.durable_keys: dict[str, int] = {}
        self.ledger = RefLedger()
        self.placement = Placement()
        self.drivers: dict[str, dict] = {}  # by inbox address; the supervisor's thread reads it
        #: actor id -> (blob, creation spec) of actors that may restart.
        self.creations: dict[int, tuple] = {}
        #: actor id -> (cause, incarnation) of a restartable actor that failed before its
        #: creation reached the head (the worker's report overtook its creator's): the
        #: failure is settled when the creation comes (remember_creation).
        self._failed_early: dict[int, tuple] = {}
        self._awaiting_worker: list[int] = []  # restarts waiting for a replacement worker
        #: Replacements asked of node agents and not registered yet: node id -> {the dead
        #: worker's id: when asked (``time.monotonic()``)}. (This machine's are the
        #: supervisor's ``replacing``.) The new worker's id is the agent's to choose.
        self._node_replacing: dict[str, dict[str, float]] = {}
        #: What became of the latest replacement worker that did not start, if one did not.
        self._failed_start: str | None = None
        self._stopping = False
        #: Tells apart unnamed actors' checkpoints of different clusters sharing a store.
        self.cluster_id = uuid.uuid4().hex[:12]
        self._next_actor_id = 1
        # Events the metrics count (zactor.control.metrics reads them from its own thread).
        #: Actors placed (creations; not the handles ``get_if_exists`` found).
        self.created = 0
        #: Worker processes that exited while the cluster ran (replacements that did not start too).
        self.worker_deaths = 0
        #: Restarts by actor class, of the actors gone too.
        self.class_restarts: dict[str, int] = {}
        #: Where the head serves metrics and the status page, when it does.
        self.metrics_url: str | None = None

    def register_worker(
        self,
        worker_id: str,
        address: str,
        pid: int,
        node_id: str,
        resources: dict,
        hosted: list | None = None,
    ) -> None:
        """A worker process announces itself, with its node's ``resources``.

        ``hosted`` (``[[actor_id, incarnation], ...]``) comes from a worker that
        rejoins a recovered head (:meth:`recover`): the actors it still runs.
        """
        node = self.nodes.get(node_id)
        if node is not None and node["state"] != "alive":
            # Its node was declared dead or stopped: its actors live elsewhere now.
            worker_service_handle(address).shutdown.tell()
            return
        if hosted is not None:
            self._rejoined(worker_id, address, pid, node_id, resources, hosted)
            return
        if self._supervisor is not None:
            if self._supervisor.exit_cause(worker_id) is not None:
                return  # it died since: the report of its exit, on its way, deals with it
            self._supervisor.replacing.pop(worker_id, None)
        self._node_replacement_over(node_id)
        self.placement.add_worker(worker_id, node_id, resources)
        self.workers[worker_id] = {
            "worker_id": worker_id,
            "address": address,
            "pid": pid,
            "node_id": node_id,
            "resources": resources,
            # This machine's, read while it surely runs: a head recovered later tells it
            # from a process that reused its pid (a node's agent watches its own).
            "start_time": None if node_id in self.nodes else cluster.process_start_time(pid),
        }
        self._save_worker(worker_id)
        self._retry_awaiting()

    # -- nodes (zactor.control.node) ---------------------------------------------------------

    def register_node(
        self, node_id: str, address: str, pid: int, host: str, resources: dict, num_workers: int
    ) -> dict:
        """A node agent joins: the machine ``host`` whose agent listens at ``address``,
        about to start ``num_workers`` workers that share ``resources``.

        Returns how often to send heartbeats (``heartbeat_s``) and how long a
        silence makes the node dead (``node_timeout_s``). A node id already in
        use by a live node is refused (``ValueError``).
        """
        known = self.nodes.get(node_id)
        if node_id == self._node_id() or (known is not None and known["state"] == "alive"):
            raise ValueError(
                f"a node named {node_id!r} is already part of this cluster: start the node "
                "with another --node-id, or stop the one running (`zactor stop` on its machine)"
            )
        self.nodes[node_id] = {
            "node_id": node_id,
            "address": address,
            "pid": pid,
            "host": host,
            "resources": dict(resources or {}),
            "num_workers": num_workers,
            "state": "alive",
            "joined_at": time.time(),
            "heartbeat_at": time.time(),
        }
        self._heard(self.nodes[node_id])
        self._save_node(node_id)
        log.info("zactor head: node %s joined from %s (%s)", node_id, host, address)
        return {
            "node_id": node_id,
            "heartbeat_s": self.node_timeout_s / HEARTBEATS_PER_TIMEOUT,
            "node_timeout_s": self.node_timeout_s,
        }

    def node_heartbeat(self, node_id: str, address: str | None = None) -> str:
        """The node agent listening at ``address`` is alive. Returns its node's state
        as the head sees it: ``"alive"``, or ``"dead"`` (declared dead while it was
        silent: the agent ends its workers, whose actors now run elsewhere or are
        gone), or ``"replaced"`` (declared dead, and another agent has joined under
        the same node id since: the same for this agent), or ``"unknown"`` (this head
        never heard of it)."""
        node = self._node_of(node_id, address)
        if node is None:
            return "replaced" if node_id in self.nodes else "unknown"
        if node["state"] == "alive":
            self._heard(node)
            node["heartbeat_at"] = time.time()
        return node["state"]

    def node_stopping(self, node_id: str, address: str | None = None) -> None:
        """The node agent at ``address`` is stopping (``zactor stop`` on its machine):
        its workers are gone now, as after their deaths, and are not replaced."""
        if self._node_of(node_id, address) is not None:
            self._node_gone(node_id, "stopped", "stopped with its node (zactor stop)")

    def _node_of(self, node_id: str, address: str | None) -> dict | None:
        """Node ``node_id`` if the agent at ``address`` is the one that joined as it
        last. An agent declared dead while cut off may come back after another joined
        under its id: what it says must not keep alive, or stop, the node that took over.
        (``address`` None: an agent older than this check, taken as the one joined.)"""
        node = self.nodes.get(node_id)
        if node is None or address not in (None, node["address"]):
            return None
        return node

    def node_lost(self, node_id: str, silent_s: float) -> None:
        """The supervisor saw node ``node_id`` silent for ``silent_s`` seconds: it is
        declared dead, and every actor of its workers fails (or restarts elsewhere)."""
        node = self.nodes.get(node_id)
        if node is None or node["state"] != "alive":
            return
        silent_s = silence(self, node)
        if silent_s <= self.node_timeout_s:  # a heartbeat was read since the report
            return
        cause = (
            f"was lost with its node {node_id} ({node['host']}), declared dead after "
            f"{silent_s:.1f} s without a heartbeat"
        )
        self._node_gone(node_id, "dead", cause)

    def _node_gone(self, node_id: str, state: str, cause: str) -> None:
        node = self.nodes.get(node_id)
        if node is None or node["state"] != "alive":
            return
        node["state"] = state
        self._save_node(node_id)
        if state == "dead":
            log.warning("zactor head: node %s (%s) declared dead", node_id, node["host"])
        lost = [w for w, worker in self.workers.items() if worker["node_id"] == node_id]
        # Out of placement first: an actor of one lost worker restarting must not be
        # placed on another worker of the same node, not yet dealt with.
        for worker_id in lost:
            self.placement.remove_worker(worker_id)
        self.placement.remove_node(node_id)
        awaited = self._node_replacing.pop(node_id, None)
        for worker_id in lost:
            self._worker_gone(worker_id, cause)
        if awaited:  # what waited for the node's replacements goes elsewhere, or fails
            self._retry_awaiting()

    # -- heartbeats: silence counted over the time the head could read them ----------------

    def _heard(self, entry: dict) -> None:
        """A node or remote driver's heartbeat (or joining) was read now."""
        entry["last_heartbeat"] = time.monotonic()
        entry["stall_mark"] = self._stalled()

    def _stalled(self) -> float:
        """Seconds this head's thread has spent waiting on workers (``status``, a kill's
        answer), the wait under way included. Callable from any thread."""
        start = self._stall_start
        return self._stall_total + (time.monotonic() - start if start is not None else 0.0)

    @contextlib.contextmanager
    def _waiting(self):
        """Count the time inside as stalled: the head reads no heartbeat meanwhile."""
        self._stall_start = time.monotonic()
        try:
            yield
        finally:
            self._stall_total += time.monotonic() - self._stall_start
            self._stall_start = None

    def cluster_info(self) -> dict:
        """Workers known to the head (with how many actors each hosts and the CPU
        their actors leave free), the actor count, the head's own node id, and the
        workers being started to replace dead ones (``starting``: the new worker's id on
        this machine; ``"<node> for <dead worker>"`` for one a node's agent starts)."""
        workers = [
            dict(
                info,
                actors=self.placement.workers[worker_id]["actors"],
                cpu_free=self.placement.workers[worker_id]["cpu_free"],
            )
            for worker_id, info in self.workers.items()
        ]
        supervisor = self._supervisor
        # dict(): one C-level copy, as the supervisor's watch thread changes it.
        starting = sorted(dict(supervisor.replacing)) if supervisor is not None else []
        starting += sorted(w for starts in self._starting_on_nodes().values() for w in starts)
        return {
            "node_id": self._node_id(),
            "workers": workers,
            "num_actors": len(self.actors),
            "starting": starting,
            "metrics_url": self.metrics_url,
        }

    def place(self, spec: dict) -> dict:
        """Choose a worker for a new actor and reserve its id (and name).

        Raises ``ValueError`` when the name is taken (unless ``get_if_exists``),
        or when the actor has a checkpoint and another live actor saves under its
        key (same name in two anonymous namespaces: see :func:`checkpoint_key`);
        ``ClusterError`` when no worker can take the actor, and
        :class:`WorkerStartingError` when none can now but a dead worker's
        replacement that could is starting: the caller asks again (see
        :meth:`_choose`). Nothing is reserved unless it returns.

        ``spec["actor_id"]``, an id of the caller's lease (:meth:`lease_actor_ids`), names
        the actor; the answer is then only ``{"actor_id", "address", "checkpoint_key"}``.
        ``spec["worker_id"]`` places the actor on that worker (``ClusterError`` if
        it is gone). ``spec["task_runner"]`` marks a caller's task runner
        (:mod:`zactor.caller.task`): it reserves nothing, and placement does not
        count it among the worker's actors, so a worker running tasks can still
        take an actor that wants a worker of its own.
        """
        if self._rejoining:
            raise WorkerStartingError(self._recovering())
        name, namespace = spec.get("name"), spec.get("namespace")
        if name is not None:
            existing = self.names.get((namespace, name))
            if existing is not None:
                if spec.get("get_if_exists"):
                    self.ledger.hold(existing, spec.get("owner"))
                    self._save_refs(existing)
                    return dict(self.actors[existing], existing=True)
                raise ValueError(
                    f"an actor named {name!r} already exists in namespace {namespace!r}: "
                    "choose another name, or pass get_if_exists=True to get a handle to it"
                )
        actor_id = self._new_actor_id(spec.get("actor_id"))
        key = checkpoint_key(name, namespace, actor_id, self.cluster_id)
        durable = name is not None and bool(spec.get("checkpoint"))
        if durable and key in self.durable_keys:
            self._refuse_shared_key(key, name, namespace)
        num_cpus, resources = spec.get("num_cpus") or 0.0, spec.get("resources") or {}
        pinned = spec.get("worker_id")
        if pinned is not None:
            worker = self.workers[self._live_worker(pinned)]
        else:
            worker = self.workers[self._choose(spec["class_name"], num_cpus, resources)]
        if spec.get("actor_id") is None:
            self._next_actor_id += 1
        task_runner = bool(spec.get("task_runner"))
        if not task_runner:
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
            "max_restarts": spec.get("max_restarts") or 0,
            "max_task_retries": spec.get("max_task_retries") or 0,
            "method_options": spec.get("method_options"),
            "restarts": 0,
            "incarnation": 0,
            "checkpoint_key": key,
            "state": "starting",
            "task_runner": task_runner,
        }
        self.actors[actor_id] = info
        self.created += 1
        if name is not None:
            self.names[(namespace, name)] = actor_id
        if durable:
            self.durable_keys[key] = actor_id
        if not detached:
            self.ledger.track(actor_id, spec.get("owner"))
        self._save_actor(actor_id, placed=True)
        if spec.get("actor_id") is not None:
            # A creator that leased the id made its handle already: it needs only where
            # to send the creation (a burst of them: every field costs on both sides).
            return {"actor_id": actor_id, "address": info["address"], "checkpoint_key": key}
        return info

    def place_many(self, spec: dict, actor_ids: list) -> list:
        """:meth:`place` for actors of one ``spec``, each named by an id of the caller's
        lease (``actor_ids``): one message for a burst of creations. For each, in order,
        ``[address, checkpoint_key, False]`` if placed, else ``[None, why, starting]``
        (``starting``: a replacement worker that could take it is starting, as
        :class:`WorkerStartingError` says: ask again)."""
        answers = []
        for actor_id in actor_ids:
            try:
                info = self.place(dict(spec, actor_id=actor_id))
            except Exception as exc:  # that one is refused; the others go on
                why = str(exc.args[0]) if exc.args else repr(exc)
                answers.append([None, why, isinstance(exc, WorkerStartingError)])
            else:
                answers.append([info["address"], info["checkpoint_key"], False])
        return answers

    def lease_actor_ids(self, count: int) -> int:
        """Reserve ``count`` actor ids for the caller and return the first: it names the
        actors it creates with them at once, and sends ``place`` each id in its spec
        without waiting for the answer (see :mod:`zactor.caller.creation`)."""
        if not isinstance(count, int) or not 1 <= count <= MAX_ID_LEASE:
            raise ValueError(
                f"lease_actor_ids takes a count from 1 to {MAX_ID_LEASE}, got {count!r}"
            )
        first = self._next_actor_id
        self._next_actor_id += count
        if self._store is not None:
            # On disk before the caller uses them: a recovered head never hands them out again.
            self._store.set_next_actor_id(self._next_actor_id)
            self._store.commit()
        return first

    def _new_actor_id(self, leased: int | None) -> int:
        """The id of an actor being placed: the next one, or ``leased``, an id of the
        caller's lease (:meth:`lease_actor_ids`), checked to be one this head gave out."""
        if leased is None:
            return self._next_actor_id
        if not isinstance(leased, int) or not 0 < leased < self._next_actor_id:
            raise ValueError(
                f"actor id {leased!r} was not leased by this head (it restarted with no "
                "record of the lease?): create the actor again"
            )
        if leased in self.actors:
            raise ValueError(
                f"actor id {leased} is in use by {self.actors[leased]['class_name']}: a caller "
                "used an id of its lease twice, or one leased from an earlier head; create "
                "the actor again"
            )
        return leased

    def _refuse_shared_key(self, key: str, name: str, namespace: str | None) -> None:
        holder = self.actors[self.durable_keys[key]]
        raise ValueError(
            f"actor {name!r} (namespace {namespace!r}) would save its checkpoint under the "
            f"key {key!r}, which actor {holder['class_name']}(id={holder['actor_id']}) of "
            f"namespace {holder['namespace']!r} uses now: in an anonymous namespace a "
            "checkpoint is keyed by the name alone, so that a later run finds it. To share "
            "that actor, give both drivers the same namespace (zactor.init(namespace=...) "
            "or options(namespace=...)); for two separate actors, give them different "
            "names or an explicit namespace each"
        )

    def actor_started(self, actor_id: int, ok: bool, error: str | None) -> None:
        """A worker reports that an actor's constructor finished (or raised)."""
        info = self.actors.get(actor_id)
        if info is not None:
            retiring = info["state"] == "retire-when-started"
            info["state"] = "alive" if ok else "failed"
            info["error"] = error
            self._save_actor(actor_id)
            if info["incarnation"]:
                self._notify_all("actor_restarted", actor_id, info["address"], info["incarnation"])
            if retiring:
                self._retire(actor_id)

    def actor_ended(self, actor_id: int, reason: str | None) -> None:
        """A worker reports an actor's end: its name becomes free."""
        info = self.actors.get(actor_id)
        if info is None or info.pop("ending", False):  # the end of the old incarnation
            return
        self._forget_actor(actor_id)

    def _forget_actor(self, actor_id: int) -> None:
        info = self.actors.pop(actor_id)
        self._unname(info)
        self.ledger.forget(actor_id)
        self.placement.release(actor_id)
        self.creations.pop(actor_id, None)
        self._failed_early.pop(actor_id, None)
        self._save_actor(actor_id)

    def _unname(self, info: dict) -> None:
        key = (info.get("namespace"), info.get("name"))
        if info.get("name") is not None and self.names.get(key) == info["actor_id"]:
            del self.names[key]
            if self._store is not None:
                self._store.delete_name(*key)
        # Freed with the name: re-creating the actor by name finds its checkpoint.
        if self.durable_keys.get(info.get("checkpoint_key")) == info["actor_id"]:
            del self.durable_keys[info["checkpoint_key"]]
            if self._store is not None:
                self._store.delete_durable_key(info["checkpoint_key"])

    # -- lifetime (zactor.endpoint.refs) ------------------------------------------------------

    def refs(self, address: str, report: list) -> None:
        """A process reports the actors whose handles it started or stopped holding."""
        self.ledger.apply(address, report, self._retire)
        for actor_id in {entry[1] for entry in report}:
            self._save_refs(actor_id)

    def _owner_gone(self, address: str) -> None:
        """The process at ``address`` (a driver) ended its job: end the actors it owned.

        It also stops holding whatever handles it had.
        """
        for actor_id, info in list(self.actors.items()):
            if info.get("owner") == address:
                self._retire(actor_id, f"its owner {address} ended its job")
        held = [a for a, holders in self.ledger.holders.items() if address in holders]
        self.ledger.drop_process(address, self._retire)
        for actor_id in held:
            self._save_refs(actor_id)

    def _retire(self, actor_id: int, why: str = "no handle to it remains") -> None:
        """Ask the actor's worker to end it once the calls already sent to it have run."""
        info = self.actors.get(actor_id)
        if info is None or info["state"] in ("retiring", "retire-when-started"):
            return
        self._unname(info)  # a name being retired can be taken again at once
        self.ledger.forget(actor_id)
        if info["state"] in ("starting", "restarting"):  # the worker has not built it yet
            info["state"] = "retire-when-started"
            self._save_actor(actor_id)
            return
        info["state"] = "retiring"
        self._save_actor(actor_id)
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
        self.ledger.hold(actor_id, holder)
        self._save_refs(actor_id)
        return self.actors.get(actor_id)

    def list_actors(self) -> list:
        """Every actor the head knows of."""
        return list(self.actors.values())

    def list_named(self, namespace: str | None, all_namespaces: bool = False) -> list:
        """The names of the named actors in ``namespace``; with ``all_namespaces``,
        ``{"name", "namespace"}`` of every named actor (``zactor.list_named_actors``)."""
        if all_namespaces:
            return [{"name": name, "namespace": ns} for ns, name in self.names]
        return [name for ns, name in self.names if ns == namespace]

    def resources(self) -> dict:
        """The cluster's resources, ``{"total": ..., "available": ...}`` (see
        :meth:`Placement.resources`)."""
        return self.placement.resources()

    def shutdown(self) -> None:
        """Stop the cluster: workers first, then the head itself."""
        self._stopping = True  # workers exiting now are not failures
        for node in self.nodes.values():
            if node["state"] == "alive":
                node_service_handle(node["address"]).shutdown.tell()
        if self._host is not None:
            self._host.stop()

    # -- failures and restarts ----------------------------------------------------------------

    def remember_creation(self, actor_id: int, blob: bytes, creation: dict) -> None:
        """Keep what re-creates a restartable actor: its pickled class and arguments."""
        if actor_id in self.actors:
            self.creations[actor_id] = (blob, creation)
            if self._store is not None:
                self._store.put_creation(actor_id, blob, creation)
            early = self._failed_early.pop(actor_id, None)
            if early is not None:
                self.actor_failed(actor_id, *early)

    def worker_died(self, worker_id: str, cause: str, died_at=None, pid: int | None = None) -> None:
        """The supervisor saw worker ``worker_id`` exit (``cause``: how; ``died_at``: a
        :func:`~zactor.endpoint.recovery.clock_stamp` taken once it was gone).

        Every process is told which actors died there and whether each restarts;
        restartable ones are re-created on a live worker, and a replacement
        worker is started so the cluster keeps its size. A replacement that
        exits before it registers is not replaced again (see :meth:`_start_failed`).
        """
        worker = self.workers.get(worker_id)
        if worker is not None:
            if pid is not None and pid != worker["pid"]:
                # Another process under that id: a worker of an agent that had this node's
                # id before it was declared dead, reporting late. Not this worker.
                return
            self._worker_gone(worker_id, cause, died_at)
        elif self._supervisor is not None and worker_id in self._supervisor.replacing:
            if not self._stopping:
                self._start_failed(worker_id, cause)
        elif not self._stopping:
            # A node's worker that never registered: its replacement did not start.
            # Its id begins with its node's (Supervisor's worker_prefix).
            node_id = worker_id.rpartition("-worker-")[0]
            if self._node_replacing.get(node_id):
                log.warning(
                    "zactor head: replacement worker %s on node %s did not start: it %s",
                    worker_id,
                    node_id,
                    cause,
                )
                self.worker_deaths += 1
                self._node_replacement_over(node_id)
                self._retry_awaiting()
        # Else the head dealt with this exit already: _choose found it first.

    def _worker_gone(self, worker_id: str, cause: str, died_at=None) -> None:
        """Worker ``worker_id``, registered, exited (``cause``; gone by ``died_at``): see
        :meth:`worker_died`."""
        worker = self.workers.pop(worker_id, None)
        if worker is None or self._stopping:
            return
        self._save_worker(worker_id)
        log.warning("zactor head: worker %s (pid %s) %s", worker_id, worker["pid"], cause)
        self.worker_deaths += 1
        self.placement.remove_worker(worker_id)
        entries, restarts = [], []
        for actor_id, info in list(self.actors.items()):
            if info["worker_id"] != worker_id:
                continue
            restarting = self._may_restart(info)
            where = f"its worker process {worker_id} (pid {worker['pid']}) {cause}"
            reason = self._death_reason(info, where, restarting)
            entries.append([actor_id, reason, restarting, info["incarnation"]])
            if restarting:
                info["state"] = "restarting"
                self._save_actor(actor_id)
                restarts.append(actor_id)
            else:
                self._forget_actor(actor_id)
        self._notify_all("actor_died", worker["address"], entries, True, died_at)
        self._owner_gone(worker["address"])  # its handles, and actors its actors created
        self._replace(worker)
        for actor_id in restarts:
            self._restart(actor_id)

    def _replace(self, worker: dict) -> None:
        """Have a dead worker replaced by whoever supervises its machine: this process's
        supervisor, or the node agent of a live node (a dead or stopping node's are not)."""
        node = self.nodes.get(worker["node_id"])
        if node is not None:
            if node["state"] == "alive":
                node_id, dead = worker["node_id"], worker["worker_id"]
                node_service_handle(node["address"]).replace_worker.tell(dead)
                self._node_replacing.setdefault(node_id, {})[dead] = time.monotonic()
                if self._host is not None:  # the agent may never say it did not start
                    runtime = self._host.runtime
                    runtime.call_later(
                        cluster.START_TIMEOUT_S,
                        lambda: _tell_self(runtime, "node_replacement_late", node_id, dead),
                    )
        elif self._supervisor is not None:
            self._supervisor.replace_worker(worker["worker_id"])

    def node_replacement_late(self, node_id: str, dead_worker_id: str) -> None:
        """The replacement asked of node ``node_id``'s agent for ``dead_worker_id`` has
        not registered within ``START_TIMEOUT_S``: the creations and restarts waiting for
        it wait no more (they go elsewhere, or fail). If it registers later, it joins as
        any worker does."""
        if not self._node_replacement_over(node_id, dead_worker_id):
            return
        log.warning(
            "zactor head: node %s's replacement for worker %s did not register within %.0f s",
            node_id,
            dead_worker_id,
            cluster.START_TIMEOUT_S,
        )
        self._retry_awaiting()

    def _starting_on_nodes(self) -> dict[str, dict[str, float]]:
        """node id -> {``"<node> for <dead worker>"``: since when} of the replacements
        node agents were asked for, not registered yet."""
        return {
            node_id: {f"{node_id} for {dead}": since for dead, since in asked.items()}
            for node_id, asked in self._node_replacing.items()
        }

    def _node_replacement_over(self, node_id: str, dead: str | None = None) -> bool:
        """The replacement asked of node ``node_id``'s agent for worker ``dead`` (None:
        the one asked first, as one registered or did not start) is no longer waited
        for. False if it was not."""
        asked = self._node_replacing.get(node_id)
        if not asked:
            return False
        if dead is None:
            dead = min(asked, key=asked.__getitem__)
        if asked.pop(dead, None) is None:
            return False
        if not asked:
            del self._node_replacing[node_id]
        return True

    def _start_failed(self, worker_id: str, cause: str) -> None:
        """Replacement worker ``worker_id`` exited (``cause``: how) before it registered.

        It is not replaced in turn: a worker that cannot start would fail the
        same way again and again. Creations waiting for it now fail, with what
        happened and where the worker's output went; so do the restarts waiting
        for it, unless another worker can take them.
        """
        supervisor = self._supervisor
        proc = supervisor.processes.get(worker_id)
        pid = proc.pid if proc is not None else "?"
        self.worker_deaths += 1
        log.warning(
            "zactor head: replacement worker %s (pid %s) did not start: it %s",
            worker_id,
            pid,
            cause,
        )
        self._failed_start = (
            f"Replacement worker {worker_id} (pid {pid}) did not start: it {cause}; its "
            f"output {supervisor.output_hint()}. Fix what stops a worker from starting, then "
            "start the cluster again (zactor.shutdown() then zactor.init(), or `zactor stop` "
            "then `zactor start --head`)"
        )
        supervisor.forget_worker(worker_id)
        self._retry_awaiting()

    def kill_actor(self, actor_id: int, no_restart: bool = True) -> bool:
        """End an actor now (``zactor.kill``); with ``no_restart=False`` a restartable one
        comes back. Returns False if the actor was already gone."""
        info = self.actors.get(actor_id)
        if info is None:
            return False
        restarting = not no_restart and self._may_restart(info)
        reason = self._death_reason(info, "it was killed by zactor.kill()", restarting)
        if restarting:
            # Its worker's report of this end may arrive after the restart began (the
            # reply below can overtake it): it is not the end of the actor.
            info["state"], info["ending"] = "restarting", True
            self._save_actor(actor_id)
        if info["worker_id"] in self.workers:
            worker = worker_service_handle(info["address"])
            try:
                with self._waiting():
                    here = worker.kill.remote(actor_id, reason, restarting).result(
                        timeout=STATUS_TIMEOUT_S
                    )
            except GetTimeoutError:  # busy (a long __zactor_exit__?): the kill is on its way
                log.warning(
                    "zactor head: worker %s is slow to kill actor %s", info["worker_id"], actor_id
                )
                here = True
            if not here:
                info.pop("ending", None)  # it was not there: no report will come
        else:  # its worker died and its restart waits for a replacement worker
            info.pop("ending", None)
            if actor_id in self._awaiting_worker:
                self._awaiting_worker.remove(actor_id)
            if not restarting:
                self._forget_actor(actor_id)
        # Every process fails its calls in flight to the actor now, as ray.kill does,
        # rather than when the worker's answers come (a running call may take long).
        entry = [actor_id, reason, restarting, info["incarnation"]]
        self._notify_all("actor_died", info["address"], [entry], False)
        if restarting:
            self.placement.release(actor_id)
            self._restart(actor_id)
        return True

    def actor_failed(self, actor_id: int, cause: str, incarnation: int) -> None:
        """A worker reports that incarnation ``incarnation`` of an actor ended without
        choosing to (``sys.exit()`` in a method; ``cause`` says how): it restarts as
        after its process's death if ``max_restarts`` allows, and every process hears
        of it (see Recovery). A report on an incarnation already replaced (a kill
        that restarted it came first) changes nothing."""
        info = self.actors.get(actor_id)
        if info is None or info["incarnation"] != incarnation:
            return
        if (
            info["max_restarts"]
            and actor_id not in self.creations
            and info["state"] in ("starting", "alive")
        ):
            # Its creator's remember_creation, sent as it created it, is still on its way.
            self._failed_early[actor_id] = (cause, incarnation)
            return
        restarting = self._may_restart(info)  # not if it was being retired
        reason = self._death_reason(info, cause, restarting)
        if restarting:
            info["state"] = "restarting"
            self._save_actor(actor_id)
        else:
            self._forget_actor(actor_id)
            # Its worker answers later calls with this verdict, before anyone can make one
            # on hearing it (the replies it gave so far wait for the notice below).
            worker = worker_service_handle(info["address"])
            try:
                with self._waiting():
                    worker.kill.remote(actor_id, reason, False).result(timeout=STATUS_TIMEOUT_S)
            except Exception as exc:  # its worker died meanwhile: worker_died tells all
                log.warning("zactor head: could not settle the end of actor %s: %s", actor_id, exc)
        entry = [actor_id, reason, restarting, incarnation]
        self._notify_all("actor_died", info["address"], [entry], False)
        if restarting:
            self.placement.release(actor_id)
            self._restart(actor_id)

    def _may_restart(self, info: dict) -> bool:
        limit = info["max_restarts"]
        return (
            info["actor_id"] in self.creations
            and info["state"] not in ("retiring", "retire-when-started")
            and (limit == -1 or info["restarts"] < limit)
        )

    def _death_reason(
        self, info: dict, cause: str, restarting: bool, tail: str | None = None
    ) -> str:
        named = f", name={info['name']!r}" if info.get("name") else ""
        who = f"actor {info['class_name']}(id={info['actor_id']}{named})"
        limit = info["max_restarts"]
        if tail is not None:
            pass
        elif restarting:
            of = f" of {limit}" if limit > 0 else ""
            tail = f"restart {info['restarts'] + 1}{of} is under way"
        elif limit == 0:
            tail = "it will not restart (max_restarts=0)"
        else:
            tail = f"it will not restart: its {limit} restarts are used up"
        return f"{who} died: {cause}; {tail}"

    def _restart(self, actor_id: int) -> None:
        """Re-create a dead actor from its creation on a live worker (same id, next incarnation)."""
        info = self.actors.get(actor_id)
        if info is None:
            return
        try:
            worker_id = self._choose(info["class_name"], info["num_cpus"], info["resources"])
        except WorkerStartingError:
            # Tried again when a replacement registers, or fails to start.
            self._awaiting_worker.append(actor_id)
            return
        except ClusterError as exc:
            reason = self._death_reason(
                info, f"it could not be placed again ({exc})", False, "it will not restart"
            )
            self._forget_actor(actor_id)
            entry = [actor_id, reason, False, info["incarnation"]]
            self._notify_all("actor_died", info["address"], [entry], False)
            return
        self.placement.reserve(actor_id, worker_id, info["num_cpus"], info["resources"])
        worker = self.workers[worker_id]
        # Retired while it waited for a worker: it retires once started, as any would.
        state = "retire-when-started" if info["state"] == "retire-when-started" else "starting"
        info.update(address=worker["address"], worker_id=worker_id, state=state)
        info["restarts"] += 1
        info["incarnation"] += 1
        self.class_restarts[info["class_name"]] = self.class_restarts.get(info["class_name"], 0) + 1
        blob, creation = self.creations[actor_id]
        creation = dict(creation, incarnation=info["incarnation"])
        self._save_actor(actor_id)
        worker_service_handle(worker["address"]).recreate.tell(actor_id, blob, creation)

    def _retry_awaiting(self) -> None:
        """Try again the restarts that waited for a replacement worker."""
        waiting, self._awaiting_worker = self._awaiting_worker, []
        for actor_id in waiting:
            self._restart(actor_id)

    def _choose(self, class_name: str, num_cpus: float, resources: dict) -> str:
        """A live worker for an actor asking for ``num_cpus`` and ``resources``
        (:meth:`Placement.choose`).

        A worker whose process has exited, though the supervisor's watch thread
        has not reported it yet, is dealt with as dead first: an actor created
        just after a worker died must not go to it. Raises
        :class:`WorkerStartingError` when no live worker can take the actor but
        a replacement worker that could is starting, else ``ClusterError``
        when none can.
        """
        supervisor = self._supervisor
        while True:
            try:
                worker_id = self.placement.choose(class_name, num_cpus, resources)
            except ClusterError as exc:
                raise self._unplaceable(exc, class_name, num_cpus, resources) from None
            cause = supervisor.exit_cause(worker_id) if supervisor is not None else None
            if cause is None:
                return worker_id
            self._worker_gone(worker_id, cause, supervisor.died_at(worker_id))

    def _live_worker(self, worker_id: str) -> str:
        """``worker_id`` if it is a live worker, else ``ClusterError``; one whose process
        has exited, unreported yet, is dealt with as dead first (as in :meth:`_choose`)."""
        if worker_id in self.workers:
            supervisor = self._supervisor
            cause = supervisor.exit_cause(worker_id) if supervisor is not None else None
            if cause is None:
                return worker_id
            self._worker_gone(worker_id, cause, supervisor.died_at(worker_id))
        raise ClusterError(
            f"worker {worker_id} is not a live worker of this cluster (it died, or never "
            "joined): ask the head's cluster_info for the workers there are, and place the "
            "actor on one of them"
        )

    def _unplaceable(
        self, exc: ClusterError, class_name: str, num_cpus: float, resources: dict
    ) -> ClusterError:
        """The error for an actor no live worker can take now (``exc``, placement's).

        A demand a replacement worker could meet once it registers is told to
        wait (:class:`WorkerStartingError`); one it could not (a resource that
        is taken, or that no node has) fails now, as it would without deaths.
        """
        supervisor = self._supervisor
        # (node, its resources, {what starts there: since when}) of every machine where
        # a replacement worker starts: this one's supervisor's, and node agents'.
        machines = [
            (node_id, self.nodes[node_id]["resources"], starts)
            for node_id, starts in self._starting_on_nodes().items()
        ]
        if supervisor is not None and supervisor.replacing:
            machines.append((supervisor.node_id, supervisor.resources, dict(supervisor.replacing)))
        if not machines:
            if not self.workers and self._failed_start is not None:
                return ClusterError(f"{exc}. {self._failed_start}")
            return exc
        fitting = {
            worker: started
            for node_id, node_resources, replacing in machines
            if self.placement.fits_new_worker(node_id, node_resources, num_cpus, resources)
            for worker, started in replacing.items()
        }
        if not fitting:
            # Say what it asks for and what the nodes have: "no live worker" would
            # suggest that waiting for the replacement helps.
            return ClusterError(self.placement.explain(class_name, num_cpus, resources))
        now = time.monotonic()
        starting = ", ".join(
            f"{worker} (started {now - started:.1f} s ago)"
            for worker, started in sorted(fitting.items())
        )
        return WorkerStartingError(
            f"{exc}; a replacement worker is starting, waiting for it: {starting}"
        )

    def _notify_all(self, method: str, *args) -> None:
        """Tell every worker, every driver and this process's own calls (see Recovery)."""
        for worker in self.workers.values():
            getattr(worker_service_handle(worker["address"]), method).tell(*args)
        for address in self.drivers:
            getattr(ActorHandle(0, address, "Driver", DRIVER_TABLE.names), method).tell(*args)
        runtime = self._host.runtime
        getattr(runtime.recovery, method)(*args)
        runtime.flush()

    # -- drivers and `zactor status` --------------------------------------------------------

    def register_driver(self, address: str, pid: int, node_id: str) -> dict:
        """A driver joined the cluster from ``address`` (its inbox), as process ``pid``.

        ``node_id`` names the driver's machine (:func:`zactor.control.cluster.node_identity`).
        A driver on the head's machine is watched: if its process ends without
        ``driver_exited`` (killed, crashed), the head notices within about a
        second and ends the actors it owned. A driver on another machine sends
        heartbeats instead (:meth:`driver_heartbeat`), every ``heartbeat_s`` of
        the answer: one silent for the node timeout is dealt with as exited.
        Returns ``{"node_id": the node the driver is on, as the cluster names
        it, "heartbeat_s": seconds, or None for a watched driver}``.
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
        self._heard(self.drivers[address])
        if self._store is not None:
            self._store.put_driver(self.drivers[address])
        heartbeat_s = None if local else self.node_timeout_s / HEARTBEATS_PER_TIMEOUT
        return {"node_id": node, "heartbeat_s": heartbeat_s}

    def driver_heartbeat(self, address: str) -> None:
        """The driver at ``address``, on another machine, is alive."""
        driver = self.drivers.get(address)
        if driver is not None:
            self._heard(driver)

    def driver_exited(self, address: str, silent: bool = False) -> None:
        """The driver at ``address`` is gone (``zactor.shutdown()``, or its process died):
        end the non-detached actors it owned and drop the handles it held.

        ``silent``: the supervisor reports a driver on another machine whose
        heartbeats stopped; a heartbeat read since (a busy head reads late) keeps it.
        """
        driver = self.drivers.get(address)
        if driver is None:
            return
        if silent and silence(self, driver) <= self.node_timeout_s:
            return
        del self.drivers[address]
        if self._store is not None:
            self._store.delete_driver(address)
        self._owner_gone(address)

    def status(self) -> dict:
        """The cluster as ``zactor status`` shows it: head, nodes, workers, drivers, actors.

        Each actor row joins the registry (name, class, worker, state, restarts)
        with its worker's counters from ``WorkerService.stats()`` (calls,
        errors, queue depth, and service-time percentiles where the worker
        reports them). A worker that does not answer within
        :data:`STATUS_TIMEOUT_S` is shown with ``"error"`` and its actors
        without counters. See :func:`compose_status`.
        """
        registry = registry_snapshot(self)
        with self._waiting():
            stats = ask_workers(registry["workers"], STATUS_TIMEOUT_S)
        return compose_status(registry, stats)

    def _node_id(self) -> str:
        return self._supervisor.node_id if self._supervisor is not None else "node-0"

    # -- durability (zactor.control.head_store) ----------------------------------------------

    def _save_cluster(self) -> None:
        """Start the store of a new cluster: its id and first actor id."""
        if self._store is not None:
            self._store.set_cluster(self.cluster_id, self._next_actor_id)

    def _save_actor(self, actor_id: int, placed: bool = False) -> None:
        """Write actor ``actor_id`` to the store as the registry has it now (gone: deleted);
        ``placed``: it is new, with its name, durable key and the next actor id."""
        store = self._store
        if store is None:
            return
        info = self.actors.get(actor_id)
        if info is None:
            store.delete_actor(actor_id)  # its creation and ledger entry too
            return
        store.put_actor(info)
        self._save_refs(actor_id)
        if placed:
            store.set_next_actor_id(self._next_actor_id)
            key = (info["namespace"], info["name"])
            if info["name"] is not None and self.names.get(key) == actor_id:
                store.put_name(*key, actor_id)
            if self.durable_keys.get(info["checkpoint_key"]) == actor_id:
                store.put_durable_key(info["checkpoint_key"], actor_id)
            if info["name"] is not None or info["lifetime"] == "detached":
                # Found by name, or outliving its creator: on disk before the creator hears
                # of it (~0.1 ms). Others ride the next batched commit (lost if the head
                # dies within it: a worker that rejoins then ends them, see _rejoined).
                store.commit()

    def _save_refs(self, actor_id: int) -> None:
        """Write the ledger's entry of ``actor_id`` (none for a detached or ended actor)."""
        store = self._store
        if store is None:
            return
        holders = self.ledger.holders.get(actor_id)
        if holders is None:
            store.delete_refs(actor_id)
        else:
            store.put_refs(actor_id, holders, self.ledger.transit.get(actor_id, {}))

    def _save_node(self, node_id: str) -> None:
        if self._store is not None:
            self._store.put_node(self.nodes[node_id])

    def _save_worker(self, worker_id: str) -> None:
        store = self._store
        if store is not None:
            worker = self.workers.get(worker_id)
            if worker is None:
                store.delete_worker(worker_id)
            else:
                store.put_worker(worker)

    def recover(self, snapshot: HeadSnapshot, timeout: float = REJOIN_TIMEOUT_S) -> None:
        """Take over the registry a dead head left in the store (``zactor start --head
        --recover``): actors, names, durable keys, creations, the ledger, drivers, nodes
        and workers. Nodes and remote drivers get a node timeout to send a heartbeat.

        The workers the snapshot lists are asked to rejoin (``WorkerService.rejoin``
        with this head's :attr:`boot_id`); each answers with ``register_worker(...,
        hosted)``, the actors it still runs. Until every one has rejoined, or
        ``timeout`` seconds passed, creations wait (``place`` answers
        :class:`WorkerStartingError`, which callers ask again on). A worker that
        does not rejoin in time is dealt with as one that died: its actors restart
        under their ``max_restarts`` or end, and a replacement worker starts.
        """
        self.cluster_id = snapshot.cluster_id
        self._next_actor_id = snapshot.next_actor_id
        self.actors = snapshot.actors
        self.names = snapshot.names
        self.durable_keys = snapshot.durable_keys
        self.creations = snapshot.creations
        for actor_id, (holders, transit) in snapshot.refs.items():
            if actor_id in self.actors:
                self.ledger.holders[actor_id] = holders
                if transit:
                    self.ledger.transit[actor_id] = transit
        # The dead head's clock readings mean nothing here: heard now, as at joining.
        self.drivers = snapshot.drivers  # the supervisor watches the local ones' pids again
        for driver in self.drivers.values():
            self._heard(driver)  # a remote one has the node timeout to be heard
        self.nodes = snapshot.nodes
        for node in self.nodes.values():
            self._heard(node)  # as long to send one as at joining
        for worker_id, worker in snapshot.workers.items():
            self.workers[worker_id] = worker
            self.placement.add_worker(worker_id, worker["node_id"], worker["resources"])
            if self._supervisor is not None and worker["node_id"] not in self.nodes:
                # This machine's: watched by pid (a node's agent watches its own).
                self._supervisor.adopt(worker_id, worker["pid"], worker.get("start_time"))
        for actor_id, info in self.actors.items():
            if info["worker_id"] in self.workers and not info.get("task_runner"):
                self.placement.reserve(
                    actor_id, info["worker_id"], info["num_cpus"], info["resources"]
                )
        self._rejoining = dict(snapshot.workers)
        self._rejoin_timeout = timeout
        runtime = self._host.runtime
        for worker in self._rejoining.values():
            worker_service_handle(worker["address"]).rejoin.tell(self.boot_id, os.getpid())
        boot_id = self.boot_id
        runtime.call_later(timeout, lambda: _tell_self(runtime, "rejoin_deadline", boot_id))
        runtime.flush()

    def _recovering(self) -> str:
        waiting = ", ".join(sorted(self._rejoining))
        return (
            f"the head restarted and is waiting up to {self._rejoin_timeout:.0f} s for its "
            f"workers to rejoin ({waiting}); creating actors waits for them"
        )

    def _rejoined(
        self, worker_id: str, address: str, pid: int, node_id: str, resources: dict, hosted: list
    ) -> None:
        """A worker rejoined this recovered head, still running the actors ``hosted``."""
        if self._rejoining.pop(worker_id, None) is None:
            if worker_id not in self.workers:  # too late: its actors were dealt with as dead
                worker_service_handle(address).shutdown.tell()
            return
        here = {actor_id: incarnation for actor_id, incarnation in hosted}
        # An id a lost write never recorded must not be given to a new actor.
        self._next_actor_id = max(self._next_actor_id, max(here, default=0) + 1)
        for actor_id in here:
            if actor_id not in self.actors:  # placed in the moment before the head died
                reason = (
                    f"actor {actor_id} on worker {worker_id} was created just before the head "
                    "died, and the restarted head has no record of it: create it again"
                )
                worker_service_handle(address).kill.tell(actor_id, reason, False)
        for actor_id, info in list(self.actors.items()):
            if info["worker_id"] == worker_id and actor_id not in here:
                cause = f"it was gone from worker {worker_id} when the restarted head looked"
                self.actor_failed(actor_id, cause, info["incarnation"])
        if not self._rejoining:
            self._retry_awaiting()

    def rejoin_deadline(self, boot_id: str) -> None:
        """The time a recovered head gives its workers to rejoin is up: those that did not
        are dealt with as dead (their actors restart or end, replacements start)."""
        if boot_id != self.boot_id:
            return
        late, self._rejoining = self._rejoining, {}
        for worker_id in sorted(late):
            cause = (
                f"did not rejoin the restarted head within {self._rejoin_timeout:.0f} s "
                "(it died while the head was down)"
            )
            self._worker_gone(worker_id, cause, None)


def _tell_self(runtime, method: str, *args) -> None:
    """Send the head process's own Head ``method(*args)`` through its inbox (from a timer:
    the registry belongs to the thread running the head's calls)."""
    getattr(head_handle(runtime), method).tell(*args)
    runtime.flush()


def silence(head: Head, entry: dict) -> float:
    """Seconds since a node's or remote driver's last heartbeat was read by ``head``,
    less the time the head's thread was waiting on workers meanwhile (its heartbeats
    queued unread): a head held up by a stuck worker must not declare healthy nodes
    dead. Callable from any thread of the head process (the supervisor's watch)."""
    quiet = time.monotonic() - entry["last_heartbeat"]
    return quiet - (head._stalled() - entry.get("stall_mark", 0.0))


# -- reading the registry off the head's thread -----------------------------------------------


def registry_snapshot(head: Head) -> dict:
    """The head's registry now, as copies: what :func:`compose_status` joins.

    Safe from any thread of the head process (the metrics server's): the
    thread running the head's calls changes the registry meanwhile, so every
    dict is copied in one step (a C-level copy, atomic under the GIL, as the
    supervisor's watch thread does) and only the copies are read.
    ``{"head", "workers", "actors", "drivers", "nodes"}`` (node agents) plus the event counts
    ``created``, ``worker_deaths`` and ``class_restarts``.
    """
    placed = dict(head.placement.workers)
    workers = []
    for worker_id, info in dict(head.workers).items():
        row = dict(info)
        slot = placed.get(worker_id)
        row["actors"] = slot["actors"] if slot is not None else 0
        workers.append(row)
    workers.sort(key=lambda w: w["worker_id"])
    runtime = head._host.runtime if head._host is not None else None
    supervisor = head._supervisor
    return {
        "head": {
            "address": runtime.address if runtime is not None else None,
            "pid": os.getpid(),
            "node_id": head._node_id(),
            "session_dir": supervisor.session_dir if supervisor is not None else None,
            "started_at": supervisor.started_at if supervisor is not None else None,
            "metrics_url": head.metrics_url,
        },
        "workers": workers,
        "actors": {actor_id: dict(info) for actor_id, info in dict(head.actors).items()},
        "drivers": [dict(info) for info in dict(head.drivers).values()],
        "nodes": [dict(info) for info in dict(head.nodes).values()],
        "created": head.created,
        "worker_deaths": head.worker_deaths,
        "class_restarts": dict(head.class_restarts),
    }


def ask_workers(workers: list[dict], timeout: float) -> dict[str, dict]:
    """Each worker's ``WorkerService.stats()``, by worker id, asked of all at once.

    A worker that does not answer within ``timeout`` seconds (stuck, dead,
    unreachable) gets ``{"error": "what went wrong"}`` instead. Callable from
    any thread of a process with a runtime.
    """
    asked: dict = {}
    for worker in workers:
        try:
            asked[worker["worker_id"]] = worker_service_handle(worker["address"]).stats.remote()
        except Exception as exc:  # reported in the worker's row
            asked[worker["worker_id"]] = exc
    deadline = time.monotonic() + timeout
    stats: dict[str, dict] = {}
    for worker_id, future in asked.items():
        try:
            if isinstance(future, Exception):
                raise future
            stats[worker_id] = future.result(timeout=max(0.01, deadline - time.monotonic()))
        except Exception as exc:  # a stuck or dead worker: say so in its row
            stats[worker_id] = {"error": f"{type(exc).__name__}: {exc}"}
    return stats


#: What a worker's row takes from its ``stats()``, beside the registry's fields.
_WORKER_FIGURES = ("cpu_seconds", "rss_bytes")


def compose_status(registry: dict, stats: dict[str, dict]) -> dict:
    """:meth:`Head.status`'s report from a :func:`registry_snapshot` and the workers'
    :func:`ask_workers` answers: ``{"head", "nodes", "workers", "drivers", "actors"}``.

    An actor row is its registry fields with its worker's counters added; a
    worker row has ``dropped``, ``cpu_seconds`` and ``rss_bytes`` from its
    stats, or ``error`` when it did not answer.
    """
    counters = {
        row["actor_id"]: row
        for worker_stats in stats.values()
        for row in worker_stats.get("actors", ())
    }
    actors = []
    for actor_id, info in sorted(registry["actors"].items()):
        row = {
            "actor_id": actor_id,
            "name": info.get("name"),
            "namespace": info.get("namespace"),
            "class_name": info.get("class_name"),
            "worker_id": info.get("worker_id"),
            "state": info.get("state"),
            "lifetime": info.get("lifetime"),
            "owner": info.get("owner"),
            "restarts": info.get("restarts", 0),
        }
        for key, value in counters.get(actor_id, {}).items():
            row.setdefault(key, value)
        actors.append(row)
    worker_rows = []
    for worker in registry["workers"]:
        worker_stats = stats.get(worker["worker_id"], {})
        row = {k: v for k, v in worker.items() if k != "start_time"}
        row["dropped"] = worker_stats.get("dropped", {})
        for key in _WORKER_FIGURES:
            row[key] = worker_stats.get(key)
        if "error" in worker_stats:
            row["error"] = worker_stats["error"]
        worker_rows.append(row)
    drivers = [{k: v for k, v in info.items() if k != "start_time"} for info in registry["drivers"]]
    head = registry["head"]
    head_node = head["node_id"]
    agents = {node["node_id"]: node for node in registry.get("nodes", ())}
    node_ids = [head_node, *agents]
    for row in worker_rows + drivers:
        if row["node_id"] not in node_ids:
            node_ids.append(row["node_id"])
    now = time.monotonic()
    nodes = []
    for node_id in node_ids:
        agent = agents.get(node_id, {})
        row = {
            "node_id": node_id,
            "host": socket.gethostname() if node_id == head_node else agent.get("host"),
            "head": node_id == head_node,
            "address": head["address"] if node_id == head_node else agent.get("address"),
            "state": agent.get("state", "alive"),
            "resources": agent.get("resources"),
            "workers": sum(1 for w in worker_rows if w["node_id"] == node_id),
            "drivers": sum(1 for d in drivers if d["node_id"] == node_id),
        }
        if agent:
            row["pid"] = agent.get("pid")
            row["heartbeat_at"] = agent.get("heartbeat_at")
            row["heartbeat_age_s"] = round(now - agent["last_heartbeat"], 3)
        nodes.append(row)
    return {
        "head": dict(head),
        "nodes": nodes,
        "workers": worker_rows,
        "drivers": drivers,
        "actors": actors,
    }
