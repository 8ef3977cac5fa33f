"""Batched commitments on chain: one Merkle root per node per round, leaves proven against it,
equivocation slashed from two leaves alone. Every bad input reverts with the custom error
named for its rule, the Python side reports that name, and the state is unchanged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from protocol.beacon import DevnetBeacon
from protocol.hashing import sha256
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
        return (self.ledger.totals(), [self.ledger.account(a) for a in everyone])


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
        ledger.register(sha256(v.encode()), v)
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
