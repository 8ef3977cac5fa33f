"""The ledger's side of ``RECORD`` disputes: who may open one, what the record holds, and what
a decided one costs.

The attacks: an accuser that would choose which of a node's jobs a committee judges (the
record is the ledger's, a function of the accused job alone); a colluder that opens a per-job
dispute first to pre-empt the record (the job keeps one dispute and its kind); an auditor
punished for judging one job alone, as it must (not lazy on a record); and a record
accusation that would escape the checks every accusation passes.
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from protocol.errors import MalformedMessage
from protocol.hashing import sha256
from protocol.keys import SigningKey
from protocol.messages import Commitment, Evidence, Offence, Verdict
from protocol.sampling import RECORD_JOBS
from slashing import constants as c
from slashing.events import Accuse
from slashing.job_records import RecordOrder
from slashing.rules import NotSampled, record_of
from slashing.state import JobStatus, decode_state, encode_state
from tests.test_ledger import (
    DEFAULTS,
    KEY_OF,
    NODE,
    OTHER_NODE,
    VALIDATORS,
    World,
    commit,
    find_salt,
    is_sampled,
    mismatch,
    params,
    pk,
    record,
    request,
)

MIN_VALIDATOR = c.MIN_STAKE[c.VALIDATOR]


def on_record(key: SigningKey, com: Commitment, round_number: int, detail: str = "") -> Accuse:
    return mismatch(key, com, round_number, detail, Offence.RECORD)


def other_than(world: World, com: Commitment) -> SigningKey:
    """A bonded validator that is not the job's auditor."""
    auditors = set(world.state.jobs[com.job_id].auditors)
    return next(v for v in VALIDATORS if pk(v) not in auditors)


def test_the_record_is_the_nodes_sampled_jobs_of_the_model_before_the_job() -> None:
    world = World(params(sample_ppm=500_000))
    coms = []
    for nonce in range(1, 25):
        coms.append(world.job(nonce))
        coms.append(world.job(100 + nonce, node=OTHER_NODE))  # another node's jobs
        world.next_round()
    last = coms[-2]
    listed = record_of(world.state, last.job_id)
    jobs = world.state.jobs
    expected = sorted((jobs[c_.job_id].recorded_round, c_.job_id) for c_ in coms[:-2:2]
                      if jobs[c_.job_id].sampled)
    assert listed == [j for _, j in expected]
    assert 0 < len(listed) < 23  # half are sampled: unsampled jobs are no part of it
    assert all(jobs[j].node == pk(NODE) and jobs[j].sampled for j in listed)
    # a function of the job alone: it lists nothing recorded after it, whoever asks, whenever
    first = record_of(world.state, coms[0].job_id)
    assert first == []
    assert record_of(world.state, coms[20].job_id) == [
        j for j in listed if jobs[j].recorded_round < jobs[coms[20].job_id].recorded_round]
    # bounded: the last RECORD_JOBS (here 3), oldest first
    assert record_of(world.state, last.job_id, limit=3) == listed[-3:]
    assert RECORD_JOBS >= 64
    # the service's index walks back over the node's jobs only, and answers the same; jobs
    # recorded in one round come in any order, so they are added shuffled
    order = RecordOrder()
    for job in random.Random(7).sample(list(jobs.values()), len(jobs)):
        order.add(job)
        order.add(job)  # a job noted twice is listed once
    for job in jobs.values():
        for limit in (RECORD_JOBS, 3):
            assert record_of(world.state, job.job_id, limit, order.earlier(job)) == \
                record_of(world.state, job.job_id, limit), job.job_id.hex()
    # a walk handed another node's job, or a later one, is refused rather than answered
    with pytest.raises(ValueError, match="not an earlier job"):
        record_of(world.state, coms[0].job_id, newest_first=[coms[1].job_id])
    with pytest.raises(ValueError, match="not an earlier job"):
        record_of(world.state, coms[0].job_id, newest_first=[coms[2].job_id])


def test_a_record_dispute_slashes_the_node_and_holds_no_auditor_lazy() -> None:
    world = World()
    earlier = world.job(1)
    com = world.job(2)
    world.next_round()
    world.audit(earlier)
    world.audit(com)  # the auditor judged the job alone: VALID, as it must
    auditor = KEY_OF[world.state.jobs[com.job_id].auditors[0]]
    accuser = other_than(world, com)
    before = {k: world.stake(k, c.VALIDATOR) for k in VALIDATORS}
    node_stake = world.stake(NODE)
    world.apply(on_record(accuser, com, world.state.jobs[com.job_id].sample_round))
    dispute = world.open_dispute()
    assert dispute.on_record and dispute.accusers == (pk(accuser),)
    world.next_round()
    world.vote(com, (Verdict.FRAUD,) * 3)
    assert world.state.disputes[dispute.dispute_id].outcome is Verdict.FRAUD
    assert world.stake(NODE) == node_stake - params().fraud_slash
    assert world.state.jobs[com.job_id].status is JobStatus.REFUNDED
    # nobody's validator stake moved: the auditor's VALID on the job alone is not lazy
    assert world.stake(auditor, c.VALIDATOR) == before[auditor]
    assert {k: world.stake(k, c.VALIDATOR) for k in VALIDATORS} == before
    assert world.state.counters.wrong_valid_slashed == 0


def test_the_same_job_on_a_mismatch_holds_its_auditor_lazy() -> None:
    """The contrast: a per-job dispute confirmed FRAUD slashes the auditor that said VALID."""
    world = World()
    com = world.job(1, output=b"wrong")
    world.next_round()
    world.audit(com)
    auditor = KEY_OF[world.state.jobs[com.job_id].auditors[0]]
    world.apply(mismatch(other_than(world, com), com, world.state.jobs[com.job_id].sample_round))
    world.next_round()
    world.vote(com, (Verdict.FRAUD,) * 3)
    assert world.stake(auditor, c.VALIDATOR) == MIN_VALIDATOR - DEFAULTS.lazy_validator_slash


def test_a_false_record_accusation_costs_the_accuser_its_slash_and_bond() -> None:
    world = World()
    com = world.job(1)
    world.next_round()
    accuser = world.auditor(com)
    balance = world.balance(accuser)
    world.apply(on_record(accuser, com, world.state.jobs[com.job_id].sample_round))
    assert world.balance(accuser) == balance - params().accuser_bond
    world.next_round()
    world.vote(com, (Verdict.VALID,) * 3)
    assert world.stake(accuser, c.VALIDATOR) == MIN_VALIDATOR - params().false_accusation_slash
    assert world.balance(accuser) == balance - params().accuser_bond
    assert world.state.jobs[com.job_id].status is JobStatus.PENDING  # it settles as usual


def test_a_dispute_keeps_the_kind_it_was_opened_with() -> None:
    """A colluder's per-job accusation first: the record accuser joins it as it is (and the
    node's next job can be accused on the record); a record dispute takes a mismatch."""
    world = World()
    first, second = world.job(1), world.job(2)
    world.next_round()
    colluder = world.auditor(first)
    world.apply(mismatch(colluder, first, 0))
    honest = next(v for v in VALIDATORS if v != colluder)
    world.apply(on_record(honest, first, 0))
    dispute = world.open_dispute()
    assert not dispute.on_record and len(dispute.accusers) == 2
    world.apply(on_record(world.auditor(second), second, 0))
    world.apply(mismatch(next(v for v in VALIDATORS if pk(v) not in world.state.jobs[
        second.job_id].accusers), second, 0))
    opened = [d for d in world.state.disputes.values() if d.job_id == second.job_id]
    assert len(opened) == 1 and opened[0].on_record and len(opened[0].accusers) == 2


def test_a_record_accusation_passes_every_check_an_accusation_does() -> None:
    world = World(params(sample_ppm=DEFAULTS.sample_ppm, fraud_slash=DEFAULTS.fraud_slash))
    com = world.job(1)
    world.next_round(find_salt(world.state, lambda s: not is_sampled(s, com)))
    world.refuse(on_record(VALIDATORS[0], com, 0), NotSampled, "was not sampled")
    world = World()
    com = world.job(1)
    world.next_round()
    accuser = world.auditor(com)
    world.refuse(on_record(accuser, com, 7), Exception, "names beacon round 7")
    stranger = SigningKey.derive("record/stranger")
    world.refuse(on_record(stranger, com, 0), Exception, "not bonded as a validator")
    accused = on_record(accuser, com, 0)
    world.apply(accused)
    world.refuse(accused, Exception, "already recorded")
    # a commitment the ledger did not record is no job of the record
    req = request(9)
    world.apply(record(req, commit(req)))
    forged = dataclasses.replace(commit(req, output=b"other"))
    world.refuse(on_record(VALIDATORS[1], forged, 0), Exception, "recorded")


def test_a_record_dispute_survives_the_state_codec() -> None:
    world = World()
    com = world.job(1)
    world.next_round()
    world.apply(on_record(world.auditor(com), com, 0))
    assert decode_state(encode_state(world.state)) == world.state
    assert world.open_dispute().on_record


def test_record_evidence_names_the_job_it_accuses() -> None:
    with pytest.raises(MalformedMessage, match="job_id differs"):
        Evidence(offence=Offence.RECORD, job_id=sha256(b"x"), accuser=pk(VALIDATORS[0]),
                 commitment=commit(request(1)).encode(), chain_id=request(1).chain_id)
