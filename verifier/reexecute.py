"""Re-execution and verdicts for the ``exact`` mode.

A validator holds the job request (recorded on the ledger with the
commitment), re-runs it with the prover's own deterministic runtime and
compares output hashes. The verdict is three-valued: VALID when the bits
match, FRAUD when the node's signed commitment cannot be right, INCONCLUSIVE
when this validator could not decide (model not held, the run failed) —
which never slashes anyone. Commitments in the ``llm`` mode are judged by
:func:`verifier.llm.verify_generation` (:class:`verifier.validator.Validator`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from torch import nn

from protocol.codec import Tensor
from protocol.messages import Commitment, JobRequest, Verdict
from prover.node import tensor_hash
from prover.runtime import DeterministicRuntime


@dataclass(frozen=True)
class Check:
    verdict: Verdict
    reason: str
    observed_hash: bytes  # the output hash the validator computed; b"" when it computed none
    seconds: float  # wall time spent re-executing
    on_record: bool = False
    """FRAUD on the node's record (``RECORD`` evidence), not on the job alone."""


def check_exact(
    request: JobRequest,
    commitment: Commitment,
    model: nn.Module | None,
    runtime: DeterministicRuntime,
) -> Check:
    """Re-execute ``request`` and judge ``commitment`` against the result."""
    if commitment.job_id != request.job_id:
        return Check(Verdict.INCONCLUSIVE, "commitment is for another job", b"", 0.0)
    if commitment.model_id != request.model_id:
        return Check(Verdict.FRAUD, "commitment names a model the client did not ask for", b"", 0.0)
    if commitment.input_hash != tensor_hash(request.input):
        return Check(Verdict.FRAUD, "commitment's input hash is not the request's input", b"", 0.0)
    if model is None:
        return Check(Verdict.INCONCLUSIVE, "validator does not hold this model", b"", 0.0)
    started = time.perf_counter()
    try:
        output = Tensor.from_torch(runtime.run(model, request.input.to_torch()))
    except (ValueError, RuntimeError) as exc:
        return Check(
            Verdict.INCONCLUSIVE, f"re-execution failed: {exc}", b"", time.perf_counter() - started
        )
    seconds = time.perf_counter() - started
    observed = tensor_hash(output)
    if observed == commitment.output_hash:
        return Check(Verdict.VALID, "output hash matches re-execution", observed, seconds)
    return Check(Verdict.FRAUD, "output hash differs from re-execution", observed, seconds)
