"""The ledger's stake lifecycle and offences: signed transactions, unbonding, jail, tombstone,
unavailability and canaries; bad input; the state hash and the journal."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.codec import Tensor
from protocol.errors import BadSignature, MalformedMessage, ProtocolError, ReplayedMessage
from protocol.hashing import sha256
from protocol.keys import SigningKey
from protocol.messages import Commitment, Evidence, JobRequest, Offence, Verdict
from slashing import constants as c
from slashing.events import (
    AccountTx,
    AccuseInvalidProof,
    Bond,
    Event,
    Mint,
    PlantCanary,
    RegisterBeacon,
    RegisterZkModel,
    ReportUnavailable,
    RevealCanary,
    ServeData,
    SetParams,
    Unbond,
    Withdraw,
    body_of_canonical,
    canary_digest,
)
from slashing.rules import (
    AmountOutOfRange,
    InsufficientFunds,
    LedgerRuleError,
    NonceOutOfOrder,
    NotAZkModel,
    ProofCheckUnavailable,
    UnknownAccount,
    UnknownJob,
    apply_event,
    apply_event_in_place,
    install_proof_checker,
    is_bonded_validator,
    liability_horizon,
    slash_stake,
)
from slashing.state import (
    Account,
    JobStatus,
    Stake,
    State,
    Unbonding,
    decode_state,
    encode_state,
    state_hash,
)
from slashing.store import Ledger
from tests import strategies
from tests.test_ledger import (
    BEACON_KEY,
    CANARY_NODE,
    CHEATER,
    CLIENT,
    EXPIRY,
    EXTRA_VALIDATORS,
    FEE,
    MIN_NODE,
    MIN_VALIDATOR,
    NODE,
    STRANGER,
    VALIDATORS,
    Chain,
    World,
    attest,
    beacon,
    commit,
    genesis,
    mismatch,
    params,
    pk,
    record,
    request,
)

P = params()
S = P.fraud_slash
W = P.challenge_window
A = P.availability_window


def world_with(*extra: Event, validators: tuple[SigningKey, ...] = VALIDATORS) -> World:
    """The default world (every job sampled) plus a well-staked cheater and a canary node."""
    world = World(validators=validators)
    world.apply(
        Mint(pk(CHEATER), 5 * MIN_NODE), Bond(pk(CHEATER), c.NODE, 4 * MIN_NODE),
        Mint(pk(CANARY_NODE), MIN_NODE), Bond(pk(CANARY_NODE), c.NODE, MIN_NODE),
        *extra,
    )
    return world


def confirm_fraud(world: World, com: Commitment, accuser: SigningKey | None = None) -> None:
    """Accuse (the auditor unless ``accuser``), draw the committee next round, vote FRAUD."""
    world.accuse(com, accuser)
    world.next_round()
    world.vote(com, (Verdict.FRAUD,) * len(world.committee()))


def signed(tx: AccountTx, key: SigningKey) -> AccountTx:
    """``tx`` for this network, signed by ``key``."""
    return dataclasses.replace(tx, chain_id=Chain.id).signed(key)


def node_total(world: World, key: object) -> int:
    account = world.state.accounts[pk(key)]  # type: ignore[arg-type]
    return account.node.amount + account.unbonding_total


# -- Signed account transactions -------------------------------------------------------------------


def test_signed_transactions_take_the_next_nonce() -> None:
    world = world_with()
    first = signed(Bond(pk(CHEATER), c.NODE, 1, nonce=1), CHEATER)
    world.apply(first)
    assert world.state.accounts[pk(CHEATER)].nonce == 1
    world.refuse(first, ReplayedMessage, "nonce 1 .* is already used")
    world.refuse(signed(Bond(pk(CHEATER), c.NODE, 1, nonce=3), CHEATER), NonceOutOfOrder,
                 "nonce 3 .* out of order: the next is 2")
    body = Bond(pk(CHEATER), c.NODE, 1, chain_id=Chain.id, nonce=2).body_bytes()
    domain = Bond(pk(CHEATER), c.NODE, 1, chain_id=Chain.id).domain()
    forged = Bond(pk(CHEATER), c.NODE, 1, chain_id=Chain.id, nonce=2,
                  signature=NODE.sign(domain, body))
    world.refuse(forged, BadSignature, "does not verify")
    world.refuse(signed(Bond(pk(STRANGER), c.NODE, 1, nonce=1), STRANGER), UnknownAccount,
                 "unknown account")
    world.refuse(Bond(pk(CHEATER), c.NODE, 1, nonce=2), LedgerRuleError, "unsigned bond carries")
    world.apply(signed(Bond(pk(CHEATER), c.NODE, 1, nonce=2), CHEATER))
    with pytest.raises(ValueError, match="signed by its account"):
        signed(Bond(pk(CHEATER), c.NODE, 1, nonce=3), NODE)


def test_a_signature_for_one_transaction_type_is_not_valid_for_another() -> None:
    world = world_with()
    bond = signed(Bond(pk(CHEATER), c.NODE, MIN_NODE, nonce=1), CHEATER)
    unbond = Unbond(pk(CHEATER), c.NODE, MIN_NODE, chain_id=Chain.id, nonce=1,
                    signature=bond.signature)
    world.refuse(unbond, BadSignature, "ledger_unbond")


# -- Unbonding -------------------------------------------------------------------------------------


def test_unbond_then_withdraw_after_the_period() -> None:
    world = world_with()
    world.next_round()
    world.apply(signed(Unbond(pk(CHEATER), c.NODE, MIN_NODE, nonce=1), CHEATER))
    account = world.state.accounts[pk(CHEATER)]
    (entry,) = account.unbonding
    assert (account.node.amount, entry.amount) == (3 * MIN_NODE, MIN_NODE)
    assert (entry.started_round, entry.release_round) == (0, P.unbonding_period)
    assert world.state.total_supply() == world.state.minted
    early = signed(Withdraw(pk(CHEATER), nonce=2), CHEATER)
    world.refuse(early, LedgerRuleError, f"next is released in round {P.unbonding_period}")
    for _ in range(P.unbonding_period):
        world.next_round()
    balance = world.balance(CHEATER)
    world.apply(early)
    assert world.balance(CHEATER) == balance + MIN_NODE
    assert world.state.accounts[pk(CHEATER)].unbonding == ()
    assert world.state.total_supply() == world.state.minted


def test_unbond_guards() -> None:
    world = world_with()
    world.refuse(signed(Unbond(pk(CHEATER), c.NODE, 5 * MIN_NODE, nonce=1), CHEATER),
                 InsufficientFunds, "less than the 50000 it would unbond")
    world.refuse(signed(Unbond(pk(CHEATER), c.NODE, 4 * MIN_NODE - 1, nonce=1), CHEATER),
                 AmountOutOfRange, "would leave 1 bonded")
    for nonce in range(1, c.MAX_UNBONDING_ENTRIES + 1):
        world.apply(signed(Unbond(pk(CHEATER), c.NODE, 1_000, nonce=nonce), CHEATER))
    world.refuse(signed(Unbond(pk(CHEATER), c.NODE, 1_000, nonce=8), CHEATER),
                 LedgerRuleError, "already has 7 unbonding entries")


def test_unbonding_cannot_escape_a_pending_fraud_slash() -> None:
    world = world_with()
    wrong = world.job(1, node=CHEATER, output=b"wrong")
    world.next_round()
    world.apply(Unbond(pk(CHEATER), c.NODE, 4 * MIN_NODE, chain_id=Chain.id,
                       nonce=1).signed(CHEATER))
    assert world.state.accounts[pk(CHEATER)].node.amount == 0  # all of it on its way out
    world.accuse(wrong)
    withdraw = signed(Withdraw(pk(CHEATER), nonce=2), CHEATER)
    world.refuse(withdraw, LedgerRuleError, "no unbonding stake released")
    world.next_round()
    world.vote(wrong, (Verdict.FRAUD,) * 3)
    assert node_total(world, CHEATER) == 4 * MIN_NODE - S  # taken from the unbonding entry
    assert world.state.total_supply() == world.state.minted
    while world.state.current_round < P.unbonding_period:
        world.next_round()
    balance = world.balance(CHEATER)
    world.apply(withdraw)
    assert world.balance(CHEATER) == balance + 4 * MIN_NODE - S


def test_a_withdrawal_waits_for_an_open_dispute() -> None:
    """A dispute that waits for enough validators to draw a committee holds back the stake
    that was bonded when the job was recorded, however long it waits."""
    world = world_with()
    wrong = world.job(1, node=CHEATER, output=b"wrong")
    world.apply(signed(Unbond(pk(CHEATER), c.NODE, MIN_NODE, nonce=1), CHEATER))
    world.next_round()
    auditor = world.auditor(wrong)
    world.accuse(wrong)
    leaving = [v for v in VALIDATORS if v is not auditor][:2]
    world.apply(*(Unbond(pk(v), c.VALIDATOR, MIN_VALIDATOR) for v in leaving))
    while world.state.current_round < P.unbonding_period:
        world.next_round()
    assert world.open_dispute().committee == ()  # two validators are left: it waits
    withdraw = signed(Withdraw(pk(CHEATER), nonce=2), CHEATER)
    world.refuse(withdraw, LedgerRuleError, "party to an open dispute")
    world.apply(*(Bond(pk(v), c.VALIDATOR, MIN_VALIDATOR) for v in leaving))
    world.next_round()
    world.vote(wrong, (Verdict.FRAUD,) * 3)
    assert node_total(world, CHEATER) == 4 * MIN_NODE - S
    world.apply(withdraw)
    assert world.state.accounts[pk(CHEATER)].unbonding == ()


def test_slash_reaches_only_stake_bonded_at_the_offence() -> None:
    state = State()
    account = Account(
        node=Stake(amount=1_000),
        unbonding=(
            Unbonding(c.NODE, 2_000, started_round=3, release_round=40),
            Unbonding(c.VALIDATOR, 5_000, started_round=9, release_round=40),
            Unbonding(c.NODE, 4_000, started_round=9, release_round=40),
        ),
    )
    state.accounts[b"a"] = account
    taken = slash_stake(state, b"a", c.NODE, 6_000, offence_round=5)
    after = state.accounts[b"a"]
    assert taken == 5_000  # 1 000 bonded + 4 000 unbonding since round 9; not the round-3 entry
    assert after.node.amount == 0
    assert [e.amount for e in after.unbonding] == [2_000, 5_000]
    taken = slash_stake(state, b"a", c.NODE, 10_000, offence_round=None)
    assert taken == 2_000 and [e.role for e in state.accounts[b"a"].unbonding] == [c.VALIDATOR]


@settings(max_examples=25, deadline=None)
@given(unbond_after=st.integers(0, W), amount=st.sampled_from((MIN_NODE, 2 * MIN_NODE,
                                                                   4 * MIN_NODE)))
def test_a_confirmed_fraud_always_takes_its_slash(unbond_after: int, amount: int) -> None:
    """However soon after the offence the cheater unbonds, the slash is taken in full."""
    world = world_with(validators=(*VALIDATORS, *EXTRA_VALIDATORS))
    wrong = world.job(1, node=CHEATER, output=b"wrong")
    world.next_round()
    for step in range(2 * W + 1):
        if step == unbond_after:
            world.apply(Unbond(pk(CHEATER), c.NODE, amount, chain_id=Chain.id,
                               nonce=1).signed(CHEATER))
        if step == W:  # the last round of the window: any bonded validator may accuse
            accuser = next(v for v in VALIDATORS if is_bonded_validator(world.state, pk(v)))
            world.accuse(wrong, accuser)
        if step == W + 1:
            world.vote(wrong, (Verdict.FRAUD,) * 3)
        world.next_round()
    assert node_total(world, CHEATER) == 4 * MIN_NODE - S


def test_genesis_refuses_an_unbonding_period_shorter_than_the_liability_horizon() -> None:
    short = params(unbonding_period=liability_horizon(P) - 1)
    registered = apply_event(State(), RegisterBeacon(BEACON_KEY, 0))
    with pytest.raises(LedgerRuleError, match=r"unbonding_period = 28 rounds is shorter than"):
        apply_event(registered, SetParams(short))


# -- Jail and tombstone ----------------------------------------------------------------------------


def test_an_offence_jails_and_repeated_ones_tombstone() -> None:
    world = world_with()
    for nonce in (1, 2, 3):
        wrong = world.job(nonce, node=CHEATER, output=b"wrong")
        world.next_round()
        confirm_fraud(world, wrong)
        stake = world.state.accounts[pk(CHEATER)].node
        assert stake.offences == nonce
        if nonce < P.tombstone_offences:
            assert not stake.slashed_out and stake.jailed_until is not None
            again = request(100 + nonce, node=CHEATER)
            world.refuse(record(again, commit(again)), LedgerRuleError, "jailed")
            while world.state.current_round < stake.jailed_until:
                world.next_round()
    stake = world.state.accounts[pk(CHEATER)].node
    assert stake.slashed_out and stake.amount == 4 * MIN_NODE - 3 * S
    world.refuse(Bond(pk(CHEATER), c.NODE, 1), LedgerRuleError, "slashed out")
    assert world.state.counters.tombstones == 1


def test_equivocation_tombstones_at_once() -> None:
    world = world_with()
    req = request(1, node=CHEATER)
    world.apply(record(req, commit(req)), record(req, commit(req, output=b"other")))
    stake = world.state.accounts[pk(CHEATER)].node
    assert stake.slashed_out and stake.amount == 4 * MIN_NODE - P.equivocation_slash


def test_a_jailed_validator_is_neither_assigned_nor_drawn() -> None:
    world = World(validators=(*VALIDATORS, *EXTRA_VALIDATORS))
    honest = world.job(1)
    world.next_round()
    liar = next(v for v in VALIDATORS if pk(v) != world.state.jobs[honest.job_id].auditor)
    world.apply(Mint(pk(liar), 2 * MIN_VALIDATOR),
                Bond(pk(liar), c.VALIDATOR, 2 * MIN_VALIDATOR))
    world.accuse(honest, liar)
    world.next_round()
    world.vote(honest, (Verdict.VALID,) * 3)
    stake = world.state.accounts[pk(liar)].validator
    assert stake.offences == 1 and not stake.slashed_out and stake.jailed_until is not None
    jobs = [world.job(n) for n in range(2, 8)]
    world.next_round()
    assert all(world.state.jobs[j.job_id].auditor != pk(liar) for j in jobs)
    world.accuse(jobs[0], EXTRA_VALIDATORS[-1])
    world.next_round()
    assert pk(liar) not in world.open_dispute().committee


# -- Unavailability --------------------------------------------------------------------------------


def report(key: object, job_id: bytes, world: World) -> ReportUnavailable:
    nonce = world.state.accounts[pk(key)].nonce + 1  # type: ignore[arg-type]
    return signed(ReportUnavailable(pk(key), job_id, nonce=nonce), key)  # type: ignore[arg-type]


def test_an_unserved_output_is_slashed_as_fraud_and_refunded() -> None:
    world = world_with()
    com = world.job(1, node=CHEATER, output=b"hidden")
    world.next_round()
    reporter = VALIDATORS[2]
    before, client = world.balance(reporter), world.balance(CLIENT)
    world.apply(report(reporter, com.job_id, world))
    for _ in range(A):
        world.next_round()
    assert world.state.jobs[com.job_id].status is JobStatus.PENDING  # still time to serve
    world.next_round()
    job = world.state.jobs[com.job_id]
    assert job.status is JobStatus.REFUNDED and world.balance(CLIENT) == client + FEE
    assert node_total(world, CHEATER) == 4 * MIN_NODE - S
    assert world.balance(reporter) == before + S * P.reporter_share_bps // c.BPS
    assert world.state.accounts[pk(CHEATER)].node.offences == 1
    assert world.state.total_supply() == world.state.minted


def test_serving_the_output_answers_the_report_and_restarts_the_window() -> None:
    world = world_with()
    com = world.job(1, output=b"right")
    world.next_round()
    auditor = world.auditor(com)
    world.apply(report(auditor, com.job_id, world))
    world.refuse(ServeData(com.job_id, b"not it"), LedgerRuleError, "served output hashes to")
    world.refuse(mismatch(VALIDATORS[0], com, 0), LedgerRuleError, "open availability challenge")
    world.next_round()
    world.apply(ServeData(com.job_id, b"right" + com.job_id))
    job = world.state.jobs[com.job_id]
    assert job.served_round == 1 and not job.has_open_challenge
    assert job.audit_deadline == 1 + P.audit_window  # the waiting auditor's clock restarts
    world.audit(com)
    for _ in range(W):
        world.next_round()  # past the original window's settlement (round W + 1): restarted
    assert world.state.current_round == W + 1
    assert world.state.jobs[com.job_id].status is JobStatus.PENDING
    world.next_round()
    assert world.state.jobs[com.job_id].status is JobStatus.SETTLED
    assert world.state.accounts[pk(NODE)].node.offences == 0
    assert world.state.accounts[pk(auditor)].validator.amount == MIN_VALIDATOR  # no penalty
    world.refuse(report(VALIDATORS[2], com.job_id, world), LedgerRuleError, "already settled")


def test_report_and_serve_guards() -> None:
    world = world_with()
    com = world.job(1)
    world.refuse(ReportUnavailable(pk(VALIDATORS[0]), com.job_id), LedgerRuleError,
                 "must be signed by its reporter")
    world.refuse(report(VALIDATORS[0], com.job_id, world), LedgerRuleError, "was not sampled")
    world.next_round()
    world.refuse(report(CLIENT, com.job_id, world), LedgerRuleError, "not bonded as a validator")
    world.refuse(report(VALIDATORS[0], sha256(b"nope"), world), UnknownJob, "unknown job")
    world.refuse(ServeData(com.job_id, b"right" + com.job_id), LedgerRuleError,
                 "no open availability challenge")
    world.apply(report(VALIDATORS[0], com.job_id, world))
    world.refuse(report(VALIDATORS[1], com.job_id, world), LedgerRuleError,
                 "already reported unavailable")
    for _ in range(A):
        world.next_round()
    world.next_round()
    world.refuse(ServeData(com.job_id, b"right" + com.job_id), LedgerRuleError,
                 "no open availability challenge")


# -- Canaries --------------------------------------------------------------------------------------


SALT = sha256(b"canary salt")
OTHER_SALT = sha256(b"second salt")


def canary_world(lazy: bool = True) -> tuple[World, Commitment]:
    """A canary planted, recorded next round, sampled; its assigned auditor is lazy (VALID)
    or cannot decide (INCONCLUSIVE, and the next one drawn is lazy)."""
    world = world_with()
    req = request(77, node=CANARY_NODE)
    world.apply(PlantCanary(canary_digest(SALT, req.job_id)),
                PlantCanary(canary_digest(OTHER_SALT, req.job_id)))
    world.next_round()
    com = commit(req, output=b"deliberately wrong")
    world.apply(record(req, com))
    world.next_round()
    if lazy:
        world.audit(com)
    else:
        world.audit(com, Verdict.INCONCLUSIVE)
    return world, com


def settle(world: World, com: Commitment) -> None:
    while world.state.jobs[com.job_id].status is JobStatus.PENDING:
        world.next_round()


def test_a_revealed_canary_slashes_the_validators_that_called_it_valid() -> None:
    world, com = canary_world()
    job = world.state.jobs[com.job_id]
    assert job.client == pk(CLIENT) and job.node == pk(CANARY_NODE)  # an ordinary job
    (lazy_key,) = job.auditors
    reveal = RevealCanary(com.job_id, SALT)
    world.refuse(reveal, LedgerRuleError, "still pending")
    settle(world, com)
    burned = world.state.burned
    world.apply(reveal)
    lazy = world.state.accounts[lazy_key].validator
    assert lazy.amount == MIN_VALIDATOR - P.lazy_validator_slash and lazy.offences == 1
    assert world.state.burned == burned + P.lazy_validator_slash  # never the operator's income
    world.refuse(reveal, LedgerRuleError, "no canary commitment")
    assert world.state.total_supply() == world.state.minted


def test_a_canary_reveals_once_however_many_salts_were_planted() -> None:
    world, com = canary_world()
    settle(world, com)
    world.apply(RevealCanary(com.job_id, SALT))
    world.refuse(RevealCanary(com.job_id, OTHER_SALT), ReplayedMessage, "already revealed")


def test_a_canary_catches_lazy_committee_votes_and_rewards_the_honest_accuser() -> None:
    world, com = canary_world(lazy=False)
    world.next_round()
    accuser = world.auditor(com)  # the second auditor drawn re-executes and accuses
    before = world.balance(accuser)
    world.accuse(com)
    world.next_round()
    members = world.committee()
    world.vote(com, (Verdict.VALID, Verdict.FRAUD, Verdict.FRAUD))
    assert world.balance(accuser) == before + S * P.accuser_share_bps // c.BPS  # the jackpot
    # a VALID vote on a confirmed fraud is slashed at once; the reveal does not slash it twice
    assert world.state.accounts[pk(members[0])].validator.offences == 1
    settle(world, com)
    world.apply(RevealCanary(com.job_id, SALT))
    assert world.state.accounts[pk(members[0])].validator.offences == 2


def test_a_canary_must_be_planted_before_the_job_and_revealed_in_time() -> None:
    world = world_with()
    req = request(5, node=CANARY_NODE)
    com = commit(req, output=b"wrong")
    world.apply(record(req, com), PlantCanary(canary_digest(SALT, req.job_id)))
    settle(world, com)
    world.refuse(RevealCanary(com.job_id, SALT), LedgerRuleError, "not before job")
    world2, com2 = canary_world()
    settle(world2, com2)
    for _ in range(W + 1):
        world2.next_round()
    world2.refuse(RevealCanary(com2.job_id, SALT), LedgerRuleError, "had to be revealed by")
    world2.refuse(RevealCanary(sha256(b"x"), SALT), UnknownJob, "unknown job")
    world2.refuse(PlantCanary(canary_digest(SALT, com2.job_id)), LedgerRuleError,
                  "already planted")


# -- Bad input: each refused with its own error, nothing changed -----------------------------------


BAD_INPUT: dict[str, tuple[Callable[[World], Event], type[ProtocolError], str]] = {
    "invalid signature": (
        lambda w: Unbond(
            pk(CHEATER), c.NODE, MIN_NODE, chain_id=Chain.id, nonce=1, signature=NODE.sign(
                Unbond(pk(CHEATER), c.NODE, 1, chain_id=Chain.id).domain(), b"something else")),
        BadSignature, "does not verify"),
    "unknown account (bond)": (lambda w: Bond(pk(STRANGER), c.NODE, MIN_NODE),
                               UnknownAccount, "unknown account"),
    "unknown account (client)": (
        lambda w: record(request(9, client=STRANGER), commit(request(9, client=STRANGER))),
        UnknownAccount, "client holds no tokens"),
    "mint past the supply": (lambda w: Mint(pk(CLIENT), c.MAX_SUPPLY), AmountOutOfRange, "past"),
    "bond more than the balance": (lambda w: Bond(pk(CLIENT), c.NODE, 10**12),
                                   InsufficientFunds, "less than the"),
    "fee above R": (lambda w: record(request(9, fee=FEE + 1), commit(request(9, fee=FEE + 1))),
                    AmountOutOfRange, "exceeds reward"),
    "replayed job": (lambda w: record(request(1), commit(request(1))), ReplayedMessage,
                     "already recorded"),
    "reused request nonce": (
        lambda w: record(request(1, fee=FEE - 1), commit(request(1, fee=FEE - 1))),
        ReplayedMessage, "already used nonce 1"),
    "replayed nonce": (lambda w: signed(Bond(pk(CHEATER), c.NODE, 1, nonce=1), CHEATER),
                       ReplayedMessage, "already used"),
    "nonce out of order": (lambda w: signed(Bond(pk(CHEATER), c.NODE, 1, nonce=5), CHEATER),
                           NonceOutOfOrder, "out of order"),
    "evidence for an unknown job": (lambda w: mismatch(VALIDATORS[0], commit(request(99)), 0),
                                    UnknownJob, "unknown job"),
    "attestation for an unknown job": (
        lambda w: attest(VALIDATORS[0], commit(request(99)), Verdict.VALID, 0),
        UnknownJob, "unknown job"),
    "report for an unknown job": (lambda w: report(VALIDATORS[0], sha256(b"?"), w),
                                  UnknownJob, "unknown job"),
    "data for an unknown job": (lambda w: ServeData(sha256(b"?"), b"x"), UnknownJob,
                                "unknown job"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT), ids=list(BAD_INPUT))
def test_bad_input_is_refused_with_a_specific_error(case: str) -> None:
    world = world_with(signed(Bond(pk(CHEATER), c.NODE, 1, nonce=1), CHEATER))
    world.job(1)
    world.next_round()
    make, error, match = BAD_INPUT[case]
    world.refuse(make(world), error, match)
    in_place = world.state.copy()
    with pytest.raises(error, match=match):
        apply_event_in_place(in_place, make(world))
    assert in_place == world.state and state_hash(in_place) == state_hash(world.state)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Mint(pk(CLIENT), -1), "mint.amount must be a positive 64-bit"),
        (lambda: Mint(pk(CLIENT), 2**64), "mint.amount must be a positive 64-bit"),
        (lambda: Unbond(pk(CLIENT), c.NODE, 0), "unbond.amount must be a positive"),
        (lambda: Bond(pk(CLIENT), c.NODE, 5, nonce=-1), "bond.nonce must be an unsigned"),
        (lambda: Withdraw(pk(CLIENT), signature=b"short"), "withdraw.signature must be empty"),
        (lambda: RevealCanary(sha256(b"j"), b""), "reveal_canary.salt must be 1..64"),
        (lambda: ServeData(b"short", b""), "serve_data.job_id must be 32 bytes"),
    ],
)
def test_amounts_that_overflow_or_go_negative_are_malformed(
    make: Callable[[], Event], match: str
) -> None:
    with pytest.raises(MalformedMessage, match=match):
        make()


# -- INVALID_PROOF evidence on zk jobs ---------------------------------------------------------
#
# The rule's proof check is injected (the ledger may not import EZKL); here it is a fake but
# deterministic one: a proof "holds" when the commitment's aux is GOOD_PROOF. tests/test_zk.py
# runs the same rule with the real EZKL checker on real proofs.

ZK_MODEL = sha256(b"ledger/zk-model")
GOOD_PROOF = b"good-proof"
ZK_KEYS = RegisterZkModel(ZK_MODEL, b"verifying key", b'{"model_input_scales": [7]}',
                          sha256(b"srs"))
fake_checks: list[bytes] = []


def fake_checker(vk: bytes, settings: bytes, srs: bytes, req: JobRequest,
                 com: Commitment) -> str | None:
    assert vk == ZK_KEYS.verifying_key and settings == ZK_KEYS.settings and srs == sha256(b"srs")
    assert com.job_id == req.job_id
    fake_checks.append(com.content_id)
    return None if com.aux == GOOD_PROOF else "proof does not verify"


@pytest.fixture
def zk_checker() -> Iterator[None]:
    previous = install_proof_checker(fake_checker)
    yield
    install_proof_checker(previous)


def zk_request(nonce: int, model: bytes = ZK_MODEL, node: SigningKey = CHEATER) -> JobRequest:
    return JobRequest(model_id=model, input=Tensor("float32", (2,), bytes(8)),
                      client=pk(CLIENT), node=pk(node), nonce=nonce, fee=FEE,
                      expiry_round=EXPIRY, chain_id=Chain.id).signed(CLIENT)


def zk_commit(req: JobRequest, proof: bytes, node: SigningKey = CHEATER) -> Commitment:
    return Commitment(
        job_id=req.job_id, model_id=req.model_id, input_hash=sha256(b"in" + req.job_id),
        output_hash=sha256(b"out" + req.job_id), node=pk(node), chain_id=req.chain_id,
        mode="zk", aux=proof,
    ).signed(node)


def invalid_proof(accuser: SigningKey, req: JobRequest, com: Commitment,
                  detail: str = "") -> AccuseInvalidProof:
    evidence = Evidence(
        offence=Offence.INVALID_PROOF, job_id=com.job_id, accuser=pk(accuser),
        commitment=com.encode(), chain_id=com.chain_id, detail=detail,
    ).signed(accuser)
    return AccuseInvalidProof(evidence=evidence.encode(), request=req.encode())


def zk_world() -> tuple[World, JobRequest, Commitment]:
    """A world with the zk model registered and one forged-proof job by the cheater."""
    world = world_with(ZK_KEYS)
    req = zk_request(1)
    com = zk_commit(req, b"forged-proof")
    world.apply(record(req, com))
    world.next_round()
    return world, req, com


def test_a_failing_proof_slashes_the_node_at_once_without_a_committee(zk_checker: None) -> None:
    world, req, com = zk_world()
    accuser = VALIDATORS[0]
    balance, client = world.balance(accuser), world.balance(CLIENT)
    world.apply(invalid_proof(accuser, req, com))
    stake = world.state.accounts[pk(CHEATER)].node
    assert stake.amount == 4 * MIN_NODE - S and stake.offences == 1
    assert stake.jailed_until == world.state.current_round + P.jail_period + 1
    assert world.balance(accuser) == balance + S * P.reporter_share_bps // c.BPS
    assert world.balance(CLIENT) == client + FEE  # refunded
    job = world.state.jobs[req.job_id]
    assert job.status is JobStatus.REFUNDED and not world.state.disputes
    assert world.state.counters.invalid_proofs == 1
    assert world.state.total_supply() == world.state.minted


def test_invalid_proof_evidence_slashes_once(zk_checker: None) -> None:
    world, req, com = zk_world()
    first = invalid_proof(VALIDATORS[0], req, com)
    world.apply(first)
    world.refuse(first, ReplayedMessage, "already recorded")
    # other evidence (another validator, other words) on the same job: judged already
    world.refuse(invalid_proof(VALIDATORS[1], req, com, "again"), ReplayedMessage,
                 "already slashed for the proof")


def test_evidence_against_a_proof_that_holds_costs_the_accuser(zk_checker: None) -> None:
    world = world_with(ZK_KEYS)
    req = zk_request(1)
    com = zk_commit(req, GOOD_PROOF)
    world.apply(record(req, com))
    world.next_round()
    accuser = VALIDATORS[0]
    node_balance = world.balance(CHEATER)
    world.apply(invalid_proof(accuser, req, com))
    taken = P.false_accusation_slash
    assert world.stake(accuser, c.VALIDATOR) == MIN_VALIDATOR - taken
    assert world.state.accounts[pk(accuser)].validator.jailed_until is not None
    assert world.balance(CHEATER) == node_balance + taken * P.wronged_node_share_bps // c.BPS
    assert world.stake(CHEATER) == 4 * MIN_NODE
    assert world.state.jobs[req.job_id].status is JobStatus.PENDING
    assert world.state.counters.false_proof_accusations == 1
    assert world.state.total_supply() == world.state.minted


def test_invalid_proof_evidence_is_refused_with_a_specific_error(zk_checker: None) -> None:
    world, req, com = zk_world()
    v = VALIDATORS[0]
    plain = request(7)
    plain_com = commit(plain)
    world.apply(record(plain, plain_com))
    unknown = zk_request(99)
    cases: list[tuple[object, type[Exception], str]] = [
        (invalid_proof(v, unknown, zk_commit(unknown, b"x")), UnknownJob, "unknown job"),
        (invalid_proof(v, plain, plain_com), NotAZkModel, "not registered for the zk mode"),
        (invalid_proof(v, zk_request(2), com), LedgerRuleError, "the request is job"),
        (invalid_proof(v, req, zk_commit(req, b"other")), LedgerRuleError,
         "evidence accuses commitment"),
        (invalid_proof(CHEATER, req, com), LedgerRuleError, "not bonded as a validator"),
        (invalid_proof(STRANGER, req, com), LedgerRuleError, "not bonded as a validator"),
        (ZK_KEYS, LedgerRuleError, "already registered"),
    ]
    for event, error, match in cases:
        world.refuse(event, error, match)  # type: ignore[arg-type]
        in_place = world.state.copy()
        with pytest.raises(error, match=match):
            apply_event_in_place(in_place, event)  # type: ignore[arg-type]
        assert state_hash(in_place) == state_hash(world.state)
    # an Accuse carrying INVALID_PROOF evidence lacks the request it is judged with
    from slashing.events import Accuse
    accuse = Accuse(invalid_proof(v, req, com).evidence)
    world.refuse(accuse, LedgerRuleError, "judged with the job's request")
    # late: the challenge window has closed (and the job settled)
    settle(world, com)
    late = next(k for k in VALIDATORS if is_bonded_validator(world.state, pk(k)))
    world.refuse(invalid_proof(late, req, com), LedgerRuleError, "already settled")


def test_a_model_registered_after_the_job_does_not_make_it_a_zk_job(zk_checker: None) -> None:
    world = world_with()
    req = zk_request(1)
    com = zk_commit(req, b"forged-proof")
    world.apply(record(req, com), ZK_KEYS)
    world.next_round()
    world.refuse(invalid_proof(VALIDATORS[0], req, com), NotAZkModel, "when the job was recorded")


def test_without_a_proof_checker_the_evidence_is_refused() -> None:
    previous = install_proof_checker(None)
    try:
        world = world_with(ZK_KEYS)
        req = zk_request(5)
        com = zk_commit(req, b"never-checked-proof")
        world.apply(record(req, com))
        world.next_round()
        world.refuse(invalid_proof(VALIDATORS[0], req, com), ProofCheckUnavailable,
                     "no zk proof checker")
    finally:
        install_proof_checker(previous)


def test_invalid_proof_events_replay_to_the_same_state(zk_checker: None, tmp_path: Path) -> None:
    req, forged = zk_request(1), zk_commit(zk_request(1), b"forged-proof")
    ok_req = zk_request(2)
    ok = zk_commit(ok_req, GOOD_PROOF)
    events = [
        *genesis(params(), nodes=(CHEATER,)),
        ZK_KEYS,
        record(req, forged),
        record(ok_req, ok),
        beacon(0),
        beacon(1),
        invalid_proof(VALIDATORS[0], req, forged),
        invalid_proof(VALIDATORS[1], ok_req, ok),
        *(beacon(r) for r in range(2, 2 + W + 2)),
    ]
    ledger = Ledger.open(tmp_path / "ledger.sqlite")
    for event in events:
        ledger.append(event)
    live = ledger.state_hash()
    assert ledger.state.counters.invalid_proofs == 1
    assert ledger.state.counters.false_proof_accusations == 1
    assert ledger.verify() == len(events)
    ledger.close()
    checks = len(fake_checks)
    reopened = Ledger.open(tmp_path / "ledger.sqlite")
    assert reopened.state_hash() == live
    assert len(fake_checks) == checks  # replayed from the per-process verdicts, not re-run
    reopened.close()
    assert decode_state(encode_state(reopened.state)) == reopened.state


# -- The state hash and the journal ----------------------------------------------------------------


def test_the_state_hash_depends_on_content_not_on_insertion_order() -> None:
    world = world_with()
    com = world.job(1)
    world.next_round()
    world.audit(com)
    state = world.state
    shuffled = state.copy()
    shuffled.accounts = dict(reversed(list(state.accounts.items())))
    shuffled = State(**{f.name: getattr(shuffled, f.name)
                        for f in dataclasses.fields(State)})
    assert shuffled == state and state_hash(shuffled) == state_hash(state)
    assert decode_state(encode_state(state)) == state
    changed = apply_event(state, Mint(pk(CLIENT), 1))
    assert state_hash(changed) != state_hash(state)


def test_a_rollback_restores_every_table_exactly() -> None:
    world, com = canary_world()
    state = world.state
    before = state.copy()
    point = state.savepoint()
    while state.jobs[com.job_id].status is JobStatus.PENDING:
        apply_event_in_place(state, beacon(state.current_round + 1))
    apply_event_in_place(state, RevealCanary(com.job_id, SALT))
    assert state != before
    state.rollback(point)
    assert state == before and state_hash(state) == state_hash(before)
    assert not state.savepoint().mark  # the journal is empty again


@settings(max_examples=60, deadline=None)
@given(message=st.one_of(strategies.job_requests(), strategies.commitments(),
                         strategies.attestations(), strategies.evidence()))
def test_body_bytes_from_the_canonical_encoding_are_the_message_body(message: object) -> None:
    from protocol.messages import SignedMessage

    assert isinstance(message, SignedMessage)
    assert body_of_canonical(message.encode()) == message.body_bytes()
