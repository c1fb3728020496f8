"""Node supervision: starting this machine's worker processes, noticing their deaths.

The :class:`Supervisor` lives in the head process. It starts the workers, and
its watch thread reports to the head (through the head's own inbox, so the
registry stays the head thread's alone) a worker process that exited and a
driver on this machine whose process is gone.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from typing import TYPE_CHECKING

from zactor.caller.handle import head_handle, worker_service_handle
from zactor.control import cluster, spawn
from zactor.endpoint.recovery import clock_stamp
from zactor.endpoint.runtime import Runtime, current
from zactor.transport import ipc_address

if TYPE_CHECKING:
    from zactor.control.head import Head

#: How long the head waits for workers to exit on their own at shutdown (seconds).
STOP_GRACE_S = 2.0
#: How often the head looks whether the drivers on its machine still run (seconds).
DRIVER_CHECK_S = 0.5
#: How often the head looks whether its worker processes still run (seconds): a
#: worker's death must be noticed well within a second.
WORKER_CHECK_S = 0.1


def describe_exit(returncode: int) -> str:
    """How a process ended, from ``Popen.returncode``: "was killed by signal SIGKILL"."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by signal {name}"
    return f"exited with code {returncode}"


class Supervisor:
    """Starts this machine's worker processes and stops them; watches its drivers.

    Workers listen on socket files in ``session_dir``, or, given
    ``worker_host``, on tcp ports of that host (so that drivers on other
    machines reach them).
    """

    def __init__(
        self,
        session_dir: str,
        head_address: str,
        node_id: str = "node-0",
        worker_host: str | None = None,
    ) -> None:
        self.session_dir = session_dir
        self.head_address = head_address
        self.node_id = node_id
        self.worker_host = worker_host
        self.started_at = time.time()
        self.processes: dict[str, subprocess.Popen] = {}
        self.resources: dict = {}
        #: Replacement workers started and not yet registered with the head.
        self.replacing: set[str] = set()
        self._next_worker = 0
        self._watch_stop = threading.Event()
        self._watch: threading.Thread | None = None

    def start_workers(self, count: int, resources: dict | None = None) -> None:
        """Start ``count`` worker processes (they register with the head themselves)."""
        self.resources = resources or {}
        for _ in range(count):
            self._start_worker()

    def replace_worker(self, worker_id: str) -> None:
        """Start a new worker for one that died (a new id and address: nothing sent to
        the dead one's address can reach the new one)."""
        self.processes.pop(worker_id, None)
        self.replacing.add(self._start_worker())

    def _start_worker(self) -> str:
        worker_id = f"worker-{self._next_worker}"
        self._next_worker += 1
        if self.worker_host is None:
            address = ipc_address(self.session_dir, f"{worker_id}.sock")
        else:
            address = f"tcp://{self.worker_host}:0"
        self.processes[worker_id] = spawn.start_worker(
            self.head_address, address, worker_id, self.node_id, self.resources
        )
        return worker_id

    def stop_workers(self, head: Head) -> None:
        """Ask each worker to stop, then kill the ones that do not within the grace period."""
        for info in head.workers.values():
            try:
                worker_service_handle(info["address"]).shutdown.tell()
            except Exception:  # the runtime may already be closing
                pass
        try:
            current().flush()
        except Exception:  # not initialised, or closing: nothing batched to send
            pass
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self.processes.values():
            try:
                proc.wait(timeout=max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def watch(self, head: Head, runtime: Runtime) -> None:
        """Start a thread that tells ``head`` about workers that exited (``worker_died``)
        and drivers on this machine that died without ``zactor.shutdown()``
        (``driver_exited``)."""
        self._watch = threading.Thread(
            target=self._watch_processes, args=(head, runtime), name="zactor-watch", daemon=True
        )
        self._watch.start()

    def stop_watching(self) -> None:
        """Stop the thread :meth:`watch` started."""
        self._watch_stop.set()
        if self._watch is not None:
            self._watch.join(timeout=2 * DRIVER_CHECK_S + 1)

    def _watch_processes(self, head: Head, runtime: Runtime) -> None:
        # The registry belongs to the thread running the head's calls, so a death is
        # reported through the head's own inbox rather than by touching it here.
        to_head = head_handle(runtime)
        reported: set[str] = set()
        looks = 0
        while not self._watch_stop.wait(WORKER_CHECK_S):
            for worker_id, proc in list(self.processes.items()):
                if proc.poll() is not None and self.processes.pop(worker_id, None) is not None:
                    # Stamped after poll() reaped it: calls sent later never reached it.
                    died_at = clock_stamp()
                    try:
                        to_head.worker_died.tell(worker_id, describe_exit(proc.returncode), died_at)
                        runtime.flush()
                    except Exception:  # the head is closing: nobody left to tell
                        return
            looks += 1
            if looks % round(DRIVER_CHECK_S / WORKER_CHECK_S):
                continue
            drivers = dict(head.drivers)  # one C-level copy: safe beside the head's thread
            reported &= drivers.keys()
            for address, info in drivers.items():
                if address in reported or not info["local"]:
                    continue  # reported already, or its pid means nothing on this machine
                if not cluster.process_alive(info["pid"], info["start_time"]):
                    reported.add(address)
                    cluster.remove_dead_inbox(address)
                    try:
                        to_head.driver_exited.tell(address)
                        runtime.flush()
                    except Exception:  # the head is closing: nobody left to tell
                        return
