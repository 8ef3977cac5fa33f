"""The zk mode: a proof binds the model, the input and the output, and nothing else verifies.

Real EZKL proofs on a tiny MLP (16 inputs, a 2^11-row circuit): keys are set
up once per test session and every proof is made once, so the whole file
takes well under a minute on two cores.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from protocol.codec import Tensor
from protocol.errors import MalformedMessage
from protocol.hashing import sha256
from protocol.keys import SigningKey
from protocol.messages import Commitment, Evidence, JobRequest, Offence, Verdict
from prover.model_store import save_model
from prover.node import InferenceNode, tensor_hash
from prover.registry import ModelRegistry
from prover.zk import (
    PARAM_SRS,
    CircuitChoice,
    DevnetSrsWarning,
    SrsMismatch,
    ZkArtifacts,
    ZkArtifactStore,
    ZkError,
    ZkProof,
    ZkProver,
    felt_hex,
    small_mlp,
)
from slashing import LedgerParams, RegisterBeacon, SetParams, genesis_chain_id
from slashing import constants as c
from verifier.validator import Validator
from verifier.zk import ZkKey, check_zk

pytest.importorskip("ezkl")

TINY = {"image_size": 4, "in_channels": 1, "n_hidden1": 8, "n_hidden2": 8, "n_classes": 10}
CHOICE = CircuitChoice(max_logrows=12)
NODE = SigningKey.derive("test-zk/node")
CLIENT = SigningKey.derive("test-zk/client")
VALIDATOR = SigningKey.derive("test-zk/validator")


@dataclass
class ZkModel:
    model_id: bytes
    artifacts: ZkArtifacts
    params: dict[str, str | int]
    prover: ZkProver
    key: ZkKey


@dataclass
class ZkWorld:
    store: ZkArtifactStore
    registry: ModelRegistry
    a: ZkModel
    b: ZkModel
    inputs: list[torch.Tensor]
    proofs: dict[tuple[str, int], ZkProof]

    def proof(self, model: str, input_index: int) -> ZkProof:
        """Each (model, input) is proved once per session."""
        if (model, input_index) not in self.proofs:
            prover = (self.a if model == "a" else self.b).prover
            self.proofs[model, input_index] = prover.prove(self.inputs[input_index])
        return self.proofs[model, input_index]


def _inputs(n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return [torch.rand((1, 1, 4, 4), generator=g) for _ in range(n)]


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZkWorld]:
    root = tmp_path_factory.mktemp("zk")
    store = ZkArtifactStore(root / "zk")
    registry = ModelRegistry(root / "registry")
    inputs = _inputs(4)
    models = []
    with pytest.warns(DevnetSrsWarning):
        srs = store.devnet_srs(CHOICE.max_logrows)
    for name, seed in (("a", 1), ("b", 2)):
        module = small_mlp(seed, TINY)
        save_model(root / name, module, "mlp", TINY)
        entry = registry.add(root / name, mode="zk", name=name)
        artifacts = store.setup(entry.model_id, module, inputs, srs=srs, choice=CHOICE)
        entry = registry.update_params(entry.model_id, artifacts.registry_params())
        models.append(
            ZkModel(
                model_id=entry.model_id,
                artifacts=artifacts,
                params=dict(entry.params),
                prover=ZkProver(artifacts),
                key=ZkKey.from_artifacts(artifacts, entry.params),
            )
        )
    yield ZkWorld(store, registry, models[0], models[1], inputs, {})


CHAIN = genesis_chain_id(RegisterBeacon(bytes(48), 0), SetParams(LedgerParams.default()))
"""The chain of the ledger the tests below record on (and a stand-in for the others)."""


def request_for(model: ZkModel, x: torch.Tensor, nonce: int = 0, fee: int = 1) -> JobRequest:
    return JobRequest(
        model_id=model.model_id, input=Tensor.from_torch(x), client=CLIENT.public.raw,
        node=NODE.public.raw, nonce=nonce, fee=fee, expiry_round=10**6, chain_id=CHAIN,
    ).signed(CLIENT)


def commit(request: JobRequest, proof: ZkProof, output: Tensor | None = None) -> Commitment:
    """What a node signs for ``request`` with ``proof`` (and, to forge, another output)."""
    out = output if output is not None else proof.output_tensor()
    return Commitment(
        job_id=request.job_id, model_id=request.model_id,
        input_hash=tensor_hash(request.input), output_hash=tensor_hash(out),
        node=NODE.public.raw, chain_id=request.chain_id, mode="zk", aux=proof.encode(),
    ).signed(NODE)


def test_valid_proof_verifies_and_its_output_tracks_the_float_model(world: ZkWorld) -> None:
    request = request_for(world.a, world.inputs[0])
    proof = world.proof("a", 0)
    check = check_zk(request, commit(request, proof), world.a.key)
    assert check.verdict is Verdict.VALID, check.reason
    assert len(proof.proof) < 8192 and len(proof.instances) == 2
    module = small_mlp(1, TINY)
    with torch.inference_mode():
        expected = module(world.inputs[0])
    # each value is within a few steps of the scale (2^-13 or 2^-7) of the float32 model
    assert torch.allclose(proof.output_tensor().to_torch(), expected, atol=0.05)


def test_tampered_proof_is_rejected(world: ZkWorld) -> None:
    request = request_for(world.a, world.inputs[0])
    proof = world.proof("a", 0)
    flipped = bytearray(proof.proof)
    flipped[len(flipped) // 2] ^= 0x01
    forged = dataclasses.replace(proof, proof=bytes(flipped))
    check = check_zk(request, commit(request, forged), world.a.key)
    assert check.verdict is Verdict.FRAUD
    assert "does not verify under the registered verifying key" in check.reason


def test_proof_from_another_model_is_rejected(world: ZkWorld) -> None:
    # model b's honest proof on the same input, passed off as model a's job
    request = request_for(world.a, world.inputs[0])
    check = check_zk(request, commit(request, world.proof("b", 0)), world.a.key)
    assert check.verdict is Verdict.FRAUD
    assert "does not verify under the registered verifying key" in check.reason
    assert "another model" in check.reason


def test_proof_for_another_input_is_rejected(world: ZkWorld) -> None:
    request = request_for(world.a, world.inputs[0])
    check = check_zk(request, commit(request, world.proof("a", 1)), world.a.key)
    assert check.verdict is Verdict.FRAUD
    assert "another input" in check.reason


def test_proof_for_another_output_is_rejected(world: ZkWorld) -> None:
    request = request_for(world.a, world.inputs[0])
    proof = world.proof("a", 0)
    ints = proof.output.to_torch().clone()
    ints[0, 0] += 1  # one logit one step higher, the node re-hashing it consistently
    forged = dataclasses.replace(proof, output=Tensor.from_torch(ints))
    check = check_zk(request, commit(request, forged), world.a.key)
    assert check.verdict is Verdict.FRAUD
    assert "another output" in check.reason
    # or the proof left alone and only the committed output changed
    other = Tensor.from_torch(proof.output_tensor().to_torch() + 1.0)
    check = check_zk(request, commit(request, proof, output=other), world.a.key)
    assert check.verdict is Verdict.FRAUD
    assert "output hash is not the hash of the proof's output" in check.reason


def test_public_values_swapped_in_by_the_node_do_not_help(world: ZkWorld) -> None:
    # a proof for input 1 relabelled with input 0's hash still fails: the verifier
    # checks it against public values it computes itself
    request = request_for(world.a, world.inputs[0])
    honest, other = world.proof("a", 0), world.proof("a", 1)
    relabelled = dataclasses.replace(
        other, instances=(honest.instances[0], other.instances[1])
    )
    check = check_zk(request, commit(request, relabelled), world.a.key)
    assert check.verdict is Verdict.FRAUD
    assert "does not verify" in check.reason


def test_malformed_aux_and_missing_key(world: ZkWorld) -> None:
    request = request_for(world.a, world.inputs[0])
    bad = dataclasses.replace(commit(request, world.proof("a", 0)), aux=b"\x01").signed(NODE)
    check = check_zk(request, bad, world.a.key)
    assert check.verdict is Verdict.FRAUD and "no well-formed proof" in check.reason
    check = check_zk(request, commit(request, world.proof("a", 0)), None)
    assert check.verdict is Verdict.INCONCLUSIVE


def test_mismatching_srs_is_refused(world: ZkWorld, tmp_path: Path) -> None:
    srs = world.a.artifacts.srs_path
    copy = tmp_path / "ceremony.srs"
    copy.write_bytes(srs.read_bytes())
    assert world.store.import_srs(copy, world.a.artifacts.srs_sha256) == srs
    with pytest.raises(SrsMismatch, match="refusing it"):
        world.store.import_srs(copy, bytes(32))
    data = bytearray(copy.read_bytes())
    data[-1] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(SrsMismatch):
        world.store.import_srs(copy, world.a.artifacts.srs_sha256)
    # a registry that pins another SRS refuses these keys
    pins = {**world.a.params, PARAM_SRS: "00" * 32}
    with pytest.raises(ZkError, match=PARAM_SRS):
        ZkKey.from_artifacts(world.a.artifacts, pins)


def test_artifacts_are_reused_and_checked(world: ZkWorld) -> None:
    module = small_mlp(1, TINY)
    again = world.store.setup(
        world.a.model_id, module, world.inputs, srs=world.a.artifacts.srs_path, choice=CHOICE
    )
    assert again == world.a.artifacts
    manifest = json.loads((again.directory / "manifest.json").read_text())
    assert manifest["ezkl"] == "23.0.5" and manifest["files"]["vk.key"] == again.vk_sha256.hex()
    assert world.a.artifacts.vk_sha256 != world.b.artifacts.vk_sha256  # a model is its key
    assert world.registry.get(world.a.model_id).params == world.a.params


def test_node_proves_and_validator_checks_every_job(world: ZkWorld) -> None:
    node = InferenceNode(NODE, {}, zk_provers={world.a.model_id: world.a.prover})
    validator = Validator(VALIDATOR, {}, zk_keys={world.a.model_id: world.a.key})
    request = request_for(world.a, world.inputs[2], nonce=2)
    result = node.handle(request)
    assert result.commitment.mode == "zk" and result.commitment.verify()
    assert result.output == ZkProof.decode(result.commitment.aux).output_tensor()
    finding = validator.audit(request, result.commitment, beacon_round=1)
    assert not isinstance(finding, Evidence) and finding.verdict is Verdict.VALID
    # a forged proof becomes self-contained evidence that anyone can re-check
    forged = commit(request, world.proof("a", 1))
    evidence = validator.audit(request, forged, beacon_round=1)
    assert isinstance(evidence, Evidence) and evidence.offence is Offence.INVALID_PROOF
    decoded = Evidence.decode(evidence.encode()).verify()
    recheck = check_zk(request, decoded.accused().verify(), world.a.key)
    assert recheck.verdict is Verdict.FRAUD and recheck.reason == evidence.detail


def test_proof_aux_round_trips_and_refuses_junk() -> None:
    proof = ZkProof(
        proof=b"\x01" * 64, instances=(bytes(32), bytes(32)),
        output=Tensor.from_torch(torch.tensor([[3, -2]], dtype=torch.int64)), output_scale=7,
    )
    assert ZkProof.decode(proof.encode()) == proof
    assert proof.output_tensor().to_torch().tolist() == [[3 / 128, -2 / 128]]
    for junk in (b"", dataclasses.replace(proof, instances=(b"x",)).encode()):
        with pytest.raises(MalformedMessage):
            ZkProof.decode(junk)
    ezkl = pytest.importorskip("ezkl")
    for v in (-3, -1, 0, 1, 2**40):
        assert felt_hex(v) == ezkl.float_to_felt(float(v), 0)


def test_zk_setup_refuses_without_a_pinned_srs_or_a_zk_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from assay.cli import main

    save_model(tmp_path / "m", small_mlp(4, TINY), "mlp", TINY)
    registry = str(tmp_path / "reg")
    assert main(["models", "add", str(tmp_path / "m"), "--registry", registry]) == 0
    out = capsys.readouterr().out
    assert "suggested mode:" in out
    assert main(["zk", "setup", "m", "--registry", registry]) == 2
    assert "register it with `assay models add DIR --mode zk`" in capsys.readouterr().err
    ModelRegistry(Path(registry)).remove(ModelRegistry(Path(registry)).list()[0].model_id)
    main(["models", "add", str(tmp_path / "m"), "--registry", registry, "--mode", "zk",
          "--no-suggest"])
    assert main(["zk", "setup", "m", "--registry", registry]) == 2
    err = capsys.readouterr().err
    assert err.startswith("assay: error: no SRS is pinned") and err.count("\n") == 1


def test_the_ledger_rechecks_a_forged_proof_and_slashes_on_the_evidence_alone(
    world: ZkWorld, tmp_path: Path
) -> None:
    """Real EZKL proofs through the ledger: a tampered proof slashes its node, evidence
    against a proof that holds costs its accuser, and the log replays to the same state."""
    from protocol.errors import ReplayedMessage
    from slashing import (
        AccuseInvalidProof,
        Bond,
        Ledger,
        LedgerParams,
        Mint,
        RecordJob,
        RegisterBeacon,
        RegisterZkModel,
        SetParams,
        install_proof_checker,
        rules,
    )
    from slashing.events import BeaconRound
    from verifier.zk import LedgerProofChecker

    def beacon(n: int) -> BeaconRound:
        signature = bytes([n]) * 96
        return BeaconRound(n, signature, sha256(signature))

    a = world.a
    honest = world.proof("a", 0)
    flipped = bytearray(honest.proof)
    flipped[len(flipped) // 2] ^= 0x01
    tampered = dataclasses.replace(honest, proof=bytes(flipped))
    params = LedgerParams.default()
    fee = params.reward + params.verification_fee
    req_forged = request_for(a, world.inputs[0], nonce=100, fee=fee)
    req_honest = request_for(a, world.inputs[0], nonce=101, fee=fee)
    forged, valid = commit(req_forged, tampered), commit(req_honest, honest)
    validators = [SigningKey.derive(f"test-zk/ledger-validator-{i}") for i in range(2)]

    def evidence(key: SigningKey, req: JobRequest, com: Commitment) -> AccuseInvalidProof:
        finding = Evidence(offence=Offence.INVALID_PROOF, job_id=com.job_id,
                           accuser=key.public.raw, commitment=com.encode(),
                           chain_id=com.chain_id).signed(key)
        return AccuseInvalidProof(evidence=finding.encode(), request=req.encode())

    events = [
        RegisterBeacon(bytes(48), 0),
        SetParams(params),
        RegisterZkModel(a.model_id, a.artifacts.path("vk.key").read_bytes(),
                        a.artifacts.path("settings.json").read_bytes(), a.artifacts.srs_sha256),
        Mint(CLIENT.public.raw, 10 * fee),
        Mint(NODE.public.raw, 3 * c.MIN_STAKE[c.NODE]),
        Bond(NODE.public.raw, c.NODE, 3 * c.MIN_STAKE[c.NODE]),
        *(e for v in validators for e in (
            Mint(v.public.raw, c.MIN_STAKE[c.VALIDATOR]),
            Bond(v.public.raw, c.VALIDATOR, c.MIN_STAKE[c.VALIDATOR]))),
        beacon(0),
        RecordJob(req_forged.encode(), forged.encode()),
        RecordJob(req_honest.encode(), valid.encode()),
        beacon(1),
    ]
    previous = install_proof_checker(LedgerProofChecker(world.store))
    try:
        ledger = Ledger.open(tmp_path / "ledger.sqlite")
        for event in events:
            ledger.append(event)
        stake = ledger.state.accounts[NODE.public.raw].node.amount
        ledger.append(evidence(validators[0], req_forged, forged))
        state = ledger.state
        assert state.accounts[NODE.public.raw].node.amount == stake - params.fraud_slash
        assert state.jobs[req_forged.job_id].status.value == "refunded"
        assert state.counters.invalid_proofs == 1
        # the same job again, in other words: nobody is slashed twice
        with pytest.raises(ReplayedMessage):
            ledger.append(evidence(validators[1], req_forged, forged))
        # the honest proof holds: the accusation is false and its accuser pays
        ledger.append(evidence(validators[1], req_honest, valid))
        state = ledger.state
        assert state.counters.false_proof_accusations == 1
        assert state.accounts[validators[1].public.raw].validator.amount == (
            c.MIN_STAKE[c.VALIDATOR] - params.false_accusation_slash
        )
        live = ledger.state_hash()
        ledger.close()
        # replay re-runs EZKL when the verdicts are not remembered in this process
        rules._proof_verdicts.clear()
        reopened = Ledger.open(tmp_path / "ledger.sqlite")
        assert reopened.state_hash() == live
        assert reopened.verify() == len(events) + 2
        reopened.close()
    finally:
        install_proof_checker(previous)


@pytest.mark.slow
def test_zk_demo_catches_every_forged_proof(tmp_path: Path) -> None:
    from assay.demo import run_zk_demo

    summary = run_zk_demo(jobs=8, seed=7, workdir=tmp_path)
    assert summary.jobs == 8 and summary.forged == 2
    assert summary.caught == 2 and summary.missed == 0 and summary.honest_flagged == 0
    assert summary.valid == 6
    assert any("another input" in r for r in summary.reasons)
    # the ledger re-checked each piece of evidence and slashed the forger, no committee
    assert summary.evidence_accepted == 2 and summary.forger_jailed
    assert summary.forger_slashed == 2 * c.DEFAULT_FRAUD_SLASH
    assert summary.honest_stake_lost == 0 and summary.honest_earnings > 0
    assert summary.supply_conserved
