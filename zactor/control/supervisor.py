"""Node supervision: starting one machine's worker processes, noticing their deaths.

A :class:`Supervisor` lives in the head process (for the head's own machine)
and in every node agent (:mod:`zactor.control.node`, one per other machine).
It starts the workers, and its watch thread reports to the head (through the
head's inbox, so the registry stays the head thread's alone) a worker process
that exited. In the head it also reports a driver on this machine whose
process is gone, and a node agent whose heartbeats stopped
(:data:`zactor.control.head.NODE_TIMEOUT_S`). It gives up on a replacement
worker that does not register within :data:`WORKER_START_TIMEOUT_S`: it kills
it, so the head hears of it as of any worker that exited, and the creations and
restarts waiting for it fail with an error naming it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from typing import TYPE_CHECKING

from zactor.caller.handle import head_handle, worker_service_handle
from zactor.control import cluster, spawn
from zactor.control.head import silence
from zactor.endpoint.recovery import clock_stamp
from zactor.endpoint.runtime import Runtime, current
from zactor.transport import ipc_address, shared_memory

if TYPE_CHECKING:
    from zactor.control.head import Head

#: How long the head waits for workers to exit on their own at shutdown (seconds).
STOP_GRACE_S = 2.0
#: How often the head looks whether the drivers on its machine still run (seconds).
DRIVER_CHECK_S = 0.5
#: How often the head looks whether its worker processes still run (seconds): a
#: worker's death must be noticed well within a second.
WORKER_CHECK_S = 0.1
#: How long a replacement worker may take to start and register with the head
#: (seconds): as long as ``zactor start`` waits for its workers. Creations and
#: restarts waiting for it wait that long at most; then it is killed and they fail.
WORKER_START_TIMEOUT_S = cluster.START_TIMEOUT_S


def describe_exit(returncode: int) -> str:
    """How a process ended, from ``Popen.returncode``: "was killed by signal SIGKILL"."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by signal {name}"
    return f"exited with code {returncode}"


class AdoptedProcess:
    """A worker process this head did not start (it outlived the head that did), watched
    by pid as :class:`subprocess.Popen` would be: ``poll``, ``wait``, ``kill``.

    Its exit status is not ours to read: an exit shows as ``returncode`` -9
    when it was killed here, else 0 with :attr:`cause` saying it is unknown.
    ``start_time`` (:func:`zactor.processes.process_start_time`, read when the
    worker registered) tells it from a process that took its pid after it died;
    None reads it now, for a record that has none.
    """

    def __init__(self, pid: int, start_time: int | None = None) -> None:
        self.pid = pid
        self.start_time = cluster.process_start_time(pid) if start_time is None else start_time
        self.returncode: int | None = None
        self._killed = False

    def poll(self) -> int | None:
        """None while it runs, else its ``returncode``."""
        if self.returncode is None and not cluster.process_alive(self.pid, self.start_time):
            self.returncode = -signal.SIGKILL if self._killed else 0
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait until it exits; :class:`subprocess.TimeoutExpired` after ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"worker pid {self.pid}", timeout)
            time.sleep(0.02)
        return self.returncode

    def kill(self) -> None:
        """SIGKILL it, if it still runs: a pid it left may be another process's now."""
        if self.poll() is not None:
            return
        self._killed = True
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Supervisor:
    """Starts this machine's worker processes and stops them; watches its drivers.

    Workers listen on socket files in ``session_dir``, or, given
    ``worker_host``, on tcp ports of that host (so that drivers on other
    machines reach them). Their output goes where the head's goes:
    ``log_path`` for a standing cluster, else the standard error of the
    process that started the cluster. Worker ids are ``worker-N`` on the
    head's machine; a node agent's start with its node id
    (``worker_prefix``), so they are unique in the cluster.
    """

    def __init__(
        self,
        session_dir: str,
        head_address: str,
        node_id: str = "node-0",
        worker_host: str | None = None,
        log_path: str | None = None,
        worker_prefix: str = "",
    ) -> None:
        self.session_dir = session_dir
        self.worker_prefix = worker_prefix
        self.head_address = head_address
        self.node_id = node_id
        self.worker_host = worker_host
        self.log_path = log_path
        self.started_at = time.time()
        self.processes: dict[str, subprocess.Popen] = {}
        self.resources: dict = {}
        #: Replacement workers started and not yet registered with the head, with
        #: when each started (``time.monotonic()``).
        self.replacing: dict[str, float] = {}
        #: Why the supervisor killed a worker (it did not register in time), by worker id.
        self._gave_up: dict[str, str] = {}
        #: worker id -> when it was seen to have exited (see :meth:`_reap`).
        self._died_at: dict[str, list | None] = {}
        self._next_worker = 0
        #: What workers do when the head dies: wait this long for it to restart (seconds;
        #: a standing cluster's, see ``zactor start --head --recover``), or exit at once (0).
        self.head_grace = 0.0
        self._watch_stop = threading.Event()
        #: ``(when, pid)``: dead processes whose shared-memory names are swept then.
        self._dead_senders: list[tuple[float, int]] = []
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
        self.replacing[self._start_worker()] = time.monotonic()

    def adopt(self, worker_id: str, pid: int, start_time: int | None = None) -> None:
        """Watch worker ``worker_id`` (process ``pid``, started at ``start_time``) that a
        head before this one started (``Head.recover``): its exit is reported as a
        child's is."""
        self.processes[worker_id] = AdoptedProcess(pid, start_time)
        number = worker_id.rpartition("-")[2]
        if number.isdigit():  # new workers' ids follow the adopted ones'
            self._next_worker = max(self._next_worker, int(number) + 1)

    def forget_worker(self, worker_id: str) -> None:
        """Stop tracking a worker whose exit the head has dealt with and does not replace."""
        self.processes.pop(worker_id, None)
        self.replacing.pop(worker_id, None)

    def exit_cause(self, worker_id: str) -> str | None:
        """How worker ``worker_id``'s process ended ("exited with code 1"), or None while
        it runs (or if this supervisor did not start it).

        The head asks before it places an actor on a worker, so that an actor
        created just after a worker died does not go to it in the moment
        before the watch thread reports the death.
        """
        proc = self.processes.get(worker_id)
        if proc is None or not self._reap(worker_id, proc):
            return None
        return self._gave_up.get(worker_id) or describe_exit(proc.returncode)

    def died_at(self, worker_id: str) -> list | None:
        """The :func:`~zactor.endpoint.recovery.clock_stamp` taken when worker
        ``worker_id`` was seen to have exited, before its pid was freed."""
        return self._died_at.get(worker_id)

    def _reap(self, worker_id: str, proc: subprocess.Popen) -> bool:
        """True once ``proc`` has exited, reaping it; stamps the moment first.

        The stamp is taken while the exited process still holds its pid (a
        zombie), then it is reaped: anyone who saw the pid gone, and called the
        actor after, sent the call after the stamp, which is what lets the call
        wait for the restart (``Recovery.actor_died``'s ``died_at``).
        """
        if proc.returncode is not None:
            return True
        if isinstance(proc, AdoptedProcess):  # not our child: no exit status to wait for
            if proc.poll() is None:
                return False
            self._died_at.setdefault(worker_id, clock_stamp())
            return True
        try:
            exited = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped by another thread's poll() meanwhile
            exited = True
        if exited is None:
            return False
        self._died_at.setdefault(worker_id, clock_stamp())
        return proc.poll() is not None

    def output_hint(self) -> str:
        """Where the workers' output (the traceback of one that failed to start) went."""
        if self.log_path is not None:
            return f"is in the cluster's log, {self.log_path}"
        return "went to the standard error of the process that started the cluster"

    def _give_up_on_late_starts(self, now: float) -> None:
        """Kill the replacement workers not registered within :data:`WORKER_START_TIMEOUT_S`
        of their start, as of ``now`` (``time.monotonic()``).

        Killed, such a worker is reported as one that exited, with the cause
        recorded here: the creations and restarts waiting for it fail rather
        than wait for ever, and it cannot register late with a head that gave
        up on it.
        """
        for worker_id, started in dict(self.replacing).items():  # one C-level copy
            proc = self.processes.get(worker_id)
            if now - started <= WORKER_START_TIMEOUT_S or worker_id in self._gave_up or not proc:
                continue
            self._gave_up[worker_id] = (
                f"did not register with the head within {WORKER_START_TIMEOUT_S:.0f} s of "
                "its start, so the head killed it"
            )
            proc.kill()

    def _start_worker(self) -> str:
        worker_id = f"{self.worker_prefix}worker-{self._next_worker}"
        self._next_worker += 1
        address = self._worker_address(worker_id)
        self.processes[worker_id] = spawn.start_worker(
            self.head_address,
            address,
            worker_id,
            self.node_id,
            self.resources,
            head_grace=self.head_grace,
        )
        return worker_id

    def _worker_address(self, worker_id: str) -> str:
        """The address worker ``worker_id`` binds (port 0: a tcp worker picks its port)."""
        if self.worker_host is None:
            return ipc_address(self.session_dir, f"{worker_id}.sock")
        return f"tcp://{self.worker_host}:0"

    def stop_workers(self, addresses: list[str]) -> None:
        """Ask the workers at ``addresses`` to stop, then kill the processes of this
        supervisor's that do not within the grace period."""
        for address in addresses:
            try:
                worker_service_handle(address).shutdown.tell()
            except Exception:  # the runtime may already be closing
                pass
        try:
            current().flush()
        except Exception:  # not initialised, or closing: nothing batched to send
            pass
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in list(self.processes.values()):
            try:
                proc.wait(timeout=max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def watch(self, head: Head | None, runtime: Runtime) -> None:
        """Start a thread that tells the head about workers that exited (``worker_died``).

        In the head process (``head`` given) it also reports drivers on this
        machine that died without ``zactor.shutdown()`` (``driver_exited``) and
        node agents silent for longer than ``head.node_timeout_s``
        (``node_lost``).
        """
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
        # The head thread may find a worker's exit first (exit_cause) and forgets the
        # process once it has dealt with it; this thread remembers what it reported,
        # and the head ignores a second report of the same exit.
        to_head = head_handle(runtime)
        reported: set[str] = set()
        exits: set[str] = set()
        looks = 0
        while not self._watch_stop.wait(WORKER_CHECK_S):
            self._sweep_dead_senders(time.monotonic())
            if head is not None:  # a node agent's never hears which replacement registered
                self._give_up_on_late_starts(time.monotonic())
            processes = dict(self.processes)  # one C-level copy: safe beside the head's thread
            exits &= processes.keys()
            for worker_id in processes.keys() - exits:
                cause = self.exit_cause(worker_id)
                if cause is None:
                    continue
                exits.add(worker_id)
                self._swept_on_death(self._worker_address(worker_id), processes[worker_id].pid)
                died_at = self.died_at(worker_id)
                try:
                    to_head.worker_died.tell(worker_id, cause, died_at, processes[worker_id].pid)
                    runtime.flush()
                except Exception:  # the head is closing: nobody left to tell
                    return
            if head is None:
                continue  # a node agent's: drivers and nodes are the head's to watch
            try:
                self._report_silent_nodes(head, to_head, runtime)
            except Exception:  # the head is closing: nobody left to tell
                return
            looks += 1
            if looks % round(DRIVER_CHECK_S / WORKER_CHECK_S):
                continue
            drivers = dict(head.drivers)  # one C-level copy: safe beside the head's thread
            reported &= drivers.keys()
            for address, info in drivers.items():
                if address in reported:
                    continue
                if info["local"]:
                    silent = False
                    gone = not cluster.process_alive(info["pid"], info["start_time"])
                else:  # its pid means nothing here: its heartbeats say it runs
                    silent = gone = silence(head, info) > head.node_timeout_s
                if gone:
                    if not silent:  # a silent one may prove alive: asked again until gone
                        reported.add(address)
                    cluster.remove_dead_inbox(address)
                    if info["local"]:
                        self._swept_on_death(address, info["pid"])
                    try:
                        to_head.driver_exited.tell(address, silent)
                        runtime.flush()
                    except Exception:  # the head is closing: nobody left to tell
                        return

    def _swept_on_death(self, address: str, pid: int) -> None:
        """Process ``pid`` at ``address`` died: unlink the shared-memory names sent to it
        now, and the ones it made after :data:`~shared_memory.DEAD_SENDER_GRACE_S`."""
        shared_memory.sweep(self.head_address, address)
        due = time.monotonic() + shared_memory.DEAD_SENDER_GRACE_S
        self._dead_senders.append((due, pid))

    def _sweep_dead_senders(self, now: float) -> None:
        """Sweep the names of the dead processes whose grace ended by ``now``."""
        while self._dead_senders and self._dead_senders[0][0] <= now:
            _, pid = self._dead_senders.pop(0)
            shared_memory.sweep(self.head_address, pid=pid)

    def _report_silent_nodes(self, head: Head, to_head, runtime: Runtime) -> None:
        """Tell the head about each live node silent for longer than its timeout
        (:func:`~zactor.control.head.silence`); the head checks again and declares it dead (once: it
        is no longer "alive" after)."""
        timeout = head.node_timeout_s
        silent = [
            (node_id, silence(head, node))
            for node_id, node in dict(head.nodes).items()  # one C-level copy
            if node["state"] == "alive" and silence(head, node) > timeout
        ]
        for node_id, quiet in silent:
            to_head.node_lost.tell(node_id, quiet)
        if silent:
            runtime.flush()
