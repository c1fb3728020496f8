"""Large buffers between processes on one machine: through shared memory, not the socket.

A message's frames after frame 0 are out-of-band buffers (numpy arrays, large
``bytes``: :mod:`zactor.wire.serialization`). Sent to a peer on the same host
(:func:`zactor.transport.addresses.same_host`), each buffer of at least
:data:`MIN_BYTES` is copied into a *slot*, a shared-memory segment of the
sender's pool for that peer, and its frame is sent empty; the message's
preamble carries :data:`~zactor.wire.hotpath.SHARED_BUFFERS` and a last frame,
the *table*, names the slots. The receiving inbox puts a read-only view of
each slot in its buffer's place before anything parses the message: the
layers above see the frames they always saw, and a received array is a
read-only view of the slot, valid as long as it is held. When the last view
is gone the slot is free again.

One copy (the sender's) and no socket: a fresh segment per buffer costs more
than the copy (tmpfs allocates and zeroes every page: 9 ms for 16 MiB on
the reference VM, against 1.1-1.4 ms for a copy into a slot already mapped),
and mapping a segment per message costs a page-table walk (1.6 ms for
16 MiB), so slots are reused and stay mapped on both sides.

This is a step on frames, not on one socket library: a connection calls its
``export`` (:meth:`SharedMemory.exporter`) on every message with buffers, an
inbox its ``shared.take`` on every message whose preamble carries the flag.

Slots. A slot is a segment: a :data:`HEADER` whose first byte says whether it
holds a message's bytes (1, written by the sender after the copy) or is free
(0, written by the receiver once no view of it is left), then the data. A
slot an array still holds is not reused: a held array pins its slot, and
once all of a peer's are pinned, buffers to it go through the socket. The sender keeps
at most :data:`POOL_SLOTS` slots and :data:`POOL_BYTES` bytes per peer; a
buffer that finds no free slot within those goes through the socket. The
table says, per buffer, whether its slot is new (the receiver opens it by
name, maps it and unlinks the name) or known (the receiver mapped it
before), and names the slots the sender retired (both sides unmap them).

Lifetime. A segment's name says whose it is:
``zactor-<cluster>-<creator pid>-<receiver>-<n>`` (the cluster: a digest of the
head's address; the receiver: a digest of its inbox address). A name lives
only from the slot's creation until the receiver first maps it; the memory
lives until both sides unmapped it (the kernel unmaps a dead process's).
Names never taken are unlinked:

- by the sender, when the peer is known dead (:meth:`SharedMemory.peer_gone`),
  or when it closes, after waiting up to :data:`LINGER_S` (ZeroMQ's linger)
  for its peers to take them;
- by the receiver when it closes (what was sent to it and never read);
- by the process that watches a dead process's exit (a supervisor: a
  worker's, or the head's watch of a local driver), with :func:`sweep`: the
  names sent to it at once, the names it made :data:`DEAD_SENDER_GRACE_S`
  later (its messages that reached live peers are read by then; those that
  never left it are not, and their names go);
- by the head, when the cluster stops, a driver that ran an embedded cluster,
  and the ``zactor`` command clearing a killed standing head's leftovers,
  which sweep the whole cluster's. SIGKILL anywhere leaves no name
  behind once these ran.

A malformed reference (not this cluster's or not addressed to this inbox, a
name that does not exist, a wrong length, a slot not marked full, a damaged
table) makes the message dropped and logged once like any malformed frame
(the endpoint's ``drop``); the new segments of this inbox the table named are
unlinked all the same.

``ZACTOR_TRANSPORT=zmq`` turns it off with the rest of the same-host work
(:func:`zactor.transport.same_host_lane_enabled`); so does a machine without
``/dev/shm``.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import logging
import mmap
import os
import re
import stat
import struct
import threading
import time
import weakref
from typing import Callable

import numpy as np

from zactor.wire import hotpath

log = logging.getLogger("zactor")

#: Where POSIX shared memory lives on Linux: a segment is a file of this tmpfs.
SHM_DIR = "/dev/shm"
#: Buffer frames at least this large go through a slot; a smaller one costs less
#: through the socket (measured: BENCHMARKS.md).
MIN_BYTES = 64 * 1024
#: Bytes at the start of a slot before its data: the state byte, padded so the data
#: starts 64-byte aligned.
HEADER = 64
#: At most this many slots per peer ...
POOL_SLOTS = 16
#: ... holding at most this many bytes of data in all.
POOL_BYTES = 256 * 1024 * 1024
#: How long a closing endpoint waits for its peers to take the segments it sent (s).
LINGER_S = 0.2
#: How a segment's name starts.
PREFIX = "zactor-"
#: How long after a process's death the names it made are swept (s): its messages
#: that reached live peers before it died are read (their names opened) by then.
DEAD_SENDER_GRACE_S = 5.0

_SHARED = hotpath.SHARED_BUFFERS
_with_flags = hotpath.with_preamble_flags
#: One table entry: buffer index, length, op, name length; the name follows.
_ENTRY = struct.Struct("<IQBB")
_NEW, _KNOWN, _RETIRE = 0, 1, 2  # ops: a slot to open by name, one mapped before, one gone
_FREE, _FULL = 0, 1  # a slot's state byte
_CREATE = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC


def cluster_token(head_address: str) -> str:
    """The cluster part of a segment's name: a digest of the head's address."""
    return hashlib.sha256(head_address.encode()).hexdigest()[:12]


def address_tag(address: str) -> str:
    """The receiver part of a segment's name: a digest of the receiving inbox's address."""
    return hashlib.sha256(address.encode()).hexdigest()[:8]


def available() -> bool:
    """True if this machine has POSIX shared memory where zactor looks for it."""
    return os.path.isdir(SHM_DIR)


class SharedMemory:
    """One endpoint's shared-memory step: exports to same-host peers, takes what came in.

    ``drop(kind, identity, message)`` counts and logs a malformed message (the
    endpoint's :meth:`zactor.endpoint.runtime.Runtime.drop`).
    """

    def __init__(
        self, head_address: str, inbox_address: str, drop: Callable[[str, bytes, str], None]
    ) -> None:
        self.head_address = head_address
        self.inbox_address = inbox_address
        self.token = cluster_token(head_address)
        self.prefix = f"{PREFIX}{self.token}-"
        self.tag = address_tag(inbox_address)
        self.drop = drop
        self._mine = re.compile(rf"{re.escape(self.prefix)}[0-9]+-{self.tag}-[0-9a-f]+\Z")
        self._own = f"{self.prefix}{os.getpid()}-"
        self._numbers = itertools.count()
        self._lock = threading.Lock()
        self._exporters: dict[str, _Exporter] = {}
        #: Slots of each sender this inbox mapped: sender identity -> name -> mapping.
        self._mapped: dict[bytes, dict[str, mmap.mmap]] = {}
        #: The pid of each sender whose slots this inbox mapped.
        self._senders: dict[bytes, int] = {}
        self._full_logged = False
        #: Buffers this endpoint sent through slots, and took from them, so far.
        self.exported = 0
        self.taken = 0

    # -- sending ---------------------------------------------------------------------------

    def exporter(self, peer: str) -> Callable[[list], list]:
        """``export(frames) -> frames`` for the connection to ``peer`` (same host)."""
        with self._lock:
            exporter = self._exporters.get(peer)
            if exporter is None:
                exporter = self._exporters[peer] = _Exporter(self, peer)
        return exporter.export

    def peer_gone(self, peer: str) -> None:
        """``peer`` died: free the slots sent to it and the ones it sent here."""
        with self._lock:
            exporter = self._exporters.pop(peer, None)
            mapped = self._mapped.pop(peer.encode(), {})
        if exporter is not None:
            exporter.close()
        for mapping in mapped.values():
            _close(mapping)

    def close(self) -> None:
        """Wait up to :data:`LINGER_S` for the peers to take what was sent, then free every
        slot and unlink the names never taken."""
        with self._lock:
            exporters, self._exporters = list(self._exporters.values()), {}
            mapped, self._mapped = self._mapped, {}
        deadline = time.monotonic() + LINGER_S
        while any(e.untaken() for e in exporters) and time.monotonic() < deadline:
            time.sleep(0.005)
        for exporter in exporters:
            exporter.close()
        for slots in mapped.values():
            for mapping in slots.values():
                _close(mapping)
        # Closed after the sockets: nothing sent here can be read any more.
        sweep(self.head_address, self.inbox_address)

    def _new_slot(self, peer_tag: str, capacity: int) -> tuple[str, mmap.mmap] | None:
        """A new segment of :data:`HEADER` + ``capacity`` bytes, mapped; None if the
        machine's shared memory cannot hold it (its buffers then go through the socket)."""
        name = f"{self._own}{peer_tag}-{next(self._numbers):x}"
        path = os.path.join(SHM_DIR, name)
        try:
            fd = os.open(path, _CREATE, 0o600)
        except OSError as exc:
            return self._cannot(exc)
        try:
            # Reserves the pages now: a full /dev/shm fails here, not as SIGBUS on a write.
            os.posix_fallocate(fd, 0, HEADER + capacity)
            mapping = mmap.mmap(fd, HEADER + capacity)
        except OSError as exc:
            _unlink(name)
            return self._cannot(exc)
        finally:
            os.close(fd)
        return name, mapping

    def _cannot(self, exc: OSError) -> None:
        if not self._full_logged:
            self._full_logged = True
            log.warning(
                "zactor: cannot make a shared-memory segment (%s): buffers go through the "
                "socket instead until it can; free space in %s (df %s) or make it larger",
                exc,
                SHM_DIR,
                SHM_DIR,
            )
        return None

    # -- receiving -------------------------------------------------------------------------

    def take(self, identity: bytes, frame0, buffers) -> list | None:
        """The buffers of a message whose preamble carries ``SHARED_BUFFERS``: the table
        (the last frame) read, and a read-only view of each slot it names in its
        buffer's place. None, dropping the message, if any reference is malformed."""
        frames = list(buffers)
        if not frames:
            self.drop("shared-memory", identity, "the shared-memory flag without a table frame")
            return None
        with self._lock:  # peer_gone may run on another thread
            slots = self._mapped.setdefault(identity, {})
        entries = list(self._read_table(bytes(frames.pop()), len(frames)))
        problem = None
        for at, (index, nbytes, op, name) in enumerate(entries):
            if type(index) is str:  # the table is damaged from here on
                problem = index
            elif op == _RETIRE:
                _close(slots.pop(name, None))
                continue
            elif op == _NEW and name not in slots:
                mapping, problem = self._map(name)
                if mapping is not None:
                    slots[name] = mapping
                    self._unmap_dead_senders(identity, name)
            if problem is None:
                mapping = slots.get(name)
                if mapping is None:
                    problem = f"shared-memory slot {name} was never sent to this inbox"
                else:
                    problem = self._lend(frames, index, nbytes, name, mapping)
            if problem is not None:
                for _index, _nbytes, later, name in entries[at:]:
                    if later == _NEW and name:  # made for this inbox: nobody else will
                        _unlink(name)
                self.drop("shared-memory", identity, problem)
                return None  # the views lent so far free their slots as they go
        return frames

    def _unmap_dead_senders(self, identity: bytes, name: str) -> None:
        """Note that ``identity`` runs as the pid in ``name``; unmap the slots of senders
        whose process is gone. A dead worker's are unmapped when the head says it died
        (:meth:`peer_gone`); nobody says so of a driver, so a new slot (rare: a pool
        fills once) is when a receiver looks."""
        self._senders[identity] = int(name[len(self.prefix) :].partition("-")[0])
        for sender, pid in list(self._senders.items()):
            if sender == identity:  # it just sent: alive, or its message still counts
                continue
            try:
                os.kill(pid, 0)
                continue
            except (ProcessLookupError, PermissionError):  # gone (another user's has its pid)
                pass
            with self._lock:
                slots = self._mapped.pop(sender, {})
            del self._senders[sender]
            for mapping in slots.values():
                _close(mapping)

    def _read_table(self, table: bytes, nframes: int):
        """Yield ``(index, nbytes, op, name)`` per entry; on a damaged entry, yield
        ``(what is wrong, 0, op, name)`` (``name`` empty unless it is this inbox's) and
        stop. Every name yielded is this inbox's."""
        at = 0
        if not table:
            yield "an empty shared-memory table", 0, _RETIRE, ""
        while at < len(table):
            if at + _ENTRY.size > len(table):
                yield "a shared-memory table cut short", 0, _RETIRE, ""
                return
            index, nbytes, op, length = _ENTRY.unpack_from(table, at)
            at += _ENTRY.size
            name = table[at : at + length].decode("ascii", "replace")
            at += length
            if len(name) != length or not self._mine.match(name) or op > _RETIRE:
                yield (
                    f"shared-memory segment {name[:80]!r} is not one this cluster sends to this "
                    "inbox (another cluster's, or another process's)",
                    0,
                    _RETIRE,
                    "",
                )
                return
            if op != _RETIRE and index >= nframes:
                problem = f"shared-memory slot {name} stands for buffer {index} of {nframes}"
                yield problem, 0, op, name
                return
            yield index, nbytes, op, name

    def _map(self, name: str) -> tuple:
        """``(mapping of segment name, None)``, or ``(None, what is wrong)``; the name is
        unlinked either way (the inbox it was made for is the only one to open it)."""
        path = os.path.join(SHM_DIR, name)
        try:
            fd = os.open(path, _OPEN)
        except OSError as exc:
            return None, f"shared-memory segment {name} cannot be opened ({exc.strerror})"
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size <= HEADER:
                return None, f"shared-memory segment {name} holds {info.st_size} bytes: no slot"
            return mmap.mmap(fd, info.st_size), None
        except OSError as exc:
            return None, f"shared-memory segment {name} cannot be mapped ({exc.strerror})"
        finally:
            os.close(fd)
            _unlink(name)

    def _lend(self, frames: list, index: int, nbytes: int, name: str, mapping) -> str | None:
        """Put a read-only view of slot ``name``'s ``nbytes`` in ``frames[index]``, which
        frees the slot when the last view of it is gone; or say why not."""
        if len(frames[index]):
            return f"buffer frame {index} is not empty but shared-memory slot {name} replaces it"
        if HEADER + nbytes > len(mapping) or nbytes == 0:
            return (
                f"shared-memory slot {name} holds {len(mapping) - HEADER} bytes, its reference "
                f"says {nbytes}"
            )
        if mapping[0] != _FULL:
            return f"shared-memory slot {name} is not marked full: nothing was put in it"
        # Every view the decoder makes (arrays, slices, pickled objects' buffers) holds
        # ``owner`` through the memoryview's buffer: when the last one goes, so does it,
        # and the slot is free. A read-only memoryview, not ``owner`` itself: numpy lets
        # an array over a read-only array be made writeable, not one over a memoryview.
        owner = np.frombuffer(mapping, np.uint8, nbytes, HEADER)
        owner.flags.writeable = False
        weakref.finalize(owner, _release, mapping)
        frames[index] = memoryview(owner)
        self.taken += 1  # only the inbox's reader takes
        return None


def _release(mapping: mmap.mmap) -> None:
    """The last view of a slot is gone: the sender may fill it again."""
    try:
        mapping[0] = _FREE
    except ValueError:  # unmapped meanwhile (its sender died): nobody fills it again
        pass


class _Exporter:
    """The sending side towards one same-host peer: its pool of slots."""

    __slots__ = ("shared", "tag", "slots", "untaken_names", "retired", "lock", "pool_bytes")

    def __init__(self, shared: SharedMemory, peer: str) -> None:
        self.shared = shared
        self.tag = address_tag(peer)
        #: name -> [mapping, capacity]; a mapping's first byte is its slot's state.
        self.slots: dict[str, list] = {}
        self.pool_bytes = 0
        #: Names sent whose segment the peer may not have opened yet, oldest first.
        self.untaken_names: collections.deque[str] = collections.deque()
        #: Slots retired since the last message to the peer: it unmaps them when told.
        self.retired: list[str] = []
        self.lock = threading.Lock()

    def export(self, frames: list) -> list:
        """``frames`` with each buffer of at least :data:`MIN_BYTES` copied into a slot."""
        table = []
        out = None
        with self.lock:  # the connection's owner serializes sends; close() may run beside
            for i in range(1, len(frames)):
                buf = frames[i]
                try:
                    data = memoryview(buf).cast("B")
                except (TypeError, ValueError):  # not contiguous: the socket takes it
                    continue
                nbytes = data.nbytes
                if nbytes < MIN_BYTES:
                    continue
                slot = self._free_slot(nbytes)
                if slot is None:
                    continue
                name, mapping, op = slot
                mapping[HEADER : HEADER + nbytes] = data
                mapping[0] = _FULL
                if out is None:
                    out = list(frames)
                out[i] = b""
                encoded = name.encode()
                table.append(_ENTRY.pack(i - 1, nbytes, op, len(encoded)) + encoded)
            if out is None:
                return frames
            for name in self.retired:
                encoded = name.encode()
                table.append(_ENTRY.pack(0, 0, _RETIRE, len(encoded)) + encoded)
            self.retired.clear()
            self.shared.exported += len(table)
        out[0] = _with_flags(frames[0], _SHARED)
        out.append(b"".join(table))
        return out

    def _free_slot(self, nbytes: int) -> tuple | None:
        """``(name, mapping, op)`` of a free slot of at least ``nbytes``, a new one if the
        pool has room (retiring free ones to make it), or None (``self.lock`` held)."""
        best = None
        for name, (mapping, capacity) in self.slots.items():
            if capacity >= nbytes and mapping[0] == _FREE:
                if best is None or capacity < self.slots[best][1]:
                    best = name
        if best is not None:
            return best, self.slots[best][0], _KNOWN
        # Size classes an eighth of a power of two apart: at most 12.5% unused, and a
        # slot takes the next buffers of about the same size.
        step = max(4096, 1 << max(0, nbytes.bit_length() - 4))
        capacity = -(-nbytes // step) * step
        while len(self.slots) >= POOL_SLOTS or self.pool_bytes + capacity > POOL_BYTES:
            free = [n for n, (m, _) in self.slots.items() if m[0] == _FREE]
            if not free:
                return None  # every slot is in flight: this one goes through the socket
            self._retire(min(free, key=lambda n: self.slots[n][1]))
        made = self.shared._new_slot(self.tag, capacity)
        if made is None:
            return None
        name, mapping = made
        self.slots[name] = [mapping, capacity]
        self.pool_bytes += capacity
        self._forget_taken()
        self.untaken_names.append(name)
        return name, mapping, _NEW

    def _retire(self, name: str) -> None:
        mapping, capacity = self.slots.pop(name)
        self.pool_bytes -= capacity
        _close(mapping)
        self.retired.append(name)

    def _forget_taken(self) -> None:
        """Forget the names the peer opened (gone from ``/dev/shm``), oldest first."""
        names = self.untaken_names
        while names and not os.path.exists(os.path.join(SHM_DIR, names[0])):
            names.popleft()

    def untaken(self) -> bool:
        """True while the peer has not opened every segment sent to it."""
        with self.lock:
            self._forget_taken()
            return bool(self.untaken_names)

    def close(self) -> None:
        """Unmap every slot; unlink the names the peer never opened."""
        with self.lock:
            slots, self.slots = self.slots, {}
            names, self.untaken_names = list(self.untaken_names), collections.deque()
            self.pool_bytes = 0
        for mapping, _ in slots.values():
            _close(mapping)
        for name in names:
            _unlink(name)


def _close(mapping) -> None:
    """Unmap ``mapping`` (None: nothing)."""
    if mapping is not None:
        try:
            mapping.close()
        except BufferError:  # a view is still being read: unmapped when it is dropped
            pass


def _unlink(name: str) -> None:
    try:
        os.unlink(os.path.join(SHM_DIR, name))
    except FileNotFoundError:
        pass


def sweep(head_address: str, address: str | None = None, pid: int | None = None) -> int:
    """Unlink the names of the cluster's segments (that of ``head_address``) in
    ``/dev/shm``: all of them, or those sent to the inbox at ``address`` (its process is
    gone or closed: it will never open them) and those process ``pid`` made. Returns
    how many.

    A dead process's own names are for the caller to sweep a while after its death
    (:data:`DEAD_SENDER_GRACE_S`): a live receiver opens them as it reads the messages
    that arrived before the death; only those never delivered are left.
    """
    if not available():
        return 0
    prefix = f"{PREFIX}{cluster_token(head_address)}-"
    sent_to = f"-{address_tag(address)}-" if address is not None else None
    made = f"{prefix}{pid}-" if pid is not None else None
    removed = 0
    try:
        entries = os.scandir(SHM_DIR)
    except OSError:
        return 0
    with entries:
        for entry in entries:
            name = entry.name
            if not name.startswith(prefix):
                continue
            if sent_to is not None or made is not None:
                if not (
                    (sent_to is not None and sent_to in name[len(prefix) :])
                    or (made is not None and name.startswith(made))
                ):
                    continue
            try:
                os.unlink(entry.path)
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def segments(head_address: str) -> list[str]:
    """The names of the cluster's segments now in ``/dev/shm`` (for checks and tests)."""
    prefix = f"{PREFIX}{cluster_token(head_address)}-"
    try:
        return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix))
    except OSError:
        return []
