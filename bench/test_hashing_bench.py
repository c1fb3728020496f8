"""Micro-benchmarks of key hashing for pools: ``shard_of`` in Cython, its twin, and crc32.

Run with::

    python -m pytest bench/test_hashing_bench.py --benchmark-only

Each key kind is one benchmark group: the compiled ``zactor._fast``, the
pure-Python twin ``zactor._fallback`` (on fewer keys: it is ~100x slower) and
``[zlib.crc32(k) % n for k in keys]`` on the keys' bytes (made beforehand)
appear side by side. Divide the key count by the time for keys/s; ``zactor
bench`` prints keys/s directly.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from zactor.wire import _fallback

try:
    from zactor.wire import _fast
except ImportError as exc:  # pragma: no cover - depends on the build
    _fast = None
    _REASON = f"zactor._fast is not built ({exc})"
else:
    _REASON = ""

needs_fast = pytest.mark.skipif(_fast is None, reason=_REASON)

N = 1_000_000
TWIN_N = 50_000
SHARDS = 8

INTS = np.random.default_rng(7).integers(-(2**63), 2**63 - 1, size=N, dtype=np.int64)
STRS = [f"user-{i:07d}" for i in range(N)]
INT_BYTES = [k.to_bytes(8, "little", signed=True) for k in INTS.tolist()]
STR_BYTES = [k.encode() for k in STRS]


def _crc32(keys):
    crc32 = zlib.crc32
    return [crc32(k) % SHARDS for k in keys]


@needs_fast
@pytest.mark.benchmark(group="shard_of 1M int64")
def test_int64_cython(benchmark):
    out = benchmark(_fast.shard_of, INTS, SHARDS)
    assert out.shape == (N,)


@pytest.mark.benchmark(group="shard_of 1M int64")
def test_int64_twin_50k(benchmark):
    benchmark.pedantic(_fallback.shard_of, (INTS[:TWIN_N], SHARDS), rounds=3, iterations=1)


@pytest.mark.benchmark(group="shard_of 1M int64")
def test_int64_crc32(benchmark):
    benchmark.pedantic(_crc32, (INT_BYTES,), rounds=3, iterations=1)


@needs_fast
@pytest.mark.benchmark(group="shard_of 1M str")
def test_str_cython(benchmark):
    out = benchmark(_fast.shard_of, STRS, SHARDS)
    assert out.shape == (N,)


@pytest.mark.benchmark(group="shard_of 1M str")
def test_str_twin_50k(benchmark):
    benchmark.pedantic(_fallback.shard_of, (STRS[:TWIN_N], SHARDS), rounds=3, iterations=1)


@pytest.mark.benchmark(group="shard_of 1M str")
def test_str_crc32(benchmark):
    benchmark.pedantic(_crc32, (STR_BYTES,), rounds=3, iterations=1)


@needs_fast
@pytest.mark.benchmark(group="shard_of_key one key")
@pytest.mark.parametrize("key", [123456789, "user-0000123"], ids=["int", "str"])
def test_one_key_cython(benchmark, key):
    assert 0 <= benchmark(_fast.shard_of_key, key, SHARDS) < SHARDS
