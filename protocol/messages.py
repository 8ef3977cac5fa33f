"""The protocol's messages: immutable, typed, canonically encoded, signed.

Every message travels as one canonical msgpack map (see :mod:`protocol.codec`)
holding ``kind``, the schema version ``v``, its fields and ``signature``.
The *body* is that map without ``signature``; a message's content id is
``SHA-256(encode(body))`` and its signature covers the body under the domain
tag ``kind/chain id`` (:meth:`SignedMessage.domain`), so an id never depends
on signature bytes, a signature for one kind is never valid for another, and
a signature made for one network is never valid on another.

Every message names its network's **chain id**, the hash of the ledger's
genesis (``slashing.rules.genesis_chain_id``): a job, commitment,
attestation or piece of evidence signed for one network is refused by every
other, both because its ``chain_id`` field differs and because its signature
was made under another domain. A :class:`JobRequest` also names the node it
is for and the last beacon round in which it may be recorded
(``expiry_round``), so no other node can answer it and it cannot be held back
and recorded later.

    JobRequest   client → node       job_id = JobRequest.content_id
    Commitment   node → ledger       binds job, model, input hash, output hash
    Attestation  validator → ledger  a verdict on one commitment
    Evidence     validator → ledger  a FRAUD claim, self-contained: it embeds
                                     the signed commitment(s) it accuses
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

from protocol import codec
from protocol.codec import Tensor
from protocol.errors import MalformedMessage, ReplayedMessage, UnsupportedVersion
from protocol.hashing import DIGEST_BYTES, sha256
from protocol.keys import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, PublicKey, SigningKey

SCHEMA_VERSION = 2
MAX_TEXT = 512
MAX_AUX_BYTES = 4 * 1024 * 1024
MAX_PARAMS = 64
_UINT64_MAX = 2**64 - 1

ParamValue = int | str | bytes
Params = tuple[tuple[str, ParamValue], ...]


class Verdict(enum.StrEnum):
    """Three-valued verdicts (DESIGN decision 5): only FRAUD can ever slash."""

    VALID = "VALID"
    FRAUD = "FRAUD"
    INCONCLUSIVE = "INCONCLUSIVE"


class Offence(enum.StrEnum):
    MISMATCH = "mismatch"
    """Re-executing the job disagrees with its commitment; a committee re-executes it."""
    EQUIVOCATION = "equivocation"
    INVALID_PROOF = "invalid_proof"
    RECORD = "record"
    """An ``llm`` job of a node whose audited record deviates persistently, whatever the job
    scores alone; a committee re-executes the job and the node's record
    (:mod:`verifier.llm_evidence`)."""


# Field checkers: each returns the value in its Python form or raises MalformedMessage.
Checker = Callable[[str, object], object]


def _digest(name: str, v: object) -> bytes:
    if not isinstance(v, bytes) or len(v) != DIGEST_BYTES:
        raise MalformedMessage(f"field {name!r} must be {DIGEST_BYTES} bytes")
    return v


def _pubkey(name: str, v: object) -> bytes:
    if not isinstance(v, bytes) or len(v) != PUBLIC_KEY_BYTES:
        raise MalformedMessage(f"field {name!r} must be a {PUBLIC_KEY_BYTES}-byte public key")
    return v


def _signature(name: str, v: object) -> bytes:
    if not isinstance(v, bytes) or len(v) not in (0, SIGNATURE_BYTES):
        raise MalformedMessage(f"field {name!r} must be a {SIGNATURE_BYTES}-byte signature")
    return v


def _uint(name: str, v: object) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= _UINT64_MAX:
        raise MalformedMessage(f"field {name!r} must be an unsigned 64-bit integer")
    return v


def _text(name: str, v: object) -> str:
    if not isinstance(v, str) or len(v) > MAX_TEXT:
        raise MalformedMessage(f"field {name!r} must be text of at most {MAX_TEXT} characters")
    return v


def _blob(name: str, v: object) -> bytes:
    if not isinstance(v, bytes) or len(v) > MAX_AUX_BYTES:
        raise MalformedMessage(f"field {name!r} must be at most {MAX_AUX_BYTES} bytes")
    return v


def _digest_or_empty(name: str, v: object) -> bytes:
    if v == b"":
        return b""
    return _digest(name, v)


def _tensor(name: str, v: object) -> Tensor:
    if not isinstance(v, Tensor):
        raise MalformedMessage(f"field {name!r} must be a tensor")
    return v


def _params(name: str, v: object) -> Params:
    if isinstance(v, tuple):
        items = list(v)
    elif isinstance(v, Mapping):
        items = list(v.items())
    else:
        raise MalformedMessage(f"field {name!r} must be a map of parameters")
    if len(items) > MAX_PARAMS:
        raise MalformedMessage(f"field {name!r} has more than {MAX_PARAMS} parameters")
    out: list[tuple[str, ParamValue]] = []
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 2):
            raise MalformedMessage(f"field {name!r} must hold (name, value) pairs")
        key, value = item
        if not isinstance(key, str) or not key or len(key) > 64:
            raise MalformedMessage(f"parameter name {key!r} in {name!r} is not a short string")
        if isinstance(value, bool) or not isinstance(value, (int, str, bytes)):
            raise MalformedMessage(f"parameter {key!r} must be an int, str or bytes")
        if isinstance(value, int):
            _uint(f"{name}.{key}", value)
        out.append((key, value))
    out.sort(key=lambda kv: kv[0].encode("utf-8"))
    if len({k for k, _ in out}) != len(out):
        raise MalformedMessage(f"field {name!r} repeats a parameter name")
    return tuple(out)


def _enum(kind: type[enum.StrEnum]) -> Checker:
    def check(name: str, v: object) -> enum.StrEnum:
        try:
            if not isinstance(v, str):
                raise ValueError(v)
            return kind(v)
        except ValueError as exc:
            raise MalformedMessage(
                f"field {name!r} must be one of {[e.value for e in kind]}, got {v!r}"
            ) from exc

    return check


def _spec(checker: Checker, **kwargs: Any) -> Any:
    return field(metadata={"check": checker}, **kwargs)


M = TypeVar("M", bound="SignedMessage")


def message_domain(kind: str, chain_id: bytes) -> bytes:
    """The domain tag a message of ``kind`` for chain ``chain_id`` is signed under."""
    return f"{kind}/{chain_id.hex()}".encode()


@dataclass(frozen=True)
class SignedMessage:
    """Shared machinery: validation, canonical bytes, ids and signatures."""

    KIND: ClassVar[str]
    SIGNER: ClassVar[str]
    if TYPE_CHECKING:
        chain_id: bytes  # declared by each message: the network it is signed for
        signature: bytes  # declared by each message as its last field

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            checked = f.metadata["check"](f.name, getattr(self, f.name))
            object.__setattr__(self, f.name, checked)

    # -- canonical form ------------------------------------------------------
    def body(self) -> dict[str, object]:
        out: dict[str, object] = {"kind": self.KIND, "v": SCHEMA_VERSION}
        for f in dataclasses.fields(self):
            if f.name == "signature":
                continue
            value = getattr(self, f.name)
            out[f.name] = dict(value) if f.metadata["check"] is _params else value
        return out

    def body_bytes(self) -> bytes:
        return codec.encode(self.body())

    def encode(self) -> bytes:
        return codec.encode({**self.body(), "signature": self.signature_bytes})

    @property
    def signature_bytes(self) -> bytes:
        return self.signature

    @property
    def content_id(self) -> bytes:
        return sha256(self.body_bytes())

    @property
    def signer(self) -> PublicKey:
        return PublicKey(getattr(self, self.SIGNER))

    def domain(self) -> bytes:
        """The signature's domain tag: the kind and the chain id, ``kind/<64 hex digits>``."""
        return message_domain(self.KIND, self.chain_id)

    # -- signatures ------------------------------------------------------------
    def signed(self, key: SigningKey) -> Self:
        if key.public.raw != getattr(self, self.SIGNER):
            raise ValueError(
                f"{self.KIND} names signer {getattr(self, self.SIGNER).hex()[:16]}… "
                f"but the key is {key.public.hex()[:16]}…"
            )
        sig = key.sign(self.domain(), self.body_bytes())
        return dataclasses.replace(self, signature=sig)

    def verify(self) -> Self:
        """Raise :class:`BadSignature` unless the named signer signed this body for its chain."""
        self.signer.verify(self.domain(), self.body_bytes(), self.signature_bytes)
        return self

    # -- decoding --------------------------------------------------------------
    @classmethod
    def from_value(cls, value: object) -> Self:
        if not isinstance(value, dict):
            raise MalformedMessage(f"a {cls.KIND} must be a map, got {type(value).__name__}")
        version = value.get("v")
        if version != SCHEMA_VERSION:
            raise UnsupportedVersion(
                f"{cls.KIND} has schema version {version!r}; this node speaks {SCHEMA_VERSION}"
            )
        if value.get("kind") != cls.KIND:
            raise MalformedMessage(f"expected a {cls.KIND}, got kind {value.get('kind')!r}")
        names = [f.name for f in dataclasses.fields(cls)]
        expected = {"kind", "v", *names}
        missing = expected - value.keys()
        extra = value.keys() - expected
        if missing or extra:
            raise MalformedMessage(
                f"{cls.KIND} fields wrong: missing {sorted(missing)}, unknown {sorted(extra)}"
            )
        kwargs = {n: value[n] for n in names}
        for f in dataclasses.fields(cls):
            if f.metadata["check"] is _params and isinstance(kwargs[f.name], dict):
                kwargs[f.name] = tuple(kwargs[f.name].items())
        return cls(**kwargs)

    @classmethod
    def decode(cls, data: bytes, max_bytes: int = codec.MAX_MESSAGE_BYTES) -> Self:
        return cls.from_value(codec.decode(data, max_bytes))


@dataclass(frozen=True)
class JobRequest(SignedMessage):
    """A client's request: ``node``, run ``model_id`` on ``input`` for ``fee`` tokens.

    Only ``node`` may answer it, and only until the ledger's round passes
    ``expiry_round``.
    """

    KIND: ClassVar[str] = "job_request"
    SIGNER: ClassVar[str] = "client"

    model_id: bytes = _spec(_digest)
    input: Tensor = _spec(_tensor)
    client: bytes = _spec(_pubkey)
    node: bytes = _spec(_pubkey)
    nonce: int = _spec(_uint)
    fee: int = _spec(_uint)
    expiry_round: int = _spec(_uint)
    chain_id: bytes = _spec(_digest)
    params: Params = _spec(_params, default=())
    signature: bytes = _spec(_signature, default=b"")

    @property
    def job_id(self) -> bytes:
        return self.content_id

    def param(self, name: str, default: ParamValue | None = None) -> ParamValue | None:
        return dict(self.params).get(name, default)


@dataclass(frozen=True)
class Commitment(SignedMessage):
    """A node's signed claim: for this job, this model on this input gave this output."""

    KIND: ClassVar[str] = "commitment"
    SIGNER: ClassVar[str] = "node"

    job_id: bytes = _spec(_digest)
    model_id: bytes = _spec(_digest)
    input_hash: bytes = _spec(_digest)
    output_hash: bytes = _spec(_digest)
    node: bytes = _spec(_pubkey)
    chain_id: bytes = _spec(_digest)
    mode: str = _spec(_text, default="exact")
    aux: bytes = _spec(_blob, default=b"")
    signature: bytes = _spec(_signature, default=b"")


@dataclass(frozen=True)
class Attestation(SignedMessage):
    """A validator's signed verdict on one commitment (also a committee vote)."""

    KIND: ClassVar[str] = "attestation"
    SIGNER: ClassVar[str] = "validator"

    job_id: bytes = _spec(_digest)
    commitment_id: bytes = _spec(_digest)
    validator: bytes = _spec(_pubkey)
    verdict: Verdict = _spec(_enum(Verdict))
    beacon_round: int = _spec(_uint)
    chain_id: bytes = _spec(_digest)
    observed_hash: bytes = _spec(_digest_or_empty, default=b"")
    reason: str = _spec(_text, default="")
    signature: bytes = _spec(_signature, default=b"")


@dataclass(frozen=True)
class Evidence(SignedMessage):
    """A signed FRAUD claim that carries the accused commitment(s) with it."""

    KIND: ClassVar[str] = "evidence"
    SIGNER: ClassVar[str] = "accuser"

    offence: Offence = _spec(_enum(Offence))
    job_id: bytes = _spec(_digest)
    accuser: bytes = _spec(_pubkey)
    commitment: bytes = _spec(_blob)
    chain_id: bytes = _spec(_digest)
    conflicting: bytes = _spec(_blob, default=b"")
    observed_hash: bytes = _spec(_digest_or_empty, default=b"")
    beacon_round: int = _spec(_uint, default=0)
    detail: str = _spec(_text, default="")
    signature: bytes = _spec(_signature, default=b"")

    def __post_init__(self) -> None:
        super().__post_init__()
        accused = self.accused()
        if accused.job_id != self.job_id:
            raise MalformedMessage("evidence job_id differs from the accused commitment's job_id")
        if accused.chain_id != self.chain_id:
            raise MalformedMessage("evidence accuses a commitment signed for another chain")
        if self.offence is Offence.EQUIVOCATION:
            other = self.second()
            if other is None:
                raise MalformedMessage("equivocation evidence needs a conflicting commitment")
            if other.chain_id != self.chain_id:
                raise MalformedMessage("equivocation evidence holds a commitment of another chain")
            if other.job_id != self.job_id or other.node != accused.node:
                raise MalformedMessage(
                    "equivocation needs two commitments by one node for one job"
                )
            if other.content_id == accused.content_id:
                raise MalformedMessage("equivocation needs two different commitments")

    def accused(self) -> Commitment:
        return Commitment.decode(self.commitment)

    def second(self) -> Commitment | None:
        return Commitment.decode(self.conflicting) if self.conflicting else None


MESSAGE_TYPES: Mapping[str, type[SignedMessage]] = {
    cls.KIND: cls for cls in (JobRequest, Commitment, Attestation, Evidence)
}


def decode_message(data: bytes, max_bytes: int = codec.MAX_MESSAGE_BYTES) -> SignedMessage:
    """Decode any message by its ``kind``; the size bound is checked first."""
    value = codec.decode(data, max_bytes)
    kind = value.get("kind") if isinstance(value, dict) else None
    if not isinstance(kind, str) or kind not in MESSAGE_TYPES:
        raise MalformedMessage(f"unknown message kind {kind!r}")
    return MESSAGE_TYPES[kind].from_value(value)


class ReplayGuard:
    """Accepts each message (by kind and content id) once; a repeat is a replay."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, bytes]] = set()

    def admit(self, message: SignedMessage) -> None:
        key = (message.KIND, message.content_id)
        if key in self._seen:
            raise ReplayedMessage(
                f"{message.KIND} {message.content_id.hex()[:16]}… was already accepted"
            )
        self._seen.add(key)

    def __contains__(self, message: SignedMessage) -> bool:
        return (message.KIND, message.content_id) in self._seen
