"""A stand-in for OpenAI Gym, for examples/compat/ray_gym.py only: not gym.

The seed's ``GymEnvironment`` wraps ``gym.make("Pong-v0")``, which needs gym
with the Atari ROMs. This module has the part of gym's (old, 4-tuple) API the
seed uses, ``make(name)``, ``reset()`` and ``step(action)``, over a small
deterministic environment: the state is a position on a line of 11 cells,
``step(0)`` stays, ``step(1)`` moves right, ``step(2)`` moves left, the
reward is 1 at the middle cell, and an episode ends after 100 steps.
"""

from __future__ import annotations


class Environment:
    """A deterministic toy environment with gym's ``reset``/``step``."""

    SIZE = 11
    EPISODE_STEPS = 100

    def __init__(self, name: str) -> None:
        self.name = name
        self.position = 0
        self.steps = 0

    def reset(self) -> int:
        """Start an episode; returns the first observation."""
        self.position = self.SIZE // 2
        self.steps = 0
        return self.position

    def step(self, action: int) -> tuple:
        """``(observation, reward, done, info)``, as gym's API before 0.26."""
        move = {0: 0, 1: 1, 2: -1}[action]
        self.position = min(self.SIZE - 1, max(0, self.position + move))
        self.steps += 1
        reward = 1.0 if self.position == self.SIZE // 2 else 0.0
        return self.position, reward, self.steps >= self.EPISODE_STEPS, {"steps": self.steps}


def make(name: str) -> Environment:
    """``gym.make(name)``: the toy environment, whatever ``name`` says."""
    return Environment(name)
