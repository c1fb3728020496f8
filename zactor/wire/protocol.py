"""The declared protocol: which methods each system actor answers, and who may call them.

Every zactor process hosts a *system actor* as actor 0 of its inbox: the head's
registry (:class:`zactor.control.head.Head`), a worker's service
(:class:`zactor.worker.service.WorkerService`), or a driver's notices
(:class:`zactor.endpoint.recovery.Notices`). A call names a method by its index
in a table, so the tables below *are* the protocol: an index means the same
method in every process of a cluster. They are declared here, not derived from
the classes, so that renaming or adding a private helper changes nothing on
the wire, and a helper is never callable by a peer.

Changing a table (a name, the order, the roles) changes the protocol: bump
``PROTOCOL_VERSION`` in ``_fast.pyx`` and ``_fallback.py`` with it.
``tests/test_protocol.py`` keeps a digest of the tables for each version and
fails when a table changes without a bump.

Roles: each process is a driver, a worker, a node agent or the head. A call
record carries its sender's role in its ``flags`` byte (:data:`ROLE_FLAGS`);
the head role is also checked against the sender's routing id, which must be
the head's own inbox address. On a CURVE (``tcp://``) inbox the role comes
from the sender's key, and a record claiming another role is refused
(:mod:`zactor.transport.keys`). A call that names an undeclared index, or comes from a role
the method does not allow, is refused: the caller gets a ``PermissionError``
or ``AttributeError`` and the receiver logs the first of each kind.

User classes have no declared table: their method table is
:func:`method_names` of the class, the same in the caller and the worker.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import weakref

from zactor.wire.hotpath import PROTOCOL_VERSION

DRIVER, WORKER, HEAD, NODE = "driver", "worker", "head", "node"
#: A process's role as carried in the ``flags`` byte of the calls it sends.
ROLE_FLAGS = {DRIVER: 1, WORKER: 2, HEAD: 3, NODE: 4}
#: The role a call's ``flags`` byte names (0: a peer that named none).
ROLE_OF_FLAGS = {flag: role for role, flag in ROLE_FLAGS.items()}

_ANY = frozenset((DRIVER, WORKER, HEAD, NODE))
_CALLERS = frozenset((DRIVER, WORKER))  # drivers and actors (running in workers)
_HEAD_ONLY = frozenset((HEAD,))
_HEAD_OR_NODE = frozenset((HEAD, NODE))  # what supervises worker processes


class SystemTable:
    """One system actor's methods in wire order, with the roles allowed to call each.

    Example::

        HEAD_TABLE.index["place"]      # the method index a call to Head.place carries
        HEAD_TABLE.names[3]            # the name behind index 3
        HEAD_TABLE.allows(3, "driver") # may a driver call it?
    """

    def __init__(self, service: str, methods: dict) -> None:
        self.service = service
        #: Method names; a name's position is its index on the wire.
        self.names: tuple[str, ...] = tuple(methods)
        #: Name -> index.
        self.index: dict[str, int] = {name: i for i, name in enumerate(self.names)}
        #: Per index, the roles that may call it.
        self.roles: tuple[frozenset, ...] = tuple(frozenset(methods[n]) for n in self.names)

    def allows(self, index: int, role: str | None) -> bool:
        """True if a caller of ``role`` may call method ``index``."""
        return 0 <= index < len(self.names) and role in self.roles[index]

    def describe(self) -> list:
        """The table as plain data: ``[[name, [roles...]], ...]`` in wire order."""
        return [[name, sorted(roles)] for name, roles in zip(self.names, self.roles)]


#: The head's registry (``zactor.control.head.Head``).
HEAD_TABLE = SystemTable(
    "Head",
    {
        "actor_ended": {WORKER},
        "actor_failed": {WORKER},
        "actor_started": {WORKER},
        "cluster_info": _ANY,
        "driver_exited": {DRIVER, HEAD},
        "driver_heartbeat": {DRIVER},
        "kill_actor": _CALLERS,
        "lease_actor_ids": _CALLERS,
        "list_actors": _ANY,
        "list_named": _ANY,
        "lookup": _ANY,
        "node_heartbeat": {NODE},
        "node_lost": _HEAD_ONLY,
        "node_replacement_late": _HEAD_ONLY,
        "node_stopping": {NODE},
        "place": _CALLERS,
        "place_many": _CALLERS,
        "recover": _HEAD_ONLY,  # called in the head process, before it serves
        "refs": _ANY,
        "register_driver": {DRIVER},
        "register_node": {NODE},
        "register_worker": {WORKER},
        "rejoin_deadline": _HEAD_ONLY,
        "remember_creation": _CALLERS,
        "resources": _ANY,
        "shutdown": {DRIVER},
        "status": _ANY,
        "worker_died": _HEAD_OR_NODE,
    },
)

#: A worker's service (``zactor.worker.service.WorkerService``).
WORKER_TABLE = SystemTable(
    "WorkerService",
    {
        "actor_died": _HEAD_ONLY,
        "actor_restarted": _HEAD_ONLY,
        "create": _ANY,
        "create_many": _ANY,
        "kill": _HEAD_ONLY,
        "ping": _ANY,
        "recreate": _HEAD_ONLY,
        "rejoin": _HEAD_ONLY,
        "retire": {HEAD, DRIVER},
        "shutdown": _HEAD_OR_NODE,
        "stats": _ANY,
    },
)

#: A driver's notices from the head (``zactor.endpoint.recovery.Notices``).
DRIVER_TABLE = SystemTable(
    "Driver",
    {
        "actor_died": _HEAD_ONLY,
        "actor_restarted": _HEAD_ONLY,
    },
)

#: A node agent's service (``zactor.control.node.NodeService``): the head's orders
#: to the agent that supervises one machine's workers.
NODE_TABLE = SystemTable(
    "NodeService",
    {
        "replace_worker": _HEAD_ONLY,
        "shutdown": _HEAD_ONLY,
    },
)

#: Every declared table, by the service that answers it.
TABLES = {table.service: table for table in (HEAD_TABLE, WORKER_TABLE, DRIVER_TABLE, NODE_TABLE)}


def tables_digest() -> str:
    """A digest of every table (names, order, roles): what a protocol version fixes."""
    text = json.dumps({s: t.describe() for s, t in sorted(TABLES.items())}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


#: :func:`method_names` by class: a worker creating many actors of one class looks once.
_method_names: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def method_names(cls: type) -> tuple[str, ...]:
    """The callable attributes of a user's actor class a handle may call, sorted, as
    the class has them when first asked (the actor class is made from it then).

    Dunder methods are left out; everything else callable, including
    ``staticmethod`` and ``classmethod`` members, is in.
    """
    names = _method_names.get(cls)
    if names is None:
        names = _method_names[cls] = _find_method_names(cls)
    return names


def _find_method_names(cls: type) -> tuple[str, ...]:
    names = []
    for name in dir(cls):
        if name.startswith("__") and name.endswith("__"):
            continue
        attr = inspect.getattr_static(cls, name)
        if isinstance(attr, (staticmethod, classmethod)) or (
            callable(attr) and not isinstance(attr, type)
        ):
            names.append(name)
    return tuple(sorted(names))


#: The method every actor answers besides its class's own: it ends the actor once the
#: calls it received before run (Ray's ``__ray_terminate__``; see docs/lifetime.md).
TERMINATE_METHOD = "__zactor_terminate__"


def actor_method_table(cls: type) -> tuple[str, ...]:
    """The wire's method table of a user's actor class: :func:`method_names`, then
    :data:`TERMINATE_METHOD` (a method's index on the wire is its position here)."""
    return (*method_names(cls), TERMINATE_METHOD)


#: The class that runs tasks on a worker (``zactor.worker.tasks.TaskRunner``), named here
#: so that callers, which must not import the worker layer, can create it by name.
TASK_RUNNER_CLASS = ("zactor.worker.tasks", "TaskRunner")
#: Its method table on the wire (:func:`actor_method_table` of the class, which
#: ``tests/test_tasks.py`` checks): an ordinary actor's, so declaring it here, not
#: in :data:`TABLES`, keeps the system tables and their digest as they were.
TASK_RUNNER_METHODS = ("define", "run", TERMINATE_METHOD)


__all__ = [
    "DRIVER",
    "DRIVER_TABLE",
    "HEAD",
    "HEAD_TABLE",
    "NODE",
    "NODE_TABLE",
    "PROTOCOL_VERSION",
    "ROLE_FLAGS",
    "ROLE_OF_FLAGS",
    "SystemTable",
    "TABLES",
    "TASK_RUNNER_CLASS",
    "TASK_RUNNER_METHODS",
    "TERMINATE_METHOD",
    "WORKER",
    "WORKER_TABLE",
    "actor_method_table",
    "method_names",
    "tables_digest",
]
