"""What each gossip topic accepts, checked before a message is relayed or used.

Gossiped commitments, attestations and evidence are the signed protocol
messages' own canonical bytes; a commitment batch is a list of such bytes; a
beacon round is a small map. Each check
decodes with the size bound first, validates the schema, verifies the
signature, requires that the libp2p publisher is the message's signer (so a
peer cannot relay a message under someone else's name into our counts), that
the message names this network's chain id, and asks the ledger's last status
whether the signer is staked in the role it speaks for. Any failure raises
a :class:`ProtocolError` whose type is the drop reason counted in the
metrics.
"""

from __future__ import annotations

from typing import Any

from protocol import codec
from protocol.errors import MalformedMessage
from protocol.hashing import sha256
from protocol.messages import Attestation, Commitment, Evidence, SignedMessage
from protocol.net import wire
from protocol.net.gossip import OtherNetwork, UnknownSender, Validate
from protocol.net.ledger_client import LedgerClient


def _signed_by(signer: bytes, sender: bytes, staked: frozenset[bytes], role: str) -> None:
    if signer != sender:
        raise UnknownSender(f"{role} message signed by another key than its publisher's")
    if signer not in staked:
        raise UnknownSender(f"publisher {signer.hex()[:16]}… is not a staked {role}")


def _on_chain(message: SignedMessage, ledger: LedgerClient) -> None:
    if ledger.chain_id and message.chain_id != ledger.chain_id:
        raise OtherNetwork(
            f"{message.KIND} is signed for chain {message.chain_id.hex()[:16]}…, this network is "
            f"{ledger.chain_id.hex()[:16]}…"
        )


def commitments(ledger: LedgerClient) -> Validate:
    def check(data: bytes, sender: bytes) -> Commitment:
        commitment = Commitment.decode(data, wire.MAX_GOSSIP_BYTES).verify()
        _on_chain(commitment, ledger)
        _signed_by(commitment.node, sender, ledger.nodes, "node")
        return commitment

    return check


def commitment_batches(ledger: LedgerClient) -> Validate:
    """A batch is accepted whole or not at all: one bad commitment refuses it."""
    single = commitments(ledger)

    def check(data: bytes, sender: bytes) -> tuple[Commitment, ...]:
        items = codec.decode(data, wire.MAX_GOSSIP_BYTES)
        if not isinstance(items, list) or not 1 <= len(items) <= wire.MAX_BATCH:
            raise MalformedMessage(f"a commitment batch is a list of 1..{wire.MAX_BATCH}")
        if not all(isinstance(item, bytes) for item in items):
            raise MalformedMessage("a commitment batch holds encoded commitments")
        return tuple(single(item, sender) for item in items)

    return check


def attestations(ledger: LedgerClient) -> Validate:
    def check(data: bytes, sender: bytes) -> Attestation:
        attestation = Attestation.decode(data, wire.MAX_GOSSIP_BYTES).verify()
        _on_chain(attestation, ledger)
        _signed_by(attestation.validator, sender, ledger.validators, "validator")
        return attestation

    return check


def evidence(ledger: LedgerClient) -> Validate:
    def check(data: bytes, sender: bytes) -> Evidence:
        accusation = Evidence.decode(data, wire.MAX_GOSSIP_BYTES).verify()
        _on_chain(accusation, ledger)
        _signed_by(accusation.accuser, sender, ledger.validators, "validator")
        return accusation

    return check


def beacon_rounds(ledger: LedgerClient) -> Validate:
    """Rounds come from the ledger's key; the BLS chain is checked by whoever uses them."""

    def check(data: bytes, sender: bytes) -> dict[str, Any]:
        if sender != ledger.key:
            raise UnknownSender("beacon rounds are published by the ledger only")
        value = wire.decode_map(data, wire.MAX_GOSSIP_BYTES)
        number, signature, randomness = (value.get(k) for k in ("round", "signature", "randomness"))
        if set(value) != {"round", "signature", "randomness"} or not isinstance(number, int):
            raise MalformedMessage("a beacon round is {round, signature, randomness}")
        if not isinstance(signature, bytes) or len(signature) != 96:
            raise MalformedMessage("a devnet beacon signature is 96 bytes")
        if randomness != sha256(signature):
            raise MalformedMessage("beacon randomness is not sha256(signature)")
        return value

    return check
