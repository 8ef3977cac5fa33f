"""The activation sketch: encode/decode laws, its length, and refusal of bad bytes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prover.llm.sketch import (
    BLOCK,
    PROJECTIONS,
    Sketch,
    SketchError,
    decode_sketch,
    deviations,
    make_sketch,
    sketch_bytes,
)


def hidden(n: int, d: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn((n, d), generator=torch.Generator().manual_seed(seed)) * 5


@given(st.integers(min_value=1, max_value=200), st.integers(min_value=-20, max_value=10),
       st.integers(min_value=0, max_value=2**64 - 1))
@settings(max_examples=40, deadline=None)
def test_decode_encode_round_trips_and_honest_states_deviate_by_under_half_a_step(
    n: int, exp: int, seed: int
) -> None:
    h = hidden(n)
    sketch = make_sketch(h, seed, exp)
    aux = sketch.encode()
    assert len(aux) == sketch_bytes(n) == 2 + PROJECTIONS * -(-n // BLOCK)
    decoded = decode_sketch(aux, n)
    assert decoded.exp == exp and np.array_equal(decoded.residues, sketch.residues)
    assert decoded.encode() == aux
    assert float(deviations(decoded, h, seed).abs().max()) <= 0.5 + 1e-9


def test_small_perturbations_are_measured_exactly_and_large_ones_wrap() -> None:
    h = hidden(64)
    sketch = make_sketch(h, 3, exp=-4)
    shifted = h.clone()
    shifted[5, 2] += 2.0**-4 * 0.3  # under a step: rounding (≤ 0.5) plus 0.3
    assert float(deviations(sketch, shifted, 3).abs().max()) <= 0.8 + 1e-9
    other = hidden(64, seed=1)
    assert float(deviations(sketch, other, 3).abs().max()) > 10


def test_bytes_per_token_is_half_a_byte() -> None:
    assert sketch_bytes(1024) / 1024 < 0.51
    assert sketch_bytes(64) / 64 < 0.54


@pytest.mark.parametrize(
    ("aux", "message"),
    [
        (b"", "less than its 2-byte header"),
        (b"\x02\x00" + bytes(16), "version 2"),
        (b"\x01\x00" + bytes(15), "sketch has 17 bytes"),
        (b"\x01\x00" + bytes(24), "sketch has 26 bytes"),
        (b"\x01\x7f" + bytes(16), "exponent 127"),
    ],
)
def test_malformed_sketches_are_refused_with_a_reason(aux: bytes, message: str) -> None:
    with pytest.raises(SketchError, match=message):
        decode_sketch(aux, 20)


def test_a_sketch_for_another_length_is_refused_when_compared() -> None:
    sketch = Sketch(exp=0, residues=np.zeros((1, PROJECTIONS), dtype=np.uint8))
    with pytest.raises(SketchError, match="blocks"):
        deviations(sketch, hidden(40), 0)
