"""A stand-in beacon: a SHA-256 chain of 96-byte "signatures".

The ledger's ``BeaconRound`` rule checks only that a round arrives in order
and that its randomness is ``sha256(signature)``; the BLS signature itself
is checked by the ledger service before it appends the event
(:mod:`slashing.events`). netsim skips BLS (a pairing per round would
dominate small runs) and chains ``signature(r) = H(tag ‖ seed ‖ r ‖ signature(r-1))``
expanded to 96 bytes, whose SHA-256 is the round's randomness exactly as the
rule demands. Both protocol paths read the same values.
"""

from __future__ import annotations

from protocol.hashing import sha256

TAG = b"netsim/beacon/v1\x00"
PUBLIC_KEY_BYTES = 48


class ChainBeacon:
    def __init__(self, seed: int) -> None:
        self.seed = seed.to_bytes(8, "big")
        self._signatures: list[bytes] = []

    @property
    def public_key(self) -> bytes:
        """Registered at genesis; nothing verifies against it (see the module docstring)."""
        key = sha256(TAG + b"key" + self.seed)
        return (key + sha256(key))[:PUBLIC_KEY_BYTES]

    def signature(self, round_number: int) -> bytes:
        while len(self._signatures) <= round_number:
            r = len(self._signatures)
            previous = self._signatures[-1] if self._signatures else b""
            head = sha256(TAG + self.seed + r.to_bytes(8, "big") + previous)
            self._signatures.append(head + sha256(head + b"\x01") + sha256(head + b"\x02"))
        return self._signatures[round_number]

    def value(self, round_number: int) -> bytes:
        """The round's randomness, ``sha256(signature)``."""
        return sha256(self.signature(round_number))
