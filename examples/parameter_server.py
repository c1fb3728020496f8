"""An asynchronous parameter server on zactor: sharded numpy parameters, workers pushing gradients.

The seeds' "async parameter server" pattern: a model's parameters live in
``S`` shard actors; ``W`` worker actors each hold their own data, compute a
gradient with the parameters they last pulled, push each shard's slice of the
gradient to that shard (a one-way ``tell``: no reply to wait for), and pull
fresh parameters from every shard every ``k`` steps. Nobody waits for anybody:
workers run on slightly stale parameters, shards apply updates as they come.

The model is a real (small) one: multi-output linear regression
``Y = X @ W_true + noise`` on generated data, ``W`` of shape ``(256, 2048)``
float32 (2 MiB of parameters), trained by minibatch SGD on the mean squared
error. The parameters are one flat float32 vector cut into ``S`` contiguous
slices; the shards are wrapped in a ``zactor.HashPool`` (``pool[i]`` is shard
``i``), which workers receive as an argument.

``main()`` returns the loss curve (the mean minibatch loss over the workers,
one value per pull) and the update rate; the loss falls by orders of magnitude.

Run it: ``python examples/parameter_server.py [steps]``.
"""

from __future__ import annotations

import sys
import time

import numpy as np

import zactor

#: Model size: inputs x outputs (256 x 2048 float32 = 2 MiB of parameters).
N_IN, N_OUT = 256, 2048
#: Samples each worker owns, and the minibatch size.
N_SAMPLES, BATCH = 2048, 256
LEARNING_RATE = 0.1
NOISE = 0.01


def true_weights() -> np.ndarray:
    """The weights the data is generated with (the same in every process)."""
    return np.random.default_rng(0).standard_normal((N_IN, N_OUT)).astype(np.float32) / 16


def slices(size: int, shards: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` of each shard's contiguous part of a flat vector of ``size``."""
    bounds = np.linspace(0, size, shards + 1).astype(int)
    return [(int(bounds[i]), int(bounds[i + 1])) for i in range(shards)]


@zactor.remote
class ParamShard:
    """One slice of the parameters: applies pushed gradients, serves pulls."""

    def __init__(self, init: np.ndarray, lr: float):
        self.w = np.array(init, dtype=np.float32)  # own, writable copy
        self.lr = np.float32(lr)
        self.updates = 0

    def push(self, grad: np.ndarray) -> None:
        self.w -= self.lr * grad
        self.updates += 1

    def pull(self) -> np.ndarray:
        return self.w

    def num_updates(self) -> int:
        return self.updates


@zactor.remote
class Worker:
    """Computes gradients on its own data with the parameters it last pulled."""

    def __init__(self, seed: int):
        rng = np.random.default_rng(seed)
        self.x = rng.standard_normal((N_SAMPLES, N_IN)).astype(np.float32)
        noise = NOISE * rng.standard_normal((N_SAMPLES, N_OUT)).astype(np.float32)
        self.y = self.x @ true_weights() + noise
        self.rng = rng

    def train(self, shards: zactor.HashPool, steps: int, pull_every: int) -> list[float]:
        """Run ``steps`` SGD steps; return the mean minibatch loss of each pull interval."""
        parts = slices(N_IN * N_OUT, len(shards))
        w = self._pull(shards)
        losses, window = [], []
        for step in range(1, steps + 1):
            idx = self.rng.integers(0, N_SAMPLES, size=BATCH)
            x, y = self.x[idx], self.y[idx]
            err = x @ w - y
            window.append(float(np.mean(err * err)))
            grad = (x.T @ err).ravel() * np.float32(2.0 / BATCH)  # d(sum of squares)/dw per sample
            for shard, (lo, hi) in zip(shards, parts):
                shard.push.tell(grad[lo:hi])  # one-way; grad is not touched again
            if step % pull_every == 0 or step == steps:
                w = self._pull(shards)
                losses.append(float(np.mean(window)))
                window = []
        return losses

    @staticmethod
    def _pull(shards) -> np.ndarray:
        # Calls from one caller run in order: this pull sees every push sent before it.
        flat = np.concatenate(zactor.get([s.pull.remote() for s in shards]))
        return flat.reshape(N_IN, N_OUT)


def main(
    steps: int = 100,
    shards: int = 2,
    workers: int = 2,
    pull_every: int = 5,
    quiet: bool = False,
    init: bool = True,
) -> dict:
    """Train with ``shards`` parameter shards and ``workers`` workers; return the loss curve."""
    if init:
        zactor.init(num_workers=2)
    try:
        start = np.zeros(N_IN * N_OUT, dtype=np.float32)
        pool = zactor.HashPool(
            [
                ParamShard.remote(start[lo:hi], LEARNING_RATE / workers)
                for lo, hi in slices(start.size, shards)
            ]
        )
        team = [Worker.remote(seed) for seed in range(1, workers + 1)]
        zactor.get([s.num_updates.remote() for s in pool])  # all created
        t0 = time.perf_counter()
        curves = zactor.get([w.train.remote(pool, steps, pull_every) for w in team], timeout=600)
        updates = sum(zactor.get([s.num_updates.remote() for s in pool]))
        elapsed = time.perf_counter() - t0
        n = min(len(c) for c in curves)
        losses = [float(np.mean([c[i] for c in curves])) for i in range(n)]
        param_bytes = start.nbytes
        rate = updates / elapsed
        if not quiet:
            for i, loss in enumerate(losses):
                print(f"pull {i + 1:3d}: loss {loss:.5f}")
            print(
                f"{updates} shard updates in {elapsed:.2f} s: {rate:.0f} updates/s, "
                f"{updates * param_bytes / shards / elapsed / 1e6:.0f} MB/s of gradients"
            )
        for h in team + pool.actors:
            zactor.kill(h)
        return {
            "losses": losses,
            "shards": shards,
            "workers": workers,
            "param_mib": param_bytes / (1 << 20),
            "updates": updates,
            "seconds": elapsed,
        }
    finally:
        if init:
            zactor.shutdown()


if __name__ == "__main__":
    main(steps=int(sys.argv[1]) if len(sys.argv) > 1 else 100)
