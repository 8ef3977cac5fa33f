"""The adversarial review's findings, each performed with real signed messages on the rules.

Default parameters (p = 5 %, S = 5 000, R = 100, committee k = 3, window W = 4)
unless a finding needs every job sampled to be quick.
"""

from __future__ import annotations

from protocol.keys import SigningKey
from protocol.messages import Commitment, Verdict
from protocol.sampling import sampled
from slashing import constants as c
from slashing.events import Bond, Mint
from slashing.rules import apply_event, is_bonded_validator
from slashing.state import JobStatus
from tests.test_ledger import (
    CLIENT,
    DEFAULTS,
    KEY_OF,
    NODE,
    OTHER_NODE,
    VALIDATORS,
    World,
    attest,
    commit,
    is_sampled,
    mismatch,
    params,
    pk,
    record,
    request,
)
from verifier.sampling import assigned_validator

W = DEFAULTS.challenge_window


def colluders(n: int) -> list[SigningKey]:
    return [SigningKey.derive(f"attack/colluder-{i}") for i in range(n)]


def honest_validators(n: int) -> list[SigningKey]:
    return [SigningKey.derive(f"attack/honest-{i}") for i in range(n)]


def test_finding_1_dispute_shield() -> None:
    """A colluder accuses first and its committee never votes: the cheat is paid."""
    (shield,) = colluders(1)
    world = World(validators=(*VALIDATORS, shield))
    com = world.job(1, output=b"wrong")
    world.next_round()
    node_stake = world.stake(NODE)
    world.apply(mismatch(shield, com, 0))
    before = world.state.copy()
    refused = apply_event_safely(world, mismatch(VALIDATORS[0], com, 0))
    assert refused and "already has open dispute" in refused
    assert world.state == before
    for _ in range(W + 2):
        world.next_round()
    (dispute,) = world.state.disputes.values()
    assert dispute.outcome is Verdict.INCONCLUSIVE and not dispute.votes
    assert world.state.jobs[com.job_id].status is JobStatus.SETTLED
    assert world.stake(NODE) == node_stake
    assert world.stake(shield, c.VALIDATOR) == c.MIN_STAKE[c.VALIDATOR]


def apply_event_safely(world: World, event: object) -> str | None:
    try:
        apply_event(world.state, event)  # type: ignore[arg-type]
    except Exception as exc:  # the refusal is what the test reads
        return str(exc)
    return None


def test_finding_2_committee_grinding_frames_an_honest_node() -> None:
    """3 colluders of 30 pick the round and the accusing key until the committee is theirs."""
    gang, honest = colluders(3), honest_validators(27)
    world = World(validators=(*gang, *honest))
    framed = tries = 0
    for nonce in range(1, 200):
        com = world.job(nonce)  # honest work
        world.next_round()
        if not sampled(world.state.beacon_value(world.state.current_round) or b"",
                       com.job_id, com.content_id, world.state.params.sample_ppm):  # type: ignore[union-attr]
            continue
        tries += 1
        chosen = None
        for _ in range(W + 1):  # every round of the challenge window, every colluding key
            for accuser in gang:
                trial = apply_event(world.state, mismatch(accuser, com,
                                                          world.state.jobs[com.job_id].sample_round))
                (dispute,) = [d for d in trial.disputes.values() if d.is_open]
                friends = sum(m in {pk(g) for g in gang} for m in dispute.committee)
                if 2 * friends > len(dispute.committee):
                    chosen = trial, dispute
                    break
            if chosen:
                break
            world.next_round()
        if chosen:
            world.state, dispute = chosen
            world.apply(*(attest(g, com, Verdict.FRAUD, dispute.opened_round)
                          for g in gang if pk(g) in dispute.committee))
            framed += 1
            for _ in range(W + 1):  # the honest member's silence does not save the node
                world.next_round()
            break
        while world.state.jobs[com.job_id].status is JobStatus.PENDING:
            world.next_round()
    assert framed == 1 and tries > 0
    assert world.state.accounts[pk(NODE)].node.offences == 1  # slashed for honest work


def test_finding_3_a_burst_of_fabrications_outruns_the_stake() -> None:
    """A node that never runs the model, 100 jobs a round, stake 20 000: the slash is capped.

    The auditor accuses each sampled job at once; its committee votes in the
    last round of the vote window, so the node is jailed W rounds after its
    first sampled job, and the jobs it recorded meanwhile settle.
    """
    world = World(DEFAULTS)
    world.apply(Mint(pk(CLIENT), 10_000_000), Mint(pk(NODE), c.MIN_STAKE[c.NODE]),
                Bond(pk(NODE), c.NODE, c.MIN_STAKE[c.NODE]))
    stake_before, balance_before = world.stake(NODE), world.balance(NODE)
    nonce = 0
    fresh: list[Commitment] = []
    disputed: list[tuple[Commitment, int]] = []
    for _ in range(3 * W):
        for _ in range(100):
            nonce += 1
            req = request(nonce)
            event = record(req, commit(req, output=b"made up"))
            if apply_event_safely(world, event) is None:
                world.apply(event)
                fresh.append(commit(req, output=b"made up"))
        world.next_round()
        now = world.state.current_round
        for com in fresh:
            if is_sampled(world.state, com):
                world.apply(mismatch(VALIDATORS[0], com, now))
                disputed.append((com, now))
        fresh = []
        for com, opened in disputed:
            job = world.state.jobs[com.job_id]
            if opened + W == now and job.open_dispute is not None:
                dispute = world.state.disputes[job.open_dispute]
                world.apply(*(attest(KEY_OF[m], com, Verdict.FRAUD, opened)
                              for m in dispute.committee))
    for _ in range(W + 3):
        world.next_round()
    earned = world.balance(NODE) - balance_before
    lost = stake_before - world.stake(NODE)
    assert lost <= stake_before == 2 * c.MIN_STAKE[c.NODE]
    assert earned - lost > 0  # the fabricator profits


def test_finding_4_a_lazy_validator_takes_the_fee_and_a_wrong_valid_costs_nothing() -> None:
    world = World()
    com = world.job(1, output=b"wrong")
    world.next_round()
    lazy, assigned = VALIDATORS[4], VALIDATORS[0]
    world.apply(attest(lazy, com, Verdict.VALID, 0))  # unassigned, re-ran nothing
    assert world.state.jobs[com.job_id].verifier == pk(lazy)
    world.apply(mismatch(assigned, com, 0))
    dispute = world.open_dispute()
    world.apply(*(attest(m, com, Verdict.FRAUD, dispute.opened_round)
                  for m in world.committee()))
    assert world.state.jobs[com.job_id].status is JobStatus.REFUNDED
    assert world.stake(lazy, c.VALIDATOR) == c.MIN_STAKE[c.VALIDATOR]


def test_finding_5_silent_validators_and_jailed_ones_are_assigned() -> None:
    silent, honest = colluders(45), honest_validators(5)
    world = World(params(sample_ppm=DEFAULTS.sample_ppm), validators=(*silent, *honest))
    audited = sampled_jobs = 0
    for nonce in range(1, 400):
        com = world.job(nonce)
        world.next_round()
        job = world.state.jobs[com.job_id]
        value = world.state.beacon_value(job.sample_round) or b""
        if not sampled(value, job.job_id, job.commitment_id, DEFAULTS.sample_ppm):
            continue
        sampled_jobs += 1
        bonded = [v for v in world.state.accounts if is_bonded_validator(world.state, v)]
        chosen = assigned_validator(value, job.job_id, job.commitment_id, bonded)
        audited += chosen in {pk(h) for h in honest}
    assert sampled_jobs > 5 and audited / sampled_jobs < 0.5


def test_finding_6_a_job_replays_on_another_network_and_pairs_with_another_node() -> None:
    req = request(1)
    com = commit(req)
    ours = World()
    ours.apply(record(req, com))
    theirs = World(params(sample_ppm=DEFAULTS.sample_ppm))  # another network's genesis
    balance = theirs.balance(CLIENT)
    theirs.apply(record(req, com))  # charged again, there
    assert theirs.balance(CLIENT) == balance - req.fee
    other = World()
    other.apply(record(req, commit(req, OTHER_NODE)))  # the request named no node
    assert other.state.jobs[req.job_id].node == pk(OTHER_NODE)
