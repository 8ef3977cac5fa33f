"""The ledger rules: one ``process_<event>`` function per event type.

Each function reads top to bottom as the rule, in the manner of the Ethereum
consensus specs: a comment naming a check, the check (:func:`require`, which
raises :class:`LedgerRuleError` — not ``assert``, which ``python -O``
removes), and at the end the effect. Predicates are named questions
(``is_bonded``, ``is_sampled_job``); money moves only through the helpers
(``increase_balance``, ``slash_stake``, ``distribute``), so conservation
(balances + bonds + unbonding + escrow + burned = minted) can be read off them.

Rules are pure from the caller's view: :func:`apply_event` works on a copy
and returns it, and :func:`apply_event_in_place` undoes a refused event from
the state's journal, so a refused event leaves the caller's state untouched.
They do no I/O and read no clock and no randomness but the beacon values in
state; signature checks go through :mod:`slashing.signatures`.

Life of a job: ``RecordJob`` escrows the fee at round t; the value of round
t+1 (its *sample round*) decides whether it is audited; validators ``Attest``
sampled jobs, and every zk job (:attr:`Job.zk`: its proof is checked whatever
the draw); anyone bonded as validator may ``Accuse`` within the challenge
window; at the first ``BeaconRound`` after ``sample round + challenge
window`` an undisputed job settles. A validator that cannot fetch a sampled
job's output reports it (``ReportUnavailable``); the output must then appear
on the log (``ServeData``) within the availability window, which restarts the
challenge window, or the node is slashed S and the client refunded.

Offences and what they cost (each also jails the role for ``jail_period``
rounds and counts towards its tombstone):

* confirmed FRAUD (committee majority) or unavailability: the node loses S;
* false accusation (committee majority VALID): the accuser loses its slash;
* equivocation (two signed commitments to one job, self-contained evidence
  as in Ethereum's proposer slashing): the node loses its slash and is
  tombstoned at once, as Cosmos tombstones double-signers;
* VALID on a canary (Truebit's forced errors, revealed after the job is
  final): the validator loses ``lazy_validator_slash``, all of it burned;
* an invalid zk proof (self-contained ``INVALID_PROOF`` evidence, which the
  rule re-checks itself): the node loses S; evidence against a proof that
  holds is a false accusation and costs the accuser its slash.

A slash takes bonded stake first, then unbonding stake that was still bonded
when the offence was committed (Cosmos: unbonding delegations stay slashable
for earlier infractions). ``unbonding_period`` must cover
:func:`liability_horizon`, the longest any offence can take to be proven, so
no stake is withdrawn before a slash it owes can reach it.

Slash shares (basis points of what was actually taken; the rest is burned):

* confirmed FRAUD: ``accuser_share_bps`` to the accuser, ``committee_share_bps``
  split among the members who voted FRAUD; the client's fee is refunded.
* false accusation (committee majority VALID): ``wronged_node_share_bps`` to the
  accused node — it was made to serve the job again and its fee was held up —
  and ``committee_share_bps`` among the members who voted VALID.
* equivocation: ``reporter_share_bps`` to the validator that reported it, none
  when the ledger caught it itself (a second ``RecordJob``).
* unavailability: ``reporter_share_bps`` to the validator that reported it;
  the client's fee is refunded.
* lazy validator: nothing; all of it is burned, so canaries never pay the
  operator who plants them.
* invalid proof: ``reporter_share_bps`` to the accuser (self-contained, like
  equivocation, so the same small share); the client's fee is refunded.
  A false INVALID_PROOF accusation: ``wronged_node_share_bps`` to the node.

Canaries are ordinary jobs. The operator commits to one with ``PlantCanary``
(a salted hash of its job id) in a round before it records the job from an
ordinary-looking client and node, so nothing on the log marks it until
``RevealCanary`` opens the commitment after the job is final. The operator is
trusted to plant only jobs whose committed output is wrong, as it is trusted
to mint; what the commitment rules out is calling a job a canary after seeing
who attested it.

Transactions from accounts (``Bond``, ``Unbond``, ``Withdraw``,
``ReportUnavailable``) carry the account's signature and its next nonce, as an
Ethereum transaction does; an unsigned ``Bond``, ``Unbond`` or ``Withdraw`` is
the operator's. Job requests are replay-proof twice over: the job id is the
request's content id, and each (client, nonce) is used once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from protocol.economics import violations
from protocol.errors import ProtocolError, ReplayedMessage
from protocol.hashing import sha256
from protocol.messages import Attestation, Commitment, JobRequest, Offence, Verdict
from protocol.sampling import draw_committee, sampled
from slashing import constants as c
from slashing.events import (
    AccountTx,
    Accuse,
    AccuseInvalidProof,
    Attest,
    BeaconRound,
    Bond,
    Event,
    Mint,
    PlantCanary,
    RecordJob,
    RegisterBeacon,
    RegisterZkModel,
    ReportUnavailable,
    RevealCanary,
    ServeData,
    SetParams,
    Unbond,
    Withdraw,
    canary_digest,
)
from slashing.signatures import check_signature
from slashing.state import (
    Account,
    Dispute,
    Job,
    JobStatus,
    LedgerParams,
    Stake,
    State,
    Unbonding,
    Vote,
    ZkModel,
    evolve,
)


class LedgerRuleError(ProtocolError):
    """The event breaks a ledger rule; it was not applied and the state is unchanged."""


class UnknownAccount(LedgerRuleError):
    """The event names an account the ledger has never seen."""


class UnknownJob(LedgerRuleError):
    """The event names a job the ledger has not recorded."""


class InsufficientFunds(LedgerRuleError):
    """A balance or stake is smaller than the amount the event moves."""


class AmountOutOfRange(LedgerRuleError):
    """An amount would take a total past its bound or leave a stake below its minimum."""


class NonceOutOfOrder(LedgerRuleError):
    """A signed transaction's nonce skips ahead of the account's next nonce."""


class NotAZkModel(LedgerRuleError):
    """INVALID_PROOF evidence on a job whose model is not registered for the zk mode."""


class ProofCheckUnavailable(LedgerRuleError):
    """This process cannot re-check a zk proof: no checker installed, or it could not run."""


def require(condition: bool, message: str, error: type[LedgerRuleError] = LedgerRuleError) -> None:
    """A rule's check: survives ``python -O``, unlike ``assert``."""
    if not condition:
        raise error(message)


def _hex(data: bytes) -> str:
    return data[:8].hex()


# -- Re-checking zk proofs ------------------------------------------------------------------------

ProofChecker = Callable[[bytes, bytes, bytes, JobRequest, Commitment], str | None]
"""(verifying key, settings, SRS SHA-256, job request, commitment) → None when the commitment's
proof holds for the job, or the reason it does not. Must be deterministic: a function of its
arguments (and of the SRS with that hash) alone. It raises when it cannot decide."""

_proof_checker: ProofChecker | None = None
_proof_verdicts: OrderedDict[bytes, str | None] = OrderedDict()


def install_proof_checker(checker: ProofChecker | None) -> ProofChecker | None:
    """Set the function the INVALID_PROOF rule re-checks proofs with; returns the previous one.

    The ledger may not import the verifier (it would pull EZKL and torch into
    every rule), so the composition root installs ``verifier.zk``'s checker.
    A process with none installed refuses INVALID_PROOF evidence, and cannot
    replay a log that holds some, rather than guess a verdict.
    """
    global _proof_checker
    previous, _proof_checker = _proof_checker, checker
    return previous


def proof_failure(
    model: ZkModel, verifying_key: bytes, settings: bytes, request: JobRequest,
    commitment: Commitment,
) -> str | None:
    """Why the commitment's proof fails for the job (None: it holds), remembered per process.

    Keyed by content (key, settings and SRS hashes, request and commitment
    content ids), so applying or replaying the same evidence again costs a
    dictionary lookup, and a different checker can never be consulted for a
    case already decided in this process.
    """
    key = sha256(
        model.vk_sha256 + model.settings_sha256 + model.srs_sha256
        + request.content_id + commitment.content_id
    )
    if key in _proof_verdicts:
        _proof_verdicts.move_to_end(key)
        return _proof_verdicts[key]
    if _proof_checker is None:
        raise ProofCheckUnavailable(
            "no zk proof checker is installed in this process; it cannot judge INVALID_PROOF "
            "evidence (the composition root installs verifier.zk's)"
        )
    try:
        failure = _proof_checker(verifying_key, settings, model.srs_sha256, request, commitment)
    except Exception as exc:  # the checker could not decide: never a verdict
        raise ProofCheckUnavailable(f"the zk proof could not be re-checked: {exc}") from exc
    _proof_verdicts[key] = failure
    while len(_proof_verdicts) > c.PROOF_VERDICT_CACHE:
        _proof_verdicts.popitem(last=False)
    return failure


# -- Predicates ----------------------------------------------------------------------------------


def is_known_account(state: State, account: bytes) -> bool:
    return account in state.accounts


def is_jailed(state: State, stake: Stake) -> bool:
    return stake.jailed_until is not None and state.current_round < stake.jailed_until


def is_bonded(state: State, account: bytes, role: str) -> bool:
    """Bonded in ``role`` with at least the minimum stake, not slashed out and not jailed."""
    record = state.accounts.get(account)
    if record is None:
        return False
    stake = record.stake(role)
    return (
        not stake.slashed_out
        and stake.amount >= c.MIN_STAKE[role]
        and not is_jailed(state, stake)
    )


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
    return state.current_round <= job.window_end(params.challenge_window)


def is_settleable_job(state: State, params: LedgerParams, job: Job) -> bool:
    """Pending, undisputed, unchallenged, and its challenge window has closed."""
    return (
        job.status is JobStatus.PENDING
        and job.open_dispute is None
        and not job.has_open_challenge
        and not is_in_challenge_window(state, params, job)
    )


def is_availability_deadline_over(state: State, params: LedgerParams, job: Job) -> bool:
    return (
        job.unavailable_since is not None
        and state.current_round > job.unavailable_since + params.availability_window
    )


def has_open_case(state: State, account: bytes) -> bool:
    """Whether an open dispute or availability challenge could still slash ``account``."""
    for dispute_id in state.open_disputes:
        dispute = state.disputes[dispute_id]
        if account in (dispute.node, dispute.accuser):
            return True
    return any(state.jobs[job_id].node == account for job_id in state.open_challenges)


def liability_horizon(params: LedgerParams) -> int:
    """The most rounds between an offence and the slash that proves it.

    A job recorded in round t is reported by t+1+W, served by t+1+W+A (which
    restarts its window of W rounds), accused by t+1+2W+A, and its dispute
    resolved by t+2+3W+A, when the job is final; a canary is revealed at most
    W rounds after that. The unbonding period must be at least this long.
    """
    return 4 * params.challenge_window + params.availability_window + 2


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
        raise UnknownJob(f"unknown job {_hex(job_id)}")
    return job


def get_account(state: State, account: bytes, why: str) -> Account:
    # Verify the account exists
    record = state.accounts.get(account)
    if record is None:
        raise UnknownAccount(f"unknown account {_hex(account)}: {why}")
    return record


def authorise(state: State, event: AccountTx) -> Account:
    """Verify who sent an account transaction; return the signer's account.

    Signed: the signature must verify and the nonce be the account's next (a
    used nonce is a replay, a later one is out of order). Unsigned: only for
    the transactions the operator may send, with nonce 0.
    """
    account = get_account(state, event.signer, f"it cannot send a {event.TYPE} transaction")
    if not event.is_signed:
        # Verify the transaction may be the operator's
        require(
            not event.SIGNATURE_REQUIRED,
            f"a {event.TYPE} transaction must be signed by its {event.SIGNER}",
        )
        require(event.nonce == 0, f"an unsigned {event.TYPE} carries nonce 0, got {event.nonce}")
        return account
    # Verify the account signed it
    (check,) = event.signature_checks()
    check_signature(check)
    # Verify the nonce is the account's next
    if event.nonce <= account.nonce:
        raise ReplayedMessage(
            f"nonce {event.nonce} of account {_hex(event.signer)} is already used "
            f"(its last is {account.nonce})"
        )
    require(
        event.nonce == account.nonce + 1,
        f"nonce {event.nonce} of account {_hex(event.signer)} is out of order: "
        f"the next is {account.nonce + 1}",
        NonceOutOfOrder,
    )
    return account


def used_nonce(account: Account, event: AccountTx) -> Account:
    """The account with the transaction's nonce consumed (unchanged for the operator's)."""
    return evolve(account, nonce=event.nonce) if event.is_signed else account


# -- State changes -------------------------------------------------------------------------------


def increase_balance(state: State, account: bytes, amount: int) -> None:
    record = state.accounts.get(account, Account())
    state.accounts[account] = evolve(record, balance=record.balance + amount)


def decrease_balance(state: State, account: bytes, amount: int) -> None:
    record = state.accounts[account]
    state.accounts[account] = evolve(record, balance=record.balance - amount)


def slash_stake(
    state: State, account: bytes, role: str, amount: int, offence_round: int | None = None
) -> int:
    """Take up to ``amount`` and return what was taken: bonded stake first, then unbonding.

    Unbonding entries of the role are taken from, oldest first, when they were
    still bonded at ``offence_round`` (started in it or later); None, when the
    offence's round is unknown, takes from every entry. A role whose stake is
    left below its minimum is slashed out and stays so.
    """
    record = state.accounts.get(account, Account())
    stake = record.stake(role)
    taken = min(stake.amount, amount)
    left = stake.amount - taken
    entries = []
    for entry in record.unbonding:
        reachable = offence_round is None or entry.started_round >= offence_round
        if entry.role == role and reachable and taken < amount:
            take = min(entry.amount, amount - taken)
            taken += take
            entry = evolve(entry, amount=entry.amount - take)
        if entry.amount:
            entries.append(entry)
    slashed = evolve(
        stake, amount=left, slashed_out=stake.slashed_out or left < c.MIN_STAKE[role]
    )
    state.accounts[account] = evolve(
        record.with_stake(role, slashed), unbonding=tuple(entries)
    )
    state.counters.slashings += 1
    return taken


def punish(
    state: State,
    params: LedgerParams,
    account: bytes,
    role: str,
    amount: int,
    offence_round: int | None,
    tombstone: bool = False,
) -> int:
    """Slash, jail for the rest of the round and ``jail_period`` more (none when it is 0),
    and tombstone at the ``tombstone_offences``-th offence.

    Returns what the slash took.
    """
    was_out = state.accounts.get(account, Account()).stake(role).slashed_out
    taken = slash_stake(state, account, role, amount, offence_round)
    record = state.accounts[account]
    stake = record.stake(role)
    offences = stake.offences + 1
    tombstoned = stake.slashed_out or tombstone or offences >= params.tombstone_offences
    if tombstoned and not was_out:
        state.counters.tombstones += 1
    jailed_until = stake.jailed_until
    if params.jail_period:
        release = state.current_round + params.jail_period + 1
        jailed_until = max(release, jailed_until or release)
    jailed = evolve(
        stake, offences=offences, slashed_out=tombstoned, jailed_until=jailed_until
    )
    state.accounts[account] = record.with_stake(role, jailed)
    state.counters.jailings += 1
    return taken


def schedule_settlement(state: State, job_id: bytes, round_number: int) -> None:
    """Try to settle the job at the beacon round ``round_number``."""
    state.settle_queue[round_number] = (*state.settle_queue.get(round_number, ()), job_id)


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
    state.jobs[job.job_id] = evolve(
        job, status=JobStatus.REFUNDED, closed_round=state.current_round
    )
    state.counters.jobs_refunded += 1


def settle_job(state: State, params: LedgerParams, job: Job) -> None:
    """Pay out the escrow once nobody can challenge the job any more.

    The node earns ``fee - verification_fee`` whether or not it was audited, so
    its reward never depends on the sample (the R of the economic check). The
    verification fee goes to the first validator that attested VALID, or back
    to the client when nobody did. A sampled job that no validator attested
    settles like any other: a validator that did not check it earns nothing,
    and one that could not fetch its data reports it (``ReportUnavailable``).
    """
    if job.equivocated:
        refund_job(state, job)
        return
    increase_balance(state, job.node, job.fee - params.verification_fee)
    payee = job.verifier if job.verifier is not None else job.client
    increase_balance(state, payee, params.verification_fee)
    state.jobs[job.job_id] = evolve(
        job, status=JobStatus.SETTLED, closed_round=state.current_round
    )
    state.counters.jobs_settled += 1


def punish_equivocation(
    state: State, params: LedgerParams, node: bytes, job_id: bytes, reporter: bytes | None
) -> None:
    """Slash and tombstone; when the job is not on the ledger, when it was signed is unknown."""
    state.equivocations.add((node, job_id))
    job = state.jobs.get(job_id)
    ours = job is not None and job.node == node
    offence_round = job.recorded_round if job is not None and ours else None
    taken = punish(
        state, params, node, c.NODE, params.equivocation_slash, offence_round, tombstone=True
    )
    rewarded = (reporter,) if reporter is not None else ()
    distribute(state, taken, [(rewarded, params.reporter_share_bps)])
    if job is not None and ours:
        # The client got two answers: the job settles as a refund
        state.jobs[job_id] = evolve(job, equivocated=True)
    state.counters.equivocations += 1


def resolve_dispute(
    state: State, params: LedgerParams, dispute: Dispute, in_beacon_round: bool
) -> None:
    """Apply the committee's decision and close the dispute; the job may then settle.

    Resolved by a beacon round, the job may settle in that same round; resolved
    by the last vote, in the next.
    """
    outcome = dispute_outcome(dispute)
    majority = tuple(v.validator for v in dispute.votes if v.verdict is outcome)
    job = state.jobs[dispute.job_id]
    if outcome is Verdict.FRAUD:
        taken = punish(state, params, dispute.node, c.NODE, params.fraud_slash, job.recorded_round)
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
        taken = punish(
            state,
            params,
            dispute.accuser,
            c.VALIDATOR,
            params.false_accusation_slash,
            dispute.opened_round,
        )
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
    state.disputes[dispute.dispute_id] = evolve(
        dispute, outcome=outcome, closed_round=state.current_round
    )
    del state.open_disputes[dispute.dispute_id]
    job = state.jobs[dispute.job_id]
    state.jobs[job.job_id] = evolve(job, open_dispute=None)
    if job.status is JobStatus.PENDING:
        # The job settles once its window has closed, at a round still to come
        earliest = max(state.current_round, job.window_end(params.challenge_window) + 1)
        if not in_beacon_round:
            earliest = max(earliest, state.current_round + 1)
        schedule_settlement(state, job.job_id, earliest)


def resolve_unavailable(state: State, params: LedgerParams, job: Job) -> None:
    """The output was not served in time: the node pays S, as if caught, and the client is refunded.

    Withholding must cost what being caught costs, or a sampled cheat would
    withhold its output rather than let it be checked.
    """
    assert job.availability_reporter is not None
    taken = punish(state, params, job.node, c.NODE, params.fraud_slash, job.recorded_round)
    distribute(state, taken, [((job.availability_reporter,), params.reporter_share_bps)])
    del state.open_challenges[job.job_id]
    refund_job(state, job)
    state.counters.unavailability_slashes += 1


# -- Genesis and admin ---------------------------------------------------------------------------


def process_mint(state: State, event: Mint) -> None:
    """Create tokens; who may mint is the ledger service's decision, not a rule."""
    # Verify the supply stays within 64 bits
    require(
        state.minted + event.amount <= c.MAX_SUPPLY,
        f"minting {event.amount} would take the supply past {c.MAX_SUPPLY}",
        AmountOutOfRange,
    )
    increase_balance(state, event.account, event.amount)
    state.minted += event.amount


def process_bond(state: State, event: Bond) -> None:
    account = authorise(state, event)
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
        InsufficientFunds,
    )
    # Verify the stake reaches the role's minimum
    require(
        stake.amount + event.amount >= c.MIN_STAKE[event.role],
        f"stake as {event.role} would be {stake.amount + event.amount}, "
        f"below the minimum {c.MIN_STAKE[event.role]}",
        AmountOutOfRange,
    )
    bonded = evolve(stake, amount=stake.amount + event.amount)
    state.accounts[event.account] = evolve(
        used_nonce(account, event).with_stake(event.role, bonded),
        balance=account.balance - event.amount,
    )


def process_unbond(state: State, event: Unbond) -> None:
    """Move stake into an unbonding entry, still slashable for what was done while bonded."""
    params = get_params(state)
    account = authorise(state, event)
    stake = account.stake(event.role)
    # Verify the stake covers the amount
    require(
        event.amount <= stake.amount,
        f"account {_hex(event.account)} has {stake.amount} bonded as {event.role}, "
        f"less than the {event.amount} it would unbond",
        InsufficientFunds,
    )
    # Verify an active role keeps at least the minimum, or leaves entirely
    left = stake.amount - event.amount
    require(
        left == 0 or left >= c.MIN_STAKE[event.role] or stake.slashed_out,
        f"unbonding {event.amount} would leave {left} bonded as {event.role}: "
        f"unbond all of it or keep at least the minimum {c.MIN_STAKE[event.role]}",
        AmountOutOfRange,
    )
    # Verify the account has room for another entry
    require(
        len(account.unbonding) < c.MAX_UNBONDING_ENTRIES,
        f"account {_hex(event.account)} already has {c.MAX_UNBONDING_ENTRIES} unbonding entries; "
        "withdraw one first",
    )
    entry = Unbonding(
        role=event.role,
        amount=event.amount,
        started_round=state.current_round,
        release_round=state.current_round + params.unbonding_period,
    )
    unbonded = evolve(stake, amount=left)
    state.accounts[event.account] = evolve(
        used_nonce(account, event).with_stake(event.role, unbonded),
        unbonding=(*account.unbonding, entry),
    )
    state.counters.unbondings += 1


def process_withdraw(state: State, event: Withdraw) -> None:
    """Pay out every unbonding entry whose period is over."""
    account = authorise(state, event)
    released = [e for e in account.unbonding if e.release_round <= state.current_round]
    # Verify some unbonding stake is released
    upcoming = [e.release_round for e in account.unbonding]
    require(
        bool(released),
        f"account {_hex(event.account)} has no unbonding stake released by round "
        f"{state.current_round}"
        + (f"; the next is released in round {min(upcoming)}" if upcoming else ""),
    )
    # Verify no open dispute or availability challenge could still slash the account
    require(
        not has_open_case(state, event.account),
        f"account {_hex(event.account)} is party to an open dispute or availability challenge; "
        "it withdraws after it is resolved",
    )
    kept = tuple(e for e in account.unbonding if e.release_round > state.current_round)
    state.accounts[event.account] = evolve(
        used_nonce(account, event),
        balance=account.balance + sum(e.amount for e in released),
        unbonding=kept,
    )
    state.counters.withdrawals += 1


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
        ("lazy_validator_slash", params.lazy_validator_slash, c.VALIDATOR),
    ):
        require(
            0 < amount <= c.MIN_STAKE[role],
            f"{name} = {amount} must be positive and at most the minimum {role} stake "
            f"{c.MIN_STAKE[role]}, or a slash could not be collected in full",
        )
    # Verify no stake can be withdrawn before a slash it owes is proven
    require(
        params.unbonding_period >= liability_horizon(params),
        f"unbonding_period = {params.unbonding_period} rounds is shorter than the "
        f"{liability_horizon(params)} rounds an offence can take to be proven "
        f"(4 × challenge_window + availability_window + 2)",
    )
    # Verify honest work is the best response (DESIGN decision 6)
    problems = violations(params.economics())
    require(not problems, "unsafe economic parameters: " + "; ".join(problems))
    state.params = params


# -- Jobs ----------------------------------------------------------------------------------------


def process_record_job(state: State, event: RecordJob) -> None:
    request = event.request_message
    commitment = event.commitment_message
    job_id = event.job_id
    commitment_id = event.sealed_commitment.content_id
    params = get_params(state)
    # Verify a beacon is registered to sample the job
    require(state.beacon_key is not None, "no beacon is registered; jobs could not be sampled")
    # Verify the client signed the request and the node signed the commitment
    request_check, commitment_check = event.signature_checks()
    check_signature(request_check)
    check_signature(commitment_check)
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
    if commitment_id in state.seen:
        raise ReplayedMessage(f"commitment {_hex(commitment_id)} is already recorded")
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
        state.seen.add(commitment_id)
        punish_equivocation(state, params, commitment.node, job_id, reporter=None)
        return
    # Verify the client has not used the request's nonce before
    if (request.client, request.nonce) in state.request_nonces:
        raise ReplayedMessage(
            f"client {_hex(request.client)} already used nonce {request.nonce} for another job"
        )
    # Verify the node is bonded, not jailed and not slashed out
    require(
        is_bonded_node(state, commitment.node),
        f"node {_hex(commitment.node)} is not bonded as a node (or is jailed or slashed out)",
    )
    # Verify the fee pays the verification fee and a reward of at most R
    require(
        request.fee >= params.verification_fee,
        f"fee {request.fee} is below the verification fee {params.verification_fee}",
        AmountOutOfRange,
    )
    require(
        request.fee - params.verification_fee <= params.reward,
        f"fee {request.fee} exceeds reward R = {params.reward} plus the verification fee "
        f"{params.verification_fee}; the slash was sized for rewards up to R",
        AmountOutOfRange,
    )
    # Verify the client can pay
    client = get_account(state, request.client, "the client holds no tokens")
    require(
        client.balance >= request.fee,
        f"client {_hex(request.client)} has balance {client.balance}, less than the fee "
        f"{request.fee}",
        InsufficientFunds,
    )
    decrease_balance(state, request.client, request.fee)
    state.jobs[job_id] = Job(
        job_id=job_id,
        client=request.client,
        node=commitment.node,
        model_id=request.model_id,
        fee=request.fee,
        commitment_id=commitment_id,
        output_hash=commitment.output_hash,
        recorded_round=state.current_round,
        zk=request.model_id in state.zk_models,
    )
    state.seen.add(commitment_id)
    state.request_nonces.add((request.client, request.nonce))
    schedule_settlement(state, job_id, state.current_round + params.challenge_window + 2)
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
    for dispute_id in sorted(state.open_disputes):
        dispute = state.disputes[dispute_id]
        if is_vote_window_over(state, params, dispute):
            resolve_dispute(state, params, dispute, in_beacon_round=True)
    # Outputs reported unavailable and not served in time are slashed
    for job_id in sorted(state.open_challenges):
        job = state.jobs[job_id]
        if is_availability_deadline_over(state, params, job):
            resolve_unavailable(state, params, job)
    # Jobs due this round whose challenge window has passed undisputed settle
    for job_id in state.settle_queue.pop(state.current_round, ()):
        job = state.jobs[job_id]
        if is_settleable_job(state, params, job):
            settle_job(state, params, job)


def process_vote(
    state: State,
    params: LedgerParams,
    dispute: Dispute,
    attestation: Attestation,
    attestation_id: bytes,
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
    vote = Vote(attestation.validator, attestation.verdict, attestation_id)
    dispute = evolve(dispute, votes=(*dispute.votes, vote))
    state.disputes[dispute.dispute_id] = dispute
    state.seen.add(attestation_id)
    if len(dispute.votes) == len(dispute.committee):
        resolve_dispute(state, params, dispute, in_beacon_round=False)


def process_attest(state: State, event: Attest) -> None:
    attestation = event.attestation_message
    attestation_id = event.sealed_attestation.content_id
    validator = attestation.validator
    params = get_params(state)
    # Verify the validator signed the attestation
    (check,) = event.signature_checks()
    check_signature(check)
    job = get_job(state, attestation.job_id)
    # Verify it attests the recorded commitment
    require(
        attestation.commitment_id == job.commitment_id,
        f"attestation is about commitment {_hex(attestation.commitment_id)}, "
        f"job {_hex(job.job_id)} recorded {_hex(job.commitment_id)}",
    )
    # Verify the attestation was not accepted before, as an audit or as a vote
    if attestation_id in state.seen:
        raise ReplayedMessage(f"attestation {_hex(attestation_id)} is already recorded")
    # While a dispute is open, attestations on the job are committee votes
    if job.open_dispute is not None:
        process_vote(state, params, state.disputes[job.open_dispute], attestation, attestation_id)
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
        f"{_hex(validator)} is not bonded as a validator (or is jailed or slashed out)",
    )
    # Verify nobody attests their own job
    require(validator != job.node, f"node {_hex(validator)} cannot attest its own job")
    # Verify the job is not settled
    require(
        job.status is JobStatus.PENDING, f"job {_hex(job.job_id)} is already {job.status}"
    )
    # Verify the job was sampled (a zk job is checked whatever the draw, once its round is out)
    require(
        is_sample_round_revealed(state, job),
        f"job {_hex(job.job_id)} waits for beacon round {job.sample_round}; "
        f"the ledger is at round {state.current_round}",
    )
    require(
        job.zk or is_sampled_job(state, params, job),
        f"job {_hex(job.job_id)} was not sampled; only sampled jobs and zk jobs are attested",
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
    state.jobs[job.job_id] = evolve(
        job,
        attestations=(*job.attestations, (validator, attestation.verdict)),
        verifier=verifier,
    )
    state.seen.add(attestation_id)
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
    assert event.sealed_conflicting is not None
    check_signature(event.sealed_conflicting.check())
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
    accused_id = event.sealed_accused.content_id
    # Verify the evidence accuses the recorded commitment
    require(
        accused_id == job.commitment_id,
        f"evidence accuses commitment {_hex(accused_id)}, job {_hex(job.job_id)} "
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
        f"{job.window_end(params.challenge_window)}",
    )
    # Verify no dispute is already open on the job
    require(
        job.open_dispute is None,
        f"job {_hex(job.job_id)} already has open dispute {_hex(job.open_dispute or b'')}",
    )
    # Verify no availability challenge is open on the job: its output is not yet served
    require(
        not job.has_open_challenge,
        f"job {_hex(job.job_id)} has an open availability challenge; accuse once it is served",
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
    dispute_id = event.sealed_evidence.content_id
    state.disputes[dispute_id] = Dispute(
        dispute_id=dispute_id,
        job_id=job.job_id,
        accuser=accuser,
        node=job.node,
        opened_round=state.current_round,
        committee=committee,
    )
    state.open_disputes[dispute_id] = None
    state.jobs[job.job_id] = evolve(
        job,
        open_dispute=dispute_id,
        accusers=(*job.accusers, accuser),
        disputes=(*job.disputes, dispute_id),
    )
    state.counters.disputes_opened += 1


OFFENCE_PROCESSORS: Mapping[Offence, Callable[[State, LedgerParams, Accuse], None]] = {
    Offence.EQUIVOCATION: process_equivocation,
    Offence.MISMATCH: process_mismatch,
}


def admit_evidence(state: State, event: Accuse) -> LedgerParams:
    """The checks every accusation passes before its offence is judged; returns the parameters."""
    evidence = event.evidence_message
    evidence_id = event.sealed_evidence.content_id
    accused = event.accused_commitment
    params = get_params(state)
    # Verify the accuser signed the evidence
    check_signature(event.sealed_evidence.check())
    # Verify the evidence was not accepted before
    if evidence_id in state.seen:
        raise ReplayedMessage(f"evidence {_hex(evidence_id)} is already recorded")
    # Verify the accuser is a bonded validator
    require(
        is_bonded_validator(state, evidence.accuser),
        f"accuser {_hex(evidence.accuser)} is not bonded as a validator "
        "(or is jailed or slashed out)",
    )
    # Verify the node signed the accused commitment
    check_signature(event.sealed_accused.check())
    # Verify nobody accuses themself
    require(evidence.accuser != accused.node, "a node cannot accuse itself")
    return params


def process_accuse(state: State, event: Accuse) -> None:
    evidence = event.evidence_message
    params = admit_evidence(state, event)
    # Verify the ledger judges this offence
    if evidence.offence is Offence.INVALID_PROOF:
        raise LedgerRuleError(
            "INVALID_PROOF evidence is judged with the job's request: send it as "
            f"{AccuseInvalidProof.TYPE}"
        )
    process_offence = OFFENCE_PROCESSORS.get(evidence.offence)
    if process_offence is None:
        raise LedgerRuleError(
            f"offence {evidence.offence.value!r} is not judged by the ledger rules; "
            f"accepted: {[o.value for o in OFFENCE_PROCESSORS]}"
        )
    process_offence(state, params, event)
    state.seen.add(event.sealed_evidence.content_id)


# -- zk proofs -----------------------------------------------------------------------------------


def process_register_zk_model(state: State, event: RegisterZkModel) -> None:
    """Operator: a model is in the zk mode; its key and settings go into the state by hash.

    Like minting and canaries this is the operator's event. A model is
    registered once: its verifying key *is* the model (the weights are fixed
    columns), so another key is another model id.
    """
    # Verify the model is registered once
    require(
        event.model_id not in state.zk_models,
        f"model {_hex(event.model_id)} is already registered for the zk mode",
    )
    vk_sha256, settings_sha256 = sha256(event.verifying_key), sha256(event.settings)
    state.zk_blobs[vk_sha256] = event.verifying_key
    state.zk_blobs[settings_sha256] = event.settings
    state.zk_models[event.model_id] = ZkModel(
        model_id=event.model_id,
        vk_sha256=vk_sha256,
        settings_sha256=settings_sha256,
        srs_sha256=event.srs_sha256,
        registered_round=state.current_round,
    )


def process_accuse_invalid_proof(state: State, event: AccuseInvalidProof) -> None:
    """A zk job's proof fails: self-contained, re-checked here, judged at once.

    The rule re-runs the validator's check (:data:`ProofChecker`) on what the
    log holds: the node's signed commitment from the evidence, the job's
    request (its content id is the job id) and the model's registered
    verifying key and settings. A proof that fails slashes the node S and
    refunds the client; a proof that holds makes the evidence a false
    accusation, and its accuser pays the false-accusation slash, as a
    committee's VALID majority would make it pay for a disputed one.
    """
    evidence = event.evidence_message
    accuser = evidence.accuser
    params = admit_evidence(state, event)
    # Verify the evidence claims an invalid proof
    require(
        evidence.offence is Offence.INVALID_PROOF,
        f"{AccuseInvalidProof.TYPE} carries {evidence.offence.value!r} evidence; "
        "other offences are sent as accuse",
    )
    job = get_job(state, evidence.job_id)
    # Verify the request is the job's
    require(
        event.sealed_request.content_id == job.job_id,
        f"the request is job {_hex(event.sealed_request.content_id)}, "
        f"the evidence accuses job {_hex(job.job_id)}",
    )
    # Verify the evidence accuses the recorded commitment
    accused_id = event.sealed_accused.content_id
    require(
        accused_id == job.commitment_id,
        f"evidence accuses commitment {_hex(accused_id)}, job {_hex(job.job_id)} "
        f"recorded {_hex(job.commitment_id)}",
    )
    # Verify the job's model is a zk model, registered before the job was recorded
    model = state.zk_models.get(job.model_id)
    if model is None or not job.zk:
        raise NotAZkModel(
            f"model {_hex(job.model_id)} of job {_hex(job.job_id)} was not registered for the "
            "zk mode when the job was recorded; its jobs carry no proof to judge"
        )
    # Verify the node was not slashed for this job's proof already
    if job.job_id in state.proof_frauds:
        raise ReplayedMessage(
            f"node {_hex(job.node)} is already slashed for the proof of job {_hex(job.job_id)}"
        )
    # Verify the job is not settled
    require(job.status is JobStatus.PENDING, f"job {_hex(job.job_id)} is already {job.status}")
    # Verify the challenge window is open, so the stake the slash takes is within reach
    require(
        is_in_challenge_window(state, params, job),
        f"the challenge window of job {_hex(job.job_id)} closed after round "
        f"{job.window_end(params.challenge_window)}",
    )
    # Verify no dispute or availability challenge is open on the job: each settles it alone
    require(
        job.open_dispute is None and not job.has_open_challenge,
        f"job {_hex(job.job_id)} has an open dispute or availability challenge; "
        "accuse once it is resolved",
    )
    # Re-check the proof: the verdict is a function of the log alone
    failure = proof_failure(
        model,
        state.zk_blobs[model.vk_sha256],
        state.zk_blobs[model.settings_sha256],
        event.request_message,
        event.accused_commitment,
    )
    if failure is None:
        # The proof holds: a false accusation
        taken = punish(
            state, params, accuser, c.VALIDATOR, params.false_accusation_slash,
            state.current_round,
        )
        distribute(state, taken, [((job.node,), params.wronged_node_share_bps)])
        state.counters.false_proof_accusations += 1
    else:
        taken = punish(state, params, job.node, c.NODE, params.fraud_slash, job.recorded_round)
        distribute(state, taken, [((accuser,), params.reporter_share_bps)])
        refund_job(state, state.jobs[job.job_id])
        state.proof_frauds.add(job.job_id)
        state.counters.invalid_proofs += 1
    state.seen.add(event.sealed_evidence.content_id)


# -- Availability --------------------------------------------------------------------------------


def process_report_unavailable(state: State, event: ReportUnavailable) -> None:
    """A validator could not fetch a sampled job's output: the node must post it on the log."""
    params = get_params(state)
    account = authorise(state, event)
    reporter = event.reporter
    # Verify the reporter is a bonded validator
    require(
        is_bonded_validator(state, reporter),
        f"reporter {_hex(reporter)} is not bonded as a validator (or is jailed or slashed out)",
    )
    job = get_job(state, event.job_id)
    # Verify nobody reports their own job
    require(reporter != job.node, f"node {_hex(reporter)} cannot report its own job")
    # Verify the job is not settled
    require(job.status is JobStatus.PENDING, f"job {_hex(job.job_id)} is already {job.status}")
    # Verify the job was sampled: only sampled jobs need their output served
    require(
        is_sampled_job(state, params, job),
        f"job {_hex(job.job_id)} was not sampled (or its round {job.sample_round} is not "
        "revealed); only a sampled job's output must be served",
    )
    # Verify the challenge window is open
    require(
        is_in_challenge_window(state, params, job),
        f"the challenge window of job {_hex(job.job_id)} closed after round "
        f"{job.window_end(params.challenge_window)}",
    )
    # Verify the output was never reported or served: once on the log, it is available
    require(
        job.unavailable_since is None,
        f"job {_hex(job.job_id)} was already reported unavailable in round "
        f"{job.unavailable_since}",
    )
    # Verify no dispute is open on the job
    require(
        job.open_dispute is None,
        f"job {_hex(job.job_id)} has open dispute {_hex(job.open_dispute or b'')}",
    )
    state.accounts[reporter] = used_nonce(account, event)
    state.jobs[job.job_id] = evolve(
        job, unavailable_since=state.current_round, availability_reporter=reporter
    )
    state.open_challenges[job.job_id] = None
    state.counters.unavailability_reports += 1


def process_serve_data(state: State, event: ServeData) -> None:
    """The reported output, on the log: the challenge closes and the challenge window restarts."""
    params = get_params(state)
    job = get_job(state, event.job_id)
    # Verify an availability challenge is open on the job
    require(
        job.has_open_challenge,
        f"job {_hex(job.job_id)} has no open availability challenge to answer",
    )
    assert job.unavailable_since is not None
    # Verify the answer comes in time
    deadline = job.unavailable_since + params.availability_window
    require(
        state.current_round <= deadline,
        f"job {_hex(job.job_id)} had to be served by round {deadline}; "
        f"the ledger is at round {state.current_round}",
    )
    # Verify the output is the committed one
    require(
        sha256(event.output) == job.output_hash,
        f"the served output hashes to {_hex(sha256(event.output))}, "
        f"job {_hex(job.job_id)} committed to {_hex(job.output_hash)}",
    )
    served = evolve(job, served_round=state.current_round)
    state.jobs[job.job_id] = served
    del state.open_challenges[job.job_id]
    schedule_settlement(state, job.job_id, served.window_end(params.challenge_window) + 1)


# -- Canaries ------------------------------------------------------------------------------------


def process_plant_canary(state: State, event: PlantCanary) -> None:
    """Operator: a hiding commitment to a canary job, made before the job is recorded."""
    get_params(state)
    # Verify the commitment is new
    require(
        event.digest not in state.canaries,
        f"canary commitment {_hex(event.digest)} is already planted",
    )
    state.canaries[event.digest] = state.current_round


def process_reveal_canary(state: State, event: RevealCanary) -> None:
    """Operator: a job was a canary; every VALID on it, as audit or as vote, was lazy.

    The reveal comes after the job is final, so no validator still to attest
    learns which job it was, and at most a challenge window later, so the
    lazy validators' stake is still within reach (:func:`liability_horizon`).
    The slash is burned, so canaries are never income for the operator.
    """
    params = get_params(state)
    job = get_job(state, event.job_id)
    digest = canary_digest(event.salt, event.job_id)
    # Verify the canary was planted
    require(
        digest in state.canaries,
        f"no canary commitment for job {_hex(event.job_id)} with this salt",
    )
    # Verify the canary slashes once
    if job.job_id in state.revealed_canaries:
        raise ReplayedMessage(f"job {_hex(job.job_id)} is already revealed as a canary")
    # Verify it was planted before the job was recorded, so no job is called a canary afterwards
    planted = state.canaries[digest]
    require(
        planted < job.recorded_round,
        f"the canary commitment was planted in round {planted}, not before job "
        f"{_hex(job.job_id)} was recorded in round {job.recorded_round}",
    )
    # Verify the job is final: nobody can attest it any more
    if job.status is JobStatus.PENDING or job.closed_round is None:
        raise LedgerRuleError(
            f"job {_hex(job.job_id)} is still pending; a canary is revealed once it is final"
        )
    # Verify the reveal is in time for the stake it may take
    deadline = job.closed_round + params.challenge_window
    require(
        state.current_round <= deadline,
        f"canary job {_hex(job.job_id)} had to be revealed by round {deadline}",
    )
    lazy = [v for v, verdict in job.attestations if verdict is Verdict.VALID]
    for dispute_id in job.disputes:
        votes = state.disputes[dispute_id].votes
        lazy += [v.validator for v in votes if v.verdict is Verdict.VALID]
    for validator in dict.fromkeys(lazy):
        taken = punish(
            state, params, validator, c.VALIDATOR, params.lazy_validator_slash, job.sample_round
        )
        distribute(state, taken, [])
        state.counters.lazy_validators_slashed += 1
    del state.canaries[digest]
    state.revealed_canaries.add(job.job_id)
    state.counters.canaries_revealed += 1


# -- Dispatch ------------------------------------------------------------------------------------

PROCESSORS: Mapping[type[Event], Callable[[State, Any], None]] = {
    Mint: process_mint,
    Bond: process_bond,
    Unbond: process_unbond,
    Withdraw: process_withdraw,
    RegisterBeacon: process_register_beacon,
    SetParams: process_set_params,
    RecordJob: process_record_job,
    BeaconRound: process_beacon_round,
    Attest: process_attest,
    Accuse: process_accuse,
    ReportUnavailable: process_report_unavailable,
    ServeData: process_serve_data,
    PlantCanary: process_plant_canary,
    RevealCanary: process_reveal_canary,
    RegisterZkModel: process_register_zk_model,
    AccuseInvalidProof: process_accuse_invalid_proof,
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


def apply_event_in_place(state: State, event: Event) -> None:
    """Apply ``event`` to ``state`` itself; a refused event is undone and changes nothing.

    Costs what the event changes rather than a copy of every table (see
    :meth:`State.savepoint`); the store and long simulations use this.
    """
    point = state.savepoint()
    try:
        process_event(state, event)
    except BaseException:
        state.rollback(point)
        raise
    state.release(point)
