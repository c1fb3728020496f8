"""Seed 004 (Ray's documentation in Chinese, "Actors"): "定义和创建一个actor" and
"使用actor", through ``zactor.compat.ray``.

Changed from the seed: ``import ray`` → ``import zactor.compat.ray as ray``.
Scaffolding, marked: printing what ``a1.increment.remote()`` and
``a2.increment.remote()`` return ("ray.get returns 1", says the seed), and
shutting down.

Run it: ``python examples/compat/ray_counter.py``.
"""

# -- seed 004, the preamble ("假定我们已经启动Ray") ---------------------------------------------

import zactor.compat.ray as ray  # was: import ray
ray.init()

# -- seed 004, "定义和创建一个actor" -------------------------------------------------------------

@ray.remote
class Counter(object):
    def __init__(self):
        self.value = 0

    def increment(self):
        self.value += 1
        return self.value

a1 = Counter.remote()
a2 = Counter.remote()

# -- seed 004, "使用actor" -----------------------------------------------------------------------

a1.increment.remote()  # ray.get returns 1
a2.increment.remote()  # ray.get returns 1

print(f"a1, a2: {ray.get([a1.increment.remote(), a2.increment.remote()])}")  # scaffolding

# 创建10个Counter类型的actor.
counters = [Counter.remote() for _ in range(10)]

# 增加每个Counter一次并获取结果. 这些任务都是并行运行的.
results = ray.get([c.increment.remote() for c in counters])
print(results)  # prints [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]

# 增加第一个Counter 5次. 这些任务被串行执行并且彼此分享状态.
results = ray.get([counters[0].increment.remote() for _ in range(5)])
print(results)  # prints [2, 3, 4, 5, 6]

ray.shutdown()  # scaffolding
