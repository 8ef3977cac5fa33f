"""Run one ``llm`` job and produce what the node signs: the output tokens and the sketch."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from protocol.codec import Tensor
from protocol.messages import JobRequest
from prover.llm.engine import Generated
from prover.llm.generate import generate
from prover.llm.job import Calibration, LLMJob, parse_job
from prover.llm.model import LLM
from prover.llm.sketch import make_sketch


@dataclass(frozen=True)
class LLMOutput:
    output: Tensor  # int64 [1, n]: the generated token ids
    aux: bytes  # the sketch, for Commitment.aux


def prompt_of(request: JobRequest) -> torch.Tensor:
    """The prompt ``[P]`` of a request whose input is int64 ids ``[P]`` or ``[1, P]``."""
    prompt = request.input.to_torch()
    return prompt[0] if prompt.dim() == 2 and prompt.shape[0] == 1 else prompt


def package(generated: Generated, job: LLMJob, calibration: Calibration) -> LLMOutput:
    """Tokens and hidden states → the committed output and sketch."""
    exp = calibration.for_dtype(job.dtype).sketch_exp
    sketch = make_sketch(generated.hidden, job.sampling.seed, exp)
    output = Tensor.from_torch(generated.tokens[None, :].contiguous())
    return LLMOutput(output=output, aux=sketch.encode())


def run_llm_job(
    llm: LLM, request: JobRequest, calibration: Calibration, attention: str = "sdpa",
    threads: int = 1,
) -> LLMOutput:
    """Generate for one request (KV cache, batch of one) and package the result."""
    job = parse_job(request)
    generated = generate(llm, [prompt_of(request)], [job], attention=attention, threads=threads)[0]
    return package(generated, job, calibration)
