"""The ``tensor`` mode: float models, committed with their output and an activation sketch.

A float model's output differs, in its last bits, between honest machines
(:mod:`prover.runtime`), so a commitment to its hash cannot be re-derived by
a validator. In this mode the node commits instead to:

- the **output** itself, carried in ``Commitment.aux`` (its hash is still the
  ``output_hash``), so that an audit needs nothing from the node but what the
  ledger already holds — classifier logits and sentence embeddings are a few
  hundred values (``MAX_OUTPUT_VALUES`` is the limit);
- a **sketch** of an intermediate activation: the input of the model's last
  layer (the hidden state its logits or embedding come from), flattened over
  the job's own positions and projected on ``PROJECTIONS`` seeded Rademacher
  directions, divided by ``√d``. The directions come from the job id through
  the sampler's integer hash RNG (:func:`prover.llm.sampler.hash_words`), so
  node and validator draw the same ±1 matrix on any machine.

The validator re-executes and compares both within tolerances that
``assay calibrate`` measured on honest variation (:mod:`verifier.tensor`).

Jobs may run in batches: image models stack, token models are right-padded
with an attention mask (embedders) or grouped by length (causal LMs, whose
last-position logits are the output). A model may be registered to compute in
``bfloat16``; its output is committed as float32 either way.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel

from protocol import codec
from protocol.codec import Tensor
from protocol.errors import MalformedMessage
from prover.embedder import SentenceEmbedder, pad_batch
from prover.llm.sampler import hash_words
from prover.runtime import ONE_JOB_AT_A_TIME, JobInputError, pinned_torch

TENSOR_MODE = "tensor"
PROJECTIONS = 16
PROJECTION_DOMAIN = b"assay/tensor/sketch/v1"
MAX_OUTPUT_VALUES = 16_384
DTYPES: Mapping[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}
AUX_KEYS = ("output", "sketch")


class TensorAuxError(MalformedMessage):
    """A tensor-mode ``Commitment.aux`` that does not decode; the message names the field."""


@dataclass(frozen=True)
class TensorJobResult:
    output: Tensor  # float32, batch dimension 1
    sketch: Tensor  # float32 [PROJECTIONS]

    def aux(self) -> bytes:
        """``Commitment.aux``: the canonical encoding of ``{"output", "sketch"}``."""
        return codec.encode({"output": self.output, "sketch": self.sketch})


def decode_aux(aux: bytes) -> TensorJobResult:
    """Parse ``Commitment.aux`` of a tensor job, naming the field that is wrong."""
    try:
        value = codec.decode(aux)
    except MalformedMessage as exc:
        raise TensorAuxError(
            f"commitment aux is not a canonical tensor-mode record: {exc}"
        ) from exc
    if not isinstance(value, dict) or sorted(value) != sorted(AUX_KEYS):
        keys = sorted(value) if isinstance(value, dict) else type(value).__name__
        raise TensorAuxError(f"commitment aux must hold exactly {list(AUX_KEYS)}, got {keys}")
    output, sketch = value["output"], value["sketch"]
    for name, t in (("output", output), ("sketch", sketch)):
        if not isinstance(t, Tensor) or t.dtype != "float32":
            raise TensorAuxError(f"commitment aux field {name!r} must be a float32 tensor")
    if math.prod(output.shape) > MAX_OUTPUT_VALUES:
        raise TensorAuxError(
            f"commitment aux field 'output' has {math.prod(output.shape)} values, "
            f"more than {MAX_OUTPUT_VALUES}"
        )
    if tuple(sketch.shape) != (PROJECTIONS,):
        raise TensorAuxError(
            f"commitment aux field 'sketch' has shape {list(sketch.shape)}, expected "
            f"[{PROJECTIONS}]"
        )
    return TensorJobResult(output=output, sketch=sketch)


def projection_seed(job_id: bytes) -> int:
    digest = hashlib.sha256(PROJECTION_DOMAIN + job_id).digest()
    return int.from_bytes(digest[:8], "big")


def sketch_of(hidden: torch.Tensor, job_id: bytes) -> torch.Tensor:
    """``⟨h, r_k⟩ / √d`` for the job's Rademacher directions ``r_k``: float32 ``[PROJECTIONS]``."""
    flat = hidden.detach().reshape(-1).to("cpu", torch.float64)
    d = int(flat.numel())
    words = hash_words(projection_seed(job_id), np.arange(PROJECTIONS), d)  # [K, d]
    signs = torch.from_numpy(1.0 - 2.0 * (words >> np.uint64(63)).astype(np.float64))
    return (signs @ flat / math.sqrt(d)).to(torch.float32)


def sketched_layer(module: nn.Module) -> nn.Module:
    """The layer whose input is sketched: the last one, where logits or the embedding come from."""
    if isinstance(module, SentenceEmbedder):
        return module.pool
    if isinstance(module, PreTrainedModel):
        head = module.get_output_embeddings()
        if head is None:
            raise JobInputError(f"{type(module).__name__} has no output layer to sketch")
        return head
    head = getattr(module, "head", None)
    if not isinstance(head, nn.Module):
        raise JobInputError(f"{type(module).__name__} has no 'head' layer to sketch")
    return head


@contextmanager
def _capture_input(layer: nn.Module) -> Iterator[list[torch.Tensor]]:
    seen: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    try:
        yield seen
    finally:
        hook.remove()


@dataclass
class TensorModel:
    """A float model served in the tensor mode: the module, what it computes in, its limits."""

    module: nn.Module
    dtype: str = "float32"
    tolerances: Mapping[str, Any] | None = None  # registry params["tensor"], from calibration
    _copies: dict[str, nn.Module] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"tensor models compute in {sorted(DTYPES)}, not {self.dtype!r}")

    def in_dtype(self, dtype: str) -> nn.Module:
        """The module in ``dtype`` (a cached copy for a dtype other than float32)."""
        if dtype == "float32":
            return self.module.to(torch.float32).eval()
        if dtype not in self._copies:
            self._copies[dtype] = copy.deepcopy(self.module).to(DTYPES[dtype]).eval()
        return self._copies[dtype]


def _check_input(module: nn.Module, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise JobInputError(f"a job input is a torch.Tensor, got {type(x).__name__}")
    tokens = isinstance(module, PreTrainedModel)
    if tokens and (x.dtype != torch.int64 or x.dim() != 2 or x.shape[0] != 1 or x.shape[1] == 0):
        raise JobInputError(
            f"token ids must be int64 of shape [1, seq], seq >= 1; got {x.dtype} "
            f"{list(x.shape)}"
        )
    if not tokens and (x.dtype != torch.float32 or x.dim() == 0 or x.shape[0] != 1):
        raise JobInputError(
            f"a float model takes one float32 input with batch dimension 1; got {x.dtype} "
            f"{list(x.shape)}"
        )
    if tokens:
        vocab = int(module.config.vocab_size)
        if int(x.min()) < 0 or int(x.max()) >= vocab:
            raise JobInputError(f"token ids must lie in [0, {vocab}), got {int(x.max())}")
        limit = getattr(module.config, "max_position_embeddings", None) or getattr(
            module.config, "n_positions", None
        )
        if limit is not None and x.shape[1] > int(limit):
            raise JobInputError(f"{x.shape[1]} tokens exceed the model's {limit} positions")


def _forward_group(module: nn.Module, group: Sequence[torch.Tensor],
                   device: torch.device, dtype: torch.dtype
                   ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Outputs ``[1, ...]`` and sketched hidden states of jobs that share one forward pass."""
    layer = sketched_layer(module)
    with _capture_input(layer) as seen, torch.inference_mode():
        if isinstance(module, SentenceEmbedder):
            pad_id = int(module.config.pad_token_id or 0)
            ids, mask = pad_batch(group, pad_id)
            out = module(ids.to(device), mask.to(device))  # [B, d]
            lengths = [int(x.shape[-1]) for x in group]
            hidden = [seen[0][row, :n] for row, n in enumerate(lengths)]  # [n_i, d] each
        elif isinstance(module, PreTrainedModel):
            ids = torch.cat(list(group)).to(device)  # one length per group
            logits = module(input_ids=ids, use_cache=False, logits_to_keep=1).logits
            out = logits[:, -1, :]  # [B, vocab]
            hidden = list(seen[0][:, -1, :])  # the last position's state [d] each
        else:
            out = module(torch.cat(list(group)).to(device, dtype))  # [B, ...]
            hidden = list(seen[0])
    outputs = [row.unsqueeze(0).to("cpu", torch.float32).contiguous() for row in out]
    return outputs, hidden


def run_tensor_jobs(model: TensorModel, inputs: Sequence[torch.Tensor], job_ids: Sequence[bytes],
                    threads: int = 1, device: str = "cpu",
                    dtype: str | None = None) -> list[TensorJobResult]:
    """Run jobs as batches and return each one's output and sketch, in order.

    Image models take the jobs as one batch; embedders as one padded batch;
    causal LMs one batch per prompt length. ``dtype`` overrides the model's
    own (calibration and attacks use it).
    """
    if len(inputs) != len(job_ids):
        raise ValueError("one job id per input")
    module = model.in_dtype(dtype or model.dtype)
    torch_dtype = DTYPES[dtype or model.dtype]
    for x in inputs:
        _check_input(module, x)
    causal_lm = isinstance(module, PreTrainedModel) and not isinstance(module, SentenceEmbedder)
    groups: dict[int, list[int]] = {}
    for index, x in enumerate(inputs):
        groups.setdefault(int(x.shape[-1]) if causal_lm else 0, []).append(index)
    results: list[TensorJobResult | None] = [None] * len(inputs)
    target = torch.device(device)
    with ONE_JOB_AT_A_TIME, pinned_torch(threads):
        module.to(target)
        for indices in groups.values():
            outputs, hidden = _forward_group(module, [inputs[i] for i in indices], target,
                                             torch_dtype)
            for i, out, h in zip(indices, outputs, hidden, strict=True):
                if out.numel() > MAX_OUTPUT_VALUES:
                    raise JobInputError(
                        f"the output has {out.numel()} values; the tensor mode commits at most "
                        f"{MAX_OUTPUT_VALUES}"
                    )
                results[i] = TensorJobResult(
                    output=Tensor.from_torch(out),
                    sketch=Tensor.from_torch(sketch_of(h, job_ids[i])),
                )
    return [r for r in results if r is not None]
