"""The worker side: hosting actors behind one inbox, and the worker process.

:class:`~zactor.worker.host.ActorHost` runs a process's actors (its module
docstring tells how calls run); :class:`~zactor.worker.service.WorkerService`
is a worker's actor 0; :mod:`~zactor.worker.main` is the worker process. The
head process hosts its registry with the same :class:`ActorHost`.
"""
