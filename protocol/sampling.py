"""Who gets audited: pure functions of a beacon value (DESIGN decision 3).

A job is sampled when ``H(tag ‖ beacon(R) ‖ job_id ‖ commitment_id)``, read as
a 64-bit integer, falls below ``p · 2^64``. R is the first beacon round after
the commitment was recorded, so a node cannot know whether it will be audited
when it commits, and since the commitment id enters the hash it cannot grind
(re-commit until unsampled) without the ledger seeing two commitments for one
job — which is equivocation and is slashed.

Rates are integers in parts per million: protocol state never holds floats.
"""

from __future__ import annotations

from collections.abc import Iterable

from protocol.hashing import sha256

PPM = 1_000_000
_SAMPLE_TAG = b"assay/v1/sample\x00"
_COMMITTEE_TAG = b"assay/v1/committee\x00"


def check_rate_ppm(rate_ppm: int) -> int:
    if isinstance(rate_ppm, bool) or not isinstance(rate_ppm, int) or not 0 <= rate_ppm <= PPM:
        raise ValueError(f"sampling rate must be an integer in 0..{PPM} ppm, got {rate_ppm!r}")
    return rate_ppm


def sample_seed(beacon_value: bytes, job_id: bytes, commitment_id: bytes) -> bytes:
    """The 32-byte seed that decides whether (and by whom) a job is checked."""
    if len(beacon_value) != 32 or len(job_id) != 32 or len(commitment_id) != 32:
        raise ValueError("beacon value, job id and commitment id must each be 32 bytes")
    return sha256(_SAMPLE_TAG + beacon_value + job_id + commitment_id)


def is_sampled_seed(seed: bytes, rate_ppm: int) -> bool:
    """``seed`` as a uniform 64-bit draw, compared with ``rate_ppm / 10^6`` exactly."""
    check_rate_ppm(rate_ppm)
    return int.from_bytes(seed[:8], "big") * PPM < rate_ppm * 2**64


def sampled(beacon_value: bytes, job_id: bytes, commitment_id: bytes, rate_ppm: int) -> bool:
    """True when this committed job must be re-executed by a validator."""
    return is_sampled_seed(sample_seed(beacon_value, job_id, commitment_id), rate_ppm)


def draw_committee(
    beacon_value: bytes, dispute_id: bytes, candidates: Iterable[bytes], k: int
) -> tuple[bytes, ...]:
    """The k candidates with the lowest ``H(beacon ‖ dispute ‖ candidate)``.

    Deterministic and order-independent, so every honest party computes the
    same committee from public data; callers remove the accuser and the
    accused before calling.
    """
    if k < 0:
        raise ValueError(f"committee size must be non-negative, got {k}")
    ranked = sorted(
        set(candidates), key=lambda c: sha256(_COMMITTEE_TAG + beacon_value + dispute_id + c)
    )
    return tuple(ranked[:k])
