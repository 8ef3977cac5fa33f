"""zk models on the services path: commands load them, validators check every zk job.

* At a sample rate so low that the draw samples no job, a real node service
  proves zk jobs with EZKL, a real validator service checks every one of them
  (VALID attestations the ledger accepts) and accuses a replayed proof with
  ``accuse_invalid_proof``, which the ledger re-checks and slashes on.
* A validator drops a zk key whose hashes differ from the ledger's
  registration before it checks anything, and says it is not ready.
* ``assay node run``, ``assay validator run`` and ``assay ledger run`` refuse
  a zk model whose artifacts are missing or not the pinned ones, naming it.
* The genesis ``[[zk_model]]`` tables: a good one gives the right
  ``RegisterZkModel``; anything else a ``CommandError`` naming what is wrong.

Real EZKL keys on a tiny MLP (a 2^11-row circuit) are made once per module;
each proof takes about a second on two cores.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tomllib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import trio

from assay.cli import CommandError
from assay.commands import devnet
from assay.commands.ledger import proof_checker
from assay.commands.ledger_service import zk_registrations
from protocol import codec
from protocol.beacon import DevnetBeacon
from protocol.codec import Tensor
from protocol.config import NodeConfig, ValidatorConfig, to_toml
from protocol.hashing import sha256
from protocol.keys import SigningKey
from protocol.keystore import SigningJournal
from protocol.messages import Attestation, Commitment, Evidence, JobRequest, Offence, Verdict
from protocol.net.host import PeerHost
from protocol.net.identity import peer_address
from protocol.net.metrics import Metrics
from protocol.sampling import sampled
from prover.model_store import save_model
from prover.node import InferenceNode, tensor_hash
from prover.registry import ModelRegistry, RegistryEntry
from prover.service import COMMITMENT, NodeService
from prover.zk import (
    PARAM_VK,
    SETTINGS_FILE,
    VK_FILE,
    CircuitChoice,
    DevnetSrsWarning,
    ZkArtifacts,
    ZkArtifactStore,
    ZkProof,
    ZkProver,
    small_mlp,
)
from slashing import (
    Ledger,
    LedgerParams,
    RegisterBeacon,
    RegisterZkModel,
    SetParams,
    genesis_chain_id,
)
from slashing.service import Genesis, LedgerService
from slashing.transactions import transaction_signer
from tests.net_helpers import BEACON_SECRET, GENESIS_FUNDS, free_port
from tests.test_ledger_cli import run
from verifier.service import ValidatorService
from verifier.validator import Validator
from verifier.zk import ZkKey

pytest.importorskip("ezkl")

TINY = {"image_size": 4, "in_channels": 1, "n_hidden1": 8, "n_hidden2": 8, "n_classes": 10}
NODE = SigningKey.derive("zk-services/node")
CLIENT = SigningKey.derive("zk-services/client")
VALIDATOR = SigningKey.derive("zk-services/validator")
LOW_RATE_PPM = 500
"""1 job in 2,000 sampled: the least rate the ledger's economics admit with R = C = 1."""


@dataclass
class TinyZk:
    root: Path
    registry: ModelRegistry
    store: ZkArtifactStore
    entry: RegistryEntry
    artifacts: ZkArtifacts


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyZk]:
    """A zk-mode registry entry with real keys, pinned as ``assay zk setup`` pins them."""
    root = tmp_path_factory.mktemp("zk-services")
    registry = ModelRegistry(root / "registry")
    store = ZkArtifactStore(root / "zk")
    module = small_mlp(11, TINY)
    save_model(root / "models" / "tiny", module, "mlp", TINY)
    entry = registry.add(root / "models" / "tiny", mode="zk", name="tiny")
    g = torch.Generator().manual_seed(3)
    inputs = [torch.rand((1, 1, 4, 4), generator=g) for _ in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DevnetSrsWarning)
        artifacts = store.setup(entry.model_id, module, inputs,
                                choice=CircuitChoice(max_logrows=12))
    entry = registry.update_params(entry.model_id, artifacts.registry_params())
    yield TinyZk(root, registry, store, entry, artifacts)


def job(model_id: bytes, nonce: int, fee: int, chain_id: bytes) -> JobRequest:
    g = torch.Generator().manual_seed(100 + nonce)
    x = Tensor.from_torch(torch.rand((1, 1, 4, 4), generator=g))
    return JobRequest(model_id=model_id, input=x, client=CLIENT.public.raw, node=NODE.public.raw,
                      nonce=nonce, fee=fee, expiry_round=10**6,
                      chain_id=chain_id).signed(CLIENT)


# -- every zk job is checked, whatever the draw ----------------------------------------------------


def test_every_zk_job_is_checked_at_a_rate_that_samples_none(tiny: TinyZk) -> None:
    params = LedgerParams(**{**LedgerParams.default().__dict__, "committee_size": 1,
                             "sample_ppm": LOW_RATE_PPM, "reward": 1, "compute_cost": 1})
    fee = params.verification_fee + params.reward
    model_id = tiny.entry.model_id
    genesis = Genesis(
        params=params,
        mints=tuple((k.public.raw, GENESIS_FUNDS) for k in (NODE, CLIENT, VALIDATOR)),
        zk_models=zk_registrations({"zk_model": [{"model_id": model_id.hex()}]},
                                   tiny.store.root),
    )
    ledger_key = SigningKey.derive("zk-services/ledger")
    port, node_port = free_port(), free_port()
    address = peer_address("127.0.0.1", port, ledger_key.public.raw)
    node_address = peer_address("127.0.0.1", node_port, NODE.public.raw)
    chain_id = genesis_chain_id(
        RegisterBeacon(DevnetBeacon(BEACON_SECRET).public_key, 0), SetParams(params))
    honest = [job(model_id, nonce, fee, chain_id) for nonce in range(3)]
    replayed = job(model_id, 3, fee, chain_id)
    verdicts: dict[bytes, Attestation | Evidence] = {}
    draws: list[bool] = []

    async def main() -> None:
        host = PeerHost(ledger_key, f"/ip4/127.0.0.1/tcp/{port}", (), Metrics())
        ledger = LedgerService(host, Ledger.open(tiny.root / "ledger.sqlite"),
                               DevnetBeacon(BEACON_SECRET), genesis, 1.0, host.metrics)
        node_host = PeerHost(NODE, f"/ip4/127.0.0.1/tcp/{node_port}", [address], Metrics())
        node = InferenceNode(NODE, {}, zk_provers={model_id: ZkProver(tiny.artifacts)})
        node_service = NodeService(
            NodeConfig(ledger=address, http_port=free_port(), fee=fee), node, CLIENT,
            [tiny.entry], node_host, SigningJournal(tiny.root / "node" / "journal.sqlite"),
            node_host.metrics, transaction_signer(NODE),
        )
        validator_host = PeerHost(VALIDATOR, f"/ip4/127.0.0.1/tcp/{free_port()}",
                                  [address, node_address], Metrics())
        validator = Validator(
            VALIDATOR, {}, zk_keys={model_id: ZkKey.from_artifacts(tiny.artifacts,
                                                                   tiny.entry.params)},
        )
        validator_service = ValidatorService(
            ValidatorConfig(ledger=address, http_port=free_port()), validator, validator_host,
            SigningJournal(tiny.root / "validator" / "journal.sqlite"), validator_host.metrics,
            transaction_signer(VALIDATOR),
        )
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(ledger.run)
            nursery.start_soon(node_service.run, shutdown)
            nursery.start_soon(validator_service.run, shutdown)
            with trio.fail_after(30):
                while not (node_service.bonded and node_service.zk_checked
                           and VALIDATOR.public.raw in validator_service.ledger.validators
                           and validator_service.zk_checked.is_set()
                           and validator_service.health()[0] and not node_service.not_ready()):
                    await trio.sleep(0.1)
            assert validator.zk_keys and not validator_service.zk_refused
            assert validator_host.metrics.registry.get_sample_value("assay_ready") == 1

            # honest jobs, proved by the node service and recorded on the ledger
            for request in honest:
                _, commitment = await node_service.execute(request)
                assert commitment.mode == "zk"
            # a forged one: job 0's proof replayed for another input, as the node would serve it
            first = node_service.recorded(honest[0].job_id)
            assert first is not None
            proof = ZkProof.decode(first[2].aux)
            output = proof.output_tensor()
            forged = Commitment(
                job_id=replayed.job_id, model_id=model_id,
                input_hash=tensor_hash(replayed.input), output_hash=tensor_hash(output),
                node=NODE.public.raw, chain_id=chain_id, mode="zk", aux=first[2].aux,
            ).signed(NODE)
            node_service.journal.record(
                COMMITMENT, replayed.job_id, forged.encode(),
                codec.encode({"request": replayed.encode(), "output": output}),
            )
            before = await node_service.ledger.call("account", account=NODE.public.raw)
            await node_service.ledger.call("record_job", request=replayed.encode(),
                                           commitment=forged.encode())
            await node_service.gossip.submit(forged.encode())

            with trio.fail_after(60):
                while True:
                    jobs = [await node_service.ledger.call("job", job_id=r.job_id)
                            for r in (*honest, replayed)]
                    if (all(VALIDATOR.public.raw in j["attested_by"] for j in jobs[:3])
                            and jobs[3]["status"] == "refunded"):
                        break
                    await trio.sleep(0.2)
            after = await node_service.ledger.call("account", account=NODE.public.raw)
            assert after["node_stake"] == before["node_stake"] - params.fraud_slash
            assert not jobs[3]["open_dispute"]  # judged on the evidence alone
            assert all(j["zk"] for j in jobs)
            for request, recorded in zip((*honest, replayed), jobs, strict=True):
                beacon = await node_service.ledger.call("beacon", round=recorded["sample_round"])
                draws.append(sampled(beacon["randomness"], request.job_id,
                                     recorded["commitment_id"], params.sample_ppm))
                kept = validator_service.journal.get("audit", request.job_id)
                assert kept is not None
                verdicts[request.job_id] = (
                    Evidence.decode(kept[0]) if kept[1].startswith(b"accuse")
                    else Attestation.decode(kept[0])
                )
                if request is replayed:
                    assert kept[1] == b"accuse_invalid_proof\n" + replayed.encode()
            shutdown.set()
            await trio.sleep(0.5)
            nursery.cancel_scope.cancel()
        ledger.close()

    with proof_checker(tiny.store.root):
        trio.run(main)
    assert not all(draws), "the draw sampled every job; the rate is meant to sample none"
    for request in honest:
        attestation = verdicts[request.job_id]
        assert isinstance(attestation, Attestation) and attestation.verdict is Verdict.VALID
    evidence = verdicts[replayed.job_id]
    assert isinstance(evidence, Evidence) and evidence.offence is Offence.INVALID_PROOF
    assert "another input" in evidence.detail


# -- the validator's keys against the ledger's registration ----------------------------------------


def test_a_validator_drops_a_zk_key_the_ledger_registered_differently(tmp_path: Path) -> None:
    vk, settings, srs = b"registered key", json.dumps({"model_input_scales": [7]}).encode(), b"SRS"
    same, other, unregistered = sha256(b"same"), sha256(b"other"), sha256(b"unregistered")
    genesis = Genesis(
        params=LedgerParams.default(), mints=(),
        zk_models=tuple(RegisterZkModel(m, vk, settings, sha256(srs)) for m in (same, other)),
    )
    (tmp_path / "settings.json").write_bytes(settings)
    (tmp_path / "srs").write_bytes(srs)

    def key(model_id: bytes, verifying_key: bytes) -> ZkKey:
        return ZkKey(model_id=model_id, vk_path=tmp_path / "vk", input_scale=7,
                     settings_path=tmp_path / "settings.json", srs_path=tmp_path / "srs",
                     vk_sha256=sha256(verifying_key))

    ledger_key = SigningKey.derive("zk-services/ledger-2")
    port = free_port()
    address = peer_address("127.0.0.1", port, ledger_key.public.raw)
    unreadable = sha256(b"unreadable")
    validator = Validator(VALIDATOR, {}, zk_keys={
        same: key(same, vk), other: key(other, b"a key of our own"),
        unregistered: key(unregistered, vk),
        unreadable: dataclasses.replace(key(unreadable, vk), srs_path=tmp_path / "missing"),
    })

    async def main() -> None:
        host = PeerHost(ledger_key, f"/ip4/127.0.0.1/tcp/{port}", (), Metrics())
        ledger = LedgerService(host, Ledger.open(tmp_path / "ledger.sqlite"),
                               DevnetBeacon(BEACON_SECRET), genesis, 0.5, host.metrics)
        validator_host = PeerHost(VALIDATOR, f"/ip4/127.0.0.1/tcp/{free_port()}", [address],
                                  Metrics())
        service = ValidatorService(ValidatorConfig(ledger=address, http_port=free_port()),
                                   validator, validator_host,
                                   SigningJournal(tmp_path / "journal.sqlite"),
                                   validator_host.metrics, transaction_signer(VALIDATOR))
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(ledger.run)
            nursery.start_soon(service.run, shutdown)
            with trio.fail_after(20):
                await service.zk_checked.wait()
            await trio.sleep(0.1)
            assert set(validator.zk_keys) == {same, unregistered}
            assert set(service.zk_refused) == {other, unreadable}
            assert "the ledger registered verifying key" in service.zk_refused[other]
            assert "cannot be read" in service.zk_refused[unreadable]
            ready, checks = service.health()
            assert not ready and "the ledger registered verifying key" in checks["reason"]
            assert validator_host.metrics.registry.get_sample_value("assay_ready") == 0
            shutdown.set()
            await trio.sleep(0.2)
            nursery.cancel_scope.cancel()
        ledger.close()

    trio.run(main)


# -- the commands refuse zk models they cannot serve -----------------------------------------------


@pytest.fixture(autouse=True)
def _root_logging() -> Iterator[None]:
    """The service commands configure the root logger; put it back after each test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _service_config(tmp: Path, role: str, registry: Path, zk_store: Path) -> Path:
    devnet._key(tmp, role)
    settings = {"keystore": f"keys/{role}.json", "password_file": f"keys/{role}.pass",
                "data_dir": f"data/{role}", "registry": str(registry), "zk_store": str(zk_store),
                "ledger": peer_address("127.0.0.1", 1, SigningKey.derive("nobody").public.raw)}
    path = tmp / f"{role}.toml"
    path.write_text(to_toml(role, settings))
    return path


@pytest.mark.parametrize("role", ["node", "validator"])
def test_a_service_refuses_a_zk_model_without_its_artifacts(
    tiny: TinyZk, tmp_path: Path, capsys: pytest.CaptureFixture[str], role: str
) -> None:
    config = _service_config(tmp_path, role, tiny.registry.root, tmp_path / "empty-zk")
    code, _, err = run([role, "run", "--config", str(config)], capsys)
    assert code == 2
    assert "zk model tiny" in err and tiny.entry.model_id.hex() in err
    assert "no zk artifacts" in err and "assay zk setup tiny" in err


@pytest.mark.parametrize("role", ["node", "validator"])
def test_a_service_refuses_zk_artifacts_the_registry_does_not_pin(
    tiny: TinyZk, tmp_path: Path, capsys: pytest.CaptureFixture[str], role: str
) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    entry = registry.add(tiny.entry.path, mode="zk", name="tiny")
    registry.update_params(entry.model_id, {**tiny.entry.params, PARAM_VK: "00" * 32})
    config = _service_config(tmp_path, role, registry.root, tiny.store.root)
    code, _, err = run([role, "run", "--config", str(config)], capsys)
    assert code == 2
    assert "zk model tiny" in err and f"the registry pins {'00' * 32}" in err
    assert "assay zk setup" in err


def test_the_ledger_refuses_a_genesis_zk_model_missing_from_its_zk_store(
    tiny: TinyZk, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    devnet._key(tmp_path, "ledger")
    (tmp_path / "beacon.secret").write_text("1234567\n")
    (tmp_path / "genesis.toml").write_text(
        f'[[zk_model]]\nmodel_id = "{tiny.entry.model_id.hex()}"\n'
    )
    (tmp_path / "ledger.toml").write_text(to_toml("ledger", {
        "keystore": "keys/ledger.json", "password_file": "keys/ledger.pass",
        "database": "ledger.sqlite", "beacon_secret_file": "beacon.secret",
        "genesis": "genesis.toml", "zk_store": "empty-zk",
    }))
    code, _, err = run(["ledger", "run", "--config", str(tmp_path / "ledger.toml")], capsys)
    assert code == 2
    assert "genesis [[zk_model]] table 1" in err and tiny.entry.model_id.hex() in err
    assert str(tmp_path / "empty-zk") in err and "assay zk setup" in err


# -- the genesis [[zk_model]] tables --------------------------------------------------------------


def test_a_genesis_zk_model_registers_the_stored_keys(tiny: TinyZk) -> None:
    data = tomllib.loads(f'[[zk_model]]\nmodel_id = "{tiny.entry.model_id.hex()}"\n')
    (event,) = zk_registrations(data, tiny.store.root)
    assert event == RegisterZkModel(
        model_id=tiny.entry.model_id,
        verifying_key=tiny.artifacts.path(VK_FILE).read_bytes(),
        settings=tiny.artifacts.path(SETTINGS_FILE).read_bytes(),
        srs_sha256=tiny.artifacts.srs_sha256,
    )
    assert sha256(event.verifying_key) == tiny.artifacts.vk_sha256
    assert zk_registrations({}, tiny.store.root) == ()
    assert zk_registrations({"zk_model": []}, tiny.store.root) == ()


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[zk_model]\nmodel_id = "ab"\n', "must be a list of [[zk_model]] tables"),
        ('zk_model = "ab"\n', "must be a list of [[zk_model]] tables"),
        ('zk_model = ["ab"]\n', "table 1 is not a table with a model_id"),
        ("[[zk_model]]\n", "table 1 must hold exactly a model_id (hex); it holds []"),
        ('[[zk_model]]\nmodel = "ab"\n', "table 1 must hold exactly a model_id"),
        ('[[zk_model]]\nmodel_id = "ab"\nname = "x"\n', "it holds ['model_id', 'name']"),
        ('[[zk_model]]\nmodel_id = "xyz"\n', "model_id 'xyz' is not 64 hex digits"),
        ('[[zk_model]]\nmodel_id = "abcd"\n', "model_id 'abcd' is not 64 hex digits"),
        ("[[zk_model]]\nmodel_id = 7\n", "model_id 7 is not 64 hex digits"),
    ],
)
def test_a_malformed_genesis_zk_model_is_refused_naming_the_problem(
    tmp_path: Path, toml: str, message: str
) -> None:
    with pytest.raises(CommandError) as refused:
        zk_registrations(tomllib.loads(toml), tmp_path)
    assert message in str(refused.value)


def test_a_genesis_zk_model_without_artifacts_or_listed_twice_is_refused(
    tiny: TinyZk, tmp_path: Path
) -> None:
    model = tiny.entry.model_id.hex()
    missing = sha256(b"not set up").hex()
    data = {"zk_model": [{"model_id": model}, {"model_id": missing}]}
    with pytest.raises(CommandError, match=f"table 2, model {missing}: no zk artifacts"):
        zk_registrations(data, tiny.store.root)
    with pytest.raises(CommandError, match="run `assay zk setup`"):
        zk_registrations(data, tiny.store.root)
    twice = {"zk_model": [{"model_id": model}, {"model_id": model.upper()}]}
    with pytest.raises(CommandError, match=f"table 2: model {model.upper()} is listed twice"):
        zk_registrations(twice, tiny.store.root)
