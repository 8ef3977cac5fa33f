"""BLS12-381 points in the EIP-2537 precompiles' uncompressed encoding.

The ledger logs compressed points (48-byte G1, 96-byte G2, the ZCash encoding);
the precompiles take them uncompressed, each coordinate as 64 big-endian bytes.
Decompressing costs a square root, which is cheap here and dear on chain, so
the submitter decompresses and the contract re-compresses to check
(``Bls12381.compressG1``/``compressG2``).
"""

from __future__ import annotations

from eth_typing import BLSPubkey, BLSSignature
from py_ecc.bls.g2_primitives import pubkey_to_G1, signature_to_G2
from py_ecc.optimized_bls12_381.optimized_curve import normalize


def _fp(value: object) -> bytes:
    return int(str(value)).to_bytes(64, "big")


def g1_uncompressed(compressed: bytes) -> bytes:
    """A 48-byte compressed G1 point as x ‖ y (128 bytes); raises ValueError if invalid."""
    if len(compressed) != 48:
        raise ValueError(f"a compressed G1 point is 48 bytes, got {len(compressed)}")
    x, y = normalize(pubkey_to_G1(BLSPubkey(compressed)))
    return _fp(x) + _fp(y)


def g2_uncompressed(compressed: bytes) -> bytes:
    """A 96-byte compressed G2 point as x.c0 ‖ x.c1 ‖ y.c0 ‖ y.c1 (256 bytes)."""
    if len(compressed) != 96:
        raise ValueError(f"a compressed G2 point is 96 bytes, got {len(compressed)}")
    x, y = normalize(signature_to_G2(BLSSignature(compressed)))
    return b"".join(_fp(c) for c in (*x.coeffs, *y.coeffs))
