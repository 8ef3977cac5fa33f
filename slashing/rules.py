"""The ledger rules: one ``process_<event>`` function per event type.

Each function reads top to bottom as the rule, in the manner of the Ethereum
consensus specs: a comment naming a check, the check (:func:`require`, which
raises :class:`LedgerRuleError` — not ``assert``, which ``python -O``
removes), and at the end the effect. Predicates are named questions
(``is_bonded``, ``is_sampled_job``); money moves only through the helpers
(``increase_balance``, ``slash_stake``, ``distribute``), so conservation
(balances + bonds + escrow + burned = minted) can be read off them.

Rules are pure from the caller's view: :func:`apply_event` works on a copy
and returns it, so a refused event leaves the caller's state untouched. They
do no I/O and read no clock and no randomness but the beacon values in state.

Life of a job: ``RecordJob`` escrows the fee at round t; the value of round
t+1 (its *sample round*) decides whether it is audited; validators ``Attest``
sampled jobs; anyone bonded as validator may ``Accuse`` within the challenge
window; at the first ``BeaconRound`` after ``sample round + challenge
window`` an undisputed job settles.

Slash shares (basis points of what was actually taken; the rest is burned):

* confirmed FRAUD: ``accuser_share_bps`` to the accuser, ``committee_share_bps``
  split among the members who voted FRAUD; the client's fee is refunded.
* false accusation (committee majority VALID): ``wronged_node_share_bps`` to the
  accused node — it was made to serve the job again and its fee was held up —
  and ``committee_share_bps`` among the members who voted VALID.
* equivocation: ``reporter_share_bps`` to the validator that reported it, none
  when the ledger caught it itself (a second ``RecordJob``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from assay.economics import violations
from assay.errors import ProtocolError, ReplayedMessage
from assay.hashing import sha256, short_hex
from assay.messages import Attestation, Offence, Verdict
from assay.sampling import draw_committee, sampled
from slashing import constants as c
from slashing.events import (
    Accuse,
    Attest,
    BeaconRound,
    Bond,
    Event,
    Mint,
    RecordJob,
    RegisterBeacon,
    SetParams,
)
from slashing.state import (
    Account,
    Dispute,
    Job,
    JobStatus,
    LedgerParams,
    Stake,
    State,
    Vote,
)


class LedgerRuleError(ProtocolError):
    """The event breaks a ledger rule; it was not applied and the state is unchanged."""


def require(condition: bool, message: str) -> None:
    """A rule's check: survives ``python -O``, unlike ``assert``."""
    if not condition:
        raise LedgerRuleError(message)


def _hex(data: bytes) -> str:
    return short_hex(data, 16)


# -- Predicates ----------------------------------------------------------------------------------


def is_known_account(state: State, account: bytes) -> bool:
    return account in state.accounts


def is_bonded(state: State, account: bytes, role: str) -> bool:
    """Bonded in ``role`` with at least the minimum stake and not slashed out."""
    record = state.accounts.get(account)
    if record is None:
        return False
    stake = record.stake(role)
    return not stake.slashed_out and stake.amount >= c.MIN_STAKE[role]


def is_bonded_node(state: State, account: bytes) -> bool:
    return is_bonded(state, account, c.NODE)


def is_bonded_validator(state: State, account: bytes) -> bool:
    return is_bonded(state, account, c.VALIDATOR)


def is_sample_round_revealed(state: State, job: Job) -> bool:
    return state.beacon_value(job.sample_round) is not None


def is_sampled_job(state: State, params: LedgerParams, job: Job) -> bool:
    """Whether the sample round's beacon value selects this job for re-execution."""
    beacon = state.beacon_value(job.sample_round)
    if beacon is None:
        return False
    return sampled(beacon, job.job_id, job.commitment_id, params.sample_ppm)


def is_in_challenge_window(state: State, params: LedgerParams, job: Job) -> bool:
    return state.current_round <= job.sample_round + params.challenge_window


def is_settleable_job(state: State, params: LedgerParams, job: Job) -> bool:
    """Pending, undisputed, and its challenge window has closed."""
    return (
        job.status is JobStatus.PENDING
        and job.open_dispute is None
        and not is_in_challenge_window(state, params, job)
    )


def is_vote_window_over(state: State, params: LedgerParams, dispute: Dispute) -> bool:
    return state.current_round > dispute.opened_round + params.challenge_window


def is_slashed_for_equivocation(state: State, node: bytes, job_id: bytes) -> bool:
    return (node, job_id) in state.equivocations


def bonded_validators(state: State) -> list[bytes]:
    return [a for a in state.accounts if is_bonded_validator(state, a)]


def dispute_outcome(dispute: Dispute) -> Verdict:
    """A strict majority of the whole committee decides; anything less is INCONCLUSIVE."""
    size = len(dispute.committee)
    fraud = sum(1 for v in dispute.votes if v.verdict is Verdict.FRAUD)
    valid = sum(1 for v in dispute.votes if v.verdict is Verdict.VALID)
    if 2 * fraud > size:
        return Verdict.FRAUD
    if 2 * valid > size:
        return Verdict.VALID
    return Verdict.INCONCLUSIVE


def committee_seed(job_id: bytes, accuser: bytes) -> bytes:
    """What a dispute's committee draw is keyed by: fixed by the job and the accuser.

    Were it the evidence's content id, an accuser could re-word its evidence
    (its free-text detail) until the draw gave it a friendly committee.
    """
    return sha256(c.COMMITTEE_SEED_TAG + job_id + accuser)


def get_params(state: State) -> LedgerParams:
    # Verify the genesis parameters are set
    if state.params is None:
        raise LedgerRuleError("the ledger has no parameters yet; SetParams comes first")
    return state.params


def get_job(state: State, job_id: bytes) -> Job:
    # Verify the job is recorded
    job = state.jobs.get(job_id)
    if job is None:
        raise LedgerRuleError(f"unknown job {_hex(job_id)}")
    return job


# -- State changes -------------------------------------------------------------------------------


def increase_balance(state: State, account: bytes, amount: int) -> None:
    record = state.accounts.get(account, Account())
    state.accounts[account] = dataclasses.replace(record, balance=record.balance + amount)


def decrease_balance(state: State, account: bytes, amount: int) -> None:
    record = state.accounts[account]
    state.accounts[account] = dataclasses.replace(record, balance=record.balance - amount)


def slash_stake(state: State, account: bytes, role: str, amount: int) -> int:
    """Take up to ``amount`` of the stake (never below zero) and return what was taken.

    A role whose stake is left below its minimum is slashed out and stays so.
    """
    record = state.accounts.get(account, Account())
    stake = record.stake(role)
    taken = min(stake.amount, amount)
    left = stake.amount - taken
    slashed = Stake(amount=left, slashed_out=stake.slashed_out or left < c.MIN_STAKE[role])
    state.accounts[account] = record.with_stake(role, slashed)
    state.counters.slashings += 1
    return taken


def distribute(state: State, amount: int, shares: Sequence[tuple[Sequence[bytes], int]]) -> None:
    """Give each group its share of ``amount`` (bps), split equally; burn the rest and the dust."""
    paid = 0
    for recipients, share_bps in shares:
        if not recipients:
            continue
        each = amount * share_bps // c.BPS // len(recipients)
        for recipient in recipients:
            increase_balance(state, recipient, each)
        paid += each * len(recipients)
    state.burned += amount - paid


def refund_job(state: State, job: Job) -> None:
    increase_balance(state, job.client, job.fee)
    state.jobs[job.job_id] = dataclasses.replace(job, status=JobStatus.REFUNDED)
    state.counters.jobs_refunded += 1


def settle_job(state: State, params: LedgerParams, job: Job) -> None:
    """Pay out the escrow once nobody can challenge the job any more.

    The node earns ``fee - verification_fee`` whether or not it was audited, so
    its reward never depends on the sample (the R of the economic check). The
    verification fee goes to the first validator that attested VALID, or back
    to the client when nobody did. A sampled job that no validator attested
    settles like any other: penalties for unavailable nodes and lazy
    validators are not rules of this ledger version.
    """
    if job.equivocated:
        refund_job(state, job)
        return
    increase_balance(state, job.node, job.fee - params.verification_fee)
    payee = job.verifier if job.verifier is not None else job.client
    increase_balance(state, payee, params.verification_fee)
    state.jobs[job.job_id] = dataclasses.replace(job, status=JobStatus.SETTLED)
    state.counters.jobs_settled += 1


def punish_equivocation(
    state: State, params: LedgerParams, node: bytes, job_id: bytes, reporter: bytes | None
) -> None:
    state.equivocations.add((node, job_id))
    taken = slash_stake(state, node, c.NODE, params.equivocation_slash)
    rewarded = (reporter,) if reporter is not None else ()
    distribute(state, taken, [(rewarded, params.reporter_share_bps)])
    job = state.jobs.get(job_id)
    if job is not None and job.node == node:
        # The client got two answers: the job settles as a refund
        state.jobs[job_id] = dataclasses.replace(job, equivocated=True)
    state.counters.equivocations += 1


def resolve_dispute(state: State, params: LedgerParams, dispute: Dispute) -> None:
    """Apply the committee's decision and close the dispute; the job may then settle."""
    outcome = dispute_outcome(dispute)
    majority = tuple(v.validator for v in dispute.votes if v.verdict is outcome)
    if outcome is Verdict.FRAUD:
        taken = slash_stake(state, dispute.node, c.NODE, params.fraud_slash)
        distribute(
            state,
            taken,
            [
                ((dispute.accuser,), params.accuser_share_bps),
                (majority, params.committee_share_bps),
            ],
        )
        refund_job(state, state.jobs[dispute.job_id])
        state.counters.disputes_fraud += 1
    elif outcome is Verdict.VALID:
        taken = slash_stake(state, dispute.accuser, c.VALIDATOR, params.false_accusation_slash)
        distribute(
            state,
            taken,
            [
                ((dispute.node,), params.wronged_node_share_bps),
                (majority, params.committee_share_bps),
            ],
        )
        state.counters.disputes_valid += 1
    else:
        state.counters.disputes_inconclusive += 1
    state.disputes[dispute.dispute_id] = dataclasses.replace(
        dispute, outcome=outcome, closed_round=state.current_round
    )
    job = state.jobs[dispute.job_id]
    state.jobs[job.job_id] = dataclasses.replace(job, open_dispute=None)


# -- Genesis and admin ---------------------------------------------------------------------------


def process_mint(state: State, event: Mint) -> None:
    """Create tokens; who may mint is the ledger service's decision, not a rule."""
    # Verify the supply stays within 64 bits
    require(
        state.minted + event.amount <= c.MAX_SUPPLY,
        f"minting {event.amount} would take the supply past {c.MAX_SUPPLY}",
    )
    increase_balance(state, event.account, event.amount)
    state.minted += event.amount


def process_bond(state: State, event: Bond) -> None:
    # Verify the account exists
    require(
        is_known_account(state, event.account),
        f"unknown account {_hex(event.account)}: it holds no tokens to bond",
    )
    account = state.accounts[event.account]
    stake = account.stake(event.role)
    # Verify a slashed-out role is not topped up
    require(
        not stake.slashed_out,
        f"account {_hex(event.account)} is slashed out as {event.role} and cannot bond again",
    )
    # Verify the balance covers the bond
    require(
        account.balance >= event.amount,
        f"account {_hex(event.account)} has balance {account.balance}, "
        f"less than the {event.amount} it would bond",
    )
    # Verify the stake reaches the role's minimum
    require(
        stake.amount + event.amount >= c.MIN_STAKE[event.role],
        f"stake as {event.role} would be {stake.amount + event.amount}, "
        f"below the minimum {c.MIN_STAKE[event.role]}",
    )
    bonded = dataclasses.replace(stake, amount=stake.amount + event.amount)
    state.accounts[event.account] = dataclasses.replace(
        account.with_stake(event.role, bonded), balance=account.balance - event.amount
    )


def process_register_beacon(state: State, event: RegisterBeacon) -> None:
    # Verify the beacon is registered once
    require(state.beacon_key is None, "a beacon is already registered; it is set once at genesis")
    state.beacon_key = event.public_key
    state.first_round = event.first_round


def process_set_params(state: State, event: SetParams) -> None:
    params = event.params
    # Verify parameters are set once
    require(state.params is None, "parameters are already set; SetParams happens once at genesis")
    # Verify they are set at genesis, before the clock starts
    require(
        not state.randomness,
        f"parameters must be set before the first beacon round; the ledger is at round "
        f"{state.current_round}",
    )
    # Verify a slash never pays out more than was taken
    require(
        params.accuser_share_bps + params.committee_share_bps <= c.BPS,
        f"accuser share {params.accuser_share_bps} + committee share "
        f"{params.committee_share_bps} exceeds {c.BPS} bps",
    )
    require(
        params.wronged_node_share_bps + params.committee_share_bps <= c.BPS,
        f"wronged-node share {params.wronged_node_share_bps} + committee share "
        f"{params.committee_share_bps} exceeds {c.BPS} bps",
    )
    # Verify every slash deters and can be taken in full from a minimum stake
    for name, amount, role in (
        ("fraud_slash", params.fraud_slash, c.NODE),
        ("equivocation_slash", params.equivocation_slash, c.NODE),
        ("false_accusation_slash", params.false_accusation_slash, c.VALIDATOR),
    ):
        require(
            0 < amount <= c.MIN_STAKE[role],
            f"{name} = {amount} must be positive and at most the minimum {role} stake "
            f"{c.MIN_STAKE[role]}, or a slash could not be collected in full",
        )
    # Verify honest work is the best response (DESIGN decision 6)
    problems = violations(params.economics())
    require(not problems, "unsafe economic parameters: " + "; ".join(problems))
    state.params = params


# -- Jobs ----------------------------------------------------------------------------------------


def process_record_job(state: State, event: RecordJob) -> None:
    request = event.request_message
    commitment = event.commitment_message
    job_id = request.job_id
    params = get_params(state)
    # Verify a beacon is registered to sample the job
    require(state.beacon_key is not None, "no beacon is registered; jobs could not be sampled")
    # Verify the client signed the request and the node signed the commitment
    request.verify()
    commitment.verify()
    # Verify the commitment answers this request
    require(
        commitment.job_id == job_id,
        f"commitment is for job {_hex(commitment.job_id)}, the request is job {_hex(job_id)}",
    )
    require(
        commitment.model_id == request.model_id,
        f"commitment names model {_hex(commitment.model_id)}, "
        f"the request asked for {_hex(request.model_id)}",
    )
    # Verify the commitment was not recorded before
    if commitment.content_id in state.seen:
        raise ReplayedMessage(f"commitment {_hex(commitment.content_id)} is already recorded")
    # Verify the node has not been slashed for equivocating on this job
    require(
        not is_slashed_for_equivocation(state, commitment.node, job_id),
        f"node {_hex(commitment.node)} is already slashed for equivocating on job {_hex(job_id)}",
    )
    existing = state.jobs.get(job_id)
    if existing is not None:
        # Verify the job was recorded with this node's commitment
        require(
            existing.node == commitment.node,
            f"job {_hex(job_id)} is already recorded with node {_hex(existing.node)}'s commitment",
        )
        # A second, different signed commitment to one job is equivocation: slash now
        state.seen.add(commitment.content_id)
        punish_equivocation(state, params, commitment.node, job_id, reporter=None)
        return
    # Verify the node is bonded and not slashed out
    require(
        is_bonded_node(state, commitment.node),
        f"node {_hex(commitment.node)} is not bonded as a node (or is slashed out)",
    )
    # Verify the fee pays the verification fee and a reward of at most R
    require(
        request.fee >= params.verification_fee,
        f"fee {request.fee} is below the verification fee {params.verification_fee}",
    )
    require(
        request.fee - params.verification_fee <= params.reward,
        f"fee {request.fee} exceeds reward R = {params.reward} plus the verification fee "
        f"{params.verification_fee}; the slash was sized for rewards up to R",
    )
    # Verify the client can pay
    require(
        is_known_account(state, request.client),
        f"unknown account {_hex(request.client)}: the client holds no tokens",
    )
    balance = state.accounts[request.client].balance
    require(
        balance >= request.fee,
        f"client {_hex(request.client)} has balance {balance}, less than the fee {request.fee}",
    )
    decrease_balance(state, request.client, request.fee)
    state.jobs[job_id] = Job(
        job_id=job_id,
        client=request.client,
        node=commitment.node,
        model_id=request.model_id,
        fee=request.fee,
        commitment_id=commitment.content_id,
        output_hash=commitment.output_hash,
        recorded_round=state.current_round,
    )
    state.seen.add(commitment.content_id)
    state.counters.jobs_recorded += 1


def process_beacon_round(state: State, event: BeaconRound) -> None:
    params = get_params(state)
    # Verify a beacon is registered
    require(state.beacon_key is not None, "no beacon is registered")
    # Verify rounds arrive in order: a withheld round stalls the ledger, never swaps a value
    require(
        event.round == state.current_round + 1,
        f"beacon round {event.round} is not the next round {state.current_round + 1}",
    )
    # Verify the randomness is the hash of the signature
    require(
        event.randomness == sha256(event.signature),
        f"round {event.round}: randomness is not sha256(signature)",
    )
    state.randomness.append(event.randomness)
    # Disputes whose vote window has passed resolve on the votes they have
    for dispute in list(state.disputes.values()):
        if dispute.is_open and is_vote_window_over(state, params, dispute):
            resolve_dispute(state, params, dispute)
    # Undisputed jobs whose challenge window has passed settle
    for job in list(state.jobs.values()):
        if is_settleable_job(state, params, job):
            settle_job(state, params, job)


def process_vote(
    state: State, params: LedgerParams, dispute: Dispute, attestation: Attestation
) -> None:
    """A committee member's verdict in an open dispute; the last vote resolves it.

    A vote names the round whose beacon value drew the committee (the round the
    dispute opened in). Like every attestation it is accepted once, so nobody
    can cast a member's vote by replaying an attestation it sent earlier: a
    member that already sent an identical one signs its vote with another reason.
    """
    # Verify the vote names the round that drew the committee
    require(
        attestation.beacon_round == dispute.opened_round,
        f"a vote in dispute {_hex(dispute.dispute_id)} names beacon round "
        f"{dispute.opened_round}, which drew its committee; got {attestation.beacon_round}",
    )
    # Verify the voter sits on the committee
    require(
        attestation.validator in dispute.committee,
        f"validator {_hex(attestation.validator)} is not on the committee of dispute "
        f"{_hex(dispute.dispute_id)}",
    )
    # Verify each member votes once
    require(
        attestation.validator not in dispute.voters(),
        f"validator {_hex(attestation.validator)} already voted in dispute "
        f"{_hex(dispute.dispute_id)}",
    )
    vote = Vote(attestation.validator, attestation.verdict, attestation.content_id)
    dispute = dataclasses.replace(dispute, votes=(*dispute.votes, vote))
    state.disputes[dispute.dispute_id] = dispute
    state.seen.add(attestation.content_id)
    if len(dispute.votes) == len(dispute.committee):
        resolve_dispute(state, params, dispute)


def process_attest(state: State, event: Attest) -> None:
    attestation = event.attestation_message
    validator = attestation.validator
    params = get_params(state)
    # Verify the validator signed the attestation
    attestation.verify()
    job = get_job(state, attestation.job_id)
    # Verify it attests the recorded commitment
    require(
        attestation.commitment_id == job.commitment_id,
        f"attestation is about commitment {_hex(attestation.commitment_id)}, "
        f"job {_hex(job.job_id)} recorded {_hex(job.commitment_id)}",
    )
    # Verify the attestation was not accepted before, as an audit or as a vote
    if attestation.content_id in state.seen:
        raise ReplayedMessage(f"attestation {_hex(attestation.content_id)} is already recorded")
    # While a dispute is open, attestations on the job are committee votes
    if job.open_dispute is not None:
        process_vote(state, params, state.disputes[job.open_dispute], attestation)
        return
    # Verify it names the round that sampled the job
    require(
        attestation.beacon_round == job.sample_round,
        f"attestation names beacon round {attestation.beacon_round}; "
        f"job {_hex(job.job_id)} is sampled by round {job.sample_round}",
    )
    # Verify the validator is bonded
    require(
        is_bonded_validator(state, validator),
        f"{_hex(validator)} is not bonded as a validator (or is slashed out)",
    )
    # Verify nobody attests their own job
    require(validator != job.node, f"node {_hex(validator)} cannot attest its own job")
    # Verify the job is not settled
    require(
        job.status is JobStatus.PENDING, f"job {_hex(job.job_id)} is already {job.status}"
    )
    # Verify the job was sampled
    require(
        is_sample_round_revealed(state, job),
        f"job {_hex(job.job_id)} waits for beacon round {job.sample_round}; "
        f"the ledger is at round {state.current_round}",
    )
    require(
        is_sampled_job(state, params, job),
        f"job {_hex(job.job_id)} was not sampled; only sampled jobs are attested",
    )
    # Verify FRAUD comes as evidence, which opens a dispute
    require(
        attestation.verdict is not Verdict.FRAUD,
        "a FRAUD verdict must be submitted as MISMATCH evidence (Accuse), not as an attestation",
    )
    # Verify one attestation per validator per job
    require(
        all(v != validator for v, _ in job.attestations),
        f"validator {_hex(validator)} already attested job {_hex(job.job_id)}",
    )
    verifier = job.verifier
    if verifier is None and attestation.verdict is Verdict.VALID:
        verifier = validator
    state.jobs[job.job_id] = dataclasses.replace(
        job,
        attestations=(*job.attestations, (validator, attestation.verdict)),
        verifier=verifier,
    )
    state.seen.add(attestation.content_id)
    state.counters.attestations += 1


# -- Accusations ---------------------------------------------------------------------------------


def process_equivocation(state: State, params: LedgerParams, event: Accuse) -> None:
    """Two signed commitments by one node to one job: self-contained, slashed at once."""
    evidence = event.evidence_message
    accused = event.accused_commitment
    second = event.conflicting_commitment
    # Verify there is a second commitment (Evidence checks it has the same node and job)
    if second is None:
        raise LedgerRuleError("equivocation evidence carries no second commitment")
    # Verify the node signed the second commitment too
    second.verify()
    # Verify the node has an account to slash
    require(
        is_known_account(state, accused.node),
        f"node {_hex(accused.node)} has no account; there is nothing to slash",
    )
    # Verify this equivocation was not slashed already
    require(
        not is_slashed_for_equivocation(state, accused.node, evidence.job_id),
        f"node {_hex(accused.node)} is already slashed for equivocating on job "
        f"{_hex(evidence.job_id)}",
    )
    punish_equivocation(state, params, accused.node, evidence.job_id, reporter=evidence.accuser)


def process_mismatch(state: State, params: LedgerParams, event: Accuse) -> None:
    """A claim that re-execution disagrees: opens a dispute for a committee to decide.

    The committee is drawn from the latest revealed beacon value. The accuser
    still chooses the round, within the challenge window, in which to accuse,
    and so picks among a few committees; drawing from the next, unrevealed
    round would take that choice away.
    """
    evidence = event.evidence_message
    accused = event.accused_commitment
    accuser = evidence.accuser
    job = get_job(state, evidence.job_id)
    # Verify the evidence accuses the recorded commitment
    require(
        accused.content_id == job.commitment_id,
        f"evidence accuses commitment {_hex(accused.content_id)}, job {_hex(job.job_id)} "
        f"recorded {_hex(job.commitment_id)}",
    )
    # Verify the job is not settled
    require(job.status is JobStatus.PENDING, f"job {_hex(job.job_id)} is already {job.status}")
    # Verify the job was sampled
    require(
        is_sampled_job(state, params, job),
        f"job {_hex(job.job_id)} was not sampled (or its round {job.sample_round} is not "
        "revealed); only sampled jobs can be disputed",
    )
    # Verify the evidence names the round that sampled the job
    require(
        evidence.beacon_round == job.sample_round,
        f"evidence names beacon round {evidence.beacon_round}; "
        f"job {_hex(job.job_id)} is sampled by round {job.sample_round}",
    )
    # Verify the challenge window is open
    require(
        is_in_challenge_window(state, params, job),
        f"the challenge window of job {_hex(job.job_id)} closed after round "
        f"{job.sample_round + params.challenge_window}",
    )
    # Verify no dispute is already open on the job
    require(
        job.open_dispute is None,
        f"job {_hex(job.job_id)} already has open dispute {_hex(job.open_dispute or b'')}",
    )
    # Verify each validator accuses a job once
    require(
        accuser not in job.accusers,
        f"validator {_hex(accuser)} already accused job {_hex(job.job_id)}",
    )
    # Verify the claimed output differs from the committed one
    require(
        evidence.observed_hash != accused.output_hash,
        "evidence reports the same output hash the node committed to",
    )
    # Verify enough validators besides the accuser and the accused can sit on the committee
    candidates = [v for v in bonded_validators(state) if v not in (accuser, job.node)]
    require(
        len(candidates) >= params.committee_size,
        f"a committee needs {params.committee_size} validators besides the accuser and the "
        f"accused; {len(candidates)} are bonded",
    )
    # The committee is drawn with the latest revealed beacon value (the job's sample round
    # is revealed, so there is one)
    seed = committee_seed(job.job_id, accuser)
    committee = draw_committee(state.randomness[-1], seed, candidates, params.committee_size)
    dispute_id = evidence.content_id
    state.disputes[dispute_id] = Dispute(
        dispute_id=dispute_id,
        job_id=job.job_id,
        accuser=accuser,
        node=job.node,
        opened_round=state.current_round,
        committee=committee,
    )
    state.jobs[job.job_id] = dataclasses.replace(
        job, open_dispute=dispute_id, accusers=(*job.accusers, accuser)
    )
    state.counters.disputes_opened += 1


OFFENCE_PROCESSORS: Mapping[Offence, Callable[[State, LedgerParams, Accuse], None]] = {
    Offence.EQUIVOCATION: process_equivocation,
    Offence.MISMATCH: process_mismatch,
}


def process_accuse(state: State, event: Accuse) -> None:
    evidence = event.evidence_message
    accused = event.accused_commitment
    params = get_params(state)
    # Verify the accuser signed the evidence
    evidence.verify()
    # Verify the evidence was not accepted before
    if evidence.content_id in state.seen:
        raise ReplayedMessage(f"evidence {_hex(evidence.content_id)} is already recorded")
    # Verify the accuser is a bonded validator
    require(
        is_bonded_validator(state, evidence.accuser),
        f"accuser {_hex(evidence.accuser)} is not bonded as a validator (or is slashed out)",
    )
    # Verify the node signed the accused commitment
    accused.verify()
    # Verify nobody accuses themself
    require(evidence.accuser != accused.node, "a node cannot accuse itself")
    # Verify the ledger judges this offence
    process_offence = OFFENCE_PROCESSORS.get(evidence.offence)
    if process_offence is None:
        raise LedgerRuleError(
            f"offence {evidence.offence.value!r} is not judged by the ledger rules; "
            f"accepted: {[o.value for o in OFFENCE_PROCESSORS]}"
        )
    process_offence(state, params, event)
    state.seen.add(evidence.content_id)


# -- Dispatch ------------------------------------------------------------------------------------

PROCESSORS: Mapping[type[Event], Callable[[State, Any], None]] = {
    Mint: process_mint,
    Bond: process_bond,
    RegisterBeacon: process_register_beacon,
    SetParams: process_set_params,
    RecordJob: process_record_job,
    BeaconRound: process_beacon_round,
    Attest: process_attest,
    Accuse: process_accuse,
}


def process_event(state: State, event: Event) -> None:
    """Apply ``event`` to ``state`` in place; on a refusal ``state`` may be half-changed.

    Folding a log into a fresh state uses this; everything else uses
    :func:`apply_event`.
    """
    process = PROCESSORS.get(type(event))
    if process is None:
        raise LedgerRuleError(f"no rule for event type {type(event).__name__}")
    process(state, event)


def apply_event(state: State, event: Event) -> State:
    """Return the state after ``event``; ``state`` itself is never changed.

    A refused event raises a :class:`ProtocolError`: :class:`LedgerRuleError`,
    or ``BadSignature`` / ``ReplayedMessage`` from the message layer.
    """
    after = state.copy()
    process_event(after, event)
    return after
