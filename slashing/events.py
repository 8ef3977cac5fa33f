"""The ledger's events: what the log records, one frozen dataclass per kind.

Each event encodes canonically (:mod:`assay.codec`) as one map
``{"type": ..., "v": ..., fields...}``; its bytes are what the event log
hashes and stores. Decoding checks the size bound first, then every field,
and raises :class:`MalformedMessage` naming the event type and field that is
wrong. Events that carry protocol messages keep them as their signed,
canonical bytes (what was received is what is logged) and decode them at
construction, so a malformed embedded message is a malformed event.
Signatures are not checked here: whether an event is allowed is a ledger
rule (:mod:`slashing.rules`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, Self, TypeVar

from assay import codec
from assay.errors import MalformedMessage, ProtocolError, UnsupportedVersion
from assay.hashing import DIGEST_BYTES
from assay.keys import PUBLIC_KEY_BYTES
from assay.messages import Attestation, Commitment, Evidence, JobRequest, SignedMessage
from slashing import constants as c
from slashing.state import LedgerParams

_UINT64_MAX = 2**64 - 1

Checker = Callable[[str, str, object], None]
"""(event type, field name, value) → None, or raise MalformedMessage."""


def _account(event: str, name: str, v: object) -> None:
    if not isinstance(v, bytes) or len(v) != PUBLIC_KEY_BYTES:
        raise MalformedMessage(
            f"{event}.{name} must be a {PUBLIC_KEY_BYTES}-byte public key, got {v!r:.80}"
        )


def _amount(event: str, name: str, v: object) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= _UINT64_MAX:
        raise MalformedMessage(f"{event}.{name} must be a positive 64-bit integer, got {v!r}")


def _round(event: str, name: str, v: object) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= _UINT64_MAX:
        raise MalformedMessage(f"{event}.{name} must be an unsigned 64-bit integer, got {v!r}")


def _role(event: str, name: str, v: object) -> None:
    if v not in c.ROLES:
        raise MalformedMessage(f"{event}.{name} must be one of {list(c.ROLES)}, got {v!r:.80}")


def _sized(sizes: tuple[int, ...]) -> Checker:
    def check(event: str, name: str, v: object) -> None:
        if not isinstance(v, bytes) or len(v) not in sizes:
            got = f"{len(v)} bytes" if isinstance(v, bytes) else type(v).__name__
            allowed = " or ".join(map(str, sizes))
            raise MalformedMessage(f"{event}.{name} must be {allowed} bytes, got {got}")

    return check


def _message_bytes(event: str, name: str, v: object) -> None:
    if not isinstance(v, bytes) or not v:
        raise MalformedMessage(f"{event}.{name} must be the bytes of a signed message")


def _params(event: str, name: str, v: object) -> None:
    if not isinstance(v, LedgerParams):
        raise MalformedMessage(f"{event}.{name} must be LedgerParams, got {type(v).__name__}")


def _spec(check: Checker, **kwargs: Any) -> Any:
    return field(metadata={"check": check}, **kwargs)


M = TypeVar("M", bound=SignedMessage)


def _embedded(kind: type[M], event: str, name: str, data: bytes) -> M:
    try:
        return kind.decode(data, max_bytes=codec.MAX_MESSAGE_BYTES)
    except ProtocolError as exc:
        raise MalformedMessage(f"{event}.{name} is not a well-formed {kind.KIND}: {exc}") from exc


@dataclass(frozen=True)
class Event:
    """Shared machinery: field checks and the canonical ``{"type", "v", fields}`` map."""

    TYPE: ClassVar[str]

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            f.metadata["check"](self.TYPE, f.name, getattr(self, f.name))
        self.embedded()

    def embedded(self) -> tuple[SignedMessage, ...]:
        """The protocol messages this event carries, decoded (and cached)."""
        return ()

    def parties(self) -> tuple[bytes, ...]:
        """Accounts the event names directly (its account history lists it)."""
        return ()

    def to_fields(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> Self:
        return cls(**fields)

    def encode(self) -> bytes:
        return codec.encode({"type": self.TYPE, "v": c.EVENT_SCHEMA_VERSION, **self.to_fields()})

    @classmethod
    def from_value(cls, value: object) -> Self:
        if not isinstance(value, dict):
            raise MalformedMessage(f"an event must be a map, got {type(value).__name__}")
        if value.get("type") != cls.TYPE:
            raise MalformedMessage(f"expected a {cls.TYPE} event, got type {value.get('type')!r}")
        if value.get("v") != c.EVENT_SCHEMA_VERSION:
            raise UnsupportedVersion(
                f"{cls.TYPE} event has schema version {value.get('v')!r}; "
                f"this ledger reads {c.EVENT_SCHEMA_VERSION}"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        missing = names - value.keys()
        extra = value.keys() - names - {"type", "v"}
        if missing or extra:
            raise MalformedMessage(
                f"{cls.TYPE} event fields wrong: missing {sorted(missing)}, unknown {sorted(extra)}"
            )
        return cls.from_fields({n: value[n] for n in names})

    @classmethod
    def decode(cls, data: bytes) -> Self:
        return cls.from_value(codec.decode(data, max_bytes=c.MAX_EVENT_BYTES))


@dataclass(frozen=True)
class Mint(Event):
    """Genesis/admin: create ``amount`` tokens in ``account``'s balance."""

    TYPE: ClassVar[str] = "mint"

    account: bytes = _spec(_account)
    amount: int = _spec(_amount)

    def parties(self) -> tuple[bytes, ...]:
        return (self.account,)


@dataclass(frozen=True)
class Bond(Event):
    """Move ``amount`` from ``account``'s balance into its stake for ``role``."""

    TYPE: ClassVar[str] = "bond"

    account: bytes = _spec(_account)
    role: str = _spec(_role)
    amount: int = _spec(_amount)

    def parties(self) -> tuple[bytes, ...]:
        return (self.account,)


@dataclass(frozen=True)
class RegisterBeacon(Event):
    """Genesis: the beacon's BLS public key and the first round the ledger accepts.

    ``first_round`` is 0 for the devnet chain and the round the network starts
    at for drand (whose rounds begin at 1 and run on without us).
    """

    TYPE: ClassVar[str] = "register_beacon"

    public_key: bytes = _spec(_sized(c.BEACON_KEY_SIZES))
    first_round: int = _spec(_round, default=0)


@dataclass(frozen=True)
class SetParams(Event):
    """Genesis: the network's parameters, checked for economic safety by the rule."""

    TYPE: ClassVar[str] = "set_params"

    params: LedgerParams = field(metadata={"check": _params})

    def to_fields(self) -> dict[str, object]:
        return {"params": dataclasses.asdict(self.params)}

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> Self:
        raw = fields["params"]
        if not isinstance(raw, dict):
            raise MalformedMessage(f"{cls.TYPE}.params must be a map, got {type(raw).__name__}")
        names = {f.name for f in dataclasses.fields(LedgerParams)}
        missing = names - raw.keys()
        extra = raw.keys() - names
        if missing or extra:
            raise MalformedMessage(
                f"{cls.TYPE}.params wrong: missing {sorted(missing)}, unknown {sorted(extra)}"
            )
        return cls(params=LedgerParams(**raw))


@dataclass(frozen=True)
class RecordJob(Event):
    """A client's signed request and the node's signed commitment to it, as received."""

    TYPE: ClassVar[str] = "record_job"

    request: bytes = _spec(_message_bytes)
    commitment: bytes = _spec(_message_bytes)

    @cached_property
    def request_message(self) -> JobRequest:
        return _embedded(JobRequest, self.TYPE, "request", self.request)

    @cached_property
    def commitment_message(self) -> Commitment:
        return _embedded(Commitment, self.TYPE, "commitment", self.commitment)

    def embedded(self) -> tuple[SignedMessage, ...]:
        return (self.request_message, self.commitment_message)

    def parties(self) -> tuple[bytes, ...]:
        return (self.request_message.client, self.commitment_message.node)


@dataclass(frozen=True)
class BeaconRound(Event):
    """A revealed beacon round; the service has checked the BLS signature before appending."""

    TYPE: ClassVar[str] = "beacon_round"

    round: int = _spec(_round)
    signature: bytes = _spec(_sized(c.BEACON_SIGNATURE_SIZES))
    randomness: bytes = _spec(_sized((DIGEST_BYTES,)))


@dataclass(frozen=True)
class Attest(Event):
    """A validator's signed attestation: an audit verdict, or a vote in a dispute."""

    TYPE: ClassVar[str] = "attest"

    attestation: bytes = _spec(_message_bytes)

    @cached_property
    def attestation_message(self) -> Attestation:
        return _embedded(Attestation, self.TYPE, "attestation", self.attestation)

    def embedded(self) -> tuple[SignedMessage, ...]:
        return (self.attestation_message,)

    def parties(self) -> tuple[bytes, ...]:
        return (self.attestation_message.validator,)


@dataclass(frozen=True)
class Accuse(Event):
    """Signed evidence of an offence: equivocation (self-contained) or a mismatch (disputed)."""

    TYPE: ClassVar[str] = "accuse"

    evidence: bytes = _spec(_message_bytes)

    @cached_property
    def evidence_message(self) -> Evidence:
        return _embedded(Evidence, self.TYPE, "evidence", self.evidence)

    @cached_property
    def accused_commitment(self) -> Commitment:
        return self.evidence_message.accused()

    @cached_property
    def conflicting_commitment(self) -> Commitment | None:
        return self.evidence_message.second()

    def embedded(self) -> tuple[SignedMessage, ...]:
        return (self.evidence_message,)

    def parties(self) -> tuple[bytes, ...]:
        return (self.evidence_message.accuser, self.accused_commitment.node)


EVENT_TYPES: Mapping[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (Mint, Bond, RegisterBeacon, SetParams, RecordJob, BeaconRound, Attest, Accuse)
}


def decode_event(data: bytes) -> Event:
    """Decode any event by its ``type``; the size bound is checked before anything else."""
    value = codec.decode(data, max_bytes=c.MAX_EVENT_BYTES)
    kind = value.get("type") if isinstance(value, dict) else None
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        raise MalformedMessage(f"unknown event type {kind!r}; known: {sorted(EVENT_TYPES)}")
    return EVENT_TYPES[kind].from_value(value)
