"""Chooses the implementation of the per-call hot path.

``zactor.wire._fast`` (Cython) is the default. ``ZACTOR_PURE_PYTHON=1`` selects its
pure-Python twin ``zactor.wire._fallback``, which has the same functions and the
same behaviour, so benchmarks can show what the compiled path buys.
"""

from __future__ import annotations

import os

PURE_PYTHON = os.environ.get("ZACTOR_PURE_PYTHON", "") not in ("", "0")

if PURE_PYTHON:
    from zactor.wire import _fallback as impl
else:
    try:
        from zactor.wire import _fast as impl
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "zactor's compiled extension zactor.wire._fast is missing or broken "
            f"({exc}). Reinstall with `pip install .` on a machine with a C "
            "compiler and the Python headers, or set ZACTOR_PURE_PYTHON=1 to "
            "run on the slower pure-Python twin."
        ) from exc

IMPLEMENTATION = "python" if PURE_PYTHON else "cython"

parse_frame = impl.parse_frame
sort_records = impl.sort_records
pack_one = impl.pack_one
BatchWriter = impl.BatchWriter
Outbox = impl.Outbox
PendingTable = impl.PendingTable
# A call's future: its state and the reader's per-reply work (zactor.caller.future).
CallGate = impl.CallGate
FutureCore = impl.FutureCore
results = impl.results
first_pending = impl.first_pending
# Futures waiting for a plain reply hold nothing that leads back to them: the
# cyclic collector need not scan them (zactor.caller.future).
untrack = impl.untrack
track = impl.track
RECORD_SIZE = impl.RECORD_SIZE
PREAMBLE_SIZE = impl.PREAMBLE_SIZE
PROTOCOL_VERSION = impl.PROTOCOL_VERSION
SHARED_BUFFERS = impl.SHARED_BUFFERS
preamble_flags = impl.preamble_flags
with_preamble_flags = impl.with_preamble_flags

# Key hashing for pools (HashPool): same answers from both implementations.
hash_key = impl.hash_key
jump_hash = impl.jump_hash
shard_of = impl.shard_of
shard_of_key = impl.shard_of_key
xxh64 = impl.xxh64
KeyRouter = impl.KeyRouter
MAX_SHARDS = impl.MAX_SHARDS
