"""``/v1/completions`` and ``/v1/chat/completions`` bodies in, OpenAI-shaped answers out.

:func:`parse_generation` turns a request body into the jobs it asks for,
refusing what the node will not do with an :class:`~protocol.net.http.HttpError`
(400, OpenAI's error shape) whose ``param`` names the field: prompts as
string, list of strings, token ids or lists of them (:mod:`prover.llm.prompts`),
chat messages through the model's chat template (or the operator's), ``n``
choices per prompt (at most ``max_num_seqs`` in all, each its own job, its
seed the request's plus its index), ``stop`` strings, ``logprobs`` (an integer
for completions, ``logprobs``/``top_logprobs`` for chat), and a prompt plus
``max_tokens`` that fits ``max_model_len``. Generation ends at the model's
EOS tokens, which every job pins as its stop tokens.

A :class:`Choice` collects one job's tokens as the running batch hands them
out and renders its part of the answer: the text (decoded incrementally, cut
before a stop string), its log-probabilities in the endpoint's shape, and
its receipt (the ``assay`` field) with the prompt's and the output's token
ids, so a client can check the commitment against what it was shown.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from protocol.net.http import HttpError
from protocol.sampling import PPM
from prover.llm.engine import StepToken
from prover.llm.job import MAX_STOP_TOKENS, LLMJob
from prover.llm.logprobs import MAX_TOP_LOGPROBS, TokenLogprobs
from prover.llm.prompts import PromptError, chat_prompt, check_context, completion_prompts
from prover.llm.sampler import SamplingParams
from prover.llm.text import TextStream, check_stop_strings
from prover.llm.tokenizer import Tokenizer

DEFAULT_MAX_TOKENS = 16
"""OpenAI's default ``max_tokens`` for completions; the node uses it for chat too."""
LOGPROB_FLOOR = -9999.0
"""JSON has no infinity: a log-probability below this is reported as this."""


@dataclass(frozen=True)
class Generation:
    """What one request asks for: one job per (prompt, choice)."""

    chat: bool
    stream: bool
    prompts: list[list[int]]
    jobs: list[LLMJob]  # prompt i's choice j at index i * n + j
    n: int
    top_logprobs: int | None

    def prompt_of(self, index: int) -> list[int]:
        return self.prompts[index // self.n]


def _number(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HttpError(400, "malformed", f"{name} must be a number", param=name)
    if not low <= value <= high:
        raise HttpError(400, "malformed", f"{name} must be in {low:g}..{high:g}, got {value}",
                        param=name)
    return float(value)


def _integer(body: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise HttpError(400, "malformed", f"{name} must be an integer in {low}..{high}, "
                                          f"got {value!r:.40}", param=name)
    return value


def _stream(body: dict[str, Any]) -> bool:
    stream = body.get("stream")
    if stream is None:
        return False
    if not isinstance(stream, bool):
        raise HttpError(400, "malformed", "stream must be true or false", param="stream")
    return stream


def _stops(body: dict[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None or stop == "" or stop == []:
        return ()
    try:
        if isinstance(stop, str):
            return check_stop_strings([stop])
        if not isinstance(stop, list):
            raise ValueError("stop must be a string or a list of strings")
        return check_stop_strings(stop)
    except ValueError as exc:
        raise HttpError(400, "malformed", f"stop: {exc}", param="stop") from exc


def _top_logprobs(body: dict[str, Any], chat: bool) -> int | None:
    if not chat:
        return _integer(body, "logprobs", 0, MAX_TOP_LOGPROBS)
    wanted = body.get("logprobs")
    if wanted is not None and not isinstance(wanted, bool):
        raise HttpError(400, "malformed", "logprobs must be true or false", param="logprobs")
    top = _integer(body, "top_logprobs", 0, MAX_TOP_LOGPROBS)
    if top is not None and not wanted:
        raise HttpError(400, "malformed", "top_logprobs needs logprobs: true",
                        param="top_logprobs")
    return (top or 0) if wanted else None


def parse_generation(body: dict[str, Any], chat: bool, tokenizer: Tokenizer,
                     chat_template: str | None, eos: frozenset[int], max_new_tokens: int,
                     max_model_len: int, max_prompt_tokens: int, max_num_seqs: int,
                     seed: int) -> Generation:
    """The jobs a request body asks for (see the module docstring); ``seed`` is used when
    the body gives none."""
    stream = _stream(body)
    name = "max_tokens"
    if chat and body.get("max_tokens") is None and body.get("max_completion_tokens") is not None:
        name = "max_completion_tokens"  # chat's newer name
    max_tokens = int(_number(body, name, DEFAULT_MAX_TOKENS, 1, max_new_tokens))
    try:
        if chat:
            prompts = [chat_prompt(body.get("messages"), tokenizer, chat_template)]
        else:
            prompts = completion_prompts(body.get("prompt"), tokenizer)
        where = "messages" if chat else "prompt"
        for i, prompt in enumerate(prompts):
            param = where if len(prompts) == 1 else f"{where}[{i}]"
            if len(prompt) > max_prompt_tokens:
                raise PromptError(param, f"the prompt has {len(prompt)} tokens; this node takes "
                                         f"at most {max_prompt_tokens}")
            check_context(prompt, max_tokens, max_model_len, param)
    except PromptError as exc:
        raise HttpError(400, "invalid_prompt", str(exc), param=exc.param) from exc
    n = _integer(body, "n", 1, max_num_seqs) or 1
    if n * len(prompts) > max_num_seqs:
        raise HttpError(400, "malformed", f"n × prompts is {n * len(prompts)}; this node runs at "
                                          f"most {max_num_seqs} sequences (max_num_seqs)",
                        param="n")
    given = _integer(body, "seed", 0, 2**64 - 1)
    base = seed if given is None else given
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_k = int(_number(body, "top_k", 0, 0, 256))
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    stops = _stops(body)
    jobs = []
    for index in range(n * len(prompts)):
        sampling = SamplingParams(seed=(base + index % n) % 2**64,
                                  temperature_milli=round(temperature * 1000), top_k=top_k,
                                  top_p_ppm=round(top_p * PPM) or PPM)
        jobs.append(LLMJob(max_new_tokens=max_tokens, dtype="float32", sampling=sampling,
                           stop_tokens=frozenset(sorted(eos)[:MAX_STOP_TOKENS]),
                           stop_strings=stops))
    return Generation(chat, stream, prompts, jobs, n, _top_logprobs(body, chat))


@dataclass
class Choice:
    """One job's part of the answer, filled as its tokens come."""

    index: int
    tokenizer: Tokenizer
    stops: tuple[str, ...]
    started: float = field(default_factory=time.perf_counter)
    tokens: list[int] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprobs] = field(default_factory=list)
    finish_reason: str | None = None
    assay: dict[str, Any] | None = None
    last_token_at: float | None = None

    def add(self, token: StepToken) -> str:
        """Take one token; the text it releases."""
        self.tokens.append(token.token)
        self.pieces.append(token.text)
        if token.logprobs is not None:
            self.logprobs.append(token.logprobs)
        if token.finish_reason is not None:
            self.finish_reason = token.finish_reason
        return token.text

    def settle(self, output: list[int], stop_tokens: frozenset[int]) -> str:
        """The committed output is known: the text it holds that was not yet released (all
        of it when it was computed whole, as a devnet cheater does)."""
        stream = TextStream(self.tokenizer, self.stops)
        for token in output:
            stream.push(token)
        stream.finish()
        if self.finish_reason is None:
            self.finish_reason = ("stop" if stream.stopped or (output and output[-1] in
                                                               stop_tokens) else "length")
        sent = "".join(self.pieces)
        rest = stream.text[len(sent):] if stream.text.startswith(sent) else ""
        self.tokens = list(output)
        self.pieces.append(rest)
        return rest

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def _token_text(self, token: int) -> str:
        return self.tokenizer.decode([token])

    def completion_logprobs(self, offset: int = 0) -> dict[str, Any] | None:
        """The legacy completions shape: tokens, token_logprobs, top_logprobs, text_offset."""
        if not self.logprobs:
            return None
        tokens = [self._token_text(lp.token) for lp in self.logprobs]
        offsets, at = [], offset
        for text in tokens:
            offsets.append(at)
            at += len(text)
        return {
            "tokens": tokens,
            "token_logprobs": [max(lp.logprob, LOGPROB_FLOOR) for lp in self.logprobs],
            "top_logprobs": [{self._token_text(t): max(v, LOGPROB_FLOOR) for t, v in lp.top}
                             for lp in self.logprobs],
            "text_offset": offsets,
        }

    def chat_logprobs(self, start: int = 0) -> dict[str, Any] | None:
        """The chat shape: ``content``, one entry per token from ``start``."""
        if not self.logprobs:
            return None

        def entry(token: int, logprob: float) -> dict[str, Any]:
            text = self._token_text(token)
            return {"token": text, "logprob": max(logprob, LOGPROB_FLOOR),
                    "bytes": list(text.encode())}

        return {"content": [{**entry(lp.token, lp.logprob),
                             "top_logprobs": [entry(t, v) for t, v in lp.top]}
                            for lp in self.logprobs[start:]]}


def usage(choices: list[Choice], generation: Generation) -> dict[str, int]:
    """Real token counts: each prompt once, every choice's generated tokens."""
    prompt = sum(len(p) for p in generation.prompts)
    completion = sum(len(c.tokens) for c in choices)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}
