"""OpenAI-style prompts to token ids, with errors that name the field.

Completions take ``prompt`` as OpenAI allows: a string, a list of strings,
a list of token ids, or a list of lists of token ids — one job per prompt.
Text is encoded with the model's tokenizer, its special tokens included
(a BOS where the tokenizer adds one). Chat takes ``messages``: each a
``role`` (``system``, ``developer``, ``user``, ``assistant`` or ``tool``) and
``content`` — a string or a list of text parts ``{"type": "text", "text": …}``,
joined with newlines as vLLM joins them — rendered with the model's chat
template (or the operator's, :func:`prover.llm.tokenizer.read_chat_template`)
and encoded without adding special tokens (the template writes them).

Anything else — an unknown role, an image part, a token id outside the
vocabulary, an empty prompt, a prompt that with ``max_tokens`` exceeds the
context — raises :class:`PromptError`, whose ``param`` names the field the
way OpenAI's errors do (``messages[2].role``, ``prompt[0][5]``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prover.llm.tokenizer import TemplateError, Tokenizer

ROLES = ("system", "developer", "user", "assistant", "tool")
MESSAGE_KEYS = frozenset({"role", "content", "name", "tool_call_id"})
MAX_PROMPTS = 64


class PromptError(ValueError):
    """A prompt or message the model cannot take; ``param`` names the offending field."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _token_ids(value: Sequence[object], param: str, vocab: int) -> list[int]:
    if not value:
        raise PromptError(param, "a prompt needs at least one token")
    for i, token in enumerate(value):
        if not _is_int(token):
            raise PromptError(f"{param}[{i}]", f"token ids are integers, got {token!r}")
        if not 0 <= int(token) < vocab:  # type: ignore[call-overload]
            raise PromptError(f"{param}[{i}]",
                              f"token id {token} is outside the vocabulary 0..{vocab - 1}")
    return [int(t) for t in value]  # type: ignore[call-overload]


def _text_ids(text: str, param: str, tokenizer: Tokenizer) -> list[int]:
    if not text:
        raise PromptError(param, "a prompt must not be empty")
    ids = tokenizer.encode(text, add_special_tokens=True)
    if not ids:
        raise PromptError(param, "the prompt encodes to no tokens")
    return ids


def completion_prompts(prompt: object, tokenizer: Tokenizer) -> list[list[int]]:
    """The token ids of each prompt in a completions request's ``prompt``."""
    vocab = tokenizer.vocab_size
    if isinstance(prompt, str):
        return [_text_ids(prompt, "prompt", tokenizer)]
    if not isinstance(prompt, list) or not prompt:
        raise PromptError("prompt", "must be a string, a list of strings, a list of token ids "
                                    "or a list of lists of token ids")
    if len(prompt) > MAX_PROMPTS and not all(_is_int(t) for t in prompt):
        raise PromptError("prompt", f"at most {MAX_PROMPTS} prompts per request")
    if all(_is_int(t) for t in prompt):
        return [_token_ids(prompt, "prompt", vocab)]
    out = []
    for i, item in enumerate(prompt):
        if isinstance(item, str):
            out.append(_text_ids(item, f"prompt[{i}]", tokenizer))
        elif isinstance(item, list):
            out.append(_token_ids(item, f"prompt[{i}]", vocab))
        else:
            raise PromptError(f"prompt[{i}]", f"must be a string or a list of token ids, "
                                              f"got {type(item).__name__}")
    return out


def _content(value: object, param: str) -> str:
    if isinstance(value, str):
        return value
    if not isinstance(value, list) or not value:
        raise PromptError(param, "must be a string or a non-empty list of content parts")
    texts = []
    for j, part in enumerate(value):
        where = f"{param}[{j}]"
        if not isinstance(part, Mapping):
            raise PromptError(where, "a content part is an object")
        if part.get("type") != "text":
            raise PromptError(f"{where}.type", f"content part type {part.get('type')!r} is not "
                                               "supported; this model reads text parts only")
        unknown = sorted(set(part) - {"type", "text"})
        if unknown:
            raise PromptError(f"{where}.{unknown[0]}", "unknown field in a text part")
        if not isinstance(part.get("text"), str):
            raise PromptError(f"{where}.text", "must be a string")
        texts.append(str(part["text"]))
    return "\n".join(texts)


def chat_messages(messages: object) -> list[dict[str, Any]]:
    """The messages checked and normalised: each ``{"role", "content": str}`` (+ ``name``)."""
    if not isinstance(messages, list) or not messages:
        raise PromptError("messages", "must be a non-empty list of messages")
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise PromptError(where, "a message is an object with a role and content")
        unknown = sorted(set(message) - MESSAGE_KEYS)
        if unknown:
            raise PromptError(f"{where}.{unknown[0]}", "unknown or unsupported message field")
        role = message.get("role")
        if role not in ROLES:
            raise PromptError(f"{where}.role", f"role {role!r} is not one of {list(ROLES)}")
        normal: dict[str, Any] = {"role": role,
                                  "content": _content(message.get("content"), f"{where}.content")}
        for key in ("name", "tool_call_id"):
            if key in message:
                if not isinstance(message[key], str):
                    raise PromptError(f"{where}.{key}", "must be a string")
                normal[key] = message[key]
        out.append(normal)
    return out


def chat_prompt(messages: object, tokenizer: Tokenizer, chat_template: str | None = None,
                add_generation_prompt: bool = True) -> list[int]:
    """The token ids of a chat request: its messages through the chat template."""
    checked = chat_messages(messages)
    try:
        text = tokenizer.render_chat(checked, chat_template, add_generation_prompt)
    except TemplateError as exc:
        raise PromptError("messages", str(exc)) from exc
    ids = tokenizer.encode(text, add_special_tokens=False)
    if not ids:
        raise PromptError("messages", "the chat template rendered no tokens")
    return ids


def check_context(prompt: Sequence[int], max_tokens: int, max_model_len: int,
                  param: str = "prompt") -> None:
    """Refuse a prompt that with ``max_tokens`` new tokens does not fit ``max_model_len``."""
    if len(prompt) + max_tokens > max_model_len:
        raise PromptError(
            param if len(prompt) >= max_model_len else "max_tokens",
            f"prompt of {len(prompt)} tokens plus max_tokens {max_tokens} exceeds the model's "
            f"context of {max_model_len} tokens"
        )
