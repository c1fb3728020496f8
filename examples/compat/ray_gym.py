"""Seed 004 (Ray's documentation in Chinese, "Actors"), "一个更有趣的actor例子": the
``GymEnvironment`` actor wrapping a stateful simulator, through ``zactor.compat.ray``.

Changed from the seed: ``import ray`` → ``import zactor.compat.ray as ray``.
``import gym`` is the seed's line, but what it imports here is a stand-in
(examples/compat/stand_ins/gym.py, a small deterministic environment with
gym's ``make``/``reset``/``step``): the seed's ``Pong-v0`` needs gym with the
Atari ROMs. Scaffolding, marked: putting the stand-in on the path (the
workers inherit it), ``ray.init()``, and reading the step's result.

Run it: ``python examples/compat/ray_gym.py``.
"""

import os  # scaffolding
import sys  # scaffolding

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "stand_ins"))

import zactor.compat.ray as ray  # was: import ray

ray.init()  # scaffolding: the seed's preamble

# -- seed 004, "一个更有趣的actor例子" -----------------------------------------------------------

import gym

@ray.remote
class GymEnvironment(object):
    def __init__(self, name):
        self.env = gym.make(name)
        self.env.reset()

    def step(self, action):
        return self.env.step(action)

    def reset(self):
        self.env.reset()

pong = GymEnvironment.remote("Pong-v0")
pong.step.remote(0)  # 在模拟器中采用action 0.

# -- scaffolding: the simulator's state lives in the actor ---------------------------------------
print(f"step(1): {ray.get(pong.step.remote(1))}")
ray.get(pong.reset.remote())
print(f"after reset, step(0): {ray.get(pong.step.remote(0))}")
ray.shutdown()
