"""A validator's evidence across a node's audits, on a real (zoo) model in bfloat16.

The attack: a node serves GPT-2 with its weights rounded to 9 bits, in bfloat16. Its jobs
score under the per-job line — each alone VALID or INCONCLUSIVE — but above what honest
variation gives, on every job. The validator, accumulating its audits, must flag it within
the bounded number of audits the bet predicts, and from then on never vouch VALID for its
deviating jobs; without the node's record it must not accuse on its own audits (a committee
cannot take its word for them: ``tests/test_llm_record.py`` accuses on the record); an honest
node audited as often, across batch and kernel variation, must never be flagged; withholding
outputs must not wash a cheater's evidence away, and a committee vote must not count as an
audit.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import statistics

import pytest
import torch

from protocol.codec import Tensor
from protocol.keys import SigningKey
from protocol.messages import Attestation, Evidence, Verdict
from prover import zoo
from prover.llm.commit import package
from prover.llm.generate import LLM, generate
from prover.llm.job import DEFAULT_CALIBRATION, Calibration, LLMJob
from prover.llm.sampler import SamplingParams
from tests.test_llm_verify import NODE, commit, quantized
from verifier.calibrate import HonestSetting, measure
from verifier.llm_evidence import audits_to_flag, honest_mean_bound
from verifier.validator import Validator

VALIDATOR = SigningKey.derive("test/llm/evidence/validator")
MODEL_ID = bytes(32)
DTYPE = "bfloat16"
MIX = ((0, 0, 10**6), (1000, 0, 10**6), (700, 40, 10**6), (1000, 0, 900_000))


@functools.cache
def gpt2() -> LLM:
    return LLM(zoo.build("gpt2", 0).module)


def jobs(first: int, n: int) -> list[tuple[torch.Tensor, LLMJob]]:
    """Prompts and jobs from seeds ``first..first+n-1`` (none used by the calibration below)."""
    out = []
    for i in range(first, first + n):
        g = torch.Generator().manual_seed(i)
        prompt = torch.randint(0, 256, (int(torch.randint(8, 40, (1,), generator=g)),),
                               generator=g)
        t, k, p = MIX[i % len(MIX)]
        out.append((prompt, LLMJob(48, DTYPE, SamplingParams(seed=i, temperature_milli=t,
                                                             top_k=k, top_p_ppm=p))))
    return out


@functools.cache
def calibration() -> Calibration:
    """The default thresholds, with the honest mean score measured on this model as
    ``assay calibrate`` measures it (honest jobs across batch and kernel variation)."""
    tolerances = DEFAULT_CALIBRATION.for_dtype(DTYPE)
    measured = [d for setting in (HonestSetting("b1"), HonestSetting("b4 eager", batch=4,
                                                                     attention="eager"))
                for d in measure(gpt2(), jobs(1, 8), setting)]
    mean = statistics.mean(d.score(tolerances) for d in measured)
    return Calibration({**DEFAULT_CALIBRATION.tolerances,
                        DTYPE: dataclasses.replace(tolerances, honest_mean_score=mean)},
                       {"source": "test"})


def audit(validator: Validator, model: LLM, batch: list[tuple[torch.Tensor, LLMJob]],
          round_: int, attention: str = "sdpa") -> list[Attestation | Evidence]:
    """``model`` serves ``batch`` as one padded batch; the validator audits every job."""
    made = generate(model, [p for p, _ in batch], [j for _, j in batch], attention=attention)
    found = []
    for (prompt, job), generated in zip(batch, made, strict=True):
        request, commitment, output = commit(prompt, job, generated.tokens,
                                             package(generated, job, calibration()).aux)
        found.append(validator.audit(request, commitment, round_, output))
    return found


def node_evidence(validator: Validator) -> tuple[int, float, bool, bool]:
    (evidence,) = validator.evidence.values()
    return evidence.audits, evidence.log_wealth, evidence.flagged, evidence.standing


def test_a_persistent_deviation_under_the_per_job_line_is_flagged_within_the_bound() -> None:
    cal = calibration()
    mu0 = honest_mean_bound(cal.for_dtype(DTYPE))
    validator = Validator(VALIDATOR, {}, llms={MODEL_ID: (gpt2(), cal)})
    cheat = LLM(quantized(gpt2().module, 9))
    findings: list[Attestation | Evidence] = []
    pool = jobs(1000, 120)
    for start in range(0, len(pool), 4):
        findings += audit(validator, cheat, pool[start:start + 4], start)
        if node_evidence(validator)[3]:
            break
    audits, _, flagged, standing = node_evidence(validator)
    assert flagged and standing
    assert validator.flagged() == [(NODE.public.raw, MODEL_ID, DTYPE)]
    before = findings[:-1]
    # the jobs before the flag: almost none FRAUD on its own
    assert sum(isinstance(f, Evidence) for f in before) <= len(before) // 10
    # the bound at the cheat's own mean score, as each verdict states it (capped at 1)
    scores = [min(1.0, max(float(v) for v in re.findall(r"score ([0-9.]+(?:e[-+]?[0-9]+)?)",
                                                        f.reason if isinstance(f, Attestation)
                                                        else f.detail)))
              for f in findings]
    scores_mean = statistics.mean(scores)
    assert scores_mean > mu0
    assert audits <= 2 * audits_to_flag(scores_mean, mu0), (audits, scores_mean, mu0)
    # flagged: the next deviating jobs are INCONCLUSIVE naming the evidence, not accused on it
    more = audit(validator, cheat, jobs(2000, 4), 99)
    named = [f for f in more if isinstance(f, Attestation) and "evidence across" in f.reason]
    assert named and all(f.verdict is Verdict.INCONCLUSIVE for f in named)
    assert not any(isinstance(f, Evidence) and "evidence across" in f.detail for f in more)
    assert not any(isinstance(f, Attestation) and f.verdict is Verdict.VALID for f in more)
    # withholding the output adds nothing: the evidence stays where it is
    prompt, job = jobs(3000, 1)[0]
    made = generate(cheat, [prompt], [job])[0]
    request, commitment, _ = commit(prompt, job, made.tokens, package(made, job, cal).aux)
    held = node_evidence(validator)
    withheld = validator.audit(request, commitment, 100, None)
    assert isinstance(withheld, Attestation) and withheld.verdict is Verdict.INCONCLUSIVE
    output = Tensor.from_torch(made.tokens[None, :].contiguous())
    validator.vote(request, commitment, 101, output)  # a committee vote is not an audit
    assert node_evidence(validator) == held


@pytest.mark.slow
def test_an_honest_node_audited_as_often_is_never_accused() -> None:
    validator = Validator(VALIDATOR, {}, llms={MODEL_ID: (gpt2(), calibration())})
    pool = jobs(5000, 96)
    findings = []
    for start in range(0, len(pool), 8):
        attention = "eager" if start % 16 else "sdpa"
        findings += audit(validator, gpt2(), pool[start:start + 8], start, attention)
    assert all(isinstance(f, Attestation) and f.verdict is Verdict.VALID for f in findings)
    audits, log_wealth, flagged, standing = node_evidence(validator)
    assert audits == len(pool) and not flagged and not standing and not validator.flagged()
    assert log_wealth < 1.0  # nowhere near log(1/ALPHA) = 23
