"""``ray.util``: :class:`ActorPool` (zactor's, Ray's semantics) and :func:`list_named_actors`."""

from zactor.api import list_named_actors
from zactor.pool import ActorPool

__all__ = ["ActorPool", "list_named_actors"]
