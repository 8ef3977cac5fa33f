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
    stop_token         optional: generation ends after emitting it

The output is the generated ids, int64 ``[1, n]``: ``n == max_new_tokens``
unless the last token is ``stop_token``.

:class:`Tolerances` are what a verifier compares against; they are measured
on honest variation by ``assay calibrate`` and stored in the model's
registry entry under ``params["llm"]``. Node and validators must read the
same entry (it is published with the model, like its id): the node's
sketch uses its ``sketch_exp``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

from assay.messages import JobRequest
from prover.llm.sampler import PPM, SamplingParams

MAX_NEW_TOKENS = 4096
DTYPES: Mapping[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}
KNOWN_PARAMS = frozenset(
    {"max_new_tokens", "dtype", "seed", "temperature_milli", "top_k", "top_p_ppm", "stop_token"}
)
REGISTRY_KEY = "llm"


class LLMJobError(ValueError):
    """Job parameters that do not describe a valid ``llm`` job; the message names the field."""


@dataclass(frozen=True)
class LLMJob:
    max_new_tokens: int
    dtype: str
    sampling: SamplingParams
    stop_token: int | None = None

    def to_params(self) -> dict[str, int | str]:
        params: dict[str, int | str] = {
            "max_new_tokens": self.max_new_tokens,
            "dtype": self.dtype,
            "seed": self.sampling.seed,
            "temperature_milli": self.sampling.temperature_milli,
            "top_k": self.sampling.top_k,
            "top_p_ppm": self.sampling.top_p_ppm,
        }
        if self.stop_token is not None:
            params["stop_token"] = self.stop_token
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
    stop = params.get("stop_token")
    if stop is not None and (not isinstance(stop, int) or isinstance(stop, bool)):
        raise LLMJobError(f"stop_token must be an integer, got {stop!r}")
    return LLMJob(max_new_tokens=max_new, dtype=str(dtype), sampling=sampling, stop_token=stop)


@dataclass(frozen=True)
class Tolerances:
    """One dtype's thresholds; a deviation past any of them is FRAUD.

    ``token_tau`` bounds a token's sampling gap (logits); ``sketch_exp`` fixes
    the sketch's quantisation step ``2^sketch_exp``; ``sketch_tau`` bounds one
    sketch value's deviation and ``sketch_rms_tau`` the job's root-mean-square
    deviation, both in quanta.
    """

    token_tau: float
    sketch_exp: int
    sketch_tau: float
    sketch_rms_tau: float


DEFAULT_TOLERANCES: Mapping[str, Tolerances] = {
    "float32": Tolerances(token_tau=1e-4, sketch_exp=-13, sketch_tau=8.7, sketch_rms_tau=3.4),
    "bfloat16": Tolerances(token_tau=1.1, sketch_exp=1, sketch_tau=7.4, sketch_rms_tau=2.8),
}
"""Used when a model has no calibration: the larger of the zoo GPT-2's and Llama's tolerances
from ``bench/llm_verify.py``'s calibration (12 jobs per setting, seed 1, CPU)."""


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
                    sketch_tau=float(t["sketch_tau"]),
                    sketch_rms_tau=float(t["sketch_rms_tau"]),
                )
                for d, t in value["tolerances"].items()
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise LLMJobError(f"stored llm calibration is malformed: {exc}") from exc
        missing = sorted(set(DTYPES) - set(tolerances))
        if missing:
            raise LLMJobError(f"stored llm calibration lacks dtypes {missing}")
        return cls(tolerances=tolerances, record=dict(value.get("record", {})))


DEFAULT_CALIBRATION = Calibration(tolerances=DEFAULT_TOLERANCES, record={"source": "default"})


def calibration_from_params(params: Mapping[str, Any]) -> Calibration:
    """The calibration in a registry entry's params, or the defaults when it has none."""
    stored = params.get(REGISTRY_KEY)
    return DEFAULT_CALIBRATION if stored is None else Calibration.from_json(stored)
