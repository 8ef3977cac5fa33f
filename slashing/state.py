"""The ledger's state: plain typed containers, folded from the event log.

Records (accounts, jobs, disputes, parameters) are frozen; a rule that changes
one puts a new record in its table. So :meth:`State.copy` needs only to copy
the tables, not the records, and a copy is as independent as a deep copy while
costing one pointer per entry.

Iteration order of every table is insertion order, which the log fixes, so
rules that walk a table (settlement, committee candidates) are deterministic.
Sets are only ever asked about membership, never walked.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field

from assay.economics import EconomicParams
from assay.errors import MalformedMessage
from assay.messages import Verdict
from assay.sampling import PPM
from slashing import constants as c

_UINT64_MAX = 2**64 - 1


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    """Fee in escrow: the job may still be attested, accused or disputed."""
    SETTLED = "settled"
    """Fee paid out to the node (and the verifying validator, if any)."""
    REFUNDED = "refunded"
    """Fee returned to the client: fraud confirmed or the node equivocated."""


@dataclass(frozen=True)
class Stake:
    """Tokens bonded in one role; ``slashed_out`` once a slash left less than the minimum."""

    amount: int = 0
    slashed_out: bool = False


@dataclass(frozen=True)
class Account:
    """A public key's free balance and its stake in each role."""

    balance: int = 0
    node: Stake = field(default_factory=Stake)
    validator: Stake = field(default_factory=Stake)

    def stake(self, role: str) -> Stake:
        if role == c.NODE:
            return self.node
        if role == c.VALIDATOR:
            return self.validator
        raise ValueError(f"unknown role {role!r}; roles are {c.ROLES}")

    def with_stake(self, role: str, stake: Stake) -> Account:
        if role == c.NODE:
            return dataclasses.replace(self, node=stake)
        if role == c.VALIDATOR:
            return dataclasses.replace(self, validator=stake)
        raise ValueError(f"unknown role {role!r}; roles are {c.ROLES}")

    @property
    def bonded(self) -> int:
        return self.node.amount + self.validator.amount


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
        )

    def economics(self) -> EconomicParams:
        """The symbols of DESIGN decision 6; S is the slash a confirmed fraud costs."""
        return EconomicParams(
            reward=self.reward,
            compute_cost=self.compute_cost,
            sample_ppm=self.sample_ppm,
            collusion_ppm=self.collusion_ppm,
            slash=self.fraud_slash,
        )


@dataclass(frozen=True)
class Job:
    """A recorded commitment and the escrowed fee it is paid from."""

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
    """The first validator to attest VALID; earns the verification fee at settlement."""
    attestations: tuple[tuple[bytes, Verdict], ...] = ()
    accusers: tuple[bytes, ...] = ()
    open_dispute: bytes | None = None
    equivocated: bool = False

    @property
    def sample_round(self) -> int:
        """The first beacon round after recording: its value decides whether the job is audited."""
        return self.recorded_round + 1

    @property
    def escrow(self) -> int:
        return self.fee if self.status is JobStatus.PENDING else 0


@dataclass(frozen=True)
class Vote:
    validator: bytes
    verdict: Verdict
    attestation_id: bytes


@dataclass(frozen=True)
class Dispute:
    """A MISMATCH accusation and the committee that re-executes the job to decide it."""

    dispute_id: bytes
    """The content id of the evidence that opened it."""
    job_id: bytes
    accuser: bytes
    node: bytes
    opened_round: int
    committee: tuple[bytes, ...]
    votes: tuple[Vote, ...] = ()
    outcome: Verdict | None = None
    """None while open; FRAUD, VALID or INCONCLUSIVE once resolved."""
    closed_round: int | None = None

    @property
    def is_open(self) -> bool:
        return self.outcome is None

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
        return sum(job.escrow for job in self.jobs.values())

    def total_supply(self) -> int:
        """Balances + bonds + escrow + burned; conservation says it always equals ``minted``."""
        held = sum(a.balance + a.bonded for a in self.accounts.values())
        return held + self.escrow() + self.burned

    def copy(self) -> State:
        return State(
            accounts=dict(self.accounts),
            jobs=dict(self.jobs),
            disputes=dict(self.disputes),
            equivocations=set(self.equivocations),
            seen=set(self.seen),
            params=self.params,
            beacon_key=self.beacon_key,
            first_round=self.first_round,
            randomness=list(self.randomness),
            minted=self.minted,
            burned=self.burned,
            counters=dataclasses.replace(self.counters),
        )
