"""Beacon rounds verified on chain with EIP-2537: real drand quicknet rounds and the devnet
chain are accepted and give the value the Python verifiers give; a forged round, a round out
of order and a devnet round linked to the wrong predecessor each revert with a named error
and leave the beacon as it was."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from protocol.beacon import GENESIS_SEED, DevnetBeacon
from slashing.evm.chain import Chain, ContractRevert
from slashing.evm.points import g1_uncompressed, g2_uncompressed

QUICKNET: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parent / "vectors" / "drand-quicknet.json").read_text()
)
ROUNDS = QUICKNET["rounds"]


def deploy_drand(chain: Chain, first: int) -> Any:
    key = g2_uncompressed(bytes.fromhex(QUICKNET["public_key"]))
    return chain.deploy("DrandBeacon", key, QUICKNET["genesis_time"], QUICKNET["period"], first,
                        sender=chain.accounts[0])


def signature(vector: dict[str, Any]) -> bytes:
    return g1_uncompressed(bytes.fromhex(vector["signature"]))


@pytest.mark.parametrize("vector", ROUNDS, ids=[str(r["round"]) for r in ROUNDS])
def test_drand_round_accepted_with_its_value(chain: Chain, vector: dict[str, Any]) -> None:
    beacon = deploy_drand(chain, vector["round"])
    chain.transact(beacon.functions.submitRound(vector["round"], signature(vector)),
                   chain.accounts[0])
    assert beacon.functions.randomness(vector["round"]).call().hex() == vector["randomness"]
    assert beacon.functions.roundCount().call() == 1


def test_drand_rounds_chain_in_order(chain: Chain) -> None:
    beacon = deploy_drand(chain, 1)
    for vector in ROUNDS[:3]:
        chain.transact(beacon.functions.submitRound(vector["round"], signature(vector)),
                       chain.accounts[0])
    assert beacon.functions.nextRound().call() == 4


def _refused(chain: Chain, beacon: Any, call: Any, error: str) -> ContractRevert:
    count = beacon.functions.roundCount().call()
    with pytest.raises(ContractRevert) as refused:
        chain.transact(call, chain.accounts[0])
    assert refused.value.error == error
    assert beacon.functions.roundCount().call() == count
    return refused.value


def test_forged_drand_round_refused(chain: Chain) -> None:
    """Round 2's genuine signature offered as round 1's, and a point off the curve."""
    beacon = deploy_drand(chain, 1)
    _refused(chain, beacon, beacon.functions.submitRound(1, signature(ROUNDS[1])),
             "ForgedBeaconRound")
    off_curve = bytearray(signature(ROUNDS[0]))
    off_curve[-1] ^= 1
    _refused(chain, beacon, beacon.functions.submitRound(1, bytes(off_curve)), "ForgedBeaconRound")
    _refused(chain, beacon, beacon.functions.submitRound(1, signature(ROUNDS[0])[:64]),
             "MalformedPoint")
    assert beacon.functions.randomness(1).call() == bytes(32)


def test_drand_round_out_of_order_refused(chain: Chain) -> None:
    beacon = deploy_drand(chain, 1)
    refused = _refused(chain, beacon, beacon.functions.submitRound(2, signature(ROUNDS[1])),
                       "RoundOutOfOrder")
    assert refused.arguments == (1, 2)


def test_drand_verify_is_a_view(chain: Chain) -> None:
    beacon = deploy_drand(chain, 1)
    assert beacon.functions.verify(1, signature(ROUNDS[0])).call()
    assert not beacon.functions.verify(1, signature(ROUNDS[2])).call()
    assert beacon.functions.roundAt(QUICKNET["genesis_time"] + 7).call() == 3


def deploy_devnet(chain: Chain, holder: DevnetBeacon) -> Any:
    return chain.deploy("DevnetBeacon", g1_uncompressed(holder.public_key), GENESIS_SEED,
                        sender=chain.accounts[0])


def test_devnet_chain_accepted(chain: Chain) -> None:
    holder = DevnetBeacon(0x5EED)
    beacon = deploy_devnet(chain, holder)
    previous = b""
    for number in range(4):
        revealed = holder.reveal(number)
        chain.transact(
            beacon.functions.submitRound(number, g2_uncompressed(revealed.signature), previous),
            chain.accounts[0],
        )
        assert beacon.functions.randomness(number).call() == revealed.randomness
        previous = revealed.signature


def test_devnet_forgeries_refused(chain: Chain) -> None:
    holder, impostor = DevnetBeacon(0x5EED), DevnetBeacon(0xBAD)
    beacon = deploy_devnet(chain, holder)
    genuine = holder.reveal(0)
    # Another key's round 0
    _refused(chain, beacon, beacon.functions.submitRound(
        0, g2_uncompressed(impostor.reveal(0).signature), b""), "ForgedBeaconRound")
    chain.transact(beacon.functions.submitRound(0, g2_uncompressed(genuine.signature), b""),
                   chain.accounts[0])
    nxt = holder.reveal(1)
    # Round 1 linked to a predecessor that is not round 0
    _refused(chain, beacon, beacon.functions.submitRound(
        1, g2_uncompressed(nxt.signature), impostor.reveal(0).signature), "WrongPreviousSignature")
    # Round 0's signature replayed as round 1
    _refused(chain, beacon, beacon.functions.submitRound(
        1, g2_uncompressed(genuine.signature), genuine.signature), "ForgedBeaconRound")
