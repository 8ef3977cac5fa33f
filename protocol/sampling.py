"""Who gets audited: pure functions of a beacon value (DESIGN decision 3).

A job is sampled when ``H(tag ‖ beacon(R) ‖ job_id ‖ commitment_id)``, read as
a 64-bit integer, falls below ``p · 2^64``. R is the first beacon round after
the commitment was recorded, so a node cannot know whether it will be audited
when it commits, and since the commitment id enters the hash it cannot grind
(re-commit until unsampled) without the ledger seeing two commitments for one
job — which is equivocation and is slashed.

Who checks a job is drawn the same way, keyed by the job alone: its auditor
(:func:`draw_auditor`) from the value of its sample round, and the committee
of a dispute over it (:func:`draw_dispute_committee`) from the value of a
round revealed *after* the dispute was opened. Neither key holds anything a
party can choose (not the accuser, not the wording of its evidence), and the
value is unknown when the party acts, so there is nothing to grind: whoever
accuses, whenever, the job meets a committee nobody could foresee. A draw
that must be repeated (an auditor that stayed silent, a committee without a
majority) is keyed by its number and drawn from a later round.

Rates are integers in parts per million: protocol state never holds floats.
"""

from __future__ import annotations

from collections.abc import Iterable

from protocol.hashing import sha256

PPM = 1_000_000
RECORD_JOBS = 128
"""The most of a node's sampled jobs of one model that a ``RECORD`` dispute's record reaches
back: the ledger lists the last ``RECORD_JOBS`` before the accused job, in the order it
recorded them, so the committee's work is bounded and no accuser chooses what it holds."""
_SAMPLE_TAG = b"assay/v1/sample\x00"
_COMMITTEE_TAG = b"assay/v1/committee\x00"
_AUDIT_KEY_TAG = b"assay/v1/audit-draw\x00"
_DISPUTE_KEY_TAG = b"assay/v1/dispute-draw\x00"


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


def _draw_key(tag: bytes, job_id: bytes, draw: int) -> bytes:
    if len(job_id) != 32 or not 0 <= draw < 2**16:
        raise ValueError("a draw is keyed by a 32-byte job id and a draw number below 2^16")
    return sha256(tag + job_id + draw.to_bytes(2, "big"))


def draw_auditor(
    beacon_value: bytes, job_id: bytes, draw: int, candidates: Iterable[bytes]
) -> bytes | None:
    """The validator that audits ``job_id`` at its ``draw``-th assignment; None if nobody can.

    The ledger draws number 0 from the value of the job's sample round, and a
    replacement for an auditor that missed its deadline (or could not decide)
    from the round in which the deadline passed. One hash per draw, read as a
    256-bit integer, indexes the candidates in byte order (so the order they
    are given in does not matter; the bias of the modulo is below n/2^256):
    every sampled job is drawn for, so the draw costs the same however many
    validators are bonded.
    """
    ranked = sorted(set(candidates))
    if not ranked:
        return None
    seed = sha256(_COMMITTEE_TAG + beacon_value + _draw_key(_AUDIT_KEY_TAG, job_id, draw))
    return ranked[int.from_bytes(seed, "big") % len(ranked)]


def draw_dispute_committee(
    beacon_value: bytes, job_id: bytes, draw: int, candidates: Iterable[bytes], k: int
) -> tuple[bytes, ...]:
    """The ``draw``-th committee of the dispute over ``job_id``: one per job, whoever accuses."""
    return draw_committee(beacon_value, _draw_key(_DISPUTE_KEY_TAG, job_id, draw), candidates, k)
