"""The caller side: what a process that calls actors holds.

- :mod:`~zactor.caller.actor_class`: ``@zactor.remote``, actor classes, creating actors.
- :mod:`~zactor.caller.handle`: :class:`~zactor.caller.handle.ActorHandle` and its methods.
- :mod:`~zactor.caller.future`: :class:`~zactor.caller.future.Future`, ``get``, ``wait``.
- :mod:`~zactor.caller.options`: actor and task options and their checks.
- :mod:`~zactor.caller.creation`: describing an actor to the head and starting it.
- :mod:`~zactor.caller.task`: tasks (``@zactor.remote`` on a function), their runners.
"""
