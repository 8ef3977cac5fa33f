"""The ledger service's answers as typed records, each checked field by field when it arrives.

A service never indexes a reply map: it asks :class:`~protocol.net.ledger_client.LedgerClient`
for one of these, and a reply that lacks a field or holds the wrong type is a
:class:`~protocol.errors.MalformedMessage` naming the query and the field. The
ledger is the one peer every role trusts to order events, not to send
well-formed bytes: a bug or a proxy between them must cost one request,
never a service.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from protocol.errors import MalformedMessage
from protocol.net.schema import (
    blob,
    boolean,
    digest,
    digest_or_empty,
    get,
    get_optional,
    items,
    sized,
    text,
    uint,
)
from protocol.sampling import RECORD_JOBS

MAX_LISTED = 100_000
"""Most keys a reply may list (staked nodes, validators, committee members)."""


def _round(where: str, value: object) -> int:
    """A round number, or -1 before the ledger's first beacon round."""
    if value == -1 and not isinstance(value, bool):
        return -1
    return uint(where, value)


def _keys(where: str, value: object) -> list[bytes]:
    return items(digest, MAX_LISTED)(where, value)


@dataclass(frozen=True)
class Status:
    round: int
    beacon_key: bytes
    chain_id: bytes
    """The network's id, which every signed message and account transaction names (empty
    before the genesis)."""
    audit_window: int
    """Rounds an assigned auditor has to answer..."""
    vote_window: int
    """...and a committee to vote, before the silent pay the liveness penalty."""
    sample_ppm: int
    committee_size: int
    challenge_window: int
    availability_window: int
    unbonding_period: int
    verification_fee: int
    reward: int
    min_node_stake: int
    min_validator_stake: int
    nodes: frozenset[bytes]
    validators: frozenset[bytes]
    length: int

    @classmethod
    def parse(cls, reply: Mapping[str, Any]) -> Status:
        w = "ledger status"
        return cls(
            round=get(reply, "round", _round, w), beacon_key=get(reply, "beacon_key", blob, w),
            chain_id=get(reply, "chain_id", digest_or_empty, w),
            audit_window=get(reply, "audit_window", uint, w),
            vote_window=get(reply, "vote_window", uint, w),
            sample_ppm=get(reply, "sample_ppm", uint, w),
            committee_size=get(reply, "committee_size", uint, w),
            challenge_window=get(reply, "challenge_window", uint, w),
            availability_window=get(reply, "availability_window", uint, w),
            unbonding_period=get(reply, "unbonding_period", uint, w),
            verification_fee=get(reply, "verification_fee", uint, w),
            reward=get(reply, "reward", uint, w),
            min_node_stake=get(reply, "min_node_stake", uint, w),
            min_validator_stake=get(reply, "min_validator_stake", uint, w),
            nodes=frozenset(get(reply, "nodes", _keys, w)),
            validators=frozenset(get(reply, "validators", _keys, w)),
            length=get(reply, "length", uint, w),
        )


@dataclass(frozen=True)
class JobInfo:
    """A recorded job as the ledger's state holds it (``found`` False: not recorded)."""

    found: bool
    node: bytes = b""
    commitment_id: bytes = b""
    recorded_round: int = 0
    sample_round: int = 0
    status: str = ""
    open_dispute: bytes = b""
    attested_by: tuple[bytes, ...] = ()
    zk: bool = False
    sampled: bool = False
    auditor: bytes = b""
    """The validator whose audit the ledger awaits (empty: none)."""
    assigned_round: int = 0
    """The round whose beacon value drew that auditor."""
    window_end: int = 0
    """The last round in which the job may be accused or reported."""
    reported: bool = False
    """Its output was reported unavailable (``report_unavailable``)..."""
    reported_round: int = 0
    """...in this round."""
    served: bool = False
    """Its output was posted on the log (``ServeData``)."""

    @property
    def pending(self) -> bool:
        return self.status == "pending"

    @classmethod
    def parse(cls, reply: Mapping[str, Any]) -> JobInfo:
        w = "ledger job"
        if not get(reply, "found", boolean, w):
            return cls(found=False)
        return cls(
            found=True, node=get(reply, "node", digest, w),
            commitment_id=get(reply, "commitment_id", digest, w),
            recorded_round=get(reply, "recorded_round", _round, w),
            sample_round=get(reply, "sample_round", uint, w),
            status=get(reply, "status", text, w),
            open_dispute=get(reply, "open_dispute", digest_or_empty, w),
            attested_by=tuple(get(reply, "attested_by", _keys, w)),
            zk=get(reply, "zk", boolean, w), sampled=get(reply, "sampled", boolean, w),
            auditor=get(reply, "auditor", digest_or_empty, w),
            assigned_round=get(reply, "assigned_round", uint, w),
            window_end=get(reply, "window_end", uint, w),
            reported=get(reply, "reported", boolean, w),
            reported_round=get(reply, "reported_round", uint, w),
            served=get(reply, "served", boolean, w),
        )


@dataclass(frozen=True)
class JobData:
    """What the ledger's log holds for a job: the signed request and commitment, as recorded,
    and the output if it was posted (``ServeData``) after a report."""

    found: bool
    request: bytes = b""
    commitment: bytes = b""
    output: bytes | None = None
    pending: bool = True
    """False for a settled or refunded job the ledger keeps for records: audit it no more."""

    @classmethod
    def parse(cls, reply: Mapping[str, Any]) -> JobData:
        w = "ledger job_data"
        if not get(reply, "found", boolean, w):
            return cls(found=False)
        return cls(found=True, request=get(reply, "request", blob, w),
                   commitment=get(reply, "commitment", blob, w),
                   output=get_optional(reply, "output", blob, w),
                   pending=get_optional(reply, "pending", boolean, w) is not False)


@dataclass(frozen=True)
class Unbonding:
    role: str
    amount: int
    release_round: int


@dataclass(frozen=True)
class RoleStanding:
    stake: int
    slashed_out: bool
    jailed_until: int
    offences: int


@dataclass(frozen=True)
class AccountInfo:
    found: bool
    round: int = 0
    balance: int = 0
    nonce: int = 0
    node: RoleStanding = RoleStanding(0, False, 0, 0)
    validator: RoleStanding = RoleStanding(0, False, 0, 0)
    unbonding: tuple[Unbonding, ...] = ()

    def standing(self, role: str) -> RoleStanding:
        return self.node if role == "node" else self.validator

    def jailed(self, role: str) -> bool:
        return self.standing(role).jailed_until > self.round

    @classmethod
    def parse(cls, reply: Mapping[str, Any]) -> AccountInfo:
        w = "ledger account"
        if not get(reply, "found", boolean, w):
            return cls(found=False, round=get(reply, "round", _round, w))

        def role(prefix: str) -> RoleStanding:
            return RoleStanding(
                stake=get(reply, f"{prefix}_stake", uint, w),
                slashed_out=get(reply, f"{prefix}_slashed_out", boolean, w),
                jailed_until=get(reply, f"{prefix}_jailed_until", uint, w),
                offences=get(reply, f"{prefix}_offences", uint, w),
            )

        def entry(where: str, value: object) -> Unbonding:
            if not isinstance(value, Mapping):
                raise MalformedMessage(f"{where} must be a map")
            return Unbonding(get(value, "role", text, where), get(value, "amount", uint, where),
                             get(value, "release_round", uint, where))

        return cls(
            found=True, round=get(reply, "round", _round, w),
            balance=get(reply, "balance", uint, w), nonce=get(reply, "nonce", uint, w),
            node=role("node"), validator=role("validator"),
            unbonding=tuple(get(reply, "unbonding", items(entry, 64), w)),
        )


@dataclass(frozen=True)
class DisputeInfo:
    """A job's dispute as the ledger's state holds it (``found`` False: no such dispute)."""

    found: bool
    job_id: bytes = b""
    accusers: tuple[bytes, ...] = ()
    committee: tuple[bytes, ...] = ()
    drawn_round: int = 0
    """The round whose value drew the current committee (0 while none is drawn)."""
    open: bool = False
    outcome: str = ""
    voted: tuple[bytes, ...] = ()
    on_record: bool = False
    """Opened by ``RECORD`` evidence: members judge the job with the node's record."""

    @classmethod
    def parse(cls, reply: Mapping[str, Any]) -> DisputeInfo:
        w = "ledger dispute"
        if not get(reply, "found", boolean, w):
            return cls(found=False)
        return cls(
            found=True, job_id=get(reply, "job_id", digest, w),
            accusers=tuple(get(reply, "accusers", _keys, w)),
            committee=tuple(get(reply, "committee", _keys, w)),
            drawn_round=get(reply, "drawn_round", uint, w), open=get(reply, "open", boolean, w),
            outcome=get(reply, "outcome", text, w), voted=tuple(get(reply, "voted", _keys, w)),
            on_record=get_optional(reply, "on_record", boolean, w) or False,
        )


@dataclass(frozen=True)
class Duty:
    """An audit or a committee vote the ledger awaits from a validator."""

    job_id: bytes
    commitment: bytes
    """The job's signed commitment, as the ledger recorded it."""
    round: int
    """The round whose beacon value drew this validator: its attestation names it."""
    dispute_id: bytes = b""
    """For a vote, the dispute; empty for an audit."""


MAX_DUTIES = 1_024


def parse_duties(reply: Mapping[str, Any]) -> tuple[list[Duty], list[Duty]]:
    """(audits, votes) the ledger awaits from the asking validator."""
    w = "ledger duties"

    def duties(vote: bool) -> Callable[[str, object], list[Duty]]:
        def one(where: str, value: object) -> Duty:
            if not isinstance(value, Mapping):
                raise MalformedMessage(f"{where} must be a map")
            return Duty(
                job_id=get(value, "job_id", digest, where),
                commitment=get(value, "commitment", blob, where),
                round=get(value, "round", uint, where),
                dispute_id=get(value, "dispute_id", digest, where) if vote else b"",
            )
        return items(one, MAX_DUTIES)

    return get(reply, "audits", duties(False), w), get(reply, "votes", duties(True), w)


@dataclass(frozen=True)
class Offence:
    """One offence the ledger holds against an account, with the evidence that proved it."""

    kind: str
    role: str
    job_id: bytes
    evidence: bytes
    """The evidence (dispute) id, or empty when the offence has none (unavailability)."""

    @classmethod
    def parse_list(cls, reply: Mapping[str, Any]) -> list[Offence]:
        w = "ledger offences"

        def one(where: str, value: object) -> Offence:
            if not isinstance(value, Mapping):
                raise MalformedMessage(f"{where} must be a map")
            return cls(get(value, "kind", text, where), get(value, "role", text, where),
                       get(value, "job_id", digest, where),
                       get(value, "evidence", digest_or_empty, where))

        return get(reply, "offences", items(one, MAX_LISTED), w)


def parse_record(reply: Mapping[str, Any]) -> list[bytes]:
    """The ids of a job's record (:func:`slashing.rules.record_of`), oldest first; empty for a
    job the ledger does not know. A record longer than ``RECORD_JOBS`` is refused."""
    jobs = get(reply, "jobs", items(digest, RECORD_JOBS), "ledger record")
    if len(set(jobs)) != len(jobs):
        raise MalformedMessage("ledger record: a job is listed twice")
    return jobs


def parse_payable(reply: Mapping[str, Any]) -> tuple[bool, str]:
    w = "ledger can_pay"
    return get(reply, "payable", boolean, w), get(reply, "reason", text, w)


def parse_beacon(reply: Mapping[str, Any]) -> tuple[bytes, bytes] | None:
    """A revealed round's (signature, randomness), or None when it is not revealed."""
    w = "ledger beacon"
    if not get(reply, "found", boolean, w):
        return None
    return get(reply, "signature", blob, w), get(reply, "randomness", sized(32), w)


def parse_challenges(reply: Mapping[str, Any]) -> list[bytes]:
    return get(reply, "jobs", items(digest, MAX_LISTED), "ledger open_challenges")

