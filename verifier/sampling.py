"""Sampling policy: which committed jobs are audited, and by which validator.

Whether a job is audited is :func:`protocol.sampling.sampled` — a pure function
of the beacon value of the job's sample round, the job id, the commitment id
and the rate. Among the bonded validators, the one that audits it is drawn
from the same sample seed, so the work spreads evenly and nobody can steer
which validator sees which job.
"""

from __future__ import annotations

from collections.abc import Iterable

from protocol.sampling import draw_committee, sample_seed, sampled

__all__ = ["assigned_validator", "sampled"]


def assigned_validator(
    beacon_value: bytes, job_id: bytes, commitment_id: bytes, validators: Iterable[bytes]
) -> bytes | None:
    """The validator drawn to audit a sampled job; ``None`` when there are none."""
    seed = sample_seed(beacon_value, job_id, commitment_id)
    drawn = draw_committee(seed, job_id, validators, 1)
    return drawn[0] if drawn else None
