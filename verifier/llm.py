"""Verification of ``llm`` jobs: one teacher-forced prefill, a sampling check, a sketch check.

The validator runs the pinned model at the pinned dtype once over prompt +
output and gets, for every generated position, the logits and the final
hidden state that should have produced the committed token. The checks:

- **Sampling.** It regenerates the sampler's noise from the job seed
  (:mod:`prover.llm.sampler`) and measures, for each committed token ``t``,
  the *gap* ``max_v (l_v + T·g_v) − (l_t + T·g_t)`` over the tokens that any
  honest node must have kept under top-k/top-p. An honest node chose ``t`` as
  the argmax of the same expression on logits that differ from the
  verifier's by float noise ``δ``, so its gap is at most ``2δ``; a token kept
  by no honest node (outside top-k/top-p, with the same tolerance) has gap
  ∞. This is what catches a generation that is not the pinned model's:
  another model, the wrong temperature or seed, fabricated tokens, and the
  prefill attack (cheap tokens, honest sketch), which sketches alone miss.
  Top-p membership allows for the honest difference in probability mass,
  calibrated (as ``T`` × the difference) per level of cumulative probability.
- **Gap sum.** An honest token's gap is non-zero only at a near-tie of the
  top two scores, so over a job honest gaps are rare and small, while a
  sampler that is slightly off (a wrong temperature, greedy decoding in
  bfloat16, where ``δ`` is large) leaves a small gap at a large share of
  positions. The sum of the gaps over the job, against a calibrated limit
  per 64 tokens (scaled up for longer jobs), catches such shifts that no
  single token shows.
- **Top-p excess sum.** Each committed token passes top-p if some honest node
  could have kept it, within the honest mass slack. A node that ignores
  top-p commits a token just outside the nucleus at one position in ten or
  so; one such token fits the slack, but honest tokens exceed ``p`` at all
  only at the boundary, rarely and by little. The job's sum of ``T`` × how
  far the mass of the tokens every honest node ranks above ``t`` exceeds
  ``p``, against a calibrated limit per 64 tokens, catches that.
- **Sketch.** It recomputes the block values of :mod:`prover.llm.sketch` from
  its own hidden states and measures each committed residue's distance in
  quanta: the largest one, and the root-mean-square over the job. This
  catches changes that keep most tokens plausible: quantised weights, a
  wrong dtype, a skipped layer, a changed prompt. Its limits depend on the
  job's length (:meth:`prover.llm.job.Tolerances.sketch_value_limit`,
  :meth:`~prover.llm.job.Tolerances.sketch_rms_limit`): bounds on what any
  projection of the honest hidden-state deviations can show, so an honest
  job fails them with probability at most 10⁻¹⁰ whatever its seed draws.

Each check's score is its deviation divided by the calibrated tolerance
(:class:`prover.llm.job.Tolerances`); the sketch score is the larger of the
two sketch ratios. A score above 1 is FRAUD;
from ``SUSPICIOUS`` to 1 the validator neither accuses nor vouches
(INCONCLUSIVE); below, VALID. Problems that are not the node's provable
fault (no model here, a run that failed, output that does not match the
commitment's hash as fetched) are INCONCLUSIVE, never FRAUD.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from protocol.codec import Tensor, encode
from protocol.hashing import sha256
from protocol.messages import Commitment, JobRequest, Verdict
from prover.llm.generate import prefill
from prover.llm.job import (
    MASS_LEVELS,
    Calibration,
    LLMJob,
    LLMJobError,
    Tolerances,
    parse_job,
)
from prover.llm.model import LLM, GenerationError
from prover.llm.sampler import SamplingParams, SeededNoise
from prover.llm.sketch import BLOCK, SketchError, decode_sketch, deviations
from prover.llm.text import stop_index
from prover.llm.tokenizer import Tokenizer

LLM_MODE = "llm"
SUSPICIOUS = 0.8
"""Scores in (SUSPICIOUS, 1] are INCONCLUSIVE: too close to the line to vouch for."""
EXCESS_TOL = 0.5
"""The top-p sum counts the mass of tokens of logit ≥ ``l_t + EXCESS_TOL · token_tau``: ranked
above ``t`` by every node whose logits are within the worst honest deviation calibrated
(``token_tau`` is that deviation's gap, 2δ, over the 0.5 margin)."""


@dataclass(frozen=True)
class LLMCheck:
    """A verdict with its evidence: scores are largest deviation ÷ tolerance."""

    verdict: Verdict
    reason: str
    token_score: float = 0.0
    sketch_score: float = 0.0
    tokens_to_fraud: int | None = None  # generated tokens needed to reach FRAUD, when FRAUD
    seconds: float = 0.0
    gap_sum_score: float = 0.0
    mass_sum_score: float = 0.0
    judged: bool = False
    """The validator ran its prefill and scored the job: the scores are evidence about the
    node (:mod:`verifier.llm_evidence`), unlike those of a job it could not judge."""

    @property
    def score(self) -> float:
        return max(self.token_score, self.sketch_score, self.gap_sum_score, self.mass_sum_score)


def _tensor_hash(t: Tensor) -> bytes:
    return sha256(encode(t))


def _count_at_least(sorted_asc: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """Per row, how many values are ≥ each threshold: ``[n, m]`` sorted, ``[n, j]`` → ``[n, j]``."""
    return sorted_asc.shape[-1] - torch.searchsorted(sorted_asc.contiguous(),
                                                     thresholds.contiguous(), right=False)


HEAD_START = 64
"""Tokens of the first partial selection. Rows it does not settle (a flat distribution at a
high temperature, whose nucleus is long) are selected again, on their own, with a head twice
as long, until every row holds every token that the top-k/top-p rules can count as kept by
every honest node: one flat row never widens every row's head."""

Noise = torch.Tensor | SeededNoise
HeadCache = dict[tuple[int, bytes],
                  tuple[torch.Tensor, torch.Tensor, int, torch.Tensor, torch.Tensor]]
"""Partial selections of one job's logits and which of their tokens every honest node keeps,
by head size and rows (see :func:`sampling_gaps`)."""
"""A job's sampler noise: the whole ``[n, V]`` matrix, or its seed (entries made as needed)."""


def _noise_at(noise: Noise, ids: torch.Tensor) -> torch.Tensor:
    return noise.gather(-1, ids) if isinstance(noise, torch.Tensor) else noise.at(ids)


def _noise_rows(noise: Noise, positions: torch.Tensor) -> torch.Tensor:
    return noise[positions] if isinstance(noise, torch.Tensor) else noise.rows(positions)


def _noise_of(noise: Noise, rows: torch.Tensor) -> Noise:
    return noise[rows] if isinstance(noise, torch.Tensor) else noise.select(rows)


def _head(logits: torch.Tensor, log_norm: torch.Tensor | None, temperature: float, k: int,
          p: float, tol: float, size: int
          ) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]:
    """The ``K2 = 2K`` largest logits per row (descending, with their ids) for ``K = size``
    (at most the vocabulary), ``K``, and which rows they settle: for a settled row a token
    outside the top ``K`` is never certainly kept, and the top ``K2`` hold every token of
    logit ≥ the ``K``-th largest − ``tol``.

    Outside the top ``K``, a token ``v`` has at least ``K`` tokens of logit ≥ ``l_v − tol``
    other than itself: more than ``k`` when ``K ≥ k``, and at least the top ``K``'s mass,
    ``≥ p``, above it. So top-k and top-p need a partial selection of the head only, not a
    sort of the whole vocabulary at every position (what made a 49k-token model's top-p
    check cost as much as generating). ``log_norm`` is ``logsumexp(logits / T)`` per row
    (top-p jobs), from which the head's probabilities follow without a full softmax.
    """
    vocab = logits.shape[-1]
    size = vocab if 4 * size >= vocab else size  # so long a head costs more than a sort
    wide = min(2 * size, vocab)
    if size == vocab:
        values, ids = torch.sort(logits, dim=-1, descending=True)
        return values, ids, size, torch.ones(logits.shape[0], dtype=torch.bool)
    values, ids = torch.topk(logits, wide, dim=-1, sorted=True)
    enough = torch.full((logits.shape[0],), 0 < k <= size)
    if log_norm is not None:
        mass = torch.exp(values[:, :size] / temperature - log_norm[:, None]).sum(-1)
        enough |= mass >= p
    settled = enough & (values[:, -1] < values[:, size - 1] - tol)
    return values, ids, size, settled


def _at_least(logits: torch.Tensor, log_norm: torch.Tensor | None, temperature: float,
              thresholds: torch.Tensor, values: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, how many tokens have logit ≥ its threshold, and their probability mass at
    ``temperature`` (zero without ``log_norm``).

    ``values`` is a descending head of each row (``topk``); a row whose threshold lies above
    its head's last value is counted from the head, the rest from the whole row: a masked
    sum, never a sort.
    """
    if values is None:
        values = torch.topk(logits, min(4 * HEAD_START, logits.shape[-1]), dim=-1).values
    above = values >= thresholds[:, None]
    count = above.sum(-1)
    mass = torch.zeros(logits.shape[0], dtype=torch.float64)
    if log_norm is not None:
        mass = (torch.exp(values / temperature - log_norm[:, None]) * above).sum(-1)
    outside = (values[:, -1] >= thresholds).nonzero()[:, 0]
    if outside.numel():
        whole = logits[outside]
        above_whole = whole >= thresholds[outside, None]
        count[outside] = above_whole.sum(-1)
        if log_norm is not None:
            probs = torch.exp(whole / temperature - log_norm[outside, None])
            mass[outside] = (probs * above_whole).sum(-1)
    return count, mass


def sampling_gaps(
    logits: torch.Tensor, noise: Noise, tokens: torch.Tensor, params: SamplingParams,
    tol: float, mass_tol: float | Sequence[float], heads: HeadCache | None = None,
) -> torch.Tensor:
    """Each committed token's gap ``[n]`` (logit units; ∞ when no honest node could keep it).

    ``tol`` bounds how far an honest node's logit comparisons can differ from
    the verifier's, and ``mass_tol`` how far its probability mass of the
    token sets below can differ at this temperature, ``T`` × the difference,
    per ``MASS_LEVELS`` bin of the verifier's mass (one number: every bin;
    the slack is ``mass_tol / T``). Top-k/top-p membership is decided with
    these slacks both ways: a token counts against ``t`` only if every honest
    node kept it, and ``t`` is allowed if some honest node could have kept it.
    Both filters keep a prefix of the tokens ranked by logit, so a node that
    kept ``t`` kept every token clearly above it (logit ≥ ``l_t + tol``)
    whatever the probability slack: those always count against ``t``.

    With top-k or top-p only the head of each row is selected and only its
    noise is needed (``noise`` may be a :class:`~prover.llm.sampler.SeededNoise`);
    a row whose committed token lies below its head is judged on the whole row. The heads
    depend on the logits, ``params`` (but its seed), ``tol`` and ``mass_tol`` only: a caller
    judging the same logits under many noise draws passes one ``heads`` dict to every call
    and each head is selected once.
    """
    n = logits.shape[0]
    rows = torch.arange(n)
    chosen = logits[rows, tokens]  # [n]
    if params.greedy:
        return (logits.max(dim=-1).values - chosen).clamp_min(0.0)
    temperature = params.temperature
    chosen_score = chosen + temperature * _noise_at(noise, tokens[:, None])[:, 0]
    top_p = params.top_p_ppm < 1_000_000
    if params.top_k == 0 and not top_p:
        full = logits + temperature * _noise_rows(noise, rows)
        return (full.max(dim=-1).values - chosen_score).clamp_min(0.0)
    log_norm = torch.logsumexp(logits / temperature, dim=-1) if top_p else None
    return _truncated_gaps(logits, log_norm, noise, chosen, chosen_score, params, tol, mass_tol,
                           HEAD_START, rows, heads)


def _truncated_gaps(
    logits: torch.Tensor, log_norm: torch.Tensor | None, noise: Noise, chosen: torch.Tensor,
    chosen_score: torch.Tensor, params: SamplingParams, tol: float,
    mass_tol: float | Sequence[float], size: int, rows: torch.Tensor,
    heads: HeadCache | None,
) -> torch.Tensor:
    """:func:`sampling_gaps` under top-k/top-p with a head of ``size`` tokens; the rows it
    does not settle are judged again, on their own, with a head twice as long."""
    vocab = logits.shape[-1]
    temperature = params.temperature
    k = params.top_k if 0 < params.top_k < vocab else vocab
    p = params.top_p
    per_level = torch.as_tensor(mass_tol, dtype=torch.float64).expand(len(MASS_LEVELS))
    levels = torch.tensor(MASS_LEVELS[:-1], dtype=torch.float64)

    def slack(mass: torch.Tensor) -> torch.Tensor:  # additive, on probability mass
        bound = per_level[torch.bucketize(mass, levels, right=False)] / temperature
        return bound.clamp(max=1.0)

    key = (size, rows.numpy().tobytes())
    cached = heads.get(key) if heads is not None else None
    if cached is None:
        values, ids, size, settled = _head(logits, log_norm, temperature,
                                           k if params.top_k else 0, p, tol, size)
        certain_head = torch.zeros((0, 0), dtype=torch.bool)  # unused when no row settles
        if settled.any() or not rows.numel():
            head = values[:, :size]  # [n, K]
            # v certain if, even with every near-tie ranked above it, it stays within k
            count = _count_at_least(values.flip(-1), head - tol)
            certain_head = count <= k
            if log_norm is not None:
                # a node ranks above v only tokens of logit ≥ l_v − tol other than v, and its
                # mass of them is within the slack of ours (calibrated on exactly these sets)
                head_probs = torch.exp(values / temperature - log_norm[:, None])
                cumulative = torch.cumsum(head_probs, dim=-1)  # mass of the i+1 likeliest
                above_v = cumulative.gather(-1, (count - 1).clamp_min(0)) - head_probs[:, :size]
                certain_head &= above_v + slack(above_v) < p
        cached = (values, ids, size, settled, certain_head)
        if heads is not None:
            heads[key] = cached
    values, ids, size, settled, certain_head = cached
    if rows.numel() and not settled.any():
        # no row settles at this size (in bfloat16, a 49k-token row can hold thousands of
        # tokens within tol of its head): every row is judged with a longer head, and
        # judging them here first would be thrown away
        return _truncated_gaps(logits, log_norm, noise, chosen, chosen_score, params, tol,
                               mass_tol, 2 * size, rows, heads)
    threshold_t = chosen + tol  # tokens of logit ≥ this are ranked above t by every node
    # top-k: t possible if fewer than k tokens lie clearly above it
    count_t, above_t = _at_least(logits, log_norm, temperature, threshold_t, values)
    t_possible = count_t < k
    if log_norm is not None:
        # a node that kept t ranks every token of logit ≥ l_t + tol above it
        t_possible &= above_t - slack(above_t) < p
    # kept by every honest node: certain in the head, or ranked clearly above t
    certain = torch.zeros_like(values, dtype=torch.bool)
    certain[:, :size] = certain_head
    certain |= values >= threshold_t[:, None]
    head_scores = values + temperature * _noise_at(noise, ids)
    best = head_scores.masked_fill(~certain, float("-inf")).max(dim=-1).values
    below = (values[:, -1] >= threshold_t).nonzero()[:, 0]  # t below the head: whole rows
    if below.numel():
        whole = logits[below]
        certain_whole = torch.zeros_like(whole, dtype=torch.bool)
        certain_whole.scatter_(-1, ids[below, :size], certain_head[below])
        certain_whole |= whole >= threshold_t[below, None]
        scores = whole + temperature * _noise_rows(noise, below)
        best[below] = scores.masked_fill(~certain_whole, float("-inf")).max(dim=-1).values
    gaps = (best - chosen_score).clamp_min(0.0)
    gaps = torch.where(t_possible, gaps, torch.full_like(gaps, math.inf))
    rest = (~settled).nonzero()[:, 0]
    if rest.numel():
        gaps[rest] = _truncated_gaps(
            logits[rest], log_norm[rest] if log_norm is not None else None,
            _noise_of(noise, rest), chosen[rest], chosen_score[rest], params, tol, mass_tol,
            2 * size, rows[rest], heads)
    return gaps


def top_p_excess(
    logits: torch.Tensor, tokens: torch.Tensor, params: SamplingParams, tol: float
) -> torch.Tensor:
    """Each committed token's top-p excess: ``T`` × how far our probability mass of the tokens
    of logit ≥ ``l_t + tol`` (ranked above ``t`` by every honest node) exceeds ``p``.

    ``tokens`` ``[n]`` (or ``[n, m]`` candidates per position) gives the same shape. Zero
    for an honest node's token up to the honest mass difference of that set; zero when
    top-p is off or the job is greedy. One token per position is counted from the head of
    the vocabulary (:func:`_at_least`); many candidates per position share one sort.
    """
    if params.greedy or params.top_p_ppm >= 1_000_000:
        return torch.zeros(tokens.shape, dtype=torch.float64)
    n = logits.shape[0]
    temperature = params.temperature
    if tokens.dim() == 1:
        chosen = logits.gather(-1, tokens[:, None])[:, 0]
        log_norm = torch.logsumexp(logits / temperature, dim=-1)
        _, above = _at_least(logits, log_norm, temperature, chosen + tol)
    else:
        probs = torch.softmax(logits / temperature, dim=-1)
        order = torch.sort(logits, dim=-1)
        cumulative = torch.cumsum(probs.gather(-1, order.indices).flip(-1), dim=-1)
        chosen = logits.gather(-1, tokens.reshape(n, -1))
        count = _count_at_least(order.values, chosen + tol)
        above = torch.where(count > 0, cumulative.gather(-1, (count - 1).clamp_min(0)), 0.0)
    return (temperature * (above - params.top_p).clamp_min(0.0)).reshape(tokens.shape)


def _fraud(reason: str, tokens_to_fraud: int | None = None, seconds: float = 0.0) -> LLMCheck:
    return LLMCheck(Verdict.FRAUD, reason, math.inf, 0.0, tokens_to_fraud, seconds)


def _inconclusive(reason: str, seconds: float = 0.0) -> LLMCheck:
    return LLMCheck(Verdict.INCONCLUSIVE, reason, seconds=seconds)


def _output_tokens(output: Tensor, vocab: int) -> torch.Tensor | str:
    """The committed token ids ``[n]``, or why the output is not a valid generation."""
    if output.dtype != "int64" or len(output.shape) != 2 or output.shape[0] != 1:
        return f"output must be int64 token ids [1, n]; got {output.dtype} {list(output.shape)}"
    tokens = output.to_torch()[0]
    if tokens.numel() == 0:
        return "output holds no tokens"
    if int(tokens.min()) < 0 or int(tokens.max()) >= vocab:
        return f"output token ids must be in 0..{vocab - 1}"
    return tokens


def _length_problem(tokens: torch.Tensor, job: LLMJob, tokenizer: Tokenizer | None) -> str | None:
    """Why the output's length is not the job's, or None.

    A job runs to ``max_new_tokens`` unless a stop token or a stop string ends it; it
    ends at the first one, so the output's last token is the only one that may end it.
    """
    n = tokens.numel()
    if n > job.max_new_tokens:
        return f"output has {n} tokens; the job allows {job.max_new_tokens}"
    ids = [int(t) for t in tokens]
    stops = [i for i, t in enumerate(ids[:-1]) if t in job.stop_tokens]
    if stops:
        return f"output continues past the stop token at position {stops[0]}"
    ended = ids[-1] in job.stop_tokens
    if job.stop_strings:
        assert tokenizer is not None  # the caller checked
        at = stop_index(tokenizer, ids, job.stop_strings)
        if at is not None and at < n:
            return f"output continues past a stop string completed at position {at - 1}"
        ended = ended or at == n
    if n < job.max_new_tokens and not ended:
        return (f"output stops after {n} of {job.max_new_tokens} tokens without a stop token "
                "or stop string")
    return None


def _first_over(values: torch.Tensor, tau: float) -> int | None:
    over = (values > tau).nonzero()
    return int(over[0, 0]) if over.numel() else None


def verify_generation(
    request: JobRequest,
    commitment: Commitment,
    output: Tensor | None,
    llm: LLM | None,
    calibration: Calibration,
    attention: str = "eager",
    threads: int = 1,
) -> LLMCheck:
    """Judge one ``llm`` commitment; see the module docstring for the rules."""
    if commitment.job_id != request.job_id:
        return _inconclusive("commitment is for another job")
    if commitment.model_id != request.model_id:
        return _fraud("commitment names a model the client did not ask for")
    if commitment.input_hash != _tensor_hash(request.input):
        return _fraud("commitment's input hash is not the request's prompt")
    if commitment.mode != LLM_MODE:
        return _fraud(f"commitment is in mode {commitment.mode!r}; this model's jobs are 'llm'")
    try:
        job = parse_job(request)
    except LLMJobError as exc:
        return _inconclusive(f"job parameters are not a valid llm job: {exc}")
    if output is None:
        return _inconclusive("the node did not provide the output")
    if _tensor_hash(output) != commitment.output_hash:
        return _inconclusive("the output fetched does not match the commitment's output hash")
    if llm is None:
        return _inconclusive("validator does not hold this model")
    tokens = _output_tokens(output, llm.vocab_size)
    if isinstance(tokens, str):
        return _fraud(f"committed output is not a generation: {tokens}", 0)
    n = tokens.numel()
    if job.stop_strings and llm.tokenizer is None:
        return _inconclusive("the job has stop strings and the validator lacks the tokenizer")
    problem = _length_problem(tokens, job, llm.tokenizer)
    if problem is not None:
        return _fraud(problem, n)
    try:
        sketch = decode_sketch(commitment.aux, n)
    except SketchError as exc:
        return _fraud(f"malformed sketch: {exc}", 0)
    tolerances: Tolerances = calibration.for_dtype(job.dtype)
    if sketch.exp != tolerances.sketch_exp:
        return _fraud(
            f"sketch step 2^{sketch.exp} is not the model's calibrated 2^{tolerances.sketch_exp}", 0
        )
    started = time.perf_counter()
    try:
        prompt = request.input.to_torch()
        if prompt.dim() == 2 and prompt.shape[0] == 1:
            prompt = prompt[0]
        view = prefill(llm, prompt, tokens, job.dtype, attention=attention, threads=threads)
    except (GenerationError, LLMJobError, ValueError, RuntimeError) as exc:
        return _inconclusive(f"prefill failed: {exc}", time.perf_counter() - started)
    noise = SeededNoise(job.sampling.seed, llm.vocab_size)
    gaps = sampling_gaps(view.logits, noise, tokens, job.sampling, tolerances.token_tau,
                         tolerances.mass_levels(job.sampling.temperature))
    sketch_dev = deviations(sketch, view.hidden, job.sampling.seed)  # [blocks, K] quanta
    block_dev = sketch_dev.abs().amax(dim=-1)  # [blocks]
    rms = float(sketch_dev.pow(2).mean().sqrt())
    seconds = time.perf_counter() - started
    token_score = float(gaps.max()) / tolerances.token_tau
    gap_sums = torch.cumsum(gaps, dim=0)  # [n]: each prefix's sum of gaps
    gap_sum_score = float(gap_sums[-1]) / tolerances.gap_sum_limit(n)
    mass_sums = torch.cumsum(top_p_excess(view.logits, tokens, job.sampling,
                                          EXCESS_TOL * tolerances.token_tau), dim=0)
    mass_sum_score = float(mass_sums[-1]) / tolerances.mass_sum_limit(n)
    value_limit, rms_limit = tolerances.sketch_value_limit(n), tolerances.sketch_rms_limit(n)
    sketch_score = max(float(block_dev.max()) / value_limit, rms / rms_limit)
    first_token = _first_over(gaps, tolerances.token_tau)
    first_sum = _first_sum_over(gap_sums, tolerances.gap_sum_limit) if gap_sum_score > 1 else None
    first_mass = (_first_sum_over(mass_sums, tolerances.mass_sum_limit)
                  if mass_sum_score > 1 else None)
    first_block = _first_over(block_dev, value_limit)
    reached = {
        "token": first_token + 1 if first_token is not None else None,
        "gap-sum": first_sum,
        "top-p sum": first_mass,
        "sketch": min((first_block + 1) * BLOCK, n) if first_block is not None else None,
        "sketch rms": n if rms > rms_limit else None,
    }
    detail = (f"token score {token_score:.3g}, gap-sum score {gap_sum_score:.3g}, "
              f"top-p sum score {mass_sum_score:.3g}, sketch score {sketch_score:.3g}")
    scores = (token_score, sketch_score, None, seconds, gap_sum_score, mass_sum_score)
    hits = {which: at for which, at in reached.items() if at is not None}
    if hits:
        which = min(hits, key=lambda w: hits[w])  # the check that needs the fewest tokens
        return LLMCheck(Verdict.FRAUD, f"{which} check failed ({detail})", scores[0], scores[1],
                        hits[which], seconds, gap_sum_score, mass_sum_score, True)
    if max(token_score, sketch_score, gap_sum_score, mass_sum_score) > SUSPICIOUS:
        return LLMCheck(Verdict.INCONCLUSIVE, f"close to the tolerance ({detail})", *scores,
                        True)
    return LLMCheck(Verdict.VALID, f"tokens and sketch match ({detail})", *scores, True)


def _first_sum_over(sums: torch.Tensor, limit: Callable[[int], float]) -> int:
    """The shortest prefix, in tokens, whose sum alone exceeds its own limit.

    Called when the whole output's does, so there is one.
    """
    n = sums.numel()
    limits = torch.tensor([limit(i) for i in range(1, n + 1)], dtype=torch.float64)
    over = (sums > limits).nonzero()
    return int(over[0, 0]) + 1 if over.numel() else n
