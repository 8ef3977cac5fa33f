"""Sentence embedding encoders: a BERT encoder, mean pooling, L2 normalisation.

This is the architecture of sentence-transformers' ``all-MiniLM-L6-v2``
(modules ``Transformer`` → ``Pooling`` (mean of token states over the
attention mask) → ``Normalize``), as its ``modules.json`` and
``1_Pooling/config.json`` describe it, built here on ``transformers``'
``BertModel`` so that no code from the model directory runs. The directory is
what ``SentenceTransformer.save`` writes: ``config.json`` (``model_type``
``bert``), ``model.safetensors``, ``tokenizer.json`` and the two
sentence-transformers files.

A job's input is the int64 token ids ``[1, seq]`` of one text (the node's
HTTP API tokenises with the model's own ``tokenizer.json``); its output is
the float32 embedding ``[1, hidden]``. Several jobs run as one right-padded
batch with an attention mask: padding changes float rounding, not the
function, and the ``tensor`` mode's tolerances are measured with it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel

EMBEDDER_KIND = "bert"
POOLING_FILE = Path("1_Pooling") / "config.json"
MODULES_FILE = "modules.json"
TOKENIZER_FILE = "tokenizer.json"
NORMALIZE_MODULE = "sentence_transformers.models.Normalize"
POOLING_KEYS = ("pooling", "normalize")
"""Keys an embedder's stored config adds to ``BertConfig``'s."""


class EmbedderConfigError(ValueError):
    """A sentence-transformers directory this module cannot serve; the message says which file."""


class MeanPooling(nn.Module):
    """Mean of the token states the attention mask keeps: ``[B, L, d]`` → ``[B, d]``.

    A module of its own so that the tensor mode's sketch can take its input,
    the last hidden states, with a forward hook.
    """

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.to(hidden.dtype).unsqueeze(-1)  # [B, L, 1]
        total = (hidden * weights).sum(dim=1)  # [B, d]
        return total / weights.sum(dim=1).clamp(min=1.0)


class SentenceEmbedder(BertModel):
    """``BertModel`` whose forward returns the pooled, normalised sentence embedding.

    A subclass (not a wrapper) so that its state dict has the checkpoint's
    own key names and loads with ``strict=True``.
    """

    def __init__(self, config: BertConfig, normalize: bool = True) -> None:
        super().__init__(config)
        self.pool = MeanPooling()
        self.normalize = normalize

    def forward(  # type: ignore[override]
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = super().forward(input_ids=input_ids, attention_mask=attention_mask)
        pooled = self.pool(hidden.last_hidden_state, attention_mask)  # [B, d]
        return F.normalize(pooled, p=2.0, dim=-1) if self.normalize else pooled


def read_pooling(directory: Path) -> dict[str, Any]:
    """``{"pooling": "mean", "normalize": bool}`` from a sentence-transformers directory."""
    path = directory / POOLING_FILE
    try:
        pooling = json.loads(path.read_text(encoding="utf-8"))
        modules = json.loads((directory / MODULES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EmbedderConfigError(
            f"{directory} is a BERT model but not a sentence-transformers embedder "
            f"({POOLING_FILE} and {MODULES_FILE} are needed): {exc}"
        ) from exc
    if not isinstance(pooling, dict) or not isinstance(modules, list):
        raise EmbedderConfigError(f"{path} or {directory / MODULES_FILE} has the wrong shape")
    modes = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v is True]
    if modes != ["pooling_mode_mean_tokens"]:
        raise EmbedderConfigError(
            f"{path}: only mean-token pooling is served, this model pools by {modes}"
        )
    normalize = any(isinstance(m, dict) and m.get("type") == NORMALIZE_MODULE for m in modules)
    return {"pooling": "mean", "normalize": normalize}


def embedder(config: Mapping[str, Any]) -> SentenceEmbedder:
    """The architecture for a stored embedder config (``BertConfig`` keys plus pooling keys)."""
    if config.get("pooling") != "mean" or not isinstance(config.get("normalize"), bool):
        raise EmbedderConfigError("an embedder config needs pooling 'mean' and a normalize flag")
    bert = {k: v for k, v in config.items() if k not in POOLING_KEYS and k != "model_type"}
    bert_config = BertConfig(**bert, attn_implementation="eager")
    return SentenceEmbedder(bert_config, normalize=bool(config["normalize"]))


def pad_batch(inputs: Sequence[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token ids ``[1, seq_i]`` to ``[B, max seq]`` with an attention mask."""
    longest = max(int(x.shape[-1]) for x in inputs)
    ids = torch.full((len(inputs), longest), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(inputs), longest), dtype=torch.int64)
    for row, x in enumerate(inputs):
        ids[row, : x.shape[-1]] = x.reshape(-1)
        mask[row, : x.shape[-1]] = 1
    return ids, mask


SENTENCE_CONFIG_FILE = "sentence_bert_config.json"
BYTE_VOCABULARY = 256


class TextTooLong(ValueError):
    """Input the model cannot read: too many tokens, or ids outside its vocabulary."""


class TextEncoder:
    """Text → token ids: the model's own ``tokenizer.json``, or bytes for a 256-token zoo model.

    No padding and no truncation: a job is one text's ids, and a text longer
    than the model reads (``max_seq_length`` of ``sentence_bert_config.json``,
    else the model's positions) is refused rather than silently cut.
    """

    def __init__(self, directory: Path, config: Mapping[str, Any]) -> None:
        self.max_tokens = int(config["max_position_embeddings"])
        self.vocab_size = int(config["vocab_size"])
        sentence = directory / SENTENCE_CONFIG_FILE
        if sentence.is_file():
            limit = json.loads(sentence.read_text(encoding="utf-8")).get("max_seq_length")
            if isinstance(limit, int) and 0 < limit < self.max_tokens:
                self.max_tokens = limit
        self.tokenizer: Any = None
        if (directory / TOKENIZER_FILE).is_file():
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
            self.tokenizer.no_padding()
            self.tokenizer.no_truncation()
        elif int(config["vocab_size"]) != BYTE_VOCABULARY:
            raise EmbedderConfigError(
                f"{directory} has no {TOKENIZER_FILE}, and its vocabulary of "
                f"{config['vocab_size']} is not the 256 UTF-8 bytes"
            )

    def check_ids(self, ids: Sequence[int]) -> list[int]:
        """Token ids given directly: each in the vocabulary, no more than the model reads."""
        bad = [t for t in ids if not 0 <= t < self.vocab_size]
        if bad:
            raise TextTooLong(f"token ids {bad[:3]} outside the vocabulary [0, {self.vocab_size})")
        if len(ids) > self.max_tokens:
            raise TextTooLong(f"{len(ids)} tokens, more than the model's {self.max_tokens}")
        return list(ids)

    def encode(self, text: str) -> list[int]:
        ids = (list(self.tokenizer.encode(text).ids) if self.tokenizer is not None
               else list(text.encode("utf-8")))
        if len(ids) > self.max_tokens:
            raise TextTooLong(f"{len(ids)} tokens, more than the model's {self.max_tokens}")
        return ids
