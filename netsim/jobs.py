"""A simulated job's messages and ids; outputs are hashes, never model runs.

An honest output hash is a function of the job alone, ``H(tag ‖ job_id)``;
a cheater's substitute model gives a different one. A validator's
re-execution "recomputes" the honest hash, so a cheated job mismatches
exactly as in the exact verification mode.

Two ways to name a job, used by :mod:`netsim.fast`:

* ``message`` ids are the content ids of the real :class:`JobRequest` and
  :class:`Commitment` that the reference path signs and records: the job id
  and commitment id the ledger sees. Building them costs ~140 µs a job.
* ``hash`` ids are ``H(tag ‖ seed ‖ job index)`` and
  ``H(tag ‖ job id ‖ node ‖ cheated)``, ~2 µs a job. Both are SHA-256 outputs
  of distinct inputs, so every draw keyed by them (sampling, auditor,
  committee) has the same distribution; only which jobs land where differs.
"""

from __future__ import annotations

from netsim.population import Population
from protocol.codec import Tensor, encode
from protocol.hashing import sha256
from protocol.messages import Commitment, JobRequest

OUTPUT_TAG = b"netsim/output\x00"
SUBSTITUTE_TAG = b"netsim/substitute-output\x00"
GRIEF_TAG = b"netsim/grief\x00"
JOB_TAG = b"netsim/job\x00"
COMMITMENT_TAG = b"netsim/commitment\x00"


def job_input(index: int) -> Tensor:
    return Tensor("uint8", (8,), index.to_bytes(8, "big"))


def request(population: Population, index: int) -> JobRequest:
    """The unsigned request of global job ``index``; client ``index mod clients`` pays."""
    config = population.config
    return JobRequest(
        model_id=population.model_id,
        input=job_input(index),
        client=population.client_ids[index % config.clients],
        nonce=index,
        fee=config.fee,
    )


def honest_output(job_id: bytes) -> bytes:
    return sha256(OUTPUT_TAG + job_id)


def output_hash(job_id: bytes, cheated: bool) -> bytes:
    return sha256(SUBSTITUTE_TAG + job_id) if cheated else honest_output(job_id)


def griefing_output(job_id: bytes) -> bytes:
    """What a griefing validator claims to have observed: anything but the committed hash."""
    return sha256(GRIEF_TAG + job_id)


def commitment(
    population: Population, job: JobRequest, node: int, cheated: bool
) -> Commitment:
    """The unsigned commitment node ``node`` makes to ``job``."""
    return Commitment(
        job_id=job.job_id,
        model_id=job.model_id,
        input_hash=sha256(encode(job.input)),
        output_hash=output_hash(job.job_id, cheated),
        node=population.node_ids[node],
    )


def message_ids(
    population: Population, index: int, node: int, cheated: bool
) -> tuple[bytes, bytes]:
    """(job id, commitment id) exactly as the ledger computes them."""
    job = request(population, index)
    return job.job_id, commitment(population, job, node, cheated).content_id


def hash_ids(seed: bytes, index: int, node: int, cheated: bool) -> tuple[bytes, bytes]:
    """(job id, commitment id) as SHA-256 of the run seed, job index, node and choice."""
    job_id = sha256(JOB_TAG + seed + index.to_bytes(8, "big"))
    flag = b"\x01" if cheated else b"\x00"
    return job_id, sha256(COMMITMENT_TAG + job_id + node.to_bytes(8, "big") + flag)
