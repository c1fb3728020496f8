"""The head's registry kept durably, for a head that restarts (``zactor start --head --recover``).

:class:`HeadStore` keeps, in one SQLite database beside the cluster file
(``head.sqlite3`` in the cluster directory, mode 0600), every record a head
needs to take over a standing cluster after its process died: the cluster id
and the next actor id, the nodes, the workers, the actors (the info dict
:class:`~zactor.control.head.Head` keeps per actor), the names, the durable
checkpoint keys, the creations of restartable actors, the reference ledger of
non-detached actors, and the drivers. :meth:`HeadStore.load` reads it all back
as a :class:`HeadSnapshot`.

Cost and what a crash may lose: each ``put_*``/``delete_*`` is one SQLite
statement inside an open transaction (a few microseconds); the transaction is
committed by a flusher thread at most :data:`COMMIT_INTERVAL_S` after the first
write of a batch (or at once by :meth:`HeadStore.commit`). A head process that
is killed loses at most the writes of the last :data:`COMMIT_INTERVAL_S`; the
file itself is never left corrupt (WAL journal). With ``synchronous=NORMAL`` a
power cut may also lose the last commits, never the file's consistency.

Records are encoded with the wire's own codec (:mod:`zactor.wire.serialization`:
msgpack keeping exact types, cloudpickle for anything else), so a record reads
back exactly as the head wrote it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sqlite3
import threading
import time

import msgpack

from zactor.errors import ClusterError
from zactor.wire import serialization

log = logging.getLogger("zactor")

#: The store's file name inside the cluster directory, beside ``cluster.json``.
STORE_FILE = "head.sqlite3"
#: The longest a write waits in an open transaction before the flusher commits it (seconds).
COMMIT_INTERVAL_S = 0.005
#: The layout of the tables; a file of another version is refused (see :class:`HeadStoreError`).
SCHEMA_VERSION = 1

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB)",
    "CREATE TABLE IF NOT EXISTS nodes (node_id TEXT PRIMARY KEY, record BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS workers (worker_id TEXT PRIMARY KEY, record BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS actors (actor_id INTEGER PRIMARY KEY, record BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS names (namespace TEXT, name TEXT NOT NULL, "
    "actor_id INTEGER NOT NULL, PRIMARY KEY (namespace, name))",
    "CREATE TABLE IF NOT EXISTS durable_keys (key TEXT PRIMARY KEY, actor_id INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS creations (actor_id INTEGER PRIMARY KEY, blob BLOB NOT NULL, "
    "creation BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS refs (actor_id INTEGER PRIMARY KEY, record BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS drivers (address TEXT PRIMARY KEY, record BLOB NOT NULL)",
)


def remove_store(path: str) -> None:
    """Remove the store at ``path`` with its journal files (a new cluster starts afresh)."""
    for name in (path, f"{path}-wal", f"{path}-shm"):
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass


class HeadStoreError(ClusterError):
    """The head's store cannot be opened or read: the message names the file and what to do."""


@dataclasses.dataclass
class HeadSnapshot:
    """Everything a :class:`HeadStore` holds, as :meth:`HeadStore.load` read it.

    ``names`` maps ``(namespace, name)`` to an actor id; ``creations`` maps an
    actor id to ``(blob, creation)``; ``refs`` maps an actor id to
    ``(holders, transit)`` (a set of addresses and ``{token: count}``, as
    :class:`~zactor.control.ledger.RefLedger` keeps them).
    """

    cluster_id: str | None = None
    next_actor_id: int = 1
    #: What :meth:`HeadStore.set_meta` kept (the head's address, its session directory).
    meta: dict = dataclasses.field(default_factory=dict)
    nodes: dict = dataclasses.field(default_factory=dict)
    workers: dict = dataclasses.field(default_factory=dict)
    actors: dict = dataclasses.field(default_factory=dict)
    names: dict = dataclasses.field(default_factory=dict)
    durable_keys: dict = dataclasses.field(default_factory=dict)
    creations: dict = dataclasses.field(default_factory=dict)
    refs: dict = dataclasses.field(default_factory=dict)
    drivers: dict = dataclasses.field(default_factory=dict)

    def empty(self) -> bool:
        """True when the store held no cluster (a new file)."""
        return self.cluster_id is None


def encode(value) -> bytes:
    """One record as bytes: the wire's payload and its out-of-band buffers, together."""
    payload, buffers = serialization.dumps(value)
    if not buffers:
        return b"\x00" + payload
    return b"\x01" + msgpack.packb([payload, [bytes(b) for b in buffers]], use_bin_type=True)


def decode(data: bytes):
    """The record :func:`encode` made."""
    data = bytes(data)
    if data[:1] == b"\x00":
        return serialization.loads(data[1:])
    payload, buffers = msgpack.unpackb(data[1:], raw=False)
    return serialization.loads(payload, buffers)


class HeadStore:
    """The head's registry in SQLite: write-through ``put_*``/``delete_*``, :meth:`load`.

    One connection, in WAL mode with ``synchronous=NORMAL``; writes go into an
    open transaction that a flusher thread commits within
    :data:`COMMIT_INTERVAL_S` (``commit_interval``), so a creation costs a few
    statements and no disk sync of its own. The head's thread does every
    write; a lock only keeps the flusher's commit apart from them.

    Example::

        store = HeadStore.open("/tmp/zactor-1000/head.sqlite3")
        store.put_actor({"actor_id": 1, "name": "ps", ...})
        store.put_name(None, "ps", 1)
        snapshot = store.load()
        store.close()
    """

    def __init__(self, path: str, commit_interval: float = COMMIT_INTERVAL_S) -> None:
        self.path = os.path.abspath(path)
        self.commit_interval = commit_interval
        self._lock = threading.Lock()
        self._dirty = threading.Event()
        self._closed = False
        self._conn = self._connect()
        self._flusher = threading.Thread(target=self._flush_loop, name="zactor-store", daemon=True)
        self._flusher.start()

    @classmethod
    def open(cls, path: str, commit_interval: float = COMMIT_INTERVAL_S) -> HeadStore:
        """Open (or create, mode 0600) the store at ``path``; :class:`HeadStoreError` if
        the file is not a readable head store."""
        return cls(path, commit_interval)

    def _refuse(self, what: str) -> HeadStoreError:
        return HeadStoreError(
            f"the head's store {self.path} {what}: move it aside (e.g. `mv {self.path} "
            f"{self.path}.bad`) and start the head again, or start a new cluster without "
            "--recover (which replaces it)"
        )

    def _connect(self) -> sqlite3.Connection:
        try:
            # Made 0600 before SQLite opens it; SQLite gives its -wal and -shm files the same mode.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            os.chmod(self.path, 0o600)
        except OSError as exc:
            raise HeadStoreError(
                f"cannot create the head's store {self.path}: {exc.strerror or exc}; check "
                "that the cluster directory exists and is writable by this user"
            ) from None
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise self._refuse(f"cannot be opened ({exc})") from None
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
            if verdict != "ok":
                raise self._refuse(f"is damaged (SQLite's quick_check: {verdict})")
            conn.execute("BEGIN")
            for statement in _SCHEMA:
                conn.execute(statement)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            elif row[0] != SCHEMA_VERSION:
                raise self._refuse(
                    f"has layout version {row[0]!r}, and this zactor reads version {SCHEMA_VERSION}"
                )
            conn.execute("COMMIT")
        except HeadStoreError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            raise self._refuse(f"is not a head store SQLite can read ({exc})") from None
        return conn

    # -- writes --------------------------------------------------------------------------

    def _write(self, sql: str, params: tuple) -> None:
        with self._lock:
            if self._closed:
                raise HeadStoreError(f"the head's store {self.path} is closed: open it again")
            conn = self._conn
            if not conn.in_transaction:
                conn.execute("BEGIN")
                self._dirty.set()
            conn.execute(sql, params)

    def set_cluster(self, cluster_id: str, next_actor_id: int) -> None:
        """The cluster's id and the id the next actor gets."""
        self._write("INSERT OR REPLACE INTO meta VALUES ('cluster_id', ?)", (cluster_id,))
        self.set_next_actor_id(next_actor_id)

    def set_next_actor_id(self, next_actor_id: int) -> None:
        """The id the next actor gets."""
        self._write("INSERT OR REPLACE INTO meta VALUES ('next_actor_id', ?)", (next_actor_id,))

    def set_meta(self, key: str, value: str) -> None:
        """Keep ``value`` under ``key`` (e.g. ``"address"``: where the head listens)."""
        self._write("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"meta.{key}", value))

    def put_node(self, node: dict) -> None:
        """A node (``node_id``, ``address``, ``pid``, ``resources``, ``num_workers``, ``state``)."""
        self._write("INSERT OR REPLACE INTO nodes VALUES (?, ?)", (node["node_id"], encode(node)))

    def delete_node(self, node_id: str) -> None:
        """Forget a node."""
        self._write("DELETE FROM nodes WHERE node_id = ?", (node_id,))

    def put_worker(self, worker: dict) -> None:
        """A registered worker (``worker_id``, ``node_id``, ``address``, ``pid``, ``resources``)."""
        record = encode(worker)
        self._write("INSERT OR REPLACE INTO workers VALUES (?, ?)", (worker["worker_id"], record))

    def delete_worker(self, worker_id: str) -> None:
        """Forget a worker."""
        self._write("DELETE FROM workers WHERE worker_id = ?", (worker_id,))

    def put_actor(self, info: dict) -> None:
        """An actor's info dict, as :class:`~zactor.control.head.Head` keeps it (replaces it)."""
        self._write("INSERT OR REPLACE INTO actors VALUES (?, ?)", (info["actor_id"], encode(info)))

    def delete_actor(self, actor_id: int) -> None:
        """Forget an actor, with its creation and its ledger entry (its name is separate)."""
        self._write("DELETE FROM actors WHERE actor_id = ?", (actor_id,))
        self._write("DELETE FROM creations WHERE actor_id = ?", (actor_id,))
        self._write("DELETE FROM refs WHERE actor_id = ?", (actor_id,))

    def put_name(self, namespace: str | None, name: str, actor_id: int) -> None:
        """``(namespace, name)`` names actor ``actor_id``."""
        # SQLite's primary keys treat NULLs as distinct: the default namespace is stored as ''.
        self._write(
            "INSERT OR REPLACE INTO names VALUES (?, ?, ?)", (namespace or "", name, actor_id)
        )

    def delete_name(self, namespace: str | None, name: str) -> None:
        """``(namespace, name)`` names nothing any more."""
        self._write("DELETE FROM names WHERE namespace = ? AND name = ?", (namespace or "", name))

    def put_durable_key(self, key: str, actor_id: int) -> None:
        """Checkpoint ``key`` belongs to live actor ``actor_id``."""
        self._write("INSERT OR REPLACE INTO durable_keys VALUES (?, ?)", (key, actor_id))

    def delete_durable_key(self, key: str) -> None:
        """Checkpoint ``key`` is free."""
        self._write("DELETE FROM durable_keys WHERE key = ?", (key,))

    def put_creation(self, actor_id: int, blob: bytes, creation: dict) -> None:
        """What re-creates a restartable actor: its pickled class and arguments, its spec."""
        self._write(
            "INSERT OR REPLACE INTO creations VALUES (?, ?, ?)",
            (actor_id, bytes(blob), encode(creation)),
        )

    def put_refs(self, actor_id: int, holders, transit: dict) -> None:
        """The ledger's entry of a non-detached actor: who holds it, which copies travel."""
        record = encode([sorted(holders), list(transit.items())])
        self._write("INSERT OR REPLACE INTO refs VALUES (?, ?)", (actor_id, record))

    def delete_refs(self, actor_id: int) -> None:
        """The ledger has no entry for ``actor_id`` (detached, or retiring)."""
        self._write("DELETE FROM refs WHERE actor_id = ?", (actor_id,))

    def put_driver(self, driver: dict) -> None:
        """A driver that joined (its ``address`` and what the head watches it by)."""
        self._write(
            "INSERT OR REPLACE INTO drivers VALUES (?, ?)", (driver["address"], encode(driver))
        )

    def delete_driver(self, address: str) -> None:
        """A driver that left."""
        self._write("DELETE FROM drivers WHERE address = ?", (address,))

    def commit(self) -> None:
        """Commit the writes made so far now (the flusher does it within the interval anyway)."""
        with self._lock:
            if not self._closed and self._conn.in_transaction:
                self._conn.execute("COMMIT")

    def _flush_loop(self) -> None:
        while True:
            self._dirty.wait()
            if self._closed:
                return
            # Let the batch of writes that began gather, then commit it in one go.
            time.sleep(self.commit_interval)
            self._dirty.clear()
            if self._closed:  # close() sets it before waking us: never miss that wake-up
                return
            try:
                self.commit()
            except sqlite3.Error as exc:  # a full disk: say so, keep trying on later writes
                log.error("zactor head: could not commit to its store %s: %s", self.path, exc)

    # -- reading back --------------------------------------------------------------------

    def load(self) -> HeadSnapshot:
        """Everything the store holds, committed or not, as a :class:`HeadSnapshot`."""
        with self._lock:
            try:
                return self._load()
            except (sqlite3.Error, ValueError, TypeError, msgpack.UnpackException) as exc:
                raise self._refuse(f"holds a record that cannot be read ({exc})") from None

    def _load(self) -> HeadSnapshot:
        conn = self._conn
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        snap = HeadSnapshot(
            cluster_id=meta.get("cluster_id"), next_actor_id=int(meta.get("next_actor_id", 1))
        )
        snap.meta = {k[5:]: v for k, v in meta.items() if k.startswith("meta.")}
        snap.nodes = {k: decode(r) for k, r in conn.execute("SELECT node_id, record FROM nodes")}
        snap.workers = {
            k: decode(r) for k, r in conn.execute("SELECT worker_id, record FROM workers")
        }
        snap.actors = {k: decode(r) for k, r in conn.execute("SELECT actor_id, record FROM actors")}
        snap.names = {
            (namespace or None, name): actor_id
            for namespace, name, actor_id in conn.execute("SELECT * FROM names")
        }
        snap.durable_keys = dict(conn.execute("SELECT key, actor_id FROM durable_keys"))
        snap.creations = {
            actor_id: (bytes(blob), decode(creation))
            for actor_id, blob, creation in conn.execute("SELECT * FROM creations")
        }
        for actor_id, record in conn.execute("SELECT actor_id, record FROM refs"):
            holders, transit = decode(record)
            snap.refs[actor_id] = (set(holders), {token: n for token, n in transit})
        snap.drivers = {
            k: decode(r) for k, r in conn.execute("SELECT address, record FROM drivers")
        }
        return snap

    def close(self) -> None:
        """Commit what is pending, stop the flusher and close the file."""
        with self._lock:
            if self._closed:
                return
            if self._conn.in_transaction:
                self._conn.execute("COMMIT")
            self._closed = True
            self._conn.close()
        self._dirty.set()  # wakes the flusher, which sees it closed
        self._flusher.join()
