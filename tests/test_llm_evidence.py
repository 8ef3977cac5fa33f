"""Evidence across audits: an honest node at the bound is never flagged, a persistent
deviation is, within the number of audits the bet predicts."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from prover.llm.job import DEFAULT_CALIBRATION
from verifier.llm_evidence import (
    ALPHA,
    AUDITS_PER_YEAR,
    MAX_MU0,
    NodeEvidence,
    accumulate,
    audits_to_flag,
    false_positive_bound,
    honest_mean_bound,
)


def run(scores: np.ndarray, mu0: float) -> NodeEvidence:
    evidence = NodeEvidence()
    for x in scores:
        evidence = accumulate(evidence, float(x), mu0)
    return evidence


def test_honest_nodes_at_the_bound_are_never_flagged() -> None:
    """200 nodes × 2,000 audits with mean score exactly μ₀ (the worst honest case), spread
    as widely as [0, 1] allows: none reaches 1/ALPHA (P ≤ 2,000 · ALPHA each)."""
    rng = np.random.default_rng(7)
    mu0 = 0.3
    for _ in range(200):
        scores = rng.binomial(1, mu0, 2000).astype(float)  # Bernoulli: the largest variance
        evidence = run(scores, mu0)
        assert not evidence.flagged and evidence.audits == 2000
        assert evidence.peak_log_wealth < math.log(1 / ALPHA)


def test_a_persistent_deviation_under_the_per_job_line_is_flagged() -> None:
    """Scores 0.85 ± 0.1 — VALID or INCONCLUSIVE on almost every job — against μ₀ = 0.44."""
    rng = np.random.default_rng(8)
    mu0 = 0.44
    evidence = NodeEvidence()
    for _ in range(500):
        evidence = accumulate(evidence, float(np.clip(rng.normal(0.85, 0.1), 0, 0.99)), mu0)
        if evidence.flagged:
            break
    assert evidence.flagged
    assert evidence.audits <= 1.3 * audits_to_flag(0.85, mu0)
    assert audits_to_flag(mu0, mu0) == math.inf


def test_honesty_cannot_be_banked() -> None:
    """A node honest for 5,000 audits, then cheating, is flagged as fast as a new one: the
    wealth never falls below 1, so the honest past leaves no debt to climb out of."""
    rng = np.random.default_rng(9)
    mu0 = 0.44
    honest = run(np.clip(rng.normal(0.3, 0.05, 5000), 0, 1), mu0)
    assert honest.log_wealth == 0.0 and not honest.flagged
    cheat = [float(x) for x in np.clip(rng.normal(0.85, 0.1, 500), 0, 0.99)]
    after_honesty, fresh = honest, NodeEvidence()
    for x in cheat:
        after_honesty, fresh = accumulate(after_honesty, x, mu0), accumulate(fresh, x, mu0)
        if fresh.flagged:
            break
    assert after_honesty.flagged and after_honesty.audits - honest.audits == fresh.audits
    assert false_positive_bound(AUDITS_PER_YEAR) < 2e-5


def test_the_bound_comes_from_calibration_and_bad_scores_are_refused() -> None:
    tol = DEFAULT_CALIBRATION.for_dtype("bfloat16")
    assert honest_mean_bound(dataclasses.replace(tol, honest_mean_score=0.3)) == pytest.approx(0.4)
    assert honest_mean_bound(dataclasses.replace(tol, honest_mean_score=0.7)) == MAX_MU0
    assert accumulate(NodeEvidence(), math.inf, 0.4).log_wealth == math.log1p(0.5 / 0.4 * 0.6)
    with pytest.raises(ValueError, match="a number"):
        accumulate(NodeEvidence(), math.nan, 0.4)
    with pytest.raises(ValueError, match="honest mean bound"):
        accumulate(NodeEvidence(), 0.5, 1.0)
