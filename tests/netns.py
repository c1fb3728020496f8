"""Separate network hosts on one machine, for the tests of a cluster spread over nodes.

A :class:`NetnsLab` gives each host its own Linux network namespace: its own
interfaces, its own IP address and its own TCP ports, joined to the root
namespace (where the test runs) by a veth pair on a bridge. Every process a host
starts sees only that host's network, so a node agent in host 1 reaches the head
over real TCP on a real address, and taking its veth down cuts it off (a network
partition) while every process keeps running. It needs root and ``ip`` (Debian's
``iproute2``; ``.ci/run`` installs it when it runs as root with apt-get).

Where namespaces are not available, :class:`LoopbackLab` runs every host in the
root namespace on its own loopback address (127.0.0.2, 127.0.0.3, ...): enough
for a test that needs several addresses, not for one that needs a partition.
:func:`open_lab` picks one, and says why when it cannot give what a test needs;
the ``network_lab`` fixture (``tests/conftest.py``) turns that into a skip.

Nothing outlives its lab: closing it kills every process in each namespace,
deletes the namespaces, veths and bridge. A lab whose process died without
closing it (SIGKILL, a timeout's ``os._exit``) is removed by the next lab that
opens on this machine: each lab writes a record of what it made, naming its
owner, under :data:`RECORDS`, and only labs whose owner no longer runs are swept.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from zactor.control.spawn import child_environment

#: Where each open lab keeps the record of what it made (one JSON file per subnet).
RECORDS = (
    "/run/zactor-netlab"
    if os.path.isdir("/run")
    else os.path.join(tempfile.gettempdir(), "zactor-netlab")
)

#: The labs' subnets are /24s of this network, one per open lab on the machine.
SUPERNET = ipaddress.ip_network("10.211.0.0/16")

#: How long one ``ip`` command, or killing a host's processes, may take.
COMMAND_TIMEOUT = 30.0

#: Set to ``loopback`` to make :func:`open_lab` run hosts on loopback addresses even
#: where namespaces work (to exercise a cluster test's loopback path).
MODE_VARIABLE = "ZACTOR_TEST_HOSTS"


class LabError(RuntimeError):
    """Setting up, using or tearing down a lab failed (the message says which step)."""


class LabUnavailable(Exception):
    """This machine cannot give the lab a test asked for; the message says why."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``ip ARGS`` (bounded); :class:`LabError` with its stderr if it fails and
    ``check``."""
    try:
        done = subprocess.run(
            ["ip", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"`ip {' '.join(args)}` did not finish in {COMMAND_TIMEOUT} s") from exc
    if check and done.returncode != 0:
        raise LabError(
            f"`ip {' '.join(args)}` failed (exit {done.returncode}): {done.stderr.strip()}"
        )
    return done


def namespaces() -> set[str]:
    """The names of the network namespaces ``ip netns`` knows on this machine."""
    return {line.split()[0] for line in ip("netns", "list").stdout.splitlines() if line.strip()}


def links() -> set[str]:
    """The names of the network interfaces in the root namespace."""
    return {entry["ifname"] for entry in json.loads(ip("-j", "link", "show").stdout or "[]")}


def namespace_pids(namespace: str) -> list[int]:
    """The processes running in ``namespace`` (none if it does not exist)."""
    done = ip("netns", "pids", namespace, check=False)
    return [int(pid) for pid in done.stdout.split()] if done.returncode == 0 else []


_probed: list[str | None] = []


def netns_unavailable() -> str | None:
    """Why this process cannot make a :class:`NetnsLab`, or None if it can.

    Tried for real once per process (a namespace, a bridge and a veth made and
    deleted): containers often forbid one of them even to root.
    """
    if _probed:
        return _probed[0]
    reason = None
    if os.geteuid() != 0:
        reason = "not root: network namespaces, bridges and veths need root (CAP_NET_ADMIN)"
    elif shutil.which("ip") is None:
        reason = (
            "`ip` not installed: `apt-get install iproute2` (.ci/run installs it when it "
            "runs as root with apt-get)"
        )
    else:
        tag = f"{os.getpid():x}"
        probe_ns, bridge, veth = f"zh-{os.getpid()}-probe", f"zp{tag}b", f"zp{tag}v"
        try:
            ip("netns", "add", probe_ns)
            ip("link", "add", bridge, "type", "bridge")
            ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", probe_ns)
            ip("link", "set", veth, "master", bridge)
        except LabError as exc:
            reason = f"network namespaces not permitted here: {exc}"
        finally:
            ip("link", "del", veth, check=False)
            ip("link", "del", bridge, check=False)
            ip("netns", "del", probe_ns, check=False)
    _probed.append(reason)
    return reason


def loopback_unavailable() -> str | None:
    """Why hosts cannot have their own loopback addresses here, or None if they can."""
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.2", 0))
    except OSError as exc:
        return f"127.0.0.2 is not a loopback address here ({exc}): hosts cannot be told apart"
    return None


def start_time(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot), or None if it does not run (a
    zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return None if fields[0] in (b"Z", b"X") else fields[19].decode()


def _pid_namespace() -> str:
    return os.readlink("/proc/self/ns/pid")


def _owner_gone(record: dict) -> bool:
    """Whether the process that made ``record``'s lab no longer runs. A lab made in
    another PID namespace is never called gone: its owner's pid means nothing here."""
    if record.get("pidns") != _pid_namespace():
        return False
    return start_time(record["pid"]) != record["start"]


def _kill_namespace(namespace: str) -> None:
    """SIGKILL every process in ``namespace`` until none is left (they may fork)."""
    deadline = time.monotonic() + COMMAND_TIMEOUT
    while pids := namespace_pids(namespace):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise LabError(f"processes {pids} in namespace {namespace} survived SIGKILL")
        time.sleep(0.01)


def _remove(record: dict) -> list[str]:
    """Delete everything ``record`` lists; every step is tried. The failures, as text."""
    failures = []
    for namespace in record["namespaces"]:
        try:
            _kill_namespace(namespace)
        except LabError as exc:
            failures.append(str(exc))
    # Veths first: deleting one end deletes the other at once, where deleting a namespace
    # frees its end (and so ours) only later, in the kernel's own time.
    for link in [*record["links"], record["bridge"]]:
        done = ip("link", "del", link, check=False)
        if done.returncode != 0 and link in links():
            failures.append(f"could not delete link {link}: {done.stderr.strip()}")
    present = namespaces()
    for namespace in record["namespaces"]:
        if namespace in present:
            done = ip("netns", "del", namespace, check=False)
            if done.returncode != 0 and namespace in namespaces():
                failures.append(f"could not delete namespace {namespace}: {done.stderr.strip()}")
    return failures


@contextlib.contextmanager
def records_locked():
    """Hold the machine-wide lock over the records (sweeping and picking a subnet).

    Not reentrant, even in one process: inside it, use :func:`sweep_stale_locked`.
    """
    os.makedirs(RECORDS, mode=0o700, exist_ok=True)
    with open(os.path.join(RECORDS, "lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_records() -> dict[str, dict]:
    records = {}
    for name in os.listdir(RECORDS):
        if name.endswith(".json"):
            try:
                with open(os.path.join(RECORDS, name)) as f:
                    records[name] = json.load(f)
            except (OSError, ValueError):
                continue  # being written by a lab that holds no lock: not ours to judge
    return records


def sweep_stale() -> list[str]:
    """Remove the labs whose owning process no longer runs; the subnets they held.

    Only what a lab's own record names is touched: never an interface or namespace
    another process made, nor a lab whose owner still runs.
    """
    with records_locked():
        return sweep_stale_locked()


def sweep_stale_locked() -> list[str]:
    """:func:`sweep_stale` for a caller already inside :func:`records_locked`."""
    swept = []
    for name, record in _read_records().items():
        if _owner_gone(record):
            failures = _remove(record)
            if failures:
                raise LabError(
                    f"could not remove the stale lab of dead process {record['pid']} "
                    f"({name}): {'; '.join(failures)}. Remove them by hand, then delete "
                    f"{os.path.join(RECORDS, name)}"
                )
            os.unlink(os.path.join(RECORDS, name))
            swept.append(record["subnet"])
    return swept


def _networks_in_use() -> list[ipaddress.IPv4Network]:
    """The IPv4 networks this machine's root namespace has addresses or routes in."""
    used = []
    for entry in json.loads(ip("-j", "-4", "addr", "show").stdout or "[]"):
        for info in entry.get("addr_info", []):
            used.append(ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", False))
    for route in json.loads(ip("-j", "-4", "route", "show", "table", "all").stdout or "[]"):
        dst = route.get("dst", "default")
        if dst != "default":
            used.append(ipaddress.ip_network(dst, strict=False))
    return used


class Host:
    """One host of a lab: an address, and the processes started on it."""

    def __init__(
        self,
        lab: NetnsLab | LoopbackLab,
        index: int,
        address: str,
        namespace: str | None = None,
        veth: str | None = None,
    ) -> None:
        self.lab = lab
        self.index = index
        #: This host's IP address: what its processes bind, and what others dial.
        self.address = address
        #: Its network namespace and the root namespace's end of its veth (None on loopback).
        self.namespace = namespace
        self.veth = veth
        self._procs: list[subprocess.Popen] = []

    def __repr__(self) -> str:
        return f"<Host {self.index} {self.address} of {self.lab!r}>"

    def popen(
        self,
        argv: list[str],
        *,
        env: dict | None = None,
        stdout=None,
        stderr=None,
        cwd: str | None = None,
        text: bool = True,
    ) -> subprocess.Popen:
        """Start ``argv`` on this host; it is killed when the host is or the lab closes.

        Its environment is the test's, with the test's ``sys.path`` as ``PYTHONPATH``
        (as zactor gives the processes it spawns), updated with ``env``; run Python
        as ``sys.executable`` to get the test's interpreter. Standard input is
        ``/dev/null``.
        """
        merged = child_environment()
        merged.update(env or {})
        proc = subprocess.Popen(
            self.lab._wrap(self, list(argv)),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd,
            env=merged,
            text=text,
            start_new_session=True,  # kill() reaches the whole group on loopback
        )
        self._procs.append(proc)
        return proc

    def kill(self) -> None:
        """SIGKILL every process of this host (a machine lost), and reap ours."""
        self.lab._kill(self)
        for proc in self._procs:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            try:
                proc.wait(timeout=COMMAND_TIMEOUT)
            except subprocess.TimeoutExpired as exc:
                raise LabError(f"process {proc.pid} on {self!r} survived SIGKILL") from exc
        self._procs.clear()

    def partition(self) -> None:
        """Cut this host off the network; its processes keep running."""
        self.lab.partition(self.index)

    def heal(self) -> None:
        """Connect this host again after :meth:`partition`."""
        self.lab.heal(self.index)


class NetnsLab:
    """``hosts`` network namespaces on one bridge, each host a separate IP host.

    The bridge holds :attr:`root_address` in the root namespace (bind a head
    there); host ``i`` has address ``10.211.X.(i+2)`` on its ``eth0``. Use it as a
    context manager (or :meth:`open`/:meth:`close`).
    """

    kind = "netns"
    #: Network namespaces cut a host off (:meth:`partition`).
    can_partition = True

    def __init__(self, hosts: int) -> None:
        if not 1 <= hosts <= 200:
            raise ValueError(f"a lab has 1 to 200 hosts, not {hosts}")
        self.size = hosts
        self.hosts: list[Host] = []
        self.root_address = ""
        self._record: dict | None = None
        self._record_path = ""

    def __repr__(self) -> str:
        subnet = self._record["subnet"] if self._record else "closed"
        return f"<NetnsLab {subnet} hosts={self.size}>"

    def __enter__(self) -> NetnsLab:
        return self if self._record is not None else self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def host(self, index: int) -> Host:
        """Host ``index`` (0-based)."""
        return self.hosts[index]

    def open(self) -> NetnsLab:
        """Sweep stale labs, claim a free subnet, make the bridge, namespaces and veths."""
        if self._record is not None:
            raise LabError(f"{self!r} is already open")
        reason = netns_unavailable()
        if reason:
            raise LabUnavailable(reason)
        self._claim()
        atexit.register(self.close)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _claim(self) -> None:
        pid, tag = os.getpid(), f"{os.getpid():x}"
        with records_locked():
            sweep_stale_locked()
            taken = {record["subnet"] for record in _read_records().values()}
            used = _networks_in_use()
            for subnet in SUPERNET.subnets(new_prefix=24):
                if str(subnet) in taken or any(subnet.overlaps(net) for net in used):
                    continue
                third = subnet.network_address.packed[2]
                record = {
                    "pid": pid,
                    "start": start_time(pid),
                    "pidns": _pid_namespace(),
                    "subnet": str(subnet),
                    # Interface names are at most 15 characters: "zv" + pid in hex
                    # (at most 6) + "-" + subnet byte (2) + "-" + host (2) = 14.
                    "bridge": f"zb{tag}-{third:02x}",
                    "links": [f"zv{tag}-{third:02x}-{i:x}" for i in range(self.size)],
                    "namespaces": [f"zh-{pid}-{third}-{i}" for i in range(self.size)],
                }
                path = os.path.join(RECORDS, f"{third}.json")
                with open(path, "x") as f:
                    json.dump(record, f)
                self._record, self._record_path = record, path
                return
        raise LabError(
            f"no free /24 left in {SUPERNET} for a lab: every one is held by an open lab "
            f"(records in {RECORDS}) or overlaps an address or route of this machine"
        )

    def _build(self) -> None:
        record = self._record
        subnet = ipaddress.ip_network(record["subnet"])
        bridge = record["bridge"]
        self.root_address = str(subnet.network_address + 1)
        ip("link", "add", bridge, "type", "bridge")
        ip("addr", "add", f"{self.root_address}/24", "dev", bridge)
        ip("link", "set", bridge, "up")
        for i, (namespace, veth) in enumerate(zip(record["namespaces"], record["links"])):
            address = str(subnet.network_address + i + 2)
            ip("netns", "add", namespace)
            # The namespace's end is made there directly, so its name cannot clash.
            ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", namespace)
            ip("link", "set", veth, "master", bridge)
            ip("link", "set", veth, "up")
            ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
            ip("-n", namespace, "link", "set", "eth0", "up")
            ip("-n", namespace, "link", "set", "lo", "up")
            self.hosts.append(Host(self, i, address, namespace, veth))

    def _wrap(self, host: Host, argv: list[str]) -> list[str]:
        if self._record is None:
            raise LabError(f"{self!r} is closed: open it before starting processes")
        return ["ip", "netns", "exec", host.namespace, *argv]

    def _kill(self, host: Host) -> None:
        _kill_namespace(host.namespace)

    def partition(self, index: int) -> None:
        """Take host ``index``'s veth down: nothing reaches it or leaves it."""
        ip("link", "set", self.hosts[index].veth, "down")

    def heal(self, index: int) -> None:
        """Bring host ``index``'s veth up again."""
        ip("link", "set", self.hosts[index].veth, "up")

    def close(self) -> None:
        """Kill every process in the lab's namespaces; delete them, the veths and the
        bridge. Every step is tried; :class:`LabError` lists those that failed."""
        atexit.unregister(self.close)
        if self._record is None:
            return
        failures = _remove(self._record)
        for host in self.hosts:
            for proc in host._procs:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=COMMAND_TIMEOUT)
        if failures:
            # The record stays: a later lab sweeps what is left once this process ends.
            self._record = None
            raise LabError(f"{self!r} was not fully removed: {'; '.join(failures)}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._record_path)
        self._record = None


class LoopbackLab:
    """``hosts`` hosts in the root namespace, host ``i`` on 127.0.0.(i+2).

    For tests that need several addresses on one machine where network namespaces
    are not available. There is no partition: :meth:`partition` raises. Closing
    kills the process groups of the processes its hosts started (a process that
    starts its own session must be ended by whoever started it).
    """

    kind = "loopback"
    can_partition = False

    def __init__(self, hosts: int) -> None:
        if not 1 <= hosts <= 200:
            raise ValueError(f"a lab has 1 to 200 hosts, not {hosts}")
        self.size = hosts
        self.root_address = "127.0.0.1"
        self.hosts = [Host(self, i, f"127.0.0.{i + 2}") for i in range(hosts)]

    def __repr__(self) -> str:
        return f"<LoopbackLab hosts={self.size}>"

    def __enter__(self) -> LoopbackLab:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def host(self, index: int) -> Host:
        """Host ``index`` (0-based)."""
        return self.hosts[index]

    def open(self) -> LoopbackLab:
        """Check that loopback addresses other than 127.0.0.1 work here."""
        reason = loopback_unavailable()
        if reason:
            raise LabUnavailable(reason)
        return self

    def _wrap(self, host: Host, argv: list[str]) -> list[str]:
        return argv

    def _kill(self, host: Host) -> None:
        for proc in host._procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

    def partition(self, index: int) -> None:
        """Unavailable: every host shares the root namespace's loopback."""
        raise LabError(
            "this lab runs every host on loopback, which cannot be cut off: a partition "
            "needs network namespaces (root and `ip`). Declare needs_partition=True so the "
            "test skips here"
        )

    heal = partition

    def close(self) -> None:
        """Kill what the hosts started (their process groups)."""
        for host in self.hosts:
            host.kill()


def open_lab(
    hosts: int = 2, *, needs_partition: bool = False, loopback: bool = True
) -> NetnsLab | LoopbackLab:
    """An open lab of ``hosts`` hosts: namespaces where they work, else loopback
    addresses if the test allows it (``loopback``) and needs no partition.

    :class:`LabUnavailable` says why neither fits. ``ZACTOR_TEST_HOSTS=loopback``
    picks loopback even where namespaces work.
    """
    forced = os.environ.get(MODE_VARIABLE, "")
    if forced not in ("", "loopback", "netns"):
        raise LabUnavailable(f"{MODE_VARIABLE}={forced!r}: set it to `loopback`, `netns` or unset")
    reason = f"{MODE_VARIABLE}=loopback" if forced == "loopback" else netns_unavailable()
    if reason is None:
        return NetnsLab(hosts).open()
    if forced == "netns":
        raise LabUnavailable(f"{MODE_VARIABLE}=netns but {reason}")
    if needs_partition:
        raise LabUnavailable(
            f"this test cuts a host off the network, which needs a network "
            f"namespace per host: {reason}"
        )
    if not loopback:
        raise LabUnavailable(f"this test needs a network namespace per host: {reason}")
    lab = LoopbackLab(hosts).open()
    lab.fallback_reason = reason
    return lab
