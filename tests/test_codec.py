"""The canonical codec: one encoding per value, and nothing else decodes."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from protocol import codec
from protocol.codec import Tensor, decode, encode
from protocol.errors import MalformedMessage, OversizedMessage
from tests.strategies import canonical_values, tensors


@given(canonical_values)
def test_decode_encode_is_byte_identical(value: object) -> None:
    data = encode(value)
    assert encode(decode(data)) == data


@given(st.dictionaries(st.text(max_size=6), st.integers(0, 9), min_size=2, max_size=6))
def test_equal_maps_have_equal_bytes_whatever_the_insertion_order(d: dict[str, int]) -> None:
    reversed_d = dict(reversed(list(d.items())))
    assert encode(d) == encode(reversed_d)


@given(st.dictionaries(st.text(max_size=6), st.integers(0, 9), min_size=2, max_size=6))
def test_unsorted_maps_are_refused(d: dict[str, int]) -> None:
    keys = sorted(d, key=lambda k: k.encode())
    unsorted = {k: d[k] for k in reversed(keys)}
    data = msgpack.packb(unsorted, use_bin_type=True)
    if data != encode(d):
        with pytest.raises(MalformedMessage, match="not canonical"):
            decode(data)


@given(tensors())
def test_tensor_round_trip(t: Tensor) -> None:
    assert decode(encode(t)) == t


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.uint8, torch.bool]
)
def test_torch_tensors_round_trip_bit_exactly(dtype: torch.dtype) -> None:
    t = (torch.arange(12).reshape(3, 4) * 7 - 20).to(dtype)
    back = Tensor.from_torch(t).to_torch()
    assert back.dtype == t.dtype and torch.equal(back, t)


def test_tensor_bytes_are_little_endian() -> None:
    t = Tensor.from_numpy(np.array([1], dtype=">i4"))
    assert t.dtype == "int32" and t.data == b"\x01\x00\x00\x00"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xcb" + b"\x00" * 8, "floats are not allowed"),
        (b"\xcd\x00\x01", "not canonical"),
        (b"\x81\x01\x02", "not valid msgpack"),
        (b"\xc7\x02\x05ab", "unknown msgpack extension type 5"),
        (b"\x92\x01", "not valid msgpack"),
        (b"\x01\x02", "not valid msgpack"),
        (b"\xa2\xff\xfe", "not valid msgpack"),
    ],
)
def test_malformed_bytes_name_the_problem(raw: bytes, reason: str) -> None:
    with pytest.raises(MalformedMessage, match=reason):
        decode(raw)


def test_tensor_with_wrong_byte_count_is_malformed() -> None:
    payload = msgpack.packb(["float32", [2], b"\x00" * 7], use_bin_type=True)
    raw = msgpack.packb(msgpack.ExtType(codec.TENSOR_EXT, payload), use_bin_type=True)
    with pytest.raises(MalformedMessage, match="needs 8 bytes, got 7"):
        decode(raw)


def test_size_bound_is_checked_before_decoding() -> None:
    data = encode(b"x" * 100)
    with pytest.raises(OversizedMessage, match="bound is 50"):
        decode(data, max_bytes=50)


def test_floats_and_odd_types_are_refused_on_encode() -> None:
    with pytest.raises(MalformedMessage, match="floats"):
        encode({"p": 0.5})
    with pytest.raises(MalformedMessage, match="set"):
        encode({1, 2})
    with pytest.raises(MalformedMessage, match="64-bit"):
        encode(2**64)
