"""Starting zactor's own processes (the head, its workers) with the right code.

``python -m zactor.worker`` would put the current directory first on the
child's ``sys.path``; run from a source checkout, the child would then import
the checkout's ``zactor`` (without its compiled extension) instead of the one
the parent imported. Children start through a two-line bootstrap that puts the
parent's ``zactor`` first, and inherit the parent's ``sys.path`` so actor
classes defined in the driver's modules are found by reference.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

#: The directory holding the ``zactor`` package this process imported.
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Import the module and call its main() rather than running it as __main__, so
# its classes (WorkerService, ActorHost) are the same objects everywhere.
_BOOTSTRAP = (
    "import sys, importlib; sys.path.insert(0, sys.argv.pop(1)); "
    "module = importlib.import_module(sys.argv.pop(1)); getattr(module, sys.argv.pop(1))()"
)


def child_environment() -> dict:
    """Our environment, with our ``sys.path`` as the child's ``PYTHONPATH``."""
    env = dict(os.environ)
    paths = [p or os.getcwd() for p in sys.path if os.path.isdir(p or os.getcwd())]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([_PACKAGE_ROOT, *paths]))
    return env


def start(
    module: str,
    args: list[str],
    *,
    entry: str = "main",
    stdout=None,
    stderr=None,
    detach: bool = False,
    pass_fds: tuple = (),
) -> subprocess.Popen:
    """Start a process running ``module.entry()`` with ``sys.argv[1:] == args``,
    importing the same zactor as this process.

    ``detach=True`` starts it in a new session, so it has no controlling
    terminal and closing ours does not send it SIGHUP (``zactor start --head``).
    Standard input is always ``/dev/null``. ``pass_fds``: descriptors the child
    inherits (``subprocess.Popen``'s), as the bench's pipe actor's end of its pipe.
    """
    return subprocess.Popen(
        [sys.executable, "-c", _BOOTSTRAP, _PACKAGE_ROOT, module, entry, *args],
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        env=child_environment(),
        start_new_session=detach,
        pass_fds=pass_fds,
    )


def start_head(
    session_dir: str,
    address: str,
    num_workers: int,
    resources: dict | None,
    *,
    watch_parent: bool = False,
    cluster_file: str | None = None,
    address_file: str | None = None,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    metrics_max_actors: int | None = None,
    node_timeout: float | None = None,
    store: str | None = None,
    recover: bool = False,
    head_grace: float = 0.0,
    stdout=None,
    stderr=None,
    detach: bool = False,
) -> subprocess.Popen:
    """Start a head process (:mod:`zactor.control.head_main`) that binds ``address``
    and starts ``num_workers`` workers sharing ``resources``.

    ``watch_parent``: the cluster ends with this process (an embedded cluster).
    ``cluster_file``: a standing cluster's file, removed when the head exits.
    ``address_file``: where the head writes the address it bound, once it listens.
    ``metrics_port``: serve metrics and the status page on ``metrics_host`` at
    that port (0: any free one), with per-actor series for at most
    ``metrics_max_actors`` actors (see :mod:`zactor.control.metrics`).
    ``node_timeout``: seconds without a heartbeat that make a node dead.
    ``store``: keep the registry in this :class:`~zactor.control.head_store.HeadStore`
    file (a new one, or with ``recover`` the one a dead head left: reloaded); its
    workers then wait ``head_grace`` seconds for a head that died to restart.
    """
    args = [
        "--session-dir",
        session_dir,
        "--address",
        address,
        "--num-workers",
        str(num_workers),
        "--resources",
        json.dumps(resources or {}),
    ]
    if watch_parent:
        args.append("--watch-parent")
    if cluster_file is not None:
        args += ["--cluster-file", cluster_file]
    if address_file is not None:
        args += ["--address-file", address_file]
    if store is not None:
        args += ["--store", store, "--head-grace", str(head_grace)]
        if recover:
            args.append("--recover")
    if metrics_port is not None:
        args += ["--metrics-port", str(metrics_port), "--metrics-host", metrics_host]
        if metrics_max_actors is not None:
            args += ["--metrics-max-actors", str(metrics_max_actors)]
    if node_timeout is not None:
        args += ["--node-timeout", str(node_timeout)]
    return start("zactor.control.head_main", args, stdout=stdout, stderr=stderr, detach=detach)


def start_worker(
    head_address: str,
    address: str,
    worker_id: str,
    node_id: str,
    resources: dict,
    head_grace: float = 0.0,
) -> subprocess.Popen:
    """Start a worker process (:mod:`zactor.worker.main`) binding ``address`` that
    registers with the head at ``head_address`` as ``worker_id`` of ``node_id``; when
    the head dies it waits ``head_grace`` seconds for a restarted head (0: exits)."""
    return start(
        "zactor.worker.main",
        [
            "--head",
            head_address,
            "--address",
            address,
            "--worker-id",
            worker_id,
            "--node-id",
            node_id,
            "--resources",
            json.dumps(resources),
            "--head-grace",
            str(head_grace),
        ],
    )
