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
- ``block_dev``: the largest |node − verifier| sketch block value, and
  ``block_rms`` their root-mean-square over the job (recorded; the limits do
  not come from them);
- ``block_norm``, ``block_energy`` and the shape of the deviations
  (:func:`deviation_shape`): what bounds the sketch values of *every*
  projection the job could have drawn. The projections calibration happens
  to draw see little of their own noise: on the zoo, 1 200 judged honest
  jobs reached 1.47× calibration's largest block value and 1.21× its largest
  RMS in bfloat16, which a limit of twice those maxima did not leave room for.

Each honest job's score under the final tolerances (capped at 1) is averaged
into ``honest_mean_score``, what :mod:`verifier.llm_evidence` accumulates a
node's audits against.

Tolerances leave a margin: ``token_tau = max(gap, 2·logit_dev) / MARGIN``
(never below ``TOKEN_TAU_FLOOR``); ``mass_tau = mass_dev / MARGIN`` per
temperature and bin (never below ``MASS_TAU_FLOOR``; a bin no honest set
reached takes the largest value at that temperature); ``gap_sum_tau`` and
``mass_sum_tau`` are the largest honest sums per ``GAP_SUM_TOKENS`` tokens
over ``MARGIN`` (never below ``TOKEN_TAU_FLOOR`` and ``MASS_TAU_FLOOR``).
The sketch bounds are the largest honest block norm and energy over
``MARGIN`` (a machine calibration never saw may deviate twice as far), in
quanta of the step, the largest power of two ≤ the worst energy (coarser if
needed so that no honest value of the longest job reaches ``WRAP_QUANTA``);
the shape is the largest of each job's weighted by its share of the worst
energy, squared, so the bound covers every job at its own energy. From them
a judged job's limits follow (:class:`prover.llm.job.Tolerances`): Hoeffding
for the largest value, Laurent–Massart for the RMS, each at
``SKETCH_FALSE_POSITIVE`` per job. The largest honest deviation seen thus
sits at ``MARGIN`` of the token and sum thresholds; an honest job whose
hidden states deviate twice as far as the worst seen fails a sketch check
with probability at most 10⁻¹⁰ (Gaussian directions for the RMS; the
Rademacher sums are close to them).
Everything is seeded: the same model on the same machine type gives the same
tolerances.

Cost: the matrix generates ``jobs × settings`` honest jobs per dtype and
prefills each once (model time: parameters × jobs × tokens). It keeps each
job's final hidden states, not its logits, and recomputes the logits (the
output head alone) at each of its three passes — deviations, mass table,
sums — so its memory is the model (one copy per dtype) plus, per dtype,
``STATISTICS_WORKERS`` jobs' logits (2 × tokens × vocabulary float64 each)
plus jobs × tokens × hidden size; the statistics per job grow with tokens ×
vocabulary × log vocabulary (the sorts of the mass table and of the node's
kept set, and ``1 + REDRAWS`` draws of the vocabulary's noise), worked
``STATISTICS_VALUES`` logits at a time, one torch thread per job. The two
dtypes' matrices run side by side and every part holds as many of the
machine's cores as it runs threads (:class:`Cores`).
"""

from __future__ import annotations

import contextlib
import heapq
import math
import os
import platform
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TypeVar

import torch

from prover.llm.engine import Engine, Generated
from prover.llm.generate import generate, prefill
from prover.llm.job import (
    GAP_SUM_TOKENS,
    MASS_LEVELS,
    MASS_TEMPERATURES,
    MAX_NEW_TOKENS,
    SKETCH_REFERENCE_BLOCKS,
    Calibration,
    LLMJob,
    Tolerances,
    sketch_tail_z,
)
from prover.llm.model import DTYPES, LLM, llm_torch
from prover.llm.prompts import chat_prompt
from prover.llm.sampler import (
    SamplingParams,
    SeededNoise,
    gumbel_at,
    gumbel_noise,
    kept_mask,
)
from prover.llm.sketch import (
    MAX_EXP,
    MIN_EXP,
    PROJECTIONS,
    block_sums,
    block_values,
    n_blocks,
)
from verifier.llm import EXCESS_TOL, HeadCache, Noise, sampling_gaps, top_p_excess

MARGIN = 0.5
WRAP_QUANTA = 120
"""The most quanta an honest sketch value's limit may reach: a deviation past 128 wraps the
256-residue and would look small."""
_GOLDEN = 0x9E3779B97F4A7C15
TOKEN_TAU_FLOOR = {"float32": 1e-4, "bfloat16": 1e-2}
MASS_TAU_FLOOR = {"float32": 1e-5, "bfloat16": 1e-3}
REDRAWS = 16
"""Noise redraws per honest job when measuring the gap sum."""
MASS_DRAWS = 1024
"""Draws of a job's tokens from the node's distribution when measuring the top-p sum."""
STATISTICS_VALUES = 1 << 18
"""Logits a job's statistics work on at a time: whole positions, as many as make about this
many values (5 of SmolLM2's 49k vocabulary; a 256-token vocabulary's 64 positions at once).
Every statistic is computed row by row, so the values are the same as the whole job's at
once; but a few rows of float64 values stay in a core's cache through the dozens of passes
made over them (on a 49k vocabulary the mass deviations took 1.0–1.3 s a job this way
against 1.9–2.0 s), while a small vocabulary's rows are too short to pay for the steps."""


def _rows_at_a_time(vocab: int) -> int:
    return max(1, STATISTICS_VALUES // vocab)


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


class Cores:
    """The machine's cores, which calibration's tasks take from: a task of ``n`` threads waits
    until ``n`` cores are free (all of them, at most) and no more urgent task is waiting
    (lower ``priority`` first, then first come first served), so a task that needs many
    cores is never passed over by a stream of small ones.

    Two tasks never share a core. A run of two OpenMP threads whose second core another
    task is using waits at every one of its parallel regions for a thread the OS has put
    aside: on a 2-core machine a 2-thread decode of SmolLM2 beside a 1-thread job ran 3.3×
    slower than alone, while a 1-thread decode beside it ran as fast as alone.
    """

    def __init__(self, total: int | None = None) -> None:
        if total is None:
            affinity = getattr(os, "sched_getaffinity", None)
            total = len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)
        if total < 1:
            raise ValueError(f"a machine has at least one core, got {total}")
        self.total = total
        self._free = total
        self._waiting: list[tuple[int, int]] = []
        self._arrivals = 0
        self._changed = threading.Condition()

    @contextmanager
    def take(self, n: int, priority: int = 0) -> Iterator[None]:
        n = min(max(n, 1), self.total)
        with self._changed:
            ticket = (priority, self._arrivals)
            self._arrivals += 1
            heapq.heappush(self._waiting, ticket)
            try:
                while self._waiting[0] != ticket or self._free < n:
                    self._changed.wait()
            except BaseException:  # interrupted while waiting: leave the queue to the others
                self._waiting.remove(ticket)
                heapq.heapify(self._waiting)
                self._changed.notify_all()
                raise
            heapq.heappop(self._waiting)
            self._free -= n
            self._changed.notify_all()
        try:
            yield
        finally:
            with self._changed:
                self._free += n
                self._changed.notify_all()


@dataclass(frozen=True)
class JobStates:
    """What one job's node and verifier logits are computed from, again at each pass over the
    matrix: their final hidden states ``[n, d]`` and the thread counts and kernels that made
    them. A job's logits (``[n, V]`` float64, 25 MB for 64 tokens of a 49k vocabulary) are
    far larger than its states (150 kB at ``d`` = 576), so the matrix keeps the states only
    and its memory grows with jobs × tokens × ``d``, not × ``V``."""

    llm: LLM
    dtype: str
    node_hidden: torch.Tensor
    verifier_hidden: torch.Tensor
    setting: HonestSetting

    def logits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The node's and the verifier's logits ``[n, V]`` (float64), each computed as its
        side computes it (the model's output head in the run dtype, at that side's threads)."""
        model = self.llm.variant(self.dtype)
        s = self.setting
        with llm_torch(s.threads, model, s.attention):
            node = self.llm.logits(model, self.node_hidden.to(self.llm.device)).cpu()
        with llm_torch(s.verifier_threads, model, s.verifier_attention):
            mine = self.llm.logits(model, self.verifier_hidden.to(self.llm.device)).cpu()
        return node, mine


Logits = tuple[torch.Tensor, torch.Tensor]
"""A job's node and verifier logits, ``[n, V]`` float64 each."""


def _kept_ids(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The kept token ids of each row ``[n, w]`` (``w`` the most any row keeps, at least 1)
    in ascending order, and which are real; a row's padding repeats its first kept id (a
    row keeps at least one token)."""
    n = keep.shape[0]
    count = keep.sum(dim=-1)
    width = max(1, int(count.max()))
    rows, cols = keep.nonzero(as_tuple=True)
    slot = torch.arange(rows.numel()) - (torch.cumsum(count, 0) - count)[rows]
    ids = torch.zeros(n, width, dtype=torch.int64)
    ids[rows, slot] = cols
    real = torch.arange(width) < count[:, None]
    ids = torch.where(real, ids, ids[:, :1])
    return ids, real


def _choose_kept(logits: torch.Tensor, kept: tuple[torch.Tensor, torch.Tensor],
                 temperature: float, noise: torch.Tensor) -> torch.Tensor:
    """What :func:`~prover.llm.sampler.choose_tokens` picks among the kept tokens (of
    :func:`_kept_ids`), given their noise ``[n, w]``: the largest score, the lowest token id
    among equal ones (as ``argmax`` over the whole row picks)."""
    ids, real = kept
    scores = (logits.gather(-1, ids) + temperature * noise).masked_fill(~real, float("-inf"))
    best = scores.max(dim=-1, keepdim=True).values
    vocab = logits.shape[-1]
    return torch.where(scores == best, ids, torch.full_like(ids, vocab)).min(dim=-1).values


@dataclass(frozen=True)
class Deviation:
    """One honest job's largest deviations, and what its gaps are recomputed from."""

    logit_dev: float
    gap: float
    block_dev: float
    block_rms: float
    tokens: int
    block_norm: float = 0.0
    block_energy: float = 0.0
    spread: float = 0.0
    concentration: float = 0.0
    states: JobStates | None = field(default=None, repr=False, compare=False)
    committed: torch.Tensor | None = field(default=None, repr=False, compare=False)
    sampling: SamplingParams | None = field(default=None, repr=False, compare=False)

    def logits(self) -> Logits | None:
        return None if self.states is None else self.states.logits()

    def sums(self, tolerances: Tolerances, logits: Logits | None = None
             ) -> tuple[tuple[float, float], tuple[float, float]]:
        """The largest gap sum and top-p sum under ``tolerances``, each per ``GAP_SUM_TOKENS``
        tokens, over the committed tokens and the node choosing again on its own logits:
        ``REDRAWS`` redraws of the sampler's noise for the gap sum; for the top-p sum,
        ``MASS_DRAWS`` draws of a whole job's tokens from the node's kept distribution at
        the job's temperature and top-p (0.9 for a job without top-p; none when greedy).
        Then the job's own sums, as :meth:`committed_sums` computes them.

        Works a few positions at a time (:data:`STATISTICS_VALUES`), each judged as in the
        whole job."""
        logits = logits or self.logits()
        if logits is None or self.committed is None or self.sampling is None:
            return (0.0, 0.0), (0.0, 0.0)
        node_logits, mine = logits
        n, vocab = mine.shape
        sampling = self.sampling
        draws = 1 + (0 if sampling.greedy else REDRAWS)
        truncated = sampling.top_k > 0 or sampling.top_p_ppm < 1_000_000
        drawn_rule = sampling if sampling.top_p_ppm < 1_000_000 else \
            replace(sampling, top_p_ppm=DRAW_TOP_P_PPM)
        mass_tol = tolerances.mass_levels(sampling.temperature)
        tau = EXCESS_TOL * tolerances.token_tau
        gaps = torch.empty(draws, n, dtype=torch.float64)
        own_excess = torch.zeros(n, dtype=torch.float64)
        drawn_excess = torch.zeros(n, MASS_DRAWS, dtype=torch.float64)
        g = torch.Generator().manual_seed(sampling.seed % 2**63)  # rows drawn in order
        step = _rows_at_a_time(vocab)
        for a in range(0, n, step):
            rows = slice(a, min(n, a + step))
            node_c, mine_c, committed = node_logits[rows], mine[rows], self.committed[rows]
            m = committed.numel()
            t = torch.full((m,), sampling.temperature, dtype=torch.float64)
            keep: torch.Tensor | None = None
            if truncated:
                keep = kept_mask(node_c, t, torch.full((m,), sampling.top_k),
                                 torch.full((m,), sampling.top_p, dtype=torch.float64))
            kept = _kept_ids(keep) if keep is not None else None
            positions = torch.arange(a, a + m)
            heads: HeadCache = {}  # the verifier's head selections: the same at every redraw
            for r in range(draws):
                drawn = replace(sampling, seed=(sampling.seed + r * _GOLDEN) % 2**64)
                noise: Noise
                if sampling.greedy or kept is not None:  # noise only where it is looked at
                    noise = SeededNoise(drawn.seed, vocab, positions)
                else:
                    noise = gumbel_noise(drawn.seed, m, vocab, start=a)
                if r == 0:
                    tokens = committed
                elif kept is not None:
                    tokens = _choose_kept(node_c, kept, sampling.temperature,
                                          gumbel_at(drawn.seed, positions, kept[0]))
                else:  # what choose_tokens picks
                    assert isinstance(noise, torch.Tensor)
                    scores = node_c + sampling.temperature * noise
                    tokens = torch.argmax(scores if keep is None else
                                          scores.masked_fill(~keep, float("-inf")), dim=-1)
                gaps[r, rows] = sampling_gaps(mine_c, noise, tokens, drawn,
                                              tolerances.token_tau, mass_tol, heads)
            if not sampling.greedy:
                own_excess[rows] = top_p_excess(mine_c, committed, sampling, tau)
                if keep is None or drawn_rule is not sampling:
                    keep = kept_mask(node_c, t, torch.full((m,), drawn_rule.top_k),
                                     torch.full((m,), drawn_rule.top_p, dtype=torch.float64))
                    kept = _kept_ids(keep)
                assert kept is not None
                q = torch.softmax(node_c / drawn_rule.temperature, dim=-1).masked_fill_(~keep, 0.0)
                picks = torch.multinomial(q, MASS_DRAWS, replacement=True, generator=g)
                # a draw is always a kept token: the excess of those, in place in the row
                excess = torch.zeros(m, vocab, dtype=torch.float64).scatter_(
                    -1, kept[0], top_p_excess(mine_c, kept[0], drawn_rule, tau))
                drawn_excess[rows] = excess.gather(-1, picks)
        own_gap = float(gaps[0].sum())
        worst_gap = max(float(gaps[r].sum()) for r in range(draws))
        own_mass = float(own_excess.sum())
        worst_mass = 0.0 if sampling.greedy else \
            max(own_mass, float(drawn_excess.sum(dim=0).max()))
        per = GAP_SUM_TOKENS / max(self.tokens, GAP_SUM_TOKENS)
        return (worst_gap * per, worst_mass * per), (own_gap, own_mass)

    def committed_sums(self, tolerances: Tolerances, logits: Logits | None = None
                       ) -> tuple[float, float]:
        """The job's own gap sum and top-p sum (committed tokens, no redraws), as the
        validator computes them."""
        logits = logits or self.logits()
        if logits is None or self.committed is None or self.sampling is None:
            return 0.0, 0.0
        mine = logits[1]
        noise = gumbel_noise(self.sampling.seed, self.tokens, mine.shape[-1])
        gap_sum = float(sampling_gaps(
            mine, noise, self.committed, self.sampling, tolerances.token_tau,
            tolerances.mass_levels(self.sampling.temperature)).sum())
        mass_sum = float(top_p_excess(mine, self.committed, self.sampling,
                                      EXCESS_TOL * tolerances.token_tau).sum())
        return gap_sum, mass_sum

    def score(self, tolerances: Tolerances, sums: tuple[float, float] | None = None) -> float:
        """This job's score as the validator computes it, capped at 1: the largest of its
        deviations over their tolerances, on its committed tokens (no redraws; ``sums``:
        :meth:`committed_sums` under the same token and mass tolerances, when already
        computed), the committed sketch's rounding included (at its worst for the largest
        value, its mean for the root-mean-square)."""
        step = 2.0**tolerances.sketch_exp
        gap_sum, mass_sum = sums if sums is not None else self.committed_sums(tolerances)
        ratios = (
            self.gap / tolerances.token_tau,
            gap_sum / tolerances.gap_sum_limit(self.tokens),
            mass_sum / tolerances.mass_sum_limit(self.tokens),
            (self.block_dev / step + 0.5) / tolerances.sketch_value_limit(self.tokens),
            (self.block_rms / step + 0.5) / tolerances.sketch_rms_limit(self.tokens),
        )
        return min(1.0, max(ratios))

    def mass_dev(self, tol: float, logits: Logits | None = None) -> list[list[float]]:
        """Per ``MASS_TEMPERATURES`` × ``MASS_LEVELS`` bin, ``T`` × the largest |node − verifier|
        mass of the sets the top-p check uses with logit slack ``tol`` (-1: no set)."""
        logits = logits or self.logits()
        if logits is None:
            return [[-1.0] * len(MASS_LEVELS) for _ in MASS_TEMPERATURES]
        return mass_deviation(*logits, tol)


def mass_deviation(node_logits: torch.Tensor, verifier_logits: torch.Tensor, tol: float
                   ) -> list[list[float]]:
    """See :meth:`Deviation.mass_dev`; logits ``[n, V]``, a few rows at a time
    (:data:`STATISTICS_VALUES`)."""
    n, vocab = verifier_logits.shape
    step = _rows_at_a_time(vocab)
    if n <= step:
        return _mass_deviation(node_logits, verifier_logits, tol)
    return _table_max([_mass_deviation(node_logits[a:a + step], verifier_logits[a:a + step],
                                       tol) for a in range(0, n, step)])


def _mass_deviation(node_logits: torch.Tensor, verifier_logits: torch.Tensor, tol: float
                    ) -> list[list[float]]:
    """:func:`mass_deviation` of all the rows at once.

    Every token's sets are looked at, so the order the tokens are visited in does not
    matter: the work is done in the verifier's ascending order of logits, sorted once, with
    the node's logits and both distributions carried into that order.
    """
    order = torch.sort(verifier_logits, dim=-1, descending=False, stable=True)
    ascending = order.values
    node_sorted = node_logits.gather(-1, order.indices)
    vocab = ascending.shape[-1]
    # sets {u : l_u ≥ x} are the last `count` tokens of the ascending order
    count_above = vocab - torch.searchsorted(ascending, ascending + tol, right=False)
    count_band = vocab - torch.searchsorted(ascending, ascending - tol, right=False)
    index_above = (count_above - 1).clamp_min(0)
    index_band = (count_band - 1).clamp_min(0)
    none_above, none_band = count_above == 0, count_band == 0
    levels = torch.tensor(MASS_LEVELS[:-1], dtype=torch.float64)
    table = []
    for t in MASS_TEMPERATURES:
        worst = torch.full((len(MASS_LEVELS),), -1.0, dtype=torch.float64)
        mine_p = torch.softmax(ascending / t, dim=-1)
        node_p = torch.softmax(node_sorted / t, dim=-1)
        mine_top = torch.cumsum(mine_p.flip(-1), dim=-1)  # mass of the top k tokens
        node_top = torch.cumsum(node_p.flip(-1), dim=-1)
        for index, empty, minus_own in ((index_above, none_above, False),
                                        (index_band, none_band, True)):
            mine = mine_top.gather(-1, index).masked_fill_(empty, 0.0)
            node = node_top.gather(-1, index).masked_fill_(empty, 0.0)
            if minus_own:
                mine -= mine_p
                node -= node_p
            diff = node.sub_(mine).abs_().mul_(t)
            bins = torch.bucketize(mine, levels, right=False)
            worst = worst.scatter_reduce(0, bins.flatten(), diff.flatten(), reduce="amax")
        table.append([float(w) for w in worst])
    return table


CALIBRATION_PROMPTS = (
    "What is the capital of Australia, and why is it not Sydney?",
    "Write a haiku about autumn rain.",
    "Explain recursion to a ten-year-old.",
    "Translate 'Where is the train station?' into French and German.",
    "List five vegetables that grow well in cold climates.",
    "Write a Python function that reverses a linked list.",
    "What causes the seasons on Earth?",
    "Give me a recipe for a simple tomato soup.",
    "Compose a limerick about a forgetful wizard.",
    "How does compound interest work? Show a small example.",
    "Summarise the causes of the First World War in three bullet points.",
    "What is 17 multiplied by 23? Explain the steps.",
    "Draft a short thank-you note to a colleague who helped me move.",
    "Describe the smell of the sea to someone who has never been there.",
    "Which planets in the solar system have rings?",
    "Explain the difference between a virus and a bacterium.",
)
"""English requests for calibration's chat-template prompts. ``bench/llm_verify.py`` judges
with other requests, so no judged honest job was seen by the calibration that judges it."""


def honest_jobs(
    llm: LLM, n: int, dtype: str, seed: int, max_new_tokens: int = 64
) -> list[tuple[torch.Tensor, LLMJob]]:
    """``n`` seeded jobs cycling through ``SAMPLING_MIX``. With the model's tokenizer, half the
    prompts (each sampling kind alike) are ``CALIBRATION_PROMPTS`` requests through its chat
    template (real text moves the hidden states further than random ids do); the rest are
    4 to 64 random token ids. Jobs run to ``max_new_tokens`` whatever they emit."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = int(torch.randint(4, 65, (1,), generator=g))
        prompt = torch.randint(0, llm.vocab_size, (length,), generator=g)
        if llm.tokenizer is not None and (i + i // len(SAMPLING_MIX)) % 2 == 1:
            question = CALIBRATION_PROMPTS[int(torch.randint(0, len(CALIBRATION_PROMPTS), (1,),
                                                             generator=g))]
            prompt = torch.tensor(chat_prompt([{"role": "user", "content": question}],
                                              llm.tokenizer, llm.chat_template))
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


def _take(cores: Cores | None, n: int, priority: int = 0
          ) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext() if cores is None else cores.take(n, priority)


def measure(
    llm: LLM, jobs: Sequence[tuple[torch.Tensor, LLMJob]], setting: HonestSetting,
    cores: Cores | None = None, priority: int = 0,
) -> list[Deviation]:
    """Each job's honest deviations between node-side generation and the verifier's prefill;
    with ``cores``, each part holds as many cores as it runs threads, at ``priority``."""
    with _take(cores, setting.threads, priority):
        generated = generate_honestly(llm, jobs, setting)
    out = []
    for (prompt, job), made in zip(jobs, generated, strict=True):
        # the prefill, then each side's logits at its own thread count
        with _take(cores, max(setting.threads, setting.verifier_threads), priority):
            view = prefill(llm, prompt, made.tokens, job.dtype,
                           attention=setting.verifier_attention,
                           threads=setting.verifier_threads)
            states = JobStates(llm, job.dtype, made.hidden, view.hidden, setting)
            node_logits, mine = states.logits()
        with _take(cores, 1, priority):
            noise = gumbel_noise(job.sampling.seed, made.tokens.numel(), llm.vocab_size)
            provisional = PROVISIONAL_TOL[job.dtype]
            gaps = sampling_gaps(mine, noise, made.tokens, job.sampling, provisional,
                                 provisional)
            seed = job.sampling.seed
            blocks = block_values(made.hidden, seed) - block_values(view.hidden, seed)
            shape = deviation_shape(made.hidden, view.hidden)
        out.append(Deviation(
            logit_dev=float((node_logits - mine).abs().max()),
            gap=float(gaps.max()),
            block_dev=float(blocks.abs().max()),
            block_rms=float(blocks.pow(2).mean().sqrt()),
            tokens=made.tokens.numel(),
            states=states,
            committed=made.tokens,
            sampling=job.sampling,
            **shape,
        ))
    return out


def deviation_shape(node_hidden: torch.Tensor, verifier_hidden: torch.Tensor
                    ) -> dict[str, float]:
    """What bounds every sketch a job could have committed, whatever its projections: the
    largest block deviation norm ``‖Δ_b‖`` (``Δ_b`` the block's summed node − verifier
    hidden states), the energy ``√(mean_b ‖Δ_b‖²)``, and the shape of ``A = Σ_b Δ_b Δ_bᵀ``
    (:func:`prover.llm.job.sketch_rms_factor`) stated at ``SKETCH_REFERENCE_BLOCKS`` blocks:
    a job of ``m`` fewer blocks counts as its spread × √(m/ref) and concentration × m/ref,
    the rule :meth:`prover.llm.job.Tolerances.sketch_rms_limit` applies to short jobs."""
    blocks = block_sums(node_hidden.to(torch.float64) - verifier_hidden.to(torch.float64))
    m = blocks.shape[0]
    gram = blocks @ blocks.T  # A's nonzero eigenvalues are the Gram matrix's
    eigen = torch.linalg.eigvalsh(gram).clamp(min=0.0)
    total = float(eigen.sum())
    if total == 0.0:
        return {"block_norm": 0.0, "block_energy": 0.0, "spread": 0.0, "concentration": 0.0}
    short = min(1.0, m / SKETCH_REFERENCE_BLOCKS)
    return {"block_norm": float(blocks.norm(dim=1).max()),
            "block_energy": math.sqrt(total / m),
            "spread": float(eigen.norm()) / total * math.sqrt(short),
            "concentration": float(eigen.max()) / total * short}


def tolerances_from(
    deviations: Sequence[Deviation], dtype: str, workers: int = 1, cores: Cores | None = None,
    priority: int = 0,
) -> tuple[Tolerances, dict[str, object]]:
    """Thresholds that put the largest honest deviation at ``MARGIN`` of each tolerance, and
    the largest deviations measured (what the registry records next to them).

    Two passes over the jobs' logits, each recomputed from the kept hidden states: the mass
    deviations need the final ``token_tau``, and the sums need the mass tolerances. Each
    pass runs ``workers`` jobs at a time, each holding its cores of ``cores`` at ``priority``.
    """
    worst_token = max(max(d.gap, 2 * d.logit_dev) for d in deviations)
    worst_block = max(d.block_dev for d in deviations)
    worst_rms = max(d.block_rms for d in deviations)
    worst_norm = max(d.block_norm for d in deviations)
    worst_energy = max(d.block_energy for d in deviations)
    if not all(math.isfinite(v) for v in (worst_token, worst_block, worst_norm, worst_energy)):
        raise ValueError(f"honest {dtype} runs disagree beyond any tolerance; is the model sane?")
    token_tau = max(worst_token / MARGIN, TOKEN_TAU_FLOOR[dtype])
    # the step: about the honest energy, but coarse enough that no honest value of the
    # longest job wraps the 256-residue (its limit stays under WRAP_QUANTA)
    widest = sketch_tail_z(n_blocks(MAX_NEW_TOKENS) * PROJECTIONS)
    if worst_energy > 0:
        exp = max(math.floor(math.log2(worst_energy)),
                  math.ceil(math.log2(widest * worst_norm / MARGIN / WRAP_QUANTA)))
    else:
        exp = MIN_EXP
    exp = min(max(exp, MIN_EXP), MAX_EXP)
    step = 2.0**exp
    worst_mass = _table_max(_each(deviations, lambda d, lg: d.mass_dev(token_tau, lg), workers,
                                  cores, priority))
    mass_tau = tuple(
        tuple(max((m if m >= 0 else max(row)) / MARGIN, MASS_TAU_FLOOR[dtype]) for m in row)
        for row in worst_mass
    )
    partial = Tolerances(
        token_tau=token_tau,
        sketch_exp=exp,
        sketch_norm_tau=worst_norm / step / MARGIN,
        sketch_energy_tau=worst_energy / step / MARGIN,
        # each job's shape weighted by its share of the largest energy, squared: the bound
        # 1 + a·spread + b·concentration then covers every job's own at its own energy
        sketch_spread=max(d.spread * _share(d, worst_energy) for d in deviations),
        sketch_concentration=max(d.concentration * _share(d, worst_energy) for d in deviations),
        mass_tau=mass_tau,
        gap_sum_tau=math.inf,
        mass_sum_tau=math.inf,
    )

    sums, own = zip(*_each(deviations, lambda d, lg: d.sums(partial, lg), workers, cores,
                           priority), strict=True)
    worst_sum = max(g for g, _ in sums)
    worst_mass_sum = max(m for _, m in sums)
    if not math.isfinite(worst_sum):
        raise ValueError(f"an honest {dtype} token is outside the calibrated top-k/top-p slack")
    tolerances = replace(partial, gap_sum_tau=max(worst_sum / MARGIN, TOKEN_TAU_FLOOR[dtype]),
                         mass_sum_tau=max(worst_mass_sum / MARGIN, MASS_TAU_FLOOR[dtype]))
    scores = [d.score(tolerances, o) for d, o in zip(deviations, own, strict=True)]
    tolerances = replace(tolerances, honest_mean_score=sum(scores) / len(scores))
    measured: dict[str, object] = {
        "jobs": len(deviations),
        "positions": sum(d.tokens for d in deviations),
        "max_logit_dev": max(d.logit_dev for d in deviations),
        "max_gap": max(d.gap for d in deviations),
        "max_block_dev": worst_block,
        "max_block_rms": worst_rms,
        "max_block_norm": worst_norm,
        "max_block_energy": worst_energy,
        "max_mass_dev": worst_mass,
        "max_gap_sum": worst_sum,
        "max_mass_sum": worst_mass_sum,
        "mean_score": tolerances.honest_mean_score,
        "max_score": max(scores),
    }
    return tolerances, measured


def _share(d: Deviation, worst_energy: float) -> float:
    return (d.block_energy / worst_energy) ** 2 if worst_energy > 0 else 0.0


STATISTICS_WORKERS = max(1, min(4, os.cpu_count() or 1))
"""Jobs of one dtype whose statistics are computed at once, one torch thread each: every
core can work on its own job's logits (a job's passes are sorts, softmaxes and hashes of
``[n, V]`` float64, which one thread runs without waiting on the others), and the memory
held is that many jobs' logits per dtype. Each holds a core of :class:`Cores` while it
works, so they share the machine with the generation still going on."""

_T = TypeVar("_T")


def _each(deviations: Sequence[Deviation], fn: Callable[[Deviation, Logits | None], _T],
          workers: int, cores: Cores | None = None, priority: int = 0) -> list[_T]:
    """``fn`` of every job and its logits, in order, on ``workers`` threads of one torch
    thread each, each holding one of ``cores``. The logits are made at each side's thread
    count all the same: one product with the output head (a single parallel region, which
    loses little beside another task), where making a 2-thread job wait for every core to
    be free would leave them idle in turn."""

    def one(d: Deviation) -> _T:
        with _take(cores, 1, priority):
            return fn(d, d.logits())

    with ThreadPoolExecutor(workers, initializer=torch.set_num_threads,
                            initargs=(1,)) as pool:
        return list(pool.map(one, deviations))


def _table_max(tables: Sequence[list[list[float]]]) -> list[list[float]]:
    """Elementwise maximum of equally shaped tables."""
    return [[max(t[i][j] for t in tables) for j in range(len(tables[0][i]))]
            for i in range(len(tables[0]))]


def calibrate(
    llm: LLM,
    jobs_per_setting: int = 12,
    seed: int = 1,
    settings: Sequence[HonestSetting] = HONEST_SETTINGS,
    cores: Cores | None = None,
) -> Calibration:
    """Run the honest-variation matrix for every dtype and derive tolerances from it.

    The dtypes' matrices (different copies of the model, which can run at once) go on side
    by side, each setting after the other, and each dtype's statistics as soon as its
    matrix is done. Every part holds as many of the machine's ``cores`` as it runs threads
    (:class:`Cores`), so no core is shared. The results do not depend on the order the
    parts run in.
    """
    cores = cores or Cores()
    # runs of many threads first, while both copies wait their turn for every core; then
    # the one-thread runs of the two copies side by side
    ordered = sorted(settings, key=lambda s: -min(s.threads, cores.total))

    def matrix(dtype: str) -> list[Deviation]:
        jobs = honest_jobs(llm, jobs_per_setting, dtype, seed)
        by_setting = {id(s): measure(llm, jobs, s, cores, rank)
                      for rank, s in enumerate(ordered)}
        return [d for s in settings for d in by_setting[id(s)]]

    tolerances, measured = {}, {}
    with ThreadPoolExecutor(len(DTYPES), initializer=torch.set_num_threads,
                            initargs=(1,)) as runs, \
            ThreadPoolExecutor(len(DTYPES)) as statistics:
        matrices = {dtype: runs.submit(matrix, dtype) for dtype in DTYPES}
        derived = {dtype: statistics.submit(lambda d: tolerances_from(
            matrices[d].result(), d, STATISTICS_WORKERS, cores, len(ordered)), dtype)
            for dtype in DTYPES}
        for dtype, result in derived.items():
            tolerances[dtype], measured[dtype] = result.result()
    record = {
        "source": "assay calibrate",
        "margin": MARGIN,
        "seed": seed,
        "settings": [s.name for s in settings],
        "machine": f"{platform.machine()} {platform.system()}, torch {torch.__version__}, cpu",
        "measured": measured,
    }
    return Calibration(tolerances=tolerances, record=record)
