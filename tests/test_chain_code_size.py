"""EIP-170 on chain: every contract the devnet deploys fits the limit on deployed code.

The sizes are measured from the code anvil holds (``eth_getCode``), and anvil runs with the
limit enforced: a contract one byte over it does not deploy. The ledger's rules are split
across ``AssayLedger`` and ``LedgerRounds`` (run by delegatecall on the ledger's storage),
so the split is attacked too: the rounds contract called directly, or a ledger given a
rounds contract that reads another beacon.
"""

from __future__ import annotations

import pytest
from web3.types import TxReceipt

from protocol.beacon import DevnetBeacon
from slashing.evm.chain import Chain, ContractRevert
from slashing.evm.ledger import deploy_devnet, params_tuple
from slashing.evm.points import g1_uncompressed
from slashing.state import LedgerParams

EIP170_LIMIT = 24_576
"""EIP-170: the most bytes of code a contract may be deployed with."""


def deploy_zeros(chain: Chain, size: int, sender: str) -> TxReceipt:
    """Creation code that deploys ``size`` zero bytes: PUSH2 size, PUSH1 0, RETURN."""
    initcode = bytes([0x61, size >> 8, size & 0xFF, 0x60, 0x00, 0xF3])
    sent = chain.w3.eth.send_transaction({"from": sender, "data": initcode, "gas": 8_000_000})
    return chain.w3.eth.wait_for_transaction_receipt(sent)


def test_anvil_refuses_code_over_eip170(chain: Chain) -> None:
    sender = chain.accounts[0]
    at_limit = deploy_zeros(chain, EIP170_LIMIT, sender)
    assert at_limit["status"] == 1
    assert len(chain.w3.eth.get_code(at_limit["contractAddress"])) == EIP170_LIMIT
    over = deploy_zeros(chain, EIP170_LIMIT + 1, sender)
    assert over["status"] == 0
    assert over["contractAddress"] is None or not chain.w3.eth.get_code(over["contractAddress"])


def test_every_devnet_contract_is_within_eip170(chain: Chain) -> None:
    operator = chain.accounts[0]
    ledger = deploy_devnet(chain, LedgerParams.default(), DevnetBeacon(7).public_key, operator)
    deployed = {
        "DevnetBeacon": ledger.beacon.address,
        "LedgerRounds": chain.call(ledger.contract.functions.rounds()),
        "AssayLedger": ledger.contract.address,
    }
    for name, address in deployed.items():
        size = len(chain.w3.eth.get_code(address))
        print(f"{name}: {size} bytes deployed, {EIP170_LIMIT - size} under EIP-170")
        assert size == chain.artifacts[name].deployed_size
        assert 0 < size <= EIP170_LIMIT, name


def test_rounds_contract_called_directly_refuses(chain: Chain) -> None:
    """Its own storage is not the ledger's: `advance`, `attest` and `accuse` sent to it revert."""
    operator, outsider = chain.accounts[0], chain.accounts[4]
    ledger = deploy_devnet(chain, LedgerParams.default(), DevnetBeacon(7).public_key, operator)
    rounds = chain.contract("LedgerRounds", chain.call(ledger.contract.functions.rounds()))
    job_id = b"\x01" * 32
    for call in (rounds.functions.advance(), rounds.functions.attest(job_id, 1, 0),
                 rounds.functions.accuse(job_id, b"\x02" * 32, 1, b"\x03" * 32)):
        with pytest.raises(ContractRevert) as refused:
            chain.transact(call, outsider)
        assert refused.value.error == "NotDelegated"


def test_ledger_refuses_rounds_contract_of_another_beacon(chain: Chain) -> None:
    operator = chain.accounts[0]
    ours = chain.deploy("DevnetBeacon", g1_uncompressed(DevnetBeacon(7).public_key), b"\x00" * 32,
                        sender=operator)
    theirs = chain.deploy("DevnetBeacon", g1_uncompressed(DevnetBeacon(8).public_key),
                          b"\x00" * 32, sender=operator)
    rounds = chain.deploy("LedgerRounds", theirs.address, sender=operator)
    with pytest.raises(ContractRevert) as refused:
        chain.deploy("AssayLedger", ours.address, params_tuple(LedgerParams.default()),
                     rounds.address, sender=operator)
    assert refused.value.error == "WrongRoundsContract"
