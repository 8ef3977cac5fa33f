"""Running jobs: integer models exactly, float models as reproducibly as torch allows.

**Integer models** (the ``exact`` mode, :mod:`prover.integer`) compute one
function on every CPU vendor, ISA path, thread count, batch and on CUDA:
their sums are of integers, which no order changes. A node may batch them
freely; :meth:`DeterministicRuntime.run_batch` does, and a job's bytes are the
same in any batch, at any row (``tests/test_exact_anywhere.py`` checks this
under threads 1 and 2 and every ``ATEN_CPU_CAPABILITY`` the CPU has).

**Float models** (the ``tensor`` mode, and the zk mode's source models) are
run with every order- and precision-choosing setting fixed for the duration
of each job, then put back:

- ``torch.use_deterministic_algorithms(True)``: an op with no deterministic
  kernel raises instead of silently using atomics.
- ``torch.set_num_threads(threads)``: the intra-op thread count.
- float32 matmul precision ``highest`` and TF32 off for cuBLAS and cuDNN.
- cuDNN ``benchmark`` off and ``deterministic`` on.
- ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` for CUDA (set before cuBLAS starts).
- denormals are kept (``set_flush_denormal(False)``, the IEEE default).
- eval mode, float32, ``torch.inference_mode()``; transformers models run
  eager attention and compute the last position's logits only.

That makes a float job repeat bit for bit *on one machine*, and nothing more:
measured, float outputs differ between 1 and 2 threads on an AMD EPYC (by
5.5e-6 on the zoo's GPT-2 and Llama; not on the Intel Xeon the first
measurement was taken on), between ``ATEN_CPU_CAPABILITY`` default, avx2
and avx512 (every zoo model, the MLP included), between ``MKL_CBWR``
settings, and between a row computed alone and in a batch (4e-7 on a
512→2048→512 MLP; the GEMM kernel is chosen by the number of rows). So float
models are never judged by their bits: the ``tensor`` mode compares within
tolerances measured on exactly this honest variation (:mod:`verifier.tensor`).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from transformers import PreTrainedModel

from protocol.codec import Tensor, encode
from protocol.hashing import sha256
from prover import zoo
from prover.integer import is_integer_model

CUBLAS_WORKSPACE_CONFIG = ":4096:8"
_DETERMINISTIC_CUBLAS_WORKSPACES = (":4096:8", ":16:8")

ONE_JOB_AT_A_TIME = threading.Lock()
"""Torch's settings are per process: two jobs running at once would change each other's."""


class JobInputError(ValueError):
    """A job input the model cannot run as one job; nothing was computed."""


@contextmanager
def pinned_torch(threads: int) -> Iterator[None]:
    """Fix torch's order- and precision-choosing settings, restoring the previous ones after."""
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.get_num_threads(),
        torch.get_float32_matmul_precision(),
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)
    torch.set_float32_matmul_precision("highest")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.set_flush_denormal(False)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.set_num_threads(saved[2])
        torch.set_float32_matmul_precision(saved[3])
        torch.backends.cuda.matmul.allow_tf32 = saved[4]
        torch.backends.cudnn.allow_tf32 = saved[5]
        torch.backends.cudnn.benchmark = saved[6]
        torch.backends.cudnn.deterministic = saved[7]


def _token_batch(job_input: torch.Tensor) -> torch.Tensor:
    """Token ids ``[seq]`` or ``[1, seq]`` as a batch of one, ``[1, seq]``."""
    if job_input.dtype != torch.int64:
        raise JobInputError(f"a causal LM takes int64 token ids, got {job_input.dtype}")
    ids = job_input.unsqueeze(0) if job_input.dim() == 1 else job_input
    if ids.dim() != 2 or ids.shape[0] != 1 or ids.shape[1] == 0:
        raise JobInputError(
            f"token ids must have shape [seq] or [1, seq], seq >= 1; got {list(job_input.shape)}"
        )
    return ids


def _tensor_batch(job_input: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    if job_input.dtype != dtype:
        kind = "an integer model" if dtype == torch.uint8 else "a float model"
        raise JobInputError(f"{kind} takes {dtype} inputs, got {job_input.dtype}")
    if job_input.dim() == 0 or job_input.shape[0] != 1:
        raise JobInputError(
            f"one job has batch dimension 1, got shape {list(job_input.shape)}; "
            "run_batch() runs several jobs"
        )
    return job_input


def _forward(model: nn.Module, batch: torch.Tensor, is_causal_lm: bool) -> torch.Tensor:
    output: torch.Tensor
    with torch.inference_mode():
        if is_causal_lm:
            logits = model(input_ids=batch, use_cache=False, logits_to_keep=1).logits
            output = logits[:, -1, :]  # [1, 1, vocab] -> [1, vocab]
        else:
            output = model(batch)
    return output


class DeterministicRuntime:
    """Runs jobs: integer models exactly, float ones alone with torch pinned (module docstring)."""

    def __init__(self, threads: int = 1, device: str = "cpu") -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        self.threads = threads
        self.device = torch.device(device)
        if self.device.type not in ("cpu", "cuda"):
            raise ValueError(f"the exact mode runs on cpu or cuda, not {device!r}")
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(f"device {device!r} needs CUDA, which this machine lacks")
            if os.environ.get("CUBLAS_WORKSPACE_CONFIG") not in _DETERMINISTIC_CUBLAS_WORKSPACES:
                os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE_CONFIG
        self._prepared: weakref.WeakSet[nn.Module] = weakref.WeakSet()

    def prepare(self, model: nn.Module) -> nn.Module:
        """Put ``model`` in the state jobs run in: eval mode, on this runtime's device, float32
        unless it is an integer model.

        Done in place (as ``nn.Module.to`` does) and once per model: ``run``
        prepares a model it has not seen, or one switched back to training
        mode, itself. Converting on every job would cost more than a small
        model's forward pass (about 0.4 ms for the zoo's GPT-2). Call it again
        after changing a prepared model's dtype or device.
        """
        if is_integer_model(model):
            model.to(device=self.device).eval()
        else:
            model.to(device=self.device, dtype=torch.float32).eval()
        if isinstance(model, PreTrainedModel):
            model.set_attn_implementation(zoo.ATTENTION_IMPLEMENTATION)
        self._prepared.add(model)
        return model

    def run(self, model: nn.Module, job_input: torch.Tensor) -> torch.Tensor:
        """Compute one job; returns the output on the CPU with batch dimension 1.

        Integer models take a uint8 image ``[1, C, H, W]`` and return int32
        logits. Causal LMs take int64 token ids ``[seq]`` or ``[1, seq]`` and
        return the last position's float32 logits ``[1, vocab]``; other float
        models take a float32 ``[1, ...]`` tensor.
        """
        return self.run_batch(model, [job_input])[0]

    def run_batch(self, model: nn.Module, job_inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Compute several jobs: integer models in one batch, float models each alone.

        An integer job's bytes do not depend on its batch-mates, so integer
        jobs share one forward pass; a float job's would, so each runs alone.
        """
        for job_input in job_inputs:
            if not isinstance(job_input, torch.Tensor):
                raise JobInputError(
                    f"a job input is a torch.Tensor, got {type(job_input).__name__}"
                )
        if is_integer_model(model):
            return self._run_integer(model, job_inputs)
        return [self._run_float(model, job_input) for job_input in job_inputs]

    def _run_integer(
        self, model: nn.Module, job_inputs: Sequence[torch.Tensor]
    ) -> list[torch.Tensor]:
        batches = [_tensor_batch(job_input, torch.uint8) for job_input in job_inputs]
        if not batches:
            return []
        if len({tuple(b.shape) for b in batches}) != 1:
            raise JobInputError("jobs batched together must have inputs of one shape")
        with ONE_JOB_AT_A_TIME, pinned_torch(self.threads):  # threads: for speed, not bits
            if model.training or model not in self._prepared:
                self.prepare(model)
            with torch.inference_mode():
                output = model(torch.cat(batches).to(self.device))
        return [row.to("cpu").contiguous() for row in output.split(1)]

    def _run_float(self, model: nn.Module, job_input: torch.Tensor) -> torch.Tensor:
        is_causal_lm = isinstance(model, PreTrainedModel)
        batch = _token_batch(job_input) if is_causal_lm else _tensor_batch(job_input)
        with ONE_JOB_AT_A_TIME, pinned_torch(self.threads):
            if model.training or model not in self._prepared:
                self.prepare(model)
            output = _forward(model, batch.to(self.device), is_causal_lm)
        return output.to("cpu", torch.float32).contiguous()


def input_hash(t: torch.Tensor) -> bytes:
    """SHA-256 of a job input's canonical tensor encoding, as commitments record it."""
    return sha256(encode(Tensor.from_torch(t)))


def output_hash(t: torch.Tensor) -> bytes:
    """SHA-256 of a job output's canonical tensor encoding: what exact-mode re-execution checks."""
    return sha256(encode(Tensor.from_torch(t)))
