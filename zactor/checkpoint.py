"""Durable actor state: checkpoint stores and the bytes that go into them.

A *store* keeps one blob of bytes per key (an actor's name or id) and has the
three methods of the seeds' ``FilePersistence``: ``exists(key)``,
``save(key, data)`` and ``restore(key)``. Two stores come with zactor:

- :class:`FileStore` (``file:///abs/dir``): one file per key, written
  atomically (temporary file, ``fsync``, ``os.replace``, ``fsync`` of the
  directory).
- :class:`SQLiteStore` (``sqlite:///abs/path.db``): one row per key in a
  stdlib ``sqlite3`` database in WAL mode, each save one transaction.

:func:`open_store` turns a store object or a URL into a store. Any object
with ``exists``, ``save`` and ``restore`` is used as it is, so the seeds'
``FilePersistence`` works unchanged (zactor hands it ``bytes``, which it
pickles and unpickles back to the same ``bytes``).

What is saved: :func:`capture_state` turns an actor instance into bytes
(``__getstate__()`` when its class defines one, else its ``__dict__``),
:func:`restore_state` rebuilds an instance from them without running
``__init__``, and :func:`pack_checkpoint` / :func:`unpack_checkpoint` wrap
those bytes in a small versioned envelope together with the last applied
call per caller (what lets a retried call that already ran return its
recorded result instead of running twice).

Example::

    from zactor.checkpoint import FileStore, capture_state, restore_state

    store = FileStore("/tmp/zactor-checkpoints")
    store.save("actor-17", capture_state(counter))
    counter = restore_state(Counter, store.restore("actor-17"))
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import sqlite3
import tempfile
import threading
import urllib.parse
import urllib.request
from typing import Any, Dict, Mapping, Protocol, Tuple, Union

import cloudpickle
import msgpack

__all__ = [
    "CHECKPOINT_FORMAT",
    "FileStore",
    "SQLiteStore",
    "Store",
    "capture_state",
    "open_store",
    "pack_checkpoint",
    "restore_state",
    "unpack_checkpoint",
]

#: The version of the envelope :func:`pack_checkpoint` writes.
CHECKPOINT_FORMAT = 1

#: The methods an object needs to be used as a store.
STORE_METHODS = ("exists", "save", "restore")

_BytesLike = Union[bytes, bytearray, memoryview]
#: ``caller_id -> (last_call_id, encoded_result)``.
Applied = Dict[Any, Tuple[int, bytes]]


class Store(Protocol):
    """What zactor needs from a checkpoint store (the seeds' ``FilePersistence`` methods).

    zactor calls ``exists(key)`` and then ``restore(key)`` only when it is
    true, so a store may signal a missing key either way (the seeds' store
    returns ``None``; :class:`FileStore` and :class:`SQLiteStore` raise
    ``KeyError``). ``save`` must replace the previous value atomically for the
    store to keep zactor's promise that a crash mid-write loses nothing. A
    store given as an actor's ``checkpoint=`` travels to the worker process
    that hosts the actor, so it must pickle (cloudpickle) and work there.

    Example::

        class DictStore:  # a store for tests: not durable
            def __init__(self):
                self.blobs = {}
            def exists(self, key): return key in self.blobs
            def save(self, key, data): self.blobs[key] = bytes(data)
            def restore(self, key): return self.blobs[key]
    """

    def exists(self, key: str) -> bool: ...

    def save(self, key: str, data: bytes) -> None: ...

    def restore(self, key: str) -> bytes: ...


def _check_key(key: str) -> None:
    if not isinstance(key, str):
        raise TypeError(f"a checkpoint key is a str (an actor's name or id); got {key!r}")
    if not key:
        raise ValueError("a checkpoint key must not be empty: use the actor's name or id")


def _check_data(data: _BytesLike, what: str = "save() stores bytes") -> None:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(
            f"{what}; got {type(data).__name__}: "
            "serialize it first (zactor.checkpoint.capture_state, pickle.dumps, ...)"
        )


# --------------------------------------------------------------------------- FileStore

_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
_READABLE_PREFIX = 40
_TMP_SUFFIX = ".tmp"


class FileStore:
    """Checkpoints as files in one directory: one file per key, replaced atomically.

    ``save`` writes a temporary file in the same directory, flushes and
    ``fsync``-s it, renames it over the old file with ``os.replace`` and
    ``fsync``-s the directory: a crash at any point leaves either the old or
    the new checkpoint, whole. With ``fsync=False`` the two ``fsync`` calls are
    skipped: still atomic, and a crashed *process* loses nothing, but a power
    cut or kernel crash may lose recent saves.

    A key maps to the file name ``<readable part>-<32 hex digits of SHA-256>``:
    the readable part is the key with characters other than letters, digits,
    ``_``, ``.`` and ``-`` replaced by ``_`` (cut to 40 characters, leading
    dots removed), and the hash makes names distinct for distinct keys, so
    ``"a/b"``, ``"a_b"`` and ``"a%2Fb"`` never collide and no key (``".."``,
    ``"../x"``, ``"/etc/passwd"``) leaves the directory. The names are not
    reversible: a key cannot be read back from a file name.

    Several threads and processes may use one directory: each save writes its
    own temporary file, and the last rename of a key wins. A process killed
    mid-save may leave a ``.<name>.<random>.tmp`` file behind; such files are
    never read and may be deleted when no save is running.

    ``restore`` of a missing key raises ``KeyError``; ``delete`` of a missing
    key does nothing. The store pickles as its directory, so it can be passed to
    actors on other processes (the directory is created there if missing).

    Example::

        store = zactor.FileStore("/var/lib/myapp/checkpoints")
        store.save("actor-17", b"state")
        assert store.exists("actor-17")
        assert store.restore("actor-17") == b"state"
        store.delete("actor-17")
    """

    def __init__(self, directory: Union[str, os.PathLike], *, fsync: bool = True) -> None:
        self.directory = os.path.abspath(os.fspath(directory))
        self.fsync = fsync
        os.makedirs(self.directory, exist_ok=True)

    def __repr__(self) -> str:
        return f"FileStore({self.directory!r})"

    def __reduce__(self) -> tuple:
        return (_make_file_store, (self.directory, self.fsync))

    def path(self, key: str) -> str:
        """The file that holds ``key``'s checkpoint (it may not exist yet).

        Example::

            FileStore("/ckpt").path("a/b")   # '/ckpt/a_b-<32 hex digits>'
        """
        _check_key(key)
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        readable = _UNSAFE_CHARS.sub("_", key)[:_READABLE_PREFIX].lstrip(".")
        name = f"{readable}-{digest}" if readable else digest
        return os.path.join(self.directory, name)

    def exists(self, key: str) -> bool:
        """Whether a checkpoint is saved under ``key``.

        Example::

            store.exists("actor-17")   # False until the first save
        """
        return os.path.isfile(self.path(key))

    def save(self, key: str, data: _BytesLike) -> None:
        """Replace ``key``'s checkpoint with ``data``, atomically and (by default) durably.

        Example::

            store.save("actor-17", b"state")
        """
        path = self.path(key)
        _check_data(data)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{os.path.basename(path)}.", suffix=_TMP_SUFFIX, dir=self.directory
        )
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                if self.fsync:
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        self._sync_directory()

    def restore(self, key: str) -> bytes:
        """The bytes last saved under ``key``; ``KeyError`` if there are none.

        Example::

            data = store.restore("actor-17")
        """
        try:
            with open(self.path(key), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise KeyError(
                f"no checkpoint saved under key {key!r} in {self!r}: "
                "check exists(key) first, or save it"
            ) from None

    def delete(self, key: str) -> None:
        """Remove ``key``'s checkpoint; nothing happens if there is none.

        Example::

            store.delete("actor-17")
        """
        try:
            os.remove(self.path(key))
        except FileNotFoundError:
            return
        self._sync_directory()

    def _sync_directory(self) -> None:
        """Make the directory entry (the rename or removal) itself durable."""
        if not self.fsync or os.name == "nt":  # Windows cannot open a directory
            return
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _make_file_store(directory: str, fsync: bool) -> FileStore:
    return FileStore(directory, fsync=fsync)


# --------------------------------------------------------------------------- SQLiteStore

#: Connections inherited through fork(), kept so they are never closed in the child.
_INHERITED_CONNECTIONS: list = []

_SCHEMA = "CREATE TABLE IF NOT EXISTS zactor_checkpoints (key TEXT PRIMARY KEY, data BLOB NOT NULL)"


class SQLiteStore:
    """Checkpoints as rows of one SQLite database (stdlib ``sqlite3``, WAL mode).

    Each key is one row of the table ``zactor_checkpoints(key, data)``; each
    ``save`` is one ``INSERT OR REPLACE`` in its own transaction, so it is
    atomic: a crash leaves the old row or the new one. With ``fsync=True``
    (``PRAGMA synchronous=FULL``) a save is on disk when it returns; with
    ``fsync=False`` (``synchronous=NORMAL``) a crashed process still loses
    nothing, but a power cut may lose the last saves.

    Threads: one connection per store object (and per process), guarded by a
    lock, so one object may be shared by any number of threads; their
    operations run one at a time. Processes: any number may open the same
    file; WAL lets readers run beside the one writer, and a writer waits up to
    ``timeout`` seconds (SQLite's busy timeout) for another process's write to
    finish before raising ``sqlite3.OperationalError: database is locked``.
    The file must be on a local disk (SQLite's WAL does not work over NFS).

    ``restore`` of a missing key raises ``KeyError``; ``delete`` of a missing
    key does nothing. The store pickles as its path and reopens the database
    where it is unpickled; after ``fork`` the child opens its own connection.

    Example::

        store = zactor.SQLiteStore("/var/lib/myapp/checkpoints.db")
        store.save("actor-17", b"state")
        assert store.restore("actor-17") == b"state"
        store.close()
    """

    def __init__(
        self, path: Union[str, os.PathLike], *, fsync: bool = True, timeout: float = 30.0
    ) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.fsync = fsync
        self.timeout = timeout
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._conn: sqlite3.Connection | None = self._open()  # a bad path fails here

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    def __reduce__(self) -> tuple:
        return (_make_sqlite_store, (self.path, self.fsync, self.timeout))

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.OperationalError as e:
            raise sqlite3.OperationalError(
                f"cannot open the checkpoint database {self.path!r}: {e} "
                "(does its directory exist, and is it writable?)"
            ) from e
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'NORMAL'}")
            conn.execute(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    def _after_fork(self) -> None:
        """In a forked child: start afresh, never touching the parent's connection.

        SQLite forbids using or closing a connection inherited through fork(), and
        the lock may have been held by a thread that does not exist in the child.
        """
        _INHERITED_CONNECTIONS.append(self._conn)
        self._lock, self._conn, self._pid = threading.Lock(), None, os.getpid()

    def _execute(self, sql: str, params: tuple) -> list:
        if self._pid != os.getpid():
            self._after_fork()
        with self._lock:
            if self._conn is None:
                self._conn = self._open()
            return self._conn.execute(sql, params).fetchall()

    def exists(self, key: str) -> bool:
        """Whether a checkpoint is saved under ``key``.

        Example::

            store.exists("actor-17")   # False until the first save
        """
        _check_key(key)
        return bool(self._execute("SELECT 1 FROM zactor_checkpoints WHERE key = ?", (key,)))

    def save(self, key: str, data: _BytesLike) -> None:
        """Replace ``key``'s checkpoint with ``data`` in one transaction.

        Example::

            store.save("actor-17", b"state")
        """
        _check_key(key)
        _check_data(data)
        self._execute(
            "INSERT OR REPLACE INTO zactor_checkpoints (key, data) VALUES (?, ?)", (key, data)
        )

    def restore(self, key: str) -> bytes:
        """The bytes last saved under ``key``; ``KeyError`` if there are none.

        Example::

            data = store.restore("actor-17")
        """
        _check_key(key)
        rows = self._execute("SELECT data FROM zactor_checkpoints WHERE key = ?", (key,))
        if not rows:
            raise KeyError(
                f"no checkpoint saved under key {key!r} in {self!r}: "
                "check exists(key) first, or save it"
            )
        return bytes(rows[0][0])

    def delete(self, key: str) -> None:
        """Remove ``key``'s checkpoint; nothing happens if there is none.

        Example::

            store.delete("actor-17")
        """
        _check_key(key)
        self._execute("DELETE FROM zactor_checkpoints WHERE key = ?", (key,))

    def close(self) -> None:
        """Close this process's connection; the store reopens it if used again.

        Example::

            store.close()
        """
        if self._pid != os.getpid():
            self._after_fork()
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            self._conn = None


def _make_sqlite_store(path: str, fsync: bool, timeout: float) -> SQLiteStore:
    return SQLiteStore(path, fsync=fsync, timeout=timeout)


# --------------------------------------------------------------------------- open_store

_URL_HELP = (
    "pass a store object (zactor.FileStore(dir), zactor.SQLiteStore(path), or any object "
    "with exists(key), save(key, data) and restore(key)) or a URL: "
    "'file:///absolute/dir' or 'sqlite:///absolute/path.db'"
)


def open_store(spec: Union[Store, str]) -> Store:
    """The store ``spec`` names: a store object as it is, or a ``file:`` / ``sqlite:`` URL.

    - ``"file:///abs/dir"`` → ``FileStore("/abs/dir")``
    - ``"sqlite:///abs/path.db"`` → ``SQLiteStore("/abs/path.db")``
    - any object with ``exists``, ``save`` and ``restore`` methods → that object.

    URL paths are absolute (``file://localhost/abs/dir`` is accepted too) and
    percent-decoded (``%20`` is a space). Relative paths are refused because
    actors run in worker processes whose working directory is not yours.
    Anything else raises ``ValueError`` (a string that is not such a URL) or
    ``TypeError`` (an object that is not a store), saying what is accepted.

    Example::

        store = open_store("sqlite:///var/lib/myapp/checkpoints.db")
        store = open_store(FilePersistence("/tmp"))   # the seeds' store, as it is
    """
    if isinstance(spec, str):
        return _open_url(spec)
    if isinstance(spec, type):
        raise TypeError(
            f"open_store() got the class {spec.__name__}, not a store: pass an instance, "
            f"such as {spec.__name__}(...)"
        )
    missing = [m for m in STORE_METHODS if not callable(getattr(spec, m, None))]
    if missing:
        raise TypeError(
            f"{type(spec).__name__} object is not a checkpoint store: it has no "
            f"{', '.join(m + '()' for m in missing)} method{'s' if len(missing) > 1 else ''}; "
            + _URL_HELP
        )
    return spec


def _open_url(url: str) -> Store:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("file", "sqlite"):
        what = f"unknown scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise ValueError(f"not a checkpoint store URL ({what}): {url!r}; {_URL_HELP}")
    if parts.netloc not in ("", "localhost"):
        raise ValueError(
            f"checkpoint store URL {url!r} names the host {parts.netloc!r}: only local, absolute "
            f"paths are supported, written {scheme}:///absolute/path (three slashes)"
        )
    if parts.query or parts.fragment:
        raise ValueError(
            f"checkpoint store URL {url!r} has a query or fragment, which is not supported; "
            "for options (fsync=False, ...) pass a FileStore or SQLiteStore object instead"
        )
    path = urllib.request.url2pathname(parts.path)
    if not path or not os.path.isabs(path):
        raise ValueError(
            f"checkpoint store URL {url!r} has no absolute path: write "
            f"{scheme}:///absolute/path (three slashes, then a path starting with /)"
        )
    return FileStore(path) if scheme == "file" else SQLiteStore(path)


# --------------------------------------------------------------------------- actor state


def _defines(cls: type, name: str) -> bool:
    """Whether ``cls`` or a base other than ``object`` defines ``name``."""
    return any(name in vars(klass) for klass in cls.__mro__ if klass is not object)


def capture_state(instance: object) -> bytes:
    """An actor's state as bytes: ``__getstate__()`` if its class defines one, else ``__dict__``.

    The state is pickled with cloudpickle (protocol 5), so numpy arrays,
    lambdas and classes defined in ``__main__`` are fine. A state that cannot
    be pickled raises ``pickle.PicklingError`` naming the attribute at fault.

    Example::

        data = capture_state(counter)      # bytes
        counter2 = restore_state(Counter, data)
    """
    cls = type(instance)
    if _defines(cls, "__getstate__"):
        state = instance.__getstate__()
    else:
        try:
            state = vars(instance)
        except TypeError:
            raise TypeError(
                f"cannot checkpoint a {cls.__qualname__}: it has no __dict__ (it uses "
                "__slots__); define __getstate__() and __setstate__(state) on it"
            ) from None
    try:
        return cloudpickle.dumps(state, protocol=5)
    except Exception as e:
        raise pickle.PicklingError(
            f"cannot checkpoint a {cls.__qualname__}: {_culprit(state)}could not be pickled "
            f"({type(e).__name__}: {e}); define __getstate__() to leave it out or turn it "
            "into something picklable, and __setstate__(state) to rebuild it"
        ) from e


def _culprit(state: Any) -> str:
    """``"attribute 'x' "`` for the first entry of a dict state that does not pickle."""
    if isinstance(state, dict):
        for name, value in state.items():
            try:
                cloudpickle.dumps(value, protocol=5)
            except Exception:
                return f"attribute {name!r} "
    return "its state "


def restore_state(cls: type, data: bytes) -> Any:
    """A ``cls`` instance rebuilt from :func:`capture_state`'s bytes, without running ``__init__``.

    The instance is made with ``cls.__new__(cls)``; then ``__setstate__(state)``
    runs when the class defines it, else the state (a dict) updates its
    ``__dict__``.

    Example::

        counter = restore_state(Counter, store.restore("actor-17"))
    """
    state = cloudpickle.loads(data)
    instance = cls.__new__(cls)
    if _defines(cls, "__setstate__"):
        instance.__setstate__(state)
    elif isinstance(state, dict):
        vars(instance).update(state)
    else:
        raise TypeError(
            f"cannot restore a {cls.__qualname__} from a {type(state).__name__} state: "
            "without __setstate__ the state must be a dict of attributes; define "
            "__setstate__(state) to rebuild the instance from what __getstate__() returns"
        )
    return instance


# --------------------------------------------------------------------------- envelope


def pack_checkpoint(state: _BytesLike, applied: Mapping[Any, Tuple[int, bytes]]) -> bytes:
    """The bytes zactor saves: the state and the last applied call per caller, versioned.

    ``applied`` maps a caller id (``bytes``, ``str`` or ``int``) to
    ``(last_call_id, encoded_result)``: when a retried call turns out to be
    already applied, its recorded result is returned instead of running it
    again. The envelope is msgpack ``{"format": 1, "state": ..., "applied": ...}``,
    readable without unpickling anything.

    Example::

        data = pack_checkpoint(capture_state(counter), {b"caller-1": (41, b"result")})
        state, applied = unpack_checkpoint(data)
    """
    _check_data(state, "the state must be bytes")
    envelope = {
        "format": CHECKPOINT_FORMAT,
        "state": state,
        "applied": {caller: (call_id, result) for caller, (call_id, result) in applied.items()},
    }
    return msgpack.packb(envelope, use_bin_type=True)


def unpack_checkpoint(data: _BytesLike) -> Tuple[bytes, Applied]:
    """``(state_bytes, applied)`` from :func:`pack_checkpoint`'s bytes.

    Raises ``ValueError`` if ``data`` is not a zactor checkpoint or was written
    in a format this version of zactor does not know.

    Example::

        state, applied = unpack_checkpoint(store.restore("actor-17"))
        counter = restore_state(Counter, state)
    """
    try:
        envelope = msgpack.unpackb(data, raw=False, use_list=False, strict_map_key=False)
    except Exception as e:
        raise ValueError(
            f"not a zactor checkpoint ({type(e).__name__}: {e}); was this key written "
            "by something else, such as the seeds' own persistence code?"
        ) from e
    if not isinstance(envelope, dict) or "format" not in envelope:
        raise ValueError(
            f"not a zactor checkpoint: expected a map with a 'format' entry, got "
            f"{type(envelope).__name__}; was this key written by something else?"
        )
    version = envelope["format"]
    if version != CHECKPOINT_FORMAT:
        advice = (
            "it was written by a newer zactor: upgrade zactor here"
            if isinstance(version, int) and version > CHECKPOINT_FORMAT
            else "it is damaged or was not written by zactor"
        )
        raise ValueError(
            f"unknown checkpoint format {version!r}: this zactor reads format "
            f"{CHECKPOINT_FORMAT}; {advice}"
        )
    try:
        state, applied = envelope["state"], envelope["applied"]
    except KeyError as e:
        raise ValueError(f"damaged zactor checkpoint: the {e.args[0]!r} entry is missing") from None
    return state, dict(applied)
