"""The beacons: real drand quicknet rounds verified offline, and the devnet signature chain."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from eth_typing import BLSPubkey, BLSSignature
from hypothesis import given, settings
from hypothesis import strategies as st
from py_arkworks_bls12381 import G1Point
from py_ecc.bls.g2_primitives import G1_to_pubkey, pubkey_to_G1, signature_to_G2
from py_ecc.bls.hash_to_curve import hash_to_G1
from py_ecc.fields import optimized_bls12_381_FQ12 as FQ12
from py_ecc.optimized_bls12_381.optimized_curve import G2, neg
from py_ecc.optimized_bls12_381.optimized_pairing import final_exponentiate, pairing

from protocol.beacon import (
    DRAND_QUICKNET_DST,
    GENESIS_SEED,
    BeaconError,
    BeaconNotRevealed,
    BeaconRound,
    BeaconSource,
    DevnetBeacon,
    DevnetBeaconVerifier,
    DrandQuicknetVerifier,
    devnet_message,
)
from protocol.bls import CURVE_ORDER, get_backend
from protocol.hashing import sha256

QUICKNET_FILE = Path(__file__).resolve().parent / "vectors" / "drand-quicknet.json"
QUICKNET: dict[str, Any] = json.loads(QUICKNET_FILE.read_text())
QUICKNET_ROUNDS = [
    BeaconRound(
        round=entry["round"],
        signature=bytes.fromhex(entry["signature"]),
        randomness=bytes.fromhex(entry["randomness"]),
    )
    for entry in QUICKNET["rounds"]
]
ROUND_IDS = [f"round-{r.round}" for r in QUICKNET_ROUNDS]

DEVNET_KEY = int.from_bytes(sha256(b"assay test devnet key"), "big") % CURVE_ORDER


@pytest.fixture(scope="module")
def quicknet() -> DrandQuicknetVerifier:
    return DrandQuicknetVerifier.from_chain_info(QUICKNET)


def _flip_last_bit(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


# drand quicknet


def test_quicknet_file_has_the_rounds_we_rely_on() -> None:
    assert len(QUICKNET_ROUNDS) == 7
    assert {1, 2, 3} <= {r.round for r in QUICKNET_ROUNDS}


@pytest.mark.parametrize("beacon_round", QUICKNET_ROUNDS, ids=ROUND_IDS)
def test_quicknet_round_verifies(
    quicknet: DrandQuicknetVerifier, beacon_round: BeaconRound
) -> None:
    assert quicknet.verify(beacon_round)
    assert beacon_round.randomness == sha256(beacon_round.signature)


@pytest.mark.parametrize("beacon_round", QUICKNET_ROUNDS, ids=ROUND_IDS)
def test_quicknet_tampered_signature_fails(
    quicknet: DrandQuicknetVerifier, beacon_round: BeaconRound
) -> None:
    signature = _flip_last_bit(beacon_round.signature)
    tampered = BeaconRound(beacon_round.round, signature, sha256(signature))
    assert not quicknet.verify(tampered)


@pytest.mark.parametrize("beacon_round", QUICKNET_ROUNDS, ids=ROUND_IDS)
def test_quicknet_wrong_round_number_fails(
    quicknet: DrandQuicknetVerifier, beacon_round: BeaconRound
) -> None:
    assert not quicknet.verify(replace(beacon_round, round=beacon_round.round + 1))
    assert not quicknet.verify(replace(beacon_round, round=beacon_round.round - 1))


def test_quicknet_signature_from_another_round_fails(quicknet: DrandQuicknetVerifier) -> None:
    for beacon_round, other in itertools.permutations(QUICKNET_ROUNDS, 2):
        moved = BeaconRound(beacon_round.round, other.signature, other.randomness)
        assert not quicknet.verify(moved)


def test_quicknet_randomness_must_be_hash_of_signature(quicknet: DrandQuicknetVerifier) -> None:
    genuine = QUICKNET_ROUNDS[0]
    assert not quicknet.verify(replace(genuine, randomness=QUICKNET_ROUNDS[1].randomness))


def test_quicknet_malformed_signatures_fail(quicknet: DrandQuicknetVerifier) -> None:
    genuine = QUICKNET_ROUNDS[0]
    infinity = bytes([0xC0]) + bytes(47)
    for signature in (genuine.signature[:47], genuine.signature + b"\x00", infinity, b""):
        assert not quicknet.verify(BeaconRound(genuine.round, signature, sha256(signature)))
    assert not quicknet.verify(replace(genuine, round=0))


def test_quicknet_from_chain_info_checks_the_chain_hash() -> None:
    other_key = _flip_last_bit(bytes.fromhex(QUICKNET["public_key"]))
    for change in ({"public_key": other_key.hex()}, {"period": 30}, {"genesis_time": 0}):
        with pytest.raises(BeaconError, match="chain hash"):
            DrandQuicknetVerifier.from_chain_info({**QUICKNET, **change})
    with pytest.raises(BeaconError, match="chain hash"):
        DrandQuicknetVerifier.from_chain_info(QUICKNET, beacon_id="default")


def test_quicknet_from_chain_info_refuses_other_schemes() -> None:
    with pytest.raises(BeaconError, match="scheme"):
        DrandQuicknetVerifier.from_chain_info({**QUICKNET, "scheme": "pedersen-bls-chained"})
    with pytest.raises(BeaconError, match="DST"):
        DrandQuicknetVerifier.from_chain_info({**QUICKNET, "dst": "BLS_SIG_BLS12381G2_XMD"})
    missing = {k: v for k, v in QUICKNET.items() if k != "period"}
    with pytest.raises(BeaconError, match="period"):
        DrandQuicknetVerifier.from_chain_info(missing)


def test_quicknet_reads_drand_info_json_spelling() -> None:
    """drand's /info endpoint names the fields hash, groupHash and schemeID."""
    info = {
        "public_key": QUICKNET["public_key"],
        "period": QUICKNET["period"],
        "genesis_time": QUICKNET["genesis_time"],
        "hash": QUICKNET["chain_hash"],
        "groupHash": QUICKNET["group_hash"],
        "schemeID": QUICKNET["scheme"],
    }
    assert DrandQuicknetVerifier.from_chain_info(info).verify(QUICKNET_ROUNDS[0])


def test_quicknet_round_timing(quicknet: DrandQuicknetVerifier) -> None:
    genesis, period = QUICKNET["genesis_time"], QUICKNET["period"]
    assert quicknet.round_at(genesis - 1) == 0
    assert quicknet.round_at(genesis) == 1
    assert quicknet.round_at(genesis + period - 0.5) == 1
    assert quicknet.round_at(genesis + period) == 2
    for beacon_round in QUICKNET_ROUNDS:
        emitted = quicknet.time_of(beacon_round.round)
        assert quicknet.round_at(emitted) == beacon_round.round
        assert quicknet.round_at(emitted - 1) == beacon_round.round - 1
    with pytest.raises(BeaconError):
        quicknet.time_of(0)


def test_quicknet_serves_only_added_verified_rounds() -> None:
    source: BeaconSource = DrandQuicknetVerifier.from_chain_info(QUICKNET)
    assert isinstance(source, DrandQuicknetVerifier)
    with pytest.raises(BeaconNotRevealed):
        source.get(1)
    source.add(QUICKNET_ROUNDS[0])
    assert source.get(1) == QUICKNET_ROUNDS[0]
    forged = replace(QUICKNET_ROUNDS[1], round=4)
    with pytest.raises(BeaconError, match="does not verify"):
        source.add(forged)
    with pytest.raises(BeaconNotRevealed):
        source.get(4)


def test_quicknet_round_against_py_ecc_reference() -> None:
    """An independent check of one round with py_ecc: hash to G1, then the pairing equation."""
    beacon_round = QUICKNET_ROUNDS[0]
    message = sha256(beacon_round.round.to_bytes(8, "big"))
    # py_ecc calls the hash constructor but annotates it as a hash object.
    hashed = hash_to_G1(message, DRAND_QUICKNET_DST, hashlib.sha256)  # type: ignore[arg-type]
    ark_hashed = G1Point.hash_to_curve(message, DRAND_QUICKNET_DST)
    assert G1_to_pubkey(hashed) == ark_hashed.to_compressed_bytes()

    # py_ecc names its decoders for Ethereum's roles; drand swaps them (signature in G1).
    signature = pubkey_to_G1(BLSPubkey(beacon_round.signature))
    public_key = signature_to_G2(BLSSignature(bytes.fromhex(QUICKNET["public_key"])))
    product = pairing(G2, signature, final_exponentiate=False) * pairing(
        public_key, neg(hashed), final_exponentiate=False
    )
    assert final_exponentiate(product) == FQ12.one()


# devnet beacon


@pytest.fixture
def devnet() -> DevnetBeacon:
    return DevnetBeacon(DEVNET_KEY)


def test_devnet_rounds_verify_and_link(devnet: DevnetBeacon) -> None:
    rounds = [devnet.reveal(n) for n in range(5)]
    verifier = DevnetBeaconVerifier(devnet.public_key)
    previous = GENESIS_SEED
    for beacon_round in rounds:
        assert verifier.verify(beacon_round, previous)
        assert devnet.verify(beacon_round)
        assert beacon_round.randomness == sha256(beacon_round.signature)
        previous = beacon_round.signature
    assert verifier.verify_chain(rounds)


def test_devnet_round_against_wrong_previous_fails(devnet: DevnetBeacon) -> None:
    rounds = [devnet.reveal(n) for n in range(3)]
    verifier = DevnetBeaconVerifier(devnet.public_key)
    assert not verifier.verify(rounds[0], rounds[1].signature)
    assert not verifier.verify(rounds[2], rounds[0].signature)
    assert not verifier.verify(rounds[1], GENESIS_SEED)
    assert not verifier.verify_chain(rounds[1:])
    assert not verifier.verify_chain([rounds[0], rounds[2]])


def test_devnet_tampered_rounds_fail(devnet: DevnetBeacon) -> None:
    rounds = [devnet.reveal(n) for n in range(3)]
    verifier = DevnetBeaconVerifier(devnet.public_key)
    signature = _flip_last_bit(rounds[1].signature)
    assert not verifier.verify(BeaconRound(1, signature, sha256(signature)), rounds[0].signature)
    assert not verifier.verify(replace(rounds[1], randomness=bytes(32)), rounds[0].signature)
    assert not verifier.verify(replace(rounds[1], round=2), rounds[0].signature)
    assert not devnet.verify(replace(rounds[2], round=1))
    assert not devnet.verify(replace(rounds[2], round=7))


def test_devnet_other_key_does_not_verify(devnet: DevnetBeacon) -> None:
    beacon_round = devnet.reveal(0)
    stranger = DevnetBeaconVerifier(get_backend().sk_to_pk(DEVNET_KEY + 1))
    assert not stranger.verify(beacon_round, GENESIS_SEED)


def test_devnet_same_key_same_values(devnet: DevnetBeacon) -> None:
    """Signatures are unique, so the key holder has exactly one value per round to reveal."""
    twin = DevnetBeacon(DEVNET_KEY)
    other = DevnetBeacon(DEVNET_KEY + 1)
    for n in range(4):
        assert devnet.reveal(n) == twin.reveal(n)
        assert devnet.get(n).randomness != other.reveal(n).randomness


def test_devnet_backends_agree_on_a_round() -> None:
    fast = DevnetBeacon(DEVNET_KEY, backend=get_backend("arkworks")).reveal(0)
    reference = DevnetBeacon(DEVNET_KEY, backend=get_backend("py_ecc")).reveal(0)
    assert fast == reference


def test_devnet_unrevealed_rounds_raise(devnet: DevnetBeacon) -> None:
    assert devnet.latest_round is None
    with pytest.raises(BeaconNotRevealed, match="round 0"):
        devnet.get(0)
    devnet.reveal(0)
    devnet.reveal(1)
    assert devnet.latest_round == 1
    assert devnet.get(1).round == 1
    with pytest.raises(BeaconNotRevealed, match="round 2"):
        devnet.get(2)
    assert not devnet.verify(BeaconRound(3, b"\x00" * 96, sha256(b"\x00" * 96)))


def test_devnet_reveals_in_order_only(devnet: DevnetBeacon) -> None:
    with pytest.raises(BeaconError, match="in order"):
        devnet.reveal(1)
    first = devnet.reveal(0)
    with pytest.raises(BeaconError, match="in order"):
        devnet.reveal(2)
    assert devnet.latest_round == 0
    assert devnet.reveal(0) == first
    with pytest.raises(BeaconError, match="negative"):
        devnet.reveal(-1)


def test_devnet_message_layout() -> None:
    assert devnet_message(258, b"prev") == b"assay/beacon/v1" + bytes(6) + b"\x01\x02" + b"prev"
    assert len(GENESIS_SEED) == 32


@settings(max_examples=20, deadline=None)
@given(
    sk=st.integers(min_value=1, max_value=CURVE_ORDER - 1),
    length=st.integers(min_value=1, max_value=6),
    data=st.data(),
)
def test_devnet_chain_law(sk: int, length: int, data: st.DataObject) -> None:
    """Any key's chain verifies, and moving any one round's signature breaks the chain."""
    beacon = DevnetBeacon(sk)
    rounds = [beacon.reveal(n) for n in range(length)]
    assert beacon.verifier.verify_chain(rounds)
    victim = data.draw(st.integers(min_value=0, max_value=length - 1))
    signature = sha256(rounds[victim].signature) * 3  # 96 bytes, not this round's signature
    broken = list(rounds)
    broken[victim] = BeaconRound(victim, signature, sha256(signature))
    assert not beacon.verifier.verify_chain(broken)
