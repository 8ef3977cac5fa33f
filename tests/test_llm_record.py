"""A node's record judged by a committee, on a real (zoo) model in bfloat16.

The attack: a node serves GPT-2 with its weights rounded to 9 bits, in bfloat16. Each job
alone stays under the per-job line, so a committee judging one job votes VALID and an auditor
that accused on its own audits would be slashed. Judged on the node's record — the earlier
sampled jobs the ledger lists — the committee must vote FRAUD, and the auditor, once its own
audits point at the node, must accuse with ``RECORD`` evidence. An honest node's record, across
batch and kernel variation, must never bring a record accusation or a FRAUD vote. A record
padded with jobs that are not the node's model's must count none of them. A member that could
not judge the whole record (outputs withheld, or no time left in the vote window) must never
vote VALID, which would have it held lazy when outvoted, and must stop scoring in time.
"""

from __future__ import annotations

import torch

from protocol.keys import SigningKey
from protocol.messages import Attestation, Evidence, Offence, Verdict
from prover.llm.commit import package
from prover.llm.generate import LLM, generate
from prover.llm.job import LLMJob
from tests.test_llm_evidence_audits import MODEL_ID, calibration, gpt2, jobs
from tests.test_llm_verify import commit, quantized
from verifier.llm_evidence import (
    LOG_THRESHOLD,
    NodeEvidence,
    audits_to_flag,
    honest_mean_bound,
    record_verdict,
)
from verifier.validator import RecordJob, Validator

AUDITOR = SigningKey.derive("test/llm/record/auditor")
MEMBER = SigningKey.derive("test/llm/record/member")
OTHER_MODEL = bytes([7]) * 32


def served(model: LLM, batch: list[tuple[torch.Tensor, LLMJob]], attention: str = "sdpa",
           model_id: bytes = MODEL_ID) -> list[RecordJob]:
    """``model`` serves ``batch`` as one padded batch: each job as the ledger would list it."""
    made = generate(model, [p for p, _ in batch], [j for _, j in batch], attention=attention)
    out = []
    for (prompt, job), generated in zip(batch, made, strict=True):
        request, commitment, output = commit(prompt, job, generated.tokens,
                                             package(generated, job, calibration()).aux,
                                             model_id)
        out.append(RecordJob(request, commitment, output))
    return out


def validator(key: SigningKey) -> Validator:
    return Validator(key, {}, llms={MODEL_ID: (gpt2(), calibration())})


def audit(v: Validator, job: RecordJob, round_: int, record: list[RecordJob] | None
          ) -> Attestation | Evidence:
    return v.audit(job.request, job.commitment, round_, job.output, record)


def vote(v: Validator, job: RecordJob, record: list[RecordJob], on_record: bool = True
         ) -> Attestation:
    return v.vote(job.request, job.commitment, 1, job.output, record, on_record)


def test_a_persistent_deviation_is_accused_on_the_record_and_the_committee_confirms_it() -> None:
    mu0 = honest_mean_bound(calibration().for_dtype("bfloat16"))
    cheat = LLM(quantized(gpt2().module, 9))
    pool = jobs(1000, 160)
    record: list[RecordJob] = []
    auditor = validator(AUDITOR)
    accused: tuple[Evidence, RecordJob, int] | None = None
    for start in range(0, len(pool), 8):
        for job in served(cheat, pool[start:start + 8]):
            i = len(record)
            if i % 2 == 0:  # the auditor is drawn for half of the node's sampled jobs
                wanted = auditor.wants_record(job.request, job.commitment)
                finding = audit(auditor, job, i, list(record) if wanted else None)
                # never accused on the auditor's own audits, nor on one job's deviation alone
                assert not (isinstance(finding, Evidence) and finding.offence is Offence.MISMATCH
                            and "record" in finding.detail)
                if isinstance(finding, Evidence) and finding.offence is Offence.RECORD:
                    accused = (finding, job, i)
                    break
            record.append(job)
        if accused is not None:
            break
    assert accused is not None, "the cheat was never accused on its record"
    evidence, job, position = accused
    assert "record deviates persistently" in evidence.detail
    # within the bound the record's test predicts: the cheat's mean per-job score
    scores = [s for s in (auditor.scores.get(r.commitment.content_id) for r in record)
              if s is not None]
    mean = sum(min(1.0, s) for s in scores) / len(scores)
    assert mean > mu0
    assert position <= 2 * audits_to_flag(mean, mu0) + 16, (position, mean, mu0)
    # a committee member with no history of the node, given the ledger's record, confirms it
    member = validator(MEMBER)
    alone = vote(member, job, [], on_record=False)
    assert alone.verdict is not Verdict.FRAUD  # the job alone would not be slashed
    confirmed = vote(member, job, record)
    assert confirmed.verdict is Verdict.FRAUD, confirmed.reason
    assert all(member.has_score(r.commitment) for r in record)
    # from then on each of the node's jobs is accused and confirmed on its record, those that
    # look honest alone as well: the record, not the job, shows the deviation
    history = [*record, job]
    looks_honest = 0
    for later in served(cheat, jobs(2000, 24)):
        finding = audit(auditor, later, len(history), list(history))
        assert isinstance(finding, Evidence) and finding.offence is Offence.RECORD, finding
        own = auditor.scores[later.commitment.content_id]
        assert own is not None
        if own <= mu0:
            looks_honest += 1
            assert vote(member, later, [], on_record=False).verdict is Verdict.VALID
            confirmed = vote(member, later, list(history))
            assert confirmed.verdict is Verdict.FRAUD, confirmed.reason
        history.append(later)
    assert looks_honest > 0, "no job of the cheat scored under the honest mean"
    # a record of the same node's jobs of another model counts none of them
    stranger = validator(SigningKey.derive("test/llm/record/stranger"))
    padded = [RecordJob(r.request, r.commitment, r.output) for r in
              served(cheat, pool[:len(record)][:48], model_id=OTHER_MODEL)]
    judged = vote(stranger, job, padded)
    assert judged.verdict is not Verdict.FRAUD
    assert "over 1 judged jobs" in judged.reason


def test_an_honest_record_is_never_accused_and_never_voted_fraud() -> None:
    honest = gpt2()
    pool = jobs(5000, 64)
    record: list[RecordJob] = []
    auditor = validator(AUDITOR)
    for start in range(0, len(pool), 8):
        attention = "eager" if start % 16 else "sdpa"
        for job in served(honest, pool[start:start + 8], attention):
            finding = audit(auditor, job, len(record), list(record))  # always given the record
            assert isinstance(finding, Attestation) and finding.verdict is Verdict.VALID, (
                finding.reason if isinstance(finding, Attestation) else finding.detail)
            record.append(job)
    member = validator(MEMBER)
    verdict = vote(member, record[-1], record[:-1])
    assert verdict.verdict is Verdict.VALID, verdict.reason
    assert "does not reach the bound" in verdict.reason
    log_wealth = float(verdict.reason.split("log-wealth ")[1].split(" ")[0])
    assert log_wealth < LOG_THRESHOLD / 4


def test_a_record_not_judged_whole_is_never_voted_valid() -> None:
    """A member that could not score every job of the record (the node withheld outputs, or the
    vote window ran short) may have missed what its fellow members saw: it votes INCONCLUSIVE,
    never VALID, so it is never outvoted into a lazy slash; it never sits silent past the
    window either (scoring stops when told to give up)."""
    honest = gpt2()
    record = served(honest, jobs(7000, 8)) + served(honest, jobs(7008, 8), "eager")
    job, earlier = record[-1], record[:-1]
    withheld = [RecordJob(r.request, r.commitment, None) for r in earlier]
    member = validator(MEMBER)
    no_outputs = vote(member, job, withheld)
    assert no_outputs.verdict is Verdict.INCONCLUSIVE, no_outputs.reason
    assert "15 jobs of the record could not be judged" in no_outputs.reason
    late = validator(SigningKey.derive("test/llm/record/late"))
    asked = []

    def give_up() -> bool:
        asked.append(1)
        return len(asked) > 5  # time for five jobs, then the window is nearly out

    out_of_time = late.vote(job.request, job.commitment, 1, job.output, earlier, True, give_up)
    assert out_of_time.verdict is Verdict.INCONCLUSIVE, out_of_time.reason
    assert sum(late.has_score(r.commitment) for r in earlier) == 5
    assert all(late.has_score(r.commitment) for r in earlier[-5:])  # newest first
    # the same member, its scores kept, judges the whole record next time: VALID
    whole = late.vote(job.request, job.commitment, 1, job.output, earlier, True,
                      lambda: len(asked) > 5 + 10)
    assert whole.verdict is Verdict.VALID, whole.reason
    # a job the ledger listed but could not give counts as not judged
    gone = late.vote(job.request, job.commitment, 1, job.output, earlier, True, None, 1)
    assert gone.verdict is Verdict.INCONCLUSIVE, gone.reason


def test_the_record_verdict_table() -> None:
    mu0 = 0.2
    standing = NodeEvidence(audits=80, log_wealth=LOG_THRESHOLD + 1,
                            peak_log_wealth=LOG_THRESHOLD + 1)
    near = NodeEvidence(audits=80, log_wealth=LOG_THRESHOLD * 0.75, peak_log_wealth=20.0)
    low = NodeEvidence(audits=80, log_wealth=1.0, peak_log_wealth=3.0)
    cases = [
        (standing, Verdict.VALID, 0.5, 0, Verdict.FRAUD),
        # a job of a node whose record stands is FRAUD, however honest it looks alone
        (standing, Verdict.VALID, 0.1, 0, Verdict.FRAUD),
        (near, Verdict.VALID, 0.5, 0, Verdict.INCONCLUSIVE),
        (low, Verdict.VALID, 0.5, 0, Verdict.VALID),
        (low, Verdict.VALID, 0.5, 3, Verdict.INCONCLUSIVE),
        (low, Verdict.INCONCLUSIVE, 0.5, 0, Verdict.INCONCLUSIVE),
        (low, Verdict.FRAUD, 2.0, 0, Verdict.FRAUD),
        (standing, Verdict.VALID, 0.5, 7, Verdict.FRAUD),  # what was judged suffices
    ]
    for evidence, job, score, missing, expected in cases:
        assert record_verdict(evidence, job, score, mu0, missing)[0] is expected, (
            evidence, job, score, missing)
