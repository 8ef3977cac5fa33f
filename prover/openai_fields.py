"""Which request fields each OpenAI-shaped endpoint takes, and which it refuses.

OpenAI's API answers a field it does not know with a 400 in its error shape,
naming the field in ``param``; so does the node, rather than run a job that
silently ignores what the caller asked for. A field OpenAI defines but the
node does not implement is taken only at the value that changes nothing
(``best_of`` 1, ``echo`` false, penalties 0, no tools, …); any other
value is a 400 naming it too. The fields are those of OpenAI's API reference
for ``/v1/completions``, ``/v1/chat/completions`` and ``/v1/embeddings``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from protocol.net.http import HttpError

Neutral = Callable[[object], bool]
"""Whether a value of a field the node does not implement changes nothing."""


def _one_of(*values: object) -> Neutral:
    """Exactly one of ``values`` (``True`` is not ``1`` here, nor ``0`` ``False``)."""
    return lambda v: any(type(v) is type(x) and v == x for x in values)


def _no_usage_options(value: object) -> bool:
    """``stream_options``: the last chunk always carries ``usage``, so only that may be asked."""
    return value is None or (isinstance(value, dict) and set(value) <= {"include_usage"})


def _text_format(value: object) -> bool:
    return value is None or value == {"type": "text"}


_NEUTRAL: Mapping[str, tuple[Neutral, str]] = {
    "best_of": (_one_of(None, 1), "1"),
    "echo": (_one_of(None, False), "false"),
    "suffix": (_one_of(None, ""), "null"),
    "presence_penalty": (_one_of(None, 0, 0.0), "0"),
    "frequency_penalty": (_one_of(None, 0, 0.0), "0"),
    "logit_bias": (_one_of(None, {}), "null"),
    "stream_options": (_no_usage_options, "null or {\"include_usage\": …}"),
    "tools": (_one_of(None, []), "null"),
    "tool_choice": (_one_of(None, "none"), "null or \"none\""),
    "parallel_tool_calls": (_one_of(None, True, False), "a boolean (there are no tools)"),
    "response_format": (_text_format, "null or {\"type\": \"text\"}"),
    "store": (_one_of(None, False), "null or false"),
    "metadata": (_one_of(None, {}), "null"),
    "service_tier": (_one_of(None, "auto", "default"), "null, \"auto\" or \"default\""),
}

_SAMPLING = frozenset({"model", "max_tokens", "temperature", "top_p", "top_k", "seed", "stream",
                       "user"})
_GENERATION = _SAMPLING | {"n", "stop", "logprobs"}
COMPLETIONS = (_GENERATION | {"prompt"}, frozenset({
    "best_of", "echo", "suffix", "presence_penalty", "frequency_penalty", "logit_bias",
    "stream_options",
}))
CHAT_COMPLETIONS = (_GENERATION | {"messages", "max_completion_tokens", "top_logprobs"},
                    frozenset({
    "presence_penalty", "frequency_penalty", "logit_bias", "stream_options", "tools",
    "tool_choice", "parallel_tool_calls", "response_format", "store", "metadata",
    "service_tier",
}))
EMBEDDINGS = (frozenset({"model", "input", "encoding_format", "user", "dimensions"}),
              frozenset[str]())
INFER = (frozenset({"model", "input"}), frozenset[str]())
"""The node's own tensor endpoint takes exactly these."""

Fields = tuple[frozenset[str], frozenset[str]]
"""(fields implemented, OpenAI fields taken only at their neutral value)."""


def check_fields(body: Mapping[str, Any], fields: Fields) -> None:
    """Refuse an unknown field, or an unimplemented one at a value that would change the
    answer, with a 400 naming it (the first, in alphabetical order)."""
    implemented, neutral = fields
    for name in sorted(body):
        if name in implemented:
            continue
        if name not in neutral:
            raise HttpError(400, "unsupported_field",
                            f"unknown field {name!r}; this endpoint takes "
                            f"{sorted(implemented | neutral)}", param=name)
        accepts, expected = _NEUTRAL[name]
        if not accepts(body[name]):
            raise HttpError(400, "unsupported_field",
                            f"{name} is not supported by this node: it must be {expected}, "
                            f"got {body[name]!r:.60}", param=name)
