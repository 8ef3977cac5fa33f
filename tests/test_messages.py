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

CHAIN = b"\x0c" * 32


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
    sig_for_other_domain = key.sign(f"attestation/{c.chain_id.hex()}".encode(), c.body_bytes())
    with pytest.raises(BadSignature, match=f"domain 'commitment/{c.chain_id.hex()}'"):
        dataclasses.replace(c, signature=sig_for_other_domain).verify()


@given(commitments())
def test_a_signature_is_bound_to_its_chain(c: Commitment) -> None:
    """A commitment signed for one network does not verify as another network's."""
    key = next(k for k in KEYS if k.public.raw == c.node)
    elsewhere = bytes(b ^ 0xFF for b in c.chain_id)
    sig_for_other_chain = key.sign(f"commitment/{elsewhere.hex()}".encode(), c.body_bytes())
    with pytest.raises(BadSignature):
        dataclasses.replace(c, signature=sig_for_other_chain).verify()
    moved = dataclasses.replace(c, chain_id=elsewhere)  # the same signature, another chain
    with pytest.raises(BadSignature):
        moved.verify()


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
        chain_id=CHAIN,
    )
    with pytest.raises(ValueError, match="names signer"):
        c.signed(KEYS[1])
    with pytest.raises(BadSignature, match="signature is 0 bytes"):
        c.verify()  # unsigned
    forged = dataclasses.replace(c, signature=KEYS[1].sign(c.domain(), c.body_bytes()))
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
        chain_id=CHAIN,
    ).signed(KEYS[0])
    value = _commitment_value(c)
    with pytest.raises(UnsupportedVersion, match="schema version 1"):
        Commitment.decode(codec.encode({**value, "v": 1}))
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
        chain_id=CHAIN,
    ).signed(node)
    with pytest.raises(MalformedMessage, match="needs a conflicting commitment"):
        Evidence(
            offence=Offence.EQUIVOCATION, job_id=c.job_id, accuser=KEYS[1].public.raw,
            commitment=c.encode(), chain_id=CHAIN,
        )
    with pytest.raises(MalformedMessage, match="two different commitments"):
        Evidence(
            offence=Offence.EQUIVOCATION, job_id=c.job_id, accuser=KEYS[1].public.raw,
            commitment=c.encode(), chain_id=CHAIN, conflicting=c.encode(),
        )
    other = dataclasses.replace(c, output_hash=b"\x05" * 32, chain_id=b"\x09" * 32).signed(node)
    with pytest.raises(MalformedMessage, match="commitment of another chain"):
        Evidence(
            offence=Offence.EQUIVOCATION, job_id=c.job_id, accuser=KEYS[1].public.raw,
            commitment=c.encode(), chain_id=CHAIN, conflicting=other.encode(),
        )
    with pytest.raises(MalformedMessage, match="signed for another chain"):
        Evidence(
            offence=Offence.MISMATCH, job_id=c.job_id, accuser=KEYS[1].public.raw,
            commitment=c.encode(), chain_id=b"\x09" * 32,
        )


def test_every_kind_is_registered() -> None:
    assert set(MESSAGE_TYPES) == {"job_request", "commitment", "attestation", "evidence"}


def test_derived_keys_are_stable_and_distinct() -> None:
    assert SigningKey.derive("a").public == SigningKey.derive("a").public
    assert SigningKey.derive("a").public != SigningKey.derive("b").public
