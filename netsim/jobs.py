"""A simulated job: its messages, its ids, and its outputs (hashes, never model runs).

Job ``index`` (counted over the whole run) is the :class:`JobRequest` that
client ``index mod clients`` sends with input and nonce ``index``; the node
that serves it commits to it with a :class:`Commitment`. Its job id and
commitment id are those messages' content ids, exactly as the ledger
computes them, on both protocol paths: this is the job's one identity, and
every draw keyed by it (sampling, auditor, committee) is the same on both.

The reference path builds, signs and records the messages. The fast path
needs only their ids, and building and encoding the two messages costs ~160 µs a job, so
:class:`JobIds` computes the same canonical bytes from templates: the real
encoding of one request and one commitment, cut at the fields that vary from
job to job. It checks on construction that its bytes equal the codec's for
jobs of every nonce width; the reference path checks every job it records.

An honest output hash is a function of the job alone, ``H(tag ‖ job_id)``;
a cheater's substitute model gives a different one. A validator's
re-execution "recomputes" the honest hash, so a cheated job mismatches
exactly as in the exact verification mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import sha256 as _sha256

import msgpack

from netsim.population import Population
from protocol.codec import Tensor, encode
from protocol.hashing import sha256
from protocol.messages import Commitment, JobRequest

OUTPUT_TAG = b"netsim/output\x00"
SUBSTITUTE_TAG = b"netsim/substitute-output\x00"
GRIEF_TAG = b"netsim/grief\x00"
INPUT_BYTES = 8
CHECKED_INDICES = (0, 1, 200, 70_000, 2**33 + 5)
"""Jobs whose template bytes are compared with the codec's: one per msgpack integer width."""
CANARY_SALT_TAG = b"netsim/canary-salt\x00"
CANARY_NONCE = 2**48
"""Canary requests' nonces start here, apart from the clients' jobs."""


def job_input(index: int) -> Tensor:
    return Tensor("uint8", (INPUT_BYTES,), index.to_bytes(INPUT_BYTES, "big"))


EXPIRY_ROUNDS = 2**32
"""A simulated request may be recorded in any round of a run."""


def request(population: Population, index: int, node: int) -> JobRequest:
    """The unsigned request of global job ``index`` to ``node``; client ``index mod clients``
    pays."""
    config = population.config
    return JobRequest(
        model_id=population.model_id,
        input=job_input(index),
        client=population.client_ids[index % config.clients],
        node=population.node_ids[node],
        nonce=index,
        fee=config.fee,
        expiry_round=EXPIRY_ROUNDS,
        chain_id=population.chain_id,
    )


def canary_request(population: Population, number: int, node: bytes) -> JobRequest:
    """The unsigned request of the operator's ``number``-th canary, to canary node ``node``."""
    return JobRequest(
        model_id=population.model_id,
        input=job_input(CANARY_NONCE + number),
        client=population.canary_client_id,
        node=node,
        nonce=CANARY_NONCE + number,
        fee=population.config.fee,
        expiry_round=EXPIRY_ROUNDS,
        chain_id=population.chain_id,
    )


def canary_commitment(job: JobRequest) -> Commitment:
    """A canary node's commitment: a wrong output, as a cheater's would be."""
    return Commitment(
        job_id=job.job_id,
        model_id=job.model_id,
        input_hash=sha256(encode(job.input)),
        output_hash=output_hash(job.job_id, True),
        node=job.node,
        chain_id=job.chain_id,
    )


def canary_salt(job_id: bytes) -> bytes:
    return sha256(CANARY_SALT_TAG + job_id)


def canary_ids(population: Population, number: int, node: bytes) -> tuple[bytes, bytes]:
    """(job id, commitment id) of a canary, as the ledger computes them."""
    job = canary_request(population, number, node)
    return job.job_id, canary_commitment(job).content_id


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
        chain_id=job.chain_id,
    )


def message_ids(
    population: Population, index: int, node: int, cheated: bool
) -> tuple[bytes, bytes]:
    """(job id, commitment id) from the real messages: what the ledger records."""
    job = request(population, index, node)
    return job.job_id, commitment(population, job, node, cheated).content_id


@dataclass(frozen=True)
class Template:
    """Canonical bytes with holes: the pieces around the values that vary."""

    pieces: tuple[bytes, ...]

    @classmethod
    def cut(cls, encoded: bytes, holes: Sequence[bytes]) -> Template:
        """Cut ``encoded`` at each hole, in order; each must occur in it exactly once."""
        pieces, start = [], 0
        for hole in holes:
            at = encoded.find(hole)
            if encoded.count(hole) != 1 or at < start:
                raise ValueError(f"a template hole does not occur exactly once: {hole.hex()}")
            pieces.append(encoded[start:at])
            start = at + len(hole)
        pieces.append(encoded[start:])
        return cls(tuple(pieces))

    def fill(self, values: Sequence[bytes]) -> bytes:
        out = [self.pieces[0]]
        for value, piece in zip(values, self.pieces[1:], strict=True):
            out += (value, piece)
        return b"".join(out)


_pack = msgpack.Packer(use_bin_type=True).pack
"""One value as the codec writes it inside a map (plain msgpack for ints and bytes)."""


def _packed(value: int | bytes) -> bytes:
    packed = _pack(value)
    assert isinstance(packed, bytes)
    return packed


class JobIds:
    """The ledger's (job id, commitment id) of every job, without building messages."""

    def __init__(self, population: Population) -> None:
        self.population = population
        marker = 2**33 + 5
        job = request(population, marker, 0)
        data = job.input.data
        self.input = Template.cut(encode(job.input), [data])
        self.clients = [_packed(c) for c in population.client_ids]
        self.nodes = [_packed(n) for n in population.node_ids]
        # In a canonical map, keys are written in UTF-8 order: client, ..., input, ..., node, nonce
        self.request = Template.cut(
            job.body_bytes(),
            [_packed(job.client), encode(job.input), _packed(job.node), _packed(marker)],
        )
        made = commitment(population, job, 0, cheated=False)
        # Keys in order: input_hash, job_id, ..., node, output_hash
        self.commitment = Template.cut(
            made.body_bytes(),
            [_packed(made.input_hash), _packed(made.job_id), _packed(made.node),
             _packed(made.output_hash)],
        )
        self.digest = _packed(made.job_id)[: -len(made.job_id)]
        """The header msgpack writes before a 32-byte digest."""
        for index in CHECKED_INDICES:
            for cheated in (False, True):
                node = index % population.config.nodes
                expected = message_ids(population, index, node, cheated)
                assert self.ids(index, node, cheated) == expected, "job id templates are stale"

    def ids(self, index: int, node: int, cheated: bool) -> tuple[bytes, bytes]:
        """(job id, commitment id) of job ``index`` served by ``node``."""
        tensor_pieces, request_pieces = self.input.pieces, self.request.pieces
        tensor = tensor_pieces[0] + index.to_bytes(INPUT_BYTES, "big") + tensor_pieces[1]
        job_id = _sha256(b"".join((
            request_pieces[0], self.clients[index % len(self.clients)], request_pieces[1],
            tensor, request_pieces[2], self.nodes[node], request_pieces[3], _pack(index),
            request_pieces[4],
        ))).digest()
        output = _sha256((SUBSTITUTE_TAG if cheated else OUTPUT_TAG) + job_id).digest()
        pieces, digest = self.commitment.pieces, self.digest
        body = b"".join((
            pieces[0], digest, _sha256(tensor).digest(), pieces[1], digest, job_id, pieces[2],
            self.nodes[node], pieces[3], digest, output, pieces[4],
        ))
        return job_id, _sha256(body).digest()
