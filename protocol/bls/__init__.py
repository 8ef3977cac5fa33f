"""BLS12-381 signatures for validator attestations and the devnet beacon.

One ciphersuite, the one Ethereum uses: ``BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_``
(draft-irtf-cfrg-bls-signature, minimal-pubkey-size, proof-of-possession
variant). Public keys are compressed G1 points (48 bytes), signatures compressed
G2 points (96 bytes), messages are hashed to G2 per RFC 9380.

Two backends implement the same :class:`BlsBackend` interface and must agree
byte for byte (DESIGN.md, decision 2): ``py_ecc`` is the slow reference,
``arkworks`` the fast default. Signing with a bad key or aggregating nothing
raises :class:`BlsError`; every verify function answers ``False`` for anything
malformed, because verification input comes from peers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

CIPHERSUITE = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_"
"""The domain separation tag for hashing messages to G2 (draft-irtf-cfrg-bls-signature 4.2.3)."""

CURVE_ORDER = 0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001
"""The prime order r of the G1, G2 and GT subgroups; secret keys live in [1, r)."""

PUBLIC_KEY_BYTES = 48
SIGNATURE_BYTES = 96

BACKEND_NAMES = ("arkworks", "py_ecc")
DEFAULT_BACKEND = "arkworks"


class BlsError(ValueError):
    """A BLS operation that cannot produce a value: bad secret key, nothing to aggregate."""


class BlsBackend(Protocol):
    """The IETF BLS operations (draft-irtf-cfrg-bls-signature sections 2 and 3.3)."""

    def sk_to_pk(self, sk: int) -> bytes:
        """SkToPk: the compressed G1 public key of secret key ``sk``."""

    def sign(self, sk: int, msg: bytes) -> bytes:
        """Sign: the compressed G2 signature ``sk * H(msg)``."""

    def verify(self, pk: bytes, msg: bytes, sig: bytes) -> bool:
        """Verify: true only for a valid key and a valid signature on ``msg``."""

    def aggregate(self, sigs: Sequence[bytes]) -> bytes:
        """Aggregate: the sum of the signatures; raises BlsError if any does not decode."""

    def fast_aggregate_verify(self, pks: Sequence[bytes], msg: bytes, sig: bytes) -> bool:
        """FastAggregateVerify: ``sig`` aggregates signatures by all ``pks`` on one ``msg``."""

    def aggregate_verify(self, pks: Sequence[bytes], msgs: Sequence[bytes], sig: bytes) -> bool:
        """AggregateVerify: ``sig`` aggregates signatures by ``pks[i]`` on ``msgs[i]``."""


def check_secret_key(sk: int) -> int:
    """Return ``sk`` if it is a usable secret key, else raise BlsError saying why.

    The message never contains the key itself: a rejected key may still be secret.
    """
    if sk == 0:
        raise BlsError("invalid BLS secret key: it is zero")
    if sk < 0:
        raise BlsError("invalid BLS secret key: it is negative")
    if sk >= CURVE_ORDER:
        raise BlsError("invalid BLS secret key: it is not below the curve order r")
    return sk


def get_backend(name: str | None = None) -> BlsBackend:
    """The backend called ``name``; ``None`` gives the fast default.

    Backends are imported on demand, so a process that never asks for the
    reference implementation never pays for loading it.
    """
    chosen = DEFAULT_BACKEND if name is None else name
    if chosen == "arkworks":
        from protocol.bls.arkworks_backend import ArkworksBackend

        return ArkworksBackend()
    if chosen == "py_ecc":
        from protocol.bls.py_ecc_backend import PyEccBackend

        return PyEccBackend()
    raise BlsError(f"unknown BLS backend {chosen!r}; choose one of {', '.join(BACKEND_NAMES)}")
