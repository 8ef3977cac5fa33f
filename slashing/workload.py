"""A deterministic stream of valid ledger events: a small honest network at work.

Benchmarks and crash tests need many events that the rules accept, in an
order that exercises the common path: genesis, then rounds in which clients'
signed jobs are recorded with nodes' signed commitments, the beacon reveals a
round (and the ledger assigns each sampled job its auditor), the assigned
validator attests each sampled job, and earlier jobs settle. Nodes bond
enough that the jobs they keep in flight stay within their in-flight limit. The
stream is a pure function of its arguments (devnet keys, a hash-chain beacon),
so a crash test can regenerate it and compare a recovered log with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from protocol.codec import Tensor
from protocol.hashing import sha256
from protocol.keys import SigningKey
from protocol.messages import Attestation, Commitment, JobRequest, Verdict
from protocol.sampling import draw_auditor, sampled
from slashing import constants as c
from slashing.events import (
    Attest,
    BeaconRound,
    Bond,
    Event,
    Mint,
    RecordJob,
    RegisterBeacon,
    SetParams,
)
from slashing.rules import genesis_chain_id
from slashing.state import LedgerParams

_BEACON_TAG = b"assay/v1/workload-beacon\x00"
NODE_STAKE_MINIMA = 10
"""Each node bonds ten times the minimum stake: in-flight room for 100 jobs at p = 0.2."""


@dataclass(frozen=True)
class Workload:
    """The shape of the network; the defaults are a small devnet."""

    jobs: int
    jobs_per_round: int = 50
    nodes: int = 4
    validators: int = 5
    clients: int = 4
    sample_ppm: int = 200_000
    seed: int = 0

    def params(self) -> LedgerParams:
        base = LedgerParams.default()
        return LedgerParams(**{**base.__dict__, "sample_ppm": self.sample_ppm})

    def key(self, role: str, index: int) -> SigningKey:
        return SigningKey.derive(f"workload/{self.seed}/{role}/{index}")


def beacon_round(seed: int, number: int) -> BeaconRound:
    """A stand-in beacon round: a 96-byte "signature" whose SHA-256 is the randomness."""
    head = sha256(_BEACON_TAG + seed.to_bytes(8, "big") + number.to_bytes(8, "big"))
    signature = head + sha256(head + b"\x01") + sha256(head + b"\x02")
    return BeaconRound(round=number, signature=signature, randomness=sha256(signature))


def events(workload: Workload) -> Iterator[Event]:
    """The stream: genesis, then one beacon round per ``jobs_per_round`` jobs, until ``jobs``."""
    w = workload
    params = w.params()
    fee = params.reward + params.verification_fee
    nodes = [w.key("node", i) for i in range(w.nodes)]
    validators = [w.key("validator", i) for i in range(w.validators)]
    clients = [w.key("client", i) for i in range(w.clients)]
    model = sha256(b"workload/model")
    register = RegisterBeacon(public_key=sha256(b"workload/beacon") + bytes(16), first_round=0)
    set_params = SetParams(params=params)
    chain_id = genesis_chain_id(register, set_params)
    yield register
    yield set_params
    for client in clients:
        yield Mint(account=client.public.raw, amount=fee * (w.jobs // w.clients + 1))
    for role, keys, minima in ((c.NODE, nodes, NODE_STAKE_MINIMA), (c.VALIDATOR, validators, 2)):
        for key in keys:
            yield Mint(account=key.public.raw, amount=minima * c.MIN_STAKE[role])
            yield Bond(account=key.public.raw, role=role, amount=minima * c.MIN_STAKE[role])
    round_number = -1
    last_round: list[tuple[bytes, bytes, bytes]] = []
    for index in range(w.jobs):
        client, node = clients[index % w.clients], nodes[index % w.nodes]
        request = JobRequest(
            model_id=model,
            input=Tensor("int64", (1,), index.to_bytes(8, "little")),
            client=client.public.raw,
            node=node.public.raw,
            nonce=index,
            fee=fee,
            expiry_round=round_number + 1 + params.challenge_window,
            chain_id=chain_id,
        ).signed(client)
        commitment = Commitment(
            job_id=request.job_id,
            model_id=model,
            input_hash=sha256(b"input" + request.job_id),
            output_hash=sha256(b"output" + request.job_id),
            node=node.public.raw,
            chain_id=chain_id,
        ).signed(node)
        yield RecordJob(request=request.encode(), commitment=commitment.encode())
        last_round.append((request.job_id, commitment.content_id, node.public.raw))
        if (index + 1) % w.jobs_per_round == 0 or index + 1 == w.jobs:
            round_number += 1
            revealed = beacon_round(w.seed, round_number)
            yield revealed
            yield from _audits(revealed, round_number, last_round, validators, params.sample_ppm,
                               chain_id)
            last_round = []
    for _ in range(params.challenge_window + 2):
        round_number += 1
        yield beacon_round(w.seed, round_number)


def _audits(
    revealed: BeaconRound,
    round_number: int,
    jobs: list[tuple[bytes, bytes, bytes]],
    validators: list[SigningKey],
    sample_ppm: int,
    chain_id: bytes,
) -> Iterator[Event]:
    """A VALID attestation on each sampled job, by the validator the ledger assigns it
    (every validator is bonded and none is jailed, so the draw is over all of them)."""
    by_key = {v.public.raw: v for v in validators}
    for job_id, commitment_id, node in jobs:
        if not sampled(revealed.randomness, job_id, commitment_id, sample_ppm):
            continue
        chosen = draw_auditor(revealed.randomness, job_id, 0, [v for v in by_key if v != node])
        assert chosen is not None
        attestation = Attestation(
            job_id=job_id,
            commitment_id=commitment_id,
            validator=chosen,
            verdict=Verdict.VALID,
            beacon_round=round_number,
            chain_id=chain_id,
        ).signed(by_key[chosen])
        yield Attest(attestation=attestation.encode())
