"""Peer ids are Ed25519 keys: the same key signs messages and names the libp2p peer."""

from __future__ import annotations

from libp2p.crypto.ed25519 import Ed25519PublicKey
from libp2p.peer.id import ID

from protocol.errors import MalformedMessage


def peer_id_of(public_key: bytes) -> ID:
    """The libp2p peer id of an Ed25519 public key (an identity multihash)."""
    return ID.from_pubkey(Ed25519PublicKey.from_bytes(public_key))


def public_key_of(peer: ID) -> bytes:
    """The 32-byte Ed25519 key inside a peer id; refuses peers with other key types."""
    key = peer.extract_public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise MalformedMessage(f"peer {peer} does not carry an Ed25519 key")
    return key.to_bytes()


def peer_address(host: str, port: int, public_key: bytes) -> str:
    """``/ip4/<host>/tcp/<port>/p2p/<peer id>``: how configs name a peer to dial."""
    return f"/ip4/{host}/tcp/{port}/p2p/{peer_id_of(public_key).to_base58()}"
