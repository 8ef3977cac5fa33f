"""Small seeded models of real architectures, built in-process (DESIGN decision 9).

Tests, benchmarks and the demo need real models without downloading any: an
MLP and a CNN for MNIST-shaped images, and a GPT-2 and a Llama causal LM from
``transformers``: a few layers each, enough to exercise the real code paths,
small enough that one job takes about a millisecond or less on one CPU thread.

``build(name, seed)`` is a pure function of its arguments: the same seed gives
the same weights, byte for byte, and a different seed gives a different model
of the same architecture (the demo's cheater runs one of those). The global
RNG is left untouched.

``mlp-int8`` and ``cnn-int8`` are the integer twins of ``mlp`` and ``cnn``
(:mod:`prover.integer`): the float model of the same seed, quantised on
``QUANTIZATION_INPUTS`` seeded calibration images. They are what the exact
mode serves; the float models are served in the ``tensor`` mode.

Job inputs and outputs, one job at a time (batch dimension 1):

- ``mlp``, ``cnn``: float32 image ``[1, 1, 28, 28]`` → float32 class logits ``[1, 10]``.
- ``mlp-int8``, ``cnn-int8``: uint8 image ``[1, 1, 28, 28]`` (pixel bytes) →
  int32 class logits ``[1, 10]``, in units of the config's
  ``quantization.output_scale``.
- ``gpt2``, ``llama``: int64 token ids ``[1, seq]`` → float32 next-token logits
  ``[1, vocab]`` (the last position only: that is the answer a forward pass
  sells; generating text is the ``llm`` mode's job).

The causal LMs are made to predict like trained ones rather than like
transformers' default initialisation, whose logits are nearly flat (entropy
5.53 of a possible 5.55 nats over 256 tokens): a flat distribution makes every
token plausible, so a sampling check could tell no model from another. Two
changes, both seeded and stored with the weights: ``initializer_range`` 0.1
(instead of 0.02), so that attention and MLPs mix the context strongly, and
the final norm's gain set to ``LOGIT_GAIN``. Measured on 8 prompts × 64
sampled tokens: mean next-token entropy 1.5 (GPT-2) and 1.8 (Llama) nats,
about what a trained LM shows at temperature 1, and changing the first
prompt token moves later logits by 2 to 4 on average.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from prover import integer
from prover.embedder import EMBEDDER_KIND, embedder

IMAGE_KINDS = ("mlp", "cnn")
CAUSAL_LM_KINDS = ("gpt2", "llama")
EMBEDDER_KINDS = (EMBEDDER_KIND,)
INTEGER_KINDS = ("mlp-int8", "cnn-int8")
FLOAT_SOURCE: Mapping[str, str] = {"mlp-int8": "mlp", "cnn-int8": "cnn"}
"""Each integer kind's float architecture: the same layers, quantised."""
KINDS = IMAGE_KINDS + CAUSAL_LM_KINDS + EMBEDDER_KINDS + INTEGER_KINDS
FLOAT_KINDS = IMAGE_KINDS + CAUSAL_LM_KINDS + EMBEDDER_KINDS
"""What the ``tensor`` mode serves: models whose float results vary between honest machines."""
ZOO_NAMES = KINDS
"""Every zoo model is named for its architecture kind."""
QUANTIZATION_INPUTS = 64
QUANTIZATION_SEED = 1 << 20
"""Calibration images for the zoo's integer models: seeds ``QUANTIZATION_SEED + i``."""

ATTENTION_IMPLEMENTATION = "eager"
"""The transformers attention code path: plain matmul and softmax, no fused-kernel choice."""

MAX_EXAMPLE_TOKENS = 32
LLM_INITIALIZER_RANGE = 0.1
LOGIT_GAIN = 5.0
"""The causal LMs' final-norm gain: scales logits so next-token distributions are peaked."""


@dataclass(frozen=True)
class MLPConfig:
    image_size: int = 28
    in_channels: int = 1
    n_hidden1: int = 128
    n_hidden2: int = 64
    n_classes: int = 10


@dataclass(frozen=True)
class CNNConfig:
    image_size: int = 28  # must be divisible by 4: two 2×2 poolings
    in_channels: int = 1
    n_channels1: int = 8
    n_channels2: int = 16
    kernel_size: int = 3  # odd, padded to keep the spatial size
    n_classes: int = 10


@dataclass(frozen=True)
class GPT2ZooConfig:
    """Keyword arguments for ``transformers.GPT2Config``."""

    vocab_size: int = 256
    n_positions: int = 1280  # prompts up to 256 tokens plus 1,024 generated ones
    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    bos_token_id: int = 255  # GPT-2's default (50256) lies outside a 256-token vocabulary
    eos_token_id: int = 255
    initializer_range: float = LLM_INITIALIZER_RANGE


@dataclass(frozen=True)
class LlamaZooConfig:
    """Keyword arguments for ``transformers.LlamaConfig``."""

    vocab_size: int = 256
    max_position_embeddings: int = 1280
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    initializer_range: float = LLM_INITIALIZER_RANGE


@dataclass(frozen=True)
class BertZooConfig:
    """A tiny sentence embedder: ``BertConfig`` keyword arguments plus the pooling keys."""

    vocab_size: int = 256
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: int = 128
    max_position_embeddings: int = 128
    pooling: str = "mean"
    normalize: bool = True


ZOO_CONFIGS: Mapping[str, type] = {
    "mlp": MLPConfig,
    "cnn": CNNConfig,
    "mlp-int8": MLPConfig,
    "cnn-int8": CNNConfig,
    "gpt2": GPT2ZooConfig,
    "llama": LlamaZooConfig,
    "bert": BertZooConfig,
}


class MLP(nn.Module):
    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        n_input = config.in_channels * config.image_size**2
        self.fc1 = nn.Linear(n_input, config.n_hidden1)
        self.fc2 = nn.Linear(config.n_hidden1, config.n_hidden2)
        self.head = nn.Linear(config.n_hidden2, config.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # [B, 1, 28, 28] -> [B, 784]
        x = F.relu(self.fc1(x))  # [B, 128]
        x = F.relu(self.fc2(x))  # [B, 64]
        logits: torch.Tensor = self.head(x)  # [B, 10]
        return logits


class CNN(nn.Module):
    def __init__(self, config: CNNConfig) -> None:
        super().__init__()
        k, pad = config.kernel_size, config.kernel_size // 2
        self.conv1 = nn.Conv2d(config.in_channels, config.n_channels1, k, padding=pad)
        self.conv2 = nn.Conv2d(config.n_channels1, config.n_channels2, k, padding=pad)
        n_flat = config.n_channels2 * (config.image_size // 4) ** 2
        self.head = nn.Linear(n_flat, config.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # [B, 1, 28, 28] -> [B, 8, 14, 14]
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # [B, 8, 14, 14] -> [B, 16, 7, 7]
        logits: torch.Tensor = self.head(x.flatten(1))  # [B, 784] -> [B, 10]
        return logits


def image_config(kind: str, config: Mapping[str, Any]) -> MLPConfig | CNNConfig:
    """Parse a stored image-model config, refusing unknown keys and non-positive sizes.

    An integer kind's config is its float architecture's plus a ``quantization`` block.
    """
    if kind in INTEGER_KINDS:
        config = {k: v for k, v in config.items() if k != "quantization"}
        kind = FLOAT_SOURCE[kind]
    cls = MLPConfig if kind == "mlp" else CNNConfig
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"unknown {kind} config keys {unknown}; known keys are {sorted(known)}")
    for key, value in config.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{kind} config {key} must be a positive integer, got {value!r}")
    parsed: MLPConfig | CNNConfig = cls(**config)
    if isinstance(parsed, CNNConfig) and (parsed.image_size % 4 or parsed.kernel_size % 2 == 0):
        raise ValueError("cnn config needs image_size divisible by 4 and an odd kernel_size")
    return parsed


def causal_lm_config(kind: str, config: Mapping[str, Any]) -> GPT2Config | LlamaConfig:
    """The transformers config object for a stored ``gpt2``/``llama`` config dict."""
    settings = {**config, "attn_implementation": ATTENTION_IMPLEMENTATION}
    return GPT2Config(**settings) if kind == "gpt2" else LlamaConfig(**settings)


def _causal_lm(kind: str, config: Mapping[str, Any]) -> nn.Module:
    lm_config = causal_lm_config(kind, config)
    if isinstance(lm_config, GPT2Config):
        return GPT2LMHeadModel(lm_config)
    return LlamaForCausalLM(lm_config)


def _final_norm(module: nn.Module) -> nn.Module:
    if isinstance(module, GPT2LMHeadModel):
        return module.transformer.ln_f
    assert isinstance(module, LlamaForCausalLM)
    return module.model.norm


def _construct(kind: str, config: Mapping[str, Any]) -> nn.Module:
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {list(KINDS)}")
    module: nn.Module
    if kind in CAUSAL_LM_KINDS:
        module = _causal_lm(kind, config)
    elif kind in EMBEDDER_KINDS:
        module = embedder(config)
    elif kind in INTEGER_KINDS:
        parsed = image_config(kind, config)
        quantization_block(config)
        return integer.INTEGER_ARCHITECTURES[FLOAT_SOURCE[kind]](asdict(parsed)).eval()
    else:
        parsed = image_config(kind, config)
        module = MLP(parsed) if isinstance(parsed, MLPConfig) else CNN(parsed)
    return module.to(torch.float32).eval()


@contextmanager
def _private_rng(seed: int | None) -> Iterator[None]:
    """Run initialisation on a forked CPU RNG so the caller's random stream is unchanged."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.default_generator.manual_seed(seed)
        yield


def architecture(kind: str, config: Mapping[str, Any]) -> nn.Module:
    """An eval-mode float32 module of ``kind`` whose weights are about to be loaded."""
    with _private_rng(None):
        return _construct(kind, config)


def quantization_block(config: Mapping[str, Any]) -> dict[str, Any]:
    """An integer kind's ``quantization`` block, checked: positive finite scales."""
    block = config.get("quantization")
    if not isinstance(block, dict):
        raise ValueError("an integer model's config needs a 'quantization' object")
    scales = [block.get("input_scale"), block.get("output_scale"),
              *(block.get("activation_scales") or [None])]
    if not all(isinstance(v, float) and 0 < v < float("inf") for v in scales):
        raise ValueError(
            "quantization needs positive input_scale, output_scale and activation_scales"
        )
    return block


def example_input(kind: str, config: Mapping[str, Any], rng_seed: int) -> torch.Tensor:
    """A valid random job input for a model of ``kind``, a function of ``rng_seed`` alone."""
    g = torch.Generator().manual_seed(rng_seed)
    if kind in INTEGER_KINDS:
        parsed = image_config(kind, config)
        shape = (1, parsed.in_channels, parsed.image_size, parsed.image_size)
        return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)  # pixel bytes
    if kind in IMAGE_KINDS:
        parsed = image_config(kind, config)
        side = parsed.image_size
        return torch.rand((1, parsed.in_channels, side, side), generator=g)  # pixels in [0, 1)
    if kind in EMBEDDER_KINDS:
        limit = min(MAX_EXAMPLE_TOKENS, int(config["max_position_embeddings"]))
        n_tokens = int(torch.randint(1, limit + 1, (1,), generator=g))
        return torch.randint(0, int(config["vocab_size"]), (1, n_tokens), generator=g)
    lm = causal_lm_config(kind, config)
    max_positions = lm.n_positions if kind == "gpt2" else lm.max_position_embeddings
    n_tokens = int(torch.randint(1, min(MAX_EXAMPLE_TOKENS, max_positions) + 1, (1,), generator=g))
    return torch.randint(0, lm.vocab_size, (1, n_tokens), generator=g)


@dataclass(frozen=True)
class ZooModel:
    """A built zoo model: the module plus what it takes to save, rebuild and feed it."""

    name: str
    kind: str
    seed: int
    config: dict[str, Any]  # JSON-able; rebuilds the architecture via architecture()
    module: nn.Module

    def example_input(self, rng_seed: int) -> torch.Tensor:
        return example_input(self.kind, self.config, rng_seed)


def build(name: str, seed: int) -> ZooModel:
    """Build zoo model ``name`` with weights drawn from ``seed`` (any seed gives a valid model)."""
    if name not in ZOO_CONFIGS:
        raise ValueError(f"unknown zoo model {name!r}; expected one of {list(ZOO_NAMES)}")
    if name in INTEGER_KINDS:
        source = build(FLOAT_SOURCE[name], seed)
        module, config = integer.quantize(
            source.kind, source.config, source.module, calibration_images(name, source.config)
        )
        return ZooModel(name=name, kind=name, seed=seed, config=config, module=module)
    config = asdict(ZOO_CONFIGS[name]())
    with _private_rng(seed):
        module = _construct(name, config)
    if name in CAUSAL_LM_KINDS:
        with torch.no_grad():
            _final_norm(module).weight.fill_(LOGIT_GAIN)
    return ZooModel(name=name, kind=name, seed=seed, config=config, module=module)


def calibration_images(kind: str, config: Mapping[str, Any]) -> list[torch.Tensor]:
    """The seeded uint8 images the zoo quantises its integer models on."""
    integer_kind = kind if kind in INTEGER_KINDS else f"{kind}-int8"
    return [example_input(integer_kind, config, QUANTIZATION_SEED + i)
            for i in range(QUANTIZATION_INPUTS)]
