"""Evidence across a node's audited ``llm`` jobs: a persistent small deviation is caught.

One job's check must leave room for honest variation on machines calibration
never saw, so its thresholds sit at twice the worst honest deviation measured
(``verifier.calibrate.MARGIN``). In bfloat16, where honest kernels disagree by
whole logits, a cheat that stays under that line on most jobs exists: int8
weights on the zoo's GPT-2 score most of the threshold per job while honest
jobs score a fraction of it (``bench/llm_verify.py``, ``evidence``). One job
cannot tell them apart with a false-positive rate anyone would slash on; the
mean over a node's audits can.

The validator keeps, per node, model and dtype, a test by betting
(Waudby-Smith and Ramdas, "Estimating means of bounded random variables by
betting", JRSS-B 2024; Shafer and Vovk's game-theoretic testing): each audited
job's score ``X`` (:attr:`verifier.llm.LLMCheck.score`, capped at 1) multiplies
the node's *wealth* by ``1 + λ (X − μ₀)``, with ``μ₀`` the honest mean bound and
``λ = BET / μ₀``. If an honest node's scores have mean at most ``μ₀`` given the
past, a wealth started at any audit is a non-negative supermartingale starting
at 1, so by Ville's inequality (1939) the chance that it *ever* reaches
``1 / ALPHA`` is at most ``ALPHA``.

A node must not bank honesty: a wealth that only multiplied would sink far
below 1 over a long honest run, and a node turning to cheat later would need
as many audits again to climb back. So the wealth never falls below 1
(``log_wealth`` is clamped at 0, the CUSUM-style e-detector of Shin, Ramdas
and Rinaldo, "E-detectors: a nonparametric framework for sequential change
detection", NEJSDS 2024). Its value after any audit is the largest of the
wealths started at each earlier audit, so an honest node is flagged within
its first ``N`` audits with probability at most ``N · ALPHA`` (a union over the
starts): with ``ALPHA`` = 10⁻¹⁰ and a node audited every 5 minutes all year
(105 120 audits), at most 1.1 · 10⁻⁵ per node-year
(:func:`false_positive_bound`). A node whose scores average ``μ > μ₀`` from
some audit on gains about ``log(1 + λ (μ − μ₀))`` per audit and is flagged
within roughly ``log(1 / ALPHA)`` divided by that (:func:`audits_to_flag`),
whatever it did before. A node that mixes honest jobs into its cheating
lowers its mean, and is caught once the mix's mean exceeds ``μ₀``.

``μ₀`` is the calibrated honest mean (:attr:`prover.llm.job.Tolerances.honest_mean_score`)
over ``MARGIN``, never above ``MAX_MU0``. The guarantee is only as good as
that bound: an honest machine whose mean score exceeds it is not covered,
exactly as one whose worst job exceeds the per-job threshold is not. The
per-job threshold allows honest deviations twice the worst calibration saw;
this test allows an honest *mean* 1/``MARGIN`` = 1.33 times calibration's.
That is a smaller allowance, and it is what makes the test useful: a job's
score is dominated by the sketch's root-mean-square over the job, whose
honest values sit close to their mean, and a cheat that adds deviations of
the honest size raises the mean by about √2. Whether an honest GPU's bfloat16
kernels stay within 1.33 times the CPU's mean is a measurement this project
has not made yet.

:class:`verifier.validator.Validator` keeps this evidence for every node it
audits: only jobs it actually re-executed count (a job it could not judge, or
whose output the node withheld, adds nothing, so withholding cannot drain the
evidence).

**From evidence to a slash.** One validator's audits are its own: a committee
cannot take its word for their scores, and the validator chose nothing about
them but could have kept quiet about the ones that cleared the node. So a
validator never accuses on its own audits. Once they raise the node's wealth
to ``RECORD_TRIGGER`` (a tenth of the bound in log terms) it reads the node's
*record* from the ledger: the last :data:`protocol.sampling.RECORD_JOBS`
sampled jobs of the node and model before the job in hand, in the ledger's
order, which neither it nor the node chose. It re-executes them (scores are
kept, so each job is scored once) and runs the same test over them and the job
(:func:`record_evidence`). If the wealth at the job reaches the bound with
``ACCUSE_MARGIN`` to spare, it accuses the job with ``RECORD`` evidence, and the
committee, reading the same record, votes by :func:`record_verdict`: FRAUD at
the bound, the job's own verdict when the record stays below half of it in log
terms, INCONCLUSIVE between. The job's own score does not decide it: a cheat's
jobs are not all visible alone (in bfloat16 some of SmolLM2's int8 jobs score
below the honest mean), but every one of them is a job of a node whose record
shows the deviation, so once the record stands, each of its sampled jobs is
FRAUD whatever it scores. The wealth can only cross the bound at a job scoring
above ``μ₀`` (any other lowers it), so this does not hasten a first accusation
and does not change what an honest record risks (below); it decides the jobs
after it.
A member that could not judge every job of the record (nobody served an
output, or the vote window left no time to score it) never votes VALID.
Scoring stops a round before the duty's deadline, so a member is never
silent for it; a member whose scores are not kept from its own audits may
not finish a long record of a large model within a short vote window, and
then votes INCONCLUSIVE: the window must fit the record
(``RECORD_JOBS`` re-executions) for a committee to decide it.

The record's test is the one above on a sequence the ledger fixed: whichever
job is accused, the wealth at it is the largest of the wealths started at
each of the ``RECORD_JOBS`` jobs before it, so the chance that an honest
node's record ever stands at the bound is again at most ``N · ALPHA`` over
``N`` sampled jobs. Jobs a member cannot judge (nobody served their output)
add nothing, which can only lower the wealth. An accused node has every
sampled job judged, not one validator's share of them, so a cheat is caught
in about :func:`audits_to_flag` of its *sampled* jobs. The record's length
bounds what it can catch: to reach the accuser's line within ``RECORD_JOBS``
jobs a node's mean score must be about 1.5 ``μ₀`` or more
(``log(1 + BET (μ/μ₀ − 1)) ≥ (log(1/ALPHA) + ACCUSE_MARGIN) / RECORD_JOBS``);
a node deviating less is flagged by validators but not slashed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from protocol.messages import Verdict
from prover.llm.job import Tolerances

ALPHA = 1e-10
"""The probability that an honest node's wealth started at one audit ever reaches 1/ALPHA."""
AUDITS_PER_YEAR = 365 * 24 * 12
"""A node audited every 5 minutes all year: the example of the per-node-year bound."""
BET = 0.5
"""The fraction of the largest safe bet (``λ ≤ 1 / μ₀`` keeps wealth non-negative)."""
MARGIN = 0.75
MAX_MU0 = 0.8
"""At most ``verifier.llm.SUSPICIOUS``: a mean score above it is suspicious on its own."""
LOG_THRESHOLD = math.log(1 / ALPHA)
RECORD_TRIGGER = LOG_THRESHOLD / 10
"""The log-wealth in a validator's own audits of a node from which it reads the node's record
(an honest node's wealth started at one audit reaches it with probability at most 10 %; what
that costs an honest node is only the validator's time)."""
ACCUSE_MARGIN = math.log(100)
"""How far past the bound, in log-wealth, a record must stand before its validator accuses:
a committee member's machine scores each job a little differently."""


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
        """Wealth reached ``1 / ALPHA`` at some audit."""
        return self.peak_log_wealth >= LOG_THRESHOLD

    @property
    def standing(self) -> bool:
        """Wealth is at or above ``1 / ALPHA`` now: the node's audits stand accused."""
        return self.log_wealth >= LOG_THRESHOLD


def accumulate(evidence: NodeEvidence, score: float, mu0: float) -> NodeEvidence:
    """The evidence after one more audited job of ``score`` (capped at 1); the wealth never
    falls below 1."""
    if not 0 < mu0 < 1:
        raise ValueError(f"the honest mean bound must be in (0, 1), got {mu0}")
    if math.isnan(score):
        raise ValueError("a job's score is a number")
    x = min(max(score, 0.0), 1.0)
    bet = BET / mu0
    log_wealth = max(0.0, evidence.log_wealth + math.log1p(bet * (x - mu0)))
    return NodeEvidence(audits=evidence.audits + 1, log_wealth=log_wealth,
                        peak_log_wealth=max(evidence.peak_log_wealth, log_wealth))


def audits_to_flag(mean_score: float, mu0: float) -> float:
    """Roughly how many audits a node whose scores average ``mean_score`` needs to be flagged
    (∞ at or below ``μ₀``), from any audit on: ``log(1/ALPHA) / log(1 + λ (μ − μ₀))``."""
    gain = math.log1p(BET / mu0 * (min(mean_score, 1.0) - mu0))
    return LOG_THRESHOLD / gain if gain > 0 else math.inf


def false_positive_bound(audits: int) -> float:
    """The most probability that an honest node is flagged within ``audits`` audits."""
    return min(1.0, audits * ALPHA)


def record_evidence(scores: Sequence[float | None], mu0: float) -> NodeEvidence:
    """The test run over a record's scores in the ledger's order, the accused job last; ``None``
    (a job that could not be judged) adds nothing."""
    evidence = NodeEvidence()
    for score in scores:
        if score is not None:
            evidence = accumulate(evidence, score, mu0)
    return evidence


def record_verdict(evidence: NodeEvidence, job: Verdict, job_score: float, mu0: float,
                   missing: int = 0) -> tuple[Verdict, str]:
    """A committee member's vote on a ``RECORD`` dispute, from the record's evidence (the job
    last), the job's own verdict and score: FRAUD when the job alone is FRAUD, or when the
    record stands at the bound, whatever the job scores; the job's own verdict when the
    record stays under half of the bound in log terms; INCONCLUSIVE between. With ``missing``
    jobs of the record not judged (no output served, or no time to score them) the record
    may hold more than was seen, so it is never VALID: a member outvoted by members who saw
    the whole record would be held lazy."""
    if job is Verdict.FRAUD:
        return Verdict.FRAUD, "the job alone is FRAUD"
    summary = (f"log-wealth {evidence.log_wealth:.1f} over {evidence.audits} judged jobs of the "
               f"record against an honest mean score ≤ {mu0:.3f} (bound {LOG_THRESHOLD:.1f}); "
               f"the job scores {job_score:.3f}")
    if evidence.log_wealth >= LOG_THRESHOLD:
        return Verdict.FRAUD, "the record deviates persistently: " + summary
    if evidence.log_wealth < LOG_THRESHOLD / 2:
        if missing and job is Verdict.VALID:
            return Verdict.INCONCLUSIVE, (f"{missing} jobs of the record could not be judged, "
                                          "and those judged do not reach the bound: " + summary)
        return job, "the record does not reach the bound: " + summary
    return Verdict.INCONCLUSIVE, "the record is near the bound: " + summary
