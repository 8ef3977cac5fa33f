"""Tolerances from measured honest variation: the matrix behind ``assay calibrate``.

An honest node may batch with padding, use any thread count and either
attention kernel, and decodes with a KV cache, while the verifier runs one
prefill. For each such setting and each dtype this module generates seeded
honest jobs the way a node would and measures, against the verifier's
prefill, the three quantities the checks of :mod:`verifier.llm` compare:

- ``logit_dev``: the largest |node logit − verifier logit|;
- ``gap``: the largest sampling gap of a committed token (≤ 2 · logit_dev);
- ``mass_dev``: per temperature of ``MASS_TEMPERATURES`` and bin of the
  verifier's probability mass (``MASS_LEVELS``), the largest ``T`` ×
  |node − verifier| mass of exactly the token sets the top-p check of
  :func:`verifier.llm.sampling_gaps` compares with ``p`` — the tokens of
  logit ≥ ``l_v + token_tau``, and those of logit ≥ ``l_v − token_tau``
  other than ``v``, for every token ``v``; it is largest where a large top
  probability shifts and small in the tail;
- ``gap_sum``: the sum of a job's sampling gaps, judged with the final
  ``token_tau`` and ``mass_tau``, per ``GAP_SUM_TOKENS`` tokens;
- ``mass_sum``: the sum of a job's top-p excesses
  (:func:`verifier.llm.top_p_excess`), likewise.

An honest job's sums depend on where its noise puts near-ties, which the
jobs alone sample rarely, so both are also taken on the same pair of node
and verifier logits with the node choosing again, as it would, on its own
logits: the gap sum over ``REDRAWS`` redraws of the sampler's noise, the
top-p sum over ``MASS_DRAWS`` draws of the tokens from the node's kept
distribution (top-p 0.9 for jobs without top-p).
- ``block_dev``: the largest |node − verifier| sketch block value;
- ``block_rms``: the root-mean-square of those differences over the job.

Each honest job's score under the final tolerances (capped at 1) is averaged
into ``honest_mean_score``, what :mod:`verifier.llm_evidence` accumulates a
node's audits against.

Tolerances leave a margin: ``token_tau = max(gap, 2·logit_dev) / MARGIN``
(never below ``TOKEN_TAU_FLOOR``); ``mass_tau = mass_dev / MARGIN`` per
temperature and bin (never below ``MASS_TAU_FLOOR``; a bin no honest set
reached takes the largest value at that temperature); ``gap_sum_tau`` and
``mass_sum_tau`` are the largest honest sums per ``GAP_SUM_TOKENS`` tokens
over ``MARGIN`` (never below ``TOKEN_TAU_FLOOR`` and ``MASS_TAU_FLOOR``); the
sketch step is the
largest power of
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
from dataclasses import dataclass, field, replace

import torch

from prover.llm.engine import Engine, Generated
from prover.llm.generate import generate, prefill
from prover.llm.job import (
    DTYPES,
    GAP_SUM_TOKENS,
    MASS_LEVELS,
    MASS_TEMPERATURES,
    Calibration,
    LLMJob,
    Tolerances,
)
from prover.llm.model import LLM
from prover.llm.sampler import SamplingParams, choose_tokens, gumbel_noise, kept_mask
from prover.llm.sketch import MAX_EXP, MIN_EXP, block_values
from verifier.llm import EXCESS_TOL, sampling_gaps, top_p_excess

MARGIN = 0.5
_GOLDEN = 0x9E3779B97F4A7C15
TOKEN_TAU_FLOOR = {"float32": 1e-4, "bfloat16": 1e-2}
MASS_TAU_FLOOR = {"float32": 1e-5, "bfloat16": 1e-3}
REDRAWS = 16
"""Noise redraws per honest job when measuring the gap sum."""
MASS_DRAWS = 1024
"""Draws of a job's tokens from the node's distribution when measuring the top-p sum."""
DRAW_TOP_P_PPM = 900_000
"""The top-p at which jobs without top-p are drawn for the top-p sum."""
PROVISIONAL_TOL = {"float32": 1e-3, "bfloat16": 0.5}
"""Top-k/top-p slack (logit and mass) used while measuring gaps, before tolerances exist."""

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
    continuous: bool = False
    """Jobs join a running batch (at most ``batch`` sequences) one per step, mid-generation
    of the others, and leave as they finish: continuous batching."""


HONEST_SETTINGS: tuple[HonestSetting, ...] = (
    HonestSetting("kv-cache b1 t1 sdpa / prefill eager"),
    HonestSetting("kv-cache b8 padded t1 sdpa / prefill eager", batch=8),
    HonestSetting("kv-cache b1 t2 eager / prefill eager", threads=2, attention="eager"),
    HonestSetting("kv-cache b8 padded t2 eager / prefill sdpa t2", batch=8, threads=2,
                  attention="eager", verifier_attention="sdpa", verifier_threads=2),
    HonestSetting("kv-cache b1 t1 eager / prefill sdpa t2", attention="eager",
                  verifier_attention="sdpa", verifier_threads=2),
    HonestSetting("continuous b4 joins and leaves t1 sdpa / prefill eager", batch=4,
                  continuous=True),
)


@dataclass(frozen=True)
class Deviation:
    """One honest job's largest deviations, and what its gaps are recomputed from."""

    logit_dev: float
    gap: float
    block_dev: float
    block_rms: float
    tokens: int
    verifier_logits: torch.Tensor | None = field(default=None, repr=False, compare=False)
    node_logits: torch.Tensor | None = field(default=None, repr=False, compare=False)
    committed: torch.Tensor | None = field(default=None, repr=False, compare=False)
    sampling: SamplingParams | None = field(default=None, repr=False, compare=False)

    def gap_sum(self, tolerances: Tolerances) -> float:
        """The largest sum of sampling gaps under ``tolerances``, per ``GAP_SUM_TOKENS``, over
        the committed tokens and ``REDRAWS`` redraws of the noise."""
        if self.verifier_logits is None or self.committed is None or self.sampling is None:
            return 0.0
        mine, vocab = self.verifier_logits, self.verifier_logits.shape[-1]
        worst = 0.0
        for r in range(1 + (REDRAWS if self.node_logits is not None else 0)):
            sampling = replace(self.sampling, seed=(self.sampling.seed + r * _GOLDEN) % 2**64)
            noise = gumbel_noise(sampling.seed, self.tokens, vocab)
            tokens = (self.committed if r == 0 or self.node_logits is None
                      else choose_tokens(self.node_logits, noise, [sampling] * self.tokens))
            gaps = sampling_gaps(mine, noise, tokens, sampling, tolerances.token_tau,
                                 tolerances.mass_levels(sampling.temperature))
            worst = max(worst, float(gaps.sum()))
            if sampling.greedy:
                break  # redraws choose the same tokens
        return worst * GAP_SUM_TOKENS / max(self.tokens, GAP_SUM_TOKENS)

    def mass_sum(self, tolerances: Tolerances) -> float:
        """The largest sum of top-p excesses under ``tolerances``, per ``GAP_SUM_TOKENS``, over
        the committed tokens (top-p jobs) and ``MASS_DRAWS`` draws of a whole job's tokens
        from the node's own kept distribution at the job's temperature and top-p (0.9 for a
        job without top-p; none for greedy jobs)."""
        if (self.verifier_logits is None or self.committed is None or self.sampling is None
                or self.sampling.greedy):
            return 0.0
        mine, tau = self.verifier_logits, EXCESS_TOL * tolerances.token_tau
        worst = float(top_p_excess(mine, self.committed, self.sampling, tau).sum())
        if self.node_logits is not None:
            sampling = self.sampling
            if sampling.top_p_ppm >= 1_000_000:
                sampling = replace(sampling, top_p_ppm=DRAW_TOP_P_PPM)
            n, vocab = mine.shape
            t = sampling.temperature
            keep = kept_mask(self.node_logits, torch.full((n,), t, dtype=torch.float64),
                             torch.full((n,), sampling.top_k), torch.full((n,), sampling.top_p,
                                                                          dtype=torch.float64))
            q = torch.softmax(self.node_logits / t, dim=-1).masked_fill(~keep, 0.0)
            g = torch.Generator().manual_seed(sampling.seed % 2**63)
            draws = torch.multinomial(q, MASS_DRAWS, replacement=True, generator=g)  # [n, R]
            excess = top_p_excess(mine, torch.arange(vocab).expand(n, vocab), sampling, tau)
            worst = max(worst, float(excess.gather(-1, draws).sum(dim=0).max()))
        return worst * GAP_SUM_TOKENS / max(self.tokens, GAP_SUM_TOKENS)

    def score(self, tolerances: Tolerances) -> float:
        """This job's score as the validator computes it, capped at 1: the largest of its
        deviations over their tolerances, on its committed tokens (no redraws), the
        committed sketch's rounding included (at its worst for the largest value, its mean
        for the root-mean-square)."""
        step = 2.0**tolerances.sketch_exp
        gap_sum = mass_sum = 0.0
        if self.verifier_logits is not None and self.committed is not None and \
                self.sampling is not None:
            noise = gumbel_noise(self.sampling.seed, self.tokens, self.verifier_logits.shape[-1])
            gap_sum = float(sampling_gaps(
                self.verifier_logits, noise, self.committed, self.sampling, tolerances.token_tau,
                tolerances.mass_levels(self.sampling.temperature)).sum())
            mass_sum = float(top_p_excess(self.verifier_logits, self.committed, self.sampling,
                                          EXCESS_TOL * tolerances.token_tau).sum())
        ratios = (
            self.gap / tolerances.token_tau,
            gap_sum / tolerances.gap_sum_limit(self.tokens),
            mass_sum / tolerances.mass_sum_limit(self.tokens),
            (self.block_dev / step + 0.5) / tolerances.sketch_tau,
            math.sqrt((self.block_rms / step) ** 2 + 1 / 12) / tolerances.sketch_rms_tau,
        )
        return min(1.0, max(ratios))

    def mass_dev(self, tol: float) -> list[list[float]]:
        """Per ``MASS_TEMPERATURES`` × ``MASS_LEVELS`` bin, ``T`` × the largest |node − verifier|
        mass of the sets the top-p check uses with logit slack ``tol`` (-1: no set)."""
        if self.node_logits is None or self.verifier_logits is None:
            return [[-1.0] * len(MASS_LEVELS) for _ in MASS_TEMPERATURES]
        return mass_deviation(self.node_logits, self.verifier_logits, tol)


def mass_deviation(node_logits: torch.Tensor, verifier_logits: torch.Tensor, tol: float
                   ) -> list[list[float]]:
    """See :meth:`Deviation.mass_dev`; logits ``[n, V]``."""
    order = torch.sort(verifier_logits, dim=-1, descending=False, stable=True)
    ascending = order.values
    vocab = ascending.shape[-1]
    # sets {u : l_u ≥ x} are the last `count` tokens of the ascending order
    count_above = vocab - torch.searchsorted(ascending, verifier_logits + tol, right=False)
    count_band = vocab - torch.searchsorted(ascending, verifier_logits - tol, right=False)
    levels = torch.tensor(MASS_LEVELS[:-1], dtype=torch.float64)
    table = []
    for t in MASS_TEMPERATURES:
        worst = torch.full((len(MASS_LEVELS),), -1.0, dtype=torch.float64)
        diffs, masses = [], []
        mine_p = torch.softmax(verifier_logits / t, dim=-1)
        node_p = torch.softmax(node_logits / t, dim=-1)
        mine_top = torch.cumsum(mine_p.gather(-1, order.indices).flip(-1), dim=-1)  # top-k mass
        node_top = torch.cumsum(node_p.gather(-1, order.indices).flip(-1), dim=-1)
        for count, minus_own in ((count_above, False), (count_band, True)):
            index = (count - 1).clamp_min(0)
            mine = torch.where(count > 0, mine_top.gather(-1, index), 0.0)
            node = torch.where(count > 0, node_top.gather(-1, index), 0.0)
            if minus_own:
                mine, node = mine - mine_p, node - node_p
            masses.append(mine.flatten())
            diffs.append((t * (node - mine).abs()).flatten())
        bins = torch.bucketize(torch.cat(masses), levels, right=False)
        worst = worst.scatter_reduce(0, bins, torch.cat(diffs), reduce="amax")
        table.append([float(w) for w in worst])
    return table


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
    """Generate ``jobs`` as a node using ``setting`` would, in batches of ``setting.batch``
    (or joining a running batch one per step, when ``setting.continuous``)."""
    if setting.continuous:
        return generate_continuously(llm, jobs, setting)
    results: list[Generated] = []
    for start in range(0, len(jobs), setting.batch):
        chunk = jobs[start : start + setting.batch]
        results += generate(llm, [p for p, _ in chunk], [j for _, j in chunk],
                            attention=setting.attention, threads=setting.threads)
    return results


def generate_continuously(
    llm: LLM, jobs: Sequence[tuple[torch.Tensor, LLMJob]], setting: HonestSetting
) -> list[Generated]:
    """One job submitted per step to an :class:`~prover.llm.engine.Engine` of at most
    ``setting.batch`` sequences: each joins a batch whose other jobs are mid-generation."""
    engine = Engine(llm, attention=setting.attention, threads=setting.threads,
                    max_num_seqs=setting.batch, max_waiting=len(jobs))
    done: dict[int, Generated] = {}
    submitted = 0
    while len(done) < len(jobs):
        if submitted < len(jobs):
            engine.submit(submitted, *jobs[submitted])
            submitted += 1
        for token in engine.step():
            if token.finish_reason is not None:
                done[int(str(token.key))] = engine.pop(token.key)
    return [done[i] for i in range(len(jobs))]


def measure(
    llm: LLM, jobs: Sequence[tuple[torch.Tensor, LLMJob]], setting: HonestSetting
) -> list[Deviation]:
    """Each job's honest deviations between node-side generation and the verifier's prefill."""
    out = []
    for (prompt, job), made in zip(jobs, generate_honestly(llm, jobs, setting), strict=True):
        view = prefill(llm, prompt, made.tokens, job.dtype, attention=setting.verifier_attention,
                       threads=setting.verifier_threads)
        model = llm.variant(job.dtype)
        with torch.inference_mode():
            node_logits = llm.logits(model, made.hidden.to(llm.device)).cpu()
        noise = gumbel_noise(job.sampling.seed, made.tokens.numel(), llm.vocab_size)
        provisional = PROVISIONAL_TOL[job.dtype]
        gaps = sampling_gaps(view.logits, noise, made.tokens, job.sampling, provisional,
                             provisional)
        seed = job.sampling.seed
        blocks = block_values(made.hidden, seed) - block_values(view.hidden, seed)
        out.append(Deviation(
            logit_dev=float((node_logits - view.logits).abs().max()),
            gap=float(gaps.max()),
            block_dev=float(blocks.abs().max()),
            block_rms=float(blocks.pow(2).mean().sqrt()),
            tokens=made.tokens.numel(),
            node_logits=node_logits,
            verifier_logits=view.logits,
            committed=made.tokens,
            sampling=job.sampling,
        ))
    return out


def tolerances_from(
    deviations: Sequence[Deviation], dtype: str
) -> tuple[Tolerances, dict[str, object]]:
    """Thresholds that put the largest honest deviation at ``MARGIN`` of each tolerance, and
    the largest deviations measured (what the registry records next to them)."""
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
    worst_mass = _table_max([d.mass_dev(token_tau) for d in deviations])
    mass_tau = tuple(
        tuple(max((m if m >= 0 else max(row)) / MARGIN, MASS_TAU_FLOOR[dtype]) for m in row)
        for row in worst_mass
    )
    partial = Tolerances(
        token_tau=token_tau,
        sketch_exp=exp,
        sketch_tau=(worst_block / step + 0.5) / MARGIN,
        sketch_rms_tau=math.sqrt((worst_rms / step) ** 2 + 1 / 12) / MARGIN,
        mass_tau=mass_tau,
        gap_sum_tau=math.inf,
        mass_sum_tau=math.inf,
    )
    sums = [(d.gap_sum(partial), d.mass_sum(partial)) for d in deviations]
    worst_sum = max(g for g, _ in sums)
    worst_mass_sum = max(m for _, m in sums)
    if not math.isfinite(worst_sum):
        raise ValueError(f"an honest {dtype} token is outside the calibrated top-k/top-p slack")
    tolerances = replace(partial, gap_sum_tau=max(worst_sum / MARGIN, TOKEN_TAU_FLOOR[dtype]),
                         mass_sum_tau=max(worst_mass_sum / MARGIN, MASS_TAU_FLOOR[dtype]))
    scores = [d.score(tolerances) for d in deviations]
    tolerances = replace(tolerances, honest_mean_score=sum(scores) / len(scores))
    measured: dict[str, object] = {
        "jobs": len(deviations),
        "positions": sum(d.tokens for d in deviations),
        "max_logit_dev": max(d.logit_dev for d in deviations),
        "max_gap": max(d.gap for d in deviations),
        "max_block_dev": worst_block,
        "max_block_rms": worst_rms,
        "max_mass_dev": worst_mass,
        "max_gap_sum": worst_sum,
        "max_mass_sum": worst_mass_sum,
        "mean_score": tolerances.honest_mean_score,
        "max_score": max(scores),
    }
    return tolerances, measured


def _table_max(tables: Sequence[list[list[float]]]) -> list[list[float]]:
    """Elementwise maximum of equally shaped tables."""
    return [[max(t[i][j] for t in tables) for j in range(len(tables[0][i]))]
            for i in range(len(tables[0]))]


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
        tolerances[dtype], measured[dtype] = tolerances_from(deviations, dtype)
    record = {
        "source": "assay calibrate",
        "margin": MARGIN,
        "seed": seed,
        "settings": [s.name for s in settings],
        "machine": f"{platform.machine()} {platform.system()}, torch {torch.__version__}, cpu",
        "measured": measured,
    }
    return Calibration(tolerances=tolerances, record=record)
