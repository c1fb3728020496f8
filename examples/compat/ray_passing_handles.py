"""Seed 004 (Ray's documentation in Chinese, "Actors"), "传递actor句柄(试验阶段)":
a remote function that receives an actor's handle and calls it, through
``zactor.compat.ray``. Needs zactor's stateless tasks (``zactor.remote(fn)``).

Changed from the seed: ``import ray`` → ``import zactor.compat.ray as ray``.
The seed's task ``f`` loops forever (``while True``), so its four tasks run
until ``ray.shutdown()`` ends them, as they would on Ray. Scaffolding,
marked: ``ray.init()`` and shutting
down.

Run it: ``python examples/compat/ray_passing_handles.py``.
"""

import zactor.compat.ray as ray  # was: import ray

ray.init()  # scaffolding: the seed's preamble

# -- seed 004, "传递actor句柄(试验阶段)" ----------------------------------------------------------

@ray.remote
class Counter(object):
    def __init__(self):
        self.counter = 0

    def inc(self):
        self.counter += 1

    def get_counter(self):
        return self.counter

@ray.remote
def f(counter):
    while True:
        counter.inc.remote()

counter = Counter.remote()

# 启动一些使用这个actor的任务.
[f.remote(counter) for _ in range(4)]

# 打印计数器的值.
for _ in range(10):
    print(ray.get(counter.get_counter.remote()))

ray.shutdown()  # scaffolding: ends the four endless tasks
