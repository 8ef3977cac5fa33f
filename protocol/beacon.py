"""The public randomness that decides which jobs are audited (DESIGN.md, decision 3).

A job's sample seed is ``H(beacon(R) || job_id || commitment_id)`` with R the
first beacon round after the ledger recorded the commitment. Two sources fit
behind :class:`BeaconSource`:

* :class:`DevnetBeacon`, a chain of unique BLS signatures (a VRF) held by one
  key: round r's signature is ``Sign(sk, "assay/beacon/v1" || r (8 bytes, big
  endian) || signature of round r-1)``, with a fixed 32-byte genesis seed
  standing in for the signature before round 0. Anyone with the public key
  checks a round with :class:`DevnetBeaconVerifier`.
* :class:`DrandQuicknetVerifier`, which checks rounds of drand's quicknet
  (threshold BLS, scheme ``bls-unchained-g1-rfc9380``) offline against the
  chain's published info, so a network can use drand without trusting the relay
  that delivered the rounds.

Either way the randomness of a round is ``sha256(signature)``.

What an adversarial beacon participant can bias
-----------------------------------------------

* **The devnet key holder sees the future.** Each round is a deterministic
  function of the key and the round before, so the holder can compute the chain
  as far ahead as it likes. It must therefore not also run inference nodes:
  knowing which future rounds audit which jobs would let it cheat exactly when
  it will not be sampled. The ledger limits the damage by taking the value of a
  round only after the commitment that uses it is recorded, but it cannot take
  away the holder's foresight.
* **It cannot choose values.** BLS signatures are unique: for a given key and
  message exactly one signature verifies, and the chain fixes every message. The
  holder has no second candidate to pick from, and there is nothing to grind.
* **It can withhold.** Refusing to reveal round R (last-revealer or abort bias)
  turns "this value" into "no value", a binary choice. That is why R is fixed as
  the first round after the commitment is recorded and a missing round makes the
  ledger wait for it rather than skip to R+1: withholding then only stalls the
  network, visibly, instead of swapping in a second value.
* **Nodes cannot grind.** The commitment, and so its id, is fixed and recorded
  before round R exists; a node that re-rolls its commitment only moves itself
  to a later, equally unknown round.
* **drand removes single-holder foresight.** Quicknet's signature needs t of n
  independent operators to cooperate, so no single party can compute a round
  early, and, signatures being unique, fewer than t cannot bias it; t colluders
  can see ahead or halt, but not choose.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from protocol.bls import BlsBackend, get_backend
from protocol.bls.arkworks_backend import verify_g1_signature
from protocol.hashing import sha256

MAX_ROUND = 2**64 - 1
"""Rounds are encoded as 8 unsigned big-endian bytes, in the devnet chain as in drand."""

DEVNET_TAG = b"assay/beacon/v1"
GENESIS_SEED = sha256(b"assay/beacon/v1/genesis")
"""What round 0 of the devnet chain signs in place of a previous signature."""

DRAND_QUICKNET_SCHEME = "bls-unchained-g1-rfc9380"
DRAND_QUICKNET_DST = b"BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_NUL_"


class BeaconNotRevealed(LookupError):
    """The round is not available yet: the devnet has not revealed it, or drand's was not added."""


class BeaconError(ValueError):
    """Beacon input that must be refused: bad chain info, an out-of-order reveal, a forged round."""


@dataclass(frozen=True)
class BeaconRound:
    """One round of a beacon: its number, the signature, and ``sha256(signature)``."""

    round: int
    signature: bytes
    randomness: bytes


class BeaconSource(Protocol):
    """Where the ledger and validators read rounds from, whichever beacon backs them."""

    def get(self, round_number: int, /) -> BeaconRound:
        """Round ``round_number``, or raise BeaconNotRevealed if it is not available yet."""

    def verify(self, beacon_round: BeaconRound, /) -> bool:
        """Whether ``beacon_round`` is the genuine round of this beacon with that number."""


def randomness_of(signature: bytes) -> bytes:
    """The 32 random bytes a round contributes: the hash of its unique signature."""
    return sha256(signature)


def devnet_message(round_number: int, previous_signature: bytes) -> bytes:
    """What the devnet key signs for a round; chaining makes each round need the last."""
    return DEVNET_TAG + round_number.to_bytes(8, "big") + previous_signature


class DevnetBeaconVerifier:
    """Checks devnet rounds with nothing but the beacon's public key."""

    def __init__(
        self,
        public_key: bytes,
        backend: BlsBackend | None = None,
        genesis_seed: bytes = GENESIS_SEED,
    ) -> None:
        self.public_key = public_key
        self.genesis_seed = genesis_seed
        self._bls = backend if backend is not None else get_backend()

    def verify(self, beacon_round: BeaconRound, previous_signature: bytes) -> bool:
        """Whether ``beacon_round`` is the unique successor of ``previous_signature``.

        For round 0, pass :attr:`genesis_seed` as the previous signature.
        """
        if not 0 <= beacon_round.round <= MAX_ROUND:
            return False
        if beacon_round.randomness != randomness_of(beacon_round.signature):
            return False
        message = devnet_message(beacon_round.round, previous_signature)
        return self._bls.verify(self.public_key, message, beacon_round.signature)

    def verify_chain(self, rounds: Sequence[BeaconRound]) -> bool:
        """Whether ``rounds`` are rounds 0, 1, 2, ... of this beacon, each linked to the last."""
        previous = self.genesis_seed
        for expected, beacon_round in enumerate(rounds):
            if beacon_round.round != expected or not self.verify(beacon_round, previous):
                return False
            previous = beacon_round.signature
        return True


class DevnetBeacon:
    """The devnet beacon's key holder: reveals rounds one after another when the ledger asks.

    It never reveals ahead of its caller: the ledger is the clock, and a round
    exists for everyone else only once :meth:`reveal` has been called for it.
    """

    def __init__(
        self,
        secret_key: int,
        backend: BlsBackend | None = None,
        genesis_seed: bytes = GENESIS_SEED,
    ) -> None:
        self._bls = backend if backend is not None else get_backend()
        self._secret_key = secret_key
        self.verifier = DevnetBeaconVerifier(
            self._bls.sk_to_pk(secret_key), self._bls, genesis_seed
        )
        self._revealed: list[BeaconRound] = []

    @property
    def public_key(self) -> bytes:
        return self.verifier.public_key

    @property
    def latest_round(self) -> int | None:
        """The highest revealed round, or None before round 0 is revealed."""
        return len(self._revealed) - 1 if self._revealed else None

    def reveal(self, round_number: int) -> BeaconRound:
        """Reveal the next round (or return an already revealed one).

        Rounds come strictly in order: asking for one beyond the next raises
        BeaconError, so a caller cannot skip a round it found inconvenient.
        """
        if round_number < 0:
            raise BeaconError(f"round numbers are not negative, got {round_number}")
        if round_number < len(self._revealed):
            return self._revealed[round_number]
        if round_number > len(self._revealed):
            raise BeaconError(
                f"cannot reveal round {round_number} before round {len(self._revealed)}; "
                "rounds are revealed in order"
            )
        if round_number > MAX_ROUND:
            raise BeaconError(f"round {round_number} does not fit in 8 bytes")
        previous = self._revealed[-1].signature if self._revealed else self.verifier.genesis_seed
        signature = self._bls.sign(self._secret_key, devnet_message(round_number, previous))
        revealed = BeaconRound(round_number, signature, randomness_of(signature))
        self._revealed.append(revealed)
        return revealed

    def get(self, round_number: int, /) -> BeaconRound:
        if round_number < 0:
            raise BeaconError(f"round numbers are not negative, got {round_number}")
        if round_number >= len(self._revealed):
            raise BeaconNotRevealed(
                f"devnet round {round_number} is not revealed yet "
                f"(latest revealed: {self.latest_round})"
            )
        return self._revealed[round_number]

    def verify(self, beacon_round: BeaconRound, /) -> bool:
        """Check a round against this chain; a round past the next unrevealed one has no link."""
        number = beacon_round.round
        if number == 0:
            previous = self.verifier.genesis_seed
        elif 0 < number <= len(self._revealed):
            previous = self._revealed[number - 1].signature
        else:
            return False
        return self.verifier.verify(beacon_round, previous)


def drand_chain_hash(
    public_key: bytes, genesis_time: int, period: int, genesis_seed: bytes, beacon_id: str
) -> bytes:
    """The chain hash that names a drand network (drand docs/SPECS.md, chain info ``Hash``).

    sha256 of period (uint32, big endian), genesis time (int64, big endian), the
    group public key, the genesis seed (``groupHash``) and, unless it is the
    default beacon, the beacon id.
    """
    preimage = struct.pack(">Iq", period, genesis_time) + public_key + genesis_seed
    if beacon_id not in ("", "default"):
        preimage += beacon_id.encode()
    return sha256(preimage)


def _field(info: Mapping[str, object], *names: str) -> object:
    """The first of ``names`` present: our vectors and drand's /info JSON name keys differently."""
    for name in names:
        if name in info:
            return info[name]
    raise BeaconError(f"drand chain info has no {' or '.join(repr(n) for n in names)}")


def _int_field(info: Mapping[str, object], name: str) -> int:
    value = _field(info, name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BeaconError(f"drand chain info {name!r} must be an integer, got {value!r}")
    return value


def _hex_field(info: Mapping[str, object], *names: str) -> bytes:
    value = _field(info, *names)
    if isinstance(value, str):
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass
    raise BeaconError(f"drand chain info {names[0]!r} must be a hex string, got {value!r}")


class DrandQuicknetVerifier:
    """Checks drand quicknet rounds offline, and serves the ones that passed as a BeaconSource.

    Quicknet signs ``sha256(round as 8 big-endian bytes)`` with threshold BLS on
    the swapped groups: signatures in G1 (48 bytes), the group key in G2 (96
    bytes), hashing to G1 with RFC 9380 under DST
    ``BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_NUL_``. Rounds fetched by any
    channel (an HTTP relay, gossip) are handed to :meth:`add`, which keeps only
    those that verify.
    """

    def __init__(self, public_key: bytes, genesis_time: int, period: int) -> None:
        if period <= 0:
            raise BeaconError(f"drand period must be a positive number of seconds, got {period}")
        self.public_key = public_key
        self.genesis_time = genesis_time
        self.period = period
        self._rounds: dict[int, BeaconRound] = {}

    @classmethod
    def from_chain_info(
        cls, info: Mapping[str, object], beacon_id: str = "quicknet"
    ) -> DrandQuicknetVerifier:
        """Build from chain info; refuse it unless its scheme is quicknet's and it hashes right.

        Checking the hash means a tampered public key, period or genesis time in
        the info is caught, as long as the chain hash came from a trusted place.
        """
        scheme = _field(info, "scheme", "schemeID")
        if scheme != DRAND_QUICKNET_SCHEME:
            raise BeaconError(
                f"drand scheme {scheme!r} is not supported; expected {DRAND_QUICKNET_SCHEME!r}"
            )
        if "dst" in info and info["dst"] != DRAND_QUICKNET_DST.decode():
            raise BeaconError(f"drand DST {info['dst']!r} does not match the quicknet scheme")
        public_key = _hex_field(info, "public_key")
        genesis_time = _int_field(info, "genesis_time")
        period = _int_field(info, "period")
        genesis_seed = _hex_field(info, "group_hash", "groupHash")
        try:
            computed = drand_chain_hash(public_key, genesis_time, period, genesis_seed, beacon_id)
        except struct.error as exc:
            raise BeaconError(f"drand period or genesis time out of range: {exc}") from exc
        claimed = _hex_field(info, "chain_hash", "hash")
        if computed != claimed:
            raise BeaconError(
                f"drand chain info hashes to {computed.hex()}, not its chain hash {claimed.hex()}"
            )
        return cls(public_key, genesis_time, period)

    def verify(self, beacon_round: BeaconRound, /) -> bool:
        """Whether the round has the group's signature on its number and matching randomness."""
        number = beacon_round.round
        if not 1 <= number <= MAX_ROUND:  # drand's first signed round is 1
            return False
        if beacon_round.randomness != randomness_of(beacon_round.signature):
            return False
        message = sha256(number.to_bytes(8, "big"))
        return verify_g1_signature(
            self.public_key, message, beacon_round.signature, DRAND_QUICKNET_DST
        )

    def add(self, beacon_round: BeaconRound) -> None:
        """Keep a round fetched from elsewhere, after checking it."""
        if not self.verify(beacon_round):
            raise BeaconError(
                f"drand round {beacon_round.round} does not verify against the chain's public key"
            )
        self._rounds[beacon_round.round] = beacon_round

    def get(self, round_number: int, /) -> BeaconRound:
        try:
            return self._rounds[round_number]
        except KeyError:
            raise BeaconNotRevealed(f"drand round {round_number} has not been added") from None

    def round_at(self, unix_time: float) -> int:
        """The latest round emitted at ``unix_time``; 0 before genesis, when none exists.

        Round 1 is emitted at genesis and one more every period (drand
        chain/time.go, ``CurrentRound``).
        """
        if unix_time < self.genesis_time:
            return 0
        return int((unix_time - self.genesis_time) // self.period) + 1

    def time_of(self, round_number: int) -> int:
        """When round ``round_number`` (>= 1) is emitted, in unix seconds (``TimeOfRound``)."""
        if round_number < 1:
            raise BeaconError(f"drand rounds start at 1, got {round_number}")
        return self.genesis_time + (round_number - 1) * self.period
