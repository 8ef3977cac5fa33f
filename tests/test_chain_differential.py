"""The contracts against the specification: random event sequences through both.

Hypothesis draws sequences of what parties do — mints, bonds, unbonds,
withdrawals, beacon rounds, jobs posted in batches and recorded, audits, votes,
accusations, availability reports and served outputs, equivocations, canaries —
and each step goes through ``slashing.rules`` (signed events on a Python state)
and through ``AssayLedger`` on anvil (transactions from the party's chain
account). After every step both must have accepted, or both refused, and the
round, every balance, stake (amount, jail, offences, tombstone), unbonding
entry and locked earning, every job (status, sample, auditors, attestations,
accusers, deadlines, availability), every dispute (committee, votes, outcome),
every equivocation, the minted supply and the burned total must be equal.

A party is an Ed25519 key on the Python side and an anvil account on the chain
that registered that key, so both ledgers rank validators alike in their
draws. A job is a signed request and commitment in the Python ``RecordJob``,
and on chain the same (job id, commitment id, output hash) leaf in the node's
batch of the round, recorded by the client's transaction.

The fast run is part of ``make test``; the slow run draws 200 sequences.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.beacon import DevnetBeacon
from protocol.codec import Tensor
from protocol.errors import ProtocolError
from protocol.hashing import sha256
from protocol.keys import SigningKey
from protocol.messages import Attestation, Commitment, Evidence, JobRequest, Offence, Verdict
from slashing import constants as c
from slashing.events import (
    Accuse,
    Attest,
    BeaconRound,
    Bond,
    Event,
    Mint,
    PlantCanary,
    RecordJob,
    RegisterBeacon,
    ReportUnavailable,
    RevealCanary,
    ServeData,
    SetParams,
    Unbond,
    Withdraw,
    canary_digest,
)
from slashing.evm.anvil import Anvil
from slashing.evm.chain import Chain, ContractRevert
from slashing.evm.ledger import EvmLedger, deploy_devnet, leaf
from slashing.evm.merkle import JobBatch, JobLeaf
from slashing.rules import apply_event_in_place
from slashing.state import Account, LedgerParams, State

PARAMS = replace(
    LedgerParams.default(), sample_ppm=500_000, committee_size=2, challenge_window=1,
    audit_window=1, vote_window=1, availability_window=1, unbonding_period=16, jail_period=3,
)
"""Short windows and a high sampling rate, so that sequences of a few dozen steps reach
audits, disputes, releases and jail ends; the rules check the unbonding period still covers
the liability horizon (16 rounds here) and the economics still hold."""
PARTIES = 6
BEACON = DevnetBeacon(0xD1FF)
MODEL = sha256(b"differential model")
FEE = PARAMS.verification_fee + PARAMS.reward
SALT = b"differential canary"


@dataclass
class Pair:
    """The two ledgers, and what a step needs to address both."""

    chain: Chain
    ledger: EvmLedger
    genesis: State
    snapshot: str
    operator: str
    keys: list[SigningKey]
    addresses: list[str]

    def address_of(self, key: bytes) -> str:
        return self.addresses[[k.public.raw for k in self.keys].index(key)]


@dataclass
class JobCase:
    request: JobRequest
    commitment: Commitment
    output: bytes
    node: int
    client: int


Equivocation = tuple[int, tuple[Any, ...], tuple[Any, ...], tuple[Commitment, Commitment]]


@dataclass
class Run:
    pair: Pair
    state: State
    round: int = 0
    posted: set[tuple[int, int]] = field(default_factory=set)
    """(party, round) of every batch a party posted."""
    equivocations: list[Equivocation] = field(default_factory=list)
    """Equivocating batches of jobs never recorded: the node, its two leaves and commitments."""
    jobs: list[JobCase] = field(default_factory=list)
    planned: list[JobRequest] = field(default_factory=list)
    """Requests of canaries planted and not yet recorded."""
    counter: int = 0

    def python(self, event: Event) -> bool:
        try:
            apply_event_in_place(self.state, event)
        except ProtocolError:
            return False
        return True

    def evm(self, send: Any, *args: Any) -> bool:
        try:
            send(*args)
        except ContractRevert:
            return False
        return True

    def next(self) -> int:
        self.counter += 1
        return self.counter


def _genesis() -> State:
    state = State()
    apply_event_in_place(state, RegisterBeacon(public_key=BEACON.public_key, first_round=0))
    apply_event_in_place(state, SetParams(params=PARAMS))
    return state


def _round_event(number: int) -> BeaconRound:
    revealed = BEACON.reveal(number)
    return BeaconRound(round=number, signature=revealed.signature, randomness=revealed.randomness)


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with Anvil() as node:
        chain = Chain(node.url)
        operator, *addresses = chain.accounts[: PARTIES + 1]
        ledger = deploy_devnet(chain, PARAMS, BEACON.public_key, operator)
        keys = [SigningKey.derive(f"differential-{i}") for i in range(PARTIES)]
        for key, address in zip(keys, addresses, strict=True):
            ledger.register(key.public.raw, address, operator)
        state = _genesis()
        ledger.submit_devnet_round(BEACON.reveal(0), operator, b"")
        ledger.advance(operator)
        apply_event_in_place(state, _round_event(0))
        yield Pair(chain, ledger, state, chain.snapshot(), operator, keys, addresses)


# -- steps ----------------------------------------------------------------------------------------

party = st.integers(0, PARTIES - 1)
role = st.sampled_from([c.NODE, c.VALIDATOR])
which = st.integers(0, 63)
jobs = st.tuples(st.just("jobs"), party, st.lists(st.tuples(party, st.integers(-20, 5)),
                                                  min_size=1, max_size=3))
rounds = st.tuples(st.just("rounds"), st.sampled_from([1, 1, 2, 4, 9]))
attest = st.tuples(st.just("attest"), party, which,
                   st.sampled_from([Verdict.VALID, Verdict.VALID, Verdict.INCONCLUSIVE,
                                    Verdict.FRAUD]))
accuse = st.tuples(st.just("accuse"), party, which)
steps = st.one_of(
    jobs, jobs, rounds, rounds, attest, attest, accuse,
    st.tuples(st.just("mint"), party, st.integers(1, 60_000)),
    st.tuples(st.just("bond"), party, role, st.integers(1, 30_000)),
    st.tuples(st.just("unbond"), party, role, st.integers(1, 30_000)),
    st.tuples(st.just("withdraw"), party),
    st.tuples(st.just("unavailable"), party, which),
    st.tuples(st.just("serve"), which, st.booleans()),
    st.tuples(st.just("rerecord"), which),
    st.tuples(st.just("equivocate"), party),
    st.tuples(st.just("report"), party, which),
    st.tuples(st.just("plant"), party, party),
    st.tuples(st.just("reveal"), which),
)


def _request(run: Run, client: int, node: int, fee: int) -> JobRequest:
    keys = run.pair.keys
    return JobRequest(
        model_id=MODEL, input=Tensor("float32", (1,), run.next().to_bytes(4, "big")),
        client=keys[client].public.raw, node=keys[node].public.raw, nonce=run.counter, fee=fee,
        expiry_round=10**6, chain_id=run.state.chain_id or b"",
    ).signed(keys[client])


def _commitment(run: Run, request: JobRequest, output: bytes) -> Commitment:
    key = run.pair.keys[[k.public.raw for k in run.pair.keys].index(request.node)]
    return Commitment(
        job_id=request.job_id, model_id=MODEL, input_hash=sha256(request.input.data),
        output_hash=sha256(output), node=key.public.raw, chain_id=run.state.chain_id or b"",
    ).signed(key)


def _leaf(commitment: Commitment) -> JobLeaf:
    return JobLeaf(commitment.job_id, commitment.content_id, commitment.output_hash)


def _post(run: Run, node: int, leaves: list[JobLeaf]) -> tuple[JobBatch, bool]:
    """The node's batch of this round on chain; False when the chain refused it."""
    batch = JobBatch.of(leaves)
    posted = run.evm(run.pair.ledger.post_batch, run.round, batch, run.pair.addresses[node])
    if posted:
        run.posted.add((node, run.round))
    return batch, posted


def _beacon_round_for(run: Run, validator: bytes, job_id: bytes) -> int:
    """The round an attestation names: the committee's draw for a member, else the audit's."""
    job = run.state.jobs[job_id]
    if job.dispute is not None:
        dispute = run.state.disputes[job.dispute]
        if dispute.is_open and validator in dispute.committee and dispute.drawn_round is not None:
            return dispute.drawn_round
    return job.assigned_round if job.assigned_round is not None else job.sample_round


def _record_jobs(run: Run, node: int, orders: list[tuple[int, int]]) -> tuple[bool, bool] | None:
    pair = run.pair
    if (node, run.round) in run.posted:
        return None  # one batch per node per round: nothing to post this round
    cases = []
    for client, offset in orders:
        planned = [r for r in run.planned if r.node == pair.keys[node].public.raw]
        request = planned[0] if planned else _request(run, client, node, FEE + offset)
        if planned:
            run.planned.remove(request)
            client = [k.public.raw for k in pair.keys].index(request.client)
        output = b"output %d" % run.next()
        cases.append(JobCase(request, _commitment(run, request, output), output, node, client))
    batch, posted = _post(run, node, [_leaf(case.commitment) for case in cases])
    for index, case in enumerate(cases):
        ok_py = run.python(RecordJob(case.request.encode(), case.commitment.encode()))
        ok_evm = posted and run.evm(
            pair.ledger.record_job, leaf(pair.addresses[node], run.round, batch, index), MODEL,
            case.request.fee, pair.addresses[case.client],
        )
        assert ok_py == ok_evm, f"record job {index}: rules {ok_py}, contract {ok_evm}"
        if ok_py:
            run.jobs.append(case)
    return None


def step(run: Run, action: tuple[Any, ...]) -> None:
    """Apply one action to both ledgers and check they agree on whether it was allowed."""
    pair, ledger = run.pair, run.pair.ledger
    kind = action[0]
    chain_id = run.state.chain_id or b""
    if kind in ("attest", "accuse", "unavailable", "serve", "rerecord", "reveal"):
        if not run.jobs:
            return
        case = run.jobs[action[-1 if kind in ("rerecord", "reveal") else 2] % len(run.jobs)] \
            if kind not in ("serve",) else run.jobs[action[1] % len(run.jobs)]
        job_id = case.request.job_id
    if kind == "mint":
        _, i, amount = action
        ok_py = run.python(Mint(account=pair.keys[i].public.raw, amount=amount))
        ok_evm = run.evm(ledger.mint, pair.addresses[i], amount, pair.operator)
    elif kind in ("bond", "unbond"):
        _, i, role_name, amount = action
        event_type = Bond if kind == "bond" else Unbond
        send = ledger.bond if kind == "bond" else ledger.unbond
        ok_py = run.python(event_type(account=pair.keys[i].public.raw, role=role_name,
                                      amount=amount))
        ok_evm = run.evm(send, role_name, amount, pair.addresses[i])
    elif kind == "withdraw":
        _, i = action
        ok_py = run.python(Withdraw(account=pair.keys[i].public.raw))
        ok_evm = run.evm(ledger.withdraw, pair.addresses[i])
    elif kind == "rounds":
        for _ in range(action[1]):
            run.round += 1
            previous = BEACON.reveal(run.round - 1).signature
            ok_py = run.python(_round_event(run.round))
            ledger.submit_devnet_round(BEACON.reveal(run.round), pair.operator, previous)
            ok_evm = run.evm(ledger.advance, pair.operator)
            assert ok_py and ok_evm
            assert_equal(run)
        return
    elif kind == "jobs":
        _record_jobs(run, action[1], action[2])
        return
    elif kind == "attest":
        _, v, _, verdict = action
        key = pair.keys[v]
        beacon_round = _beacon_round_for(run, key.public.raw, job_id)
        attestation = Attestation(
            job_id=job_id, commitment_id=case.commitment.content_id, validator=key.public.raw,
            verdict=verdict, beacon_round=beacon_round, chain_id=chain_id,
        ).signed(key)
        ok_py = run.python(Attest(attestation.encode()))
        ok_evm = run.evm(ledger.attest, job_id, verdict, beacon_round, pair.addresses[v])
    elif kind == "accuse":
        _, v, _ = action
        key = pair.keys[v]
        sample_round = run.state.jobs[job_id].sample_round
        evidence = Evidence(
            offence=Offence.MISMATCH, job_id=job_id, accuser=key.public.raw,
            commitment=case.commitment.encode(), chain_id=chain_id,
            observed_hash=sha256(b"observed" + job_id), beacon_round=sample_round,
        ).signed(key)
        ok_py = run.python(Accuse(evidence=evidence.encode()))
        ok_evm = run.evm(ledger.accuse, job_id, evidence.observed_hash, sample_round,
                         evidence.content_id, pair.addresses[v])
    elif kind == "unavailable":
        _, v, _ = action
        key = pair.keys[v]
        account = run.state.accounts.get(key.public.raw)
        nonce = (account.nonce if account else 0) + 1
        report = ReportUnavailable(reporter=key.public.raw, job_id=job_id, nonce=nonce,
                                   chain_id=chain_id).signed(key)
        ok_py = run.python(report)
        ok_evm = run.evm(ledger.report_unavailable, job_id, pair.addresses[v])
    elif kind == "serve":
        _, _, honest = action
        output = case.output if honest else b"not the output"
        ok_py = run.python(ServeData(job_id=job_id, output=output))
        ok_evm = run.evm(ledger.serve_data, job_id, output, pair.operator)
    elif kind == "rerecord":
        # The node commits to a second answer for a job it holds: equivocation, caught on record
        if (case.node, run.round) in run.posted:
            return
        second = _commitment(run, case.request, b"another answer %d" % run.next())
        batch, posted = _post(run, case.node, [_leaf(second)])
        if not posted:
            return  # a node that is not bonded posts nothing on chain to equivocate with
        ok_py = run.python(RecordJob(case.request.encode(), second.encode()))
        ok_evm = run.evm(ledger.record_job, leaf(pair.addresses[case.node], run.round, batch, 0),
                         MODEL, case.request.fee, pair.addresses[case.client])
    elif kind == "equivocate":
        _, node = action
        if (node, run.round) in run.posted:
            return
        request = _request(run, (node + 1) % PARTIES, node, FEE)
        first = _commitment(run, request, b"one answer")
        second = _commitment(run, request, b"another answer")
        batch, posted = _post(run, node, [_leaf(first), _leaf(second)])
        if not posted:
            return
        leaves = (leaf(pair.addresses[node], run.round, batch, 0),
                  leaf(pair.addresses[node], run.round, batch, 1))
        run.equivocations.append((node, *leaves, (first, second)))
        return
    elif kind == "report":
        if not run.equivocations:
            return
        _, reporter, index = action
        node, first_leaf, second_leaf, (first, second) = run.equivocations[
            index % len(run.equivocations)
        ]
        key = pair.keys[reporter]
        evidence = Evidence(
            offence=Offence.EQUIVOCATION, job_id=first.job_id, accuser=key.public.raw,
            commitment=first.encode(), conflicting=second.encode(), chain_id=chain_id,
        ).signed(key)
        ok_py = run.python(Accuse(evidence=evidence.encode()))
        ok_evm = run.evm(ledger.report_equivocation, first_leaf, second_leaf,
                         pair.addresses[reporter])
    elif kind == "plant":
        _, client, node = action
        request = _request(run, client, node, FEE)
        digest = canary_digest(SALT, request.job_id)
        ok_py = run.python(PlantCanary(digest=digest))
        ok_evm = run.evm(ledger.plant_canary, digest, pair.operator)
        if ok_py:
            run.planned.append(request)
    elif kind == "reveal":
        ok_py = run.python(RevealCanary(job_id=job_id, salt=SALT))
        ok_evm = run.evm(ledger.reveal_canary, SALT, job_id, pair.operator)
    else:
        raise AssertionError(kind)
    assert ok_py == ok_evm, f"{action}: rules {'accepted' if ok_py else 'refused'}, " \
        f"contract {'accepted' if ok_evm else 'refused'}"


def assert_equal(run: Run) -> None:
    """The round, every account, job, dispute and equivocation, the supply and burned agree."""
    pair, state = run.pair, run.state
    ledger = pair.ledger
    address = pair.address_of
    assert ledger.current_round() == state.current_round
    assert ledger.totals() == (state.minted, state.burned)
    for key, chain_address in zip(pair.keys, pair.addresses, strict=True):
        ours = ledger.account(chain_address)
        theirs = state.accounts.get(key.public.raw)
        assert ours.known == (theirs is not None)
        expected = theirs or Account()
        assert (ours.balance, ours.node, ours.validator, ours.unbonding, ours.locked) == (
            expected.balance, expected.node, expected.validator, expected.unbonding,
            expected.locked,
        ), key.public.raw.hex()[:8]
    for job_id, job in state.jobs.items():
        theirs = ledger.job(job_id)
        assert theirs is not None
        expected = (
            address(job.client), address(job.node), job.fee, job.recorded_round, job.status,
            job.sampled, job.zk, job.equivocated, job.audit_pending,
            address(job.verifier) if job.verifier else None, job.closed_round,
            address(job.availability_reporter) if job.availability_reporter else None,
            job.unavailable_since, job.served_round, job.assigned_round, job.audit_deadline,
            job.commitment_id, job.output_hash, job.dispute,
            tuple(address(a) for a in job.auditors), tuple(address(a) for a in job.accusers),
            tuple((address(v), verdict) for v, verdict in job.attestations),
        )
        got = (
            theirs.client, theirs.node, theirs.fee, theirs.recorded_round, theirs.status,
            theirs.sampled, theirs.zk, theirs.equivocated, theirs.audit_pending, theirs.verifier,
            theirs.closed_round, theirs.availability_reporter, theirs.unavailable_since,
            theirs.served_round, theirs.assigned_round, theirs.audit_deadline,
            theirs.commitment_id, theirs.output_hash, theirs.dispute, theirs.auditors,
            theirs.accusers, theirs.attestations,
        )
        assert got == expected, f"job {job_id.hex()[:8]}"
    for dispute_id, dispute in state.disputes.items():
        theirs = ledger.dispute(dispute_id)
        expected_dispute = (
            dispute.job_id, address(dispute.node), dispute.opened_round, dispute.bond,
            dispute.draws, dispute.drawn_round, dispute.closed_round, dispute.outcome,
            tuple(address(a) for a in dispute.accusers),
            tuple(address(a) for a in dispute.committee),
            tuple((address(v.validator), v.verdict) for v in dispute.votes),
        )
        got_dispute = (
            theirs.job_id, theirs.node, theirs.opened_round, theirs.bond, theirs.draws,
            theirs.drawn_round, theirs.closed_round, theirs.outcome, theirs.accusers,
            theirs.committee, theirs.votes,
        )
        assert got_dispute == expected_dispute, f"dispute {dispute_id.hex()[:8]}"
    assert sorted(ledger.contract.functions.openDisputes().call()) == sorted(state.open_disputes)
    for node, job_id in state.equivocations:
        assert ledger.contract.functions.equivocated(address(node), job_id).call()


def run_sequence(pair: Pair, actions: list[tuple[Any, ...]]) -> Run:
    pair.chain.revert(pair.snapshot)
    pair.snapshot = pair.chain.snapshot()
    run = Run(pair, pair.genesis.copy())
    for action in actions:
        step(run, action)
        assert_equal(run)
    return run


OPENING: list[tuple[Any, ...]] = [
    *[("mint", i, 60_000) for i in range(PARTIES)],
    ("bond", 0, c.NODE, 20_000), ("bond", 1, c.NODE, 20_000),
    *[("bond", i, c.VALIDATOR, 15_000) for i in range(1, PARTIES)],
]
"""Everyone funded, two nodes and five validators bonded, so later steps meet live stake."""


def sequences(min_size: int, max_size: int) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    """The opening, then what parties do; jobs, rounds, audits and accusations drawn most."""
    return st.lists(steps, min_size=min_size, max_size=max_size).map(
        lambda tail: OPENING + tail
    )


@settings(max_examples=2, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(actions=sequences(10, 14))
def test_contracts_equal_the_rules(pair: Pair, actions: list[tuple[Any, ...]]) -> None:
    run_sequence(pair, actions)


@pytest.mark.slow
@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(actions=sequences(1, 60))
def test_contracts_equal_the_rules_long(pair: Pair, actions: list[tuple[Any, ...]]) -> None:
    run_sequence(pair, actions)


@pytest.mark.slow
def test_an_equivocation_reaches_unbonding_stake_on_both(pair: Pair) -> None:
    """The node unbonds everything after posting and before the report: both take the slash
    from the unbonding entry, refuse a second report, and keep the tombstoned role out."""
    run = run_sequence(pair, [
        ("mint", 0, 60_000), ("mint", 1, 60_000), ("mint", 2, 60_000),
        ("bond", 0, c.NODE, 20_000), ("bond", 1, c.VALIDATOR, 20_000), ("rounds", 2),
        ("equivocate", 0), ("rounds", 1), ("unbond", 0, c.NODE, 20_000), ("report", 1, 0),
        ("report", 2, 0), ("rounds", 9), ("rounds", 9), ("withdraw", 0),
        ("bond", 0, c.NODE, 10_000), ("bond", 0, c.VALIDATOR, 10_000),
    ])
    assert run.state.accounts[pair.keys[0].public.raw].node.slashed_out


def test_a_dispute_from_accusation_to_fraud_on_both(pair: Pair) -> None:
    """A job sampled, its auditor calls it VALID, another validator accuses, the committee
    drawn from a later round votes FRAUD: the node, the lazy auditor and the shares agree."""
    run = run_sequence(pair, [*OPENING, ("jobs", 0, [(5, 0), (4, 0), (3, 0)]), ("rounds", 1)])
    sampled = [i for i, case in enumerate(run.jobs) if run.state.jobs[case.request.job_id].sampled]
    assert sampled, "the beacon of this fixed sequence samples one of three jobs at p = 1/2"
    index = sampled[0]
    job = run.state.jobs[run.jobs[index].request.job_id]
    auditor = [k.public.raw for k in pair.keys].index(job.auditors[-1])
    accuser = next(i for i in range(1, PARTIES) if i != auditor)
    step(run, ("attest", auditor, index, Verdict.VALID))
    step(run, ("accuse", accuser, index))
    step(run, ("rounds", 1))
    assert_equal(run)
    dispute = run.state.disputes[run.state.jobs[job.job_id].dispute or b""]
    assert len(dispute.committee) == PARAMS.committee_size
    for member in dispute.committee:
        voter = [k.public.raw for k in pair.keys].index(member)
        # A member votes with an attestation: FRAUD comes as a vote only inside the dispute
        key = pair.keys[voter]
        attestation = Attestation(
            job_id=job.job_id, commitment_id=job.commitment_id, validator=key.public.raw,
            verdict=Verdict.FRAUD, beacon_round=dispute.drawn_round or 0,
            chain_id=run.state.chain_id or b"",
        ).signed(key)
        assert run.python(Attest(attestation.encode()))
        pair.ledger.attest(job.job_id, Verdict.FRAUD, dispute.drawn_round or 0,
                           pair.addresses[voter])
        assert_equal(run)
    final = run.state.disputes[dispute.dispute_id]
    assert final.outcome is Verdict.FRAUD
    node = run.state.accounts[pair.keys[0].public.raw].node
    assert node.offences == 1 and node.amount == 20_000 - PARAMS.fraud_slash
    assert run.state.accounts[pair.keys[auditor].public.raw].validator.offences == 1
