"""Messages: canonical, signed, domain-separated, replay-protected."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import codec
from protocol.errors import (
    BadSignature,
    MalformedMessage,
    OversizedMessage,
    ProtocolError,
    ReplayedMessage,
    UnsupportedVersion,
)
from protocol.keys import SigningKey
from protocol.messages import (
    MESSAGE_TYPES,
    Commitment,
    Evidence,
    Offence,
    ReplayGuard,
    SignedMessage,
    decode_message,
)
from tests.strategies import KEYS, any_message, commitments


@given(any_message)
def test_every_message_round_trips_canonically(msg: SignedMessage) -> None:
    data = msg.encode()
    back = type(msg).decode(data)
    assert back == msg
    assert back.encode() == data
    assert decode_message(data) == msg
    assert back.verify() == msg


@given(any_message, st.data())
@settings(max_examples=200)
def test_any_single_byte_change_fails(msg: SignedMessage, data: st.DataObject) -> None:
    raw = bytearray(msg.encode())
    i = data.draw(st.integers(0, len(raw) - 1), label="index")
    delta = data.draw(st.integers(1, 255), label="xor")
    raw[i] ^= delta
    with pytest.raises(ProtocolError):
        decode_message(bytes(raw)).verify()


@given(commitments())
def test_a_signature_is_bound_to_its_domain(c: Commitment) -> None:
    key = next(k for k in KEYS if k.public.raw == c.node)
    sig_for_other_domain = key.sign(b"attestation", c.body_bytes())
    with pytest.raises(BadSignature, match="domain 'commitment'"):
        dataclasses.replace(c, signature=sig_for_other_domain).verify()


@given(commitments())
def test_content_id_ignores_signature_and_tracks_body(c: Commitment) -> None:
    assert c.content_id == dataclasses.replace(c, signature=b"").content_id
    changed = dataclasses.replace(c, output_hash=bytes(32 * [c.output_hash[0] ^ 1]))
    assert changed.content_id != c.content_id


@given(commitments())
def test_a_replayed_commitment_is_rejected(c: Commitment) -> None:
    guard = ReplayGuard()
    guard.admit(c)
    with pytest.raises(ReplayedMessage, match="already accepted"):
        guard.admit(Commitment.decode(c.encode()))


def test_signing_with_the_wrong_key_is_refused() -> None:
    c = Commitment(
        job_id=b"\x01" * 32,
        model_id=b"\x02" * 32,
        input_hash=b"\x03" * 32,
        output_hash=b"\x04" * 32,
        node=KEYS[0].public.raw,
    )
    with pytest.raises(ValueError, match="names signer"):
        c.signed(KEYS[1])
    with pytest.raises(BadSignature, match="signature is 0 bytes"):
        c.verify()  # unsigned
    forged = dataclasses.replace(c, signature=KEYS[1].sign(b"commitment", c.body_bytes()))
    with pytest.raises(BadSignature, match="does not verify"):
        forged.verify()


def _commitment_value(c: Commitment) -> dict[str, object]:
    value = codec.decode(c.encode())
    assert isinstance(value, dict)
    return value


def test_schema_errors_name_the_field() -> None:
    c = Commitment(
        job_id=b"\x01" * 32,
        model_id=b"\x02" * 32,
        input_hash=b"\x03" * 32,
        output_hash=b"\x04" * 32,
        node=KEYS[0].public.raw,
    ).signed(KEYS[0])
    value = _commitment_value(c)
    with pytest.raises(UnsupportedVersion, match="schema version 2"):
        Commitment.decode(codec.encode({**value, "v": 2}))
    with pytest.raises(MalformedMessage, match="'job_id' must be 32 bytes"):
        Commitment.decode(codec.encode({**value, "job_id": b"short"}))
    with pytest.raises(MalformedMessage, match=r"missing \['output_hash'\]"):
        Commitment.decode(codec.encode({k: v for k, v in value.items() if k != "output_hash"}))
    with pytest.raises(MalformedMessage, match=r"unknown \['extra'\]"):
        Commitment.decode(codec.encode({**value, "extra": 1}))
    with pytest.raises(MalformedMessage, match="expected a commitment"):
        Commitment.decode(codec.encode({**value, "kind": "attestation"}))
    with pytest.raises(MalformedMessage, match="unknown message kind 'nope'"):
        decode_message(codec.encode({**value, "kind": "nope"}))
    with pytest.raises(MalformedMessage, match="must be a map"):
        Commitment.decode(codec.encode([1, 2]))
    with pytest.raises(OversizedMessage):
        Commitment.decode(c.encode(), max_bytes=64)


def test_equivocation_evidence_needs_two_different_commitments() -> None:
    node = KEYS[0]
    c = Commitment(
        job_id=b"\x01" * 32,
        model_id=b"\x02" * 32,
        input_hash=b"\x03" * 32,
        output_hash=b"\x04" * 32,
        node=node.public.raw,
    ).signed(node)
    with pytest.raises(MalformedMessage, match="needs a conflicting commitment"):
        Evidence(
            offence=Offence.EQUIVOCATION, job_id=c.job_id, accuser=KEYS[1].public.raw,
            commitment=c.encode(),
        )
    with pytest.raises(MalformedMessage, match="two different commitments"):
        Evidence(
            offence=Offence.EQUIVOCATION, job_id=c.job_id, accuser=KEYS[1].public.raw,
            commitment=c.encode(), conflicting=c.encode(),
        )


def test_every_kind_is_registered() -> None:
    assert set(MESSAGE_TYPES) == {"job_request", "commitment", "attestation", "evidence"}


def test_derived_keys_are_stable_and_distinct() -> None:
    assert SigningKey.derive("a").public == SigningKey.derive("a").public
    assert SigningKey.derive("a").public != SigningKey.derive("b").public
