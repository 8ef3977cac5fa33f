"""Generation on the node (KV cache, optionally batched) and the verifier's prefill.

Both run the model's decoder (``base_model``: the stack up to and including
the final norm) and its output head separately, so the final hidden states the
sketch is made of are exactly the ones the logits come from. Precision and
the attention kernel are per call: an :class:`LLM` keeps one copy of the
module per dtype, and ``attention`` selects transformers' ``eager`` or
``sdpa`` code path — an honest node may use either, batch with padding, and
any thread count; the verifier's tolerances absorb the difference.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache, PreTrainedModel

from prover.llm.job import DTYPES, LLMJob
from prover.llm.sampler import Sampler

ATTENTION_KINDS = ("eager", "sdpa")
_ONE_RUN_AT_A_TIME = threading.Lock()
"""Thread count and attention choice are process-wide; runs must not interleave."""


class GenerationError(ValueError):
    """A job this model cannot run (prompt too long, token id out of range)."""


@dataclass(frozen=True)
class Generated:
    """One job's result: tokens ``[n]`` and the final hidden states that chose them ``[n, d]``."""

    tokens: torch.Tensor  # int64 [n]
    hidden: torch.Tensor  # the run dtype, [n, d]


@dataclass(frozen=True)
class Prefill:
    """The verifier's view: logits ``[n, V]`` (float64) and hidden states ``[n, d]``."""

    logits: torch.Tensor
    hidden: torch.Tensor


class LLM:
    """A causal LM and its copies per dtype, created on first use."""

    def __init__(self, module: nn.Module) -> None:
        if not isinstance(module, PreTrainedModel):
            raise TypeError("the llm mode runs transformers causal LMs")
        self.module = module.to(torch.float32).eval()
        self._variants: dict[str, PreTrainedModel] = {"float32": self.module}

    @property
    def vocab_size(self) -> int:
        return int(self.module.config.vocab_size)

    @property
    def hidden_size(self) -> int:
        return int(self.module.config.hidden_size)

    @property
    def max_positions(self) -> int:
        config = self.module.config
        return int(getattr(config, "n_positions", None) or config.max_position_embeddings)

    def variant(self, dtype: str) -> PreTrainedModel:
        if dtype not in self._variants:
            self._variants[dtype] = copy.deepcopy(self.module).to(DTYPES[dtype]).eval()
        return self._variants[dtype]

    def check_fits(self, prompt: torch.Tensor, n_new: int) -> None:
        if prompt.dim() != 1 or prompt.numel() == 0 or prompt.dtype != torch.int64:
            raise GenerationError(f"a prompt is int64 token ids [P], P ≥ 1; got {prompt.shape}")
        if int(prompt.min()) < 0 or int(prompt.max()) >= self.vocab_size:
            raise GenerationError(f"prompt token ids must be in 0..{self.vocab_size - 1}")
        if prompt.numel() + n_new > self.max_positions:
            raise GenerationError(
                f"prompt of {prompt.numel()} plus {n_new} new tokens exceeds the model's "
                f"{self.max_positions} positions"
            )


@contextmanager
def llm_torch(threads: int, model: PreTrainedModel, attention: str) -> Iterator[None]:
    """Thread count and attention kernel for one run; the previous settings come back after."""
    if attention not in ATTENTION_KINDS:
        raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {attention!r}")
    with _ONE_RUN_AT_A_TIME:
        saved_threads = torch.get_num_threads()
        saved_attention = model.config._attn_implementation
        torch.set_num_threads(threads)
        model.set_attn_implementation(attention)
        try:
            with torch.inference_mode():
                yield
        finally:
            model.set_attn_implementation(saved_attention)
            torch.set_num_threads(saved_threads)


def generate(
    llm: LLM,
    prompts: Sequence[torch.Tensor],
    jobs: Sequence[LLMJob],
    attention: str = "sdpa",
    threads: int = 1,
) -> list[Generated]:
    """Generate for a batch of jobs of one dtype, left-padded, with a KV cache."""
    if not prompts or len(prompts) != len(jobs):
        raise GenerationError("generate needs one job per prompt, at least one")
    dtypes = {job.dtype for job in jobs}
    if len(dtypes) != 1:
        raise GenerationError(f"one batch runs one dtype, got {sorted(dtypes)}")
    for prompt, job in zip(prompts, jobs, strict=True):
        llm.check_fits(prompt, job.max_new_tokens)
    model = llm.variant(jobs[0].dtype)
    batch, steps = len(prompts), max(job.max_new_tokens for job in jobs)
    width = max(p.numel() for p in prompts)
    ids = torch.zeros((batch, width), dtype=torch.int64)
    mask = torch.zeros((batch, width), dtype=torch.int64)
    for row, prompt in enumerate(prompts):
        ids[row, width - prompt.numel():] = prompt
        mask[row, width - prompt.numel():] = 1
    sampler = Sampler([job.sampling for job in jobs], [job.max_new_tokens for job in jobs],
                      llm.vocab_size)
    head = model.get_output_embeddings()
    tokens = torch.zeros((batch, steps), dtype=torch.int64)
    hidden: list[torch.Tensor] = []
    with llm_torch(threads, model, attention):
        positions = (mask.cumsum(-1) - 1).clamp_min(0)  # [B, W]
        cache = DynamicCache(config=model.config)
        out = model.base_model(
            input_ids=ids, attention_mask=mask, position_ids=positions,
            past_key_values=cache, use_cache=True,
        )
        for step in range(steps):
            h = out.last_hidden_state[:, -1]  # [B, d]
            hidden.append(h)
            logits = head(h).to(torch.float64)  # [B, V]
            chosen = sampler.choose(logits, step)  # [B]
            tokens[:, step] = chosen
            if step + 1 == steps:
                break
            mask = torch.cat([mask, torch.ones((batch, 1), dtype=torch.int64)], dim=1)
            positions = positions[:, -1:] + 1
            out = model.base_model(
                input_ids=chosen[:, None], attention_mask=mask, position_ids=positions,
                past_key_values=out.past_key_values, use_cache=True,
            )
    states = torch.stack(hidden, dim=1)  # [B, steps, d]
    results = []
    for row, job in enumerate(jobs):
        n = _length(tokens[row, : job.max_new_tokens], job.stop_token)
        results.append(Generated(tokens=tokens[row, :n].clone(), hidden=states[row, :n].clone()))
    return results


def _length(tokens: torch.Tensor, stop_token: int | None) -> int:
    if stop_token is None:
        return int(tokens.numel())
    hits = (tokens == stop_token).nonzero()
    return int(hits[0, 0]) + 1 if hits.numel() else int(tokens.numel())


def prefill(
    llm: LLM,
    prompt: torch.Tensor,
    tokens: torch.Tensor,
    dtype: str,
    attention: str = "eager",
    threads: int = 1,
) -> Prefill:
    """One teacher-forced pass over prompt + tokens[:-1]: the states that chose each token."""
    llm.check_fits(prompt, tokens.numel())
    model = llm.variant(dtype)
    ids = torch.cat([prompt, tokens[:-1]])[None, :]  # [1, P + n - 1]
    with llm_torch(threads, model, attention):
        h = model.base_model(input_ids=ids, use_cache=False).last_hidden_state[0]
        h = h[prompt.numel() - 1:]  # [n, d]
        logits = model.get_output_embeddings()(h).to(torch.float64)
    return Prefill(logits=logits, hidden=h.clone())
