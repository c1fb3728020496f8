"""How values travel: msgpack for plain data, separate frames for big buffers.

``dumps(obj) -> (payload, buffers)`` and ``loads(payload, buffers) -> obj``.

- ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``, ``list`` and
  ``dict`` are msgpack-native and keep their exact types.
- ``tuple`` comes back as a ``tuple`` (a msgpack extension), not a list.
  Decoding tuples inside tuples never nests msgpack calls on the C stack (see
  :meth:`_Decoder.tuple`); they may nest :data:`MAX_TUPLE_DEPTH` deep.
- A value nested too deep for msgpack (lists or dicts deeper than its limit,
  tuples deeper than Python's recursion allows the encoder) is pickled whole
  instead: whatever ``pickle`` round-trips at the recursion limit is delivered,
  and a deeper value raises :class:`NestingError` naming the limit.
- A numpy array of a plain dtype larger than :data:`OUT_OF_BAND_BYTES` is sent
  as its own frame without copying (the receiver gets a read-only array over
  the received bytes); a smaller one is copied inline.
- ``bytes`` larger than :data:`OUT_OF_BAND_BYTES` passed as an argument or
  returned as a value also travel as their own frame (nested deeper inside a
  container they are copied into the payload).
- ``bytearray`` and ``memoryview`` travel as ``bytes`` (msgpack packs them natively).
- Anything else is pickled with cloudpickle (protocol 5, numpy buffers inside
  it still out of band), so classes defined in ``__main__`` work.

An array sent out of band is read by ZeroMQ's I/O thread after ``remote()``
returns: do not modify it in place until that call's future is done (send
``arr.copy()`` if you must reuse the buffer at once). Between processes on one
machine, large buffers go through shared memory instead of the socket
(:mod:`zactor.transport.shared_memory`); the receiver sees the same frames.
"""

from __future__ import annotations

import pickle
import sys
import threading
from typing import Any

import cloudpickle
import msgpack
import numpy as np

from zactor.wire.limits import check_message

#: Arrays and bytes at least this large travel as their own zero-copy frame.
OUT_OF_BAND_BYTES = 8 * 1024

_EXT_TUPLE = 1
_EXT_ARRAY_INLINE = 2
_EXT_ARRAY_FRAME = 3
_EXT_BYTES_FRAME = 4
_EXT_PICKLE = 5

#: Tuples nest at most this deep in a decoded payload: deeper than anything
#: :func:`dumps` writes at Python's default recursion limit. A payload nesting
#: deeper comes from a foreign peer, and its decoding fails with NestingError.
MAX_TUPLE_DEPTH = 1000

_ndarray = np.ndarray
_ExtType = msgpack.ExtType


class NestingError(ValueError):
    """A value nests deeper than zactor can carry (see :data:`MAX_TUPLE_DEPTH`)."""


class _Deferred:
    """A tuple met while decoding another tuple; :meth:`_Decoder.tuple` decodes its
    items later, in a loop, rather than in a msgpack call nested on the C stack."""

    __slots__ = ("data", "depth", "value", "nests")

    def __init__(self, data: bytes, depth: int) -> None:
        self.data = data
        self.depth = depth
        self.value: Any = None
        self.nests = False  # whether its items hold tuples (Deferreds) to put in place


class _Encoder:
    """Packs one value, collecting its out-of-band buffers."""

    __slots__ = ("buffers",)

    def __init__(self) -> None:
        self.buffers: list = []

    def pack(self, obj: Any) -> bytes:
        return msgpack.packb(obj, default=self.default, use_bin_type=True, strict_types=True)

    def top(self, obj: Any) -> Any:
        """``obj``, or its extension when it is an array or a large ``bytes``.

        Arguments and return values are looked at here: msgpack packs ``bytes``
        natively (``default`` never sees them), and letting msgpack discover an
        array and call ``default`` costs ~10 us more than handing it the extension.
        """
        kind = type(obj)
        if kind is _ndarray or (kind is bytes and len(obj) >= OUT_OF_BAND_BYTES):
            return self.default(obj)
        return obj

    def default(self, obj: Any) -> msgpack.ExtType:
        kind = type(obj)
        if kind is tuple:
            return _ExtType(_EXT_TUPLE, self.pack(list(obj)))
        if kind is _ndarray and not obj.dtype.hasobject:
            if not obj.flags.c_contiguous:
                obj = np.ascontiguousarray(obj)
            dtype = obj.dtype
            descr = dtype.str if dtype.fields is None else np.lib.format.dtype_to_descr(dtype)
            meta = [descr, list(obj.shape)]
            if obj.nbytes < OUT_OF_BAND_BYTES:
                meta.append(obj.tobytes())
                return _ExtType(_EXT_ARRAY_INLINE, msgpack.packb(meta, use_bin_type=True))
            meta.append(len(self.buffers))
            # C-contiguous: the array's own buffer is the frame; datetimes and records
            # do not export a buffer, their bytes do.
            self.buffers.append(obj if dtype.kind not in "mMV" else obj.reshape(-1).view(np.uint8))
            return _ExtType(_EXT_ARRAY_FRAME, msgpack.packb(meta, use_bin_type=True))
        if kind is bytes and len(obj) >= OUT_OF_BAND_BYTES:
            self.buffers.append(obj)
            return _ExtType(_EXT_BYTES_FRAME, msgpack.packb(len(self.buffers) - 1))
        return _ExtType(_EXT_PICKLE, self.pickle(obj))

    def pickle(self, obj: Any) -> bytes:
        first = len(self.buffers)
        data = cloudpickle.dumps(obj, protocol=5, buffer_callback=self._oob)
        return msgpack.packb([first, len(self.buffers) - first, data], use_bin_type=True)

    def _oob(self, buf: pickle.PickleBuffer) -> bool:
        raw = buf.raw()
        if raw.nbytes < OUT_OF_BAND_BYTES:
            return True  # small: keep it inside the pickle
        self.buffers.append(raw)
        return False


class _Decoder:
    """Unpacks one value whose out-of-band buffers are ``buffers``."""

    __slots__ = ("buffers",)

    def __init__(self, buffers) -> None:
        self.buffers = buffers

    def unpack(self, payload) -> Any:
        return msgpack.unpackb(
            payload, ext_hook=self.ext_hook, raw=False, strict_map_key=False, use_list=True
        )

    def ext_hook(self, code: int, data: bytes) -> Any:
        if code == _EXT_TUPLE:
            return self.tuple(data)
        if code == _EXT_ARRAY_FRAME or code == _EXT_ARRAY_INLINE:
            descr, shape, where = msgpack.unpackb(data, raw=False)
            dtype = descr if type(descr) is str else _descr_to_dtype(descr)
            raw = self.buffers[where] if code == _EXT_ARRAY_FRAME else where
            array = np.frombuffer(raw, dtype=dtype).reshape(shape)
            array.flags.writeable = False  # received frames may be writable buffers
            return array
        if code == _EXT_BYTES_FRAME:
            return bytes(self.buffers[msgpack.unpackb(data)])
        if code == _EXT_PICKLE:
            first, count, blob = msgpack.unpackb(data, raw=False)
            return pickle.loads(blob, buffers=self.buffers[first : first + count])
        raise ValueError(f"unknown msgpack extension type {code} in a zactor payload")

    def tuple(self, data: bytes) -> tuple:
        """The tuple whose items ``data`` holds, however deeply tuples nest inside it.

        msgpack decodes an extension by a nested ``unpackb``, and each one holds
        tens of kilobytes of C stack: a tuple nested a few hundred deep would end
        the process. Here a tuple inside the one being decoded becomes a
        :class:`_Deferred`, decoded by the loop below; then, deepest first, each
        becomes its tuple. At most two msgpack calls are on the stack at once.
        """
        current = root = _Deferred(data, 1)
        found = [root]
        ext_hook = self.ext_hook

        def hook(code: int, inner: bytes) -> Any:
            if code != _EXT_TUPLE:
                return ext_hook(code, inner)
            depth = current.depth + 1
            if depth > MAX_TUPLE_DEPTH:
                raise NestingError(
                    f"a payload nests tuples deeper than {MAX_TUPLE_DEPTH} levels: zactor "
                    "never sends that (it pickles deep values), so it came from a foreign peer"
                )
            current.nests = True
            deferred = _Deferred(inner, depth)
            found.append(deferred)
            return deferred

        for current in found:  # grows while it runs: breadth first
            current.value = _unpackb(
                current.data, ext_hook=hook, raw=False, strict_map_key=False, use_list=True
            )
        for deferred in reversed(found):  # every one after its parent: deepest first
            items = deferred.value
            deferred.value = tuple(_put_tuples_in_place(items) if deferred.nests else items)
        return root.value


def _put_tuples_in_place(items: list) -> list:
    """Replace each :class:`_Deferred` in ``items`` (inside its lists and dicts too,
    values and keys) by its tuple, without recursion."""
    stack = [items]
    while stack:
        container = stack.pop()
        if type(container) is dict:
            keyed = False
            for key, value in container.items():
                kind = type(value)
                if kind is _Deferred:
                    container[key] = value.value  # same keys: safe while iterating
                elif kind is list or kind is dict:
                    stack.append(value)
                if type(key) is _Deferred:
                    keyed = True
            if keyed:
                pairs = [(k.value if type(k) is _Deferred else k, v) for k, v in container.items()]
                container.clear()
                container.update(pairs)
        else:
            for i, value in enumerate(container):
                kind = type(value)
                if kind is _Deferred:
                    container[i] = value.value
                elif kind is list or kind is dict:
                    stack.append(value)
    return items


#: The decoder of payloads without out-of-band buffers (most): it holds no state, so
#: every thread shares it.
_NO_BUFFERS = _Decoder(())

#: msgpack lead bytes of scalars (ints, floats, nil, bools, str): such a payload
#: holds no extension, so plain ``unpackb`` decodes it.
_SCALAR_LEAD = bytes(
    1
    if b <= 0x7F
    or b >= 0xE0
    or 0xA0 <= b <= 0xBF
    or b in (0xC0, 0xC2, 0xC3, 0xCA, 0xCB)
    or 0xCC <= b <= 0xD3
    or 0xD9 <= b <= 0xDB
    else 0
    for b in range(256)
)
_SCALARS = frozenset((type(None), bool, int, float, str))
#: Payloads longer than this are not left in a reused Packer: its buffer keeps the
#: size of the largest payload it packed, so the Packer is replaced after one.
_REUSED_PACKER_MAX = 64 * 1024
#: True with msgpack's compiled Packer, which packs a scalar without running Python
#: code: no other thread can run in the middle, so threads may share one.
_PACKER_SHARABLE = not msgpack.Packer.__module__.startswith("msgpack.fallback")


def _new_packer():
    return msgpack.Packer(autoreset=True).pack


#: Packs scalar replies: one Packer for the process, not the one ``msgpack.packb``
#: makes a call (about 200 ns). Shared by every thread (see _PACKER_SHARABLE); an
#: error (an int wider than 64 bits, a str that is not UTF-8) comes before a byte is
#: written and empties its buffer.
_pack_scalar = _new_packer() if _PACKER_SHARABLE else msgpack.packb
#: Each thread's Packer for lists of scalar arguments: an error there comes after the
#: list's first bytes are written, and making the exception may run a garbage
#: collection, finalizers and so another thread: a shared Packer could mix the two.
_thread_packers = threading.local()
_unpackb = msgpack.unpackb


def _descr_to_dtype(descr: list) -> np.dtype:
    """A structured dtype from its ``dtype_to_descr`` form (msgpack turned tuples into lists)."""
    return np.lib.format.descr_to_dtype([tuple(f) if isinstance(f, list) else f for f in descr])


def dumps(obj: Any) -> tuple[bytes, list]:
    """Serialize ``obj`` into a msgpack payload and a list of out-of-band buffers."""
    global _pack_scalar
    if type(obj) in _SCALARS:  # the common reply: no encoder, no buffers
        try:
            payload = _pack_scalar(obj)
            if len(payload) > _REUSED_PACKER_MAX:  # rare: a big str
                if _PACKER_SHARABLE:
                    _pack_scalar = _new_packer()
                check_message(payload, ())
            return payload, []
        except OverflowError:
            pass
    encoder = _Encoder()
    try:
        payload = encoder.pack(encoder.top(obj))
    except (OverflowError, ValueError, RecursionError):
        # An int wider than 64 bits, or nesting deeper than msgpack or the encoder
        # goes: let pickle carry the whole value.
        encoder = _Encoder()
        payload = encoder.pack(_ExtType(_EXT_PICKLE, _pickle_whole(encoder, obj)))
    check_message(payload, encoder.buffers)
    return payload, encoder.buffers


def _pickle_whole(encoder: _Encoder, obj: Any) -> bytes:
    """``encoder.pickle(obj)``, or NestingError if even pickle cannot nest that deep."""
    try:
        return encoder.pickle(obj)
    except (RecursionError, pickle.PicklingError) as exc:
        # cloudpickle turns the RecursionError into a PicklingError caused by it.
        if not isinstance(exc, RecursionError) and not isinstance(exc.__cause__, RecursionError):
            raise
        raise NestingError(
            f"a value nests too deep to send: pickle gave up at Python's recursion limit "
            f"(sys.getrecursionlimit() = {sys.getrecursionlimit()}); flatten it, or send it "
            "in parts"
        ) from None


def loads(payload, buffers=()) -> Any:
    """Inverse of :func:`dumps`; ``buffers`` are the frames that followed the payload."""
    if payload and _SCALAR_LEAD[payload[0]]:  # most replies are one scalar
        return _unpackb(payload, raw=False)
    return (_Decoder(buffers) if buffers else _NO_BUFFERS).unpack(payload)


#: The payload of a call without arguments.
NO_ARGS = _NO_ARGS = msgpack.packb([[]])


def dumps_call(args: tuple, kwargs: dict) -> tuple[bytes, list]:
    """Serialize a call's arguments (the common no-argument call costs nothing)."""
    if not kwargs:
        if not args:
            return _NO_ARGS, []
        for arg in args:
            if type(arg) not in _SCALARS:
                break
        else:  # scalars only (the common call): no encoder, no buffers
            try:
                pack = _thread_packers.pack
            except AttributeError:
                pack = _thread_packers.pack = _new_packer()
            try:
                payload = pack([list(args)])
            except OverflowError:
                pass
            else:
                if len(payload) > _REUSED_PACKER_MAX:  # rare: a big str
                    _thread_packers.pack = _new_packer()
                    check_message(payload, ())
                return payload, []
    encoder = _Encoder()
    top = encoder.top
    body = [[top(a) for a in args]]
    if kwargs:
        body.append({k: top(v) for k, v in kwargs.items()})
    try:
        payload = encoder.pack(body)
    except (OverflowError, ValueError, RecursionError):  # as in dumps
        encoder = _Encoder()
        payload = encoder.pack([_ExtType(_EXT_PICKLE, _pickle_whole(encoder, (args, kwargs)))])
    check_message(payload, encoder.buffers)
    return payload, encoder.buffers


def loads_call(payload, buffers=()) -> tuple[list, dict]:
    """Inverse of :func:`dumps_call`: ``(args, kwargs)``."""
    if payload == _NO_ARGS:
        return [], {}
    body = (_Decoder(buffers) if buffers else _NO_BUFFERS).unpack(payload)
    if len(body) == 1 and type(body[0]) is tuple:  # the pickled (args, kwargs) fallback
        args, kwargs = body[0]
        return list(args), kwargs
    return body[0], (body[1] if len(body) > 1 else {})
