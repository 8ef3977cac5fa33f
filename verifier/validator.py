"""A validator: audits sampled jobs and votes in disputes.

For a sampled job the validator re-executes with the prover's runtime and
signs what it found: an :class:`~protocol.messages.Attestation` for VALID or
INCONCLUSIVE, or :class:`~protocol.messages.Evidence` for FRAUD, which embeds the
node's signed commitment so the claim can be checked by anyone. ``llm``
commitments are judged with one prefill (:mod:`verifier.llm`) and need the
output the node served. ``tensor`` commitments carry their output and are
judged within calibrated tolerances (:mod:`verifier.tensor`). The mode a job
is judged in is the one this validator's registry gives its model, never the
``mode`` the node wrote. For ``llm`` jobs it also keeps evidence across each
node's audits (:mod:`verifier.llm_evidence`): a node whose audited jobs
deviate persistently, each under one job's threshold, is flagged once the
evidence reaches its bound (:meth:`Validator.flagged`). From a lower level of
that evidence (:meth:`Validator.wants_record`) an audit is given the node's
record, the earlier sampled jobs the ledger lists, and a job on a record that
stands at the bound is accused with ``RECORD`` evidence, whatever the job
scores alone; without the record, or short of it, a job that deviates above
the honest mean is INCONCLUSIVE, never FRAUD, for one job's deviation is not
enough. A member of
a ``RECORD`` dispute's committee is given the same record and votes by it
(:func:`verifier.llm_evidence.record_verdict`). ``zk``
commitments are checked by their proof (:mod:`verifier.zk`), every one of
them, and a failing proof is ``INVALID_PROOF`` evidence that needs no committee. As a member
of a dispute committee it re-executes the same way and signs its vote as an
attestation, whatever the verdict.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from torch import nn

from protocol.codec import Tensor
from protocol.keys import SigningKey
from protocol.messages import Attestation, Commitment, Evidence, JobRequest, Offence, Verdict
from prover.llm.job import DEFAULT_CALIBRATION, Calibration, LLMJobError, parse_job
from prover.llm.model import LLM
from prover.node import EXACT_MODE
from prover.runtime import DeterministicRuntime
from prover.tensor import TENSOR_MODE, TensorModel
from verifier.llm import LLM_MODE, LLMCheck, verify_generation
from verifier.llm_evidence import (
    ACCUSE_MARGIN,
    LOG_THRESHOLD,
    RECORD_TRIGGER,
    NodeEvidence,
    accumulate,
    honest_mean_bound,
    record_evidence,
    record_verdict,
)
from verifier.reexecute import Check, check_exact
from verifier.tensor import check_tensor
from verifier.zk import ZK_MODE, ZkKey, check_zk

GiveUp = Callable[[], bool]
"""Asked before each record job is scored: True once the duty's time is nearly out."""
SCORES_KEPT = 65_536
"""Scores of judged ``llm`` jobs kept (by commitment), so a record re-executes only new jobs."""


@dataclass(frozen=True)
class RecordJob:
    """One job of a node's record as the ledger lists it, with the output its node served
    (``None`` when nobody served it: the job adds nothing)."""

    request: JobRequest
    commitment: Commitment
    output: Tensor | None


@dataclass
class ValidatorStats:
    audited: int = 0
    votes: int = 0
    mismatches: int = 0
    seconds: float = 0.0  # re-execution wall time: the verification compute spent
    verdicts: dict[Verdict, int] = field(default_factory=lambda: dict.fromkeys(Verdict, 0))


class Validator:
    def __init__(
        self,
        key: SigningKey,
        models: Mapping[bytes, nn.Module],
        runtime: DeterministicRuntime | None = None,
        llms: Mapping[bytes, tuple[LLM, Calibration]] | None = None,
        zk_keys: Mapping[bytes, ZkKey] | None = None,
        tensors: Mapping[bytes, TensorModel] | None = None,
    ) -> None:
        self.key = key
        self.models = dict(models)
        self.tensors = dict(tensors or {})
        self.runtime = runtime or DeterministicRuntime()
        self.llms = dict(llms or {})
        self.zk_keys = dict(zk_keys or {})
        self.stats = ValidatorStats()
        self.evidence: dict[tuple[bytes, bytes, str], NodeEvidence] = {}
        """Per (node, model, dtype): the evidence of this validator's ``llm`` audits."""
        self.scores: OrderedDict[bytes, float | None] = OrderedDict()
        """Per commitment: the score of an ``llm`` job this validator judged (None: it could
        not judge it), the newest ``SCORES_KEPT``."""

    @property
    def validator_id(self) -> bytes:
        return self.key.public.raw

    def mode_of(self, request: JobRequest, commitment: Commitment) -> str:
        """The mode this validator judges the job in: its registry's, else the commitment's.

        A node cannot choose how it is judged by writing another ``mode``: a
        model this validator holds is judged in the mode it holds it in.
        """
        model_id = request.model_id
        for mode, held in ((ZK_MODE, self.zk_keys), (TENSOR_MODE, self.tensors),
                           (LLM_MODE, self.llms), (EXACT_MODE, self.models)):
            if model_id in held:
                return mode
        return commitment.mode

    def _check(
        self, request: JobRequest, commitment: Commitment, output: Tensor | None,
        audit: bool = False, record: Sequence[RecordJob] | None = None, on_record: bool = False,
        give_up: GiveUp | None = None, unknown: int = 0,
    ) -> Check:
        """Judge one job; an audit (not a vote) adds an ``llm`` job's score to the node's
        evidence, and ``record`` (the node's earlier sampled jobs) is judged with it."""
        mode = self.mode_of(request, commitment)
        if mode == ZK_MODE:
            check = check_zk(request, commitment, self.zk_keys.get(request.model_id))
        elif mode == TENSOR_MODE:
            judged = check_tensor(request, commitment, self.tensors.get(request.model_id),
                                  self.runtime.threads)
            check = Check(judged.verdict, judged.reason, b"", judged.seconds)
        elif mode == LLM_MODE:
            check = self._check_llm(request, commitment, output, audit, record, on_record,
                                    give_up, unknown)
        else:
            model = self.models.get(request.model_id)
            check = check_exact(request, commitment, model, self.runtime)
        self.stats.seconds += check.seconds
        self.stats.verdicts[check.verdict] += 1
        return check

    def _check_llm(self, request: JobRequest, commitment: Commitment, output: Tensor | None,
                   audit: bool, record: Sequence[RecordJob] | None, on_record: bool,
                   give_up: GiveUp | None, unknown: int = 0) -> Check:
        """One job's check, then the node's evidence: only jobs this validator scored count.

        An audit adds the job to this validator's evidence; given the node's ``record`` it
        returns FRAUD (to be sent as ``RECORD`` evidence) when the record, the job last, stands
        at the bound with ``ACCUSE_MARGIN`` to spare, whatever the job scores. A vote on a
        ``RECORD`` dispute (``on_record``) is decided by the record.
        """
        llm, calibration = self.llms.get(request.model_id, (None, DEFAULT_CALIBRATION))
        judged: LLMCheck = verify_generation(request, commitment, output, llm, calibration,
                                             threads=self.runtime.threads)
        check = Check(judged.verdict, judged.reason, b"", judged.seconds)
        self._keep_score(commitment, judged)
        if not judged.judged:
            return check
        dtype = parse_job(request).dtype  # a judged job's parameters parsed
        mu0 = honest_mean_bound(calibration.for_dtype(dtype))
        if on_record:
            evidence, missing = self._record(request, commitment, record or (), dtype, mu0,
                                             judged.score, give_up)
            verdict, why = record_verdict(evidence, judged.verdict, judged.score, mu0,
                                          missing + unknown)
            return Check(verdict, f"{why} ({judged.reason})", b"", judged.seconds)
        if judged.verdict is Verdict.FRAUD:
            return check
        key = (commitment.node, request.model_id, dtype)
        evidence = self.evidence.get(key, NodeEvidence())
        if audit:
            evidence = accumulate(evidence, judged.score, mu0)
            self.evidence[key] = evidence
        if record is not None:
            # any job of a node whose record stands is accused, whatever it scores alone
            on, _ = self._record(request, commitment, record, dtype, mu0, judged.score, give_up)
            if on.log_wealth >= LOG_THRESHOLD + ACCUSE_MARGIN:
                return Check(Verdict.FRAUD, (
                    f"the node's record deviates persistently: log-wealth {on.log_wealth:.1f} "
                    f"≥ {LOG_THRESHOLD:.1f} + {ACCUSE_MARGIN:.1f} over {on.audits} judged "
                    f"{dtype} jobs of its record, against an honest mean score ≤ {mu0:.3f}; "
                    f"this job scores {judged.score:.3f} ({judged.reason})"), b"", judged.seconds,
                    on_record=True)
        if judged.score <= mu0 or not evidence.standing:
            return check
        return Check(Verdict.INCONCLUSIVE, (
            f"node flagged by evidence across {evidence.audits} audits of its {dtype} jobs: "
            f"log-wealth {evidence.log_wealth:.1f} ≥ {LOG_THRESHOLD:.1f} against an honest "
            f"mean score ≤ {mu0:.3f}, and this job scores {judged.score:.3f} "
            f"({judged.reason}); not accused: its record does not stand at the bound"),
            b"", judged.seconds)

    def _keep_score(self, commitment: Commitment, judged: LLMCheck) -> None:
        self.scores[commitment.content_id] = judged.score if judged.judged else None
        self.scores.move_to_end(commitment.content_id)
        while len(self.scores) > SCORES_KEPT:
            self.scores.popitem(last=False)

    def _record(self, request: JobRequest, commitment: Commitment, record: Sequence[RecordJob],
                dtype: str, mu0: float, score: float, give_up: GiveUp | None
                ) -> tuple[NodeEvidence, int]:
        """The evidence over the node's record, this job last, and how many of its jobs could
        not be judged. Only the record's jobs of the same node, model and dtype count, each
        judged once (its score is kept); new ones are scored newest first until ``give_up``
        says the duty's time is nearly out."""
        mine = []
        for job in record:
            if (job.commitment.node != commitment.node
                    or job.request.model_id != request.model_id
                    or job.commitment.job_id in (commitment.job_id, b"")
                    or job.request.content_id != job.commitment.job_id):
                continue
            try:
                if parse_job(job.request).dtype != dtype:
                    continue
            except LLMJobError:
                continue
            mine.append(job)
        scores: list[float | None] = []
        missing = 0
        for job in reversed(mine):
            known = job.commitment.content_id in self.scores
            kept = self.scores.get(job.commitment.content_id)
            fresh = not known or (kept is None and job.output is not None)
            if fresh and (give_up is None or not give_up()):
                llm, calibration = self.llms.get(request.model_id, (None, DEFAULT_CALIBRATION))
                judged = verify_generation(job.request, job.commitment, job.output, llm,
                                           calibration, threads=self.runtime.threads)
                self.stats.seconds += judged.seconds
                self._keep_score(job.commitment, judged)
                kept = judged.score if judged.judged else None
            elif fresh:
                kept = None  # no time left to score it
            missing += kept is None
            scores.append(kept)
        scores.reverse()
        scores.append(score)
        return record_evidence(scores, mu0), missing

    def has_score(self, commitment: Commitment) -> bool:
        """Whether this validator keeps a score for the job: a record need not fetch its output."""
        return self.scores.get(commitment.content_id) is not None

    def wants_record(self, request: JobRequest, commitment: Commitment) -> bool:
        """Whether an audit of this job should be given the node's record: an ``llm`` job of a
        (node, model, dtype) whose evidence in this validator's audits reached
        ``RECORD_TRIGGER``."""
        if self.mode_of(request, commitment) != LLM_MODE:
            return False
        try:
            dtype = parse_job(request).dtype
        except LLMJobError:
            return False
        key = (commitment.node, request.model_id, dtype)
        return self.evidence.get(key, NodeEvidence()).log_wealth >= RECORD_TRIGGER

    def flagged(self) -> list[tuple[bytes, bytes, str]]:
        """The (node, model, dtype) whose ``llm`` audits stand flagged by the evidence now."""
        return [key for key, evidence in self.evidence.items() if evidence.standing]

    def needs_output(self, request: JobRequest, commitment: Commitment) -> bool:
        """Whether judging this job needs the output the node served: only ``llm`` jobs do
        (``exact``, ``tensor`` and zk jobs are judged from the request and the commitment)."""
        return self.mode_of(request, commitment) == LLM_MODE

    def audit(
        self,
        request: JobRequest,
        commitment: Commitment,
        beacon_round: int,
        output: Tensor | None = None,
        record: Sequence[RecordJob] | None = None,
        give_up: GiveUp | None = None,
    ) -> Attestation | Evidence:
        """Re-execute a sampled job; FRAUD becomes evidence, anything else an attestation.

        ``output`` is the output the node served (needed for ``llm`` jobs); ``record`` the
        node's record as the ledger lists it, with outputs, when :meth:`wants_record` asks;
        ``give_up`` says when the time left for the duty is too short to score more of it.
        """
        self.stats.audited += 1
        check = self._check(request, commitment, output, audit=True, record=record,
                            give_up=give_up)
        if check.verdict is Verdict.FRAUD:
            self.stats.mismatches += 1
            mode = self.mode_of(request, commitment)
            return Evidence(
                offence=(
                    Offence.INVALID_PROOF if mode == ZK_MODE
                    else Offence.RECORD if check.on_record
                    else Offence.MISMATCH
                ),
                job_id=commitment.job_id,
                accuser=self.validator_id,
                commitment=commitment.encode(),
                chain_id=commitment.chain_id,
                observed_hash=check.observed_hash,
                beacon_round=beacon_round,
                detail=check.reason,
            ).signed(self.key)
        return self._attestation(commitment, check, beacon_round)

    def vote(
        self,
        request: JobRequest,
        commitment: Commitment,
        beacon_round: int,
        output: Tensor | None = None,
        record: Sequence[RecordJob] | None = None,
        on_record: bool = False,
        give_up: GiveUp | None = None,
        unknown: int = 0,
    ) -> Attestation:
        """A committee member's independent re-execution, signed whatever it finds; in a
        ``RECORD`` dispute (``on_record``) judged with the node's ``record``, scored until
        ``give_up`` (a record not judged whole, or with ``unknown`` jobs the ledger listed
        but could not give, is never voted VALID)."""
        self.stats.votes += 1
        check = self._check(request, commitment, output, record=record, on_record=on_record,
                            give_up=give_up, unknown=unknown)
        return self._attestation(commitment, check, beacon_round)

    def inconclusive(self, commitment: Commitment, beacon_round: int, reason: str
                     ) -> Attestation:
        """An INCONCLUSIVE verdict without re-executing: this validator could not decide."""
        self.stats.verdicts[Verdict.INCONCLUSIVE] += 1
        return self._attestation(commitment, Check(Verdict.INCONCLUSIVE, reason, b"", 0.0),
                                 beacon_round)

    def _attestation(self, commitment: Commitment, check: Check, beacon_round: int) -> Attestation:
        return Attestation(
            job_id=commitment.job_id,
            commitment_id=commitment.content_id,
            validator=self.validator_id,
            verdict=check.verdict,
            beacon_round=beacon_round,
            chain_id=commitment.chain_id,
            observed_hash=check.observed_hash,
            reason=check.reason,
        ).signed(self.key)
