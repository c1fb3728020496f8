"""Futures passed directly as arguments arrive as their values, as Ray and Dask do it
(zactor's tasks and the compat shims)."""

from __future__ import annotations

from typing import Any, Callable


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
