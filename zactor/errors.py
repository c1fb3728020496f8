"""Exceptions raised by zactor.

Remote exceptions arrive as instances of both :class:`ActorError` and the
class the actor raised, so ``except ValueError`` around ``zactor.get`` keeps
working::

    try:
        zactor.get(account.withdraw.remote(-1))
    except ValueError as e:        # the actor raised ValueError
        assert isinstance(e, zactor.ActorError)
"""

from __future__ import annotations


class ZactorError(Exception):
    """Base class of every error zactor itself raises."""


class ActorError(ZactorError):
    """An actor method (or constructor) raised; the text carries the remote traceback.

    Instances are also instances of the original exception's class when that
    class could be rebuilt on the caller's side.
    """

    def __init__(self, message: str = "", remote_traceback: str = "", actor: str = ""):
        super().__init__(message)
        self.remote_traceback = remote_traceback
        self.actor = actor


class ActorDiedError(ZactorError):
    """The actor is gone: killed, exited, or its process died.

    The message names the actor, why it died, and whether a restart is under way.
    """


class ClusterError(ZactorError):
    """The cluster could not be started, reached, or asked to do something."""


class ActorCreationError(ActorDiedError, ClusterError):
    """The actor could not be created: the head could not place it (no node offers
    the resources it asks for, say). An actor is created without waiting for the
    head, so its calls raise this, the first one included; it is a
    :class:`ClusterError`, as the creation's own error was, and an
    :class:`ActorDiedError`, as every call to an actor that is not there is.
    """


class WorkerCrashedError(ActorDiedError):
    """A task's worker died while it ran (or before it started), and ``max_retries``
    allowed no further attempt (as Ray's ``WorkerCrashedError``).

    The message names the task, how its worker died the last time, and how many
    times it was tried.
    """


class GetTimeoutError(ZactorError, TimeoutError):
    """``zactor.get`` / ``Future.result`` gave up waiting (subclasses ``TimeoutError``)."""


class FrameError(ValueError):
    """A received frame is malformed, foreign, or of another protocol version.

    Receivers drop such frames, log them once per kind, and keep serving.
    ``kind`` is a short stable label (``"short"``, ``"magic"``, ``"version"``,
    ``"empty"``, ``"truncated"``, ``"buffers"``; receivers add ``"short"`` for
    a message with no frame, ``"unknown-actor"``, ``"not-a-host"``) used to
    count drops and rate-limit the log.
    """

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class WorkerStartingError(ClusterError):
    """No live worker can take a new actor now, but a replacement worker that could is starting.

    The head answers a placement with it while a dead worker's replacement has
    not registered yet; creating an actor (``.remote()``) catches it and asks
    again, so user code does not see it. If the replacement never registers,
    the head answers with a plain :class:`ClusterError` naming it instead.
    """


class CheckpointError(ZactorError):
    """An actor's checkpoint could not be restored or first saved, so the actor did not start.

    Every call to such an actor raises it (as a constructor's error does); its
    text says which key of which store, and what to do. Restoring never falls
    back to the constructor: that would overwrite the saved state.
    """


class CheckpointSaveError(CheckpointError):
    """Saving an actor's checkpoint failed after a call ran.

    The call's caller gets this error instead of the call's result: the call ran
    and changed the actor's state in memory, but that change is not durable. It
    becomes durable with the next save that succeeds (the actor tries again after
    its next successful call) and is lost if the actor's worker dies first. The
    store's own error is the cause, shown in the remote traceback.
    """


# -- ending a call early, inside an actor's host ------------------------------------------


class ActorExit(BaseException):
    """Raised by :func:`zactor.exit_actor` to end the actor after the current call."""


class _ActorKilled(BaseException):
    """Raised inside a running method of an actor that ``zactor.kill`` ended (see
    ``ActorRegistry.interrupt``); a ``BaseException`` so ``except Exception`` in
    user code does not swallow it."""


class _Terminate(BaseException):
    """Raised by an actor's built-in ``__zactor_terminate__`` method: the worker ends the
    actor once the calls it received before have run (a graceful termination)."""


class _InitFailed(Exception):
    """Internal: the actor's constructor raised; its calls raise that error."""


# -- carrying an actor's exception to its caller ------------------------------------------

_dual_classes: dict[type, type] = {}


def describe_exception(exc: BaseException, where: str) -> list:
    """What an actor sends back when a method raises: enough to rebuild it.

    ``[class qualname, message, remote traceback text, blob]`` where blob is the
    pickled ``(class, args, attributes)`` or None. The instance itself is not
    pickled: exceptions whose ``__init__`` takes other arguments than ``args``
    would not unpickle.
    """
    import traceback

    import cloudpickle

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    blob = None
    for attributes in (getattr(exc, "__dict__", {}), {}):
        try:
            blob = cloudpickle.dumps((type(exc), exc.args, attributes))
            break
        except Exception:  # unpicklable parts: retry bare, else the text alone travels
            continue
    return [type(exc).__qualname__, str(exc), f"{where}\n{text}", blob]


def _dual_class(cls: type) -> type | None:
    """A class deriving from both ActorError and ``cls`` (cached), or None if impossible."""
    if issubclass(cls, ActorError):
        return cls
    dual = _dual_classes.get(cls)
    if dual is None:
        try:
            dual = type(
                cls.__name__,
                (ActorError, cls),
                {
                    "__module__": cls.__module__,
                    "__str__": _dual_str,
                    "__qualname__": cls.__qualname__,
                },
            )
        except TypeError:  # incompatible layouts: fall back to a plain ActorError
            return None
        _dual_classes[cls] = dual
    return dual


def _dual_str(self) -> str:
    return self._zactor_text


def remote_exception(description: list) -> BaseException:
    """Rebuild the exception an actor raised from :func:`describe_exception`'s output.

    The result is an instance of both :class:`ActorError` and the original class
    (when it can be unpickled here), and its text ends with the remote traceback.
    """
    import pickle

    qualname, message, remote_tb, blob = description
    text = f"{qualname}: {message}\n\nRemote traceback ({remote_tb}"
    try:
        cls, args, attributes = pickle.loads(blob) if blob is not None else (None, (), {})
    except Exception:  # the class does not exist here: the text still tells the story
        cls = None
    dual = _dual_class(cls) if isinstance(cls, type) and issubclass(cls, BaseException) else None
    if dual is None:
        return ActorError(text, remote_tb)
    try:
        exc = dual.__new__(dual, *args)
        try:  # sets what __init__ derives from args (OSError.errno); may not fit
            cls.__init__(exc, *args)
        except Exception:
            pass
        exc.args = args
        exc.__dict__.update(attributes)
    except Exception:
        return ActorError(text, remote_tb)
    exc.remote_traceback = remote_tb
    exc.actor = ""
    exc._zactor_text = text
    return exc
