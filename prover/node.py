"""The inference node: run a client's job and sign a commitment to the result.

A node serves the models it loaded from its registry. For each job it checks
the client's signature, runs the model alone in the deterministic runtime,
and signs a :class:`~assay.messages.Commitment` binding the job id, model id,
input hash and output hash to its key. It keeps each job's request and output
so that a validator that samples the job can fetch them for re-execution.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from assay.codec import Tensor, encode
from assay.errors import ProtocolError
from assay.hashing import sha256
from assay.keys import SigningKey
from assay.messages import Commitment, JobRequest
from prover.adversary import CheatStrategy
from prover.model_store import load_model
from prover.registry import ModelRegistry
from prover.runtime import DeterministicRuntime

EXACT_MODE = "exact"


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


class InferenceNode:
    """One operator's node: its key, its loaded models and its runtime."""

    def __init__(
        self,
        key: SigningKey,
        models: Mapping[bytes, nn.Module],
        runtime: DeterministicRuntime | None = None,
        cheat: CheatStrategy | None = None,
    ) -> None:
        self.key = key
        self.models = dict(models)
        self.runtime = runtime or DeterministicRuntime()
        self.cheat = cheat
        self._served: dict[bytes, tuple[JobRequest, Tensor]] = {}

    @property
    def node_id(self) -> bytes:
        return self.key.public.raw

    def handle(self, request: JobRequest) -> JobResult:
        """Run one job and return its output with a signed commitment."""
        request.verify()
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
        commitment = Commitment(
            job_id=request.job_id,
            model_id=request.model_id,
            input_hash=tensor_hash(request.input),
            output_hash=tensor_hash(output),
            node=self.node_id,
            mode=EXACT_MODE,
        ).signed(self.key)
        self._served[request.job_id] = (request, output)
        return JobResult(output=output, commitment=commitment, seconds=seconds)

    def job_data(self, job_id: bytes) -> tuple[JobRequest, Tensor]:
        """What a validator fetches to re-execute a sampled job."""
        try:
            return self._served[job_id]
        except KeyError:
            raise JobRejected(f"no served job {job_id.hex()[:16]}… on this node") from None
