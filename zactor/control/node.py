"""The node agent: one machine's workers in a cluster whose head runs elsewhere.

``zactor start --address tcp://HEAD:PORT`` starts it as a daemon (see
:func:`zactor.control.cluster.start_node`). The agent

- registers its machine with the head (``Head.register_node``) under a node id
  (``--node-id``, default ``<hostname>-<6 hex digits>``), with the custom
  resources its workers share;
- starts and supervises its worker processes with a
  :class:`~zactor.control.supervisor.Supervisor`, exactly as the head does for
  its own machine, and reports their deaths (``Head.worker_died``); the head
  asks it to replace a dead worker (``NodeService.replace_worker``);
- sends a heartbeat (``Head.node_heartbeat``) every ``heartbeat_s`` the head
  gave it. A node the head has not heard from for ``node_timeout_s`` is
  declared dead: its actors fail or restart on other nodes. A node that comes
  back from a partition learns it at its next heartbeat and ends its workers
  at once (SIGKILL), so that no actor runs twice, then exits.

Callers never go through the agent: workers register with the head
themselves, and calls go straight from caller to worker.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time

from zactor.caller.handle import head_handle
from zactor.control import cluster
from zactor.control.supervisor import Supervisor
from zactor.endpoint.runtime import Runtime, set_current
from zactor.errors import ClusterError
from zactor.transport import keys as cluster_keys
from zactor.wire.protocol import NODE_TABLE
from zactor.worker.host import ActorHost

log = logging.getLogger("zactor")

#: How long the agent waits for the head to answer its registration (seconds).
REGISTER_TIMEOUT_S = 15.0
#: How long a node keeps its workers while the head does not answer (seconds): long
#: enough for a head to be restarted (``zactor start --head --recover``); then it stops.
HEAD_LOST_S = 60.0
#: How often, at most, an agent asks the head whether its workers registered (seconds).
#: It asks soon at first (a worker starts in a fraction of a second) and less and less
#: often: each question makes the head list every worker of the cluster, and a hundred
#: nodes starting at once asking fifty times a second would keep the head too busy to
#: read their heartbeats in time (docs/scaling.md).
OWN_WORKERS_POLL_MAX_S = 0.5
#: Exit code of an agent the head declared dead (a partition, or a head that forgot it).
EXIT_DECLARED_DEAD = 3


class NodeService:
    """Actor 0 of a node agent: the head's orders (``NODE_TABLE``)."""

    def __init__(self, agent: NodeAgent) -> None:
        self._agent = agent

    def replace_worker(self, worker_id: str) -> None:
        """Start a worker in place of ``worker_id``, which died (a new id and address)."""
        supervisor = self._agent.supervisor
        if supervisor is not None and worker_id in supervisor.processes:
            if not self._agent.stopping():  # a stopping node's workers are not replaced
                supervisor.replace_worker(worker_id)

    def shutdown(self) -> None:
        """The cluster stops: stop this node's workers, then the agent."""
        self._agent.stop("the cluster is stopping")


class NodeAgent:
    """One machine's supervisor and heartbeat, in the agent process."""

    def __init__(self, runtime: Runtime, host: ActorHost, node_id: str) -> None:
        self.runtime = runtime
        self.host = host
        self.node_id = node_id
        self.head = head_handle(runtime)
        self.supervisor: Supervisor | None = None
        #: Why the agent stops, once it does; ``declared_dead`` if the head said so.
        self.stop_reason: str | None = None
        self.declared_dead = False
        self._stopped = threading.Event()
        self._signalled: str | None = None

    def stop(self, reason: str) -> None:
        """Have the agent stop, for ``reason`` (from any thread, or a signal handler):
        the main thread, waiting in :meth:`wait_stopped`, ends the node."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stopped.set()

    def stopping(self) -> bool:
        """True once :meth:`stop` was called, or a signal asked to stop."""
        return self._stopped.is_set() or self._signalled is not None

    def on_signal(self, reason: str) -> None:
        """Stop, from a signal handler: it only notes why (setting an Event there could
        deadlock on the lock the interrupted wait holds); :meth:`wait_stopped` acts."""
        self._signalled = reason

    def wait_stopped(self) -> None:
        """Block until :meth:`stop` is called, or a signal asked to stop."""
        while not self._stopped.wait(0.2):
            if self._signalled is not None:
                self.stop(self._signalled)

    def heartbeat(self, interval: float) -> None:
        """Send heartbeats until stopped; stop if the head declared this node dead,
        or did not answer for :data:`HEAD_LOST_S`."""
        last_answer = time.monotonic()
        while not self._stopped.wait(interval):
            try:
                state = self.head.node_heartbeat.remote(self.node_id, self.runtime.address).result(
                    timeout=interval
                )
            except Exception:  # no answer in time: the head is down, or cut off from us
                if time.monotonic() - last_answer > HEAD_LOST_S:
                    self.stop(
                        f"the head at {self.runtime.head_address} did not answer for "
                        f"{HEAD_LOST_S:.0f} s"
                    )
                continue
            last_answer = time.monotonic()
            if state != "alive":
                self.declared_dead = True
                if state == "replaced":
                    said = (
                        f"declared node {self.node_id} dead (it was cut off for longer than the "
                        "node timeout), and another agent joined as it since: its actors run "
                        "elsewhere now. To add this machine again, start it under another "
                        "--node-id with `zactor start --address`"
                    )
                else:
                    said = (
                        f"declared node {self.node_id} {state} (it was cut off for longer than "
                        "the node timeout, or the head was restarted without it): its actors "
                        "run elsewhere now. Start the node again with `zactor start --address`"
                    )
                self.stop(f"the head {said}")
                return

    def our_worker_addresses(self) -> list[str]:
        """The inbox addresses of this node's workers, as the head knows them (empty if
        the head does not answer)."""
        try:
            info = self.head.cluster_info.remote().result(timeout=2.0)
        except Exception:  # the head is gone: the workers are killed after the grace period
            return []
        return [w["address"] for w in info["workers"] if w["node_id"] == self.node_id]


def wait_for_own_workers(agent: NodeAgent, count: int, deadline: float) -> None:
    """Wait until the head lists ``count`` workers of this node; ``ClusterError`` at
    ``deadline`` (``time.monotonic()``)."""
    pause = 0.02
    while time.monotonic() < deadline:
        if agent.stopping():
            return  # declared dead or asked to stop while starting: main() ends the node
        try:
            info = agent.head.cluster_info.remote().result(timeout=1.0)
        except TimeoutError:
            continue
        if sum(1 for w in info["workers"] if w["node_id"] == agent.node_id) >= count:
            return
        time.sleep(pause)
        pause = min(2 * pause, OWN_WORKERS_POLL_MAX_S)
    raise ClusterError(
        f"the workers of node {agent.node_id} did not register with the head at "
        f"{agent.runtime.head_address} in time: can the head's machine reach this one "
        "(firewall, --host)? See the node's log"
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point of the node agent process (``zactor start --address``)."""
    parser = argparse.ArgumentParser(prog="python -m zactor.control.node")
    parser.add_argument("--head", required=True, help="the head's address, tcp://HOST:PORT")
    parser.add_argument("--node-id", required=True)
    parser.add_argument(
        "--session-dir", default="", help="where socket files go (none: tcp everywhere)"
    )
    parser.add_argument("--num-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--resources", default="{}")
    parser.add_argument("--host", help="the address workers listen on (default: the route's)")
    parser.add_argument("--node-file", help="write the node's record here once it runs")
    parser.add_argument("--log", help="where the node's and its workers' output goes")
    parser.add_argument("--keys", required=True, help="the cluster's node key bundle")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("ZACTOR_LOG_LEVEL", "WARNING"))
    resources = json.loads(args.resources)
    keys = cluster_keys.load_bundle(args.keys)
    os.environ[cluster_keys.KEYS_ENV] = keys.path  # the workers we start inherit it
    inbox = cluster.inbox_for(args.head, args.session_dir, "node", host=args.host)
    runtime = Runtime(inbox, role="node", head_address=args.head, node_id=args.node_id, keys=keys)
    set_current(runtime)
    host = ActorHost(runtime)
    agent = NodeAgent(runtime, host, args.node_id)
    host.add_system_actor(NodeService(agent), NODE_TABLE)
    signal.signal(signal.SIGTERM, lambda *_: agent.on_signal("it was asked to stop (SIGTERM)"))
    serving = threading.Thread(target=host.serve, name="zactor-node-serve", daemon=True)
    serving.start()
    code = 0
    try:
        try:
            joined = agent.head.register_node.remote(
                args.node_id,
                runtime.address,
                os.getpid(),
                args.host or cluster.local_host_for(args.head) or socket.gethostname(),
                resources,
                args.num_workers,
            ).result(timeout=REGISTER_TIMEOUT_S)
        except TimeoutError:
            raise ClusterError(
                f"the head at {args.head} did not answer within {REGISTER_TIMEOUT_S:.0f} s: "
                "check the address, that the head runs, and that this machine can reach it"
            ) from None
        # Heartbeats from now on: starting many workers may take longer than the timeout.
        beat = threading.Thread(
            target=agent.heartbeat, args=(joined["heartbeat_s"],), name="zactor-heartbeat"
        )
        beat.daemon = True
        beat.start()
        worker_host = args.host or cluster.local_host_for(args.head)
        agent.supervisor = supervisor = Supervisor(
            args.session_dir,
            args.head,
            node_id=args.node_id,
            worker_host=worker_host,
            log_path=args.log,
            worker_prefix=f"{args.node_id}-",
        )
        supervisor.start_workers(args.num_workers, resources)
        supervisor.watch(None, runtime)
        wait_for_own_workers(agent, args.num_workers, time.monotonic() + cluster.START_TIMEOUT_S)
        if args.node_file:
            record = {
                "node_id": args.node_id,
                "head": args.head,
                "address": runtime.address,
                "pid": os.getpid(),
                "start_time": cluster.process_start_time(os.getpid()),
                "session_dir": args.session_dir,
                "log": args.log,
                "num_workers": args.num_workers,
                "resources": resources,
                "started_at": time.time(),
            }
            cluster.write_json_atomically(args.node_file, record)
        print(f"zactor node {args.node_id} pid {os.getpid()} joined {args.head}", flush=True)
        agent.wait_stopped()
    except Exception as exc:  # start-up failed: say why in the log the start command shows
        print(f"zactor node {args.node_id}: {exc}", file=sys.stderr, flush=True)
        agent.stop(str(exc))
        code = 1
    finally:
        _stop_node(agent)
        serving.join()
        runtime.close()
        if args.node_file:
            cluster.remove_cluster_file(args.node_file, os.getpid())
        if args.session_dir:
            shutil.rmtree(args.session_dir, ignore_errors=True)
    if agent.declared_dead:
        code = EXIT_DECLARED_DEAD
    print(f"zactor node {args.node_id} stopped: {agent.stop_reason}", flush=True)
    os._exit(code)


def _stop_node(agent: NodeAgent) -> None:
    """End this node's workers: at once if the head declared the node dead (its actors
    may already run elsewhere), else telling the head first (so it neither replaces
    them nor waits for heartbeats) and asking them to stop; then the agent's host.

    The host still serves meanwhile: its thread reads the answers waited for here.
    """
    supervisor = agent.supervisor
    if supervisor is not None:
        supervisor.stop_watching()
        if agent.declared_dead:
            for proc in list(supervisor.processes.values()):
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        else:
            addresses = agent.our_worker_addresses()
            with contextlib.suppress(Exception):  # the head may be gone
                agent.head.node_stopping.tell(agent.node_id, agent.runtime.address)
            supervisor.stop_workers(addresses)
    agent.host.stop()


if __name__ == "__main__":
    main()
