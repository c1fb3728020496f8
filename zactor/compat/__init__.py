"""Migration shims: run code written for Ray or Dask actors on zactor.

* ``import zactor.compat.ray as ray``: Ray's actor and task API
  (:mod:`zactor.compat.ray`).
* ``from zactor.compat.dask import Client``: Dask's actor API
  (:mod:`zactor.compat.dask`).

Neither imports Ray or Dask, nor needs them installed. This package imports
neither shim, so loading one costs nothing for the other. What maps, and what
differs: docs/migrating.md.
"""
