"""The worker side of durable actors: when an actor with a checkpoint saves, and
the record of the calls it applied that makes a retried call run only once.

:class:`Checkpointer` is one actor's; :class:`_CallerRecord` is what it keeps
of one caller's calls. The stores and the bytes saved in them are
:mod:`zactor.checkpoint`'s; the host's call path
(:meth:`zactor.worker.durable_calls.DurableCalls._execute_durable`) asks the checkpointer before
and after each call.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import msgpack

from zactor.checkpoint import (
    capture_state,
    open_store,
    pack_checkpoint,
    restore_state,
    unpack_checkpoint,
)
from zactor.errors import CheckpointError, CheckpointSaveError, describe_exception
from zactor.wire import records as wire
from zactor.wire import serialization

if TYPE_CHECKING:
    from zactor.worker.hosted import HostedActor

#: Applied calls an actor with a checkpoint remembers per caller, with their replies, so
#: that a retried call it already applied gets its recorded reply instead of running
#: twice. The record is saved inside every checkpoint, so this bounds what each save
#: writes (and the memory it holds) however long the actor lives. Only calls in flight
#: when an actor's worker died are ever retried, and one caller rarely has more than a
#: few hundred of those, so 1024 is ample.
APPLIED_WINDOW = 1024
#: ... and at most this many bytes of recorded replies per caller (the newest reply is
#: always kept), so an actor returning large arrays does not write 1024 of them into
#: each checkpoint.
APPLIED_WINDOW_BYTES = 1 << 20
#: Callers an actor with a checkpoint keeps a record for; beyond this, the record of the
#: caller heard from least recently is dropped (it bounds the checkpoint the same way).
APPLIED_CALLERS = 1024

_dumps = serialization.dumps
_perf_counter = time.perf_counter
_ERROR = wire.ERROR

#: :meth:`Checkpointer.begin`'s answer for a call that is running now (delivered twice).
_RUNNING = object()
#: ... and for a call applied before whose reply the record no longer holds.
_FORGOTTEN = object()
_packb = msgpack.packb

# One lock per checkpoint key in this process, shared by the incarnations of an actor
# hosted here: a call of a killed incarnation still finishing on a thread then either
# saves before the next incarnation restores, or sees that it is dead and saves nothing.
_key_locks: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_key_locks_mu = threading.Lock()


def _key_lock(key: str) -> threading.Lock:
    with _key_locks_mu:
        lock = _key_locks.get(key)
        if lock is None:
            lock = _key_locks[key] = threading.Lock()
        return lock


def _as_bytes(buffer) -> bytes:
    """An out-of-band buffer of a reply (bytes, an array, a pickle buffer) as plain bytes."""
    return buffer if type(buffer) is bytes else memoryview(buffer).tobytes()


class _CallerRecord:
    """What an actor with a checkpoint remembers of one caller's calls.

    - ``replies``: call id -> the recorded reply (msgpack ``[call_id, kind,
      payload, [buffer bytes, ...]]``), oldest first; at most
      :data:`APPLIED_WINDOW` of them and :data:`APPLIED_WINDOW_BYTES` bytes.
    - ``floor``: the caller's calls with an id at or below it count as
      applied and never run again. It rises to the id of each reply dropped
      from ``replies`` to keep them within bounds, never past a call still
      running.
    - ``forgotten``: ids of dropped replies that the floor could not cover
      because an older call of the caller was still running (threaded and
      async actors finish calls out of order); they never run again either.
    - ``running``: ids of calls started and not finished (not saved: after a
      restart nothing runs).

    A call id is a caller's own counter: it strictly increases over all the
    calls one process makes, to any actor, so ids missing between two recorded
    ones are calls to other actors. A caller sends its calls to an actor in id
    order, and re-sends the calls to retry, in id order, before any newer
    one (``zactor.endpoint.recovery``), so a call at or below the floor that was never
    applied would have to be older than the last :data:`APPLIED_WINDOW`
    calls the actor applied for that caller.
    """

    __slots__ = ("replies", "nbytes", "floor", "forgotten", "running", "blob", "start", "packed")

    def __init__(self, floor: int = 0) -> None:
        self.replies: dict[int, bytes] = {}
        self.nbytes = 0
        self.floor = floor
        self.forgotten: set[int] = set()
        self.running: set[int] = set()
        # The entries of ``replies`` back to back from ``blob[start:]``, kept as they
        # come and go so that a save does not join up to APPLIED_WINDOW pieces (~20 us);
        # None when it must be rebuilt (an entry replaced, a record loaded).
        self.blob: bytearray | None = bytearray()
        self.start = 0
        self.packed: bytes | None = None  # the window as last packed, while unchanged

    def record(self, call_id: int, entry: bytes) -> None:
        """Record ``call_id``'s reply ``entry``, dropping the oldest beyond the bounds."""
        replies = self.replies
        old = replies.pop(call_id, None)
        if old is not None:  # replaced (a failed save's error): rebuild the blob
            self.nbytes -= len(old)
            self.blob = None
        replies[call_id] = entry
        self.nbytes += len(entry)
        self.packed = None
        blob = self.blob
        if blob is not None:
            blob += entry
        while len(replies) > 1 and (
            len(replies) > APPLIED_WINDOW or self.nbytes > APPLIED_WINDOW_BYTES
        ):
            oldest = next(iter(replies))
            size = len(replies.pop(oldest))
            self.nbytes -= size
            if blob is not None:
                self.start += size  # the oldest entry is the first in the blob
            running = self.running
            if running and oldest > min(running):
                self.forgotten.add(oldest)  # the floor must stay below the running call
            elif oldest > self.floor:
                self.floor = oldest
                if self.forgotten:
                    self.forgotten = {c for c in self.forgotten if c > oldest}
        if blob is not None and self.start > len(blob) // 2:
            del blob[: self.start]  # amortised: each byte moves about once
            self.start = 0

    def pack(self) -> bytes:
        """The window for :func:`pack_checkpoint`: msgpack entries back to back, a
        forgotten id as a one-element ``[call_id]``."""
        if self.packed is None:
            if self.blob is None:
                self.blob, self.start = bytearray(b"".join(self.replies.values())), 0
            window = bytes(self.blob[self.start :])
            if self.forgotten:
                window = b"".join(_packb((c,)) for c in sorted(self.forgotten)) + window
            self.packed = window
        return self.packed

    @classmethod
    def load(cls, floor: int, window: bytes) -> _CallerRecord:
        """The record :meth:`pack` saved."""
        record = cls(floor)
        record.blob = None  # built from ``replies`` at the first pack
        unpacker = msgpack.Unpacker(raw=False, use_list=True)
        unpacker.feed(window)
        for entry in unpacker:
            if len(entry) == 1:
                record.forgotten.add(entry[0])
            else:
                packed = _packb(entry)
                record.replies[entry[0]] = packed
                record.nbytes += len(packed)
        return record


class Checkpointer:
    """The durable side of one actor: its store, when it saves, and the calls it applied.

    Built from the creation spec (:meth:`from_spec`): ``checkpoint`` (a store or
    a URL, see :func:`zactor.checkpoint.open_store`), ``checkpoint_every``
    (n >= 1, default 1), ``checkpoint_key`` (default ``actor-<id>``) and
    ``incarnation`` (0 at creation, k at the k-th restart).

    **Restore or construct** (:meth:`open`): a named actor, or any actor after
    a restart, whose key exists in the store is rebuilt from its checkpoint
    (:func:`~zactor.checkpoint.restore_state`; the constructor does not run).
    Otherwise the constructor runs and its state is saved at once, so a crash
    before the first call still restores the constructed state.

    **When it saves**: after every ``checkpoint_every``-th successful call or
    tell, before that call's reply is queued (with ``checkpoint_every=1`` no
    caller ever sees the result of a call that is not saved), and when the
    actor ends gracefully (retired, or ``zactor.exit_actor()``) with calls not
    yet saved. A call that raised is recorded but neither counts nor saves:
    its changes, if any, are saved with the next one. A save that fails makes
    that call's reply a :class:`CheckpointSaveError`; a killed actor saves
    nothing more.

    **Exactly once** (see :class:`_CallerRecord`): each CALL comes with its
    caller's call id. Per caller, the replies of the last
    :data:`APPLIED_WINDOW` applied calls (and at most
    :data:`APPLIED_WINDOW_BYTES` of them) are kept and saved with the state, in
    the same atomic write. A CALL whose id is recorded gets the recorded reply
    and does not run; one older than the window (at or below the caller's
    floor) does not run either, and gets an ``ActorDiedError``-type error
    saying it was applied but its result is no longer recorded. TELLs (no
    call id) are not deduplicated. At most :data:`APPLIED_CALLERS` callers are
    remembered (the least recently heard from is dropped).

    **Concurrent actors**: a threaded or async actor finishes calls in any
    order, so the record is a set of ids, and the floor never rises past a
    call still running. A checkpoint captures the state as it is when a call
    finishes: another call still running may already have changed it without
    being recorded as applied yet. If the worker dies before that call is
    recorded and saved, its retry runs again on a state that holds its
    change. So exactly-once holds for every call of a sync actor; for an async
    actor whose methods change the state only after their last ``await`` (the
    change and its record then happen with no other coroutine in between);
    and for a threaded actor only for the calls that were not running when
    its worker died: the calls running at that moment are applied at least
    once. (``__getstate__`` taking the actor's own lock makes each snapshot
    consistent, not the calls exactly-once.)

    All of it runs under a lock per key, held during saves (which are store
    writes: an ``fsync`` with :class:`~zactor.FileStore`).
    """

    __slots__ = (
        "store",
        "key",
        "every",
        "restore",
        "lock",
        "callers",
        "since",
        "saves",
        "last_save_us",
        "replayed",
        "restored",
    )

    def __init__(self, store, key: str, every: int = 1, restore: bool = False) -> None:
        self.store = store
        self.key = key
        self.every = every
        self.restore = restore  # whether open() restores an existing checkpoint
        self.lock = _key_lock(key)
        self.callers: OrderedDict[bytes, _CallerRecord] = OrderedDict()
        self.since = 0  # successful calls and tells since the last save
        self.saves = 0
        self.last_save_us: float | None = None
        self.replayed = 0  # retried calls answered from the record
        self.restored = False

    @classmethod
    def from_spec(cls, actor_id: int, spec: dict) -> Checkpointer | None:
        """The checkpointer a creation spec asks for, or None without ``checkpoint``."""
        given = spec.get("checkpoint")
        if given is None:
            return None
        every = spec.get("checkpoint_every") or 1
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"checkpoint_every must be a positive int, got {every!r}")
        key = spec.get("checkpoint_key") or f"actor-{actor_id}"
        restore = (spec.get("incarnation") or 0) > 0 or spec.get("name") is not None
        return cls(open_store(given), key, every, restore)

    def open(self, cls: type, args: tuple, kwargs: dict) -> Any:
        """The actor's instance: restored from its checkpoint, or constructed and saved."""
        store, key = self.store, self.key
        data = None
        if self.restore:
            try:
                with self.lock:
                    if store.exists(key):
                        data = store.restore(key)
            except Exception as exc:
                raise CheckpointError(
                    f"cannot read the checkpoint of actor {cls.__qualname__} under key {key!r} "
                    f"in {store!r} ({type(exc).__name__}: {exc}); the actor did not start. "
                    "Make the store reachable and readable, then create the actor again"
                ) from exc
        if data is not None:
            return self._restored(cls, data)
        instance = cls(*args, **kwargs)
        with self.lock:
            try:
                self._save(instance)
            except Exception as exc:
                raise CheckpointError(
                    f"actor {cls.__qualname__} was constructed, but saving its first "
                    f"checkpoint under key {key!r} in {store!r} failed "
                    f"({type(exc).__name__}: {exc}); the actor did not start. Make the "
                    "store writable and the state picklable, then create the actor again"
                ) from exc
        return instance

    def _restored(self, cls: type, data: bytes) -> Any:
        try:
            state, applied = unpack_checkpoint(data)
            instance = restore_state(cls, state)
            callers = OrderedDict(
                (caller, _CallerRecord.load(floor, window))
                for caller, (floor, window) in applied.items()
            )
        except Exception as exc:
            raise CheckpointError(
                f"cannot restore actor {cls.__qualname__} from its checkpoint under key "
                f"{self.key!r} in {self.store!r} ({type(exc).__name__}: {exc}); the actor "
                "did not start and the checkpoint was left as it is. Fix the class (its "
                "__setstate__, or attributes it no longer has), or delete that key from "
                "the store to start afresh"
            ) from exc
        self.callers = callers
        self.restored = True
        return instance

    def _save(self, instance: Any) -> None:
        """Save ``instance``'s state and the applied calls (``lock`` held)."""
        started = _perf_counter()
        applied = {caller: (rec.floor, rec.pack()) for caller, rec in self.callers.items()}
        self.store.save(self.key, pack_checkpoint(capture_state(instance), applied))
        self.last_save_us = (_perf_counter() - started) * 1e6
        self.saves += 1
        self.since = 0

    def begin(self, identity: bytes, call_id: int):
        """A CALL from ``identity`` is about to run: None to run it, else the
        recorded reply (bytes), :data:`_FORGOTTEN` or :data:`_RUNNING`."""
        with self.lock:
            callers = self.callers
            rec = callers.get(identity)
            if rec is None:
                rec = callers[identity] = _CallerRecord()
                if len(callers) > APPLIED_CALLERS:
                    callers.popitem(last=False)
            else:
                callers.move_to_end(identity)
                entry = rec.replies.get(call_id)
                if entry is not None:
                    return entry
                if call_id <= rec.floor or call_id in rec.forgotten:
                    return _FORGOTTEN
                if call_id in rec.running:
                    return _RUNNING
            rec.running.add(call_id)
            return None

    def finish(
        self,
        actor: HostedActor,
        identity: bytes,
        call_id: int,
        kind: int,
        payload: bytes,
        buffers: list,
        ok: bool,
    ) -> tuple | None:
        """A CALL finished with the reply ``(kind, payload, buffers)``: record it and
        save if due. Returns the reply to send (a :class:`CheckpointSaveError` if the
        save failed), or None if the actor was killed meanwhile (nothing recorded)."""
        entry = _packb([call_id, kind, payload, [_as_bytes(b) for b in buffers]])
        with self.lock:
            rec = self.callers.get(identity)
            if rec is None:  # dropped meanwhile (APPLIED_CALLERS): start afresh
                rec = self.callers[identity] = _CallerRecord()
            rec.running.discard(call_id)
            if actor.dead is not None:  # its result is void, its key may be another's now
                return None
            rec.record(call_id, entry)
            if not ok:
                return kind, payload, buffers
            self.since += 1
            if self.since < self.every:
                return kind, payload, buffers
            try:
                self._save(actor.instance)
            except Exception as exc:
                error = self._save_failed(actor, f"call {call_id}", exc)
                payload = _dumps(describe_exception(error, f"checkpoint of actor {actor})"))[0]
                rec.record(call_id, _packb([call_id, _ERROR, payload, []]))
                return _ERROR, payload, []
        return kind, payload, buffers

    def forget_running(self, identity: bytes, call_id: int) -> None:
        """A started CALL ended without being applied (its actor was killed)."""
        with self.lock:
            rec = self.callers.get(identity)
            if rec is not None:
                rec.running.discard(call_id)

    def tell_done(self, actor: HostedActor) -> BaseException | None:
        """A tell ran: count it and save if due; the save's error, if it failed."""
        with self.lock:
            if actor.dead is not None:
                return None
            self.since += 1
            if self.since < self.every:
                return None
            try:
                self._save(actor.instance)
            except Exception as exc:
                return self._save_failed(actor, "a tell", exc)
        return None

    def save_pending(self, actor: HostedActor) -> BaseException | None:
        """Save if calls ran since the last save; the save's error, if it failed."""
        with self.lock:
            if self.since == 0:
                return None
            try:
                self._save(actor.instance)
            except Exception as exc:
                return self._save_failed(actor, "its last calls", exc)
        return None

    def _save_failed(self, actor: HostedActor, what: str, exc: Exception) -> CheckpointSaveError:
        try:
            raise CheckpointSaveError(
                f"{what} to actor {actor} ran, but saving its checkpoint under key "
                f"{self.key!r} in {self.store!r} failed ({type(exc).__name__}: {exc}). The "
                "change is in the actor's memory but not durable: it is lost if the actor's "
                "worker dies before a later save succeeds (the actor saves again after its "
                "next successful call). Fix the store (space, permissions) or the state "
                "(picklable), and read the actor's state before repeating the call"
            ) from exc
        except CheckpointSaveError as error:
            return error

    def stats(self) -> dict:
        """The actor's checkpoint figures for :meth:`zactor.worker.service.WorkerService.stats`."""
        try:
            store = repr(self.store)
        except Exception:
            store = f"<{type(self.store).__name__}>"
        last = self.last_save_us
        return {
            "checkpoint": store,
            "checkpoint_key": self.key,
            "checkpoints": self.saves,
            "last_checkpoint_us": None if last is None else round(last, 1),
            "replayed": self.replayed,
        }
