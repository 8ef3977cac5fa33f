"""The fast BLS backend: the IETF scheme on top of arkworks' BLS12-381 groups.

py-arkworks-bls12381 gives group arithmetic, RFC 9380 hash-to-curve and
pairings; the scheme itself (draft-irtf-cfrg-bls-signature sections 2 and 3.3,
proof-of-possession variant) is written out here so that each check the draft
asks for is visible.

Decoding is stricter than arkworks alone: arkworks accepts some non-canonical
encodings of the point at infinity (flag bits or x-coordinate bytes that the
ZCash serialization forbids), so every decoded point must re-encode to exactly
the input bytes. That keeps this backend's accept/reject decisions identical to
py_ecc's.
"""

from __future__ import annotations

from collections.abc import Sequence

from py_arkworks_bls12381 import GT, G1Point, G2Point, Scalar

from protocol.bls import CIPHERSUITE, BlsError, check_secret_key

_G1_GENERATOR = G1Point()
_NEG_G1_GENERATOR = -G1Point()
_G2_GENERATOR = G2Point()
_SCALAR_BYTES = 32
_G1_BYTES = 48  # compressed G1 (ZCash serialization)
_G2_BYTES = 96  # compressed G2


def _scalar(sk: int) -> Scalar:
    """A checked secret key as a field scalar; ``from_be_bytes`` refuses values >= r."""
    return Scalar.from_be_bytes(check_secret_key(sk).to_bytes(_SCALAR_BYTES, "big"))


def _decode_g1(data: bytes) -> G1Point | None:
    """A canonical, subgroup-checked G1 point, or None."""
    if len(data) != _G1_BYTES:
        return None
    try:
        point = G1Point.from_compressed_bytes(data)
    except ValueError:
        return None
    return point if point.to_compressed_bytes() == data else None


def _decode_g2(data: bytes, *, subgroup_check: bool) -> G2Point | None:
    """A canonical G2 point on the curve (and in the subgroup when asked), or None."""
    if len(data) != _G2_BYTES:
        return None
    try:
        if subgroup_check:
            point = G2Point.from_compressed_bytes(data)
        else:
            point = G2Point.from_compressed_bytes_unchecked(data)
    except ValueError:
        return None
    return point if point.to_compressed_bytes() == data else None


def _key_validate(pk: bytes) -> G1Point | None:
    """KeyValidate (draft section 2.5): decodes, is in the subgroup, is not the identity."""
    point = _decode_g1(pk)
    if point is None or point == G1Point.identity():
        return None
    return point


def _hash_to_g2(msg: bytes) -> G2Point:
    return G2Point.hash_to_curve(msg, CIPHERSUITE)


class ArkworksBackend:
    """BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_ on arkworks, about 300x faster than py_ecc."""

    def sk_to_pk(self, sk: int) -> bytes:
        return (_G1_GENERATOR * _scalar(sk)).to_compressed_bytes()

    def sign(self, sk: int, msg: bytes) -> bytes:
        return (_hash_to_g2(msg) * _scalar(sk)).to_compressed_bytes()

    def verify(self, pk: bytes, msg: bytes, sig: bytes) -> bool:
        pk_point = _key_validate(pk)
        if pk_point is None:
            return False
        return _core_verify(pk_point, msg, sig)

    def aggregate(self, sigs: Sequence[bytes]) -> bytes:
        # Draft section 2.8 only decodes here; subgroup checks belong to verification.
        if len(sigs) == 0:
            raise BlsError("cannot aggregate an empty list of signatures")
        total = G2Point.identity()
        for index, sig in enumerate(sigs):
            point = _decode_g2(sig, subgroup_check=False)
            if point is None:
                raise BlsError(f"signature {index} is not a valid compressed G2 point")
            total = total + point
        return total.to_compressed_bytes()

    def fast_aggregate_verify(self, pks: Sequence[bytes], msg: bytes, sig: bytes) -> bool:
        # Draft section 3.3.4; the POP variant requires every key to pass KeyValidate.
        if len(pks) == 0:
            return False
        total = G1Point.identity()
        for pk in pks:
            point = _key_validate(pk)
            if point is None:
                return False
            total = total + point
        # CoreVerify's KeyValidate on the aggregate: keys summing to the identity fail.
        if total == G1Point.identity():
            return False
        return _core_verify(total, msg, sig)

    def aggregate_verify(self, pks: Sequence[bytes], msgs: Sequence[bytes], sig: bytes) -> bool:
        # Draft section 2.9 (CoreAggregateVerify); POP needs no distinct-message rule.
        if len(pks) == 0 or len(pks) != len(msgs):
            return False
        sig_point = _decode_g2(sig, subgroup_check=True)
        if sig_point is None:
            return False
        g1s: list[G1Point] = []
        g2s: list[G2Point] = []
        for pk, msg in zip(pks, msgs, strict=True):
            point = _key_validate(pk)
            if point is None:
                return False
            g1s.append(point)
            g2s.append(_hash_to_g2(msg))
        # prod e(PK_i, H(m_i)) * e(-g1, sig) == 1
        g1s.append(_NEG_G1_GENERATOR)
        g2s.append(sig_point)
        return GT.pairing_check(g1s, g2s)


def _core_verify(pk_point: G1Point, msg: bytes, sig: bytes) -> bool:
    """CoreVerify (draft section 2.7) for an already validated key: e(PK, H(m)) == e(g1, sig)."""
    sig_point = _decode_g2(sig, subgroup_check=True)
    if sig_point is None:
        return False
    return GT.pairing_check([pk_point, _NEG_G1_GENERATOR], [_hash_to_g2(msg), sig_point])


def verify_g1_signature(pk: bytes, msg: bytes, sig: bytes, dst: bytes) -> bool:
    """CoreVerify with the groups swapped: signatures in G1, keys in G2 (minimal-signature-size).

    This is the variant drand's ``bls-unchained-g1-rfc9380`` scheme uses; it
    checks e(sig, g2) == e(H(m), PK) with H hashing to G1 under ``dst``.
    """
    pk_point = _decode_g2(pk, subgroup_check=True)
    sig_point = _decode_g1(sig)
    if pk_point is None or pk_point == G2Point.identity() or sig_point is None:
        return False
    hashed = G1Point.hash_to_curve(msg, dst)
    return GT.pairing_check([sig_point, -hashed], [_G2_GENERATOR, pk_point])
