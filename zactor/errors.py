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


class GetTimeoutError(ZactorError, TimeoutError):
    """``zactor.get`` / ``Future.result`` gave up waiting (subclasses ``TimeoutError``)."""


class FrameError(ValueError):
    """A received frame is malformed, foreign, or of another protocol version.

    Receivers drop such frames, log them once per kind, and keep serving.
    ``kind`` is a short stable label (``"short"``, ``"magic"``, ``"version"``,
    ``"truncated"``, ``"buffers"``) used to count and rate-limit the log.
    """

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class ClusterError(ZactorError):
    """The cluster could not be started, reached, or asked to do something."""
