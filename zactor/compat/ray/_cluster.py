"""``ray.init``, ``ray.shutdown``, ``ray.is_initialized`` and Ray's automatic ``init``."""

from __future__ import annotations

from typing import Any

import zactor
from zactor.compat.ray import _options
from zactor.endpoint import runtime as _runtime
from zactor.errors import ClusterError


class RayContext(dict):
    """What ``ray.init`` returns: the cluster's description (zactor's ``init`` dict).

    As Ray's, it is a context manager: ``with ray.init(): ...`` shuts down at
    the end of the block.
    """

    def __enter__(self) -> RayContext:
        return self

    def __exit__(self, *exc: Any) -> None:
        shutdown()

    def disconnect(self) -> None:
        """Ray's ``RayContext.disconnect``: the same as ``ray.shutdown()``."""
        shutdown()


def init(address: str | None = None, **options: Any) -> RayContext:
    """``ray.init``: start an embedded zactor cluster, or join a running one.

    ``num_cpus`` is the number of worker processes (default: one per CPU),
    ``num_gpus`` the node's ``"GPU"`` resource; ``resources``, ``namespace``
    and ``ignore_reinit_error`` are zactor's. Logging and dashboard options
    are accepted and ignored. Options zactor lacks are accepted at Ray's
    default value only; another value raises ``NotImplementedError`` naming
    the option (see docs/migrating.md).
    """
    zaddress, zoptions = _options.init_options(address, options)
    return RayContext(zactor.init(zaddress, **zoptions))


def shutdown() -> None:
    """``ray.shutdown``: stop what ``init`` started (zactor's ``shutdown``)."""
    zactor.shutdown()


def is_initialized() -> bool:
    """``ray.is_initialized``: True in a driver after ``init``, and inside actors and tasks."""
    try:
        _runtime.current()
    except ClusterError:
        return False
    return True


def ensure_initialized() -> None:
    """Ray starts a local cluster on the first ``.remote()`` if ``init`` was not called."""
    if not is_initialized():
        init(ignore_reinit_error=True)  # another thread may be starting it right now
