"""A cluster's CURVE keys: making them, the per-role bundles, and loading one.

Every ``tcp://`` socket of a cluster speaks ZeroMQ CURVE (libzmq's crypto,
checked by pyzmq's ``zmq.auth`` authenticator; see :mod:`zactor.transport.zeromq`).
A cluster has

- one *server* keypair, shared by every inbox (every zactor process binds one:
  the head, workers, node agents and drivers on other machines), and
- one *client* keypair per role (``head``, ``node``, ``worker``, ``driver``):
  a connection presents its process's role key, and the receiver knows the
  sender's role from the key, not from what the sender claims.

``zactor start --head`` writes the keys once into ``<cluster dir>/keys``
(mode 0700) as three *bundles*, one file each (mode 0600), so that a machine
is given only what its processes need:

- ``head.keys``: every secret (the head starts workers, and may be restarted
  on a node's machine);
- ``node.keys``: the node and worker secrets (a node agent starts workers);
- ``driver.keys``: the driver secret.

Every bundle holds the server keypair and every role's *public* key, so its
holder can tell roles apart when it receives. A bundle is JSON::

    {"zactor_cluster_keys": 1, "bundle": "driver",
     "server": {"public": Z85, "secret": Z85},
     "public": {"head": Z85, "node": Z85, "worker": Z85, "driver": Z85},
     "secret": {"driver": Z85}}

A process finds its bundle through :data:`KEYS_ENV` (a path), which zactor's
own child processes inherit, or the control layer passes one explicitly
(``zactor.init(keys=PATH)``, the cluster directory for ``address="auto"``).
"""

from __future__ import annotations

import json
import os
import stat
from typing import NamedTuple

import zmq

from zactor.errors import ClusterError
from zactor.wire.protocol import DRIVER, HEAD, NODE, WORKER

#: The environment variable naming this process's key bundle (a file path).
KEYS_ENV = "ZACTOR_CLUSTER_KEYS"
#: The directory, inside the cluster directory, where the head writes the keys.
KEYS_DIR = "keys"
#: The roles a key can stand for, and so the ZAP User-Id a message's sender has.
ROLES = (HEAD, NODE, WORKER, DRIVER)
#: Which roles' secret keys each bundle holds.
BUNDLES = {HEAD: ROLES, NODE: (NODE, WORKER), DRIVER: (DRIVER,)}
#: The ZAP domain every CURVE inbox of zactor uses.
ZAP_DOMAIN = "zactor"

_FORMAT = 1
_HOW = (
    f"set {KEYS_ENV} to the cluster's key bundle, or pass zactor.init(keys=PATH): "
    "`zactor start --head` writes them to the keys/ directory beside its cluster file "
    "(see docs/cluster.md, 'Keys and security')"
)


class KeysError(ClusterError):
    """Key material is missing, unreadable, not private, or lacks the role asked for."""


class Curve(NamedTuple):
    """What one process's transport needs: the inboxes' server keypair, this process's
    client keypair (its role's), and every role by its public key (Z85 bytes)."""

    server_public: bytes
    server_secret: bytes
    client_public: bytes
    client_secret: bytes
    roles: dict


class ClusterKeys(NamedTuple):
    """One loaded bundle (see the module docstring); keys are Z85 ``bytes``."""

    bundle: str
    server_public: bytes
    server_secret: bytes
    public: dict
    secret: dict
    path: str

    def for_role(self, role: str) -> Curve:
        """The credentials a process of ``role`` sends with; :class:`KeysError` if this
        bundle does not hold that role's secret key."""
        secret = self.secret.get(role)
        if secret is None:
            holders = " or ".join(name for name, roles in BUNDLES.items() if role in roles)
            raise KeysError(
                f"the key bundle {self.path} is the {self.bundle} bundle, which has no "
                f"{role} key: a {role} process needs the {holders} bundle ({_HOW})"
            )
        roles = {public: name for name, public in self.public.items()}
        return Curve(self.server_public, self.server_secret, self.public[role], secret, roles)


def keys_dir(cluster_directory: str) -> str:
    """Where the head keeps a cluster's keys inside ``cluster_directory``."""
    return os.path.join(cluster_directory, KEYS_DIR)


def bundle_path(directory: str, bundle: str) -> str:
    """The path of ``bundle`` (``"head"``, ``"node"``, ``"driver"``) in keys ``directory``."""
    return os.path.join(directory, f"{bundle}.keys")


def create_cluster_keys(directory: str) -> dict:
    """Make a cluster's keys in ``directory`` (created 0700) unless they are there already;
    return ``{bundle: path}``.

    Keys that exist are kept, so bundles copied to other machines stay valid
    when the head restarts; remove the directory to make new ones. The head
    bundle is written last, so a directory that holds it holds every bundle.
    """
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)  # makedirs leaves an existing directory's mode as it was
    paths = {name: bundle_path(directory, name) for name in BUNDLES}
    if os.path.exists(paths[HEAD]):
        load_bundle(paths[HEAD])  # a bad one fails here, naming the file, not at bind
        return paths
    server_public, server_secret = zmq.curve_keypair()
    pairs = {role: zmq.curve_keypair() for role in ROLES}
    for name in (NODE, DRIVER, HEAD):
        record = {
            "zactor_cluster_keys": _FORMAT,
            "bundle": name,
            "server": {"public": server_public.decode(), "secret": server_secret.decode()},
            "public": {role: pairs[role][0].decode() for role in ROLES},
            "secret": {role: pairs[role][1].decode() for role in BUNDLES[name]},
        }
        _write_private(paths[name], json.dumps(record, indent=2) + "\n")
    return paths


def _write_private(path: str, text: str) -> None:
    """Write ``path`` as a 0600 file from its first byte (never readable by others)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_bundle(path: str) -> ClusterKeys:
    """Read the bundle at ``path``; :class:`KeysError` saying what is wrong with it.

    A bundle others may read (group or world permission bits) is refused, as
    ssh refuses such a private key: ``chmod 600`` it.
    """
    try:
        info = os.stat(path)
        with open(path) as f:
            record = json.load(f)
    except FileNotFoundError:
        raise KeysError(f"no zactor key bundle at {path}: {_HOW}") from None
    except (OSError, ValueError) as exc:
        raise KeysError(f"cannot read the zactor key bundle {path} ({exc}): {_HOW}") from None
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise KeysError(
            f"the zactor key bundle {path} may be read by other users (mode {mode:o}): "
            f"run `chmod 600 {path}`"
        )
    try:
        if record["zactor_cluster_keys"] != _FORMAT:
            raise ValueError(f"format {record['zactor_cluster_keys']!r}, not {_FORMAT}")
        public = {role: _key(record["public"][role]) for role in ROLES}
        secret = {role: _key(key) for role, key in record["secret"].items() if role in ROLES}
        return ClusterKeys(
            str(record["bundle"]),
            _key(record["server"]["public"]),
            _key(record["server"]["secret"]),
            public,
            secret,
            path,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise KeysError(
            f"{path} is not a zactor key bundle ({type(exc).__name__}: {exc}): {_HOW}"
        ) from None


def _key(text) -> bytes:
    """A Z85 key as bytes, checked: 40 characters that decode to 32 bytes."""
    key = text.encode("ascii")
    if len(key) != 40 or len(zmq.utils.z85.decode(key)) != 32:
        raise ValueError(f"{text!r} is not a Z85 CURVE key")
    return key


def from_environment() -> ClusterKeys | None:
    """The bundle :data:`KEYS_ENV` names, or None when it is unset or empty."""
    path = os.environ.get(KEYS_ENV)
    return load_bundle(path) if path else None


def insecure_bind_error(address: str) -> KeysError:
    """The error for binding a non-loopback ``address`` without keys."""
    return KeysError(
        f"refusing to listen on {address} without CURVE keys: any machine that reaches a "
        f"non-loopback address could call and create actors there (running its code in "
        f"this process). {_HOW[0].upper()}{_HOW[1:]}; or listen on 127.0.0.1"
    )


__all__ = [
    "BUNDLES",
    "ClusterKeys",
    "Curve",
    "KEYS_DIR",
    "KEYS_ENV",
    "KeysError",
    "ROLES",
    "ZAP_DOMAIN",
    "bundle_path",
    "create_cluster_keys",
    "from_environment",
    "insecure_bind_error",
    "keys_dir",
    "load_bundle",
]
