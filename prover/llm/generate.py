"""Whole-job generation on the node, and the verifier's teacher-forced prefill.

:func:`generate` runs a set of jobs to the end in one :class:`~prover.llm.engine.DecodeBatch`
(all joining at once, left-padded, KV cache): what a node does for a batch of
requests, and what calibration and the tests run as an honest node. A node
serving requests as they come uses the batch directly, joining and leaving
at every step. :func:`prefill` is the verifier's one pass over prompt and
output. Either may use transformers' ``eager`` or ``sdpa`` attention, any
thread count and either dtype; the verifier's tolerances absorb the
difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from prover.llm.engine import DecodeBatch, Generated
from prover.llm.job import LLMJob
from prover.llm.model import LLM, GenerationError, llm_torch


@dataclass(frozen=True)
class Prefill:
    """The verifier's view: logits ``[n, V]`` (float64) and hidden states ``[n, d]``."""

    logits: torch.Tensor
    hidden: torch.Tensor


def generate(
    llm: LLM,
    prompts: Sequence[torch.Tensor],
    jobs: Sequence[LLMJob],
    attention: str = "sdpa",
    threads: int = 1,
) -> list[Generated]:
    """Generate for a batch of jobs of one dtype, all joining at once."""
    if not prompts or len(prompts) != len(jobs):
        raise GenerationError("generate needs one job per prompt, at least one")
    dtypes = {job.dtype for job in jobs}
    if len(dtypes) != 1:
        raise GenerationError(f"one batch runs one dtype, got {sorted(dtypes)}")
    batch = DecodeBatch(llm, jobs[0].dtype, attention=attention, threads=threads)
    batch.join([(i, prompt, job) for i, (prompt, job) in enumerate(zip(prompts, jobs,
                                                                        strict=True))])
    while len(batch):
        batch.step()
    return [batch.pop(i) for i in range(len(jobs))]


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
    ids = torch.cat([prompt, tokens[:-1]])[None, :].to(llm.device)  # [1, P + n - 1]
    with llm_torch(threads, model, attention):
        h = model.base_model(input_ids=ids, use_cache=False).last_hidden_state[0]
        h = h[prompt.numel() - 1:]  # [n, d]
        logits = llm.logits(model, h).cpu()
    return Prefill(logits=logits, hidden=h.cpu().clone())
