"""Byte-level text: each UTF-8 byte is one token id (a vocabulary of 256).

This is the real vocabulary of the zoo's GPT-2 and Llama models. The node's
HTTP API turns prompts into tokens and generated tokens into text with it,
and a receipt (:mod:`protocol.receipt`) checks a response's text against the
committed tokens with the same functions.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence


def encode_text(text: str) -> list[int]:
    """Byte-level tokenization: each UTF-8 byte is one token id (vocabulary 256)."""
    return list(text.encode("utf-8"))


def decode_tokens(ids: Sequence[int]) -> str:
    return bytes(ids).decode("utf-8", errors="replace")


def stream_texts(ids: Sequence[int]) -> list[str]:
    """One text piece per token, holding back bytes until they complete a UTF-8 character."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pieces = [decoder.decode(bytes([token])) for token in ids]
    pieces.append(decoder.decode(b"", final=True))
    return [piece for piece in pieces if piece]
