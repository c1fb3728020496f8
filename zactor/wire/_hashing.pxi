# Included by _fast.pyx: key hashing for HashPool (xxh64, jump hash, KeyRouter).

# -- key hashing: which shard of a pool a key belongs to ------------------------------------
#
# A key's shard is ``jump_hash(hash_key(key), n)``:
#
# * ``hash_key`` is XXH64 (xxHash, 64-bit) of the key's canonical bytes, with the key's
#   type tag as the XXH64 seed: an ``int`` (or anything with ``__index__``: ``bool``,
#   numpy integers) in ``-2**63 .. 2**64 - 1`` is its value modulo ``2**64`` as 8 bytes
#   little-endian, tag 1 (so ``-1`` and ``2**64 - 1`` are the same key bits); a ``str``
#   is its UTF-8 bytes, tag 2; ``bytes`` (and ``bytearray``/``memoryview``) are
#   themselves, tag 3. ``7``, ``np.int64(7)`` and ``np.uint64(7)`` hash alike; ``"7"``
#   and ``b"7"`` hash differently from ``7`` and from each other. Other types raise
#   ``TypeError``.
# * ``jump_hash`` is Lamping and Veach's jump consistent hash ("A Fast, Minimal Memory,
#   Consistent Hash Algorithm", 2014): growing from n to n + 1 shards moves about
#   1/(n + 1) of the keys, all of them to the new shard.
#
# Nothing depends on the process, the machine or ``PYTHONHASHSEED``. The pure-Python
# twin in ``_fallback`` gives the same answers (tests/test_hashing.py).

from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE, PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF
from cpython.unicode cimport PyUnicode_CheckExact
from libc.stdint cimport int64_t

import numpy as _np

cdef extern from *:
    """
    #define ZA_XXH_P1 0x9E3779B185EBCA87ULL
    #define ZA_XXH_P2 0xC2B2AE3D27D4EB4FULL
    #define ZA_XXH_P3 0x165667B19E3779F9ULL
    #define ZA_XXH_P4 0x85EBCA77C2B2AE63ULL
    #define ZA_XXH_P5 0x27D4EB2F165667C5ULL
    #define ZA_JUMP_MUL 2862933555777941757ULL
    """
    const uint64_t ZA_XXH_P1
    const uint64_t ZA_XXH_P2
    const uint64_t ZA_XXH_P3
    const uint64_t ZA_XXH_P4
    const uint64_t ZA_XXH_P5
    const uint64_t ZA_JUMP_MUL

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object s, Py_ssize_t* size) except NULL

__all__ += [
    "KEY_TAG_INT",
    "KEY_TAG_STR",
    "KEY_TAG_BYTES",
    "MAX_SHARDS",
    "xxh64",
    "hash_key",
    "jump_hash",
    "shard_of_key",
    "shard_of",
    "KeyRouter",
]

#: XXH64 seed (the type tag) of integer keys.
KEY_TAG_INT = 1
#: XXH64 seed (the type tag) of ``str`` keys.
KEY_TAG_STR = 2
#: XXH64 seed (the type tag) of ``bytes`` keys.
KEY_TAG_BYTES = 3
#: The largest shard count ``shard_of`` accepts (jump hash's buckets are int32).
MAX_SHARDS = 2**31 - 1

cdef enum:
    _TAG_INT = 1
    _TAG_STR = 2
    _TAG_BYTES = 3

cdef long long _I64_MIN_PY = -9223372036854775807LL - 1


cdef inline uint64_t _rotl(uint64_t x, int r) noexcept nogil:
    return (x << r) | (x >> (64 - r))


cdef inline uint64_t _xround(uint64_t acc, uint64_t lane) noexcept nogil:
    acc += lane * ZA_XXH_P2
    acc = _rotl(acc, 31)
    return acc * ZA_XXH_P1


cdef inline uint64_t _xmerge(uint64_t acc, uint64_t val) noexcept nogil:
    acc ^= _xround(0, val)
    return acc * ZA_XXH_P1 + ZA_XXH_P4


cdef inline uint64_t _avalanche(uint64_t h) noexcept nogil:
    h ^= h >> 33
    h *= ZA_XXH_P2
    h ^= h >> 29
    h *= ZA_XXH_P3
    return h ^ (h >> 32)


cdef uint64_t _xxh64(const unsigned char* p, Py_ssize_t n, uint64_t seed) noexcept nogil:
    cdef const unsigned char* end = p + n
    cdef const unsigned char* limit
    cdef uint64_t v1, v2, v3, v4, h
    if n >= 32:
        v1 = seed + ZA_XXH_P1 + ZA_XXH_P2
        v2 = seed + ZA_XXH_P2
        v3 = seed
        v4 = seed - ZA_XXH_P1
        limit = end - 32
        while p <= limit:
            v1 = _xround(v1, _ld64(p))
            v2 = _xround(v2, _ld64(p + 8))
            v3 = _xround(v3, _ld64(p + 16))
            v4 = _xround(v4, _ld64(p + 24))
            p += 32
        h = _rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)
        h = _xmerge(h, v1)
        h = _xmerge(h, v2)
        h = _xmerge(h, v3)
        h = _xmerge(h, v4)
    else:
        h = seed + ZA_XXH_P5
    h += <uint64_t>n
    while p + 8 <= end:
        h ^= _xround(0, _ld64(p))
        h = _rotl(h, 27) * ZA_XXH_P1 + ZA_XXH_P4
        p += 8
    if p + 4 <= end:
        h ^= (<uint64_t>_ld32(p)) * ZA_XXH_P1
        h = _rotl(h, 23) * ZA_XXH_P2 + ZA_XXH_P3
        p += 4
    while p < end:
        h ^= (<uint64_t>p[0]) * ZA_XXH_P5
        h = _rotl(h, 11) * ZA_XXH_P1
        p += 1
    return _avalanche(h)


cdef inline uint64_t _hash_lane(uint64_t bits) noexcept nogil:
    """``_xxh64`` of ``bits`` as 8 little-endian bytes with seed ``_TAG_INT``, unrolled."""
    cdef uint64_t h = <uint64_t>_TAG_INT + ZA_XXH_P5 + 8
    h ^= _xround(0, bits)
    h = _rotl(h, 27) * ZA_XXH_P1 + ZA_XXH_P4
    return _avalanche(h)


cdef inline int64_t _jump(uint64_t key, int64_t n) noexcept nogil:
    cdef int64_t b = -1
    cdef int64_t j = 0
    while j < n:
        b = j
        key = key * ZA_JUMP_MUL + 1
        j = <int64_t>((b + 1) * (2147483648.0 / <double>((key >> 33) + 1)))
    return b


cdef int _int_range_error(object value) except -1:
    raise OverflowError(
        f"integer key {value} is out of range: integer keys must fit in -2**63..2**64-1"
    )


cdef uint64_t _int_bits(object value) except? 0:
    """The key bits of an exact int: its value modulo 2**64 (range-checked)."""
    cdef int overflow = 0
    cdef long long v = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow == 0:
        return <uint64_t>v
    if overflow < 0 or value > 0xFFFFFFFFFFFFFFFF:
        _int_range_error(value)
    return PyLong_AsUnsignedLongLong(value)


cdef int _type_error(object key) except -1:
    raise TypeError(
        f"a shard key must be an int, str or bytes, got {type(key).__name__}: {key!r} "
        "(convert it, e.g. with str(key))"
    )


cdef uint64_t _hash_other(object key) except? 0:
    """``hash_key`` for keys that are not an exact int, str or bytes."""
    cdef bytes data
    if isinstance(key, str):
        data = str.encode(key, "utf-8")
        return _xxh64(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), _TAG_STR)
    if isinstance(key, (bytes, bytearray, memoryview)):
        data = bytes(key)
        return _xxh64(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), _TAG_BYTES)
    if isinstance(key, float):
        _type_error(key)
    try:
        value = operator.index(key)
    except TypeError:
        value = None
    if value is None:
        _type_error(key)
    return _hash_lane(_int_bits(value))


cdef inline uint64_t _hash_obj(object key) except? 0:
    cdef Py_ssize_t size
    cdef const char* s
    if PyUnicode_CheckExact(key):
        s = PyUnicode_AsUTF8AndSize(key, &size)
        return _xxh64(<const unsigned char*>s, size, _TAG_STR)
    if PyLong_CheckExact(key):
        return _hash_lane(_int_bits(key))
    if PyBytes_CheckExact(key):
        return _xxh64(<const unsigned char*>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key), _TAG_BYTES)
    return _hash_other(key)


cdef int64_t _check_shards(object n) except -1:
    if not PyLong_CheckExact(n):
        n = operator.index(n)
    if n < 1 or n > MAX_SHARDS:
        raise ValueError(f"the number of shards must be in 1..{MAX_SHARDS}, got {n}")
    return <int64_t>n


def xxh64(data, seed=0):
    """XXH64 of ``data`` (bytes-like) with ``seed`` (0..2**64-1), as an unsigned int."""
    cdef bytes b = bytes(data)
    cdef uint64_t s = _field(seed, _U64_MAX, "seed")
    return PyLong_FromUnsignedLongLong(
        _xxh64(<const unsigned char*>PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b), s)
    )


def hash_key(key):
    """The 64-bit hash of one key (an int, str or bytes), as an unsigned int.

    Example::

        hash_key(7) == hash_key(np.int64(7)) != hash_key("7")
    """
    return PyLong_FromUnsignedLongLong(_hash_obj(key))


def jump_hash(h, n):
    """Lamping and Veach's jump consistent hash of the 64-bit ``h`` into ``n`` buckets."""
    cdef uint64_t key = _field(h, _U64_MAX, "h")
    cdef int64_t shards = _check_shards(n)
    return _jump(key, shards)


def shard_of_key(key, n):
    """The shard (0..n-1) of one key among ``n`` shards."""
    cdef int64_t shards = _check_shards(n)
    return _jump(_hash_obj(key), shards)


cdef void _shard_lanes(const uint64_t[::1] keys, int64_t[::1] out, int64_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(keys.shape[0]):
        out[i] = _jump(_hash_lane(keys[i]), n)


def shard_of(keys, n):
    """The shard (0..n-1) of each key: a numpy int64 array as long as ``keys``.

    ``keys`` is a sequence of int/str/bytes keys or a 1-d numpy array (integer
    dtypes hash like the same Python ints; ``U``/``S``/object arrays like their
    items). Integer arrays are hashed without the GIL.
    """
    cdef int64_t shards = _check_shards(n)
    cdef Py_ssize_t i, size
    cdef const uint64_t[::1] src
    cdef int64_t[::1] res
    cdef list items
    if isinstance(keys, _np.ndarray):
        if keys.ndim != 1:
            raise ValueError(f"shard_of takes a 1-d array of keys, got shape {keys.shape}")
        kind = keys.dtype.kind
        if kind in "iub":
            if kind == "u":
                lanes = _np.ascontiguousarray(keys, dtype=_np.uint64)
            else:
                lanes = _np.ascontiguousarray(keys, dtype=_np.int64).view(_np.uint64)
            out = _np.empty(lanes.shape[0], dtype=_np.int64)
            src = lanes
            res = out
            with nogil:
                _shard_lanes(src, res, shards)
            return out
        items = keys.tolist()
    elif isinstance(keys, (str, bytes, bytearray, memoryview)):
        raise TypeError("shard_of takes a sequence of keys; use shard_of_key for one key")
    else:
        items = list(keys)  # a private copy: hashing a key may run user code
    size = PyList_GET_SIZE(items)
    out = _np.empty(size, dtype=_np.int64)
    res = out
    for i in range(size):
        res[i] = _jump(_hash_obj(<object>PyList_GET_ITEM(items, i)), shards)
    return out


cdef class KeyRouter:
    """The target that owns a key, among a fixed list of them: the compiled core of HashPool.

    ``router.for_key(key)`` is ``targets[shard_of_key(key, len(targets))]``,
    hashed and picked in C with no Python frame in between, so that routing a
    call costs next to nothing beside the call. ``HashPool`` subclasses it (as
    ``zmq.Socket`` does its compiled backend) and sets the targets with
    ``_set_targets``; until then there is nothing to route to.

    Example::

        router = KeyRouter(["a", "b", "c"])
        router.for_key("timbit")            # one of "a", "b", "c", the same everywhere
        router.for_keys(["timbit", 7])      # a list, one target a key
    """

    # A private list, never changed: _set_targets replaces it whole, so a routing
    # call that took it stays consistent even if hashing a key runs code (a key's
    # __index__, another thread) that sets new targets.
    cdef list _targets

    def __init__(self, targets=None):
        if targets is not None:
            self._set_targets(targets)

    def _set_targets(self, targets):
        """Route to ``targets`` (1..MAX_SHARDS of them, shard 0 first) from now on."""
        cdef list items = list(targets)
        _check_shards(len(items))
        self._targets = items

    cdef int _no_targets(self) except -1:
        raise ValueError("this router has no targets yet: give it some with _set_targets")

    def for_key(self, key):
        """The target that owns ``key`` (an int, str or bytes).

        For a ``HashPool``, the owning actor's own handle: ``pool.for_key(k).m.remote()``
        sends the same one message as ``handle.m.remote()``.
        """
        cdef list targets = self._targets
        if targets is None:
            self._no_targets()
        cdef int64_t shard = _jump(_hash_obj(key), PyList_GET_SIZE(targets))
        return <object>PyList_GET_ITEM(targets, shard)

    def for_keys(self, keys):
        """The owning target of each key, in order: ``for_key`` for a batch of keys.

        One call for ``[router.for_key(k) for k in keys]``, for when the keys of
        many calls are known at once::

            for h, k in zip(pool.for_keys(keys), keys):
                h.deposit.remote(k, 1.0)


        ``keys`` is what ``shard_of`` takes (a sequence of keys or a 1-d numpy
        integer array, hashed without the GIL).
        """
        cdef list targets = self._targets
        if targets is None:
            self._no_targets()
        cdef const int64_t[::1] shards = shard_of(keys, PyList_GET_SIZE(targets))
        cdef Py_ssize_t i, size = shards.shape[0]
        cdef list out = PyList_New(size)
        cdef object target
        for i in range(size):
            target = <object>PyList_GET_ITEM(targets, shards[i])
            Py_INCREF(target)
            PyList_SET_ITEM(out, i, target)
        return out
