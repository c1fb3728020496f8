"""Per-actor counters and service-time percentiles, for ``WorkerService.stats``.

The host times a sample of each actor's calls (:data:`SAMPLE_WARMUP`,
:data:`SAMPLE_EVERY`) into the actor's ring of :data:`SAMPLE_RING` service
times; :func:`_actor_stats` turns an actor's counters and ring into its row of
``zactor status``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zactor.worker.hosted import HostedActor

#: Service times each actor keeps for the percentiles of its stats (:func:`_actor_stats`).
SAMPLE_RING = 256
#: An actor's first calls are all timed, so that a few calls already give percentiles ...
SAMPLE_WARMUP = 64
#: ... and after those one call in this many, so timing costs the hot path next to nothing.
SAMPLE_EVERY = 16


def _actor_stats(actor: HostedActor, queued: int) -> dict:
    samples = sorted(actor.samples)  # copied in one step: other threads append meanwhile
    runner = actor.runner
    queued += runner.waiting() if runner is not None else 0
    if runner is not None:
        running = runner.running
    else:  # a sync actor is scheduled while a thread runs its calls (or is about to)
        running = int(actor.scheduled and actor.instance is not None and actor.dead is None)
    return {
        "actor_id": actor.actor_id,
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
