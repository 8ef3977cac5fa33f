"""zk evidence through the network: the ledger service judges a forged proof on the evidence.

A real ledger service on loopback registers an operator's zk model at start
(``RegisterZkModel``); a node records a zk job whose proof is junk; a running
validator service holding the model's key checks it, and sends
``accuse_invalid_proof`` with the job's request; the ledger re-checks the proof
with ``verifier.zk``'s checker (installed as the CLI installs it) and slashes
the node. ``assay ledger verify`` then replays the log, re-checking the proof.
The verifying key, settings and SRS are stand-in bytes: a proof that does not
even decode is judged before EZKL is needed, which keeps this test fast (real
proofs through the rule are in ``tests/test_zk.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import trio

from protocol.beacon import DevnetBeacon
from protocol.codec import Tensor
from protocol.config import NodeConfig, ValidatorConfig
from protocol.hashing import sha256
from protocol.keys import SigningKey
from protocol.keystore import SigningJournal
from protocol.messages import Commitment, JobRequest
from protocol.net.host import PeerHost
from protocol.net.identity import peer_address
from protocol.net.ledger_client import LedgerClient
from protocol.net.metrics import Metrics
from prover.node import InferenceNode, JobRejected, tensor_hash
from prover.service import NodeService
from prover.zk import ZkArtifactStore
from slashing import (
    Ledger,
    LedgerParams,
    RegisterBeacon,
    RegisterZkModel,
    SetParams,
    genesis_chain_id,
    rules,
)
from slashing.service import Genesis, LedgerService, safe_params
from slashing.transactions import transaction_signer
from tests.net_helpers import BEACON_SECRET, GENESIS_FUNDS, connected, free_port
from tests.test_ledger_cli import run
from verifier.service import ValidatorService
from verifier.validator import Validator
from verifier.zk import ZkKey

NODE = SigningKey.derive("net-zk/node")
CLIENT = SigningKey.derive("net-zk/client")
VALIDATOR = SigningKey.derive("net-zk/validator")
MODEL_ID = sha256(b"net-zk/model")
VK = b"stand-in verifying key"
SETTINGS = json.dumps({"model_input_scales": [7]}).encode()
SRS = b"stand-in SRS"


def zk_store(root: Path) -> ZkArtifactStore:
    """A store holding the stand-in SRS under its hash, as ``assay zk setup`` would."""
    store = ZkArtifactStore(root)
    path = store.srs_path(sha256(SRS))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(SRS)
    return store


def forged_job(chain_id: bytes) -> tuple[JobRequest, Tensor, Commitment]:
    x = Tensor.from_torch(torch.ones((1, 16)))
    request = JobRequest(model_id=MODEL_ID, input=x, client=CLIENT.public.raw,
                         node=NODE.public.raw, nonce=1, fee=110, expiry_round=10**6,
                         chain_id=chain_id).signed(CLIENT)
    commitment = Commitment(
        job_id=request.job_id, model_id=MODEL_ID, input_hash=tensor_hash(x),
        output_hash=tensor_hash(x), node=NODE.public.raw, chain_id=chain_id, mode="zk",
        aux=b"not a proof",
    ).signed(NODE)
    return request, x, commitment


def test_a_forged_proof_sent_through_the_ledger_service_slashes_the_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from assay.commands.ledger import proof_checker

    store = zk_store(tmp_path / "zk")
    params = safe_params(LedgerParams(**{**LedgerParams.default().__dict__,
                                         "committee_size": 1, "sample_ppm": 1_000_000}))
    genesis = Genesis(
        params=params,
        mints=tuple((k.public.raw, GENESIS_FUNDS) for k in (NODE, CLIENT, VALIDATOR)),
        zk_models=(RegisterZkModel(MODEL_ID, VK, SETTINGS, sha256(SRS)),),
    )
    ledger_key = SigningKey.derive("net-zk/ledger")
    port = free_port()
    address = peer_address("127.0.0.1", port, ledger_key.public.raw)
    database = tmp_path / "ledger.sqlite"
    chain_id = genesis_chain_id(
        RegisterBeacon(DevnetBeacon(BEACON_SECRET).public_key, 0), SetParams(params))
    request, _, commitment = forged_job(chain_id)
    key_dir = tmp_path / "keys"
    key_dir.mkdir()
    (key_dir / "vk").write_bytes(VK)  # the validator compares its key's hashes with the ledger's
    (key_dir / "s.json").write_bytes(SETTINGS)
    zk_key = ZkKey(model_id=MODEL_ID, vk_path=key_dir / "vk", settings_path=key_dir / "s.json",
                   srs_path=store.srs_path(sha256(SRS)), input_scale=7, vk_sha256=sha256(VK))

    async def main() -> None:
        host = PeerHost(ledger_key, f"/ip4/127.0.0.1/tcp/{port}", (), Metrics())
        ledger = LedgerService(host, Ledger.open(database), DevnetBeacon(BEACON_SECRET),
                               genesis, 0.5, host.metrics)
        node_port = free_port()
        node_host = PeerHost(NODE, f"/ip4/127.0.0.1/tcp/{node_port}", [address])
        node_ledger = LedgerClient(node_host, address, transaction_signer(NODE))
        async with trio.open_nursery() as nursery:
            await nursery.start(ledger.run)
            async with node_host.running():
                await connected(node_host, node_ledger.key)
                registered = await node_ledger.call("zk_model", model_id=MODEL_ID)
                assert registered["found"] and registered["vk_sha256"] == sha256(VK)
                assert registered["srs_sha256"] == sha256(SRS)
                await node_ledger.transact("bond", role="node", amount=20_000)
                bonder = PeerHost(VALIDATOR, f"/ip4/127.0.0.1/tcp/{free_port()}", [address])
                async with bonder.running():
                    await connected(bonder, node_ledger.key)
                    await LedgerClient(bonder, address, transaction_signer(VALIDATOR)).transact(
                        "bond", role="validator", amount=20_000)
                await node_ledger.call("record_job", request=request.encode(),
                                       commitment=commitment.encode())
                before = await node_ledger.call("account", account=NODE.public.raw)

                metrics = Metrics()
                validator_host = PeerHost(
                    VALIDATOR, f"/ip4/127.0.0.1/tcp/{free_port()}",
                    [address, peer_address("127.0.0.1", node_port, NODE.public.raw)], metrics,
                )
                service = ValidatorService(
                    ValidatorConfig(ledger=address),
                    Validator(VALIDATOR, {}, zk_keys={MODEL_ID: zk_key}), validator_host,
                    SigningJournal(tmp_path / "validator" / "journal.sqlite"), metrics,
                    transaction_signer(VALIDATOR),
                )
                shutdown = trio.Event()
                nursery.start_soon(service.run, shutdown)
                with trio.fail_after(20):
                    while (await node_ledger.call("job", job_id=request.job_id))["status"] \
                            == "pending":
                        await trio.sleep(0.1)
                job = await node_ledger.call("job", job_id=request.job_id)
                after = await node_ledger.call("account", account=NODE.public.raw)
                assert job["status"] == "refunded"
                assert after["node_stake"] == before["node_stake"] - params.fraud_slash
                assert not job["open_dispute"]  # judged on the evidence, no committee
                kept = service.journal.get("audit", request.job_id)
                assert kept is not None
                assert kept[1] == b"accuse_invalid_proof\n" + request.encode()
                shutdown.set()
            nursery.cancel_scope.cancel()
        ledger.close()

    with proof_checker(store.root):
        trio.run(main)

    # the log replays, re-checking the proof rather than trusting a remembered verdict
    rules._proof_verdicts.clear()
    code, out, err = run(["ledger", "verify", "--ledger", str(database),
                          "--zk-store", str(store.root)], capsys)
    assert code == 0, err
    assert "events verified from genesis" in out
    rules._proof_verdicts.clear()
    code, _, err = run(["ledger", "verify", "--ledger", str(database),
                        "--zk-store", str(tmp_path / "empty")], capsys)
    assert code != 0 and "no SRS with SHA-256" in err

    # restarting with other keys for the registered model refuses to start
    other = Genesis(params=params, mints=(),
                    zk_models=(RegisterZkModel(MODEL_ID, b"another key", SETTINGS, sha256(SRS)),))
    with proof_checker(store.root), pytest.raises(Exception, match="registered on the ledger"):
        LedgerService(PeerHost(ledger_key, f"/ip4/127.0.0.1/tcp/{free_port()}", (), Metrics()),
                      Ledger.open(database), DevnetBeacon(BEACON_SECRET), other, 0.5, Metrics())


def test_a_node_refuses_a_zk_model_the_ledger_registered_with_another_key(
    tmp_path: Path,
) -> None:
    genesis = Genesis(
        params=LedgerParams.default(), mints=(),
        zk_models=(RegisterZkModel(MODEL_ID, VK, SETTINGS, sha256(SRS)),),
    )
    ledger_key = SigningKey.derive("net-zk/ledger-2")
    port = free_port()
    address = peer_address("127.0.0.1", port, ledger_key.public.raw)
    request, _, _ = forged_job(genesis_chain_id(
        RegisterBeacon(DevnetBeacon(BEACON_SECRET).public_key, 0), SetParams(genesis.params)))

    async def main() -> None:
        host = PeerHost(ledger_key, f"/ip4/127.0.0.1/tcp/{port}", (), Metrics())
        ledger = LedgerService(host, Ledger.open(tmp_path / "ledger.sqlite"),
                               DevnetBeacon(BEACON_SECRET), genesis, 0.5, host.metrics)
        prover = SimpleNamespace(artifacts=SimpleNamespace(vk_sha256=sha256(b"our own key")))
        node = InferenceNode(NODE, {}, zk_provers={MODEL_ID: prover})  # type: ignore[dict-item]
        node_host = PeerHost(NODE, f"/ip4/127.0.0.1/tcp/{free_port()}", [address], Metrics())
        service = NodeService(NodeConfig(ledger=address), node, NODE, [], node_host,
                              SigningJournal(tmp_path / "journal.sqlite"), node_host.metrics,
                              transaction_signer(NODE))
        async with trio.open_nursery() as nursery:
            await nursery.start(ledger.run)
            async with node_host.running():
                assert not service.health()[1]["zk_keys_match"]
                nursery.start_soon(service.ledger.keep_fresh)
                with trio.fail_after(10):
                    await service.check_zk_keys()
                assert MODEL_ID in service.zk_refused
                assert "would be judged invalid" in service.zk_refused[MODEL_ID]
                assert service.health()[1]["zk_keys_match"] is False
                with pytest.raises(JobRejected, match="refusing zk model"):
                    await service.execute(request)
            nursery.cancel_scope.cancel()
        ledger.close()
        service.journal.close()

    trio.run(main)
