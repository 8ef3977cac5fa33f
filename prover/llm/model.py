"""A causal LM as the ``llm`` mode runs it: one copy per dtype, decoder and head apart.

The mode runs the model's decoder (``base_model``: the stack up to and
including the final norm) and its output head separately, so the final
hidden states the sketch is made of are exactly the ones the logits come
from. Some architectures change the head's output: Gemma 2 and 3 cap logits
with ``cap · tanh(l / cap)`` (``final_logit_softcapping``), which
:meth:`LLM.logits` applies. Any other change would make the split path
disagree with the model's own forward pass; :class:`LLM` checks the two
agree on a probe input when it is built and refuses the model otherwise.

An :class:`LLM` also carries the model's tokenizer and chat template
(:mod:`prover.llm.tokenizer`) when it was loaded from a directory that has
them: the node turns text into token ids with it and decodes its output, and
a validator needs it to check where a stop string ended a job.

Precision and device are per copy: ``variant(dtype)`` makes the copy on first
use, on CUDA when the node was given a CUDA device (bfloat16 is what GPU nodes
run); validators run on the CPU.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel

from prover.llm.tokenizer import Tokenizer, load_tokenizer

DTYPES: Mapping[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}
ATTENTION_KINDS = ("eager", "sdpa")
PROBE_TOKENS = 6
SPLIT_TOLERANCE = 1e-4
_ONE_RUN_AT_A_TIME = threading.Lock()
"""Where torch's thread count is process-wide, runs must not interleave."""
_MODEL_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.Lock] = weakref.WeakKeyDictionary()
_MODEL_LOCKS_GUARD = threading.Lock()
_PER_THREAD_COUNTS: bool | None = None


def thread_counts_are_per_thread() -> bool:
    """Whether ``torch.set_num_threads`` in one thread leaves other threads' counts alone.

    ATen's OpenMP backend keeps a count per calling thread (OpenMP's ``nthreads``, and MKL's
    per-thread count), so runs on different threads can use different counts at once; its
    native backend has one pool for the process. Probed once, on a thread of its own.
    """
    global _PER_THREAD_COUNTS
    if _PER_THREAD_COUNTS is None:
        before = torch.get_num_threads()
        seen: list[int] = []

        def probe() -> None:
            torch.set_num_threads(before + 1)
            seen.append(torch.get_num_threads())

        worker = threading.Thread(target=probe, name="assay-thread-count-probe")
        worker.start()
        worker.join()
        after = torch.get_num_threads()
        if after != before:
            torch.set_num_threads(before)
        _PER_THREAD_COUNTS = after == before and seen == [before + 1]
    return _PER_THREAD_COUNTS


def _run_lock(model: nn.Module) -> threading.Lock:
    """The lock one run of ``model`` holds: the model's own (its attention kernel is a setting
    of the model) where thread counts are per thread, else one for the process."""
    if not thread_counts_are_per_thread():
        return _ONE_RUN_AT_A_TIME
    with _MODEL_LOCKS_GUARD:
        lock = _MODEL_LOCKS.get(model)
        if lock is None:
            lock = _MODEL_LOCKS[model] = threading.Lock()
        return lock


class GenerationError(ValueError):
    """A job this model cannot run (prompt too long, token id out of range)."""


class UnsupportedArchitecture(ValueError):
    """A causal LM whose logits the llm mode cannot reproduce from its hidden states."""


def default_device() -> torch.device:
    """CUDA when torch sees a GPU, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class LLM:
    """A causal LM and its copies per dtype, created on first use on ``device``."""

    def __init__(self, module: nn.Module, device: torch.device | str = "cpu",
                 tokenizer: Tokenizer | None = None, chat_template: str | None = None) -> None:
        if not isinstance(module, PreTrainedModel):
            raise TypeError("the llm mode runs transformers causal LMs")
        head = module.get_output_embeddings()
        if not isinstance(head, nn.Module) or not hasattr(head, "weight"):
            raise UnsupportedArchitecture(f"{type(module).__name__} has no output head")
        self.device = torch.device(device)
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.module = module.to(torch.float32).eval()
        self._variants: dict[str, PreTrainedModel] = {}
        text = module.config.get_text_config()
        self.softcap = float(getattr(text, "final_logit_softcapping", None) or 0.0)
        self.vocab_size = int(head.weight.shape[0])
        self.hidden_size = int(head.weight.shape[1])
        self.max_positions = int(getattr(text, "n_positions", None)
                                 or text.max_position_embeddings)
        self._check_split()
        if tokenizer is not None and tokenizer.vocab_size > self.vocab_size:
            raise UnsupportedArchitecture(
                f"the tokenizer has {tokenizer.vocab_size} tokens, more than the model's "
                f"{self.vocab_size} logits"
            )

    @property
    def eos_token_ids(self) -> frozenset[int]:
        """The ids that end a generation unless a request says otherwise."""
        return self.tokenizer.eos_token_ids if self.tokenizer is not None else frozenset()

    def variant(self, dtype: str) -> PreTrainedModel:
        if dtype not in self._variants:
            source = self.module if self.device.type == "cpu" and dtype == "float32" else \
                copy.deepcopy(self.module)
            self._variants[dtype] = source.to(device=self.device, dtype=DTYPES[dtype]).eval()
        return self._variants[dtype]

    def logits(self, model: PreTrainedModel, hidden: torch.Tensor) -> torch.Tensor:
        """Float64 logits ``[..., V]`` from final hidden states ``[..., d]``, as the model's
        own forward computes them (in the model's dtype, then widened)."""
        logits = model.get_output_embeddings()(hidden)
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits.to(torch.float64)

    def _check_split(self) -> None:
        probe = torch.arange(1, PROBE_TOKENS + 1)[None, :] % self.vocab_size
        with torch.inference_mode():
            whole = self.module(input_ids=probe, use_cache=False).logits[0].double()
            hidden = self.module.base_model(input_ids=probe, use_cache=False).last_hidden_state
            split = self.logits(self.module, hidden[0])
        if whole.shape != split.shape or not torch.allclose(whole, split, atol=SPLIT_TOLERANCE,
                                                            rtol=SPLIT_TOLERANCE):
            raise UnsupportedArchitecture(
                f"{type(self.module).__name__}: its logits are not its output head applied to "
                "its final hidden states, so the llm mode cannot sketch what chose each token"
            )

    def check_fits(self, prompt: torch.Tensor, n_new: int) -> None:
        if prompt.dim() != 1 or prompt.numel() == 0 or prompt.dtype != torch.int64:
            raise GenerationError(f"a prompt is int64 token ids [P], P ≥ 1; got {prompt.shape}")
        if int(prompt.min()) < 0 or int(prompt.max()) >= self.vocab_size:
            raise GenerationError(f"prompt token ids must be in 0..{self.vocab_size - 1}")
        if prompt.numel() + n_new > self.max_positions:
            raise GenerationError(
                f"prompt of {prompt.numel()} plus {n_new} new tokens exceeds the model's "
                f"{self.max_positions} positions"
            )


@contextmanager
def llm_torch(threads: int, model: PreTrainedModel, attention: str) -> Iterator[None]:
    """Thread count and attention kernel for one run; the previous thread count comes back after.

    The model keeps the attention kernel it was last run with: every run through here sets
    the one it needs, and switching walks every module (about 2.5 ms on SmolLM2's 30
    layers), which switching there and back at each decoding step would pay twice. An
    architecture without an SDPA code path (Gemma 2) runs eager attention.

    Runs of one model never interleave. Runs of different models (a model's float32 and
    bfloat16 copies) may run at once on different threads, each at its own thread count,
    where torch keeps counts per thread (:func:`thread_counts_are_per_thread`); elsewhere
    every run in the process takes turns.
    """
    if attention not in ATTENTION_KINDS:
        raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {attention!r}")
    if not getattr(model, "_supports_sdpa", False):
        attention = "eager"
    with _run_lock(model):
        saved_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        if attention != model.config._attn_implementation:
            model.set_attn_implementation(attention)
        try:
            with torch.inference_mode():
                yield
        finally:
            torch.set_num_threads(saved_threads)


def load_llm(directory: Path, module: nn.Module, device: torch.device | str = "cpu",
             chat_template: str | None = None) -> LLM:
    """The LLM of a registered model directory: ``module`` (already loaded from it) with
    the directory's tokenizer and chat template (``chat_template`` overrides the latter)."""
    config = getattr(module, "config", None)
    eos = getattr(config, "eos_token_id", None) if config is not None else None
    head = module.get_output_embeddings() if isinstance(module, PreTrainedModel) else None
    vocab = int(head.weight.shape[0]) if isinstance(head, nn.Module) else 0
    listed = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    model_eos = [int(e) for e in listed if 0 <= int(e) < vocab]
    tokenizer = load_tokenizer(Path(directory), vocab, model_eos)
    return LLM(module, device, tokenizer=tokenizer, chat_template=chat_template)
