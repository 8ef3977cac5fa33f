"""The adversarial review's findings, each performed with real signed messages on the rules.

Each attack worked on the earlier rules (the commit before the redesign holds
these tests asserting that it did); here each is performed again and fails:
the attacker loses and the honest party keeps its stake. The parameters are
the defaults (p = 5 %, S = 5 000, R = 100, k = 5) unless a test needs every
job sampled to be quick. Last, the bad input the issue names: each refused
with an error naming the rule, the state unchanged.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from protocol.beacon import DrandQuicknetVerifier
from protocol.errors import ProtocolError
from protocol.hashing import sha256
from protocol.keys import SigningKey
from protocol.messages import Commitment, Verdict
from slashing import constants as c
from slashing.events import (
    Accuse,
    BeaconRound,
    Bond,
    Event,
    Mint,
    RegisterBeacon,
    SetParams,
)
from slashing.rules import (
    InFlightLimit,
    LedgerRuleError,
    NotAssigned,
    NotOnCommittee,
    NotSampled,
    RequestExpired,
    WrongChain,
    apply_event,
    is_bonded_validator,
)
from slashing.state import Account, JobStatus, State
from tests.test_ledger import (
    CLIENT,
    DEFAULTS,
    EXTRA_VALIDATORS,
    KEY_OF,
    NODE,
    OTHER_NODE,
    VALIDATORS,
    Chain,
    World,
    attest,
    commit,
    fold,
    is_sampled,
    mismatch,
    params,
    pk,
    record,
    request,
)

ROOT = Path(__file__).resolve().parent
W = DEFAULTS.challenge_window
V = DEFAULTS.vote_window


def keys(label: str, n: int) -> tuple[SigningKey, ...]:
    made = tuple(SigningKey.derive(f"attack/{label}-{i}") for i in range(n))
    KEY_OF.update({k.public.raw: k for k in made})
    return made


def worth(state: State, accounts: list[bytes]) -> int:
    """Everything the accounts hold: balances, stakes, unbonding and locked earnings."""
    total = 0
    for account in accounts:
        record_ = state.accounts.get(account, Account())
        total += (record_.balance + record_.bonded + record_.unbonding_total
                  + record_.locked_total)
    return total


def refuse(world: World, event: Event, error: type[ProtocolError], match: str) -> None:
    world.refuse(event, error, match)


# -- 1. The dispute shield -------------------------------------------------------------------------


def test_1_an_early_accusation_shields_nothing() -> None:
    """A colluder accuses its node's cheat first and its friends on the committee stay silent.

    Before: the colluder's own dispute ended INCONCLUSIVE with no votes and every
    honest accusation was refused. Now the honest auditor joins the job's one
    dispute, the committee is drawn from a later round keyed by the job, silent
    members pay the liveness penalty and are replaced, and the fraud is confirmed.
    """
    gang = keys("shield", 3)
    world = World(validators=(*VALIDATORS, *EXTRA_VALIDATORS, *gang))
    com = world.job(1, output=b"wrong")  # the cheat
    coalition = [pk(NODE), *(pk(g) for g in gang)]
    before = worth(world.state, coalition)
    world.next_round()
    auditor = world.auditor(com)
    assert auditor not in gang
    shield_balance = world.balance(gang[0])
    world.accuse(com, gang[0])  # the shield goes up first
    world.accuse(com)  # the honest auditor's accusation is not refused: it joins
    dispute = world.open_dispute()
    assert dispute.accusers == (pk(gang[0]), pk(auditor))
    for _ in range(c.MAX_COMMITTEE_DRAWS):
        world.next_round()  # a committee is drawn from this round's value
        dispute = world.open_dispute()
        honest = [m for m in world.committee() if m not in gang]
        world.vote(com, (Verdict.FRAUD,) * len(honest), members=honest)
        if world.state.jobs[com.job_id].status is not JobStatus.PENDING:
            break
        for _ in range(V):
            world.next_round()  # the colluders stay silent through the window
        if world.state.disputes[dispute.dispute_id].outcome is not None:
            break
    (decided,) = world.state.disputes.values()
    assert decided.outcome is Verdict.FRAUD
    assert world.state.jobs[com.job_id].status is JobStatus.REFUNDED  # the cheat is not paid
    assert world.state.accounts[pk(NODE)].node.offences == 1
    assert worth(world.state, coalition) < before  # the attacker loses
    assert world.balance(gang[0]) == shield_balance  # its bond back, none of the accuser share
    assert world.state.accounts[pk(auditor)].validator.offences == 0  # the honest keep theirs
    assert world.state.accounts[pk(auditor)].validator.amount == c.MIN_STAKE[c.VALIDATOR]


# -- 2. Committee grinding -------------------------------------------------------------------------


def test_2_a_coalition_cannot_pick_the_committee_that_frames_an_honest_node() -> None:
    """3 colluders of 30 accuse an honest node's sampled jobs again and again.

    Before: the committee came from an already revealed value keyed by job and
    accuser, so the coalition tried every round of the window and every key
    until two of three seats were its own, and framed 10.8 % of the node's
    sampled jobs. Now the committee is drawn after the accusation, keyed by the
    job alone: which round or key accuses changes nothing the coalition can
    see, and with k = 5 it needs three seats besides its accuser, which three
    colluders never have. Each false accusation costs its accuser the slash
    and its bond, and jails it.
    """
    gang = keys("gang", 3)
    honest = keys("honest", 27)
    world = World(params(committee_size=5), validators=(*gang, *honest))
    gang_ids = {pk(g) for g in gang}
    coalition = sorted(gang_ids)
    before = worth(world.state, coalition)
    node_stake = world.stake(NODE)
    attempts = 0
    for nonce in range(1, 13):
        com = world.job(nonce)  # honest work
        world.next_round()
        accuser = next((g for g in gang if is_bonded_validator(world.state, pk(g))
                        and pk(g) != world.state.jobs[com.job_id].auditor), None)
        world.audit(com)
        if accuser is None:
            continue  # every colluder is jailed or tombstoned
        world.accuse(com, accuser)
        attempts += 1
        world.next_round()
        members = world.committee()
        world.vote(com, [Verdict.FRAUD if pk(m) in gang_ids else Verdict.VALID for m in members])
        assert sum(pk(m) in gang_ids for m in members) < 3  # never a majority of five
        while world.state.jobs[com.job_id].status is JobStatus.PENDING:
            world.next_round()
    assert attempts >= 3
    assert world.stake(NODE) >= node_stake  # framed never
    assert world.state.accounts[pk(NODE)].node.offences == 0
    assert world.state.counters.disputes_valid == attempts
    assert worth(world.state, coalition) < before  # the attacker loses


# -- 3. A burst beyond the stake -------------------------------------------------------------------


def test_3_a_fabrication_burst_is_capped_by_the_stake_and_its_earnings_stay_slashable() -> None:
    """A node that never runs the model sends 100 jobs a round, stake 20 000.

    Before: nothing bounded its unsettled jobs and a slash took at most the
    bonded stake, so the burst netted +8 500. Now the ledger refuses jobs past
    stake/(p·S) in flight, settled earnings are locked for the unbonding period
    and slashable, and the committee that confirms each sampled fabrication
    (voting in the last round of its window) takes the slash from stake, then
    from those earnings.
    """
    world = World(DEFAULTS, validators=(*VALIDATORS, *EXTRA_VALIDATORS))
    world.apply(Mint(pk(CLIENT), 10_000_000), Mint(pk(NODE), c.MIN_STAKE[c.NODE]),
                Bond(pk(NODE), c.NODE, c.MIN_STAKE[c.NODE]))
    stake = world.stake(NODE)
    limit = stake * 1_000_000 // (DEFAULTS.sample_ppm * DEFAULTS.fraud_slash)
    node = [pk(NODE)]
    before = worth(world.state, node)
    nonce = refused = 0
    made: dict[bytes, Commitment] = {}
    fresh: list[Commitment] = []
    for _ in range(3 * W):
        for _ in range(100):
            nonce += 1
            req = request(nonce)
            com = commit(req, output=b"made up")
            try:
                world.apply(record(req, com))
            except InFlightLimit:
                refused += 1
                continue
            except LedgerRuleError:
                continue  # jailed or slashed out
            made[com.job_id] = com
            fresh.append(com)
            assert world.state.node_jobs.get(pk(NODE), 0) <= limit
        world.next_round()
        for com in fresh:
            if is_sampled(world.state, com):
                world.accuse(com)  # the assigned auditor re-executes and accuses
        fresh = []
        for dispute in list(world.state.disputes.values()):
            late = dispute.drawn_round is not None and \
                world.state.current_round == dispute.drawn_round + V
            if dispute.is_open and late:  # the committee votes in its window's last round
                world.apply(*(attest(KEY_OF[m], made[dispute.job_id], Verdict.FRAUD,
                                     dispute.drawn_round) for m in dispute.committee))
    while any(j.status is JobStatus.PENDING for j in world.state.jobs.values()):
        world.next_round()
    assert refused > 0  # the in-flight limit turned jobs away
    assert world.state.accounts[pk(NODE)].node.offences >= 1
    assert worth(world.state, node) < before  # the fabricator loses


# -- 4. Lazy validators ----------------------------------------------------------------------------


def test_4_attesting_without_re_executing_does_not_pay() -> None:
    """Before: any bonded validator could attest any sampled job, the first VALID took the fee,
    and a VALID on a job later confirmed FRAUD cost nothing. Now only the assigned auditor
    attests, and its VALID on a confirmed fraud is slashed (and earns no fee: the job is
    refunded)."""
    world = World(validators=(*VALIDATORS, *EXTRA_VALIDATORS))
    com = world.job(1, output=b"wrong")
    world.next_round()
    lazy = world.auditor(com)
    outsider = next(v for v in VALIDATORS if v is not lazy)
    refuse(world, attest(outsider, com, Verdict.VALID, 0), NotAssigned, "is not assigned")
    before = worth(world.state, [pk(lazy)])
    world.audit(com)  # VALID, re-ran nothing
    watchdog = next(v for v in VALIDATORS if v is not lazy)
    world.accuse(com, watchdog)
    world.next_round()
    world.vote(com, (Verdict.FRAUD,) * 3)
    assert world.state.jobs[com.job_id].status is JobStatus.REFUNDED
    account = world.state.accounts[pk(lazy)].validator
    assert account.amount == c.MIN_STAKE[c.VALIDATOR] - DEFAULTS.lazy_validator_slash
    assert worth(world.state, [pk(lazy)]) < before


# -- 5. Silent validators --------------------------------------------------------------------------


def test_5_silent_sybils_pay_and_sampled_jobs_still_meet_an_honest_auditor() -> None:
    """45 silent validators beside 5 honest ones, each silent one bonded twice the minimum.

    Before: the auditor was drawn among all of them, jailed ones included, and
    its silence cost nothing: an honest auditor saw 10.5 % of sampled jobs.
    Now the ledger draws only bonded, unjailed validators, a silent auditor pays
    the liveness penalty, is jailed and replaced by a later draw (up to three),
    so an honest auditor sees several times as many; what is left unaudited is
    paid for: each miss costs a sybil 500, ten times what the work costs
    (netsim's ``silent`` strategy measures the coalition's loss).
    """
    silent, honest = keys("silent", 45), keys("answers", 5)
    world = World(params(sample_ppm=200_000), validators=(*silent, *honest))
    world.apply(*(e for v in silent for e in (Mint(pk(v), c.MIN_STAKE[c.VALIDATOR]),
                                              Bond(pk(v), c.VALIDATOR, c.MIN_STAKE[c.VALIDATOR]))))
    honest_ids = {pk(h) for h in honest}
    sybils = [pk(s) for s in silent]
    before = worth(world.state, sybils)
    sampled_jobs: list[Commitment] = []
    for nonce in range(1, 121):
        com = world.job(nonce, node=NODE if nonce % 2 else OTHER_NODE)
        world.next_round()
        if world.state.jobs[com.job_id].sampled:
            sampled_jobs.append(com)
        for job in list(world.state.jobs.values()):  # honest auditors answer at once
            if job.auditor in honest_ids and job.assigned_round is not None:
                world.audit(next(x for x in sampled_jobs if x.job_id == job.job_id))
    for _ in range(c.MAX_AUDIT_DRAWS * (DEFAULTS.audit_window + 1)):
        world.next_round()
        for job in list(world.state.jobs.values()):
            if job.auditor in honest_ids:
                world.audit(next(x for x in sampled_jobs if x.job_id == job.job_id))
    answered = sum(world.state.jobs[x.job_id].verifier in honest_ids for x in sampled_jobs)
    assert len(sampled_jobs) >= 10
    assert answered / len(sampled_jobs) >= 0.3  # before: 10.5 %
    assert world.state.counters.liveness_penalties > 0
    assert worth(world.state, sybils) < before  # silence is not free


# -- 6. Replay across networks, and a request paired with another node -----------------------------


def test_6_nothing_signed_for_one_network_is_accepted_on_another() -> None:
    theirs = World(params(challenge_window=3))  # another network's genesis
    req = request(1)
    com = commit(req)
    theirs.apply(record(req, com))
    ours = World()
    assert ours.state.chain_id != theirs.state.chain_id
    balance = ours.balance(CLIENT)
    refuse(ours, record(req, com), WrongChain, "signed for chain")
    assert ours.balance(CLIENT) == balance  # not charged here
    mine = request(2)
    refuse(ours, record(mine, commit(mine, OTHER_NODE)), LedgerRuleError,
           "is for node .* cannot answer it")
    stale = request(3, expiry=0)
    ours.next_round()
    ours.next_round()
    refuse(ours, record(stale, commit(stale)), RequestExpired, "expired after round 0")


# -- The beacon clock with drand -------------------------------------------------------------------


def test_with_drand_a_job_is_stamped_by_drand_time_so_its_sample_round_is_still_unknown() -> None:
    """The ledger appends drand rounds as it fetches them, so its log can lag drand itself.

    Stamped with the log's round, a job recorded while drand is already at
    round r+1 would be sampled by a round the node could read. Stamped with the
    round drand is at by the clock, it is sampled by one still to come.
    """
    info = json.loads((ROOT / "vectors" / "drand-quicknet.json").read_text())
    drand = DrandQuicknetVerifier.from_chain_info(info)
    rounds = [BeaconRound(r["round"], bytes.fromhex(r["signature"]), bytes.fromhex(r["randomness"]))
              for r in info["rounds"][:3]]
    p = params()
    genesis = [RegisterBeacon(drand.public_key, 1), SetParams(p)]
    Chain.id = fold(genesis).chain_id or b""
    state = fold([*genesis, Mint(pk(CLIENT), 1_000_000), Mint(pk(NODE), c.MIN_STAKE[c.NODE]),
                  Bond(pk(NODE), c.NODE, c.MIN_STAKE[c.NODE]), *rounds])
    assert state.current_round == 3
    now = drand.time_of(5) + 1  # drand has published round 5; the log holds up to 3
    published = drand.round_at(now)
    req = request(1)
    lagging = apply_event(state, record(req, commit(req)))
    assert lagging.jobs[req.job_id].sample_round <= published  # the node could read it
    stamped = apply_event(state, dataclasses.replace(record(req, commit(req)),
                                                     stamp_round=published))
    assert stamped.jobs[req.job_id].sample_round == published + 1 > published
    with pytest.raises(LedgerRuleError, match="ahead of the log"):
        apply_event(state, dataclasses.replace(record(req, commit(req)),
                                               stamp_round=3 + c.MAX_STAMP_LEAD + 1))


# -- Bad input the issue names ---------------------------------------------------------------------


def _bad_inputs() -> dict[str, tuple[World, Event, type[ProtocolError], str]]:
    cases: dict[str, tuple[World, Event, type[ProtocolError], str]] = {}
    world = World(params(sample_ppm=DEFAULTS.sample_ppm, fraud_slash=DEFAULTS.fraud_slash))
    com = world.job(1)
    world.next_round(bytes(2))
    salt = 0
    while world.state.jobs[com.job_id].sampled:
        salt += 1
        world = World(params(sample_ppm=DEFAULTS.sample_ppm, fraud_slash=DEFAULTS.fraud_slash))
        com = world.job(1)
        world.next_round(salt.to_bytes(2, "big"))
    cases["evidence for a job not sampled"] = (world, mismatch(VALIDATORS[0], com, 0), NotSampled,
                                               "was not sampled")
    disputed = World()
    wrong = disputed.job(1, output=b"wrong")
    disputed.next_round()
    disputed.accuse(wrong)
    disputed.next_round()
    dispute = disputed.open_dispute()
    outsider = next(v for v in VALIDATORS if pk(v) not in dispute.committee
                    and pk(v) not in dispute.accusers)
    cases["vote from a non-member"] = (disputed, attest(outsider, wrong, Verdict.FRAUD, 1),
                                       NotOnCommittee, "not on the committee")
    assigned = World()
    job = assigned.job(1)
    assigned.next_round()
    other = next(v for v in VALIDATORS if v is not assigned.auditor(job))
    cases["attestation from an unassigned validator"] = (
        assigned, attest(other, job, Verdict.VALID, 0), NotAssigned, "is not assigned")
    elsewhere = sha256(b"another network")
    foreign = World()
    cases["account transaction signed for another chain id"] = (
        foreign, Bond(pk(VALIDATORS[0]), c.VALIDATOR, 1, nonce=1, chain_id=elsewhere)
        .signed(VALIDATORS[0]), WrongChain, "signed for chain")
    req = dataclasses.replace(request(9), chain_id=elsewhere).signed(CLIENT)
    cases["job signed for another chain id"] = (foreign, record(req, commit(req)), WrongChain,
                                                "signed for chain")
    foreign_com = dataclasses.replace(job, chain_id=elsewhere).signed(NODE)
    cases["evidence signed for another chain id"] = (
        assigned, Accuse(mismatch(other, foreign_com, 0).evidence), WrongChain, "signed for chain")
    return cases


BAD_INPUTS = _bad_inputs()


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_is_refused_naming_the_rule_and_changes_nothing(case: str) -> None:
    world, event, error, match = BAD_INPUTS[case]
    world.refuse(event, error, match)  # refuse() checks the state is unchanged
