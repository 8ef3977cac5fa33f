"""Token ids to text, one token at a time, and where a stop string ends a generation.

A token is not a character: a byte-level BPE token can hold half of a UTF-8
character (an emoji is often two or three tokens), and SentencePiece
tokenizers decide a token's leading space from its neighbours. Decoding each
token alone gives mojibake (``'\\ufffd'``). :class:`TextStream` decodes
incrementally the way text-generation-inference and vLLM do: it decodes a
short window of recent tokens twice, with and without the newest, emits the
difference, and holds the text back while it ends in an incomplete
character. The pieces it emits join to the text of all the tokens.

Stop strings end a job at the first token after which the decoded text
contains one; the text returned stops before it (OpenAI's and vLLM's
default). While streaming, text that could be the start of a stop string
is held back until the next tokens show it is not. :func:`stop_index` is the
same rule over a whole output: a validator with the model's tokenizer uses
it to check that a generation that ended early ended where a stop string
completed, and nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence

from prover.llm.tokenizer import Tokenizer

REPLACEMENT = "\ufffd"
MAX_STOP_STRINGS = 4
"""OpenAI's limit on ``stop``."""
MAX_STOP_CHARS = 256


class TextStream:
    """Incremental decoding of one generation, with its stop strings."""

    def __init__(self, tokenizer: Tokenizer, stop_strings: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop_strings = tuple(stop_strings)
        self.ids: list[int] = []
        self.stopped = False
        self._prefix = 0  # window start: tokens before it are settled text
        self._read = 0  # tokens up to here have been decoded into ``_decoded``
        self._decoded = ""  # all complete text so far
        self._emitted = 0  # characters of ``_decoded`` handed out

    @property
    def text(self) -> str:
        """The text handed out so far (all of it once finished; before the stop string)."""
        return self._decoded[: self._emitted]

    def push(self, token: int) -> str:
        """Add one token; the text it releases (possibly empty)."""
        if self.stopped:
            return ""
        self.ids.append(token)
        before = self.tokenizer.decode(self.ids[self._prefix : self._read])
        after = self.tokenizer.decode(self.ids[self._prefix :])
        if len(after) > len(before) and not after.endswith(REPLACEMENT):
            self._decoded += after[len(before):]
            self._prefix, self._read = self._read, len(self.ids)
        return self._release(final=False)

    def finish(self) -> str:
        """The job ended without a stop string: release everything, incomplete bytes too."""
        if self.stopped:
            return ""
        before = self.tokenizer.decode(self.ids[self._prefix : self._read])
        after = self.tokenizer.decode(self.ids[self._prefix :])
        if len(after) > len(before):
            self._decoded += after[len(before):]
            self._prefix = self._read = len(self.ids)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        # text already released holds no stop string, nor the start of one: search after it
        hits = [i for i in (self._decoded.find(s, self._emitted) for s in self.stop_strings)
                if i >= 0]
        if hits:
            self.stopped = True
            end = min(hits)
            self._decoded = self._decoded[:end]
        else:
            end = len(self._decoded) - (0 if final else self._held_back())
        released = self._decoded[self._emitted : max(end, self._emitted)]
        self._emitted = max(end, self._emitted)
        return released

    def _held_back(self) -> int:
        """Length of the longest end of the text that begins some stop string."""
        longest = 0
        for stop in self.stop_strings:
            for n in range(min(len(stop) - 1, len(self._decoded)), longest, -1):
                if self._decoded.endswith(stop[:n]):
                    longest = n
                    break
        return longest


def stop_index(tokenizer: Tokenizer, tokens: Sequence[int], stop_strings: Sequence[str]
               ) -> int | None:
    """How many of ``tokens`` a job with these stop strings keeps (the token that completes
    the first stop string included), or None if no stop string completes."""
    if not stop_strings:
        return None
    stream = TextStream(tokenizer, stop_strings)
    for count, token in enumerate(tokens, start=1):
        stream.push(token)
        if stream.stopped:
            return count
    return None


def check_stop_strings(stop: Sequence[str]) -> tuple[str, ...]:
    """Stop strings as a job pins them: 1..4 distinct non-empty strings of ≤ 256 characters."""
    stops = tuple(stop)
    if len(stops) > MAX_STOP_STRINGS:
        raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings, got {len(stops)}")
    for s in stops:
        if not isinstance(s, str) or not s or len(s) > MAX_STOP_CHARS:
            raise ValueError(f"a stop string is 1..{MAX_STOP_CHARS} characters, got {s!r}")
    if len(set(stops)) != len(stops):
        raise ValueError("stop strings repeat")
    return stops
