"""The standing cluster: ``zactor start --head``, its discovery file, ``zactor stop``.

``zactor start --head`` runs the head (which starts the workers) as a daemon:
a new session, standard input from ``/dev/null``, its output and its workers'
going to a log file. It outlives the terminal and every driver, until
``zactor stop``.

The *cluster file* ``cluster.json`` says where the running cluster is (the
head's address, pid and session directory, the log file). It lives in the
*cluster directory*: ``$ZACTOR_CLUSTER_DIR`` if set, else ``/tmp/zactor-<uid>``
(per user and per machine, like tmux's socket directory). ``zactor.init(
address="auto")`` reads it to join; ``zactor status`` and ``zactor stop`` read
it to find the head. A file whose head is no longer running is *stale*: it is
removed (with the dead cluster's socket directory) by whichever command finds
it.

Example::

    $ zactor start --head --num-workers 2
    $ python -c 'import zactor; zactor.init(address="auto"); ...'
    $ zactor status
    $ zactor stop
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import uuid
from typing import Iterator

from zactor.caller.handle import head_handle
from zactor.control import spawn
from zactor.control.head_store import STORE_FILE, HeadStore, remove_store
from zactor.endpoint import runtime as runtime_mod
from zactor.endpoint.runtime import Runtime
from zactor.errors import ClusterError
from zactor.processes import child_pids, process_alive, process_start_time
from zactor.transport import (
    ClusterKeys,
    handshake_failure,
    inbox_files,
    ipc_address,
    is_loopback,
    make_session_dir,
    parse_address,
    shared_memory,
    socket_file,
    tcp_address,
)
from zactor.transport import keys as cluster_keys
from zactor.wire.protocol import DRIVER, NODE

#: The environment variable that overrides the cluster directory.
CLUSTER_DIR_ENV = "ZACTOR_CLUSTER_DIR"
#: The discovery file's name inside the cluster directory.
CLUSTER_FILE = "cluster.json"
#: The head's (and its workers') log, inside the cluster directory.
LOG_FILE = "zactor.log"
#: Taken while a cluster starts or stops, so two commands never race.
LOCK_FILE = "cluster.lock"
#: How long ``zactor start`` waits for the head and its workers (seconds).
START_TIMEOUT_S = 60.0
#: How long a command waits for the head to answer one request (seconds).
REQUEST_TIMEOUT_S = 15.0
#: How long ``zactor stop`` waits for the head to stop everything before killing it.
STOP_TIMEOUT_S = 20.0
#: How long a standing cluster's workers wait for a head that died to be restarted with
#: ``zactor start --head --recover`` (seconds); then they exit.
HEAD_GRACE_S = 60.0
#: The hint every "no cluster" error ends with.
START_HINT = "start one with `zactor start --head`"


class NoClusterError(ClusterError):
    """No standing cluster runs on this machine (for this user and cluster directory)."""


class ClusterRunningError(ClusterError):
    """``zactor start --head`` found a cluster already running."""


# -- the cluster directory and file ---------------------------------------------------------


def cluster_dir(create: bool = False) -> str:
    """The cluster directory: ``$ZACTOR_CLUSTER_DIR``, else ``/tmp/zactor-<uid>``.

    With ``create=True`` it is made (mode 0700) if missing. The default one
    must belong to the current user and be private: another user could
    otherwise plant a cluster file that sends our drivers to their head.
    """
    override = os.environ.get(CLUSTER_DIR_ENV)
    path = override or os.path.join(tempfile.gettempdir(), f"zactor-{os.getuid()}")
    if create:
        os.makedirs(path, mode=0o700, exist_ok=True)
    if not override and os.path.isdir(path):
        info = os.lstat(path)
        if info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
            raise ClusterError(
                f"the zactor cluster directory {path} is not private to this user "
                f"(owner uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):o}): remove it, "
                f"or set {CLUSTER_DIR_ENV} to a directory of your own"
            )
    return path


def cluster_file_path() -> str:
    """Where the cluster file is (whether or not it exists)."""
    return os.path.join(cluster_dir(), CLUSTER_FILE)


def read_cluster_file() -> dict | None:
    """The cluster file's contents, or None if there is none (or it is unreadable)."""
    try:
        with open(cluster_file_path()) as f:
            record = json.load(f)
    except (OSError, ValueError):  # absent, or corrupt: no cluster; the next start rewrites it
        return None
    return record if isinstance(record, dict) and "address" in record else None


def write_json_atomically(path: str, record: dict) -> None:
    """Write ``record`` to ``path`` so readers never see half a file."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def open_private(path: str, mode: str):
    """``open(path, mode)`` for a file only this user may read (0600, also if it existed):
    a cluster's log names its addresses and its actors' output."""
    fd = os.open(
        path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC), 0o600
    )
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, mode)


def remove_cluster_file(path: str, pid: int) -> None:
    """Remove the cluster file at ``path`` if it still names head ``pid``.

    The head calls this as it exits, so a file is never left pointing at a
    head that is gone, while a newer cluster's file is left alone.
    """
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return
    if isinstance(record, dict) and record.get("pid") == pid:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """Hold the cluster directory's lock (waits while another start or stop runs)."""
    path = os.path.join(cluster_dir(create=True), LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def running_cluster() -> dict | None:
    """The cluster file of the cluster running on this machine, or None.

    A stale file (its head is gone) is removed on the way, together with the
    dead cluster's session directory.
    """
    record = read_cluster_file()
    if record is None or _recorded_process_alive(record):
        return record
    with _locked():
        return _running_locked()  # re-read: a start may have replaced the file meanwhile


def _running_locked() -> dict | None:
    """:func:`running_cluster` for a caller that holds the lock (flock does not nest)."""
    record = read_cluster_file()
    if record is None or _recorded_process_alive(record):
        return record
    _remove_stale(record)
    return None


def require_cluster() -> dict:
    """The running cluster's file; :class:`NoClusterError` saying how to start one if none."""
    stale = read_cluster_file()
    record = running_cluster()
    if record is not None:
        return record
    message = f"no zactor cluster is running on this machine: {START_HINT}"
    if stale is not None:
        log = f"; its log: {stale['log']}" if stale.get("log") else ""
        message += (
            f" (the cluster file named head pid {stale.get('pid')}, which is no longer running, "
            f"and was removed{log})"
        )
    raise NoClusterError(message)


def _recorded_process_alive(record: dict) -> bool:
    pid = record.get("pid")
    return isinstance(pid, int) and process_alive(pid, record.get("start_time"))


def _remove_stale(record: dict) -> None:
    session_dir = record.get("session_dir")
    # A head that keeps a store may be restarted (--recover): its workers still run and
    # listen in its session directory, which the restarted head takes over.
    if not record.get("store"):
        _remove_session_dir(session_dir)
        if isinstance(record.get("address"), str):  # its processes are gone with it
            shared_memory.sweep(record["address"])
    remove_cluster_file(cluster_file_path(), record.get("pid"))


def _remove_session_dir(session_dir) -> None:
    if isinstance(session_dir, str) and os.path.basename(session_dir).startswith("zactor-"):
        shutil.rmtree(session_dir, ignore_errors=True)  # the dead head's socket files


# -- processes ------------------------------------------------------------------------------


def _wait_gone(pids: list[int], within: float, start_times: dict | None = None) -> list[int]:
    """Poll until every pid is gone or ``within`` seconds pass; returns those left."""
    start_times = start_times or {}
    deadline = time.monotonic() + within
    while True:
        left = [p for p in pids if process_alive(p, start_times.get(p))]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def remove_dead_inbox(address: str) -> None:
    """Remove the socket files of a process that died without closing its inbox, and their
    directory if that is a ``zactor-*`` one left empty (a killed driver cannot do it)."""
    files = inbox_files(address)
    if not files:
        return
    for path in files:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    directory = os.path.dirname(files[0])
    if os.path.basename(directory).startswith("zactor-"):
        with contextlib.suppress(OSError):  # not empty, or gone: not ours to remove
            os.rmdir(directory)


# -- addresses ------------------------------------------------------------------------------


_machine_identity: str | None = None


#: Overrides :func:`node_identity`: for containers that share the host's name and
#: machine id but not its process ids (the head must not watch their pids).
NODE_IDENTITY_ENV = "ZACTOR_NODE_IDENTITY"


def node_identity() -> str:
    """A string naming this machine: the head compares a driver's with its own to know
    whether the driver's pid can be watched from here (``$ZACTOR_NODE_IDENTITY`` if set,
    else the host name and machine id)."""
    global _machine_identity
    if os.environ.get(NODE_IDENTITY_ENV):
        return os.environ[NODE_IDENTITY_ENV]
    if _machine_identity is None:
        machine = ""
        for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
            with contextlib.suppress(OSError):
                with open(path) as f:
                    machine = f.read().strip()
            if machine:
                break
        _machine_identity = f"{socket.gethostname()}/{machine[:16]}"
    return _machine_identity


def _tcp_host_port(address: str) -> tuple[str, int]:
    parsed = parse_address(address)
    if parsed.scheme != "tcp":
        raise ValueError(f"not a tcp address: {address!r}")
    return parsed.host, parsed.port


def check_head_address(address: str) -> str:
    """``address`` if it is a head address a driver can join; ``ValueError`` saying what to pass."""
    parse_address(address)
    return address


def probe_head(head_address: str) -> None:
    """Fail at once, saying what to do, when nothing listens at ``head_address``.

    ZeroMQ would wait silently for a peer that never comes; a socket file that
    is missing or a refused tcp connection is known at once. Anything else
    (a slow network, a firewall that drops) is left to the caller's timeout.
    """
    path = socket_file(head_address)
    if path is not None:
        if not os.path.exists(path):
            raise ClusterError(
                f"no zactor head listens at {head_address} (the socket file does not exist): "
                f"check the address, or {START_HINT}"
            )
        return
    host, port = _tcp_host_port(head_address)
    try:
        socket.create_connection((host, port), timeout=5.0).close()
    except ConnectionRefusedError:
        raise ClusterError(
            f"no zactor head listens at {head_address} (connection refused): check the "
            f"address, or start one with `zactor start --head --port {port}`"
        ) from None
    except OSError:
        pass


def resolve_address(address: str) -> str:
    """The head address ``zactor.init(address=...)`` joins: ``"auto"`` reads the cluster file."""
    if address == "auto":
        return require_cluster()["address"]
    return check_head_address(address)


def driver_keys(head_address: str, path: str | None = None) -> ClusterKeys | None:
    """The key bundle a driver (or a ``zactor`` command) reaches ``head_address`` with.

    None for an ``ipc://`` head (socket files need no keys). For a tcp head:
    the bundle at ``path`` if given, else ``$ZACTOR_CLUSTER_KEYS``, else the
    driver bundle ``zactor start --head`` wrote into this machine's cluster
    directory, else None (a head with keys then never answers, and the
    timeout's message says to check the keys).
    """
    if not head_address.startswith("tcp://"):
        return None
    if path:
        return cluster_keys.load_bundle(path)
    found = cluster_keys.from_environment()
    if found is not None:
        return found
    local = cluster_keys.bundle_path(cluster_keys.keys_dir(cluster_dir()), DRIVER)
    return cluster_keys.load_bundle(local) if os.path.exists(local) else None


#: How long a driver tries its first handshake with a tcp head (seconds).
HANDSHAKE_TIMEOUT_S = 5.0


def check_keys(head_address: str, keys: ClusterKeys | None, role: str = DRIVER) -> None:
    """Fail at once, saying what to do, when the tcp head at ``head_address`` refuses the
    handshake of a ``role`` process (a driver, a node agent) with ``keys`` (a wrong
    bundle, or none for a head with keys)."""
    if not head_address.startswith("tcp://"):
        return
    curve = keys.for_role(role) if keys is not None else None
    failure = handshake_failure(head_address, curve, HANDSHAKE_TIMEOUT_S)
    if failure is None:
        return
    held = f"the key bundle {keys.path}" if keys is not None else "no cluster keys"
    how = "zactor.init(keys=PATH)" if role == DRIVER else "`zactor start --keys PATH`"
    raise cluster_keys.KeysError(
        f"the zactor head at {head_address} {failure} (this process has {held}): give it "
        f"the cluster's {role} bundle with ${cluster_keys.KEYS_ENV}=PATH or {how}, copied "
        "from the head's machine (see docs/cluster.md)"
    )


def node_keys(path: str | None = None) -> ClusterKeys:
    """The key bundle a node agent joins a tcp head with: the bundle at ``path`` if
    given, else ``$ZACTOR_CLUSTER_KEYS``, else ``keys/node.keys`` in this machine's
    cluster directory; :class:`~zactor.transport.keys.KeysError` saying where to get
    one if there is none, or if it has no node key."""
    if path:
        found = cluster_keys.load_bundle(path)
    else:
        found = cluster_keys.from_environment()
        local = cluster_keys.bundle_path(cluster_keys.keys_dir(cluster_dir()), NODE)
        if found is None and os.path.exists(local):
            found = cluster_keys.load_bundle(local)
    if found is None:
        raise cluster_keys.KeysError(
            "a node joins a tcp head with the cluster's node bundle: copy keys/node.keys "
            "from the cluster directory of the head's machine to this one (mode 0600), and "
            f"pass it with --keys PATH or ${cluster_keys.KEYS_ENV}=PATH (see docs/cluster.md)"
        )
    found.for_role(NODE)  # a driver bundle has no node key: say so now
    return found


def no_answer_hint(head_address: str) -> str:
    """What to check when the head at ``head_address`` does not answer: for tcp, the keys
    too (a CURVE handshake refused for a wrong key just never delivers)."""
    if not head_address.startswith("tcp://"):
        return ""
    return (
        "; if the head runs, check the cluster keys: this process needs the cluster's "
        f"driver bundle in ${cluster_keys.KEYS_ENV} (or zactor.init(keys=PATH)), see "
        "docs/cluster.md"
    )


def local_host_for(head_address: str) -> str | None:
    """This machine's address on the way to the head at ``head_address``, for inboxes
    that the head's machine (and others) must reach: None when the head is on this
    machine (an ``ipc://`` head, or tcp on loopback), where socket files serve."""
    if head_address.startswith("ipc://"):
        return None
    host, port = _tcp_host_port(head_address)
    if is_loopback(host):
        return None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_DGRAM)
    try:  # a UDP "connection" sends nothing: it only picks the route's local address
        probe.connect((host, port))
        return probe.getsockname()[0]
    finally:
        probe.close()


def check_listen_host(host: str | None, option: str) -> None:
    """``ValueError`` if ``host`` (given as ``option``) is a wildcard: a process listening
    on every interface would give its peers no address to reach it by."""
    if host is not None and host in ("0.0.0.0", "::", "*"):
        raise ValueError(
            f"{option} {host} would listen on every interface but give its peers no address "
            f"to reach it by: pass this machine's address (e.g. {option} 10.0.0.5)"
        )


def inbox_for(head_address: str, directory: str, role: str, host: str | None = None) -> str:
    """An inbox address for a process of ``role`` (a driver, a node agent) that talks
    to the head at ``head_address``.

    On the head's machine the inbox is a socket file in ``directory``; for a
    head on another machine it is a tcp port on ``host``, by default the
    interface that routes to the head, which its workers can reach.
    """
    host = host or local_host_for(head_address)
    if host is None:
        return ipc_address(directory, f"{role}-{os.getpid()}.sock")
    return tcp_address(host, 0)


def driver_inbox(head_address: str, host: str | None = None) -> tuple[str, str | None]:
    """A driver's inbox address (:func:`inbox_for`) and the private directory made for
    its socket file, or None for a tcp inbox, which needs none (so a killed driver
    leaves no directory behind)."""
    if (host or local_host_for(head_address)) is not None:
        return inbox_for(head_address, "", "driver", host), None
    directory = make_session_dir()
    return inbox_for(head_address, directory, "driver"), directory


def worker_host(head_address: str) -> str | None:
    """Where a head at ``head_address`` has its workers listen: None for socket files
    (an ``ipc://`` or loopback head), else the head's own host, on tcp."""
    if not head_address.startswith("tcp://"):
        return None
    host, _ = _tcp_host_port(head_address)
    return None if is_loopback(host) else host


# -- talking to the head --------------------------------------------------------------------


@contextlib.contextmanager
def connect(head_address: str):
    """A short-lived connection to the head for the command line; yields the head's handle.

    Binds an inbox (removed on exit) so the head can answer. Not for a
    process that called ``zactor.init()``: it has its own connection.
    """
    if runtime_mod._current is not None:
        raise RuntimeError(
            "this process already called zactor.init(): use its connection (e.g. "
            "zactor.get_actor) instead, or run the zactor command from a shell"
        )
    keys = driver_keys(head_address)
    check_keys(head_address, keys)
    address, inbox_dir = driver_inbox(head_address)
    try:
        runtime = Runtime(
            address,
            role="driver",
            head_address=head_address,
            keys=keys,
        )
    except BaseException:
        if inbox_dir is not None:
            shutil.rmtree(inbox_dir, ignore_errors=True)
        raise
    runtime_mod.set_current(runtime)
    try:
        yield head_handle(runtime)
    finally:
        runtime_mod.set_current(None)
        runtime.close()
        if inbox_dir is not None:
            shutil.rmtree(inbox_dir, ignore_errors=True)


def _ask(head, method: str, *args, timeout: float = REQUEST_TIMEOUT_S):
    try:
        return getattr(head, method).remote(*args).result(timeout=timeout)
    except TimeoutError:
        raise ClusterError(
            f"the zactor head did not answer {method}() within {timeout:.0f} s; it may be "
            "overloaded or stuck: look at its log, or end it with `zactor stop`"
            f"{no_answer_hint(runtime_mod.current().head_address)}"
        ) from None


def status() -> dict:
    """What ``zactor status`` shows: the cluster file plus the head's :meth:`Head.status`.

    On a machine that runs a node agent but not the head, the head the node
    joined is asked.
    """
    nodes = running_nodes() if read_cluster_file() is None else []
    if nodes:
        node = nodes[0]
        record = {"address": node["head"], "log": node.get("log"), "node": node["node_id"]}
        cluster_file = node["node_file"]
    else:
        record = require_cluster()
        cluster_file = cluster_file_path()
    with connect(record["address"]) as head:
        report = _ask(head, "status")
    report["cluster"] = dict(record, cluster_file=cluster_file)
    return report


# -- start and stop -------------------------------------------------------------------------


def start_head(
    *,
    port: int | None = None,
    host: str | None = None,
    num_workers: int | None = None,
    resources: dict | None = None,
    metrics_port: int | None = None,
    metrics_max_actors: int | None = None,
    node_timeout: float | None = None,
    timeout: float = START_TIMEOUT_S,
    recover: bool = False,
) -> dict:
    """Start a standing cluster on this machine as a daemon; return its cluster file.

    ``port`` makes the head listen on ``tcp://HOST:port`` (``host`` defaults to
    127.0.0.1, loopback only); with neither, it listens on a socket file. A
    non-loopback ``host`` puts the workers on tcp on that host too, so drivers
    on other machines can reach them. ``metrics_port`` makes the head serve
    Prometheus metrics and the status page over HTTP on that port of the same
    host (0: any free port; the record's ``metrics_url`` says where), with
    per-actor series for at most ``metrics_max_actors`` actors
    (docs/observability.md). ``node_timeout``: seconds without a heartbeat
    after which a node that joined is declared dead (default
    :data:`zactor.control.head.NODE_TIMEOUT_S`). Returns once every worker
    registered. Raises
    :class:`ClusterRunningError` if a cluster already runs here.

    The head keeps its registry in ``head.sqlite3`` beside the cluster file
    (:mod:`zactor.control.head_store`), and its workers outlive it by
    :data:`HEAD_GRACE_S`. ``recover=True`` restarts a head that died: it
    reloads that registry, listens at the dead head's address again (so
    drivers and workers reconnect by themselves; a cluster that may need this
    should be started with ``--port``, since another process may take a free
    port meanwhile) and takes back the workers that still run. Without a
    store to recover it starts a new cluster. Without ``recover`` a new
    cluster replaces the last one's store.
    """
    if num_workers is None:
        num_workers = os.cpu_count() or 1
    if num_workers < 1:
        raise ValueError(f"--num-workers must be at least 1, got {num_workers}")
    if port is not None and not 0 <= port <= 65535:
        raise ValueError(f"--port must be between 0 and 65535, got {port}")
    if metrics_port is not None and not 0 <= metrics_port <= 65535:
        raise ValueError(f"--metrics-port must be between 0 and 65535, got {metrics_port}")
    if metrics_max_actors is not None and metrics_max_actors < 0:
        raise ValueError(f"--metrics-max-actors must be 0 or more, got {metrics_max_actors}")
    check_listen_host(host, "--host")
    with _locked():
        existing = _running_locked()
        if existing is not None:
            raise ClusterRunningError(
                f"a zactor cluster is already running on this machine (head pid "
                f"{existing['pid']} at {existing['address']}): use it, or stop it first "
                "with `zactor stop`"
            )
        directory = cluster_dir()
        store = os.path.join(directory, STORE_FILE)
        previous = _previous_head(store, recover)
        session_dir = previous.get("session_dir") or make_session_dir()
        if previous.get("address") and port is None and host is None:
            address = previous["address"]  # drivers and workers reconnect to it
        elif port is None and host is None:
            address = ipc_address(session_dir, "head.sock")
        else:
            address = tcp_address(host or "127.0.0.1", port or 0)
        if address.startswith("tcp://"):  # every tcp socket of the cluster speaks CURVE
            cluster_keys.create_cluster_keys(cluster_keys.keys_dir(directory))
        log_path = os.path.join(directory, LOG_FILE)
        address_file = os.path.join(session_dir, "head.address")
        with open_private(log_path, "wb") as log:
            log.write(f"zactor start --head: {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
            log.flush()
            proc = spawn.start_head(
                session_dir,
                address,
                num_workers,
                resources,
                cluster_file=os.path.join(directory, CLUSTER_FILE),
                address_file=address_file,
                metrics_port=metrics_port,
                metrics_host=host or "127.0.0.1",
                metrics_max_actors=metrics_max_actors,
                node_timeout=node_timeout,
                store=store,
                recover=recover,
                head_grace=HEAD_GRACE_S,
                stdout=log,
                stderr=log,
                detach=True,
            )
        try:
            deadline = time.monotonic() + timeout
            head_address = _wait_for_address(proc, address_file, log_path, deadline)
            info = _wait_for_workers(proc, head_address, num_workers, log_path, deadline)
            record = {
                "address": head_address,
                "pid": proc.pid,
                "start_time": process_start_time(proc.pid),
                "session_dir": session_dir,
                "log": log_path,
                "num_workers": num_workers,
                "resources": resources or {},
                "node": node_identity(),
                "started_at": time.time(),
                "metrics_url": info.get("metrics_url"),
                "store": store,
            }
            write_json_atomically(os.path.join(directory, CLUSTER_FILE), record)
        except BaseException:
            _end_child(proc)
            shutil.rmtree(session_dir, ignore_errors=True)
            raise
    return dict(record, cluster_file=os.path.join(directory, CLUSTER_FILE))


def _previous_head(store: str, recover: bool) -> dict:
    """Where the last head listened and kept its socket files (``{"address",
    "session_dir"}``), read from its store when recovering and it is there; ``{}`` for
    a new cluster, whose start removes the last one's session directory and store."""
    if not os.path.exists(store):
        return {}
    try:
        head_store = HeadStore.open(store)
    except ClusterError:
        if recover:
            raise  # says which file, and to move it aside or start without --recover
        remove_store(store)
        return {}
    try:
        meta = head_store.load().meta
    finally:
        head_store.close()
    if recover and os.path.isdir(meta.get("session_dir", "")):
        return meta
    _remove_session_dir(meta.get("session_dir"))
    if not recover:
        remove_store(store)
    return {}


def _start_failed(
    proc: subprocess.Popen, log_path: str, what: str, what_failed: str = "head"
) -> ClusterError:
    try:
        with open(log_path, errors="replace") as f:
            tail = "".join(f.readlines()[-15:]).rstrip()
    except OSError:
        tail = ""
    code = proc.poll()
    how = f"exited with code {code}" if code is not None else what
    detail = f":\n{tail}\n" if tail else ""
    return ClusterError(
        f"the zactor {what_failed} {how} during start-up{detail}(its log: {log_path})"
    )


def _wait_for_address(proc, address_file: str, log_path: str, deadline: float) -> str:
    """The address the head bound (it writes it once its inbox is up)."""
    while True:
        if proc.poll() is not None:
            raise _start_failed(proc, log_path, "exited")
        with contextlib.suppress(FileNotFoundError):
            with open(address_file) as f:
                return json.load(f)  # written atomically: whole or absent
        if time.monotonic() > deadline:
            raise _start_failed(proc, log_path, "did not bind its address in time")
        time.sleep(0.02)


def wait_for_workers(head, proc, count: int, deadline: float, exited, late) -> dict:
    """Ask ``head`` until ``count`` workers registered; return its ``cluster_info``.

    Raises ``exited()`` if ``proc`` (the head process) ends first, ``late()``
    once ``time.monotonic()`` passes ``deadline``.
    """
    while True:
        if proc.poll() is not None:
            raise exited()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise late()
        try:
            info = head.cluster_info.remote().result(timeout=min(1.0, remaining))
        except TimeoutError:
            continue
        if len(info["workers"]) >= count:
            return info
        time.sleep(0.005)


def _wait_for_workers(proc, head_address: str, count: int, log_path: str, deadline: float) -> dict:
    with connect(head_address) as head:
        return wait_for_workers(
            head,
            proc,
            count,
            deadline,
            exited=lambda: _start_failed(proc, log_path, "exited"),
            late=lambda: _start_failed(
                proc, log_path, f"did not see all {count} workers register in time"
            ),
        )


def _end_child(proc: subprocess.Popen) -> None:
    """End a head that failed to start (and, through it, its workers)."""
    if proc.poll() is None:
        workers = child_pids(proc.pid)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        _signal_all(_wait_gone(workers, 5.0), signal.SIGKILL)


def stop(timeout: float = STOP_TIMEOUT_S) -> dict:
    """Stop the running cluster: its workers (and their actors), the head, socket files and
    the cluster file. Raises :class:`NoClusterError` if none runs.

    The head is asked to stop; one that does not within ``timeout`` seconds
    gets SIGTERM, then SIGKILL, and so do workers it left behind.
    """
    stopped = _stop_headless()
    if stopped is not None:
        return stopped
    require_cluster()  # the friendly error, outside the lock
    with _locked():
        record = _running_locked()
        if record is None:
            raise NoClusterError(f"no zactor cluster is running on this machine: {START_HINT}")
        head_pid = record["pid"]
        start_time = record.get("start_time")
        workers = set(child_pids(head_pid))
        asked = False
        with contextlib.suppress(ClusterError, OSError, RuntimeError):
            with connect(record["address"]) as head:
                with contextlib.suppress(TimeoutError):
                    info = head.cluster_info.remote().result(timeout=5.0)
                    # Only this machine's: a pid of another node's means nothing here.
                    workers.update(
                        w["pid"] for w in info["workers"] if w["node_id"] == info["node_id"]
                    )
                head.shutdown.tell()
                runtime_mod.current().flush()
                asked = True
        worker_pids = sorted(workers)
        times = {p: process_start_time(p) for p in worker_pids}
        times[head_pid] = start_time
        forced = False
        if not asked or _wait_gone([head_pid], timeout, times):
            forced = True
            _signal_all([head_pid], signal.SIGTERM)
            if _wait_gone([head_pid], 5.0, times):
                _signal_all([head_pid], signal.SIGKILL)
                _wait_gone([head_pid], 5.0, times)
        left = _wait_gone(worker_pids, 5.0, times)
        if left:  # workers exit when their head does; these did not in time
            forced = True
            _signal_all(left, signal.SIGKILL)
            left = _wait_gone(left, 5.0, times)
        _remove_stale(record)  # what a killed head could not remove itself
    survivors = left + ([head_pid] if process_alive(head_pid, start_time) else [])
    if survivors:
        raise ClusterError(
            f"zactor stop could not end every process of the cluster: pids {survivors} still "
            "run; end them with `kill -9`"
        )
    return {
        "stopped": True,
        "address": record["address"],
        "head_pid": head_pid,
        "worker_pids": worker_pids,
        "forced": forced,
    }


def _stop_headless() -> dict | None:
    """``zactor stop`` for a cluster whose head died and was not restarted (``--recover``):
    its workers still wait for a head, its session directory and store are kept for
    one. End the workers on this machine, remove both, and return what was stopped;
    None if this machine has no such cluster."""
    with _locked():
        record = read_cluster_file()
        directory = cluster_dir()
        store_path = os.path.join(directory, STORE_FILE)
        if record is not None and _recorded_process_alive(record):
            return None  # a live head: the ordinary stop
        if not os.path.exists(store_path):
            return None
        try:
            store = HeadStore.open(store_path)
        except ClusterError:  # damaged: nothing to learn from it, and nobody can recover it
            remove_store(store_path)
            return None
        try:
            snapshot = store.load()
        finally:
            store.close()
        # This machine's workers (a node's belong to its agent), still the same processes:
        # the store has no start times, so a pid is trusted only with the worker's id in
        # its command line.
        pids = [
            w["pid"]
            for w in snapshot.workers.values()
            if w["node_id"] not in snapshot.nodes and _runs_worker(w["pid"], w["worker_id"])
        ]
        _signal_all(pids, signal.SIGTERM)
        left = _wait_gone(pids, 5.0)
        _signal_all(left, signal.SIGKILL)
        _wait_gone(left, 5.0)
        _remove_session_dir(snapshot.meta.get("session_dir"))
        if isinstance(snapshot.meta.get("address"), str):
            shared_memory.sweep(snapshot.meta["address"])
        remove_store(store_path)
        if record is not None:
            remove_cluster_file(cluster_file_path(), record.get("pid"))
    return {
        "stopped": True,
        "address": snapshot.meta.get("address"),
        "head_pid": None,
        "worker_pids": pids,
        "forced": bool(left),
    }


def _runs_worker(pid: int, worker_id: str) -> bool:
    """True if ``pid`` is the zactor worker process ``worker_id``."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return b"zactor.worker.main" in argv and worker_id.encode() in argv


# -- nodes: machines that join a head elsewhere (zactor.control.node) -------------------------

#: A node agent's record in the cluster directory: ``node-<node id>.json``.
NODE_FILE = "node-{}.json"
#: A node agent's (and its workers') log in the cluster directory.
NODE_LOG = "node-{}.log"


def default_node_id() -> str:
    """A node id for this machine: its host name and six random hex digits."""
    return f"{socket.gethostname().split('.')[0]}-{uuid.uuid4().hex[:6]}"


def running_nodes() -> list[dict]:
    """The node agents started from this machine's cluster directory that still run
    (the files of those that do not are removed on the way)."""
    directory = cluster_dir()
    records = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return records
    for name in names:
        if not (name.startswith("node-") and name.endswith(".json")):
            continue
        path = os.path.join(directory, name)
        try:
            with open(path) as f:
                record = json.load(f)
        except (OSError, ValueError):
            continue  # being written, or corrupt: not a node we can stop
        if _recorded_process_alive(record):
            records.append(dict(record, node_file=path))
        else:  # a killed agent could not remove its socket files
            _remove_session_dir(record.get("session_dir"))
            remove_cluster_file(path, record.get("pid"))
    return records


def start_node(
    head_address: str,
    *,
    num_workers: int | None = None,
    resources: dict | None = None,
    host: str | None = None,
    node_id: str | None = None,
    keys_path: str | None = None,
    timeout: float = START_TIMEOUT_S,
) -> dict:
    """Start a node agent on this machine, as a daemon, that joins the head at
    ``head_address`` with ``num_workers`` workers sharing ``resources``; return its
    record once every worker registered (``ClusterError`` with its log's tail if not).

    ``host`` is the address this machine's workers listen on (default: this
    machine's address on the route to the head). ``keys_path``: the cluster's
    node bundle (default: :func:`node_keys`'s search). See :mod:`zactor.control.node`.
    """
    if num_workers is None:
        num_workers = os.cpu_count() or 1
    if num_workers < 1:
        raise ValueError(f"--num-workers must be at least 1, got {num_workers}")
    if parse_address(head_address).scheme != "tcp":
        raise ValueError(
            f"a node joins a head over tcp: pass the address `zactor start --head --port` "
            f"printed, such as tcp://10.0.0.5:6380, not {head_address!r}"
        )
    probe_head(head_address)
    keys = node_keys(keys_path)
    check_keys(head_address, keys, NODE)
    node_id = node_id or default_node_id()
    directory = cluster_dir(create=True)
    node_file = os.path.join(directory, NODE_FILE.format(node_id))
    log_path = os.path.join(directory, NODE_LOG.format(node_id))
    # Socket files for the agent and its workers only where they listen on them (a head
    # on this machine); on tcp there is nothing a killed agent could leave behind.
    session_dir = make_session_dir() if (host or local_host_for(head_address)) is None else ""
    args = [
        "--head",
        head_address,
        "--node-id",
        node_id,
        "--session-dir",
        session_dir,
        "--num-workers",
        str(num_workers),
        "--resources",
        json.dumps(resources or {}),
        "--node-file",
        node_file,
        "--log",
        log_path,
        "--keys",
        keys.path,
    ]
    if host is not None:
        args += ["--host", host]
    with open_private(log_path, "ab") as log:
        log.write(f"zactor start --address: {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        log.flush()
        proc = spawn.start("zactor.control.node", args, stdout=log, stderr=log, detach=True)
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(FileNotFoundError, ValueError):
            with open(node_file) as f:
                record = json.load(f)
            if record.get("pid") == proc.pid:
                return dict(record, node_file=node_file)
        if proc.poll() is not None:
            _remove_session_dir(session_dir)
            raise _start_failed(proc, log_path, "exited", what_failed="node agent")
        if time.monotonic() > deadline:
            _end_child(proc)
            _remove_session_dir(session_dir)
            raise _start_failed(
                proc, log_path, "did not join the head in time", what_failed="node agent"
            )
        time.sleep(0.05)


def stop_nodes(timeout: float = STOP_TIMEOUT_S) -> list[dict]:
    """Stop every node agent of this machine's cluster directory (and their workers):
    SIGTERM, then SIGKILL for one still running after ``timeout`` seconds. Returns
    what was stopped; :class:`NoClusterError` if no node runs here."""
    nodes = running_nodes()
    if not nodes:
        raise NoClusterError(
            f"no zactor cluster or node is running on this machine: {START_HINT}, or join "
            "one with `zactor start --address tcp://HEAD:PORT`"
        )
    pids = [node["pid"] for node in nodes]
    times = {node["pid"]: node.get("start_time") for node in nodes}
    workers = {pid: child_pids(pid) for pid in pids}
    _signal_all(pids, signal.SIGTERM)
    left = _wait_gone(pids, timeout, times)
    _signal_all(left, signal.SIGKILL)
    _wait_gone(left, 5.0, times)
    orphans = _wait_gone([w for ws in workers.values() for w in ws], 5.0)
    _signal_all(orphans, signal.SIGKILL)
    stopped = []
    for node in nodes:
        if not process_alive(node["pid"], node.get("start_time")):
            remove_cluster_file(node["node_file"], node["pid"])
            _remove_session_dir(node.get("session_dir"))
        stopped.append(
            {
                "node_id": node["node_id"],
                "pid": node["pid"],
                "head": node["head"],
                "worker_pids": workers[node["pid"]],
                "forced": node["pid"] in left,
            }
        )
    return stopped
