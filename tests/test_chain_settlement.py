"""The ledger settled on chain: the log's events reach the contracts, and what the chain
refuses is named in the service's log and stops nothing.

A real SQLite log under :class:`slashing.evm.settlement.ChainSettlement` on the tests' shared
anvil: jobs recorded by the rules go on chain as one root per node per round when the round
closes, and the chain's jobs, stakes and balances equal the rules'. A hostile node holding
its chain key posts a root for the round itself first: the settlement's own root for that
round is refused as ``BatchAlreadyPosted`` by name, logged, and the next rounds settle as
before. Bad chain settings for ``assay ledger run`` are refused naming the setting, before
the ledger's database is created.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from assay.cli import main
from protocol.beacon import DevnetBeacon
from protocol.codec import Tensor
from protocol.config import to_toml
from protocol.hashing import sha256
from protocol.keys import SigningKey
from protocol.keystore import encrypt
from protocol.keystore import write_keystore as write_protocol_keystore
from protocol.messages import Commitment, JobRequest
from slashing import constants as c
from slashing.events import BeaconRound, Bond, Mint, RecordJob, RegisterBeacon, SetParams
from slashing.evm.anvil import free_port
from slashing.evm.chain import Chain
from slashing.evm.keys import load_keystore, write_keystore
from slashing.evm.ledger import deploy_devnet
from slashing.evm.merkle import JobBatch, JobLeaf
from slashing.evm.settlement import ChainSettings, ChainSettlement
from slashing.state import LedgerParams
from slashing.store import Ledger

PARAMS = replace(
    LedgerParams.default(), sample_ppm=500_000, committee_size=2, challenge_window=1,
    audit_window=1, vote_window=1, availability_window=1, unbonding_period=16, jail_period=3,
)
FEE = PARAMS.verification_fee + PARAMS.reward
MODEL = sha256(b"settled model")
PASSWORD = "settlement test"
SCRYPT_N = 2**10


def _operator(chain: Chain) -> LocalAccount:
    operator: LocalAccount = Account.create()
    chain.w3.provider.make_request("anvil_setBalance",  # type: ignore[arg-type]
                                   [operator.address, hex(10**24)])
    return operator


@dataclass
class Settled:
    settlement: ChainSettlement
    beacon: DevnetBeacon
    node: SigningKey
    client: SigningKey
    nonce: int = 0

    def round(self) -> None:
        number = self.settlement.state.current_round + 1
        revealed = self.beacon.reveal(number)
        self.settlement.append(BeaconRound(round=number, signature=revealed.signature,
                                           randomness=revealed.randomness))

    def job(self) -> bytes:
        """One job of the node's, recorded by the rules; its id."""
        self.nonce += 1
        chain_id = self.settlement.state.chain_id or b""
        request = JobRequest(
            model_id=MODEL, input=Tensor("float32", (1,), self.nonce.to_bytes(4, "big")),
            client=self.client.public.raw, node=self.node.public.raw, nonce=self.nonce,
            fee=FEE, expiry_round=10**6, chain_id=chain_id,
        ).signed(self.client)
        commitment = Commitment(
            job_id=request.job_id, model_id=MODEL, input_hash=sha256(request.input.data),
            output_hash=sha256(b"output %d" % self.nonce), node=self.node.public.raw,
            chain_id=chain_id,
        ).signed(self.node)
        self.settlement.append(RecordJob(request.encode(), commitment.encode()))
        return request.job_id


@pytest.fixture
def settled(chain: Chain, tmp_path: Path) -> Iterator[Settled]:
    beacon = DevnetBeacon(0x5E77)
    operator = _operator(chain)
    ledger = deploy_devnet(chain, PARAMS, beacon.public_key, operator)
    settings = ChainSettings(chain.w3.provider.endpoint_uri, ledger.contract.address,  # type: ignore[attr-defined]
                             ledger.beacon.address, operator, PASSWORD, SCRYPT_N,
                             tmp_path / "chain-accounts")
    settlement = ChainSettlement(Ledger.open(tmp_path / "ledger.sqlite"), ledger, settings,
                                 beacon)
    node, client = SigningKey.derive("settled node"), SigningKey.derive("settled client")
    validators = [SigningKey.derive(f"settled validator {i}") for i in range(3)]
    settlement.append(RegisterBeacon(public_key=beacon.public_key, first_round=0))
    settlement.append(SetParams(params=PARAMS))
    for key in (node, client, *validators):
        settlement.append(Mint(account=key.public.raw, amount=100_000))
    s = Settled(settlement, beacon, node, client)
    s.round()
    chain_id = settlement.state.chain_id or b""
    settlement.append(Bond(account=node.public.raw, role=c.NODE, amount=20_000, nonce=1,
                           chain_id=chain_id).signed(node))
    for key in validators:
        settlement.append(Bond(account=key.public.raw, role=c.VALIDATOR, amount=20_000,
                               nonce=1, chain_id=chain_id).signed(key))
    try:
        yield s
    finally:
        settlement.close()


def _address(s: Settled, key: SigningKey) -> str:
    return s.settlement.accounts.of(key.public.raw).address


def test_the_log_settles_on_chain_as_the_rules_decide(settled: Settled) -> None:
    s, chain = settled, settled.settlement.chain
    jobs = [s.job() for _ in range(3)]
    s.round()
    s.round()
    s.settlement.wait_settled()
    state = s.settlement.state
    assert s.settlement.refused == 0
    assert chain.current_round() == state.current_round
    for job_id in jobs:
        on_chain, ours = chain.job(job_id), state.jobs[job_id]
        assert on_chain is not None
        assert (on_chain.recorded_round, on_chain.sampled, on_chain.status) == (
            ours.recorded_round, ours.sampled, ours.status)
        assert on_chain.node == _address(s, s.node) and on_chain.client == _address(s, s.client)
    for key in (s.node, s.client):
        account, ours_account = chain.account(_address(s, key)), state.accounts[key.public.raw]
        assert account.balance == ours_account.balance
        assert account.node.amount == ours_account.node.amount
        assert account.key == key.public.raw  # registered: the draws rank it by this key


def test_a_root_posted_twice_for_a_round_is_named_and_the_settlement_goes_on(
    settled: Settled, caplog: pytest.LogCaptureFixture,
) -> None:
    s, chain = settled, settled.settlement.chain
    s.settlement.wait_settled()
    node_key = load_keystore(s.settlement.accounts.path(s.node.public.raw), PASSWORD)
    round_number = s.settlement.state.current_round
    # The hostile node posts a root of its own for this round, straight to the chain ...
    chain.post_batch(round_number, JobBatch.of([JobLeaf(sha256(b"j"), sha256(b"c"),
                                                        sha256(b"o"))]), node_key)
    hidden = s.job()  # ... then a job the rules record in the same round
    with caplog.at_level(logging.WARNING, logger="assay.ledger.chain"):
        s.round()
        s.settlement.wait_settled()
    assert s.settlement.refused == 1
    assert f"BatchAlreadyPosted('{node_key.address}', {round_number})" in caplog.text
    assert chain.job(hidden) is None and hidden in s.settlement.state.jobs
    # The settlement goes on: the next round's job and round reach the chain
    later = s.job()
    s.round()
    s.settlement.wait_settled()
    assert s.settlement.refused == 1
    assert chain.job(later) is not None
    assert chain.current_round() == s.settlement.state.current_round


# -- bad settings -----------------------------------------------------------------------------

def _ledger_dir(tmp_path: Path, chain: Chain, operator: LocalAccount, **settings: str) -> Path:
    """A ledger's files and config with ``settings`` for the chain; the config's path."""
    key = SigningKey.derive("settings ledger")
    write_protocol_keystore(tmp_path / "ledger.json", encrypt(key, "pw", "ledger", n=2**10))
    (tmp_path / "ledger.pass").write_text("pw\n")
    (tmp_path / "beacon.secret").write_text("5e77\n")
    (tmp_path / "genesis.toml").write_text(
        "[params]\n" + "".join(f"{k} = {v}\n" for k, v in {
            "sample_ppm": PARAMS.sample_ppm, "committee_size": PARAMS.committee_size,
            "challenge_window": PARAMS.challenge_window, "audit_window": PARAMS.audit_window,
            "vote_window": PARAMS.vote_window,
            "availability_window": PARAMS.availability_window,
            "unbonding_period": PARAMS.unbonding_period, "jail_period": PARAMS.jail_period,
        }.items()))
    write_keystore(tmp_path / "chain.json", operator, "right", SCRYPT_N)
    (tmp_path / "chain.pass").write_text("right\n")
    config = {
        "keystore": "ledger.json", "password_file": "ledger.pass", "database": "ledger.sqlite",
        "beacon_secret_file": "beacon.secret", "genesis": "genesis.toml",
        "listen": f"/ip4/127.0.0.1/tcp/{free_port()}", "http_port": free_port(),
        "ledger_backend": "evm", "rpc_url": chain.w3.provider.endpoint_uri,  # type: ignore[attr-defined]
        "chain_keystore": "chain.json", "chain_password_file": "chain.pass", **settings,
    }
    (tmp_path / "ledger.toml").write_text(to_toml("ledger", config))
    return tmp_path / "ledger.toml"


def test_bad_chain_settings_are_refused_by_name_and_change_nothing(
    chain: Chain, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    operator = _operator(chain)
    ledger = deploy_devnet(chain, PARAMS, DevnetBeacon(0x5E77).public_key, operator)
    other = deploy_devnet(chain, replace(PARAMS, jail_period=4),
                          DevnetBeacon(0x5E77).public_key, operator)
    contracts = {"ledger_contract": ledger.contract.address,
                 "beacon_contract": ledger.beacon.address}
    cases: list[tuple[dict[str, str], str]] = [
        ({**contracts, "ledger_backend": "postgres"},
         "ledger_backend 'postgres' is not one of sqlite, evm"),
        ({**contracts, "rpc_url": f"http://127.0.0.1:{free_port()}"}, "no chain answers there"),
        ({"beacon_contract": ledger.beacon.address}, "ledger_contract is required"),
        ({**contracts, "ledger_contract": "0x1234"}, "ledger_contract '0x1234' is not a 20-byte"),
        ({**contracts, "ledger_contract": "0x" + "11" * 20}, "ledger_contract 0x1111"),
        ({**contracts, "chain_password_file": "wrong.pass"}, "chain.json: wrong password"),
        ({"ledger_contract": other.contract.address, "beacon_contract": other.beacon.address},
         "ledger_contract's jail_period is 4; the genesis [params] make it 3"),
        ({**contracts, "beacon_contract": other.beacon.address},
         "is not the ledger contract's beacon"),
    ]
    for index, (settings, message) in enumerate(cases):
        directory = tmp_path / str(index)
        directory.mkdir()
        (directory / "wrong.pass").write_text("wrong\n")
        config = _ledger_dir(directory, chain, operator, **settings)
        assert main(["ledger", "run", "--config", str(config)]) != 0, settings
        error = capsys.readouterr().err
        assert message in error, (settings, error)
        assert not (directory / "ledger.sqlite").exists()
        assert not (directory / "chain-accounts").exists()
    stranger = _operator(chain)
    directory = tmp_path / "stranger"
    directory.mkdir()
    config = _ledger_dir(directory, chain, stranger, **contracts)
    assert main(["ledger", "run", "--config", str(config)]) != 0
    assert f"holds {stranger.address}, not the ledger contract's operator" in \
        capsys.readouterr().err


def test_chain_keys_are_standard_keystores_and_never_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "pass").write_text("operator password\n")
    common = ["--password-file", str(tmp_path / "pass"), "--scrypt-n", "1024"]
    assert main(["chain", "key", "new", "--out", str(tmp_path / "new.json"), *common]) == 0
    made = load_keystore(tmp_path / "new.json", "operator password")
    printed = capsys.readouterr().out
    assert made.address in printed and made.key.hex().removeprefix("0x") not in printed
    imported: LocalAccount = Account.create()
    secret = imported.key.hex().removeprefix("0x")
    (tmp_path / "key.hex").write_text(secret + "\n")
    assert main(["chain", "key", "import", "--out", str(tmp_path / "imported.json"),
                 "--private-key-file", str(tmp_path / "key.hex"), *common]) == 0
    assert Account.decrypt(json.loads((tmp_path / "imported.json").read_text()),
                           "operator password") == imported.key
    assert secret not in capsys.readouterr().out
    (tmp_path / "bad.hex").write_text(secret[:-2] + "zz\n")
    assert main(["chain", "key", "import", "--out", str(tmp_path / "bad.json"),
                 "--private-key-file", str(tmp_path / "bad.hex"), *common]) != 0
    error = capsys.readouterr().err
    assert "not 64 hex digits" in error and secret[:16] not in error
    assert not (tmp_path / "bad.json").exists()
    assert main(["chain", "key", "new", "--out", str(tmp_path / "new.json"), *common]) != 0
    assert "never overwritten" in capsys.readouterr().err
    assert load_keystore(tmp_path / "new.json", "operator password").address == made.address
