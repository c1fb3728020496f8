"""Ray's object refs on zactor: ``ray.put``, ``ray.get``, ``ray.wait``, refs as arguments.

zactor has no object store. A call's result is a :class:`zactor.Future`; a
value given to ``ray.put`` stays in a local :class:`PutRef` that carries the
value itself, so ``ray.get`` returns it as is and pickling the ref (inside a
list, say) sends a copy of the value. Both are :class:`ObjectRef` instances.

As in Ray, a ref passed directly as an argument of a call (``f.remote(ref)``)
arrives as its value: the shim resolves it in the caller before sending, so
the caller waits for a pending result there, and an error in it is raised by
``.remote()`` instead of by a later ``ray.get``.
"""

from __future__ import annotations

import abc
from typing import Any

import zactor
from zactor.caller.arguments import resolve_arguments
from zactor.caller.future import Future


class ObjectRef(abc.ABC):  # noqa: B024 (an ABC for isinstance checks only)
    """What ``ray.get`` takes: a call's :class:`zactor.Future`, or a :class:`PutRef`.

    ``isinstance(f.remote(), ray.ObjectRef)`` holds, as in Ray.
    """


ObjectRef.register(Future)


class PutRef(ObjectRef):
    """The ref ``ray.put(value)`` returns: the value itself, kept here (no object store).

    Pickling it (passing it inside a list or a dict) copies the value;
    ``await ref`` and ``ray.get(ref)`` give it back.
    """

    __slots__ = ("_value",)

    def __init__(self, value: Any) -> None:
        self._value = value

    def __reduce__(self):
        return (PutRef, (self._value,))

    def __await__(self):
        return self._value
        yield  # a generator: awaiting it returns at once

    def __repr__(self) -> str:
        return f"PutRef({type(self._value).__name__})"


#: What counts as a ref among a call's arguments (concrete classes: a fast check).
_REF_TYPES = (Future, PutRef)


def put(value: Any) -> PutRef:
    """``ray.put``: a ref to ``value``; ``ray.get`` returns ``value`` itself."""
    if isinstance(value, _REF_TYPES):
        raise TypeError(
            "ray.put() of an ObjectRef: pass the ref itself where its value is needed, "
            "or ray.get() it first"
        )
    return PutRef(value)


def _check(ref: Any) -> Any:
    if not isinstance(ref, _REF_TYPES):
        raise ValueError(
            f"ray.get/ray.wait take an ObjectRef (what .remote() or ray.put() returns) "
            f"or a list of them; got {type(ref).__name__}: {ref!r}"
        )
    return ref


def get(refs: Any, *, timeout: float | None = None) -> Any:
    """``ray.get``: the value of one ref, or the list of values of a list of refs.

    Raises what the call raised, or :class:`zactor.GetTimeoutError` (Ray's
    ``GetTimeoutError``) after ``timeout`` seconds.
    """
    if isinstance(refs, (list, tuple)):
        refs = [_check(r) for r in refs]
        futures = [r for r in refs if type(r) is not PutRef]
        values = iter(zactor.get(futures, timeout=timeout))
        return [r._value if type(r) is PutRef else next(values) for r in refs]
    if type(_check(refs)) is PutRef:
        return refs._value
    return refs.result(timeout)


def wait(
    refs: list, *, num_returns: int = 1, timeout: float | None = None, fetch_local: bool = True
) -> tuple[list, list]:
    """``ray.wait``: ``(ready, not_ready)`` once ``num_returns`` refs are ready, or at
    ``timeout``. A :class:`PutRef` is always ready. ``fetch_local`` changes nothing
    (there is no object store to fetch from)."""
    if not isinstance(refs, (list, tuple)):
        raise TypeError(
            f"ray.wait takes a list of ObjectRefs, got {type(refs).__name__}: wrap one ref "
            "in a list"
        )
    refs = [_check(r) for r in refs]
    if num_returns < 0 or num_returns > len(refs):
        raise ValueError(
            f"num_returns={num_returns} must be between 0 and the number of refs ({len(refs)})"
        )
    futures = [r for r in refs if type(r) is not PutRef]
    still_needed = max(0, num_returns - (len(refs) - len(futures)))
    if still_needed:
        zactor.wait(futures, num_returns=still_needed, timeout=timeout)
    ready, not_ready = [], []
    for r in refs:
        done = type(r) is PutRef or r.done()
        (ready if done and len(ready) < num_returns else not_ready).append(r)
    return ready, not_ready


def resolve(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """The call's arguments with each ref given directly replaced by its value."""
    return resolve_arguments(args, kwargs, _REF_TYPES, get)
