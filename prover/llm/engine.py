"""Continuous batching: one running batch that jobs join and leave at every decoding step.

A :class:`DecodeBatch` holds the running sequences of one dtype and one KV
cache for all of them, left-padded so that every row's latest position is
the last column (the layout ``generate`` uses for a padded batch). A job
*joins* with a prefill of its prompt (several joining jobs are prefilled
together, padded); its cache rows are padded on the left to the batch's
length, or the batch's to theirs, and concatenated. A job *leaves* when it
emits a stop token, completes a stop string, reaches ``max_new_tokens`` or
is removed; its rows are dropped and the columns that only padding still
occupies are trimmed. Each :meth:`DecodeBatch.step` picks every running
job's next token from the logits of the last forward pass, with the job's
own sampler noise at the job's own position, then runs one forward pass for
the jobs still running. So a job's tokens depend only on the job and on
floating-point noise: which others ran beside it changes the batch's shape,
padding and kernels, never its sampler draws, and that variation is what
``assay calibrate`` measures and the verifier tolerates.

Stop strings need the model's tokenizer (:mod:`prover.llm.text`): the job
ends at the first token after which the decoded text contains one.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

from prover.llm.job import LLMJob
from prover.llm.logprobs import TokenLogprobs, token_logprobs
from prover.llm.model import LLM, GenerationError, llm_torch
from prover.llm.sampler import NoiseStream, choose_scaled
from prover.llm.text import TextStream


@dataclass(frozen=True)
class Generated:
    """One job's result: tokens ``[n]`` and the final hidden states that chose them ``[n, d]``."""

    tokens: torch.Tensor  # int64 [n]
    hidden: torch.Tensor  # the run dtype, [n, d], on the CPU
    finish_reason: str = "length"  # "stop": a stop token or stop string ended it
    text: str = ""  # the decoded text (before any stop string) when a tokenizer was given
    logprobs: tuple[TokenLogprobs, ...] = ()


@dataclass(frozen=True)
class StepToken:
    """What one step produced for one job: the token, the text it completes, whether it ended."""

    key: Hashable
    token: int
    index: int  # position among the job's generated tokens
    text: str  # newly decoded text ("" without a tokenizer, or while bytes are held back)
    finish_reason: str | None  # None while the job runs; "stop" or "length" when it ended
    logprobs: TokenLogprobs | None


@dataclass
class _Running:
    key: Hashable
    job: LLMJob
    noise: NoiseStream
    text: TextStream | None
    top_logprobs: int | None
    tokens: list[int] = field(default_factory=list)
    hidden: list[torch.Tensor] = field(default_factory=list)
    logprobs: list[TokenLogprobs] = field(default_factory=list)


class DecodeBatch:
    """The running batch of one dtype; see the module docstring."""

    def __init__(self, llm: LLM, dtype: str, attention: str = "sdpa", threads: int = 1) -> None:
        self.llm = llm
        self.dtype = dtype
        self.model = llm.variant(dtype)
        self.attention = attention
        self.threads = threads
        self.tokenizer = llm.tokenizer
        self.rows: list[_Running] = []
        self.finished: dict[Hashable, Generated] = {}
        self._cache: DynamicCache | None = None
        self._mask = torch.zeros((0, 0), dtype=torch.int64)  # [B, L] on the model's device
        self._positions = torch.zeros((0, 1), dtype=torch.int64)  # [B, 1]: latest position
        self._hidden = torch.zeros((0, llm.hidden_size))  # [B, d]: states of the pending step
        self._logits = torch.zeros((0, llm.vocab_size), dtype=torch.float64)  # [B, V] CPU

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def keys(self) -> list[Hashable]:
        return [row.key for row in self.rows]

    def join(self, entries: Sequence[tuple[Hashable, torch.Tensor, LLMJob]],
             top_logprobs: int | None = None) -> None:
        """Prefill ``(key, prompt [P], job)`` entries together and add them to the batch.

        ``top_logprobs``: None for no log-probabilities, else how many of the most likely
        tokens to report beside each chosen one (0 reports the chosen token's alone).
        """
        if not entries:
            return
        taken = {row.key for row in self.rows} | set(self.finished)
        for key, prompt, job in entries:
            if job.dtype != self.dtype:
                raise GenerationError(f"a {job.dtype} job cannot join a {self.dtype} batch")
            if key in taken:
                raise GenerationError(f"job key {key!r} is already in this batch")
            if job.stop_strings and self.tokenizer is None:
                raise GenerationError("stop strings need the model's tokenizer")
            self.llm.check_fits(prompt, job.max_new_tokens)
            taken.add(key)
        device = self.llm.device
        width = max(int(p.numel()) for _, p, _ in entries)
        ids = torch.zeros((len(entries), width), dtype=torch.int64)
        mask = torch.zeros((len(entries), width), dtype=torch.int64)
        for row, (_, prompt, _) in enumerate(entries):
            ids[row, width - prompt.numel():] = prompt
            mask[row, width - prompt.numel():] = 1
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        cache = DynamicCache(config=self.model.config)
        with llm_torch(self.threads, self.model, self.attention):
            out = self.model.base_model(
                input_ids=ids.to(device), attention_mask=mask.to(device),
                position_ids=positions.to(device), past_key_values=cache, use_cache=True,
            )
            hidden = out.last_hidden_state[:, -1]  # [b, d]
            logits = self.llm.logits(self.model, hidden).cpu()  # [b, V]
        self._merge(cache, mask.to(device), positions[:, -1:].to(device), hidden, logits)
        for key, _, job in entries:
            text = (TextStream(self.tokenizer, job.stop_strings)
                    if self.tokenizer is not None else None)
            self.rows.append(_Running(key, job, NoiseStream(job.sampling, self.llm.vocab_size),
                                      text, top_logprobs))

    def step(self) -> list[StepToken]:
        """Choose every running job's next token; run one forward pass for those still running."""
        if not self.rows:
            return []
        scaled = torch.stack([row.noise.scaled(len(row.tokens)) for row in self.rows])
        chosen = choose_scaled(self._logits, scaled, [row.job.sampling for row in self.rows])
        hidden_cpu = self._hidden.cpu()
        produced, keep = [], []
        for i, row in enumerate(self.rows):
            token = int(chosen[i])
            row.tokens.append(token)
            row.hidden.append(hidden_cpu[i])
            logprobs = None
            if row.top_logprobs is not None:
                logprobs = token_logprobs(self._logits[i], token, row.job.sampling,
                                          row.top_logprobs)
                row.logprobs.append(logprobs)
            text = row.text.push(token) if row.text is not None else ""
            finish = self._finish_reason(row, token)
            if finish is not None and row.text is not None and not row.text.stopped:
                text += row.text.finish()
            produced.append(StepToken(row.key, token, len(row.tokens) - 1, text, finish,
                                      logprobs))
            if finish is None:
                keep.append(i)
            else:
                self.finished[row.key] = self._result(row, finish)
        self._select(keep)
        if self.rows:
            self._forward(chosen[keep])
        return produced

    def remove(self, key: Hashable) -> None:
        """Drop a running job (its client went away); it leaves no result."""
        index = next((i for i, row in enumerate(self.rows) if row.key == key), None)
        if index is None:
            raise KeyError(key)
        self._select([i for i in range(len(self.rows)) if i != index])

    def pop(self, key: Hashable) -> Generated:
        """A finished job's result, handed over once."""
        return self.finished.pop(key)

    # -- internals --------------------------------------------------------------------------

    @staticmethod
    def _finish_reason(row: _Running, token: int) -> str | None:
        if token in row.job.stop_tokens or (row.text is not None and row.text.stopped):
            return "stop"
        if len(row.tokens) >= row.job.max_new_tokens:
            return "length"
        return None

    @staticmethod
    def _result(row: _Running, finish: str) -> Generated:
        return Generated(tokens=torch.tensor(row.tokens, dtype=torch.int64),
                         hidden=torch.stack(row.hidden), finish_reason=finish,
                         text=row.text.text if row.text is not None else "",
                         logprobs=tuple(row.logprobs))

    def _forward(self, tokens: torch.Tensor) -> None:
        device = self.llm.device
        batch = tokens.numel()
        self._mask = torch.cat([self._mask, torch.ones((batch, 1), dtype=torch.int64,
                                                        device=device)], dim=1)
        self._positions = self._positions + 1
        with llm_torch(self.threads, self.model, self.attention):
            out = self.model.base_model(
                input_ids=tokens[:, None].to(device), attention_mask=self._mask,
                position_ids=self._positions, past_key_values=self._cache, use_cache=True,
            )
            self._hidden = out.last_hidden_state[:, -1]
            self._logits = self.llm.logits(self.model, self._hidden).cpu()

    def _merge(self, cache: DynamicCache, mask: torch.Tensor, positions: torch.Tensor,
               hidden: torch.Tensor, logits: torch.Tensor) -> None:
        """Add newly prefilled rows to the batch, padding whichever side is shorter."""
        if self._cache is None or not self.rows:
            self._cache, self._mask, self._positions = cache, mask, positions
            self._hidden, self._logits = hidden, logits
            return
        mine, theirs = self._mask.shape[1], mask.shape[1]
        width = max(mine, theirs)
        for old, new in zip(self._cache.layers, cache.layers, strict=True):
            _check_layer(old)
            _check_layer(new)
            old.keys, new.keys = _left_pad(old.keys, width - mine), _left_pad(new.keys,
                                                                             width - theirs)
            old.values = _left_pad(old.values, width - mine)
            new.values = _left_pad(new.values, width - theirs)
            if isinstance(old, DynamicSlidingWindowLayer):
                old.keys, new.keys = _right_align(old.keys, new.keys)
                old.values, new.values = _right_align(old.values, new.values)
                old.cumulative_length = width
            old.keys = torch.cat([old.keys, new.keys])
            old.values = torch.cat([old.values, new.values])
        self._mask = torch.cat([_left_pad(self._mask, width - mine),
                                _left_pad(mask, width - theirs)])
        self._positions = torch.cat([self._positions, positions])
        self._hidden = torch.cat([self._hidden, hidden])
        self._logits = torch.cat([self._logits, logits])

    def _select(self, keep: list[int]) -> None:
        """Keep only rows ``keep``, and trim columns that are padding in every row left."""
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self._cache = None
            return
        index = torch.tensor(keep, dtype=torch.int64)
        assert self._cache is not None
        self._cache.batch_select_indices(index.to(self.llm.device))
        self._mask = self._mask[index.to(self._mask.device)]
        self._positions = self._positions[index.to(self._positions.device)]
        self._hidden = self._hidden[index.to(self._hidden.device)]
        self._logits = self._logits[index]
        unused = int((self._mask.sum(dim=0) == 0).cumprod(dim=0).sum())  # leading padding
        if unused:
            width = self._mask.shape[1]
            self._mask = self._mask[:, unused:]
            for layer in self._cache.layers:
                stored = layer.keys.shape[-2]
                cut = max(0, unused - (width - stored))  # columns of the trimmed span it holds
                layer.keys, layer.values = layer.keys[..., cut:, :], layer.values[..., cut:, :]
                if isinstance(layer, DynamicSlidingWindowLayer):
                    layer.cumulative_length -= unused


def _check_layer(layer: object) -> None:
    if type(layer) not in (DynamicLayer, DynamicSlidingWindowLayer):
        raise GenerationError(
            f"joining a running batch needs plain or sliding-window KV caches, not "
            f"{type(layer).__name__}"
        )


def _left_pad(t: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` zero columns before dimension -2 (keys, values) or -1 (masks) of ``t``."""
    if n <= 0:
        return t
    dim = -1 if t.dim() == 2 else -2
    shape = list(t.shape)
    shape[dim] = n
    return torch.cat([torch.zeros(shape, dtype=t.dtype, device=t.device), t], dim=dim)


def _right_align(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two sliding-window caches cut to the same number of latest columns."""
    n = min(a.shape[-2], b.shape[-2])
    return a[..., a.shape[-2] - n:, :], b[..., b.shape[-2] - n:, :]
