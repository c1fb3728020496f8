"""``zactor bench``: the latency and throughput benchmark, outside the core.

:mod:`~zactor.benchmark.runner` runs it (an embedded cluster beside a raw
pyzmq yardstick); :mod:`~zactor.benchmark.durability` adds the checkpoint and
failure-detection rows; :mod:`~zactor.benchmark.plot` draws a run
(``--plot``, matplotlib optional); :mod:`~zactor.benchmark.progress` shows
where a run is, on a terminal; :mod:`~zactor.benchmark.pipe_actor` is the
hand-written ``multiprocessing.Pipe`` actor measured beside it (issue 12).
"""
