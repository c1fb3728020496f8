"""Actor and task options: which ones exist, and checking them before anything is sent.

``@zactor.remote(**options)``, ``Cls.options(**options)`` and the pools pass
their options through :func:`check_options`, a task's (``f.options(**options)``)
through :func:`check_task_options`, so a bad value fails at once, in the
caller, with a message that says what to pass.
"""

from __future__ import annotations

from zactor.checkpoint import open_store

ACTOR_OPTIONS = frozenset(
    {
        "name",
        "namespace",
        "lifetime",
        "get_if_exists",
        "max_restarts",
        "max_task_retries",
        "max_concurrency",
        "num_cpus",
        "resources",
        "checkpoint",
        "checkpoint_every",
        "max_pending_calls",
    }
)
#: Options of one method (``@zactor.method(...)``) or one call (``h.m.options(...)``).
METHOD_OPTIONS = frozenset({"max_task_retries", "retry_exceptions"})
#: Options of a task (``@zactor.remote`` on a function, ``f.options(...)``).
TASK_OPTIONS = frozenset({"num_cpus", "resources", "max_retries", "retry_exceptions"})
#: Times a task is sent again when its worker dies while it runs (Ray's default).
DEFAULT_MAX_RETRIES = 3
#: A task's share of its worker's CPU when not given (Ray's default: one CPU).
DEFAULT_TASK_NUM_CPUS = 1.0
#: Calls one handle may have awaiting replies before ``remote()`` blocks.
DEFAULT_MAX_PENDING_CALLS = 10_000


def check_options(options: dict) -> dict:
    """Reject unknown options and bad values with a message that says what to pass."""
    unknown = set(options) - ACTOR_OPTIONS
    if unknown:
        raise TypeError(
            f"unknown actor option(s) {sorted(unknown)}; valid options are {sorted(ACTOR_OPTIONS)}"
        )
    for key in ("name", "namespace"):
        value = options.get(key)
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{key} must be a str (or None), got {type(value).__name__} {value!r}")
        if value == "":
            raise ValueError(f"{key} must not be empty: pass a non-empty str, or None")
    lifetime = options.get("lifetime")
    if lifetime not in (None, "detached"):
        raise ValueError(f"lifetime must be None or 'detached', got {lifetime!r}")
    limit = options.get("max_pending_calls")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"max_pending_calls must be a positive int, got {limit!r}")
    if "num_cpus" in options or "resources" in options:
        check_demand(options.get("num_cpus"), options.get("resources"))
    concurrency = options.get("max_concurrency")
    if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
        raise ValueError(f"max_concurrency must be a positive int, got {concurrency!r}")
    for key in ("max_restarts", "max_task_retries"):
        value = options.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < -1
        ):
            raise ValueError(f"{key} must be an int >= 0, or -1 for no limit; got {value!r}")
    every = options.get("checkpoint_every")
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        raise ValueError(f"checkpoint_every must be a positive int, got {every!r}")
    if every is not None and options.get("checkpoint") is None:
        raise ValueError(
            "checkpoint_every needs a store: pass checkpoint=zactor.FileStore(dir) too"
        )
    if options.get("checkpoint") is not None:
        open_store(options["checkpoint"])  # a clear error now, not in the worker later
    return options


def check_method_options(options: dict) -> dict:
    """Validate the options of a method or a call; return them normalised:
    ``retry_exceptions`` becomes None, True or a tuple of exception classes."""
    unknown = set(options) - METHOD_OPTIONS
    if unknown:
        raise TypeError(
            f"unknown method option(s) {sorted(unknown)}; valid options are "
            f"{sorted(METHOD_OPTIONS)}"
        )
    out = dict(options)
    retries = options.get("max_task_retries")
    if retries is not None and (
        isinstance(retries, bool) or not isinstance(retries, int) or retries < -1
    ):
        raise ValueError(
            f"max_task_retries must be an int >= 0, or -1 for no limit; got {retries!r}"
        )
    if "retry_exceptions" in options:
        out["retry_exceptions"] = _exception_types(options["retry_exceptions"])
    return out


def _exception_types(value) -> tuple | bool | None:
    if value is None or value is False:
        return None
    if value is True:
        return True
    types = tuple(value) if isinstance(value, (list, tuple)) else None
    if not types or not all(isinstance(t, type) and issubclass(t, Exception) for t in types):
        raise TypeError(
            "retry_exceptions must be True, False, or a list of exception classes "
            f"(e.g. [ValueError, ConnectionError]); got {value!r}"
        )
    return types


def check_task_options(options: dict) -> dict:
    """Validate a task's options; return them normalised (``num_cpus`` a float,
    ``resources`` a dict, ``retry_exceptions`` None, True or a tuple of classes)."""
    unknown = set(options) - TASK_OPTIONS
    if unknown:
        raise TypeError(
            f"unknown task option(s) {sorted(unknown)}; valid options are {sorted(TASK_OPTIONS)}"
        )
    out = dict(options)
    if "num_cpus" in options or "resources" in options:
        num_cpus = options.get("num_cpus")
        num_cpus, resources = check_demand(
            DEFAULT_TASK_NUM_CPUS if num_cpus is None else num_cpus,
            options.get("resources"),
            "task",
        )
        if "num_cpus" in options:
            out["num_cpus"] = num_cpus
        if "resources" in options:
            out["resources"] = resources
    retries = options.get("max_retries")
    if retries is not None and (
        isinstance(retries, bool) or not isinstance(retries, int) or retries < -1
    ):
        raise ValueError(f"max_retries must be an int >= 0, or -1 for no limit; got {retries!r}")
    if "retry_exceptions" in options:
        out["retry_exceptions"] = _exception_types(options["retry_exceptions"])
    return out


def check_demand(num_cpus, resources, what: str = "actor") -> tuple[float, dict]:
    """Validate the ``num_cpus`` and ``resources`` options of an actor (or, with
    ``what="task"``, a task); return them normalised."""
    if num_cpus is None:
        num_cpus = 0.0
    if isinstance(num_cpus, bool) or not isinstance(num_cpus, (int, float)) or num_cpus < 0:
        raise ValueError(f"num_cpus must be a number from 0 to 1, got {num_cpus!r}")
    if num_cpus > 1:
        use = (
            "num_cpus=1 for a worker of its own"
            if what == "actor"
            else "num_cpus=1 for one such task at a time per worker"
        )
        raise ValueError(
            f"num_cpus={num_cpus!r}: each {what} runs in one zactor worker process, which is "
            f"one CPU; use {use} (threads inside it may still use more)"
        )
    resources = resources or {}
    if not isinstance(resources, dict):
        raise ValueError(f"resources must be a dict of name -> amount, got {resources!r}")
    for key, amount in resources.items():
        if not isinstance(key, str):
            raise ValueError(f"resource names must be strings, got {key!r}")
        if key == "CPU":
            raise ValueError("ask for CPU with num_cpus=..., not resources={'CPU': ...}")
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
            raise ValueError(f"resource {key!r} must be a non-negative number, got {amount!r}")
    return float(num_cpus), {k: float(v) for k, v in resources.items() if v}
