"""Actor creation rate on a running cluster, beside a raw pyzmq yardstick (issue 12).

Run it from the repo root::

    PYTHONPATH=. python bench/creation_rate.py [--rounds 7] [--actors 1000] [--workers 2]

Each round creates ``--actors`` actors and makes one call to each, all awaited
(``hs = [A.remote() for _ in range(n)]; zactor.get([h.f.remote() for h in hs])``),
on an embedded cluster of ``--workers`` worker processes; the actors are ended, and
that awaited, after the clock stops. Beside it, in the same round (order alternating),
the raw yardstick: a pyzmq DEALER sending 50-byte messages one at a time to a ROUTER
echo server in another process over ``ipc://`` (``zactor.benchmark.runner.RawYardstick``),
as round trips per second. A creation that waited for the head cost at least one such
round trip; the ratio says how many creations fit in one. Figures are medians over the
rounds.

:func:`creation_rate` is the measurement alone, for any zactor session.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import zactor
from zactor.benchmark.runner import RawYardstick

#: How long ending a round's actors may take (seconds).
END_TIMEOUT_S = 120.0


class Blank:
    """The actor created: nothing in its constructor, one trivial method."""

    def f(self) -> int:
        return 1


def creation_rate(actor_class, n: int) -> float:
    """Actors per second: ``n`` ``actor_class.remote()`` then one ``f`` call to each, all
    awaited, in the running zactor session. The actors are ended (awaited) after the
    clock stops, so rounds do not pile actors up on the workers."""
    t0 = time.perf_counter()
    handles = [actor_class.remote() for _ in range(n)]
    values = zactor.get([h.f.remote() for h in handles])
    rate = n / (time.perf_counter() - t0)
    zactor.get([h.__zactor_terminate__.remote() for h in handles], timeout=END_TIMEOUT_S)
    if values != [1] * n:
        raise RuntimeError(f"new actors answered {sorted(set(values))}, expected only 1")
    return rate


def raw_round_trips(raw: RawYardstick, n: int) -> float:
    """Raw pyzmq round trips per second, one message in flight at a time."""
    return n / (raw.latency_ns(n).sum() / 1e9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--actors", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    actor_class = zactor.remote(Blank)
    zactor.init(num_workers=args.workers)
    with tempfile.TemporaryDirectory(prefix="zactor-creation-") as directory:
        raw = RawYardstick(directory)
        try:
            creation_rate(actor_class, min(args.actors, 200))  # warm: lease, imports, caches
            rates, raws = [], []
            for r in range(args.rounds):
                if r % 2:
                    raws.append(raw_round_trips(raw, 2000))
                    rates.append(creation_rate(actor_class, args.actors))
                else:
                    rates.append(creation_rate(actor_class, args.actors))
                    raws.append(raw_round_trips(raw, 2000))
                print(
                    f"round {r}: {rates[-1]:,.0f} actors/s, raw pyzmq {raws[-1]:,.0f} "
                    "round trips/s",
                    file=sys.stderr,
                )
        finally:
            raw.close()
            zactor.shutdown()
    rate, raw_rate = statistics.median(rates), statistics.median(raws)
    print(
        f"creating {args.actors:,} actors with one call each, {args.workers} workers, "
        f"medians of {args.rounds} rounds:\n"
        f"  zactor:    {rate:,.0f} actors/s ({rate / raw_rate:.2f}x raw pyzmq round trips/s)\n"
        f"  raw pyzmq: {raw_rate:,.0f} round trips/s (ipc, one message in flight)\n"
        f"  target:    10,000 actors/s: {'met' if rate >= 10_000 else 'missed'}"
        + ("" if rate >= 10_000 else f" by {10_000 / rate:.2f}x")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
