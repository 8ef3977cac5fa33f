"""Which check a model gets: a zk proof on every job, or sampled re-execution.

Both modes make cheating a losing bet; they differ in what they cost and
when a job's result counts as checked. From the costs measured for a model
(seconds per job on the node's hardware) and the network's parameters:

    zk latency      = inference + prove + verify      a job is checked once its proof is
    sampled latency = inference + (1 + W) × round     decided by the next beacon round, final
                                                      when its challenge window of W rounds closes
    zk cost         = prove + verify                  compute spent on checking, per job
    sampled cost    = p × re-execution                expected validator compute, per job

the rule, in order:

1. no circuit (not an image model, or more than 2^MAX_LOGROWS rows)  → sampled
2. zk latency > the latency the client accepts                       → sampled: a proof is late
3. sampled latency > the latency the client accepts                  → zk: only a proof is in time
4. zk cost ≤ sampled cost                                            → zk: it is also cheaper
5. otherwise                                                         → sampled: cheaper, in time

With EZKL, proving costs thousands of times the forward pass (bench/zk.py),
so rule 4 rarely fires; zk earns its place through rule 3 — a client who
needs a checked answer sooner than the challenge window closes.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from prover import zoo
from prover.runtime import DeterministicRuntime
from prover.zk import MAX_LOGROWS

ZK = "zk"
SAMPLED = "sampled"
ROUND_SECONDS = 3.0
"""The beacon period: drand quicknet publishes a round every 3 s."""
REFERENCE_LOGROWS = 15
REFERENCE_PROVE_SECONDS = 12.0
"""EZKL 23.0.5 proving time of a 2^15-row circuit on the 2-core development machine
(bench/zk.py); it about doubles with each extra log-row. Used only to estimate
before a model's keys exist; `assay zk setup` measures the real thing."""


@dataclass(frozen=True)
class MeasuredCosts:
    """Seconds per job for one model on one machine; ``prove`` is None when no circuit fits."""

    inference: float
    prove: float | None
    verify: float
    reexecute: float


@dataclass(frozen=True)
class NetworkTerms:
    """What the network and the client set: p, the challenge window and the latency accepted."""

    sample_rate: float
    challenge_window: int
    latency_budget: float
    round_seconds: float = ROUND_SECONDS


@dataclass(frozen=True)
class ModeSuggestion:
    check: str  # ZK or SAMPLED
    reason: str
    zk_latency: float | None
    sampled_latency: float
    zk_cost: float | None
    sampled_cost: float


def estimate_prove_seconds(logrows: int) -> float:
    """A rough proving time for a circuit of 2^logrows rows, before its keys exist."""
    return REFERENCE_PROVE_SECONDS * 2.0 ** (logrows - REFERENCE_LOGROWS)


def is_zk_eligible(kind: str, logrows: int | None) -> bool:
    """Image models whose circuit fits; generating LMs are left to the ``llm`` mode."""
    return kind in zoo.IMAGE_KINDS and logrows is not None and logrows <= MAX_LOGROWS


def choose_check(costs: MeasuredCosts, terms: NetworkTerms) -> ModeSuggestion:
    """Apply the module's rule to one model's measured costs."""
    if not 0.0 < terms.sample_rate <= 1.0:
        raise ValueError(f"sample rate must be in (0, 1], got {terms.sample_rate}")
    sampled_latency = costs.inference + (1 + terms.challenge_window) * terms.round_seconds
    sampled_cost = terms.sample_rate * costs.reexecute
    if costs.prove is None:
        return ModeSuggestion(
            SAMPLED, "no zk circuit fits this model", None, sampled_latency, None, sampled_cost
        )
    zk_latency = costs.inference + costs.prove + costs.verify
    zk_cost = costs.prove + costs.verify

    def suggest(check: str, reason: str) -> ModeSuggestion:
        return ModeSuggestion(check, reason, zk_latency, sampled_latency, zk_cost, sampled_cost)

    budget = terms.latency_budget
    if zk_latency > budget:
        return suggest(
            SAMPLED, f"a proof takes {zk_latency:.3g} s, more than the {budget:.3g} s accepted"
        )
    if sampled_latency > budget:
        return suggest(
            ZK,
            f"sampled jobs are final after {sampled_latency:.3g} s, more than the {budget:.3g} s "
            f"accepted; a proof is checked after {zk_latency:.3g} s",
        )
    if zk_cost <= sampled_cost:
        return suggest(
            ZK, f"proving costs {zk_cost:.3g} s per job, p × re-execution {sampled_cost:.3g} s"
        )
    return suggest(
        SAMPLED,
        f"both are in time; proving costs {zk_cost:.3g} s per job, "
        f"p × re-execution only {sampled_cost:.3g} s",
    )


REFERENCE_VERIFY_SECONDS = 0.03
"""ezkl.verify plus the Poseidon recomputation of a small model's input (bench/zk.py)."""


def circuit_logrows(module: nn.Module, example_input: torch.Tensor) -> int | None:
    """Log2 of the rows the model's zk circuit needs (ezkl's layout, no keys), or None."""
    import json
    import math
    import tempfile

    from prover.zk import CircuitChoice, ZkError, export_onnx, require_ezkl

    try:
        ezkl = require_ezkl()
    except ZkError:
        return None
    with tempfile.TemporaryDirectory(prefix="assay-zk-size-") as tmp:
        onnx, settings = Path(tmp) / "model.onnx", Path(tmp) / "settings.json"
        try:
            export_onnx(module, example_input, onnx)
            ezkl.gen_settings(str(onnx), str(settings), py_run_args=CircuitChoice().run_args())
        except (RuntimeError, ValueError):
            return None
        rows = int(json.loads(settings.read_text(encoding="utf-8"))["num_rows"])
    return max(1, math.ceil(math.log2(rows + BLINDING_ROWS)))


BLINDING_ROWS = 16
"""Rows Halo2 reserves at the end of a circuit for zero-knowledge blinding (a few; 16 is ample)."""


def measure_costs(kind: str, module: nn.Module, example_input: torch.Tensor) -> MeasuredCosts:
    """Inference timed here; proving estimated from the circuit's size (see the constants)."""
    runtime = DeterministicRuntime()
    runtime.run(module, example_input)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        runtime.run(module, example_input)
        times.append(time.perf_counter() - started)
    inference = statistics.median(times)
    logrows = circuit_logrows(module, example_input) if kind in zoo.IMAGE_KINDS else None
    prove = None
    if logrows is not None and is_zk_eligible(kind, logrows):
        prove = estimate_prove_seconds(logrows)
    return MeasuredCosts(
        inference=inference, prove=prove, verify=REFERENCE_VERIFY_SECONDS, reexecute=inference
    )
