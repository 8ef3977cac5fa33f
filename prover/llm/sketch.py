"""An 8-byte-per-16-tokens sketch of the final hidden states.

What the sketch must do: bind the commitment to the pinned model's hidden
states finely enough that any change to the model, its precision or the
context shows, while honest floating-point variation does not. TOPLOC
(arXiv 2501.16007) stores the top-128 values of every 32 tokens' hidden
states as a polynomial, ~8 B/token; Activation-DiFR (arXiv 2511.20621)
stores a seeded random projection per token. Both spend most of their bytes
on the high-order digits of each value, which the verifier recomputes anyway.

This sketch keeps only what the verifier cannot recompute:

1. Project each generated position's final hidden state ``h`` (after the
   final norm, the state the logits come from) on ``PROJECTIONS`` seeded
   Rademacher directions ``r ∈ {±1}^d`` (derived from the job seed with the
   sampler's hash RNG, so integer-exact everywhere), and sum the projections
   over blocks of ``BLOCK`` positions: ``s[b, k] = Σ_{t∈b} ⟨h_t, r_k⟩``.
   Summing over a block keeps the ratio of a cheat's deviation to honest
   noise (both add up over the block) while dividing the bytes by ``BLOCK``.
2. Quantise with the step ``2^exp`` calibrated for the model and dtype (about
   the typical honest deviation), and commit only the low ``BITS`` bits of
   each quantised value: a residue mod 256. The verifier takes the value
   congruent to the residue that lies nearest its own; the distance between
   the two is the deviation in quanta, exact while it is under 128 steps.
   Two statistics are checked (:mod:`verifier.llm`): the largest deviation,
   which catches a gross change in the first block it touches (a change
   beyond 128 steps leaves a uniform residue, which passes a tolerance of
   ``t`` quanta with probability ``2t / 256`` per value, ``(2t/256)^8`` per
   block), and the root-mean-square deviation over the job, which catches
   a small systematic change — int8 weights in a bfloat16 job — that no
   single value shows.

Layout of ``Commitment.aux`` (``SKETCH_VERSION`` 1): one byte version, one
signed byte ``exp``, then ``PROJECTIONS`` bytes per block in block order —
``2 + 8·⌈n/16⌉`` bytes for ``n`` generated tokens (0.5 B/token plus two).
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass

import numpy as np
import torch

from prover.llm.sampler import hash_words

SKETCH_VERSION = 1
BLOCK = 16
PROJECTIONS = 8
BITS = 8
MODULUS = 1 << BITS
HEADER = struct.Struct(">Bb")
MIN_EXP = -60
MAX_EXP = 40
PROJECTION_DOMAIN = b"assay/llm/sketch/v1"


class SketchError(ValueError):
    """A sketch that cannot be decoded for this job; the message says what is wrong."""


@dataclass(frozen=True)
class Sketch:
    """A decoded sketch: the quantisation exponent and the residues ``[blocks, PROJECTIONS]``."""

    exp: int
    residues: np.ndarray  # uint8 [n_blocks, PROJECTIONS]

    def encode(self) -> bytes:
        return HEADER.pack(SKETCH_VERSION, self.exp) + self.residues.astype(np.uint8).tobytes()


def n_blocks(n_tokens: int) -> int:
    return math.ceil(n_tokens / BLOCK)


def sketch_bytes(n_tokens: int) -> int:
    """Length of ``Commitment.aux`` for ``n_tokens`` generated tokens."""
    return HEADER.size + n_blocks(n_tokens) * PROJECTIONS


def projection_seed(job_seed: int) -> int:
    digest = hashlib.sha256(PROJECTION_DOMAIN + job_seed.to_bytes(8, "big")).digest()
    return int.from_bytes(digest[:8], "big")


def directions(job_seed: int, hidden_size: int) -> torch.Tensor:
    """The Rademacher directions ``[hidden, PROJECTIONS]`` (float64 ±1) for this job."""
    words = hash_words(projection_seed(job_seed), np.arange(PROJECTIONS), hidden_size)
    signs = 1.0 - 2.0 * (words >> np.uint64(63)).astype(np.float64)  # [PROJECTIONS, hidden]
    return torch.from_numpy(np.ascontiguousarray(signs.T))


def block_sums(rows: torch.Tensor) -> torch.Tensor:
    """Sums ``[blocks, w]`` (float64) of rows ``[n, w]`` over each block of ``BLOCK`` positions,
    the last block short."""
    n, w = rows.shape
    padded = torch.zeros((n_blocks(n) * BLOCK, w), dtype=torch.float64)
    padded[:n] = rows
    return padded.view(-1, BLOCK, w).sum(dim=1)


def block_values(hidden: torch.Tensor, job_seed: int) -> torch.Tensor:
    """Exact-ish block sums ``[blocks, PROJECTIONS]`` (float64) of hidden states ``[n, d]``."""
    d = hidden.shape[1]
    return block_sums(hidden.to(torch.float64) @ directions(job_seed, d))  # [n, d] @ [d, K]


def make_sketch(hidden: torch.Tensor, job_seed: int, exp: int) -> Sketch:
    """The node's sketch of its hidden states ``[n, d]`` at quantisation step ``2^exp``."""
    if not MIN_EXP <= exp <= MAX_EXP:
        raise SketchError(f"sketch exponent {exp} is outside {MIN_EXP}..{MAX_EXP}")
    quanta = torch.floor(block_values(hidden, job_seed) / 2.0**exp + 0.5)
    residues = torch.remainder(quanta, MODULUS).to(torch.int64).numpy().astype(np.uint8)
    return Sketch(exp=exp, residues=residues)


def decode_sketch(aux: bytes, n_tokens: int) -> Sketch:
    """Parse ``Commitment.aux`` for ``n_tokens`` tokens, refusing any other length or version."""
    if len(aux) < HEADER.size:
        raise SketchError(f"sketch has {len(aux)} bytes, less than its {HEADER.size}-byte header")
    version, exp = HEADER.unpack_from(aux)
    if version != SKETCH_VERSION:
        raise SketchError(f"sketch version {version} is not {SKETCH_VERSION}")
    expected = sketch_bytes(n_tokens)
    if len(aux) != expected:
        raise SketchError(
            f"sketch has {len(aux)} bytes; {n_tokens} tokens need {expected} "
            f"({PROJECTIONS} per block of {BLOCK} plus {HEADER.size})"
        )
    if not MIN_EXP <= exp <= MAX_EXP:
        raise SketchError(f"sketch exponent {exp} is outside {MIN_EXP}..{MAX_EXP}")
    residues = np.frombuffer(aux, dtype=np.uint8, offset=HEADER.size).reshape(-1, PROJECTIONS)
    return Sketch(exp=exp, residues=residues.copy())


def deviations(sketch: Sketch, hidden: torch.Tensor, job_seed: int) -> torch.Tensor:
    """Signed distance in quanta ``[blocks, K]`` from the verifier's values to the committed ones.

    The committed value is taken to be the one congruent to its residue that
    lies nearest the verifier's own (unrounded) value.
    """
    mine = block_values(hidden, job_seed) / 2.0**sketch.exp
    committed = torch.from_numpy(sketch.residues.astype(np.float64))
    if committed.shape != mine.shape:
        raise SketchError(
            f"sketch has {committed.shape[0]} blocks; the output needs {mine.shape[0]}"
        )
    return torch.remainder(committed - mine + MODULUS / 2, MODULUS) - MODULUS / 2
