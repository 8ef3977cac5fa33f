"""Model directories on disk and their content-addressed ids (DESIGN decision 9).

A model directory holds ``model.safetensors`` (the state dict) and one of:

- ``assay-model.json``, written by :func:`save_model`:
  ``{"format": 1, "kind": ..., "config": {...}, "dtype": "float32"}``, where
  ``config`` is a zoo config (``mlp``/``cnn``) or the keyword arguments of
  ``GPT2Config``/``LlamaConfig`` (``gpt2``/``llama``); integer models
  (``mlp-int8``/``cnn-int8``, :mod:`prover.integer`) have ``"dtype": "int8"``
  and a config with a ``quantization`` block;
- ``config.json``, written by transformers' ``save_pretrained(...,
  safe_serialization=True)`` for any causal LM that transformers'
  ``AutoModelForCausalLM`` builds from its own code (Llama, Qwen2/3, Mistral,
  Gemma 2/3, Phi-3, GPT-2, SmolLM, …), recognised by its ``model_type``, with
  the weights in ``model.safetensors`` or in shards listed by
  ``model.safetensors.index.json``; or by sentence-transformers for a BERT
  embedder.

Loading only parses JSON and safetensors: zoo models are built from the
config by :func:`prover.zoo.architecture`, checkpoints by transformers' own
classes for their ``model_type`` with ``trust_remote_code`` off, so nothing
in the directory is executed or unpickled (an ``auto_map`` in
``config.json`` is never followed) and nothing is downloaded.

The model id is::

    sha256(encode({
        "config":  canonical JSON of the config (keys sorted, no whitespace,
                   floats as Python's shortest round-trip repr),
        "kind":    "mlp" | "cnn" | "gpt2" | "llama" | "mlp-int8" | "cnn-int8",
        "weights": sha256(bytes of model.safetensors),
    }))

with ``encode`` the canonical msgpack of :mod:`protocol.codec`. A sharded
checkpoint's ``weights`` is the SHA-256 of the canonical map of each shard's
file name to its SHA-256. A directory with a ``tokenizer.json`` adds
``"tokenizer": sha256(tokenizer.json)``: the tokenizer decides where a stop
string ends a generation, so node and validator must hold the same one. A
directory converted from a GGUF file (:mod:`prover.gguf`, marked by
``assay-gguf.json``) has the id of the file itself: ``kind`` ``"gguf"``, an
empty config and ``weights`` the SHA-256 of the ``.gguf`` file. The config goes
in as a JSON string because canonical messages carry no floats and model
configs have some (``layer_norm_epsilon``). The id is computed from the files
as stored, so it survives any number of save/load round trips, and any change
to a weight byte, a config value or the kind gives a new id. The weights'
dtype is part of the safetensors header and so of the weights hash; float
models always run in float32, integer models in integers. In a
``config.json``, ``transformers_version`` and ``_name_or_path`` are
bookkeeping and are left out of the config. A sentence-transformers
directory (``model_type`` ``bert``) adds its pooling to the config
(:mod:`prover.embedder`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model as load_safetensors_into
from safetensors.torch import save_model as save_safetensors_from
from torch import nn

from protocol.codec import encode
from protocol.hashing import sha256
from prover import zoo
from prover.embedder import EmbedderConfigError, read_pooling

WEIGHTS_FILE = "model.safetensors"
META_FILE = "assay-model.json"
TRANSFORMERS_CONFIG_FILE = "config.json"
META_FORMAT = 1
RUN_DTYPE = "float32"
INTEGER_DTYPE = "int8"
TRANSFORMERS_BOOKKEEPING_KEYS = ("transformers_version", "_name_or_path")
SHARD_INDEX_FILE = f"{WEIGHTS_FILE}.index.json"
TOKENIZER_FILE = "tokenizer.json"
GGUF_MARKER_FILE = "assay-gguf.json"
GGUF_KIND = "gguf"


class ModelDirectoryError(ValueError):
    """A model directory that cannot be identified or loaded; the message says which file."""


@dataclass(frozen=True)
class ModelMeta:
    """What a model directory says about its model, before any weights are read."""

    kind: str
    config: dict[str, Any]
    dtype: str
    source: str  # META_FILE or TRANSFORMERS_CONFIG_FILE: the file the config came from


def canonical_config_json(config: Mapping[str, Any]) -> str:
    """The one JSON text of a config: sorted keys, no whitespace, no NaN or infinity."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)


def compute_model_id(kind: str, config: Mapping[str, Any], weights_sha256: bytes) -> bytes:
    """The model id formula of this module's docstring."""
    return sha256(
        encode({"config": canonical_config_json(config), "kind": kind, "weights": weights_sha256})
    )


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelDirectoryError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ModelDirectoryError(f"{path} must hold a JSON object, got {type(value).__name__}")
    return value


def _assay_meta(path: Path) -> ModelMeta:
    meta = _read_json_object(path)
    if meta.get("format") != META_FORMAT:
        raise ModelDirectoryError(
            f"{path}: format is {meta.get('format')!r}; this version reads format {META_FORMAT}"
        )
    kind, config, dtype = meta.get("kind"), meta.get("config"), meta.get("dtype")
    if kind not in zoo.KINDS:
        raise ModelDirectoryError(f"{path}: kind {kind!r} is not one of {list(zoo.KINDS)}")
    if not isinstance(config, dict):
        raise ModelDirectoryError(f"{path}: config must be a JSON object")
    want = stored_dtype(kind)
    if dtype != want:
        raise ModelDirectoryError(
            f"{path}: dtype {dtype!r} is not supported for {kind}; use {want}"
        )
    return ModelMeta(kind=kind, config=config, dtype=dtype, source=META_FILE)


def is_causal_lm_kind(kind: str) -> bool:
    """A zoo causal LM, or a ``model_type`` transformers' ``AutoModelForCausalLM`` builds."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return kind in zoo.CAUSAL_LM_KINDS or (
        kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in zoo.EMBEDDER_KINDS
    )


def _transformers_meta(path: Path) -> ModelMeta:
    config = _read_json_object(path)
    kind = config.get("model_type")
    if not isinstance(kind, str) or not (kind in zoo.EMBEDDER_KINDS or is_causal_lm_kind(kind)):
        raise ModelDirectoryError(
            f"{path}: model_type {kind!r} is not supported; expected a causal LM that "
            f"transformers builds itself (such as {list(zoo.CAUSAL_LM_KINDS)}, qwen2, qwen3, "
            f"mistral, gemma2, gemma3_text, phi3) or a sentence embedder "
            f"({list(zoo.EMBEDDER_KINDS)})"
        )
    for key in TRANSFORMERS_BOOKKEEPING_KEYS:
        config.pop(key, None)
    if kind in zoo.EMBEDDER_KINDS:
        try:
            config.update(read_pooling(path.parent))
        except EmbedderConfigError as exc:
            raise ModelDirectoryError(str(exc)) from exc
    return ModelMeta(kind=kind, config=config, dtype=RUN_DTYPE, source=TRANSFORMERS_CONFIG_FILE)


def stored_dtype(kind: str) -> str:
    """What a model of ``kind`` computes in: int8 for the integer kinds, float32 otherwise."""
    return INTEGER_DTYPE if kind in zoo.INTEGER_KINDS else RUN_DTYPE


def _require_directory(directory: Path) -> None:
    if not directory.is_dir():
        raise ModelDirectoryError(f"model directory {directory} does not exist")


def read_meta(directory: Path) -> ModelMeta:
    """Parse a model directory's config file (``assay-model.json`` first, else ``config.json``)."""
    directory = Path(directory)
    _require_directory(directory)
    if (directory / META_FILE).is_file():
        meta = _assay_meta(directory / META_FILE)
    elif (directory / TRANSFORMERS_CONFIG_FILE).is_file():
        meta = _transformers_meta(directory / TRANSFORMERS_CONFIG_FILE)
    else:
        raise ModelDirectoryError(
            f"{directory} has neither {META_FILE} nor {TRANSFORMERS_CONFIG_FILE}"
        )
    try:
        canonical_config_json(meta.config)
    except ValueError as exc:
        raise ModelDirectoryError(f"{directory / meta.source}: config: {exc}") from exc
    return meta


def _weights_path(directory: Path) -> Path:
    path = directory / WEIGHTS_FILE
    if not path.is_file():
        raise ModelDirectoryError(f"{directory} has no {WEIGHTS_FILE}")
    return path


def _shard_paths(directory: Path) -> list[Path]:
    """The shard files a ``model.safetensors.index.json`` names, each checked to exist."""
    index = _read_json_object(directory / SHARD_INDEX_FILE)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelDirectoryError(f"{directory / SHARD_INDEX_FILE} has no weight_map")
    shards = []
    for name in sorted(set(weight_map.values())):
        path = directory / str(name)
        if Path(str(name)).name != name or not path.is_file():
            raise ModelDirectoryError(
                f"{directory / SHARD_INDEX_FILE} names shard {name!r}, which is not a file there"
            )
        shards.append(path)
    return shards


def file_sha256(path: Path) -> bytes:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").digest()


def weights_sha256(directory: Path) -> bytes:
    """SHA-256 of ``model.safetensors``, or of the map of shard names to their SHA-256."""
    directory = Path(directory)
    if not (directory / WEIGHTS_FILE).is_file() and (directory / SHARD_INDEX_FILE).is_file():
        return sha256(encode({p.name: file_sha256(p) for p in _shard_paths(directory)}))
    return file_sha256(_weights_path(directory))


def model_id(directory: Path) -> bytes:
    """The content-addressed id of the model stored in ``directory``."""
    directory = Path(directory)
    meta = read_meta(directory)
    weights = weights_sha256(directory)
    if (directory / GGUF_MARKER_FILE).is_file():
        return _gguf_id(directory, weights)
    tokenizer = directory / TOKENIZER_FILE
    if meta.source == TRANSFORMERS_CONFIG_FILE and tokenizer.is_file() and \
            is_causal_lm_kind(meta.kind):
        return sha256(encode({"config": canonical_config_json(meta.config), "kind": meta.kind,
                              "tokenizer": file_sha256(tokenizer), "weights": weights}))
    return compute_model_id(meta.kind, meta.config, weights)


def gguf_model_id(gguf_sha256: bytes) -> bytes:
    """The id of a model converted from a GGUF file whose SHA-256 is ``gguf_sha256``."""
    return compute_model_id(GGUF_KIND, {}, gguf_sha256)


def _gguf_id(directory: Path, weights: bytes) -> bytes:
    """The GGUF file's id, once the converted weights are checked against the marker."""
    marker = _read_json_object(directory / GGUF_MARKER_FILE)
    try:
        source = bytes.fromhex(str(marker["gguf_sha256"]))
        converted = bytes.fromhex(str(marker["weights_sha256"]))
    except (KeyError, ValueError) as exc:
        raise ModelDirectoryError(f"{directory / GGUF_MARKER_FILE} is malformed: {exc}") from exc
    if converted != weights:
        raise ModelDirectoryError(
            f"{directory / WEIGHTS_FILE} is not the conversion {directory / GGUF_MARKER_FILE} "
            "records: convert the GGUF file again"
        )
    return gguf_model_id(source)


def load_model(directory: Path) -> tuple[nn.Module, ModelMeta]:
    """Rebuild the architecture from the config and load the weights: eval mode, float32, CPU."""
    directory = Path(directory)
    meta = read_meta(directory)
    if meta.source == TRANSFORMERS_CONFIG_FILE and is_causal_lm_kind(meta.kind):
        return _load_causal_lm(directory, meta), meta
    weights = _weights_path(directory)
    try:
        module = zoo.architecture(meta.kind, meta.config)
    except Exception as exc:  # an untrusted config can fail anywhere in the constructor
        raise ModelDirectoryError(
            f"{directory / meta.source}: config does not build a {meta.kind} model: {exc}"
        ) from exc
    try:
        missing, unexpected = load_safetensors_into(module, weights, strict=False)
        # Older checkpoints also store buffers that newer code keeps out of the state dict
        # (BERT's ``position_ids``): those, and only those, may be left over.
        transient = {name for name, _ in module.named_buffers()} - set(module.state_dict())
        extra = sorted(set(unexpected) - transient)
        if missing or extra:
            raise ValueError(f"missing keys {sorted(missing)}, unexpected keys {extra}")
    except Exception as exc:  # safetensors parse errors and state-dict mismatches alike
        raise ModelDirectoryError(
            f"{weights} does not hold the weights of this {meta.kind} model: {exc}"
        ) from exc
    if kind_is_integer(meta.kind):
        return module.eval(), meta
    return module.to(torch.float32).eval(), meta


def _load_causal_lm(directory: Path, meta: ModelMeta) -> nn.Module:
    """A ``save_pretrained`` causal LM, built by transformers' own class for its model_type.

    ``trust_remote_code`` is off and ``local_files_only`` on: an ``auto_map`` is never
    followed, nothing is fetched, and only safetensors weights are read.
    """
    from transformers import AutoModelForCausalLM

    if not (directory / WEIGHTS_FILE).is_file() and not (directory / SHARD_INDEX_FILE).is_file():
        raise ModelDirectoryError(f"{directory} has no {WEIGHTS_FILE}")
    weights_sha256(directory)  # every shard named is there
    try:
        module, info = AutoModelForCausalLM.from_pretrained(
            directory, local_files_only=True, trust_remote_code=False, use_safetensors=True,
            dtype=torch.float32, attn_implementation=zoo.ATTENTION_IMPLEMENTATION,
            output_loading_info=True,
        )
    except Exception as exc:  # an untrusted checkpoint can fail anywhere in transformers
        raise ModelDirectoryError(
            f"{directory} does not load as a {meta.kind} causal LM: {exc}"
        ) from exc
    missing = sorted(info.get("missing_keys", ()))
    mismatched = sorted(str(k) for k in info.get("mismatched_keys", ()))
    if missing or mismatched:
        raise ModelDirectoryError(
            f"{directory} does not hold the weights of this {meta.kind} model: missing keys "
            f"{missing}, mismatched shapes {mismatched}"
        )
    loaded: nn.Module = _in_own_memory(module.to(torch.float32).eval())
    return loaded


def _in_own_memory(module: nn.Module) -> nn.Module:
    """``module`` with every parameter and buffer copied into memory torch allocated.

    ``from_pretrained`` may leave tensors in the safetensors file's mapping, at whatever
    offset the file's header put them (8 bytes past a 64-byte boundary, for instance).
    Some CPUs' float kernels take another path for an unaligned operand: on an AMD EPYC
    a GPT-2 loaded that way computed logits 2·10⁻⁶ away from the same weights in torch's
    own (64-byte aligned) memory. Copied, a model computes the same whichever way it was
    loaded. Tied parameters stay tied: each parameter object is copied once, in place.
    """
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.data = parameter.data.clone()
        for sub in module.modules():
            for name, buffer in sub._buffers.items():
                if buffer is not None:
                    sub._buffers[name] = buffer.clone()
    return module


def kind_is_integer(kind: str) -> bool:
    return kind in zoo.INTEGER_KINDS


def save_model(directory: Path, module: nn.Module, kind: str, config: Mapping[str, Any]) -> bytes:
    """Write ``module`` and its config as a model directory; returns its model id.

    Float models are stored in float32; integer models (``*-int8``) must hold
    no float tensor at all.
    """
    directory = Path(directory)
    if kind not in zoo.KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {list(zoo.KINDS)}")
    floats = {str(t.dtype) for t in module.state_dict().values() if t.is_floating_point()}
    if kind_is_integer(kind) and floats:
        raise ValueError(
            f"an integer {kind} model holds no floats; the module has {sorted(floats)}"
        )
    floats.discard(str(torch.float32))
    if floats:
        raise ValueError(f"save_model stores {RUN_DTYPE} weights; the module has {sorted(floats)}")
    meta = {
        "format": META_FORMAT, "kind": kind, "config": dict(config), "dtype": stored_dtype(kind)
    }
    text = json.dumps(meta, indent=2, sort_keys=True, allow_nan=False) + "\n"
    directory.mkdir(parents=True, exist_ok=True)
    save_safetensors_from(module, str(directory / WEIGHTS_FILE))
    (directory / META_FILE).write_text(text, encoding="utf-8")
    return model_id(directory)
