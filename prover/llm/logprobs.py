"""Log-probabilities of generated tokens, from the distribution the node sampled from.

OpenAI's ``logprobs`` and ``top_logprobs`` report, per generated token, its
log-probability and the most likely alternatives. Assay reports them from
the distribution the job's sampler drew from — the node's own logits at the
job's temperature, restricted to the tokens top-k and top-p keep and
renormalised (vLLM calls this processed log-probabilities) — so they are
the probabilities the committed tokens were actually drawn with. A greedy
job (``T = 0``) draws from nothing; its log-probabilities are the model's
plain ``log_softmax`` (vLLM's raw log-probabilities). Tokens outside the kept
set have log-probability ``-inf`` and are never listed among the top ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prover.llm.sampler import PPM, SamplingParams, kept_mask

MAX_TOP_LOGPROBS = 20
"""OpenAI's limit on ``top_logprobs``."""


@dataclass(frozen=True)
class TokenLogprobs:
    """One generated token's log-probability and the ``top`` most likely ``(id, logprob)``."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...]


def sampled_log_distribution(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Log-probabilities ``[..., V]`` (float64) of the distribution a job samples from."""
    logits = logits.to(torch.float64)
    if params.greedy:
        return torch.log_softmax(logits, dim=-1)
    scaled = logits / params.temperature
    if params.top_k > 0 or params.top_p_ppm < PPM:
        flat = logits.reshape(-1, logits.shape[-1])
        rows = flat.shape[0]
        keep = kept_mask(flat, torch.full((rows,), params.temperature, dtype=torch.float64),
                         torch.full((rows,), params.top_k, dtype=torch.int64),
                         torch.full((rows,), params.top_p, dtype=torch.float64))
        scaled = scaled.masked_fill(~keep.reshape(logits.shape), float("-inf"))
    return torch.log_softmax(scaled, dim=-1)


def token_logprobs(logits: torch.Tensor, token: int, params: SamplingParams, top: int
                   ) -> TokenLogprobs:
    """The log-probability of ``token`` under logits ``[V]`` and the ``top`` likeliest tokens."""
    if not 0 <= top <= MAX_TOP_LOGPROBS:
        raise ValueError(f"top_logprobs must be 0..{MAX_TOP_LOGPROBS}, got {top}")
    log_p = sampled_log_distribution(logits, params)
    best = torch.topk(log_p, min(top, log_p.numel())) if top else None
    listed = () if best is None else tuple(
        (int(i), float(v)) for v, i in zip(best.values, best.indices, strict=True)
        if v > float("-inf"))
    return TokenLogprobs(token=token, logprob=float(log_p[token]), top=listed)
