"""Names kept at their 0.1 paths, so pickles written by zactor 0.1 still load.

A checkpoint saved by zactor 0.1 may hold an actor handle or an actor class,
pickled as references to ``zactor.actor._unpickle_handle``,
``zactor.actor._import_actor_class`` or ``zactor.actor.ActorClass``. Those
names now live in :mod:`zactor.caller`; this module points at them, and
nothing else should import it (``tests/test_layers.py`` keeps it that way).
"""

from zactor.caller.actor_class import ActorClass, ActorOptions, _import_actor_class, remote
from zactor.caller.handle import ActorHandle, ActorMethod, _unpickle_handle

__all__ = [
    "ActorClass",
    "ActorHandle",
    "ActorMethod",
    "ActorOptions",
    "_import_actor_class",
    "_unpickle_handle",
    "remote",
]
