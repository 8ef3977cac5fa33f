"""The ledger rules: one ``process_<event>`` function per event type.

Each function reads top to bottom as the rule, in the manner of the Ethereum
consensus specs: a comment naming a check, the check (:func:`require`, which
raises :class:`LedgerRuleError` — not ``assert``, which ``python -O``
removes), and at the end the effect. Predicates are named questions
(``is_bonded``, ``is_settleable_job``); money moves only through the helpers
(``increase_balance``, ``slash_stake``, ``distribute``, ``lock_earnings``), so
conservation (balances + bonds + unbonding + locked earnings + escrow +
burned = minted) can be read off them.

Rules are pure from the caller's view: :func:`apply_event` works on a copy
and returns it, and :func:`apply_event_in_place` undoes a refused event from
the state's journal, so a refused event leaves the caller's state untouched.
They do no I/O and read no clock and no randomness but the beacon values in
state; signature checks go through :mod:`slashing.signatures`.

**The network id.** ``SetParams`` fixes the chain id, the hash of the genesis
(the ``RegisterBeacon`` and ``SetParams`` events, :func:`genesis_chain_id`).
Every signed message names it and is signed under a domain that holds it,
and every signed account transaction does the same (EIP-155), so nothing
signed for another network is accepted here: it is refused as
:class:`WrongChain` before its signature is even checked. A job request also
names its node and an expiry round: no other node's commitment answers it,
and it cannot be recorded after it expired.

**Life of a job.** ``RecordJob`` escrows the fee at round t (or at the later
round the operator stamps it with, by drand's clock), and counts against the
node's in-flight limit: a node may keep at most ``stake / (p·S)`` jobs
unsettled, so the expected slash of everything it has in flight never
exceeds what it has at stake. The value of round t+1 (the *sample round*)
decides whether the job is audited; if it is (or it is a zk job, whose proof
is checked whatever the draw), the ledger itself draws its auditor then, from
the validators bonded and not jailed in that round, keyed by the job alone.
Only that auditor may attest it; it answers within ``audit_window`` rounds,
or pays the liveness penalty, is jailed, and another is drawn from a later
round (at most ``MAX_AUDIT_DRAWS``). An auditor that cannot decide
(INCONCLUSIVE) is replaced without penalty. The job settles at the first
``BeaconRound`` after its challenge window (``challenge_window`` rounds
after the sample round, and never before its auditor's deadline) once no
answer, dispute or availability challenge is outstanding: the fee goes to the
node's locked earnings, slashable for ``unbonding_period`` rounds, and the
verification fee to the auditor that attested VALID.

**Disputes are per job.** Any bonded validator may accuse a sampled job
within its window by posting the accuser bond; the first accusation opens
the job's one dispute and later ones join it while it is open (the job waits
for it, whatever its window). The committee is drawn from the value of a
round revealed *after* the dispute opened, keyed by the job alone
(:func:`protocol.sampling.draw_dispute_committee`): whoever accuses,
whenever, the job meets the same unforeseeable committee, and no accuser can
pick among several. Members learn of it from the ledger. A committee that
reaches no strict majority by the end of its ``vote_window`` is drawn again
from a later round, its silent members paying the liveness penalty; only
after ``MAX_COMMITTEE_DRAWS`` committees is a dispute INCONCLUSIVE.

**A record is judged through one of its jobs.** An ``llm`` node can deviate
on every job by less than one job's threshold, which must leave room for
honest machines calibration never saw. ``RECORD`` evidence accuses one of
its jobs (any of them, however it looks alone) on the strength of the node's
record: the committee re-executes the job and every earlier sampled job of
the node and model, which the ledger lists (``record``), and votes FRAUD when
the evidence across them reaches the bound of :mod:`verifier.llm_evidence`.
The accuser chooses only which job to accuse, never what the record holds.
Such a dispute is judged and paid like a mismatch, except that the job's
auditor is not held lazy for a VALID on the job alone.

Offences and what they cost (each also jails the role for ``jail_period``
rounds and counts towards its tombstone):

* confirmed FRAUD (committee majority) or unavailability: the node loses S;
* false accusation (committee majority VALID): each accuser loses its slash
  and its bond;
* equivocation (two signed commitments to one job, self-contained evidence
  as in Ethereum's proposer slashing): the node loses its slash and is
  tombstoned at once, as Cosmos tombstones double-signers;
* VALID on a job that is wrong — a canary (Truebit's forced errors, revealed
  after the job is final) or a job whose FRAUD a committee confirmed: the
  validator loses ``lazy_validator_slash``, all of it burned;
* an invalid zk proof (self-contained ``INVALID_PROOF`` evidence, which the
  rule re-checks itself): the node loses S; evidence against a proof that
  holds is a false accusation and costs the accuser its slash.

Silence is not an offence (an honest validator may be offline) but it is not
free: ``liveness_penalty`` is taken and the validator is jailed, so it is
drawn no more until it is released.

A slash takes bonded stake first, then unbonding stake that was still bonded
when the offence was committed (Cosmos: unbonding delegations stay slashable
for earlier infractions), then the node's locked earnings.
``unbonding_period`` must cover :func:`liability_horizon`, the longest any
offence can take to be proven, so no stake and no earnings leave before a
slash they owe can reach them.

Slash shares (basis points of what was actually taken; the rest is burned):

* confirmed FRAUD: ``accuser_share_bps`` split among the accusers that the
  ledger assigned to audit the job (among all accusers when none of them
  was: its auditor covered the cheat), ``committee_share_bps`` among the
  members who voted FRAUD; the client's fee is refunded and the accusers'
  bonds returned. A colluder that accuses its own node first, to shield it,
  wins nothing back.
* false accusation (committee majority VALID): of each accuser's slash and
  bond, ``wronged_node_share_bps`` to the accused node — it was made to serve
  the job again and its fee was held up — and ``committee_share_bps`` among
  the members who voted VALID.
* equivocation: ``reporter_share_bps`` to the validator that reported it, none
  when the ledger caught it itself (a second ``RecordJob``).
* unavailability: ``reporter_share_bps`` to the validator that reported it;
  the client's fee is refunded.
* a wrong VALID: nothing; all of it is burned, so canaries never pay the
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
``ReportUnavailable``) carry the account's signature, the chain id and its
next nonce, as an Ethereum transaction does; an unsigned ``Bond``,
``Unbond`` or ``Withdraw`` is the operator's. Job requests are replay-proof
three times over: the job id is the request's content id, each (client,
nonce) is used once, and a request expires.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from protocol.economics import in_flight_limit, violations
from protocol.errors import ProtocolError, ReplayedMessage
from protocol.hashing import sha256
from protocol.messages import Attestation, Commitment, JobRequest, Offence, Verdict
from protocol.sampling import RECORD_JOBS, draw_auditor, draw_dispute_committee, sampled
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


class WrongChain(LedgerRuleError):
    """A message or transaction was signed for another network (its chain id is not ours)."""


class RequestExpired(LedgerRuleError):
    """A job request is recorded after its expiry round."""


class InFlightLimit(LedgerRuleError):
    """A node already has as many unsettled jobs as its stake covers (stake / (p·S))."""


class NotSampled(LedgerRuleError):
    """Evidence or an audit for a job the beacon did not select for re-execution."""


class NotAssigned(LedgerRuleError):
    """An audit attestation from a validator the ledger did not assign to the job."""


class NotOnCommittee(LedgerRuleError):
    """A vote from a validator that does not sit on the dispute's current committee."""


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


def is_in_challenge_window(state: State, params: LedgerParams, job: Job) -> bool:
    return state.current_round <= job.window_end(params.challenge_window)


def open_dispute_of(state: State, job: Job) -> Dispute | None:
    """The job's dispute while it is open."""
    if job.dispute is None:
        return None
    dispute = state.disputes[job.dispute]
    return dispute if dispute.is_open else None


def is_settleable_job(state: State, params: LedgerParams, job: Job) -> bool:
    """Pending, its window closed, and no answer, dispute or availability challenge outstanding."""
    return (
        job.status is JobStatus.PENDING
        and not job.audit_pending
        and open_dispute_of(state, job) is None
        and not job.has_open_challenge
        and not is_in_challenge_window(state, params, job)
    )


def is_availability_deadline_over(state: State, params: LedgerParams, job: Job) -> bool:
    return (
        job.unavailable_since is not None
        and state.current_round > job.unavailable_since + params.availability_window
    )


def has_open_case(state: State, account: bytes, since: int) -> bool:
    """Whether an open dispute, availability challenge or audit about something ``account``
    did in round ``since`` or before could still slash it."""
    for dispute_id in state.open_disputes:
        dispute = state.disputes[dispute_id]
        if account == dispute.node and state.jobs[dispute.job_id].recorded_round <= since:
            return True
        if account in dispute.accusers and dispute.opened_round <= since:
            return True
    return any(
        state.jobs[job_id].node == account and state.jobs[job_id].recorded_round <= since
        for index in (state.open_challenges, state.open_audits)
        for job_id in index
    )


def liability_horizon(params: LedgerParams) -> int:
    """The most rounds between an offence and the slash that proves it.

    A job recorded in round t is sampled in t+1; its auditors answer by
    t + MAX_AUDIT_DRAWS·(A+1) at the latest (A the audit window), so it may be
    accused or reported until then or until t+1+W; a report gives the node
    the availability window V_a to serve, after which the window of W rounds
    restarts; a dispute opened in its last round draws a committee in the
    next and decides within MAX_COMMITTEE_DRAWS·(V+1) rounds (V the vote
    window), when the job is final; a canary is revealed at most W rounds
    after that. The unbonding period (and the lock on earnings) must be at
    least this long.
    """
    audits = c.MAX_AUDIT_DRAWS * (params.audit_window + 1)
    window = max(params.challenge_window + 1, audits)
    dispute = 1 + c.MAX_COMMITTEE_DRAWS * (params.vote_window + 1)
    return (
        window + params.availability_window + params.challenge_window + dispute
        + params.challenge_window
    )


def is_vote_window_over(state: State, params: LedgerParams, dispute: Dispute) -> bool:
    return (
        dispute.drawn_round is not None
        and state.current_round > dispute.drawn_round + params.vote_window
    )


def is_slashed_for_equivocation(state: State, node: bytes, job_id: bytes) -> bool:
    return (node, job_id) in state.equivocations


def bonded_validators(state: State) -> list[bytes]:
    """Validators that may be drawn now: bonded above the minimum, not jailed, not slashed out."""
    return [a for a in state.validators if is_bonded_validator(state, a)]


def record_key(job: Job) -> tuple[int, bytes]:
    """Where a job stands in its node's record: the ledger's order, fixed when it was recorded."""
    return job.recorded_round, job.job_id


def record_of(state: State, job_id: bytes, limit: int = RECORD_JOBS,
              newest_first: Iterable[bytes] | None = None) -> list[bytes]:
    """A ``RECORD`` dispute's record: the last ``limit`` sampled jobs (zk jobs aside) of the
    job's node and model recorded before it, oldest first. The ledger fixes it, so neither
    the accuser nor the node chooses what the committee judges.

    Without ``newest_first`` every job of the state is looked at. A service answering many
    queries passes the ids of every job of the node and model recorded before this one,
    newest first (:class:`slashing.job_records.RecordOrder`), and the walk stops at the
    ``limit``-th sampled one, so a query costs about ``limit / p`` steps, not the ledger's
    size; the answer is the same."""
    job = get_job(state, job_id)
    if limit <= 0:
        return []
    before = record_key(job)
    if newest_first is not None:
        found: list[bytes] = []
        for other_id in newest_first:
            other = state.jobs[other_id]
            if other.node != job.node or other.model_id != job.model_id \
                    or record_key(other) >= before:
                raise ValueError(f"job {_hex(other_id)} is not an earlier job of the node and "
                                 f"model of job {_hex(job_id)}")
            if other.sampled and not other.zk:
                found.append(other_id)
                if len(found) == limit:
                    break
        return found[::-1]
    earlier = sorted(
        (record_key(other), other.job_id) for other in state.jobs.values()
        if other.node == job.node and other.model_id == job.model_id and other.sampled
        and not other.zk and record_key(other) < before
    )
    return [j for _, j in earlier[-limit:]]


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


def committee_candidates(state: State, job: Job, dispute: Dispute) -> list[bytes]:
    """Who may sit on the job's committee: bonded validators that are not the node, an accuser,
    or a validator that already answered for the job as its auditor."""
    excluded = {job.node, *dispute.accusers, *job.auditors, *(v for v, _ in job.attestations)}
    return [v for v in bonded_validators(state) if v not in excluded]


def genesis_chain_id(register_beacon: RegisterBeacon, set_params: SetParams) -> bytes:
    """The network's id: ``sha256(tag ‖ RegisterBeacon event ‖ SetParams event)``."""
    return sha256(c.CHAIN_ID_TAG + register_beacon.encode() + set_params.encode())


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


def require_chain(state: State, chain_id: bytes, what: str) -> None:
    """Verify ``what`` was signed for this network."""
    require(
        chain_id == state.chain_id,
        f"{what} is signed for chain {_hex(chain_id)}; this ledger is chain "
        f"{_hex(state.chain_id or b'')} (a message or transaction from another network)",
        WrongChain,
    )


def authorise(state: State, event: AccountTx) -> Account:
    """Verify who sent an account transaction; return the signer's account.

    Signed: it must name this chain, the signature must verify and the nonce
    be the account's next (a used nonce is a replay, a later one is out of
    order). Unsigned: only for the transactions the operator may send, with
    nonce 0 and no chain id.
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
    # Verify it is signed for this network
    require_chain(state, event.chain_id, f"{event.TYPE} transaction of {_hex(event.signer)}")
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
    state: State, account: bytes, role: str, amount: int, offence_round: int | None = None,
    slash_out: bool = True,
) -> int:
    """Take up to ``amount`` and return what was taken: bonded stake, unbonding, locked earnings.

    Unbonding entries of the role are taken from, oldest first, when they were
    still bonded at ``offence_round`` (started in it or later); None, when the
    offence's round is unknown, takes from every entry. A node's locked
    earnings come last, oldest first. A role whose stake is left below its
    minimum is slashed out and stays so, unless ``slash_out`` is off (the
    liveness penalty: the role is then merely not bonded until it tops up).
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
    locked = []
    for release, held in record.locked if role == c.NODE else ():
        take = min(held, amount - taken)
        taken += take
        if held - take:
            locked.append((release, held - take))
    slashed = evolve(
        stake,
        amount=left,
        slashed_out=stake.slashed_out or (slash_out and left < c.MIN_STAKE[role]),
    )
    changes: dict[str, object] = {"unbonding": tuple(entries)}
    if role == c.NODE:
        changes["locked"] = tuple(locked)
    state.accounts[account] = evolve(record.with_stake(role, slashed), **changes)
    state.counters.slashings += 1
    return taken


def jail(state: State, params: LedgerParams, stake: Stake) -> Stake:
    """The stake jailed for the rest of this round and ``jail_period`` more (none when 0)."""
    if not params.jail_period:
        return stake
    release = state.current_round + params.jail_period + 1
    state.counters.jailings += 1
    return evolve(stake, jailed_until=max(release, stake.jailed_until or release))


def punish(
    state: State,
    params: LedgerParams,
    account: bytes,
    role: str,
    amount: int,
    offence_round: int | None,
    tombstone: bool = False,
) -> int:
    """Slash, jail, and tombstone at the ``tombstone_offences``-th offence.

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
    jailed = jail(state, params, evolve(stake, offences=offences, slashed_out=tombstoned))
    state.accounts[account] = record.with_stake(role, jailed)
    return taken


def penalise_silence(state: State, params: LedgerParams, validator: bytes) -> None:
    """A validator stayed silent on a duty: the liveness penalty, burned, and jail.

    Not an offence: it never counts towards a tombstone, and a stake it
    leaves below the minimum is merely not bonded until topped up.
    """
    taken = slash_stake(
        state, validator, c.VALIDATOR, params.liveness_penalty, state.current_round,
        slash_out=False,
    )
    state.burned += taken
    record = state.accounts[validator]
    state.accounts[validator] = record.with_stake(
        c.VALIDATOR, jail(state, params, record.validator)
    )
    state.counters.liveness_penalties += 1


def schedule_settlement(state: State, job_id: bytes, round_number: int) -> None:
    """Try to settle the job at the beacon round ``round_number``."""
    state.settle_queue[round_number] = (*state.settle_queue.get(round_number, ()), job_id)


def reschedule_settlement(
    state: State, params: LedgerParams, job: Job, in_beacon_round: bool
) -> None:
    """The job's settlement, once what held it is resolved, unless its first try is still due.

    Resolved in a beacon round, the job may settle in that same round (it is
    tried after everything else the round does); otherwise in the next.
    """
    earliest = job.window_end(params.challenge_window) + 1
    soonest = state.current_round if in_beacon_round else state.current_round + 1
    first_try = (job.served_round or job.sample_round) + params.challenge_window + 1
    if max(earliest, soonest) > first_try:
        schedule_settlement(state, job.job_id, max(earliest, soonest))


def queue(index: dict[int, tuple[bytes, ...]], round_number: int, key: bytes) -> None:
    index[round_number] = (*index.get(round_number, ()), key)


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


def close_audit(state: State, job: Job) -> Job:
    """The job awaits no auditor any more (answered, given up, or final)."""
    if job.audit_pending or job.audit_deadline is not None:
        job = evolve(job, audit_pending=False, audit_deadline=None)
        state.jobs[job.job_id] = job
        state.open_audits.pop(job.job_id, None)
    return job


def release_in_flight(state: State, node: bytes) -> None:
    left = state.node_jobs[node] - 1
    if left:
        state.node_jobs[node] = left
    else:
        del state.node_jobs[node]


def refund_job(state: State, job: Job) -> None:
    increase_balance(state, job.client, job.fee)
    job = close_audit(state, job)
    state.jobs[job.job_id] = evolve(
        job, status=JobStatus.REFUNDED, closed_round=state.current_round
    )
    release_in_flight(state, job.node)
    state.counters.jobs_refunded += 1


def lock_earnings(state: State, params: LedgerParams, node: bytes, amount: int) -> None:
    """Hold a node's reward for ``unbonding_period`` rounds, slashable, then release it."""
    release = state.current_round + params.unbonding_period
    record = state.accounts.get(node, Account())
    locked = record.locked
    if locked and locked[-1][0] == release:
        locked = (*locked[:-1], (release, locked[-1][1] + amount))
    else:
        locked = (*locked, (release, amount))
        queue(state.unlock_queue, release, node)
    state.accounts[node] = evolve(record, locked=locked)


def unlock_earnings(state: State, account: bytes) -> None:
    """Move the account's locked earnings whose release round has come to its balance."""
    record = state.accounts[account]
    due = [(r, a) for r, a in record.locked if r <= state.current_round]
    if due:
        state.accounts[account] = evolve(
            record,
            balance=record.balance + sum(a for _, a in due),
            locked=tuple((r, a) for r, a in record.locked if r > state.current_round),
        )


def settle_job(state: State, params: LedgerParams, job: Job) -> None:
    """Pay out the escrow once nobody can challenge the job any more.

    The node earns ``fee - verification_fee`` whether or not it was audited, so
    its reward never depends on the sample (the R of the economic check), into
    its locked earnings. The verification fee goes to the auditor that attested
    VALID, or back to the client when none did.
    """
    if job.equivocated:
        refund_job(state, job)
        return
    lock_earnings(state, params, job.node, job.fee - params.verification_fee)
    payee = job.verifier if job.verifier is not None else job.client
    increase_balance(state, payee, params.verification_fee)
    state.jobs[job.job_id] = evolve(
        job, status=JobStatus.SETTLED, closed_round=state.current_round
    )
    release_in_flight(state, job.node)
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
        # The client got two answers: the job settles as a refund, and needs no audit
        job = close_audit(state, evolve(job, equivocated=True))
        state.jobs[job_id] = job
        if job.status is JobStatus.PENDING:
            reschedule_settlement(state, params, job, in_beacon_round=False)
    state.counters.equivocations += 1


# -- Audits --------------------------------------------------------------------------------------


def assign_auditor(state: State, params: LedgerParams, job: Job) -> None:
    """Draw the job's next auditor from the value of this round, or give up on the audit.

    Candidates are the validators bonded (and not jailed) now, except the
    node and everyone already drawn for the job; the draw is keyed by the
    job and the draw's number (:func:`protocol.sampling.draw_auditor`).
    """
    beacon = state.randomness[-1]
    excluded = {job.node, *job.auditors}
    candidates = [v for v in bonded_validators(state) if v not in excluded]
    chosen = None
    if len(job.auditors) < c.MAX_AUDIT_DRAWS:
        chosen = draw_auditor(beacon, job.job_id, len(job.auditors), candidates)
    if chosen is None:
        # Nobody is left to ask: the job settles unaudited
        job = close_audit(state, job)
        state.counters.audits_unanswered += 1
        reschedule_settlement(state, params, job, in_beacon_round=True)
        return
    deadline = state.current_round + params.audit_window
    state.jobs[job.job_id] = evolve(
        job,
        auditors=(*job.auditors, chosen),
        assigned_round=state.current_round,
        audit_deadline=deadline,
        audit_pending=True,
    )
    state.open_audits[job.job_id] = None
    queue(state.audit_queue, deadline + 1, job.job_id)
    state.counters.audits_assigned += 1


def answer_audit(state: State, params: LedgerParams, job: Job, decided: bool) -> None:
    """The current auditor answered: decisively (VALID, evidence), or it could not decide and
    another is drawn next round, without penalty."""
    if decided:
        job = close_audit(state, job)
        reschedule_settlement(state, params, job, in_beacon_round=False)
        return
    state.jobs[job.job_id] = evolve(job, audit_deadline=None)
    queue(state.audit_queue, state.current_round + 1, job.job_id)


def draw_sample(state: State, params: LedgerParams, job: Job) -> None:
    """In the job's sample round: is it audited, and by whom."""
    beacon = state.randomness[-1]
    selected = sampled(beacon, job.job_id, job.commitment_id, params.sample_ppm)
    if selected:
        job = evolve(job, sampled=True)
        state.jobs[job.job_id] = job
    if selected or job.zk:
        assign_auditor(state, params, job)


def check_audit(state: State, params: LedgerParams, job: Job) -> None:
    """A deadline has passed, or an answer was INCONCLUSIVE: penalise silence, draw again."""
    if job.status is not JobStatus.PENDING or not job.audit_pending or job.has_open_challenge:
        return  # answered, final, or waiting for its output to be served
    if job.audit_deadline is not None:
        if job.audit_deadline >= state.current_round:
            return  # the deadline moved (the output was served): a later check is queued
        penalise_silence(state, params, job.auditors[-1])
        state.counters.audits_missed += 1
    assign_auditor(state, params, state.jobs[job.job_id])


# -- Disputes ------------------------------------------------------------------------------------


def draw_dispute(state: State, params: LedgerParams, dispute: Dispute) -> None:
    """Draw the dispute's next committee from this round's value; wait if too few can sit."""
    job = state.jobs[dispute.job_id]
    candidates = committee_candidates(state, job, dispute)
    if len(candidates) < params.committee_size:
        return  # not enough validators bonded now: the dispute waits for the next round
    committee = draw_dispute_committee(
        state.randomness[-1], job.job_id, dispute.draws, candidates, params.committee_size
    )
    state.disputes[dispute.dispute_id] = evolve(
        dispute, committee=committee, drawn_round=state.current_round, draws=dispute.draws + 1,
        votes=(),
    )


def conclude_committee(
    state: State, params: LedgerParams, dispute: Dispute, in_beacon_round: bool
) -> None:
    """The committee's time is up, or all of it voted: decide, or draw another.

    Silent members pay the liveness penalty. A strict majority decides; with
    none, another committee is drawn (from the next value revealed), up to
    ``MAX_COMMITTEE_DRAWS``, after which the dispute is INCONCLUSIVE.
    """
    for member in dispute.committee:
        if member not in dispute.voters():
            penalise_silence(state, params, member)
    outcome = dispute_outcome(dispute)
    if outcome is not Verdict.INCONCLUSIVE or dispute.draws >= c.MAX_COMMITTEE_DRAWS:
        resolve_dispute(state, params, dispute, outcome, in_beacon_round)
        return
    state.disputes[dispute.dispute_id] = evolve(dispute, drawn_round=None, committee=(), votes=())
    state.counters.committee_redraws += 1


def resolve_dispute(
    state: State, params: LedgerParams, dispute: Dispute, outcome: Verdict,
    in_beacon_round: bool,
) -> None:
    """Apply the outcome and close the dispute; the job may then settle."""
    majority = tuple(v.validator for v in dispute.votes if v.verdict is outcome)
    job = state.jobs[dispute.job_id]
    if outcome is Verdict.FRAUD:
        taken = punish(state, params, dispute.node, c.NODE, params.fraud_slash, job.recorded_round)
        # The accuser's share pays for the audit: to the assigned auditors that accused, so a
        # colluder that accuses its own node first wins none of it back; to every accuser
        # only when no auditor did (a colluding auditor covered the cheat)
        paid = [a for a in dispute.accusers if a in job.auditors] or list(dispute.accusers)
        distribute(
            state,
            taken,
            [(paid, params.accuser_share_bps), (majority, params.committee_share_bps)],
        )
        for accuser in dispute.accusers:
            increase_balance(state, accuser, dispute.bond)
        # Whoever called it VALID was wrong: the auditor, and members outvoted. On the record,
        # the auditor judged the job alone, as it must, and the job alone may pass: only the
        # members, who were given the record, were wrong
        wrong = [] if dispute.on_record else [
            v for v, verdict in job.attestations if verdict is Verdict.VALID]
        wrong += [v.validator for v in dispute.votes if v.verdict is Verdict.VALID]
        for validator in dict.fromkeys(wrong):
            taken = punish(state, params, validator, c.VALIDATOR, params.lazy_validator_slash,
                           job.sample_round)
            distribute(state, taken, [])
            state.counters.wrong_valid_slashed += 1
        refund_job(state, state.jobs[dispute.job_id])
        state.counters.disputes_fraud += 1
    elif outcome is Verdict.VALID:
        for accuser in dispute.accusers:
            taken = punish(state, params, accuser, c.VALIDATOR, params.false_accusation_slash,
                           dispute.opened_round)
            distribute(
                state,
                taken + dispute.bond,
                [((dispute.node,), params.wronged_node_share_bps),
                 (majority, params.committee_share_bps)],
            )
        state.counters.disputes_valid += 1
    else:
        for accuser in dispute.accusers:
            increase_balance(state, accuser, dispute.bond)
        state.counters.disputes_inconclusive += 1
    state.disputes[dispute.dispute_id] = evolve(
        state.disputes[dispute.dispute_id], outcome=outcome, closed_round=state.current_round
    )
    del state.open_disputes[dispute.dispute_id]
    job = state.jobs[dispute.job_id]
    if job.status is JobStatus.PENDING:
        reschedule_settlement(state, params, job, in_beacon_round)


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
    if event.role == c.VALIDATOR and event.account not in state.validators:
        state.validators[event.account] = None


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
    # Verify no open case about what the account did while that stake was bonded could slash it
    since = max(e.started_round for e in released)
    require(
        not has_open_case(state, event.account, since),
        f"account {_hex(event.account)} is party to an open dispute, availability challenge or "
        f"audit about round {since} or before; it withdraws after it is resolved",
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
    # Verify the beacon is registered: the chain id is the hash of both
    require(
        state.beacon_key is not None,
        "RegisterBeacon comes before SetParams: the chain id is the hash of both",
    )
    assert state.beacon_key is not None
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
        ("liveness_penalty", params.liveness_penalty, c.VALIDATOR),
    ):
        require(
            0 < amount <= c.MIN_STAKE[role],
            f"{name} = {amount} must be positive and at most the minimum {role} stake "
            f"{c.MIN_STAKE[role]}, or a slash could not be collected in full",
        )
    # Verify the accuser's bond is something to lose
    require(params.accuser_bond > 0, "accuser_bond must be positive: a false accusation loses it")
    # Verify no stake and no earnings can leave before a slash they owe is proven
    require(
        params.unbonding_period >= liability_horizon(params),
        f"unbonding_period = {params.unbonding_period} rounds is shorter than the "
        f"{liability_horizon(params)} rounds an offence can take to be proven "
        f"(see liability_horizon)",
    )
    # Verify honest work is the best response and the stake covers what is in flight
    problems = violations(params.economics())
    require(not problems, "unsafe economic parameters: " + "; ".join(problems))
    state.params = params
    state.chain_id = genesis_chain_id(
        RegisterBeacon(public_key=state.beacon_key, first_round=state.first_round), event
    )


# -- Jobs ----------------------------------------------------------------------------------------


def process_record_job(state: State, event: RecordJob) -> None:
    request = event.request_message
    commitment = event.commitment_message
    job_id = event.job_id
    commitment_id = event.sealed_commitment.content_id
    params = get_params(state)
    # Verify a beacon is registered to sample the job
    require(state.beacon_key is not None, "no beacon is registered; jobs could not be sampled")
    # Verify both were signed for this network
    require_chain(state, request.chain_id, f"job request {_hex(job_id)}")
    require_chain(state, commitment.chain_id, f"commitment {_hex(commitment_id)}")
    # Verify the client signed the request and the node signed the commitment
    request_check, commitment_check = event.signature_checks()
    check_signature(request_check)
    check_signature(commitment_check)
    # Verify the commitment answers this request, from the node it names
    require(
        commitment.job_id == job_id,
        f"commitment is for job {_hex(commitment.job_id)}, the request is job {_hex(job_id)}",
    )
    require(
        commitment.node == request.node,
        f"job {_hex(job_id)} is for node {_hex(request.node)}; node {_hex(commitment.node)} "
        "cannot answer it",
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
        # A second, different signed commitment to one job is equivocation: slash now
        state.seen.add(commitment_id)
        punish_equivocation(state, params, commitment.node, job_id, reporter=None)
        return
    # Verify the stamp does not run ahead of the beacon feed
    require(
        event.stamp_round <= state.current_round + c.MAX_STAMP_LEAD,
        f"stamp round {event.stamp_round} is more than {c.MAX_STAMP_LEAD} rounds ahead of the "
        f"log's round {state.current_round}: append the beacon rounds first",
    )
    recorded_round = max(state.current_round, event.stamp_round or state.current_round)
    # Verify the request has not expired
    require(
        recorded_round <= request.expiry_round,
        f"job {_hex(job_id)} expired after round {request.expiry_round}; the ledger is at round "
        f"{recorded_round}",
        RequestExpired,
    )
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
    # Verify the node's stake covers one more job in flight
    stake = state.accounts[commitment.node].node.amount
    limit = in_flight_limit(stake, params.sample_ppm, params.fraud_slash)
    in_flight = state.node_jobs.get(commitment.node, 0)
    require(
        in_flight < limit,
        f"node {_hex(commitment.node)} has {in_flight} unsettled jobs, the most its stake of "
        f"{stake} covers (stake/(p*S) = {limit}); it takes more once some settle or it bonds more",
        InFlightLimit,
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
        recorded_round=recorded_round,
        zk=request.model_id in state.zk_models,
    )
    state.seen.add(commitment_id)
    state.request_nonces.add((request.client, request.nonce))
    state.node_jobs[commitment.node] = in_flight + 1
    queue(state.sample_queue, recorded_round + 1, job_id)
    schedule_settlement(state, job_id, recorded_round + params.challenge_window + 2)
    state.counters.jobs_recorded += 1


def process_beacon_round(state: State, event: BeaconRound) -> None:
    """A round's value: committees, deadlines, sample draws, releases and settlements due now."""
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
    round_number = state.current_round
    # Committees whose vote window has passed decide or are drawn again; waiting ones are drawn
    for dispute_id in sorted(state.open_disputes):
        dispute = state.disputes[dispute_id]
        if is_vote_window_over(state, params, dispute):
            conclude_committee(state, params, dispute, in_beacon_round=True)
            dispute = state.disputes[dispute_id]
        if dispute.is_open and dispute.drawn_round is None:
            draw_dispute(state, params, dispute)
    # Outputs reported unavailable and not served in time are slashed
    for job_id in sorted(state.open_challenges):
        job = state.jobs[job_id]
        if is_availability_deadline_over(state, params, job):
            resolve_unavailable(state, params, job)
    # Jobs whose sample round this is: drawn for audit, and their auditor assigned
    for job_id in state.sample_queue.pop(round_number, ()):
        job = state.jobs[job_id]
        if job.status is JobStatus.PENDING and not job.equivocated:
            draw_sample(state, params, job)
    # Auditors past their deadline pay for their silence; another is drawn
    for job_id in state.audit_queue.pop(round_number, ()):
        check_audit(state, params, state.jobs[job_id])
    # Locked earnings whose period is over are released
    for account in state.unlock_queue.pop(round_number, ()):
        unlock_earnings(state, account)
    # Jobs due this round whose challenge window has passed undisputed settle
    for job_id in state.settle_queue.pop(round_number, ()):
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
    """A committee member's verdict in an open dispute; the last vote decides it.

    A vote names the round whose beacon value drew the committee. Like every
    attestation it is accepted once, so nobody can cast a member's vote by
    replaying an attestation it sent earlier.
    """
    assert dispute.drawn_round is not None
    # Verify the vote names the round that drew the committee
    require(
        attestation.beacon_round == dispute.drawn_round,
        f"a vote in dispute {_hex(dispute.dispute_id)} names beacon round "
        f"{dispute.drawn_round}, which drew its committee; got {attestation.beacon_round}",
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
        conclude_committee(state, params, dispute, in_beacon_round=False)


def process_attest(state: State, event: Attest) -> None:
    """An audit by the job's assigned auditor, or a committee member's vote."""
    attestation = event.attestation_message
    attestation_id = event.sealed_attestation.content_id
    validator = attestation.validator
    params = get_params(state)
    # Verify it was signed for this network, by the validator
    require_chain(state, attestation.chain_id, f"attestation {_hex(attestation_id)}")
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
    # A member of the job's open dispute's committee votes
    dispute = open_dispute_of(state, job)
    if dispute is not None and validator in dispute.committee:
        process_vote(state, params, dispute, attestation, attestation_id)
        return
    # Verify a vote comes from the committee
    require(
        dispute is None
        or attestation.beacon_round != dispute.drawn_round
        or validator == job.auditor,
        f"validator {_hex(validator)} is not on the committee of dispute "
        f"{_hex(dispute.dispute_id if dispute else b'')} over job {_hex(job.job_id)}",
        NotOnCommittee,
    )
    # Verify FRAUD comes as evidence, which opens or joins the job's dispute
    require(
        attestation.verdict is not Verdict.FRAUD,
        "a FRAUD verdict must be submitted as MISMATCH evidence (Accuse), not as an attestation",
    )
    # Verify the job is not settled
    require(
        job.status is JobStatus.PENDING, f"job {_hex(job.job_id)} is already {job.status}"
    )
    # Verify the job's sample round is revealed and the job was selected for an audit
    require(
        is_sample_round_revealed(state, job),
        f"job {_hex(job.job_id)} waits for beacon round {job.sample_round}; "
        f"the ledger is at round {state.current_round}",
    )
    require(
        bool(job.auditors),
        f"job {_hex(job.job_id)} was not sampled; only sampled jobs and zk jobs are audited",
        NotSampled,
    )
    # Verify the validator is the auditor the ledger assigned, and its answer is awaited
    require(
        validator == job.auditor,
        f"validator {_hex(validator)} is not assigned to audit job {_hex(job.job_id)}"
        + (f"; its auditor is {_hex(job.auditor)}" if job.auditor else
           "; no auditor's answer is awaited"),
        NotAssigned,
    )
    # Verify it names the round that drew it
    require(
        attestation.beacon_round == job.assigned_round,
        f"attestation names beacon round {attestation.beacon_round}; "
        f"the auditor of job {_hex(job.job_id)} was drawn by round {job.assigned_round}",
    )
    valid = attestation.verdict is Verdict.VALID
    job = evolve(
        job,
        attestations=(*job.attestations, (validator, attestation.verdict)),
        verifier=validator if valid else job.verifier,
    )
    state.jobs[job.job_id] = job
    state.seen.add(attestation_id)
    answer_audit(state, params, job, decided=valid)
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
    """A claim that re-execution disagrees: opens the job's dispute, or joins it.

    The accuser escrows the accuser bond. The committee is drawn at the next
    beacon round, keyed by the job alone, so no accuser can choose it by when
    or as whom it accuses, and an early accusation shields nothing: every
    later accuser joins the same dispute.

    ``RECORD`` evidence passes the same checks and opens the same kind of
    dispute, marked :attr:`Dispute.on_record`: its committee judges the job
    with the node's audited record, which the ledger fixes (every sampled job
    of the node and model, in order), so no accuser chooses what is judged.
    A dispute keeps the kind it was opened with; an accusation of the other
    kind joins it as it is.
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
        job.sampled,
        f"job {_hex(job.job_id)} was not sampled (or its round {job.sample_round} is not "
        "revealed); only sampled jobs can be disputed",
        NotSampled,
    )
    # Verify the evidence names the round that sampled the job
    require(
        evidence.beacon_round == job.sample_round,
        f"evidence names beacon round {evidence.beacon_round}; "
        f"job {_hex(job.job_id)} is sampled by round {job.sample_round}",
    )
    dispute = state.disputes.get(job.dispute) if job.dispute is not None else None
    # Verify the job's one dispute, if it had one, is still open
    if dispute is not None and not dispute.is_open:
        raise LedgerRuleError(
            f"job {_hex(job.job_id)}'s dispute was decided {dispute.outcome} in round "
            f"{dispute.closed_round}; a job has one dispute"
        )
    # Verify the challenge window is open (an open dispute takes accusers whatever the window)
    require(
        dispute is not None or is_in_challenge_window(state, params, job),
        f"the challenge window of job {_hex(job.job_id)} closed after round "
        f"{job.window_end(params.challenge_window)}",
    )
    # Verify no availability challenge is open on the job: its output is not yet served
    require(
        not job.has_open_challenge,
        f"job {_hex(job.job_id)} has an open availability challenge; accuse once it is served",
    )
    # Verify each validator accuses a job once, and a committee member votes instead
    require(
        accuser not in job.accusers,
        f"validator {_hex(accuser)} already accused job {_hex(job.job_id)}",
    )
    require(
        dispute is None or accuser not in dispute.committee,
        f"validator {_hex(accuser)} sits on the committee of job {_hex(job.job_id)}'s dispute; "
        "it votes",
    )
    # Verify the claimed output differs from the committed one
    require(
        evidence.observed_hash != accused.output_hash,
        "evidence reports the same output hash the node committed to",
    )
    # Verify the accuser can post the bond
    balance = state.accounts[accuser].balance
    require(
        balance >= params.accuser_bond,
        f"accuser {_hex(accuser)} has balance {balance}, less than the accuser bond "
        f"{params.accuser_bond}",
        InsufficientFunds,
    )
    if dispute is None:
        dispute = Dispute(
            dispute_id=event.sealed_evidence.content_id,
            job_id=job.job_id,
            node=job.node,
            opened_round=state.current_round,
            accusers=(),
            bond=params.accuser_bond,
            on_record=evidence.offence is Offence.RECORD,
        )
        # Verify enough validators besides the node and the accusers could sit on a committee
        candidates = committee_candidates(state, job, evolve(dispute, accusers=(accuser,)))
        require(
            len(candidates) >= params.committee_size,
            f"a committee needs {params.committee_size} validators besides the node, the "
            f"accuser and the job's auditors; {len(candidates)} are bonded",
        )
        state.open_disputes[dispute.dispute_id] = None
        state.counters.disputes_opened += 1
    decrease_balance(state, accuser, params.accuser_bond)
    state.disputes[dispute.dispute_id] = evolve(dispute, accusers=(*dispute.accusers, accuser))
    job = evolve(job, dispute=dispute.dispute_id, accusers=(*job.accusers, accuser))
    state.jobs[job.job_id] = job
    if accuser == job.auditor:
        answer_audit(state, params, job, decided=True)


OFFENCE_PROCESSORS: Mapping[Offence, Callable[[State, LedgerParams, Accuse], None]] = {
    Offence.EQUIVOCATION: process_equivocation,
    Offence.MISMATCH: process_mismatch,
    Offence.RECORD: process_mismatch,
}


def admit_evidence(state: State, event: Accuse) -> LedgerParams:
    """The checks every accusation passes before its offence is judged; returns the parameters."""
    evidence = event.evidence_message
    evidence_id = event.sealed_evidence.content_id
    accused = event.accused_commitment
    params = get_params(state)
    # Verify it was signed for this network (the evidence checks its commitments name the same)
    require_chain(state, evidence.chain_id, f"evidence {_hex(evidence_id)}")
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
    # Verify the request was signed for this network
    require_chain(state, event.request_message.chain_id,
                  f"job request {_hex(event.sealed_request.content_id)}")
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
        open_dispute_of(state, job) is None and not job.has_open_challenge,
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
        if accuser == job.auditor:
            answer_audit(state, params, state.jobs[job.job_id], decided=True)
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
        job.sampled,
        f"job {_hex(job.job_id)} was not sampled (or its round {job.sample_round} is not "
        "revealed); only a sampled job's output must be served",
        NotSampled,
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
        open_dispute_of(state, job) is None,
        f"job {_hex(job.job_id)} has open dispute {_hex(job.dispute or b'')}",
    )
    state.accounts[reporter] = used_nonce(account, event)
    state.jobs[job.job_id] = evolve(
        job, unavailable_since=state.current_round, availability_reporter=reporter
    )
    state.open_challenges[job.job_id] = None
    state.counters.unavailability_reports += 1


def process_serve_data(state: State, event: ServeData) -> None:
    """The reported output, on the log: the challenge closes and the challenge window restarts.

    An auditor that was waiting for the output gets a fresh deadline from now.
    """
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
    if served.audit_pending:
        if served.audit_deadline is None:
            queue(state.audit_queue, state.current_round + 1, job.job_id)
        else:
            served = evolve(served, audit_deadline=state.current_round + params.audit_window)
            queue(state.audit_queue, state.current_round + params.audit_window + 1, job.job_id)
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
    if job.dispute is not None:
        votes = state.disputes[job.dispute].votes
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
