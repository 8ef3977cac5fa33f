"""A sampler whose randomness any verifier can regenerate, on any hardware.

Sampling is Gumbel-max: the token at generated position ``i`` is
``argmax_v (logit_v + T · g[i, v])`` over the tokens that survive top-k and
top-p, which draws exactly from ``softmax(logits / T)`` restricted to them
(Gumbel 1954; the "Gumbel-max trick", Maddison et al. 2014). Greedy decoding
is ``T = 0``. The noise ``g[i, v]`` is a pure function of (job seed, i, v):
a counter-mode hash RNG in the style of Random123 (Salmon et al., SC 2011)
built from the SplitMix64 finaliser (Steele, Lea and Flood, OOPSLA 2014),
computed in 64-bit integer arithmetic, which is exact on every machine. A
verifier regenerates the same noise for every position at once and checks
each committed token against its own logits, as Token-DiFR and Gonka do.

Writing the choice in logit units (``logit + T · g`` rather than
``logit / T + g``) makes an honest node's disagreement with a verifier a
difference of logits, which is what floating-point variation perturbs; the
verifier's margin is calibrated in those units.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

NOISE_DOMAIN = b"assay/llm/sampler/v1"
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_TWO_POW_MINUS_53 = 2.0**-53
MAX_POSITIONS = 2**32
MAX_VOCAB = 2**32
PPM = 1_000_000
MILLI = 1_000


@dataclass(frozen=True)
class SamplingParams:
    """What the job pins about sampling, as the integers a ``JobRequest`` carries.

    ``temperature_milli`` is T × 1000 (0 = greedy), ``top_k`` 0 means off,
    ``top_p_ppm`` is p × 10⁶ (10⁶ = off).
    """

    seed: int
    temperature_milli: int = MILLI
    top_k: int = 0
    top_p_ppm: int = PPM

    def __post_init__(self) -> None:
        if not 0 <= self.seed < 2**64:
            raise ValueError(f"seed must be an unsigned 64-bit integer, got {self.seed}")
        if not 0 <= self.temperature_milli <= 100 * MILLI:
            raise ValueError(f"temperature_milli must be 0..100000, got {self.temperature_milli}")
        if self.top_k < 0:
            raise ValueError(f"top_k must not be negative, got {self.top_k}")
        if not 0 < self.top_p_ppm <= PPM:
            raise ValueError(f"top_p_ppm must be 1..{PPM}, got {self.top_p_ppm}")

    @property
    def temperature(self) -> float:
        return self.temperature_milli / MILLI

    @property
    def top_p(self) -> float:
        return self.top_p_ppm / PPM

    @property
    def greedy(self) -> bool:
        return self.temperature_milli == 0


def noise_key(seed: int) -> tuple[np.uint64, np.uint64]:
    """Two 64-bit keys for the counter RNG, from SHA-256 of the domain tag and the job seed."""
    digest = hashlib.sha256(NOISE_DOMAIN + seed.to_bytes(8, "big")).digest()
    return (
        np.uint64(int.from_bytes(digest[:8], "big")),
        np.uint64(int.from_bytes(digest[8:16], "big")),
    )


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser, in place: a bijection of 64-bit words with full avalanche."""
    tmp = np.right_shift(z, np.uint64(30))
    z ^= tmp
    z *= _MIX1
    np.right_shift(z, np.uint64(27), out=tmp)
    z ^= tmp
    z *= _MIX2
    np.right_shift(z, np.uint64(31), out=tmp)
    z ^= tmp
    return z


def _finish(words: np.ndarray, seed: int) -> np.ndarray:
    """``mix(mix(counter ⊕ k0) + k1·φ)`` in place, given ``counter ⊕ k0`` (the words' start)."""
    _, k1 = noise_key(seed)
    offset = np.uint64((int(k1) * int(_GOLDEN)) & int(_M64))
    with np.errstate(over="ignore"):
        _mix64(words)
        words += offset
        return _mix64(words)


def _gumbel(words: np.ndarray) -> np.ndarray:
    """Standard Gumbel ``−log(−log u)`` from hash words, ``u`` their top 53 bits centred."""
    words >>= np.uint64(11)
    u = words.astype(np.float64)
    u += 0.5
    u *= _TWO_POW_MINUS_53
    np.log(u, out=u)
    np.negative(u, out=u)
    np.log(u, out=u)
    np.negative(u, out=u)
    return u


def _check_vocab(vocab: int) -> None:
    if vocab <= 0 or vocab > MAX_VOCAB:
        raise ValueError(f"vocabulary size must be 1..{MAX_VOCAB}, got {vocab}")


def hash_words(seed: int, positions: np.ndarray, vocab: int) -> np.ndarray:
    """Keyed 64-bit words ``[len(positions), vocab]``: word (i, v) hashes counter ``i·2³² + v``.

    The word is ``mix(mix(counter ⊕ k0) + k1·φ)`` (φ the golden-ratio constant,
    arithmetic mod 2⁶⁴); it is computed in place, one array for the whole block.
    """
    _check_vocab(vocab)
    pos = np.asarray(positions, dtype=np.uint64)
    if pos.size and int(pos.max()) >= MAX_POSITIONS:
        raise ValueError(f"positions must be below {MAX_POSITIONS}")
    k0, _ = noise_key(seed)
    words = np.empty((pos.size, vocab), dtype=np.uint64)
    # counter ⊕ k0 = ((i·2³²) ⊕ k0) ⊕ v, as v < 2³² fills the counter's low half
    np.bitwise_xor(((pos << np.uint64(32)) ^ k0)[:, None], np.arange(vocab, dtype=np.uint64),
                   out=words)
    return _finish(words, seed)


def uniforms(seed: int, positions: np.ndarray, vocab: int) -> np.ndarray:
    """Uniform float64 in (0, 1): the top 53 bits of each word, centred in their cell."""
    words = hash_words(seed, positions, vocab)
    words >>= np.uint64(11)
    u = words.astype(np.float64)
    u += 0.5
    u *= _TWO_POW_MINUS_53
    return u


BLOCK_WORDS = 1 << 17
"""Words hashed at a time into a noise matrix: 1 MB, so each pass of the hash over a block stays
in the core's cache instead of streaming the whole matrix through memory nine times (the
same values, about three times faster for a 49k vocabulary)."""


def gumbel_rows(seed: int, positions: np.ndarray, vocab: int) -> torch.Tensor:
    """Standard Gumbel noise ``−log(−log u)`` ``[len(positions), vocab]`` (float64) at the
    given positions, hashed a block of rows at a time."""
    _check_vocab(vocab)
    pos = np.asarray(positions, dtype=np.uint64)
    out = np.empty((pos.size, vocab), dtype=np.float64)
    step = max(1, BLOCK_WORDS // vocab)
    for at in range(0, pos.size, step):
        out[at : at + step] = _gumbel(hash_words(seed, pos[at : at + step], vocab))
    return torch.from_numpy(out)


def gumbel_noise(seed: int, n_positions: int, vocab: int, start: int = 0) -> torch.Tensor:
    """Standard Gumbel noise ``−log(−log u)`` ``[n_positions, vocab]`` (float64)."""
    return gumbel_rows(seed, np.arange(start, start + n_positions, dtype=np.uint64), vocab)


def gumbel_at(seed: int, positions: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``gumbel_noise(seed, …)[positions[i], ids[i, j]]`` ``[n, m]`` without the rest of the rows:
    the same words, so the same values, computed only where a check looks."""
    pos = positions.numpy().astype(np.uint64)
    token = ids.numpy().astype(np.uint64)
    if pos.size and int(pos.max()) >= MAX_POSITIONS:
        raise ValueError(f"positions must be below {MAX_POSITIONS}")
    if token.size and (int(ids.min()) < 0 or int(token.max()) >= MAX_VOCAB):
        raise ValueError(f"token ids must be in 0..{MAX_VOCAB - 1}")
    k0, _ = noise_key(seed)
    words = ((pos << np.uint64(32)) ^ k0)[:, None] ^ token
    return torch.from_numpy(_gumbel(_finish(words, seed)))


@dataclass(frozen=True)
class SeededNoise:
    """A job's noise ``g`` ``[n, V]`` as a function of (seed, position, token), evaluated only
    at the entries asked for: a verifier that needs the noise of a few tokens per position
    never hashes the whole vocabulary. ``positions`` are the rows' positions in the job
    (``0..n-1`` when None)."""

    seed: int
    vocab: int
    positions: torch.Tensor | None = None

    def _positions(self, rows: torch.Tensor) -> torch.Tensor:
        return rows if self.positions is None else self.positions[rows]

    def at(self, ids: torch.Tensor) -> torch.Tensor:
        """``g[i, ids[i, j]]`` for ``ids`` ``[n, m]``."""
        return gumbel_at(self.seed, self._positions(torch.arange(ids.shape[0])), ids)

    def rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Whole rows ``g[rows]`` ``[r, V]``."""
        return gumbel_rows(self.seed, self._positions(rows).numpy(), self.vocab)

    def select(self, rows: torch.Tensor) -> SeededNoise:
        """The noise of ``rows`` only, as its own ``[r, V]`` matrix."""
        return SeededNoise(self.seed, self.vocab, self._positions(rows))


def kept_mask(
    logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor
) -> torch.Tensor:
    """Which tokens survive top-k then top-p, per row (``[B, V]`` bool), as a node computes it.

    A token survives top-p when the probability mass ranked strictly above it
    is below p (the smallest prefix whose mass reaches p). Ties are broken by
    the sort, which is stable, so lower token ids rank first.
    """
    vocab = logits.shape[-1]
    order = torch.sort(logits, dim=-1, descending=True, stable=True)
    ranks = torch.empty_like(order.indices)
    ranks.scatter_(-1, order.indices, torch.arange(vocab).expand_as(order.indices))
    k = torch.where(top_k > 0, top_k, torch.full_like(top_k, vocab))
    keep = ranks < k[:, None]
    scaled = order.values / temperature.clamp_min(1e-6)[:, None]
    probs = torch.softmax(scaled, dim=-1)
    mass_above_sorted = torch.cumsum(probs, dim=-1) - probs
    mass_above = torch.empty_like(mass_above_sorted)
    mass_above.scatter_(-1, order.indices, mass_above_sorted)
    keep &= (mass_above < top_p[:, None]) | (top_p[:, None] >= 1.0)
    return keep


def choose_tokens(
    logits: torch.Tensor, noise: torch.Tensor, params: list[SamplingParams]
) -> torch.Tensor:
    """One sampling step: ``logits`` and ``noise`` ``[B, V]`` (float64) → token ids ``[B]``.

    The definition; :class:`Sampler` computes the same tokens with the
    per-job work done once per batch instead of once per step.
    """
    temperature = torch.tensor([p.temperature for p in params], dtype=torch.float64)
    scores = logits + temperature[:, None] * noise
    if any(p.top_k > 0 or p.top_p_ppm < PPM for p in params):
        top_k = torch.tensor([p.top_k for p in params], dtype=torch.int64)
        top_p = torch.tensor([p.top_p for p in params], dtype=torch.float64)
        keep = kept_mask(logits, temperature, top_k, top_p)
        scores = scores.masked_fill(~keep, float("-inf"))
    return torch.argmax(scores, dim=-1)


class NoiseStream:
    """One job's scaled noise ``T·g[i]``, generated ``CHUNK`` steps at a time as it is needed.

    Row ``i`` is exactly ``T · gumbel_noise(seed, …)[i]``: what :func:`choose_tokens`
    adds at generated position ``i``. Greedy jobs draw no noise (``0·g`` adds zero).
    Generating ahead keeps a running job's memory at ``CHUNK × V`` values however long
    it runs.
    """

    CHUNK = 16

    def __init__(self, params: SamplingParams, vocab: int) -> None:
        self.params = params
        self.vocab = vocab
        self._start = -1
        self._rows = torch.zeros((0, vocab), dtype=torch.float64)

    def scaled(self, step: int) -> torch.Tensor:
        """``T·g`` at generated position ``step``, float64 ``[V]``."""
        if self.params.greedy:
            return torch.zeros(self.vocab, dtype=torch.float64)
        if not self._start <= step < self._start + self._rows.shape[0]:
            self._start = step - step % self.CHUNK
            self._rows = gumbel_noise(self.params.seed, self.CHUNK, self.vocab,
                                      start=self._start).mul_(self.params.temperature)
        return self._rows[step - self._start]


def choose_scaled(logits: torch.Tensor, scaled_noise: torch.Tensor,
                  params: Sequence[SamplingParams]) -> torch.Tensor:
    """:func:`choose_tokens` with the noise already multiplied by each job's temperature."""
    scores = logits + scaled_noise
    if any(p.top_k > 0 or p.top_p_ppm < PPM for p in params):
        temperature = torch.tensor([p.temperature for p in params], dtype=torch.float64)
        top_k = torch.tensor([p.top_k for p in params], dtype=torch.int64)
        top_p = torch.tensor([p.top_p for p in params], dtype=torch.float64)
        keep = kept_mask(logits, temperature, top_k, top_p)
        scores = scores.masked_fill(~keep, float("-inf"))
    return torch.argmax(scores, dim=-1)
