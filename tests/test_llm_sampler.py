"""The seeded sampler: portable noise, reproducible tokens, the right distribution."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prover import zoo
from prover.llm import sampler
from prover.llm.generate import LLM, generate
from prover.llm.job import LLMJob
from prover.llm.sampler import (
    NoiseStream,
    SamplingParams,
    choose_scaled,
    choose_tokens,
    gumbel_noise,
    hash_words,
    kept_mask,
    uniforms,
)

SEEDS = st.integers(min_value=0, max_value=2**64 - 1)


@given(SEEDS, st.integers(min_value=0, max_value=2**20), st.integers(min_value=1, max_value=64))
@settings(max_examples=50, deadline=None)
def test_noise_is_a_pure_function_of_seed_position_and_token(seed: int, start: int, n: int) -> None:
    """Position i's noise does not depend on how many positions are drawn or from where."""
    block = gumbel_noise(seed, n, 16, start=start)
    for i in (0, n - 1):
        assert torch.equal(block[i], gumbel_noise(seed, 1, 16, start=start + i)[0])


def test_noise_hashed_in_blocks_is_the_noise_of_each_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """A matrix hashed a few rows at a time (so each block stays in cache) is bit-for-bit the
    rows hashed one by one, whatever the block size and wherever a block ends."""
    vocab, n = 1000, 23
    rows = torch.stack([gumbel_noise(5, 1, vocab, start=100 + i)[0] for i in range(n)])
    for block in (1, 999, 1000, 3 * vocab + 1, 1 << 17):
        monkeypatch.setattr(sampler, "BLOCK_WORDS", block)
        assert torch.equal(gumbel_noise(5, n, vocab, start=100), rows), block
    with pytest.raises(ValueError, match="vocabulary size"):
        gumbel_noise(5, 0, 0)


def test_noise_has_fixed_known_values() -> None:
    """Integer arithmetic only: these words are the same on every machine, forever."""
    words = hash_words(0, np.array([0, 1], dtype=np.uint64), 2)
    assert [hex(int(w)) for w in words.ravel()] == KNOWN_WORDS


KNOWN_WORDS = [
    "0x776a969620f2b545", "0x206f2de16c12a70a", "0x5de50ee3b2755dba", "0x8cb21c7e0151c8da",
]


def test_different_seeds_give_different_noise() -> None:
    assert not torch.equal(gumbel_noise(1, 4, 256), gumbel_noise(2, 4, 256))


def test_uniforms_are_uniform_chi_square() -> None:
    """200,000 draws in 100 bins: chi-square with 99 degrees of freedom, p > 0.001."""
    u = uniforms(7, np.arange(800, dtype=np.uint64), 250).ravel()
    assert u.min() > 0.0 and u.max() < 1.0
    counts = np.bincount((u * 100).astype(int), minlength=100)
    expected = u.size / 100
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 148.2  # the 0.999 quantile of chi-square(99)
    # neighbouring tokens and positions are uncorrelated
    grid = uniforms(7, np.arange(800, dtype=np.uint64), 250)
    assert abs(np.corrcoef(grid[:, :-1].ravel(), grid[:, 1:].ravel())[0, 1]) < 0.01
    assert abs(np.corrcoef(grid[:-1].ravel(), grid[1:].ravel())[0, 1]) < 0.01


def test_gumbel_max_samples_the_softmax() -> None:
    """Token frequencies over 20,000 positions match softmax(logits / T) (chi-square)."""
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0]], dtype=torch.float64)
    temperature = 0.8
    n = 20_000
    noise = gumbel_noise(11, n, 5)
    params = [SamplingParams(seed=11, temperature_milli=800)]
    scores = logits + temperature * noise
    counts = torch.bincount(scores.argmax(-1), minlength=5).double()
    expected = torch.softmax(logits[0] / temperature, -1) * n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 18.5  # the 0.999 quantile of chi-square(4)
    assert int(choose_tokens(logits, noise[:1], params)) == int(scores[0].argmax())


def test_top_k_and_top_p_keep_the_right_tokens() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]], dtype=torch.float64))
    one = torch.ones(1, dtype=torch.float64)
    keep_k = kept_mask(logits, one, torch.tensor([2]), torch.ones(1, dtype=torch.float64))
    assert keep_k.tolist() == [[True, True, False, False]]
    keep_p = kept_mask(logits, one, torch.tensor([0]), torch.tensor([0.79], dtype=torch.float64))
    assert keep_p.tolist() == [[True, True, False, False]]
    keep_p = kept_mask(logits, one, torch.tensor([0]), torch.tensor([0.81], dtype=torch.float64))
    assert keep_p.tolist() == [[True, True, True, False]]


def test_streamed_noise_chooses_exactly_what_choose_tokens_does() -> None:
    """The node's per-job noise streams, read at each job's own step, are the definition."""
    params = [SamplingParams(seed=3, temperature_milli=0),
              SamplingParams(seed=4, temperature_milli=700, top_k=40),
              SamplingParams(seed=5, temperature_milli=1000, top_p_ppm=900_000),
              SamplingParams(seed=6, temperature_milli=1300)]
    streams = [NoiseStream(p, 256) for p in params]
    offsets = [0, 3, 17, 40]  # jobs that joined at different times, at different positions
    g = torch.Generator().manual_seed(0)
    for step in range(40):
        logits = 3 * torch.randn(4, 256, generator=g, dtype=torch.float64)
        positions = [step + o for o in offsets]
        noise = torch.stack([gumbel_noise(p.seed, 1, 256, start=i)[0]
                             for p, i in zip(params, positions, strict=True)])
        scaled = torch.stack([s.scaled(i) for s, i in zip(streams, positions, strict=True)])
        assert torch.equal(choose_scaled(logits, scaled, params),
                           choose_tokens(logits, noise, params)), step
    assert torch.equal(streams[1].scaled(2), 0.7 * gumbel_noise(4, 1, 256, start=2)[0])


def test_greedy_ignores_the_noise() -> None:
    logits = torch.tensor([[0.1, 3.0, 2.9]], dtype=torch.float64)
    noise = torch.tensor([[30.0, 0.0, 10.0]], dtype=torch.float64)
    assert int(choose_tokens(logits, noise, [SamplingParams(seed=0, temperature_milli=0)])) == 1


@pytest.mark.parametrize(
    "kwargs",
    [{"seed": -1}, {"seed": 2**64}, {"temperature_milli": -1}, {"top_k": -1}, {"top_p_ppm": 0}],
)
def test_sampling_params_are_checked(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        SamplingParams(**{"seed": 0, **kwargs})


def test_same_seed_gives_same_tokens_on_any_thread_count() -> None:
    llm = LLM(zoo.build("llama", 0).module)
    prompt = torch.arange(10, dtype=torch.int64)
    job = LLMJob(24, "float32", SamplingParams(seed=5, temperature_milli=900, top_k=50))
    one = generate(llm, [prompt], [job], threads=1)[0]
    two = generate(llm, [prompt], [job], threads=2, attention="eager")[0]
    assert torch.equal(one.tokens, two.tokens)
    other = generate(llm, [prompt], [LLMJob(24, "float32", SamplingParams(seed=6))])[0]
    assert not torch.equal(one.tokens, other.tokens)
    assert math.isfinite(float(one.hidden.sum()))
