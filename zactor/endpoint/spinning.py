"""Polling briefly for the next message before sleeping, when it usually comes soon.

A reader that sleeps in ``epoll`` (or in a ZeroMQ ``recv``) until a message
comes pays a thread wake-up per message: on this project's 2-core VMs,
measured with ``/proc/<pid>/schedstat``, 12-20 µs of CPU on each side of a
same-host round trip, more when the kernel puts the two processes on
different cores, where each wake-up is an inter-processor interrupt (a VM
exit). Which of the two placements a pair of processes gets flips every
second or so, and with it a sync call's p50, between ~35 and ~130 µs.

So a reader that expects a reply soon polls its inbox for up to
:data:`DEFAULT_SPIN_US` first, calling ``sched_yield`` between looks: on the
peer's own core the yield runs the peer at once (no wake-up at all); on the
other core the message is picked up the moment it lands. Only when nothing
came does the reader sleep. This is the ``BackoffIdleStrategy`` of Aeron or an
adaptive mutex's spin: a bounded amount of CPU traded for the wake-up.

The spinning adapts (:class:`SpinWait`): a reader whose polls keep coming up
empty (an idle worker, a driver waiting for a slow method) stops polling
after :data:`MISSES_TO_STOP` of them in a row, and polls again for one wait
in :data:`PROBE_EVERY` to notice when messages come quickly again. An idle
process thus polls for 200 µs about every 3 s, not on every wait. And a
reader that just got a message of more than :data:`BATCH_SLEEPS` records
sleeps at once: a batch shares its wake-up among its records, so polling
would buy nothing, and while batches flow every process is busy: on a
machine with fewer cores than busy processes (a caller pipelining to a pool
on two workers, on 2 cores) a poll takes the core a peer needs.

``ZACTOR_SPIN_US`` (microseconds, read when a process starts its runtime)
sets the budget; ``0`` turns polling off (every wait sleeps at once).
"""

from __future__ import annotations

import os

#: Environment variable: microseconds a reader polls before it sleeps (0: never polls).
SPIN_ENV = "ZACTOR_SPIN_US"
#: The default budget (µs): a same-host peer answers a short call within ~25 µs, a
#: peer over tcp on a LAN within ~150 (``zactor bench --nodes 2``: at 50 µs the
#: driver's polls missed those replies, and a cross-node call's p50 was 1.14-1.28x
#: raw pyzmq over CURVE; at 200, 0.87x).
DEFAULT_SPIN_US = 200.0
#: Polls that found nothing in a row before a reader stops polling.
MISSES_TO_STOP = 8
#: A reader that stopped polling polls again for one wait in this many.
PROBE_EVERY = 16
#: After a message of more records than this, a reader's next wait sleeps at once.
BATCH_SLEEPS = 64


def spin_budget_ns(environ=os.environ) -> int:
    """The polling budget in ns from ``ZACTOR_SPIN_US`` (default :data:`DEFAULT_SPIN_US`).

    Raises ValueError naming the variable if it is not a number of microseconds
    from 0 to 10,000.
    """
    text = environ.get(SPIN_ENV, "")
    if not text:
        return int(DEFAULT_SPIN_US * 1000)
    try:
        micros = float(text)
    except ValueError:
        micros = -1.0
    if not 0 <= micros <= 10_000:
        raise ValueError(
            f"{SPIN_ENV}={text!r} is not a number of microseconds from 0 to 10000: "
            f"set it to how long a reader polls for a message before it sleeps "
            f"(0 turns polling off, unset means {DEFAULT_SPIN_US:g})"
        )
    return int(micros * 1000)


class SpinWait:
    """One reader's polling policy: how long to poll before this wait's sleep.

    Example::

        spin = SpinWait(50_000)
        budget = spin.budget()          # ns to poll now (0: sleep at once)
        ...                             # poll up to budget ns
        spin.caught() or spin.missed()  # what the polling found
    """

    __slots__ = ("budget_ns", "_misses", "_skipped", "_batch")

    def __init__(self, budget_ns: int) -> None:
        #: The most a reader polls per wait (ns); 0 turns polling off.
        self.budget_ns = budget_ns
        self._misses = 0  # polls in a row that found nothing
        self._skipped = 0  # waits without polling since the last poll
        self._batch = False  # the last message was a batch of more than BATCH_SLEEPS

    def received(self, records: int) -> None:
        """The reader got a message of ``records`` records."""
        self._batch = records > BATCH_SLEEPS

    def budget(self) -> int:
        """Nanoseconds to poll before this wait sleeps (0: sleep at once)."""
        if self._batch:  # a batch came: more are on their way, or the peer is done
            return 0
        if self._misses < MISSES_TO_STOP:
            return self.budget_ns
        self._skipped += 1
        if self._skipped >= PROBE_EVERY:  # look again now and then
            self._skipped = 0
            return self.budget_ns
        return 0

    def caught(self) -> None:
        """The poll found a message: keep polling."""
        self._misses = 0

    def missed(self) -> None:
        """The poll found nothing before the budget ran out."""
        self._misses += 1
