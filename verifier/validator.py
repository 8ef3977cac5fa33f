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
evidence reaches its bound (:meth:`Validator.flagged`). A flagged node's jobs
that score above the honest mean are INCONCLUSIVE, never FRAUD: a dispute
committee re-executes one job alone, so an accusation resting on the audit
record would be voted VALID and cost this validator its slash. ``zk``
commitments are checked by their proof (:mod:`verifier.zk`), every one of
them, and a failing proof is ``INVALID_PROOF`` evidence that needs no committee. As a member
of a dispute committee it re-executes the same way and signs its vote as an
attestation, whatever the verdict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import nn

from protocol.codec import Tensor
from protocol.keys import SigningKey
from protocol.messages import Attestation, Commitment, Evidence, JobRequest, Offence, Verdict
from prover.llm.job import DEFAULT_CALIBRATION, Calibration, parse_job
from prover.llm.model import LLM
from prover.node import EXACT_MODE
from prover.runtime import DeterministicRuntime
from prover.tensor import TENSOR_MODE, TensorModel
from verifier.llm import LLM_MODE, LLMCheck, verify_generation
from verifier.llm_evidence import LOG_THRESHOLD, NodeEvidence, accumulate, honest_mean_bound
from verifier.reexecute import Check, check_exact
from verifier.tensor import check_tensor
from verifier.zk import ZK_MODE, ZkKey, check_zk


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
        audit: bool = False,
    ) -> Check:
        """Judge one job; an audit (not a vote) adds an ``llm`` job's score to the node's
        evidence."""
        mode = self.mode_of(request, commitment)
        if mode == ZK_MODE:
            check = check_zk(request, commitment, self.zk_keys.get(request.model_id))
        elif mode == TENSOR_MODE:
            judged = check_tensor(request, commitment, self.tensors.get(request.model_id),
                                  self.runtime.threads)
            check = Check(judged.verdict, judged.reason, b"", judged.seconds)
        elif mode == LLM_MODE:
            check = self._check_llm(request, commitment, output, audit)
        else:
            model = self.models.get(request.model_id)
            check = check_exact(request, commitment, model, self.runtime)
        self.stats.seconds += check.seconds
        self.stats.verdicts[check.verdict] += 1
        return check

    def _check_llm(self, request: JobRequest, commitment: Commitment, output: Tensor | None,
                   audit: bool) -> Check:
        """One job's check, then the node's evidence: only jobs this validator scored count."""
        llm, calibration = self.llms.get(request.model_id, (None, DEFAULT_CALIBRATION))
        judged: LLMCheck = verify_generation(request, commitment, output, llm, calibration,
                                             threads=self.runtime.threads)
        check = Check(judged.verdict, judged.reason, b"", judged.seconds)
        if not judged.judged or judged.verdict is Verdict.FRAUD:
            return check
        dtype = parse_job(request).dtype  # a judged job's parameters parsed
        mu0 = honest_mean_bound(calibration.for_dtype(dtype))
        key = (commitment.node, request.model_id, dtype)
        evidence = self.evidence.get(key, NodeEvidence())
        if audit:
            evidence = accumulate(evidence, judged.score, mu0)
            self.evidence[key] = evidence
        if evidence.standing and judged.score > mu0:
            return Check(Verdict.INCONCLUSIVE, (
                f"node flagged by evidence across {evidence.audits} audits of its {dtype} jobs: "
                f"log-wealth {evidence.log_wealth:.1f} ≥ {LOG_THRESHOLD:.1f} against an honest "
                f"mean score ≤ {mu0:.3f}, and this job scores {judged.score:.3f} "
                f"({judged.reason}); not accused: a committee judges this one job alone"),
                b"", judged.seconds)
        return check

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
    ) -> Attestation | Evidence:
        """Re-execute a sampled job; FRAUD becomes evidence, anything else an attestation.

        ``output`` is the output the node served (needed for ``llm`` jobs).
        """
        self.stats.audited += 1
        check = self._check(request, commitment, output, audit=True)
        if check.verdict is Verdict.FRAUD:
            self.stats.mismatches += 1
            return Evidence(
                offence=(
                    Offence.INVALID_PROOF
                    if self.mode_of(request, commitment) == ZK_MODE
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
    ) -> Attestation:
        """A committee member's independent re-execution, signed whatever it finds."""
        self.stats.votes += 1
        check = self._check(request, commitment, output)
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
