"""Dask's actor API on zactor: ``from zactor.compat.dask import Client``.

The names live in :mod:`zactor.compat.dask.distributed`, as Dask's live in
``dask.distributed``, so either import line works. See that module, and
docs/migrating.md for what maps and what differs.
"""

from zactor.compat.dask import distributed
from zactor.compat.dask.distributed import Actor, ActorFuture, Client, Future, LocalCluster

__all__ = ["Actor", "ActorFuture", "Client", "Future", "LocalCluster", "distributed"]
