"""zactor: Python actors over ZeroMQ with a Cython hot path.

Decorate a plain class, get a handle, and call its methods from any process;
calls travel as compact frames straight to the process hosting the actor.
Decorate a function to run it as a stateless task on any worker.

Example::

    import zactor

    zactor.init()

    @zactor.remote
    class Counter:
        def __init__(self, start=0):
            self.n = start

        def increment(self):
            self.n += 1
            return self.n

    c = Counter.remote(10)
    assert zactor.get(c.increment.remote()) == 11
    zactor.shutdown()
"""

from zactor.api import (
    RuntimeContext,
    available_resources,
    cluster_resources,
    exit_actor,
    get_actor,
    get_runtime_context,
    init,
    is_initialized,
    kill,
    list_named_actors,
    shutdown,
)
from zactor.caller.actor_class import ActorClass, method, remote
from zactor.caller.future import Future, as_completed, get, wait
from zactor.caller.handle import ActorHandle, ActorMethod
from zactor.caller.task import RemoteFunction
from zactor.checkpoint import FileStore, SQLiteStore, open_store
from zactor.errors import (
    ActorCreationError,
    ActorDiedError,
    ActorError,
    CheckpointError,
    CheckpointSaveError,
    ClusterError,
    FrameError,
    GetTimeoutError,
    WorkerCrashedError,
    ZactorError,
)
from zactor.pool import ActorPool, HashPool
from zactor.wire.hotpath import IMPLEMENTATION

__version__ = "0.1.0"

__all__ = [
    "IMPLEMENTATION",
    "ActorClass",
    "ActorCreationError",
    "ActorDiedError",
    "ActorError",
    "ActorHandle",
    "ActorMethod",
    "ActorPool",
    "CheckpointError",
    "CheckpointSaveError",
    "ClusterError",
    "FileStore",
    "FrameError",
    "Future",
    "GetTimeoutError",
    "HashPool",
    "RemoteFunction",
    "RuntimeContext",
    "SQLiteStore",
    "WorkerCrashedError",
    "ZactorError",
    "as_completed",
    "available_resources",
    "cluster_resources",
    "exit_actor",
    "get",
    "get_actor",
    "get_runtime_context",
    "init",
    "is_initialized",
    "kill",
    "list_named_actors",
    "method",
    "open_store",
    "remote",
    "shutdown",
    "wait",
]
