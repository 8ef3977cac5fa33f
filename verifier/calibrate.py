"""Tolerances from measured honest variation: the matrix behind ``assay calibrate``.

An honest node may batch with padding, use any thread count and either
attention kernel, and decodes with a KV cache, while the verifier runs one
prefill. For each such setting and each dtype this module generates seeded
honest jobs the way a node would and measures, against the verifier's
prefill, the three quantities the checks of :mod:`verifier.llm` compare:

- ``logit_dev``: the largest |node logit − verifier logit|;
- ``gap``: the largest sampling gap of a committed token (≤ 2 · logit_dev);
- ``block_dev``: the largest |node − verifier| sketch block value;
- ``block_rms``: the root-mean-square of those differences over the job.

Tolerances leave a margin: ``token_tau = max(gap, 2·logit_dev) / MARGIN``
(never below ``TOKEN_TAU_FLOOR``); the sketch step is the largest power of
two ≤ the worst honest ``block_rms`` (but at least ``block_dev / 32``, so an
honest deviation never wraps the 256-residue); ``sketch_tau`` and
``sketch_rms_tau`` are the worst honest values in quanta, plus the rounding
of the committed value, divided by ``MARGIN``. The largest honest deviation
seen thus sits at ``MARGIN`` of each threshold.
Everything is seeded: the same model on the same machine type gives the same
tolerances.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from prover.llm.generate import LLM, Generated, generate, prefill
from prover.llm.job import DTYPES, Calibration, LLMJob, Tolerances
from prover.llm.sampler import SamplingParams, gumbel_noise
from prover.llm.sketch import MAX_EXP, MIN_EXP, block_values
from verifier.llm import sampling_gaps

MARGIN = 0.5
TOKEN_TAU_FLOOR = {"float32": 1e-4, "bfloat16": 1e-2}
PROVISIONAL_TOL = {"float32": 1e-3, "bfloat16": 0.5}
"""Top-k/top-p slack used while measuring gaps, before tolerances exist."""

SAMPLING_MIX: tuple[tuple[int, int, int], ...] = (
    (0, 0, 1_000_000),  # greedy
    (1000, 0, 1_000_000),  # T = 1
    (700, 40, 1_000_000),  # T = 0.7, top-k 40
    (1000, 0, 900_000),  # T = 1, top-p 0.9
)


@dataclass(frozen=True)
class HonestSetting:
    """How an honest node generates, and how the verifier prefills."""

    name: str
    batch: int = 1
    threads: int = 1
    attention: str = "sdpa"
    verifier_attention: str = "eager"
    verifier_threads: int = 1


HONEST_SETTINGS: tuple[HonestSetting, ...] = (
    HonestSetting("kv-cache b1 t1 sdpa / prefill eager"),
    HonestSetting("kv-cache b8 padded t1 sdpa / prefill eager", batch=8),
    HonestSetting("kv-cache b1 t2 eager / prefill eager", threads=2, attention="eager"),
    HonestSetting("kv-cache b8 padded t2 eager / prefill sdpa t2", batch=8, threads=2,
                  attention="eager", verifier_attention="sdpa", verifier_threads=2),
    HonestSetting("kv-cache b1 t1 eager / prefill sdpa t2", attention="eager",
                  verifier_attention="sdpa", verifier_threads=2),
)


@dataclass(frozen=True)
class Deviation:
    """One honest job's largest deviations."""

    logit_dev: float
    gap: float
    block_dev: float
    block_rms: float
    tokens: int


def honest_jobs(
    llm: LLM, n: int, dtype: str, seed: int, max_new_tokens: int = 64
) -> list[tuple[torch.Tensor, LLMJob]]:
    """``n`` seeded prompts (4 to 64 tokens) with jobs cycling through ``SAMPLING_MIX``."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = int(torch.randint(4, 65, (1,), generator=g))
        prompt = torch.randint(0, llm.vocab_size, (length,), generator=g)
        temperature, top_k, top_p = SAMPLING_MIX[i % len(SAMPLING_MIX)]
        sampling = SamplingParams(seed=seed * 100_003 + i, temperature_milli=temperature,
                                  top_k=top_k, top_p_ppm=top_p)
        out.append((prompt, LLMJob(max_new_tokens=max_new_tokens, dtype=dtype, sampling=sampling)))
    return out


def generate_honestly(
    llm: LLM, jobs: Sequence[tuple[torch.Tensor, LLMJob]], setting: HonestSetting
) -> list[Generated]:
    """Generate ``jobs`` as a node using ``setting`` would, in batches of ``setting.batch``."""
    results: list[Generated] = []
    for start in range(0, len(jobs), setting.batch):
        chunk = jobs[start : start + setting.batch]
        results += generate(llm, [p for p, _ in chunk], [j for _, j in chunk],
                            attention=setting.attention, threads=setting.threads)
    return results


def measure(
    llm: LLM, jobs: Sequence[tuple[torch.Tensor, LLMJob]], setting: HonestSetting
) -> list[Deviation]:
    """Each job's honest deviations between node-side generation and the verifier's prefill."""
    out = []
    for (prompt, job), made in zip(jobs, generate_honestly(llm, jobs, setting), strict=True):
        view = prefill(llm, prompt, made.tokens, job.dtype, attention=setting.verifier_attention,
                       threads=setting.verifier_threads)
        head: torch.nn.Module = llm.variant(job.dtype).get_output_embeddings()  # type: ignore[no-untyped-call]
        with torch.inference_mode():
            node_logits = head(made.hidden).double()
        noise = gumbel_noise(job.sampling.seed, made.tokens.numel(), llm.vocab_size)
        gaps = sampling_gaps(view.logits, noise, made.tokens, job.sampling,
                             PROVISIONAL_TOL[job.dtype])
        seed = job.sampling.seed
        blocks = block_values(made.hidden, seed) - block_values(view.hidden, seed)
        out.append(Deviation(
            logit_dev=float((node_logits - view.logits).abs().max()),
            gap=float(gaps.max()),
            block_dev=float(blocks.abs().max()),
            block_rms=float(blocks.pow(2).mean().sqrt()),
            tokens=made.tokens.numel(),
        ))
    return out


def tolerances_from(deviations: Sequence[Deviation], dtype: str) -> Tolerances:
    """Thresholds that put the largest honest deviation at ``MARGIN`` of each tolerance."""
    worst_token = max(max(d.gap, 2 * d.logit_dev) for d in deviations)
    worst_block = max(d.block_dev for d in deviations)
    worst_rms = max(d.block_rms for d in deviations)
    if not math.isfinite(worst_token) or not math.isfinite(worst_block):
        raise ValueError(f"honest {dtype} runs disagree beyond any tolerance; is the model sane?")
    token_tau = max(worst_token / MARGIN, TOKEN_TAU_FLOOR[dtype])
    if worst_rms > 0:
        exp = max(math.floor(math.log2(worst_rms)), math.ceil(math.log2(worst_block / 32)))
    else:
        exp = MIN_EXP
    exp = min(max(exp, MIN_EXP), MAX_EXP)
    step = 2.0**exp
    return Tolerances(
        token_tau=token_tau,
        sketch_exp=exp,
        sketch_tau=(worst_block / step + 0.5) / MARGIN,
        sketch_rms_tau=math.sqrt((worst_rms / step) ** 2 + 1 / 12) / MARGIN,
    )


def calibrate(
    llm: LLM,
    jobs_per_setting: int = 16,
    seed: int = 1,
    settings: Sequence[HonestSetting] = HONEST_SETTINGS,
) -> Calibration:
    """Run the honest-variation matrix for every dtype and derive tolerances from it."""
    tolerances, measured = {}, {}
    for dtype in DTYPES:
        jobs = honest_jobs(llm, jobs_per_setting, dtype, seed)
        deviations = [d for s in settings for d in measure(llm, jobs, s)]
        tolerances[dtype] = tolerances_from(deviations, dtype)
        measured[dtype] = {
            "jobs": len(deviations),
            "positions": sum(d.tokens for d in deviations),
            "max_logit_dev": max(d.logit_dev for d in deviations),
            "max_gap": max(d.gap for d in deviations),
            "max_block_dev": max(d.block_dev for d in deviations),
            "max_block_rms": max(d.block_rms for d in deviations),
        }
    record = {
        "source": "assay calibrate",
        "margin": MARGIN,
        "seed": seed,
        "settings": [s.name for s in settings],
        "machine": f"{platform.machine()} {platform.system()}, torch {torch.__version__}, cpu",
        "measured": measured,
    }
    return Calibration(tolerances=tolerances, record=record)
