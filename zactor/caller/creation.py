"""Creating an actor, in two steps any caller takes: what the head is asked to place
(:func:`creation_spec`, sent to ``Head.place``), then what the chosen worker is told
to build (:func:`start_actor`).

Actor classes (:mod:`zactor.caller.actor_class`) wait for the head's placement;
task runners (:mod:`zactor.caller.task`) are placed without waiting, from a
done-callback. Both describe and start their actors here.
"""

from __future__ import annotations

import importlib
from typing import Any

import cloudpickle

from zactor.caller.handle import ActorHandle, worker_service_handle
from zactor.caller.options import DEFAULT_MAX_PENDING_CALLS, check_demand

#: How long a caller waits for the head to answer a placement or a query (seconds).
CONTROL_TIMEOUT_S = 60.0


def creation_spec(
    class_name: str, methods, options: dict, runtime, method_options: dict | None = None
) -> dict:
    """What ``Head.place`` needs to place an actor of ``class_name`` with ``options``
    (checked already) for the process of ``runtime``; :func:`start_actor` sends it on."""
    num_cpus, resources = check_demand(options.get("num_cpus"), options.get("resources"))
    return {
        "class_name": class_name,
        "methods": list(methods),
        "name": options.get("name"),
        "namespace": options.get("namespace") or runtime.default_namespace(),
        "job_namespace": runtime.default_namespace(),  # names in its calls mean this one
        "get_if_exists": bool(options.get("get_if_exists", False)),
        "lifetime": options.get("lifetime"),
        "num_cpus": num_cpus,
        "resources": resources,
        "max_concurrency": options.get("max_concurrency"),
        "max_pending_calls": options.get("max_pending_calls") or DEFAULT_MAX_PENDING_CALLS,
        "max_restarts": options.get("max_restarts") or 0,
        "max_task_retries": options.get("max_task_retries") or 0,
        # Pickled: the head keeps it for handles without importing the user's classes.
        "method_options": cloudpickle.dumps(method_options) if method_options else None,
        "checkpoint": options.get("checkpoint") is not None,
        "owner": runtime.address,
    }


def start_actor(head: ActorHandle, info: dict, blob: bytes, spec: dict, options: dict) -> None:
    """Tell the worker the head chose (``info``, ``Head.place``'s answer to ``spec``) to
    build the actor from ``blob``, the cloudpickle of ``(class, args, kwargs)``; a
    restartable actor's creation is also left with the head, which re-creates it."""
    creation = dict(
        spec,
        checkpoint=options.get("checkpoint"),
        checkpoint_every=options.get("checkpoint_every") or 1,
        checkpoint_key=info["checkpoint_key"],
        incarnation=0,
    )
    # Same outbox as the calls that follow, so the worker sees the creation first;
    # sent now, not batched, so it is on its way before the handle can reach
    # another process whose calls would otherwise overtake it.
    worker_service_handle(info["address"]).create.tell(info["actor_id"], blob, creation)
    if spec["max_restarts"]:
        head.remember_creation.tell(info["actor_id"], blob, creation)  # to re-create it


def lookup(module: Any, qualname: str) -> Any:
    """The object named ``qualname`` (dotted) in ``module``, or None."""
    obj = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj


def import_by_name(module: str, qualname: str) -> Any:
    """Import ``module`` and return its object ``qualname``: how a class or function
    that its module names travels by reference (see ``ActorClass.__reduce__``)."""
    return lookup(importlib.import_module(module), qualname)


class ByName:
    """Pickles as a reference to ``module.qualname``, which unpickles as that object:
    how a caller ships a class of a layer it must not import (the task runner)."""

    __slots__ = ("module", "qualname")

    def __init__(self, module: str, qualname: str) -> None:
        self.module = module
        self.qualname = qualname

    def __reduce__(self):
        return (import_by_name, (self.module, self.qualname))
