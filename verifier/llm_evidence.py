"""Evidence across a node's audited ``llm`` jobs: a persistent small deviation is caught.

One job's check must leave room for honest variation on machines calibration
never saw, so its thresholds sit at twice the worst honest deviation measured
(``verifier.calibrate.MARGIN``). In bfloat16, where honest kernels disagree by
whole logits, a cheat that stays under that line on most jobs exists: int8
weights on the zoo's GPT-2 score most of the threshold per job while honest
jobs score a fraction of it (``bench/llm_verify.py``, ``evidence``). One job
cannot tell them apart with a false-positive rate anyone would slash on; the
mean over a node's audits can.

The validator keeps, per node and dtype, a test martingale by betting
(Waudby-Smith and Ramdas, "Estimating means of bounded random variables by
betting", JRSS-B 2024; Shafer and Vovk's game-theoretic testing): each audited
job's score ``X`` (:attr:`verifier.llm.LLMCheck.score`, capped at 1) multiplies
the node's *wealth* by ``1 + λ (X − μ₀)``, with ``μ₀`` the honest mean bound and
``λ = BET / μ₀``. If an honest node's scores have mean at most ``μ₀`` given the
past, its wealth is a non-negative supermartingale starting at 1, so by
Ville's inequality (1939) the chance that it *ever* reaches ``1 / ALPHA`` is at
most ``ALPHA``: a false accusation has probability ≤ 10⁻⁶ per node and dtype
over the node's whole life — so also per node-year — however many jobs are
audited. A node whose scores average ``μ > μ₀`` gains about
``log(1 + λ (μ − μ₀))`` per audit and is flagged after roughly
``log(1 / ALPHA)`` divided by that.

``μ₀`` is the calibrated honest mean (:attr:`prover.llm.job.Tolerances.honest_mean_score`)
over ``MARGIN``, never above ``MAX_MU0``. The guarantee is only as good as
that bound: an honest machine whose mean score exceeds it is not covered,
exactly as one whose worst job exceeds the per-job threshold is not. The
per-job threshold allows honest deviations twice the worst calibration saw;
this test allows an honest *mean* 1/``MARGIN`` = 1.33 times calibration's.
That is a smaller allowance, and it is what makes the test useful: a job's
score is dominated by the sketch's root-mean-square over the job, whose
honest values sit close to their mean (calibration's mean score is about 0.8
of its largest), and a cheat that adds deviations of the honest size raises
the mean by about √2. Whether an honest GPU's bfloat16 kernels stay within
1.33 times the CPU's mean is a measurement this project has not made yet
(issue item 7): until it is, accusations from this test should wait for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prover.llm.job import Tolerances

ALPHA = 1e-6
"""The probability that an honest node is ever flagged, per node and dtype (Ville)."""
BET = 0.5
"""The fraction of the largest safe bet (``λ ≤ 1 / μ₀`` keeps wealth non-negative)."""
MARGIN = 0.75
MAX_MU0 = 0.8
"""At most ``verifier.llm.SUSPICIOUS``: a mean score above it is suspicious on its own."""


def honest_mean_bound(tolerances: Tolerances) -> float:
    """``μ₀``: the calibrated honest mean score over ``MARGIN``, at most ``MAX_MU0``."""
    return min(MAX_MU0, tolerances.honest_mean_score / MARGIN)


@dataclass(frozen=True)
class NodeEvidence:
    """One node's accumulated evidence for one dtype: audits seen and log-wealth."""

    audits: int = 0
    log_wealth: float = 0.0
    peak_log_wealth: float = 0.0

    @property
    def flagged(self) -> bool:
        """Wealth reached ``1 / ALPHA`` at some audit (it never needs to come back down)."""
        return self.peak_log_wealth >= math.log(1 / ALPHA)


def accumulate(evidence: NodeEvidence, score: float, mu0: float) -> NodeEvidence:
    """The evidence after one more audited job of ``score`` (capped at 1)."""
    if not 0 < mu0 < 1:
        raise ValueError(f"the honest mean bound must be in (0, 1), got {mu0}")
    if math.isnan(score):
        raise ValueError("a job's score is a number")
    x = min(max(score, 0.0), 1.0)
    bet = BET / mu0
    log_wealth = evidence.log_wealth + math.log1p(bet * (x - mu0))
    return NodeEvidence(audits=evidence.audits + 1, log_wealth=log_wealth,
                        peak_log_wealth=max(evidence.peak_log_wealth, log_wealth))


def audits_to_flag(mean_score: float, mu0: float) -> float:
    """Roughly how many audits a node whose scores average ``mean_score`` needs to be flagged
    (∞ at or below ``μ₀``): ``log(1/ALPHA) / log(1 + λ (μ − μ₀))``."""
    gain = math.log1p(BET / mu0 * (min(mean_score, 1.0) - mu0))
    return math.log(1 / ALPHA) / gain if gain > 0 else math.inf
