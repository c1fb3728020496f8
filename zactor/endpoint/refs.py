"""Reference-counted actor lifetime: who still holds a handle to which actor.

A non-detached actor ends once no handle to it remains anywhere: not in the
process that created it (its *owner*), and not in any process that received a
copy. Two halves keep that count:

* :class:`HandleRefs`, one per process, counts the live handles of each actor
  in this process. Handles only append events to a lock-free queue (a handle's
  ``__del__`` may run inside any code, at any allocation, so it must not take
  a lock); the runtime's background thread turns the queue into *hold* and
  *release* transitions and reports them to the head in one message.
* :class:`RefLedger`, in the head, keeps per actor the set of processes that
  hold it and the copies in transit.

A copy in transit is what makes passing a handle safe: pickling a handle
reports a random *token* ("sent") before the sender can report its own
release, and unpickling reports that token "claimed" together with the
receiver's hold. The two reports come from different processes and may reach
the head in either order, so a token's count may go to -1 before it returns
to 0; only a positive count (sent, not yet claimed) keeps the actor alive.
A handle that is pickled and never unpickled (written to a file, say) keeps
its actor alive until the owner's job ends.

Example (what a user sees)::

    c = Counter.remote()
    holder.keep.remote(c)     # the holder's copy keeps the counter alive ...
    del c                     # ... after the driver drops its own
"""

from __future__ import annotations

import random
from collections import deque

#: Event kinds in a process's queue (and in the message to the head).
HOLD, RELEASE, SENT, CLAIMED = "hold", "release", "sent", "claimed"

_ADD, _DROP = 1, -1


class HandleRefs:
    """This process's count of live handles per actor (see the module docstring)."""

    def __init__(self) -> None:
        self._events: deque = deque()  # (delta or kind, actor_id, token); append is atomic
        self._counts: dict[int, int] = {}

    # -- called by handles (any thread, also from __del__) ---------------------------------

    def acquire(self, actor_id: int) -> None:
        """A handle to ``actor_id`` was made in this process."""
        self._events.append((_ADD, actor_id, None))

    def release(self, actor_id: int) -> None:
        """A handle to ``actor_id`` was garbage-collected."""
        self._events.append((_DROP, actor_id, None))

    def sent(self, actor_id: int) -> int:
        """A handle is being pickled: returns the token its copy will claim."""
        token = random.getrandbits(62)
        self._events.append((SENT, actor_id, token))
        return token

    def claimed(self, actor_id: int, token: int) -> None:
        """A copy carrying ``token`` was unpickled here (its handle acquires separately)."""
        self._events.append((CLAIMED, actor_id, token))

    # -- called by the runtime's background thread -----------------------------------------

    def pending(self) -> bool:
        """True if events wait to be reported."""
        return bool(self._events)

    def take_report(self) -> list:
        """Turn the queued events into ``[kind, actor_id, token]`` reports, in order.

        Handle counts change silently; only a count leaving or reaching zero
        becomes a ``hold`` or ``release`` report.
        """
        events = self._events
        counts = self._counts
        report = []
        while events:
            what, actor_id, token = events.popleft()
            if what == _ADD:
                count = counts.get(actor_id, 0) + 1
                counts[actor_id] = count
                if count == 1:
                    report.append([HOLD, actor_id, None])
            elif what == _DROP:
                count = counts.get(actor_id, 0) - 1
                if count > 0:
                    counts[actor_id] = count
                else:
                    counts.pop(actor_id, None)
                    report.append([RELEASE, actor_id, None])
            else:
                report.append([what, actor_id, token])
        return report
