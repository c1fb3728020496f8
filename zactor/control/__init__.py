"""The control plane: the head, node supervision, placement, lifetime ledger, spawning.

- :mod:`~zactor.control.head`: the head's registry actor (``HEAD_TABLE``).
- :mod:`~zactor.control.supervisor`: starting this machine's workers, noticing deaths.
- :mod:`~zactor.control.placement`: which worker an actor goes to.
- :mod:`~zactor.control.ledger`: which processes hold each actor.
- :mod:`~zactor.control.spawn`: starting zactor's own processes.
- :mod:`~zactor.control.cluster`: a standing cluster's file, ``zactor start/stop``.
- :mod:`~zactor.control.head_main`: the head process.

Never on the call path: calls go from caller to worker directly.
"""
