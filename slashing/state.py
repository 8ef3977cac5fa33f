"""The ledger's state: plain typed containers, folded from the event log.

Records (accounts, jobs, disputes, parameters) are frozen; a rule that changes
one puts a new record in its table. So :meth:`State.copy` needs only to copy
the tables, not the records, and a copy is as independent as a deep copy while
costing one pointer per entry.

The tables journal their writes while a :meth:`State.savepoint` is open, so
the store can apply an event in place and undo it if a rule refuses it, at
the cost of the entries it changed rather than a copy of every table.

No rule depends on the order of a table: rules that walk one sort it first or
walk an index whose order the log fixes (the settlement queue), so an undone
delete that re-inserts a key at the end changes nothing. The canonical
encoding (:func:`encode_state`) sorts every table by key, which makes
:func:`state_hash` a function of the state's content alone.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, TypeVar, cast

import msgpack

from protocol import codec
from protocol.economics import EconomicParams
from protocol.errors import MalformedMessage
from protocol.hashing import sha256
from protocol.messages import Verdict
from protocol.sampling import PPM
from slashing import constants as c

_UINT64_MAX = 2**64 - 1
K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")
R = TypeVar("R")


def evolve(record: R, **changes: Any) -> R:
    """``dataclasses.replace`` for the ledger's frozen records, an order of magnitude faster.

    The records (:class:`Stake`, :class:`Unbonding`, :class:`Account`,
    :class:`Job`, :class:`Dispute`) check nothing on construction, so a copy
    of the instance dict with the changes applied is the same record
    ``replace`` would build, without re-running ``__init__``.
    """
    names = record.__dataclass_fields__  # type: ignore[attr-defined]
    unknown = changes.keys() - names.keys()
    if unknown:
        raise TypeError(f"{type(record).__name__} has no fields {sorted(unknown)}")
    copy = object.__new__(type(record))
    copy.__dict__.update(record.__dict__)
    copy.__dict__.update(changes)
    return copy

# -- Journaled tables ------------------------------------------------------------------------------

_MISSING: Any = object()


class Journal:
    """Undo records of the writes made since the oldest open savepoint of one state."""

    __slots__ = ("depth", "undo")

    def __init__(self) -> None:
        self.depth = 0
        self.undo: list[tuple[Any, Any, Any]] = []


class JournaledDict(dict[K, V]):
    """A dict that records how to undo each write while its journal is open."""

    __slots__ = ("journal",)

    def __init__(self, items: Iterable[tuple[K, V]] | dict[K, V] = (), *, journal: Journal) -> None:
        super().__init__(items)
        self.journal = journal

    def __setitem__(self, key: K, value: V) -> None:
        if self.journal.depth:
            self.journal.undo.append((self, key, dict.get(self, key, _MISSING)))
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: K) -> None:
        if self.journal.depth:
            self.journal.undo.append((self, key, dict.__getitem__(self, key)))
        dict.__delitem__(self, key)

    def pop(self, key: K, default: Any = _MISSING) -> Any:
        if key in self:
            value = dict.__getitem__(self, key)
            del self[key]
            return value
        if default is _MISSING:
            raise KeyError(key)
        return default

    def setdefault(self, key: K, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return dict.__getitem__(self, key)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def clear(self) -> None:
        for key in list(self):
            del self[key]

    def popitem(self) -> tuple[K, V]:
        key = next(reversed(self))
        return key, self.pop(key)

    def __ior__(self, other: Any) -> JournaledDict[K, V]:  # type: ignore[override,misc]
        self.update(other)
        return self


_ABSENT = object()
_PRESENT = object()


class JournaledSet(set[T]):
    """A set that records how to undo each add or discard while its journal is open."""

    __slots__ = ("journal",)

    def __init__(self, items: Iterable[T] = (), *, journal: Journal) -> None:
        super().__init__(items)
        self.journal = journal

    def add(self, item: T) -> None:
        if self.journal.depth and item not in self:
            self.journal.undo.append((self, item, _ABSENT))
        set.add(self, item)

    def discard(self, item: T) -> None:  # type: ignore[override]
        if self.journal.depth and item in self:
            self.journal.undo.append((self, item, _PRESENT))
        set.discard(self, item)

    def remove(self, item: T) -> None:
        if item not in self:
            raise KeyError(item)
        self.discard(item)

    def _refuse(self, *args: Any) -> None:
        raise TypeError("ledger sets change one element at a time (add, discard)")

    update = clear = pop = difference_update = intersection_update = _refuse  # type: ignore[assignment]
    symmetric_difference_update = _refuse


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    """Fee in escrow: the job may still be attested, accused or disputed."""
    SETTLED = "settled"
    """Fee paid out to the node (and the verifying validator, if any)."""
    REFUNDED = "refunded"
    """Fee returned to the client: fraud confirmed or the node equivocated."""


@dataclass(frozen=True)
class Stake:
    """Tokens bonded in one role and the role's standing.

    ``slashed_out`` is the tombstone (Cosmos): set when a slash leaves less than
    the minimum stake, on equivocation, or at the ``tombstone_offences``-th
    offence; a tombstoned role never bonds or acts again. ``jailed_until`` is
    the first round in which a jailed role may act again.
    """

    amount: int = 0
    slashed_out: bool = False
    jailed_until: int | None = None
    offences: int = 0

    @property
    def tombstoned(self) -> bool:
        return self.slashed_out


@dataclass(frozen=True)
class Unbonding:
    """Stake on its way out: still slashable for offences committed up to ``started_round``."""

    role: str
    amount: int
    started_round: int
    release_round: int
    """The first round in which ``Withdraw`` may move it to the balance."""


@dataclass(frozen=True)
class Account:
    """A public key's free balance, its stake in each role, and stake on its way out."""

    balance: int = 0
    node: Stake = field(default_factory=Stake)
    validator: Stake = field(default_factory=Stake)
    nonce: int = 0
    """The nonce of the account's last signed transaction (0: none yet)."""
    unbonding: tuple[Unbonding, ...] = ()
    locked: tuple[tuple[int, int], ...] = ()
    """A node's earnings still slashable, as (release round, amount), oldest first: a settled
    job's reward is held for the unbonding period, as stake on its way out is."""

    def stake(self, role: str) -> Stake:
        if role == c.NODE:
            return self.node
        if role == c.VALIDATOR:
            return self.validator
        raise ValueError(f"unknown role {role!r}; roles are {c.ROLES}")

    def with_stake(self, role: str, stake: Stake) -> Account:
        if role == c.NODE:
            return evolve(self, node=stake)
        if role == c.VALIDATOR:
            return evolve(self, validator=stake)
        raise ValueError(f"unknown role {role!r}; roles are {c.ROLES}")

    @property
    def bonded(self) -> int:
        return self.node.amount + self.validator.amount

    @property
    def unbonding_total(self) -> int:
        return sum(entry.amount for entry in self.unbonding)

    @property
    def locked_total(self) -> int:
        return sum(amount for _, amount in self.locked)


@dataclass(frozen=True)
class LedgerParams:
    """The network's parameters, fixed once at genesis by ``SetParams``.

    Each field is range-checked here (out of range is malformed); whether the
    combination is economically safe is a ledger rule (``process_set_params``).
    """

    sample_ppm: int
    committee_size: int
    challenge_window: int
    reward: int
    compute_cost: int
    collusion_ppm: int
    fraud_slash: int
    equivocation_slash: int
    false_accusation_slash: int
    verification_fee: int
    accuser_share_bps: int
    committee_share_bps: int
    wronged_node_share_bps: int
    reporter_share_bps: int
    lazy_validator_slash: int = c.DEFAULT_LAZY_VALIDATOR_SLASH
    availability_window: int = c.DEFAULT_AVAILABILITY_WINDOW
    unbonding_period: int = c.DEFAULT_UNBONDING_PERIOD
    jail_period: int = c.DEFAULT_JAIL_PERIOD
    tombstone_offences: int = c.DEFAULT_TOMBSTONE_OFFENCES
    audit_window: int = c.DEFAULT_AUDIT_WINDOW
    vote_window: int = c.DEFAULT_VOTE_WINDOW
    accuser_bond: int = c.DEFAULT_ACCUSER_BOND
    liveness_penalty: int = c.DEFAULT_LIVENESS_PENALTY

    def __post_init__(self) -> None:
        bounds = {
            "sample_ppm": (1, PPM),
            "committee_size": (1, c.MAX_COMMITTEE_SIZE),
            "challenge_window": (1, c.MAX_CHALLENGE_WINDOW),
            "collusion_ppm": (0, PPM - 1),
            "accuser_share_bps": (0, c.BPS),
            "committee_share_bps": (0, c.BPS),
            "wronged_node_share_bps": (0, c.BPS),
            "reporter_share_bps": (0, c.BPS),
            "availability_window": (1, c.MAX_CHALLENGE_WINDOW),
            "unbonding_period": (1, c.MAX_UNBONDING_PERIOD),
            "jail_period": (0, c.MAX_JAIL_PERIOD),
            "tombstone_offences": (1, c.MAX_TOMBSTONE_OFFENCES),
            "audit_window": (1, c.MAX_CHALLENGE_WINDOW),
            "vote_window": (1, c.MAX_CHALLENGE_WINDOW),
        }
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            low, high = bounds.get(f.name, (0, _UINT64_MAX))
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise MalformedMessage(
                    f"parameter {f.name!r} must be an integer in {low}..{high}, got {value!r}"
                )

    @classmethod
    def default(cls) -> LedgerParams:
        return cls(
            sample_ppm=c.DEFAULT_SAMPLE_PPM,
            committee_size=c.DEFAULT_COMMITTEE_SIZE,
            challenge_window=c.DEFAULT_CHALLENGE_WINDOW,
            reward=c.DEFAULT_REWARD,
            compute_cost=c.DEFAULT_COMPUTE_COST,
            collusion_ppm=c.DEFAULT_COLLUSION_PPM,
            fraud_slash=c.DEFAULT_FRAUD_SLASH,
            equivocation_slash=c.DEFAULT_EQUIVOCATION_SLASH,
            false_accusation_slash=c.DEFAULT_FALSE_ACCUSATION_SLASH,
            verification_fee=c.DEFAULT_VERIFICATION_FEE,
            accuser_share_bps=c.DEFAULT_ACCUSER_SHARE_BPS,
            committee_share_bps=c.DEFAULT_COMMITTEE_SHARE_BPS,
            wronged_node_share_bps=c.DEFAULT_WRONGED_NODE_SHARE_BPS,
            reporter_share_bps=c.DEFAULT_REPORTER_SHARE_BPS,
            lazy_validator_slash=c.DEFAULT_LAZY_VALIDATOR_SLASH,
            availability_window=c.DEFAULT_AVAILABILITY_WINDOW,
            unbonding_period=c.DEFAULT_UNBONDING_PERIOD,
            jail_period=c.DEFAULT_JAIL_PERIOD,
            tombstone_offences=c.DEFAULT_TOMBSTONE_OFFENCES,
            audit_window=c.DEFAULT_AUDIT_WINDOW,
            vote_window=c.DEFAULT_VOTE_WINDOW,
            accuser_bond=c.DEFAULT_ACCUSER_BOND,
            liveness_penalty=c.DEFAULT_LIVENESS_PENALTY,
        )

    @property
    def detection_rounds(self) -> int:
        """D: rounds from recording an undisputed job to its settlement, ``W + 2``."""
        return self.challenge_window + 2

    def economics(self) -> EconomicParams:
        """The symbols of DESIGN decision 6; S is the slash a confirmed fraud costs."""
        return EconomicParams(
            reward=self.reward,
            compute_cost=self.compute_cost,
            sample_ppm=self.sample_ppm,
            collusion_ppm=self.collusion_ppm,
            slash=self.fraud_slash,
            min_stake=c.MIN_STAKE[c.NODE],
            detection_rounds=self.detection_rounds,
        )


@dataclass(frozen=True)
class Job:
    """A recorded commitment, the escrowed fee it is paid from, and who must check it."""

    job_id: bytes
    client: bytes
    node: bytes
    model_id: bytes
    fee: int
    commitment_id: bytes
    output_hash: bytes
    recorded_round: int
    status: JobStatus = JobStatus.PENDING
    verifier: bytes | None = None
    """The assigned auditor that attested VALID; earns the verification fee at settlement."""
    attestations: tuple[tuple[bytes, Verdict], ...] = ()
    accusers: tuple[bytes, ...] = ()
    dispute: bytes | None = None
    """The job's one dispute, open or decided (its id)."""
    equivocated: bool = False
    unavailable_since: int | None = None
    """The round a validator reported the job's output unavailable (an open challenge)."""
    availability_reporter: bytes | None = None
    served_round: int | None = None
    """The round the node answered the report by posting the output; the window restarts."""
    closed_round: int | None = None
    """The round the job settled or was refunded."""
    zk: bool = False
    """Its model was registered for the zk mode when it was recorded: it carries a proof."""
    sampled: bool = False
    """Set in its sample round when the draw selects it (or it is a zk job): it must be audited."""
    auditors: tuple[bytes, ...] = ()
    """Every validator the ledger drew to audit the job, in order; the last is the current one."""
    assigned_round: int | None = None
    """The round whose beacon value drew the current auditor: its attestation names it."""
    audit_deadline: int | None = None
    """The last round the current auditor may answer in; None when no answer is awaited."""
    audit_pending: bool = False
    """An auditor's decisive answer (VALID, or evidence) is still awaited: the job waits."""

    @property
    def sample_round(self) -> int:
        """The first beacon round after recording: its value decides whether the job is audited."""
        return self.recorded_round + 1

    @property
    def has_open_challenge(self) -> bool:
        """Reported unavailable, not served, and not yet slashed and refunded for it."""
        return (
            self.unavailable_since is not None
            and self.served_round is None
            and self.status is JobStatus.PENDING
        )

    @property
    def auditor(self) -> bytes | None:
        """The validator whose answer is awaited, if any."""
        return self.auditors[-1] if self.audit_deadline is not None else None

    def window_end(self, challenge_window: int) -> int:
        """The last round in which the job may be accused or reported.

        ``challenge_window`` rounds after its sample round (or after its output
        was served), and never before its current auditor's deadline.
        """
        start = self.served_round if self.served_round is not None else self.sample_round
        return max(start + challenge_window, self.audit_deadline or 0)

    @property
    def escrow(self) -> int:
        return self.fee if self.status is JobStatus.PENDING else 0


@dataclass(frozen=True)
class ZkModel:
    """A model whose jobs carry EZKL proofs, registered with the keys that check them.

    The verifying key and the settings are in the state by their SHA-256
    (:attr:`State.zk_blobs`), so whoever replays the log holds the bytes that
    re-check a proof; the SRS, too large for the log, is named by its SHA-256.
    """

    model_id: bytes
    vk_sha256: bytes
    settings_sha256: bytes
    srs_sha256: bytes
    registered_round: int
    """Jobs recorded from then on are zk jobs (:attr:`Job.zk`); earlier ones are not."""


@dataclass(frozen=True)
class Vote:
    validator: bytes
    verdict: Verdict
    attestation_id: bytes


@dataclass(frozen=True)
class Dispute:
    """Every MISMATCH or RECORD accusation against one job, and the committee that decides them.

    One per job, whoever accuses: later accusers join it. Its committee is
    drawn from the value of a round revealed after it opened (and drawn again,
    from a later round, when a committee reaches no majority), keyed by the
    job alone.
    """

    dispute_id: bytes
    """The content id of the evidence that opened it."""
    job_id: bytes
    node: bytes
    opened_round: int
    accusers: tuple[bytes, ...]
    """Every validator that accused the job, in order; each posted ``bond``."""
    bond: int
    """What each accuser escrowed; returned unless the committee finds the work VALID."""
    draws: int = 0
    """Committees drawn so far."""
    drawn_round: int | None = None
    """The round whose value drew the current committee; None while one is awaited."""
    committee: tuple[bytes, ...] = ()
    votes: tuple[Vote, ...] = ()
    """The current committee's votes."""
    outcome: Verdict | None = None
    """None while open; FRAUD, VALID or INCONCLUSIVE once resolved."""
    closed_round: int | None = None
    on_record: bool = False
    """Opened by ``RECORD`` evidence: the committee judges the job with the node's audited
    record, and a FRAUD outcome does not hold the job's auditor lazy for its VALID."""

    @property
    def is_open(self) -> bool:
        return self.outcome is None

    @property
    def accuser(self) -> bytes:
        """The validator that opened it."""
        return self.accusers[0]

    @property
    def escrow(self) -> int:
        return self.bond * len(self.accusers) if self.is_open else 0

    def voters(self) -> tuple[bytes, ...]:
        return tuple(v.validator for v in self.votes)


@dataclass
class Counters:
    """Running totals for dashboards and research; no rule reads them."""

    jobs_recorded: int = 0
    jobs_settled: int = 0
    jobs_refunded: int = 0
    attestations: int = 0
    disputes_opened: int = 0
    disputes_fraud: int = 0
    disputes_valid: int = 0
    disputes_inconclusive: int = 0
    equivocations: int = 0
    slashings: int = 0
    unavailability_reports: int = 0
    unavailability_slashes: int = 0
    canaries_revealed: int = 0
    lazy_validators_slashed: int = 0
    wrong_valid_slashed: int = 0
    audits_assigned: int = 0
    audits_missed: int = 0
    audits_unanswered: int = 0
    committee_redraws: int = 0
    liveness_penalties: int = 0
    invalid_proofs: int = 0
    false_proof_accusations: int = 0
    jailings: int = 0
    tombstones: int = 0
    unbondings: int = 0
    withdrawals: int = 0


class Savepoint(NamedTuple):
    """Where a state's journal stood, and its scalar fields, when the savepoint was taken."""

    mark: int
    rounds: int
    params: LedgerParams | None
    beacon_key: bytes | None
    chain_id: bytes | None
    first_round: int
    minted: int
    burned: int
    counters: dict[str, int]


_TABLES = (
    "accounts", "jobs", "disputes", "canaries", "open_disputes", "open_challenges", "settle_queue",
    "zk_models", "zk_blobs", "sample_queue", "audit_queue", "open_audits", "node_jobs",
    "validators", "unlock_queue",
)
_SETS = ("equivocations", "seen", "request_nonces", "revealed_canaries", "proof_frauds")


@dataclass
class State:
    """Everything the rules read and write; the fold of the event log."""

    accounts: dict[bytes, Account] = field(default_factory=dict)
    jobs: dict[bytes, Job] = field(default_factory=dict)
    disputes: dict[bytes, Dispute] = field(default_factory=dict)
    equivocations: set[tuple[bytes, bytes]] = field(default_factory=set)
    """(node, job_id) pairs already slashed for equivocation: one slash per offence."""
    seen: set[bytes] = field(default_factory=set)
    """Content ids of accepted commitments, attestations and evidence (replay guard)."""
    params: LedgerParams | None = None
    beacon_key: bytes | None = None
    first_round: int = 0
    randomness: list[bytes] = field(default_factory=list)
    """Beacon values of rounds ``first_round``, ``first_round + 1``, … in order."""
    minted: int = 0
    burned: int = 0
    counters: Counters = field(default_factory=Counters)
    request_nonces: set[tuple[bytes, int]] = field(default_factory=set)
    """(client, nonce) of every recorded job request: a client's nonce is used once."""
    canaries: dict[bytes, int] = field(default_factory=dict)
    """Unrevealed canary commitments ``sha256(tag ‖ salt ‖ job_id)`` → the round planted."""
    revealed_canaries: set[bytes] = field(default_factory=set)
    """Job ids revealed as canaries: each slashes its lazy validators once."""
    open_disputes: dict[bytes, None] = field(default_factory=dict)
    """Index: ids of the disputes not yet resolved."""
    open_challenges: dict[bytes, None] = field(default_factory=dict)
    """Index: ids of the jobs whose output was reported unavailable and not yet served."""
    settle_queue: dict[int, tuple[bytes, ...]] = field(default_factory=dict)
    """Index: round → jobs to try to settle in it, so a round never walks every job."""
    zk_models: dict[bytes, ZkModel] = field(default_factory=dict)
    """Models registered for the zk mode (``RegisterZkModel``), by model id."""
    zk_blobs: dict[bytes, bytes] = field(default_factory=dict)
    """Verifying keys and settings of zk models, content-addressed: SHA-256 → bytes."""
    proof_frauds: set[bytes] = field(default_factory=set)
    """Job ids whose node was slashed for an invalid proof: one slash per job."""
    chain_id: bytes | None = None
    """The hash of the genesis (``RegisterBeacon`` and ``SetParams``): what every signed message
    and account transaction names, so nothing signed for another network is accepted here."""
    sample_queue: dict[int, tuple[bytes, ...]] = field(default_factory=dict)
    """Index: sample round → jobs recorded the round before, to draw (and assign) in it."""
    audit_queue: dict[int, tuple[bytes, ...]] = field(default_factory=dict)
    """Index: round → jobs whose auditor's deadline has passed by then, or that need another."""
    open_audits: dict[bytes, None] = field(default_factory=dict)
    """Index: ids of the jobs waiting for an auditor's answer."""
    node_jobs: dict[bytes, int] = field(default_factory=dict)
    """A node's unsettled jobs: bounded by its stake (the in-flight limit)."""
    validators: dict[bytes, None] = field(default_factory=dict)
    """Index: every account that ever bonded as a validator, where draws look for candidates."""
    unlock_queue: dict[int, tuple[bytes, ...]] = field(default_factory=dict)
    """Index: round → accounts with locked earnings released in it."""

    def __post_init__(self) -> None:
        self._journal = Journal()
        for name in _TABLES:
            setattr(self, name, JournaledDict(getattr(self, name), journal=self._journal))
        for name in _SETS:
            setattr(self, name, JournaledSet(getattr(self, name), journal=self._journal))
        self.randomness = list(self.randomness)
        self.counters = dataclasses.replace(self.counters)

    @property
    def current_round(self) -> int:
        """The latest revealed beacon round; ``first_round - 1`` before any is revealed."""
        return self.first_round + len(self.randomness) - 1

    def beacon_value(self, round_number: int) -> bytes | None:
        """The randomness of a revealed round, or None if it is not revealed (yet)."""
        index = round_number - self.first_round
        if 0 <= index < len(self.randomness):
            return self.randomness[index]
        return None

    def escrow(self) -> int:
        """Fees held for pending jobs and accusers' bonds held by open disputes."""
        fees = sum(job.escrow for job in self.jobs.values())
        return fees + sum(self.disputes[d].escrow for d in self.open_disputes)

    def total_supply(self) -> int:
        """Balances + bonds + unbonding + locked + escrow + burned; conservation: ``minted``."""
        held = sum(a.balance + a.bonded + a.unbonding_total + a.locked_total
                   for a in self.accounts.values())
        return held + self.escrow() + self.burned

    def copy(self) -> State:
        """An independent state; the constructor copies every table and set."""
        return State(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    # -- savepoints --------------------------------------------------------------------------------

    def savepoint(self) -> Savepoint:
        """Start journaling; :meth:`rollback` returns the state to exactly this point."""
        self._journal.depth += 1
        return Savepoint(
            mark=len(self._journal.undo),
            rounds=len(self.randomness),
            params=self.params,
            beacon_key=self.beacon_key,
            chain_id=self.chain_id,
            first_round=self.first_round,
            minted=self.minted,
            burned=self.burned,
            counters=dict(self.counters.__dict__),
        )

    def rollback(self, point: Savepoint) -> None:
        """Undo every change made since ``point`` and close it."""
        undo = self._journal.undo
        while len(undo) > point.mark:
            container, key, old = undo.pop()
            if isinstance(container, dict):
                if old is _MISSING:
                    dict.__delitem__(container, key)
                else:
                    dict.__setitem__(container, key, old)
            elif old is _ABSENT:
                set.discard(container, key)
            else:
                set.add(container, key)
        del self.randomness[point.rounds :]
        self.params, self.beacon_key = point.params, point.beacon_key
        self.chain_id = point.chain_id
        self.first_round, self.minted, self.burned = point.first_round, point.minted, point.burned
        self.counters.__dict__.update(point.counters)
        self._release()

    def release(self, point: Savepoint) -> None:
        """Keep the changes made since ``point`` and close it."""
        self._release()

    def _release(self) -> None:
        self._journal.depth -= 1
        if not self._journal.depth:
            self._journal.undo.clear()

    def changed_accounts(self, point: Savepoint) -> Iterator[bytes]:
        """Accounts whose record was written since ``point`` (which must still be open)."""
        accounts = self.accounts
        for container, key, _old in self._journal.undo[point.mark :]:
            if container is accounts:
                yield key


# -- Canonical encoding and the state hash ---------------------------------------------------------


def _to_value(value: object) -> object:
    """A record as codec values: dataclasses as maps, enums as strings, tables sorted by key."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return [[_to_value(k), _to_value(v)] for k, v in sorted(value.items(), key=_sort_key)]
    if isinstance(value, (set, frozenset)):
        return [_to_value(v) for v in sorted(value)]
    if isinstance(value, (list, tuple)):
        return [_to_value(v) for v in value]
    return value


def _sort_key(item: tuple[Any, Any]) -> Any:
    return item[0]


class _Unusual(Exception):
    """A value the one-walk encoder leaves to :func:`protocol.codec.encode`."""


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_RECORD_FIELDS: dict[type, tuple[tuple[str, ...], bool] | None] = {}
"""Each record type's field names in canonical (UTF-8 byte) order and whether it is frozen;
None for a type that is no dataclass."""


def _record_fields(cls: type) -> tuple[tuple[str, ...], bool] | None:
    try:
        return _RECORD_FIELDS[cls]
    except KeyError:
        found = None
        if dataclasses.is_dataclass(cls):
            fields = (f.name for f in dataclasses.fields(cls))
            names = tuple(sorted(fields, key=lambda name: name.encode("utf-8")))
            found = (names, bool(cls.__dataclass_params__.frozen))  # type: ignore[attr-defined]
        _RECORD_FIELDS[cls] = found
        return found


class _Walk:
    """The canonical values of frozen records from the last encoding, reused by the next.

    A frozen record is never changed (a rule puts a new record in its table,
    see :func:`evolve`), so its canonical value is a function of the object:
    most records of a large state (settled jobs) are the same objects from one
    snapshot to the next. Entries are keyed by ``id`` and hold the record, so
    an id cannot be reused while it is cached, and a hit must be the very same
    object. Each encoding keeps only the records it met: the cache holds the
    records of the last state encoded, no more. Mutable records
    (:class:`Counters`, the state itself) are walked every time.
    """

    previous: ClassVar[dict[int, tuple[object, int, object]]] = {}

    def __init__(self) -> None:
        self.met: dict[int, tuple[object, int, object]] = {}

    def canonical(self, value: object, depth: int) -> object:
        """``codec``'s normalised form of ``_to_value(value)``, built in one walk.

        A snapshot encodes every record of the state, and :func:`_to_value`
        followed by codec's own check walks each of them twice and looks their
        fields up every time. Here records become maps with their fields already
        in canonical order, tables key-sorted lists of pairs, tuples lists, enums
        their values: what ``codec.encode`` would pack, so packing it gives the
        same bytes. A value this walk does not know, an integer outside int64 or
        nesting past codec's bound raises :class:`_Unusual`, and
        :func:`encode_state` then takes codec's own path for the whole state.
        """
        cls = type(value)
        if cls is bytes or cls is str or cls is bool or value is None:
            return value
        if cls is int:
            if _INT64_MIN <= cast(int, value) <= _INT64_MAX:
                return value
            raise _Unusual
        if depth + 2 > codec.MAX_DEPTH:  # what it holds lies at most two levels deeper
            raise _Unusual
        record = _record_fields(cls)
        if record is not None:
            names, frozen = record
            if not frozen:
                return {name: self.canonical(getattr(value, name), depth + 1) for name in names}
            key = id(value)
            hit = _Walk.previous.get(key) or self.met.get(key)
            if hit is None or hit[0] is not value or hit[1] != depth:
                fields = {name: self.canonical(getattr(value, name), depth + 1) for name in names}
                hit = (value, depth, fields)
            self.met[key] = hit
            return hit[2]
        if isinstance(value, enum.Enum):
            return self.canonical(value.value, depth)
        # Tables and sets are long: their keys and members, mostly bytes, skip the call.
        if isinstance(value, dict):
            return [
                [
                    k if type(k) is bytes else self.canonical(k, depth + 2),
                    self.canonical(v, depth + 2),
                ]
                for k, v in sorted(value.items(), key=_sort_key)
            ]
        if isinstance(value, (set, frozenset)):
            return [v if type(v) is bytes else self.canonical(v, depth + 1) for v in sorted(value)]
        if isinstance(value, (list, tuple)):
            return [v if type(v) is bytes else self.canonical(v, depth + 1) for v in value]
        raise _Unusual


def encode_state(state: State) -> bytes:
    """The canonical bytes of a state: equal states, and only they, have equal bytes.

    These are ``codec.encode`` of the state's value (:func:`_to_value`);
    :meth:`_Walk.canonical` builds that value already normalised, so it is
    packed directly, unless it holds something only codec's own path handles.
    """
    walk = _Walk()
    try:
        value = walk.canonical(state, 0)
    except _Unusual:
        return codec.encode(
            {f.name: _to_value(getattr(state, f.name)) for f in dataclasses.fields(state)}
        )
    _Walk.previous = walk.met
    packed = msgpack.packb(value, use_bin_type=True)
    assert isinstance(packed, bytes)
    return packed


def state_hash(state: State) -> bytes:
    """What snapshots and replays compare: ``sha256(tag ‖ encode_state(state))``."""
    return sha256(c.STATE_HASH_TAG + encode_state(state))


def _decode_stake(v: Any) -> Stake:
    return Stake(**v)


def _decode_account(v: Any) -> Account:
    return Account(
        balance=v["balance"],
        node=_decode_stake(v["node"]),
        validator=_decode_stake(v["validator"]),
        nonce=v["nonce"],
        unbonding=tuple(Unbonding(**e) for e in v["unbonding"]),
        locked=tuple((r, a) for r, a in v["locked"]),
    )


def _decode_job(v: Any) -> Job:
    return Job(
        **{
            **v,
            "status": JobStatus(v["status"]),
            "attestations": tuple((a, Verdict(verdict)) for a, verdict in v["attestations"]),
            "accusers": tuple(v["accusers"]),
            "auditors": tuple(v["auditors"]),
        }
    )


def _decode_dispute(v: Any) -> Dispute:
    return Dispute(
        **{
            **v,
            "accusers": tuple(v["accusers"]),
            "committee": tuple(v["committee"]),
            "votes": tuple(
                Vote(x["validator"], Verdict(x["verdict"]), x["attestation_id"]) for x in v["votes"]
            ),
            "outcome": None if v["outcome"] is None else Verdict(v["outcome"]),
        }
    )


def decode_state(data: bytes) -> State:
    """The inverse of :func:`encode_state`; raises MalformedMessage on bytes it did not write."""
    value = codec.decode(data, max_bytes=2**40)
    try:
        return State(
            accounts={k: _decode_account(v) for k, v in value["accounts"]},
            jobs={k: _decode_job(v) for k, v in value["jobs"]},
            disputes={k: _decode_dispute(v) for k, v in value["disputes"]},
            equivocations={(n, j) for n, j in value["equivocations"]},
            seen=set(value["seen"]),
            params=None if value["params"] is None else LedgerParams(**value["params"]),
            beacon_key=value["beacon_key"],
            first_round=value["first_round"],
            randomness=list(value["randomness"]),
            minted=value["minted"],
            burned=value["burned"],
            counters=Counters(**value["counters"]),
            request_nonces={(client, nonce) for client, nonce in value["request_nonces"]},
            canaries=dict(value["canaries"]),
            revealed_canaries=set(value["revealed_canaries"]),
            open_disputes=dict(value["open_disputes"]),
            open_challenges=dict(value["open_challenges"]),
            settle_queue={r: tuple(ids) for r, ids in value["settle_queue"]},
            zk_models={k: ZkModel(**v) for k, v in value["zk_models"]},
            zk_blobs=dict(value["zk_blobs"]),
            proof_frauds=set(value["proof_frauds"]),
            chain_id=value["chain_id"],
            sample_queue={r: tuple(ids) for r, ids in value["sample_queue"]},
            audit_queue={r: tuple(ids) for r, ids in value["audit_queue"]},
            open_audits=dict(value["open_audits"]),
            node_jobs=dict(value["node_jobs"]),
            validators=dict(value["validators"]),
            unlock_queue={r: tuple(ids) for r, ids in value["unlock_queue"]},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedMessage(f"bytes are not an encoded ledger state: {exc!r:.200}") from exc
