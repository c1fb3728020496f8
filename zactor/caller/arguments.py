"""A call's arguments on the caller's side: checked against the signature at
``.remote()``, as Ray does (actor constructors and tasks), and futures passed
directly as arguments turned into their values, as Ray and Dask do it (tasks and
the compat shims)."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable


@functools.lru_cache(maxsize=1024)
def _signature_of(target: Callable) -> inspect.Signature | None:
    try:
        return inspect.signature(target)
    except (TypeError, ValueError):  # nothing to check against (C classes, builtins)
        return None


def check_bindable(target: Callable, args: tuple, kwargs: dict, name: str, takes: str) -> None:
    """Raise ``TypeError`` now if ``target`` would refuse ``args`` and ``kwargs``, naming
    ``name`` and what it takes (``takes``: "its constructor takes", ...)."""
    try:
        signature = _signature_of(target)
    except TypeError:  # unhashable: look it up uncached
        signature = _signature_of.__wrapped__(target)
    if signature is None:
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{name}.remote(): {exc}; {takes} {name}{signature}") from None


def resolve_arguments(
    args: tuple, kwargs: dict, types: tuple, value_of: Callable[[Any], Any]
) -> tuple[tuple, dict]:
    """``args`` and ``kwargs`` with each instance of ``types`` among them (not nested)
    replaced by ``value_of(it)``: the caller waits there for a pending one."""
    if any(isinstance(a, types) for a in args):
        args = tuple(value_of(a) if isinstance(a, types) else a for a in args)
    if kwargs and any(isinstance(v, types) for v in kwargs.values()):
        kwargs = {k: value_of(v) if isinstance(v, types) else v for k, v in kwargs.items()}
    return args, kwargs
