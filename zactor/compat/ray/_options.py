"""Translating Ray's options (``ray.init``, actors, actor methods, tasks) into zactor's.

Each Ray option is in one of four groups:

* mapped: zactor has it, under the same or another name (``num_cpus`` of
  ``ray.init`` is the number of worker processes, ``num_gpus`` the node's or
  the actor's ``"GPU"`` resource);
* default only: zactor lacks it, so only Ray's default value (which asks for
  nothing) is accepted; any other value raises :class:`NotImplementedError`
  naming the option, why zactor lacks it, and what to do;
* ignored: changes nothing a program observes (a task's ``name``, logging
  settings), accepted with any value;
* not Ray's: zactor's own options (``checkpoint``...) pass through to zactor,
  which checks them; a name neither Ray nor zactor knows raises zactor's
  ``TypeError``.
"""

from __future__ import annotations

from typing import Any

#: Ray option -> (the values meaning "Ray's default", why zactor lacks the option).
_Absent = dict[str, tuple[tuple, str]]

_PLACEMENT = (
    "zactor has no placement groups or scheduling strategies: placement picks the "
    "least loaded worker; leave it out, or use num_cpus=1 / resources={...}"
)
_RUNTIME_ENV = (
    "zactor runs actors in the cluster's own Python environment: install the "
    "packages there and leave runtime_env out"
)
_MEMORY = "zactor does not reserve memory for actors or tasks: leave it out"
_CONCURRENCY_GROUPS = (
    "zactor has one pool of threads per actor (max_concurrency): leave concurrency groups out"
)
_NUM_RETURNS = (
    "a zactor call returns one value: return a tuple and unpack it after ray.get(), "
    "or leave num_returns out"
)
_GENERATORS = "zactor has no streaming generator calls: return a list instead"
_OBJECT_STORE = "zactor has no object store: values travel with the calls that use them"

#: What an actor and a task both may ask for and zactor does not have.
_SCHEDULING_ABSENT: _Absent = {
    "memory": ((None, 0), _MEMORY),
    "object_store_memory": ((None, 0), _OBJECT_STORE),
    "runtime_env": ((None, {}), _RUNTIME_ENV),
    "scheduling_strategy": ((None, "DEFAULT"), _PLACEMENT),
    "placement_group": ((None, "default"), _PLACEMENT),
    "placement_group_bundle_index": ((-1,), _PLACEMENT),
    "placement_group_capture_child_tasks": ((None, False), _PLACEMENT),
    "label_selector": ((None, {}), _PLACEMENT),
    "accelerator_type": ((None,), "zactor knows no accelerator types: use resources={...}"),
    "_metadata": ((None, {}), "zactor has no option metadata"),
}
_ACTOR_ABSENT: _Absent = {
    **_SCHEDULING_ABSENT,
    "concurrency_groups": ((None, {}, []), _CONCURRENCY_GROUPS),
    "allow_out_of_order_execution": (
        (None, False),
        "zactor runs one caller's calls to an actor in the order sent",
    ),
}
_METHOD_ABSENT: _Absent = {
    "num_returns": ((None, 1), _NUM_RETURNS),
    "concurrency_group": ((None,), _CONCURRENCY_GROUPS),
    "_generator_backpressure_num_objects": ((None, -1), _GENERATORS),
    "tensor_transport": ((None,), _OBJECT_STORE),
    "_metadata": ((None, {}), "zactor has no option metadata"),
}
_TASK_ABSENT: _Absent = {
    **_SCHEDULING_ABSENT,
    "num_returns": ((None, 1), _NUM_RETURNS),
    "max_calls": ((None, 0), "zactor reuses its worker processes for every task"),
    "_generator_backpressure_num_objects": ((None, -1), _GENERATORS),
}
_INIT_ABSENT: _Absent = {
    "object_store_memory": ((None,), _OBJECT_STORE),
    "_driver_object_store_memory": ((None,), _OBJECT_STORE),
    "_memory": ((None,), _MEMORY),
    "local_mode": (
        (False,),
        "zactor always runs actors in worker processes: drop local_mode (and debug "
        "with the actor's remote traceback, which every error carries)",
    ),
    "runtime_env": ((None, {}), _RUNTIME_ENV),
    "job_config": ((None,), "zactor has no job configuration: leave job_config out"),
    "labels": ((None, {}), _PLACEMENT),
    "storage": ((None,), "zactor has no cluster storage: give actors checkpoint=... instead"),
    "_system_config": ((None, {}), "zactor has no Ray system configuration"),
    "_temp_dir": (
        (None,),
        "zactor keeps its socket files in a private directory of its own; set "
        "$ZACTOR_CLUSTER_DIR for a standing cluster's file",
    ),
    "_node_ip_address": ((None,), "zactor's head binds where `zactor start --host` says"),
}

#: Options that change nothing a program observes: accepted with any value.
_INIT_IGNORED = frozenset(
    {
        "log_to_driver",  # workers' output always reaches the terminal that started them
        "logging_level",
        "logging_format",
        "logging_config",
        "configure_logging",
        "include_dashboard",
        "dashboard_host",
        "dashboard_port",
        "_metrics_export_port",
        "_tracing_startup_hook",
        "_node_name",
    }
)
#: A task's or call's ``name`` labels it in Ray's dashboard only.
_CALL_IGNORED = frozenset({"name", "enable_task_events"})
_ACTOR_IGNORED = frozenset({"enable_task_events"})

#: Ray's actor options zactor has under the same name.
_ACTOR_SAME = frozenset(
    {
        "name",
        "namespace",
        "get_if_exists",
        "max_restarts",
        "max_task_retries",
        "max_concurrency",
        "num_cpus",
        "resources",
    }
)


def _refuse(kind: str, name: str, value: Any, why: str) -> NotImplementedError:
    return NotImplementedError(
        f"zactor.compat.ray: the {kind} option {name}={value!r} is not supported: {why}"
    )


def _take_absent(kind: str, options: dict, absent: _Absent, ignored: frozenset) -> dict:
    """``options`` without the ignored ones and those at Ray's default; raises for the rest."""
    out = {}
    for name, value in options.items():
        if name in ignored:
            continue
        if name in absent:
            defaults, why = absent[name]
            if value not in defaults:
                raise _refuse(kind, name, value, why)
            continue
        out[name] = value
    return out


def _with_gpus(options: dict, kind: str) -> dict:
    """Fold Ray's ``num_gpus`` into ``resources={"GPU": n}`` (zactor's custom resources)."""
    gpus = options.pop("num_gpus", None)
    if gpus:
        resources = dict(options.get("resources") or {})
        if "GPU" in resources:
            raise ValueError(
                f"{kind}: pass GPUs as num_gpus or as resources={{'GPU': ...}}, not both"
            )
        resources["GPU"] = gpus
        options["resources"] = resources
    return options


def actor_options(options: dict) -> dict:
    """zactor's actor options for Ray's ``@ray.remote(...)`` / ``Cls.options(...)``."""
    out = _take_absent("actor", options, _ACTOR_ABSENT, _ACTOR_IGNORED)
    if out.get("lifetime") == "non_detached":
        out["lifetime"] = None
    if out.get("max_pending_calls") == -1:  # Ray's "no limit": zactor's default bound
        del out["max_pending_calls"]
    return _with_gpus(out, "actor options")


def method_options(options: dict) -> dict:
    """zactor's method options for ``@ray.method(...)`` / ``h.method.options(...)``."""
    return _take_absent("actor method", options, _METHOD_ABSENT, _CALL_IGNORED)


def task_options(options: dict) -> dict:
    """zactor's task options for ``@ray.remote(...)`` on a function / ``f.options(...)``."""
    out = _take_absent("task", options, _TASK_ABSENT, _CALL_IGNORED)
    return _with_gpus(out, "task options")


def init_options(address: str | None, options: dict) -> tuple[str | None, dict]:
    """zactor's ``init(address, **options)`` for Ray's ``ray.init(address, **options)``.

    ``num_cpus`` is the number of worker processes (one CPU each) and
    ``num_gpus`` the node's ``"GPU"`` resource. ``address``: None or
    ``"local"`` starts an embedded cluster, ``"auto"`` joins the standing one
    on this machine, ``"host:port"`` the one listening there over TCP.
    """
    out = _take_absent("ray.init", options, _INIT_ABSENT, _INIT_IGNORED)
    if "num_cpus" in out:
        cpus = out.pop("num_cpus")
        if cpus is not None:
            if isinstance(cpus, bool) or not isinstance(cpus, int):
                raise ValueError(
                    f"ray.init(num_cpus={cpus!r}): zactor starts one worker process per CPU, "
                    "so num_cpus must be a whole number"
                )
            out["num_workers"] = cpus
    out = _with_gpus(out, "ray.init")
    return _address(address), out


def _address(address: str | None) -> str | None:
    if address in (None, "local"):
        return None
    if not isinstance(address, str):
        raise TypeError(f"ray.init(address=...) takes a str, got {type(address).__name__}")
    if address.startswith("ray://"):
        raise NotImplementedError(
            f"zactor.compat.ray: ray.init(address={address!r}) asks for Ray Client, which "
            "zactor lacks: run the driver where it can reach the cluster and pass "
            "address='tcp://host:port' (what `zactor start --head --port P` listens on)"
        )
    if address == "auto" or "://" in address:
        return address
    return f"tcp://{address}"  # Ray's "host:port"
