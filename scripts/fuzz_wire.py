"""Coverage-guided fuzzing (atheris) of what a worker does with a peer's bytes.

Each input becomes a message (:func:`split_input`): frame 0 and up to three
out-of-band buffers. Both
frame parsers (``_fast``, ``_fallback``) must accept or refuse it alike; every
payload of a parsed record then goes through the payload decoder
(``loads_call`` and ``loads``), which may raise (a worker answers that as an
error) but must not crash, hang or run away with memory. Pickles in payloads
naming a global are refused before ``pickle.loads``: fuzzed pickles must not
run code here.

Run it through ``scripts/fuzz-wire.sh SECONDS``; libFuzzer's flags pass
through (``-max_total_time``, ``-timeout``, ``-rss_limit_mb``, a corpus dir).
The pure-Python modules are instrumented for coverage; the compiled ``_fast``
is run uninstrumented (a crash in it still ends the run and is reported).
Every crash, hang or mismatch found becomes a test in tests/ before it is fixed.
"""

from __future__ import annotations

import pickle
import pickletools
import sys

import atheris

with atheris.instrument_imports():
    from zactor.errors import FrameError
    from zactor.wire import _fallback, serialization

from zactor.wire import _fast

#: Opcodes that reach a global (so could call one): refused before unpickling.
_CALLING = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID"}


class _SafePickle:
    """What ``serialization`` needs of ``pickle``: the real ``pickle.loads`` (the
    worker's own path), after refusing any pickle that names a global."""

    PickleBuffer = pickle.PickleBuffer

    @staticmethod
    def loads(data, *, buffers=()):
        for opcode, _arg, _pos in pickletools.genops(data):
            if opcode.name in _CALLING:
                raise pickle.UnpicklingError(f"fuzzing: {opcode.name} refused")
        return pickle.loads(data, buffers=buffers)


serialization.pickle = _SafePickle


def _parse(impl, frame0: bytes, buffers: list):
    try:
        records = impl.parse_frame(frame0, len(buffers))
    except FrameError as exc:
        return ("refused", exc.kind)
    return [(*r[:5], bytes(r[5]), *r[6:]) for r in records]


def split_input(data: bytes) -> tuple[bytes, list]:
    """An input's message: byte 0 is the number of buffers (mod 4), then each buffer
    as a length byte and its bytes, then frame 0 (what seeds and finds hold)."""
    if not data:
        return b"", []
    at, buffers = 1, []
    for _ in range(data[0] % 4):
        size = data[at] if at < len(data) else 0
        buffers.append(data[at + 1 : at + 1 + size])
        at += 1 + size
    return data[at:], buffers


def test_one_input(data: bytes) -> None:
    frame0, buffers = split_input(data)
    fast, slow = _parse(_fast, frame0, buffers), _parse(_fallback, frame0, buffers)
    if fast != slow:
        raise AssertionError(f"the parsers disagree: _fast {fast!r}, _fallback {slow!r}")
    if fast and fast[0] == "refused":
        return
    for _kind, _flags, _method, _call_id, _actor, payload, start, count in fast:
        own = buffers[start : start + count]
        for decode in (serialization.loads_call, serialization.loads):
            try:
                decode(payload, own)
            except RecursionError:
                raise  # a decoder must not recurse with the input's depth
            except Exception:  # a worker answers any of these as an error
                # MemoryError included: pickle asks for a lying length's memory at
                # once, fails, and the worker answers; -rss_limit_mb catches real growth.
                pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
