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

An :class:`Engine` is what a server drives: a bounded queue of submitted jobs
in front of one running batch per dtype, at most ``max_num_seqs`` sequences
running in all and no job longer than ``max_model_len`` (prompt plus new
tokens), as vLLM names these settings. Each :meth:`Engine.step` first admits
waiting jobs in the order they came, as far as room allows (those of one
dtype prefilled together), drops cancelled ones, then advances every batch by
one token and returns what each job produced. A batch's step is two halves,
:meth:`DecodeBatch.choose` (the tokens, from the last forward pass) and
:meth:`DecodeBatch.advance` (the forward pass for the next); a caller of
``Engine.step`` may take the tokens between the two, a forward pass before
the step ends. ``submit`` and ``cancel`` may be called from any thread;
``step`` from one.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

from prover.llm.job import LLMJob
from prover.llm.logprobs import MAX_TOP_LOGPROBS, TokenLogprobs, token_logprobs
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
        self._next: torch.Tensor | None = None  # tokens chosen, their forward pass not yet run

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
        if self._next is not None:
            raise GenerationError("the batch chose its tokens already; advance it first")
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
        produced = self.choose()
        self.advance()
        return produced

    def choose(self) -> list[StepToken]:
        """The first half of :meth:`step`: every running job's next token from the last forward
        pass; finished jobs leave. :meth:`advance` must follow before anything else."""
        if self._next is not None:
            raise GenerationError("the batch chose its tokens already; advance it first")
        if not self.rows:
            return []
        # at the batch's thread count: torch's default (every core) contends with the server's
        # own thread and cost a served stream about a fifth of its speed
        with llm_torch(self.threads, self.model, self.attention):
            return self._choose()

    def _choose(self) -> list[StepToken]:
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
        self._next = chosen[keep]
        return produced

    def advance(self) -> None:
        """The second half of :meth:`step`: one forward pass for the jobs still running."""
        tokens, self._next = self._next, None
        if self.rows and tokens is not None:
            self._forward(tokens)

    def remove(self, key: Hashable) -> None:
        """Drop a running job (its client went away); it leaves no result."""
        if self._next is not None:
            raise GenerationError("the batch chose its tokens already; advance it first")
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


class QueueFull(RuntimeError):
    """The engine's waiting queue is full: the caller should retry later (HTTP 429)."""


@dataclass(frozen=True)
class _Waiting:
    key: Hashable
    prompt: torch.Tensor
    job: LLMJob
    top_logprobs: int | None


class Engine:
    """A bounded queue in front of continuously batched generation; see the module docstring."""

    def __init__(self, llm: LLM, attention: str = "sdpa", threads: int = 1,
                 max_num_seqs: int = 16, max_model_len: int | None = None,
                 max_waiting: int = 64) -> None:
        if max_num_seqs < 1 or max_waiting < 0:
            raise ValueError("max_num_seqs must be at least 1 and max_waiting not negative")
        if max_model_len is not None and not 1 <= max_model_len <= llm.max_positions:
            raise ValueError(f"max_model_len must be 1..{llm.max_positions} (the model's "
                             f"positions), got {max_model_len}")
        self.llm = llm
        self.attention = attention
        self.threads = threads
        self.max_num_seqs = max_num_seqs
        self.max_model_len = max_model_len or llm.max_positions
        self.max_waiting = max_waiting
        self.batches: dict[str, DecodeBatch] = {}
        self._waiting: deque[_Waiting] = deque()
        self._cancelled: set[Hashable] = set()
        self._known: set[Hashable] = set()
        self._done: dict[Hashable, Generated] = {}
        self._lock = threading.Lock()

    @property
    def running(self) -> int:
        return sum(len(b) for b in self.batches.values())

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def submit(self, key: Hashable, prompt: torch.Tensor, job: LLMJob,
               top_logprobs: int | None = None) -> None:
        """Queue a job; :class:`QueueFull` when ``max_waiting`` jobs already wait, and
        :class:`GenerationError` for one this engine can never run."""
        self.llm.check_fits(prompt, job.max_new_tokens)
        if prompt.numel() + job.max_new_tokens > self.max_model_len:
            raise GenerationError(
                f"prompt of {prompt.numel()} plus {job.max_new_tokens} new tokens exceeds "
                f"max_model_len {self.max_model_len}"
            )
        if job.stop_strings and self.llm.tokenizer is None:
            raise GenerationError("stop strings need the model's tokenizer")
        if top_logprobs is not None and not 0 <= top_logprobs <= MAX_TOP_LOGPROBS:
            raise GenerationError(f"top_logprobs must be 0..{MAX_TOP_LOGPROBS}")
        with self._lock:
            if key in self._known:
                raise GenerationError(f"job key {key!r} is already in this engine")
            if len(self._waiting) >= self.max_waiting:
                raise QueueFull(f"{len(self._waiting)} jobs are waiting (max_waiting "
                                f"{self.max_waiting}); retry later")
            self._known.add(key)
            self._waiting.append(_Waiting(key, prompt, job, top_logprobs))

    def cancel(self, key: Hashable) -> None:
        """Drop a waiting or running job at the next step; it leaves no result."""
        with self._lock:
            if key in self._known:
                self._cancelled.add(key)

    def step(self, chosen: Callable[[list[StepToken]], None] | None = None) -> list[StepToken]:
        """Admit, drop cancelled jobs, and advance every running job by one token.

        ``chosen``, if given, is called with the step's tokens as soon as they are chosen,
        before the forward passes that prepare the next step (a finished job's result can
        be popped from there): a server streams them a forward pass earlier.
        """
        self._admit()
        produced: list[StepToken] = []
        for batch in self.batches.values():
            for token in batch.choose():
                if token.finish_reason is not None:
                    self._done[token.key] = batch.pop(token.key)
                    self._forget(token.key)
                produced.append(token)
        if chosen is not None:
            chosen(produced)
        for dtype, batch in list(self.batches.items()):
            batch.advance()
            if not len(batch):
                del self.batches[dtype]
        return produced

    def pop(self, key: Hashable) -> Generated:
        """A finished job's result, handed over once."""
        return self._done.pop(key)

    def _forget(self, key: Hashable) -> None:
        with self._lock:
            self._known.discard(key)
            self._cancelled.discard(key)

    def _admit(self) -> None:
        with self._lock:
            cancelled, self._cancelled = self._cancelled, set()
            self._known -= cancelled
            self._waiting = deque(w for w in self._waiting if w.key not in cancelled)
            room = self.max_num_seqs - self.running + sum(
                k in cancelled for b in self.batches.values() for k in b.keys)
            admitted: list[_Waiting] = []
            while self._waiting and len(admitted) < room:
                admitted.append(self._waiting.popleft())
        for batch in self.batches.values():
            for key in [k for k in batch.keys if k in cancelled]:
                batch.remove(key)
        by_dtype: dict[str, list[_Waiting]] = {}
        for w in admitted:
            by_dtype.setdefault(w.job.dtype, []).append(w)
        for dtype, group in by_dtype.items():
            batch = self.batches.get(dtype)
            if batch is None:
                batch = self.batches[dtype] = DecodeBatch(self.llm, dtype, self.attention,
                                                          self.threads)
            for top in sorted({w.top_logprobs for w in group}, key=lambda t: -1 if t is None
                              else t):
                batch.join([(w.key, w.prompt, w.job) for w in group if w.top_logprobs == top],
                           top_logprobs=top)
