"""Model directories on disk and their content-addressed ids (DESIGN decision 9).

A model directory holds ``model.safetensors`` (the state dict) and one of:

- ``assay-model.json``, written by :func:`save_model`:
  ``{"format": 1, "kind": ..., "config": {...}, "dtype": "float32"}``, where
  ``config`` is a zoo config (``mlp``/``cnn``) or the keyword arguments of
  ``GPT2Config``/``LlamaConfig`` (``gpt2``/``llama``); integer models
  (``mlp-int8``/``cnn-int8``, :mod:`prover.integer`) have ``"dtype": "int8"``
  and a config with a ``quantization`` block;
- ``config.json``, written by transformers' ``save_pretrained(...,
  safe_serialization=True)`` for a GPT-2 or Llama causal LM, recognised by its
  ``model_type``.

Loading only parses JSON and safetensors: the architecture is one of ours,
built from the config by :func:`prover.zoo.architecture`, so nothing in the
directory is executed or unpickled (an ``auto_map`` in ``config.json`` is
ignored).

The model id is::

    sha256(encode({
        "config":  canonical JSON of the config (keys sorted, no whitespace,
                   floats as Python's shortest round-trip repr),
        "kind":    "mlp" | "cnn" | "gpt2" | "llama" | "mlp-int8" | "cnn-int8",
        "weights": sha256(bytes of model.safetensors),
    }))

with ``encode`` the canonical msgpack of :mod:`protocol.codec`. The config goes
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


def _transformers_meta(path: Path) -> ModelMeta:
    config = _read_json_object(path)
    kind = config.get("model_type")
    supported = (*zoo.CAUSAL_LM_KINDS, *zoo.EMBEDDER_KINDS)
    if kind not in supported:
        raise ModelDirectoryError(
            f"{path}: model_type {kind!r} is not supported; expected one of {list(supported)}"
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
        sharded = (directory / f"{WEIGHTS_FILE}.index.json").is_file()
        hint = "; sharded checkpoints are not supported" if sharded else ""
        raise ModelDirectoryError(f"{directory} has no {WEIGHTS_FILE}{hint}")
    return path


def _file_sha256(path: Path) -> bytes:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").digest()


def model_id(directory: Path) -> bytes:
    """The content-addressed id of the model stored in ``directory``."""
    directory = Path(directory)
    meta = read_meta(directory)
    return compute_model_id(meta.kind, meta.config, _file_sha256(_weights_path(directory)))


def load_model(directory: Path) -> tuple[nn.Module, ModelMeta]:
    """Rebuild the architecture from the config and load the weights: eval mode, float32, CPU."""
    directory = Path(directory)
    meta = read_meta(directory)
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
