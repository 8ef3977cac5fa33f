"""A validator: audits sampled jobs and votes in disputes.

For a sampled job the validator re-executes with the prover's runtime and
signs what it found: an :class:`~assay.messages.Attestation` for VALID or
INCONCLUSIVE, or :class:`~assay.messages.Evidence` for FRAUD, which embeds the
node's signed commitment so the claim can be checked by anyone. As a member
of a dispute committee it re-executes the same way and signs its vote as an
attestation, whatever the verdict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import nn

from assay.keys import SigningKey
from assay.messages import Attestation, Commitment, Evidence, JobRequest, Offence, Verdict
from prover.runtime import DeterministicRuntime
from verifier.reexecute import Check, check_exact


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
    ) -> None:
        self.key = key
        self.models = dict(models)
        self.runtime = runtime or DeterministicRuntime()
        self.stats = ValidatorStats()

    @property
    def validator_id(self) -> bytes:
        return self.key.public.raw

    def _check(self, request: JobRequest, commitment: Commitment) -> Check:
        check = check_exact(request, commitment, self.models.get(request.model_id), self.runtime)
        self.stats.seconds += check.seconds
        self.stats.verdicts[check.verdict] += 1
        return check

    def audit(
        self, request: JobRequest, commitment: Commitment, beacon_round: int
    ) -> Attestation | Evidence:
        """Re-execute a sampled job; FRAUD becomes evidence, anything else an attestation."""
        self.stats.audited += 1
        check = self._check(request, commitment)
        if check.verdict is Verdict.FRAUD:
            self.stats.mismatches += 1
            return Evidence(
                offence=Offence.MISMATCH,
                job_id=commitment.job_id,
                accuser=self.validator_id,
                commitment=commitment.encode(),
                observed_hash=check.observed_hash,
                beacon_round=beacon_round,
                detail=check.reason,
            ).signed(self.key)
        return self._attestation(commitment, check, beacon_round)

    def vote(self, request: JobRequest, commitment: Commitment, beacon_round: int) -> Attestation:
        """A committee member's independent re-execution, signed whatever it finds."""
        self.stats.votes += 1
        return self._attestation(commitment, self._check(request, commitment), beacon_round)

    def _attestation(self, commitment: Commitment, check: Check, beacon_round: int) -> Attestation:
        return Attestation(
            job_id=commitment.job_id,
            commitment_id=commitment.content_id,
            validator=self.validator_id,
            verdict=check.verdict,
            beacon_round=beacon_round,
            observed_hash=check.observed_hash,
            reason=check.reason,
        ).signed(self.key)
