"""The inference node: run a client's job and sign a commitment to the result.

A node serves the models it loaded from its registry. For each job it checks
the client's signature, runs the model, and signs a
:class:`~protocol.messages.Commitment` binding the job id, model id, input
hash and output hash to its key. It keeps each job's request and output so
that a validator that samples the job can fetch them for re-execution.

Models registered in the ``exact`` mode are integer models
(:mod:`prover.integer`): their output is the same bytes wherever they run.
Models registered in the ``tensor`` mode (``tensors``) are float models: the
commitment's ``aux`` carries the output and a sketch of the last hidden
state, judged within calibrated tolerances (:mod:`prover.tensor`).

Models registered in the ``llm`` mode (``llms``) generate instead: the node
samples with the job's seeded sampler and commits to the token ids (output
hash) and a sketch of the final hidden states (``Commitment.aux``); see
:mod:`prover.llm`.

Models with a zk prover (``zk_provers``) prove every job instead: the output
is the circuit's, and the commitment's ``aux`` carries the EZKL proof that
binds it to the model, the input and the output; see :mod:`prover.zk`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from protocol.codec import Tensor, encode
from protocol.errors import ProtocolError
from protocol.hashing import sha256
from protocol.keys import SigningKey
from protocol.messages import Commitment, JobRequest
from prover.adversary import CheatStrategy
from prover.llm.commit import package, run_llm_job
from prover.llm.engine import Generated
from prover.llm.job import Calibration, calibration_from_params, parse_job
from prover.llm.model import LLM, load_llm
from prover.model_store import load_model
from prover.registry import ModelRegistry
from prover.runtime import DeterministicRuntime
from prover.signer_protection import SignerProtection
from prover.tensor import TENSOR_MODE, TensorModel, run_tensor_jobs
from prover.zk import ZkProver

EXACT_MODE = "exact"
LLM_MODE = "llm"
ZK_MODE = "zk"
TENSOR_PARAMS_KEY = "tensor"
DTYPE_PARAMS_KEY = "dtype"


class JobRejected(ProtocolError):
    """The node will not run this job (unknown model, bad input); nothing was committed."""


@dataclass(frozen=True)
class JobResult:
    output: Tensor
    commitment: Commitment
    seconds: float  # wall time of the model run, for overhead accounting


def tensor_hash(t: Tensor) -> bytes:
    """SHA-256 of a tensor's canonical encoding: the input and output hashes of commitments."""
    return sha256(encode(t))


def load_registered_models(
    registry: ModelRegistry, mode: str = EXACT_MODE
) -> dict[bytes, nn.Module]:
    """Every model of ``mode`` in the registry, loaded and keyed by model id."""
    return {
        entry.model_id: load_model(Path(entry.path))[0]
        for entry in registry.list()
        if entry.mode == mode
    }


def load_registered_tensors(registry: ModelRegistry) -> dict[bytes, TensorModel]:
    """Every ``tensor``-mode model with its dtype and calibrated tolerances, keyed by model id.

    Tolerances measured for another dtype than the one the model is
    registered to compute in are not this model's: it counts as uncalibrated.
    """
    tensors = {}
    for entry in registry.list():
        if entry.mode == TENSOR_MODE:
            dtype = str(entry.params.get(DTYPE_PARAMS_KEY, "float32"))
            tolerances = entry.params.get(TENSOR_PARAMS_KEY)
            if not isinstance(tolerances, dict) or tolerances.get("dtype") != dtype:
                tolerances = None
            module = load_model(Path(entry.path))[0]
            tensors[entry.model_id] = TensorModel(module, dtype=dtype, tolerances=tolerances)
    return tensors


def load_registered_llms(registry: ModelRegistry) -> dict[bytes, tuple[LLM, Calibration]]:
    """Every ``llm``-mode model in the registry with its calibration, keyed by model id."""
    llms = {}
    for entry in registry.list():
        if entry.mode == LLM_MODE:
            module = load_model(Path(entry.path))[0]
            template = entry.params.get("chat_template")
            llm = load_llm(Path(entry.path), module,
                           chat_template=template if isinstance(template, str) else None)
            llms[entry.model_id] = (llm, calibration_from_params(entry.params))
    return llms


class InferenceNode:
    """One operator's node: its key, its loaded models and its runtime."""

    def __init__(
        self,
        key: SigningKey,
        models: Mapping[bytes, nn.Module],
        runtime: DeterministicRuntime | None = None,
        cheat: CheatStrategy | None = None,
        llms: Mapping[bytes, tuple[LLM, Calibration]] | None = None,
        llm_attention: str = "sdpa",
        zk_provers: Mapping[bytes, ZkProver] | None = None,
        protection: SignerProtection | None = None,
        tensors: Mapping[bytes, TensorModel] | None = None,
    ) -> None:
        self.key = key
        self.models = dict(models)
        self.runtime = runtime or DeterministicRuntime()
        self.cheat = cheat
        self.llms = dict(llms or {})
        self.llm_attention = llm_attention
        self._substitute_llms: dict[int, LLM] = {}
        self.zk_provers = dict(zk_provers or {})
        self.tensors = dict(tensors or {})
        self.protection = protection
        self._served: dict[bytes, tuple[JobRequest, Tensor]] = {}

    @property
    def node_id(self) -> bytes:
        return self.key.public.raw

    def handle(self, request: JobRequest) -> JobResult:
        """Run one job and return its output with a signed commitment."""
        request.verify()
        if request.node != self.node_id:
            raise JobRejected(
                f"the request is for node {request.node.hex()[:16]}…, not this one "
                f"({self.node_id.hex()[:16]}…)"
            )
        if request.model_id in self.llms:
            return self._handle_llm(request)
        if request.model_id in self.zk_provers:
            return self._handle_zk(request)
        if request.model_id in self.tensors:
            return self._handle_tensor(request)
        model = self.models.get(request.model_id)
        if model is None:
            raise JobRejected(f"this node does not serve model {request.model_id.hex()[:16]}…")
        if self.cheat is not None:
            model = self.cheat.choose_model(request, model)
        started = time.perf_counter()
        try:
            raw = self.runtime.run(model, request.input.to_torch())
        except (ValueError, RuntimeError) as exc:
            raise JobRejected(f"model could not run this input: {exc}") from exc
        seconds = time.perf_counter() - started
        output = Tensor.from_torch(raw)
        return self._commit(request, output, EXACT_MODE, seconds)

    def _handle_llm(self, request: JobRequest) -> JobResult:
        llm, calibration = self.llms[request.model_id]
        if self.cheat is not None:
            module = self.cheat.choose_model(request, llm.module)
            if module is not llm.module:
                if id(module) not in self._substitute_llms:
                    self._substitute_llms[id(module)] = LLM(module, tokenizer=llm.tokenizer)
                llm = self._substitute_llms[id(module)]
        started = time.perf_counter()
        try:
            result = run_llm_job(llm, request, calibration, attention=self.llm_attention,
                                 threads=self.runtime.threads)
        except (ValueError, RuntimeError) as exc:
            raise JobRejected(f"model could not run this job: {exc}") from exc
        seconds = time.perf_counter() - started
        return self._commit(request, result.output, LLM_MODE, seconds, result.aux)

    def commit_generated(self, request: JobRequest, generated: Generated, seconds: float
                         ) -> JobResult:
        """Sign the commitment to an ``llm`` job generated in a running batch
        (:mod:`prover.running_batch`) rather than by :meth:`handle`."""
        job = parse_job(request)
        _, calibration = self.llms[request.model_id]
        result = package(generated, job, calibration)
        return self._commit(request, result.output, LLM_MODE, seconds, result.aux)

    def _handle_tensor(self, request: JobRequest) -> JobResult:
        """Run a float model; commit to its output and sketch, carried in ``aux``."""
        model = self.tensors[request.model_id]
        if self.cheat is not None:
            module = self.cheat.choose_model(request, model.module)
            if module is not model.module:
                model = TensorModel(module, dtype=model.dtype)
        started = time.perf_counter()
        try:
            result = run_tensor_jobs(model, [request.input.to_torch()], [request.job_id],
                                     threads=self.runtime.threads,
                                     device=str(self.runtime.device))[0]
        except (ValueError, RuntimeError) as exc:
            raise JobRejected(f"model could not run this input: {exc}") from exc
        seconds = time.perf_counter() - started
        return self._commit(request, result.output, TENSOR_MODE, seconds, result.aux())

    def _handle_zk(self, request: JobRequest) -> JobResult:
        """Prove the job: the output is the circuit's, the proof rides in ``aux`` (prover.zk)."""
        started = time.perf_counter()
        try:
            proof = self.zk_provers[request.model_id].prove(request.input.to_torch())
        except ValueError as exc:
            raise JobRejected(f"model could not prove this input: {exc}") from exc
        seconds = time.perf_counter() - started
        output = proof.output_tensor()
        return self._commit(request, output, ZK_MODE, seconds, proof.encode())

    def sign(self, commitment: Commitment) -> Commitment:
        """Sign a commitment, after the signer protection database (if any) recorded it.

        Raises ``SigningRefused`` rather than sign a second, different
        commitment for a job (equivocation).
        """
        if self.protection is not None:
            self.protection.approve(commitment)
        return commitment.signed(self.key)

    def _commit(
        self, request: JobRequest, output: Tensor, mode: str, seconds: float, aux: bytes = b""
    ) -> JobResult:
        """Sign the commitment that binds this job to ``output`` and keep the job's data."""
        commitment = self.sign(Commitment(
            job_id=request.job_id,
            model_id=request.model_id,
            input_hash=tensor_hash(request.input),
            output_hash=tensor_hash(output),
            node=self.node_id,
            chain_id=request.chain_id,
            mode=mode,
            aux=aux,
        ))
        self._served[request.job_id] = (request, output)
        return JobResult(output=output, commitment=commitment, seconds=seconds)

    def job_data(self, job_id: bytes) -> tuple[JobRequest, Tensor]:
        """What a validator fetches to re-execute a sampled job."""
        try:
            return self._served[job_id]
        except KeyError:
            raise JobRejected(f"no served job {job_id.hex()[:16]}… on this node") from None
