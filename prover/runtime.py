"""Deterministic execution for the ``exact`` mode (DESIGN decision 4).

In the exact mode a node commits to the hash of its output and a validator
re-executes the job and must get the same bits. Float results repeat bit for
bit only when every reduction happens in the same order, so
:class:`DeterministicRuntime` fixes everything that chooses an order or a
precision, for the duration of each job, and then puts the process's previous
settings back:

- ``torch.use_deterministic_algorithms(True)``: an op with no deterministic
  kernel raises instead of silently using atomics.
- ``torch.set_num_threads(threads)``: the intra-op thread count. On the CPU
  kernels we use, a job's bits do not depend on it (measured below, and
  tested with 1 and 2 threads), but it is fixed so that a new kernel that does
  split reductions by thread cannot vary between runs.
- float32 matmul precision ``highest`` and TF32 off for cuBLAS and cuDNN: TF32
  (and oneDNN's reduced-precision fp32 paths) round the mantissa to 10 bits.
- cuDNN ``benchmark`` off and ``deterministic`` on: autotuning picks kernels by
  timing, which differs between runs and machines.
- ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` for CUDA (set before cuBLAS starts):
  cuBLAS needs a fixed workspace to be deterministic.
- denormals are kept (``set_flush_denormal(False)``, the IEEE default).
- the model runs in eval mode (no dropout), float32, under
  ``torch.inference_mode()``. Transformers models run eager attention (plain
  matmul and softmax; ``sdpa`` picks among fused kernels by backend, shape and
  hardware) and compute the last position's logits only.

**Batching.** Measured on the development machine (2-core Intel Xeon with
AVX-512, torch 2.13 CPU build), with the seeds the tests use: a seeded
512→2048→512 MLP row computed alone differs from the same row computed in a
batch of 16, in all 16 rows, by at most 4.0e-7 (1 thread) and 3.9e-7 (2
threads) absolute, up to 3.5e-3 relative on the smallest outputs. The zoo,
batch of 16 against 16 single jobs: mlp 7.5e-8 and cnn 4.1e-8, all rows
differ, with 1 and with 2 threads. The zoo's GPT-2 and Llama (with the larger
initialisation :mod:`prover.zoo` now uses, full-logits forward, 1 thread):
2-token sequences differ in all 16 rows, by up to 4.8e-6 (gpt2) and 1.3e-5
(llama); 16- and 32-token sequences happened to agree bit for bit in that
measurement, which shows how shape-dependent the effect is, not that it is
safe. The GEMM kernel is picked by the number of rows, and another kernel
sums in another order. Computed alone, every job is
bit-stable across repeats and across 1 and 2 threads. Batch invariance would
need batch-invariant kernels for every op we run, which is not cheap to
guarantee, so the exact mode computes every job alone (batch of 1):
:meth:`DeterministicRuntime.run_batch` is a loop of :meth:`DeterministicRuntime.run`.
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

CUBLAS_WORKSPACE_CONFIG = ":4096:8"
_DETERMINISTIC_CUBLAS_WORKSPACES = (":4096:8", ":16:8")

_ONE_JOB_AT_A_TIME = threading.Lock()
"""Torch's settings are per process: two jobs running at once would change each other's."""


class JobInputError(ValueError):
    """A job input the model cannot run as one exact-mode job; nothing was computed."""


@contextmanager
def _deterministic_torch(threads: int) -> Iterator[None]:
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


def _tensor_batch(job_input: torch.Tensor) -> torch.Tensor:
    if job_input.dtype != torch.float32:
        raise JobInputError(f"the exact mode runs float32 inputs, got {job_input.dtype}")
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
    """Runs exact-mode jobs one at a time, with torch pinned to reproducible arithmetic."""

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
        """Put ``model`` in the state jobs run in: eval mode, float32, on this runtime's device.

        Done in place (as ``nn.Module.to`` does) and once per model: ``run``
        prepares a model it has not seen, or one switched back to training
        mode, itself. Converting on every job would cost more than a small
        model's forward pass (about 0.4 ms for the zoo's GPT-2). Call it again
        after changing a prepared model's dtype or device.
        """
        model.to(device=self.device, dtype=torch.float32).eval()
        if isinstance(model, PreTrainedModel):
            model.set_attn_implementation(zoo.ATTENTION_IMPLEMENTATION)
        self._prepared.add(model)
        return model

    def run(self, model: nn.Module, job_input: torch.Tensor) -> torch.Tensor:
        """Compute one job alone; returns float32 on the CPU with batch dimension 1.

        Causal LMs take int64 token ids ``[seq]`` or ``[1, seq]`` and return
        the last position's logits ``[1, vocab]``; other models take a float32
        ``[1, ...]`` tensor.
        """
        if not isinstance(job_input, torch.Tensor):
            raise JobInputError(f"a job input is a torch.Tensor, got {type(job_input).__name__}")
        is_causal_lm = isinstance(model, PreTrainedModel)
        batch = _token_batch(job_input) if is_causal_lm else _tensor_batch(job_input)
        with _ONE_JOB_AT_A_TIME, _deterministic_torch(self.threads):
            if model.training or model not in self._prepared:
                self.prepare(model)
            output = _forward(model, batch.to(self.device), is_causal_lm)
        return output.to("cpu", torch.float32).contiguous()

    def run_batch(self, model: nn.Module, job_inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Compute several jobs, each alone: a job's bits must not depend on its batch-mates."""
        return [self.run(model, job_input) for job_input in job_inputs]


def input_hash(t: torch.Tensor) -> bytes:
    """SHA-256 of a job input's canonical tensor encoding, as commitments record it."""
    return sha256(encode(Tensor.from_torch(t)))


def output_hash(t: torch.Tensor) -> bytes:
    """SHA-256 of a job output's canonical tensor encoding: what exact-mode re-execution checks."""
    return sha256(encode(Tensor.from_torch(t)))
