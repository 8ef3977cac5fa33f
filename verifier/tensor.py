"""Judging ``tensor``-mode commitments: re-execute, compare within calibrated tolerances.

The node's commitment carries its output and a sketch of its last hidden
state (:mod:`prover.tensor`). The validator re-executes the job alone and
measures two relative distances, ``‖committed − mine‖₂ / ‖mine‖₂``, one for
the output and one for the sketch. Each is divided by its tolerance ``τ``,
which ``assay calibrate`` set at ``MARGIN`` × the worst honest distance it
measured (threads, ISA paths, batch sizes and rows, and a floor per dtype for
what was not measured; :mod:`verifier.tensor_calibration`). The larger ratio
is the job's **score**:

- score ≤ 1: VALID — within twice the worst honest variation;
- 1 < score ≤ ``FRAUD_SCORE``: INCONCLUSIVE — further than any honest run
  measured, but not far enough to slash on;
- score > ``FRAUD_SCORE``: FRAUD.

A commitment that is malformed for the mode (aux that does not decode, an
output that is not the one it hashes, the wrong shape, non-finite values,
a sketch of the wrong length) is FRAUD: the node signed it, and no honest
node produces it. A validator that lacks the model or its tolerances, or
whose own run fails, says INCONCLUSIVE.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from protocol.messages import Commitment, JobRequest, Verdict
from prover.node import tensor_hash
from prover.runtime import JobInputError
from prover.tensor import TensorAuxError, TensorJobResult, TensorModel, decode_aux, run_tensor_jobs

FRAUD_SCORE = 2.0
REGISTRY_KEY = "tensor"


@dataclass(frozen=True)
class Comparison:
    output_distance: float
    sketch_distance: float
    score: float  # max of the two distances over their tolerances
    verdict: Verdict


def relative_distance(committed: torch.Tensor, mine: torch.Tensor) -> float:
    """``‖committed − mine‖₂ / ‖mine‖₂`` in float64 (``inf`` for non-finite committed values)."""
    a, b = committed.to(torch.float64).reshape(-1), mine.to(torch.float64).reshape(-1)
    if not bool(torch.isfinite(a).all()):
        return math.inf
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def compare(committed: TensorJobResult, mine: TensorJobResult,
            tolerances: Mapping[str, Any]) -> Comparison:
    """Score the committed output and sketch against the validator's own run."""
    d_out = relative_distance(committed.output.to_torch(), mine.output.to_torch())
    d_sketch = relative_distance(committed.sketch.to_torch(), mine.sketch.to_torch())
    score = max(d_out / float(tolerances["output_tau"]), d_sketch / float(tolerances["sketch_tau"]))
    if score <= 1.0:
        verdict = Verdict.VALID
    elif score <= FRAUD_SCORE:
        verdict = Verdict.INCONCLUSIVE
    else:
        verdict = Verdict.FRAUD
    return Comparison(d_out, d_sketch, score, verdict)


@dataclass(frozen=True)
class TensorCheck:
    verdict: Verdict
    reason: str
    seconds: float
    comparison: Comparison | None = None


def check_tensor(request: JobRequest, commitment: Commitment, model: TensorModel | None,
                 threads: int = 1) -> TensorCheck:
    """Re-execute ``request`` alone and judge the tensor-mode ``commitment``."""
    if commitment.job_id != request.job_id:
        return TensorCheck(Verdict.INCONCLUSIVE, "commitment is for another job", 0.0)
    if commitment.model_id != request.model_id:
        return TensorCheck(Verdict.FRAUD, "commitment names a model the client did not ask for",
                           0.0)
    if commitment.input_hash != tensor_hash(request.input):
        return TensorCheck(Verdict.FRAUD, "commitment's input hash is not the request's input",
                           0.0)
    try:
        committed = decode_aux(commitment.aux)
    except TensorAuxError as exc:
        return TensorCheck(Verdict.FRAUD, str(exc), 0.0)
    if tensor_hash(committed.output) != commitment.output_hash:
        return TensorCheck(
            Verdict.FRAUD, "the output in the commitment's aux is not the output it hashes", 0.0
        )
    if model is None:
        return TensorCheck(Verdict.INCONCLUSIVE, "validator does not hold this model", 0.0)
    if model.tolerances is None:
        return TensorCheck(
            Verdict.INCONCLUSIVE, "validator has no calibrated tolerances for this model", 0.0
        )
    started = time.perf_counter()
    try:
        mine = run_tensor_jobs(model, [request.input.to_torch()], [request.job_id],
                               threads=threads)[0]
    except (JobInputError, ValueError, RuntimeError) as exc:
        return TensorCheck(Verdict.INCONCLUSIVE, f"re-execution failed: {exc}",
                           time.perf_counter() - started)
    seconds = time.perf_counter() - started
    if committed.output.shape != mine.output.shape:
        return TensorCheck(
            Verdict.FRAUD,
            f"the committed output has shape {list(committed.output.shape)}; the model gives "
            f"{list(mine.output.shape)}",
            seconds,
        )
    result = compare(committed, mine, model.tolerances)
    reason = (
        f"score {result.score:.3g} (output {result.output_distance:.3g} of tolerance "
        f"{float(model.tolerances['output_tau']):.3g}, sketch {result.sketch_distance:.3g} of "
        f"{float(model.tolerances['sketch_tau']):.3g}; fraud above {FRAUD_SCORE:g})"
    )
    return TensorCheck(result.verdict, reason, seconds, result)
