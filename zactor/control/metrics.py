"""The head's metrics: the cluster's figures as Prometheus metrics and as the status
page's data (docs/observability.md).

:class:`ClusterMetrics` collects on the thread that asks (the HTTP server's),
never on the thread running the head's calls: it copies the registry
(:func:`~zactor.control.head.registry_snapshot`), asks every worker for the
``stats()`` that ``zactor status`` shows (:func:`~zactor.control.head.ask_workers`),
and joins them (:func:`~zactor.control.head.compose_status`). The workers'
figures are the counters they keep anyway, read when asked, so collecting adds
nothing to the call path. One collection serves every request for
:data:`MAX_AGE_S`, so a page left open or several scrapers cost the workers
one ``stats()`` each that often at most.

Counters stay monotonic although the workers' start again at zero for each
new incarnation of an actor, and vanish when an actor ends or a worker dies
(:class:`Totals`). Per-actor series are capped (:data:`MAX_ACTOR_SERIES`):
the first actors to come have them while they live; the rest count only in
their class's series, and ``zactor_actor_series_capped`` says how many.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Hashable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.utils import floatToGoString

from zactor.control.head import ask_workers, compose_status, registry_snapshot
from zactor.worker.stats import SERVICE_BUCKETS

if TYPE_CHECKING:
    from zactor.control.head import Head

#: How many live actors get series of their own (see the module's docstring), unless
#: the head is told otherwise (``zactor start --head --metrics-max-actors N``).
MAX_ACTOR_SERIES = 100
#: How many actors the status page lists (the first by id); it says how many it left out.
PAGE_MAX_ACTORS = 1000
#: How long one collection serves every request (seconds).
MAX_AGE_S = 1.0
#: How long a collection waits for a worker's ``stats()`` before showing it as not
#: answering (seconds): well within Prometheus's default scrape timeout of 10 s.
STATS_TIMEOUT_S = 2.0

# The layout of the vectors :class:`Totals` adds up for the calls of an actor.
CALLS, ERRORS, SERVICE_SUM, BUCKET0 = range(4)
_WIDTH = BUCKET0 + len(SERVICE_BUCKETS) + 1
_LE = [floatToGoString(b) for b in SERVICE_BUCKETS] + ["+Inf"]


class Totals:
    """Running totals of counters that start again from zero, kept from going down.

    A *source* (here one incarnation of one actor on one worker) is observed
    with its current values and the *groups* it adds to (its actor, class,
    worker, node). When a source is gone, or starts again from zero, its last
    values stay in its groups' totals: a group's total never goes down. What a
    source counted after its last observation is not seen.
    """

    def __init__(self, width: int) -> None:
        self.width = width
        self._last: dict[Hashable, tuple[tuple, list]] = {}
        self._retired: dict[Hashable, list] = {}

    def observe(self, source: Hashable, groups: tuple, values: list) -> None:
        """``source`` counts ``values`` now and adds to ``groups``."""
        last = self._last.get(source)
        if last is not None and any(new < old for new, old in zip(values, last[1])):
            self.retire(source)  # it started again from zero
        self._last[source] = (groups, list(values))

    def retire(self, source: Hashable) -> None:
        """``source`` is gone: its last values stay in its groups."""
        groups, values = self._last.pop(source)
        for group in groups:
            _add(self._retired.setdefault(group, [0] * self.width), values)

    def sources(self) -> list:
        """The sources observed and not retired."""
        return list(self._last)

    def forget_groups(self, gone) -> None:
        """Drop the totals of the groups for which ``gone(group)`` is true (an actor or a
        worker that no longer exists: nobody asks for its total again)."""
        for group in [g for g in self._retired if gone(g)]:
            del self._retired[group]

    def totals(self) -> dict[Hashable, list]:
        """Each group's total: its retired sources' last values plus its live ones'."""
        out = {group: list(values) for group, values in self._retired.items()}
        for groups, values in self._last.values():
            for group in groups:
                _add(out.setdefault(group, [0] * self.width), values)
        return out


def _add(into: list, values: list) -> None:
    for i, value in enumerate(values):
        into[i] += value


@dataclass
class Snapshot:
    """One collection: :meth:`Head.status`'s report plus monotonic totals and rates."""

    #: When it was taken (``time.time()``) and, for rates, ``time.monotonic()``.
    taken_at: float
    monotonic: float
    #: :func:`compose_status`'s report (head, nodes, workers, drivers, actors).
    status: dict
    #: Call totals (vectors laid out as :data:`CALLS`...) by group: ``("actor", id)``,
    #: ``("class", name)``, ``("worker", id)``, ``("node", id)``.
    calls: dict
    #: CPU seconds by group ``("worker", id)`` and ``("node", id)`` (``[seconds]``).
    cpu: dict
    #: Per second since the previous collection, by group: ``calls``, ``cpu`` (a
    #: fraction of one CPU); and ``created`` for the cluster. Empty the first time.
    rates: dict
    #: Actor ids that have series of their own (see :data:`MAX_ACTOR_SERIES`).
    series: list
    created: int
    worker_deaths: int
    class_restarts: dict
    #: Worker ids that answered ``stats()`` this time.
    answered: set = field(default_factory=set)


class ClusterMetrics:
    """Collects the cluster's figures for the head's HTTP server: Prometheus metrics
    (:attr:`registry`, this object being its collector) and the status page's data
    (:meth:`page`). Thread-safe: one collection at a time, shared by the requests
    of the next :data:`MAX_AGE_S` seconds.
    """

    def __init__(
        self,
        head: Head,
        *,
        max_actor_series: int = MAX_ACTOR_SERIES,
        stats_timeout: float = STATS_TIMEOUT_S,
    ) -> None:
        if max_actor_series < 0:
            raise ValueError(
                f"the cap on per-actor metric series must be 0 or more, got {max_actor_series}"
            )
        self._head = head
        self.max_actor_series = max_actor_series
        self._stats_timeout = stats_timeout
        self._lock = threading.Lock()
        self._calls = Totals(_WIDTH)
        self._cpu = Totals(1)
        self._series: dict[int, None] = {}  # actor ids with series, in the order admitted
        self._latest: Snapshot | None = None
        #: The Prometheus registry /metrics serves: this collector and the head
        #: process's own figures (``process_cpu_seconds_total``, ...).
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        ProcessCollector(registry=self.registry)

    # -- collecting -------------------------------------------------------------------------

    def snapshot(self, max_age: float = MAX_AGE_S) -> Snapshot:
        """The latest collection, or a new one if that is older than ``max_age`` seconds."""
        with self._lock:
            latest = self._latest
            if latest is None or time.monotonic() - latest.monotonic >= max_age:
                latest = self._latest = self._collect(latest)
            return latest

    def _collect(self, previous: Snapshot | None) -> Snapshot:
        registry = registry_snapshot(self._head)
        stats = ask_workers(registry["workers"], self._stats_timeout)
        now, mono = time.time(), time.monotonic()
        status = compose_status(registry, stats)
        actors = registry["actors"]
        node_of = {w["worker_id"]: w["node_id"] for w in registry["workers"]}
        answered = {wid for wid, s in stats.items() if "error" not in s}
        for worker_id in answered:
            node = node_of[worker_id]
            seen = set()
            for row in stats[worker_id].get("actors", ()):
                source = (worker_id, row["actor_id"], row.get("incarnation", 0))
                seen.add(source)
                groups = (
                    ("actor", row["actor_id"]),
                    ("class", row["class_name"]),
                    ("worker", worker_id),
                    ("node", node),
                )
                self._calls.observe(source, groups, _call_vector(row))
            for source in self._calls.sources():
                if source[0] == worker_id and source not in seen:
                    self._calls.retire(source)  # ended, or moved on
            self._cpu.observe(
                worker_id,
                (("worker", worker_id), ("node", node)),
                [stats[worker_id].get("cpu_seconds") or 0.0],
            )
        for source in self._calls.sources():
            if source[0] not in node_of:  # its worker died
                self._calls.retire(source)
        for source in self._cpu.sources():
            if source not in node_of:
                self._cpu.retire(source)

        def gone(group) -> bool:
            kind, key = group
            return (kind == "actor" and key not in actors) or (
                kind == "worker" and key not in node_of
            )

        self._calls.forget_groups(gone)
        self._cpu.forget_groups(gone)
        calls, cpu = self._calls.totals(), self._cpu.totals()
        for actor_id in [a for a in self._series if a not in actors]:
            del self._series[actor_id]
        for actor_id in sorted(actors):
            if len(self._series) >= self.max_actor_series:
                break
            self._series.setdefault(actor_id, None)
        snapshot = Snapshot(
            taken_at=now,
            monotonic=mono,
            status=status,
            calls=calls,
            cpu=cpu,
            rates={},
            series=list(self._series),
            created=registry["created"],
            worker_deaths=registry["worker_deaths"],
            class_restarts=registry["class_restarts"],
            answered=answered,
        )
        if previous is not None:
            snapshot.rates = _rates(previous, snapshot)
        return snapshot

    # -- Prometheus -------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """The metric families of the latest collection (Prometheus's collector protocol;
        the names and labels are listed in docs/observability.md)."""
        snap = self.snapshot()
        status = snap.status
        actors = status["actors"]
        states: dict[str, int] = {}
        classes: dict[str, dict] = {}
        for row in actors:
            states[row["state"]] = states.get(row["state"], 0) + 1
            entry = classes.setdefault(row["class_name"], {"actors": 0, "queued": 0})
            entry["actors"] += 1
            entry["queued"] += row.get("queued") or 0
        for name in snap.class_restarts:
            classes.setdefault(name, {"actors": 0, "queued": 0})
        for group in snap.calls:
            if group[0] == "class":
                classes.setdefault(group[1], {"actors": 0, "queued": 0})

        # The cluster.
        yield _gauge("zactor_actors_alive", "Actors in state alive.", states.get("alive", 0))
        by_state = GaugeMetricFamily(
            "zactor_actors", "Actors the head knows, by state.", labels=["state"]
        )
        for state, count in sorted(states.items()):
            by_state.add_metric([str(state)], count)
        yield by_state
        yield CounterMetricFamily(
            "zactor_actors_created", "Actors created (placed by the head).", value=snap.created
        )
        yield CounterMetricFamily(
            "zactor_worker_deaths",
            "Worker processes that exited while the cluster ran.",
            value=snap.worker_deaths,
        )
        yield _gauge("zactor_workers", "Worker processes registered.", len(status["workers"]))
        yield _gauge("zactor_drivers", "Drivers connected.", len(status["drivers"]))
        yield _gauge(
            "zactor_actor_series_capped",
            "Actors without series of their own: past the cap on per-actor series "
            "(counted in their class's series).",
            max(0, len(actors) - len(snap.series)),
        )

        # Actor classes.
        label = ["class"]
        class_actors = GaugeMetricFamily(
            "zactor_class_actors", "Actors of the class.", labels=label
        )
        class_queued = GaugeMetricFamily(
            "zactor_class_queued",
            "Calls received by the class's actors and not started yet.",
            labels=label,
        )
        class_restarts = CounterMetricFamily(
            "zactor_class_restarts", "Restarts of the class's actors.", labels=label
        )
        for name, entry in sorted(classes.items()):
            class_actors.add_metric([name], entry["actors"])
            class_queued.add_metric([name], entry["queued"])
            class_restarts.add_metric([name], snap.class_restarts.get(name, 0))
        yield class_actors
        yield class_queued
        yield class_restarts
        yield from _call_families(
            "zactor_class",
            "the class's actors",
            label,
            [([name], snap.calls.get(("class", name))) for name in sorted(classes)],
        )

        # Actors with series of their own.
        label = ["actor_id", "name", "class"]
        rows = {row["actor_id"]: row for row in actors}
        mine = [rows[a] for a in snap.series if a in rows]
        info = GaugeMetricFamily(
            "zactor_actor_info",
            "An actor's namespace, worker and state (value 1).",
            labels=[*label, "namespace", "worker", "state"],
        )
        queued = GaugeMetricFamily(
            "zactor_actor_queued", "Calls received and not started yet.", labels=label
        )
        restarts = CounterMetricFamily("zactor_actor_restarts", "Restarts.", labels=label)
        for row in mine:
            labels = _actor_labels(row)
            info.add_metric(
                [*labels, row.get("namespace") or "", row.get("worker_id") or "", row["state"]], 1
            )
            if row.get("queued") is not None:  # none while its worker does not answer
                queued.add_metric(labels, row["queued"])
            restarts.add_metric(labels, row.get("restarts", 0))
        yield info
        yield queued
        yield restarts
        yield from _call_families(
            "zactor_actor",
            "the actor (every incarnation)",
            label,
            [(_actor_labels(row), snap.calls.get(("actor", row["actor_id"]))) for row in mine],
        )

        # Workers and nodes.
        label = ["worker", "node"]
        up = GaugeMetricFamily(
            "zactor_worker_up",
            "1 if the worker answered for this collection, else 0.",
            labels=label,
        )
        worker_cpu = CounterMetricFamily(
            "zactor_worker_cpu_seconds", "CPU time of the worker process.", labels=label
        )
        worker_rss = GaugeMetricFamily(
            "zactor_worker_rss_bytes", "Resident memory of the worker process.", labels=label
        )
        worker_calls = CounterMetricFamily(
            "zactor_worker_calls", "Calls served by the worker's actors.", labels=label
        )
        worker_actors = GaugeMetricFamily(
            "zactor_worker_actors", "Actors placed on the worker.", labels=label
        )
        node_rss: dict[str, int] = {}
        for row in status["workers"]:
            wid, labels = row["worker_id"], [row["worker_id"], row["node_id"]]
            up.add_metric(labels, 1 if wid in snap.answered else 0)
            worker_actors.add_metric(labels, row.get("actors") or 0)
            worker_calls.add_metric(labels, _value(snap.calls, ("worker", wid), CALLS))
            if ("worker", wid) in snap.cpu:
                worker_cpu.add_metric(labels, snap.cpu[("worker", wid)][0])
            if row.get("rss_bytes") is not None:
                worker_rss.add_metric(labels, row["rss_bytes"])
                node_rss[row["node_id"]] = node_rss.get(row["node_id"], 0) + row["rss_bytes"]
        yield from (up, worker_cpu, worker_rss, worker_calls, worker_actors)
        label = ["node"]
        node_workers = GaugeMetricFamily(
            "zactor_node_workers", "Worker processes on the node.", labels=label
        )
        node_cpu = CounterMetricFamily(
            "zactor_node_cpu_seconds", "CPU time of the node's worker processes.", labels=label
        )
        node_rss_family = GaugeMetricFamily(
            "zactor_node_rss_bytes",
            "Resident memory of the node's worker processes.",
            labels=label,
        )
        node_calls = CounterMetricFamily(
            "zactor_node_calls", "Calls served by the node's actors.", labels=label
        )
        node_up = GaugeMetricFamily(
            "zactor_node_up",
            "1 while the node is alive (the head's, or an agent whose heartbeats arrive), "
            "0 once it was declared dead or stopped.",
            labels=label,
        )
        node_heartbeat = GaugeMetricFamily(
            "zactor_node_heartbeat_age_seconds",
            "Seconds since the node agent's last heartbeat reached the head.",
            labels=label,
        )
        for row in status["nodes"]:
            node = row["node_id"]
            node_up.add_metric([node], 1 if row.get("state", "alive") == "alive" else 0)
            if row.get("heartbeat_age_s") is not None:
                node_heartbeat.add_metric([node], row["heartbeat_age_s"])
            node_workers.add_metric([node], row["workers"])
            node_cpu.add_metric([node], _value(snap.cpu, ("node", node), 0))
            node_calls.add_metric([node], _value(snap.calls, ("node", node), CALLS))
            if node in node_rss:
                node_rss_family.add_metric([node], node_rss[node])
        yield from (node_up, node_heartbeat, node_workers, node_cpu, node_rss_family, node_calls)

    # -- the status page --------------------------------------------------------------------

    def page(self) -> dict:
        """The status page's data (``/status.json``): the cluster's figures, its nodes,
        workers and first :data:`PAGE_MAX_ACTORS` actors, with rates per second."""
        snap = self.snapshot()
        status, rates = snap.status, snap.rates
        actors = status["actors"]
        workers = [
            {
                "worker_id": w["worker_id"],
                "node_id": w["node_id"],
                "pid": w.get("pid"),
                "address": w.get("address"),
                "actors": w.get("actors"),
                "error": w.get("error"),
                "rss_bytes": w.get("rss_bytes"),
                "calls": _value(snap.calls, ("worker", w["worker_id"]), CALLS),
                **_rate_fields(rates.get(("worker", w["worker_id"]))),
            }
            for w in status["workers"]
        ]
        nodes = []
        for n in status["nodes"]:
            mine = [w for w in workers if w["node_id"] == n["node_id"]]
            rss = [w["rss_bytes"] for w in mine if w["rss_bytes"] is not None]
            nodes.append(
                dict(
                    n,
                    rss_bytes=sum(rss) if rss else None,
                    calls=_value(snap.calls, ("node", n["node_id"]), CALLS),
                    **_rate_fields(rates.get(("node", n["node_id"]))),
                )
            )
        shown = [
            {
                "actor_id": a["actor_id"],
                "name": a.get("name"),
                "namespace": a.get("namespace"),
                "class_name": a.get("class_name"),
                "worker_id": a.get("worker_id"),
                "state": a.get("state"),
                "calls": _value(snap.calls, ("actor", a["actor_id"]), CALLS),
                "errors": _value(snap.calls, ("actor", a["actor_id"]), ERRORS),
                "queued": a.get("queued"),
                "p50_us": a.get("p50_us"),
                "p99_us": a.get("p99_us"),
                "restarts": a.get("restarts", 0),
            }
            for a in actors[:PAGE_MAX_ACTORS]
        ]
        cluster_rate = rates.get("cluster", {})
        return {
            "taken_at": snap.taken_at,
            "head": status["head"],
            "cluster": {
                "actors": len(actors),
                "actors_alive": sum(1 for a in actors if a.get("state") == "alive"),
                "workers": len(workers),
                "workers_answering": len(snap.answered),
                "drivers": len(status["drivers"]),
                "created": snap.created,
                "created_per_s": cluster_rate.get("created"),
                "worker_deaths": snap.worker_deaths,
                "calls_per_s": cluster_rate.get("calls"),
            },
            "nodes": nodes,
            "workers": workers,
            "actors": shown,
            "actors_not_shown": len(actors) - len(shown),
        }


def _call_vector(row: dict) -> list:
    """An actor's stats row as a :class:`Totals` vector (:data:`CALLS`, ...)."""
    service = row.get("service") or {}
    counts = service.get("counts") or [0] * (len(SERVICE_BUCKETS) + 1)
    return [
        row.get("calls") or 0,
        row.get("errors") or 0,
        service.get("sum") or 0.0,
        *counts,
    ]


def _rates(previous: Snapshot, snap: Snapshot) -> dict:
    """Per second between two collections: calls and CPU of workers and nodes (groups
    present in both), creations and calls of the cluster."""
    elapsed = snap.monotonic - previous.monotonic
    if elapsed <= 0:
        return {}
    rates: dict = {}
    for group, values in snap.calls.items():
        if group[0] in ("worker", "node") and group in previous.calls:
            delta = values[CALLS] - previous.calls[group][CALLS]
            rates.setdefault(group, {})["calls"] = max(0, delta) / elapsed
    for group, values in snap.cpu.items():
        if group in previous.cpu:
            rates.setdefault(group, {})["cpu"] = (
                max(0.0, values[0] - previous.cpu[group][0]) / elapsed
            )
    node_calls = [r["calls"] for g, r in rates.items() if g[0] == "node" and "calls" in r]
    rates["cluster"] = {
        "created": max(0, snap.created - previous.created) / elapsed,
        "calls": sum(node_calls) if node_calls else None,
    }
    return rates


def _rate_fields(rate: dict | None) -> dict:
    rate = rate or {}
    cpu = rate.get("cpu")
    return {
        "calls_per_s": rate.get("calls"),
        "cpu_percent": None if cpu is None else 100.0 * cpu,
    }


def _value(totals: dict, group: tuple, index: int):
    values = totals.get(group)
    return values[index] if values is not None else 0


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _actor_labels(row: dict) -> list[str]:
    return [str(row["actor_id"]), row.get("name") or "", row.get("class_name") or ""]


def _call_families(prefix: str, whose: str, label: list[str], rows: list) -> Iterator[Metric]:
    """The calls, errors and service-time histogram of ``rows``: ``(labels, vector)``
    pairs (the vector None for one with nothing counted yet)."""
    calls = CounterMetricFamily(f"{prefix}_calls", f"Calls served by {whose}.", labels=label)
    errors = CounterMetricFamily(
        f"{prefix}_errors", f"Calls and tells of {whose} that raised.", labels=label
    )
    service = HistogramMetricFamily(
        f"{prefix}_service_seconds",
        f"Service time of the timed calls of {whose}: every call of an actor's first 64, then "
        "one in 16 (every call of async actors and of actors with a checkpoint).",
        labels=label,
    )
    for labels, vector in rows:
        vector = vector or [0] * _WIDTH
        calls.add_metric(labels, vector[CALLS])
        errors.add_metric(labels, vector[ERRORS])
        buckets, running = [], 0
        for le, count in zip(_LE, vector[BUCKET0:]):
            running += count
            buckets.append((le, running))
        service.add_metric(labels, buckets, sum_value=vector[SERVICE_SUM])
    yield from (calls, errors, service)
