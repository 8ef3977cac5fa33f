"""Integer (fixed-point) models: the exact mode's arithmetic, the same bytes on any CPU or GPU.

Float results depend on the order of every reduction, and that order changes
with the CPU vendor, the ISA code path (``ATEN_CPU_CAPABILITY``), the thread
count, the batch, the library build and the GPU kernel. Integer addition is
associative, so an integer model computes one function wherever it runs. The
exact mode serves only such models (DESIGN decision 4):

- **Weights** are int8 in ``[-127, 127]`` with one scale per tensor
  (symmetric, zero point 0), **biases** int32 in the accumulator's scale.
- **Activations** are unsigned 8-bit after each ReLU, ``[0, 255]``, and so is
  the input: an image's pixel bytes, as cameras and files hold them.
- **Products are accumulated exactly.** Each matrix product is computed as a
  float64 GEMM of integer-valued operands: every product (at most 255·127)
  and every partial sum (at most ``K·255·127 + |bias|``, checked below
  2^31 when a model is built) is an integer below 2^53, which float64 holds
  exactly, so any summation order, blocking, FMA or thread split gives the
  same integer. Float64 GEMMs exist on every CPU BLAS and on CUDA, which
  integer GEMMs do not. Convolutions are ``unfold`` (a copy) and that GEMM,
  never a library convolution (FFT and Winograd kernels would leave the
  integers).
- **Requantisation** between layers is integer multiply-and-shift, in int64:
  ``y = clamp((acc·M + 2^(s−1)) >> s, 0, 255)`` with ``M`` in
  ``[2^29, 2^30)`` and ``s`` chosen when the model was quantised (the
  gemmlowp / TFLite scheme: Jacob et al., "Quantization and Training of
  Neural Networks for Efficient Integer-Arithmetic-Only Inference",
  arXiv 1712.05877). The clamp at 0 is the ReLU.
- **Max pooling** is a max of integers. The **output** is the last layer's
  int32 accumulators, the logits in units of ``output_scale``.

:func:`quantize` turns a float zoo model into its integer twin: weight scales
from the weights, activation scales from the largest activation seen on
calibration inputs, and the accuracy given up measured on held-out inputs
(:class:`QuantizationReport`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATION_MAX = 255
"""Activations and inputs are unsigned 8-bit: ReLU outputs are never negative."""
WEIGHT_MAX = 127
MULTIPLIER_BITS = 30
ACCUMULATOR_LIMIT = 2**31
"""Every accumulator stays below this, so float64 sums of products are exact (< 2^53)."""
EXACT_FLOAT64 = 2**53


class QuantizationError(ValueError):
    """A model that cannot be turned into (or loaded as) an exact integer model."""


def fixed_point(real: float) -> tuple[int, int]:
    """``(M, s)`` with ``M / 2^s`` the nearest such value to ``real``, ``2^29 <= M < 2^30``."""
    if not math.isfinite(real) or real <= 0:
        raise QuantizationError(f"requantisation multiplier must be positive, got {real}")
    mantissa, exponent = math.frexp(real)  # real = mantissa · 2^exponent, 0.5 <= mantissa < 1
    multiplier = round(mantissa * 2**MULTIPLIER_BITS)
    shift = MULTIPLIER_BITS - exponent
    if multiplier == 2**MULTIPLIER_BITS:  # rounding carried into the next power of two
        multiplier //= 2
        shift -= 1
    if not 1 <= shift <= 62:
        raise QuantizationError(f"requantisation multiplier {real} is out of range")
    return multiplier, shift


def exact_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for integer-valued operands, exactly, returned as int64 (see module docstring)."""
    return (a.to(torch.float64) @ b.to(torch.float64)).to(torch.int64)


class _Float64Weights(nn.Module):
    """A layer whose int8 weight is also kept as a float64 copy for the exact GEMM.

    The copy is remade whenever the weight changes (its version counter) or
    moves, so it never outlives the integers it stands for.
    """

    weight: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self._copy: tuple[tuple[int, int, torch.device], torch.Tensor] | None = None

    def weight64(self) -> torch.Tensor:
        key = (self.weight.data_ptr(), self.weight._version, self.weight.device)
        if self._copy is None or self._copy[0] != key:
            self._copy = (key, self.weight.to(torch.float64))
        return self._copy[1]


def requantize(acc: torch.Tensor, multiplier: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``clamp((acc·M + 2^(s−1)) >> s, 0, 255)`` in int64: rounding half up, then the ReLU."""
    rounded = torch.bitwise_right_shift(acc * multiplier + (1 << (int(shift) - 1)), shift)
    return rounded.clamp(0, ACTIVATION_MAX)


class IntLinear(_Float64Weights):
    """``y = requant(x @ Wᵀ + b)``, or the raw int32 accumulators when ``requant`` is off."""

    weight: torch.Tensor
    bias: torch.Tensor
    multiplier: torch.Tensor
    shift: torch.Tensor

    def __init__(self, n_in: int, n_out: int, requant: bool = True) -> None:
        super().__init__()
        check_accumulator_bound(n_in)
        self.requant = requant
        self.register_buffer("weight", torch.zeros((n_out, n_in), dtype=torch.int8))
        self.register_buffer("bias", torch.zeros(n_out, dtype=torch.int32))
        self.register_buffer("multiplier", torch.zeros((), dtype=torch.int64))
        self.register_buffer("shift", torch.ones((), dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        acc = exact_matmul(x, self.weight64().T) + self.bias.to(torch.int64)  # [B, in] -> [B, out]
        if not self.requant:
            return acc.to(torch.int32)
        return requantize(acc, self.multiplier, self.shift)


class IntConv2d(_Float64Weights):
    """A same-padded stride-1 convolution as ``unfold`` + exact GEMM, then requantisation."""

    weight: torch.Tensor
    bias: torch.Tensor
    multiplier: torch.Tensor
    shift: torch.Tensor

    def __init__(self, c_in: int, c_out: int, kernel: int) -> None:
        super().__init__()
        check_accumulator_bound(c_in * kernel * kernel)
        self.kernel = kernel
        self.register_buffer("weight", torch.zeros((c_out, c_in, kernel, kernel), dtype=torch.int8))
        self.register_buffer("bias", torch.zeros(c_out, dtype=torch.int32))
        self.register_buffer("multiplier", torch.zeros((), dtype=torch.int64))
        self.register_buffer("shift", torch.ones((), dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        pad = self.kernel // 2
        columns = F.unfold(x.to(torch.float64), self.kernel, padding=pad)  # [B, C·k·k, H·W]
        acc = exact_matmul(self.weight64().flatten(1), columns)  # [C', C·k·k] @ [B, C·k·k, H·W]
        acc = acc + self.bias.to(torch.int64)[:, None]  # [B, C', H·W]
        return requantize(acc, self.multiplier, self.shift).view(b, -1, h, w)


def check_accumulator_bound(fan_in: int) -> None:
    worst = fan_in * ACTIVATION_MAX * WEIGHT_MAX
    if worst >= ACCUMULATOR_LIMIT:
        raise QuantizationError(
            f"a layer summing {fan_in} products could reach {worst}, beyond the exact-sum limit "
            f"{ACCUMULATOR_LIMIT}; split the layer"
        )


def _max_pool(x: torch.Tensor) -> torch.Tensor:
    """2×2 max pooling of integers (computed on exact float64 copies, returned as int64)."""
    return F.max_pool2d(x.to(torch.float64), 2).to(torch.int64)


def _as_input(x: torch.Tensor) -> torch.Tensor:
    if x.dtype != torch.uint8:
        raise QuantizationError(f"an integer model takes uint8 inputs, got {x.dtype}")
    return x.to(torch.int64)


class IntMLP(nn.Module):
    """The zoo MLP in integers: uint8 image ``[B, C, H, W]`` → int32 logits ``[B, classes]``."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        n_input = config["in_channels"] * config["image_size"] ** 2
        self.fc1 = IntLinear(n_input, config["n_hidden1"])
        self.fc2 = IntLinear(config["n_hidden1"], config["n_hidden2"])
        self.head = IntLinear(config["n_hidden2"], config["n_classes"], requant=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_input(x).flatten(1)  # [B, 784]
        x = self.fc2(self.fc1(x))  # [B, 128] -> [B, 64], requantised uint8 values
        logits: torch.Tensor = self.head(x)  # [B, 10] int32
        return logits


class IntCNN(nn.Module):
    """The zoo CNN in integers: uint8 image ``[B, C, H, W]`` → int32 logits ``[B, classes]``."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        k = config["kernel_size"]
        self.conv1 = IntConv2d(config["in_channels"], config["n_channels1"], k)
        self.conv2 = IntConv2d(config["n_channels1"], config["n_channels2"], k)
        n_flat = config["n_channels2"] * (config["image_size"] // 4) ** 2
        self.head = IntLinear(n_flat, config["n_classes"], requant=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _max_pool(self.conv1(_as_input(x)))  # [B, 1, 28, 28] -> [B, 8, 14, 14]
        x = _max_pool(self.conv2(x))  # -> [B, 16, 7, 7]
        logits: torch.Tensor = self.head(x.flatten(1))  # [B, 784] -> [B, 10] int32
        return logits


INTEGER_ARCHITECTURES: Mapping[str, type[nn.Module]] = {"mlp": IntMLP, "cnn": IntCNN}


def is_integer_model(module: nn.Module) -> bool:
    return isinstance(module, IntMLP | IntCNN)


# --- quantisation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuantizationReport:
    """The accuracy an integer model gives up against its float source, on held-out inputs."""

    inputs: int
    top1_agreement: float  # share of inputs whose argmax class is the float model's
    max_abs_error: float  # largest |dequantised − float| logit
    mean_abs_error: float
    float_logit_rms: float  # the float logits' size, to read the errors against

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def pixels_to_float(x: torch.Tensor) -> torch.Tensor:
    """The float model's view of a uint8 image: ``q / 255`` in ``[0, 1]``."""
    return x.to(torch.float32) / ACTIVATION_MAX


def _weight_scale(weight: torch.Tensor) -> float:
    largest = float(weight.abs().max())
    return largest / WEIGHT_MAX if largest > 0 else 1.0


def _fill(layer: IntLinear | IntConv2d, weight: torch.Tensor, bias: torch.Tensor,
          in_scale: float, out_scale: float | None) -> float:
    """Quantise one layer's float ``weight``/``bias``; returns its accumulator scale."""
    weight, bias = weight.detach(), bias.detach()
    w_scale = _weight_scale(weight)
    acc_scale = in_scale * w_scale
    with torch.no_grad():
        layer.weight.copy_(torch.round(weight / w_scale).clamp(-WEIGHT_MAX, WEIGHT_MAX))
        q_bias = torch.round(bias.to(torch.float64) / acc_scale)
        if float(q_bias.abs().max()) >= ACCUMULATOR_LIMIT:
            raise QuantizationError("a bias is too large for the int32 accumulator")
        layer.bias.copy_(q_bias.to(torch.int32))
        if out_scale is not None:
            multiplier, shift = fixed_point(acc_scale / out_scale)
            layer.multiplier.fill_(multiplier)
            layer.shift.fill_(shift)
    return acc_scale


def _activation_scales(module: nn.Module, names: Sequence[str],
                       inputs: Sequence[torch.Tensor]) -> dict[str, float]:
    """``max(ReLU(layer output)) / 255`` per named layer, over the calibration inputs."""
    peaks = dict.fromkeys(names, 0.0)
    hooks = [
        getattr(module, name).register_forward_hook(
            lambda _m, _i, out, name=name: peaks.__setitem__(
                name, max(peaks[name], float(out.clamp(min=0).max()))
            )
        )
        for name in names
    ]
    try:
        with torch.inference_mode():
            for x in inputs:
                module(pixels_to_float(x))
    finally:
        for hook in hooks:
            hook.remove()
    return {name: (peak / ACTIVATION_MAX if peak > 0 else 1.0) for name, peak in peaks.items()}


def quantize(kind: str, config: Mapping[str, Any], module: nn.Module,
             calibration: Sequence[torch.Tensor]) -> tuple[nn.Module, dict[str, Any]]:
    """The integer twin of float zoo model ``module`` and the config that rebuilds it.

    ``calibration`` holds uint8 inputs; the largest activation each hidden
    layer reaches on them fixes its scale (no input seen there is clipped).
    """
    if kind not in INTEGER_ARCHITECTURES:
        raise QuantizationError(
            f"only {sorted(INTEGER_ARCHITECTURES)} models can be quantised for the exact mode, "
            f"not {kind!r}"
        )
    if not calibration:
        raise QuantizationError("quantisation needs at least one calibration input")
    hidden = ("fc1", "fc2") if kind == "mlp" else ("conv1", "conv2")
    scales = _activation_scales(module, hidden, calibration)
    integer = INTEGER_ARCHITECTURES[kind](config)
    in_scale = 1.0 / ACTIVATION_MAX
    for name in hidden:
        source = getattr(module, name)
        _fill(getattr(integer, name), source.weight, source.bias, in_scale, scales[name])
        in_scale = scales[name]  # max pooling keeps the scale
    output_scale = _fill(integer.head, module.head.weight, module.head.bias, in_scale, None)
    quantization = {
        "input_scale": 1.0 / ACTIVATION_MAX,
        "activation_scales": [scales[name] for name in hidden],
        "output_scale": output_scale,
    }
    return integer.eval(), {**dict(config), "quantization": quantization}


def measure(float_module: nn.Module, integer: nn.Module, output_scale: float,
            inputs: Sequence[torch.Tensor]) -> QuantizationReport:
    """Compare the integer model's dequantised logits with the float model's on ``inputs``."""
    agree, errors, sizes = 0, [], []
    with torch.inference_mode():
        for x in inputs:
            want = float_module(pixels_to_float(x)).to(torch.float64)
            got = integer(x).to(torch.float64) * output_scale
            agree += int(torch.equal(want.argmax(dim=-1), got.argmax(dim=-1)))
            errors.append((got - want).abs())
            sizes.append(want.pow(2).mean())
    error = torch.cat([e.flatten() for e in errors])
    return QuantizationReport(
        inputs=len(inputs),
        top1_agreement=agree / len(inputs),
        max_abs_error=float(error.max()),
        mean_abs_error=float(error.mean()),
        float_logit_rms=float(torch.stack(sizes).mean().sqrt()),
    )
