"""``assay devnet up --chain``: the whole devnet with its ledger settled on anvil.

Anvil on a free loopback port, the contracts deployed from the operator's chain key, and a
ledger, two nodes (one cheating on every job) and three validators as separate processes.
Jobs run through the nodes' OpenAI API; the cheater is slashed on chain, by the contracts'
own dispute and committee, and the honest node's stake on chain is untouched. The chain and
the ledger's log agree on both nodes' stakes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from assay.commands import devnet
from protocol.config import LedgerConfig, load
from slashing.evm.chain import Chain
from slashing.evm.ledger import EvmLedger
from tests.test_net_devnet import client, ledger_query

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devnet.Devnet]:
    network = devnet.create(tmp_path_factory.mktemp("devnet") / "net", nodes=2, validators=3,
                            cheaters=1, sample_ppm=500_000, round_seconds=1.0, zk=False,
                            chain=True)
    try:
        devnet.up(network, timeout=150)
        yield network
    finally:
        devnet.down(network)


def _chain_ledger(net: devnet.Devnet) -> EvmLedger:
    config = load(LedgerConfig, Path(net.directory) / "ledger.toml")
    chain = Chain(config.rpc_url)
    return EvmLedger(chain, chain.contract("AssayLedger", config.ledger_contract),
                     chain.contract("DevnetBeacon", config.beacon_contract))


def _address(net: devnet.Devnet, name: str) -> str:
    """The member's chain address, from the keystore the ledger relays it with."""
    keystore = Path(net.directory) / "chain-accounts" / f"{net.member(name).pubkey}.json"
    return "0x" + str(json.loads(keystore.read_text())["address"])


def test_the_cheater_is_slashed_on_chain_and_the_honest_node_is_untouched(
    net: devnet.Devnet,
) -> None:
    ledger = _chain_ledger(net)
    honest, cheater = net.member("node-0"), net.member("node-1")
    deadline = time.monotonic() + 240
    sent = 0
    while ledger.account(_address(net, "node-1")).node.offences == 0:
        assert time.monotonic() < deadline, "the cheater was not slashed on chain in time"
        for member in (honest, cheater):
            try:
                client(member).completions.create(model="gpt2", prompt=f"job {sent}",
                                                  max_tokens=4, seed=sent)
            except openai.APIError:
                assert member is cheater  # refused once jailed or slashed out
            sent += 1
        time.sleep(1.0)
    time.sleep(3)
    honest_on_chain = ledger.account(_address(net, "node-0")).node
    cheater_on_chain = ledger.account(_address(net, "node-1")).node
    assert cheater_on_chain.amount < devnet.STAKE
    assert honest_on_chain.amount == devnet.STAKE and honest_on_chain.offences == 0
    assert honest_on_chain.jailed_until is None
    assert ledger.current_round() > 0  # the chain verified and processed the devnet's rounds
    for member in (honest, cheater):
        ours = ledger_query(net, "account", account=bytes.fromhex(member.pubkey))
        on_chain = ledger.account(_address(net, member.name)).node
        assert int(ours["node_stake"]) == on_chain.amount, member.name  # type: ignore[call-overload]
    log = (Path(net.directory) / "logs" / "ledger.log").read_text()
    assert "Traceback" not in log
    assert devnet.is_healthy(net.member("ledger"))
