"""The validator's top-k/top-p check selects only the head of the vocabulary; it must decide
exactly what a sort of the whole vocabulary decides."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import torch

from prover.llm.job import MASS_LEVELS
from prover.llm.sampler import SamplingParams, SeededNoise, gumbel_noise
from verifier import llm
from verifier.llm import sampling_gaps, top_p_excess


def _count_at_least(sorted_asc: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    return sorted_asc.shape[-1] - torch.searchsorted(sorted_asc, thresholds, right=False)


def full_sort_gaps(logits: torch.Tensor, noise: torch.Tensor, tokens: torch.Tensor,
                   params: SamplingParams, tol: float, mass_tol: Sequence[float]) -> torch.Tensor:
    """The rule written with one sort of the whole vocabulary per position (the reference)."""
    n, vocab = logits.shape
    rows = torch.arange(n)
    chosen = logits[rows, tokens]
    temperature = params.temperature
    scores = logits + temperature * noise
    ascending = torch.sort(logits, dim=-1).values
    k = params.top_k if 0 < params.top_k < vocab else vocab
    t_possible = _count_at_least(ascending, (chosen + tol)[:, None]).squeeze(1) < k
    certain = _count_at_least(ascending, logits - tol) <= k
    if params.top_p_ppm < 1_000_000:
        probs = torch.softmax(ascending.flip(-1) / temperature, dim=-1)
        cumulative = torch.cumsum(probs, dim=-1)
        per_level = torch.as_tensor(mass_tol, dtype=torch.float64)
        levels = torch.tensor(MASS_LEVELS[:-1], dtype=torch.float64)
        p = params.top_p

        def mass_at_least(thresholds: torch.Tensor) -> torch.Tensor:
            count = _count_at_least(ascending, thresholds)
            index = (count - 1).clamp_min(0)
            return torch.where(count > 0, cumulative.gather(-1, index), 0.0)

        def slack(mass: torch.Tensor) -> torch.Tensor:
            return (per_level[torch.bucketize(mass, levels, right=False)] / temperature
                    ).clamp(max=1.0)

        above_t = mass_at_least((chosen + tol)[:, None]).squeeze(1)
        t_possible &= above_t - slack(above_t) < p
        p_v = torch.softmax(logits / temperature, dim=-1)
        above_v = mass_at_least(logits - tol) - p_v
        certain &= above_v + slack(above_v) < p
    certain |= logits >= (chosen + tol)[:, None]
    best = scores.masked_fill(~certain, float("-inf")).max(dim=-1).values
    gaps = (best - scores[rows, tokens]).clamp_min(0.0)
    return torch.where(t_possible, gaps, torch.full_like(gaps, math.inf))


@pytest.mark.parametrize(("vocab", "spread", "start"), [
    (50, 0.3, llm.HEAD_START), (50, 3.0, llm.HEAD_START), (1500, 0.3, llm.HEAD_START),
    (1500, 3.0, llm.HEAD_START), (300, 0.3, 4)])
def test_head_selection_decides_as_the_full_sort_does(vocab: int, spread: float, start: int,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Also with a first head so short that rows are selected again, level after level."""
    monkeypatch.setattr(llm, "HEAD_START", start)
    g = torch.Generator().manual_seed(vocab + int(10 * spread))
    n = 12
    logits = spread * torch.randn(n, vocab, generator=g, dtype=torch.float64)
    logits[:4, :40] = logits[:4, :1]  # exact ties at the top
    mass_tol = [0.02 * (i + 1) for i in range(len(MASS_LEVELS))]
    for t, k, p in ((1000, 0, 900_000), (700, 40, 1_000_000), (1000, 5, 500_000),
                    (1300, 0, 990_000), (500, 2000, 950_000)):
        params = SamplingParams(seed=vocab, temperature_milli=t, top_k=k, top_p_ppm=p)
        noise = gumbel_noise(params.seed, n, vocab)
        for tol in (1e-6, 0.3):
            heads: llm.HeadCache = {}  # shared by every committed token set and noise draw
            every = top_p_excess(logits, torch.arange(vocab).expand(n, vocab), params, tol)
            # committed tokens: the argmax, near-misses and random ones (some far outside)
            candidates = [torch.argmax(logits + params.temperature * noise, dim=-1),
                          torch.topk(logits, 3, dim=-1).indices[:, 2],
                          torch.randint(0, vocab, (n,), generator=g)]
            for tokens in candidates:
                ours = sampling_gaps(logits, noise, tokens, params, tol, mass_tol)
                reference = full_sort_gaps(logits, noise, tokens, params, tol, mass_tol)
                assert torch.allclose(ours, reference, atol=1e-12, equal_nan=False), (t, k, p)
                # the verifier's noise, made only where the check looks, decides the same
                seeded = SeededNoise(params.seed, vocab)
                assert torch.equal(sampling_gaps(logits, seeded, tokens, params, tol, mass_tol),
                                   ours)
                # heads selected for other tokens and other noise decide the same
                assert torch.equal(sampling_gaps(logits, noise, tokens, params, tol, mass_tol,
                                                 heads), ours)
                redrawn = gumbel_noise(params.seed + 1, n, vocab)
                assert torch.equal(
                    sampling_gaps(logits, redrawn, tokens, params, tol, mass_tol, heads),
                    sampling_gaps(logits, redrawn, tokens, params, tol, mass_tol))
                assert torch.allclose(top_p_excess(logits, tokens, params, tol),
                                      every.gather(-1, tokens[:, None])[:, 0], atol=1e-12)


def test_no_positions_judge_to_no_gaps() -> None:
    """A job with no generated positions has no gaps under any sampling rule: the search for
    a head that settles every row ends at once when there are no rows."""
    logits = torch.zeros((0, 500), dtype=torch.float64)
    tokens = torch.zeros(0, dtype=torch.long)
    for t, k, p in ((1000, 0, 900_000), (700, 40, 1_000_000), (0, 0, 1_000_000)):
        params = SamplingParams(seed=3, temperature_milli=t, top_k=k, top_p_ppm=p)
        gaps = sampling_gaps(logits, SeededNoise(3, 500), tokens, params, 5.0, 0.1)
        assert gaps.shape == (0,)


def test_seeded_noise_is_the_full_noise_at_every_entry() -> None:
    """Entries hashed one by one are bit-for-bit the rows the node generates."""
    vocab, n = 3000, 7
    full = gumbel_noise(42, n, vocab)
    seeded = SeededNoise(42, vocab)
    ids = torch.randint(0, vocab, (n, 50), generator=torch.Generator().manual_seed(1))
    assert torch.equal(seeded.at(ids), full.gather(-1, ids))
    assert torch.equal(seeded.rows(torch.tensor([5, 0, 3])), full[[5, 0, 3]])
    assert torch.equal(gumbel_noise(42, 2, vocab, start=5), full[5:])
