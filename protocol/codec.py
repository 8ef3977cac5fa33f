"""Canonical msgpack encoding (DESIGN decision 1).

Every signed or hashed object goes through :func:`encode`, which has exactly
one output for a given value, and :func:`decode`, which accepts only that
output: after decoding, the value is encoded again and must reproduce the
input byte for byte. That makes ``decode(x)`` either fail or satisfy
``encode(decode(x)) == x``, so ids (SHA-256 of these bytes) cannot be changed
by re-encoding a message.

The value space is deliberately small: ``None``, ``bool``, 64-bit ``int``,
``str``, ``bytes``, ``list``, ``dict`` with ``str`` keys (written in the order
of their UTF-8 bytes, so equal maps have equal bytes), and :class:`Tensor`.
Floats are refused: they have several encodings (32/64 bit) and NaN payloads,
and nothing in a header needs them. Tensors travel as msgpack extension type
1 whose payload is the canonical encoding of ``[dtype, shape, data]`` with
``data`` the little-endian, C-ordered element bytes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack

from protocol.errors import MalformedMessage, OversizedMessage

if TYPE_CHECKING:
    import numpy as np
    import torch

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Default bound on one encoded message; checked before any decoding."""

TENSOR_EXT = 1
MAX_DEPTH = 32
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1

DTYPE_SIZES: Mapping[str, int] = {
    "bool": 1,
    "uint8": 1,
    "int8": 1,
    "int16": 2,
    "int32": 4,
    "int64": 8,
    "float16": 2,
    "bfloat16": 2,
    "float32": 4,
    "float64": 8,
}
MAX_TENSOR_RANK = 8


@dataclass(frozen=True)
class Tensor:
    """A dense tensor as it travels: dtype name, shape and little-endian bytes."""

    dtype: str
    shape: tuple[int, ...]
    data: bytes

    def __post_init__(self) -> None:
        if self.dtype not in DTYPE_SIZES:
            raise MalformedMessage(
                f"tensor dtype {self.dtype!r} is not one of {sorted(DTYPE_SIZES)}"
            )
        if len(self.shape) > MAX_TENSOR_RANK:
            raise MalformedMessage(
                f"tensor rank {len(self.shape)} exceeds {MAX_TENSOR_RANK}"
            )
        if any(not isinstance(d, int) or isinstance(d, bool) or d < 0 for d in self.shape):
            raise MalformedMessage(f"tensor shape {self.shape!r} must be non-negative ints")
        expected = math.prod(self.shape) * DTYPE_SIZES[self.dtype]
        if len(self.data) != expected:
            raise MalformedMessage(
                f"tensor of dtype {self.dtype} and shape {list(self.shape)} needs "
                f"{expected} bytes, got {len(self.data)}"
            )

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @classmethod
    def from_numpy(cls, array: np.ndarray[Any, Any]) -> Tensor:
        import numpy as np

        name = array.dtype.newbyteorder("=").name
        if name not in DTYPE_SIZES or name == "bfloat16":
            raise MalformedMessage(f"numpy dtype {name!r} cannot be sent as a tensor")
        little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        return cls(name, tuple(int(d) for d in array.shape), little.tobytes())

    def to_numpy(self) -> np.ndarray[Any, Any]:
        import numpy as np

        if self.dtype == "bfloat16":
            raise MalformedMessage("bfloat16 has no numpy dtype; use to_torch()")
        dtype = np.dtype(self.dtype).newbyteorder("<")
        return np.frombuffer(self.data, dtype=dtype).reshape(self.shape).astype(
            np.dtype(self.dtype), copy=True
        )

    @classmethod
    def from_torch(cls, tensor: torch.Tensor) -> Tensor:
        import torch

        t = tensor.detach().to("cpu").contiguous()
        name = str(t.dtype).removeprefix("torch.")
        if name not in DTYPE_SIZES:
            raise MalformedMessage(f"torch dtype {name!r} cannot be sent as a tensor")
        if name == "bfloat16":
            raw = t.view(torch.int16).numpy()
            return cls(name, tuple(t.shape), raw.astype("<i2").tobytes())
        return cls.from_numpy(t.numpy())

    def to_torch(self) -> torch.Tensor:
        import numpy as np
        import torch

        if self.dtype == "bfloat16":
            raw = np.frombuffer(self.data, dtype="<i2").reshape(self.shape).astype(np.int16)
            return torch.from_numpy(raw.copy()).view(torch.bfloat16)
        return torch.from_numpy(self.to_numpy())


def _normalise(value: object, depth: int = 0) -> object:
    """Check a value is in the canonical value space; tuples become lists."""
    if depth > MAX_DEPTH:
        raise MalformedMessage(f"value nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, str, bytes)):
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise MalformedMessage(f"integer {value} is outside the 64-bit range")
        return value
    if isinstance(value, float):
        raise MalformedMessage("floats are not allowed in canonical messages")
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (list, tuple)):
        return [_normalise(v, depth + 1) for v in value]
    if isinstance(value, Mapping):
        for k in value:
            if not isinstance(k, str):
                raise MalformedMessage(f"map key {k!r} is not a string")
        return {
            k: _normalise(value[k], depth + 1)
            for k in sorted(value, key=lambda key: key.encode("utf-8"))
        }
    raise MalformedMessage(f"type {type(value).__name__} cannot be encoded canonically")


def _pack_default(value: object) -> msgpack.ExtType:
    if isinstance(value, Tensor):
        payload = msgpack.packb(
            [value.dtype, list(value.shape), value.data], use_bin_type=True
        )
        return msgpack.ExtType(TENSOR_EXT, payload)
    raise MalformedMessage(f"type {type(value).__name__} cannot be encoded canonically")


def encode(value: object) -> bytes:
    """Encode ``value`` canonically; raises :class:`MalformedMessage` if it can't be."""
    packed = msgpack.packb(_normalise(value), use_bin_type=True, default=_pack_default)
    assert isinstance(packed, bytes)
    return packed


def _ext_hook(code: int, payload: bytes) -> Tensor:
    if code != TENSOR_EXT:
        raise MalformedMessage(f"unknown msgpack extension type {code}")
    fields = msgpack.unpackb(payload, raw=False, use_list=True, strict_map_key=True)
    if not (isinstance(fields, list) and len(fields) == 3):
        raise MalformedMessage("tensor payload must be [dtype, shape, data]")
    dtype, shape, data = fields
    if not isinstance(dtype, str) or not isinstance(shape, list) or not isinstance(data, bytes):
        raise MalformedMessage("tensor payload must be [str dtype, list shape, bytes data]")
    return Tensor(dtype, tuple(shape), data)


def decode(data: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> Any:
    """Decode canonical bytes, checking the size bound before anything else."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedMessage(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise OversizedMessage(f"message is {len(data)} bytes; the bound is {max_bytes}")
    raw = bytes(data)
    try:
        value = msgpack.unpackb(
            raw,
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=_ext_hook,
        )
    except MalformedMessage:
        raise
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError,
            msgpack.OutOfData, RecursionError) as exc:
        raise MalformedMessage(f"not valid msgpack: {exc}") from exc
    try:
        again = encode(value)
    except MalformedMessage as exc:
        raise MalformedMessage(f"decoded value is not canonical: {exc}") from exc
    if again != raw:
        raise MalformedMessage("encoding is not canonical (re-encoding changes the bytes)")
    return value


def is_canonical(value: Sequence[object] | Mapping[str, object]) -> bool:
    """True when ``value`` survives an encode/decode round trip unchanged."""
    try:
        return bool(decode(encode(value)) == _normalise(value))
    except MalformedMessage:
        return False
