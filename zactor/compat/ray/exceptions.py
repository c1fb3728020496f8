"""Ray's exception names, mapped onto zactor's (``from ray.exceptions import ...``).

* ``RayError`` is :class:`zactor.ZactorError`, the base of zactor's own errors.
* ``RayTaskError`` is :class:`zactor.ActorError`: what a method or task raised
  arrives as an instance of both it and the original class, as in Ray.
* ``RayActorError`` and ``ActorDiedError`` are :class:`zactor.ActorDiedError`:
  the actor is gone (killed, exited, its process died).
* ``GetTimeoutError`` is :class:`zactor.GetTimeoutError` (a ``TimeoutError``).

One difference: an actor whose constructor raised answers every call with the
constructor's exception (a ``RayTaskError``), where Ray raises ``ActorDiedError``.
"""

from zactor.errors import ActorDiedError, ActorError, GetTimeoutError, ZactorError

RayError = ZactorError
RayTaskError = ActorError
RayActorError = ActorDiedError

__all__ = ["ActorDiedError", "GetTimeoutError", "RayActorError", "RayError", "RayTaskError"]
