"""The reference BLS backend: py_ecc's ``G2ProofOfPossession``.

py_ecc is what the Ethereum consensus-spec generator used to produce the BLS
test vectors, so it is the yardstick the fast backend is held to. It is pure
Python and slow (a pairing takes about half a second); use it to cross-check,
not on a hot path.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from eth_typing import BLSPubkey, BLSSignature
from eth_utils.exceptions import ValidationError

_RECURSION_LIMIT = sys.getrecursionlimit()
from py_ecc.bls.ciphersuites import G2ProofOfPossession  # noqa: E402

# Importing py_ecc raises the interpreter's recursion limit to 100,000 for the
# whole process, which lets hostile nested input overflow the C stack instead
# of raising RecursionError; BLS never needs it, so the limit is put back.
sys.setrecursionlimit(_RECURSION_LIMIT)

from protocol.bls import BlsError, check_secret_key  # noqa: E402


class PyEccBackend:
    """BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_ exactly as py_ecc implements it."""

    def sk_to_pk(self, sk: int) -> bytes:
        return bytes(G2ProofOfPossession.SkToPk(check_secret_key(sk)))

    def sign(self, sk: int, msg: bytes) -> bytes:
        return bytes(G2ProofOfPossession.Sign(check_secret_key(sk), msg))

    def verify(self, pk: bytes, msg: bytes, sig: bytes) -> bool:
        return G2ProofOfPossession.Verify(BLSPubkey(pk), msg, BLSSignature(sig))

    def aggregate(self, sigs: Sequence[bytes]) -> bytes:
        if len(sigs) == 0:
            raise BlsError("cannot aggregate an empty list of signatures")
        try:
            return bytes(G2ProofOfPossession.Aggregate([BLSSignature(sig) for sig in sigs]))
        except (ValidationError, ValueError, AssertionError) as exc:
            raise BlsError(f"a signature is not a valid compressed G2 point: {exc}") from exc

    def fast_aggregate_verify(self, pks: Sequence[bytes], msg: bytes, sig: bytes) -> bool:
        return G2ProofOfPossession.FastAggregateVerify(
            [BLSPubkey(pk) for pk in pks], msg, BLSSignature(sig)
        )

    def aggregate_verify(self, pks: Sequence[bytes], msgs: Sequence[bytes], sig: bytes) -> bool:
        return G2ProofOfPossession.AggregateVerify(
            [BLSPubkey(pk) for pk in pks], list(msgs), BLSSignature(sig)
        )
