"""A model's own tokenizer and chat template, or the zoo's byte-level one.

A checkpoint directory carries ``tokenizer.json`` (the ``tokenizers``
library's format) and, in ``tokenizer_config.json`` or
``chat_template.jinja``, its chat template; a GGUF file carries both and
:mod:`prover.gguf` writes them out the same way. :func:`load_tokenizer` reads
them with transformers' tokenizer classes, ``trust_remote_code`` off and
nothing fetched. The zoo's models have a 256-token vocabulary whose ids are
UTF-8 bytes (:class:`ByteTokenizer`), with a ChatML template.

Chat templates are Jinja, rendered in Jinja's immutable sandbox (by
transformers' ``apply_chat_template`` for checkpoints; for the byte tokenizer
with the same settings: ``trim_blocks``, ``lstrip_blocks``, loop controls,
``tojson``, ``raise_exception``), so a template can format text but not
reach Python.
An operator may override a model's template, as vLLM's ``--chat-template``
does, with a file or the template's text (:func:`read_chat_template`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

BYTE_VOCAB = 256
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""ChatML (the format of OpenAI's chat models and of SmolLM2, Qwen): the byte tokenizer's."""
TOKENIZER_FILE = "tokenizer.json"


class TokenizerError(ValueError):
    """A tokenizer or chat template that cannot be used; the message names the file or setting."""


class TemplateError(ValueError):
    """A chat template that failed to render these messages."""


class Tokenizer(Protocol):
    """What the llm mode needs from a tokenizer."""

    vocab_size: int
    eos_token_ids: frozenset[int]
    chat_template: str | None

    def encode(self, text: str, add_special_tokens: bool) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def render_chat(self, messages: Sequence[Mapping[str, Any]], template: str | None,
                    add_generation_prompt: bool) -> str: ...


def _render(template: str, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool,
            **special: object) -> str:
    from jinja2 import TemplateError as JinjaError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda value, indent=None: json.dumps(value, indent=indent)
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template).render(
            messages=list(messages), add_generation_prompt=add_generation_prompt, **special)
    except JinjaError as exc:
        raise TemplateError(f"chat template failed: {exc}") from exc


class ByteTokenizer:
    """Token ids are the UTF-8 bytes of the text (the zoo's 256-token vocabulary)."""

    vocab_size = BYTE_VOCAB
    eos_token_ids: frozenset[int] = frozenset()
    chat_template: str | None = CHATML_TEMPLATE

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")

    def render_chat(self, messages: Sequence[Mapping[str, Any]], template: str | None = None,
                    add_generation_prompt: bool = True) -> str:
        chosen = template if template is not None else self.chat_template
        assert chosen is not None
        return _render(chosen, messages, add_generation_prompt, bos_token="", eos_token="")


class HFTokenizer:
    """A transformers (``tokenizers``-backed) tokenizer read from a model directory."""

    def __init__(self, directory: Path, model_eos: Sequence[int] = ()) -> None:
        from transformers import AutoTokenizer

        directory = Path(directory)
        if not (directory / TOKENIZER_FILE).is_file():
            raise TokenizerError(f"{directory} has no {TOKENIZER_FILE}")
        try:
            self._tok = AutoTokenizer.from_pretrained(
                directory, local_files_only=True, trust_remote_code=False)
        except Exception as exc:  # malformed files fail anywhere in transformers
            raise TokenizerError(f"{directory / TOKENIZER_FILE} does not load: {exc}") from exc
        self.vocab_size = len(self._tok)
        eos = {int(i) for i in model_eos}
        if self._tok.eos_token_id is not None:
            eos.add(int(self._tok.eos_token_id))
        self.eos_token_ids = frozenset(eos)
        template = getattr(self._tok, "chat_template", None)
        self.chat_template = template if isinstance(template, str) else None

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        ids: list[int] = self._tok(text, add_special_tokens=add_special_tokens)["input_ids"]
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        text: str = self._tok.decode(list(ids), skip_special_tokens=True,
                                     clean_up_tokenization_spaces=False)
        return text

    def render_chat(self, messages: Sequence[Mapping[str, Any]], template: str | None = None,
                    add_generation_prompt: bool = True) -> str:
        chosen = template if template is not None else self.chat_template
        if chosen is None:
            raise TemplateError("this model has no chat template; give one (--chat-template)")
        try:
            text = self._tok.apply_chat_template(
                list(messages), chat_template=chosen, tokenize=False,
                add_generation_prompt=add_generation_prompt)
        except Exception as exc:  # template errors surface as jinja or value errors
            raise TemplateError(f"chat template failed: {exc}") from exc
        if not isinstance(text, str):
            raise TemplateError("chat template did not render to text")
        return text


def load_tokenizer(directory: Path, vocab_size: int, model_eos: Sequence[int] = ()) -> Tokenizer:
    """The tokenizer of the model in ``directory`` (vocabulary ``vocab_size``).

    A directory with ``tokenizer.json`` gets its own; one without, whose model has the
    zoo's 256-token vocabulary, the byte tokenizer. A tokenizer with more tokens than the
    model has logits is refused: it could encode a prompt the model cannot read.
    """
    directory = Path(directory)
    if (directory / TOKENIZER_FILE).is_file():
        tokenizer: Tokenizer = HFTokenizer(directory, model_eos)
    elif vocab_size == BYTE_VOCAB:
        return ByteTokenizer()
    else:
        raise TokenizerError(
            f"{directory} has no {TOKENIZER_FILE}, and a {vocab_size}-token model is not "
            "byte-level: add the checkpoint's tokenizer files"
        )
    if tokenizer.vocab_size > vocab_size:
        raise TokenizerError(
            f"{directory / TOKENIZER_FILE} has {tokenizer.vocab_size} tokens, more than the "
            f"model's {vocab_size} logits"
        )
    return tokenizer


def read_chat_template(value: str) -> str:
    """A chat template override: the text of the file ``value`` names, or ``value`` itself
    when it is a template (holds ``{{`` or ``{%``)."""
    path = Path(value)
    try:
        if path.is_file():
            return path.read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise TokenizerError(f"chat template {value!r} cannot be read: {exc}") from exc
    if "{{" in value or "{%" in value:
        return value
    raise TokenizerError(f"chat template {value!r} is neither a file nor a Jinja template")
