"""The ledger's events: what the log records, one frozen dataclass per kind.

Each event encodes canonically (:mod:`protocol.codec`) as one map
``{"type": ..., "v": ..., fields...}``; its bytes are what the event log
hashes and stores. Decoding checks the size bound first, then every field,
and raises :class:`MalformedMessage` naming the event type and field that is
wrong. Events that carry protocol messages keep them as their signed,
canonical bytes (what was received is what is logged) and decode them at
construction, so a malformed embedded message is a malformed event.
Signatures are not checked here: whether an event is allowed is a ledger
rule (:mod:`slashing.rules`). Each event lists the signature checks the rule
will make (:meth:`Event.signature_checks`), so the store can run them ahead,
in parallel, for a batch.

Account transactions (``Bond``, ``Unbond``, ``Withdraw``, ``ReportUnavailable``)
may be signed by their account with a per-account ``nonce`` and the network's
``chain_id``, like an Ethereum transaction (EIP-155): the signature covers the
event's canonical map without its ``signature`` under the domain
``ledger_<type>/<chain id>``, the chain id must be the ledger's, and the nonce
must be the account's next. An unsigned ``Bond``, ``Unbond`` or ``Withdraw`` (nonce 0) is the
operator's event, as ``Mint`` is: the ledger service decides who may send
those, and accepts only signed ones from anyone else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, Self, TypeVar

import msgpack

from protocol import codec
from protocol.errors import MalformedMessage, ProtocolError, UnsupportedVersion
from protocol.hashing import DIGEST_BYTES, sha256
from protocol.keys import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, SigningKey
from protocol.messages import Attestation, Commitment, Evidence, JobRequest, SignedMessage
from slashing import constants as c
from slashing.state import LedgerParams

_UINT64_MAX = 2**64 - 1

Checker = Callable[[str, str, object], None]
"""(event type, field name, value) → None, or raise MalformedMessage."""

SignatureCheck = tuple[bytes, bytes, bytes, bytes]
"""(signer's public key, domain tag, payload, signature): one Ed25519 check a rule makes."""


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


def _signature(event: str, name: str, v: object) -> None:
    if not isinstance(v, bytes) or len(v) not in (0, SIGNATURE_BYTES):
        raise MalformedMessage(
            f"{event}.{name} must be empty (unsigned) or a {SIGNATURE_BYTES}-byte signature"
        )


def _chain(event: str, name: str, v: object) -> None:
    if not isinstance(v, bytes) or len(v) not in (0, DIGEST_BYTES):
        raise MalformedMessage(
            f"{event}.{name} must be empty (the operator's) or a {DIGEST_BYTES}-byte chain id"
        )


def _salt(event: str, name: str, v: object) -> None:
    if not isinstance(v, bytes) or not 1 <= len(v) <= c.MAX_CANARY_SALT:
        raise MalformedMessage(f"{event}.{name} must be 1..{c.MAX_CANARY_SALT} bytes")


def _blob(event: str, name: str, v: object) -> None:
    if not isinstance(v, bytes):
        raise MalformedMessage(f"{event}.{name} must be bytes, got {type(v).__name__}")


def _bounded_blob(limit: int) -> Checker:
    def check(event: str, name: str, v: object) -> None:
        if not isinstance(v, bytes) or not 1 <= len(v) <= limit:
            raise MalformedMessage(f"{event}.{name} must be 1..{limit} bytes")

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


def body_of_canonical(data: bytes) -> bytes:
    """The body bytes of a signed message from its canonical encoding, without re-normalising.

    A canonical message is a map with sorted keys and minimal encodings, so
    dropping its ``signature`` entry and packing the rest in the same order
    gives exactly ``message.body_bytes()`` — with msgpack's C code instead of
    :func:`protocol.codec.encode`'s Python walk. Only for bytes that decoded as a
    message (which checked they are canonical).
    """
    value = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    body = msgpack.packb(
        {k: v for k, v in value.items() if k != "signature"}, use_bin_type=True
    )
    assert isinstance(body, bytes)
    return body


@dataclass(frozen=True)
class Sealed:
    """An embedded message with its body bytes and content id, each computed once."""

    message: SignedMessage
    body: bytes
    content_id: bytes

    @classmethod
    def of(cls, message: SignedMessage, data: bytes) -> Sealed:
        """``message`` as decoded from the canonical bytes ``data``."""
        body = body_of_canonical(data)
        return cls(message, body, sha256(body))

    def check(self) -> SignatureCheck:
        """The signature check that proves the named signer signed this body."""
        signer = getattr(self.message, self.message.SIGNER)
        return (signer, self.message.domain(), self.body, self.message.signature_bytes)


def _embedded(kind: type[M], event: str, name: str, data: bytes) -> M:
    try:
        return kind.decode(data, max_bytes=codec.MAX_MESSAGE_BYTES)
    except ProtocolError as exc:
        raise MalformedMessage(f"{event}.{name} is not a well-formed {kind.KIND}: {exc}") from exc


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type[Event]) -> tuple[str, ...]:
    """An event type's field names, looked up once (``dataclasses.fields`` is slow)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


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

    def signature_checks(self) -> tuple[SignatureCheck, ...]:
        """Every signature check the event's rule makes on a valid event."""
        return ()

    def to_fields(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in _field_names(type(self))}

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> Self:
        return cls(**fields)

    def encode(self) -> bytes:
        """The canonical bytes; computed once (and known already for a decoded event)."""
        data = self.__dict__.get("_canonical")
        if data is None:
            fields = self.to_fields()
            data = codec.encode({"type": self.TYPE, "v": c.EVENT_SCHEMA_VERSION, **fields})
            self.__dict__["_canonical"] = data
        assert isinstance(data, bytes)
        return data

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
        event = cls.from_value(codec.decode(data, max_bytes=c.MAX_EVENT_BYTES))
        event.__dict__["_canonical"] = bytes(data)  # decode checked it is canonical
        return event


@dataclass(frozen=True)
class Mint(Event):
    """Genesis/admin: create ``amount`` tokens in ``account``'s balance."""

    TYPE: ClassVar[str] = "mint"

    account: bytes = _spec(_account)
    amount: int = _spec(_amount)

    def parties(self) -> tuple[bytes, ...]:
        return (self.account,)


@dataclass(frozen=True)
class AccountTx(Event):
    """An event an account may sign, with its next nonce and the chain id it is for;
    unsigned (nonce 0, no chain id) from the operator."""

    SIGNER: ClassVar[str] = "account"
    SIGNATURE_REQUIRED: ClassVar[bool] = False

    nonce: int = field(default=0, kw_only=True, metadata={"check": _round})
    chain_id: bytes = field(default=b"", kw_only=True, metadata={"check": _chain})
    signature: bytes = field(default=b"", kw_only=True, metadata={"check": _signature})

    @property
    def signer(self) -> bytes:
        value = getattr(self, self.SIGNER)
        assert isinstance(value, bytes)
        return value

    @property
    def is_signed(self) -> bool:
        return bool(self.signature)

    def domain(self) -> bytes:
        """``ledger_<type>/<chain id hex>``: a signature for one network is void on another."""
        return f"{c.ACCOUNT_TX_TAG_PREFIX}{self.TYPE}/{self.chain_id.hex()}".encode()

    def body_bytes(self) -> bytes:
        """What the signature covers: the canonical event map without ``signature``."""
        fields = {k: v for k, v in self.to_fields().items() if k != "signature"}
        return codec.encode({"type": self.TYPE, "v": c.EVENT_SCHEMA_VERSION, **fields})

    def signed(self, key: SigningKey) -> Self:
        """This transaction signed by ``key``, which must be the signer's."""
        if key.public.raw != self.signer:
            raise ValueError(f"{self.TYPE} is signed by its {self.SIGNER}, not by this key")
        signature = key.sign(self.domain(), self.body_bytes())
        return dataclasses.replace(self, signature=signature)

    def signature_checks(self) -> tuple[SignatureCheck, ...]:
        if not self.is_signed:
            return ()
        return ((self.signer, self.domain(), self.body_bytes(), self.signature),)


@dataclass(frozen=True)
class Bond(AccountTx):
    """Move ``amount`` from ``account``'s balance into its stake for ``role``."""

    TYPE: ClassVar[str] = "bond"

    account: bytes = _spec(_account)
    role: str = _spec(_role)
    amount: int = _spec(_amount)

    def parties(self) -> tuple[bytes, ...]:
        return (self.account,)


@dataclass(frozen=True)
class Unbond(AccountTx):
    """Start moving ``amount`` of ``role`` stake out; ``Withdraw`` after the unbonding period.

    The stake stays slashable for offences committed up to this round (Cosmos
    unbonding delegations).
    """

    TYPE: ClassVar[str] = "unbond"

    account: bytes = _spec(_account)
    role: str = _spec(_role)
    amount: int = _spec(_amount)

    def parties(self) -> tuple[bytes, ...]:
        return (self.account,)


@dataclass(frozen=True)
class Withdraw(AccountTx):
    """Move every unbonding entry whose period is over to ``account``'s balance."""

    TYPE: ClassVar[str] = "withdraw"

    account: bytes = _spec(_account)

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
    """A client's signed request and the node's signed commitment to it, as received.

    ``stamp_round`` is the beacon round the ledger's operator stamps the job
    with, when it is later than the log's latest round: with drand, whose
    rounds are public the moment drand publishes them, the operator stamps a
    job with the round drand is at by the clock (:meth:`protocol.beacon.
    DrandQuicknetVerifier.round_at`), so a node never sees its job's sample
    round before the job is recorded, however far the log lags. 0 stamps the
    log's latest round (the devnet beacon, which the ledger itself reveals).
    """

    TYPE: ClassVar[str] = "record_job"

    request: bytes = _spec(_message_bytes)
    commitment: bytes = _spec(_message_bytes)
    stamp_round: int = _spec(_round, default=0)

    @cached_property
    def request_message(self) -> JobRequest:
        return _embedded(JobRequest, self.TYPE, "request", self.request)

    @cached_property
    def commitment_message(self) -> Commitment:
        return _embedded(Commitment, self.TYPE, "commitment", self.commitment)

    @cached_property
    def sealed_request(self) -> Sealed:
        return Sealed.of(self.request_message, self.request)

    @cached_property
    def sealed_commitment(self) -> Sealed:
        return Sealed.of(self.commitment_message, self.commitment)

    @property
    def job_id(self) -> bytes:
        return self.sealed_request.content_id

    def embedded(self) -> tuple[SignedMessage, ...]:
        return (self.request_message, self.commitment_message)

    def parties(self) -> tuple[bytes, ...]:
        return (self.request_message.client, self.commitment_message.node)

    def signature_checks(self) -> tuple[SignatureCheck, ...]:
        return (self.sealed_request.check(), self.sealed_commitment.check())


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

    @cached_property
    def sealed_attestation(self) -> Sealed:
        return Sealed.of(self.attestation_message, self.attestation)

    def embedded(self) -> tuple[SignedMessage, ...]:
        return (self.attestation_message,)

    def parties(self) -> tuple[bytes, ...]:
        return (self.attestation_message.validator,)

    def signature_checks(self) -> tuple[SignatureCheck, ...]:
        return (self.sealed_attestation.check(),)


@dataclass(frozen=True)
class Accuse(Event):
    """Signed evidence of an offence: equivocation (self-contained) or a mismatch (disputed).

    ``INVALID_PROOF`` evidence comes as :class:`AccuseInvalidProof`, with the job's request.
    """

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

    @cached_property
    def sealed_evidence(self) -> Sealed:
        return Sealed.of(self.evidence_message, self.evidence)

    @cached_property
    def sealed_accused(self) -> Sealed:
        return Sealed.of(self.accused_commitment, self.evidence_message.commitment)

    @cached_property
    def sealed_conflicting(self) -> Sealed | None:
        second = self.conflicting_commitment
        if second is None:
            return None
        return Sealed.of(second, self.evidence_message.conflicting)

    def embedded(self) -> tuple[SignedMessage, ...]:
        return (self.evidence_message,)

    def parties(self) -> tuple[bytes, ...]:
        return (self.evidence_message.accuser, self.accused_commitment.node)

    def signature_checks(self) -> tuple[SignatureCheck, ...]:
        sealed = [self.sealed_evidence, self.sealed_accused, self.sealed_conflicting]
        return tuple(s.check() for s in sealed if s is not None)


@dataclass(frozen=True)
class AccuseInvalidProof(Accuse):
    """Signed ``INVALID_PROOF`` evidence on a zk job, with the job's request to re-check it.

    Self-contained: the evidence carries the node's signed commitment (and so
    its proof), the request is authenticated by its content id (the job id),
    and the ledger holds the model's verifying key, so the rule re-checks the
    proof itself and needs no committee.
    """

    TYPE: ClassVar[str] = "accuse_invalid_proof"

    request: bytes = _spec(_message_bytes)

    @cached_property
    def request_message(self) -> JobRequest:
        return _embedded(JobRequest, self.TYPE, "request", self.request)

    @cached_property
    def sealed_request(self) -> Sealed:
        return Sealed.of(self.request_message, self.request)

    def embedded(self) -> tuple[SignedMessage, ...]:
        return (self.evidence_message, self.request_message)


@dataclass(frozen=True)
class RegisterZkModel(Event):
    """Operator: a model is in the zk mode; its verifying key and settings go on the log.

    Logged in full (they are what re-checks a proof, so whoever replays the
    log must hold them); the SRS is named by its SHA-256 and fetched by it.
    """

    TYPE: ClassVar[str] = "register_zk_model"

    model_id: bytes = _spec(_sized((DIGEST_BYTES,)))
    verifying_key: bytes = _spec(_bounded_blob(c.MAX_ZK_KEY_BYTES))
    settings: bytes = _spec(_bounded_blob(c.MAX_ZK_SETTINGS_BYTES))
    srs_sha256: bytes = _spec(_sized((DIGEST_BYTES,)))


@dataclass(frozen=True)
class ReportUnavailable(AccountTx):
    """A validator's signed report that a sampled job's node did not serve its output.

    Opens an availability challenge: the node (or anyone holding the output)
    answers with ``ServeData`` within the availability window, or the node is
    slashed as if caught. Always signed: a report is the reporter's claim.
    """

    TYPE: ClassVar[str] = "report_unavailable"
    SIGNER: ClassVar[str] = "reporter"
    SIGNATURE_REQUIRED: ClassVar[bool] = True

    reporter: bytes = _spec(_account)
    job_id: bytes = _spec(_sized((DIGEST_BYTES,)))

    def parties(self) -> tuple[bytes, ...]:
        return (self.reporter,)


@dataclass(frozen=True)
class ServeData(Event):
    """A reported job's output, posted to the log where every validator can read it.

    Needs no signature: the output must hash to the committed ``output_hash``
    (the canonical bytes of the output tensor, in the ``exact`` mode), so
    whoever holds it may post it.
    """

    TYPE: ClassVar[str] = "serve_data"

    job_id: bytes = _spec(_sized((DIGEST_BYTES,)))
    output: bytes = _spec(_blob)


@dataclass(frozen=True)
class PlantCanary(Event):
    """Operator: commit to a canary job before recording it, as ``sha256(tag ‖ salt ‖ job_id)``.

    A canary is an ordinary ``RecordJob`` whose committed output the operator
    knows is wrong (Truebit's forced errors); only this hiding commitment says
    so, and only its ``RevealCanary`` after the job is final tells anyone which
    job it was.
    """

    TYPE: ClassVar[str] = "plant_canary"

    digest: bytes = _spec(_sized((DIGEST_BYTES,)))


@dataclass(frozen=True)
class RevealCanary(Event):
    """Operator: open a canary commitment; every validator that called the job VALID is slashed."""

    TYPE: ClassVar[str] = "reveal_canary"

    job_id: bytes = _spec(_sized((DIGEST_BYTES,)))
    salt: bytes = _spec(_salt)


def canary_digest(salt: bytes, job_id: bytes) -> bytes:
    """The commitment a ``PlantCanary`` carries for a canary job."""
    return sha256(c.CANARY_TAG + salt + job_id)


EVENT_TYPES: Mapping[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (
        Mint,
        Bond,
        RegisterBeacon,
        SetParams,
        RecordJob,
        BeaconRound,
        Attest,
        Accuse,
        Unbond,
        Withdraw,
        ReportUnavailable,
        ServeData,
        PlantCanary,
        RevealCanary,
        RegisterZkModel,
        AccuseInvalidProof,
    )
}


def decode_event(data: bytes) -> Event:
    """Decode any event by its ``type``; the size bound is checked before anything else."""
    value = codec.decode(data, max_bytes=c.MAX_EVENT_BYTES)
    kind = value.get("type") if isinstance(value, dict) else None
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        raise MalformedMessage(f"unknown event type {kind!r}; known: {sorted(EVENT_TYPES)}")
    event = EVENT_TYPES[kind].from_value(value)
    event.__dict__["_canonical"] = bytes(data)  # codec.decode checked it is canonical
    return event
