"""Ed25519 identities and domain-separated signatures (DESIGN decision 2).

A node's Ed25519 key is both its network identity and the key that signs its
messages. Every signature covers ``DOMAIN_PREFIX ‖ tag ‖ 0x00 ‖ payload`` so a
signature made for one kind of message can never be replayed as another kind
(a commitment signature is useless as an attestation, and vice versa).

Signatures are verified with libsodium (through PyNaCl) and nothing else, so
every verifier in the network accepts exactly the same signatures.
libsodium's check is strict: besides the RFC 8032 equation it refuses a
non-canonical ``S`` (``S ≥ L``), a small-order ``R``, and a public key that is
non-canonical or of small order (``crypto_sign_ed25519_verify_detached`` in
libsodium's ``crypto_sign/ed25519/ref10/open.c``). Keys and signatures made
by :class:`SigningKey` always pass; signing stays with ``cryptography``, whose
Ed25519 signatures are deterministic and so byte-for-byte the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from nacl.exceptions import BadSignatureError as SodiumBadSignature
from nacl.signing import VerifyKey

from protocol.errors import BadSignature, MalformedMessage
from protocol.hashing import sha256

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
SEED_BYTES = 32
DOMAIN_PREFIX = b"assay/v1/"
VERIFY_KEYS_CACHED = 4_096
"""Verify-key objects kept, most recently used first (a ledger sees few distinct signers)."""


def signing_bytes(tag: bytes, payload: bytes) -> bytes:
    """The exact bytes a signature with domain ``tag`` covers."""
    if not tag or b"\x00" in tag:
        raise ValueError(f"domain tag {tag!r} must be non-empty and contain no NUL byte")
    return DOMAIN_PREFIX + tag + b"\x00" + payload


@lru_cache(maxsize=VERIFY_KEYS_CACHED)
def _verify_key(raw: bytes) -> VerifyKey:
    return VerifyKey(raw)


@dataclass(frozen=True)
class PublicKey:
    """A 32-byte Ed25519 public key; also a node's id on the network."""

    raw: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != PUBLIC_KEY_BYTES:
            raise MalformedMessage(
                f"an Ed25519 public key is {PUBLIC_KEY_BYTES} bytes, got {len(self.raw)}"
            )

    def verify(self, tag: bytes, payload: bytes, signature: bytes) -> None:
        """Raise :class:`BadSignature` unless ``signature`` is ours over (tag, payload)."""
        if len(signature) != SIGNATURE_BYTES:
            raise BadSignature(
                f"signature is {len(signature)} bytes; Ed25519 signatures are {SIGNATURE_BYTES}"
            )
        try:
            _verify_key(self.raw).verify(signing_bytes(tag, payload), bytes(signature))
        except (SodiumBadSignature, ValueError, TypeError) as exc:
            raise BadSignature(
                f"signature does not verify for key {self.raw.hex()[:16]}… "
                f"under domain {tag.decode(errors='replace')!r}"
            ) from exc

    def hex(self) -> str:
        return self.raw.hex()


class SigningKey:
    """An Ed25519 private key. Construct from a 32-byte seed or generate one."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = PublicKey(
            private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        )

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
            raise ValueError(f"an Ed25519 seed is {SEED_BYTES} bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def derive(cls, label: str) -> SigningKey:
        """A deterministic key for devnets and tests; never for real stake."""
        return cls.from_seed(sha256(b"assay/devnet-key/" + label.encode("utf-8")))

    def seed(self) -> bytes:
        return self._private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    def sign(self, tag: bytes, payload: bytes) -> bytes:
        return self._private.sign(signing_bytes(tag, payload))

    def __repr__(self) -> str:
        return f"SigningKey(public={self.public.hex()[:16]}…)"
