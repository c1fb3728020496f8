"""Tests of key hashing for pools: ``xxh64``, ``hash_key``, ``jump_hash``, ``shard_of``.

Every test runs against both the compiled ``zactor._fast`` and its pure-Python
twin ``zactor._fallback``; the hypothesis tests check that the two agree. The
golden values pin the mapping: a key must land on the same shard in every
process, on every machine and in every release.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zactor.wire import _fallback

try:
    from zactor.wire import _fast
except ImportError as exc:  # pragma: no cover - depends on the build
    _fast = None
    _FAST_MISSING = f"zactor._fast is not built ({exc}); run `python setup.py build_ext --inplace`"
else:
    _FAST_MISSING = ""

needs_fast = pytest.mark.skipif(_fast is None, reason=_FAST_MISSING or "built")

IMPLS = [
    pytest.param(_fast, id="fast", marks=needs_fast),
    pytest.param(_fallback, id="fallback"),
]

REPO = Path(__file__).resolve().parent.parent
U64 = 2**64 - 1
I64_MIN = -(2**63)

pytestmark = pytest.mark.timeout(120)

SOME = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: XXH64 reference values (computed with the ``xxhash`` package, which wraps the C library).
XXH64_VECTORS = [
    (b"", 0, 0xEF46DB3751D8E999),
    (b"a", 0, 0xD24EC4F1A98C6E5B),
    (b"abc", 0, 0x44BC2CF5AD770999),
    (b"\x07\x00\x00\x00\x00\x00\x00\x00", 1, 0x64FAE65DDBFAC0C8),
    (bytes(range(100)), 2, 0x59D85CF2FCD7C144),
    (b"hello world, zactor!", 3, 0xC4A78CA02CC32ED7),
]

#: Keys and their shard among 10: fixed forever (changing them re-shards users' data).
GOLDEN_KEYS = [0, 1, 7, -1, U64, "timbit", "7", b"7", "", b"", "h\u00e9llo", 123456789012345]
GOLDEN_SHARDS_10 = [0, 9, 6, 3, 3, 0, 2, 4, 5, 6, 2, 4]
GOLDEN_HASHES = {
    0: 0x22C76AFD15F0110F,
    "timbit": 0xD5A1E124227D4B84,
    b"7": 0xAAD9D40A46AAAEA4,
    "h\u00e9llo": 0xF5F1EBEA5247E005,
    -1: 0x0AD7F61289875125,
}


@pytest.fixture(scope="module", params=IMPLS)
def impl(request):
    """The module under test: ``zactor._fast`` or ``zactor._fallback``."""
    return request.param


int_keys = st.integers(min_value=I64_MIN, max_value=U64)
keys = st.one_of(int_keys, st.text(max_size=40), st.binary(max_size=80))
shard_counts = st.one_of(st.integers(1, 64), st.integers(1, 2**31 - 1))


# -- the hash itself ------------------------------------------------------------------------


@pytest.mark.parametrize("data, seed, expected", XXH64_VECTORS)
def test_xxh64_matches_the_reference(impl, data, seed, expected):
    assert impl.xxh64(data, seed) == expected


def test_golden_values_never_change(impl):
    assert [impl.shard_of_key(k, 10) for k in GOLDEN_KEYS] == GOLDEN_SHARDS_10
    assert impl.shard_of(GOLDEN_KEYS, 10).tolist() == GOLDEN_SHARDS_10
    for key, h in GOLDEN_HASHES.items():
        assert impl.hash_key(key) == h


def test_key_hash_is_xxh64_of_the_canonical_bytes(impl):
    assert impl.hash_key(7) == impl.xxh64((7).to_bytes(8, "little"), impl.KEY_TAG_INT)
    assert impl.hash_key(-2) == impl.xxh64((U64 - 1).to_bytes(8, "little"), impl.KEY_TAG_INT)
    assert impl.hash_key("caf\u00e9") == impl.xxh64("caf\u00e9".encode(), impl.KEY_TAG_STR)
    assert impl.hash_key(b"\x00\xff") == impl.xxh64(b"\x00\xff", impl.KEY_TAG_BYTES)


# -- which keys are the same key --------------------------------------------------------------


def test_python_and_numpy_integers_are_the_same_key(impl):
    same = [7, np.int64(7), np.uint64(7), np.int32(7), np.uint8(7)]
    assert len({impl.hash_key(k) for k in same}) == 1
    assert impl.hash_key(True) == impl.hash_key(1)
    assert impl.hash_key(-1) == impl.hash_key(U64) == impl.hash_key(np.uint64(U64))


def test_str_bytes_and_int_are_distinct_keys(impl):
    assert len({impl.hash_key(7), impl.hash_key("7"), impl.hash_key(b"7")}) == 3
    assert len({impl.hash_key(""), impl.hash_key(b"")}) == 2


def test_str_and_bytes_subclasses_hash_like_their_base(impl):
    class S(str):
        pass

    class B(bytes):
        pass

    assert impl.hash_key(S("ab")) == impl.hash_key("ab")
    assert impl.hash_key(B(b"ab")) == impl.hash_key(b"ab")
    assert impl.hash_key(bytearray(b"ab")) == impl.hash_key(b"ab")
    assert impl.hash_key(np.str_("ab")) == impl.hash_key("ab")


@pytest.mark.parametrize("bad", [1.0, None, (1, 2), np.float64(2.0), object()])
def test_other_key_types_are_refused(impl, bad):
    with pytest.raises(TypeError, match="shard key must be an int, str or bytes"):
        impl.hash_key(bad)
    with pytest.raises(TypeError):
        impl.shard_of([1, bad], 4)


@pytest.mark.parametrize("bad", [2**64, I64_MIN - 1, 10**30, -(10**30)])
def test_integers_out_of_range_are_refused(impl, bad):
    with pytest.raises(OverflowError, match="out of range"):
        impl.shard_of_key(bad, 4)
    with pytest.raises(OverflowError, match="out of range"):
        impl.shard_of([bad], 4)


@pytest.mark.parametrize("n", [0, -1, 2**31])
def test_bad_shard_counts_are_refused(impl, n):
    with pytest.raises(ValueError, match="number of shards"):
        impl.shard_of_key(1, n)
    with pytest.raises(ValueError, match="number of shards"):
        impl.shard_of([1], n)


def test_shard_of_refuses_a_single_string_and_2d_arrays(impl):
    with pytest.raises(TypeError, match="shard_of_key"):
        impl.shard_of("abc", 4)
    with pytest.raises(ValueError, match="1-d"):
        impl.shard_of(np.zeros((2, 2), dtype=np.int64), 4)


# -- arrays ---------------------------------------------------------------------------------


def test_arrays_map_like_the_same_python_keys(impl):
    rng = np.random.default_rng(3)
    signed = rng.integers(I64_MIN, 2**63 - 1, size=2000, dtype=np.int64, endpoint=True)
    unsigned = rng.integers(0, U64, size=2000, dtype=np.uint64, endpoint=True)
    for arr in (signed, unsigned, signed.astype(np.int32), unsigned.astype(np.uint16)):
        out = impl.shard_of(arr, 13)
        assert out.dtype == np.int64 and out.shape == arr.shape
        assert out.tolist() == [impl.shard_of_key(int(k), 13) for k in arr.tolist()]
    strided = signed[::3]
    assert impl.shard_of(strided, 5).tolist() == impl.shard_of(strided.tolist(), 5).tolist()
    words = np.array(["a", "bb", "ccc"])
    assert impl.shard_of(words, 7).tolist() == impl.shard_of(["a", "bb", "ccc"], 7).tolist()
    assert impl.shard_of(np.array([], dtype=np.int64), 3).shape == (0,)
    assert impl.shard_of([], 3).shape == (0,)


def test_any_iterable_of_keys(impl):
    assert impl.shard_of((k for k in ["x", 1, b"y"]), 9).tolist() == [
        impl.shard_of_key(k, 9) for k in ["x", 1, b"y"]
    ]


# -- twin agreement -------------------------------------------------------------------------


@needs_fast
@SOME
@given(data=st.binary(max_size=200), seed=st.integers(0, U64))
def test_twins_agree_on_xxh64(data, seed):
    assert _fast.xxh64(data, seed) == _fallback.xxh64(data, seed)


@needs_fast
@SOME
@given(key=keys, n=shard_counts)
def test_twins_agree_on_one_key(key, n):
    assert _fast.hash_key(key) == _fallback.hash_key(key)
    assert _fast.shard_of_key(key, n) == _fallback.shard_of_key(key, n)
    assert 0 <= _fast.shard_of_key(key, n) < n


@needs_fast
@SOME
@given(h=st.integers(0, U64), n=shard_counts)
def test_twins_agree_on_jump_hash(h, n):
    assert _fast.jump_hash(h, n) == _fallback.jump_hash(h, n)


@needs_fast
@SOME
@given(batch=st.lists(keys, max_size=30), n=st.integers(1, 100))
def test_twins_agree_on_lists(batch, n):
    fast = _fast.shard_of(batch, n)
    assert fast.dtype == np.int64
    assert fast.tolist() == _fallback.shard_of(batch, n).tolist()
    assert fast.tolist() == [_fast.shard_of_key(k, n) for k in batch]


@needs_fast
@SOME
@given(
    values=st.lists(st.integers(I64_MIN, 2**63 - 1), max_size=50),
    n=st.integers(1, 1000),
    unsigned=st.booleans(),
)
def test_twins_agree_on_integer_arrays(values, n, unsigned):
    arr = np.array(values, dtype=np.int64)
    if unsigned:
        arr = arr.view(np.uint64)
    assert _fast.shard_of(arr, n).tolist() == _fallback.shard_of(arr, n).tolist()


@needs_fast
@settings(max_examples=50, deadline=None)
@given(bad=st.one_of(st.floats(), st.integers(U64 + 1, 2**80), st.integers(-(2**80), I64_MIN - 1)))
def test_twins_raise_the_same_errors(bad):
    errors = []
    for impl in (_fast, _fallback):
        with pytest.raises((TypeError, OverflowError)) as info:
            impl.shard_of_key(bad, 3)
        errors.append((type(info.value), str(info.value)))
    assert errors[0] == errors[1]


# -- KeyRouter: what HashPool.for_key and for_keys route with ----------------------------------


def test_key_router_picks_the_target_of_the_keys_shard(impl):
    targets = [f"actor-{i}" for i in range(10)]
    router = impl.KeyRouter(targets)
    for key, shard in zip(GOLDEN_KEYS, GOLDEN_SHARDS_10):
        assert router.for_key(key) == targets[shard]
    assert router.for_keys(GOLDEN_KEYS) == [targets[s] for s in GOLDEN_SHARDS_10]
    ints = np.array([0, 1, 7, -1], dtype=np.int64)
    assert router.for_keys(ints) == [targets[s] for s in GOLDEN_SHARDS_10[:4]]
    assert router.for_keys([]) == []


def test_key_router_follows_new_targets(impl):
    router = impl.KeyRouter(["a"])
    assert router.for_key("timbit") == "a"
    router._set_targets(["x", "y", "z"])
    assert router.for_key("timbit") == ["x", "y", "z"][impl.shard_of_key("timbit", 3)]


def test_key_router_refuses_bad_keys_and_having_no_targets(impl):
    router = impl.KeyRouter(["a", "b"])
    with pytest.raises(TypeError, match="a shard key must be an int, str or bytes"):
        router.for_key(1.5)
    with pytest.raises(TypeError, match="use shard_of_key for one key"):
        router.for_keys("timbit")
    with pytest.raises(ValueError, match="number of shards must be in 1"):
        impl.KeyRouter([])
    empty = impl.KeyRouter()
    for route in (lambda: empty.for_key("k"), lambda: empty.for_keys(["k"])):
        with pytest.raises(ValueError, match="no targets yet"):
            route()


def test_key_router_routes_with_the_targets_it_started_with(impl):
    """New targets set while a key hashes (its __index__, another thread) do not mix in."""
    targets = [f"t{i}" for i in range(1000)]
    router = impl.KeyRouter(targets)

    class Shrinking:
        def __index__(self):
            router._set_targets(["only"])  # e.g. another thread's pool.resize(1)
            return 123456789

    assert router.for_key(Shrinking()) == targets[impl.shard_of_key(123456789, 1000)]
    assert router.for_key(Shrinking()) == "only"
    router._set_targets(targets)
    got = router.for_keys([Shrinking(), 5, 6])
    assert got == [targets[s] for s in impl.shard_of([123456789, 5, 6], 1000)]
    assert router.for_keys([5]) == ["only"]


@needs_fast
@SOME
@given(batch=st.lists(keys, max_size=30), n=st.integers(1, 100))
def test_twins_route_keys_alike(batch, n):
    targets = [object() for _ in range(n)]
    fast, twin = _fast.KeyRouter(targets), _fallback.KeyRouter(targets)
    assert [fast.for_key(k) for k in batch] == [twin.for_key(k) for k in batch]
    assert fast.for_keys(batch) == twin.for_keys(batch) == [fast.for_key(k) for k in batch]


# -- stable across processes and PYTHONHASHSEED ------------------------------------------------

_CHILD = """
import json, sys
import numpy as np
from zactor.wire import hotpath as _hotpath
keys = [0, 1, 7, -1, 2**64 - 1, "timbit", "7", b"7".decode(), "\\u00e9t\\u00e9"]
keys += [f"user-{i}" for i in range(200)] + list(range(-100, 100))
out = {
    "impl": _hotpath.IMPLEMENTATION,
    "hash_of_str": hash("timbit"),
    "shards": _hotpath.shard_of(keys, 10).tolist(),
    "array": _hotpath.shard_of(np.arange(-500, 500, dtype=np.int64), 7).tolist(),
    "bytes": [_hotpath.shard_of_key(k.encode(), 3) for k in ("a", "bb", "ccc")],
}
print(json.dumps(out))
"""


def _child(hashseed: str, pure: bool) -> dict:
    env = dict(os.environ)
    env["PYTHONHASHSEED"] = hashseed
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.pop("ZACTOR_PURE_PYTHON", None)
    if pure:
        env["ZACTOR_PURE_PYTHON"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_the_mapping_is_the_same_in_every_process_whatever_the_hash_seed():
    runs = [
        _child("0", pure=False),
        _child("1", pure=False),
        _child("4242", pure=True),
        _child("random", pure=False),
    ]
    assert runs[0]["impl"] == "cython" and runs[2]["impl"] == "python"
    # Python's own hash() differs between these processes ...
    assert len({r["hash_of_str"] for r in runs}) > 1
    # ... the shard mapping does not, and matches this process's.
    for r in runs[1:]:
        for field in ("shards", "array", "bytes"):
            assert r[field] == runs[0][field], field
    expected = GOLDEN_SHARDS_10[:7] + [2, _fallback.shard_of_key("\u00e9t\u00e9", 10)]
    assert runs[0]["shards"][:9] == expected


# -- consistent hashing ---------------------------------------------------------------------

N_KEYS = 100_000


def _key_sets():
    ints = np.arange(N_KEYS, dtype=np.int64) * 7919 - 10**9
    strings = [f"account-{i}" for i in range(N_KEYS)]
    return {"ints": ints, "strings": strings}


@needs_fast
@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 31])
@pytest.mark.parametrize("kind", ["ints", "strings"])
def test_growing_moves_about_one_in_n_plus_one_keys_all_to_the_new_shard(n, kind):
    batch = _key_sets()[kind]
    before = _fast.shard_of(batch, n)
    after = _fast.shard_of(batch, n + 1)
    moved = before != after
    # Every moved key went to the new shard: none moved between two old shards.
    assert np.all(after[moved] == n)
    fraction = moved.mean()
    expected = 1.0 / (n + 1)
    assert abs(fraction - expected) < 0.01, (fraction, expected)


@needs_fast
@pytest.mark.parametrize("n", [2, 8, 10])
def test_keys_spread_evenly(n):
    counts = np.bincount(_fast.shard_of(_key_sets()["strings"], n), minlength=n)
    assert counts.min() > 0.9 * N_KEYS / n and counts.max() < 1.1 * N_KEYS / n, counts


@needs_fast
def test_shrinking_moves_only_the_keys_of_the_removed_shards():
    batch = _key_sets()["ints"]
    before = _fast.shard_of(batch, 10)
    after = _fast.shard_of(batch, 7)
    moved = before != after
    assert np.all(before[moved] >= 7)
    assert np.all(after[before < 7] == before[before < 7])
