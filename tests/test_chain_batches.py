"""Batched commitments on chain: one Merkle root per node per round, leaves proven against it,
jobs recorded from proven leaves, equivocation slashed from two leaves alone.

The bad inputs of the settlement issue — a leaf with a wrong Merkle proof, a batch root
posted twice for one round, evidence for an unsampled leaf, a forged beacon round, a
transaction from an unbonded account — each revert with the custom error named for its
rule; the Python side raises :class:`ContractRevert` carrying that name and its arguments,
and the ledger's round, supply, burned total and every account are unchanged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from protocol.beacon import DevnetBeacon
from protocol.hashing import sha256
from protocol.messages import Verdict
from protocol.sampling import sampled
from slashing import constants as c
from slashing.evm.chain import Chain, ContractRevert
from slashing.evm.ledger import EvmLedger, deploy_devnet, leaf
from slashing.evm.merkle import JobBatch, JobLeaf
from slashing.state import LedgerParams

P = LedgerParams.default()
STAKE = 2 * c.MIN_STAKE[c.NODE]


@dataclass
class World:
    chain: Chain
    ledger: EvmLedger
    holder: DevnetBeacon
    operator: str
    node: str
    validators: list[str]
    outsider: str
    previous: bytes = b""

    def next_round(self) -> int:
        number = self.ledger.current_round() + 1
        revealed = self.holder.reveal(number)
        self.ledger.submit_devnet_round(revealed, self.operator, self.previous)
        self.ledger.advance(self.operator)
        self.previous = revealed.signature
        return number

    def snapshot(self) -> tuple[Any, ...]:
        everyone = [self.node, *self.validators, self.outsider]
        return (self.ledger.totals(), self.ledger.current_round(),
                [self.ledger.account(a) for a in everyone])


@pytest.fixture
def world(chain: Chain) -> World:
    operator, node, v1, v2, outsider = chain.accounts[:5]
    holder = DevnetBeacon(0xA55A)
    ledger = deploy_devnet(chain, P, holder.public_key, operator)
    w = World(chain, ledger, holder, operator, node, [v1, v2], outsider)
    w.next_round()
    for account in (node, v1, v2, outsider):
        ledger.mint(account, 3 * STAKE, operator)
    ledger.bond(c.NODE, STAKE, node)
    for v in (v1, v2):
        ledger.register(sha256(v.encode()), v, operator)
        ledger.bond(c.VALIDATOR, STAKE, v)
    return w


def jobs(n: int, tag: bytes = b"") -> list[JobLeaf]:
    def tagged(what: bytes, i: int) -> bytes:
        return sha256(what + tag + i.to_bytes(4, "big"))

    return [JobLeaf(sha256(b"job" + i.to_bytes(4, "big")), tagged(b"commit", i),
                    tagged(b"output", i)) for i in range(n)]


def refused(world: World, error: str, call: Any, *args: Any) -> ContractRevert:
    before = world.snapshot()
    with pytest.raises(ContractRevert) as caught:
        call(*args)
    assert caught.value.error == error, str(caught.value)
    assert str(caught.value).startswith(error + "(")
    assert world.snapshot() == before
    return caught.value


def test_batch_posted_and_every_leaf_proven(world: World) -> None:
    batch = JobBatch.of(jobs(37))
    round_number = world.ledger.current_round()
    world.ledger.post_batch(round_number, batch, world.node)
    for index in (0, 1, 17, 36):
        assert world.ledger.contract.functions.verifyLeaf(
            leaf(world.node, round_number, batch, index)).call()


def test_wrong_merkle_proof_refused(world: World) -> None:
    batch = JobBatch.of(jobs(8))
    round_number = world.ledger.current_round()
    world.ledger.post_batch(round_number, batch, world.node)
    verify = world.ledger.contract.functions.verifyLeaf
    good = leaf(world.node, round_number, batch, 3)
    # A sibling flipped, a leaf moved to another index, a commitment swapped, a short path
    bad_path = [*good[9]]
    bad_path[1] = sha256(b"not a sibling")
    cases = [
        (*good[:9], bad_path),
        (*good[:4], 4, *good[5:]),
        (*good[:6], sha256(b"other commitment"), *good[7:]),
        (*good[:7], sha256(b"other output"), *good[8:]),
        (*good[:9], good[9][:-1]),
    ]
    for case in cases:
        with pytest.raises(ContractRevert, match=r"^InvalidMerkleProof"):
            world.chain.call(verify(tuple(case)))
    with pytest.raises(ContractRevert, match=r"^LeafOutOfRange"):
        world.chain.call(verify((*good[:4], 8, *good[5:])))
    with pytest.raises(ContractRevert, match=r"^UnknownBatch"):
        world.chain.call(verify((*good[:3], 9, *good[4:])))


def test_batch_root_posted_twice_for_one_round_refused(world: World) -> None:
    round_number = world.ledger.current_round()
    world.ledger.post_batch(round_number, JobBatch.of(jobs(4)), world.node)
    again = refused(world, "BatchAlreadyPosted", world.ledger.post_batch, round_number,
                    JobBatch.of(jobs(4, b"other")), world.node)
    assert again.arguments == (world.node, round_number)
    # The next round takes a new batch
    world.next_round()
    world.ledger.post_batch(round_number + 1, JobBatch.of(jobs(4, b"other")), world.node)


def test_batch_from_unbonded_account_refused(world: World) -> None:
    """The outsider holds tokens but never bonded; a validator is not bonded as a node."""
    round_number = world.ledger.current_round()
    refused(world, "NotBonded", world.ledger.post_batch, round_number, JobBatch.of(jobs(2)),
            world.outsider)
    refused(world, "NotBonded", world.ledger.post_batch, round_number, JobBatch.of(jobs(2)),
            world.validators[0])


def test_batch_for_another_round_refused(world: World) -> None:
    """A batch for the next round would be posted after its sample value could be known."""
    round_number = world.ledger.current_round()
    for wrong in (round_number + 1, round_number - 1 if round_number else round_number + 2):
        refused(world, "RoundNotCurrent", world.ledger.post_batch, wrong, JobBatch.of(jobs(2)),
                world.node)


def test_sampling_over_leaves_is_the_python_draw(world: World) -> None:
    batch = JobBatch.of(jobs(64))
    round_number = world.ledger.current_round()
    world.ledger.post_batch(round_number, batch, world.node)
    is_sampled = world.ledger.contract.functions.isSampled
    with pytest.raises(ContractRevert, match=r"^SampleRoundNotRevealed"):
        world.chain.call(is_sampled(leaf(world.node, round_number, batch, 0)))
    world.next_round()
    value = world.holder.reveal(round_number + 1).randomness
    for index in range(batch.count):
        item = batch.leaves[index]
        expected = sampled(value, item.job_id, item.commitment_id, P.sample_ppm)
        assert is_sampled(leaf(world.node, round_number, batch, index)).call() == expected


def _equivocating_batch(world: World) -> tuple[int, JobBatch]:
    first = jobs(1)[0]
    second = JobLeaf(first.job_id, sha256(b"second answer"), sha256(b"second output"))
    batch = JobBatch.of([first, *jobs(2, b"x")[1:], second])
    round_number = world.ledger.current_round()
    world.ledger.post_batch(round_number, batch, world.node)
    return round_number, batch


def test_equivocation_slashed_from_two_leaves(world: World) -> None:
    round_number, batch = _equivocating_batch(world)
    reporter = world.validators[0]
    before = world.ledger.account(reporter).balance
    first = leaf(world.node, round_number, batch, 0)
    second = leaf(world.node, round_number, batch, batch.count - 1)
    world.ledger.report_equivocation(first, second, reporter)
    node = world.ledger.account(world.node).node
    assert node.amount == STAKE - P.equivocation_slash
    assert node.slashed_out and node.offences == 1
    assert node.jailed_until == round_number + P.jail_period + 1
    share = P.equivocation_slash * P.reporter_share_bps // c.BPS
    assert world.ledger.account(reporter).balance == before + share
    assert world.ledger.totals()[1] == P.equivocation_slash - share
    # Once only, and the tombstoned node posts nothing more
    refused(world, "AlreadySlashedForEquivocation", world.ledger.report_equivocation, first,
            second, world.validators[1])
    world.next_round()
    refused(world, "NotBonded", world.ledger.post_batch, round_number + 1, JobBatch.of(jobs(1)),
            world.node)


def test_equivocation_evidence_refused(world: World) -> None:
    round_number, batch = _equivocating_batch(world)
    first = leaf(world.node, round_number, batch, 0)
    second = leaf(world.node, round_number, batch, batch.count - 1)
    other = leaf(world.node, round_number, batch, 1)
    report = world.ledger.report_equivocation
    refused(world, "NotEquivocation", report, first, other, world.validators[0])
    refused(world, "NotEquivocation", report, first, first, world.validators[0])
    refused(world, "NotBonded", report, first, second, world.outsider)
    forged = (*second[:6], sha256(b"never posted"), *second[7:])
    refused(world, "InvalidMerkleProof", report, first, forged, world.validators[0])


def _recorded(world: World, n: int) -> tuple[int, JobBatch]:
    """n jobs posted by the node and recorded (paid for) by the outsider, then sampled."""
    batch = JobBatch.of(jobs(n, b"recorded"))
    round_number = world.ledger.current_round()
    world.ledger.post_batch(round_number, batch, world.node)
    for index in range(n):
        world.ledger.record_job(leaf(world.node, round_number, batch, index), MODEL, FEE,
                                world.outsider)
    world.next_round()
    return round_number, batch


MODEL = sha256(b"model")
FEE = P.verification_fee + P.reward


def test_evidence_for_an_unsampled_leaf_refused(world: World) -> None:
    """Only a job the beacon selected may be accused, reported unavailable or audited."""
    round_number, batch = _recorded(world, 8)
    value = world.holder.reveal(round_number + 1).randomness
    unsampled = [item for item in batch.leaves
                 if not sampled(value, item.job_id, item.commitment_id, P.sample_ppm)]
    assert unsampled, "at p = 5% eight jobs are not all sampled"
    job_id = unsampled[0].job_id
    validator = world.validators[0]
    error = refused(world, "NotSampled", world.ledger.accuse, job_id, sha256(b"other"),
                    round_number + 1, sha256(b"evidence"), validator)
    assert error.arguments == (job_id,)
    assert str(error) == f"NotSampled(0x{job_id.hex()})"
    refused(world, "NotSampled", world.ledger.report_unavailable, job_id, validator)
    refused(world, "NotSampled", world.ledger.attest, job_id, Verdict.VALID, round_number + 1,
            validator)


def test_a_job_leaf_with_a_wrong_proof_is_not_recorded(world: World) -> None:
    batch = JobBatch.of(jobs(4, b"wrong"))
    round_number = world.ledger.current_round()
    world.ledger.post_batch(round_number, batch, world.node)
    good = leaf(world.node, round_number, batch, 2)
    lied = (*good[:7], sha256(b"a cheaper output"), *good[8:])
    refused(world, "InvalidMerkleProof", world.ledger.record_job, lied, MODEL, FEE,
            world.outsider)
    refused(world, "UnknownBatch", world.ledger.record_job,
            leaf(world.validators[0], round_number, batch, 2), MODEL, FEE, world.outsider)


def test_transactions_from_unbonded_accounts_refused(world: World) -> None:
    """The outsider holds tokens and never bonded: it may pay for jobs, but not post
    batches, accuse, report or report equivocation."""
    round_number, batch = _recorded(world, 2)
    job_id = batch.leaves[0].job_id
    refused(world, "NotBonded", world.ledger.accuse, job_id, sha256(b"other"), round_number + 1,
            sha256(b"evidence"), world.outsider)
    refused(world, "NotBonded", world.ledger.report_unavailable, job_id, world.outsider)
    refused(world, "NotBonded", world.ledger.post_batch, round_number + 1, JobBatch.of(jobs(1)),
            world.outsider)


def test_a_forged_beacon_round_does_not_move_the_ledger(world: World) -> None:
    """A forged round is refused by the beacon contract, and the ledger cannot advance past
    a round the beacon did not verify: its clock stays where it was."""
    number = world.ledger.current_round() + 1
    impostor = DevnetBeacon(0xBAD)
    forged = [impostor.reveal(r) for r in range(number + 1)][-1]
    with pytest.raises(ContractRevert, match=r"^ForgedBeaconRound"):
        world.ledger.submit_devnet_round(forged, world.operator, world.previous)
    error = refused(world, "RoundNotVerified", world.ledger.advance, world.operator)
    assert error.arguments == (number,)
    assert world.ledger.current_round() == number - 1


def test_nobody_but_the_operator_binds_a_protocol_key(world: World) -> None:
    """The attack: an outsider claims a validator's protocol key for its own address (or a
    fresh key for another's address) to be drawn as that validator in audits and committees,
    or to lock the validator out of its own key. Only the operator binds keys; each attempt
    reverts by name and nothing changes."""
    victim_key = world.ledger.account(world.validators[0]).key
    assert victim_key.strip(b"\x00")
    fresh = sha256(b"a key nobody registered")
    refused(world, "NotOperator", world.ledger.register, victim_key, world.outsider,
            world.outsider)
    refused(world, "NotOperator", world.ledger.register, fresh, world.outsider, world.outsider)
    refused(world, "NotOperator", world.ledger.register, fresh, world.validators[1],
            world.outsider)
    # The operator cannot rebind a key either: one key, one account, once
    refused(world, "KeyAlreadyRegistered", world.ledger.register, victim_key, world.outsider,
            world.operator)
    refused(world, "KeyAlreadyRegistered", world.ledger.register, fresh, world.validators[0],
            world.operator)
    world.ledger.register(fresh, world.outsider, world.operator)
    assert world.ledger.account(world.outsider).key == fresh
