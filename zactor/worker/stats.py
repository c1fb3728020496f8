"""Per-actor counters and service-time percentiles, for ``WorkerService.stats``.

The host times a sample of each actor's calls (:data:`SAMPLE_WARMUP`,
:data:`SAMPLE_EVERY`) into the actor's ring of :data:`SAMPLE_RING` service
times, and counts them (``HostedActor.sampled``); :func:`_actor_stats` turns
an actor's counters and ring into its row of ``zactor status``, folding the
samples taken since the last time into the actor's :class:`ServiceHistogram`.
Everything here runs when ``stats()`` is asked, never on the call path.
:func:`process_figures` adds the worker process's CPU time and memory.
"""

from __future__ import annotations

import bisect
import mmap
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zactor.worker.hosted import HostedActor

#: Service times each actor keeps for the percentiles of its stats (:func:`_actor_stats`).
SAMPLE_RING = 256
#: An actor's first calls are all timed, so that a few calls already give percentiles ...
SAMPLE_WARMUP = 64
#: ... and after those one call in this many, so timing costs the hot path next to nothing.
SAMPLE_EVERY = 16


#: Upper bounds (seconds) of the service-time histogram's buckets: 1, 2.5 and 5 of
#: each decade from 1 µs to 10 s (then +Inf), since calls take from a microsecond
#: (a counter) to seconds.
SERVICE_BUCKETS = (
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3,
    1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class ServiceHistogram:
    """Bucket counts of an actor's timed calls (the samples of its ring), built up by
    :meth:`fold` each time ``stats()`` runs.

    ``counts[i]`` counts the samples of at most ``SERVICE_BUCKETS[i]`` seconds
    and above the bucket before (the last one: above 10 s); ``total`` is their
    sum in seconds and ``folded`` how many samples are in.
    """

    __slots__ = ("counts", "total", "folded")

    def __init__(self) -> None:
        self.counts = [0] * (len(SERVICE_BUCKETS) + 1)
        self.total = 0.0
        self.folded = 0

    def fold(self, ring: list, sampled: int) -> None:
        """Add the samples taken since the last fold: the newest ``sampled - folded``
        of ``ring`` (in the order taken), ``sampled`` being the actor's count of them.

        When more were taken than the ring holds, the ring's samples stand for
        all of them (each counts ``new / len(ring)`` times, rounded so that the
        counts add up to ``new``): the histogram's count stays the number of
        timed calls, and its shape that of the latest ones.
        """
        new = sampled - self.folded
        if new <= 0 or not ring:
            return
        recent = ring[-new:] if new < len(ring) else ring
        counts = [0] * len(self.counts)
        for seconds in recent:
            counts[bisect.bisect_left(SERVICE_BUCKETS, seconds)] += 1
        weight = new / len(recent)
        if len(recent) < new:  # largest remainders, so the scaled counts add up to ``new``
            scaled = [c * weight for c in counts]
            counts = [int(x) for x in scaled]
            by_remainder = sorted(range(len(scaled)), key=lambda i: counts[i] - scaled[i])
            for i in by_remainder[: new - sum(counts)]:
                counts[i] += 1
        for i, count in enumerate(counts):
            self.counts[i] += count
        self.total += sum(recent) * weight
        self.folded = sampled

    def as_dict(self) -> dict:
        """``{"counts": [...], "sum": seconds, "count": n}``, as ``stats()`` reports it."""
        return {"counts": list(self.counts), "sum": self.total, "count": sum(self.counts)}


def process_figures() -> dict:
    """This process's ``cpu_seconds`` (user and system time so far) and ``rss_bytes``
    (resident memory now; None where ``/proc`` is missing, as on macOS)."""
    times = os.times()
    return {"cpu_seconds": times.user + times.system, "rss_bytes": _rss_bytes()}


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * mmap.PAGESIZE
    except (OSError, ValueError, IndexError):
        return None


def _actor_stats(actor: HostedActor, queued: int) -> dict:
    # Counted before the ring is copied: a sample taken in between is folded next time.
    sampled = actor.sampled
    ring = list(actor.samples)  # copied in one step: other threads append meanwhile
    if actor.service is None:
        actor.service = ServiceHistogram()
    actor.service.fold(ring, sampled)
    samples = sorted(ring)
    runner = actor.runner
    queued += runner.waiting() if runner is not None else 0
    if runner is not None:
        running = runner.running
    else:  # a sync actor is scheduled while a thread runs its calls (or is about to)
        running = int(actor.scheduled and actor.instance is not None and actor.dead is None)
    return {
        "actor_id": actor.actor_id,
        "incarnation": actor.incarnation,
        "class_name": actor.class_name,
        "name": actor.name,
        "kind": actor.kind,
        "max_concurrency": actor.max_concurrency,
        "calls": actor.calls,
        "errors": actor.errors,
        "tell_errors": actor.tell_errors,
        "queued": queued,
        "running": running,
        "retiring": actor.retiring is not None,
        "p50_us": _percentile_us(samples, 0.50),
        "p99_us": _percentile_us(samples, 0.99),
        "service": actor.service.as_dict(),
        **(actor.durable.stats() if actor.durable is not None else _NO_CHECKPOINT),
    }


#: The checkpoint figures of an actor without a checkpoint store.
_NO_CHECKPOINT = {
    "checkpoint": None,
    "checkpoint_key": None,
    "checkpoints": 0,
    "last_checkpoint_us": None,
    "replayed": 0,
}


def _percentile_us(ordered: list, q: float) -> float | None:
    """The ``q`` quantile (nearest rank) of ``ordered`` seconds, in microseconds."""
    if not ordered:
        return None
    rank = min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))
    return round(ordered[rank] * 1e6, 1)
