"""Ray's actor and task API on zactor: ``import zactor.compat.ray as ray``.

Code written for Ray actors runs with that import line changed::

    import zactor.compat.ray as ray

    ray.init()

    @ray.remote
    class Counter:
        def __init__(self):
            self.value = 0

        def increment(self):
            self.value += 1
            return self.value

    c = Counter.options(name="hits").remote()
    ray.get([c.increment.remote() for _ in range(3)])    # [1, 2, 3]
    ray.kill(ray.get_actor("hits"))
    ray.shutdown()

What is here: ``init``/``shutdown``/``is_initialized``, ``@ray.remote`` on
classes and functions with ``.options(...)``, ``@ray.method``,
``get``/``wait``/``put``, ``kill``, ``get_actor``, ``get_runtime_context``,
``cluster_resources``/``available_resources``, ``ray.util.ActorPool``,
``ray.util.list_named_actors``, ``ray.actor.exit_actor``, ``ray.exceptions``
and ``ray.cloudpickle``. Ray options zactor lacks are accepted at Ray's
default value and otherwise raise ``NotImplementedError`` naming the option.
What maps and what differs: docs/migrating.md.
"""

from __future__ import annotations

from typing import Any

import cloudpickle

import zactor
from zactor.compat.ray import actor, exceptions, util
from zactor.compat.ray._cluster import RayContext, init, is_initialized, shutdown
from zactor.compat.ray._handles import (
    ActorClass,
    ActorHandle,
    RemoteFunction,
    method,
    ray_handle,
    remote,
)
from zactor.compat.ray._refs import ObjectRef, PutRef, get, put, wait

available_resources = zactor.available_resources
cluster_resources = zactor.cluster_resources
kill = zactor.kill  # Ray's signature: kill(actor, *, no_restart=True)


def get_actor(name: str, namespace: str | None = None) -> ActorHandle:
    """``ray.get_actor``: the named actor's handle; ``ValueError`` naming it if there is none."""
    return ray_handle(zactor.get_actor(name, namespace=namespace))


class RuntimeContext:
    """What ``ray.get_runtime_context()`` returns: zactor's context with Ray's accessors."""

    def __init__(self, context: zactor.RuntimeContext) -> None:
        self._context = context

    def get_actor_id(self) -> int | None:
        """The id of the actor running this code (``None`` outside an actor)."""
        return self._context.actor_id

    def get_node_id(self) -> str:
        """The id of the machine this code runs on."""
        return self._context.node_id

    def get_worker_id(self) -> str:
        """The id of the process this code runs in."""
        return self._context.worker_id

    @property
    def namespace(self) -> str | None:
        """Where names given without a namespace live."""
        return self._context.namespace

    @property
    def current_actor(self) -> ActorHandle:
        """A handle to the actor running this code; ``RuntimeError`` outside one, as Ray's."""
        handle = self._context.current_actor
        if handle is None:
            raise RuntimeError(
                "get_runtime_context().current_actor is only available inside an actor method"
            )
        return ray_handle(handle)

    def __getattr__(self, name: str) -> Any:
        context = self.__dict__.get("_context")
        if context is None:
            raise AttributeError(name)
        return getattr(context, name)  # zactor's fields: actor_id, address...


def get_runtime_context() -> RuntimeContext:
    """``ray.get_runtime_context``: where this code runs (node, worker, actor, namespace)."""
    return RuntimeContext(zactor.get_runtime_context())


def get_gpu_ids() -> list:
    """``ray.get_gpu_ids``: not available, as zactor assigns no GPU devices."""
    raise NotImplementedError(
        "zactor.compat.ray: ray.get_gpu_ids() is not supported: zactor reserves amounts of a "
        "node's 'GPU' resource (num_gpus=1) but assigns no device ids; set "
        "CUDA_VISIBLE_DEVICES yourself, e.g. from an actor argument"
    )


__all__ = [
    "ActorClass",
    "ActorHandle",
    "ObjectRef",
    "PutRef",
    "RayContext",
    "RemoteFunction",
    "RuntimeContext",
    "actor",
    "available_resources",
    "cloudpickle",
    "cluster_resources",
    "exceptions",
    "get",
    "get_actor",
    "get_gpu_ids",
    "get_runtime_context",
    "init",
    "is_initialized",
    "kill",
    "method",
    "put",
    "remote",
    "shutdown",
    "util",
    "wait",
]
