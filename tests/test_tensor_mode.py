"""The tensor mode: honest float jobs pass wherever and however they ran; every cheat is FRAUD.

Nodes and validators are the real :class:`InferenceNode` and
:class:`Validator`; models are the zoo's float models, calibrated on this
machine's honest variation (threads, batch sizes and rows). Each attack is
performed by the node (or on its signed commitment) and judged by a validator.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from protocol import codec
from protocol.codec import Tensor
from protocol.keys import SigningKey
from protocol.messages import Commitment, JobRequest, Verdict
from prover import zoo
from prover.model_store import save_model
from prover.node import InferenceNode, load_registered_tensors, tensor_hash
from prover.registry import ModelRegistry
from prover.tensor import (
    PROJECTIONS,
    TensorAuxError,
    TensorJobResult,
    TensorModel,
    decode_aux,
    run_tensor_jobs,
)
from verifier.tensor import FRAUD_SCORE, REGISTRY_KEY, check_tensor
from verifier.tensor_calibration import calibrate_tensor
from verifier.validator import Validator

KINDS = ("mlp", "cnn", "gpt2", "bert")
NODE = SigningKey.derive("tensor/node")
CLIENT = SigningKey.derive("tensor/client")
VALIDATOR = SigningKey.derive("tensor/validator")
CHAIN = b"\x0c" * 32


MODEL_IDS: dict[int, bytes] = {}
"""Registered model id of each loaded TensorModel (by object identity)."""


@functools.cache
def registered(kind: str, root: str) -> TensorModel:
    """The zoo model, saved, registered in the tensor mode and calibrated (threads, batches)."""
    directory = Path(root) / kind
    built = zoo.build(kind, seed=3)
    save_model(directory, built.module, built.kind, built.config)
    registry = ModelRegistry(Path(root) / "registry")
    entry = registry.add(directory, name=kind)
    assert entry.mode == "tensor"
    registry.update_params(entry.model_id, {
        REGISTRY_KEY: calibrate_tensor(directory, jobs=8, isa_paths=False, batch_sizes=(1, 8))
    })
    model = load_registered_tensors(registry)[entry.model_id]
    MODEL_IDS[id(model)] = entry.model_id
    return model


def model_id(model: TensorModel) -> bytes:
    return MODEL_IDS[id(model)]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("tensor"))


def request_for(model: TensorModel, kind: str, seed: int, nonce: int = 0) -> JobRequest:
    x = zoo.example_input(kind, zoo.build(kind, 3).config, 500 + seed)
    return JobRequest(model_id=model_id(model), input=Tensor.from_torch(x),
                      client=CLIENT.public.raw, node=NODE.public.raw, nonce=nonce, fee=10,
                      expiry_round=10, chain_id=CHAIN).signed(CLIENT)


def commit(request: JobRequest, result: TensorJobResult, mode: str = "tensor",
           aux: bytes | None = None, output: Tensor | None = None) -> Commitment:
    out = output if output is not None else result.output
    return Commitment(job_id=request.job_id, model_id=request.model_id,
                      input_hash=tensor_hash(request.input), output_hash=tensor_hash(out),
                      node=NODE.public.raw, chain_id=request.chain_id, mode=mode,
                      aux=result.aux() if aux is None else aux).signed(NODE)


# --- honest ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_honest_jobs_are_valid_alone_and_inside_a_batch(kind: str, root: str) -> None:
    model = registered(kind, root)
    node = InferenceNode(NODE, {}, tensors={model_id(model): model})
    requests = [request_for(model, kind, seed, nonce=seed) for seed in range(8)]
    batched = run_tensor_jobs(model, [r.input.to_torch() for r in requests],
                              [r.job_id for r in requests], threads=2)
    for request, in_batch in zip(requests, batched, strict=True):
        alone = node.handle(request).commitment
        for commitment in (alone, commit(request, in_batch)):
            judged = check_tensor(request, commitment, model)
            assert judged.verdict is Verdict.VALID, judged.reason
            assert judged.comparison is not None and judged.comparison.score <= 0.5


# --- attacks ---------------------------------------------------------------------------------


def other_seed(kind: str) -> nn.Module:
    return zoo.build(kind, seed=4).module


def int8_weights(module: nn.Module) -> nn.Module:
    cheap = copy.deepcopy(module)
    with torch.no_grad():
        for layer in cheap.modules():
            if isinstance(layer, nn.Linear | nn.Conv2d):
                step = layer.weight.abs().max() / 127
                layer.weight.copy_(torch.round(layer.weight / step) * step)
    return cheap


def cheating_result(model: TensorModel, request: JobRequest,
                    module: nn.Module | None = None, dtype: str | None = None) -> TensorJobResult:
    ran = model if module is None else TensorModel(module)
    return run_tensor_jobs(ran, [request.input.to_torch()], [request.job_id], dtype=dtype)[0]


def tamper(t: Tensor, index: int = 0, factor: float = 1.5) -> Tensor:
    values = t.to_torch().clone()
    flat = values.view(-1)
    flat[index] = flat[index] * factor + 0.1
    return Tensor.from_torch(values)


@pytest.mark.parametrize("kind", KINDS)
def test_every_named_cheat_is_fraud(kind: str, root: str) -> None:
    model = registered(kind, root)
    request = request_for(model, kind, seed=1)
    honest = cheating_result(model, request)
    attacks: dict[str, Callable[[], Commitment]] = {
        "other-seed weights": lambda: commit(
            request, cheating_result(model, request, other_seed(kind))),
        "int8 weights": lambda: commit(
            request, cheating_result(model, request, int8_weights(model.module))),
        "bfloat16 instead of float32": lambda: commit(
            request, cheating_result(model, request, dtype="bfloat16")),
        "output tampered": lambda: commit(
            request, TensorJobResult(tamper(honest.output), honest.sketch)),
        "sketch tampered": lambda: commit(
            request, TensorJobResult(honest.output, tamper(honest.sketch, 3))),
    }
    for name, attack in attacks.items():
        judged = check_tensor(request, attack(), model)
        assert judged.verdict is Verdict.FRAUD, (name, judged.reason)
        assert judged.comparison is None or judged.comparison.score > FRAUD_SCORE


def test_a_changed_input_element_is_fraud(root: str) -> None:
    model = registered("mlp", root)
    request = request_for(model, "mlp", seed=2)
    x = request.input.to_torch().clone()
    x[0, 0, 14, 14] = 1.0 - x[0, 0, 14, 14]
    ran = run_tensor_jobs(model, [x], [request.job_id])[0]
    assert check_tensor(request, commit(request, ran), model).verdict is Verdict.FRAUD


def test_a_node_cannot_dodge_the_tensor_check_by_writing_another_mode(root: str) -> None:
    model = registered("cnn", root)
    request = request_for(model, "cnn", seed=3)
    cheat = cheating_result(model, request, other_seed("cnn"))
    for mode in ("exact", "llm", "zk"):
        commitment = commit(request, cheat, mode=mode)
        validator = Validator(VALIDATOR, {}, tensors={model_id(model): model})
        assert validator.vote(request, commitment, 1).verdict is Verdict.FRAUD, mode


# --- malformed commitments (signed by the node: FRAUD, never VALID) ---------------------------


def _aux(**fields: object) -> bytes:
    return codec.encode(fields)


@pytest.mark.parametrize(
    ("name", "aux", "message"),
    [
        ("truncated sketch", lambda h: _aux(output=h.output, sketch=Tensor.from_torch(
            h.sketch.to_torch()[:PROJECTIONS - 1])), "field 'sketch' has shape"),
        ("long sketch", lambda h: _aux(output=h.output, sketch=Tensor.from_torch(
            torch.zeros(PROJECTIONS + 1))), "field 'sketch' has shape"),
        ("int sketch", lambda h: _aux(output=h.output, sketch=Tensor.from_torch(
            torch.zeros(PROJECTIONS, dtype=torch.int32))), "field 'sketch' must be a float32"),
        ("missing sketch", lambda h: _aux(output=h.output), "must hold exactly"),
        ("extra field", lambda h: _aux(output=h.output, sketch=h.sketch, note="hi"),
         "must hold exactly"),
        ("not canonical", lambda h: b"\xc1garbage", "not a canonical tensor-mode record"),
        ("empty", lambda h: b"", "not a canonical tensor-mode record"),
    ],
)
def test_malformed_aux_is_fraud_naming_the_field(
    name: str, aux: Callable[[TensorJobResult], bytes], message: str, root: str
) -> None:
    model = registered("mlp", root)
    request = request_for(model, "mlp", seed=4)
    honest = cheating_result(model, request)
    with pytest.raises(TensorAuxError, match=message):
        decode_aux(aux(honest))
    judged = check_tensor(request, commit(request, honest, aux=aux(honest)), model)
    assert judged.verdict is Verdict.FRAUD and message.split()[0] in judged.reason, judged.reason


def test_an_output_other_than_the_hashed_one_is_fraud(root: str) -> None:
    model = registered("mlp", root)
    request = request_for(model, "mlp", seed=5)
    honest = cheating_result(model, request)
    shown = tamper(honest.output)  # what the client got, hashed; aux holds the honest output
    judged = check_tensor(request, commit(request, honest, output=shown), model)
    assert judged.verdict is Verdict.FRAUD and "not the output it hashes" in judged.reason


@pytest.mark.parametrize("bad", ["nan", "shape"])
def test_non_finite_or_reshaped_outputs_are_fraud(bad: str, root: str) -> None:
    model = registered("mlp", root)
    request = request_for(model, "mlp", seed=6)
    honest = cheating_result(model, request)
    values = honest.output.to_torch().clone()
    if bad == "nan":
        values[0, 0] = math.nan
    else:
        values = values.reshape(2, 5)
    forged = TensorJobResult(Tensor.from_torch(values), honest.sketch)
    assert check_tensor(request, commit(request, forged), model).verdict is Verdict.FRAUD


def test_without_the_model_or_its_tolerances_a_validator_never_accuses(root: str) -> None:
    model = registered("mlp", root)
    request = request_for(model, "mlp", seed=7)
    cheat = commit(request, cheating_result(model, request, other_seed("mlp")))
    uncalibrated = TensorModel(model.module)
    assert check_tensor(request, cheat, None).verdict is Verdict.INCONCLUSIVE
    assert check_tensor(request, cheat, uncalibrated).verdict is Verdict.INCONCLUSIVE


def test_tolerances_of_another_dtype_are_not_used(root: str, tmp_path: Path) -> None:
    built = zoo.build("mlp", seed=3)
    save_model(tmp_path / "m", built.module, built.kind, built.config)
    registry = ModelRegistry(tmp_path / "registry")
    entry = registry.add(tmp_path / "m", params={"dtype": "bfloat16"})
    float32_record = calibrate_tensor(tmp_path / "m", jobs=4, isa_paths=False, threads=(1,),
                                      batch_sizes=(1,))
    registry.update_params(entry.model_id, {REGISTRY_KEY: float32_record})
    loaded = load_registered_tensors(registry)[entry.model_id]
    assert loaded.dtype == "bfloat16" and loaded.tolerances is None
