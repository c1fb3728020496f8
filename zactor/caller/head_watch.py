"""A joined driver's watch on its head: heartbeats one way, a clear error the other.

A driver that joined a standing cluster (``zactor.init(address=...)``) sends
the head ``driver_heartbeat`` every ``interval`` seconds, as a call whose
answer says the head is there:

- the head learns the driver runs (it ends the actors of a driver on another
  machine whose heartbeats stop, since it cannot watch that driver's pid);
- the driver learns the head runs. Calls to actors never touch the head and
  keep working while it is down; calls to the head (creating an actor,
  ``get_actor``, ``kill``) wait for it, for up to ``silence`` seconds
  (:data:`HEAD_SILENCE_S`). Once
  the head has not answered for that long, each call to it fails with a
  :class:`~zactor.errors.ClusterError` saying so and what to do, rather than
  at its own timeout (60 s for a creation); as soon as the head answers again
  (a head restarted with ``zactor start --head --recover``), calls to it go
  through again.

Everything runs on the runtime's background thread (``Runtime.call_later``):
nothing here blocks.
"""

from __future__ import annotations

import time

from zactor.caller.handle import head_handle
from zactor.errors import ClusterError

#: How long a joined driver waits for a silent head before its calls to the head
#: fail (seconds): longer than the head's own longest wait on a worker (its
#: ``STATUS_TIMEOUT_S``, 5 s, in ``status`` or a kill), twice over, so that a head
#: held up by a stuck worker is not taken for a dead one.
HEAD_SILENCE_S = 12.0


class HeadWatch:
    """Sends heartbeats to the head and fails calls to it once it has gone silent."""

    def __init__(self, runtime, interval: float, silence: float = HEAD_SILENCE_S) -> None:
        self._runtime = runtime
        self._head = head_handle(runtime)
        self.interval = interval
        self.silence = silence
        #: When the head last answered (``time.monotonic()``).
        self.last_answer = time.monotonic()

    def start(self) -> None:
        """Send the first heartbeat after ``interval``; each schedules the next."""
        self._runtime.call_later(self.interval, self._beat)

    def silent_for(self) -> float:
        """Seconds since the head last answered."""
        return time.monotonic() - self.last_answer

    def _beat(self) -> None:
        runtime = self._runtime
        silent = self.silent_for()
        if silent > self.silence:  # before this beat's ping, which must stay to be answered
            runtime.recovery.fail_calls_to(runtime.head_address, self._silent_error(silent))
        try:
            ping = self._head.driver_heartbeat.remote(runtime.address)
        except ClusterError:  # shut down: no more heartbeats
            return
        ping.add_done_callback(self._answered)
        runtime.call_later(self.interval, self._beat)

    def _answered(self, future) -> None:
        if future.exception(0) is None:
            self.last_answer = time.monotonic()

    def _silent_error(self, silent: float) -> ClusterError:
        address = self._runtime.head_address
        return ClusterError(
            f"the zactor head at {address} has not answered for {silent:.0f} s: it stopped, "
            "crashed or is cut off from this machine. Calls to actors still work (they do "
            "not go through the head); creating actors, get_actor and kill need it. If it "
            "was restarted (zactor start --head --recover), try again once it is back; "
            "else start a cluster and call zactor.shutdown() then zactor.init() again"
        )
