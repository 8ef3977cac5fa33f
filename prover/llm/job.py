"""What an ``llm`` job pins, and the calibrated tolerances it is judged by.

A job is a ``JobRequest`` whose input is the prompt (int64 token ids
``[1, P]``) and whose integer ``params`` pin everything that decides the
output (no floats travel in messages):

    max_new_tokens     1..MAX_NEW_TOKENS
    dtype              "float32" | "bfloat16"  — the precision the model runs in
    seed               the sampler's seed (uint64)
    temperature_milli  T × 1000; 0 is greedy            (default 1000)
    top_k              0 is off                          (default 0)
    top_p_ppm          p × 10⁶; 1000000 is off           (default 1000000)
    stop_tokens        optional bytes: big-endian uint32 token ids, ascending
                       (at most 16); generation ends after emitting one (EOS)
    stop_strings       optional bytes: the canonical encoding of a list of 1..4
                       strings; generation ends at the first token after which
                       the decoded text contains one (needs the tokenizer)

The output is the generated ids, int64 ``[1, n]``: ``n == max_new_tokens``
unless the last token is a stop token or completes a stop string.

:class:`Tolerances` are what a verifier compares against; they are measured
on honest variation by ``assay calibrate`` and stored in the model's
registry entry under ``params["llm"]``. Node and validators must read the
same entry (it is published with the model, like its id): the node's
sketch uses its ``sketch_exp``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

from protocol.codec import decode, encode
from protocol.errors import ProtocolError
from protocol.messages import JobRequest
from prover.llm.model import DTYPES
from prover.llm.sampler import PPM, SamplingParams
from prover.llm.sketch import BLOCK, PROJECTIONS, n_blocks
from prover.llm.text import check_stop_strings

MAX_NEW_TOKENS = 4096
KNOWN_PARAMS = frozenset({"max_new_tokens", "dtype", "seed", "temperature_milli", "top_k",
                          "top_p_ppm", "stop_tokens", "stop_strings"})
MAX_STOP_TOKENS = 16
REGISTRY_KEY = "llm"
GAP_SUM_TOKENS = 64
"""The job length ``gap_sum_tau`` is stated for; longer jobs' limits grow in proportion."""
MASS_TEMPERATURES = (0.1, 0.25, 0.5, 0.7, 1.0, 1.5, 2.0)
"""Temperatures ``mass_tau`` is calibrated at."""
MASS_LEVELS = (0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 1.0)
"""Upper edges of the cumulative-probability bins ``mass_tau`` is calibrated on: honest mass
differences are largest where the top tokens are (a shift of one large probability) and shrink
toward the tail, where top-p's boundary usually lies."""
SKETCH_FALSE_POSITIVE = 1e-10
"""The chance, per judged job, that a sketch check fails an honest job whose deviations are
within the calibrated bounds (:meth:`Tolerances.sketch_value_limit`,
:meth:`Tolerances.sketch_rms_limit`); the evidence across audits uses the same level."""
SKETCH_REFERENCE_BLOCKS = GAP_SUM_TOKENS // BLOCK
"""The job length, in sketch blocks, that the shape of the deviations is stated for."""


def sketch_tail_z(values: int, alpha: float = SKETCH_FALSE_POSITIVE) -> float:
    """``z`` with ``values · 2·exp(−z²/2) ≤ alpha``: Hoeffding's bound for a Rademacher
    projection ``⟨Δ, r⟩``, which exceeds ``z·‖Δ‖`` with probability at most ``2·exp(−z²/2)``
    whatever ``Δ`` is, taken over every committed value of a job (a union bound)."""
    return math.sqrt(2 * math.log(2 * max(1, values) / alpha))


def sketch_rms_factor(spread: float, concentration: float, alpha: float = SKETCH_FALSE_POSITIVE
                      ) -> float:
    """The bound on a job's root-mean-square sketch deviation, as a multiple of its deviation
    energy ``√(Σ_b ‖Δ_b‖² / blocks)``: true with probability ``1 − alpha``.

    The ``K = PROJECTIONS`` projections of every block share their directions, so the sum of
    squares is ``Σ_k r_kᵀ A r_k`` with ``A = Σ_b Δ_b Δ_bᵀ``: for Gaussian directions (the
    Rademacher sums over ``d`` coordinates are close to it) a sum ``Σ_i λ_i χ²_K`` over the
    eigenvalues of ``A``, which Laurent and Massart (Ann. Statist. 28(5), 2000, Lemma 1) bound:
    it exceeds ``K Σλ + 2√(K x) ‖λ‖₂ + 2 x λ_max`` with probability at most ``e^{−x}``.
    Dividing by ``K · blocks``: ``1 + 2√(x/K)·spread + 2(x/K)·concentration`` times the
    energy squared, with ``spread = ‖λ‖₂ / Σλ`` and ``concentration = λ_max / Σλ`` (both 1
    when every block deviates along one direction, ``1/√blocks`` and ``1/blocks`` when the
    blocks are independent)."""
    x = math.log(1 / alpha)
    k = PROJECTIONS
    return math.sqrt(1 + 2 * math.sqrt(x / k) * spread + 2 * (x / k) * concentration)


class LLMJobError(ValueError):
    """Job parameters that do not describe a valid ``llm`` job; the message names the field."""


@dataclass(frozen=True)
class LLMJob:
    max_new_tokens: int
    dtype: str
    sampling: SamplingParams
    stop_tokens: frozenset[int] = frozenset()
    stop_strings: tuple[str, ...] = ()

    def to_params(self) -> dict[str, int | str | bytes]:
        params: dict[str, int | str | bytes] = {
            "max_new_tokens": self.max_new_tokens,
            "dtype": self.dtype,
            "seed": self.sampling.seed,
            "temperature_milli": self.sampling.temperature_milli,
            "top_k": self.sampling.top_k,
            "top_p_ppm": self.sampling.top_p_ppm,
        }
        if self.stop_tokens:
            params["stop_tokens"] = b"".join(t.to_bytes(4, "big") for t in sorted(self.stop_tokens))
        if self.stop_strings:
            params["stop_strings"] = encode(list(self.stop_strings))
        return params

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


def _int(params: Mapping[str, object], name: str, default: int | None = None) -> int:
    value = params.get(name, default)
    if value is None:
        raise LLMJobError(f"llm job needs parameter {name!r}")
    if not isinstance(value, int) or isinstance(value, bool):
        raise LLMJobError(f"llm job parameter {name!r} must be an integer, got {value!r}")
    return value


def parse_job(request: JobRequest) -> LLMJob:
    """The job a request pins; :class:`LLMJobError` names the first bad parameter."""
    params = dict(request.params)
    unknown = sorted(set(params) - KNOWN_PARAMS)
    if unknown:
        raise LLMJobError(f"unknown llm job parameters {unknown}; known: {sorted(KNOWN_PARAMS)}")
    max_new = _int(params, "max_new_tokens")
    if not 1 <= max_new <= MAX_NEW_TOKENS:
        raise LLMJobError(f"max_new_tokens must be 1..{MAX_NEW_TOKENS}, got {max_new}")
    dtype = params.get("dtype")
    if dtype not in DTYPES:
        raise LLMJobError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    try:
        sampling = SamplingParams(
            seed=_int(params, "seed"),
            temperature_milli=_int(params, "temperature_milli", 1000),
            top_k=_int(params, "top_k", 0),
            top_p_ppm=_int(params, "top_p_ppm", PPM),
        )
    except ValueError as exc:
        raise LLMJobError(str(exc)) from exc
    return LLMJob(max_new_tokens=max_new, dtype=str(dtype), sampling=sampling,
                  stop_tokens=_stop_tokens(params.get("stop_tokens")),
                  stop_strings=_stop_strings(params.get("stop_strings")))


def _stop_tokens(value: object) -> frozenset[int]:
    if value is None:
        return frozenset()
    if not isinstance(value, bytes) or not value or len(value) % 4 or \
            len(value) > 4 * MAX_STOP_TOKENS:
        raise LLMJobError(f"stop_tokens must be 1..{MAX_STOP_TOKENS} big-endian uint32 ids")
    ids = [int.from_bytes(value[i : i + 4], "big") for i in range(0, len(value), 4)]
    if ids != sorted(set(ids)):
        raise LLMJobError("stop_tokens must be ascending, without repeats")
    return frozenset(ids)


def _stop_strings(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    try:
        if not isinstance(value, bytes):
            raise ValueError("it is not bytes")
        decoded = decode(value)
        if not isinstance(decoded, list) or not decoded:
            raise ValueError("it is not a non-empty list")
        return check_stop_strings(decoded)
    except (ProtocolError, ValueError) as exc:
        raise LLMJobError(f"stop_strings must encode a list of 1..4 strings: {exc}") from exc


@dataclass(frozen=True)
class Tolerances:
    """One dtype's thresholds; a deviation past any of them is FRAUD.

    ``token_tau`` bounds a token's sampling gap (logits); ``mass_tau`` bounds,
    per temperature of ``MASS_TEMPERATURES`` and level of probability mass
    (``MASS_LEVELS``), ``T ×`` the difference between an honest node's and
    the verifier's probability mass of the token sets the top-p check uses
    (the slack at ``T`` is :meth:`mass_levels` ``/ T``); ``gap_sum_tau`` bounds the sum
    of a job's sampling gaps per ``GAP_SUM_TOKENS`` generated tokens (logits);
    ``mass_sum_tau`` bounds, per ``GAP_SUM_TOKENS`` tokens, the sum of ``T ×`` how far the
    verifier's mass of the tokens clearly above each committed token exceeds ``p``;
    ``sketch_exp`` fixes the sketch's quantisation step ``2^sketch_exp``.

    The sketch bounds are on the honest *hidden-state* deviations, in quanta, not on what
    the projections happen to show: ``sketch_norm_tau`` bounds the norm of one block's summed
    deviation ``‖Δ_b‖`` and ``sketch_energy_tau`` a job's ``√(mean_b ‖Δ_b‖²)``;
    ``sketch_spread`` and ``sketch_concentration`` bound the shape of a job's deviations
    (:func:`sketch_rms_factor`) at ``SKETCH_REFERENCE_BLOCKS`` blocks. The limits a judged
    job's sketch is held to follow from them and its length (:meth:`sketch_value_limit`,
    :meth:`sketch_rms_limit`).
    """

    token_tau: float
    sketch_exp: int
    sketch_norm_tau: float
    sketch_energy_tau: float
    mass_tau: tuple[tuple[float, ...], ...]  # [MASS_TEMPERATURES][MASS_LEVELS]
    gap_sum_tau: float
    mass_sum_tau: float
    sketch_spread: float = 1.0
    sketch_concentration: float = 1.0
    honest_mean_score: float = 0.5
    """The mean score (:attr:`verifier.llm.LLMCheck.score`, capped at 1) of calibration's
    honest jobs under these tolerances; the evidence across a node's audits
    (:mod:`verifier.llm_evidence`) is judged against it. 0.5, the most any honest job
    scored in calibration, where it was not measured."""

    def __post_init__(self) -> None:
        if len(self.mass_tau) != len(MASS_TEMPERATURES) or any(
            len(row) != len(MASS_LEVELS) for row in self.mass_tau
        ):
            raise ValueError(f"mass_tau needs {len(MASS_TEMPERATURES)} rows (MASS_TEMPERATURES) "
                             f"of {len(MASS_LEVELS)} values (MASS_LEVELS)")

    def mass_levels(self, temperature: float) -> tuple[float, ...]:
        """Per ``MASS_LEVELS`` bin, the bound on ``T ×`` an honest mass difference at ``T``.

        Between two calibrated temperatures, the larger of their bounds; beyond
        the ends, the nearest end's.
        """
        grid = MASS_TEMPERATURES
        if temperature <= grid[0]:
            return self.mass_tau[0]
        if temperature >= grid[-1]:
            return self.mass_tau[-1]
        hi = next(i for i, t in enumerate(grid) if t >= temperature)
        if grid[hi] == temperature:
            return self.mass_tau[hi]
        return tuple(max(a, b) for a, b in zip(self.mass_tau[hi - 1], self.mass_tau[hi],
                                                strict=True))

    def gap_sum_limit(self, n_tokens: int) -> float:
        """The largest honest sum of sampling gaps over ``n_tokens`` generated tokens."""
        return self.gap_sum_tau * max(1.0, n_tokens / GAP_SUM_TOKENS)

    def mass_sum_limit(self, n_tokens: int) -> float:
        """The largest honest sum of top-p excesses (``T`` × mass) over ``n_tokens`` tokens."""
        return self.mass_sum_tau * max(1.0, n_tokens / GAP_SUM_TOKENS)

    def sketch_value_limit(self, n_tokens: int) -> float:
        """The largest honest deviation, in quanta, of any committed sketch value of a job of
        ``n_tokens`` tokens: :func:`sketch_tail_z` over its values times the block bound, plus
        half a quantum for the committed value's rounding."""
        return sketch_tail_z(n_blocks(n_tokens) * PROJECTIONS) * self.sketch_norm_tau + 0.5

    def sketch_rms_limit(self, n_tokens: int) -> float:
        """The largest honest root-mean-square sketch deviation, in quanta, of a job of
        ``n_tokens`` tokens: :func:`sketch_rms_factor` times the energy bound, plus half a
        quantum of rounding (the triangle inequality). A job shorter than
        ``SKETCH_REFERENCE_BLOCKS`` has fewer blocks to average over: its shape is taken to
        concentrate in proportion, up to one direction."""
        short = max(1.0, SKETCH_REFERENCE_BLOCKS / n_blocks(max(1, n_tokens)))
        spread = min(1.0, self.sketch_spread * math.sqrt(short))
        concentration = min(1.0, self.sketch_concentration * short)
        return sketch_rms_factor(spread, concentration) * self.sketch_energy_tau + 0.5


BF16_MASS_TAU = (
    (0.074, 0.074, 0.056, 0.048, 0.074, 0.053, 0.024, 0.025),
    (0.089, 0.09, 0.08, 0.072, 0.076, 0.059, 0.018, 0.0071),
    (0.094, 0.11, 0.084, 0.056, 0.046, 0.033, 0.018, 0.0074),
    (0.11, 0.083, 0.086, 0.056, 0.036, 0.024, 0.013, 0.0064),
    (0.081, 0.081, 0.056, 0.054, 0.031, 0.025, 0.018, 0.0076),
    (0.066, 0.095, 0.06, 0.05, 0.033, 0.023, 0.012, 0.0048),
    (0.092, 0.074, 0.059, 0.039, 0.031, 0.02, 0.011, 0.0041),
)
DEFAULT_TOLERANCES: Mapping[str, Tolerances] = {
    "float32": Tolerances(token_tau=1e-4, sketch_exp=-13, sketch_norm_tau=2.75,
                          sketch_energy_tau=2.27, sketch_spread=0.64, sketch_concentration=0.58,
                          mass_tau=((1e-5,) * len(MASS_LEVELS),) * len(MASS_TEMPERATURES),
                          gap_sum_tau=1e-4, mass_sum_tau=1e-5),
    "bfloat16": Tolerances(token_tau=1.1, sketch_exp=1, sketch_norm_tau=2.58,
                           sketch_energy_tau=2.09, sketch_spread=0.56,
                           sketch_concentration=0.46,
                           mass_tau=BF16_MASS_TAU, gap_sum_tau=0.75, mass_sum_tau=0.027),
}
"""Used when a model has no calibration: the larger of the zoo GPT-2's and Llama's tolerances
from ``bench/llm_verify.py``'s calibration (12 jobs per setting, seed 1, CPU); ``BF16_MASS_TAU``
rows are ``MASS_TEMPERATURES``, columns ``MASS_LEVELS``."""


@dataclass(frozen=True)
class Calibration:
    """Per-dtype tolerances plus the record of how they were measured."""

    tolerances: Mapping[str, Tolerances]
    record: Mapping[str, Any]

    def for_dtype(self, dtype: str) -> Tolerances:
        return self.tolerances[dtype]

    def to_json(self) -> dict[str, Any]:
        return {
            "tolerances": {d: asdict(t) for d, t in sorted(self.tolerances.items())},
            "record": dict(self.record),
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Calibration:
        try:
            tolerances = {
                d: Tolerances(
                    token_tau=float(t["token_tau"]),
                    sketch_exp=int(t["sketch_exp"]),
                    **_sketch_bounds(t),
                    # entries calibrated before these existed: loose slacks (T·TV is at most about
                    # the logit deviation, and token_tau is four times that) and no sum checks
                    mass_tau=tuple(tuple(float(m) for m in row) for row in t.get(
                        "mass_tau",
                        [[t["token_tau"]] * len(MASS_LEVELS)] * len(MASS_TEMPERATURES))),
                    gap_sum_tau=float(t.get("gap_sum_tau",
                                            GAP_SUM_TOKENS * float(t["token_tau"]))),
                    # T·(1 − p) < 100 per token: never reached
                    mass_sum_tau=float(t.get("mass_sum_tau", 100.0 * GAP_SUM_TOKENS)),
                    honest_mean_score=float(t.get("honest_mean_score", 0.5)),
                )
                for d, t in value["tolerances"].items()
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise LLMJobError(f"stored llm calibration is malformed: {exc}") from exc
        missing = sorted(set(DTYPES) - set(tolerances))
        if missing:
            raise LLMJobError(f"stored llm calibration lacks dtypes {missing}")
        return cls(tolerances=tolerances, record=dict(value.get("record", {})))


def _sketch_bounds(t: Mapping[str, Any]) -> dict[str, float]:
    """The sketch bounds of a stored entry. One calibrated before they existed stored the
    thresholds of 64-token jobs (``sketch_tau``, ``sketch_rms_tau``): it gets the bounds that
    give those thresholds at 64 tokens with the shape unknown (every block along one
    direction)."""
    if "sketch_norm_tau" in t:
        bounds = {key: float(t[key]) for key in ("sketch_norm_tau", "sketch_energy_tau",
                                                 "sketch_spread", "sketch_concentration")}
        for key, value in bounds.items():
            # a NaN or negative bound would make every comparison pass: refuse it
            top = 1.0 if key in ("sketch_spread", "sketch_concentration") else math.inf
            if not (math.isfinite(value) and 0.0 <= value <= top):
                raise ValueError(f"{key} is {value!r}; it must be finite, between 0 and {top}")
        return bounds
    values = n_blocks(GAP_SUM_TOKENS) * PROJECTIONS
    return {"sketch_norm_tau": max(0.0, float(t["sketch_tau"]) - 0.5) / sketch_tail_z(values),
            "sketch_energy_tau": max(0.0, float(t["sketch_rms_tau"]) - 0.5)
            / sketch_rms_factor(1.0, 1.0),
            "sketch_spread": 1.0, "sketch_concentration": 1.0}


DEFAULT_CALIBRATION = Calibration(tolerances=DEFAULT_TOLERANCES, record={"source": "default"})


def calibration_from_params(params: Mapping[str, Any]) -> Calibration:
    """The calibration in a registry entry's params, or the defaults when it has none."""
    stored = params.get(REGISTRY_KEY)
    return DEFAULT_CALIBRATION if stored is None else Calibration.from_json(stored)
