"""Exact-mode verdicts: re-execution, three values, signed findings."""

from __future__ import annotations

import dataclasses

import pytest
from torch import nn

from protocol.codec import Tensor
from protocol.keys import SigningKey
from protocol.messages import Attestation, Evidence, JobRequest, Offence, Verdict
from protocol.sampling import PPM, draw_auditor, draw_dispute_committee, sampled
from prover import zoo
from prover.adversary import SubstituteModel
from prover.node import InferenceNode, JobRejected
from prover.runtime import DeterministicRuntime
from verifier.reexecute import check_exact
from verifier.validator import Validator

CLIENT = SigningKey.derive("verifier-test/client")
NODE = SigningKey.derive("verifier-test/node")
VALIDATOR = SigningKey.derive("verifier-test/validator")
MODEL_ID = b"\x11" * 32
RUNTIME = DeterministicRuntime()


@pytest.fixture(scope="module")
def mlp() -> zoo.ZooModel:
    return zoo.build("mlp", seed=3)


def _request(model: zoo.ZooModel, seed: int = 0, model_id: bytes = MODEL_ID) -> JobRequest:
    return JobRequest(
        model_id=model_id,
        input=Tensor.from_torch(model.example_input(seed)),
        client=CLIENT.public.raw,
        node=NODE.public.raw,
        nonce=seed,
        fee=110,
        expiry_round=10,
        chain_id=b"\x0c" * 32,
    ).signed(CLIENT)


def test_honest_job_is_valid(mlp: zoo.ZooModel) -> None:
    node = InferenceNode(NODE, {MODEL_ID: mlp.module}, RUNTIME)
    request = _request(mlp)
    result = node.handle(request)
    check = check_exact(request, result.commitment, mlp.module, RUNTIME)
    assert check.verdict is Verdict.VALID
    assert check.observed_hash == result.commitment.output_hash
    finding = Validator(VALIDATOR, {MODEL_ID: mlp.module}, RUNTIME).audit(
        request, result.commitment, beacon_round=1
    )
    assert isinstance(finding, Attestation) and finding.verdict is Verdict.VALID
    finding.verify()


def test_substituted_model_is_fraud_with_self_contained_evidence(mlp: zoo.ZooModel) -> None:
    cheap = zoo.build("mlp", seed=4).module
    node = InferenceNode(
        NODE, {MODEL_ID: mlp.module}, RUNTIME, SubstituteModel({MODEL_ID: cheap}, PPM, seed=0)
    )
    request = _request(mlp)
    result = node.handle(request)
    finding = Validator(VALIDATOR, {MODEL_ID: mlp.module}, RUNTIME).audit(
        request, result.commitment, beacon_round=1
    )
    assert isinstance(finding, Evidence)
    finding.verify()
    assert finding.offence is Offence.MISMATCH
    assert finding.accused() == result.commitment
    assert finding.observed_hash != result.commitment.output_hash


def test_wrong_input_hash_is_fraud(mlp: zoo.ZooModel) -> None:
    node = InferenceNode(NODE, {MODEL_ID: mlp.module}, RUNTIME)
    request = _request(mlp)
    result = node.handle(request)
    lying = dataclasses.replace(result.commitment, input_hash=b"\x00" * 32).signed(NODE)
    check = check_exact(request, lying, mlp.module, RUNTIME)
    assert check.verdict is Verdict.FRAUD and "input hash" in check.reason


def test_missing_model_or_failed_run_is_inconclusive(mlp: zoo.ZooModel) -> None:
    node = InferenceNode(NODE, {MODEL_ID: mlp.module}, RUNTIME)
    request = _request(mlp)
    commitment = node.handle(request).commitment
    assert check_exact(request, commitment, None, RUNTIME).verdict is Verdict.INCONCLUSIVE

    class Broken(nn.Module):
        def forward(self, x: object) -> object:
            raise RuntimeError("out of memory")

    check = check_exact(request, commitment, Broken(), RUNTIME)
    assert check.verdict is Verdict.INCONCLUSIVE and "out of memory" in check.reason


def test_node_refuses_unknown_model_and_bad_signature(mlp: zoo.ZooModel) -> None:
    node = InferenceNode(NODE, {MODEL_ID: mlp.module}, RUNTIME)
    with pytest.raises(JobRejected, match="does not serve model"):
        node.handle(_request(mlp, model_id=b"\x22" * 32))
    forged = dataclasses.replace(_request(mlp), fee=1)
    with pytest.raises(Exception, match="does not verify"):
        node.handle(forged)
    with pytest.raises(JobRejected, match="no served job"):
        node.job_data(b"\x33" * 32)


def test_sampling_rate_is_respected_and_assignment_is_stable() -> None:
    beacon = b"\x42" * 32
    jobs = [(bytes([i % 256, i // 256]) * 16, bytes([7, i % 256]) * 16) for i in range(4000)]
    hits = sum(sampled(beacon, j, c, 100_000) for j, c in jobs)
    assert 320 < hits < 480  # p = 0.1 of 4000, within 4.3 sigma
    assert not any(sampled(beacon, j, c, 0) for j, c in jobs)
    assert all(sampled(beacon, j, c, PPM) for j, c in jobs)
    validators = [bytes([v]) * 32 for v in range(5)]
    job_id = jobs[0][0]
    first = draw_auditor(beacon, job_id, 0, validators)
    assert first == draw_auditor(beacon, job_id, 0, list(reversed(validators)))
    assert draw_auditor(beacon, job_id, 0, []) is None
    # a later draw is keyed by its number: the same job meets another auditor, predictably
    drawn = {draw_auditor(beacon, job_id, n, validators) for n in range(8)}
    assert len(drawn) > 1
    committee = draw_dispute_committee(beacon, job_id, 0, validators, 3)
    assert committee == draw_dispute_committee(beacon, job_id, 0, validators[::-1], 3)
    assert len(set(committee)) == 3
