"""``ray.actor``: :func:`exit_actor`, and the classes of actor classes, handles and methods."""

from zactor.api import exit_actor
from zactor.compat.ray._handles import ActorClass, ActorHandle, ActorMethod

__all__ = ["ActorClass", "ActorHandle", "ActorMethod", "exit_actor"]
